//! The handle rules the store enforces across bindings (SPEC §8.4):
//! one live binding per handle, look-alikes by confusable skeleton,
//! reservations after revocation, and an operator freeing a handle.

use crate::entries::decode_binding;
use crate::error::StoreError;
use crate::sql::indexed_by;
use crate::sql::now_ms;
use crate::{Backend, Store};
use poz::entries::EntryBody;
use poz::zone::{EntryKind, ZoneType};
use poz::Hash32;
use sqlx::Row;

/// Handles per IN (…) lookup.
pub(crate) const HANDLES_PER_QUERY: usize = 500;

/// Stored bindings by the skeleton of their handle, and their digests.
#[derive(Default)]
struct HeldBySkeleton {
    by_skeleton: std::collections::HashMap<String, Vec<poz::handle::HeldBinding>>,
    digests: std::collections::HashSet<Vec<u8>>,
}

impl Store {
    /// The bindings `id` holds whose handle has one of `skeletons`, each
    /// with its revocation and whether an operator freed it, by skeleton
    /// (SPEC §8.4.3), and the digests among them.
    async fn held_by_skeleton(
        conn: &mut sqlx::AnyConnection,
        id: &Hash32,
        skeletons: &[String],
    ) -> Result<HeldBySkeleton, StoreError> {
        let mut held: HeldBySkeleton = Default::default();
        for chunk in skeletons.chunks(HANDLES_PER_QUERY) {
            let mut sql = String::from(
                "SELECT b.skeleton, b.digest, b.entry, r.entry, f.digest FROM entries b \
                 LEFT JOIN entries r ON r.record_id = b.record_id AND r.zone_type = b.zone_type AND r.target = b.digest AND r.handle IS NULL \
                 LEFT JOIN handle_releases f ON f.record_id = b.record_id AND f.digest = b.digest \
                 WHERE b.record_id = $1 AND b.zone_type = $2 AND b.kind = $3 AND b.skeleton IN (",
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
            for sk in chunk {
                q = q.bind(sk.clone());
            }
            for r in q.fetch_all(&mut *conn).await? {
                let skeleton: String = r.get(0);
                let digest: Vec<u8> = r.get(1);
                let (entry, revocation) = decode_binding(&r.get::<Vec<u8>, _>(2), r.get(3))?;
                let b = match EntryBody::decode(ZoneType::IDENTITY, entry.kind, &entry.body) {
                    Ok(EntryBody::Binding(b)) => b,
                    _ => return Err(StoreError::Invalid("stored binding does not decode".into())),
                };
                let revocation = match revocation {
                    None => None,
                    Some(rev) => match EntryBody::decode(ZoneType::IDENTITY, rev.kind, &rev.body) {
                        Ok(EntryBody::Revocation(x)) => Some((x.reason, x.revoked_at)),
                        _ => {
                            return Err(StoreError::Invalid(
                                "stored revocation does not decode".into(),
                            ))
                        }
                    },
                };
                held.digests.insert(digest);
                let list = held.by_skeleton.entry(skeleton).or_default();
                // A binding with two revocations is listed twice; either
                // reserves it.
                list.push(poz::handle::HeldBinding {
                    handle: b.handle,
                    subject: b.subject,
                    expires_at: b.expires_at,
                    revocation,
                    freed: r.get::<Option<Vec<u8>>, _>(4).is_some(),
                });
            }
        }
        Ok(held)
    }

    /// Judges new bindings against what `id` holds (SPEC §8.4.1–§8.4.3):
    /// each handle's characters (the baseline every policy shares), then
    /// its skeleton against every stored binding and every earlier
    /// candidate. `candidates` are (handle, subject, digest); one verdict
    /// each, in order. A candidate already stored (same digest) is a retry
    /// and passes.
    pub(crate) async fn judge_bindings(
        conn: &mut sqlx::AnyConnection,
        id: &Hash32,
        candidates: &[(String, Hash32, Option<Vec<u8>>)],
        reservation: &poz::handle::Reservation,
    ) -> Result<Vec<Result<(), poz::handle::HandleRefused>>, StoreError> {
        let skeletons: Vec<String> = {
            let mut v: Vec<String> = candidates
                .iter()
                .map(|(h, _, _)| poz::handle::skeleton(h))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let mut held = Self::held_by_skeleton(conn, id, &skeletons).await?;
        let now = u64::try_from(now_ms()).unwrap_or(0);
        let mut verdicts = Vec::with_capacity(candidates.len());
        for (handle, subject, digest) in candidates {
            if digest.as_ref().is_some_and(|d| held.digests.contains(d)) {
                verdicts.push(Ok(()));
                continue;
            }
            let verdict = poz::handle::check_baseline(handle).and_then(|()| {
                let sk = poz::handle::skeleton(handle);
                let list = held.by_skeleton.entry(sk).or_default();
                poz::handle::judge_issue(handle, subject, now, list, reservation)?;
                list.push(poz::handle::HeldBinding {
                    handle: handle.clone(),
                    subject: *subject,
                    expires_at: 0,
                    revocation: None,
                    freed: false,
                });
                Ok(())
            });
            verdicts.push(verdict);
        }
        Ok(verdicts)
    }

    /// Whether bindings of `candidates` (handle, subject) could be issued
    /// now by record `id` (SPEC §8.4): the same judgement a commit makes,
    /// without writing. The Provider API asks before it signs, so a bulk
    /// issue refuses item by item; the commit checks again.
    pub async fn check_handles(
        &self,
        id: &Hash32,
        candidates: &[(String, Hash32)],
    ) -> Result<Vec<Result<(), poz::handle::HandleRefused>>, StoreError> {
        let candidates: Vec<(String, Hash32, Option<Vec<u8>>)> = candidates
            .iter()
            .map(|(h, s)| (h.clone(), *s, None))
            .collect();
        let mut conn = self.pool.acquire().await?;
        Self::judge_bindings(&mut conn, id, &candidates, &self.options.reservation()).await
    }

    /// Frees the handle of every revoked binding of `handle` (SPEC
    /// §8.4.3): its revocations no longer reserve it. Returns how many
    /// bindings were freed; NotFound when the handle has no revoked
    /// binding not yet freed.
    pub async fn free_handle(&self, id: &Hash32, handle: &str) -> Result<u32, StoreError> {
        let (id, handle, backend) = (*id, handle.to_owned(), self.backend);
        self.tx(move |tx| {
            let handle = handle.clone();
            Box::pin(async move {
                let rows = sqlx::query(&revoked_unfreed_sql(backend))
                .bind(id.0.to_vec())
                .bind(ZoneType::IDENTITY.0 as i32)
                .bind(EntryKind::GRANT.0 as i32)
                .bind(handle.clone())
                .fetch_all(&mut **tx)
                .await?;
                if rows.is_empty() {
                    return Err(StoreError::NotFound(format!(
                        "no revoked binding of {handle:?} to free"
                    )));
                }
                let now = now_ms();
                for r in &rows {
                    sqlx::query(
                        "INSERT INTO handle_releases (record_id, digest, freed_ms) VALUES ($1, $2, $3)",
                    )
                    .bind(id.0.to_vec())
                    .bind(r.get::<Vec<u8>, _>(0))
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(rows.len() as u32)
            })
        })
        .await
    }

    /// Fills the skeleton of bindings written before migration 0005, a
    /// thousand at a time.
    pub(crate) async fn fill_skeletons(&self) -> Result<u64, StoreError> {
        let mut filled = 0u64;
        loop {
            let rows = sqlx::query(
                "SELECT record_id, zone_type, digest, handle FROM entries \
                 WHERE handle IS NOT NULL AND skeleton IS NULL LIMIT 1000",
            )
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Ok(filled);
            }
            let rows: Vec<(Vec<u8>, i32, Vec<u8>, String)> = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
            filled += rows.len() as u64;
            self.tx(move |tx| {
                let rows = rows.clone();
                Box::pin(async move {
                    for (record_id, zone, digest, handle) in rows {
                        sqlx::query(
                            "UPDATE entries SET skeleton = $1 \
                             WHERE record_id = $2 AND zone_type = $3 AND digest = $4",
                        )
                        .bind(poz::handle::skeleton(&handle))
                        .bind(record_id)
                        .bind(zone)
                        .bind(digest)
                        .execute(&mut **tx)
                        .await?;
                    }
                    Ok(())
                })
            })
            .await?;
        }
    }
}

/// The revoked bindings of a handle not yet freed, for
/// [`Store::free_handle`]: `$1` record, `$2` zone, `$3` kind, `$4` handle.
/// Driven from the handle's bindings (on SQLite by naming the indexes,
/// as [`crate::batches::handle_rows_sql`] says why); without that SQLite
/// started from every revocation of the zone.
pub(crate) fn revoked_unfreed_sql(backend: Backend) -> String {
    format!(
        "SELECT DISTINCT b.digest FROM entries b{b} \
         JOIN entries r{r} ON r.record_id = b.record_id AND r.zone_type = b.zone_type AND r.target = b.digest AND r.handle IS NULL \
         LEFT JOIN handle_releases f ON f.record_id = b.record_id AND f.digest = b.digest \
         WHERE b.record_id = $1 AND b.zone_type = $2 AND b.kind = $3 AND b.handle = $4 \
         AND f.digest IS NULL",
        b = indexed_by(backend, "entries_by_handle"),
        r = indexed_by(backend, "entries_by_target"),
    )
}
