--[[ expire_hold: release one PENDING hold whose time is up, atomically, and
  record the hold.expired event. Safe to run from every sweeper at once: a hold
  is expired exactly once, and never once it is no longer PENDING.
  KEYS[1] hold hash          (the booking's state)
  KEYS[2] seat lock string   (of the hold's seat)
  KEYS[3] holds zset         (the booking leaves it)
  KEYS[4] user holds zset    (of the hold's user; the booking leaves it)
  KEYS[5] available zset     (the seat comes back, unless someone else holds it now)
  KEYS[6] outbox stream
  KEYS[7] sequence string
  KEYS[8] outbox announced string (SET NX: the first entry the relay has not read)
  ARGV[1] booking id
  ARGV[2] retention, ms: how long the ended hold's hash is kept for status reads
  ARGV[3] activity channel   ARGV[4] event id: published when KEYS[8] was unset
  Times (ms since epoch) are Redis's TIME: a hold is due by the clock its lock runs on.
  Returns {"expired", seat_id}   released now
          {"skip", reason}       "gone" (no such hold), "not_pending", "not_due"
  Events: hold.expired (version + 1) on KEYS[6], its one field `event` (src/hold_event.rs). ]]
local booking = ARGV[1]
-- Redis's clock, the one lock TTLs run on: gateways' clocks may disagree with it.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local hold = redis.call('HMGET', KEYS[1], 'status', 'expiresAt', 'seatId', 'userId', 'version')
local status, expires, seat, user = hold[1], tonumber(hold[2]), hold[3], hold[4]
if not status then
  redis.call('ZREM', KEYS[3], booking)
  return {'skip', 'gone'}
end
if status ~= 'PENDING' then
  redis.call('ZREM', KEYS[3], booking)
  return {'skip', 'not_pending'}
end
if expires > now then
  return {'skip', 'not_due'}
end

-- The lock may have lapsed already (its TTL is the hold's), and the seat may even
-- be held by someone else by now: only a lock of our own is released.
local owner = redis.call('GET', KEYS[2])
if owner == booking then
  redis.call('DEL', KEYS[2])
end
if owner == booking or not owner then
  redis.call('ZADD', KEYS[5], tonumber(seat), seat)
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
local seq = redis.call('INCR', KEYS[7])
redis.call('HSET', KEYS[1], 'status', 'EXPIRED', 'seq', seq)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[3], booking)
redis.call('ZREM', KEYS[4], booking)
redis.call('XADD', KEYS[6], '*', 'event', 'hold.expired ' .. booking .. ' ' .. seat .. ' ' .. user
  .. ' EXPIRED ' .. version .. ' ' .. seq .. ' ' .. expires .. ' ' .. now .. ' - -')
if redis.call('SET', KEYS[8], 1, 'NX') then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return {'expired', tonumber(seat)}
