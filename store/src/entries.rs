//! Zone entries: storing them (in bulk, multi-row), and the lookups
//! that read them (bindings by handle or subject, batches, chains, zone
//! pages).

use crate::error::StoreError;
use crate::handles::HANDLES_PER_QUERY;
use crate::sql::{db_time, multi_row_insert, no_timeout, now_ms, to_hash};
use crate::{Backend, Store};
use poz::codec::Codec;
use poz::entries::EntryBody;
use poz::zone::{EntryKind, SignedEntry, ZoneType};
use poz::{Hash32, Record};
use sqlx::{Any, Row, Transaction};

/// The row data of one entry.
struct EntryRow {
    digest: Hash32,
    kind: u8,
    handle: Option<String>,
    target: Option<Vec<u8>>,
    issued_at: Option<i64>,
    bytes: Vec<u8>,
    /// The batch root digest its first batch signature proves to.
    batch_root: Option<Vec<u8>>,
    /// Bindings: the handle's confusable skeleton (SPEC §8.4.2).
    skeleton: Option<String>,
    /// Whether the record itself issued the entry (not a copy of another
    /// provider's binding in a user's record): only its own batches go
    /// into its batch log (SPEC §14.8).
    own: bool,
    /// Bindings this record issued (not copies of other providers'
    /// bindings in a user's record): the subject and expiry, for the
    /// handle rules.
    binding: Option<(Hash32, u64)>,
}

/// `keys` is the holding record's Public Key Map: an entry that names keys
/// by index (service hosts' CA keys, trust groups) binds their key IDs
/// into its digest (SPEC §5.3). Identity Zone entries name none.
fn entry_row(
    record_id: &Hash32,
    zone: ZoneType,
    keys: &poz::keys::PublicKeyMap,
    e: &SignedEntry,
) -> Result<EntryRow, StoreError> {
    let body = EntryBody::decode(zone, e.kind, &e.body)
        .map_err(|err| StoreError::Invalid(format!("{zone} entry: {err}")))?;
    let (issuer, handle, target, issued_at) = match &body {
        EntryBody::Binding(b) => (
            b.issuer,
            Some(b.handle.clone()),
            None,
            Some(db_time("binding.issued_at", b.issued_at)?),
        ),
        EntryBody::Revocation(r) => (
            *record_id,
            None,
            Some(r.target.0.to_vec()),
            Some(db_time("revocation.revoked_at", r.revoked_at)?),
        ),
        _ => (*record_id, None, None, None),
    };
    let binding = match &body {
        EntryBody::Binding(b) => {
            // Expiry is not a column, but it is compared as a time: the
            // same bound.
            db_time("binding.expires_at", b.expires_at)?;
            (b.issuer == *record_id).then_some((b.subject, b.expires_at))
        }
        _ => None,
    };
    let key_binding = poz::zone::KeyBinding::resolve(&body, keys)
        .map_err(|err| StoreError::Invalid(format!("{zone} entry: {err}")))?;
    let digest = e.digest(&issuer, zone, &key_binding);
    Ok(EntryRow {
        own: issuer == *record_id,
        skeleton: handle.as_deref().map(poz::handle::skeleton),
        binding,
        digest,
        kind: e.kind.0,
        handle,
        target,
        issued_at,
        bytes: e.to_bytes(),
        batch_root: e
            .signatures
            .iter()
            .filter(|s| s.sig_type == poz::keys::SigType::ED25519_BATCH)
            .find_map(|s| s.entry_message(&issuer, zone, &digest))
            .map(|(root, _)| root.0.to_vec()),
    })
}

/// Entries stored before the first statistics refresh; each later one
/// waits until the count has doubled.
pub(crate) const FIRST_ANALYZE: u64 = 10_000;

/// (domain, handle) pairs per statement of [`Store::lookup_bindings`]:
/// three parameters each, well inside both backends' limits.
pub const LOOKUPS_PER_QUERY: usize = 256;

/// A binding and the revocation naming it, if any.
pub type BindingAnswer = (SignedEntry, Option<SignedEntry>);

/// A binding and the revocation naming it as the store keeps them: the
/// SignedEntry encodings (SPEC §8.2) it verified before writing. The
/// serving path hands these bytes on undecoded (`IdentityAnswer::splice`,
/// SPEC §14.4); [`StoredBinding::decode`] is for callers that read fields.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoredBinding {
    pub entry: Vec<u8>,
    pub revocation: Option<Vec<u8>>,
}

