--[[ place_hold: hold one seat for one user until a deadline, atomically, and
  record the hold.placed event in the event's outbox in the same step.
  KEYS[1]  event hash          (status ON_SALE = loaded and taking holds; admission = the
                                waiting room's idle timeout, ms, when buyers need admission)
  KEYS[2]  seats hash          (seat id -> seat JSON: the seat belongs to the event)
  KEYS[3]  available zset      (the seat leaves it)
  KEYS[4]  seat lock string    (SET lock booking_id PX ttl NX, as the prototype)
  KEYS[5]  holds zset          (booking id scored by expiry ms, for the sweeper)
  KEYS[6]  hold hash           (the booking's state)
  KEYS[7]  user holds zset     (this user's live holds of this event, scored by expiry ms;
                                a lock naming one of them is the seat of this user's own)
  KEYS[8]  idempotency string  ("seat:booking:expires"; unused when ARGV[6] is empty)
  KEYS[9]  outbox stream       (events not yet in PostgreSQL; bounded by ARGV[8])
  KEYS[10] sequence string     (INCR: orders every change of this event)
  KEYS[11] outbox announced    (SET NX: this entry is the first the relay has not read)
  KEYS[12] admitted zset       (the waiting room's active admissions: user id -> end, ms)
  KEYS[13] admission caps hash (user id -> the admission's hard end, ms)
  ARGV[1]  booking id (UUIDv7)   ARGV[2]  seat id          ARGV[3] user id
  ARGV[4]  hold TTL, ms          ARGV[5]  max live holds per user
  ARGV[6]  idempotency key or "" ARGV[7]  idempotency TTL, ms
  ARGV[8]  max outbox length     ARGV[9]  W3C traceparent or ""
  ARGV[10] activity channel      ARGV[11] event id (the message published on it)
  Times (ms since epoch) are Redis's TIME.
  Returns {"ok", booking_id, expires_ms}      placed
          {"replay", booking_id, expires_ms}  same idempotency key and seat as before
          {"own", booking_id, expires_ms}     the seat is this user's own live hold already
          {"mismatch"}                        idempotency key used before for another seat
          {"no_event"} | {"no_seat"}          unknown, not loaded or not on sale | seat not in event
          {"not_admitted"}                    the event needs admission and this user has none live
          {"taken"}                           seat held by another user, or booked
          {"limit", retry_after_ms}           user holds the maximum already
          {"busy"}                            outbox at its bound (relay or writer behind): back off
          {"collision"}                       a hold with this booking id exists: draw another id
  Events: hold.placed (version 1) on KEYS[9], its one field `event` (src/hold_event.rs).
  Publishes the event id on ARGV[10] when KEYS[11] was unset (the relay has work)
  or the hold is now the event's first to fall due (the sweeper has an earlier
  deadline). ]]
local booking, seat, user = ARGV[1], ARGV[2], ARGV[3]
local ttl = tonumber(ARGV[4])
-- Redis's clock, the one lock TTLs run on: gateways' clocks may disagree with it.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local idem = ARGV[6]
-- Numbers go to Redis as text made once: a Lua number argument is formatted as a
-- float at every call, which was a tenth of this script's cost.
local now_s = string.format('%d', now)

local event = redis.call('HMGET', KEYS[1], 'status', 'admission')
if event[1] ~= 'ON_SALE' then
  return {'no_event'}
end
-- Admission is checked in the step that takes the seat, and renewed by it: the
-- buyer is active. A replay below is answered only to an admitted buyer too.
local admission_idle = tonumber(event[2])
if admission_idle then
  local ends = tonumber(redis.call('ZSCORE', KEYS[12], user))
  if not ends or ends <= now then
    return {'not_admitted'}
  end
  local cap = tonumber(redis.call('HGET', KEYS[13], user)) or ends
  redis.call('ZADD', KEYS[12], math.min(now + admission_idle, cap), user)
end
if idem ~= '' then
  local previous = redis.call('GET', KEYS[8])
  if previous then
    local p_seat, p_booking, p_expires = string.match(previous, '^(%d+):([^:]+):(%d+)$')
    if p_seat == seat then
      return {'replay', p_booking, tonumber(p_expires)}
    end
    return {'mismatch'}
  end
end
if redis.call('HEXISTS', KEYS[2], seat) == 0 then
  return {'no_seat'}
end
-- The lock names the booking holding the seat. When that is a live hold of
-- this very user, the request may be a retry whose answer was lost (a timeout
-- while Redis stalled, after which the script still ran): it gets its hold,
-- not "taken", and counts nothing twice. A new Idempotency-Key is not
-- recorded: it placed nothing, and asking again answers the same way.
local holder = redis.call('GET', KEYS[4])
if holder then
  local own = redis.call('ZSCORE', KEYS[7], holder)
  if not own or tonumber(own) <= now then
    return {'taken'}
  end
  return {'own', holder, tonumber(own)}
end
-- Holds that lapsed before the sweeper ended them are dropped only when they
-- would make the difference: every ending script takes its hold out already.
local max_holds = tonumber(ARGV[5])
if redis.call('ZCARD', KEYS[7]) >= max_holds then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now_s)
  if redis.call('ZCARD', KEYS[7]) >= max_holds then
    local first = redis.call('ZRANGE', KEYS[7], 0, 0, 'WITHSCORES')
    return {'limit', tonumber(first[2]) - now}
  end
end
if redis.call('XLEN', KEYS[9]) >= tonumber(ARGV[8]) then
  return {'busy'}
end
if redis.call('EXISTS', KEYS[6]) == 1 then
  return {'collision'}
end

local expires = now + ttl
local expires_s = string.format('%d', expires)
-- No hold falls due by this one's time: the sweeper must hear of it.
local earliest = redis.call('ZCOUNT', KEYS[5], '-inf', expires_s) == 0
redis.call('SET', KEYS[4], booking, 'PX', ARGV[4])
redis.call('ZREM', KEYS[3], seat)
redis.call('ZADD', KEYS[5], expires_s, booking)
local seq = string.format('%d', redis.call('INCR', KEYS[10]))
redis.call('HSET', KEYS[6], 'bookingId', booking, 'seatId', seat, 'userId', user,
  'status', 'PENDING', 'version', '1', 'seq', seq, 'expiresAt', expires_s, 'createdAt', now_s)
redis.call('ZADD', KEYS[7], expires_s, booking)
redis.call('PEXPIRE', KEYS[7], ARGV[4])
if idem ~= '' then
  redis.call('SET', KEYS[8], seat .. ':' .. booking .. ':' .. expires, 'PX', ARGV[7])
end
local traceparent = ARGV[9] ~= '' and ARGV[9] or '-'
redis.call('XADD', KEYS[9], '*', 'event', 'hold.placed ' .. booking .. ' ' .. seat .. ' ' .. user
  .. ' PENDING 1 ' .. seq .. ' ' .. expires_s .. ' ' .. now_s .. ' - ' .. traceparent)
-- SET whatever `earliest` says, so the flag always tells whether this entry was announced.
if redis.call('SET', KEYS[11], '1', 'NX') or earliest then
  redis.call('PUBLISH', ARGV[10], ARGV[11])
end
return {'ok', booking, expires}
