--[[ waiting_room: one visit of one user to an event's waiting room: join it, or
  look at one's place. Every visit first does the room's bookkeeping, so the
  queue moves at the set rate whoever calls, with no process of its own.
  KEYS[1] room hash          (opensAt startsAt rate maxActive idleMs capMs graceMs seed
                              paused; and the admission bucket: tokens refilledAt, and
                              the measured rate: windowAt windowCount measured; keptAt:
                              when the bookkeeping last ran)
  KEYS[2] queue zset         (user id scored by order: a pre-queue join by a fraction of
                              SHA-1(seed:user) in [0, 1), a later one by 1 + arrival number)
  KEYS[3] arrivals string    (INCR: the arrival number of joins after startsAt)
  KEYS[4] seen zset          (queued user id scored by its last visit, ms)
  KEYS[5] active zset        (admitted user id scored by when its admission ends, ms:
                              idle deadline, never past its cap; place_hold.lua checks it)
  KEYS[6] caps hash          (admitted user id -> its admission's hard end, ms)
  KEYS[7] joined hash        (queued user id -> when it joined, ms)
  KEYS[8] waits list         (the last 1,000 admissions' waits from join to admission, ms)
  ARGV[1] user id   ARGV[2] "join" or "look"   ARGV[3] most users moved per step
  Times (ms since epoch) are Redis's TIME.
  Bookkeeping, in order: admissions past their end are dropped; queued users not
  seen for graceMs lose their place; from startsAt, unless paused, users leave the
  head of the queue for `active` at `rate` per second (a bucket of at most one
  second's worth), while fewer than maxActive admissions are live. A head user not
  seen for graceMs is dropped, not admitted. At most ARGV[3] users per step, and at
  most one step per millisecond (later visits in the same one skip it: ends and lapses
  are judged by their deadlines anyway, so nothing late is counted as live). Each
  admission counts in the room's `admitted`, its wait goes to KEYS[8], and one whose
  order is below the last admitted one's counts in `outOfOrder` (never, unless the
  start is moved back after admissions began).
  Returns {"admitted", ends_ms, cap_ms}                      admitted: book now (visit renews ends_ms)
          {"queued", position, queued, milli_rate, seed, grace_ms, paused}     1-based place after startsAt
          {"pre_queue", starts_ms, queued, milli_rate, seed, grace_ms, paused} joined before startsAt
          {"not_queued"}                                     look by a user not in the queue
          {"not_open", opens_ms}                             join before opensAt
          {"no_room"}                                        the event has no waiting room loaded
  milli_rate is the admissions per second measured over the last 10 s of admission
  (x1000; time paused is not measured), or the set rate before any; paused is 1
  while the operator has paused admission, else 0; seed is the shuffle's seed (the
  gateway reveals it only from startsAt). ]]
local user, mode, step = ARGV[1], ARGV[2], tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'opensAt', 'startsAt', 'rate', 'maxActive', 'idleMs',
  'capMs', 'graceMs', 'seed', 'paused', 'tokens', 'refilledAt', 'windowAt', 'windowCount',
  'measured', 'lastOrder', 'keptAt')
if not f[1] then
  return {'no_room'}
end
local opens, starts, rate = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
local max_active, idle, cap, grace = tonumber(f[4]), tonumber(f[5]), tonumber(f[6]), tonumber(f[7])
local seed, paused = f[8], f[9] == '1'

