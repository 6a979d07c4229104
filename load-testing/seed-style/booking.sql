-- pgbench: one seed-style booking of a random seat (the `distinct` comparison).
\set seat random(1, 50000)
\set user random(1, 200000)
BEGIN;
INSERT INTO bookings (event_id, seat_id, user_id, status, expires_at)
     VALUES (1, :seat, :user, 'PENDING', now() + interval '10 minutes');
UPDATE seats SET status = 'HELD' WHERE id = :seat;
COMMIT;
