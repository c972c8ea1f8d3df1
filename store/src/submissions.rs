//! Submissions (SUBMIT_REQUEST) and what became of them (SPEC §14.4).

use crate::error::StoreError;
use crate::sql::now_ms;
use crate::Store;
use poz::codec::Codec;
use sqlx::Row;

/// How often the leading store sweeps expired pending requests
/// ([`Store::expire_pending`]).
pub const EXPIRY_SWEEP: std::time::Duration = std::time::Duration::from_secs(60);

/// What an expired pending request says.
const EXPIRED: &str = "expired: the provider did not decide in time; ask again";

/// Whether the issued binding `entry` (a SignedEntry encoding) has a
/// revocation in its issuer's Identity Zone. An entry that is not a
/// binding is not revoked.
async fn revoked_entry(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    entry: Option<&[u8]>,
) -> Result<bool, StoreError> {
    let Some(e) = entry.and_then(|b| poz::zone::SignedEntry::from_bytes(b).ok()) else {
        return Ok(false);
    };
    let Ok(b) = poz::entries::IdentityBinding::from_bytes(&e.body) else {
        return Ok(false);
    };
    let digest = e.identity_digest(&b.issuer);
    Ok(sqlx::query(
        "SELECT digest FROM entries WHERE record_id = $1 AND zone_type = $2 AND kind = $3 \
         AND target = $4 AND handle IS NULL LIMIT 1",
    )
    .bind(b.issuer.0.to_vec())
    .bind(poz::zone::ZoneType::IDENTITY.0 as i32)
    .bind(poz::zone::EntryKind::REVOKE.0 as i32)
    .bind(digest.0.to_vec())
    .fetch_optional(&mut **tx)
    .await?
    .is_some())
}

/// A submission (SUBMIT_REQUEST) and what became of it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Submission {
    pub id: [u8; 16],
    /// 0 committed, 1 pending, 2 issued, 3 refused (SPEC §14.4).
    pub state: u8,
    /// The SUBMIT_REQUEST payload as received.
    pub request: Vec<u8>,
    /// The issued entry, once issued.
    pub entry: Option<Vec<u8>>,
    pub message: String,
}

impl Store {
    /// Records a submission, or moves it on. A new ID is inserted as
    /// given. For a known ID the request must ask the same (the same
    /// bytes, or for SUBMIT_REQUEST payloads the same domain, handle and
    /// subject whatever the proof; else IdempotencyMismatch). Issued stays
    /// issued while its binding is not revoked; a pending one takes the
    /// new state; a refused one, or an issued one whose binding has since
    /// been revoked, is opened again by a new pending request (the handle
    /// may have been freed; SPEC §8.4.4).
    ///
    /// A SUBMIT_REQUEST payload counts against its subject (SPEC §14.4):
    /// a pending request older than `pending_ttl` is refused as expired,
    /// and a new pending request beyond `pending_per_subject` is
    /// TooManyPending. Returns what is stored.
    pub async fn put_submission(&self, sub: &Submission) -> Result<Submission, StoreError> {
        if sub.state > 3 {
            return Err(StoreError::Invalid(format!(
                "submission state {}",
                sub.state
            )));
        }
        let sub = sub.clone();
        let asked = poz::wire::SubmitRequest::from_bytes(&sub.request).ok();
        let limit = self.options.pending_per_subject;
        let ttl_ms = i64::try_from(self.options.pending_ttl.as_millis()).unwrap_or(i64::MAX);
        self.tx(move |tx| {
            let (sub, asked) = (sub.clone(), asked.clone());
            Box::pin(async move {
                let now = now_ms();
                let subject = asked.as_ref().map(|a| a.subject.0.to_vec());
                if let Some(subject) = &subject {
                    // Expire this subject's stale pending requests first.
                    sqlx::query(
                        "UPDATE submissions SET state = 3, message = $1, updated_ms = $2 \
                         WHERE subject = $3 AND state = 1 AND created_ms <= $4",
                    )
                    .bind(EXPIRED)
                    .bind(now)
                    .bind(subject.clone())
                    .bind(now.saturating_sub(ttl_ms))
                    .execute(&mut **tx)
                    .await?;
                }
                let row = sqlx::query(
                    "SELECT state, request, entry, message FROM submissions WHERE submission_id = $1",
                )
                .bind(sub.id.to_vec())
                .fetch_optional(&mut **tx)
                .await?;
                let stored = row.map(|row| Submission {
                    id: sub.id,
                    state: row.get::<i32, _>(0) as u8,
                    request: row.get(1),
                    entry: row.get(2),
                    message: row.get(3),
                });
                if let Some(stored) = &stored {
                    let same_ask = stored.request == sub.request
                        || match (&asked, poz::wire::SubmitRequest::from_bytes(&stored.request)) {
                            (Some(a), Ok(b)) => {
                                a.domain.eq_ignore_ascii_case(&b.domain)
                                    && a.handle == b.handle
                                    && a.subject == b.subject
                            }
                            _ => false,
                        };
                    if !same_ask {
                        return Err(StoreError::IdempotencyMismatch(hex::encode(sub.id)));
                    }
                    // A refused request is opened again by a new one; so
                    // is an issued one whose binding has since been
                    // revoked, so that the ask is decided anew (a revoked
                    // handle is reserved until freed, SPEC §8.4.3) rather
                    // than answered with the revoked binding.
                    let reopen = sub.state == 1
                        && (stored.state == 3
                            || (stored.state == 2
                                && revoked_entry(tx, stored.entry.as_deref()).await?));
                    // Pending moves on; committed and issued stay.
                    if !reopen && (stored.state != 1 || sub.state == 1) {
                        return Ok(stored.clone());
                    }
                }
                let opens = sub.state == 1 && stored.as_ref().is_none_or(|s| s.state != 1);
                if let (true, Some(subject), Some(a)) = (opens, &subject, &asked) {
                    let pending = sqlx::query(
                        "SELECT COUNT(*) FROM submissions WHERE subject = $1 AND state = 1",
                    )
                    .bind(subject.clone())
                    .fetch_one(&mut **tx)
                    .await?
                    .get::<i64, _>(0);
                    if pending >= i64::from(limit) {
                        return Err(StoreError::TooManyPending {
                            subject: a.subject,
                            limit,
                        });
                    }
                }
                if stored.is_none() {
                    sqlx::query(
                        "INSERT INTO submissions (submission_id, state, request, entry, message, updated_ms, subject, created_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $6)",
                    )
                    .bind(sub.id.to_vec())
                    .bind(sub.state as i32)
                    .bind(sub.request.clone())
                    .bind(sub.entry.clone())
                    .bind(sub.message.clone())
                    .bind(now)
                    .bind(subject)
                    .execute(&mut **tx)
                    .await?;
                    return Ok(sub);
                }
                // Reopened requests start their time again.
                sqlx::query(
                    "UPDATE submissions SET state = $2, entry = $3, message = $4, updated_ms = $5, \
                     created_ms = CASE WHEN $2 = 1 THEN $5 ELSE created_ms END \
                     WHERE submission_id = $1",
                )
                .bind(sub.id.to_vec())
                .bind(sub.state as i32)
                .bind(sub.entry.clone())
                .bind(sub.message.clone())
                .bind(now)
                .execute(&mut **tx)
                .await?;
                Ok(Submission {
                    request: stored.map(|s| s.request).unwrap_or(sub.request.clone()),
                    ..sub
                })
            })
        })
        .await
    }

