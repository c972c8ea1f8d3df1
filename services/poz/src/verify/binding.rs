//! One identity binding (handle -> user's record) against its provider's
//! verified record: issuer, signatures, expiry, revocation and
//! supersession (SPEC §8.4).

use super::record::{VerifiedRecord, MAX_CLOCK_SKEW_MS};
use super::rules::Rule;
use crate::entries::EntryBody;
use crate::hash::Hash32;
use crate::threshold::{delegation_members, evaluate, Authority, Member};
use crate::zone::{EntryKind, SignedEntry, ZoneType};
use serde::Serialize;
use std::collections::HashSet;

/// Why a binding does not hold.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{rule}: {detail}")]
pub struct BindingError {
    pub rule: Rule,
    pub detail: String,
}

/// A binding that verified against its provider's record.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct VerifiedBinding {
    pub binding: crate::entries::IdentityBinding,
    pub digest: Hash32,
    pub namespace: String,
    pub authorizing_group: u8,
}

/// Verifies one binding against an already verified provider record at
/// time `now` (ms). This is the hot path of every IDENTITY lookup.
pub fn verify_binding(
    provider: &VerifiedRecord,
    entry: &SignedEntry,
    now: u64,
) -> Result<VerifiedBinding, BindingError> {
    let pending = PendingBinding::check(provider, entry)?;
    pending.verify_each(entry)?;
    pending.conclude(provider, entry, now)
}

/// Verifies many bindings against one provider record with a single
/// Ed25519 batch check (SPEC §5.2): the same verdicts as calling
/// [`verify_binding`] on each, in order. When the batch fails, the
/// signatures are checked one by one to name the culprits, so a batch
/// with a forged binding costs about twice an unbatched run.
pub fn verify_bindings(
    provider: &VerifiedRecord,
    entries: &[SignedEntry],
    now: u64,
) -> Vec<Result<VerifiedBinding, BindingError>> {
    let pending: Vec<_> = entries
        .iter()
        .map(|e| PendingBinding::check(provider, e))
        .collect();
    let mut batch = crate::ed25519::Batch::new();
    // Entries of one signed batch share their root signature: check it
    // once (SPEC §8.9).
    let mut queued = HashSet::new();
    for p in pending.iter().flatten() {
        for (key, msg, sig) in &p.checks {
            if queued.insert((*key.as_bytes(), msg.0, *sig)) {
                batch.push(key, &msg.0, sig);
            }
        }
    }
    let all_signatures_hold = batch.verify();
    pending
        .into_iter()
        .zip(entries)
        .map(|(p, e)| {
            let p = p?;
            if !all_signatures_hold {
                p.verify_each(e)?;
            }
            p.conclude(provider, e, now)
        })
        .collect()
}

/// A binding whose structure, issuer and signers have been checked; its
/// signatures are next.
struct PendingBinding<'a> {
    binding: crate::entries::IdentityBinding,
    digest: Hash32,
    grant: Vec<Member>,
    /// Per signature: the key, what it signs (the entry digest, or a
    /// batch root digest) and the Ed25519 signature.
    checks: Vec<(&'a crate::ed25519::VerifyKey, Hash32, [u8; 64])>,
}

impl<'a> PendingBinding<'a> {
    fn check(provider: &'a VerifiedRecord, entry: &SignedEntry) -> Result<Self, BindingError> {
        let err = |rule, detail: String| BindingError { rule, detail };
        if entry.kind != EntryKind::GRANT {
            return Err(err(
                Rule::EntryBody,
                "not a binding (entry kind is revoke)".into(),
            ));
        }
        let binding = match EntryBody::decode(ZoneType::IDENTITY, entry.kind, &entry.body) {
            Ok(EntryBody::Binding(b)) => b,
            Ok(_) => return Err(err(Rule::EntryBody, "not an identity binding".into())),
            Err(e) => return Err(err(Rule::EntryBody, e.to_string())),
        };
        if binding.issuer != provider.id {
            return Err(err(
                Rule::BindingIssuer,
                format!(
                    "issued by {}, not by the provider record {}",
                    binding.issuer, provider.id
                ),
            ));
        }
        let rec = &provider.record;
        let Some(deleg) = rec.master.delegation(ZoneType::IDENTITY) else {
            return Err(err(
                Rule::ZoneDelegated,
                "the provider's master zone delegates no identity zone".into(),
            ));
        };
        let grant = delegation_members(&deleg.keys, Authority::Grant);
        let digest = entry.identity_digest(&provider.id);
        let mut checks = Vec::with_capacity(entry.signatures.len());
        for s in &entry.signatures {
            if !grant.iter().any(|m| m.key_idx == s.key_idx) {
                return Err(err(
                    Rule::EntrySignatures,
                    format!("key {} is not an identity delegation key", s.key_idx),
                ));
            }
            let key = rec.keys.get(s.key_idx).and_then(|k| k.verify_key());
            let message = s.entry_message(&provider.id, ZoneType::IDENTITY, &digest);
            match (key, message) {
                (Some(k), Some((msg, sig))) => checks.push((k, msg, sig)),
                _ => return Err(not_verified(s.key_idx)),
            }
        }
        Ok(PendingBinding {
            binding,
            digest,
            grant,
            checks,
        })
    }

