//! `strata bench ingest`: readings per second from MQTT publish to durable
//! storage, beside the raw rate of the same publishers against the same
//! broker with no storage behind it (with `--tls`, the devices publish to
//! the hub over mutual TLS), each with the CPU time the process spent per
//! batch (publishers, broker and, on the hub side, storage: the two
//! cores are shared, so CPU per batch is what the rate is made of).
//! `strata bench tls`: MQTT connections per second over mutual TLS beside
//! plain text, against the same hub.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::json;
use strata_broker::{AuthDecision, Client, ConnectInfo, Hooks, InboundPublish, PublishDecision};
use strata_hub::{Hub, HubConfig};
use strata_proto::payload::{Encoding, encode_telemetry};
use strata_proto::{SignalSeries, TelemetryBatch};
use strata_store::Durability;

use crate::api_client::ApiClient;
use crate::fleet::{Login, publish_all};

/// `strata bench`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Ingest throughput: MQTT publish to durable storage vs the raw broker.
    Ingest(IngestArgs),
    /// Connection rate: full TLS handshakes with client certificates and
    /// MQTT CONNECT, beside plain-text connections with passwords.
    Tls(TlsArgs),
}

/// Options of `strata bench tls`.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Connections to make on each side.
    #[arg(long, default_value_t = 2000)]
    pub connections: usize,
    /// Connections made at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Times to run each side; the best run of each is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// Options of `strata bench ingest`.
#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// Publishing devices (one MQTT connection each).
    #[arg(long, default_value_t = 20)]
    pub devices: usize,
    /// Batches each device publishes (enough for each run to last seconds,
    /// not a fraction of one).
    #[arg(long, default_value_t = 10_000)]
    pub batches: usize,
    /// Readings per batch.
    #[arg(long, default_value_t = 100)]
    pub readings: usize,
    /// Signals per batch (the readings are split evenly among them).
    #[arg(long, default_value_t = 4)]
    pub signals: usize,
    /// Unacknowledged QoS 1 publishes each device may have in flight.
    #[arg(long, default_value_t = 100)]
    pub inflight: u16,
    /// Storage durability: fsync (survives power loss) or process.
    #[arg(long, default_value = "fsync", value_parser = parse_durability)]
    pub durability: Durability,
    /// Times to run each side; the best run of each is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Measure the raw side against this external broker (e.g. a Mosquitto
    /// started for the purpose, allowing anonymous clients) instead of
    /// Strata's own broker.
    #[arg(long)]
    pub raw_broker: Option<std::net::SocketAddr>,
    /// The scale-out path: the devices publish to this external broker
    /// (allowing anonymous clients, e.g. a Mosquitto started for the
    /// purpose) and the hub takes their batches from it (`[upstream]`);
    /// the hub side's time runs until every batch is stored. The raw side
    /// publishes to the same broker.
    #[arg(long, conflicts_with_all = ["raw_broker", "tls"])]
    pub upstream: Option<std::net::SocketAddr>,
    /// Run only the hub side (for profiling it alone).
    #[arg(long)]
    pub hub_only: bool,
    /// Store the hub side's telemetry in this PostgreSQL database (a
    /// connection string) instead of the data directory.
    #[arg(long)]
    pub postgres: Option<String>,
    /// The devices publish to the hub over mutual TLS (each with its own
    /// certificate from the hub's CA) instead of plain text.
    #[arg(long)]
    pub tls: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "fsync" => Ok(Durability::Fsync),
        "process" => Ok(Durability::Process),
        _ => Err(format!("{s:?}: use fsync or process")),
    }
}

/// Runs a benchmark.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ingest(args) => ingest(args).await,
        BenchCommand::Tls(args) => tls(args).await,
    }
}

/// Routes everything at once: the broker with nothing behind it.
struct RawBroker;

impl Hooks for RawBroker {
    fn authenticate(&self, _: &ConnectInfo<'_>) -> AuthDecision {
        AuthDecision::Allow
    }
    fn authorize_publish(&self, _: Client<'_>, _: &str) -> bool {
        true
    }
    fn authorize_subscribe(&self, _: Client<'_>, _: &str) -> bool {
        true
    }
    fn on_publish(&self, _: Client<'_>, _: &InboundPublish) -> PublishDecision {
        PublishDecision::Route
    }
}

