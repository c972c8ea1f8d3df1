//! The audit tables: the signer's signature log (the signer writes it
//! itself with INSERT only; the store reads it back) and security events
//! (forks refused).

use crate::error::StoreError;
use crate::sql::{multi_row_insert, now_ms, random_id, to_hash};
use crate::Store;
use poz::Hash32;
use sqlx::Row;

/// Audit rows per INSERT: 8 parameters each, as far below the limits.
const AUDIT_ROWS_PER_STATEMENT: usize = 500;

/// One row of the signer's audit log.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignatureAudit {
    /// The key that signed.
    pub key_id: Hash32,
    /// The record the signature belongs to (the draft's record, the
    /// entry's issuer).
    pub record_id: Hash32,
    /// The zone type code (0 for a master zone).
    pub zone_type: u8,
    /// What was signed: "master-draft", "entry", "batch-root".
    pub what: String,
    /// The signed digest.
    pub digest: Hash32,
    /// The signature encoding (SPEC §5).
    pub signature: Vec<u8>,
}

impl Store {
    /// Records a security event (forks, tampering) for operators. Written
    /// outside the failed transaction so it survives its rollback.
    pub async fn security_event(
        &self,
        record_id: Option<&Hash32>,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO security_events (event_id, record_id, kind, detail, at_ms) VALUES ($1, $2, $3, $4, $5)")
            .bind(random_id())
            .bind(record_id.map(|h| h.0.to_vec()))
            .bind(kind)
            .bind(detail)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Appends one signature to the audit log; returns its audit ID.
    pub async fn append_signature(&self, row: &SignatureAudit) -> Result<u64, StoreError> {
        let ids = self.append_signatures(std::slice::from_ref(row)).await?;
        ids.first()
            .copied()
            .ok_or_else(|| StoreError::Invalid("no audit row written".into()))
    }

    /// Appends several audit rows in one transaction (one commit for a
    /// group of signatures), returning their IDs in order. All or none.
    pub async fn append_signatures(&self, rows: &[SignatureAudit]) -> Result<Vec<u64>, StoreError> {
        // Random 63-bit IDs: portable (no sequences) and unguessable.
        let ids: Vec<u64> = rows
            .iter()
            .map(|_| u64::from_be_bytes(random_id()[..8].try_into().unwrap_or([0; 8])) >> 1)
            .collect();
        let at = now_ms();
        let rows = rows.to_vec();
        let chunk_ids = ids.clone();
        self.tx(move |tx| {
            let (rows, ids) = (rows.clone(), chunk_ids.clone());
            Box::pin(async move {
                for (chunk, ids) in rows
                    .chunks(AUDIT_ROWS_PER_STATEMENT)
                    .zip(ids.chunks(AUDIT_ROWS_PER_STATEMENT))
                {
                    let sql = multi_row_insert(
                        "INSERT INTO signature_audit (audit_id, at_ms, key_id, record_id, zone_type, what, digest, signature)",
                        chunk.len(),
                        8,
                    );
                    let mut q = sqlx::query(&sql);
                    for (row, id) in chunk.iter().zip(ids) {
                        q = q
                            .bind(i64::try_from(*id).unwrap_or(i64::MAX))
                            .bind(at)
                            .bind(row.key_id.0.to_vec())
                            .bind(row.record_id.0.to_vec())
                            .bind(row.zone_type as i32)
                            .bind(row.what.clone())
                            .bind(row.digest.0.to_vec())
                            .bind(row.signature.clone());
                    }
                    q.execute(&mut **tx).await?;
                }
                Ok(())
            })
        })
        .await?;
        Ok(ids)
    }

    /// The audit log of one record's signatures, oldest first.
    pub async fn signature_audit(
        &self,
        record_id: &Hash32,
    ) -> Result<Vec<(u64, SignatureAudit)>, StoreError> {
        let rows = sqlx::query(
            "SELECT audit_id, key_id, record_id, zone_type, what, digest, signature FROM signature_audit \
             WHERE record_id = $1 ORDER BY at_ms, audit_id",
        )
        .bind(record_id.0.to_vec())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get::<i64, _>(0) as u64,
                    SignatureAudit {
                        key_id: to_hash(&r.get::<Vec<u8>, _>(1))?,
                        record_id: to_hash(&r.get::<Vec<u8>, _>(2))?,
                        zone_type: r.get::<i32, _>(3) as u8,
                        what: r.get(4),
                        digest: to_hash(&r.get::<Vec<u8>, _>(5))?,
                        signature: r.get(6),
                    },
                ))
            })
            .collect()
    }

    /// Security events of a record, oldest first.
    pub async fn security_events(
        &self,
        record_id: &Hash32,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, detail FROM security_events WHERE record_id = $1 ORDER BY at_ms",
        )
        .bind(record_id.0.to_vec())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
