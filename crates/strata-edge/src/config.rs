//! The agent's configuration file (TOML). Errors name the file, line and key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::outbox::{DropPolicy, Durability};
use crate::sources::SourceConfig;

/// The whole agent configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// This gateway's device id, as registered at the hub.
    pub device: String,
    /// Directory for the outbox.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// How to reach the hub.
    pub hub: HubLink,
    /// The store-and-forward outbox.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Where readings come from.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// The health heartbeat.
    #[serde(default)]
    pub health: HealthConfig,
    /// Stream preprocessing: transforms, windows, feature vectors. Without
    /// it, readings are sent as the sources made them.
    #[serde(default)]
    pub pipeline: Option<strata_pipeline::PipelineConfig>,
    /// Models, each bound to a pipeline feature vector.
    #[serde(default)]
    pub models: Vec<crate::inference::ModelConfig>,
    /// Signed updates: the keys they must be signed with, and this
    /// device's site and tags as release targets see them.
    #[serde(default)]
    pub ota: OtaConfig,
    /// Closed-loop rules and the outputs they write.
    #[serde(default)]
    pub control: crate::control::ControlConfig,
    /// Where relative model paths start: the config file's directory
    /// (set by [`EdgeConfig::load`], not read from the file).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Signed updates (`docs/design/ota.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtaConfig {
    /// Release public keys (hex): what may be installed.
    pub release_keys: Vec<String>,
    /// Rollout public keys (hex; the hub's, from `GET /api/v1/ota/keys`):
    /// which release, now.
    pub rollout_keys: Vec<String>,
    /// This device's site, for releases that target sites.
    pub site: String,
    /// This device's tags, for releases that target tags.
    pub tags: std::collections::BTreeMap<String, String>,
    /// How long a newly installed model must run (no errors, at least one
    /// inference; one that has had no data yet gets up to twice this more)
    /// before its version is committed; else the committed version comes
    /// back.
    pub health_window_ms: u64,
    /// Install hooks for bundle releases, by the name a release gives
    /// (`[ota.hooks.app] install = ["/usr/lib/app/install"]`).
    pub hooks: std::collections::BTreeMap<String, crate::bundle::HookConfig>,
    /// Take models only from signed releases: refuse the hub's direct
    /// deployments (the twin's `models`, signed by no one), so that a hub
    /// or broker in the wrong hands cannot change what runs here.
    pub signed_only: bool,
}

impl Default for OtaConfig {
    fn default() -> Self {
        OtaConfig {
            release_keys: Vec::new(),
            rollout_keys: Vec::new(),
            site: String::new(),
            tags: Default::default(),
            health_window_ms: 10_000,
            hooks: Default::default(),
            signed_only: false,
        }
    }
}

impl OtaConfig {
    /// The trusted keys, parsed.
    pub fn trust(&self) -> Result<strata_ota::Trust, String> {
        let parse = |keys: &[String], what: &str| {
            keys.iter()
                .map(|k| {
                    strata_ota::PublicKey::from_hex(k).map_err(|e| format!("[ota] {what}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        // One key in both roles makes them one: whoever holds the hub's
        // rollout key (a stolen hub) could then sign releases.
        let norm = |k: &String| k.trim().to_ascii_lowercase();
        if let Some(k) = self
            .release_keys
            .iter()
            .find(|k| self.rollout_keys.iter().any(|r| norm(r) == norm(k)))
        {
            return Err(format!(
                "[ota] key {} is both a release key and a rollout key: the two roles need different keys",
                k.trim()
            ));
        }
        Ok(strata_ota::Trust {
            release_keys: parse(&self.release_keys, "release_keys")?,
            rollout_keys: parse(&self.rollout_keys, "rollout_keys")?,
        })
    }
}

/// The health heartbeat.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// A heartbeat every this many milliseconds (at least 100).
    pub interval_ms: u64,
    /// Serve Prometheus metrics (`GET /metrics`) on this address; none
    /// when absent.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_ms: 10_000,
            metrics_listen: None,
        }
    }
}

/// Stream names the agent itself sends under.
const RESERVED_STREAMS: &[&str] = &[
    crate::health::HEALTH_STREAM,
    "inference",
    crate::control::CONTROL_STREAM,
];

fn default_data_dir() -> PathBuf {
    PathBuf::from("edge-data")
}

/// How to reach the hub.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubLink {
    /// The hub's MQTT address.
    pub mqtt: SocketAddr,
    /// The device credential from enrollment. Prefer `credential_file`.
    #[serde(default)]
    pub credential: Option<String>,
    /// A file holding the device credential (readable by the agent only).
    #[serde(default)]
    pub credential_file: Option<PathBuf>,
    /// Unacknowledged batches in flight at once.
    #[serde(default = "default_window")]
    pub window: u16,
    /// The hub's HTTP address (e.g. `http://hub:8080`), where the agent
    /// downloads models deployed to it and renews its certificate; without
    /// it, deployments are reported as failed. An `https://` address needs
    /// `tls_dir`, whose `ca.pem` is the only CA trusted.
    #[serde(default)]
    pub http: Option<String>,
    /// Connect over TLS with the identity in this directory (from
    /// `strata device enroll --identity-dir`): the device key and
    /// certificate and the hub's CA. The agent renews the certificate
    /// through `http` before it expires.
    #[serde(default)]
    pub tls_dir: Option<PathBuf>,
}

fn default_window() -> u16 {
    32
}

/// The outbox.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Most bytes held while the hub is unreachable.
    pub max_bytes: u64,
    /// `drop_oldest` or `refuse_new` when full.
    pub drop_policy: DropPolicy,
    /// `fsync` (a stored batch survives a power loss) or `process` (it
    /// survives a crash of the agent only; no sync per batch).
    pub durability: Durability,
    /// Bytes to leave free on the data directory's disk: below this the
    /// outbox stops growing and applies `drop_policy` as when it is full,
    /// so a disk filled by something else does not fail every write. 0
    /// watches nothing.
    pub keep_free_bytes: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_bytes: 256 << 20,
            drop_policy: DropPolicy::DropOldest,
            durability: Durability::Fsync,
            keep_free_bytes: 64 << 20,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid agent configuration.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What and where.
        message: String,
    },
}

