//! The agent: every source sends frames to one processing thread (the
//! pipeline, then the durable outbox); the uplink drains the outbox to the
//! hub; a heartbeat reports health through the same path; the twin task
//! swaps in the models the hub deploys.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::config::EdgeConfig;
use crate::health::{HEALTH_STREAM, HealthState};
use crate::inference::Models;
use crate::outbox::Outbox;
use crate::process::Processor;
use crate::sources::{self, Frame, SourceStats};
use crate::twin::{Reported, Swap, TwinApplier};
use crate::uplink::{self, UplinkConfig};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The outbox could not be opened.
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
    /// The pipeline or a model could not be set up.
    #[error("{0}")]
    Pipeline(String),
    /// The committed OTA versions (and so the anti-rollback floors) cannot
    /// be read.
    #[error("{0}")]
    OtaState(String),
    /// The processing thread could not be started.
    #[error("cannot start the processing thread: {0}")]
    Thread(std::io::Error),
    /// The metrics listener could not bind.
    #[error("[health] metrics_listen {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Frames waiting for the processing thread; a slow disk slows the sources
/// down rather than growing memory.
const FRAME_QUEUE: usize = 64;

/// A running agent.
pub struct Agent {
    tasks: JoinSet<()>,
    outbox: Arc<Outbox>,
    health: Arc<HealthState>,
}

