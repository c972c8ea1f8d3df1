//! The POZ signer: keys in a PKCS#11 HSM (or, in the embedded default,
//! software keys from encrypted key files), signing only typed requests
//! (a master-zone draft, a zone entry) after re-validating each against
//! the issuer's record and the standard's policy (which key may sign
//! what, `poz::workflow::*_signing_target`). Every signature is written to
//! the audit log before it leaves the signer.
#![forbid(unsafe_code)]

pub mod audit;
pub mod ceremony;
pub mod keystore;
pub mod pkcs11;
pub mod service;

pub use audit::{AuditBackend, AuditError, SignatureAudit, SignatureAuditLog};
pub use keystore::{HeldKey, KeyStore, KeyStoreError, SoftwareKeyStore};
pub use pkcs11::{Pkcs11KeyStore, TokenConfig};
pub use service::{check_draft_chain, DraftRefused, SignerService};
