//! `strata site ...` and `strata device ...`: the registry through the API.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::api_client::ApiClient;

/// How to reach the hub.
#[derive(Debug, Clone, Args)]
pub struct HubAccess {
    /// The hub's HTTP address.
    #[arg(long, env = "STRATA_HUB", default_value = "http://127.0.0.1:8080")]
    pub hub: String,
    /// Admin token; by default read from <data-dir>/admin.token.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The hub's data directory, to read the admin token from.
    #[arg(long, env = "STRATA_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// With an https:// hub: the CA its certificate must chain to; by
    /// default <data-dir>/ca.pem.
    #[arg(long, env = "STRATA_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl HubAccess {
    pub(crate) fn client(&self) -> anyhow::Result<ApiClient> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => ApiClient::token_from_data_dir(&self.data_dir)
                .context("give --token or --data-dir of the hub")?,
        };
        let ca = match &self.ca_file {
            Some(f) => Some(f.clone()),
            None if self.hub.starts_with("https://") => Some(self.data_dir.join("ca.pem")),
            None => None,
        };
        ApiClient::with_ca(&self.hub, Some(token), ca.as_deref())
    }
}

/// Which devices a deployment or assignment targets (all given filters
/// must match; every active device when none is given).
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// These devices (repeatable).
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Devices of this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Devices with this tag, key=value (repeatable).
    #[arg(long = "tag", value_parser = parse_pair)]
    pub tags: Vec<(String, String)>,
}

impl TargetArgs {
    /// Adds the selector's keys to a request body (the hub's
    /// `DeviceSelector`).
    pub fn add_to(self, body: &mut Value) {
        body["tags"] = json!(self.tags.into_iter().collect::<BTreeMap<_, _>>());
        if !self.devices.is_empty() {
            body["devices"] = json!(self.devices);
        }
        if let Some(site) = self.site {
            body["site"] = json!(site);
        }
    }
}

/// `strata site`.
#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// List sites.
    List(HubAccess),
    /// Create a site.
    Create {
        /// Site id.
        id: String,
        /// Region the site is in, e.g. eu-west (recorded and shown; not yet enforced).
        #[arg(long)]
        region: String,
        /// Human name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        access: HubAccess,
    },
}

/// `strata device`.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// List devices.
    List {
        /// Only devices of this site.
        #[arg(long)]
        site: Option<String>,
        #[command(flatten)]
        access: HubAccess,
    },
    /// Register a device; prints its one-time enrollment token.
    Create {
        /// Device id.
        id: String,
        /// Its site.
        #[arg(long)]
        site: String,
        /// Tags, as key=value (repeatable).
        #[arg(long = "tag", value_parser = parse_pair)]
        tags: Vec<(String, String)>,
        /// Declared signals, as name=unit (repeatable); others are then refused.
        #[arg(long = "signal", value_parser = parse_pair)]
        signals: Vec<(String, String)>,
        #[command(flatten)]
        access: HubAccess,
    },
    /// Trade an enrollment token for the device's MQTT credential.
    Enroll {
        /// Device id.
        id: String,
        /// The one-time enrollment token.
        #[arg(long, env = "STRATA_ENROLLMENT_TOKEN", hide_env_values = true)]
        token: String,
        /// The hub's HTTP address.
        #[arg(long, env = "STRATA_HUB", default_value = "http://127.0.0.1:8080")]
        hub: String,
        /// With an https:// hub: the CA its certificate must chain to (the
        /// hub's ca.pem, handed out with the token).
        #[arg(long, env = "STRATA_CA_FILE")]
        ca_file: Option<PathBuf>,
        /// Make a key here and get a certificate from the hub's platform
        /// CA, for MQTT over TLS: writes device.key (owner-only),
        /// device.pem, ca.pem and credential into this directory (the edge
        /// agent's `[hub] tls_dir`).
        #[cfg(feature = "edge")]
        #[arg(long)]
        identity_dir: Option<PathBuf>,
    },
    /// Revoke a device: its credential stops working, its session closes.
    Revoke {
        /// Device id.
        id: String,
        #[command(flatten)]
        access: HubAccess,
    },
    /// Show the latest reading of each signal of a device.
    Latest {
        /// Device id.
        id: String,
        #[command(flatten)]
        access: HubAccess,
    },
}

pub(crate) fn parse_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

pub(crate) fn print(value: &Value) {
    print_line(&serde_json::to_string_pretty(value).expect("JSON value"));
}

/// Prints a line; a closed pipe (`strata job log 3 | head`) ends the
/// output quietly instead of panicking as `println!` would.
pub(crate) fn print_line(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").is_err() {
        std::process::exit(0);
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("API call task failed")?
}

