//! The key that seals secret values at rest: AES-256-GCM (ring), a fresh random nonce
//! per write, the value bound to its agent, scope and name as additional data, and the
//! key's id stored beside each value so a later key can tell which values it did not
//! seal.
//!
//! The key comes from `SWITCHYARD_SECRET_KEY` (base64 of 32 bytes) or, beside a SQLite
//! store, from a key file generated on first start ([`crate::bootstrap`]). Nothing
//! here logs or formats a value or the key.

use crate::domain::Sealed;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::{Digest, Sha256};

/// Bytes in a key.
pub const KEY_LEN: usize = 32;

/// A sealing key and its id.
pub struct SecretKey {
    id: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

/// Why a value could not be sealed or opened. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the secret key must be base64 of 32 bytes (got {0})")]
    BadKey(String),
    #[error("sealed with key {found}, but this node's key is {ours}")]
    OtherKey { found: String, ours: String },
    #[error("the value does not open with this key: the stored row was altered or moved")]
    Corrupt,
    #[error("no randomness from the operating system")]
    NoRandomness,
}

impl SecretKey {
    pub fn from_bytes(raw: &[u8]) -> Result<Self, SealError> {
        if raw.len() != KEY_LEN {
            return Err(SealError::BadKey(format!("{} bytes", raw.len())));
        }
        let key = UnboundKey::new(&AES_256_GCM, raw)
            .map_err(|_| SealError::BadKey("a key ring refuses".into()))?;
        let digest = Sha256::new()
            .chain_update(b"switchyard secret key id\0")
            .chain_update(raw)
            .finalize();
        Ok(Self {
            id: format!("k{}", hex::encode(&digest[..6])),
            key: LessSafeKey::new(key),
        })
    }

    /// A key written as base64 (standard alphabet, padding optional; surrounding
    /// whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| SealError::BadKey("text that is not base64".into()))?;
        Self::from_bytes(&raw)
    }

    /// A new random key, as base64 (for a key file).
    pub fn generate() -> Result<String, SealError> {
        let mut raw = [0u8; KEY_LEN];
        getrandom::fill(&mut raw).map_err(|_| SealError::NoRandomness)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(raw))
    }

    /// The key's id: a name for it derived from it, safe to store and show.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `value` bound to `binding` ([`crate::domain::secret::binding`]).
    pub fn seal(&self, binding: &[u8], value: &[u8]) -> Result<Sealed, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealError::NoRandomness)?;
        let mut buf = value.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(binding),
                &mut buf,
            )
            .map_err(|_| SealError::Corrupt)?;
        Ok(Sealed {
            key_id: self.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext: buf,
        })
    }

    /// Opens a value sealed with this key and `binding`.
    pub fn open(&self, binding: &[u8], sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        if sealed.key_id != self.id {
            return Err(SealError::OtherKey {
                found: sealed.key_id.clone(),
                ours: self.id.clone(),
            });
        }
        let nonce: [u8; NONCE_LEN] = sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| SealError::Corrupt)?;
        let mut buf = sealed.ciphertext.clone();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(binding),
                &mut buf,
            )
            .map_err(|_| SealError::Corrupt)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_base64(&SecretKey::generate().unwrap()).unwrap()
    }

    #[test]
    fn a_value_opens_only_with_its_key_and_binding() {
        let k = key();
        let s = k.seal(b"bot\0*\0KEY", b"sk-live-1").unwrap();
        assert_eq!(k.open(b"bot\0*\0KEY", &s).unwrap(), b"sk-live-1");
        assert!(!s.ciphertext.windows(9).any(|w| w == b"sk-live-1"));
        // a fresh nonce per write
        let t = k.seal(b"bot\0*\0KEY", b"sk-live-1").unwrap();
        assert_ne!(s.nonce, t.nonce);
        assert_ne!(s.ciphertext, t.ciphertext);
        // moved to another row
        assert_eq!(k.open(b"bot\0prod\0KEY", &s), Err(SealError::Corrupt));
        // altered
        let mut bad = s.clone();
        bad.ciphertext[0] ^= 1;
        assert_eq!(k.open(b"bot\0*\0KEY", &bad), Err(SealError::Corrupt));
        // another key says which one it needs
        let other = key();
        assert!(matches!(
            other.open(b"bot\0*\0KEY", &s),
            Err(SealError::OtherKey { .. })
        ));
        assert!(!format!("{s:?}{k:?}").contains("sk-live"));
    }

    #[test]
    fn keys_are_32_bytes_of_base64() {
        assert!(SecretKey::from_base64("not base64!").is_err());
        assert!(SecretKey::from_base64("c2hvcnQ=").is_err());
        let text = SecretKey::generate().unwrap();
        let a = SecretKey::from_base64(&format!(" {text}\n")).unwrap();
        let b = SecretKey::from_base64(text.trim_end_matches('=')).unwrap();
        assert_eq!(a.id(), b.id());
        assert!(a.id().starts_with('k') && a.id().len() == 13);
    }
}
