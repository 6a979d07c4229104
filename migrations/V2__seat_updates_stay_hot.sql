-- The writer changes a seat's status with every hold that reaches it. An index on
-- status made each such update write a new entry into every index of seats; with
-- none, and room left in each page, the update is HOT (heap-only): one row
-- version and no index writes. Nothing reads seats by status alone: the loader
-- and the catalogue read an event's seats through (event_id, ...) indexes.
DROP INDEX seats_event_status;
ALTER TABLE seats SET (fillfactor = 85);
