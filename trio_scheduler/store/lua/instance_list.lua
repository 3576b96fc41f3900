-- The live instances, with their hashes; index entries of instances gone are removed.
--
-- KEYS[1]  the sorted set of instances
-- ARGV[1]  the key prefix of instance hashes (same hash tag as KEYS[1]): prefix .. id
--
-- Returns {id, {field, value, …}, id, {…}, …}.
local live = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local fields = redis.call('HGETALL', ARGV[1] .. id)
  if #fields == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    table.insert(live, id)
    table.insert(live, fields)
  end
end
return live
