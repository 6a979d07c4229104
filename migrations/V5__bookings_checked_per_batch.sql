-- A booking's user must exist and its seat must belong to its event. Two foreign
-- keys checked that row by row: each insert ran two trigger queries through SPI
-- and locked the user's and the seat's rows (FOR KEY SHARE), which cost more than
-- the insert itself (docs/performance.md). The writer, the only code that writes
-- bookings, now checks both for a whole batch in two set-based queries
-- (src/writer/apply.rs) and dead-letters the events that fail, with SQLSTATE
-- 23503 in their reason as before.
ALTER TABLE bookings
    DROP CONSTRAINT bookings_user_id_fkey,
    DROP CONSTRAINT bookings_event_id_seat_id_fkey;

-- The other half of what the keys enforced: deleting a user or a seat that
-- bookings reference is refused. Once per statement, over the deleted rows, so
-- deleting an event's seats costs one pass over bookings, and no index is added
-- to bookings for it (each would cost every insert). Nothing updates an id or a
-- seat's event.
CREATE FUNCTION refuse_orphaning_bookings() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    orphaned BIGINT;
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        SELECT b.user_id INTO orphaned
          FROM bookings b JOIN deleted d ON d.id = b.user_id LIMIT 1;
    ELSE
        SELECT b.seat_id INTO orphaned
          FROM bookings b JOIN deleted d ON d.id = b.seat_id LIMIT 1;
    END IF;
    IF orphaned IS NOT NULL THEN
        RAISE EXCEPTION '% % is referenced by bookings', rtrim(TG_TABLE_NAME, 's'), orphaned
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER users_referenced_by_bookings
    AFTER DELETE ON users REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_orphaning_bookings();

CREATE TRIGGER seats_referenced_by_bookings
    AFTER DELETE ON seats REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_orphaning_bookings();
