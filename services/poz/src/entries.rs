//! The typed bodies of zone entries, one per zone type, and revocations.

use crate::codec::{
    read_sorted_list, read_str8, valid_str8, write_str8, Codec, DecodeError, Reader,
};
use crate::hash::{tag, tagged_hash, Hash32};
use crate::wire_enum;
use crate::Error;
use serde::Serialize;

pub use crate::handle::MAX_HANDLE;
pub use crate::types::RevocationReason;

/// Identity Zone entry: a signed link from a provider's record to a user's.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct IdentityBinding {
    /// The provider's record ID (original master hash); its identity
    /// delegation keys sign the binding.
    pub issuer: Hash32,
    /// The user's record ID.
    pub subject: Hash32,
    /// The handle, as issued, within the issuer's namespace.
    pub handle: String,
    /// Milliseconds since the Unix epoch.
    pub issued_at: u64,
    /// Milliseconds since the Unix epoch; 0 means no expiry.
    pub expires_at: u64,
}

impl IdentityBinding {
    pub fn new(
        issuer: Hash32,
        subject: Hash32,
        handle: &str,
        issued_at: u64,
        expires_at: u64,
    ) -> Result<Self, Error> {
        if let Some(reason) = crate::handle::handle_rule_broken(handle) {
            return Err(Error::InvalidHandle { reason });
        }
        if !valid_str8(handle) {
            return Err(Error::InvalidText { field: "handle" });
        }
        if expires_at != 0 && expires_at <= issued_at {
            return Err(Error::InvalidExpiry);
        }
        Ok(IdentityBinding {
            issuer,
            subject,
            handle: handle.to_owned(),
            issued_at,
            expires_at,
        })
    }

    /// Whether the binding is outside its validity at `now` (ms).
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at != 0 && now >= self.expires_at
    }
}

impl Codec for IdentityBinding {
    fn encode(&self, out: &mut Vec<u8>) {
        self.issuer.encode(out);
        self.subject.encode(out);
        write_str8(out, &self.handle);
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let issuer = Hash32::read(r)?;
        let subject = Hash32::read(r)?;
        let at = r.offset();
        let handle = read_str8(r, "binding.handle")?;
        if let Some(reason) = crate::handle::handle_rule_broken(&handle) {
            return Err(DecodeError::Layout {
                field: "binding.handle",
                offset: at,
                reason,
            });
        }
        let issued_at = r.u64("binding.issued_at")?;
        let expires_at = r.u64("binding.expires_at")?;
        if expires_at != 0 && expires_at <= issued_at {
            return Err(DecodeError::InvalidValue {
                field: "binding.expires_at",
                offset: r.offset() - 8,
                value: expires_at,
            });
        }
        Ok(IdentityBinding {
            issuer,
            subject,
            handle,
            issued_at,
            expires_at,
        })
    }
}

/// A revocation (entry kind REVOKE) of an earlier entry of the same zone,
/// signed under the deny threshold.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Revocation {
    /// The revoked entry's digest (`SignedEntry::digest`).
    pub target: Hash32,
    pub revoked_at: u64,
    pub reason: RevocationReason,
}

impl Codec for Revocation {
    fn encode(&self, out: &mut Vec<u8>) {
        self.target.encode(out);
        out.extend_from_slice(&self.revoked_at.to_be_bytes());
        out.push(self.reason.0);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let target = Hash32::read(r)?;
        let revoked_at = r.u64("revocation.revoked_at")?;
        let at = r.offset();
        let reason = RevocationReason(r.u8("revocation.reason")?);
        if !reason.is_known() {
            return Err(DecodeError::InvalidValue {
                field: "revocation.reason",
                offset: at,
                value: reason.0 as u64,
            });
        }
        Ok(Revocation {
            target,
            revoked_at,
            reason,
        })
    }
}

/// Email Zone entry: an inbox addressed by GUID, delivered by a MAIL service.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Inbox {
    pub guid: [u8; 16],
    pub name: String,
    /// Hash of a MAIL service in the Service Zone.
    pub mail_service: Hash32,
}

