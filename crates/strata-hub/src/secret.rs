//! One-time enrollment tokens and device credentials.
//!
//! Both are 256 random bits, shown once and stored only as SHA-256 hashes.
//! A slow password hash would add nothing for secrets of that entropy and
//! would make every reconnect of a large fleet expensive.

use sha2::{Digest, Sha256};

/// Prefix of enrollment tokens, so secret scanners can recognise them.
pub const TOKEN_PREFIX: &str = "stet_";
/// Prefix of device credentials.
pub const CREDENTIAL_PREFIX: &str = "stdc_";

/// A new random secret with `prefix`, as text.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    let mut s = String::with_capacity(prefix.len() + 64);
    s.push_str(prefix);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// SHA-256 of a secret's text.
pub fn hash(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Compares two hashes in constant time.
pub fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_and_prefixed() {
        let a = generate(TOKEN_PREFIX);
        let b = generate(TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("stet_") && a.len() == 69);
        assert!(same(&hash(a.as_bytes()), &hash(a.as_bytes())));
        assert!(!same(&hash(a.as_bytes()), &hash(b.as_bytes())));
    }
}
