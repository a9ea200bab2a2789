-- Append commands to one partition's command stream, in order.
--
-- KEYS[1] the partition's command stream; ARGV the encoded commands. One script
-- call per partition and flush replaces one XADD per command: redis-py spent
-- more packing and parsing those than the gateway spent on the rest of a patch.
--
-- On Redis Cluster the client may send a call again after a dropped connection,
-- although the first one ran. There KEYS[2] names this call (same partition) and
-- ARGV[1] is how long to remember it: a call whose name is taken appends nothing.
local first = 1
if #KEYS > 1 then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
    return 0
  end
  first = 2
end
for i = first, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'c', ARGV[i])
end
return #ARGV - first + 1
