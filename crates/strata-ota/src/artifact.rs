//! Checking an artifact as it streams in.

use ring::digest::{Context, SHA256};

use crate::error::Refusal;
use crate::keys::hex;
use crate::release::Artifact;

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&SHA256, bytes).as_ref())
}

/// Hashes and counts an artifact's bytes as they arrive (a resumed
/// download feeds the bytes already on disk first).
pub struct ArtifactCheck {
    expected: Artifact,
    hash: Context,
    seen: u64,
}

impl ArtifactCheck {
    /// A check against the signed artifact.
    pub fn new(expected: &Artifact) -> ArtifactCheck {
        ArtifactCheck {
            expected: expected.clone(),
            hash: Context::new(&SHA256),
            seen: 0,
        }
    }

    /// Takes the next bytes; refuses as soon as there are more than signed.
    pub fn update(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        self.seen += bytes.len() as u64;
        if self.seen > self.expected.size {
            return Err(Refusal::SizeMismatch {
                expected: self.expected.size,
                actual: self.seen,
            });
        }
        self.hash.update(bytes);
        Ok(())
    }

    /// Bytes taken so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Checks the size and hash of everything taken.
    pub fn finish(self) -> Result<(), Refusal> {
        if self.seen != self.expected.size {
            return Err(Refusal::SizeMismatch {
                expected: self.expected.size,
                actual: self.seen,
            });
        }
        let actual = hex(self.hash.finish().as_ref());
        if actual != self.expected.sha256.to_ascii_lowercase() {
            return Err(Refusal::HashMismatch {
                expected: self.expected.sha256,
                actual,
            });
        }
        Ok(())
    }

    /// Checks a whole artifact at once.
    pub fn whole(expected: &Artifact, bytes: &[u8]) -> Result<(), Refusal> {
        let mut check = ArtifactCheck::new(expected);
        check.update(bytes)?;
        check.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_bytes_are_checked_by_size_and_hash() {
        let data = b"the model".to_vec();
        let signed = Artifact {
            sha256: sha256_hex(&data),
            size: data.len() as u64,
        };
        let mut c = ArtifactCheck::new(&signed);
        c.update(&data[..4]).unwrap();
        c.update(&data[4..]).unwrap();
        assert_eq!(c.seen(), 9);
        c.finish().unwrap();
        assert!(matches!(
            ArtifactCheck::whole(&signed, b"the modeL"),
            Err(Refusal::HashMismatch { .. })
        ));
        assert!(matches!(
            ArtifactCheck::whole(&signed, b"the model!"),
            Err(Refusal::SizeMismatch { actual: 10, .. })
        ));
        assert!(matches!(
            ArtifactCheck::whole(&signed, b"the"),
            Err(Refusal::SizeMismatch { actual: 3, .. })
        ));
    }
}
