//! The hub's configuration file (TOML) and its defaults.
//!
//! Every key has a default, so an empty file (or none) runs a working hub;
//! unknown keys are refused so that a typo never silently does nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use strata_store::Durability;

/// The whole hub configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Directory for the database, keys and artifacts.
    pub data_dir: PathBuf,
    /// The embedded MQTT broker.
    pub mqtt: MqttConfig,
    /// The HTTP API and dashboard.
    pub http: HttpConfig,
    /// Storage.
    pub storage: StorageConfig,
    /// Validation and batching of incoming telemetry.
    pub ingest: IngestConfig,
    /// Device enrollment.
    pub registry: RegistryConfig,
    /// What hub replicas share in one database: registry, accounts, twins,
    /// sketches and action records.
    pub shared: SharedConfig,
    /// People's sessions and tokens.
    pub auth: AuthConfig,
    /// Over-the-air updates.
    pub ota: OtaConfig,
    /// Where model and release artifacts are kept.
    pub artifacts: ArtifactsConfig,
    /// Drift sketches and detectors for deployed models.
    pub drift: DriftConfig,
    /// Automated retraining, one policy per model.
    pub retrain: Vec<crate::retrain::RetrainPolicy>,
    /// Alert rules.
    pub alerts: Vec<crate::alerts::rules::AlertRule>,
    /// Webhook endpoints that receive alert changes.
    pub webhooks: Vec<crate::webhooks::WebhookEndpoint>,
    /// Workflows started by alert changes.
    pub workflows: Vec<crate::workflows::Workflow>,
    /// Site phases and the gates that arm closed-loop rules.
    pub control: crate::control::ControlConfig,
    /// An upstream MQTT broker to take device messages from (scale-out).
    pub upstream: crate::upstream::UpstreamConfig,
    /// Make the twins' epoch anew at start (`strata hub --new-twin-epoch`,
    /// not a file key): after the twin store was restored from a backup,
    /// so that devices apply twins numbered below what they applied.
    #[serde(skip)]
    pub new_twin_epoch: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            data_dir: PathBuf::from("data"),
            mqtt: MqttConfig::default(),
            http: HttpConfig::default(),
            storage: StorageConfig::default(),
            ingest: IngestConfig::default(),
            registry: RegistryConfig::default(),
            shared: SharedConfig::default(),
            auth: AuthConfig::default(),
            ota: OtaConfig::default(),
            artifacts: ArtifactsConfig::default(),
            drift: DriftConfig::default(),
            retrain: Vec::new(),
            alerts: Vec::new(),
            webhooks: Vec::new(),
            workflows: Vec::new(),
            control: Default::default(),
            upstream: Default::default(),
            new_twin_epoch: false,
        }
    }
}

/// Drift sketches and detectors for deployed models.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Length of an edge sketch window, seconds.
    pub window_s: u64,
    /// The detector the edge runs on every model output (`{ kind =
    /// "adwin", delta = 0.002 }`, `{ kind = "page_hinkley", threshold =
    /// 50.0 }`, river's names and defaults); `kind = "none"` for none.
    pub detector: toml::Value,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            window_s: 60,
            detector: toml::Value::Table(toml::map::Map::from_iter([
                ("kind".to_string(), toml::Value::String("adwin".into())),
                ("delta".to_string(), toml::Value::Float(0.002)),
            ])),
        }
    }
}

impl DriftConfig {
    /// The detector as the twin carries it, checked; None for `none`.
    pub fn detector(&self) -> Result<Option<serde_json::Value>, String> {
        let json =
            serde_json::to_value(&self.detector).map_err(|e| format!("[drift] detector: {e}"))?;
        if json.get("kind").and_then(|k| k.as_str()) == Some("none") {
            return Ok(None);
        }
        serde_json::from_value::<strata_drift::detect::DetectorParams>(json.clone())
            .map_err(|e| format!("[drift] detector: {e}"))?;
        Ok(Some(json))
    }
}

