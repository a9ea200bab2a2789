-- Partition leases with an epoch (fencing token).
-- KEYS[1] lease, KEYS[2] epoch. ARGV[1] action, ARGV[2] worker id,
-- ARGV[3] TTL ms, ARGV[4] the epoch the caller holds (renew/release).
-- acquire -> new epoch, or 0 when another worker holds the lease;
-- renew   -> 1 if still ours at that epoch, else 0;
-- release -> 1 if it was ours and is now free, else 0.
local action = ARGV[1]
if action == 'acquire' then
  if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[3]) then
    return redis.call('INCR', KEYS[2])
  end
  return 0
end
local holder = redis.call('GET', KEYS[1])
local epoch = redis.call('GET', KEYS[2])
if holder ~= ARGV[2] or epoch ~= ARGV[4] then
  return 0
end
if action == 'renew' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
elseif action == 'release' then
  redis.call('DEL', KEYS[1])
  return 1
end
return redis.error_reply('unknown lease action ' .. tostring(action))