local measured = tonumber(f[14])
-- The bookkeeping runs at most once a millisecond (Redis TIME's unit): visits in the
-- same millisecond find nothing more to do, and skip its five or more calls. (Any
-- other millisecond runs it: a clock set back does not stall the room.)
if now ~= tonumber(f[16]) then
  local ended = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, step)
  if #ended > 0 then
    redis.call('ZREM', KEYS[5], unpack(ended))
    redis.call('HDEL', KEYS[6], unpack(ended))
  end
  local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - grace, 'LIMIT', 0, step)
  if #gone > 0 then
    redis.call('ZREM', KEYS[2], unpack(gone))
    redis.call('ZREM', KEYS[4], unpack(gone))
    redis.call('HDEL', KEYS[7], unpack(gone))
  end

  if now >= starts then
    local tokens = tonumber(f[10]) or 0
    local refilled = math.max(tonumber(f[11]) or starts, starts)
    if not paused then
      tokens = math.min(math.max(1, rate), tokens + rate * (now - refilled) / 1000)
    end
    -- Counted by deadline, so admissions not yet dropped above never count as live.
    local free = max_active - redis.call('ZCOUNT', KEYS[5], '(' .. now, '+inf')
    local admitted, tries = 0, 0
    local last_order = tonumber(f[15])
    while not paused and admitted < math.floor(tokens) and admitted < free and tries < step do
      tries = tries + 1
      local head = redis.call('ZPOPMIN', KEYS[2])
      if #head == 0 then
        break
      end
      local who, order = head[1], tonumber(head[2])
      local seen = redis.call('ZSCORE', KEYS[4], who)
      local joined = tonumber(redis.call('HGET', KEYS[7], who))
      redis.call('ZREM', KEYS[4], who)
      redis.call('HDEL', KEYS[7], who)
      if seen and tonumber(seen) > now - grace then
        redis.call('ZADD', KEYS[5], math.min(now + idle, now + cap), who)
        redis.call('HSET', KEYS[6], who, now + cap)
        admitted = admitted + 1
        redis.call('LPUSH', KEYS[8], now - (joined or now))
        if last_order and order < last_order then
          redis.call('HINCRBY', KEYS[1], 'outOfOrder', 1)
        end
        last_order = order
      end
    end
    local window_at = tonumber(f[12]) or now
    local window_count = (tonumber(f[13]) or 0) + admitted
    if paused then
      -- A pause is no measure of the rate: the last one stands until admission resumes.
      window_at, window_count = now, 0
    elseif now - window_at >= 10000 then
      measured = window_count * 1000 / (now - window_at)
      window_at, window_count = now, 0
      redis.call('HSET', KEYS[1], 'measured', tostring(measured))
    end
    redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - admitted), 'refilledAt', now,
      'windowAt', window_at, 'windowCount', window_count, 'keptAt', now)
    if admitted > 0 then
      redis.call('HSET', KEYS[1], 'lastOrder', tostring(last_order))
      redis.call('HINCRBY', KEYS[1], 'admitted', admitted)
      redis.call('LTRIM', KEYS[8], 0, 999)
    end
  else
    redis.call('HSET', KEYS[1], 'keptAt', now)
  end
end

local milli_rate = math.floor((measured or rate) * 1000)

local ends = tonumber(redis.call('ZSCORE', KEYS[5], user))
if ends and ends > now then
  local cap_at = tonumber(redis.call('HGET', KEYS[6], user)) or ends
  ends = math.min(now + idle, cap_at)
  redis.call('ZADD', KEYS[5], ends, user)
  return {'admitted', ends, cap_at}
end
local rank = redis.call('ZRANK', KEYS[2], user)
if not rank and mode == 'join' then
  if now < opens then
    return {'not_open', opens}
  end
  local order
  if now < starts then
    -- 13 hex digits: 52 bits, exact in a double.
    order = tonumber(string.sub(redis.sha1hex(seed .. ':' .. user), 1, 13), 16) / 4503599627370496
  else
    order = 1 + redis.call('INCR', KEYS[3])
  end
  redis.call('ZADD', KEYS[2], order, user)
  redis.call('HSET', KEYS[7], user, now)
  rank = redis.call('ZRANK', KEYS[2], user)
end
if not rank then
  return {'not_queued'}
end
redis.call('ZADD', KEYS[4], now, user)
local queued = redis.call('ZCARD', KEYS[2])
local paused_flag = paused and 1 or 0
if now < starts then
  return {'pre_queue', starts, queued, milli_rate, seed, grace, paused_flag}
end
return {'queued', rank + 1, queued, milli_rate, seed, grace, paused_flag}