/// Where model and release artifacts are kept: the data directory
/// (`artifacts/sha256/`) unless `s3` is set.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArtifactsConfig {
    /// S3-compatible object storage instead (for hubs at scale: replicas
    /// share it, and it outlives any one machine's disk).
    pub s3: Option<S3Config>,
}

/// A bucket of S3-compatible object storage (AWS S3, MinIO, Ceph RGW...),
/// reached with path-style requests signed with Signature Version 4.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// `http://host:port` or `https://host`, e.g. `https://s3.eu-west-1.amazonaws.com`.
    pub endpoint: String,
    /// The bucket; it must exist.
    pub bucket: String,
    /// The bucket's region (MinIO and most others accept `us-east-1`).
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// Keys start with this (e.g. `strata/`), then `sha256/<hex>`.
    #[serde(default)]
    pub prefix: String,
    /// Access key id; else the `AWS_ACCESS_KEY_ID` environment variable.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key; else the `AWS_SECRET_ACCESS_KEY` environment
    /// variable (better: it keeps the secret out of the file).
    #[serde(default)]
    pub secret_access_key: Option<String>,
}

fn default_s3_region() -> String {
    "us-east-1".into()
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "…"),
            )
            .finish()
    }
}

impl S3Config {
    /// Refuses what requests could not carry as written: an endpoint that
    /// is not `http(s)://host[:port]`, a bucket or prefix with characters
    /// a key would have to escape.
    pub fn check(&self) -> Result<(), String> {
        let host = self
            .endpoint
            .strip_prefix("https://")
            .or_else(|| self.endpoint.strip_prefix("http://"))
            .map(|h| h.trim_end_matches('/'));
        match host {
            Some(h) if !h.is_empty() && !h.contains(['/', '?', '#', '@']) => {}
            _ => {
                return Err(format!(
                    "[artifacts.s3] endpoint {:?}: expected http://host:port or https://host (no path: requests are path-style)",
                    self.endpoint
                ));
            }
        }
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'));
        if !bucket_ok {
            return Err(format!(
                "[artifacts.s3] bucket {:?}: 3 to 63 of a-z, 0-9, '.' and '-'",
                self.bucket
            ));
        }
        let prefix_ok = self.prefix.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'/'),
        ) && !self.prefix.starts_with('/')
            && (self.prefix.is_empty() || self.prefix.ends_with('/'));
        if !prefix_ok {
            return Err(format!(
                "[artifacts.s3] prefix {:?}: letters, digits, '.', '-', '_' and '/', ending with '/' and not starting with one",
                self.prefix
            ));
        }
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "[artifacts.s3] region {:?}: e.g. us-east-1",
                self.region
            ));
        }
        Ok(())
    }

    /// The access key id and secret, from the file or the environment.
    pub fn credentials(&self) -> Result<(String, String), String> {
        let pick = |given: &Option<String>, var: &str| {
            given
                .clone()
                .or_else(|| std::env::var(var).ok())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    format!(
                        "[artifacts.s3] needs {} (or the {var} environment variable)",
                        var.to_lowercase().trim_start_matches("aws_")
                    )
                })
        };
        Ok((
            pick(&self.access_key_id, "AWS_ACCESS_KEY_ID")?,
            pick(&self.secret_access_key, "AWS_SECRET_ACCESS_KEY")?,
        ))
    }
}

/// Over-the-air updates.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtaConfig {
    /// Public keys (64 hex characters each, from `strata release keygen`)
    /// whose signed releases the hub accepts. None: no release is accepted.
    pub release_keys: Vec<String>,
    /// The rollout key (PKCS#8, as `strata release keygen` writes it) in
    /// this file instead of `rollout.key` in the data directory (made
    /// there on first start); relative to the data directory. Replicas
    /// given the same file sign campaign assignments with one key, so
    /// agents trust them all through one entry. The file must exist: a
    /// key made by each replica at start would differ.
    pub rollout_key_file: Option<PathBuf>,
}