impl Agent {
    /// Starts the sources, the processing thread, the heartbeat and the
    /// uplink. Must be called inside a Tokio runtime.
    pub fn start(config: EdgeConfig) -> Result<Agent, AgentError> {
        let credential = config.credential()?;
        let device = strata_proto::DeviceId::new(config.device.as_str()).expect("checked at parse");
        let outbox = Arc::new(
            Outbox::open(
                &config.data_dir,
                config.outbox.max_bytes,
                config.outbox.drop_policy,
                config.outbox.durability,
            )?
            .keep_free(config.outbox.keep_free_bytes),
        );
        let appended = Arc::new(Notify::new());
        let (frames, mut frames_rx) = tokio::sync::mpsc::channel::<Frame>(FRAME_QUEUE);

        // A pipeline a config release installed and the device committed
        // replaces the file's.
        let file_pipeline = config.pipeline.clone();
        let released =
            crate::twin::committed_pipeline(&config.data_dir).map_err(AgentError::OtaState)?;
        let from_release = released.is_some();
        let active = released.or(file_pipeline.clone());
        let pipeline = match &active {
            Some(p) => Some(
                strata_pipeline::Pipeline::new(p)
                    .map_err(|e| AgentError::Pipeline(format!("[pipeline]: {e}")))?,
            ),
            None => None,
        };
        let vectors: Vec<_> = pipeline
            .iter()
            .flat_map(|p| p.vector_schemas().cloned())
            .collect();
        let file_models = if from_release {
            crate::inference::fitting(&config.models, &config.base_dir, &vectors)
        } else {
            config.models.clone()
        };
        let models =
            Models::load(&file_models, &config.base_dir, &vectors).map_err(AgentError::Pipeline)?;

        let mut tasks = JoinSet::new();
        let mut source_stats = Vec::new();
        for source in config.sources {
            let stats = Arc::new(SourceStats::default());
            source_stats.push((source.stream().to_string(), stats.clone()));
            let next_seq = outbox.next_seq(source.stream())?;
            let (tx, data_dir) = (frames.clone(), config.data_dir.clone());
            tasks.spawn(async move { sources::run(source, &data_dir, next_seq, tx, stats).await });
        }
        let health = Arc::new(HealthState::new(source_stats, models.stats()));

        let mut processor = Processor::new(
            outbox.clone(),
            appended.clone(),
            health.clone(),
            pipeline,
            models,
        );
        let (gate, gate_rx) = tokio::sync::watch::channel(None);
        let (approvals, approvals_rx) = tokio::sync::mpsc::channel(64);
        let mut control_stats = None;
        if !config.control.rules.is_empty() {
            let (feed, control) = crate::control::start(
                &config.control,
                &config.data_dir,
                outbox.clone(),
                appended.clone(),
                health.clone(),
                crate::control::Inputs {
                    gate: gate_rx,
                    approvals: approvals_rx,
                },
            )
            .map_err(|e| AgentError::Pipeline(format!("[control]: {e}")))?;
            control_stats = Some(control.stats());
            processor = processor.with_control(feed);
            tasks.spawn(control.run());
        }
        let (swap, swapped) = std::sync::mpsc::channel::<Swap>();
        std::thread::Builder::new()
            .name("strata-pipeline".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| {
                    while let Some(frame) = frames_rx.blocking_recv() {
                        while let Ok(change) = swapped.try_recv() {
                            match change {
                                Swap::Models(models) => processor.set_models(models),
                                Swap::Pipeline(pipeline, models) => {
                                    processor.set_pipeline(*pipeline, models)
                                }
                            }
                        }
                        processor.handle(frame);
                    }
                });
                // Without this thread nothing is processed or sent, though
                // the rest would run on: the agent stops, for its service
                // manager to start it again (what was acknowledged is in
                // the outbox; a release it stopped with in its health
                // window is counted, and given up after a few).
                if std::panic::catch_unwind(run).is_err() {
                    tracing::error!("the processing thread panicked; the agent stops");
                    std::process::exit(70);
                }
            })
            .map_err(AgentError::Thread)?;

        let trust = config.ota.trust().map_err(AgentError::Pipeline)?;
        let identity = strata_ota::Device {
            id: device.to_string(),
            site: config.ota.site.clone(),
            tags: config.ota.tags.clone(),
        };
        let (desired, desired_rx) = tokio::sync::watch::channel(None);
        let reported = Arc::new(Reported::default());
        let applier = TwinApplier {
            device: device.clone(),
            credential: credential.clone(),
            http: config.hub.http.clone(),
            tls_dir: config.hub.tls_dir.clone(),
            // Installed models are loaded by absolute path: a relative
            // data directory must not depend on where they are resolved.
            data_dir: std::path::absolute(&config.data_dir)
                .unwrap_or_else(|_| config.data_dir.clone()),
            base_dir: std::path::absolute(&config.base_dir)
                .unwrap_or_else(|_| config.base_dir.clone()),
            configured: config.models.clone(),
            file_pipeline,
            running: std::sync::Mutex::new(active),
            swap,
            health: health.clone(),
            reported: reported.clone(),
            trust,
            identity,
            health_window: Duration::from_millis(config.ota.health_window_ms),
            hooks: config.ota.hooks.clone(),
            signed_only: config.ota.signed_only,
        };
        tasks.spawn(applier.run(desired_rx));

        tasks.spawn(heartbeat(
            Duration::from_millis(config.health.interval_ms.max(100)),
            health.clone(),
            outbox.clone(),
            frames,
        ));
        if let Some(addr) = config.health.metrics_listen {
            let listener = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(tokio::net::TcpListener::from_std)
                .map_err(|source| AgentError::Metrics { addr, source })?;
            tasks.spawn(crate::metrics::serve(
                listener,
                device.to_string(),
                health.clone(),
                outbox.clone(),
                control_stats,
            ));
        }
        let uplink = UplinkConfig {
            device,
            mqtt: config.hub.mqtt,
            credential: credential.clone(),
            window: config.hub.window,
            tls_dir: config.hub.tls_dir.clone(),
        };
        if let (Some(dir), Some(http)) = (&config.hub.tls_dir, &config.hub.http) {
            tasks.spawn(
                crate::identity::Renewal {
                    dir: dir.clone(),
                    hub_http: http.clone(),
                    device: config.device.clone(),
                    credential,
                }
                .run(),
            );
        }
        tasks.spawn(uplink::run(
            uplink,
            outbox.clone(),
            appended,
            uplink::Downlink {
                desired,
                reported,
                gate,
                approvals,
            },
        ));
        Ok(Agent {
            tasks,
            outbox,
            health,
        })
    }

    /// The outbox, for status.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Health counters, for status.
    pub fn health(&self) -> &HealthState {
        &self.health
    }

    /// Runs until every task ends (the uplink does not) or the future is
    /// dropped.
    pub async fn wait(mut self) {
        self.until_ended().await;
    }

    /// Resolves when every task has ended (only if they all fail).
    pub async fn until_ended(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    /// Stops the agent: its tasks are cancelled, and this returns once
    /// they have ended (so nothing writes its state any more).
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Sends a heartbeat every `interval`, the first one right away.
async fn heartbeat(
    interval: Duration,
    health: Arc<HealthState>,
    outbox: Arc<Outbox>,
    frames: sources::FrameSender,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream: Arc<str> = HEALTH_STREAM.into();
    loop {
        tick.tick().await;
        let outbox = outbox.clone();
        let stats = tokio::task::spawn_blocking(move || outbox.stats().ok())
            .await
            .ok()
            .flatten();
        let signals = health.heartbeat(crate::now_ns(), stats);
        let frame = Frame {
            stream: stream.clone(),
            signals,
            handled: None,
            resent: false,
        };
        if frames.send(frame).await.is_err() {
            return;
        }
    }
}
