-- Atomic, fenced, versioned append of one worker iteration's outcomes.
--
-- KEYS[1] partition epoch, KEYS[2] partition command cursor, KEYS[3..] the
-- event streams, version hashes and dedupe hashes named by index below.
-- ARGV: epoch, new cursor ('' keeps it), dedupe TTL seconds, the plan as
-- ONE MessagePack array (packing thousands of separate arguments cost the
-- worker more than the rest of an iteration). Per command: {dedupe key index,
-- command id, rejection outcome ('' when it commits), committed-outcome
-- template, key index to delete (0: none), events}; per event: {stream key
-- index, versions key index, scope, version, payload, side-hash key index
-- (0: none), side field, side value}. Then, optionally, the read-ahead: the
-- index of the partition's command stream key and how many of its commands
-- after the new cursor to return (the worker's next read, in this same call).
-- (Side writes keep data beside an event, e.g. study session contents, so that
-- they can be erased while the event stays.)
--
-- Nothing is written unless the epoch matches, no command was seen before
-- (then its stored outcome is returned instead) and every event's version
-- follows the scope's current one. Returns {'OK', results, next commands}
-- where each result is {'new', pos...} / {'rejected'} / {'dup', stored
-- outcome}, or {'STALE', epoch} / {'VERSION', scope, current, attempted}.

local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then
  return {'STALE', epoch or ''}
end

local ttl = tonumber(ARGV[3])
local plan = cmsgpack.unpack(ARGV[4])
local ncmds = #plan
local cmds = {}
local current = {}
local seen = {}

-- Pass 1: validate everything, write nothing.
for c = 1, ncmds do
  local p = plan[c]
  local dkey = KEYS[p[1]]
  local cmd = {dkey = dkey, id = p[2], rejected = p[3], template = p[4], erase = p[5],
               events = {}}
  local ident = dkey .. '\n' .. cmd.id
  cmd.prior = redis.call('HGET', dkey, cmd.id)
  if (not cmd.prior) and seen[ident] then
    cmd.prior = 'same-iteration'
  end
  seen[ident] = true
  for e, pe in ipairs(p[6]) do
    local ev = {stream = KEYS[pe[1]], vkey = KEYS[pe[2]], scope = pe[3], version = pe[4],
                payload = pe[5], side = pe[6], field = pe[7], value = pe[8]}
    if not cmd.prior then
      local slot = ev.vkey .. '\n' .. ev.scope
      local cur = current[slot]
      if cur == nil then
        cur = tonumber(redis.call('HGET', ev.vkey, ev.scope) or '0')
      end
      if ev.version ~= cur + 1 then
        return {'VERSION', ev.scope, tostring(cur), tostring(ev.version)}
      end
      current[slot] = ev.version
    end
    cmd.events[e] = ev
  end
  cmds[c] = cmd
end

-- The read-ahead, before any write: a script's writes are not undone by a later
-- error. (The script never writes the command stream, so it reads the same here.)
local ahead = {}
local read = tonumber(ARGV[6] or '0')
if read > 0 and ARGV[2] ~= '' then
  ahead = redis.call('XRANGE', KEYS[tonumber(ARGV[5])], '(' .. ARGV[2], '+', 'COUNT', read)
end

-- Pass 2: write. Versions and dedupe records are gathered and written once per
-- key at the end (a hot scope moves many versions in one call; one run sends
-- many commands): fewer calls while the script holds Redis.
local results = {}
local versions = {}   -- versions key -> {scope -> last version}
local vorder = {}
local dedupe = {}     -- dedupe key -> {id, outcome, id, outcome, ...}
local dorder = {}

local function remember(dkey, id, outcome)
  local d = dedupe[dkey]
  if d == nil then
    d = {}
    dedupe[dkey] = d
    dorder[#dorder + 1] = dkey
  end
  d[#d + 1] = id
  d[#d + 1] = outcome
end

-- HSET key f1 v1 f2 v2 ... in slices (unpack has a stack limit).
local function hset_all(key, flat)
  for i = 1, #flat, 400 do
    redis.call('HSET', key, unpack(flat, i, math.min(i + 399, #flat)))
  end
end
for c = 1, ncmds do
  local cmd = cmds[c]
  if cmd.prior then
    results[c] = {'dup', cmd.prior}
  elseif cmd.rejected ~= '' then
    remember(cmd.dkey, cmd.id, cmd.rejected)
    results[c] = {'rejected'}
  else
    local res = {'new'}
    local last = ''
    for e = 1, #cmd.events do
      local ev = cmd.events[e]
      last = redis.call('XADD', ev.stream, '*', 'e', ev.payload)
      local v = versions[ev.vkey]
      if v == nil then
        v = {}
        versions[ev.vkey] = v
        vorder[#vorder + 1] = ev.vkey
      end
      v[ev.scope] = ev.version
      if ev.side > 0 then
        redis.call('HSET', KEYS[ev.side], ev.field, ev.value)
      end
      res[#res + 1] = last
    end
    if cmd.erase > 0 then
      redis.call('DEL', KEYS[cmd.erase])
    end
    -- The template holds the literal '%POS%' where the position goes.
    local outcome = string.gsub(cmd.template, '%%POS%%', last)
    remember(cmd.dkey, cmd.id, outcome)
    results[c] = res
  end
end

for _, vkey in ipairs(vorder) do
  local flat = {}
  for scope, version in pairs(versions[vkey]) do
    flat[#flat + 1] = scope
    flat[#flat + 1] = version
  end
  hset_all(vkey, flat)
end
for _, dkey in ipairs(dorder) do
  hset_all(dkey, dedupe[dkey])
  redis.call('EXPIRE', dkey, ttl)
end

if ARGV[2] ~= '' then
  redis.call('SET', KEYS[2], ARGV[2])
end
return {'OK', results, ahead}
