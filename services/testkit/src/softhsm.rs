//! A SoftHSM2 token's key objects taken away and brought back under a
//! running signer: the nearest SoftHSM2 has to an HSM losing its keys or
//! its sessions (issue 16). Every call on the objects fails in the module
//! while they are away; once they are back the module offers them again
//! under new object handles.
//!
//! SoftHSM2's file store keeps a token in a directory of its own
//! (`token.object`, a `generation` counter, one `<uuid>.object` per
//! object). A process re-reads a token's directory only when the counter
//! has moved (`OSToken::index`), which SoftHSM2 itself bumps whenever it
//! adds or removes an object; taking objects away or back therefore
//! bumps it too, as SoftHSM2 would have. Taking the whole directory away
//! is no use: the module marks such a token invalid for the life of the
//! process and never re-checks it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The directory of the token labelled `label` under the token directory
/// `tokens` (its label is space-padded to 32 bytes inside `token.object`).
pub fn token_dir(tokens: &Path, label: &str) -> PathBuf {
    let mut padded = label.as_bytes().to_vec();
    padded.resize(32, b' ');
    std::fs::read_dir(tokens)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|d| {
            std::fs::read(d.join("token.object"))
                .map(|b| b.windows(32).any(|w| w == padded.as_slice()))
                .unwrap_or(false)
        })
        .unwrap_or_else(|| panic!("no directory of token {label} in {}", tokens.display()))
}

/// Key objects of one token moved out to `away` (a directory outside the
/// token directory) until [`KeysAway::bring_back`].
pub struct KeysAway {
    token: PathBuf,
    away: PathBuf,
    names: Vec<OsString>,
}

impl KeysAway {
    /// Moves every object file of the token in `token` but the token's
    /// own into `away` (made if missing); returns how many went.
    pub fn take(token: &Path, away: &Path) -> KeysAway {
        std::fs::create_dir_all(away).unwrap();
        let names: Vec<OsString> = std::fs::read_dir(token)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| {
                let n = n.to_string_lossy();
                n.ends_with(".object") && n != "token.object"
            })
            .collect();
        for n in &names {
            std::fs::rename(token.join(n), away.join(n)).unwrap();
        }
        bump_generation(token);
        KeysAway {
            token: token.to_path_buf(),
            away: away.to_path_buf(),
            names,
        }
    }

    /// How many object files are away.
    pub fn count(&self) -> usize {
        self.names.len()
    }

    /// Puts them back where they were.
    pub fn bring_back(self) {
        for n in &self.names {
            std::fs::rename(self.away.join(n), self.token.join(n)).unwrap();
        }
        bump_generation(&self.token);
    }
}

/// Adds one to the token's generation counter (8 bytes, big-endian), as
/// SoftHSM2 does after it changes a token's objects.
fn bump_generation(token: &Path) {
    let path = token.join("generation");
    let now = std::fs::read(&path)
        .ok()
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    std::fs::write(&path, (now + 1).to_be_bytes()).unwrap();
}