/// The embedded MQTT broker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Address of the plain-text listener, used only with `plaintext`.
    pub listen: SocketAddr,
    /// Plain-text MQTT with device passwords: for development only. Off by
    /// default; devices then connect over TLS with certificates.
    pub plaintext: bool,
    /// Largest MQTT packet accepted, in bytes.
    pub max_packet_bytes: usize,
    /// MQTT over TLS with device certificates from the platform CA.
    pub tls: MqttTlsConfig,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: "0.0.0.0:1883".parse().expect("literal"),
            plaintext: false,
            max_packet_bytes: 1 << 20,
            tls: MqttTlsConfig::default(),
        }
    }
}

/// MQTT over TLS (mutual: devices present certificates).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttTlsConfig {
    /// Address of the TLS listener. Unset: 0.0.0.0:8883 when plain text is
    /// off, no TLS listener when it is on (a development hub).
    pub listen: Option<SocketAddr>,
    /// Names and addresses devices and people reach the hub by, for its
    /// server certificates, MQTT's and (with `[http] tls`) HTTPS's
    /// (localhost and 127.0.0.1 are always in).
    pub server_names: Vec<String>,
    /// Lifetime of a device certificate, seconds (default 7 days); agents
    /// renew at two thirds of it.
    pub device_cert_ttl_s: u64,
}

impl Default for MqttTlsConfig {
    fn default() -> Self {
        MqttTlsConfig {
            listen: None,
            server_names: Vec::new(),
            device_cert_ttl_s: 7 * 24 * 3600,
        }
    }
}

impl MqttConfig {
    /// Where the TLS listener goes, if there is one.
    pub fn tls_listen(&self) -> Option<SocketAddr> {
        self.tls
            .listen
            .or((!self.plaintext).then(|| "0.0.0.0:8883".parse().expect("literal")))
    }
}

/// The HTTP API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Serve HTTPS only, with a server certificate from the platform CA
    /// (clients trust `ca.pem` of the data directory). Off by default: the
    /// API then listens on localhost in plain text.
    pub tls: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".parse().expect("literal"),
            tls: false,
        }
    }
}

/// Storage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `fsync` (survives power loss) or `process` (survives the hub being
    /// killed, not the machine losing power).
    pub durability: Durability,
    /// Telemetry older than this many days is deleted, and the space it
    /// took freed, with the drift sketches whose window ended before then;
    /// unset keeps both forever.
    pub retention_days: Option<u64>,
    /// At most this many MB of telemetry files: past it the oldest
    /// telemetry is deleted, a segment file (64 MB) at a time; unset, no
    /// limit.
    pub retention_max_mb: Option<u64>,
    /// How often retention runs, seconds (also once at start).
    pub retention_check_s: u64,
    /// Webhook deliveries no longer pending, workflow runs no longer
    /// running and cleared alerts (with their history) are deleted this
    /// many days after they were queued (last changed), and so are API
    /// tokens this long expired or revoked and presence changes (each
    /// device's last one before the cut stays); 0 keeps them forever.
    /// Checked as often as retention.
    pub history_days: u64,
    /// Keep telemetry in this PostgreSQL database
    /// (`postgres://user@host/db`, or `host=... user=... dbname=...`)
    /// instead of the data directory: for hubs at scale, several replicas
    /// can share it. Everything else stays in the data directory.
    pub postgres: Option<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            durability: Durability::default(),
            retention_days: None,
            retention_max_mb: None,
            retention_check_s: 600,
            history_days: 90,
            postgres: None,
        }
    }
}

impl StorageConfig {
    /// How long telemetry is kept, in nanoseconds (`None`: forever).
    pub fn retention_ns(&self) -> Option<i64> {
        self.retention_days.map(|d| {
            i64::try_from(d)
                .unwrap_or(i64::MAX)
                .saturating_mul(86_400_000_000_000)
        })
    }