impl EdgeConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.into(),
            message,
        })?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(config)
    }

    /// Parses TOML text; the error says line, column and key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut config: EdgeConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_owned();
            match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {column}: {message}")
                }
                None => message,
            }
        })?;
        strata_proto::DeviceId::new(config.device.as_str())
            .map_err(|e| format!("key `device`: {e}"))?;
        if config.hub.tls_dir.is_some() && config.hub.http.is_none() {
            return Err(
                "[hub] tls_dir needs `http`, where the agent renews its certificate".into(),
            );
        }
        if config.hub.credential.is_none() && config.hub.credential_file.is_none() {
            return Err("[hub] needs `credential` or `credential_file`".into());
        }
        // Two gateways made from one config template, on one site broker,
        // must not share an MQTT client id: each would disconnect the other.
        for s in &mut config.sources {
            if let SourceConfig::Mqtt(m) = s {
                m.client_id
                    .get_or_insert_with(|| format!("strata-edge-{}-{}", config.device, m.stream));
                m.names_for_the_hub = config.pipeline.is_none();
            }
        }
        let mut streams = std::collections::HashSet::new();
        for (i, s) in config.sources.iter().enumerate() {
            s.validate().map_err(|e| format!("sources[{i}]: {e}"))?;
            if config.pipeline.is_none() {
                s.check_names_for_the_hub()
                    .map_err(|e| format!("sources[{i}]: {e}"))?;
            }
            // The hub drops a whole batch under a name it does not take,
            // and the heartbeat names signals after each stream (the
            // longest `health.source.{stream}.reconnects_total`).
            let most =
                strata_proto::validate::MAX_NAME_LEN - "health.source..reconnects_total".len();
            if !strata_proto::validate::valid_name(s.stream()) || s.stream().len() > most {
                return Err(format!(
                    "sources[{i}]: the stream name {:?} must be 1 to {most} of A-Z a-z 0-9 _ . : -",
                    s.stream()
                ));
            }
            if RESERVED_STREAMS.contains(&s.stream()) {
                return Err(format!(
                    "sources[{i}]: the stream name {:?} is reserved for the agent",
                    s.stream()
                ));
            }
            if s.stream().starts_with("model:") {
                return Err(format!(
                    "sources[{i}]: stream names starting with \"model:\" are reserved for models"
                ));
            }
            if !streams.insert(s.stream()) {
                return Err(format!(
                    "two sources use the stream {:?}; give each its own `stream`",
                    s.stream()
                ));
            }
        }
        if !config.models.is_empty() && config.pipeline.is_none() {
            return Err("[[models]] need a [pipeline] with the vectors they read".into());
        }
        if let Some(p) = &config.pipeline {
            strata_pipeline::Pipeline::new(p).map_err(|e| format!("[pipeline]: {e}"))?;
        }
        config.ota.trust()?;
        crate::bundle::validate(&config.ota.hooks)?;
        config
            .control
            .validate()
            .map_err(|e| format!("[control]: {e}"))?;
        Ok(config)
    }

    /// The credential, from the config or its file.
    pub fn credential(&self) -> Result<String, ConfigError> {
        if let Some(c) = &self.hub.credential {
            return Ok(c.clone());
        }
        let path = self.hub.credential_file.as_ref().expect("checked at parse");
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(text.trim().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_line_and_key() {
        let err = EdgeConfig::parse("device = \"gw-1\"\n[hub]\nmqtt = \"127.0.0.1:1883\"\ncredential = \"x\"\n\n[[sources]]\ntype = \"simulator\"\nintervall_ms = 5\n")
            .unwrap_err();
        // Inside a tagged table toml points at the table header (line 6).
        assert!(
            err.starts_with("line 6") && err.contains("intervall_ms"),
            "{err}"
        );
        let err = EdgeConfig::parse(
            "device = \"gw/1\"\n[hub]\nmqtt = \"127.0.0.1:1883\"\ncredential = \"x\"\n",
        )
        .unwrap_err();
        assert!(err.contains("device"), "{err}");
        let err =
            EdgeConfig::parse("device = \"gw-1\"\n[hub]\nmqtt = \"127.0.0.1:1883\"\n").unwrap_err();
        assert!(err.contains("credential"), "{err}");
        let err = EdgeConfig::parse("device = \"gw-1\"\n[hub]\nmqtt = \"127.0.0.1:1883\"\ncredential = \"x\"\n[[sources]]\ntype = \"bacnet\"\n").unwrap_err();
        assert!(err.contains("bacnet"), "{err}");
        let err = EdgeConfig::parse("device = \"gw-1\"\n[hub]\nmqtt = \"127.0.0.1:1883\"\ncredential = \"x\"\n[[sources]]\ntype = \"simulator\"\nstream = \"Line 1\"\n").unwrap_err();
        assert!(
            err.contains("\"Line 1\"") && err.contains("1 to 97"),
            "{err}"
        );
    }

    #[test]
    fn one_key_cannot_hold_both_ota_roles() {
        let key = "ab".repeat(32);
        let ota = OtaConfig {
            release_keys: vec![key.clone()],
            rollout_keys: vec![key.to_uppercase()],
            ..OtaConfig::default()
        };
        let e = ota.trust().unwrap_err();
        assert!(e.contains("both a release key and a rollout key"), "{e}");
    }
}
