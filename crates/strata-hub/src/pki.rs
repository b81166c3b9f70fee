//! The platform CA: the hub's own certificate authority (`rcgen`), which
//! signs a short-lived certificate for every enrolled device and the
//! server certificates of the MQTT TLS and HTTPS listeners (90 days each,
//! made anew at two thirds of their life by the first handshake after,
//! so a hub that runs for years never presents an expired one).
//!
//! The CA key stays in `ca.key` (PKCS#8, readable by the hub only); its
//! certificate, the trust anchor devices pin, is `ca.pem`. A device keeps
//! its private key: it sends only its public key (SubjectPublicKeyInfo,
//! ECDSA P-256 or Ed25519) and gets back a certificate naming it (CN and a
//! `spiffe://strata/device/{id}` URI). Each issued certificate is recorded
//! by its SHA-256, which is how the broker maps a client certificate to a
//! device: the TLS layer checks the chain and validity, the registry the
//! device's state.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SignatureAlgorithm,
};
use serde::Serialize;
use strata_broker::rustls;
use strata_proto::DeviceId;
use strata_store::{CertificateStore, DeviceCertificate};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::now_ns;

/// The CA's private key in the data directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// The CA's certificate in the data directory: what devices trust.
pub const CA_CERT_FILE: &str = "ca.pem";

const CA_NAME: &str = "Strata platform CA";
const NS: i64 = 1_000_000_000;
/// Clocks of devices and hub may disagree by this much.
const CLOCK_SKEW_S: i64 = 300;

/// A certificate issued to a device.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IssuedCertificate {
    /// The device's certificate, PEM.
    pub certificate_pem: String,
    /// The CA certificate to trust for the hub's server certificate, PEM.
    pub ca_pem: String,
    /// SHA-256 of the certificate's DER, hex.
    pub sha256: String,
    /// When it expires, ns: renew before.
    pub not_after_ns: i64,
}

/// The platform CA.
pub struct Pki {
    ca_key: KeyPair,
    ca_params: CertificateParams,
    ca_pem: String,
    ca_der: Vec<u8>,
    store: Arc<dyn CertificateStore>,
    device_ttl_s: u64,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("device_ttl_s", &self.device_ttl_s)
            .finish_non_exhaustive()
    }
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "Strata");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn unavailable(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("{what} {}: {e}", path.display()))
}

