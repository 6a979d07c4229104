--[[ set_room: write an event's waiting-room settings, never going back to older ones.
  KEYS[1] room hash  (see waiting_room.lua; the settings' version in field `version`)
  ARGV[1] "load" (the loader: the room is made when missing) or "change" (the
          operator API: only a room Redis has, so an event not loaded stays unloaded)
  ARGV[2] the settings' version (waiting_rooms.version: every change gets a higher one)
  ARGV[3], ARGV[4], ...  field, value pairs: the settings to write
  The loader's sync and the operator API write the same rooms from different
  processes: a writer holding settings older than Redis's (a sync that read the row
  just before an operator changed it) must not undo the newer ones. The queue,
  admissions and the bucket are other keys and fields, never touched here.
  Returns "set"       written (the same version again writes the same values)
          "stale"     Redis has a newer version: nothing written
          "no_room"   "change" of a room Redis does not have: nothing written ]]
local mode, version = ARGV[1], tonumber(ARGV[2])
local current = redis.call('HGET', KEYS[1], 'version')
if mode == 'change' and redis.call('EXISTS', KEYS[1]) == 0 then
  return 'no_room'
end
if current and tonumber(current) > version then
  return 'stale'
end
local fields = {}
for i = 3, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], 'version', ARGV[2], unpack(fields))
return 'set'
