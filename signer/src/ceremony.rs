//! The provider ceremony: a provider's own POZ record made with keys that
//! never leave the HSM.
//!
//! From a reviewable plan (a TOML file, [`CeremonyPlan`]) it builds, with
//! every signature made inside the key store:
//!
//! 1. the genesis master zone, holding the plan's master keys (any
//!    `master_threshold` of them authorize a later revision), signed by
//!    all of them;
//! 2. serial 2, delegating the identity zone to the identity keys and the
//!    service zone to the service keys (each key alone meets the
//!    threshold, so a second key is a second HSM, not a second signer),
//!    signed by the master keys;
//! 3. the identity zone's authority section (namespace = the domain) and
//!    the service zone's, signed by their delegation keys;
//! 4. the service zone's POZ_QUERY and POZ_SUBMIT services with the
//!    fleet's gateways. Each Noise host gets a fresh X25519 static key: its
//!    public half goes into the record, its secret to the gateway (it is a
//!    transport key the gateway must hold, not a record key).
//!
//! The result is verified from genesis before it is returned. Every
//! signature is listed in [`Ceremony::signatures`] for the audit log.

use crate::keystore::{HeldKey, KeyStore};
use poz::entries::{Encryption, PoolHost, ServiceEntry, ServiceType, Transport, NO_CA_KEY};
use poz::keys::KeyId;
use poz::noise::StaticKeypair;
use poz::workflow::{self, DigestSigner, GenesisKey};
use poz::zone::{EntryKind, SignedEntry, ZoneType};
use poz::{Codec, Hash32, Record};
use serde::Deserialize;
use std::sync::Mutex;

/// What the ceremony makes. Key fields name key-store labels.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct CeremonyPlan {
    /// The provider's domain: the identity namespace (handles are
    /// `handle@domain`).
    pub domain: String,
    /// Genesis time in ms since the epoch; 0 = now. Serial 2 and the
    /// sections follow 1 and 2 ms later.
    #[serde(default)]
    pub timestamp_ms: u64,
    /// Master keys (labels), 1 to 100.
    pub master_keys: Vec<String>,
    /// How many master keys authorize a revision, 1..=master_keys.len().
    pub master_threshold: usize,
    /// Identity delegation keys: each alone signs a binding.
    pub identity_keys: Vec<String>,
    /// Service zone delegation keys: each alone signs a service entry.
    pub service_keys: Vec<String>,
    /// The query gateways (7074 plain, 7075 Noise NK).
    #[serde(default)]
    pub query_hosts: Vec<HostPlan>,
    /// The submit gateways (7076, Noise NK).
    #[serde(default)]
    pub submit_hosts: Vec<HostPlan>,
    /// The provider's HTTPS hosts (TLS; e.g. the domain's web server that
    /// serves `/.well-known/poz`, SPEC §18), one HTTPS service entry named
    /// "web". A host with `ca_key` gets its TLS certificate from the
    /// signer (POZ-as-CA, SPEC §21).
    #[serde(default)]
    pub https_hosts: Vec<HostPlan>,
}

/// One gateway in a service's pool.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct HostPlan {
    pub hostname: String,
    pub port: u16,
    /// Noise NK (a static key is generated for the host); else plain.
    #[serde(default)]
    pub noise: bool,
    #[serde(default = "default_priority")]
    pub priority: u16,
    #[serde(default = "default_weight")]
    pub weight: u16,
    /// The label of one of the plan's keys that signs this host's TLS
    /// certificate (POZ-as-CA, SPEC §21): the host's `ca_key_idx` names
    /// it; `poz-signer`'s SignCertificate then signs for the host. None:
    /// `0xFF`.
    #[serde(default)]
    pub ca_key: Option<String>,
}

fn default_priority() -> u16 {
    10
}

fn default_weight() -> u16 {
    100
}

/// Why the ceremony stopped. Nothing is written when it fails.
#[derive(Debug, thiserror::Error)]
pub enum CeremonyError {
    #[error("plan: {0}")]
    Plan(String),
    #[error("the key store holds no key labelled {0:?}")]
    MissingKey(String),
    // Transparent: its message is the workflow error's own, and a chain
    // printer (anyhow's `{:#}`) says it once.
    #[error(transparent)]
    Workflow(#[from] poz::Error),
    #[error("the finished record does not verify: {0}")]
    DoesNotVerify(String),
}

/// One signature made during the ceremony.
#[derive(Clone, Debug)]
pub struct CeremonySignature {
    pub key_id: KeyId,
    /// "genesis", "master-draft", "authority", "entry".
    pub what: &'static str,
    pub zone_type: u8,
    pub digest: Hash32,
    pub signature: [u8; 64],
}

/// The ceremony's outcome.
pub struct Ceremony {
    /// The provider's record (serial 2, final, verified).
    pub record: Record,
    /// The Noise static key of each Noise host, by (hostname, port).
    pub noise_keys: Vec<(String, u16, StaticKeypair)>,
    /// Every signature made, in order.
    pub signatures: Vec<CeremonySignature>,
}

/// A held key as a [`DigestSigner`]; logs each signature it makes.
struct HeldSigner<'a> {
    store: &'a dyn KeyStore,
    key: HeldKey,
    what: &'static str,
    zone_type: u8,
    log: &'a Mutex<Vec<CeremonySignature>>,
}

