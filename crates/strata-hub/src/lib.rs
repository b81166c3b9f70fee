//! The Strata hub (fog/cloud layer): embedded MQTT broker, device registry,
//! telemetry ingestion and storage, and the HTTP API.
//!
//! [`Hub::start`] wires the parts together:
//!
//! ```text
//! device --MQTT--> broker --hooks--> ingest (decode, validate) --> writer thread --> store
//!                    ^  PUBACK only after the writer's commit  <-------------'
//!                          writer --> alerts (rules, lifecycle) --> webhooks (signed, retried)
//!                                                               \-> workflows (webhook / command steps)
//! upstream MQTT broker --> upstream (shared subscription) --> the same hooks, ack after the commit
//! HTTP client --> api --> registry / store
//!                     \-> models (registry, jobs: train / backtest, deploy via twins)
//! twins, gates, commands --> downlink --> broker (and the upstream broker) --> devices
//! ```

pub mod alerts;
pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod control;
pub mod dashboard;
pub mod downlink;
pub mod drift;
pub mod error;
pub mod hooks;
pub mod ingest;
pub mod kpi;
pub mod metrics;
pub mod models;
pub mod ota;
pub mod pki;
pub mod registry;
pub mod relay;
pub mod retention;
pub mod retrain;
pub mod secret;
pub mod shared;
pub mod upstream;
pub mod wake;
pub mod webhooks;
pub mod workflows;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_proto::validate::Limits;
use strata_store::retrain::RetrainStore;
use strata_store::{
    AccessStore, CampaignStore, ControlStore, DriftStore, JobStore, LabelStore, ModelStore,
    RegistryStore, ReleaseStore, SqliteStore, TelemetryStore, TwinStore,
};
use tokio::sync::watch;

pub use config::HubConfig;
pub use error::{Error, Result};

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The message a panic was raised with (`"no message"` when it carried
/// neither a `String` nor a `&str`).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message")
}

