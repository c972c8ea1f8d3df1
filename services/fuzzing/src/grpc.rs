//! The `grpc` target: every request message of the fleet's internal API
//! (`proto/poz/v1`), decoded from any bytes, and passed on to what the
//! services do with it where that needs no database or peer.
//!
//! - **Every request type** decodes without panicking; what decodes
//!   encodes to `encoded_len()` bytes and decodes back to an equal
//!   message (protobuf promises equality of messages, not of bytes).
//! - **Verifier** (`VerifyRecord`, `VerifyUpdate`, `VerifyEntries`): the
//!   service itself, in-process: it answers OK or a documented status
//!   (INVALID_ARGUMENT, FAILED_PRECONDITION), never INTERNAL (a panic in
//!   its verification task shows as INTERNAL).
//! - **Signer** (`ListKeys`, `SignMasterDraft`, `SignEntry`,
//!   `SignEntries`, `SignBatchRoot`): the service itself over software
//!   keys (the sample provider's) and an audit log on an empty SQLite
//!   database, so that a request passing every check is signed and then
//!   withheld (UNAVAILABLE: its audit row cannot be written). Documented
//!   statuses only; never INTERNAL.
//! - **Store and Provider API** requests need Postgres (or SQLite) and
//!   peers to be answered; their byte fields go through the `poz` calls
//!   the store and the Provider API make on them before any SQL: records
//!   ([`crate::codecs::record`]), entries ([`crate::codecs::entry`]),
//!   pool hosts, submitted binding requests, handles under both
//!   policies.

use crate::codecs::{entry, record, round_trip};
use pb::signer_server::Signer;
use pb::verifier_server::Verifier;
use poz::handle::{check_handle, HandlePolicy};
use poz_proto::v1 as pb;
use poz_signer::audit::{AuditBackend, SignatureAuditLog};
use poz_signer::keystore::SoftwareKeyStore;
use poz_signer::service::SignerService;
use poz_verifier::VerifierService;
use prost::Message;
use std::sync::{Arc, OnceLock};
use tonic::{Code, Request};

/// Decodes `data` as `M`; when it decodes, asserts that the encoding has
/// the length `encoded_len` says and decodes back to an equal message.
pub fn proto_round_trip<M: Message + Default + PartialEq>(data: &[u8]) -> Option<M> {
    let m = M::decode(data).ok()?;
    let bytes = m.encode_to_vec();
    assert!(bytes.len() == m.encoded_len(), "encoded_len disagrees");
    match M::decode(bytes.as_slice()) {
        Ok(back) => assert!(back == m, "a message re-decodes differently"),
        Err(e) => panic!("a message's own encoding does not decode: {e}"),
    }
    Some(m)
}

/// The runtime the services' handlers run on (their verification tasks
/// go to its blocking threads).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(2)
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("a tokio runtime: {e}"),
        }
    })
}

fn verifier() -> &'static VerifierService {
    static V: OnceLock<VerifierService> = OnceLock::new();
    V.get_or_init(VerifierService::default)
}

/// The signer over the sample provider's four keys, auditing into an
/// SQLite database in memory that has no audit table (opened lazily, on
/// the first signature that passed every check).
fn signer() -> &'static SignerService {
    static S: OnceLock<SignerService> = OnceLock::new();
    S.get_or_init(|| {
        let k = poz::sample::provider_keys();
        let keys = SoftwareKeyStore::new(vec![
            ("master".into(), k.master),
            ("device_a".into(), k.device_a),
            ("device_b".into(), k.device_b),
            ("zones".into(), k.zones),
        ]);
        sqlx::any::install_default_drivers();
        let pool = runtime().block_on(async {
            sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .connect_lazy("sqlite::memory:")
        });
        let pool = match pool {
            Ok(p) => p,
            Err(e) => panic!("a lazy SQLite pool: {e}"),
        };
        SignerService::new(
            Arc::new(keys),
            SignatureAuditLog::with_pool(pool, AuditBackend::Sqlite),
        )
    })
}

