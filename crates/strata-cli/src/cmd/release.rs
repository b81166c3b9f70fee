//! `strata release ...`: the offline side of OTA updates. Makes release
//! keys, signs releases (what may be installed: an artifact's hash and
//! size, a version, a target, an expiry), and checks a signed release
//! against its artifact. See `docs/design/ota.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use strata_ota::{
    Artifact, ArtifactCheck, BundleDetails, DocumentType, Envelope, KeyPair, Kind, ModelDetails,
    PublicKey, Release, Target,
};

use serde_json::Value;

use super::registry::{HubAccess, TargetArgs, parse_pair, print};

/// `strata release`.
#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Make a release key: writes its secret (PKCS#8, mode 0600) to FILE and
    /// prints the public key devices are configured to trust.
    Keygen {
        /// Where the secret key goes (must not exist).
        file: PathBuf,
    },
    /// Sign a release of an artifact; prints the signed release (JSON).
    Sign {
        /// The release key (from `strata release keygen`).
        #[arg(long)]
        key: PathBuf,
        /// `model`, `config` or `bundle`.
        #[arg(long)]
        kind: String,
        /// The release's name (a model's name, `agent`, ...).
        #[arg(long)]
        name: String,
        /// Its version: above every earlier release of this kind and name.
        #[arg(long)]
        version: u64,
        /// The lowest version a device running this release may go back to
        /// (what a campaign's fleet rollback needs); default: no going back.
        #[arg(long)]
        min_version: Option<u64>,
        /// The artifact file.
        #[arg(long)]
        artifact: PathBuf,
        /// How long devices may install it, e.g. `90d`, `12h`.
        #[arg(long, default_value = "90d")]
        expires_in: String,
        /// Only these devices (repeatable).
        #[arg(long = "device")]
        devices: Vec<String>,
        /// Only devices of these sites (repeatable).
        #[arg(long = "site")]
        sites: Vec<String>,
        /// Only devices with this tag, key=value (repeatable).
        #[arg(long = "tag", value_parser = parse_pair)]
        tags: Vec<(String, String)>,
        /// Models: the pipeline vector it reads.
        #[arg(long)]
        vector: Option<String>,
        /// Models: its input features, comma-separated, in order.
        #[arg(long)]
        features: Option<String>,
        /// Models: a JSON file of golden cases (`[{"input": [...],
        /// "output": [...]}]`) the model must reproduce on the device
        /// before it runs.
        #[arg(long)]
        golden: Option<PathBuf>,
        /// Bundles: the install hook (a name from the agent's config).
        #[arg(long)]
        install_hook: Option<String>,
    },
    /// Upload an artifact and submit its signed release to a hub, which
    /// checks both (trusted key, expiry, newer version, size and hash).
    Submit {
        /// The signed release (JSON from `strata release sign`).
        release: PathBuf,
        /// The artifact it names.
        #[arg(long)]
        artifact: PathBuf,
        #[command(flatten)]
        access: HubAccess,
    },
    /// List the releases a hub accepted.
    List {
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only this name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        access: HubAccess,
    },
    /// Assign an accepted release to devices now: the hub signs one
    /// assignment per device with its rollout key and sends it through
    /// the device's twin.
    Assign {
        /// `model`, `config` or `bundle`.
        kind: String,
        /// The release's name.
        name: String,
        /// Its version.
        version: u64,
        #[command(flatten)]
        target: TargetArgs,
        /// How long each assignment stays valid, in seconds.
        #[arg(long, default_value_t = 6 * 3600)]
        expires_in_s: u64,
        #[command(flatten)]
        access: HubAccess,
    },
    /// Check a signed release: its signature by a trusted release key, its
    /// expiry, and (with --artifact) the artifact's size and hash.
    Verify {
        /// The signed release (JSON from `strata release sign`).
        release: PathBuf,
        /// A trusted release public key, hex (repeatable).
        #[arg(long = "release-key", required = true)]
        release_keys: Vec<String>,
        /// The artifact to check against it.
        #[arg(long)]
        artifact: Option<PathBuf>,
    },
}

