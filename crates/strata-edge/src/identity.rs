//! The gateway's identity for MQTT over TLS: its own private key, the
//! certificate the hub's platform CA issued for it, and the CA it trusts,
//! in one directory; and the renewal that replaces the key and certificate
//! before the certificate expires.
//!
//! The directory holds `device.key` (PKCS#8 PEM, readable by the agent
//! only), `device.pem`, `ca.pem` and `certificate.json` (when it was issued
//! and when it expires). The private key never leaves the gateway: renewal
//! makes a new key here and sends the hub only its public half.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// The private key's file.
pub const KEY_FILE: &str = "device.key";
/// The certificate's file.
pub const CERT_FILE: &str = "device.pem";
/// The CA certificate's file.
pub const CA_FILE: &str = "ca.pem";
/// When the certificate was issued and expires.
pub const META_FILE: &str = "certificate.json";

/// What the hub says about a certificate it issued (its `IssuedCertificate`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// When it expires, ns.
    pub not_after_ns: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    issued_ns: i64,
    not_after_ns: i64,
}

/// A new ECDSA P-256 key: its PKCS#8 DER and its SubjectPublicKeyInfo DER.
pub fn generate_key() -> Result<(Vec<u8>, Vec<u8>), String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| "the system's random source failed".to_string())?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|e| format!("cannot use a new key: {e}"))?;
    // SubjectPublicKeyInfo for id-ecPublicKey on prime256v1, then the point.
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    Ok((pkcs8.as_ref().to_vec(), spki))
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        for _ in chunk.len()..3 {
            out.push('=');
        }
    }
    out
}

/// `der` as a PEM block labelled `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes a file through a temporary one and a rename, so a crash leaves
/// the old or the new file, never half of one.
fn replace(path: &Path, bytes: &[u8], private: bool) -> Result<(), String> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let _ = private;
    let write = || -> std::io::Result<()> {
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        crate::rename_durably(&tmp, path)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Stores a key and the certificate the hub issued for it in `dir`.
pub fn store(dir: &Path, pkcs8: &[u8], issued: &Issued, now_ns: i64) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // The key first: a certificate without its key would be useless, a key
    // without its certificate is renewed again.
    replace(
        &dir.join(KEY_FILE),
        pem("PRIVATE KEY", pkcs8).as_bytes(),
        true,
    )?;
    replace(
        &dir.join(CERT_FILE),
        issued.certificate_pem.as_bytes(),
        false,
    )?;
    replace(&dir.join(CA_FILE), issued.ca_pem.as_bytes(), false)?;
    let meta = Meta {
        issued_ns: now_ns,
        not_after_ns: issued.not_after_ns,
    };
    replace(
        &dir.join(META_FILE),
        serde_json::to_string(&meta).expect("JSON").as_bytes(),
        false,
    )
}

/// The rustls client configuration for the identity in `dir`: trust the
/// CA, present the device certificate.
pub fn client_config(dir: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let read = |name: &str| -> Result<Vec<u8>, String> {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let (ca, cert, key) = (read(CA_FILE)?, read(CERT_FILE)?, read(KEY_FILE)?);
    client_config_from_pem(&ca, &cert, &key).map_err(|e| format!("{}: {e}", dir.display()))
}

/// The same from PEM text: the CA, the device certificate, its key.
pub fn client_config_from_pem(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let bad = |name: &str, e: &dyn std::fmt::Display| format!("{name}: {e}");
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(ca.map_err(|e| bad(CA_FILE, &e))?)
            .map_err(|e| bad(CA_FILE, &e))?;
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(CERT_FILE, &e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad(KEY_FILE, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad(CERT_FILE, &e))?;
    Ok(Arc::new(config))
}

/// When the certificate in `dir` is due for renewal: at two thirds of its
/// life. `None` when there is no record of it (renew now).
pub fn renewal_due_ns(dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join(META_FILE)).ok()?;
    let meta: Meta = serde_json::from_str(&text).ok()?;
    Some(meta.issued_ns + (meta.not_after_ns - meta.issued_ns) * 2 / 3)
}

/// The longest the renewal task sleeps before it reads the clock again.
const LOOK_AGAIN: Duration = Duration::from_secs(3600);

/// An HTTP client for the hub's API. With an identity directory (`[hub]
/// tls_dir`), an `https://` hub must present a certificate that chains to
/// the directory's `ca.pem`, and no other CA is trusted; without one, only
/// `http://` works.
pub fn hub_agent(tls_dir: Option<&Path>, timeout: Option<Duration>) -> Result<ureq::Agent, String> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(timeout);
    if let Some(dir) = tls_dir {
        let path = dir.join(CA_FILE);
        let pem =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certificates: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certificates.is_empty() {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certificates)))
                .build(),
        );
    }
    Ok(config.build().into())
}