    fn verify_each(&self, entry: &SignedEntry) -> Result<(), BindingError> {
        for ((key, msg, sig), s) in self.checks.iter().zip(&entry.signatures) {
            if !key.verify(&msg.0, sig) {
                return Err(not_verified(s.key_idx));
            }
        }
        Ok(())
    }

    /// Threshold, expiry and revocation, once every signature holds.
    fn conclude(
        self,
        provider: &VerifiedRecord,
        entry: &SignedEntry,
        now: u64,
    ) -> Result<VerifiedBinding, BindingError> {
        let err = |rule, detail: String| BindingError { rule, detail };
        let signers: Vec<u8> = entry.signatures.iter().map(|s| s.key_idx).collect();
        let t = evaluate(&self.grant, &signers);
        let Some(group) = t.authorizing_group() else {
            return Err(err(
                Rule::EntryGrant,
                format!("grant threshold not met: {}", t.describe()),
            ));
        };
        let (binding, digest) = (self.binding, self.digest);
        if binding.issued_at > now.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(err(
                Rule::BindingTime,
                format!(
                    "issued at {} ms, more than {} ms after now ({} ms)",
                    binding.issued_at, MAX_CLOCK_SKEW_MS, now
                ),
            ));
        }
        if binding.is_expired(now) {
            return Err(err(
                Rule::BindingExpiry,
                format!("expired at {} (now {})", binding.expires_at, now),
            ));
        }
        if provider.is_revoked(&digest) {
            return Err(err(
                Rule::BindingRevoked,
                format!("revoked by the provider (binding {digest})"),
            ));
        }
        if let Some(later) = superseded_by(provider, &binding) {
            return Err(err(
                Rule::BindingSuperseded,
                format!(
                    "the provider's Identity Zone binds {:?} to {} since {} (this binding: {} since {})",
                    binding.handle, later.1, later.0, binding.subject, binding.issued_at
                ),
            ));
        }
        let namespace = provider
            .record
            .authorities
            .get(&ZoneType::IDENTITY)
            .map(|a| a.namespace.clone())
            .unwrap_or_default();
        Ok(VerifiedBinding {
            binding,
            digest,
            namespace,
            authorizing_group: group,
        })
    }
}

/// A later binding of the same handle to another subject in the
/// provider's Identity Zone as this verifier has it (SPEC §8.4,
/// `binding-unique`): a handle's binding is replaced only after the old
/// one is revoked, so such a binding shows that this one was revoked
/// even when its revocation was not served. A server that omits the later
/// binding cannot be caught here; only the provider's revocation can.
/// Returns the later binding's (issued_at, subject).
fn superseded_by(
    provider: &VerifiedRecord,
    binding: &crate::entries::IdentityBinding,
) -> Option<(u64, Hash32)> {
    provider
        .bound
        .get(&binding.handle)?
        .iter()
        .find(|(issued_at, subject)| *subject != binding.subject && *issued_at > binding.issued_at)
        .copied()
}

fn not_verified(key_idx: u8) -> BindingError {
    BindingError {
        rule: Rule::EntrySignatures,
        detail: format!("signature by key {key_idx} does not verify"),
    }
}

#[cfg(test)]
mod superseded_tests {
    use super::*;
    use crate::sample::{self, T0};
    use crate::verify::verify_and_accept;

    /// Issue 12 §2: a second binding of `alice` to another subject, in the
    /// provider's zone as served, voids the first even without its
    /// revocation in sight (SPEC §8.4 `binding-unique`).
    #[test]
    fn a_later_binding_to_another_subject_supersedes() {
        let k = sample::provider_keys();
        let mut p = sample::provider().expect("provider");
        let signers = [&k.device_a, &k.device_b];
        let first =
            sample::issue(&p, sample::user_id(7), "dora", T0 + 10, 0, &signers).expect("first");
        let later =
            sample::issue(&p, sample::user_id(8), "dora", T0 + 20, 0, &signers).expect("later");
        let renewal =
            sample::issue(&p, sample::user_id(7), "dora", T0 + 15, 0, &signers).expect("renewal");
        crate::workflow::insert_entry(&mut p, ZoneType::IDENTITY, first.clone()).expect("insert");
        let vp = verify_and_accept(p.clone()).expect("valid");
        verify_binding(&vp, &first, T0 + 100).expect("alone, the first holds");
        crate::workflow::insert_entry(&mut p, ZoneType::IDENTITY, renewal.clone()).expect("renew");
        let vp = verify_and_accept(p.clone()).expect("valid");
        verify_binding(&vp, &first, T0 + 100).expect("a renewal to the same subject");
        crate::workflow::insert_entry(&mut p, ZoneType::IDENTITY, later.clone()).expect("insert");
        let vp = verify_and_accept(p).expect("valid");
        let e = verify_binding(&vp, &first, T0 + 100).expect_err("superseded");
        assert_eq!(e.rule, Rule::BindingSuperseded);
        assert_eq!(e.rule.code(), "binding-superseded");
        verify_binding(&vp, &later, T0 + 100).expect("the later one holds");
    }
}
