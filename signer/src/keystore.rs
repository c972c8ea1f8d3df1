//! Where the signer's keys live. The service sees only [`KeyStore`]: a
//! list of public keys and "sign this 32-byte digest with that key" (and,
//! for certificates the service built itself, "sign this message").
//! Policy is decided before a key store is ever called (see `service`).

use poz::keys::{KeyId, PublicKey, SigningKey};
use poz::Hash32;

/// Why a key store could not sign or open.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("no held key has ID {0}")]
    UnknownKey(KeyId),
    #[error("PKCS#11: {0}")]
    Pkcs11(String),
    #[error("no token labelled {0:?} in the PKCS#11 module")]
    NoToken(String),
    /// The token failed a call and could not be reopened, or failed again
    /// after reopening (it went away: a network HSM restarting, a token
    /// pulled); calls succeed again once it is back. UNAVAILABLE.
    #[error("HSM unreachable: {0}")]
    TokenUnreachable(String),
    #[error("the HSM returned a signature that does not verify under key {0}")]
    BadSignature(KeyId),
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
}

impl From<cryptoki::error::Error> for KeyStoreError {
    fn from(e: cryptoki::error::Error) -> Self {
        KeyStoreError::Pkcs11(e.to_string())
    }
}

/// One key the store holds.
#[derive(Clone, Debug)]
pub struct HeldKey {
    pub public: PublicKey,
    /// The HSM object label, or the key file name.
    pub label: String,
}

/// A set of signing keys. Calls block (an HSM round trip); async callers
/// run them on a blocking thread.
pub trait KeyStore: Send + Sync + 'static {
    /// The keys held, fixed when the store was opened.
    fn keys(&self) -> &[HeldKey];

    /// Signs `digest` (a POZ tagged digest, never raw data) with key `id`.
    fn sign(&self, id: &KeyId, digest: &Hash32) -> Result<[u8; 64], KeyStoreError>;

    /// PureEd25519 over a whole `message` with key `id`: only the
    /// TBSCertificate of a POZ-as-CA certificate (SPEC §21), which the
    /// service builds itself after its policy check; never bytes a caller
    /// chose. The signature is checked against the key before it is
    /// returned.
    fn sign_message(&self, id: &KeyId, message: &[u8]) -> Result<[u8; 64], KeyStoreError>;

    /// Signs each digest with key `id`, in order; all or none.
    fn sign_many(&self, id: &KeyId, digests: &[Hash32]) -> Result<Vec<[u8; 64]>, KeyStoreError> {
        digests.iter().map(|d| self.sign(id, d)).collect()
    }

    /// How many `sign_many` calls can run at once without queueing (the
    /// HSM sessions); callers split large groups this many ways.
    fn parallelism(&self) -> usize {
        1
    }

    fn held(&self, id: &KeyId) -> Option<&HeldKey> {
        self.keys().iter().find(|k| k.public.id() == *id)
    }

    /// Where key `id` is in [`keys`](Self::keys); `UnknownKey` if it is
    /// not held.
    fn position(&self, id: &KeyId) -> Result<usize, KeyStoreError> {
        self.keys()
            .iter()
            .position(|k| k.public.id() == *id)
            .ok_or(KeyStoreError::UnknownKey(*id))
    }
}

/// Software keys (the embedded default): decrypted once at start from POZ
/// key files, kept in memory (zeroized on drop by `SigningKey`).
pub struct SoftwareKeyStore {
    keys: Vec<HeldKey>,
    secrets: Vec<SigningKey>,
}

impl SoftwareKeyStore {
    pub fn new(keys: Vec<(String, SigningKey)>) -> Self {
        let held = keys
            .iter()
            .map(|(label, k)| HeldKey {
                public: k.public(),
                label: label.clone(),
            })
            .collect();
        SoftwareKeyStore {
            keys: held,
            secrets: keys.into_iter().map(|(_, k)| k).collect(),
        }
    }

    /// Opens POZ key files (`pozctl key generate`) with one passphrase.
    pub fn open_files(
        paths: &[std::path::PathBuf],
        passphrase: &[u8],
    ) -> Result<Self, KeyStoreError> {
        use poz::Codec;
        let mut keys = Vec::new();
        for p in paths {
            let err = |reason: String| KeyStoreError::KeyFile {
                path: p.display().to_string(),
                reason,
            };
            let bytes = std::fs::read(p).map_err(|e| err(e.to_string()))?;
            let file = poz::private::KeyFile::from_bytes(&bytes).map_err(|e| err(e.to_string()))?;
            let key = file.open(passphrase).map_err(|e| err(e.to_string()))?;
            let label = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            keys.push((label, key));
        }
        Ok(SoftwareKeyStore::new(keys))
    }
}

impl KeyStore for SoftwareKeyStore {
    fn keys(&self) -> &[HeldKey] {
        &self.keys
    }

    fn sign(&self, id: &KeyId, digest: &Hash32) -> Result<[u8; 64], KeyStoreError> {
        let i = self.position(id)?;
        let sig = self.secrets[i].sign(0, digest);
        sig.data
            .as_slice()
            .try_into()
            .map_err(|_| KeyStoreError::BadSignature(*id))
    }

    fn sign_message(&self, id: &KeyId, message: &[u8]) -> Result<[u8; 64], KeyStoreError> {
        let i = self.position(id)?;
        Ok(self.secrets[i].sign_message(message))
    }
}