/// Runs `strata site ...`.
pub async fn site(cmd: SiteCommand) -> anyhow::Result<()> {
    blocking(move || {
        let value: Value = match cmd {
            SiteCommand::List(access) => access.client()?.get("list sites", "/api/v1/sites")?,
            SiteCommand::Create {
                id,
                region,
                name,
                access,
            } => access.client()?.post(
                "create site",
                "/api/v1/sites",
                &json!({ "id": id, "region": region, "name": name }),
            )?,
        };
        print(&value);
        Ok(())
    })
    .await
}

/// Runs `strata device ...`.
pub async fn device(cmd: DeviceCommand) -> anyhow::Result<()> {
    blocking(move || {
        let value: Value =
            match cmd {
                DeviceCommand::List { site, access } => {
                    let path = match site {
                        Some(s) => format!(
                            "/api/v1/devices?site={}",
                            crate::api_client::query_value(&s)
                        ),
                        None => "/api/v1/devices".into(),
                    };
                    access.client()?.get("list devices", &path)?
                }
                DeviceCommand::Create {
                    id,
                    site,
                    tags,
                    signals,
                    access,
                } => {
                    let tags: BTreeMap<_, _> = tags.into_iter().collect();
                    let signals: BTreeMap<_, _> = signals.into_iter().collect();
                    access.client()?.post(
                        "register device",
                        "/api/v1/devices",
                        &json!({ "id": id, "site": site, "tags": tags, "signals": signals }),
                    )?
                }
                DeviceCommand::Enroll {
                    id,
                    token,
                    hub,
                    ca_file,
                    #[cfg(feature = "edge")]
                    identity_dir,
                } => {
                    if token.is_empty() {
                        bail!("the enrollment token is empty");
                    }
                    #[cfg(not(feature = "edge"))]
                    let identity_dir: Option<PathBuf> = None;
                    let mut body = json!({ "device": id, "token": token });
                    let key = match &identity_dir {
                        Some(_) => Some(new_device_key(&mut body)?),
                        None => None,
                    };
                    let enrolled: Value = ApiClient::with_ca(&hub, None, ca_file.as_deref())?
                        .post("enroll", "/api/v1/enroll", &body)?;
                    if let (Some(dir), Some(key)) = (identity_dir, key) {
                        store_identity(&dir, &key, &enrolled)?;
                        json!({
                            "device": enrolled["device"],
                            "identity_dir": dir,
                            "mqtt_tls_port": enrolled["mqtt_tls_port"],
                            "not_after_ns": enrolled["certificate"]["not_after_ns"],
                        })
                    } else {
                        enrolled
                    }
                }
                DeviceCommand::Revoke { id, access } => access.client()?.post(
                    "revoke device",
                    &format!("/api/v1/devices/{id}/revoke"),
                    &json!({}),
                )?,
                DeviceCommand::Latest { id, access } => access
                    .client()?
                    .get("latest readings", &format!("/api/v1/devices/{id}/latest"))?,
            };
        print(&value);
        Ok(())
    })
    .await
}

/// Makes the device's key and puts its public half in the enrollment request.
#[cfg(feature = "edge")]
fn new_device_key(body: &mut Value) -> anyhow::Result<Vec<u8>> {
    let (pkcs8, spki) = strata_edge::identity::generate_key().map_err(anyhow::Error::msg)?;
    body["public_key"] = json!(strata_edge::identity::base64(&spki));
    Ok(pkcs8)
}

#[cfg(not(feature = "edge"))]
fn new_device_key(_: &mut Value) -> anyhow::Result<Vec<u8>> {
    bail!("this build has no edge agent to keep a device identity")
}

/// Writes the key, the issued certificate and the credential (owner-only).
#[cfg(feature = "edge")]
fn store_identity(dir: &std::path::Path, pkcs8: &[u8], enrolled: &Value) -> anyhow::Result<()> {
    let issued: strata_edge::identity::Issued =
        serde_json::from_value(enrolled["certificate"].clone())
            .context("the hub sent no certificate: is its MQTT TLS listener on?")?;
    strata_edge::identity::store(dir, pkcs8, &issued, strata_edge::now_ns())
        .map_err(anyhow::Error::msg)?;
    let credential = enrolled["credential"]
        .as_str()
        .context("no credential in the answer")?;
    let path = dir.join("credential");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write as _;
    options
        .open(&path)
        .and_then(|mut f| f.write_all(credential.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(not(feature = "edge"))]
fn store_identity(_: &std::path::Path, _: &[u8], _: &Value) -> anyhow::Result<()> {
    bail!("this build has no edge agent to keep a device identity")
}
