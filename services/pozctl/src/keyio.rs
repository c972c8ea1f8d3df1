//! Reading and writing the files pozctl works with: records, key files,
//! bindings; and getting a passphrase without echoing it.

use anyhow::{bail, Context, Result};
use poz::private::{KdfParams, KeyFile};
use poz::{Codec, Hash32, PublicKey, Record, SignedEntry, SigningKey};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where a passphrase comes from, in order: `--passphrase-file`, the
/// `POZ_PASSPHRASE` environment variable (for scripts and the tour), then a
/// prompt on the terminal.
#[derive(Clone, Debug, Default)]
pub struct Passphrase {
    pub file: Option<PathBuf>,
}

impl Passphrase {
    /// The passphrase, wiped from memory when the caller drops it.
    pub fn get(&self, what: &str) -> Result<Zeroizing<Vec<u8>>> {
        if let Some(f) = &self.file {
            let s = Zeroizing::new(
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading passphrase file {}", f.display()))?,
            );
            return Ok(Zeroizing::new(
                s.trim_end_matches(['\n', '\r']).as_bytes().to_vec(),
            ));
        }
        if let Ok(p) = std::env::var("POZ_PASSPHRASE") {
            return Ok(Zeroizing::new(p.into_bytes()));
        }
        if std::io::stdin().is_terminal() {
            let p = rpassword::prompt_password(format!("passphrase for {what}: "))?;
            return Ok(Zeroizing::new(p.into_bytes()));
        }
        bail!("no passphrase for {what}: set POZ_PASSPHRASE, pass --passphrase-file, or run on a terminal")
    }
}

/// Who may read a file pozctl writes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Readers {
    /// Public data (records without private keys, bindings): 0644, less
    /// what the umask removes.
    Anyone,
    /// Secrets (key files, records carrying a Private Key Map): 0600 from
    /// the moment the file exists, whatever the umask.
    Owner,
}

/// Writes a file atomically (temp file + rename), so an interrupted write
/// never leaves half a record behind; public data.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_for(path, bytes, Readers::Anyone)
}

/// Writes a file atomically, readable by `readers`: the temporary file is
/// created with its final mode (never a moment readable by others), then
/// renamed over `path`.
pub fn write_atomic_for(path: &Path, bytes: &[u8], readers: Readers) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("output path has no file name")?
        .to_string_lossy()
        .to_string();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    // A leftover of a run that died (same PID) would keep its old mode.
    let _ = std::fs::remove_file(&tmp);
    let mode = match readers {
        Readers::Anyone => 0o644,
        Readers::Owner => 0o600,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Reads a record or draft: a file that cannot be read is an I/O error
/// (exit 2); one that does not decode is refused (exit 1).
pub fn read_record(path: &Path) -> Result<Record> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Record::from_bytes(&b).map_err(|e| {
        crate::cmd::refuse(format!("{} is not a valid POZ record: {e}", path.display()))
    })
}

/// Writes a record; owner-only when it carries a Private Key Map (sealed
/// keys are still secrets).
pub fn write_record(path: &Path, rec: &Record) -> Result<()> {
    let readers = if rec.private_keys.is_some() {
        Readers::Owner
    } else {
        Readers::Anyone
    };
    write_atomic_for(path, &rec.to_bytes(), readers)
}

/// Reads a zone entry (a binding): unreadable is exit 2, undecodable is
/// refused (exit 1).
pub fn read_entry(path: &Path) -> Result<SignedEntry> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    SignedEntry::from_bytes(&b).map_err(|e| {
        crate::cmd::refuse(format!(
            "{} is not a valid POZ zone entry: {e}",
            path.display()
        ))
    })
}

pub fn read_key_file(path: &Path) -> Result<KeyFile> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    KeyFile::from_bytes(&b).with_context(|| format!("{} is not a POZ key file", path.display()))
}

/// Opens a key file with its passphrase.
pub fn open_key(path: &Path, pass: &Passphrase) -> Result<SigningKey> {
    let kf = read_key_file(path)?;
    let p = pass.get(&path.display().to_string())?;
    kf.open(&p)
        .with_context(|| format!("opening {}", path.display()))
}

/// A public key given as a key file (only its clear public part is read)
/// or as 64 hex digits of an Ed25519 key.
pub fn public_key(spec: &str) -> Result<PublicKey> {
    let p = Path::new(spec);
    if p.exists() {
        return Ok(read_key_file(p)?.public);
    }
    let b = hex::decode(spec).with_context(|| format!("{spec}: neither a key file nor hex"))?;
    let a: [u8; 32] = b
        .try_into()
        .map_err(|_| anyhow::anyhow!("{spec}: an Ed25519 public key is 32 bytes"))?;
    PublicKey::ed25519_from_bytes(&a)
        .ok_or_else(|| anyhow::anyhow!("{spec}: not a valid Ed25519 public key"))
}

/// A record ID given as 64 hex digits or as a record file.
pub fn record_id(spec: &str) -> Result<Hash32> {
    if let Some(h) = Hash32::from_hex(spec) {
        return Ok(h);
    }
    Ok(read_record(Path::new(spec))?.id())
}

pub fn create_key_file(out: &Path, pass: &Passphrase) -> Result<SigningKey> {
    if out.exists() {
        bail!("{} exists; refusing to overwrite a key", out.display());
    }
    let k = SigningKey::generate();
    let p = pass.get(&out.display().to_string())?;
    let kf = KeyFile::create(&k, &p, KdfParams::default())?;
    write_atomic_for(out, &kf.to_bytes(), Readers::Owner)?;
    Ok(k)
}
