//! Records: creation, the append-only master-zone history, the head
//! compare-and-swap (a different revision with the same serial is a fork),
//! and reading a record back as it is served.

use crate::error::StoreError;
use crate::sql::{db_time, now_ms, to_hash};
use crate::Store;
use poz::codec::Codec;
use poz::serve::ServedRecord;
use poz::zone::{SignedEntry, ZoneSection, ZoneType};
use poz::{Hash32, MasterZone, Record};
use sqlx::{Any, Row, Transaction};

/// The record at its head as MASTER serves it, minus history and entries.
fn head_shell(rec: &Record) -> Vec<u8> {
    let mut shell = Record::new(rec.keys.clone(), rec.master.clone());
    shell.authorities = rec.authorities.clone();
    shell.key_names = rec.key_names.clone();
    shell.to_bytes()
}

impl Store {
    /// Stores a record at serial 1 under `domains`. The record must verify
    /// completely. Creating the same record again is a no-op.
    pub async fn create_record(
        &self,
        bytes: &[u8],
        domains: &[String],
        idem: &str,
    ) -> Result<Hash32, StoreError> {
        let rec =
            Record::from_bytes(bytes).map_err(|e| StoreError::Invalid(format!("record: {e}")))?;
        // A time far ahead of this clock would freeze the record (its
        // timestamps must increase) or, past 2^63, lose its sign in a
        // BIGINT column (SPEC §6.7).
        poz::verify::check_times(&rec, now_ms().max(0) as u64)
            .map_err(|e| StoreError::Invalid(format!("record: {e}")))?;
        let report = poz::verify_record(&rec);
        if !report.is_complete() {
            let f: Vec<String> = report
                .failures()
                .map(|(r, d)| format!("{r}: {d}"))
                .collect();
            return Err(StoreError::Invalid(format!(
                "record does not verify completely: {}",
                f.join("; ")
            )));
        }
        if rec.master.serial != 1 || !rec.history.is_empty() {
            return Err(StoreError::Invalid(
                "create_record takes a genesis record (serial 1); advance it with advance_head"
                    .into(),
            ));
        }
        for d in domains {
            crate::domains::check_bindable(d)?;
        }
        let id = rec.id();
        let bytes = bytes.to_vec();
        let domains = domains.to_vec();
        let idem = idem.to_owned();
        let reservation = self.options.reservation();
        self.tx(move |tx| {
            let (rec, bytes, domains, idem) = (rec.clone(), bytes.clone(), domains.clone(), idem.clone());
            Box::pin(async move {
                if Self::idempotent(tx, &idem, &bytes).await?.is_some() {
                    return Ok(id);
                }
                let exists = sqlx::query("SELECT head_hash FROM records WHERE record_id = $1").bind(id.0.to_vec()).fetch_optional(&mut **tx).await?;
                if exists.is_none() {
                    let now = now_ms();
                    sqlx::query("INSERT INTO records (record_id, head_serial, head_hash, head_timestamp, head_record, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $6)")
                        .bind(id.0.to_vec())
                        .bind(1i64)
                        .bind(rec.master.current_master_hash.0.to_vec())
                        .bind(db_time("master.timestamp", rec.master.timestamp)?)
                        .bind(head_shell(&rec))
                        .bind(now)
                        .execute(&mut **tx)
                        .await?;
                    sqlx::query("INSERT INTO master_revisions (record_id, serial, master_hash, master_zone, stored_ms) VALUES ($1, $2, $3, $4, $5)")
                        .bind(id.0.to_vec())
                        .bind(1i64)
                        .bind(rec.master.current_master_hash.0.to_vec())
                        .bind(rec.master.to_bytes())
                        .bind(now)
                        .execute(&mut **tx)
                        .await?;
                    for (z, zs) in &rec.zones {
                        Self::insert_entries(tx, &id, *z, &rec.keys, &zs.entries, &reservation).await?;
                    }
                }
                for d in &domains {
                    Self::bind_domain_tx(tx, d, &id).await?;
                }
                Self::remember(tx, &idem, &bytes, &id.0).await?;
                Ok(id)
            })
        })
        .await
    }

