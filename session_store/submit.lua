-- Append commands to one partition's command stream, in order.
--
-- KEYS[1] the partition's command stream; ARGV the encoded commands. One script
-- call per partition and flush replaces one XADD per command: redis-py spent
-- more packing and parsing those than the gateway spent on the rest of a patch.
--
-- On Redis Cluster the client may send a call again although the first one ran
-- (after a dropped connection, say). There KEYS[2] holds the highest call number
-- this sender has appended to this partition, ARGV[1] is this call's number and
-- ARGV[2] how long to keep the mark: a call numbered at or below the mark appends
-- nothing. (One mark per sender and partition rather than one key per call: the
-- mark moves with the stream when its slot is migrated, where a fresh key per
-- call would be refused with TRYAGAIN until the migration ended.)
local first = 1
if #KEYS > 1 then
  local call = tonumber(ARGV[1])
  if call <= tonumber(redis.call('GET', KEYS[2]) or '0') then
    return 0
  end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  first = 3
end
for i = first, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'c', ARGV[i])
end
return #ARGV - first + 1
