//! Private keys at rest: the Private Key Map section (0x8002) and key files.
//!
//! Both use one sealed box: Argon2id derives a 256-bit key from the
//! passphrase and a random salt, and XChaCha20-Poly1305 encrypts the list of
//! secret keys under a random 192-bit nonce (large enough to pick at random
//! without a counter). The KDF parameters, salt and nonce are stored in the
//! clear and authenticated as associated data, so a tampered parameter fails
//! decryption rather than silently weakening it. See SPEC §9.

use crate::codec::{Codec, DecodeError, Reader};
use crate::hash::tag;
use crate::keys::{KeyType, PublicKey, SigningKey};
use crate::wire_enum;
use crate::Error;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use rand_core::RngCore;
use zeroize::Zeroizing;

wire_enum! {
    Kdf(u8) {
        ARGON2ID = 0x01 => "argon2id",
    }
}

wire_enum! {
    AeadAlg(u8) {
        XCHACHA20_POLY1305 = 0x01 => "xchacha20-poly1305",
    }
}

/// Argon2id cost. The default is OWASP's recommended minimum for Argon2id
/// (19 MiB, 2 passes, 1 lane): about 50 ms here, cheap for a holder who
/// signs now and then, costly for a guesser.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KdfParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

/// Bounds on stored KDF parameters: a hostile file must not make a reader
/// allocate gigabytes, nor claim a cost too low to mean anything.
pub const MAX_M_COST_KIB: u32 = 1 << 20; // 1 GiB
pub const MIN_M_COST_KIB: u32 = 8;
pub const MAX_T_COST: u32 = 64;
pub const MAX_P_COST: u32 = 16;
/// At most this many ciphertext bytes (255 keys of the largest size).
pub const MAX_SEALED_LEN: usize = 255 * (3 + 1024) + 1 + 16;

/// An encrypted list of secret keys.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SealedKeys {
    pub kdf: Kdf,
    pub params: KdfParams,
    pub salt: [u8; 16],
    pub aead: AeadAlg,
    pub nonce: [u8; 24],
    pub ciphertext: Vec<u8>,
}

impl SealedKeys {
    fn header_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(self.kdf.0);
        out.extend_from_slice(&self.params.m_cost_kib.to_be_bytes());
        out.extend_from_slice(&self.params.t_cost.to_be_bytes());
        out.extend_from_slice(&self.params.p_cost.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out.push(self.aead.0);
        out.extend_from_slice(&self.nonce);
        out
    }

    fn aad(&self) -> Vec<u8> {
        let mut aad = tag::PRIVATE_KEY_MAP_AAD.as_bytes().to_vec();
        aad.extend_from_slice(&self.header_bytes());
        aad
    }

    fn derive(
        passphrase: &[u8],
        salt: &[u8; 16],
        p: KdfParams,
    ) -> Result<Zeroizing<[u8; 32]>, Error> {
        let params = argon2::Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32))
            .map_err(|_| Error::BadKdfParams)?;
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        a.hash_password_into(passphrase, salt, key.as_mut())
            .map_err(|_| Error::BadKdfParams)?;
        Ok(key)
    }

    /// Encrypts `keys` under `passphrase`.
    pub fn seal(
        keys: &[&SigningKey],
        passphrase: &[u8],
        params: KdfParams,
    ) -> Result<SealedKeys, Error> {
        if keys.len() > 255 {
            return Err(Error::KeyMapFull);
        }
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 24];
        rand_core::OsRng.fill_bytes(&mut salt);
        rand_core::OsRng.fill_bytes(&mut nonce);
        let mut plain = Zeroizing::new(Vec::with_capacity(1 + keys.len() * 35));
        plain.push(keys.len() as u8);
        for k in keys {
            plain.push(KeyType::ED25519.0);
            plain.extend_from_slice(&32u16.to_be_bytes());
            plain.extend_from_slice(k.seed().as_ref());
        }
        let mut sealed = SealedKeys {
            kdf: Kdf::ARGON2ID,
            params,
            salt,
            aead: AeadAlg::XCHACHA20_POLY1305,
            nonce,
            ciphertext: Vec::new(),
        };
        let key = Self::derive(passphrase, &salt, params)?;
        let cipher = XChaCha20Poly1305::new(key.as_ref().into());
        let aad = sealed.aad();
        sealed.ciphertext = cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Decryption)?;
        Ok(sealed)
    }

    /// Decrypts; a wrong passphrase or any altered byte is `Error::Decryption`.
    pub fn open(&self, passphrase: &[u8]) -> Result<Vec<SigningKey>, Error> {
        let key = Self::derive(passphrase, &self.salt, self.params)?;
        let cipher = XChaCha20Poly1305::new(key.as_ref().into());
        let aad = self.aad();
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    (&self.nonce).into(),
                    Payload {
                        msg: &self.ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| Error::Decryption)?,
        );
        let mut r = Reader::new(&plain);
        let n = r.u8("sealed.count").map_err(Error::Decode)? as usize;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let kt = KeyType(r.u8("sealed.key_type").map_err(Error::Decode)?);
            let len = r.u16("sealed.length").map_err(Error::Decode)? as usize;
            if kt != KeyType::ED25519 || len != 32 {
                return Err(Error::Decode(r.invalid("sealed.key_type", kt.0 as u64)));
            }
            let seed: [u8; 32] = r.array("sealed.seed").map_err(Error::Decode)?;
            out.push(SigningKey::from_seed(&seed));
        }
        r.expect_end("sealed.keys").map_err(Error::Decode)?;
        Ok(out)
    }
}

