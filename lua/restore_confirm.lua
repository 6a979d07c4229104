--[[ restore_confirm: a confirm PostgreSQL stored after the event was rebuilt from
  it (the confirm was on its way when Redis lost its data). The hold Redis restored
  as PENDING becomes CONFIRMED, its seat booked for good, as confirm_hold would
  have left it; no event is recorded (PostgreSQL has it already).
  KEYS[1] hold hash   KEYS[2] seat lock string   KEYS[3] holds zset
  KEYS[4] user holds zset
  ARGV[1] booking id   ARGV[2] version   ARGV[3] seq   ARGV[4] confirmedAt, ms since epoch
  Returns 1 when the hold is CONFIRMED now; 0 when Redis moved on (the hold is not
  PENDING, or has this version already) or another booking holds the seat. ]]
local booking = ARGV[1]
local hold = redis.call('HMGET', KEYS[1], 'status', 'version')
if hold[1] ~= 'PENDING' or tonumber(hold[2]) >= tonumber(ARGV[2]) then
  return 0
end
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= booking then
  return 0
end
redis.call('SET', KEYS[2], booking)
redis.call('HSET', KEYS[1], 'status', 'CONFIRMED', 'version', ARGV[2], 'seq', ARGV[3],
  'confirmedAt', ARGV[4])
redis.call('ZREM', KEYS[3], booking)
redis.call('ZREM', KEYS[4], booking)
return 1