/// Name of the admin token file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory or a file in it could not be used.
    #[error("{context}: {source}")]
    Io {
        /// What the hub was doing.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Storage could not be opened.
    #[error(transparent)]
    Store(#[from] strata_store::Error),
    /// The registry or another hub component could not start.
    #[error(transparent)]
    Hub(#[from] Error),
    /// The MQTT broker could not start (e.g. its port is taken).
    #[error(transparent)]
    Broker(#[from] strata_broker::BrokerError),
    /// The upstream broker's settings could not be used (e.g. its CA file).
    #[error("{0}")]
    Upstream(String),
    /// The HTTP listener could not bind.
    #[error("HTTP listener cannot bind {addr}: {source}{hint}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
        /// Advice.
        hint: &'static str,
    },
}

/// The stores hub replicas may share (`[shared] postgres`).
struct Shared {
    registry: Arc<dyn RegistryStore>,
    access: Arc<dyn AccessStore>,
    twins: Arc<dyn TwinStore>,
    sketches: Arc<dyn DriftStore>,
    actions: Arc<dyn ControlStore>,
    models: Arc<dyn ModelStore>,
    releases: Arc<dyn ReleaseStore>,
    campaigns: Arc<dyn CampaignStore>,
    /// Training jobs, retraining cycles and late labels: shared only
    /// where telemetry is too, as jobs train on it and labels are joined
    /// to it.
    jobs: Arc<dyn JobStore>,
    cycles: Arc<dyn RetrainStore>,
    labels: Arc<dyn LabelStore>,
}

impl Shared {
    /// All in the data directory's database.
    fn local(store: &Arc<SqliteStore>) -> Shared {
        Shared {
            registry: store.clone(),
            access: store.clone(),
            twins: store.clone(),
            sketches: store.clone(),
            actions: store.clone(),
            models: store.clone(),
            releases: store.clone(),
            campaigns: store.clone(),
            jobs: store.clone(),
            cycles: store.clone(),
            labels: store.clone(),
        }
    }

    /// All in the PostgreSQL database at `url`, but jobs, cycles and labels
    /// there only with `telemetry_shared` (else in `store`).
    fn in_postgres(
        url: &str,
        store: &Arc<SqliteStore>,
        telemetry_shared: bool,
    ) -> Result<Shared, strata_store::Error> {
        use strata_store::postgres::*;
        let records = Arc::new(PostgresRecords::connect(url)?);
        let (jobs, cycles, labels): (
            Arc<dyn JobStore>,
            Arc<dyn RetrainStore>,
            Arc<dyn LabelStore>,
        ) = if telemetry_shared {
            (
                Arc::new(PostgresJobs::connect(url)?),
                Arc::new(PostgresCycles::connect(url)?),
                Arc::new(PostgresLabels::connect(url)?),
            )
        } else {
            (store.clone(), store.clone(), store.clone())
        };
        Ok(Shared {
            registry: Arc::new(PostgresRegistry::connect(url)?),
            access: Arc::new(PostgresAccess::connect(url)?),
            twins: Arc::new(PostgresTwins::connect(url)?),
            sketches: records.clone(),
            actions: records,
            models: Arc::new(PostgresModels::connect(url)?),
            releases: Arc::new(PostgresReleases::connect(url)?),
            campaigns: Arc::new(PostgresCampaigns::connect(url)?),
            jobs,
            cycles,
            labels,
        })
    }
}

/// A running hub.
pub struct Hub {
    /// Held while the hub runs ([`lock_data_dir`]).
    _data_dir_lock: std::fs::File,
    mqtt_addr: SocketAddr,
    mqtt_tls_addr: Option<SocketAddr>,
    http_addr: SocketAddr,
    /// The API is served over HTTPS.
    https: bool,
    admin_token: String,
    data_dir: PathBuf,
    metrics: Arc<metrics::Metrics>,
    broker: strata_broker::BrokerHandle,
    stop: watch::Sender<bool>,
    http_task: tokio::task::JoinHandle<()>,
    writer: Option<std::thread::JoinHandle<()>>,
    writer_commands: tokio::sync::mpsc::UnboundedSender<ingest::writer::Command>,
    jobs: Arc<models::jobs::JobRunner>,
    campaigns: Arc<ota::rollout::Campaigns>,
    retrainer: Arc<retrain::Retrainer>,
    alerts: Arc<alerts::Alerts>,
    webhooks: Arc<webhooks::Webhooks>,
    workflows: Arc<workflows::Workflows>,
}

/// Takes `<data dir>/hub.lock` for as long as the hub runs. Two hubs on
/// one data directory would each keep their own account of what they
/// store (the exactly-once ledger, where a segment ends) and undo each
/// other's.
fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    let io = |context: String| move |source| StartError::Io { context, source };
    std::fs::create_dir_all(data_dir).map_err(io(format!(
        "cannot create the data directory {}",
        data_dir.display()
    )))?;
    let path = data_dir.join("hub.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("cannot open {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::Io {
            context: format!(
                "another hub runs on the data directory {} (it holds {})",
                data_dir.display(),
                path.display()
            ),
            source: std::io::ErrorKind::WouldBlock.into(),
        }),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(io(format!("cannot lock {}", path.display()))(e))
        }
    }
}

