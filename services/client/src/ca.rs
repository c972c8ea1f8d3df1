//! POZ-as-CA (SPEC §21): a host's TLS certificate signed directly by a
//! record key (Ed25519) that the record's Service Zone names for that host
//! by `ca_key_idx`, and the rustls verifier a POZ-aware client dials with.
//!
//! Model: the record key is the issuer of the host's end-entity
//! certificate (a fresh host key, never the record key itself); the
//! verifier's trust anchor is the raw record key, not a CA certificate, so
//! whatever intermediates the server sends are ignored.

use poz::ca::{ca_keys, normalize_host};
use poz::ed25519::VerifyKey;
use poz::keys::PublicKey;
use poz::{SigningKey, VerifiedRecord};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the host name {0:?} is not a DNS name a certificate can carry")]
    HostName(String),
    #[error("the validity window is empty or out of range")]
    Validity,
    #[error("the host's public key is refused: {0}")]
    SubjectKey(String),
    #[error("the record key could not sign: {0}")]
    Sign(String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

/// Why a server certificate is refused (each maps to a rustls
/// `CertificateError` in the handshake).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    #[error("the certificate does not parse as X.509 DER")]
    Malformed,
    #[error("the server name is not a DNS name")]
    NotDnsName,
    #[error("the record names no CA key for host {0:?}")]
    NoCaKey(String),
    #[error("the certificate is not signed with Ed25519")]
    NotEd25519,
    #[error("the certificate is not signed by a CA key the record names for the host")]
    BadSignature,
    #[error("the certificate is not valid yet")]
    NotValidYet,
    #[error("the certificate has expired")]
    Expired,
    #[error("the certificate is not valid for host {0:?}")]
    WrongHost(String),
    #[error("the certificate is a CA certificate, not a server's")]
    IsCa,
    #[error("the certificate's extended key usage excludes server authentication")]
    NotServerAuth,
}

impl CaError {
    /// The refusal's code, as the vectors name it (SPEC §21).
    pub fn code(&self) -> &'static str {
        match self {
            CaError::Malformed => "malformed",
            CaError::NotDnsName => "not-dns-name",
            CaError::NoCaKey(_) => "no-ca-key",
            CaError::NotEd25519 => "not-ed25519",
            CaError::BadSignature => "bad-signature",
            CaError::NotValidYet => "not-valid-yet",
            CaError::Expired => "expired",
            CaError::WrongHost(_) => "wrong-host",
            CaError::IsCa => "is-ca",
            CaError::NotServerAuth => "not-server-auth",
        }
    }
}

impl From<CaError> for rustls::Error {
    fn from(e: CaError) -> rustls::Error {
        let ce = match e {
            CaError::Malformed => CertificateError::BadEncoding,
            CaError::NoCaKey(_) => CertificateError::UnknownIssuer,
            CaError::BadSignature | CaError::NotEd25519 => CertificateError::BadSignature,
            CaError::NotValidYet => CertificateError::NotValidYet,
            CaError::Expired => CertificateError::Expired,
            CaError::WrongHost(_) | CaError::NotDnsName => CertificateError::NotValidForName,
            CaError::IsCa | CaError::NotServerAuth => CertificateError::InvalidPurpose,
        };
        rustls::Error::InvalidCertificate(ce)
    }
}

/// A host certificate and its fresh key, DER and PEM.
pub struct HostCert {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    /// The host's private key, PKCS#8 (ECDSA P-256 from `issue_host_cert`).
    pub key_der: Vec<u8>,
    pub key_pem: String,
    /// The record key's self-signed issuer certificate (`CN=POZ CA …`):
    /// informative only, a POZ-aware client never trusts it (SPEC §21).
    pub issuer_der: Vec<u8>,
}

/// The record key as PKCS#8 v2 (RFC 8410/5958: seed and public key), the
/// form rcgen (ring) takes an Ed25519 key in.
fn ed25519_pkcs8(key: &SigningKey) -> Vec<u8> {
    let seed = key.seed();
    let public = key.verifying_key().to_bytes();
    let mut der = vec![
        0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed[..]);
    der.extend_from_slice(&[0xa1, 0x23, 0x03, 0x21, 0x00]);
    der.extend_from_slice(&public);
    der
}

/// The issuer's distinguished name: `CN=POZ CA <key ID hex>`.
pub fn issuer_name(key: &PublicKey) -> String {
    format!("POZ CA {}", hex::encode(key.id().0))
}

