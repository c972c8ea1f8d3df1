//! Targets over the standard's codec (SPEC §1, §3–§10, §14): records,
//! zone entries and every other structure a peer can send.
//!
//! The codec promises one encoding per value ([`poz::Codec::encode`]):
//! whatever decodes from a whole buffer re-encodes to exactly that
//! buffer. Every target here asserts it.

use poz::codec::Codec;
use poz::entries::EntryBody;
use poz::handle::{check_handle, HandlePolicy};
use poz::wire::{MessageType, RequestPayload};
use poz::zone::{SignedEntry, ZoneType};
use std::sync::OnceLock;

/// Decodes `data` as a whole `T`; when it decodes, asserts that it
/// re-encodes to `data` and returns it.
pub fn round_trip<T: Codec>(data: &[u8]) -> Option<T> {
    let v = T::from_bytes(data).ok()?;
    let again = v.to_bytes();
    assert!(
        again == data,
        "{} decoded from {} bytes re-encodes to {} different bytes",
        std::any::type_name::<T>(),
        data.len(),
        again.len()
    );
    Some(v)
}

/// Any bytes as a POZ record: decoding never panics; whatever decodes
/// re-encodes to the identical bytes (one encoding per record); and the
/// verifier never panics on it.
pub fn record(data: &[u8]) {
    if let Some(rec) = round_trip::<poz::Record>(data) {
        let _ = poz::verify_record(&rec);
    }
}

/// Any bytes as a signed zone entry, then its body as every zone type:
/// decoding never panics and round-trips exactly.
pub fn entry(data: &[u8]) {
    if let Some(e) = round_trip::<SignedEntry>(data) {
        for z in ZoneType::ALL {
            let _ = EntryBody::decode(z, e.kind, &e.body);
        }
        let _ = e.identity_digest(&poz::Hash32::ZERO);
    }
}

/// [`round_trip`] for a table of types: whether `data` decoded.
fn rt<T: Codec>(data: &[u8]) -> bool {
    round_trip::<T>(data).is_some()
}

