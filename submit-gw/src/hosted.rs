//! SUBMIT_SIGNED kind 3 (SPEC §14.5, "Hosting records"): a person
//! publishes their record to a provider that hosts records, so that a
//! binding can be asked for it (SUBMIT_REQUEST needs the subject's record
//! here) and anyone can look it up by its record name (its ID in hex,
//! SPEC §14.4).
//!
//! A hosted record takes room in the store for good, so publishing one is
//! bounded three ways: the gate asks a proof of work of at least
//! `publish_difficulty` bits whatever the load (`poz::gate`); a record
//! is at most `max_hosted_record_bytes`; and one address publishes at
//! most `publishes_per_address` new records per `publish_window_ms`
//! ([`AddressQuota`], per gateway process). Only a record that verifies
//! completely (from genesis) is stored. A record already hosted here is
//! not new: kind 3 then advances it as kind 1 does (compare-and-swap on
//! the next serial) and spends no quota.
//!
//! Statuses: TOO_LARGE (over the size cap), BAD_REQUEST (not a record; a
//! time too far ahead), UNAUTHORIZED (this provider hosts no records; the
//! record does not verify from genesis, naming each failed rule),
//! RATE_LIMITED (the address's quota is spent, with the wait), CONFLICT
//! (as kind 1, for a record already hosted), UNAVAILABLE with a retry
//! hint.

use crate::signed::{peer_error, SignedSubmissions};
use pb::store_read_client::StoreReadClient;
use pb::store_write_client::StoreWriteClient;
use pb::verifier_client::VerifierClient;
use poz::codec::Codec;
use poz::wire::{Response, Status};
use poz::Record;
use poz_kit::Channel;
use poz_proto::v1 as pb;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// How many new records one address may publish per window, remembered
/// per address for one window. Time is an argument (ms since the epoch),
/// so the rule is tested without a clock.
#[derive(Debug)]
pub struct AddressQuota {
    per_window: u32,
    window_ms: u64,
    /// Address -> (start of its window, publishes in it).
    spent: HashMap<IpAddr, (u64, u32)>,
    /// Addresses remembered at most: beyond it, windows that ended are
    /// forgotten first; if none has, the publish is refused (a flood of
    /// addresses cannot grow this map without bound).
    capacity: usize,
}