    /// How long finished webhook deliveries and workflow runs are kept, in
    /// nanoseconds (`None`: forever).
    pub fn history_ns(&self) -> Option<i64> {
        (self.history_days > 0).then(|| {
            i64::try_from(self.history_days)
                .unwrap_or(i64::MAX)
                .saturating_mul(86_400_000_000_000)
        })
    }

    /// The most bytes telemetry files may take (`None`: no limit).
    pub fn retention_max_bytes(&self) -> Option<u64> {
        self.retention_max_mb.map(|mb| mb.saturating_mul(1 << 20))
    }

    fn validate(&self) -> Result<(), String> {
        if self.retention_max_mb == Some(0) {
            return Err(
                "[storage] retention_max_mb must be at least 1 (or left out for no limit)".into(),
            );
        }
        if self.retention_days == Some(0) {
            return Err("[storage] retention_days must be at least 1 (or left out to keep telemetry forever)".into());
        }
        if self.retention_check_s == 0 {
            return Err("[storage] retention_check_s must be at least 1".into());
        }
        Ok(())
    }
}

/// Validation and batching of incoming telemetry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Most readings in one batch.
    pub max_readings_per_batch: usize,
    /// Most signals in one batch.
    pub max_signals_per_batch: usize,
    /// How far ahead of the hub's clock a reading may be stamped, seconds.
    pub max_future_s: u64,
    /// Most batches written in one storage transaction (group commit).
    pub max_batches_per_commit: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_readings_per_batch: 100_000,
            max_signals_per_batch: 1_000,
            max_future_s: 300,
            max_batches_per_commit: 1_024,
        }
    }
}

/// Device enrollment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// How long a one-time enrollment token stays valid, seconds.
    pub enrollment_token_ttl_s: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            enrollment_token_ttl_s: 7 * 24 * 3600,
        }
    }
}

/// What hub replicas share besides telemetry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedConfig {
    /// Keep the device registry (sites, devices, credentials, presence),
    /// people's accounts and API tokens, device twins, drift sketches,
    /// closed-loop action records, the model registry and accepted OTA
    /// releases in this PostgreSQL database instead of the data directory,
    /// shared by every hub replica that names it: a device enrolled or
    /// revoked, a token issued or revoked, a model version registered
    /// through one replica is so at all of them, and what a device reports
    /// is seen by all of them, whichever took the message. Needs artifacts
    /// in a bucket (`[artifacts.s3]`), so every replica serves every
    /// version and release. With telemetry there too (`[storage]
    /// postgres`), training jobs, retraining cycles and labels as well.
    pub postgres: Option<String>,
    /// With `postgres`: how often, milliseconds, a replica looks for the
    /// changes other replicas made (and closes the sessions of devices
    /// they revoked).
    pub refresh_ms: u64,
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig {
            postgres: None,
            refresh_ms: 1000,
        }
    }
}