impl Codec for Inbox {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.guid);
        write_str8(out, &self.name);
        self.mail_service.encode(out);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Inbox {
            guid: r.array::<16>("inbox.guid")?,
            name: read_str8(r, "inbox.name")?,
            mail_service: Hash32::read(r)?,
        })
    }
}

/// One member of an Auth Zone trust group.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TrustMember {
    pub key_idx: u8,
    pub value: u8,
}

impl Codec for TrustMember {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.key_idx, self.value]);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let key_idx = r.u8("trust_member.key_idx")?;
        let value = r.u8("trust_member.value")?;
        if value == 0 || value > 100 {
            return Err(r.invalid("trust_member.value", value as u64));
        }
        Ok(TrustMember { key_idx, value })
    }
}

wire_enum! {
    /// The two kinds of Auth Zone entry.
    AuthEntryType(u8) {
        TRUST_GROUP = 0x01 => "trust-group",
        REVOCATION_SERVICE = 0x02 => "revocation-service",
    }
}

/// Auth Zone entry.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AuthEntry {
    /// Keys that may log in on the record's behalf: members' values sum to
    /// at least 100 for a login to be accepted.
    TrustGroup {
        group_id: u8,
        name: String,
        members: Vec<TrustMember>,
    },
    /// Where relying parties check a key's revocation in real time: the
    /// hash of a REVOCATION service in the Service Zone.
    RevocationService { service: Hash32 },
}

impl Codec for AuthEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            AuthEntry::TrustGroup {
                group_id,
                name,
                members,
            } => {
                out.push(AuthEntryType::TRUST_GROUP.0);
                out.push(*group_id);
                write_str8(out, name);
                out.push(members.len() as u8);
                for m in members {
                    m.encode(out);
                }
            }
            AuthEntry::RevocationService { service } => {
                out.push(AuthEntryType::REVOCATION_SERVICE.0);
                service.encode(out);
            }
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.offset();
        match AuthEntryType(r.u8("auth_entry.type")?) {
            AuthEntryType::TRUST_GROUP => {
                let group_id = r.u8("trust_group.group_id")?;
                let name = read_str8(r, "trust_group.name")?;
                let n = r.u8("trust_group.member_count")? as usize;
                let members =
                    read_sorted_list(r, n, "trust_group.members", |m: &TrustMember| m.key_idx)?;
                Ok(AuthEntry::TrustGroup {
                    group_id,
                    name,
                    members,
                })
            }
            AuthEntryType::REVOCATION_SERVICE => Ok(AuthEntry::RevocationService {
                service: Hash32::read(r)?,
            }),
            other => Err(DecodeError::InvalidValue {
                field: "auth_entry.type",
                offset: at,
                value: other.0 as u64,
            }),
        }
    }
}

wire_enum! {
    /// What a service is for.
    ServiceType(u8) {
        POZ_QUERY = 0x01 => "poz_query",
        POZ_SUBMIT = 0x02 => "poz_submit",
        HTTPS = 0x03 => "https",
        MAIL = 0x04 => "mail",
        FEED = 0x05 => "feed",
        REVOCATION = 0x06 => "revocation",
        CUSTOM = 0x07 => "custom",
    }
}

wire_enum! {
    Transport(u8) {
        TCP = 0x01 => "tcp",
        UDP = 0x02 => "udp",
    }
}

wire_enum! {
    Encryption(u8) {
        NONE = 0x00 => "none",
        TLS = 0x01 => "tls",
        NOISE_NK = 0x02 => "noise_nk",
    }
}

/// "No CA key": the host's TLS certificate chains to the public PKI only.
pub const NO_CA_KEY: u8 = 0xFF;

/// One host of a service pool.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PoolHost {
    pub hostname: String,
    pub port: u16,
    pub transport: Transport,
    pub encryption: Encryption,
    /// The host's own X25519 static key (Noise NK), when it has one: fleet
    /// servers do, because the record's master keys stay in the HSM.
    pub server_key: Option<[u8; 32]>,
    /// Index of the record key that signed the host's TLS certificate, or
    /// `NO_CA_KEY`.
    pub ca_key_idx: u8,
    /// MX-style: lower is tried first.
    pub priority: u16,
    /// MX-style: share among hosts of equal priority.
    pub weight: u16,
}

