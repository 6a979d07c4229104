-- The prototype's write path, for comparison: every booking was a PostgreSQL
-- transaction (insert a PENDING booking, mark the seat HELD) made in the request.
-- Its tables, shaped like herdgate's, without herdgate's partial unique index:
-- the prototype relied on its Redis lock alone. 50,000 seats of event 1.
DROP TABLE IF EXISTS bookings, seats;
DROP SEQUENCE IF EXISTS sellout_seat;
CREATE TABLE seats (
    id       BIGINT PRIMARY KEY,
    event_id BIGINT NOT NULL,
    status   TEXT NOT NULL DEFAULT 'AVAILABLE'
);
CREATE TABLE bookings (
    id         BIGSERIAL PRIMARY KEY,
    event_id   BIGINT NOT NULL,
    seat_id    BIGINT NOT NULL REFERENCES seats (id),
    user_id    BIGINT NOT NULL,
    status     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ON bookings (seat_id);
INSERT INTO seats (id, event_id) SELECT n, 1 FROM generate_series(1, 50000) AS n;
-- The sellout hands each transaction the next seat, so 50,000 transactions book every seat once.
CREATE SEQUENCE sellout_seat;
