//! The wire enums every layer names (zone types, entry kinds, key and
//! signature types) and the macro that declares wire enums: a leaf module,
//! so that the codecs of keys, batches, zones and entries can all use them
//! without importing one another in a circle.

/// Declares a wire enum as a newtype over its integer, with named constants,
/// so unknown values still decode, round-trip and print in hex; validation
/// decides separately whether a value is acceptable where it stands.
#[macro_export]
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident($int:ty) { $($(#[$cm:meta])* $konst:ident = $val:expr => $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $int);
        impl $name {
            $($(#[$cm])* pub const $konst: $name = $name($val);)*
            /// The standard's name for this value, if it is a known one.
            pub fn name(self) -> Option<&'static str> {
                match self.0 { $($val => Some($text),)* _ => None }
            }
            pub fn is_known(self) -> bool { self.name().is_some() }
            /// Parses a name as `name()` prints it (case-insensitive).
            pub fn from_name(s: &str) -> Option<$name> {
                $(if s.eq_ignore_ascii_case($text) { return Some($name($val)); })*
                None
            }
        }
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{}", n),
                    None => write!(f, "{}({:#x})", stringify!($name), self.0),
                }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(self, f)
            }
        }
    };
}

wire_enum! {
    /// The algorithm of a public key in the key map.
    KeyType(u8) {
        ED25519 = 0x01 => "ed25519",
    }
}

wire_enum! {
    /// How a signature is made.
    SigType(u8) {
        /// Ed25519 over the 32-byte tagged digest of the signed object.
        ED25519 = 0x01 => "ed25519",
        /// Ed25519 over the root of a batch of zone entries, with this
        /// entry's audit path (SPEC §8.9; zone entries only).
        ED25519_BATCH = 0x02 => "ed25519-batch",
    }
}

wire_enum! {
    /// The sub-zones a master zone can delegate. The section types are
    /// `zone << 4` (authority) and `zone << 4 | 1` (zone data).
    ZoneType(u8) {
        IDENTITY = 0x01 => "identity",
        FEED = 0x02 => "feed",
        EMAIL = 0x03 => "email",
        AUTH = 0x04 => "auth",
        SERVICE = 0x05 => "service",
    }
}

impl ZoneType {
    pub const ALL: [ZoneType; 5] = [
        ZoneType::IDENTITY,
        ZoneType::FEED,
        ZoneType::EMAIL,
        ZoneType::AUTH,
        ZoneType::SERVICE,
    ];

    pub fn authority_section(self) -> u16 {
        (self.0 as u16) << 4
    }

    pub fn zone_section(self) -> u16 {
        ((self.0 as u16) << 4) | 1
    }
}

wire_enum! {
    /// Whether an entry adds information (grant threshold) or revokes an
    /// earlier entry (deny threshold).
    EntryKind(u8) {
        GRANT = 0x01 => "grant",
        REVOKE = 0x02 => "revoke",
    }
}

wire_enum! {
    /// Why an entry was revoked.
    RevocationReason(u8) {
        UNSPECIFIED = 0x00 => "unspecified",
        KEY_COMPROMISE = 0x01 => "key-compromise",
        SUPERSEDED = 0x02 => "superseded",
        ACCOUNT_CLOSED = 0x03 => "account-closed",
        POLICY = 0x04 => "policy",
    }
}