impl Pki {
    /// Opens the CA in `data_dir`, making it on first start; device
    /// certificates will live `device_ttl_s`.
    pub fn open(
        data_dir: &Path,
        store: Arc<dyn CertificateStore>,
        device_ttl_s: u64,
    ) -> Result<Pki> {
        let key_path = data_dir.join(CA_KEY_FILE);
        let cert_path = data_dir.join(CA_CERT_FILE);
        let mut params = ca_params();
        let (ca_key, ca_pem) = match std::fs::read(&key_path) {
            Ok(der) => {
                let key = KeyPair::try_from(der.as_slice())
                    .map_err(|e| unavailable("cannot use", &key_path, e))?;
                let pem = std::fs::read_to_string(&cert_path)
                    .map_err(|e| unavailable("cannot read", &cert_path, e))?;
                (key, pem)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key =
                    KeyPair::generate().map_err(|e| unavailable("cannot make", &key_path, e))?;
                let now = time::OffsetDateTime::now_utc();
                params.not_before = now - time::Duration::seconds(CLOCK_SKEW_S);
                params.not_after = now + time::Duration::days(3650);
                let cert = params
                    .self_signed(&key)
                    .map_err(|e| unavailable("cannot sign", &cert_path, e))?;
                crate::write_private(&key_path, &key.serialize_der())
                    .map_err(|e| unavailable("cannot write", &key_path, e))?;
                std::fs::write(&cert_path, cert.pem())
                    .map_err(|e| unavailable("cannot write", &cert_path, e))?;
                tracing::info!(path = %cert_path.display(), "created the platform CA");
                (key, cert.pem())
            }
            Err(e) => return Err(unavailable("cannot read", &key_path, e)),
        };
        let ca_der = pem_body(&ca_pem)
            .ok_or_else(|| unavailable("cannot use", &cert_path, "not a PEM certificate"))?;
        Ok(Pki {
            ca_key,
            ca_params: params,
            ca_pem,
            ca_der,
            store,
            device_ttl_s,
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.ca_params, &self.ca_key)
    }

    /// Whether `spki_der` is a key [`Pki::issue`] takes (a clear error when
    /// not), to check before anything is spent on it.
    pub fn check_public_key(spki_der: &[u8]) -> Result<()> {
        DevicePublicKey::from_spki(spki_der).map(|_| ())
    }

    /// Signs a certificate for `device` over its public key (DER
    /// SubjectPublicKeyInfo) and records it.
    pub fn issue(&self, device: &DeviceId, spki_der: &[u8]) -> Result<IssuedCertificate> {
        let public = DevicePublicKey::from_spki(spki_der)?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device.as_str());
        p.distinguished_name = dn;
        let uri = format!("spiffe://strata/device/{device}");
        p.subject_alt_names =
            vec![SanType::URI(uri.as_str().try_into().map_err(|_| {
                Error::BadRequest(format!("{uri} is not a URI"))
            })?)];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::seconds(CLOCK_SKEW_S);
        p.not_after = now + time::Duration::seconds(self.device_ttl_s as i64);
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial)
            .map_err(|e| Error::Unavailable(format!("no random serial: {e}")))?;
        serial[0] &= 0x7f;
        p.serial_number = Some(serial.to_vec().into());
        let cert = p.signed_by(&public, &self.issuer()).map_err(|e| {
            Error::Unavailable(format!("cannot sign a certificate for {device}: {e}"))
        })?;
        let sha256 = crate::audit::chain::hex(&crate::secret::hash(cert.der()));
        let not_after_ns = now_ns() + self.device_ttl_s as i64 * NS;
        self.store.add_certificate(&DeviceCertificate {
            sha256: sha256.clone(),
            device: device.clone(),
            issued_ns: now_ns(),
            not_after_ns,
        })?;
        Ok(IssuedCertificate {
            certificate_pem: cert.pem(),
            ca_pem: self.ca_pem.clone(),
            sha256,
            not_after_ns,
        })
    }

    /// Certificates still valid, to fill the registry's index.
    pub fn valid_certificates(&self) -> Result<Vec<DeviceCertificate>> {
        Ok(self.store.valid_certificates(now_ns())?)
    }

    /// The MQTT TLS listener's configuration: a server certificate for
    /// `names` (and localhost) signed by the CA, renewed before it expires
    /// ([`ServerCertificate`]), and client certificates required, chained
    /// to the CA.
    pub fn server_config(self: &Arc<Self>, names: &[String]) -> Result<Arc<rustls::ServerConfig>> {
        self.make_server_config(names, true)
    }

    /// The HTTPS listener's configuration: the same kind of server
    /// certificate, and no client certificate asked for (API callers
    /// authenticate with tokens, devices with their credential).
    pub fn https_config(self: &Arc<Self>, names: &[String]) -> Result<Arc<rustls::ServerConfig>> {
        self.make_server_config(names, false)
    }

    fn make_server_config(
        self: &Arc<Self>,
        names: &[String],
        client_certificates: bool,
    ) -> Result<Arc<rustls::ServerConfig>> {
        let certificate = ServerCertificate::new(self.clone(), names, SERVER_CERT_LIFETIME_S)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca_der.clone().into())
            .map_err(|e| Error::Unavailable(format!("the CA certificate is unusable: {e}")))?;
        let tls_error = |e: rustls::Error| Error::Unavailable(format!("TLS configuration: {e}"));
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| Error::Unavailable(format!("client certificate verifier: {e}")))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?;
        let builder = if client_certificates {
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        Ok(Arc::new(builder.with_cert_resolver(Arc::new(certificate))))
    }

    /// A new server certificate for `names` (and localhost) and its key,
    /// valid from a little before `now_ns` for `lifetime_s`.
    fn new_server_certificate(
        &self,
        names: &[String],
        now_ns: i64,
        lifetime_s: i64,
    ) -> Result<rustls::sign::CertifiedKey> {
        let key =
            KeyPair::generate().map_err(|e| Error::Unavailable(format!("server key: {e}")))?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Strata hub");
        p.distinguished_name = dn;
        let mut sans = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        sans.extend(names.iter().cloned());
        sans.dedup();
        for name in sans {
            p.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.as_str().try_into().map_err(|_| {
                    Error::BadRequest(format!("server name {name:?} is not a DNS name"))
                })?),
            });
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ns))
            .map_err(|e| Error::Unavailable(format!("the clock: {e}")))?;
        p.not_before = now - time::Duration::seconds(CLOCK_SKEW_S);
        p.not_after = now + time::Duration::seconds(lifetime_s);
        let cert = p
            .signed_by(&key, &self.issuer())
            .map_err(|e| Error::Unavailable(format!("cannot sign the server certificate: {e}")))?;
        rustls::sign::CertifiedKey::from_der(
            vec![cert.der().clone(), self.ca_der.clone().into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            &rustls::crypto::ring::default_provider(),
        )
        .map_err(|e| Error::Unavailable(format!("TLS configuration: {e}")))
    }
}