impl Hub {
    /// Starts every part of the hub; returns once it accepts connections.
    pub async fn start(config: HubConfig) -> Result<Hub, StartError> {
        let data_dir = config.data_dir.clone();
        let data_dir_lock = lock_data_dir(&data_dir)?;
        let store = Arc::new(SqliteStore::open(&data_dir, config.storage.durability)?);
        // Telemetry in the data directory beside the rest, or in PostgreSQL.
        let telemetry: Arc<dyn TelemetryStore> = match &config.storage.postgres {
            Some(url) => Arc::new(strata_store::postgres::PostgresTelemetry::connect(url)?),
            None => store.clone(),
        };
        let admin_token = admin_token(&data_dir)?;
        // The audit log in the data directory, or, shared by replicas, in
        // PostgreSQL under this replica's key.
        let audit_store: Arc<dyn strata_store::AuditStore> = match &config.shared.postgres {
            Some(url) => {
                let (replica, public_key) = audit::key_of(&data_dir)?;
                Arc::new(strata_store::postgres::PostgresAudit::connect(
                    url,
                    &replica,
                    &public_key,
                )?)
            }
            None => store.clone(),
        };
        let audit = audit::Audit::open(audit_store, &data_dir)?;
        // The registry, accounts, twins, devices' other records, models,
        // releases and campaigns (and, beside shared telemetry, jobs,
        // cycles and labels) in the data directory, or in PostgreSQL shared
        // by replicas.
        let shared = match &config.shared.postgres {
            Some(url) => Shared::in_postgres(url, &store, config.storage.postgres.is_some())?,
            None => Shared::local(&store),
        };
        let Shared {
            registry: registry_store,
            access: access_store,
            twins,
            sketches,
            actions,
            models: model_store,
            releases,
            campaigns: campaign_store,
            jobs: job_store,
            cycles,
            labels,
        } = shared;
        let access = Arc::new(auth::Access::load(
            access_store,
            secret::hash(admin_token.as_bytes()),
            &config.auth,
        )?);
        tracing::info!(public_key = audit.public_key_hex(), "audit log open");
        let pki = Arc::new(pki::Pki::open(
            &data_dir,
            store.clone(),
            config.mqtt.tls.device_cert_ttl_s,
        )?);

        let registry = Arc::new(registry::Registry::load(
            registry_store,
            config.registry.enrollment_token_ttl_s,
        )?);
        for c in pki.valid_certificates()? {
            if let Some(sha) = audit::chain::unhex32(&c.sha256) {
                registry.add_certificate(sha, c.device, c.not_after_ns);
            }
        }
        // A hub alone on its own broker starts with no device connected:
        // devices still marked online lost their connection in a crash (a
        // graceful stop marks them offline). With replicas or an upstream
        // broker, devices may well be connected elsewhere.
        if config.shared.postgres.is_none() && config.upstream.url.is_none() {
            let n = registry.offline_since_last_heard()?;
            if n > 0 {
                tracing::info!(
                    devices = n,
                    "devices still marked online from before a crash are offline since last heard from"
                );
            }
        }
        let metrics = Arc::new(metrics::Metrics::default());
        let webhooks = webhooks::Webhooks::start(store.clone(), &config.webhooks, &data_dir)?;
        let workflows =
            workflows::Workflows::new(config.workflows.clone(), store.clone(), webhooks.clone());
        // With shared stores, one replica at a time raises `offline`
        // alerts: each reads the whole registry.
        let offline_lease = shared::Lease::for_duty(
            config.shared.postgres.as_deref(),
            alerts::watches_presence(&config.alerts),
            shared::Duty::OfflineAlerts,
            metrics.clone(),
        )?;
        let alerts = alerts::Alerts::start(
            config.alerts.clone(),
            store.clone(),
            registry.clone(),
            webhooks.clone(),
            workflows.clone(),
            offline_lease,
        )?;
        let (commands, writer) = ingest::writer::spawn(
            telemetry.clone(),
            registry.clone(),
            metrics.clone(),
            alerts.clone(),
            config.ingest.max_batches_per_commit,
        );
        let limits = Limits {
            max_readings: config.ingest.max_readings_per_batch,
            max_signals: config.ingest.max_signals_per_batch,
            max_future_ns: i64::try_from(config.ingest.max_future_s)
                .unwrap_or(i64::MAX / 2)
                .saturating_mul(1_000_000_000),
        };
        let ingest = Arc::new(ingest::Ingest::new(
            commands.clone(),
            metrics.clone(),
            limits,
        ));
        let artifacts = models::ArtifactStore::open_configured(&config.artifacts, &data_dir)?;
        let models = Arc::new(models::ModelRegistry::open(model_store, artifacts));
        let drift = Arc::new(drift::Drift::new(
            sketches,
            models.clone(),
            config.drift.clone(),
        ));
        // Reported twins wake the campaign worker.
        let reported = Arc::new(wake::Wake::default());
        let hooks = Arc::new(hooks::HubHooks {
            drift: drift.clone(),
            registry: registry.clone(),
            ingest,
            metrics: metrics.clone(),
            twins: twins.clone(),
            reported: reported.clone(),
            actions: actions.clone(),
            audit: audit.clone(),
        });

        let tls = match config.mqtt.tls_listen() {
            Some(bind) => Some(strata_broker::TlsListener {
                bind,
                server: pki.server_config(&config.mqtt.tls.server_names)?,
            }),
            None => None,
        };
        if config.mqtt.plaintext {
            tracing::warn!(listen = %config.mqtt.listen, "plain-text MQTT is on: for development only");
        }
        let broker_config = strata_broker::Config {
            bind: config.mqtt.listen,
            plaintext: config.mqtt.plaintext,
            tls,
            max_packet_size: config.mqtt.max_packet_bytes,
            ..strata_broker::Config::default()
        };
        let broker = strata_broker::Broker::start(broker_config, hooks.clone()).await?;
        registry.attach_broker(broker.clone());
        // What the hub sends devices goes out on its broker, and upstream
        // too where devices connect to an upstream broker.
        let (to_upstream, upstream_queue) = match config.upstream.url {
            Some(_) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let mut downlink = downlink::Downlink::new(broker.clone(), to_upstream);
        // Replicas with devices connected straight to them relay commands
        // to each other (behind an upstream broker, every device gets them
        // there).
        let relay = match (&config.shared.postgres, &config.upstream.url) {
            (Some(url), None) => {
                let log = strata_store::postgres::PostgresCommands::connect(url)?;
                let relay = Arc::new(relay::CommandRelay::start(Arc::new(log), broker.clone())?);
                downlink = downlink.with_relay(relay.clone());
                Some(relay)
            }
            _ => None,
        };
        workflows.start(downlink.clone())?;
        let mqtt_addr = broker.local_addr();
        let mqtt_tls_addr = broker.tls_addr();
        let gates = control::Gates::new(config.control.clone(), downlink.clone(), actions);

        if config.new_twin_epoch {
            let epoch = twins.renew_twin_epoch()?;
            tracing::warn!(
                epoch,
                "the twins' epoch is made anew: devices apply their twins whatever they applied before"
            );
        }
        let deployer = Arc::new(models::deploy::Deployer::new(
            twins.clone(),
            registry.clone(),
            models.clone(),
            drift.clone(),
            downlink,
        )?);
        // Upstream, they all go again once connected there.
        deployer.republish_all(downlink::Reach::Here)?;
        let rollout_key = match &config.ota.rollout_key_file {
            Some(file) => ota::RolloutKey::Given(data_dir.join(file)),
            None => ota::RolloutKey::Own(data_dir.join(ota::ROLLOUT_KEY_FILE)),
        };
        let ota = Arc::new(ota::Ota::open(
            releases,
            models.artifacts().clone(),
            &rollout_key,
            &config.ota.release_keys,
            metrics.clone(),
        )?);
        let campaigns = ota::rollout::Campaigns::start(
            campaign_store,
            twins,
            ota.clone(),
            deployer.clone(),
            reported,
        )?;
        let jobs = Arc::new(models::jobs::JobRunner::start(models::jobs::JobDeps {
            jobs: job_store,
            telemetry: telemetry.clone(),
            labels: labels.clone(),
            models: models.clone(),
            drift: drift.clone(),
            registry: registry.clone(),
            dir: data_dir.join("jobs"),
        })?);

        // With shared stores, one replica at a time runs the retraining
        // policies (replicas usually share one configuration).
        let lease = shared::Lease::for_duty(
            config.shared.postgres.as_deref(),
            !config.retrain.is_empty(),
            shared::Duty::Retrain,
            metrics.clone(),
        )?;
        let retrainer = Arc::new(retrain::Retrainer::start(
            retrain::RetrainDeps {
                cycles,
                jobs: jobs.clone(),
                models: models.clone(),
                drift: drift.clone(),
                deployer: deployer.clone(),
                registry: registry.clone(),
                labels: labels.clone(),
                telemetry: telemetry.clone(),
                audit: audit.clone(),
                lease: Arc::new(lease),
            },
            config.retrain.clone(),
        )?);

        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| {
                let hint = if source.kind() == std::io::ErrorKind::AddrInUse {
                    " (another program holds this port; set [http] listen to another address)"
                } else {
                    ""
                };
                StartError::Http {
                    addr: config.http.listen,
                    source,
                    hint,
                }
            })?;
        let http_addr = listener.local_addr().map_err(|source| StartError::Io {
            context: "cannot read the HTTP listener's address".into(),
            source,
        })?;
        let https = match config.http.tls {
            true => Some(pki.https_config(&config.mqtt.tls.server_names)?),
            false => None,
        };
        let (stop, mut stopped) = watch::channel(false);
        let kpis = Arc::new(kpi::KpiCache::default());
        kpi::spawn(
            kpis.clone(),
            registry.clone(),
            models.clone(),
            telemetry.clone(),
            store.clone(),
            stop.subscribe(),
        );
        shared::spawn(
            shared::Followers {
                registry: registry.clone(),
                access: access.clone(),
                deployer: deployer.clone(),
                commands: relay,
            },
            std::time::Duration::from_millis(config.shared.refresh_ms),
            metrics.clone(),
            stop.subscribe(),
            config.shared.postgres.is_some(),
        );
        // With telemetry in PostgreSQL, one replica at a time deletes the
        // telemetry past retention (and the drift sketches, where those
        // are shared too).
        let retention_lease = shared::Lease::for_duty(
            config.storage.postgres.as_deref(),
            config.storage.retention_ns().is_some()
                || config.storage.retention_max_bytes().is_some(),
            shared::Duty::Retention,
            metrics.clone(),
        )?;
        retention::spawn(
            &config.storage,
            retention::Stores {
                telemetry: telemetry.clone(),
                sketches: drift.store().clone(),
                lease: retention_lease,
                sketches_shared: config.shared.postgres.is_some(),
            },
            metrics.clone(),
            stop.subscribe(),
        );
        retention::spawn_history(
            &config.storage,
            retention::History {
                alerts: store.clone(),
                access: access.clone(),
                registry: registry.clone(),
            },
            metrics.clone(),
            stop.subscribe(),
        );
        control::spawn(
            gates.clone(),
            registry.clone(),
            models.clone(),
            store.clone(),
            telemetry.clone(),
            stop.subscribe(),
        );
        // After each connection to the upstream broker, every retained
        // message for devices is sent there again.
        let resend: upstream::Resend = {
            let (deployer, gates) = (deployer.clone(), gates.clone());
            Arc::new(move || {
                deployer.republish_all(downlink::Reach::Everywhere)?;
                gates.send_again()
            })
        };
        upstream::spawn(
            &config.upstream,
            &data_dir,
            hooks,
            upstream::Downlinks {
                queue: upstream_queue,
                resend,
            },
            stop.subscribe(),
        )
        .map_err(StartError::Upstream)?;
        let state = api::ApiState {
            kpis,
            gates,
            registry,
            labels,
            store: telemetry,
            metrics: metrics.clone(),
            broker: broker.clone(),
            models,
            drift,
            deployer,
            jobs: jobs.clone(),
            ota,
            campaigns: campaigns.clone(),
            retrainer: retrainer.clone(),
            alerts: alerts.clone(),
            webhooks: webhooks.clone(),
            workflows: workflows.clone(),
            access,
            audit,
            pki,
            mqtt_port: mqtt_addr.port(),
            mqtt_tls_port: mqtt_tls_addr.map(|a| a.port()),
        };
        let app = api::router(state);
        let listener = match https {
            Some(tls) => ApiListener::Tls(api::https::HttpsListener::new(listener, tls).map_err(
                |source| StartError::Io {
                    context: "cannot start the HTTPS listener".into(),
                    source,
                },
            )?),
            None => ApiListener::Plain(listener),
        };
        let http_task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            // Handlers see the caller's address (the login throttle).
            let app = app.into_make_service_with_connect_info::<api::https::Peer>();
            let served = match listener {
                ApiListener::Tls(l) => axum::serve(l, app).with_graceful_shutdown(shutdown).await,
                ApiListener::Plain(l) => axum::serve(l, app).with_graceful_shutdown(shutdown).await,
            };
            if let Err(e) = served {
                tracing::error!("HTTP server stopped: {e}");
            }
        });
        tracing::info!(%mqtt_addr, %http_addr, data_dir = %data_dir.display(), "hub started");
        Ok(Hub {
            _data_dir_lock: data_dir_lock,
            mqtt_addr,
            mqtt_tls_addr,
            http_addr,
            https: config.http.tls,
            admin_token,
            data_dir,
            metrics,
            broker,
            stop,
            http_task,
            writer: Some(writer),
            writer_commands: commands,
            jobs,
            campaigns,
            retrainer,
            alerts,
            webhooks,
            workflows,
        })
    }

    /// The MQTT listener's address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// The embedded broker's counters.
    pub fn broker_stats(&self) -> strata_broker::Stats {
        self.broker.stats()
    }

    /// The MQTT TLS listener's address, when there is one.
    pub fn mqtt_tls_addr(&self) -> Option<SocketAddr> {
        self.mqtt_tls_addr
    }

    /// The HTTP listener's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The API's base URL: `https://` with `[http] tls`, else `http://`.
    pub fn api_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.http_addr)
    }

    /// The admin token (also in `admin.token` in the data directory).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The hub's counters.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// Stops accepting connections, stores what was queued, and returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.jobs.stop();
        self.retrainer.stop();
        self.campaigns.stop();
        self.alerts.stop();
        self.workflows.stop();
        self.webhooks.stop();
        self.broker.shutdown().await;
        let _ = (&mut self.http_task).await;
        // The writer stores everything queued before the stop, then exits.
        let _ = self.writer_commands.send(ingest::writer::Command::Stop);
        if let Some(writer) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }
}