/// Runs `strata release ...`.
pub fn run(cmd: ReleaseCommand) -> anyhow::Result<()> {
    match cmd {
        ReleaseCommand::Keygen { file } => {
            let (key, pkcs8) = KeyPair::generate()?;
            write_private(&file, &pkcs8)?;
            println!("{}", key.public().to_hex());
            eprintln!(
                "release key written to {} (keep it offline); key id {}",
                file.display(),
                key.public().key_id()
            );
            Ok(())
        }
        ReleaseCommand::Sign {
            key,
            kind,
            name,
            version,
            min_version,
            artifact,
            expires_in,
            devices,
            sites,
            tags,
            vector,
            features,
            golden,
            install_hook,
        } => {
            let kind = match kind.as_str() {
                "model" => Kind::Model,
                "config" => Kind::Config,
                "bundle" => Kind::Bundle,
                other => bail!("--kind {other:?}: use model, config or bundle"),
            };
            let secret =
                std::fs::read(&key).with_context(|| format!("cannot read {}", key.display()))?;
            let key = KeyPair::from_pkcs8(&secret)
                .with_context(|| format!("{} is not a release key", key.display()))?;
            let bytes = std::fs::read(&artifact)
                .with_context(|| format!("cannot read {}", artifact.display()))?;
            let lifetime = humantime::parse_duration(&expires_in)
                .with_context(|| format!("--expires-in {expires_in:?} is not a duration"))?;
            let now = now_ns();
            let model = match (kind, vector, features) {
                (Kind::Model, Some(vector), Some(features)) => Some(ModelDetails {
                    vector,
                    features: features.split(',').map(|f| f.trim().to_owned()).collect(),
                    golden: match &golden {
                        Some(path) => {
                            let text = std::fs::read_to_string(path)
                                .with_context(|| format!("cannot read {}", path.display()))?;
                            serde_json::from_str(&text).with_context(|| {
                                format!("{}: not a list of golden cases", path.display())
                            })?
                        }
                        None => Vec::new(),
                    },
                }),
                (Kind::Model, _, _) => bail!("a model release needs --vector and --features"),
                _ => None,
            };
            let bundle = match (kind, install_hook) {
                (Kind::Bundle, Some(install_hook)) => Some(BundleDetails { install_hook }),
                (Kind::Bundle, None) => bail!("a bundle release needs --install-hook"),
                _ => None,
            };
            if let Some(m) = min_version
                && m > version
            {
                bail!("--min-version {m} is above --version {version}");
            }
            let release = Release {
                kind,
                name,
                version,
                min_version,
                artifact: Artifact {
                    sha256: strata_ota::sha256_hex(&bytes),
                    size: bytes.len() as u64,
                },
                target: Target {
                    devices,
                    sites,
                    tags: tags.into_iter().collect::<BTreeMap<_, _>>(),
                },
                created_ns: now,
                expires_ns: now.saturating_add(nanos(lifetime)),
                model,
                bundle,
            };
            let envelope = Envelope::sign(DocumentType::Release, &release, &key);
            println!("{}", serde_json::to_string_pretty(&envelope)?);
            Ok(())
        }
        ReleaseCommand::Submit {
            release,
            artifact,
            access,
        } => {
            let text = std::fs::read_to_string(&release)
                .with_context(|| format!("cannot read {}", release.display()))?;
            let envelope: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", release.display()))?;
            let bytes = std::fs::read(&artifact)
                .with_context(|| format!("cannot read {}", artifact.display()))?;
            let api = access.client()?;
            let _: Value = api.post_bytes("upload artifact", "/api/v1/artifacts", &bytes)?;
            let record: Value = api.post("submit release", "/api/v1/releases", &envelope)?;
            print(&record);
            Ok(())
        }
        ReleaseCommand::List { kind, name, access } => {
            let mut query = Vec::new();
            if let Some(k) = kind {
                query.push(format!("kind={}", crate::api_client::query_value(&k)));
            }
            if let Some(n) = name {
                query.push(format!("name={}", crate::api_client::query_value(&n)));
            }
            let releases: Value = access.client()?.get(
                "list releases",
                &format!("/api/v1/releases?{}", query.join("&")),
            )?;
            print(&releases);
            Ok(())
        }
        ReleaseCommand::Assign {
            kind,
            name,
            version,
            target,
            expires_in_s,
            access,
        } => {
            let mut body = serde_json::json!({ "expires_in_s": expires_in_s });
            target.add_to(&mut body);
            let assigned: Value = access.client()?.post(
                "assign release",
                &format!("/api/v1/releases/{kind}/{name}/{version}/assign"),
                &body,
            )?;
            print(&assigned);
            Ok(())
        }
        ReleaseCommand::Verify {
            release,
            release_keys,
            artifact,
        } => {
            let text = std::fs::read_to_string(&release)
                .with_context(|| format!("cannot read {}", release.display()))?;
            let envelope: Envelope = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a signed release", release.display()))?;
            let keys = release_keys
                .iter()
                .map(|k| PublicKey::from_hex(k))
                .collect::<Result<Vec<_>, _>>()?;
            let r: Release = envelope.open(DocumentType::Release, &keys)?;
            if now_ns() >= r.expires_ns {
                bail!("the release expired");
            }
            if let Some(path) = artifact {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                ArtifactCheck::whole(&r.artifact, &bytes)?;
            }
            println!(
                "ok: {} {} version {} signed by {}, digest {}",
                r.kind.as_str(),
                r.name,
                r.version,
                envelope.key_id,
                envelope.digest()
            );
            Ok(())
        }
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(nanos)
        .unwrap_or(0)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist)", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}
