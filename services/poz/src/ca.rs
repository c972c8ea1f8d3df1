//! POZ-as-CA, the record side (SPEC §21): which record keys a record names,
//! through its Service Zone hosts' `ca_key_idx`, as the signers of a host's
//! TLS certificate. Sans-I/O: X.509 itself lives in `poz-client`.

use crate::entries::{EntryBody, NO_CA_KEY};
use crate::keys::PublicKey;
use crate::verify::VerifiedRecord;
use crate::zone::{EntryKind, KeyBinding, ZoneType};

/// One record key a Service Zone host names as its certificate's signer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaKey {
    /// The host name as the Service Zone spells it.
    pub hostname: String,
    pub port: u16,
    /// The index in the record's Public Key Map (`ca_key_idx`).
    pub key_idx: u8,
    pub key: PublicKey,
}

/// A host name as POZ-as-CA compares it: ASCII lower case, without one
/// trailing dot.
pub fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Whether `host`, as [`normalize_host`] left it (it is not normalized
/// again: `a.example..` normalized once keeps a dot and is refused), is a
/// DNS host name a POZ-as-CA certificate can carry (SPEC §21): 1..=253
/// bytes of labels of 1..=63 lower-case ASCII letters, digits and
/// hyphens, no label starting or ending with a hyphen, and not an IP
/// address (a dotted quad is refused by its all-numeric last label).
pub fn is_dns_host(host: &str) -> bool {
    let h = host;
    if h.is_empty() || h.len() > 253 || h.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    let labels: Vec<&str> = h.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    labels.iter().all(label_ok)
        && !labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

/// Every CA key the verified record names: for each live (not revoked)
/// GRANT entry of the Service Zone, each pool host whose `ca_key_idx` is not
/// `0xFF` and resolves to an Ed25519 key, in entry and pool order.
pub fn ca_keys(rec: &VerifiedRecord) -> Vec<CaKey> {
    let mut out = Vec::new();
    let Some(zone) = rec.record.zones.get(&ZoneType::SERVICE) else {
        return out;
    };
    for e in &zone.entries {
        if e.kind != EntryKind::GRANT {
            continue;
        }
        let Ok(body) = EntryBody::decode(ZoneType::SERVICE, e.kind, &e.body) else {
            continue;
        };
        let Ok(kb) = KeyBinding::resolve(&body, &rec.record.keys) else {
            continue;
        };
        if rec.is_revoked(&e.digest(&rec.id, ZoneType::SERVICE, &kb)) {
            continue;
        }
        let EntryBody::Service(s) = body else {
            continue;
        };
        for h in s.pool {
            if h.ca_key_idx == NO_CA_KEY {
                continue;
            }
            let Some(key) = rec.record.keys.get(h.ca_key_idx) else {
                continue;
            };
            if key.verify_key().is_none() {
                continue;
            }
            out.push(CaKey {
                hostname: h.hostname,
                port: h.port,
                key_idx: h.ca_key_idx,
                key: key.clone(),
            });
        }
    }
    out
}

/// The CA keys the verified record names for `host` (any port), compared
/// as [`normalize_host`] does.
pub fn ca_keys_for_host(rec: &VerifiedRecord, host: &str) -> Vec<CaKey> {
    let want = normalize_host(host);
    ca_keys(rec)
        .into_iter()
        .filter(|k| normalize_host(&k.hostname) == want)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    #[test]
    fn the_sample_provider_names_key_0_for_two_tls_hosts() {
        let Ok(rec) = sample::provider() else {
            panic!("sample")
        };
        let Ok(vr) = crate::verify::verify_and_accept(rec) else {
            panic!("valid")
        };
        let named: Vec<(String, u8)> = ca_keys(&vr)
            .into_iter()
            .map(|k| (k.hostname, k.key_idx))
            .collect();
        assert_eq!(
            named,
            vec![
                ("mx.social.example".to_owned(), 0),
                ("revoke.social.example".to_owned(), 0)
            ]
        );
        let k = ca_keys_for_host(&vr, "Revoke.Social.Example.");
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].key, sample::key(10).public());
        assert!(ca_keys_for_host(&vr, "q1.social.example").is_empty());
    }

    #[test]
    fn dns_hosts_are_told_from_other_names() {
        for ok in [
            "revoke.social.example",
            "Revoke.Social.Example.",
            "a-b.example",
            "localhost",
        ] {
            assert!(is_dns_host(&normalize_host(ok)), "{ok}");
        }
        // Upper case is for normalize_host to fold, once.
        assert!(!is_dns_host("Revoke.social.example"));
        for bad in [
            "",
            ".",
            "revoke.social.example..",
            "a..b",
            "127.0.0.1",
            "::1",
            "-a.example",
            "a-.example",
            "*.example",
            "a b.example",
            "é.example",
            "host.123",
        ] {
            assert!(!is_dns_host(&normalize_host(bad)), "{bad}");
        }
    }
}