    /// Stores a whole record as a provider ceremony writes it
    /// (`record.poz`: a genesis revision, or a genesis and revision 2 in
    /// its history): its genesis through [`Store::create_record`] under
    /// `domains`, then its head through [`Store::advance_head`], each
    /// checked as those check. Idempotent: a second import of the same
    /// record changes nothing but binding domains it did not have. Returns
    /// the record ID and the store's head serial after the import.
    /// Errors: as those two; [`StoreError::Invalid`] for bytes that are
    /// not a record, or a history past revision 2 (advance it revision by
    /// revision with AdvanceHead).
    pub async fn import_record(
        &self,
        bytes: &[u8],
        domains: &[String],
    ) -> Result<(Hash32, u32), StoreError> {
        let rec =
            Record::from_bytes(bytes).map_err(|e| StoreError::Invalid(format!("record: {e}")))?;
        let id = rec.id();
        let serial = rec.master.serial;
        let genesis = match (serial, rec.history.first()) {
            (1, None) => rec.clone(),
            (2, Some(first)) if rec.history.len() == 1 => {
                Record::new(rec.keys.clone(), first.clone())
            }
            _ => {
                return Err(StoreError::Invalid(format!(
                    "import takes a ceremony's record (serial 1, or 2 with its genesis); this one \
                     is at serial {serial} with {} revisions of history",
                    rec.history.len()
                )))
            }
        };
        // Keys derived from the record, so a rerun is recognised.
        let key = |what: &str| format!("import-{what}-{}", id.to_hex());
        self.create_record(&genesis.to_bytes(), domains, &key("genesis"))
            .await?;
        // A rerun with another domain is recognised by its key above and
        // would add nothing: each domain is bound here too (binding the
        // same record again changes nothing).
        for d in domains {
            self.bind_domain(d, &id).await?;
        }
        if serial == 2 {
            self.advance_head(bytes, 1, &key("head")).await?;
        }
        // The store's head, which a file of an earlier revision does not
        // move back.
        let (head, _, _) = self.head(&id).await?;
        Ok((id, head))
    }

    /// Advances a record's head to the master zone of `bytes` by
    /// compare-and-swap on `expected_serial`. The new revision must verify
    /// completely with the stored chain.
    pub async fn advance_head(
        &self,
        bytes: &[u8],
        expected_serial: u32,
        idem: &str,
    ) -> Result<(u32, Hash32), StoreError> {
        let rec =
            Record::from_bytes(bytes).map_err(|e| StoreError::Invalid(format!("record: {e}")))?;
        poz::verify::check_times(&rec, now_ms().max(0) as u64)
            .map_err(|e| StoreError::Invalid(format!("update: {e}")))?;
        let id = rec.id();
        let new = rec.master.clone();
        if new.serial != expected_serial.wrapping_add(1) {
            return Err(StoreError::Invalid(format!(
                "revision {} does not follow serial {expected_serial}",
                new.serial
            )));
        }
        // Check the update against the stored chain, outside the
        // transaction (it is read-only and may be slow): the stored
        // history with the new revision must verify from genesis.
        let stored = self.history(&id, 1).await?;
        if stored.is_empty() {
            return Err(StoreError::NotFound(format!("record {id}")));
        }
        // Judge against what is stored before verifying: a fork, a retry of
        // a revision already stored, or a stale expectation.
        if let Some(existing) = stored.iter().find(|m| m.serial == new.serial) {
            if existing.current_master_hash == new.current_master_hash {
                return Ok((new.serial, new.current_master_hash));
            }
            let detail = format!(
                "a second, different revision {} was submitted (hash {})",
                new.serial, new.current_master_hash
            );
            if let Err(e) = self.security_event(Some(&id), "fork", &detail).await {
                tracing::error!(%e, "could not record a fork security event");
            }
            return Err(StoreError::Fork {
                record_id: id,
                serial: new.serial,
            });
        }
        let head = stored.last().map(|m| m.serial).unwrap_or(0);
        if head != expected_serial {
            return Err(StoreError::Conflict {
                record_id: id,
                head,
                expected: expected_serial,
            });
        }
        let mut candidate = rec.clone();
        candidate.history = stored
            .iter()
            .filter(|m| m.serial < new.serial)
            .cloned()
            .collect();
        let report = poz::verify_record(&candidate);
        if !report.is_valid() {
            let f: Vec<String> = report
                .failures()
                .map(|(r, d)| format!("{r}: {d}"))
                .collect();
            return Err(StoreError::Invalid(format!(
                "update does not verify: {}",
                f.join("; ")
            )));
        }
        use poz::verify::{Outcome, Rule};
        for rule in [Rule::ChainGenesis, Rule::MasterThreshold] {
            if report.outcome(rule) != Some(&Outcome::Pass) {
                return Err(StoreError::Invalid(format!(
                    "update: {rule} could not be checked against the stored chain"
                )));
            }
        }
        let shell = head_shell(&rec);
        let idem = idem.to_owned();
        let bytes = bytes.to_vec();
        let zones = rec.zones.clone();
        let keys = rec.keys.clone();
        let reservation = self.options.reservation();
        let result = self.tx(move |tx| {
            let (new, shell, idem, bytes, zones, keys) = (new.clone(), shell.clone(), idem.clone(), bytes.clone(), zones.clone(), keys.clone());
            Box::pin(async move {
                if let Some(r) = Self::idempotent(tx, &idem, &bytes).await? {
                    let mut h = [0u8; 32];
                    h.copy_from_slice(&r[4..36]);
                    return Ok((u32::from_be_bytes([r[0], r[1], r[2], r[3]]), Hash32(h)));
                }
                let now = now_ms();
                let upd = sqlx::query(
                    "UPDATE records SET head_serial = $1, head_hash = $2, head_timestamp = $3, head_record = $4, updated_ms = $5 \
                     WHERE record_id = $6 AND head_serial = $7 AND head_hash = $8",
                )
                .bind(i64::from(new.serial))
                .bind(new.current_master_hash.0.to_vec())
                .bind(db_time("master.timestamp", new.timestamp)?)
                .bind(shell)
                .bind(now)
                .bind(id.0.to_vec())
                .bind(i64::from(expected_serial))
                .bind(new.previous_master_hash.0.to_vec())
                .execute(&mut **tx)
                .await?;
                if upd.rows_affected() != 1 {
                    return Self::why_not_advanced(tx, &id, &new, expected_serial).await;
                }
                sqlx::query("INSERT INTO master_revisions (record_id, serial, master_hash, master_zone, stored_ms) VALUES ($1, $2, $3, $4, $5)")
                    .bind(id.0.to_vec())
                    .bind(i64::from(new.serial))
                    .bind(new.current_master_hash.0.to_vec())
                    .bind(new.to_bytes())
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                for (z, zs) in &zones {
                    Self::insert_entries(tx, &id, *z, &keys, &zs.entries, &reservation).await?;
                }
                let mut resp = new.serial.to_be_bytes().to_vec();
                resp.extend_from_slice(&new.current_master_hash.0);
                Self::remember(tx, &idem, &bytes, &resp).await?;
                Ok((new.serial, new.current_master_hash))
            })
        })
        .await;
        if let Err(StoreError::Fork { record_id, serial }) = &result {
            let detail = format!(
                "a second, different revision {serial} was submitted (hash {})",
                rec.master.current_master_hash
            );
            if let Err(e) = self.security_event(Some(record_id), "fork", &detail).await {
                tracing::error!(%e, "could not record a fork security event");
            }
            tracing::warn!(record = %record_id, serial, "fork refused");
        }
        result
    }

