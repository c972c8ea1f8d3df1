//! Answers to every query type, built from records held in memory (SPEC
//! §14.3), sans I/O. The fleet's store answers the same queries from
//! Postgres; this is the reference for what each answer contains, and what
//! the embedded server and the tests serve.

use crate::codec::Codec;
use crate::entries::{EntryBody, PoolHost};
use crate::hash::Hash32;
use crate::record::Record;
use crate::wire::{
    DomainQuery, IdentityAnswer, IdentityQuery, MessageType, MirrorsAnswer, Request, Response,
    SerialAnswer, Status, ZoneAnswer, ZoneQuery,
};
use crate::zone::{EntryKind, SignedEntry, ZoneSection, ZoneType};
use std::collections::BTreeMap;

/// A record as served: its bytes and an index of its identity bindings.
#[derive(Clone, Debug)]
pub struct ServedRecord {
    pub record: Record,
    /// The servers known to carry it (MIRRORS).
    pub mirrors: Vec<PoolHost>,
    bindings: BTreeMap<String, (SignedEntry, Option<SignedEntry>)>,
}

impl ServedRecord {
    /// Indexes a record's identity zone by handle. Where a handle was
    /// issued more than once, the latest issue wins.
    pub fn new(record: Record, mirrors: Vec<PoolHost>) -> Self {
        let id = record.id();
        let mut bindings: BTreeMap<String, (SignedEntry, Option<SignedEntry>, u64)> =
            BTreeMap::new();
        let mut revocations: BTreeMap<Hash32, SignedEntry> = BTreeMap::new();
        if let Some(zs) = record.zones.get(&ZoneType::IDENTITY) {
            for e in &zs.entries {
                match EntryBody::decode(ZoneType::IDENTITY, e.kind, &e.body) {
                    Ok(EntryBody::Binding(b))
                        if b.issuer == id
                            && bindings
                                .get(&b.handle)
                                .is_none_or(|(_, _, t)| *t <= b.issued_at) =>
                    {
                        bindings.insert(b.handle.clone(), (e.clone(), None, b.issued_at));
                    }
                    Ok(EntryBody::Revocation(r)) => {
                        revocations.insert(r.target, e.clone());
                    }
                    _ => {}
                }
            }
        }
        let bindings = bindings
            .into_iter()
            .map(|(h, (e, _, _))| {
                let rev = revocations.get(&e.identity_digest(&id)).cloned();
                (h, (e, rev))
            })
            .collect();
        ServedRecord {
            record,
            mirrors,
            bindings,
        }
    }

    /// MASTER: the record without its Identity Zone entries (a provider's
    /// may hold millions; IDENTITY and CHAIN serve them one by one) and
    /// without its Private Key Map.
    pub fn master_answer(&self) -> Vec<u8> {
        let mut r = self.record.clone();
        r.private_keys = None;
        r.zones.remove(&ZoneType::IDENTITY);
        r.to_bytes()
    }

    /// CHAIN: everything needed to verify one binding from genesis: key
    /// map, master zone and history, the identity authority, and an
    /// Identity Zone holding just the binding and its revocation, if any.
    pub fn chain_answer(&self, handle: &str) -> Option<Vec<u8>> {
        let (binding, revocation) = self.bindings.get(handle)?;
        Some(chain_record(&self.record, binding.clone(), revocation.clone()).to_bytes())
    }

    pub fn identity_answer(&self, handle: &str) -> Option<IdentityAnswer> {
        self.bindings.get(handle).map(|(b, r)| IdentityAnswer {
            binding: b.clone(),
            revocation: r.clone(),
        })
    }

    pub fn serial_answer(&self) -> SerialAnswer {
        SerialAnswer {
            record_id: self.record.id(),
            serial: self.record.master.serial,
            current_master_hash: self.record.master.current_master_hash,
            timestamp: self.record.master.timestamp,
        }
    }

