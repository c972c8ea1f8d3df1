//! A throwaway certificate authority for tests of the fleet's mutual
//! TLS: a CA and leaf certificates (serverAuth and clientAuth, a DNS SAN
//! naming the service plus the IP SAN 127.0.0.1), written as PEM files.

use poz_kit::tls::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use std::path::{Path, PathBuf};

/// A CA whose certificate is `<dir>/<name>.pem`.
pub struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
    ca_file: PathBuf,
}

impl Authority {
    /// A new CA named `name`, its certificate written into `dir`.
    pub fn new(dir: &Path, name: &str) -> Authority {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let ca_file = dir.join(format!("{name}.pem"));
        std::fs::write(&ca_file, cert.pem()).unwrap();
        Authority {
            cert,
            key,
            dir: dir.to_path_buf(),
            ca_file,
        }
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> &[u8] {
        self.cert.der()
    }

    /// Issues a certificate naming `identity` into `<file>.crt` and
    /// `<file>.key`, trusting `trust` (usually this CA's own file):
    /// the three files a service's `[tls]` takes.
    pub fn issue(&self, identity: &str, file: &str, trust: &Path) -> TlsFiles {
        self.issue_for(identity, file, trust, &["127.0.0.1".parse().unwrap()])
    }

    /// As [`issue`](Self::issue), with IP SANs `ips` instead of 127.0.0.1
    /// alone: a service reached at the address of a network namespace of
    /// its own (the fault harness, `load-tests/tests/faults`).
    pub fn issue_for(
        &self,
        identity: &str,
        file: &str,
        trust: &Path,
        ips: &[std::net::IpAddr],
    ) -> TlsFiles {
        let mut p = CertificateParams::new(vec![identity.to_string()]).unwrap();
        for ip in ips {
            p.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            self.dir.join(format!("{file}.crt")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        TlsFiles {
            cert_file: Some(c),
            key_file: Some(k),
            ca_file: Some(trust.to_path_buf()),
        }
    }
}

/// A `[tls]` table for a service's TOML configuration.
pub fn toml_table(f: &TlsFiles) -> String {
    let p = |x: &Option<PathBuf>| {
        x.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n",
        p(&f.cert_file),
        p(&f.key_file),
        p(&f.ca_file)
    )
}