    /// Marks every pending binding request older than `pending_ttl`
    /// refused (expired), whatever its subject; returns how many rows
    /// changed. Without it an expired request only reads as refused
    /// ([`Store::submission`]) and its row is rewritten at its subject's
    /// next request, so rows of subjects that never ask again stay
    /// pending in the table. Singleton work: `poz-store` runs it every
    /// [`EXPIRY_SWEEP`] in the replica holding the Lease `poz-store`
    /// (docs/OPERATIONS.md, "Discovery and leader election"). Safe to
    /// run twice at once (one UPDATE, idempotent).
    pub async fn expire_pending(&self) -> Result<u64, StoreError> {
        let ttl_ms = i64::try_from(self.options.pending_ttl.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE submissions SET state = 3, message = $1, updated_ms = $2 \
             WHERE state = 1 AND created_ms <= $3",
        )
        .bind(EXPIRED)
        .bind(now)
        .bind(now.saturating_sub(ttl_ms))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Pending binding requests (state 1, not yet expired), in
    /// submission-ID order after `after` (None: from the start), at most
    /// `limit` (1..=1000): the provider's queue (Provider API
    /// ListBindingRequests). Each carries its request payload, so the
    /// caller sees the domain, handle and subject asked for; the time it
    /// was asked (ms since the epoch) comes with it.
    pub async fn pending_submissions(
        &self,
        after: Option<[u8; 16]>,
        limit: u32,
    ) -> Result<Vec<(Submission, u64)>, StoreError> {
        if !(1..=1000).contains(&limit) {
            return Err(StoreError::Invalid(format!(
                "limit {limit} is not 1..=1000"
            )));
        }
        let ttl_ms = i64::try_from(self.options.pending_ttl.as_millis()).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT submission_id, request, created_ms FROM submissions \
             WHERE state = 1 AND created_ms > $1 AND submission_id > $2 \
             ORDER BY submission_id LIMIT $3",
        )
        .bind(now_ms().saturating_sub(ttl_ms))
        .bind(after.unwrap_or([0; 16]).to_vec())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: Vec<u8> = r.get(0);
                let id = <[u8; 16]>::try_from(id.as_slice()).map_err(|_| {
                    StoreError::Invalid("stored submission id is not 16 bytes".into())
                })?;
                let created = r.get::<Option<i64>, _>(2).unwrap_or(0).max(0) as u64;
                Ok((
                    Submission {
                        id,
                        state: 1,
                        request: r.get(1),
                        entry: None,
                        message: String::new(),
                    },
                    created,
                ))
            })
            .collect()
    }

    /// A submission by ID.
    pub async fn submission(&self, id: &[u8; 16]) -> Result<Submission, StoreError> {
        let row = sqlx::query(
            "SELECT state, request, entry, message, created_ms FROM submissions WHERE submission_id = $1",
        )
        .bind(id.to_vec())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("submission {}", hex::encode(id))))?;
        let mut sub = Submission {
            id: *id,
            state: row.get::<i32, _>(0) as u8,
            request: row.get(1),
            entry: row.get(2),
            message: row.get(3),
        };
        // A pending request past its time reads as refused (expired) even
        // before its subject's next request rewrites the row.
        let ttl_ms = i64::try_from(self.options.pending_ttl.as_millis()).unwrap_or(i64::MAX);
        let created = row.get::<Option<i64>, _>(4);
        if sub.state == 1 && created.is_some_and(|c| c <= now_ms().saturating_sub(ttl_ms)) {
            sub.state = 3;
            sub.message = EXPIRED.into();
        }
        Ok(sub)
    }
}