/// Asserts that a service answered OK or one of `allowed`.
fn answered<T>(service: &str, r: Result<tonic::Response<T>, tonic::Status>, allowed: &[Code]) {
    if let Err(s) = r {
        assert!(
            allowed.contains(&s.code()),
            "{service} answered {:?}: {}",
            s.code(),
            s.message()
        );
    }
}

const VERIFIER_CODES: &[Code] = &[Code::InvalidArgument, Code::FailedPrecondition];
const SIGNER_CODES: &[Code] = &[
    Code::InvalidArgument,
    Code::FailedPrecondition,
    Code::NotFound,
    Code::PermissionDenied,
    Code::Unavailable,
];

fn handles<'a>(hs: impl IntoIterator<Item = &'a String>) {
    for h in hs {
        for policy in [HandlePolicy::Ascii, HandlePolicy::Unicode] {
            let _ = check_handle(h, policy);
        }
    }
}

/// Decodes `d` as `M` and, when it decodes, hands it to a service's
/// handler (`call`) on the runtime; the answer must be OK or one of
/// `allowed`.
fn serve<M, T, Fut>(rpc: &str, d: &[u8], allowed: &[Code], call: impl FnOnce(Request<M>) -> Fut)
where
    M: Message + Default + PartialEq,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    if let Some(m) = proto_round_trip::<M>(d) {
        answered(rpc, runtime().block_on(call(Request::new(m))), allowed);
    }
}

/// A message with one handle: decoded, then the handle under both
/// policies.
fn one_handle<M: Message + Default + PartialEq>(d: &[u8], handle: fn(&M) -> &String) {
    if let Some(m) = proto_round_trip::<M>(d) {
        handles([handle(&m)]);
    }
}

/// A message type with nothing beyond decoding to drive.
fn decode_only<M: Message + Default + PartialEq>(d: &[u8]) {
    let _ = proto_round_trip::<M>(d);
}