    /// Explains a lost compare-and-swap: the same revision already stored
    /// (fine: its serial and hash, as for the writer that stored it; a
    /// retry racing the attempt it retries ends here, issue 16), a
    /// different one (a fork: recorded), or a stale expectation.
    async fn why_not_advanced(
        tx: &mut Transaction<'static, Any>,
        id: &Hash32,
        new: &MasterZone,
        expected: u32,
    ) -> Result<(u32, Hash32), StoreError> {
        let head = match sqlx::query("SELECT head_serial FROM records WHERE record_id = $1")
            .bind(id.0.to_vec())
            .fetch_optional(&mut **tx)
            .await
        {
            Ok(Some(r)) => r.get::<i64, _>(0) as u32,
            Ok(None) => return Err(StoreError::NotFound(format!("record {id}"))),
            Err(e) => return Err(e.into()),
        };
        let existing = sqlx::query(
            "SELECT master_hash FROM master_revisions WHERE record_id = $1 AND serial = $2",
        )
        .bind(id.0.to_vec())
        .bind(i64::from(new.serial))
        .fetch_optional(&mut **tx)
        .await;
        match existing {
            Ok(Some(r)) => {
                let h: Vec<u8> = r.get(0);
                if h == new.current_master_hash.0 {
                    return Ok((new.serial, new.current_master_hash));
                }
                return Err(StoreError::Fork {
                    record_id: *id,
                    serial: new.serial,
                });
            }
            Ok(None) => {}
            Err(e) => return Err(e.into()),
        }
        Err(StoreError::Conflict {
            record_id: *id,
            head,
            expected,
        })
    }

