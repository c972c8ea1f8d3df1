//! Keys in a PKCS#11 token (an HSM; SoftHSM2 in tests and development).
//!
//! Ed25519 keys are generated inside the token as sensitive and
//! non-extractable (`CKM_EC_EDWARDS_KEY_PAIR_GEN`, curve `edwards25519`)
//! and used with `CKM_EDDSA` (pure Ed25519). The private value never
//! leaves the token; we keep object handles and public keys only.
//!
//! Several sessions let calls proceed in parallel where the module allows
//! it; each signature borrows one session. Every signature the token
//! returns is verified with the public key before it is used: a faulty
//! HSM must not put a bad signature into a record.
//!
//! A PKCS#11 module is initialised once per process (`C_Initialize` a
//! second time fails, and a `C_Finalize` under another user's feet takes
//! its sessions away). Every key store of a process, on one token or
//! several, therefore shares one context per module path ([`module`]),
//! initialised on first use and never finalised: sessions hold the
//! context and may outlive any one store; the process's end releases it.

use crate::keystore::{HeldKey, KeyStore, KeyStoreError};
use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use poz::keys::{KeyId, PublicKey};
use poz::Hash32;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// `CKA_EC_PARAMS` for Ed25519: the PrintableString "edwards25519"
/// (PKCS#11 3.0 §2.3.10; SoftHSM2 also accepts the OID form).
const EDWARDS25519: [u8; 14] = [
    0x13, 0x0c, b'e', b'd', b'w', b'a', b'r', b'd', b's', b'2', b'5', b'5', b'1', b'9',
];

/// The process's initialised PKCS#11 contexts, by module path (as given
/// and canonicalised: two spellings of one file share one context).
fn modules() -> &'static Mutex<HashMap<PathBuf, Pkcs11>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    MODULES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Holds the process's one slot-list lock while `f` runs: every slot
/// enumeration (`C_GetSlotList`) and token initialisation (`C_InitToken`)
/// in this process goes through it. SoftHSM2 2.6 rescans its token
/// directory inside `C_GetSlotList` and, when two threads rescan at once,
/// inserts one token twice and aborts the whole process
/// (`SlotManager::insertToken: Assertion result.second failed`, seen with
/// two key stores opening while a third token was being made). Slot lists
/// are read rarely (when a key store opens), so one lock costs nothing.
pub fn with_slot_list<T>(f: impl FnOnce() -> T) -> T {
    static SLOT_LIST: Mutex<()> = Mutex::new(());
    let _held = SLOT_LIST.lock().unwrap_or_else(|p| p.into_inner());
    f()
}

/// The process-wide context of the PKCS#11 module at `path`: loaded and
/// initialised (`CKF_OS_LOCKING_OK`: the module may be called from any
/// thread) the first time it is asked for, the same context afterwards.
/// Never finalised (see the module docs).
///
/// Errors: [`KeyStoreError::Pkcs11`] when the module cannot be loaded or
/// refuses to initialise.
pub fn module(path: &Path) -> Result<Pkcs11, KeyStoreError> {
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    // A poisoned lock only means another thread panicked while holding
    // it; the map itself is always consistent (one insert).
    let mut map = modules().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = map.get(&key) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(path)
        .map_err(|e| KeyStoreError::Pkcs11(format!("loading {}: {e}", path.display())))?;
    match ctx.initialize(CInitializeArgs::OsThreads) {
        Ok(()) => {}
        // Initialised by someone else in this process (not through this
        // map): usable as it is.
        Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => {}
        Err(e) => {
            return Err(KeyStoreError::Pkcs11(format!(
                "initialising {}: {e}",
                path.display()
            )))
        }
    }
    map.insert(key, ctx.clone());
    Ok(ctx)
}

/// A logged-in PKCS#11 token.
///
/// When the token goes away under the store (a network HSM restarting, a
/// token pulled, the module answering `CKR_DEVICE_REMOVED`,
/// `CKR_SESSION_HANDLE_INVALID`, `CKR_TOKEN_NOT_PRESENT`, ...), every
/// session and object handle it held may be dead even once the token is
/// back. A signing call that fails in the module therefore reopens the
/// store once ([`Pkcs11KeyStore::reopen`]: find the token by label again,
/// open fresh sessions, log in, find each held key again by its public
/// key) and tries again; sessions of the old generation are closed as
/// they come back. While the token stays away the call fails with
/// [`KeyStoreError::TokenUnreachable`] (the service answers UNAVAILABLE),
/// and reopening is tried at most every [`REOPEN_BACKOFF`].
pub struct Pkcs11KeyStore {
    cfg: TokenConfig,
    pool: Mutex<Pool>,
    session_free: Condvar,
    session_count: usize,
    keys: Vec<HeldKey>,
    /// One reopen at a time; holds when the last failed one ended.
    reopening: Mutex<Option<Instant>>,
}