/// One request type of the `grpc` target: the service and RPC, and what
/// the target does with its bytes.
pub type Rpc = (&'static str, fn(&[u8]));

/// Every request message the services decode, by service and RPC, with
/// what the target does with it once decoded. The `grpc` target's first
/// input byte (modulo the count) chooses one; the rest is its bytes.
pub const REQUESTS: &[Rpc] = &[
    // poz.v1.Verifier
    ("Verifier.VerifyRecord", |d| {
        serve("VerifyRecord", d, VERIFIER_CODES, |r| {
            verifier().verify_record(r)
        })
    }),
    ("Verifier.VerifyUpdate", |d| {
        serve("VerifyUpdate", d, VERIFIER_CODES, |r| {
            verifier().verify_update(r)
        })
    }),
    ("Verifier.VerifyEntries", |d| {
        serve("VerifyEntries", d, VERIFIER_CODES, |r| {
            verifier().verify_entries(r)
        })
    }),
    // poz.v1.Signer
    ("Signer.ListKeys", |d| {
        serve("ListKeys", d, &[], |r| signer().list_keys(r))
    }),
    ("Signer.SignMasterDraft", |d| {
        serve("SignMasterDraft", d, SIGNER_CODES, |r| {
            signer().sign_master_draft(r)
        })
    }),
    ("Signer.SignEntry", |d| {
        serve("SignEntry", d, SIGNER_CODES, |r| signer().sign_entry(r))
    }),
    ("Signer.SignEntries", |d| {
        serve("SignEntries", d, SIGNER_CODES, |r| signer().sign_entries(r))
    }),
    ("Signer.SignBatchRoot", |d| {
        serve("SignBatchRoot", d, SIGNER_CODES, |r| {
            signer().sign_batch_root(r)
        })
    }),
    // poz.v1.StoreRead
    ("StoreRead.GetMaster", decode_only::<pb::GetMasterRequest>),
    ("StoreRead.GetHead", decode_only::<pb::GetHeadRequest>),
    ("StoreRead.GetBinding", |d| {
        one_handle::<pb::GetBindingRequest>(d, |m| &m.handle)
    }),
    ("StoreRead.LookupBindings", |d| {
        if let Some(m) = proto_round_trip::<pb::LookupBindingsRequest>(d) {
            handles(m.lookups.iter().map(|l| &l.handle));
        }
    }),
    ("StoreRead.GetBindings", |d| {
        if let Some(m) = proto_round_trip::<pb::GetBindingsRequest>(d) {
            handles(&m.handles);
        }
    }),
    (
        "StoreRead.ListBindings",
        decode_only::<pb::ListStoreBindingsRequest>,
    ),
    ("StoreRead.ListZone", decode_only::<pb::ListZoneRequest>),
    (
        "StoreRead.ListBatches",
        decode_only::<pb::ListBatchesRequest>,
    ),
    (
        "StoreRead.ListHandleBindings",
        decode_only::<pb::ListHandleBindingsRequest>,
    ),
    ("StoreRead.GetMirrors", decode_only::<pb::GetMirrorsRequest>),
    ("StoreRead.GetHistory", decode_only::<pb::GetHistoryRequest>),
    (
        "StoreRead.GetSubmission",
        decode_only::<pb::GetSubmissionRequest>,
    ),
    (
        "StoreRead.ListSubmissions",
        decode_only::<pb::ListSubmissionsRequest>,
    ),
    ("StoreRead.CheckHandles", |d| {
        if let Some(m) = proto_round_trip::<pb::CheckHandlesRequest>(d) {
            handles(m.candidates.iter().map(|c| &c.handle));
        }
    }),
    // poz.v1.StoreWrite
    ("StoreWrite.CreateRecord", |d| {
        if let Some(m) = proto_round_trip::<pb::CreateRecordRequest>(d) {
            record(&m.record);
        }
    }),
    ("StoreWrite.AdvanceHead", |d| {
        if let Some(m) = proto_round_trip::<pb::AdvanceHeadRequest>(d) {
            record(&m.record);
        }
    }),
    ("StoreWrite.PutEntries", |d| {
        if let Some(m) = proto_round_trip::<pb::PutEntriesRequest>(d) {
            m.entries.iter().for_each(|e| entry(e));
        }
    }),
    (
        "StoreWrite.BindDomain",
        decode_only::<pb::BindDomainRequest>,
    ),
    ("StoreWrite.SetMirrors", |d| {
        if let Some(m) = proto_round_trip::<pb::SetMirrorsRequest>(d) {
            for h in &m.hosts {
                let _ = round_trip::<poz::entries::PoolHost>(h);
            }
        }
    }),
    ("StoreWrite.PutSubmission", |d| {
        if let Some(m) = proto_round_trip::<pb::Submission>(d) {
            let _ = round_trip::<poz::wire::SubmitRequest>(&m.request);
            if let Some(e) = &m.entry {
                entry(e);
            }
        }
    }),
    ("StoreWrite.FreeHandle", |d| {
        one_handle::<pb::FreeStoreHandleRequest>(d, |m| &m.handle)
    }),
    // poz.v1.ProviderApi
    ("ProviderApi.IssueBinding", |d| {
        one_handle::<pb::IssueBindingRequest>(d, |m| &m.handle)
    }),
    ("ProviderApi.RevokeBinding", |d| {
        one_handle::<pb::RevokeBindingRequest>(d, |m| &m.handle)
    }),
    (
        "ProviderApi.GetBinding",
        decode_only::<pb::GetProviderBindingRequest>,
    ),
    (
        "ProviderApi.ListBindings",
        decode_only::<pb::ListBindingsRequest>,
    ),
    ("ProviderApi.FreeHandle", |d| {
        one_handle::<pb::FreeHandleRequest>(d, |m| &m.handle)
    }),
    (
        "ProviderApi.GetProvider",
        decode_only::<pb::GetProviderRequest>,
    ),
    (
        "ProviderApi.ListBindingRequests",
        decode_only::<pb::ListBindingRequestsRequest>,
    ),
    (
        "ProviderApi.DecideBindingRequest",
        decode_only::<pb::DecideBindingRequestRequest>,
    ),
];

/// Any bytes as any request message: the first byte chooses one of
/// [`REQUESTS`], the rest is the message.
pub fn request(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    (REQUESTS[usize::from(which) % REQUESTS.len()].1)(rest)
}