/// A decoder of the `codec` target: its name and what it runs, which
/// says whether the input decoded.
pub type Decoder = (&'static str, fn(&[u8]) -> bool);

/// The structures the `codec` target chooses from by its first byte
/// (modulo the count): each decodes the rest of the input, and says
/// whether it decoded (the seed generator keeps only inputs that do).
pub const CODECS: &[Decoder] = &[
    ("auth.challenge", rt::<poz::auth::Challenge>),
    ("auth.proof", rt::<poz::auth::Proof>),
    ("batch.proof", batch_proof),
    ("entries.binding", rt::<poz::entries::IdentityBinding>),
    ("entries.revocation", rt::<poz::entries::Revocation>),
    ("entries.inbox", rt::<poz::entries::Inbox>),
    ("entries.trust_member", rt::<poz::entries::TrustMember>),
    ("entries.auth", rt::<poz::entries::AuthEntry>),
    ("entries.pool_host", rt::<poz::entries::PoolHost>),
    ("entries.service", rt::<poz::entries::ServiceEntry>),
    ("entries.feed", rt::<poz::entries::FeedEntry>),
    ("hash", rt::<poz::Hash32>),
    ("keys.public_key", rt::<poz::PublicKey>),
    ("keys.public_key_map", rt::<poz::PublicKeyMap>),
    ("keys.signature", rt::<poz::Signature>),
    ("master.key", rt::<poz::MasterKey>),
    ("master.delegation_key", rt::<poz::DelegationKey>),
    ("master.delegation", rt::<poz::Delegation>),
    ("master.zone", rt::<poz::MasterZone>),
    ("private.sealed_keys", rt::<poz::private::SealedKeys>),
    ("private.key_file", rt::<poz::private::KeyFile>),
    ("record.zone_history", rt::<poz::record::ZoneHistory>),
    ("record.key_names", rt::<poz::record::KeyNames>),
    ("wire.request", rt::<poz::wire::Request>),
    ("wire.response", rt::<poz::wire::Response>),
    ("wire.error_detail", rt::<poz::wire::ErrorDetail>),
    ("wire.domain_query", rt::<poz::wire::DomainQuery>),
    ("wire.identity_query", rt::<poz::wire::IdentityQuery>),
    ("wire.zone_query", rt::<poz::wire::ZoneQuery>),
    ("wire.serial_answer", rt::<poz::wire::SerialAnswer>),
    ("wire.mirrors_answer", rt::<poz::wire::MirrorsAnswer>),
    ("wire.identity_answer", rt::<poz::wire::IdentityAnswer>),
    ("wire.zone_answer", rt::<poz::wire::ZoneAnswer>),
    ("wire.challenge", rt::<poz::wire::Challenge>),
    ("wire.pow_required", rt::<poz::wire::PowRequired>),
    ("wire.submit_signed", rt::<poz::wire::SubmitSigned>),
    ("wire.submit_request", rt::<poz::wire::SubmitRequest>),
    ("wire.submit_ticket", rt::<poz::wire::SubmitTicket>),
    ("wire.status_query", rt::<poz::wire::StatusQuery>),
    ("wire.status_answer", rt::<poz::wire::StatusAnswer>),
    ("wire.batches_query", rt::<poz::wire::BatchesQuery>),
    ("wire.batch_info", rt::<poz::wire::BatchInfo>),
    ("wire.batches_answer", batches_answer),
    ("wire.batch_query", rt::<poz::wire::BatchQuery>),
    ("wire.history_query", rt::<poz::wire::HistoryQuery>),
    ("wire.history_answer", rt::<poz::wire::HistoryAnswer>),
    ("zone.authority", rt::<poz::AuthoritySection>),
    ("zone.section", rt::<poz::ZoneSection>),
    ("wire.request_payload", request_payload),
    ("handle", handle),
    ("audit.batch_page", batch_page),
];

/// Any bytes as any structure of the standard: the first byte chooses
/// one of [`CODECS`], the rest is its input.
pub fn codec(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let _ = (CODECS[usize::from(which) % CODECS.len()].1)(rest);
}

/// A batch proof (SPEC §8.9) and the root it leads to from a zero entry
/// digest, in each zone.
fn batch_proof(data: &[u8]) -> bool {
    let Some(p) = round_trip::<poz::batch::BatchProof>(data) else {
        return false;
    };
    for z in ZoneType::ALL {
        let _ = p.signed_digest(&poz::Hash32::ZERO, z, &poz::Hash32::ZERO);
    }
    true
}

/// A BATCHES answer followed by the batch-log auditor (`pozctl audit`).
fn batches_answer(data: &[u8]) -> bool {
    let Some(a) = round_trip::<poz::wire::BatchesAnswer>(data) else {
        return false;
    };
    let mut log = poz::audit::BatchLog::after(0);
    for b in &a.batches {
        if log.observe(b).is_err() {
            break;
        }
    }
    true
}

/// A request payload by type: `type ‖ payload`, decoded by the payload
/// rule of that type (SPEC §14.4); what decodes re-encodes exactly.
fn request_payload(data: &[u8]) -> bool {
    let Some((&t, payload)) = data.split_first() else {
        return false;
    };
    let Ok(p) = RequestPayload::decode(MessageType(t), payload) else {
        return false;
    };
    let again = match &p {
        RequestPayload::Challenge => Vec::new(),
        RequestPayload::Domain(q) => q.to_bytes(),
        RequestPayload::Identity(q) => q.to_bytes(),
        RequestPayload::Zone(q) => q.to_bytes(),
        RequestPayload::Batches(q) => q.to_bytes(),
        RequestPayload::Batch(q) => q.to_bytes(),
        RequestPayload::HandleHistory(q) => q.to_bytes(),
        RequestPayload::SubmitSigned(q) => q.to_bytes(),
        RequestPayload::SubmitRequest(q) => q.to_bytes(),
        RequestPayload::SubmitStatus(q) => q.to_bytes(),
    };
    assert!(
        again == payload,
        "payload of type {t:#04x} re-encodes differently"
    );
    true
}

/// Any UTF-8 as a handle under both policies (SPEC §8.4): the rules
/// decide without panicking.
fn handle(data: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(data) else {
        return false;
    };
    let mut ok = true;
    for policy in [HandlePolicy::Ascii, HandlePolicy::Unicode] {
        ok &= check_handle(s, policy).is_ok();
    }
    let _ = poz::handle::handle_rule_broken(s);
    ok
}

/// The sample provider record (SPEC tour) the audit targets check
/// against: a real issuer with keys and delegations.
fn provider() -> Option<&'static poz::Record> {
    static PROVIDER: OnceLock<Option<poz::Record>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| poz::sample::provider().ok())
        .as_ref()
}

/// One BATCH page audited (`pozctl audit`): `zone u8 ‖ root_digest[32]
/// ‖ ZoneAnswer`, every entry taken by a [`poz::audit::BatchAudit`] of
/// the sample provider, then the audit finished against its master zone.
fn batch_page(data: &[u8]) -> bool {
    let Some(rec) = provider() else {
        return false;
    };
    if data.len() < 33 {
        return false;
    }
    let (head, page) = data.split_at(33);
    let zone = ZoneType(head[0]);
    let mut root = [0u8; 32];
    root.copy_from_slice(&head[1..]);
    let Some(answer) = round_trip::<poz::wire::ZoneAnswer>(page) else {
        return false;
    };
    let mut audit = poz::audit::BatchAudit::new(rec.id(), zone, poz::Hash32(root));
    for e in &answer.entries {
        if audit.add(&rec.keys, e).is_err() {
            return false;
        }
    }
    audit.finish(&rec.master, &rec.keys).is_ok()
}