/// The pre-encoded batches of device `d`.
fn payloads(args: &IngestArgs, d: usize) -> Vec<Bytes> {
    let per_signal = args.readings / args.signals;
    let t0 = strata_hub::now_ns() - 3_600_000_000_000;
    (0..args.batches)
        .map(|b| {
            let start = t0 + (b * per_signal) as i64 * 1_000_000;
            let batch = TelemetryBatch {
                stream: "bench".into(),
                seq: b as u64 + 1,
                signals: (0..args.signals)
                    .map(|s| SignalSeries {
                        name: format!("signal_{s}"),
                        unit: "1".into(),
                        ts_ns: (0..per_signal)
                            .map(|i| start + i as i64 * 1_000_000)
                            .collect(),
                        values: (0..per_signal)
                            .map(|i| (d * 1000 + b + i + s) as f64 * 0.25)
                            .collect(),
                        quality: vec![],
                    })
                    .collect(),
            };
            Bytes::from(encode_telemetry(&batch, Encoding::Protobuf))
        })
        .collect()
}

/// CPU time this process has used so far (user and system, all threads),
/// where the system tells (Linux).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which ends with the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports in clock ticks of 1/100 s (USER_HZ) on every platform it runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// One side's timed run: how long, and how much CPU the process used
/// meanwhile (publishers and broker, and with the hub its storage).
#[derive(Debug, Clone, Copy)]
struct Run {
    elapsed: Duration,
    cpu: Option<Duration>,
}

impl Run {
    const NONE: Run = Run {
        elapsed: Duration::MAX,
        cpu: None,
    };

    /// CPU microseconds per batch.
    fn cpu_per_batch(&self, batches: usize) -> Option<f64> {
        self.cpu
            .map(|c| c.as_secs_f64() * 1e6 / batches.max(1) as f64)
    }
}

/// Where a timed run started: the process's CPU time and the clock.
struct Stopwatch {
    cpu: Option<Duration>,
    started: Instant,
}

impl Stopwatch {
    fn start() -> Stopwatch {
        Stopwatch {
            cpu: process_cpu(),
            started: Instant::now(),
        }
    }

    /// The run so far.
    fn stop(&self) -> Run {
        Run {
            elapsed: self.started.elapsed(),
            cpu: process_cpu()
                .zip(self.cpu)
                .map(|(after, before)| after.saturating_sub(before)),
        }
    }
}

