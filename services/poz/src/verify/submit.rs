//! The proofs a SUBMIT_REQUEST carries (SPEC §14.4), checked before a
//! request is queued for the provider.

use super::record::VerifiedRecord;
use crate::hash::Hash32;
use crate::threshold::{evaluate, Member};

/// Why a SUBMIT_REQUEST's proof does not hold (SPEC §14.4).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitRequestRefused {
    #[error("the request is for record {asked}, not the record given ({given})")]
    WrongSubject { asked: Hash32, given: Hash32 },
    #[error("the subject's master keys do not meet their threshold: {0}")]
    ThresholdNotMet(String),
    /// A proof signature by a key index that is not one of the subject's
    /// master keys.
    #[error("proof signature {position}: key {key_idx} is not a master key of the subject")]
    NotMember { position: usize, key_idx: u8 },
    /// A proof signature that does not verify.
    #[error("proof signature {position}: the signature by key {key_idx} does not verify")]
    BadSignature { position: usize, key_idx: u8 },
    /// Two proof signatures by the same key.
    #[error("proof signature {position}: key {key_idx} signed twice")]
    DuplicateSigner { position: usize, key_idx: u8 },
}

/// Checks a SUBMIT_REQUEST (SPEC §14.4): its proof must be signatures by
/// the subject record's current master keys over the request's digest,
/// meeting the threshold of one survivorship group, as a revision of that
/// record would need. So only the holders of a record can ask a provider
/// to bind a handle to it. Every signature of the proof must be by a
/// master key, verify, and name a key no other signature names: anything
/// else is refused, never ignored (a request padded with junk signatures
/// is not another request).
pub fn verify_submit_request(
    subject: &VerifiedRecord,
    req: &crate::wire::SubmitRequest,
) -> Result<(), SubmitRequestRefused> {
    if req.subject != subject.id {
        return Err(SubmitRequestRefused::WrongSubject {
            asked: req.subject,
            given: subject.id,
        });
    }
    let digest = req.digest();
    let members: Vec<Member> = subject
        .record
        .master
        .master_keys
        .iter()
        .map(Member::from)
        .collect();
    let mut ok: Vec<u8> = Vec::new();
    for (position, s) in req.proof.iter().enumerate() {
        let key_idx = s.key_idx;
        if !members.iter().any(|m| m.key_idx == key_idx) {
            return Err(SubmitRequestRefused::NotMember { position, key_idx });
        }
        if ok.contains(&key_idx) {
            return Err(SubmitRequestRefused::DuplicateSigner { position, key_idx });
        }
        let verifies = subject
            .record
            .keys
            .get(key_idx)
            .is_some_and(|k| k.verify(&digest, s));
        if !verifies {
            return Err(SubmitRequestRefused::BadSignature { position, key_idx });
        }
        ok.push(key_idx);
    }
    let tally = evaluate(&members, &ok);
    if tally.is_met() {
        Ok(())
    } else {
        Err(SubmitRequestRefused::ThresholdNotMet(tally.describe()))
    }
}

#[cfg(test)]
mod submit_request_tests {
    use super::*;
    use crate::verify::verify_and_accept;
    use crate::wire::SubmitRequest;

    #[test]
    fn only_the_subjects_master_keys_to_threshold_may_ask() {
        // The tour record: alice, bob, carol 34/33/33 in group 0, and a
        // recovery key of 100 in group 1.
        let rec = crate::sample::tour_record().expect("tour record");
        let vr = verify_and_accept(rec.clone()).expect("valid");
        let mut req = SubmitRequest {
            domain: "social.example".into(),
            handle: "alice".into(),
            subject: vr.id,
            proof: Vec::new(),
        };
        let digest = req.digest();
        let sign = |k: &crate::keys::SigningKey| {
            let idx = rec
                .keys
                .index_of(&k.public().id())
                .expect("key in the record");
            k.sign(idx, &digest)
        };
        let keys = [1u8, 2, 3, 4].map(crate::sample::key);
        assert!(verify_submit_request(&vr, &req).is_err(), "no proof");
        req.proof = vec![sign(&keys[0]), sign(&keys[1])];
        assert!(matches!(
            verify_submit_request(&vr, &req),
            Err(SubmitRequestRefused::ThresholdNotMet(_))
        ));
        req.proof.push(sign(&keys[2]));
        assert_eq!(verify_submit_request(&vr, &req), Ok(()));
        // The recovery key alone meets its own group.
        req.proof = vec![sign(&keys[3])];
        assert_eq!(verify_submit_request(&vr, &req), Ok(()));
        // A signature by a key outside the record does not verify.
        req.proof = vec![crate::sample::key(200).sign(3, &digest)];
        assert!(verify_submit_request(&vr, &req).is_err());
        // Issue 12: a valid proof with a junk signature appended (a key
        // index that is no master key) is refused, not padded through.
        for junk in [200u8, 249] {
            req.proof = vec![sign(&keys[3]), crate::sample::key(9).sign(junk, &digest)];
            assert_eq!(
                verify_submit_request(&vr, &req),
                Err(SubmitRequestRefused::NotMember {
                    position: 1,
                    key_idx: junk
                })
            );
        }
        // The same key twice.
        req.proof = vec![sign(&keys[3]), sign(&keys[3])];
        assert!(matches!(
            verify_submit_request(&vr, &req),
            Err(SubmitRequestRefused::DuplicateSigner { position: 1, .. })
        ));
        // A master key's signature over something else.
        let mut other = req.clone();
        other.handle = "someone".into();
        let idx3 = rec.keys.index_of(&keys[2].public().id()).expect("carol");
        req.proof = vec![sign(&keys[3]), keys[2].sign(idx3, &other.digest())];
        assert!(matches!(
            verify_submit_request(&vr, &req),
            Err(SubmitRequestRefused::BadSignature { position: 1, .. })
        ));
        // The same proof for another handle does not verify.
        req.proof = vec![sign(&keys[3])];
        req.handle = "mallory".into();
        assert!(verify_submit_request(&vr, &req).is_err());
        // Another subject.
        req.subject = Hash32([1; 32]);
        assert!(matches!(
            verify_submit_request(&vr, &req),
            Err(SubmitRequestRefused::WrongSubject { .. })
        ));
    }
}