/// Why a host spec (`PoolHost::from_spec`) is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostSpecError {
    #[error(
        "{0:?}: expected HOST:PORT[:ENCRYPTION[:SERVER_KEY_HEX]][@PRIORITY/WEIGHT][#CA_KEY_IDX]"
    )]
    Shape(String),
    #[error("{0:?}: the port is 1..=65535")]
    Port(String),
    #[error("{0:?}: encryption is none, tls or noise_nk")]
    Encryption(String),
    #[error("{0:?}: the server key is 64 hex digits")]
    ServerKey(String),
    #[error("{0:?}: @PRIORITY/WEIGHT, each 0..=65535")]
    PriorityWeight(String),
    #[error("{0:?}: the host name is 1..=255 bytes")]
    Hostname(String),
    #[error("{0:?}: #CA_KEY_IDX is a key index 0..=254 (the record key that signs this host's TLS certificate, SPEC §21)")]
    CaKeyIdx(String),
}

impl PoolHost {
    /// A TCP host from its command-line spec,
    /// `HOST:PORT[:ENCRYPTION[:SERVER_KEY_HEX]][@PRIORITY/WEIGHT][#CA_KEY_IDX]`
    /// (ENCRYPTION none, tls or noise_nk; priority 10 and weight 100 when
    /// not given; CA_KEY_IDX the index of the record key that signs the
    /// host's TLS certificate, SPEC §8.7 and §21, none when not given), as
    /// pozctl and the operators' tools take it.
    pub fn from_spec(spec: &str) -> Result<PoolHost, HostSpecError> {
        let err = |f: fn(String) -> HostSpecError| f(spec.to_owned());
        let (spec_host, ca_key_idx) = match spec.rsplit_once('#') {
            Some((h, idx)) => (
                h,
                idx.parse::<u8>()
                    .ok()
                    .filter(|i| *i != NO_CA_KEY)
                    .ok_or_else(|| err(HostSpecError::CaKeyIdx))?,
            ),
            None => (spec, NO_CA_KEY),
        };
        let (addr, prio) = match spec_host.split_once('@') {
            Some((a, p)) => (a, Some(p)),
            None => (spec_host, None),
        };
        let parts: Vec<&str> = addr.split(':').collect();
        if parts.len() < 2 || parts.len() > 4 {
            return Err(err(HostSpecError::Shape));
        }
        if parts[0].is_empty() || parts[0].len() > 255 {
            return Err(err(HostSpecError::Hostname));
        }
        let port: u16 = parts[1]
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| err(HostSpecError::Port))?;
        let encryption = match parts.get(2) {
            Some(e) => Encryption::from_name(e).ok_or_else(|| err(HostSpecError::Encryption))?,
            None => Encryption::NONE,
        };
        let server_key = match parts.get(3) {
            Some(k) => Some(
                hex::decode(k)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                    .ok_or_else(|| err(HostSpecError::ServerKey))?,
            ),
            None => None,
        };
        let (priority, weight) = match prio {
            Some(p) => p
                .split_once('/')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .ok_or_else(|| err(HostSpecError::PriorityWeight))?,
            None => (10, 100),
        };
        Ok(PoolHost {
            hostname: parts[0].to_owned(),
            port,
            transport: Transport::TCP,
            encryption,
            server_key,
            ca_key_idx,
            priority,
            weight,
        })
    }
}