    /// ZONE: entries in ascending digest order after `after`.
    pub fn zone_answer(&self, q: &ZoneQuery) -> Option<ZoneAnswer> {
        let zs = self.record.zones.get(&q.zone_type)?;
        let id = self.record.id();
        let mut keyed: Vec<(Hash32, &SignedEntry)> = zs
            .entries
            .iter()
            .map(|e| {
                let issuer = if q.zone_type == ZoneType::IDENTITY && e.kind == EntryKind::GRANT {
                    crate::entries::IdentityBinding::from_bytes(&e.body)
                        .map(|b| b.issuer)
                        .unwrap_or(id)
                } else {
                    id
                };
                // The store pages by the same digest (SPEC §5.3); an entry
                // that names a key the record lacks cannot be in a record
                // that verified, so the fallback is never served.
                let digest = e
                    .digest_in(&issuer, q.zone_type, &self.record.keys)
                    .unwrap_or_else(|_| {
                        e.digest(&issuer, q.zone_type, &crate::zone::KeyBinding::NONE)
                    });
                (digest, e)
            })
            .filter(|(d, _)| *d > q.after)
            .collect();
        keyed.sort_by_key(|(d, _)| *d);
        let more = keyed.len() > q.limit as usize;
        keyed.truncate(q.limit as usize);
        Some(ZoneAnswer {
            next: if more {
                keyed.last().map(|(d, _)| *d).unwrap_or_default()
            } else {
                Hash32::ZERO
            },
            entries: keyed.into_iter().map(|(_, e)| e.clone()).collect(),
        })
    }
}

/// Records served by domain.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub by_domain: BTreeMap<String, ServedRecord>,
}

impl Catalog {
    pub fn insert(&mut self, domain: &str, rec: ServedRecord) {
        self.by_domain.insert(domain.to_owned(), rec);
    }

    /// Answers an admitted query (the gate has already checked the port,
    /// the PoW and answered CHALLENGE).
    pub fn answer(&self, req: &Request) -> Response {
        let id = req.request_id;
        let bad = |e: crate::codec::DecodeError| {
            Response::error(Status::BAD_REQUEST, id, 0, &format!("payload: {e}"))
        };
        let not_found = |what: &str| Response::error(Status::NOT_FOUND, id, 0, what);
        let rec = |d: &str| self.by_domain.get(d);
        match req.message_type {
            MessageType::MASTER | MessageType::SERIAL | MessageType::MIRRORS => {
                let q = match DomainQuery::from_bytes(&req.payload) {
                    Ok(q) => q,
                    Err(e) => return bad(e),
                };
                let Some(r) = rec(&q.domain) else {
                    return not_found("no record for this domain");
                };
                let payload = match req.message_type {
                    MessageType::MASTER => r.master_answer(),
                    MessageType::SERIAL => r.serial_answer().to_bytes(),
                    _ => MirrorsAnswer {
                        hosts: r.mirrors.clone(),
                    }
                    .to_bytes(),
                };
                Response::ok(id, payload)
            }
            MessageType::IDENTITY | MessageType::CHAIN => {
                let q = match IdentityQuery::from_bytes(&req.payload) {
                    Ok(q) => q,
                    Err(e) => return bad(e),
                };
                let Some(r) = rec(&q.domain) else {
                    return not_found("no record for this domain");
                };
                let answer = if req.message_type == MessageType::IDENTITY {
                    r.identity_answer(&q.handle).map(|a| a.to_bytes())
                } else {
                    r.chain_answer(&q.handle)
                };
                match answer {
                    Some(p) => Response::ok(id, p),
                    None => not_found("no binding for this handle"),
                }
            }
            MessageType::ZONE => {
                let q = match ZoneQuery::from_bytes(&req.payload) {
                    Ok(q) => q,
                    Err(e) => return bad(e),
                };
                match rec(&q.domain).and_then(|r| r.zone_answer(&q)) {
                    Some(a) => Response::ok(id, a.to_bytes()),
                    None => not_found("no such record or zone"),
                }
            }
            // The audit queries (SPEC §14.8) read the batch log a store
            // keeps as it commits; a server of records held in memory
            // has none, and says so rather than answer with an empty log.
            MessageType::BATCHES | MessageType::BATCH | MessageType::HANDLE_HISTORY => {
                Response::error(
                    Status::UNAVAILABLE,
                    id,
                    0,
                    "this server keeps no batch log: ask the provider's query servers",
                )
            }
            other => Response::error(
                Status::WRONG_PORT,
                id,
                0,
                &format!("{other} is not a query"),
            ),
        }
    }
}