impl StoredBinding {
    /// Both entries decoded.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] when the database holds what the store did
    /// not write.
    pub fn decode(&self) -> Result<BindingAnswer, StoreError> {
        decode_binding(&self.entry, self.revocation.clone())
    }
}

/// A stored binding and revocation, decoded (the store wrote them, so a
/// failure here means the database holds what the store did not write).
pub(crate) fn decode_binding(
    entry: &[u8],
    revocation: Option<Vec<u8>>,
) -> Result<BindingAnswer, StoreError> {
    let e = SignedEntry::from_bytes(entry)
        .map_err(|e| StoreError::Invalid(format!("stored entry: {e}")))?;
    let rev = revocation
        .map(|b| SignedEntry::from_bytes(&b))
        .transpose()
        .map_err(|e| StoreError::Invalid(format!("stored revocation: {e}")))?;
    Ok((e, rev))
}

/// Rows per multi-row INSERT of zone entries.
const ENTRY_ROWS_PER_STATEMENT: usize = 500;

impl Store {
    pub(crate) async fn insert_entries(
        tx: &mut Transaction<'static, Any>,
        id: &Hash32,
        zone: ZoneType,
        keys: &poz::keys::PublicKeyMap,
        entries: &[SignedEntry],
        reservation: &poz::handle::Reservation,
    ) -> Result<(u32, u32), StoreError> {
        let rows = entries
            .iter()
            .map(|e| entry_row(id, zone, keys, e))
            .collect::<Result<Vec<_>, _>>()?;
        // One live binding per handle, and no look-alike of another
        // subject's (SPEC §8.4): checked here, inside the transaction
        // that commits, so every path (Provider API, bulk import,
        // SUBMIT_SIGNED, a record's own zones) is held to it.
        if zone == ZoneType::IDENTITY {
            let candidates: Vec<(String, Hash32, Option<Vec<u8>>)> = rows
                .iter()
                .filter(|r| r.kind == EntryKind::GRANT.0)
                .filter_map(|r| {
                    let (subject, _) = r.binding?;
                    Some((r.handle.clone()?, subject, Some(r.digest.0.to_vec())))
                })
                .collect();
            if !candidates.is_empty() {
                let verdicts = Self::judge_bindings(tx, id, &candidates, reservation).await?;
                if let Some(Err(refused)) = verdicts.into_iter().find(|v| v.is_err()) {
                    return Err(StoreError::Handle(refused));
                }
            }
        }
        let now = now_ms();
        // The batches these entries belong to go into the batch log
        // first: it numbers them under the record's row lock, which
        // orders this commit against any other of the same record.
        let own_batches: Vec<Hash32> = rows
            .iter()
            .filter(|r| r.own)
            .filter_map(|r| r.batch_root.as_deref().map(to_hash))
            .collect::<Result<_, _>>()?;
        Self::log_batches(tx, id, zone, &own_batches, now).await?;
        let mut stored = 0u32;
        // Multi-row inserts: one round trip per chunk instead of per entry
        // (a provider's bulk issue writes thousands at a time). 10 bind
        // parameters per row; 500 rows stay far below both backends'
        // parameter limits (Postgres 65,535; SQLite 32,766); 11 with the
        // skeleton.
        for chunk in rows.chunks(ENTRY_ROWS_PER_STATEMENT) {
            let mut sql = multi_row_insert(
                "INSERT INTO entries (record_id, zone_type, digest, kind, handle, target, issued_at, entry, stored_ms, batch_root, skeleton)",
                chunk.len(),
                11,
            );
            // Entries are immutable: a row with this key is this entry, so
            // "insert if absent" suffices. No conflict target: the key is
            // (record_id, zone_type, digest) in one heap and holds the
            // handle too when partitioned (partitions.rs); the entries
            // table has no other unique index.
            sql.push_str(" ON CONFLICT DO NOTHING");
            let mut q = sqlx::query(&sql);
            for row in chunk {
                q = q
                    .bind(id.0.to_vec())
                    .bind(zone.0 as i32)
                    .bind(row.digest.0.to_vec())
                    .bind(row.kind as i32)
                    .bind(row.handle.clone())
                    .bind(row.target.clone())
                    .bind(row.issued_at)
                    .bind(row.bytes.clone())
                    .bind(now)
                    .bind(row.batch_root.clone())
                    .bind(row.skeleton.clone());
            }
            stored += q.execute(&mut **tx).await?.rows_affected() as u32;
        }
        let present = rows.len() as u32 - stored;
        Ok((stored, present))
    }

