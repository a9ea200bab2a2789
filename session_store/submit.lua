-- Append commands to one partition's command stream, in order.
--
-- KEYS[1] the partition's command stream; ARGV the encoded commands. One script
-- call per partition and flush replaces one XADD per command: redis-py spent
-- more packing and parsing those than the gateway spent on the rest of a patch.
for i = 1, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'c', ARGV[i])
end
return #ARGV
