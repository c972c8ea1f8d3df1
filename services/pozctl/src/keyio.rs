//! Reading and writing the files pozctl works with: records, key files,
//! bindings; and getting a passphrase without echoing it.

use anyhow::{bail, Context, Result};
use poz::private::{KdfParams, KeyFile};
use poz::{Codec, Hash32, PublicKey, Record, SignedEntry, SigningKey};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Where a passphrase comes from, in order: `--passphrase-file`, the
/// `POZ_PASSPHRASE` environment variable (for scripts and the tour), then a
/// prompt on the terminal.
#[derive(Clone, Debug, Default)]
pub struct Passphrase {
    pub file: Option<PathBuf>,
}

impl Passphrase {
    pub fn get(&self, what: &str) -> Result<Vec<u8>> {
        if let Some(f) = &self.file {
            let s = std::fs::read_to_string(f)
                .with_context(|| format!("reading passphrase file {}", f.display()))?;
            return Ok(s.trim_end_matches(['\n', '\r']).as_bytes().to_vec());
        }
        if let Ok(p) = std::env::var("POZ_PASSPHRASE") {
            return Ok(p.into_bytes());
        }
        if std::io::stdin().is_terminal() {
            let p = rpassword::prompt_password(format!("passphrase for {what}: "))?;
            return Ok(p.into_bytes());
        }
        bail!("no passphrase for {what}: set POZ_PASSPHRASE, pass --passphrase-file, or run on a terminal")
    }
}

/// Writes a file atomically (temp file + rename), so an interrupted write
/// never leaves half a record behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
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
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

pub fn read_record(path: &Path) -> Result<Record> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Record::from_bytes(&b).with_context(|| format!("{} is not a valid POZ record", path.display()))
}

pub fn write_record(path: &Path, rec: &Record) -> Result<()> {
    write_atomic(path, &rec.to_bytes())
}

pub fn read_entry(path: &Path) -> Result<SignedEntry> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    SignedEntry::from_bytes(&b)
        .with_context(|| format!("{} is not a POZ zone entry", path.display()))
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
    write_atomic(out, &kf.to_bytes())?;
    Ok(k)
}