impl SharedConfig {
    fn validate(&self, artifacts: &ArtifactsConfig) -> Result<(), String> {
        if self.refresh_ms == 0 {
            return Err("[shared] refresh_ms must be at least 1".into());
        }
        if self.postgres.is_some() && artifacts.s3.is_none() {
            return Err(
                "[shared] postgres shares the model registry and OTA releases, so \
                        their artifacts must be where every replica reads them: set \
                        [artifacts.s3] (a bucket the replicas share)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// People's sessions and tokens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How long a session from `POST /api/v1/login` lasts, seconds.
    pub session_ttl_s: u64,
    /// Wrong passwords in a row for one user name before its logins must
    /// wait (1 s, doubling after each further failure).
    pub login_free_attempts: u32,
    /// The longest such wait, seconds.
    pub login_max_wait_s: u64,
    /// Logins from one source address (an IPv6 /64) before that address
    /// must wait the same way, whatever the names it tries; a right
    /// password does not count, and the count fades by one a minute
    /// without attempts. 0 turns this off (behind a reverse proxy every
    /// client has the proxy's address).
    pub login_free_attempts_per_address: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_ttl_s: 12 * 3600,
            login_free_attempts: 5,
            login_max_wait_s: 15 * 60,
            login_free_attempts_per_address: 30,
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid for the hub; the message names line and key.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
}

impl HubConfig {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; the error names the line, column and key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: HubConfig = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        if config.drift.window_s == 0 {
            return Err("[drift] window_s must be at least 1".into());
        }
        config.drift.detector()?;
        config.storage.validate()?;
        config.shared.validate(&config.artifacts)?;
        for (i, p) in config.retrain.iter().enumerate() {
            p.validate()?;
            if config.retrain[..i].iter().any(|o| o.model == p.model) {
                return Err(format!("[[retrain]]: two policies for model {:?}", p.model));
            }
        }
        crate::alerts::rules::validate_all(&config.alerts)?;
        for (i, w) in config.webhooks.iter().enumerate() {
            w.validate()?;
            if config.webhooks[..i].iter().any(|o| o.name == w.name) {
                return Err(format!("[[webhooks]]: two endpoints named {:?}", w.name));
            }
        }
        crate::workflows::validate_all(&config.workflows, &config.webhooks, &config.alerts)?;
        config.control.validate()?;
        // Presence changes older than history_days are deleted: a gate
        // would count a longer window's start as offline.
        for (phase, g) in &config.control.gates {
            let history = config.storage.history_days as f64;
            if history > 0.0 && g.min_uptime.is_some() && g.window_days > history {
                return Err(format!(
                    "[control.gates.{phase}] window_days = {} is longer than [storage] \
                     history_days = {}: presence changes are deleted after history_days, so \
                     uptime over the window would count as offline; raise history_days",
                    g.window_days, config.storage.history_days
                ));
            }
        }
        config.upstream.validate()?;
        if let Some(s3) = &config.artifacts.s3 {
            s3.check()?;
        }
        Ok(config)
    }
}

/// Renders a TOML error as "line L, column C: message" (toml's own display
/// spans several lines with a source excerpt, which logs poorly).
pub fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(HubConfig::parse("").unwrap(), HubConfig::default());
    }

    /// The example config's commented `[[alerts]]`, `[[webhooks]]` and
    /// `[[workflows]]` tables, uncommented, make a valid config.
    #[test]
    fn the_commented_example_alert_and_webhook_parse() {
        let text = include_str!("../../../config/hub.toml");
        let mut uncommented = String::new();
        for table in ["# [[alerts]]", "# [[webhooks]]", "# [[workflows]]"] {
            let at = text.find(table).expect("an example table");
            for l in text[at..].lines().take_while(|l| !l.trim().is_empty()) {
                uncommented.push_str(l.strip_prefix("# ").unwrap_or(l));
                uncommented.push('\n');
            }
        }
        let config = HubConfig::parse(&uncommented).unwrap();
        assert_eq!(config.alerts[0].name, "bearing-failing");
        assert_eq!(config.alerts[0].for_s, 30.0);
        assert_eq!(config.webhooks[0].events.len(), 2);
        assert_eq!(config.workflows[0].steps.len(), 3);
    }