/// Makes a certificate for `host`, valid from `not_before` to `not_after`,
/// for a fresh ECDSA P-256 host key, signed by the record key `ca`
/// (Ed25519), with a random serial. Profile: SPEC §21.
pub fn issue_host_cert(
    ca: &SigningKey,
    host: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<HostCert, IssueError> {
    let host_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| IssueError::Generate(e.to_string()))?;
    let mut serial = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut serial);
    issue(ca, host, not_before, not_after, host_key, serial)
}

/// The same profile with an Ed25519 host key and a serial given:
/// deterministic, for test vectors (SPEC §21).
pub fn issue_host_cert_with(
    ca: &SigningKey,
    host: &str,
    not_before: SystemTime,
    not_after: SystemTime,
    host_key: &SigningKey,
    serial: [u8; 16],
) -> Result<HostCert, IssueError> {
    let host_key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls::pki_types::PrivatePkcs8KeyDer::from(ed25519_pkcs8(host_key).as_slice()),
        &rcgen::PKCS_ED25519,
    )
    .map_err(|e| IssueError::Generate(e.to_string()))?;
    issue(ca, host, not_before, not_after, host_key, serial)
}

/// A record key whose private half signs elsewhere (an HSM behind the
/// signer service): its public key, and PureEd25519 over a whole message
/// (RFC 8032; RFC 8410 for X.509), here a TBSCertificate's DER.
pub trait RemoteCaKey: Send + Sync + 'static {
    /// The record key (Ed25519).
    fn public(&self) -> &PublicKey;
    /// The 64-byte signature of `message`, or why the key store could not
    /// sign (said in [`IssueError::Sign`]).
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], String>;
}

/// rcgen's view of a [`RemoteCaKey`]. rcgen reports a remote signer's
/// failure without its text, so the text is kept in `failed`.
struct Remote {
    ca: Box<dyn RemoteCaKey>,
    failed: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl rcgen::RemoteKeyPair for Remote {
    fn public_key(&self) -> &[u8] {
        self.ca.public().bytes()
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.ca.sign(msg).map(|s| s.to_vec()).map_err(|why| {
            if let Ok(mut f) = self.failed.lock() {
                *f = Some(why);
            }
            rcgen::Error::RemoteKeyError
        })
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

/// A host's public key from its SubjectPublicKeyInfo (DER), as rcgen
/// writes it into the certificate.
struct SubjectKey {
    alg: &'static rcgen::SignatureAlgorithm,
    raw: Vec<u8>,
}

impl rcgen::PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &rcgen::SignatureAlgorithm {
        self.alg
    }
}

impl SubjectKey {
    /// Ed25519, ECDSA P-256 or P-384 keys; nothing else (SPEC §21).
    fn from_spki_der(der: &[u8]) -> Result<SubjectKey, IssueError> {
        use x509_parser::oid_registry::{
            OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
        };
        use x509_parser::x509::SubjectPublicKeyInfo;
        let bad = |why: &str| IssueError::SubjectKey(why.to_string());
        let (rest, spki) =
            SubjectPublicKeyInfo::from_der(der).map_err(|_| bad("not a SubjectPublicKeyInfo"))?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes after the SubjectPublicKeyInfo"));
        }
        let raw = spki.subject_public_key.data.to_vec();
        let alg = &spki.algorithm;
        let curve = alg.parameters.as_ref().and_then(|p| p.as_oid().ok());
        let (alg, len) = if alg.algorithm == OID_SIG_ED25519 {
            (&rcgen::PKCS_ED25519, 32)
        } else if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == Some(OID_EC_P256) {
            (&rcgen::PKCS_ECDSA_P256_SHA256, 65)
        } else if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == Some(OID_NIST_EC_P384) {
            (&rcgen::PKCS_ECDSA_P384_SHA384, 97)
        } else {
            return Err(bad("the key is not Ed25519, ECDSA P-256 or ECDSA P-384"));
        };
        if raw.len() != len || (len != 32 && raw[0] != 0x04) {
            return Err(bad("the key's length or point encoding is wrong"));
        }
        Ok(SubjectKey { alg, raw })
    }
}

/// A certificate a remote record key signed for a host's own key.
pub struct SignedHostCert {
    /// The host's end-entity certificate (DER, and PEM).
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    /// The record key's self-signed issuer certificate (informative, as
    /// in [`HostCert::issuer_der`]).
    pub issuer_der: Vec<u8>,
}

/// The SPEC §21 profile for a host key the caller already has (given as
/// its SubjectPublicKeyInfo, DER), signed by a record key held elsewhere:
/// the signer service's path, where the host's private key never leaves
/// the host. The key signs twice: the issuer certificate, then the
/// host's. Errors: [`IssueError::HostName`], [`IssueError::Validity`],
/// [`IssueError::SubjectKey`], [`IssueError::Sign`] (the key store
/// failed; its text kept), [`IssueError::Generate`].
pub fn sign_host_cert(
    ca: Box<dyn RemoteCaKey>,
    host: &str,
    not_before: SystemTime,
    not_after: SystemTime,
    subject_spki_der: &[u8],
    serial: [u8; 16],
) -> Result<SignedHostCert, IssueError> {
    let subject = SubjectKey::from_spki_der(subject_spki_der)?;
    let issuer = issuer_name(ca.public());
    let failed = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let key = rcgen::KeyPair::from_remote(Box::new(Remote {
        ca,
        failed: failed.clone(),
    }))
    .map_err(|e| IssueError::Generate(e.to_string()))?;
    profile(&key, issuer, host, not_before, not_after, &subject, serial).map_err(|e| {
        match failed.lock().ok().and_then(|mut f| f.take()) {
            Some(why) => IssueError::Sign(why),
            None => e,
        }
    })
}

fn issue(
    ca: &SigningKey,
    host: &str,
    not_before: SystemTime,
    not_after: SystemTime,
    host_key: rcgen::KeyPair,
    serial: [u8; 16],
) -> Result<HostCert, IssueError> {
    let pkcs8 = ed25519_pkcs8(ca);
    let ca_key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
        &rcgen::PKCS_ED25519,
    )
    .map_err(|e| IssueError::Generate(e.to_string()))?;
    let signed = profile(
        &ca_key,
        issuer_name(&ca.public()),
        host,
        not_before,
        not_after,
        &host_key,
        serial,
    )?;
    Ok(HostCert {
        cert_der: signed.cert_der,
        cert_pem: signed.cert_pem,
        key_der: host_key.serialize_der(),
        key_pem: host_key.serialize_pem(),
        issuer_der: signed.issuer_der,
    })
}

