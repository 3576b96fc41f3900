-- Give back every slot of a node held by an instance that died.
--
-- KEYS[1]  the node's reservation set (member = "job_id:attempt_id@instance_id")
-- ARGV[1]  "@" .. the dead instance's id
--
-- Returns the number of slots given back. Without this they would expire by themselves,
-- but only a job timeout later: the node would run below its capacity meanwhile.
local suffix = ARGV[1]
local removed = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(member, -string.len(suffix)) == suffix then
    removed = removed + redis.call('ZREM', KEYS[1], member)
  end
end
return removed
