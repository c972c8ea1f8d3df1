//! Writes the seed inputs of the `codec`, `noise`, `grpc` and `frame`
//! targets into `fuzz/corpus/<target>/seed-*` (valid inputs built from
//! the standard's test vectors and sample records, so fuzzing starts deep
//! inside each decoder): `cargo run -p poz-fuzzing --example seeds`.
//! Deterministic but for the Noise client's ephemeral keys, which the
//! `noise` seeds do not contain (a seed holds the request a client seals).

use poz::codec::Codec;
use poz::pow::solve;
use poz::wire::{
    BatchesQuery, DomainQuery, HistoryQuery, IdentityQuery, MessageType, Request, RequestPayload,
    StatusQuery, SubmitRequest, SubmitSigned, ZoneAnswer, ZoneQuery,
};
use poz::zone::ZoneType;
use poz::{Hash32, Record};
use poz_fuzzing::codecs::CODECS;
use poz_fuzzing::gate::{catalog, challenger, NoiseInput, NoiseShape, DOMAIN, NOW};
use poz_fuzzing::grpc::REQUESTS;
use poz_proto::v1 as pb;
use prost::Message;
use std::num::NonZeroU8;
use std::path::{Path, PathBuf};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn corpus(target: &str) -> Res<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Res<()> {
    std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    Ok(())
}

/// One request frame of every query and submit type against the sample
/// catalog.
fn requests(provider: &Record) -> Vec<(&'static str, Request)> {
    let d = DOMAIN.to_string();
    let q = |t, p: Vec<u8>| Request::new(t, 1, p);
    let handle = "alice".to_string();
    vec![
        ("challenge", q(MessageType::CHALLENGE, vec![])),
        (
            "master",
            q(
                MessageType::MASTER,
                DomainQuery { domain: d.clone() }.to_bytes(),
            ),
        ),
        (
            "mirrors",
            q(
                MessageType::MIRRORS,
                DomainQuery { domain: d.clone() }.to_bytes(),
            ),
        ),
        (
            "serial",
            q(
                MessageType::SERIAL,
                DomainQuery { domain: d.clone() }.to_bytes(),
            ),
        ),
        (
            "identity",
            q(
                MessageType::IDENTITY,
                IdentityQuery {
                    domain: d.clone(),
                    handle: handle.clone(),
                }
                .to_bytes(),
            ),
        ),
        (
            "chain",
            q(
                MessageType::CHAIN,
                IdentityQuery {
                    domain: d.clone(),
                    handle: handle.clone(),
                }
                .to_bytes(),
            ),
        ),
        (
            "zone",
            q(
                MessageType::ZONE,
                ZoneQuery {
                    domain: d.clone(),
                    zone_type: ZoneType::IDENTITY,
                    after: Hash32::ZERO,
                    limit: 10,
                }
                .to_bytes(),
            ),
        ),
        (
            "batches",
            q(
                MessageType::BATCHES,
                BatchesQuery {
                    domain: d.clone(),
                    zone_type: ZoneType::IDENTITY,
                    after: 0,
                    limit: 10,
                }
                .to_bytes(),
            ),
        ),
        (
            "handle_history",
            q(
                MessageType::HANDLE_HISTORY,
                HistoryQuery {
                    domain: d.clone(),
                    handle,
                    after: Hash32::ZERO,
                    limit: 10,
                }
                .to_bytes(),
            ),
        ),
        (
            "submit_signed",
            q(
                MessageType::SUBMIT_SIGNED,
                SubmitSigned::Record {
                    domain: "new.example".into(),
                    record: provider.to_bytes(),
                }
                .to_bytes(),
            ),
        ),
        (
            "submit_request",
            q(
                MessageType::SUBMIT_REQUEST,
                SubmitRequest {
                    domain: d,
                    handle: "bob".into(),
                    subject: provider.id(),
                    proof: vec![],
                }
                .to_bytes(),
            ),
        ),
        (
            "submit_status",
            q(
                MessageType::SUBMIT_STATUS,
                StatusQuery {
                    submission_id: [9; 16],
                }
                .to_bytes(),
            ),
        ),
    ]
}

