//! The device twin at the edge: applies the models the hub deploys.
//!
//! The hub publishes the desired twin (retained) on `down/twin`. For each
//! assigned model the agent downloads the artifact from the hub over HTTP
//! (device credential, Basic auth) unless it has it, checks size and
//! SHA-256, loads it with the edge runtime, and swaps the new model set
//! into the processing thread in one step. A model that fails to download
//! or load is reported as failed and the others still run; the models of
//! the agent's own config file keep running unless the hub assigns a model
//! of the same name. The applied document is kept in `twin.json`, so a
//! restarted agent runs its deployed models before it reaches the hub.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use strata_pipeline::VectorSchema;
use strata_proto::{DesiredTwin, DeviceId, ModelAssignment, ModelReport, ReportedTwin};
use tokio::sync::{Notify, watch};

use crate::health::HealthState;
use crate::inference::{ModelConfig, Models};
use crate::uplink::Backoff;

/// File in the data directory holding the last applied desired twin.
pub const TWIN_FILE: &str = "twin.json";

/// The latest reported twin, waiting for the uplink to publish it (on
/// every connect and whenever it changes).
#[derive(Debug, Default)]
pub struct Reported {
    latest: Mutex<Option<Vec<u8>>>,
    /// Woken when `latest` changes.
    pub changed: Notify,
}

impl Reported {
    /// The document to publish, if any.
    pub fn latest(&self) -> Option<Vec<u8>> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, twin: &ReportedTwin) {
        let json = serde_json::to_vec(twin).expect("JSON of a twin");
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(json);
        self.changed.notify_one();
    }
}

/// What applying a twin needs.
pub struct TwinApplier {
    /// The device.
    pub device: DeviceId,
    /// Its credential, for downloads.
    pub credential: String,
    /// The hub's HTTP base URL.
    pub http: Option<String>,
    /// The agent's data directory (artifacts go to `models/`).
    pub data_dir: PathBuf,
    /// Where relative model paths of the config file are resolved.
    pub base_dir: PathBuf,
    /// Models from the config file.
    pub configured: Vec<ModelConfig>,
    /// The pipeline's feature vectors.
    pub vectors: Vec<VectorSchema>,
    /// Where new model sets go (the processing thread).
    pub swap: std::sync::mpsc::Sender<Models>,
    /// Health, told about the new models by the processor.
    pub health: Arc<HealthState>,
    /// The report slot the uplink publishes.
    pub reported: Arc<Reported>,
}