/// Waits, checking every millisecond, until `done` holds; an error naming
/// `what` if it does not within `within`.
async fn wait_until(what: &str, within: Duration, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !done() {
        ensure!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Publishes every device's batches at once; returns the run's time and CPU.
async fn publish_fleet(
    addr: std::net::SocketAddr,
    logins: &[Login],
    payloads: &[Vec<Bytes>],
    inflight: u16,
) -> anyhow::Result<Run> {
    let stopwatch = Stopwatch::start();
    let mut tasks = Vec::new();
    for (login, p) in logins.iter().zip(payloads) {
        let login = login.clone();
        let p = p.clone();
        let topic = format!("strata/v1/{}/up/telemetry", login.device);
        tasks.push(tokio::spawn(async move {
            publish_all(
                addr,
                &login.device.clone(),
                Some(&login),
                &topic,
                p,
                inflight,
            )
            .await
        }));
    }
    for t in tasks {
        t.await.context("publisher task failed")??;
    }
    Ok(stopwatch.stop())
}

async fn raw_round(
    args: &IngestArgs,
    logins: &[Login],
    payloads: &[Vec<Bytes>],
) -> anyhow::Result<Run> {
    if let Some(addr) = args.raw_broker.or(args.upstream) {
        return publish_fleet(addr, logins, payloads, args.inflight).await;
    }
    let config = strata_broker::Config::with_bind("127.0.0.1:0".parse()?);
    let broker = strata_broker::Broker::start(config, Arc::new(RawBroker)).await?;
    let run = publish_fleet(broker.local_addr(), logins, payloads, args.inflight).await;
    broker.shutdown().await;
    run
}

async fn hub_round(
    args: &IngestArgs,
    names: &[String],
    payloads: &[Vec<Bytes>],
) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
    let mut config = HubConfig {
        data_dir: dir.path().to_owned(),
        ..HubConfig::default()
    };
    config.mqtt.listen = "127.0.0.1:0".parse()?;
    config.mqtt.plaintext = !args.tls;
    config.mqtt.tls.listen = args.tls.then(|| "127.0.0.1:0".parse()).transpose()?;
    config.http.listen = "127.0.0.1:0".parse()?;
    config.storage.durability = args.durability;
    config.storage.postgres = args.postgres.clone();
    if let Some(broker) = args.upstream {
        config.upstream.url = Some(format!("mqtt://{broker}"));
        config.upstream.group = String::new();
        // Every run takes up the session of the one before (empty, all
        // acknowledged): a new one each run would leave the broker queueing
        // for the old ones.
        config.upstream.client_id = format!("strata-bench-{}", std::process::id());
    }
    let hub = Hub::start(config).await?;
    let api = ApiClient::new(
        &format!("http://{}", hub.http_addr()),
        Some(hub.admin_token().to_owned()),
    );
    let names = names.to_vec();
    let tls = args.tls;
    let logins = tokio::task::spawn_blocking(move || enroll_fleet(&api, &names, tls)).await??;
    let addr = hub.mqtt_tls_addr().unwrap_or(hub.mqtt_addr());

    let expected = args.devices * args.batches;
    let run = match args.upstream {
        None => publish_fleet(addr, &logins, payloads, args.inflight).await?,
        Some(broker) => {
            let metrics = hub.metrics();
            wait_until(
                &format!("the hub did not subscribe at {broker}"),
                Duration::from_secs(30),
                || metrics.upstream_connected.load(Relaxed) == 1,
            )
            .await?;
            let stopwatch = Stopwatch::start();
            publish_fleet(broker, &logins, payloads, args.inflight).await?;
            wait_until(
                &format!("the hub did not store every batch from {broker}"),
                Duration::from_secs(600),
                || metrics.batches_stored.load(Relaxed) as usize >= expected,
            )
            .await?;
            stopwatch.stop()
        }
    };
    let stored = hub.metrics().batches_stored.load(Relaxed) as usize;
    let readings = hub.metrics().readings_stored.load(Relaxed) as usize;
    let commits = hub.metrics().commits.load(Relaxed);
    hub.shutdown().await;
    eprintln!(
        "  hub stored {stored} batches in {commits} transactions ({:.0} batches per commit)",
        stored as f64 / commits.max(1) as f64
    );
    ensure!(
        stored == expected,
        "the hub acknowledged every batch but stored {stored} of {expected}"
    );
    let per_batch = args.readings / args.signals * args.signals;
    ensure!(
        readings == expected * per_batch,
        "stored {readings} readings, expected {}",
        expected * per_batch
    );
    Ok(run)
}

/// Registers and enrolls `names` through the API; returns their logins.
/// With `tls`, each device makes a key and gets a certificate, and its
/// login connects over TLS with them.
fn enroll_fleet(api: &ApiClient, names: &[String], tls: bool) -> anyhow::Result<Vec<Login>> {
    let _: serde_json::Value = api
        .post(
            "create site",
            "/api/v1/sites",
            &json!({ "id": "bench", "region": "local" }),
        )
        .or_else(|e| {
            if e.to_string().contains("exists") {
                Ok(json!({}))
            } else {
                Err(e)
            }
        })?;
    names
        .iter()
        .map(|name| {
            let created: serde_json::Value = api.post(
                "register device",
                "/api/v1/devices",
                &json!({ "id": name, "site": "bench" }),
            )?;
            let token = created["enrollment_token"]
                .as_str()
                .context("no enrollment token")?;
            let mut request = json!({ "device": name, "token": token });
            let key = if tls {
                let (pkcs8, spki) =
                    strata_edge::identity::generate_key().map_err(anyhow::Error::msg)?;
                request["public_key"] = json!(strata_edge::identity::base64(&spki));
                Some(pkcs8)
            } else {
                None
            };
            let enrolled: serde_json::Value = api.post("enroll", "/api/v1/enroll", &request)?;
            let credential = enrolled["credential"]
                .as_str()
                .context("no credential")?
                .to_owned();
            let tls = match key {
                Some(pkcs8) => {
                    let cert = &enrolled["certificate"];
                    let pem = |k: &str| cert[k].as_str().unwrap_or_default().as_bytes().to_vec();
                    let key_pem = strata_edge::identity::pem("PRIVATE KEY", &pkcs8);
                    Some(
                        strata_edge::identity::client_config_from_pem(
                            &pem("ca_pem"),
                            &pem("certificate_pem"),
                            key_pem.as_bytes(),
                        )
                        .map_err(anyhow::Error::msg)?,
                    )
                }
                None => None,
            };
            Ok(Login {
                device: name.clone(),
                credential,
                tls,
            })
        })
        .collect()
}

async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    if args.signals == 0 || args.readings < args.signals {
        bail!("--readings must be at least --signals, and --signals at least 1");
    }
    let names: Vec<String> = (0..args.devices).map(|d| format!("bench-{d:04}")).collect();
    let payloads: Vec<Vec<Bytes>> = (0..args.devices)
        .map(|d| self::payloads(&args, d))
        .collect();
    let raw_logins: Vec<Login> = names
        .iter()
        .map(|n| Login {
            device: n.clone(),
            credential: "unused".into(),
            tls: None,
        })
        .collect();
    let readings =
        (args.devices * args.batches * (args.readings / args.signals * args.signals)) as f64;

    let batches = args.devices * args.batches;
    let (mut best_raw, mut best_hub) = (Run::NONE, Run::NONE);
    for round in 1..=args.rounds {
        let raw = if args.hub_only {
            Run::NONE
        } else {
            raw_round(&args, &raw_logins, &payloads)
                .await
                .context("raw broker run")?
        };
        let hub = hub_round(&args, &names, &payloads)
            .await
            .context("hub run")?;
        eprintln!(
            "round {round}: raw broker {:.0} readings/s, hub to storage {:.0} readings/s",
            readings / raw.elapsed.as_secs_f64(),
            readings / hub.elapsed.as_secs_f64()
        );
        if raw.elapsed < best_raw.elapsed {
            best_raw = raw;
        }
        if hub.elapsed < best_hub.elapsed {
            best_hub = hub;
        }
    }
    let raw_rate = readings / best_raw.elapsed.as_secs_f64();
    let hub_rate = readings / best_hub.elapsed.as_secs_f64();
    let ratio = hub_rate / raw_rate;
    // An external broker's CPU is not this process's.
    let external = args.raw_broker.or(args.upstream);
    let raw_cpu = best_raw
        .cpu_per_batch(batches)
        .filter(|_| external.is_none());
    let hub_cpu = best_hub.cpu_per_batch(batches);
    if args.json {
        println!(
            "{}",
            json!({
                "devices": args.devices, "batches_per_device": args.batches,
                "readings_per_batch": args.readings / args.signals * args.signals,
                "durability": format!("{:?}", args.durability).to_lowercase(),
                "postgres": args.postgres.is_some(), "upstream": args.upstream.is_some(),
                "raw_broker_readings_per_s": raw_rate.round(), "hub_readings_per_s": hub_rate.round(),
                "hub_vs_raw": (ratio * 1000.0).round() / 1000.0,
                "raw_cpu_us_per_batch": raw_cpu, "hub_cpu_us_per_batch": hub_cpu,
            })
        );
    } else {
        println!(
            "ingest benchmark: {} devices x {} batches x {} readings, QoS 1, {}{}",
            args.devices,
            args.batches,
            args.readings / args.signals * args.signals,
            match args.postgres {
                Some(_) => "telemetry in PostgreSQL".to_owned(),
                None => format!("durability {:?}", args.durability),
            },
            if args.tls {
                ", devices on mutual TLS"
            } else if args.upstream.is_some() {
                ", through the upstream broker"
            } else {
                ""
            }
        );
        let raw_name = match external {
            Some(addr) => format!("raw broker at {addr}:"),
            None => "raw broker (no storage):".to_owned(),
        };
        let cpu = |c: Option<f64>| {
            c.map(|us| format!(", {us:.1} µs CPU per batch"))
                .unwrap_or_default()
        };
        if !args.hub_only {
            println!(
                "  {raw_name:<26} {:>12.0} readings/s  ({:.0} batches/s{})",
                raw_rate,
                raw_rate / args.readings as f64,
                cpu(raw_cpu)
            );
        }
        println!(
            "  hub, publish to durable:   {:>12.0} readings/s  ({:.0} batches/s{})",
            hub_rate,
            hub_rate / args.readings as f64,
            cpu(hub_cpu)
        );
        if !args.hub_only {
            println!("  hub / raw:                 {:>12.1} %", ratio * 100.0);
        }
    }
    Ok(())
}