impl DigestSigner for HeldSigner<'_> {
    fn key_id(&self) -> KeyId {
        self.key.public.id()
    }

    fn sign_digest(&self, digest: &Hash32) -> Result<[u8; 64], poz::Error> {
        let signature =
            self.store
                .sign(&self.key_id(), digest)
                .map_err(|e| poz::Error::Signer {
                    key_id: self.key_id(),
                    detail: e.to_string(),
                })?;
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(CeremonySignature {
                key_id: self.key_id(),
                what: self.what,
                zone_type: self.zone_type,
                digest: *digest,
                signature,
            });
        Ok(signature)
    }
}

impl CeremonyPlan {
    /// The plan's own consistency, before any key is touched.
    pub fn check(&self) -> Result<(), CeremonyError> {
        let bad = |m: String| Err(CeremonyError::Plan(m));
        if self.domain.is_empty() || self.domain.len() > 253 || !self.domain.contains('.') {
            return bad(format!("domain {:?} is not a domain name", self.domain));
        }
        let n = self.master_keys.len();
        if n == 0 || n > 100 {
            return bad(format!("master_keys: {n} keys; 1 to 100"));
        }
        if self.master_threshold == 0 || self.master_threshold > n {
            return bad(format!(
                "master_threshold {} is not 1..={n}",
                self.master_threshold
            ));
        }
        if self.identity_keys.is_empty() {
            return bad("identity_keys: at least one".into());
        }
        if self.service_keys.is_empty() {
            return bad("service_keys: at least one".into());
        }
        let mut labels: Vec<&String> = self.master_keys.iter().collect();
        labels.extend(&self.identity_keys);
        labels.extend(&self.service_keys);
        let mut sorted = labels.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != labels.len() {
            return bad("a key label is listed twice; give each role its own keys".into());
        }
        for h in self
            .query_hosts
            .iter()
            .chain(&self.submit_hosts)
            .chain(&self.https_hosts)
        {
            if h.hostname.is_empty() || h.port == 0 {
                return bad(format!(
                    "host {:?}:{}: name and port needed",
                    h.hostname, h.port
                ));
            }
            if let Some(ca) = &h.ca_key {
                if !labels.contains(&ca) {
                    return bad(format!(
                        "host {:?}: ca_key {ca:?} is none of the plan's keys (the record names its CA keys by index in its key map)",
                        h.hostname
                    ));
                }
                if !poz::ca::is_dns_host(&h.hostname) {
                    return bad(format!(
                        "host {:?}: a certificate names a DNS host name, not an IP address",
                        h.hostname
                    ));
                }
            }
        }
        if self.https_hosts.iter().any(|h| h.noise) {
            return bad("https_hosts: TLS hosts (noise = false)".into());
        }
        if self.submit_hosts.iter().any(|h| !h.noise) {
            return bad("submit_hosts: submissions are Noise NK only (noise = true)".into());
        }
        Ok(())
    }

    /// Every label the plan uses.
    pub fn labels(&self) -> Vec<String> {
        self.master_keys
            .iter()
            .chain(&self.identity_keys)
            .chain(&self.service_keys)
            .cloned()
            .collect()
    }
}