/// A BATCH page of the sample provider's identity zone: `n` bindings
/// batch-signed by both identity devices (SPEC §8.9), with its root
/// digest (as poz's own audit tests build one).
fn batch_page(provider: &Record, n: u32) -> Res<(Hash32, Vec<u8>)> {
    let k = poz::sample::provider_keys();
    let mut entries = (0..n)
        .map(|i| {
            poz::workflow::new_binding(
                provider,
                poz::hash::tagged_hash("s", &[&i.to_be_bytes()]),
                &format!("user{i}"),
                poz::sample::T0 + 5_000,
                0,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut root = Hash32::ZERO;
    for key in [&k.device_a, &k.device_b] {
        let (idx, tree, digest) = poz::workflow::batch_signing_target(
            provider,
            ZoneType::IDENTITY,
            &entries,
            &key.public().id(),
        )?;
        let sig = key.sign(idx, &digest);
        let sig: [u8; 64] = sig.data.as_slice().try_into()?;
        poz::workflow::attach_batch_signature(&mut entries, idx, &tree, sig);
        root = digest;
    }
    let page = ZoneAnswer {
        entries,
        next: Hash32::ZERO,
    };
    Ok((root, page.to_bytes()))
}

fn main() -> Res<()> {
    let provider = poz::sample::provider()?;
    let tour = poz::sample::tour_record()?;
    let reqs = requests(&provider);

    // frame: every request type, and one with a proof of work at
    // difficulty 8 for the fixed clock.
    let frame = corpus("frame")?;
    for (name, r) in &reqs {
        write(&frame, name, &r.to_bytes())?;
    }
    let challenge = challenger().issue(NOW, 8);
    let mut solved = reqs[3].1.clone();
    solved.pow = solve(&challenge.challenge, 8, NOW, 0, 1 << 20);
    write(&frame, "serial-pow8", &solved.to_bytes())?;

    // noise: each request sealed (by the harness, and by snow with the
    // answer read back), once tampered; one
    // plaintext frame as bytes off the wire.
    let noise = corpus("noise")?;
    for (name, r) in &reqs {
        let submit = name.starts_with("submit");
        for answer in [false, true] {
            let input = NoiseInput {
                submit,
                answer,
                difficulty: 0,
                shape: NoiseShape::Sealed {
                    request: r.to_bytes(),
                    tamper: None,
                },
            };
            let suffix = if answer { "-answered" } else { "" };
            write(&noise, &format!("{name}{suffix}"), &input.to_bytes())?;
        }
    }
    let pow = NoiseInput {
        submit: false,
        answer: true,
        difficulty: 8,
        shape: NoiseShape::Sealed {
            request: solved.to_bytes(),
            tamper: None,
        },
    };
    write(&noise, "serial-pow8", &pow.to_bytes())?;
    let tampered = NoiseInput {
        submit: false,
        answer: false,
        difficulty: 0,
        shape: NoiseShape::Sealed {
            request: reqs[1].1.to_bytes(),
            tamper: NonZeroU8::new(1).map(|x| (40, x)),
        },
    };
    write(&noise, "master-tampered", &tampered.to_bytes())?;
    let mut wire = vec![0, reqs[1].1.to_bytes().len() as u8];
    wire.extend_from_slice(&reqs[1].1.to_bytes());
    let plain = NoiseInput {
        submit: false,
        answer: false,
        difficulty: 0,
        shape: NoiseShape::Wire(wire),
    };
    write(&noise, "plaintext-on-7075", &plain.to_bytes())?;

    // codec: a pool of real structures, each kept as a seed of every
    // codec it decodes as.
    let mut pool: Vec<Vec<u8>> = Vec::new();
    for rec in [&provider, &tour] {
        pool.extend(rec.sections().into_iter().map(|(_, b)| b));
        for z in rec.zones.values() {
            for e in z.entries.iter().take(2) {
                pool.push(e.to_bytes());
                pool.push(e.body.clone());
            }
        }
        pool.push(rec.master.to_bytes());
        pool.push(rec.keys.to_bytes());
    }
    for (_, r) in &reqs {
        pool.push(r.to_bytes());
        pool.push(r.payload.clone());
        let answer = catalog().answer(r);
        pool.push(answer.to_bytes());
        pool.push(answer.payload.clone());
    }
    pool.push(solved.to_bytes());
    pool.push(challenge.to_bytes());
    pool.push(b"alice".to_vec());
    pool.push("\u{0430}lice".as_bytes().to_vec());
    let codec = corpus("codec")?;
    for (i, (name, decodes)) in CODECS.iter().enumerate() {
        for (j, bytes) in pool.iter().enumerate() {
            if bytes.len() <= 16_384 && decodes(bytes) {
                let mut input = vec![i as u8];
                input.extend_from_slice(bytes);
                write(&codec, &format!("{name}-{j}"), &input)?;
            }
        }
    }
    let payload_idx = CODECS
        .iter()
        .position(|(n, _)| *n == "wire.request_payload");
    let page_idx = CODECS.iter().position(|(n, _)| *n == "audit.batch_page");
    if let (Some(pi), Some(bi)) = (payload_idx, page_idx) {
        for (name, r) in &reqs {
            let mut input = vec![pi as u8, r.message_type.0];
            input.extend_from_slice(&r.payload);
            if RequestPayload::decode(r.message_type, &r.payload).is_ok() {
                write(&codec, &format!("payload-{name}"), &input)?;
            }
        }
        for (k, n) in [1, 3].into_iter().enumerate() {
            let (root, page) = batch_page(&provider, n)?;
            let mut input = vec![bi as u8, ZoneType::IDENTITY.0];
            input.extend_from_slice(&root.0);
            input.extend_from_slice(&page);
            write(&codec, &format!("batch-page-{k}"), &input)?;
        }
    }

    // grpc: one filled message per request type.
    let grpc = corpus("grpc")?;
    let k = poz::sample::provider_keys();
    let key = |s: &poz::SigningKey| {
        Some(pb::Hash {
            value: s.public().id().0.to_vec(),
        })
    };
    let rec = provider.to_bytes();
    let identity: Vec<Vec<u8>> = provider
        .zones
        .get(&ZoneType::IDENTITY)
        .map(|z| z.entries.iter().take(3).map(|e| e.to_bytes()).collect())
        .unwrap_or_default();
    let draft = poz::workflow::draft(&provider, provider.master.timestamp + 1_000)?.to_bytes();
    let by_domain = Some(pb::RecordRef {
        by: Some(pb::record_ref::By::Domain(DOMAIN.into())),
    });
    let hash = Some(pb::Hash {
        value: provider.id().0.to_vec(),
    });
    let msgs: Vec<(&str, Vec<u8>)> = vec![
        (
            "Verifier.VerifyRecord",
            pb::VerifyRecordRequest {
                record: rec.clone(),
                now_ms: NOW,
            }
            .encode_to_vec(),
        ),
        (
            "Verifier.VerifyUpdate",
            pb::VerifyUpdateRequest {
                head: tour.to_bytes(),
                update: tour.to_bytes(),
            }
            .encode_to_vec(),
        ),
        (
            "Verifier.VerifyEntries",
            pb::VerifyEntriesRequest {
                issuer_record: rec.clone(),
                zone_type: 1,
                entries: identity.clone(),
                now_ms: NOW,
            }
            .encode_to_vec(),
        ),
        ("Signer.ListKeys", pb::ListKeysRequest {}.encode_to_vec()),
        (
            "Signer.SignMasterDraft",
            pb::SignMasterDraftRequest {
                draft,
                key_id: key(&k.master),
            }
            .encode_to_vec(),
        ),
        (
            "Signer.SignEntry",
            pb::SignEntryRequest {
                issuer_record: rec.clone(),
                zone_type: 1,
                entry: identity.first().cloned().unwrap_or_default(),
                key_id: key(&k.device_a),
            }
            .encode_to_vec(),
        ),
        (
            "Signer.SignEntries",
            pb::SignEntriesRequest {
                issuer_record: rec.clone(),
                zone_type: 1,
                entries: identity.clone(),
                key_id: key(&k.device_b),
            }
            .encode_to_vec(),
        ),
        (
            "Signer.SignBatchRoot",
            pb::SignBatchRootRequest {
                issuer_record: rec.clone(),
                zone_type: 1,
                entries: identity.clone(),
                key_id: key(&k.device_a),
            }
            .encode_to_vec(),
        ),
        (
            "StoreRead.ListZone",
            pb::ListZoneRequest {
                record: by_domain.clone(),
                zone_type: 1,
                after: vec![0; 32],
                limit: 10,
                batch_root: vec![],
            }
            .encode_to_vec(),
        ),
        (
            "StoreRead.CheckHandles",
            pb::CheckHandlesRequest {
                record: by_domain.clone(),
                candidates: vec![pb::HandleCandidate {
                    handle: "alice".into(),
                    subject: hash.clone(),
                }],
            }
            .encode_to_vec(),
        ),
        (
            "StoreWrite.CreateRecord",
            pb::CreateRecordRequest {
                record: tour.to_bytes(),
                domains: vec!["tour.example".into()],
                idempotency_key: "k".into(),
            }
            .encode_to_vec(),
        ),
        (
            "StoreWrite.PutEntries",
            pb::PutEntriesRequest {
                record_id: hash.clone(),
                zone_type: 1,
                entries: identity.clone(),
                idempotency_key: "k".into(),
            }
            .encode_to_vec(),
        ),
        (
            "ProviderApi.IssueBinding",
            pb::IssueBindingRequest {
                handle: "alice".into(),
                subject: hash.clone(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ];
    for (i, (name, _)) in REQUESTS.iter().enumerate() {
        let filled = msgs.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone());
        let mut input = vec![i as u8];
        input.extend_from_slice(&filled.unwrap_or_default());
        write(&grpc, name, &input)?;
    }
    Ok(())
}
