-- An instance says it is alive: its hash is rewritten and lives for ttl ms more.
--
-- KEYS[1]  the sorted set of instances (member = instance id, score = expiry in ms); an
--          index only: an instance is alive while its hash exists
-- KEYS[2]  the instance's hash (same hash tag as KEYS[1])
-- ARGV[1]  instance id
-- ARGV[2]  expiry in ms (the writer's wall clock; used to tidy the index only)
-- ARGV[3]  ttl in ms
-- ARGV[4…] field, value, field, value, …
--
-- Returns 1 when the hash existed (nothing happened to the store since the last beat),
-- 0 when it did not (first beat, or Redis lost it: restarted, flushed, or the instance
-- was silent longer than ttl).
local existed = redis.call('EXISTS', KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return existed
