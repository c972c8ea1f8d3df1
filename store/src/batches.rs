//! The batch log and a handle's history: what the public audit reads
//! (SPEC §14.8; BATCHES, BATCH and HANDLE_HISTORY on the query ports).

use crate::error::StoreError;
use crate::sql::{indexed_by, to_hash};
use crate::{Backend, Store};
use poz::codec::Codec;
use poz::entries::EntryBody;
use poz::zone::{EntryKind, SignedEntry, ZoneType};
use poz::Hash32;
use sqlx::{Any, Row, Transaction};

/// One batch of the log: its sequence number (1, 2, 3, … per record and
/// zone), its root digest and when its first entry was stored (ms).
pub type LoggedBatch = (u64, Hash32, u64);

/// A binding and the revocation naming it, as stored (SignedEntry
/// encodings, SPEC §8.2).
pub type StoredPair = (Vec<u8>, Option<Vec<u8>>);

impl Store {
    /// Numbers the batches of `roots` not yet in `id`'s log for `zone`
    /// (in the order given, a root given twice counted once), inside the
    /// commit's transaction. The record's row is locked first: on Postgres
    /// a second commit of the same record waits here until the first has
    /// committed and then reads its numbers, so none is taken twice or
    /// skipped; SQLite's writers are already one at a time.
    pub(crate) async fn log_batches(
        tx: &mut Transaction<'static, Any>,
        id: &Hash32,
        zone: ZoneType,
        roots: &[Hash32],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut fresh: Vec<Hash32> = Vec::new();
        for r in roots {
            if !fresh.contains(r) {
                fresh.push(*r);
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        sqlx::query("UPDATE records SET updated_ms = updated_ms WHERE record_id = $1")
            .bind(id.0.to_vec())
            .execute(&mut **tx)
            .await?;
        let last: i64 = sqlx::query(
            "SELECT COALESCE(MAX(seq), 0) FROM batches WHERE record_id = $1 AND zone_type = $2",
        )
        .bind(id.0.to_vec())
        .bind(zone.0 as i32)
        .fetch_one(&mut **tx)
        .await?
        .get(0);
        let mut next = last;
        for root in fresh {
            let known = sqlx::query(
                "SELECT seq FROM batches WHERE record_id = $1 AND zone_type = $2 AND root_digest = $3",
            )
            .bind(id.0.to_vec())
            .bind(zone.0 as i32)
            .bind(root.0.to_vec())
            .fetch_optional(&mut **tx)
            .await?;
            if known.is_some() {
                continue;
            }
            next += 1;
            sqlx::query(
                "INSERT INTO batches (record_id, zone_type, seq, root_digest, stored_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id.0.to_vec())
            .bind(zone.0 as i32)
            .bind(next)
            .bind(root.0.to_vec())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// One page of `id`'s batch log for `zone` (BATCHES): the batches
    /// numbered above `after`, ascending, at most `limit`, and whether
    /// more follow.
    pub async fn batch_log(
        &self,
        id: &Hash32,
        zone: ZoneType,
        after: u64,
        limit: u16,
    ) -> Result<(Vec<LoggedBatch>, bool), StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT seq, root_digest, stored_ms FROM batches \
             WHERE record_id = $1 AND zone_type = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        )
        .bind(id.0.to_vec())
        .bind(zone.0 as i32)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() > limit as usize;
        let page = rows
            .iter()
            .take(limit as usize)
            .map(|r| {
                Ok((
                    r.get::<i64, _>(0).max(0) as u64,
                    to_hash(&r.get::<Vec<u8>, _>(1))?,
                    r.get::<i64, _>(2).max(0) as u64,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((page, more))
    }

    /// Whether `id`'s log for `zone` holds the batch `root`.
    pub async fn has_batch(
        &self,
        id: &Hash32,
        zone: ZoneType,
        root: &Hash32,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "SELECT seq FROM batches WHERE record_id = $1 AND zone_type = $2 AND root_digest = $3",
        )
        .bind(id.0.to_vec())
        .bind(zone.0 as i32)
        .bind(root.0.to_vec())
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    /// One page of the entries of batch `root` (BATCH): digests above
    /// `after`, ascending, at most `limit` (read by index, never the whole
    /// batch), and the cursor for the next page if there is one.
    pub async fn batch_page(
        &self,
        id: &Hash32,
        zone: ZoneType,
        root: &Hash32,
        after: &Hash32,
        limit: u16,
    ) -> Result<(Vec<Vec<u8>>, Option<Hash32>), StoreError> {
        let rows = sqlx::query(
            "SELECT digest, entry FROM entries \
             WHERE record_id = $1 AND batch_root = $2 AND zone_type = $3 AND digest > $4 \
             ORDER BY digest LIMIT $5",
        )
        .bind(id.0.to_vec())
        .bind(root.0.to_vec())
        .bind(zone.0 as i32)
        .bind(after.0.to_vec())
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        page_of(&rows, limit)
    }

    /// One page of every binding of `handle` that `id` itself issued
    /// (HANDLE_HISTORY, SPEC §14.8), live, expired or revoked, each with a
    /// revocation naming it if there is one: digests above `after`,
    /// ascending, at most `limit`, and the cursor for the next page if
    /// there is one. Copies of other providers' bindings that a person
    /// keeps in their Identity Zone are not issuance and are skipped, as
    /// the batch log skips their batches.
    pub async fn handle_bindings(
        &self,
        id: &Hash32,
        handle: &str,
        after: &Hash32,
        limit: u16,
    ) -> Result<(Vec<StoredPair>, Option<Hash32>), StoreError> {
        let limit = usize::from(limit);
        let mut items: Vec<StoredPair> = Vec::with_capacity(limit.min(64));
        let mut last: Option<Hash32> = None;
        let mut scan = *after;
        // The issuer is in the binding's body, not a column: rows are read
        // a page at a time and copies skipped, until the page is full and
        // one more binding of the record's own shows that more follow.
        loop {
            let rows = self.handle_rows(id, handle, &scan, limit + 1).await?;
            let exhausted = rows.len() <= limit;
            for (digest, entry, revocation) in rows {
                scan = digest;
                if !issued_by(id, &entry)? {
                    continue;
                }
                if items.len() == limit {
                    return Ok((items, last));
                }
                last = Some(digest);
                items.push((entry, revocation));
            }
            if exhausted {
                return Ok((items, None));
            }
        }
    }

    /// Up to `n` bindings of `handle` in `id`'s Identity Zone (copies
    /// included) with digests above `after`, ascending, each with a
    /// revocation naming it if there is one.
    async fn handle_rows(
        &self,
        id: &Hash32,
        handle: &str,
        after: &Hash32,
        n: usize,
    ) -> Result<Vec<(Hash32, Vec<u8>, Option<Vec<u8>>)>, StoreError> {
        let rows = sqlx::query(&handle_rows_sql(self.backend))
            .bind(id.0.to_vec())
            .bind(ZoneType::IDENTITY.0 as i32)
            .bind(handle)
            .bind(EntryKind::GRANT.0 as i32)
            .bind(after.0.to_vec())
            .bind(i64::try_from(n).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    to_hash(&r.get::<Vec<u8>, _>(0))?,
                    r.get::<Vec<u8>, _>(1),
                    r.get::<Option<Vec<u8>>, _>(2),
                ))
            })
            .collect()
    }
}

/// The query of [`Store::handle_rows`]: `$1` record, `$2` zone, `$3`
/// handle, `$4` kind, `$5` digest to start after, `$6` rows.
///
/// The revocation by subquery, not a join: two revocations of one binding
/// must not list it twice. On SQLite each table names its index: SQLite
/// plans without statistics, and for a page ordered by digest it chose to
/// walk the primary key over the provider's whole Identity Zone (the
/// order for free) rather than sort the few rows of one handle, which made
/// HANDLE_HISTORY, a public query, cost a read of every binding (358 ms
/// at 110,000 bindings, seen in the pozd soak). Postgres has statistics
/// and takes the handle index itself.
pub(crate) fn handle_rows_sql(backend: Backend) -> String {
    format!(
        "SELECT b.digest, b.entry, \
           (SELECT r.entry FROM entries r{r} WHERE r.record_id = b.record_id \
            AND r.zone_type = b.zone_type AND r.target = b.digest AND r.handle IS NULL ORDER BY r.digest LIMIT 1) \
         FROM entries b{b} \
         WHERE b.record_id = $1 AND b.zone_type = $2 AND b.handle = $3 AND b.kind = $4 \
         AND b.digest > $5 ORDER BY b.digest LIMIT $6",
        b = indexed_by(backend, "entries_by_handle"),
        r = indexed_by(backend, "entries_by_target"),
    )
}

/// Whether the stored binding `entry` was issued by record `id` (not a
/// copy of another provider's binding kept by its subject).
fn issued_by(id: &Hash32, entry: &[u8]) -> Result<bool, StoreError> {
    let e = SignedEntry::from_bytes(entry)
        .map_err(|e| StoreError::Invalid(format!("stored binding: {e}")))?;
    match EntryBody::decode(ZoneType::IDENTITY, e.kind, &e.body) {
        Ok(EntryBody::Binding(b)) => Ok(b.issuer == *id),
        _ => Err(StoreError::Invalid("stored binding does not decode".into())),
    }
}

/// A page of (digest, entry) rows fetched with one row beyond `limit`:
/// the entries and the cursor when more follow.
fn page_of(
    rows: &[sqlx::any::AnyRow],
    limit: u16,
) -> Result<(Vec<Vec<u8>>, Option<Hash32>), StoreError> {
    let more = rows.len() > limit as usize;
    let mut entries = Vec::with_capacity(rows.len().min(limit as usize));
    let mut last = None;
    for r in rows.iter().take(limit as usize) {
        last = Some(to_hash(&r.get::<Vec<u8>, _>(0))?);
        entries.push(r.get::<Vec<u8>, _>(1));
    }
    Ok((entries, if more { last } else { None }))
}

#[cfg(test)]
mod plans {
    //! The SQLite plans of the queries that once walked a whole zone. A
    //! plan is the planner's choice for the schema (SQLite keeps no
    //! statistics unless asked), so an empty database shows it.
    use super::handle_rows_sql;
    use crate::handles::revoked_unfreed_sql;
    use crate::{Backend, Store, StoreOptions};
    use sqlx::Row;

    async fn plan(store: &Store, sql: &str, binds: usize) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query(&explain);
        for i in 0..binds {
            q = q.bind(i as i64);
        }
        q.fetch_all(&store.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| r.get::<String, _>(3))
            .collect()
    }

    #[tokio::test]
    async fn handle_queries_probe_the_handle_index_not_the_zone() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("p.db").display());
        let store = Store::open(&url, StoreOptions::default()).await.unwrap();
        for (name, sql, binds) in [
            ("handle_rows", handle_rows_sql(Backend::Sqlite), 6),
            ("revoked_unfreed", revoked_unfreed_sql(Backend::Sqlite), 4),
        ] {
            let plan = plan(&store, &sql, binds).await;
            let text = plan.join("\n");
            assert!(
                text.contains("SEARCH b USING INDEX entries_by_handle (record_id=? AND zone_type=? AND handle=?)"),
                "{name}: the bindings are not found by handle:\n{text}"
            );
            assert!(
                text.contains("SEARCH r USING INDEX entries_by_target (record_id=? AND zone_type=? AND target=?)"),
                "{name}: the revocations are not found by target:\n{text}"
            );
            assert!(
                !plan.iter().any(|l| l.starts_with("SCAN ")),
                "{name}: a table is scanned:\n{text}"
            );
        }
        store.close().await;
    }
}
