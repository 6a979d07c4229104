--[[ list_available: one page of an event's available seats, in seat id order.
  KEYS[1] event hash       (marks a loaded, on-sale event)
  KEYS[2] available zset   (seat id scored by seat id)
  KEYS[3] seats hash       (seat id -> seat JSON)
  ARGV[1] after: seat id, exclusive; 0 starts at the beginning
  ARGV[2] limit: seats in the page, 1..5000
  Returns {0}                                  event not loaded (unknown, not on sale)
          {1, count, last_id, seat_json, ...}  count = every available seat of the event,
                                               last_id = id of the page's last seat or 0
  Events: none (read only). ]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0}
end
local count = redis.call('ZCARD', KEYS[2])
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
local reply = {1, count, 0}
if #ids == 0 then
  return reply
end
reply[3] = tonumber(ids[#ids])
-- HMGET in chunks: unpack() of a whole page could overflow Lua's C stack.
local chunk = 500
for first = 1, #ids, chunk do
  local last = math.min(first + chunk - 1, #ids)
  local seats = redis.call('HMGET', KEYS[3], unpack(ids, first, last))
  for i = 1, #seats do
    if seats[i] then
      reply[#reply + 1] = seats[i]
    end
  end
end
return reply
