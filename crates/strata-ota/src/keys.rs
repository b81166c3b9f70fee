//! Ed25519 keys (ring): a signing key pair kept as PKCS#8 (the file a
//! release key lives in), and public keys as hex with a short key id.

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

use crate::error::Refusal;

/// A signing key.
pub struct KeyPair {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("KeyPair")
            .field("public", &self.public())
            .finish()
    }
}

impl KeyPair {
    /// A new random key; returns it with its PKCS#8 encoding (to store,
    /// readable by its owner only).
    pub fn generate() -> Result<(KeyPair, Vec<u8>), Refusal> {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| Refusal::Malformed {
            what: "key",
            detail: "the system's random source failed".into(),
        })?;
        let pair = KeyPair::from_pkcs8(pkcs8.as_ref())?;
        Ok((pair, pkcs8.as_ref().to_vec()))
    }

    /// A key from its PKCS#8 encoding.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<KeyPair, Refusal> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| Refusal::Malformed {
            what: "key",
            detail: format!("not an Ed25519 PKCS#8 key: {e}"),
        })?;
        Ok(KeyPair { pair })
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(bytes)
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl PublicKey {
    /// The key as 64 hex characters.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// A key from 64 hex characters.
    pub fn from_hex(text: &str) -> Result<PublicKey, Refusal> {
        let bytes = unhex(text.trim())
            .filter(|b| b.len() == 32)
            .ok_or_else(|| Refusal::Malformed {
                what: "public key",
                detail: format!("{text:?} is not 64 hex characters"),
            })?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(PublicKey(key))
    }

    /// The first 16 bytes of the key's SHA-256, in hex: how envelopes name
    /// their signer.
    pub fn key_id(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        hex(&digest.as_ref()[..16])
    }

    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

/// Lower-case hex of `bytes` (keys, digests, signatures).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex (either case); `None` when `text` is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sign() {
        let (key, pkcs8) = KeyPair::generate().unwrap();
        let again = KeyPair::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(key.public(), again.public());
        let public = PublicKey::from_hex(&key.public().to_hex()).unwrap();
        assert_eq!(public, key.public());
        assert_eq!(public.key_id().len(), 32);
        let sig = key.sign(b"hello");
        assert!(public.verifies(b"hello", &sig));
        assert!(!public.verifies(b"hellO", &sig));
        assert!(PublicKey::from_hex("abc").is_err());
        assert!(KeyPair::from_pkcs8(b"not a key").is_err());
        assert!(!format!("{key:?}").contains(&hex(&pkcs8)));
    }
}