    /// Appends zone entries (already verified by the caller) to a record.
    pub async fn put_entries(
        &self,
        id: &Hash32,
        zone: ZoneType,
        entries: &[Vec<u8>],
        idem: &str,
    ) -> Result<(u32, u32), StoreError> {
        let decoded = entries
            .iter()
            .enumerate()
            .map(|(i, b)| {
                SignedEntry::from_bytes(b)
                    .map_err(|e| StoreError::Invalid(format!("entry {i}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        poz::verify::check_entry_times(zone, &decoded, now_ms().max(0) as u64)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let id = *id;
        let request: Vec<u8> = entries
            .iter()
            .flat_map(|e| e.iter().copied())
            .chain(id.0)
            .chain([zone.0])
            .collect();
        let idem = idem.to_owned();
        let reservation = self.options.reservation();
        self.tx(move |tx| {
            let (decoded, request, idem) = (decoded.clone(), request.clone(), idem.clone());
            Box::pin(async move {
                if let Some(r) = Self::idempotent(tx, &idem, &request).await? {
                    let n = u32::from_be_bytes([r[0], r[1], r[2], r[3]]);
                    return Ok((0, n));
                }
                let Some(head) =
                    sqlx::query("SELECT head_record FROM records WHERE record_id = $1")
                        .bind(id.0.to_vec())
                        .fetch_optional(&mut **tx)
                        .await?
                else {
                    return Err(StoreError::NotFound(format!("record {id}")));
                };
                // Entries outside the Identity Zone may name keys by index,
                // which their digests bind (SPEC §5.3): resolve them in the
                // head's Public Key Map. Identity entries name none, so a
                // bulk issue decodes no record.
                let keys = if zone == ZoneType::IDENTITY {
                    poz::keys::PublicKeyMap::default()
                } else {
                    let bytes: Vec<u8> = head.get(0);
                    Record::from_bytes(&bytes)
                        .map_err(|e| StoreError::Invalid(format!("stored head of {id}: {e}")))?
                        .keys
                };
                let (stored, present) =
                    Self::insert_entries(tx, &id, zone, &keys, &decoded, &reservation).await?;
                Self::remember(tx, &idem, &request, &(stored + present).to_be_bytes()).await?;
                Ok((stored, present))
            })
        })
        .await
        .inspect(|(stored, _)| self.after_bulk_insert(*stored as u64))
    }

    /// Postgres plans with statistics that autovacuum refreshes about once
    /// a minute at best; during a bulk issue the entries table grows from
    /// nothing to millions in that time, and with "empty table" statistics
    /// the planner scans the whole table by primary key for every handle
    /// lookup (seen: a bulk issue slowing to 1,100 bindings/s at 50,000).
    /// So the store refreshes them itself each time the entries it has
    /// stored doubles (10k, 20k, 40k, …): a few dozen ANALYZEs for a
    /// billion rows, each sampling 30,000 rows in the background.
    pub(crate) fn after_bulk_insert(&self, stored: u64) {
        use std::sync::atomic::Ordering;
        if self.backend != Backend::Postgres || stored == 0 {
            return;
        }
        let total = self.stored.fetch_add(stored, Ordering::Relaxed) + stored;
        let next = self.next_analyze.load(Ordering::Relaxed);
        if total >= next
            && self
                .next_analyze
                .compare_exchange(next, total * 2, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let store = self.clone();
            tokio::spawn(async move {
                match store.analyze_entries().await {
                    Ok(()) => tracing::debug!(total, "refreshed statistics of entries"),
                    Err(e) => tracing::warn!(error = %e, "ANALYZE entries failed"),
                }
            });
        }
    }

    /// The latest binding for `handle` and its revocation, if any.
    pub async fn binding(
        &self,
        id: &Hash32,
        handle: &str,
    ) -> Result<(SignedEntry, Option<SignedEntry>), StoreError> {
        // One round trip: the latest binding for the handle, and a
        // revocation naming it if there is one (any one revokes it).
        let r = sqlx::query(
            "SELECT b.entry, r.entry FROM entries b \
             LEFT JOIN entries r ON r.record_id = b.record_id AND r.zone_type = b.zone_type AND r.target = b.digest AND r.handle IS NULL \
             WHERE b.record_id = $1 AND b.zone_type = $2 AND b.handle = $3 AND b.kind = $4 \
             ORDER BY b.issued_at DESC LIMIT 1",
        )
        .bind(id.0.to_vec())
        .bind(ZoneType::IDENTITY.0 as i32)
        .bind(handle)
        .bind(EntryKind::GRANT.0 as i32)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no binding for handle {handle:?}")))?;
        decode_binding(&r.get::<Vec<u8>, _>(0), r.get(1))
    }

    /// [`Store::binding`] by domain in the same one round trip (the
    /// domain joined in): the hot path of every IDENTITY lookup. A miss
    /// costs one more query to say whether the domain or the handle is
    /// unknown.
    pub async fn binding_by_domain(
        &self,
        domain: &str,
        handle: &str,
    ) -> Result<StoredBinding, StoreError> {
        let r = sqlx::query(
            "SELECT b.entry, r.entry FROM domains d \
             JOIN entries b ON b.record_id = d.record_id AND b.zone_type = $2 AND b.handle = $3 AND b.kind = $4 \
             LEFT JOIN entries r ON r.record_id = b.record_id AND r.zone_type = b.zone_type AND r.target = b.digest AND r.handle IS NULL \
             WHERE d.domain = $1 \
             ORDER BY b.issued_at DESC LIMIT 1",
        )
        .bind(domain)
        .bind(ZoneType::IDENTITY.0 as i32)
        .bind(handle)
        .bind(EntryKind::GRANT.0 as i32)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = r else {
            self.resolve(domain).await?;
            return Err(StoreError::NotFound(format!(
                "no binding for handle {handle:?}"
            )));
        };
        Ok(StoredBinding {
            entry: r.get(0),
            revocation: r.get(1),
        })
    }

    /// [`Store::binding_by_domain`] for many (domain, handle) pairs in one
    /// statement per [`LOOKUPS_PER_QUERY`]: the query gateways gather the
    /// IDENTITY lookups that arrive while earlier ones are in flight and
    /// ask for them together, so a busy gateway pays one round trip and one
    /// statement for a group instead of one per lookup. The answers come
    /// back in the order asked, each found or NotFound (naming whether the
    /// domain or the handle is unknown); a database failure fails the lot.
    pub async fn lookup_bindings(
        &self,
        asks: &[(String, String)],
    ) -> Result<Vec<Result<StoredBinding, StoreError>>, StoreError> {
        let mut out: Vec<Result<StoredBinding, StoreError>> = Vec::with_capacity(asks.len());
        for (n, chunk) in asks.chunks(LOOKUPS_PER_QUERY).enumerate() {
            // The pairs as a VALUES list (both backends accept it in a
            // CTE), each joined to its record by domain.
            let mut sql = String::from("WITH q(i, domain, handle) AS (VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let p = 3 + 3 * i;
                sql.push_str(&format!("(${}, ${}, ${})", p, p + 1, p + 2));
            }
            sql.push_str(match self.backend {
                // The newest binding straight from the handle index (one
                // probe and its heap row), then a revocation naming it by
                // the target index: two probes per pair.
                Backend::Postgres => {
                    ") SELECT q.i, d.record_id, b.entry, \
                       (SELECT r.entry FROM entries r WHERE r.record_id = d.record_id AND r.zone_type = $1 \
                        AND r.target = b.digest AND r.handle IS NULL LIMIT 1) \
                     FROM q LEFT JOIN domains d ON d.domain = q.domain \
                     LEFT JOIN LATERAL (SELECT e.entry, e.digest FROM entries e \
                       WHERE e.record_id = d.record_id AND e.zone_type = $1 AND e.handle = q.handle \
                       AND e.kind = $2 ORDER BY e.issued_at DESC LIMIT 1) b ON true"
                }
                // SQLite has no LATERAL: the newest binding's digest by
                // the handle index, then the row by primary key.
                Backend::Sqlite => {
                    "), b AS (SELECT q.i, d.record_id AS rid, \
                       (SELECT e.digest FROM entries e WHERE e.record_id = d.record_id AND e.zone_type = $1 \
                        AND e.handle = q.handle AND e.kind = $2 ORDER BY e.issued_at DESC LIMIT 1) AS digest \
                       FROM q LEFT JOIN domains d ON d.domain = q.domain) \
                     SELECT b.i, b.rid, e.entry, \
                       (SELECT r.entry FROM entries r WHERE r.record_id = b.rid AND r.zone_type = $1 \
                        AND r.target = b.digest AND r.handle IS NULL LIMIT 1) \
                     FROM b LEFT JOIN entries e ON e.record_id = b.rid AND e.zone_type = $1 AND e.digest = b.digest"
                }
            });
            let mut q = sqlx::query(&sql)
                .bind(ZoneType::IDENTITY.0 as i32)
                .bind(EntryKind::GRANT.0 as i32);
            for (i, (domain, handle)) in chunk.iter().enumerate() {
                q = q
                    .bind(i64::try_from(i).unwrap_or(i64::MAX))
                    .bind(domain.to_ascii_lowercase())
                    .bind(handle.as_str());
            }
            let rows = q.fetch_all(&self.pool).await?;
            let mut answers: Vec<Option<Result<StoredBinding, StoreError>>> =
                (0..chunk.len()).map(|_| None).collect();
            for r in rows {
                let i = r.get::<i64, _>(0);
                let Some(slot) = usize::try_from(i).ok().and_then(|i| answers.get_mut(i)) else {
                    return Err(StoreError::Invalid(format!("lookup row for no pair ({i})")));
                };
                let (domain, handle) = &chunk[i as usize];
                let answer = match (
                    r.get::<Option<Vec<u8>>, _>(1),
                    r.get::<Option<Vec<u8>>, _>(2),
                ) {
                    (None, _) => Err(StoreError::NotFound(format!(
                        "no record for domain {domain}"
                    ))),
                    (Some(_), None) => Err(StoreError::NotFound(format!(
                        "no binding for handle {handle:?}"
                    ))),
                    (Some(_), Some(entry)) => Ok(StoredBinding {
                        entry,
                        revocation: r.get(3),
                    }),
                };
                *slot = Some(answer);
            }
            for (i, a) in answers.into_iter().enumerate() {
                match a {
                    Some(a) => out.push(a),
                    None => {
                        return Err(StoreError::Invalid(format!(
                            "no lookup row for pair {}",
                            n * LOOKUPS_PER_QUERY + i
                        )))
                    }
                }
            }
        }
        Ok(out)
    }

    /// The newest binding of each of `handles` (those that have one), with
    /// whether it is revoked: the Provider API's duplicate check for a
    /// bulk issue, a few hundred handles per query.
    pub async fn bindings_for_handles(
        &self,
        id: &Hash32,
        handles: &[String],
    ) -> Result<Vec<(String, SignedEntry, bool)>, StoreError> {
        let mut newest: std::collections::HashMap<String, (i64, Vec<u8>, bool)> =
            std::collections::HashMap::new();
        for chunk in handles.chunks(HANDLES_PER_QUERY) {
            let mut sql = String::from(
                "SELECT b.handle, b.issued_at, b.entry, r.digest FROM entries b \
                 LEFT JOIN entries r ON r.record_id = b.record_id AND r.zone_type = b.zone_type AND r.target = b.digest AND r.handle IS NULL \
                 WHERE b.record_id = $1 AND b.zone_type = $2 AND b.kind = $3 AND b.handle IN (",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", i + 4));
            }
            sql.push(')');
            let mut q = sqlx::query(&sql)
                .bind(id.0.to_vec())
                .bind(ZoneType::IDENTITY.0 as i32)
                .bind(EntryKind::GRANT.0 as i32);
            for h in chunk {
                q = q.bind(h.clone());
            }
            for r in q.fetch_all(&self.pool).await? {
                let handle: String = r.get(0);
                let at: i64 = r.get::<Option<i64>, _>(1).unwrap_or(0);
                let revoked = r.get::<Option<Vec<u8>>, _>(3).is_some();
                let newer = newest.get(&handle).is_none_or(|(t, _, _)| at > *t);
                if newer {
                    newest.insert(handle, (at, r.get(2), revoked));
                }
            }
        }
        newest
            .into_iter()
            .map(|(h, (_, b, revoked))| {
                SignedEntry::from_bytes(&b)
                    .map(|e| (h, e, revoked))
                    .map_err(|e| StoreError::Invalid(format!("stored entry: {e}")))
            })
            .collect()
    }

    /// A page of a provider's bindings in handle order, after `after`.
    pub async fn list_bindings(
        &self,
        id: &Hash32,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(String, SignedEntry, bool)>, StoreError> {
        let rows = sqlx::query(
            "SELECT b.handle, b.entry, r.digest FROM entries b \
             LEFT JOIN entries r ON r.record_id = b.record_id AND r.zone_type = b.zone_type AND r.target = b.digest AND r.handle IS NULL \
             WHERE b.record_id = $1 AND b.zone_type = $2 AND b.kind = $3 \
             AND b.handle IS NOT NULL AND b.handle > $4 ORDER BY b.handle, b.issued_at DESC LIMIT $5",
        )
        .bind(id.0.to_vec())
        .bind(ZoneType::IDENTITY.0 as i32)
        .bind(EntryKind::GRANT.0 as i32)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let e = SignedEntry::from_bytes(&r.get::<Vec<u8>, _>(1))
                    .map_err(|e| StoreError::Invalid(format!("stored entry: {e}")))?;
                Ok((
                    r.get::<String, _>(0),
                    e,
                    r.get::<Option<Vec<u8>>, _>(2).is_some(),
                ))
            })
            .collect()
    }

    /// Every entry of the batch whose root digest is `root` (SPEC §8.9),
    /// in leaf order: what an auditor lists to check a batch
    /// (`poz::zone::audit_batch`).
    pub async fn batch(&self, id: &Hash32, root: &Hash32) -> Result<Vec<SignedEntry>, StoreError> {
        let rows =
            sqlx::query("SELECT entry FROM entries WHERE record_id = $1 AND batch_root = $2")
                .bind(id.0.to_vec())
                .bind(root.0.to_vec())
                .fetch_all(&self.pool)
                .await?;
        let mut entries = rows
            .iter()
            .map(|r| {
                SignedEntry::from_bytes(&r.get::<Vec<u8>, _>(0))
                    .map_err(|e| StoreError::Invalid(format!("stored entry: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(poz::zone::leaf_index_of);
        Ok(entries)
    }

    /// The CHAIN answer for `handle`.
    pub async fn chain(&self, id: &Hash32, handle: &str) -> Result<Vec<u8>, StoreError> {
        let (binding, revocation) = self.binding(id, handle).await?;
        // The Service Zone is read because the Identity authority may
        // name a service the answer must carry (SPEC §14.4).
        let rec = self.record(id, &[ZoneType::SERVICE]).await?;
        Ok(poz::serve::chain_record(&rec, binding, revocation).to_bytes())
    }

    /// One ZONE page (SPEC §14.4): entries of `zone` with digests above
    /// `after`, ascending, at most `limit`, read by primary key in the
    /// database (never the whole zone: an Identity Zone can hold
    /// millions), and the cursor for the next page if there is one.
    pub async fn zone_page(
        &self,
        id: &Hash32,
        zone: ZoneType,
        after: &Hash32,
        limit: u16,
    ) -> Result<(Vec<Vec<u8>>, Option<Hash32>), StoreError> {
        let rows = sqlx::query(
            "SELECT digest, entry FROM entries WHERE record_id = $1 AND zone_type = $2 AND digest > $3 \
             ORDER BY digest LIMIT $4",
        )
        .bind(id.0.to_vec())
        .bind(zone.0 as i32)
        .bind(after.0.to_vec())
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() > limit as usize;
        let mut entries = Vec::with_capacity(rows.len().min(limit as usize));
        let mut last = None;
        for r in rows.iter().take(limit as usize) {
            last = Some(to_hash(&r.get::<Vec<u8>, _>(0))?);
            entries.push(r.get::<Vec<u8>, _>(1));
        }
        Ok((entries, if more { last } else { None }))
    }

    /// Counts identity bindings of a record (for operators and tests): a
    /// read of the whole zone, so without the request statement timeout
    /// (seconds at ten million bindings).
    pub async fn count_bindings(&self, id: &Hash32) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            no_timeout(&mut tx).await?;
        }
        let r = sqlx::query(
            "SELECT COUNT(*) FROM entries WHERE record_id = $1 AND zone_type = $2 AND kind = $3",
        )
        .bind(id.0.to_vec())
        .bind(ZoneType::IDENTITY.0 as i32)
        .bind(EntryKind::GRANT.0 as i32)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.get::<i64, _>(0) as u64)
    }

    /// Refreshes the planner's statistics of the entries table (Postgres;
    /// partitions included), without the request statement timeout: at
    /// ten million bindings ANALYZE of 16 partitions takes longer than 5 s,
    /// and cancelled it left the planner with the statistics of a small
    /// table.
    ///
    /// Errors: [`StoreError::Database`].
    pub async fn analyze_entries(&self) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        no_timeout(&mut tx).await?;
        sqlx::query("ANALYZE entries").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
