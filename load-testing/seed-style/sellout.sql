-- pgbench: one seed-style booking of the next seat (the `sellout` comparison).
\set user random(1, 200000)
SELECT nextval('sellout_seat') AS seat \gset
BEGIN;
INSERT INTO bookings (event_id, seat_id, user_id, status, expires_at)
     VALUES (1, :seat, :user, 'PENDING', now() + interval '10 minutes');
UPDATE seats SET status = 'HELD' WHERE id = :seat;
COMMIT;
