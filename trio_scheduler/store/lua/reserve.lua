-- Take one capacity slot of a node, atomically.
--
-- KEYS[1]  the node's reservation set (member = "job_id:attempt_id", score = expiry in ms)
-- ARGV[1]  member
-- ARGV[2]  capacity (max_concurrent_jobs)
-- ARGV[3]  now in ms (wall clock): entries that expired at or before it no longer count
-- ARGV[4]  expiry of this reservation in ms (wall clock)
--
-- Returns {granted (0/1), slots in use after the call}.
-- Idempotent: reserving a member that already holds a slot refreshes its expiry and is
-- granted again, so a retried call after a lost reply never takes two slots.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
local in_use = redis.call('ZCARD', KEYS[1])
if not held then
  if in_use >= tonumber(ARGV[2]) then
    return {0, in_use}
  end
  in_use = in_use + 1
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
-- The set disappears by itself once its latest reservation has expired, so the keys of
-- nodes that never come back do not pile up.
local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], latest[2])
return {1, in_use}
