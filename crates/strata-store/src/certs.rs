//! Device certificates issued by the hub's platform CA, kept by their
//! SHA-256 so the broker can map a client certificate to its device.

use serde::{Deserialize, Serialize};
use strata_proto::DeviceId;

use crate::Result;

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceCertificate {
    /// SHA-256 of the certificate's DER, in hex.
    pub sha256: String,
    /// The device it names.
    pub device: DeviceId,
    /// When it was issued, ns.
    pub issued_ns: i64,
    /// When it stops being valid, ns.
    pub not_after_ns: i64,
}

/// Where issued certificates go.
pub trait CertificateStore: Send + Sync + 'static {
    /// Records an issued certificate.
    fn add_certificate(&self, cert: &DeviceCertificate) -> Result<()>;
    /// Certificates still valid at `now_ns`.
    fn valid_certificates(&self, now_ns: i64) -> Result<Vec<DeviceCertificate>>;
}
