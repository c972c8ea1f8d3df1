//! Domains (the identity namespace a record answers for) and mirrors.

use crate::error::StoreError;
use crate::sql::to_hash;
use crate::Store;
use poz::codec::Codec;
use poz::Hash32;
use sqlx::{Any, Row, Transaction};

/// Mirrors per record at most: a MIRRORS answer counts them in one byte.
pub const MAX_MIRRORS: usize = 255;

impl Store {
    pub(crate) async fn bind_domain_tx(
        tx: &mut Transaction<'static, Any>,
        domain: &str,
        id: &Hash32,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM domains WHERE domain = $1")
            .bind(domain)
            .execute(&mut **tx)
            .await?;
        sqlx::query("INSERT INTO domains (domain, record_id) VALUES ($1, $2)")
            .bind(domain)
            .bind(id.0.to_vec())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Maps a domain to a record.
    pub async fn bind_domain(&self, domain: &str, id: &Hash32) -> Result<(), StoreError> {
        check_bindable(domain)?;
        let (d, id) = (domain.to_owned(), *id);
        self.tx(move |tx| {
            let d = d.clone();
            Box::pin(async move { Self::bind_domain_tx(tx, &d, &id).await })
        })
        .await
    }

    /// Replaces the servers known to carry a record (MIRRORS, SPEC §14.4):
    /// pool hosts as SPEC §8.7 encodes them, in the order given, at most
    /// [`MAX_MIRRORS`]. Mirrors are not signed: an operator sets them, and
    /// a client only learns where else to ask (whatever it gets there it
    /// verifies). An empty list removes them all.
    pub async fn set_mirrors(&self, id: &Hash32, hosts: &[Vec<u8>]) -> Result<(), StoreError> {
        if hosts.len() > MAX_MIRRORS {
            return Err(StoreError::Invalid(format!(
                "hosts: at most {MAX_MIRRORS} (a MIRRORS answer counts them in one byte), got {}",
                hosts.len()
            )));
        }
        for (i, h) in hosts.iter().enumerate() {
            poz::entries::PoolHost::from_bytes(h)
                .map_err(|e| StoreError::Invalid(format!("hosts[{i}]: {e}")))?;
        }
        let (id, hosts) = (*id, hosts.to_vec());
        self.tx(move |tx| {
            let hosts = hosts.clone();
            Box::pin(async move {
                let exists = sqlx::query("SELECT 1 FROM records WHERE record_id = $1")
                    .bind(id.0.to_vec())
                    .fetch_optional(&mut **tx)
                    .await?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(format!("record {id}")));
                }
                sqlx::query("DELETE FROM mirrors WHERE record_id = $1")
                    .bind(id.0.to_vec())
                    .execute(&mut **tx)
                    .await?;
                for (position, host) in hosts.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO mirrors (record_id, position, host) VALUES ($1, $2, $3)",
                    )
                    .bind(id.0.to_vec())
                    .bind(position as i32)
                    .bind(host.clone())
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// A record's mirrors in the order they were set (NotFound: no such
    /// record).
    pub async fn mirrors(&self, id: &Hash32) -> Result<Vec<Vec<u8>>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.host FROM records h LEFT JOIN mirrors m ON m.record_id = h.record_id \
             WHERE h.record_id = $1 ORDER BY m.position",
        )
        .bind(id.0.to_vec())
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Err(StoreError::NotFound(format!("record {id}")));
        }
        Ok(rows
            .iter()
            .filter_map(|r| r.get::<Option<Vec<u8>>, _>(0))
            .collect())
    }

    /// The domains bound to a record, in order.
    pub async fn domains_of(&self, id: &Hash32) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT domain FROM domains WHERE record_id = $1 ORDER BY domain")
            .bind(id.0.to_vec())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// The record a domain maps to. A record name (64 lowercase hex
    /// digits, SPEC §14.4) names a record the store holds by its ID,
    /// whether or not any domain maps to it: how a record without a
    /// domain (a person's) is asked for. NotFound when nothing is held.
    pub async fn resolve(&self, domain: &str) -> Result<Hash32, StoreError> {
        if let Some(id) = poz::wire::record_name_id(domain) {
            let held = sqlx::query("SELECT 1 FROM records WHERE record_id = $1")
                .bind(id.0.to_vec())
                .fetch_optional(&self.pool)
                .await?;
            return match held {
                Some(_) => Ok(id),
                None => Err(StoreError::NotFound(format!("no record {id} is held here"))),
            };
        }
        let r = sqlx::query("SELECT record_id FROM domains WHERE domain = $1")
            .bind(domain)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no record for domain {domain}")))?;
        let b: Vec<u8> = r.get(0);
        to_hash(&b)
    }
}

/// A domain a record may be served under: valid (SPEC §14.4) and not a
/// record name, which always names the record with that ID and so can
/// never be mapped to another.
pub(crate) fn check_bindable(domain: &str) -> Result<(), StoreError> {
    if !poz::wire::valid_domain(domain) {
        return Err(StoreError::Invalid(format!(
            "domain {domain:?} is not a valid lowercase domain name"
        )));
    }
    if poz::wire::record_name_id(domain).is_some() {
        return Err(StoreError::Invalid(format!(
            "{domain:?} is a record name (64 hex digits), not a domain: it names its record by ID"
        )));
    }
    Ok(())
}
