-- An event's waiting room: buyers of an event that has one must queue and be
-- admitted before they can hold a seat (docs/waiting-room.md). No row: no
-- admission needed. The queue itself lives in Redis; this is its setting.
CREATE TABLE waiting_rooms (
    event_id        BIGINT PRIMARY KEY REFERENCES events (id),
    -- Joining opens: whoever joins before starts_at is in the pre-queue, whose
    -- order is drawn once, at starts_at; later joins queue in arrival order.
    opens_at        TIMESTAMPTZ NOT NULL,
    starts_at       TIMESTAMPTZ NOT NULL CHECK (starts_at >= opens_at),
    admit_per_sec   DOUBLE PRECISION NOT NULL CHECK (admit_per_sec > 0 AND admit_per_sec <= 100000),
    max_active      INTEGER NOT NULL CHECK (max_active > 0),
    -- An admission ends idle_ms after the buyer's last visit or hold, and
    -- session_cap_ms after it began, whichever comes first.
    idle_ms         INTEGER NOT NULL CHECK (idle_ms > 0),
    session_cap_ms  INTEGER NOT NULL CHECK (session_cap_ms > 0),
    -- A queued buyer who does not visit for grace_ms loses the place.
    grace_ms        INTEGER NOT NULL CHECK (grace_ms > 0),
    -- The pre-queue's order: ascending SHA-1(seed || ':' || user id). Its SHA-256
    -- (the commitment) is published before starts_at, the seed itself after.
    seed            TEXT NOT NULL CHECK (length(seed) >= 32),
    paused          BOOLEAN NOT NULL DEFAULT false,
    -- A join must carry a proof of work: a nonce whose SHA-256 with the user's
    -- challenge starts with this many zero bits (0: none asked).
    proof_bits      SMALLINT NOT NULL DEFAULT 0 CHECK (proof_bits BETWEEN 0 AND 24)
);