/// How long a server certificate lasts.
const SERVER_CERT_LIFETIME_S: i64 = 90 * 24 * 3600;

/// The hub's server certificate for one listener, made anew by the CA
/// before it expires: each TLS handshake takes the current one, and the
/// first handshake past two thirds of its life makes the next, so a hub
/// that runs for years never serves an expired certificate. If making one
/// fails, the current one stays and the next handshake a minute later
/// tries again.
#[derive(Debug)]
pub struct ServerCertificate {
    pki: Arc<Pki>,
    names: Vec<String>,
    lifetime_s: i64,
    current: std::sync::RwLock<Current>,
}

#[derive(Debug)]
struct Current {
    key: Arc<rustls::sign::CertifiedKey>,
    not_after_ns: i64,
    renew_at_ns: i64,
}

impl ServerCertificate {
    /// A certificate for `names` lasting `lifetime_s`, made now.
    pub fn new(pki: Arc<Pki>, names: &[String], lifetime_s: i64) -> Result<ServerCertificate> {
        let current = Self::make(&pki, names, lifetime_s, now_ns())?;
        Ok(ServerCertificate {
            pki,
            names: names.to_vec(),
            lifetime_s,
            current: std::sync::RwLock::new(current),
        })
    }

    fn make(pki: &Pki, names: &[String], lifetime_s: i64, now: i64) -> Result<Current> {
        let key = pki.new_server_certificate(names, now, lifetime_s)?;
        let life_ns = lifetime_s.saturating_mul(NS);
        Ok(Current {
            key: Arc::new(key),
            not_after_ns: now.saturating_add(life_ns),
            renew_at_ns: now.saturating_add(life_ns / 3 * 2),
        })
    }

    /// The certificate to present at `now`, and when it expires.
    pub fn at(&self, now: i64) -> (Arc<rustls::sign::CertifiedKey>, i64) {
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if now < current.renew_at_ns {
                return (current.key.clone(), current.not_after_ns);
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if now >= current.renew_at_ns {
            match Self::make(&self.pki, &self.names, self.lifetime_s, now) {
                Ok(next) => {
                    *current = next;
                    tracing::info!("renewed the hub's TLS server certificate");
                }
                Err(e) => {
                    current.renew_at_ns = now.saturating_add(60 * NS);
                    tracing::error!("cannot renew the hub's TLS server certificate: {e}");
                }
            }
        }
        (current.key.clone(), current.not_after_ns)
    }
}

impl rustls::server::ResolvesServerCert for ServerCertificate {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.at(now_ns()).0)
    }
}