/// The sessions not in use and the key handles valid in them.
struct Pool {
    /// Bumped by each reopen; a session of an older generation is
    /// closed when it is given back.
    generation: u64,
    free: Vec<Session>,
    /// The private key handles, in the order of `keys`.
    handles: Vec<ObjectHandle>,
}

/// A session taken from the pool, with what was valid when it was taken.
struct Borrowed {
    session: Session,
    generation: u64,
    handles: Vec<ObjectHandle>,
}

/// The shortest time between two attempts to reopen a token that was
/// not there (ms): calls in between fail at once instead of rescanning
/// the module's slots for each.
pub const REOPEN_BACKOFF: Duration = Duration::from_millis(500);

/// Token reopens, by outcome (`poz_signer_token_reopens`).
static REOPENS: std::sync::LazyLock<
    prometheus_client::metrics::family::Family<
        Vec<(&'static str, &'static str)>,
        prometheus_client::metrics::counter::Counter,
    >,
> = std::sync::LazyLock::new(|| {
    let f = prometheus_client::metrics::family::Family::default();
    poz_kit::metrics::register(
        "poz_signer_token_reopens",
        "PKCS#11 token reopened after a failed call (sessions and handles renewed), by outcome",
        None,
        f.clone(),
    );
    f
});

/// How to reach a token. `Debug` shows the PIN as `<redacted>`; the PIN
/// is wiped from memory when the configuration is dropped.
#[derive(Clone)]
pub struct TokenConfig {
    /// The PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    pub module: std::path::PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The user PIN.
    pub pin: Zeroizing<String>,
    /// Sessions to open (parallel signing), at least 1.
    pub sessions: usize,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &"<redacted>")
            .field("sessions", &self.sessions)
            .finish()
    }
}

impl Pkcs11KeyStore {
    /// Takes the process's context of the module ([`module`]), finds the
    /// token by label, opens `sessions` sessions and logs in, and loads
    /// every Ed25519 private key with its public key. Several stores may
    /// be open at once in one process, on one token or several.
    pub fn open(cfg: &TokenConfig) -> Result<Self, KeyStoreError> {
        let Connected {
            sessions,
            keys,
            handles,
        } = connect(cfg)?;
        Ok(Pkcs11KeyStore {
            cfg: cfg.clone(),
            session_count: sessions.len(),
            pool: Mutex::new(Pool {
                generation: 0,
                free: sessions,
                handles,
            }),
            session_free: Condvar::new(),
            keys,
            reopening: Mutex::new(None),
        })
    }

    /// Renews the store after a call failed in the module: the token
    /// found by label again, fresh sessions logged in, every held key
    /// found again (by its public key; handles may differ), the pool
    /// replaced. `seen` is the generation the failed call ran in: when
    /// another call has reopened since, there is nothing to do.
    ///
    /// Errors: [`KeyStoreError::TokenUnreachable`] when the token is not
    /// there, refuses the login, or lacks a held key, or when the last
    /// attempt failed less than [`REOPEN_BACKOFF`] ago.
    fn reopen(&self, seen: u64) -> Result<(), KeyStoreError> {
        let mut last_failed = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        if self.lock_pool().generation != seen {
            return Ok(());
        }
        if let Some(t) = *last_failed {
            if t.elapsed() < REOPEN_BACKOFF {
                return Err(KeyStoreError::TokenUnreachable(format!(
                    "token {:?}: reopening failed {} ms ago",
                    self.cfg.token_label,
                    t.elapsed().as_millis()
                )));
            }
        }
        let renewed = connect(&self.cfg).and_then(|c| {
            let Connected {
                sessions,
                keys,
                handles,
            } = c;
            let mut ordered = Vec::with_capacity(self.keys.len());
            for held in &self.keys {
                let i = keys
                    .iter()
                    .position(|k| k.public == held.public)
                    .ok_or_else(|| {
                        KeyStoreError::Pkcs11(format!(
                            "key {} ({}) is no longer in the token",
                            held.public.id(),
                            held.label
                        ))
                    })?;
                ordered.push(handles[i]);
            }
            Ok((sessions, ordered))
        });
        match renewed {
            Ok((sessions, handles)) => {
                *last_failed = None;
                let old = {
                    let mut pool = self.lock_pool();
                    pool.generation += 1;
                    pool.handles = handles;
                    std::mem::replace(&mut pool.free, sessions)
                };
                // Closed outside the pool's lock (C_CloseSession on a
                // dead token may take the module's time).
                drop(old);
                self.session_free.notify_all();
                REOPENS.get_or_create(&vec![("outcome", "reopened")]).inc();
                tracing::warn!(token = %self.cfg.token_label, "PKCS#11 token reopened after a failed call");
                Ok(())
            }
            Err(e) => {
                *last_failed = Some(Instant::now());
                REOPENS.get_or_create(&vec![("outcome", "failed")]).inc();
                tracing::warn!(token = %self.cfg.token_label, error = %e, "PKCS#11 token could not be reopened");
                Err(KeyStoreError::TokenUnreachable(format!(
                    "token {:?}: {e}",
                    self.cfg.token_label
                )))
            }
        }
    }