/// The one certificate profile (SPEC §21): issuer `CN=POZ CA <key ID>`,
/// a CA certificate constrained to path length 0, self-signed by `ca`;
/// the host's certificate: CN and one DNS SAN = the host (lower case, no
/// trailing dot; never an IP address), not a CA, digitalSignature,
/// serverAuth, an authority key identifier, the serial's top bit cleared.
fn profile(
    ca: &rcgen::KeyPair,
    issuer: String,
    host: &str,
    not_before: SystemTime,
    not_after: SystemTime,
    subject: &impl rcgen::PublicKeyData,
    mut serial: [u8; 16],
) -> Result<SignedHostCert, IssueError> {
    let host = normalize_host(host);
    if !poz::ca::is_dns_host(&host) {
        return Err(IssueError::HostName(host));
    }
    let dns =
        rcgen::Ia5String::try_from(host.clone()).map_err(|_| IssueError::HostName(host.clone()))?;
    if not_after <= not_before {
        return Err(IssueError::Validity);
    }
    let g = |e: rcgen::Error| IssueError::Generate(e.to_string());
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, issuer);
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    let ca_cert = ca_params.self_signed(ca).map_err(g)?;

    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, host.clone());
    p.subject_alt_names = vec![rcgen::SanType::DnsName(dns)];
    p.not_before = time::OffsetDateTime::from(not_before);
    p.not_after = time::OffsetDateTime::from(not_after);
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    serial[0] &= 0x7f;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = p.signed_by(subject, &ca_cert, ca).map_err(g)?;
    Ok(SignedHostCert {
        cert_der: cert.der().to_vec(),
        cert_pem: cert.pem(),
        issuer_der: ca_cert.der().to_vec(),
    })
}

