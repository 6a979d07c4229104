--[[ release_lock: delete a lock only while it still holds our token, so a
  process whose lock expired never deletes the lock another process took since.
  KEYS[1] lock string
  ARGV[1] token the lock was taken with
  Returns 1 when released, 0 when the lock was no longer ours.
  Events: none. ]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
