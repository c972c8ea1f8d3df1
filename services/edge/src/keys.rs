//! The edge's secrets on disk: its Noise static key and the fleet's
//! proof-of-work challenge secrets. Decoded buffers are wiped after use.

use crate::EdgeError;
use poz::noise::StaticKeypair;
use poz::pow::Secrets;
use std::path::Path;
use zeroize::Zeroizing;

/// 32 bytes from 64 hex digits; `what` names where the line came from.
fn hex32(line: &str, what: impl FnOnce() -> String) -> Result<[u8; 32], EdgeError> {
    let b = Zeroizing::new(hex::decode(line.trim()).unwrap_or_default());
    <[u8; 32]>::try_from(b.as_slice()).map_err(|_| EdgeError::NotKey { what: what() })
}

fn read(path: &Path) -> Result<Zeroizing<String>, EdgeError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| EdgeError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// A Noise static secret: 64 hex digits on the first line of `path`.
pub fn read_noise_key(path: &Path) -> Result<StaticKeypair, EdgeError> {
    let text = read(path)?;
    let secret = hex32(text.lines().next().unwrap_or_default(), || {
        path.display().to_string()
    })?;
    Ok(StaticKeypair::from_secret(secret))
}

/// Challenge secrets: 64 hex digits per line, the current one first;
/// blank lines are skipped; at least one.
pub fn read_secrets(path: &Path) -> Result<Secrets, EdgeError> {
    let text = read(path)?;
    let secrets = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| hex32(l, || format!("{} line {}", path.display(), i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    if secrets.is_empty() {
        return Err(EdgeError::NoSecret(path.to_path_buf()));
    }
    Ok(Secrets(secrets))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_and_secrets_are_read_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, format!("{}\n", "11".repeat(32))).unwrap();
        let kp = read_noise_key(&p).unwrap();
        assert_eq!(kp.secret(), &[0x11; 32]);
        std::fs::write(&p, format!("{}\n\n{}\n", "22".repeat(32), "33".repeat(32))).unwrap();
        assert_eq!(read_secrets(&p).unwrap().0, vec![[0x22; 32], [0x33; 32]]);
        std::fs::write(&p, format!("{}\nzz\n", "22".repeat(32))).unwrap();
        let e = read_secrets(&p).unwrap_err().to_string();
        assert!(e.ends_with("line 2: not 64 hex digits"), "{e}");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(read_secrets(&p), Err(EdgeError::NoSecret(_))));
        let e = read_noise_key(&dir.path().join("none")).unwrap_err();
        assert!(matches!(e, EdgeError::Read { .. }), "{e}");
    }
}