    /// Runs `f` on a borrowed session; when it fails in the module, the
    /// store is reopened and `f` runs once more on a fresh session.
    fn with_recovery<T>(
        &self,
        f: impl Fn(&Session, &[ObjectHandle]) -> Result<T, cryptoki::error::Error>,
    ) -> Result<T, KeyStoreError> {
        let b = self.take_session();
        let first = f(&b.session, &b.handles);
        let seen = b.generation;
        self.give_back(b);
        match first {
            Ok(v) => Ok(v),
            Err(e) => {
                tracing::debug!(error = %e, "PKCS#11 call failed; reopening the token");
                self.reopen(seen)?;
                let b = self.take_session();
                let again = f(&b.session, &b.handles);
                self.give_back(b);
                again.map_err(|e| {
                    KeyStoreError::TokenUnreachable(format!(
                        "token {:?} failed again after reopening: {e}",
                        self.cfg.token_label
                    ))
                })
            }
        }
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        // A poisoned lock only means a thread panicked holding it; the
        // pool is consistent after every statement.
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Generates an Ed25519 key pair inside the token: the private key is
    /// a token object, private, sensitive, non-extractable, usable only to
    /// sign. Returns the new key (also added to this store's list only
    /// after a reopen: the list is fixed at open, like the service's).
    pub fn generate(&self, label: &str) -> Result<HeldKey, KeyStoreError> {
        let mut id = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(EDWARDS25519.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        self.with_session(|session| {
            let (public, _) = session.generate_key_pair(
                &Mechanism::EccEdwardsKeyPairGen,
                &public_template,
                &private_template,
            )?;
            Ok(HeldKey {
                public: public_key(session, public)?,
                label: label.to_string(),
            })
        })
    }

    fn take_session(&self) -> Borrowed {
        let mut pool = self.lock_pool();
        loop {
            if let Some(session) = pool.free.pop() {
                return Borrowed {
                    session,
                    generation: pool.generation,
                    handles: pool.handles.clone(),
                };
            }
            pool = self
                .session_free
                .wait(pool)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Returns a session to the pool, or closes it when a reopen has
    /// replaced its generation meanwhile.
    fn give_back(&self, b: Borrowed) {
        let mut pool = self.lock_pool();
        if b.generation == pool.generation {
            pool.free.push(b.session);
            drop(pool);
            self.session_free.notify_one();
        } else {
            drop(pool);
            drop(b.session);
        }
    }

    /// The object handle of a held key's private half (for tests that
    /// probe the token's protections).
    pub fn private_handle(&self, id: &KeyId) -> Option<ObjectHandle> {
        let i = self.keys.iter().position(|k| k.public.id() == *id)?;
        Some(self.lock_pool().handles[i])
    }

    /// Runs `f` with a session of this token (tests and admin commands).
    pub fn with_session<T>(&self, f: impl FnOnce(&Session) -> T) -> T {
        let b = self.take_session();
        let out = f(&b.session);
        self.give_back(b);
        out
    }
}

/// A token reached: logged-in sessions and its Ed25519 keys with their
/// private halves' handles (same order).
struct Connected {
    sessions: Vec<Session>,
    keys: Vec<HeldKey>,
    handles: Vec<ObjectHandle>,
}

/// Finds the token labelled `cfg.token_label`, opens `cfg.sessions`
/// sessions and logs in, and loads every Ed25519 key pair.
fn connect(cfg: &TokenConfig) -> Result<Connected, KeyStoreError> {
    let ctx = module(&cfg.module)?;
    let slot = with_slot_list(|| -> Result<_, KeyStoreError> {
        for s in ctx.get_slots_with_token()? {
            if ctx.get_token_info(s)?.label().trim_end() == cfg.token_label {
                return Ok(Some(s));
            }
        }
        Ok(None)
    })?;
    let slot = slot.ok_or_else(|| KeyStoreError::NoToken(cfg.token_label.clone()))?;
    let mut sessions = Vec::new();
    for _ in 0..cfg.sessions.max(1) {
        sessions.push(ctx.open_rw_session(slot)?);
    }
    // A login holds for every session of the application (the
    // process) with the token: another store of this process on the
    // same token may have logged in already, and its login is ours.
    let pin = AuthPin::new(String::clone(&cfg.pin));
    match sessions[0].login(UserType::User, Some(&pin)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => return Err(e.into()),
    }
    let (keys, handles) = load_keys(&sessions[0])?;
    Ok(Connected {
        sessions,
        keys,
        handles,
    })
}

/// Every Ed25519 private key in the token, paired with its public key by
/// CKA_ID.
fn load_keys(s: &Session) -> Result<(Vec<HeldKey>, Vec<ObjectHandle>), KeyStoreError> {
    let privates = s.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC_EDWARDS),
    ])?;
    let mut keys = Vec::new();
    let mut handles = Vec::new();
    for h in privates {
        let attrs = s.get_attributes(h, &[AttributeType::Id, AttributeType::Label])?;
        let (mut id, mut label) = (Vec::new(), String::new());
        for a in attrs {
            match a {
                Attribute::Id(v) => id = v,
                Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
                _ => {}
            }
        }
        let publics = s.find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::Id(id),
        ])?;
        let Some(p) = publics.first() else {
            tracing::warn!(%label, "private key without a public key object; skipped");
            continue;
        };
        keys.push(HeldKey {
            public: public_key(s, *p)?,
            label,
        });
        handles.push(h);
    }
    Ok((keys, handles))
}