/// The longest a renewal request may take: a hub that hangs must not keep
/// the agent from trying again before its certificate runs out.
const RENEWAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and as whom to renew.
#[derive(Debug, Clone)]
pub struct Renewal {
    /// The identity directory.
    pub dir: PathBuf,
    /// The hub's HTTP address.
    pub hub_http: String,
    /// The device id.
    pub device: String,
    /// The device credential (HTTP Basic auth for the renewal request).
    pub credential: String,
}

impl Renewal {
    /// Makes a new key, asks the hub for a certificate for it, stores both.
    pub fn renew_now(&self) -> Result<Issued, String> {
        let (pkcs8, spki) = generate_key()?;
        let url = format!(
            "{}/api/v1/device/certificate",
            self.hub_http.trim_end_matches('/')
        );
        let auth = format!(
            "Basic {}",
            base64(format!("{}:{}", self.device, self.credential).as_bytes())
        );
        let body = serde_json::json!({ "public_key": base64(&spki) }).to_string();
        let mut response = hub_agent(Some(&self.dir), Some(RENEWAL_TIMEOUT))?
            .post(&url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "the hub refused to renew the certificate: {status} {text}"
            ));
        }
        let issued: Issued =
            serde_json::from_str(&text).map_err(|e| format!("{url}: unexpected answer: {e}"))?;
        store(&self.dir, &pkcs8, &issued, crate::now_ns())?;
        Ok(issued)
    }

    /// Renews whenever the certificate is due, until the task is dropped;
    /// a failed attempt is retried with backoff well before expiry.
    pub async fn run(self) {
        let mut backoff =
            crate::uplink::Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        loop {
            let due = renewal_due_ns(&self.dir).unwrap_or(0);
            let wait_ns = (due - crate::now_ns()).max(0);
            // The due time is on the wall clock, the sleep on the monotonic
            // one: a gateway that booted with its clock decades behind (no
            // RTC, before NTP) looks again within the hour, not in decades.
            if wait_ns > 0 {
                let wait = Duration::from_nanos(wait_ns as u64).min(LOOK_AGAIN);
                tokio::time::sleep(wait).await;
                continue;
            }
            let job = self.clone();
            match tokio::task::spawn_blocking(move || job.renew_now()).await {
                Ok(Ok(issued)) => {
                    backoff.reset();
                    tracing::info!(
                        device = self.device,
                        not_after_ns = issued.not_after_ns,
                        "renewed the device certificate"
                    );
                }
                Ok(Err(e)) => {
                    let delay = backoff.next_delay().max(Duration::from_secs(1));
                    tracing::warn!(
                        device = self.device,
                        "certificate renewal failed ({e}); retrying in {delay:?}"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) => tracing::error!("certificate renewal task failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_has_a_p256_public_key_and_base64_matches_the_standard() {
        let (pkcs8, spki) = generate_key().unwrap();
        assert_eq!(spki.len(), 91);
        assert_eq!(spki[26], 0x04);
        assert!(PrivateKeyDer::from_pem_slice(pem("PRIVATE KEY", &pkcs8).as_bytes()).is_ok());
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_life() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(renewal_due_ns(dir.path()), None);
        let issued = Issued {
            certificate_pem: String::new(),
            ca_pem: String::new(),
            not_after_ns: 3_000,
        };
        store(dir.path(), b"key", &issued, 0).unwrap();
        assert_eq!(renewal_due_ns(dir.path()), Some(2_000));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0);
        }
    }
}