/// Where the API is served: plain text, or TLS with the platform CA's
/// server certificate.
enum ApiListener {
    Plain(tokio::net::TcpListener),
    Tls(api::https::HttpsListener),
}

/// Reads the admin token, creating it (readable by the owner only) on first start.
fn admin_token(data_dir: &Path) -> Result<String, StartError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(StartError::Io {
                context: format!("cannot read {}", path.display()),
                source,
            });
        }
    }
    let token = secret::generate("stadm_");
    write_private(&path, token.as_bytes()).map_err(|source| StartError::Io {
        context: format!("cannot write {}", path.display()),
        source,
    })?;
    tracing::info!(path = %path.display(), "created the admin token");
    Ok(token)
}

/// Writes a new file readable by the owner only, synced.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Renders the broker's counters in the Prometheus text format.
pub fn broker_metrics(broker: &strata_broker::BrokerHandle, out: &mut String) {
    use std::fmt::Write as _;
    let s = broker.stats();
    let _ = writeln!(
        out,
        "# HELP strata_mqtt_connected_clients MQTT clients connected now."
    );
    let _ = writeln!(out, "# TYPE strata_mqtt_connected_clients gauge");
    let _ = writeln!(
        out,
        "strata_mqtt_connected_clients {}",
        broker.connected_clients()
    );
    let counters = [
        (
            "connections_accepted",
            "Connections accepted.",
            s.connections_accepted,
        ),
        (
            "connections_refused",
            "Connections refused at CONNECT.",
            s.connections_refused,
        ),
        ("messages_in", "PUBLISH packets received.", s.messages_in),
        ("messages_out", "PUBLISH packets delivered.", s.messages_out),
        ("bytes_in", "Bytes received.", s.bytes_in),
        ("bytes_out", "Bytes sent.", s.bytes_out),
        (
            "dropped_acl",
            "Publishes refused by the topic ACL.",
            s.dropped_acl,
        ),
        (
            "subscriptions_denied",
            "Subscriptions refused by the topic ACL.",
            s.subscriptions_denied,
        ),
        (
            "dropped_too_large",
            "Packets over the size limit.",
            s.dropped_too_large,
        ),
        (
            "queue_drops",
            "Messages dropped from full session queues.",
            s.queue_drops,
        ),
        (
            "malformed_packets",
            "Connections closed for malformed packets.",
            s.malformed_packets,
        ),
        (
            "tls_handshakes",
            "TLS handshakes completed.",
            s.tls_handshakes,
        ),
        (
            "tls_failures",
            "TLS handshakes that failed (no or a bad client certificate, a timeout).",
            s.tls_failures,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP strata_mqtt_{name}_total {help}");
        let _ = writeln!(
            out,
            "# TYPE strata_mqtt_{name}_total counter\nstrata_mqtt_{name}_total {value}"
        );
    }
}
