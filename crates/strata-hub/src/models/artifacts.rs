//! Content-addressed artifacts: `artifacts/sha256/<hex>` in the hub's data
//! directory, or `<prefix>sha256/<hex>` in a bucket of S3-compatible object
//! storage ([`super::s3`]). A file's name is its hash, so the same model
//! uploaded twice is stored once, and every read is checked against the
//! name: a file changed where it is kept is refused, never served.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_ota::sha256_hex;

use super::s3::S3Bucket;
use crate::config::ArtifactsConfig;
use crate::error::{Error, Result};

/// Where the artifacts are kept.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    place: Place,
}

#[derive(Debug, Clone)]
enum Place {
    /// A directory on local disk.
    Disk(PathBuf),
    /// A bucket.
    Bucket(Arc<S3Bucket>),
}

/// Whether `s` looks like a SHA-256 in lower-case hex.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Unavailable(format!("{context}: {e}"))
}

impl ArtifactStore {
    /// Opens (creating) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let root = data_dir.join("artifacts").join("sha256");
        std::fs::create_dir_all(&root).map_err(io(format!("cannot create {}", root.display())))?;
        Ok(ArtifactStore {
            place: Place::Disk(root),
        })
    }

    /// The store `config` asks for: its bucket, checked to be reachable,
    /// else the directory under `data_dir`.
    pub fn open_configured(config: &ArtifactsConfig, data_dir: &Path) -> Result<Self> {
        match &config.s3 {
            Some(s3) => {
                let bucket = S3Bucket::open(s3)?;
                tracing::info!(place = %bucket.describe(), "artifacts in S3-compatible storage");
                Ok(ArtifactStore {
                    place: Place::Bucket(Arc::new(bucket)),
                })
            }
            None => Self::open(data_dir),
        }
    }

    /// Stores `bytes` and returns their hash. An intact copy already
    /// stored is kept; a damaged one is replaced (so uploading an
    /// artifact again repairs it).
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        let sha = sha256_hex(bytes);
        match self.get(&sha) {
            Ok(_) => return Ok(sha),
            Err(Error::NotFound(_) | Error::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        self.write(&sha, bytes)?;
        Ok(sha)
    }

    /// Stores a file beside the artifacts under a derived name (e.g. the
    /// tree statistics of a model: `<sha>.tree-stats.json`); what exists
    /// under that name is kept.
    pub fn put_named(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let exists = match &self.place {
            Place::Disk(root) => root.join(name).exists(),
            Place::Bucket(bucket) => bucket.exists(name)?,
        };
        if exists {
            Ok(())
        } else {
            self.write(name, bytes)
        }
    }

    /// Writes `name` durably: on disk to a temporary file, synced, then
    /// renamed over it; in a bucket, one PUT (the store answers once the
    /// object is whole).
    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let root = match &self.place {
            Place::Disk(root) => root,
            Place::Bucket(bucket) => return bucket.put(name, bytes),
        };
        let path = root.join(name);
        let tmp = root.join(format!(".{name}.tmp"));
        let mut file =
            std::fs::File::create(&tmp).map_err(io(format!("cannot write {}", tmp.display())))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(io(format!("cannot write {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("cannot store {}", path.display())))?;
        if let Ok(dir) = std::fs::File::open(root) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// The artifact with this hash, checked against it.
    pub fn get(&self, sha256: &str) -> Result<Vec<u8>> {
        if !is_sha256_hex(sha256) {
            return Err(Error::BadRequest(format!(
                "{sha256:?} is not a SHA-256 in lower-case hex"
            )));
        }
        let bytes = self.get_named(sha256)?;
        let actual = sha256_hex(&bytes);
        if actual != sha256 {
            let place = match self.place {
                Place::Disk(_) => "on disk",
                Place::Bucket(_) => "in its bucket",
            };
            tracing::error!(expected = sha256, actual, "an artifact changed {place}");
            return Err(Error::Conflict(format!(
                "artifact {sha256} is damaged {place} (its content hashes to {actual}); re-upload it"
            )));
        }
        Ok(bytes)
    }

    /// A file stored with [`ArtifactStore::put_named`].
    pub fn get_named(&self, name: &str) -> Result<Vec<u8>> {
        let path = match &self.place {
            Place::Disk(root) => root.join(name),
            Place::Bucket(bucket) => return bucket.get(name),
        };
        std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(format!("no artifact {name}")),
            _ => Error::Unavailable(format!("cannot read {}: {e}", path.display())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_by_hash_refuses_a_changed_file_and_repairs_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        let sha = store.put(b"model bytes").unwrap();
        assert!(is_sha256_hex(&sha));
        assert_eq!(store.put(b"model bytes").unwrap(), sha);
        assert_eq!(store.get(&sha).unwrap(), b"model bytes");
        std::fs::write(
            dir.path().join("artifacts/sha256").join(&sha),
            b"model bytez",
        )
        .unwrap();
        assert!(matches!(store.get(&sha), Err(Error::Conflict(m)) if m.contains("damaged")));
        // Uploading it again repairs it.
        assert_eq!(store.put(b"model bytes").unwrap(), sha);
        assert_eq!(store.get(&sha).unwrap(), b"model bytes");
        assert!(matches!(
            store.get(&"0".repeat(64)),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(store.get("../etc"), Err(Error::BadRequest(_))));
    }
}