/// The 32-byte Ed25519 key from CKA_EC_POINT, which modules return either
/// raw or DER-wrapped as an OCTET STRING (04 20 ‖ key).
fn public_key(s: &Session, h: ObjectHandle) -> Result<PublicKey, KeyStoreError> {
    let attrs = s.get_attributes(h, &[AttributeType::EcPoint])?;
    let point = attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(v) => Some(v),
            _ => None,
        })
        .ok_or_else(|| KeyStoreError::Pkcs11("public key without CKA_EC_POINT".into()))?;
    let raw: &[u8] = match point.as_slice() {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        r if r.len() == 32 => r,
        _ => {
            return Err(KeyStoreError::Pkcs11(format!(
                "CKA_EC_POINT of {} bytes is not an Ed25519 key",
                point.len()
            )))
        }
    };
    let bytes: [u8; 32] = raw
        .try_into()
        .map_err(|_| KeyStoreError::Pkcs11("bad CKA_EC_POINT".into()))?;
    PublicKey::ed25519_from_bytes(&bytes)
        .ok_or_else(|| KeyStoreError::Pkcs11("CKA_EC_POINT is not a usable Ed25519 key".into()))
}

impl KeyStore for Pkcs11KeyStore {
    fn keys(&self) -> &[HeldKey] {
        &self.keys
    }

    fn sign(&self, id: &KeyId, digest: &Hash32) -> Result<[u8; 64], KeyStoreError> {
        let mut sigs = self.sign_many(id, std::slice::from_ref(digest))?;
        sigs.pop().ok_or(KeyStoreError::BadSignature(*id))
    }

    /// One session for the whole slice (no pool traffic per signature),
    /// then every signature the token returned is checked in one Ed25519
    /// batch before any is used: a faulty or tampered HSM must not get a
    /// bad signature into the audit log or a binding.
    fn sign_many(&self, id: &KeyId, digests: &[Hash32]) -> Result<Vec<[u8; 64]>, KeyStoreError> {
        let i = self.position(id)?;
        let mech = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let signed = self.with_recovery(|session, handles| {
            digests
                .iter()
                .map(|d| session.sign(&mech, handles[i], &d.0))
                .collect::<Result<Vec<Vec<u8>>, _>>()
        })?;
        let sigs = signed
            .into_iter()
            .map(|s| {
                <[u8; 64]>::try_from(s.as_slice()).map_err(|_| KeyStoreError::BadSignature(*id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let key = self.keys[i]
            .public
            .verify_key()
            .ok_or(KeyStoreError::BadSignature(*id))?;
        let mut batch = poz::ed25519::Batch::new();
        for (d, s) in digests.iter().zip(&sigs) {
            batch.push(key, &d.0, s);
        }
        if !batch.verify() {
            return Err(KeyStoreError::BadSignature(*id));
        }
        Ok(sigs)
    }

    /// `CKM_EDDSA` over the message (SoftHSM2 ≥ 2.6, any token with
    /// pure Ed25519), checked under the key before it is returned.
    fn sign_message(&self, id: &KeyId, message: &[u8]) -> Result<[u8; 64], KeyStoreError> {
        let i = self.position(id)?;
        let mech = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let signed =
            self.with_recovery(|session, handles| session.sign(&mech, handles[i], message))?;
        let sig = <[u8; 64]>::try_from(signed.as_slice())
            .map_err(|_| KeyStoreError::BadSignature(*id))?;
        let key = self.keys[i]
            .public
            .verify_key()
            .ok_or(KeyStoreError::BadSignature(*id))?;
        if !key.verify(message, &sig) {
            return Err(KeyStoreError::BadSignature(*id));
        }
        Ok(sig)
    }

    fn parallelism(&self) -> usize {
        self.session_count
    }
}
