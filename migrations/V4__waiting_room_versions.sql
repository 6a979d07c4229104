-- Every change of a waiting room's settings gets a new version, from one
-- sequence (so a room deleted and added again never goes back to an old number).
-- Redis keeps the version it was given: the loader's sync and the operator API
-- both write a room's settings through `set_room.lua`, which refuses an older
-- version, so a sync that read the row before an operator's change can never
-- undo it. The trigger bumps it for a change made by hand in SQL too.
CREATE SEQUENCE waiting_room_versions;

ALTER TABLE waiting_rooms
    ADD COLUMN version BIGINT NOT NULL DEFAULT nextval('waiting_room_versions');

CREATE FUNCTION waiting_room_next_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := nextval('waiting_room_versions');
    RETURN NEW;
END
$$;

CREATE TRIGGER waiting_room_version BEFORE UPDATE ON waiting_rooms
    FOR EACH ROW EXECUTE FUNCTION waiting_room_next_version();
