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

/// Decodes standard base64 (with or without padding), as HTTP Basic auth
/// sends it; `None` when it is not base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.as_bytes().chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_basic_auth() {
        assert_eq!(
            base64_decode("bWFjaGluZS0wMTpzZWNyZXQ=").unwrap(),
            b"machine-01:secret"
        );
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI").unwrap(), b"ab");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("YW!=").is_none());
    }

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
