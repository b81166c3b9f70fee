//! [`CertificateStore`] for SQLite.

use rusqlite::params;

use super::SqliteStore;
use crate::certs::{CertificateStore, DeviceCertificate};
use crate::error::{Context, Error, Result};

impl CertificateStore for SqliteStore {
    fn add_certificate(&self, c: &DeviceCertificate) -> Result<()> {
        self.write(|w| {
            w.conn
                .execute(
                    "INSERT INTO device_certificates (sha256, device_id, issued_ns, not_after_ns)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![c.sha256, c.device.as_str(), c.issued_ns, c.not_after_ns],
                )
                .map(drop)
                .context(|| format!("cannot record a certificate of {}", c.device))
        })
    }

    fn valid_certificates(&self, now_ns: i64) -> Result<Vec<DeviceCertificate>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT sha256, device_id, issued_ns, not_after_ns FROM device_certificates
                     WHERE not_after_ns > ?1 ORDER BY issued_ns",
                )
                .context(|| "cannot read certificates".into())?;
            let rows = stmt
                .query_map(params![now_ns], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .context(|| "cannot read certificates".into())?;
            rows.into_iter()
                .map(|(sha256, device, issued_ns, not_after_ns)| {
                    Ok(DeviceCertificate {
                        sha256,
                        device: strata_proto::DeviceId::new(device)
                            .map_err(|e| Error::Corrupt(format!("certificate device: {e}")))?,
                        issued_ns,
                        not_after_ns,
                    })
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Durability;

    #[test]
    fn only_valid_certificates_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
        let cert = |sha: &str, not_after_ns| DeviceCertificate {
            sha256: sha.into(),
            device: strata_proto::DeviceId::new("press-1").unwrap(),
            issued_ns: 1,
            not_after_ns,
        };
        store.add_certificate(&cert("a", 10)).unwrap();
        store.add_certificate(&cert("b", 20)).unwrap();
        assert!(store.add_certificate(&cert("b", 20)).is_err());
        let valid = store.valid_certificates(15).unwrap();
        assert_eq!(valid, vec![cert("b", 20)]);
    }
}
