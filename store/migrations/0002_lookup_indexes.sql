-- IDENTITY lookups by handle: the newest binding for (record, handle), and
-- a revocation naming it.
--
-- The first indexes, on (record_id, handle) and (record_id, target), lost
-- to the primary key (record_id, zone_type, digest) whenever the planner
-- had no statistics yet, as after a bulk load: each matched two equality
-- columns, as did the primary key, and Postgres chose the primary key and
-- filtered a million rows per lookup (seen: 6 s per lookup at one million
-- bindings). With every equality column of the lookup in one index, the
-- index is the best match with or without statistics.
DROP INDEX entries_by_handle;
DROP INDEX entries_by_target;
CREATE INDEX entries_by_handle ON entries (record_id, zone_type, handle, issued_at DESC)
    WHERE handle IS NOT NULL;
CREATE INDEX entries_by_target ON entries (record_id, zone_type, target)
    WHERE target IS NOT NULL;
