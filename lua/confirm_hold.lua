--[[ confirm_hold: the checkout step. A PENDING hold of this user, not yet due,
  becomes CONFIRMED: the seat is BOOKED for good (its lock no longer expires).
  Confirming a CONFIRMED booking again answers it again (idempotent).
  KEYS[1] hold hash   KEYS[2] seat lock string   KEYS[3] holds zset
  KEYS[4] user holds zset   KEYS[5] outbox stream   KEYS[6] sequence string
  KEYS[7] outbox announced string (SET NX: the first entry the relay has not read)
  KEYS[8] admitted zset   KEYS[9] admission caps hash (the buyer's waiting-room
          admission ends with the confirm, freeing its place for the next buyer)
  ARGV[1] booking id   ARGV[2] user id   ARGV[3] W3C traceparent or ""
  ARGV[4] activity channel   ARGV[5] event id: published when KEYS[7] was unset
  Times (ms since epoch) are Redis's TIME.
  Returns {"ok", status, seat_id, expires_ms, confirmed_ms}   confirmed (now or before)
          {"not_found"}                                       no such booking of this user
          {"gone", status}                                    CANCELLED or EXPIRED (or due)
  Events: hold.confirmed (version + 1) on KEYS[5], its one field `event` (src/hold_event.rs). ]]
local booking, user = ARGV[1], ARGV[2]
-- Redis's clock, the one lock TTLs run on: gateways' clocks may disagree with it.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local hold = redis.call('HMGET', KEYS[1], 'status', 'userId', 'seatId', 'expiresAt', 'confirmedAt')
local status, owner, seat, expires = hold[1], hold[2], hold[3], tonumber(hold[4])
if not status or owner ~= user then
  return {'not_found'}
end
if status == 'CONFIRMED' then
  return {'ok', status, tonumber(seat), expires, tonumber(hold[5])}
end
if status ~= 'PENDING' then
  return {'gone', status}
end
-- Due but not swept yet: the sweeper will expire it; confirming now would race it.
if expires <= now or redis.call('GET', KEYS[2]) ~= booking then
  return {'gone', 'EXPIRED'}
end

redis.call('PERSIST', KEYS[2])
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
local seq = redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[1], 'status', 'CONFIRMED', 'confirmedAt', now, 'seq', seq)
redis.call('ZREM', KEYS[3], booking)
redis.call('ZREM', KEYS[4], booking)
local traceparent = ARGV[3] ~= '' and ARGV[3] or '-'
redis.call('XADD', KEYS[5], '*', 'event', 'hold.confirmed ' .. booking .. ' ' .. seat .. ' ' .. user
  .. ' CONFIRMED ' .. version .. ' ' .. seq .. ' ' .. expires .. ' ' .. now .. ' ' .. now .. ' '
  .. traceparent)
if redis.call('SET', KEYS[7], 1, 'NX') then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
redis.call('ZREM', KEYS[8], user)
redis.call('HDEL', KEYS[9], user)
return {'ok', 'CONFIRMED', tonumber(seat), expires, now}