/// A device's public key, from its SubjectPublicKeyInfo.
struct DevicePublicKey {
    raw: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

/// SubjectPublicKeyInfo prefixes of the key types devices may use.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const ED25519_SPKI_PREFIX: &[u8] = &[
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

impl DevicePublicKey {
    fn from_spki(der: &[u8]) -> Result<DevicePublicKey> {
        let (alg, prefix, len) = if der.starts_with(P256_SPKI_PREFIX) {
            (&rcgen::PKCS_ECDSA_P256_SHA256, P256_SPKI_PREFIX, 65)
        } else if der.starts_with(ED25519_SPKI_PREFIX) {
            (&rcgen::PKCS_ED25519, ED25519_SPKI_PREFIX, 32)
        } else {
            return Err(Error::BadRequest(
                "the public key must be an ECDSA P-256 or Ed25519 SubjectPublicKeyInfo (DER)"
                    .into(),
            ));
        };
        let raw = &der[prefix.len()..];
        if raw.len() != len || (len == 65 && raw[0] != 0x04) {
            return Err(Error::BadRequest(
                "the public key is truncated or malformed".into(),
            ));
        }
        Ok(DevicePublicKey {
            raw: raw.to_vec(),
            alg,
        })
    }
}

impl PublicKeyData for DevicePublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// The DER inside the first PEM block of `pem`.
pub fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    crate::secret::base64_decode(body.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::{Durability, SqliteStore};

    #[test]
    fn the_server_certificate_is_made_anew_before_it_expires() {
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::{ServerName, UnixTime};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), Durability::Process).unwrap());
        let pki = Arc::new(Pki::open(dir.path(), store, 3600).unwrap());
        let server =
            ServerCertificate::new(pki.clone(), &["hub.plant.example".into()], 3000).unwrap();
        let now = now_ns();
        let (first, first_end) = server.at(now);
        // Until two thirds of its life, the same certificate.
        let (same, _) = server.at(now + 1999 * NS);
        assert!(Arc::ptr_eq(&first, &same));
        // Past them, a new one, which lasts longer.
        let (second, second_end) = server.at(now + 2001 * NS);
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(second_end > first_end);
        assert!(Arc::ptr_eq(&server.at(now + 2002 * NS).0, &second));

        // When the first has expired, a client that trusts the CA refuses
        // it and accepts the second, for the configured name.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pem_body(pki.ca_pem()).unwrap().into()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let at =
            UnixTime::since_unix_epoch(std::time::Duration::from_nanos((now + 3100 * NS) as u64));
        let name = ServerName::try_from("hub.plant.example").unwrap();
        let check = |key: &rustls::sign::CertifiedKey| {
            verifier.verify_server_cert(&key.cert[0], &key.cert[1..], &name, &[], at)
        };
        assert!(check(&first).is_err());
        assert!(check(&second).is_ok());
    }

    #[test]
    fn device_certificates_chain_to_the_ca_and_the_ca_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), Durability::Process).unwrap());
        let pki = Pki::open(dir.path(), store.clone(), 3600).unwrap();
        let device_key = KeyPair::generate().unwrap();
        let device = DeviceId::new("press-1").unwrap();
        let issued = pki
            .issue(&device, &device_key.subject_public_key_info())
            .unwrap();
        assert!(
            issued
                .certificate_pem
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        let der = pem_body(&issued.certificate_pem).unwrap();
        assert_eq!(
            issued.sha256,
            crate::audit::chain::hex(&crate::secret::hash(&der))
        );

        // rustls's verifier (the one the listener uses) accepts it for client auth.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pem_body(pki.ca_pem()).unwrap().into()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_client_cert(&der.clone().into(), &[], now)
            .unwrap();

        // Reopened: the same CA, the certificate still recorded.
        let again = Arc::new(Pki::open(dir.path(), store, 3600).unwrap());
        assert_eq!(again.ca_pem(), pki.ca_pem());
        assert_eq!(again.valid_certificates().unwrap()[0].sha256, issued.sha256);
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        again.issue(&device, &ed.subject_public_key_info()).unwrap();
        again.server_config(&["hub.plant.example".into()]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0);
        }
    }

    #[test]
    fn other_keys_are_refused() {
        assert!(DevicePublicKey::from_spki(b"not a key").is_err());
        let rsa_like = [0x30, 0x82, 0x01, 0x22];
        assert!(DevicePublicKey::from_spki(&rsa_like).is_err());
        let mut short = P256_SPKI_PREFIX.to_vec();
        short.extend([4u8; 10]);
        assert!(DevicePublicKey::from_spki(&short).is_err());
    }
}
