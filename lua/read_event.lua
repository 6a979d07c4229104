--[[ read_event: an on-sale event's description and live seat count.
  KEYS[1] event hash       (name, venue, startsAt, totalSeats, status)
  KEYS[2] available zset
  ARGV    none
  Returns {}                                                   event not loaded
          {name, venue, startsAt, totalSeats, status, available}
  Events: none (read only). ]]
local fields = redis.call('HMGET', KEYS[1], 'name', 'venue', 'startsAt', 'totalSeats', 'status')
if not fields[1] then
  return {}
end
fields[6] = redis.call('ZCARD', KEYS[2])
return fields