/// Connects `logins[i % len]` `n` times, `concurrency` at a time, each up
/// to its CONNACK and a DISCONNECT; returns the elapsed time.
async fn connect_many(
    addr: std::net::SocketAddr,
    logins: &[Login],
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, logins) = (next.clone(), logins.to_vec());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let login = &logins[i % logins.len()];
                crate::fleet::connect_once(addr, login).await?;
            }
        }));
    }
    for t in tasks {
        t.await.context("connect task failed")??;
    }
    Ok(started.elapsed())
}

async fn tls(args: TlsArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
    let mut config = HubConfig {
        data_dir: dir.path().to_owned(),
        ..HubConfig::default()
    };
    config.mqtt.listen = "127.0.0.1:0".parse()?;
    config.mqtt.plaintext = true;
    config.mqtt.tls.listen = Some("127.0.0.1:0".parse()?);
    config.http.listen = "127.0.0.1:0".parse()?;
    let hub = Hub::start(config).await?;
    let api = ApiClient::new(
        &format!("http://{}", hub.http_addr()),
        Some(hub.admin_token().to_owned()),
    );
    let names: Vec<String> = (0..args.concurrency.max(1))
        .map(|d| format!("tls-{d:03}"))
        .collect();
    let with_certs =
        tokio::task::spawn_blocking(move || enroll_fleet(&api, &names, true)).await??;
    let with_passwords: Vec<Login> = with_certs
        .iter()
        .map(|l| Login {
            tls: None,
            ..l.clone()
        })
        .collect();
    let tls_addr = hub.mqtt_tls_addr().context("no TLS listener")?;
    let (mut best_plain, mut best_tls) = (Duration::MAX, Duration::MAX);
    for round in 1..=args.rounds {
        let plain = connect_many(
            hub.mqtt_addr(),
            &with_passwords,
            args.connections,
            args.concurrency,
        )
        .await?;
        let tls = connect_many(tls_addr, &with_certs, args.connections, args.concurrency).await?;
        let rate = |d: Duration| args.connections as f64 / d.as_secs_f64();
        eprintln!(
            "round {round}: plain text {:.0} connections/s, mutual TLS {:.0} connections/s",
            rate(plain),
            rate(tls)
        );
        best_plain = best_plain.min(plain);
        best_tls = best_tls.min(tls);
    }
    let stats = hub.broker_stats();
    hub.shutdown().await;
    let rate = |d: Duration| args.connections as f64 / d.as_secs_f64();
    println!(
        "connection benchmark: {} connections, {} at a time, each to CONNACK and DISCONNECT",
        args.connections, args.concurrency
    );
    println!(
        "  plain text, password:        {:>8.0} connections/s",
        rate(best_plain)
    );
    println!(
        "  mutual TLS, certificate:     {:>8.0} connections/s (TLS 1.3, ECDSA P-256)",
        rate(best_tls)
    );
    println!(
        "  TLS / plain:                 {:>8.1} %",
        rate(best_tls) / rate(best_plain) * 100.0
    );
    println!(
        "  TLS handshakes completed: {}, failed: {}",
        stats.tls_handshakes, stats.tls_failures
    );
    Ok(())
}