impl Codec for SealedKeys {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header_bytes());
        out.extend_from_slice(&(self.ciphertext.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.ciphertext);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let kdf = Kdf(r.u8("sealed.kdf")?);
        if !kdf.is_known() {
            return Err(r.invalid("sealed.kdf", kdf.0 as u64));
        }
        let m = r.u32("sealed.m_cost")?;
        let t = r.u32("sealed.t_cost")?;
        let p = r.u32("sealed.p_cost")?;
        if !(MIN_M_COST_KIB..=MAX_M_COST_KIB).contains(&m)
            || !(1..=MAX_T_COST).contains(&t)
            || !(1..=MAX_P_COST).contains(&p)
            || m < 8 * p
        {
            return Err(r.layout("sealed.kdf_params", "KDF parameters out of bounds"));
        }
        let salt = r.array::<16>("sealed.salt")?;
        let aead = AeadAlg(r.u8("sealed.aead")?);
        if !aead.is_known() {
            return Err(r.invalid("sealed.aead", aead.0 as u64));
        }
        let nonce = r.array::<24>("sealed.nonce")?;
        let len = r.u32("sealed.ciphertext_length")? as usize;
        if len > MAX_SEALED_LEN {
            return Err(DecodeError::TooMany {
                field: "sealed.ciphertext_length",
                offset: r.offset() - 4,
                count: len as u64,
                max: MAX_SEALED_LEN as u64,
            });
        }
        let ciphertext = r.take(len, "sealed.ciphertext")?.to_vec();
        Ok(SealedKeys {
            kdf,
            params: KdfParams {
                m_cost_kib: m,
                t_cost: t,
                p_cost: p,
            },
            salt,
            aead,
            nonce,
            ciphertext,
        })
    }
}

/// Key file magic: "POZKEY" and a format version.
pub const KEY_FILE_MAGIC: &[u8; 7] = b"POZKEY\x00";

/// A holder's key file: the public key in the clear (so anyone can add it
/// to a record without the passphrase), the secret sealed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KeyFile {
    pub public: PublicKey,
    pub sealed: SealedKeys,
}

impl KeyFile {
    pub fn create(
        key: &SigningKey,
        passphrase: &[u8],
        params: KdfParams,
    ) -> Result<KeyFile, Error> {
        Ok(KeyFile {
            public: key.public(),
            sealed: SealedKeys::seal(&[key], passphrase, params)?,
        })
    }

    /// Decrypts and checks that the secret matches the public key.
    pub fn open(&self, passphrase: &[u8]) -> Result<SigningKey, Error> {
        let mut keys = self.sealed.open(passphrase)?;
        if keys.len() != 1 {
            return Err(Error::KeyFileMismatch);
        }
        let k = keys.remove(0);
        if k.public() != self.public {
            return Err(Error::KeyFileMismatch);
        }
        Ok(k)
    }
}

impl Codec for KeyFile {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(KEY_FILE_MAGIC);
        self.public.encode(out);
        self.sealed.encode(out);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let magic = r.take(KEY_FILE_MAGIC.len(), "key_file.magic")?;
        if magic != KEY_FILE_MAGIC {
            return Err(DecodeError::Layout {
                field: "key_file.magic",
                offset: 0,
                reason: "not a POZ key file",
            });
        }
        Ok(KeyFile {
            public: PublicKey::read(r)?,
            sealed: SealedKeys::read(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const FAST: KdfParams = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn seal_open_round_trip_and_wrong_passphrase() {
        let k = SigningKey::from_seed(&[9u8; 32]);
        let f = KeyFile::create(&k, b"pw", FAST).unwrap();
        let back = KeyFile::from_bytes(&f.to_bytes()).unwrap();
        assert_eq!(back.open(b"pw").unwrap().public(), k.public());
        assert!(matches!(back.open(b"nope"), Err(Error::Decryption)));
    }

    /// SPEC §9 writes the associated data out byte for byte: 76 bytes,
    /// the raw tag then the header fields, big-endian.
    #[test]
    fn associated_data_is_the_76_bytes_spec_9_lists() {
        let k = SigningKey::from_seed(&[9u8; 32]);
        let f = KeyFile::create(&k, b"pw", FAST).unwrap();
        let s = &f.sealed;
        let aad = s.aad();
        assert_eq!(aad.len(), 76);
        assert_eq!(&aad[..22], b"POZ-v0 private-key-map");
        assert_eq!(aad[22], 0x01);
        assert_eq!(&aad[23..27], &64u32.to_be_bytes());
        assert_eq!(&aad[27..31], &1u32.to_be_bytes());
        assert_eq!(&aad[31..35], &1u32.to_be_bytes());
        assert_eq!(&aad[35..51], &s.salt);
        assert_eq!(aad[51], 0x01);
        assert_eq!(&aad[52..76], &s.nonce);
    }

    #[test]
    fn tampered_params_fail_decryption() {
        let k = SigningKey::from_seed(&[9u8; 32]);
        let mut f = KeyFile::create(&k, b"pw", FAST).unwrap();
        f.sealed.params.t_cost = 2;
        assert!(matches!(f.open(b"pw"), Err(Error::Decryption)));
    }

    #[test]
    fn hostile_kdf_cost_is_refused_at_parse() {
        let k = SigningKey::from_seed(&[9u8; 32]);
        let mut f = KeyFile::create(&k, b"pw", FAST).unwrap();
        f.sealed.params.m_cost_kib = u32::MAX;
        assert!(KeyFile::from_bytes(&f.to_bytes()).is_err());
    }
}
