#!/usr/bin/env bash
# Storage per binding of the entries table, and what hash partitioning
# and slimmer rows would make of it (docs/OPERATIONS.md, "The 100M plan").
# Reads a database that already holds bindings (load one with
# `KEEP_DB=1 DB=NAME load-tests/bulk-issue.sh` or
# `KEEP_DB=1 DB=NAME load-tests/store-identity.sh`), prints every relation
# of `entries` with its size and bytes per binding, then builds three copies
# in the same database and measures them the same way:
#   entries_flat  - the same rows and indexes, indexes built after loading
#   entries_part  - the same rows, hash-partitioned on handle (PARTS
#                   partitions, default 16), the same indexes per partition
#   entries_slim  - partitioned as above, with the record named by a
#                   4-byte number (record_no) instead of its 32-byte ID,
#                   and the batch by its number in the batch log (batch_seq)
#                   instead of its 32-byte root
# (each copy's indexes built after loading) and EXPLAINs one IDENTITY lookup (binding by handle plus the revocation
# naming it) on each: the index probes it takes. The copies are dropped at
# the end (KEEP_COPIES=1 keeps them). Nothing of the store's own tables is
# changed.
#   DB=poz_bulk_123 [PARTS=16] load-tests/entries-storage.sh
set -euo pipefail
: "${PGHOST:=127.0.0.1}" "${PGPORT:=5432}" "${PGUSER:=postgres}"
export PGHOST PGPORT PGUSER
: "${DB:?name the database holding the bindings: DB=...}"
PARTS=${PARTS:-16}
q() { psql -qAt -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

n=$(q -c "SELECT count(*) FROM entries WHERE handle IS NOT NULL")
echo "database $DB: $n bindings; Postgres $(q -c 'SHOW server_version')"
sizes() {  # sizes TABLE: each relation of the table (partitions summed), bytes per binding
  q -F ' ' -c "
    WITH RECURSIVE parts(oid) AS (
        SELECT '$1'::regclass::oid
        UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN parts p ON i.inhparent = p.oid),
      rels AS (
        SELECT 'heap' AS what, pg_relation_size(c.oid) AS bytes FROM pg_class c JOIN parts p ON p.oid = c.oid
        UNION ALL
        SELECT 'toast', coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) FROM pg_class c JOIN parts p ON p.oid = c.oid
        UNION ALL
        SELECT coalesce((SELECT pi.inhparent::regclass::text FROM pg_inherits pi WHERE pi.inhrelid = ic.oid),
                        ic.relname), pg_relation_size(ic.oid)
        FROM pg_index x JOIN parts p ON p.oid = x.indrelid JOIN pg_class ic ON ic.oid = x.indexrelid)
    SELECT rpad(what, 34), lpad(pg_size_pretty(sum(bytes)), 10), lpad(round(sum(bytes) / greatest($n, 1))::text, 6) || ' B/binding'
    FROM rels GROUP BY what ORDER BY sum(bytes) DESC"
  q -c "SELECT 'total ' || pg_size_pretty(sum(pg_total_relation_size(c.oid))) || ', ' ||
               round(sum(pg_total_relation_size(c.oid)) / greatest($n, 1)) || ' B/binding'
        FROM pg_class c WHERE c.oid = '$1'::regclass OR c.oid IN (
          WITH RECURSIVE parts(oid) AS (SELECT '$1'::regclass::oid UNION ALL
            SELECT i.inhrelid FROM pg_inherits i JOIN parts p ON i.inhparent = p.oid) SELECT oid FROM parts)"
}
echo "== entries as the store keeps it"
sizes entries
q -c "SELECT 'row: entry ' || round(avg(octet_length(entry))) || ' B, whole row ' || round(avg(pg_column_size(e.*))) || ' B' FROM entries e WHERE handle IS NOT NULL"