/// Checks a server's end-entity certificate against the CA keys named for
/// `host`, at `now` (seconds since the epoch). The signature is checked
/// under each key; any one suffices.
pub fn check_cert(der: &[u8], host: &str, keys: &[VerifyKey], now: i64) -> Result<(), CaError> {
    let host = normalize_host(host);
    if keys.is_empty() {
        return Err(CaError::NoCaKey(host));
    }
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| CaError::Malformed)?;
    let ed = x509_parser::oid_registry::OID_SIG_ED25519;
    if cert.signature_algorithm.algorithm != ed || cert.tbs_certificate.signature.algorithm != ed {
        return Err(CaError::NotEd25519);
    }
    let sig: [u8; 64] = cert
        .signature_value
        .data
        .as_ref()
        .try_into()
        .map_err(|_| CaError::BadSignature)?;
    let tbs = cert.tbs_certificate.as_ref();
    if !keys.iter().any(|k| k.verify(tbs, &sig)) {
        return Err(CaError::BadSignature);
    }
    let v = cert.validity();
    if now < v.not_before.timestamp() {
        return Err(CaError::NotValidYet);
    }
    if now > v.not_after.timestamp() {
        return Err(CaError::Expired);
    }
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => return Err(CaError::IsCa),
        Ok(_) => {}
        Err(_) => return Err(CaError::Malformed),
    }
    match cert.extended_key_usage() {
        Ok(Some(eku)) if !(eku.value.server_auth || eku.value.any) => {
            return Err(CaError::NotServerAuth)
        }
        Ok(_) => {}
        Err(_) => return Err(CaError::Malformed),
    }
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.clone(),
        Ok(None) => Vec::new(),
        Err(_) => return Err(CaError::Malformed),
    };
    let ok = names
        .iter()
        .any(|n| matches!(n, GeneralName::DNSName(d) if normalize_host(d) == host));
    if !ok {
        return Err(CaError::WrongHost(host));
    }
    Ok(())
}

/// A rustls server-certificate verifier for POZ-as-CA: the server's
/// certificate must be signed by a record key that the (verified) record's
/// Service Zone names by `ca_key_idx` for the host name dialled, be valid
/// now and name that host in its SAN; handshake signatures are checked by
/// rustls' own helpers. The public PKI is not consulted.
#[derive(Debug)]
pub struct PozCaVerifier {
    hosts: HashMap<String, Vec<VerifyKey>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PozCaVerifier {
    /// The verifier for every host of `rec` that names a CA key.
    pub fn new(rec: &VerifiedRecord) -> Self {
        let mut hosts: HashMap<String, Vec<VerifyKey>> = HashMap::new();
        for k in ca_keys(rec) {
            if let Some(vk) = k.key.verify_key() {
                let e = hosts.entry(normalize_host(&k.hostname)).or_default();
                if !e.contains(vk) {
                    e.push(*vk);
                }
            }
        }
        PozCaVerifier {
            hosts,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    /// The CA keys this verifier accepts for `host`.
    pub fn keys_for(&self, host: &str) -> &[VerifyKey] {
        self.hosts
            .get(&normalize_host(host))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// A rustls client configuration (TLS 1.3 and 1.2) that dials with this
    /// verifier.
    pub fn client_config(self) -> Result<rustls::ClientConfig, rustls::Error> {
        let provider = self.provider.clone();
        config_with(provider, Arc::new(self))
    }

    /// This verifier, and also the public PKI: the certificate must in
    /// addition chain (through the intermediates the server sends) to one
    /// of `roots`. A POZ-signed host that also satisfies browsers sends a
    /// chain whose intermediate is a CA certificate for the record key,
    /// issued by a public CA (SPEC §21, "Both at once").
    ///
    /// # Errors
    /// `rustls::Error::General` when `roots` is empty.
    pub fn requiring_public_pki(
        self,
        roots: rustls::RootCertStore,
    ) -> Result<PozAndPkiVerifier, rustls::Error> {
        let pki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(format!("public PKI roots: {e}")))?;
        Ok(PozAndPkiVerifier { poz: self, pki })
    }
}

fn config_with(
    provider: Arc<rustls::crypto::CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// POZ-as-CA and the public PKI at once: a server certificate passes only
/// when [`PozCaVerifier`] accepts it and it also chains to the given
/// public roots. Built by [`PozCaVerifier::requiring_public_pki`].
#[derive(Debug)]
pub struct PozAndPkiVerifier {
    poz: PozCaVerifier,
    pki: Arc<rustls::client::WebPkiServerVerifier>,
}

impl PozAndPkiVerifier {
    /// A rustls client configuration (TLS 1.3 and 1.2) that dials with this
    /// verifier.
    pub fn client_config(self) -> Result<rustls::ClientConfig, rustls::Error> {
        let provider = self.poz.provider.clone();
        config_with(provider, Arc::new(self))
    }
}

impl ServerCertVerifier for PozAndPkiVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The record's word first: its refusal names the POZ rule.
        self.poz
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        self.pki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.poz.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.poz.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.poz.supported_verify_schemes()
    }
}

fn unix_secs(now: UnixTime) -> i64 {
    i64::try_from(now.as_secs()).unwrap_or(i64::MAX)
}

impl ServerCertVerifier for PozCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ServerName::DnsName(name) = server_name else {
            return Err(CaError::NotDnsName.into());
        };
        let host = name.as_ref();
        check_cert(end_entity, host, self.keys_for(host), unix_secs(now))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