impl Codec for PoolHost {
    fn encode(&self, out: &mut Vec<u8>) {
        write_str8(out, &self.hostname);
        out.extend_from_slice(&self.port.to_be_bytes());
        out.push(self.transport.0);
        out.push(self.encryption.0);
        match &self.server_key {
            Some(k) => {
                out.push(1);
                out.extend_from_slice(k);
            }
            None => out.push(0),
        }
        out.push(self.ca_key_idx);
        out.extend_from_slice(&self.priority.to_be_bytes());
        out.extend_from_slice(&self.weight.to_be_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let hostname = read_str8(r, "pool_host.hostname")?;
        if hostname.is_empty() {
            return Err(r.layout("pool_host.hostname", "empty hostname"));
        }
        let port = r.u16("pool_host.port")?;
        if port == 0 {
            return Err(r.invalid("pool_host.port", 0));
        }
        let transport = Transport(r.u8("pool_host.transport")?);
        if !transport.is_known() {
            return Err(r.invalid("pool_host.transport", transport.0 as u64));
        }
        let encryption = Encryption(r.u8("pool_host.encryption")?);
        if !encryption.is_known() {
            return Err(r.invalid("pool_host.encryption", encryption.0 as u64));
        }
        let server_key = match r.u8("pool_host.server_key_present")? {
            0 => None,
            1 => Some(r.array::<32>("pool_host.server_key")?),
            v => return Err(r.invalid("pool_host.server_key_present", v as u64)),
        };
        let ca_key_idx = r.u8("pool_host.ca_key_idx")?;
        let priority = r.u16("pool_host.priority")?;
        let weight = r.u16("pool_host.weight")?;
        Ok(PoolHost {
            hostname,
            port,
            transport,
            encryption,
            server_key,
            ca_key_idx,
            priority,
            weight,
        })
    }
}

/// Service Zone entry.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ServiceEntry {
    pub service_type: ServiceType,
    pub name: String,
    pub pool: Vec<PoolHost>,
}

impl ServiceEntry {
    /// The handle other zones use for this service. It covers the whole
    /// entry, so changing a host changes the hash and every reference to it
    /// must be re-signed: a provider cannot quietly swap servers.
    pub fn service_hash(&self) -> Hash32 {
        tagged_hash(tag::SERVICE_HASH, &[&self.to_bytes()])
    }

    /// Hosts in the order a client tries them: by priority, then weight
    /// (heaviest first) as a deterministic stand-in for weighted choice.
    pub fn hosts_by_preference(&self) -> Vec<&PoolHost> {
        let mut v: Vec<&PoolHost> = self.pool.iter().collect();
        v.sort_by_key(|h| (h.priority, std::cmp::Reverse(h.weight)));
        v
    }
}

/// A pool of up to 255 hosts; at least one.
impl Codec for ServiceEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.service_type.0);
        write_str8(out, &self.name);
        out.push(self.pool.len() as u8);
        for h in &self.pool {
            h.encode(out);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let service_type = ServiceType(r.u8("service.type")?);
        if !service_type.is_known() {
            return Err(r.invalid("service.type", service_type.0 as u64));
        }
        let name = read_str8(r, "service.name")?;
        let n = r.u8("service.pool_count")? as usize;
        if n == 0 {
            return Err(r.layout("service.pool", "a service needs at least one host"));
        }
        // Hosts keep the order their author gave (it carries no meaning
        // beyond presentation) but may not repeat.
        let mut pool: Vec<PoolHost> = Vec::with_capacity(n.min(r.left()));
        for _ in 0..n {
            let at = r.offset();
            let h = PoolHost::read(r)?;
            if pool
                .iter()
                .any(|p| p.hostname == h.hostname && p.port == h.port)
            {
                return Err(DecodeError::Layout {
                    field: "service.pool",
                    offset: at,
                    reason: "duplicate host",
                });
            }
            pool.push(h);
        }
        Ok(ServiceEntry {
            service_type,
            name,
            pool,
        })
    }
}

/// Feed Zone entry: a named feed published through a FEED service.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FeedEntry {
    pub name: String,
    pub feed_service: Hash32,
}

impl Codec for FeedEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        write_str8(out, &self.name);
        self.feed_service.encode(out);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(FeedEntry {
            name: read_str8(r, "feed.name")?,
            feed_service: Hash32::read(r)?,
        })
    }
}

/// A decoded zone-entry body.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum EntryBody {
    Binding(IdentityBinding),
    Feed(FeedEntry),
    Inbox(Inbox),
    Auth(AuthEntry),
    Service(ServiceEntry),
    Revocation(Revocation),
}

