--[[ cancel_hold: the user gives a PENDING hold back at once; the seat is
  available to others immediately. Cancelling a CANCELLED booking again answers
  it again (idempotent); a CONFIRMED booking cannot be cancelled (no refunds).
  KEYS[1] hold hash   KEYS[2] seat lock string   KEYS[3] holds zset
  KEYS[4] user holds zset   KEYS[5] available zset   KEYS[6] outbox stream
  KEYS[7] sequence string   KEYS[8] outbox announced string (SET NX: the first entry
                            the relay has not read)
  KEYS[9] admitted zset   KEYS[10] admission caps hash (the buyer's waiting-room
          admission ends with the cancel, freeing its place for the next buyer)
  ARGV[1] booking id   ARGV[2] user id   ARGV[3] W3C traceparent or ""
  ARGV[4] retention of the ended hold's hash, ms
  ARGV[5] activity channel   ARGV[6] event id: published when KEYS[8] was unset
  Times (ms since epoch) are Redis's TIME.
  Returns {"ok", status, seat_id, expires_ms}   cancelled (now or before)
          {"not_found"}                         no such booking of this user
          {"confirmed"}                         CONFIRMED: not cancellable
          {"gone", status}                      EXPIRED (or due)
  Events: hold.cancelled (version + 1) on KEYS[6], its one field `event` (src/hold_event.rs). ]]
local booking, user = ARGV[1], ARGV[2]
-- Redis's clock, the one lock TTLs run on: gateways' clocks may disagree with it.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local hold = redis.call('HMGET', KEYS[1], 'status', 'userId', 'seatId', 'expiresAt')
local status, owner, seat, expires = hold[1], hold[2], hold[3], tonumber(hold[4])
if not status or owner ~= user then
  return {'not_found'}
end
if status == 'CANCELLED' then
  return {'ok', status, tonumber(seat), expires}
end
if status == 'CONFIRMED' then
  return {'confirmed'}
end
if status ~= 'PENDING' or expires <= now then
  return {'gone', 'EXPIRED'}
end

-- The lock may have lapsed a moment early (gateway clocks differ): the seat is
-- free then, and must be listed again all the same.
local owner = redis.call('GET', KEYS[2])
if owner == booking then
  redis.call('DEL', KEYS[2])
end
if owner == booking or not owner then
  redis.call('ZADD', KEYS[5], tonumber(seat), seat)
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
local seq = redis.call('INCR', KEYS[7])
redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'seq', seq)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[3], booking)
redis.call('ZREM', KEYS[4], booking)
local traceparent = ARGV[3] ~= '' and ARGV[3] or '-'
redis.call('XADD', KEYS[6], '*', 'event', 'hold.cancelled ' .. booking .. ' ' .. seat .. ' ' .. user
  .. ' CANCELLED ' .. version .. ' ' .. seq .. ' ' .. expires .. ' ' .. now .. ' - ' .. traceparent)
if redis.call('SET', KEYS[8], 1, 'NX') then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
redis.call('ZREM', KEYS[9], user)
redis.call('HDEL', KEYS[10], user)
return {'ok', 'CANCELLED', tonumber(seat), expires}