/// Runs the ceremony with `store`'s keys. CPU and HSM work: blocking.
pub fn run(
    store: &dyn KeyStore,
    plan: &CeremonyPlan,
    now_ms: u64,
) -> Result<Ceremony, CeremonyError> {
    plan.check()?;
    let held = |label: &String| {
        store
            .keys()
            .iter()
            .find(|k| &k.label == label)
            .cloned()
            .ok_or_else(|| CeremonyError::MissingKey(label.clone()))
    };
    let masters = plan
        .master_keys
        .iter()
        .map(held)
        .collect::<Result<Vec<_>, _>>()?;
    let identity = plan
        .identity_keys
        .iter()
        .map(held)
        .collect::<Result<Vec<_>, _>>()?;
    let service = plan
        .service_keys
        .iter()
        .map(held)
        .collect::<Result<Vec<_>, _>>()?;
    let log = Mutex::new(Vec::new());
    let signer = |key: &HeldKey, what: &'static str, zone: u8| HeldSigner {
        store,
        key: key.clone(),
        what,
        zone_type: zone,
        log: &log,
    };
    let t0 = if plan.timestamp_ms == 0 {
        now_ms
    } else {
        plan.timestamp_ms
    };

    // 1. Genesis: any `master_threshold` keys reach 100 together.
    let value = 100u32.div_ceil(plan.master_threshold as u32) as u8;
    let genesis_keys: Vec<GenesisKey> = masters
        .iter()
        .map(|k| GenesisKey {
            public: k.public.clone(),
            group: 0,
            value,
        })
        .collect();
    let mut rec = workflow::genesis(&genesis_keys, t0)?;
    for k in &masters {
        workflow::sign_draft_with(&mut rec, &signer(k, "genesis", 0))?;
    }
    workflow::apply(&mut rec)?;

    // 2. Serial 2: the identity and service delegations.
    let mut rec = workflow::draft(&rec, t0 + 1)?;
    for k in &identity {
        workflow::set_delegation_key(&mut rec, ZoneType::IDENTITY, k.public.clone(), 0, 100, 100)?;
    }
    for k in &service {
        workflow::set_delegation_key(&mut rec, ZoneType::SERVICE, k.public.clone(), 0, 100, 100)?;
    }
    for k in &masters {
        workflow::sign_draft_with(&mut rec, &signer(k, "master-draft", 0))?;
    }
    workflow::apply(&mut rec)?;

    // 3. Authority sections.
    let t = t0 + 2;
    let identity_signers: Vec<HeldSigner> = identity
        .iter()
        .map(|k| signer(k, "authority", ZoneType::IDENTITY.0))
        .collect();
    let refs: Vec<&dyn DigestSigner> = identity_signers.iter().map(|s| s as _).collect();
    workflow::set_authority_with(
        &mut rec,
        ZoneType::IDENTITY,
        &plan.domain,
        Hash32::ZERO,
        t,
        &refs,
    )?;
    let service_signers: Vec<HeldSigner> = service
        .iter()
        .map(|k| signer(k, "authority", ZoneType::SERVICE.0))
        .collect();
    let refs: Vec<&dyn DigestSigner> = service_signers.iter().map(|s| s as _).collect();
    workflow::set_authority_with(&mut rec, ZoneType::SERVICE, "", Hash32::ZERO, t, &refs)?;

    // 4. The gateways, with a Noise key per Noise host; HTTPS hosts may
    // name a CA key by its index in the key map.
    let mut key_idx = std::collections::HashMap::new();
    for k in masters.iter().chain(&identity).chain(&service) {
        if let Some(i) = rec.keys.index_of(&k.public.id()) {
            key_idx.insert(k.label.clone(), i);
        }
    }
    let ca_key_idx = |h: &HostPlan| -> Result<u8, CeremonyError> {
        match &h.ca_key {
            None => Ok(NO_CA_KEY),
            Some(label) => key_idx.get(label).copied().ok_or_else(|| {
                CeremonyError::Plan(format!("ca_key {label:?} is not in the record's key map"))
            }),
        }
    };
    let mut noise_keys = Vec::new();
    let mut pool = |hosts: &[HostPlan], tls: bool| -> Result<Vec<PoolHost>, CeremonyError> {
        hosts
            .iter()
            .map(|h| {
                let server_key = h.noise.then(|| {
                    let kp = StaticKeypair::generate();
                    let public = kp.public;
                    noise_keys.push((h.hostname.clone(), h.port, kp));
                    public
                });
                Ok(PoolHost {
                    hostname: h.hostname.clone(),
                    port: h.port,
                    transport: Transport::TCP,
                    encryption: if h.noise {
                        Encryption::NOISE_NK
                    } else if tls {
                        Encryption::TLS
                    } else {
                        Encryption::NONE
                    },
                    server_key,
                    ca_key_idx: ca_key_idx(h)?,
                    priority: h.priority,
                    weight: h.weight,
                })
            })
            .collect()
    };
    let services = [
        (
            ServiceType::POZ_QUERY,
            "lookup",
            pool(&plan.query_hosts, false)?,
        ),
        (
            ServiceType::POZ_SUBMIT,
            "submit",
            pool(&plan.submit_hosts, false)?,
        ),
        (ServiceType::HTTPS, "web", pool(&plan.https_hosts, true)?),
    ];
    for (service_type, name, hosts) in services {
        if hosts.is_empty() {
            continue;
        }
        let body = ServiceEntry {
            service_type,
            name: name.into(),
            pool: hosts,
        };
        let mut e = SignedEntry::new(EntryKind::GRANT, body.to_bytes());
        // One service key meets the threshold; the first signs.
        workflow::sign_entry_with(
            &rec,
            ZoneType::SERVICE,
            &mut e,
            &signer(&service[0], "entry", ZoneType::SERVICE.0),
        )?;
        workflow::insert_entry(&mut rec, ZoneType::SERVICE, e)?;
    }

    let report = poz::verify_record(&rec);
    if !report.is_valid() || !report.is_complete() {
        let f: Vec<String> = report
            .failures()
            .map(|(r, d)| format!("{r}: {d}"))
            .collect();
        return Err(CeremonyError::DoesNotVerify(f.join("; ")));
    }
    drop(identity_signers);
    drop(service_signers);
    Ok(Ceremony {
        record: rec,
        noise_keys,
        signatures: log.into_inner().unwrap_or_else(|p| p.into_inner()),
    })
}