    #[test]
    fn errors_name_line_and_key() {
        let err =
            HubConfig::parse("data_dir = \"x\"\n[mqtt]\nlisten = \"0.0.0.0:1883\"\nlisen = 1\n")
                .unwrap_err();
        assert!(err.starts_with("line 4, column 1"), "{err}");
        assert!(err.contains("lisen"), "{err}");
        let err = HubConfig::parse("[storage]\ndurability = \"sometimes\"\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("sometimes"), "{err}");
        let err = HubConfig::parse("[mqtt]\nlisten = \"not an address\"\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn s3_artifacts_are_checked_when_loaded_and_keep_their_secret() {
        let c = HubConfig::parse(
            "[artifacts.s3]\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"models\"\nprefix = \"strata/\"\nsecret_access_key = \"hush\"\n",
        )
        .unwrap();
        let s3 = c.artifacts.s3.unwrap();
        assert_eq!(
            (s3.region.as_str(), s3.prefix.as_str()),
            ("us-east-1", "strata/")
        );
        assert!(!format!("{s3:?}").contains("hush"));
        for (bad, says) in [
            (
                "endpoint = \"127.0.0.1:9000\"\nbucket = \"models\"",
                "endpoint",
            ),
            (
                "endpoint = \"http://h/models\"\nbucket = \"models\"",
                "path-style",
            ),
            ("endpoint = \"http://h\"\nbucket = \"My_Bucket\"", "bucket"),
            (
                "endpoint = \"http://h\"\nbucket = \"models\"\nprefix = \"a b/\"",
                "prefix",
            ),
            (
                "endpoint = \"http://h\"\nbucket = \"models\"\nprefix = \"strata\"",
                "ending with '/'",
            ),
            ("bucket = \"models\"", "endpoint"),
        ] {
            let e = HubConfig::parse(&format!("[artifacts.s3]\n{bad}\n")).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn retention_is_off_unless_set_and_never_zero() {
        assert_eq!(HubConfig::default().storage.retention_ns(), None);
        let config = HubConfig::parse("[storage]\nretention_days = 30\n").unwrap();
        assert_eq!(
            config.storage.retention_ns(),
            Some(30 * 86_400 * 1_000_000_000)
        );
        let err = HubConfig::parse("[storage]\nretention_days = 0\n").unwrap_err();
        assert!(err.contains("retention_days"), "{err}");
        let config = HubConfig::parse("[storage]\nretention_max_mb = 2048\n").unwrap();
        assert_eq!(config.storage.retention_max_bytes(), Some(2048 << 20));
        let err = HubConfig::parse("[storage]\nretention_max_mb = 0\n").unwrap_err();
        assert!(err.contains("retention_max_mb"), "{err}");
        let err = HubConfig::parse("[storage]\nretention_check_s = 0\n").unwrap_err();
        assert!(err.contains("retention_check_s"), "{err}");
    }

    #[test]
    fn an_uptime_gate_must_look_back_no_further_than_presence_is_kept() {
        let gate = |window_days: u32, history_days: u32| {
            HubConfig::parse(&format!(
                "[storage]\nhistory_days = {history_days}\n\
                 [control.gates.2]\nwindow_days = {window_days}\nmin_uptime = 0.9\n"
            ))
        };
        assert!(gate(30, 90).is_ok());
        assert!(gate(120, 0).is_ok(), "history kept for ever");
        let err = gate(120, 90).unwrap_err();
        assert!(
            err.contains("longer than [storage] history_days = 90"),
            "{err}"
        );
    }

    #[test]
    fn sharing_is_off_unless_a_database_is_named() {
        let config = HubConfig::default();
        assert_eq!(
            (config.shared.postgres, config.shared.refresh_ms),
            (None, 1000)
        );
        let bucket = "[artifacts.s3]\nendpoint = \"http://s3:9000\"\nbucket = \"models\"\n";
        let shared = "[shared]\npostgres = \"host=db user=strata\"\nrefresh_ms = 250\n";
        let config = HubConfig::parse(&format!("{shared}{bucket}")).unwrap();
        assert_eq!(
            config.shared.postgres.as_deref(),
            Some("host=db user=strata")
        );
        assert_eq!(config.shared.refresh_ms, 250);
        let err = HubConfig::parse("[shared]\nrefresh_ms = 0\n").unwrap_err();
        assert!(err.contains("[shared] refresh_ms"), "{err}");
        // Models registered at one replica are served by every replica.
        let err = HubConfig::parse(shared).unwrap_err();
        assert!(err.contains("[artifacts.s3]"), "{err}");
        let err = HubConfig::parse("[registry]\npostgres = \"host=db\"\n").unwrap_err();
        assert!(
            err.contains("postgres"),
            "the registry's section has no database: {err}"
        );
    }
}
