//! Signed documents: the signature covers the payload's exact bytes behind
//! a context string naming the document type, so what is signed is what is
//! parsed (no canonical JSON) and a release signature can never pass for an
//! assignment's.

use serde::{Deserialize, Serialize};

use crate::error::Refusal;
use crate::keys::{KeyPair, PublicKey, hex, unhex};

/// The signed document types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentType {
    /// A release (release key).
    Release,
    /// A rollout assignment (rollout key).
    Assignment,
}

impl DocumentType {
    fn context(self) -> &'static [u8] {
        match self {
            DocumentType::Release => b"strata-release-v1\n",
            DocumentType::Assignment => b"strata-assignment-v1\n",
        }
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            DocumentType::Release => "release",
            DocumentType::Assignment => "assignment",
        }
    }

    fn role(self) -> &'static str {
        match self {
            DocumentType::Release => "release",
            DocumentType::Assignment => "rollout",
        }
    }
}

/// A signed document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The document, as JSON text.
    pub payload: String,
    /// Which key signed it ([`PublicKey::key_id`]).
    pub key_id: String,
    /// The Ed25519 signature, hex.
    pub signature: String,
}

fn message(kind: DocumentType, payload: &str) -> Vec<u8> {
    let mut m = kind.context().to_vec();
    m.extend_from_slice(payload.as_bytes());
    m
}

impl Envelope {
    /// Signs `document` as JSON.
    pub fn sign<T: Serialize>(kind: DocumentType, document: &T, key: &KeyPair) -> Envelope {
        let payload = serde_json::to_string(document).expect("JSON of a document");
        let signature = hex(&key.sign(&message(kind, &payload)));
        Envelope {
            payload,
            key_id: key.public().key_id(),
            signature,
        }
    }

    /// The SHA-256 of the payload, hex: how an assignment names its release.
    pub fn digest(&self) -> String {
        crate::artifact::sha256_hex(self.payload.as_bytes())
    }

    /// Checks the signature against the keys trusted for this document
    /// type, and parses the payload.
    pub fn open<T: serde::de::DeserializeOwned>(
        &self,
        kind: DocumentType,
        trusted: &[PublicKey],
    ) -> Result<T, Refusal> {
        let key = trusted
            .iter()
            .find(|k| k.key_id() == self.key_id)
            .ok_or_else(|| Refusal::UnknownKey {
                document: kind.name(),
                key_id: self.key_id.clone(),
                role: kind.role(),
            })?;
        let signature = unhex(&self.signature).ok_or(Refusal::BadSignature {
            document: kind.name(),
        })?;
        if !key.verifies(&message(kind, &self.payload), &signature) {
            return Err(Refusal::BadSignature {
                document: kind.name(),
            });
        }
        serde_json::from_str(&self.payload).map_err(|e| Refusal::Malformed {
            what: kind.name(),
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_the_payload_and_the_document_type() {
        let (key, _) = KeyPair::generate().unwrap();
        let trusted = [key.public()];
        let env = Envelope::sign(DocumentType::Release, &serde_json::json!({"a": 1}), &key);
        let v: serde_json::Value = env.open(DocumentType::Release, &trusted).unwrap();
        assert_eq!(v["a"], 1);
        // The same bytes do not pass as another document type.
        assert!(matches!(
            env.open::<serde_json::Value>(DocumentType::Assignment, &trusted),
            Err(Refusal::BadSignature { .. })
        ));
        // One changed byte breaks it.
        let mut edited = env.clone();
        edited.payload = edited.payload.replace('1', "2");
        assert!(matches!(
            edited.open::<serde_json::Value>(DocumentType::Release, &trusted),
            Err(Refusal::BadSignature { .. })
        ));
        // Another key is not trusted.
        let (other, _) = KeyPair::generate().unwrap();
        assert!(matches!(
            env.open::<serde_json::Value>(DocumentType::Release, &[other.public()]),
            Err(Refusal::UnknownKey {
                role: "release",
                ..
            })
        ));
    }
}