    /// The head: (serial, master hash, timestamp).
    pub async fn head(&self, id: &Hash32) -> Result<(u32, Hash32, u64), StoreError> {
        let r = sqlx::query(
            "SELECT head_serial, head_hash, head_timestamp FROM records WHERE record_id = $1",
        )
        .bind(id.0.to_vec())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("record {id}")))?;
        Ok((
            r.get::<i64, _>(0) as u32,
            to_hash(&r.get::<Vec<u8>, _>(1))?,
            r.get::<i64, _>(2) as u64,
        ))
    }

    /// Master-zone revisions from `from` on, oldest first.
    pub async fn history(&self, id: &Hash32, from: u32) -> Result<Vec<MasterZone>, StoreError> {
        let rows = sqlx::query("SELECT master_zone FROM master_revisions WHERE record_id = $1 AND serial >= $2 ORDER BY serial")
            .bind(id.0.to_vec())
            .bind(i64::from(from))
            .fetch_all(&self.pool)
            .await?;
        revisions(&rows)
    }

    /// The whole record at its head: history from genesis and every entry
    /// of the zones in `zones` (all zones if empty).
    pub async fn record(&self, id: &Hash32, zones: &[ZoneType]) -> Result<Record, StoreError> {
        // One snapshot for the head, the history and the entries: a revision
        // moves the head and adds its history row and entries in one
        // transaction, and three separate reads could straddle it (a head
        // one serial behind entries signed under the next revision's keys,
        // which would not verify).
        let mut tx = self.snapshot().await?;
        let row = sqlx::query("SELECT head_record FROM records WHERE record_id = $1")
            .bind(id.0.to_vec())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("record {id}")))?;
        let mut rec = Record::from_bytes(&row.get::<Vec<u8>, _>(0))
            .map_err(|e| StoreError::Invalid(format!("stored head: {e}")))?;
        let rows = sqlx::query(
            "SELECT master_zone FROM master_revisions WHERE record_id = $1 AND serial < $2 ORDER BY serial",
        )
        .bind(id.0.to_vec())
        .bind(i64::from(rec.master.serial))
        .fetch_all(&mut *tx)
        .await?;
        rec.history = revisions(&rows)?;
        // Only the zones asked for are read: a provider's Identity Zone can
        // hold millions of bindings, which MASTER never carries (reading
        // them all for every MASTER answer was seen to slow a bulk issue
        // from 15,000 to 5,000 bindings/s at one million).
        let mut sql = String::from("SELECT zone_type, entry FROM entries WHERE record_id = $1");
        if !zones.is_empty() {
            let list: Vec<String> = zones.iter().map(|z| z.0.to_string()).collect();
            sql.push_str(&format!(" AND zone_type IN ({})", list.join(", ")));
        }
        let rows = sqlx::query(&sql)
            .bind(id.0.to_vec())
            .fetch_all(&mut *tx)
            .await?;
        tx.rollback().await?;
        for r in rows {
            let z = ZoneType(r.get::<i32, _>(0) as u8);
            let e = SignedEntry::from_bytes(&r.get::<Vec<u8>, _>(1))
                .map_err(|e| StoreError::Invalid(format!("stored entry: {e}")))?;
            rec.zones
                .entry(z)
                .or_insert_with(ZoneSection::default)
                .upsert(e);
        }
        Ok(rec)
    }

    /// The record MASTER serves: every zone but the Identity Zone, read in
    /// one snapshot (its `master.serial` is the head it was read at).
    pub async fn master_record(&self, id: &Hash32) -> Result<Record, StoreError> {
        let zones: Vec<ZoneType> = ZoneType::ALL
            .into_iter()
            .filter(|z| *z != ZoneType::IDENTITY)
            .collect();
        self.record(id, &zones).await
    }

    /// The MASTER answer: [`Store::master_record`]'s bytes.
    pub async fn master_answer(&self, id: &Hash32) -> Result<Vec<u8>, StoreError> {
        Ok(self.master_record(id).await?.to_bytes())
    }

    /// Everything served for one record, for in-memory serving (pozd's
    /// cache, tests).
    pub async fn served(&self, id: &Hash32) -> Result<ServedRecord, StoreError> {
        Ok(ServedRecord::new(self.record(id, &[]).await?, Vec::new()))
    }
}

/// Stored master zones (column 0 of `rows`), in the rows' order.
fn revisions(rows: &[sqlx::any::AnyRow]) -> Result<Vec<MasterZone>, StoreError> {
    rows.iter()
        .map(|r| {
            MasterZone::from_bytes(&r.get::<Vec<u8>, _>(0))
                .map_err(|e| StoreError::Invalid(format!("stored revision: {e}")))
        })
        .collect()
}