impl AddressQuota {
    /// `per_window` new records per `window_ms` per address; 0 refuses all.
    pub fn new(per_window: u32, window_ms: u64, capacity: usize) -> Self {
        AddressQuota {
            per_window,
            window_ms: window_ms.max(1),
            spent: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Spends one publish of `ip` at `now`: Ok, or Err(ms to wait until
    /// its window ends).
    pub fn spend(&mut self, ip: IpAddr, now: u64) -> Result<(), u64> {
        let window_ms = self.window_ms;
        if !self.spent.contains_key(&ip) && self.spent.len() >= self.capacity {
            self.spent
                .retain(|_, (start, _)| now < start.saturating_add(window_ms));
            if self.spent.len() >= self.capacity {
                return Err(window_ms);
            }
        }
        let slot = self.spent.entry(ip).or_insert((now, 0));
        if now >= slot.0.saturating_add(window_ms) {
            *slot = (now, 0);
        }
        if slot.1 >= self.per_window {
            return Err(slot.0.saturating_add(window_ms).saturating_sub(now).max(1));
        }
        slot.1 += 1;
        Ok(())
    }

    /// Gives back one publish of `ip` (its record was not stored after
    /// all), so a store that was down does not cost the holder quota.
    pub fn refund(&mut self, ip: IpAddr) {
        if let Some(slot) = self.spent.get_mut(&ip) {
            slot.1 = slot.1.saturating_sub(1);
        }
    }
}

/// The hosting side of the submit gateway.
#[derive(Clone)]
pub struct Hosting {
    store_read: StoreReadClient<Channel>,
    store_write: StoreWriteClient<Channel>,
    verifier: VerifierClient<Channel>,
    /// The largest record hosted, in bytes (the whole record encoding).
    max_record_bytes: usize,
    quota: Arc<Mutex<AddressQuota>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Hosting {
    /// Hosting through `store` and `verifier`: records of at most
    /// `max_record_bytes`, `quota` new records per address and window.
    pub fn new(
        store: Channel,
        verifier: Channel,
        max_record_bytes: usize,
        quota: AddressQuota,
    ) -> Self {
        let m = poz_kit::MAX_GRPC_MESSAGE;
        Hosting {
            store_read: StoreReadClient::new(store.clone()).max_decoding_message_size(m),
            store_write: StoreWriteClient::new(store).max_encoding_message_size(m),
            verifier: VerifierClient::new(verifier).max_encoding_message_size(m),
            max_record_bytes,
            quota: Arc::new(Mutex::new(quota)),
        }
    }

    /// Publishes `bytes` (kind 3) from `from`; `signed` advances a record
    /// already hosted. Ok once the store has committed it.
    pub async fn publish(
        &self,
        id: u16,
        bytes: &[u8],
        from: IpAddr,
        signed: &SignedSubmissions,
    ) -> Result<(), Response> {
        if bytes.len() > self.max_record_bytes {
            return Err(Response::error(
                Status::TOO_LARGE,
                id,
                0,
                &format!(
                    "the record is {} bytes; this provider hosts records of at most {} bytes",
                    bytes.len(),
                    self.max_record_bytes
                ),
            ));
        }
        let rec = Record::from_bytes(bytes)
            .map_err(|e| Response::error(Status::BAD_REQUEST, id, 0, &format!("record: {e}")))?;
        let rid = rec.id();
        let held = self
            .store_read
            .clone()
            .get_head(pb::GetHeadRequest {
                record: Some(pb::RecordRef {
                    by: Some(pb::record_ref::By::RecordId(pb::Hash {
                        value: rid.0.to_vec(),
                    })),
                }),
            })
            .await;
        match held {
            Ok(_) => {
                // Not new: the next revision of a hosted record.
                return signed
                    .record(id, &poz::wire::record_name(&rid), bytes)
                    .await;
            }
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(peer_error(id, &s)),
        }
        let report = self
            .verifier
            .clone()
            .verify_record(pb::VerifyRecordRequest {
                record: bytes.to_vec(),
                now_ms: 0,
            })
            .await
            .map_err(|s| peer_error(id, &s))?
            .into_inner();
        // Valid, with its chain walked from genesis. Not "complete": a
        // binding copy in the holder's Identity Zone is never checked
        // here (it verifies against its issuer's record).
        let from_genesis = report
            .checks
            .iter()
            .any(|c| c.rule == "chain-genesis" && c.outcome == pb::Outcome::Pass as i32);
        if !report.valid || !from_genesis {
            let failed: Vec<String> = report
                .checks
                .iter()
                .filter(|c| {
                    c.outcome == pb::Outcome::Fail as i32
                        || (c.rule == "chain-genesis" && c.outcome != pb::Outcome::Pass as i32)
                })
                .map(|c| format!("{}: {}", c.rule, c.detail))
                .collect();
            return Err(Response::error(
                Status::UNAUTHORIZED,
                id,
                0,
                &format!(
                    "the record does not verify from genesis: {}",
                    failed.join("; ")
                ),
            ));
        }
        let spent = self
            .quota
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spend(from, now_ms());
        if let Err(wait) = spent {
            return Err(Response::error(
                Status::RATE_LIMITED,
                id,
                wait.min(u32::MAX as u64) as u32,
                "this address has published as many new records as allowed for now",
            ));
        }
        // The store takes a genesis and then each revision by
        // compare-and-swap, each checked against the chain it holds; the
        // revisions between carry the current key map (keys are only
        // ever added, so it names every key of every revision).
        let stored = self.store_new(&rec, bytes).await;
        if let Err(s) = stored {
            // Nothing new was hosted (or only part of its chain, which
            // the next attempt completes): the publish is not counted.
            self.quota
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .refund(from);
            return Err(peer_error(id, &s));
        }
        tracing::info!(record = %rid, serial = rec.master.serial, "hosting a new record");
        Ok(())
    }
}

impl Hosting {
    /// Stores `rec` (whose encoding is `bytes`), not yet held: its genesis
    /// first, then each later revision by compare-and-swap, each checked
    /// by the store against the chain it holds. The revisions between
    /// carry the current key map, which names every key of every revision
    /// (keys are only ever appended to it, SPEC §4).
    async fn store_new(&self, rec: &Record, bytes: &[u8]) -> Result<(), tonic::Status> {
        let genesis = match rec.history.first() {
            Some(first) => Record::new(rec.keys.clone(), first.clone()),
            None => {
                let mut g = rec.clone();
                g.private_keys = None;
                g
            }
        };
        let mut write = self.store_write.clone();
        write
            .create_record(pb::CreateRecordRequest {
                record: genesis.to_bytes(),
                domains: Vec::new(),
                idempotency_key: String::new(),
            })
            .await?;
        for m in rec.history.iter().skip(1) {
            write
                .advance_head(pb::AdvanceHeadRequest {
                    record: Record::new(rec.keys.clone(), m.clone()).to_bytes(),
                    expected_serial: m.serial.saturating_sub(1),
                    idempotency_key: String::new(),
                })
                .await?;
        }
        if rec.master.serial > 1 {
            write
                .advance_head(pb::AdvanceHeadRequest {
                    record: bytes.to_vec(),
                    expected_serial: rec.master.serial - 1,
                    idempotency_key: String::new(),
                })
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_per_address_and_window() {
        let a = IpAddr::from([192, 0, 2, 1]);
        let b = IpAddr::from([192, 0, 2, 2]);
        let mut q = AddressQuota::new(2, 1_000, 2);
        assert_eq!(q.spend(a, 0), Ok(()));
        assert_eq!(q.spend(a, 10), Ok(()));
        assert_eq!(q.spend(a, 400), Err(600));
        assert_eq!(q.spend(b, 400), Ok(()));
        // A third address while both windows run: refused, not remembered.
        let c = IpAddr::from([192, 0, 2, 3]);
        assert_eq!(q.spend(c, 500), Err(1_000));
        // a's window ended: a new one starts, and room is made for c.
        assert_eq!(q.spend(a, 1_000), Ok(()));
        assert_eq!(q.spend(c, 1_500), Ok(()));
        // A refund gives one back within the window.
        assert_eq!(q.spend(a, 1_100), Ok(()));
        assert_eq!(q.spend(a, 1_200), Err(800));
        q.refund(a);
        assert_eq!(q.spend(a, 1_300), Ok(()));
    }
}