/// The CHAIN answer's record (SPEC §14.4) for one binding of `provider`
/// and its revocation, if any: the Public Key Map, the master zone and
/// its Zone History, the Identity authority, and an Identity Zone holding
/// exactly those entries. When the Identity authority names a service
/// (`service_ref`), the Service authority and that Service Zone entry come
/// too, so the answer verifies from genesis on its own (`service-ref`).
/// `provider` needs its Service Zone (and may hold nothing else); no other
/// authority or zone is carried, nor the Private Key Map or Key Names.
pub fn chain_record(
    provider: &Record,
    binding: SignedEntry,
    revocation: Option<SignedEntry>,
) -> Record {
    let mut r = Record::new(provider.keys.clone(), provider.master.clone());
    r.history = provider.history.clone();
    if let Some(a) = provider.authorities.get(&ZoneType::IDENTITY) {
        r.authorities.insert(ZoneType::IDENTITY, a.clone());
        if !a.service_ref.is_zero() {
            let named = provider.zones.get(&ZoneType::SERVICE).and_then(|zs| {
                zs.entries.iter().find(|e| {
                    e.kind == EntryKind::GRANT
                        && crate::entries::ServiceEntry::from_bytes(&e.body)
                            .is_ok_and(|s| s.service_hash() == a.service_ref)
                })
            });
            if let (Some(sa), Some(e)) = (provider.authorities.get(&ZoneType::SERVICE), named) {
                r.authorities.insert(ZoneType::SERVICE, sa.clone());
                let mut zs = ZoneSection::default();
                zs.upsert(e.clone());
                r.zones.insert(ZoneType::SERVICE, zs);
            }
        }
    }
    let mut zs = ZoneSection::default();
    zs.upsert(binding);
    if let Some(rev) = revocation {
        zs.upsert(rev);
    }
    r.zones.insert(ZoneType::IDENTITY, zs);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;
    use crate::verify::{verify_and_accept, verify_binding};

    #[test]
    fn chain_answer_verifies_on_its_own() {
        let p = sample::provider().unwrap();
        let s = ServedRecord::new(p, vec![]);
        let bytes = s.chain_answer("alice").unwrap();
        let r = Record::from_bytes(&bytes).unwrap();
        let vr = verify_and_accept(r).unwrap();
        assert!(vr.complete);
        let e = &vr.record.zones[&ZoneType::IDENTITY].entries[0];
        let b = verify_binding(&vr, e, sample::T0 + 10_000).unwrap();
        assert_eq!(b.binding.handle, "alice");
        assert_eq!(b.namespace, "social.example");
        assert!(s.chain_answer("nobody").is_none());
    }

    /// Issue 12 §7: an Identity authority that names a service needs that
    /// service in the CHAIN answer, or `service-ref` fails.
    #[test]
    fn chain_answer_carries_the_service_the_identity_authority_names() {
        let mut p = sample::provider().unwrap();
        let k = sample::provider_keys();
        let query = p.zones[&ZoneType::SERVICE]
            .entries
            .iter()
            .find_map(|e| {
                crate::entries::ServiceEntry::from_bytes(&e.body)
                    .ok()
                    .filter(|s| s.service_type == crate::entries::ServiceType::POZ_QUERY)
            })
            .unwrap();
        crate::workflow::set_authority(
            &mut p,
            ZoneType::IDENTITY,
            "social.example",
            query.service_hash(),
            sample::T0 + 4_000,
            &[&k.device_a, &k.device_b],
        )
        .unwrap();
        assert!(crate::verify_record(&p).is_complete());
        let s = ServedRecord::new(p, vec![]);
        let r = Record::from_bytes(&s.chain_answer("alice").unwrap()).unwrap();
        let report = crate::verify_record(&r);
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(r.zones[&ZoneType::SERVICE].entries.len(), 1);
        assert!(!r.authorities.contains_key(&ZoneType::EMAIL));
    }

    #[test]
    fn master_answer_has_no_identity_zone() {
        let s = ServedRecord::new(sample::provider().unwrap(), vec![]);
        let r = Record::from_bytes(&s.master_answer()).unwrap();
        assert!(!r.zones.contains_key(&ZoneType::IDENTITY));
        assert!(crate::verify_record(&r).is_complete());
    }

    #[test]
    fn zone_paging_walks_every_entry_once() {
        let s = ServedRecord::new(sample::provider().unwrap(), vec![]);
        let mut after = Hash32::ZERO;
        let mut seen = 0;
        loop {
            let q = ZoneQuery {
                domain: "x.example".into(),
                zone_type: ZoneType::SERVICE,
                after,
                limit: 1,
            };
            let a = s.zone_answer(&q).unwrap();
            seen += a.entries.len();
            if a.next.is_zero() {
                break;
            }
            after = a.next;
        }
        assert_eq!(seen, 4);
    }
}