one=$(q -c "SELECT handle FROM entries WHERE handle IS NOT NULL ORDER BY digest LIMIT 1")
rid=$(q -c "SELECT encode(record_id, 'hex') FROM entries WHERE handle = '$one' LIMIT 1")
lookup() {  # lookup TABLE RECORD-PREDICATE
  q -c "ANALYZE $1" >/dev/null
  q -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
        SELECT b.entry, r.entry FROM $1 b
        LEFT JOIN $1 r ON $2 AND r.zone_type = b.zone_type AND r.target = b.digest AND r.handle IS NULL
        WHERE ${2//r./b.} AND b.zone_type = 1 AND b.handle = '$one' AND b.kind = 1
        ORDER BY b.issued_at DESC LIMIT 1"
}
echo "== lookup of '$one' on entries"
lookup entries "r.record_id = decode('$rid', 'hex')"

partitioned() {  # partitioned NAME COLUMNS: an empty table hash-partitioned on handle
  q -c "DROP TABLE IF EXISTS $1; CREATE TABLE $1 ($2) PARTITION BY HASH (handle)"
  for i in $(seq 0 $((PARTS - 1))); do
    q -c "CREATE TABLE ${1}_p${i}_ PARTITION OF $1 FOR VALUES WITH (MODULUS $PARTS, REMAINDER $i)"
  done
}

# The store's indexes grew by inserts (pages split, about 70 % full);
# the copies' are built after loading (sorted, 90 % full). A copy of the
# table unpartitioned, indexes built the same way, separates the two.
echo "== entries_flat: the same rows and indexes, unpartitioned, indexes built after the load"
q -c "DROP TABLE IF EXISTS entries_flat; CREATE TABLE entries_flat (LIKE entries INCLUDING DEFAULTS);
      INSERT INTO entries_flat SELECT * FROM entries;
      ALTER TABLE entries_flat ADD PRIMARY KEY (record_id, zone_type, digest);
      CREATE INDEX entries_flat_by_handle ON entries_flat (record_id, zone_type, handle, issued_at DESC) WHERE handle IS NOT NULL;
      CREATE INDEX entries_flat_by_target ON entries_flat (record_id, zone_type, target) WHERE target IS NOT NULL;
      CREATE INDEX entries_flat_by_skeleton ON entries_flat (record_id, zone_type, skeleton) WHERE skeleton IS NOT NULL;
      CREATE INDEX entries_flat_by_batch ON entries_flat (record_id, batch_root, digest) WHERE batch_root IS NOT NULL"
sizes entries_flat

echo "== entries_part: the same rows in $PARTS hash partitions on handle"
partitioned entries_part "LIKE entries"
q -c "INSERT INTO entries_part SELECT * FROM entries"
# A unique index on a partitioned table holds the partition key; the
# digest covers the handle, so (record, zone, digest, handle) is as
# unique as (record, zone, digest). NULLS NOT DISTINCT (Postgres 15):
# revocations (no handle) stay unique too.
q -c "CREATE UNIQUE INDEX entries_part_key ON entries_part (record_id, zone_type, digest, handle) NULLS NOT DISTINCT;
      CREATE INDEX entries_part_by_handle ON entries_part (record_id, zone_type, handle, issued_at DESC) WHERE handle IS NOT NULL;
      CREATE INDEX entries_part_by_target ON entries_part (record_id, zone_type, target) WHERE target IS NOT NULL;
      CREATE INDEX entries_part_by_skeleton ON entries_part (record_id, zone_type, skeleton) WHERE skeleton IS NOT NULL;
      CREATE INDEX entries_part_by_batch ON entries_part (record_id, batch_root, digest) WHERE batch_root IS NOT NULL"
sizes entries_part
echo "== lookup on entries_part"
lookup entries_part "r.record_id = decode('$rid', 'hex')"

echo "== entries_slim: partitioned, record_no (4 B) for record_id (32 B), batch_seq (8 B) for batch_root (32 B)"
partitioned entries_slim "record_no INTEGER NOT NULL, zone_type SMALLINT NOT NULL, kind SMALLINT NOT NULL,
    issued_at BIGINT, stored_ms BIGINT NOT NULL, batch_seq BIGINT, digest BYTEA NOT NULL,
    handle TEXT, skeleton TEXT, target BYTEA, entry BYTEA NOT NULL"
q -c "DROP TABLE IF EXISTS entries_slim_recno; CREATE TABLE entries_slim_recno AS SELECT record_id, (row_number() OVER (ORDER BY record_id))::int AS no FROM records;
      INSERT INTO entries_slim
      SELECT n.no, e.zone_type, e.kind, e.issued_at, e.stored_ms, b.seq, e.digest, e.handle,
             CASE WHEN e.skeleton = e.handle THEN NULL ELSE e.skeleton END, e.target, e.entry
      FROM entries e JOIN entries_slim_recno n USING (record_id)
      LEFT JOIN batches b ON b.record_id = e.record_id AND b.zone_type = e.zone_type AND b.root_digest = e.batch_root"
# The skeleton is kept only where it differs from the handle (most
# handles are their own skeleton); the confusable check probes the
# skeleton index and the handle index.
q -c "CREATE UNIQUE INDEX entries_slim_key ON entries_slim (record_no, zone_type, digest, handle) NULLS NOT DISTINCT;
      CREATE INDEX entries_slim_by_handle ON entries_slim (record_no, zone_type, handle, issued_at DESC) WHERE handle IS NOT NULL;
      CREATE INDEX entries_slim_by_target ON entries_slim (record_no, zone_type, target) WHERE target IS NOT NULL;
      CREATE INDEX entries_slim_by_skeleton ON entries_slim (record_no, zone_type, skeleton) WHERE skeleton IS NOT NULL;
      CREATE INDEX entries_slim_by_batch ON entries_slim (record_no, batch_seq, digest) WHERE batch_seq IS NOT NULL"
sizes entries_slim
no=$(q -c "SELECT no FROM entries_slim_recno WHERE record_id = decode('$rid', 'hex')")
echo "== lookup on entries_slim"
lookup entries_slim "r.record_no = $no"

if [ "${KEEP_COPIES:-0}" != 1 ]; then
  q -c "DROP TABLE entries_flat; DROP TABLE entries_part; DROP TABLE entries_slim; DROP TABLE entries_slim_recno"
fi