impl TwinApplier {
    /// Applies the twin kept from the last run, then every desired twin the
    /// uplink receives; retries failed downloads with backoff.
    pub async fn run(self, mut desired: watch::Receiver<Option<Vec<u8>>>) {
        let mut current: Option<DesiredTwin> = std::fs::read(self.data_dir.join(TWIN_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mut applied_ok = false;
        if let Some(twin) = &current {
            applied_ok = self.apply(twin.clone(), false).await;
        }
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let wait = (!applied_ok && current.is_some()).then(|| backoff.next_delay());
            let retry = async move {
                match wait {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let Some(payload) = desired.borrow_and_update().clone() else { continue };
                    let twin: DesiredTwin = match serde_json::from_slice(&payload) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::warn!(device = %self.device, "desired twin refused: {e}");
                            continue;
                        }
                    };
                    if applied_ok && current.as_ref().is_some_and(|c| c.desired_version == twin.desired_version) {
                        continue;
                    }
                    backoff.reset();
                    applied_ok = self.apply(twin.clone(), true).await;
                    current = Some(twin);
                }
                _ = retry => {
                    if let Some(twin) = &current {
                        applied_ok = self.apply(twin.clone(), true).await;
                    }
                }
            }
        }
    }

    /// Applies a twin; true when every model runs (false asks for a retry).
    async fn apply(&self, twin: DesiredTwin, download: bool) -> bool {
        let mut reports = Vec::new();
        let mut ready = Vec::new();
        for m in &twin.models {
            let result = match self.artifact(m, download).await {
                Ok(path) => self.check_one(m, &path).map(|c| (c, path)),
                Err(e) => Err(e),
            };
            match result {
                Ok((config, _)) => {
                    ready.push(config);
                    reports.push(report(m, None));
                }
                Err(e) => {
                    tracing::warn!(device = %self.device, model = m.name, version = m.version, "deployment failed: {e}");
                    reports.push(report(m, Some(e)));
                }
            }
        }
        let assigned: Vec<&str> = twin.models.iter().map(|m| m.name.as_str()).collect();
        let mut configs: Vec<ModelConfig> = self
            .configured
            .iter()
            .filter(|c| !assigned.contains(&c.name.as_str()))
            .map(|c| ModelConfig {
                path: self.base_dir.join(&c.path),
                ..c.clone()
            })
            .collect();
        configs.extend(ready);
        match Models::load(&configs, Path::new("/"), &self.vectors) {
            Ok(models) => {
                let _ = self.swap.send(models);
            }
            Err(e) => {
                // Each model loaded alone; together they clash (e.g. two
                // outputs of one name): keep what runs now.
                tracing::warn!(device = %self.device, "the deployed model set does not load: {e}");
                for r in &mut reports {
                    r.state = "failed".into();
                    r.error = Some(e.clone());
                }
            }
        }
        let ok = reports.iter().all(|r| r.state == "running");
        if ok {
            let json = serde_json::to_vec(&twin).expect("JSON of a twin");
            if let Err(e) = write_atomic(&self.data_dir.join(TWIN_FILE), &json) {
                tracing::warn!(device = %self.device, "cannot keep the applied twin: {e}");
            }
        }
        self.reported.set(&ReportedTwin {
            desired_version: twin.desired_version,
            models: reports,
        });
        ok
    }

    /// Loads one assignment alone, to name the model that fails.
    fn check_one(&self, m: &ModelAssignment, path: &Path) -> Result<ModelConfig, String> {
        let config = ModelConfig {
            name: m.name.clone(),
            path: path.to_owned(),
            version: m.version.to_string(),
            vector: m.vector.clone(),
            features: Some(m.features.clone()),
            outputs: None,
        };
        Models::load(std::slice::from_ref(&config), Path::new("/"), &self.vectors)?;
        Ok(config)
    }

    /// The artifact on disk, downloaded first if needed.
    async fn artifact(&self, m: &ModelAssignment, download: bool) -> Result<PathBuf, String> {
        if m.sha256.len() != 64 || !m.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{:?} is not a SHA-256", m.sha256));
        }
        let dir = self.data_dir.join("models");
        let path = dir.join(format!("{}.onnx", m.sha256));
        if let Ok(bytes) = std::fs::read(&path) {
            if verify(&bytes, m).is_ok() {
                return Ok(path);
            }
            tracing::warn!(path = %path.display(), "a kept model artifact is damaged; fetching it again");
        }
        if !download {
            return Err("not downloaded yet".into());
        }
        let base = self
            .http
            .clone()
            .ok_or("the agent config has no [hub] http address to download models from")?;
        let url = format!(
            "{}/api/v1/device/artifacts/{}",
            base.trim_end_matches('/'),
            m.sha256
        );
        let (device, credential, size) = (self.device.to_string(), self.credential.clone(), m.size);
        let bytes = tokio::task::spawn_blocking(move || fetch(&url, &device, &credential, size))
            .await
            .map_err(|e| format!("download task failed: {e}"))??;
        verify(&bytes, m)?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        write_atomic(&path, &bytes).map_err(|e| format!("cannot store {}: {e}", path.display()))?;
        tracing::info!(device = %self.device, model = m.name, version = m.version, "model artifact downloaded");
        Ok(path)
    }
}

fn report(m: &ModelAssignment, error: Option<String>) -> ModelReport {
    ModelReport {
        name: m.name.clone(),
        version: m.version,
        state: if error.is_none() { "running" } else { "failed" }.into(),
        error,
    }
}

/// Checks size and hash against the assignment.
fn verify(bytes: &[u8], m: &ModelAssignment) -> Result<(), String> {
    if bytes.len() as u64 != m.size {
        return Err(format!(
            "the artifact has {} bytes, the hub announced {}",
            bytes.len(),
            m.size
        ));
    }
    let actual: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != m.sha256.to_ascii_lowercase() {
        return Err(format!(
            "the artifact hashes to {actual}, the hub announced {}: refused",
            m.sha256
        ));
    }
    Ok(())
}

/// Downloads at most `size` bytes (a larger answer is refused, not read).
fn fetch(url: &str, device: &str, credential: &str, size: u64) -> Result<Vec<u8>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into();
    let auth = format!(
        "Basic {}",
        base64(format!("{device}:{credential}").as_bytes())
    );
    let mut response = agent
        .get(url)
        .header("Authorization", &auth)
        .call()
        .map_err(|e| format!("cannot reach the hub at {url}: {e}"))?;
    let status = response.status();
    let mut body = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(size + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("download of {url} broke off: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "the hub answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    Ok(body)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn artifacts_are_checked_by_size_and_hash() {
        let bytes = b"onnx".to_vec();
        let mut m = ModelAssignment {
            name: "rul".into(),
            version: 1,
            sha256: Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            size: 4,
            vector: "v".into(),
            features: vec![],
        };
        assert!(verify(&bytes, &m).is_ok());
        assert!(verify(b"onnX", &m).unwrap_err().contains("refused"));
        m.size = 5;
        assert!(verify(&bytes, &m).unwrap_err().contains("5"));
    }
}