impl EntryBody {
    /// The Public Key Map indices this body names, in field order: each
    /// pool host's `ca_key_idx` (when not `NO_CA_KEY`), each trust-group
    /// member's `key_idx`. Every other body names no key. These are the
    /// indices an entry's digest binds by key ID (SPEC §5.3).
    pub fn key_refs(&self) -> Vec<u8> {
        match self {
            EntryBody::Service(s) => s
                .pool
                .iter()
                .filter(|h| h.ca_key_idx != NO_CA_KEY)
                .map(|h| h.ca_key_idx)
                .collect(),
            EntryBody::Auth(AuthEntry::TrustGroup { members, .. }) => {
                members.iter().map(|m| m.key_idx).collect()
            }
            EntryBody::Binding(_)
            | EntryBody::Feed(_)
            | EntryBody::Inbox(_)
            | EntryBody::Auth(AuthEntry::RevocationService { .. })
            | EntryBody::Revocation(_) => Vec::new(),
        }
    }

    /// Decodes `body` as the type its zone and kind say it is.
    pub fn decode(
        zone: crate::types::ZoneType,
        kind: crate::types::EntryKind,
        body: &[u8],
    ) -> Result<EntryBody, DecodeError> {
        use crate::types::{EntryKind, ZoneType};
        if kind == EntryKind::REVOKE {
            return Revocation::from_bytes(body).map(EntryBody::Revocation);
        }
        match zone {
            ZoneType::IDENTITY => IdentityBinding::from_bytes(body).map(EntryBody::Binding),
            ZoneType::FEED => FeedEntry::from_bytes(body).map(EntryBody::Feed),
            ZoneType::EMAIL => Inbox::from_bytes(body).map(EntryBody::Inbox),
            ZoneType::AUTH => AuthEntry::from_bytes(body).map(EntryBody::Auth),
            ZoneType::SERVICE => ServiceEntry::from_bytes(body).map(EntryBody::Service),
            other => Err(DecodeError::InvalidValue {
                field: "entry.zone_type",
                offset: 0,
                value: other.0 as u64,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_specs_parse_or_say_what_is_wrong() {
        let key = "ab".repeat(32);
        let h = PoolHost::from_spec(&format!("q1.example:7075:noise_nk:{key}@5/60")).unwrap();
        assert_eq!(
            (h.hostname.as_str(), h.port, h.encryption, h.server_key),
            ("q1.example", 7075, Encryption::NOISE_NK, Some([0xab; 32]))
        );
        assert_eq!((h.priority, h.weight, h.ca_key_idx), (5, 60, NO_CA_KEY));
        let plain = PoolHost::from_spec("q2.example:7074").unwrap();
        assert_eq!(
            (
                plain.encryption,
                plain.server_key,
                plain.priority,
                plain.weight
            ),
            (Encryption::NONE, None, 10, 100)
        );
        // What it encodes decodes to the same host.
        assert_eq!(PoolHost::from_bytes(&h.to_bytes()).unwrap(), h);
        // #CA_KEY_IDX names the record key that signs its certificate.
        let www = PoolHost::from_spec("www.example:443:tls@10/100#2").unwrap();
        assert_eq!((www.port, www.ca_key_idx, www.priority), (443, 2, 10));
        assert_eq!(
            PoolHost::from_spec("www.example:443#0").unwrap().ca_key_idx,
            0
        );
        for (spec, want) in [
            (
                "q1.example",
                HostSpecError::Shape as fn(String) -> HostSpecError,
            ),
            ("a:1:none:k:x", HostSpecError::Shape),
            (":7074", HostSpecError::Hostname),
            ("q:0", HostSpecError::Port),
            ("q:70000", HostSpecError::Port),
            ("q:7074:rot13", HostSpecError::Encryption),
            ("q:7075:noise_nk:abcd", HostSpecError::ServerKey),
            ("q:7074@5", HostSpecError::PriorityWeight),
            ("q:7074@5/x", HostSpecError::PriorityWeight),
            ("q:443#255", HostSpecError::CaKeyIdx),
            ("q:443#x", HostSpecError::CaKeyIdx),
            ("q:443#", HostSpecError::CaKeyIdx),
        ] {
            assert_eq!(
                PoolHost::from_spec(spec),
                Err(want(spec.to_owned())),
                "{spec}"
            );
        }
    }
}
