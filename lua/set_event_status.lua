--[[ set_event_status: follow an event's status in PostgreSQL (ON_SALE, SCHEDULED,
  CLOSED) on its loaded inventory; an event that is not loaded stays unloaded.
  KEYS[1] event hash
  ARGV[1] status
  Returns 1 when the status changed, 0 when it was already so or the event is not loaded.
  Events: none. ]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if redis.call('HGET', KEYS[1], 'status') == ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
return 1
