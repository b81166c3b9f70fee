//! The edge agent's store-and-forward under failure: the hub is killed for
//! a while and the agent is SIGKILLed several times while its simulator
//! runs. Afterwards the hub holds every batch exactly once, with no gap in
//! the sequence numbers.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

const BATCHES: u64 = 300;
const PER_SIGNAL: usize = 5;

fn start_agent(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["edge", "--config"])
        .arg(config)
        .env("STRATA_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start strata edge")
}

fn sigkill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn hub_outage_and_agent_kills_lose_and_duplicate_nothing() {
    let hub_dir = tempfile::tempdir().unwrap();
    let edge_dir = tempfile::tempdir().unwrap();
    let mqtt = format!("127.0.0.1:{}", free_port());
    let hub = HubProcess::start_on(hub_dir.path(), &mqtt, &[]);
    let credential = hub.provision("edge-1", json!({}));
    std::fs::write(edge_dir.path().join("credential"), &credential).unwrap();
    let config = edge_dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "device = \"edge-1\"\ndata_dir = {:?}\n[hub]\nmqtt = \"{mqtt}\"\ncredential_file = {:?}\nwindow = 16\n\
             [[sources]]\ntype = \"simulator\"\nstream = \"line\"\ninterval_ms = 20\nreadings_per_signal = {PER_SIGNAL}\nmax_batches = {BATCHES}\n",
            edge_dir.path().join("data"),
            edge_dir.path().join("credential"),
        ),
    )
    .unwrap();

    let agent = start_agent(&config);
    eventually(Duration::from_secs(30), "the first batches stored", || {
        hub.metric("strata_batches_stored_total") >= 40.0
    });
    // The hub goes away mid-stream; the agent keeps producing into its outbox.
    hub.kill();
    std::thread::sleep(Duration::from_millis(700));
    // The agent is killed and restarted twice while the hub is down.
    sigkill(agent);
    let agent = start_agent(&config);
    std::thread::sleep(Duration::from_millis(500));
    sigkill(agent);
    let agent = start_agent(&config);
    std::thread::sleep(Duration::from_millis(500));

    // The hub comes back on the same port; once more the agent dies mid-send.
    let hub = HubProcess::start_on(hub_dir.path(), &mqtt, &[]);
    eventually(Duration::from_secs(60), "the agent resumed sending", || {
        hub.metric("strata_batches_stored_total") >= 1.0
    });
    sigkill(agent);
    let agent = start_agent(&config);

    let expected = BATCHES as usize * PER_SIGNAL;
    eventually(Duration::from_secs(90), "every batch stored", || {
        hub.readings("edge-1", "temperature").len() >= expected
    });
    assert_eq!(
        hub.readings("edge-1", "temperature").len(),
        expected,
        "no reading stored twice"
    );
    sigkill(agent);
    hub.kill();

    // Every sequence number from 1 to BATCHES is stored once: nothing lost.
    let db = rusqlite::Connection::open(hub_dir.path().join("strata.db")).unwrap();
    // The exactly-once ledger holds the stored seqs as intervals.
    let seqs = |stream: &str| -> Vec<u64> {
        let mut stmt = db
            .prepare("SELECT q.lo, q.hi FROM stream_seqs q JOIN streams s ON s.id = q.stream_id WHERE s.device_id = 'edge-1' AND s.name = ?1 ORDER BY q.lo")
            .unwrap();
        stmt.query_map([stream], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
        .unwrap()
        .flat_map(|r| {
            let (lo, hi) = r.unwrap();
            lo..=hi
        })
        .collect()
    };
    assert_eq!(seqs("line"), (1..=BATCHES).collect::<Vec<_>>());
    // The heartbeats went through the same outbox: none lost or repeated.
    let health = seqs("health");
    assert!(health.len() >= 2, "{health:?}");
    assert_eq!(health, (1..=health.len() as u64).collect::<Vec<_>>());
}

/// A source that makes more readings at once than one MQTT message should
/// carry (here 4 × 20,000 readings, about 1.3 MB a batch) has them sent as
/// several batches: all of them reach the hub, nothing is refused, and the
/// uplink does not stall on a batch it cannot send.
#[test]
fn batches_too_large_for_one_message_are_split_and_all_stored() {
    const LARGE_BATCHES: u64 = 3;
    const LARGE_PER_SIGNAL: usize = 20_000;
    let hub_dir = tempfile::tempdir().unwrap();
    let edge_dir = tempfile::tempdir().unwrap();
    let mqtt = format!("127.0.0.1:{}", free_port());
    let hub = HubProcess::start_on(hub_dir.path(), &mqtt, &[]);
    let credential = hub.provision("edge-big", json!({}));
    std::fs::write(edge_dir.path().join("credential"), &credential).unwrap();
    let config = edge_dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "device = \"edge-big\"\ndata_dir = {:?}\n[hub]\nmqtt = \"{mqtt}\"\ncredential_file = {:?}\n\
             [[sources]]\ntype = \"simulator\"\nstream = \"line\"\ninterval_ms = 200\nreadings_per_signal = {LARGE_PER_SIGNAL}\nmax_batches = {LARGE_BATCHES}\n",
            edge_dir.path().join("data"),
            edge_dir.path().join("credential"),
        ),
    )
    .unwrap();
    let agent = start_agent(&config);
    let expected = LARGE_BATCHES as usize * LARGE_PER_SIGNAL;
    eventually(Duration::from_secs(60), "every reading stored", || {
        hub.readings("edge-big", "temperature").len() >= expected
    });
    let stored = hub.readings("edge-big", "temperature");
    assert_eq!(stored.len(), expected, "no reading stored twice");
    assert!(
        stored.windows(2).all(|w| w[0].0 < w[1].0),
        "the readings come back in time order, each once"
    );
    // Each source batch went out in parts: more batches than the source made.
    assert!(
        hub.metric("strata_batches_stored_total") > 2.0 * LARGE_BATCHES as f64,
        "{}",
        hub.metric("strata_batches_stored_total")
    );
    let rejected: f64 = hub
        .metrics()
        .lines()
        .filter(|l| l.starts_with("strata_rejected_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(rejected, 0.0, "nothing refused");
    sigkill(agent);
}

/// On a disk with less free space than `keep_free_bytes`, the agent's
/// outbox does not grow: while the hub is away it drops its oldest batches
/// into the pages they free, and once the hub is back, what the hub
/// acknowledges frees pages for the fresh batches, which keep arriving.
#[test]
fn on_a_nearly_full_disk_the_outbox_file_stops_growing_and_fresh_batches_still_arrive() {
    let hub_dir = tempfile::tempdir().unwrap();
    let edge_dir = tempfile::tempdir().unwrap();
    let mqtt = format!("127.0.0.1:{}", free_port());
    let hub = HubProcess::start_on(hub_dir.path(), &mqtt, &[]);
    let credential = hub.provision("edge-disk", json!({}));
    std::fs::write(edge_dir.path().join("credential"), &credential).unwrap();
    hub.kill();
    let metrics_at = format!("127.0.0.1:{}", free_port());
    let config = |keep_free: u64| {
        format!(
            "device = \"edge-disk\"\ndata_dir = {:?}\n[hub]\nmqtt = \"{mqtt}\"\ncredential_file = {:?}\n\
             [health]\nmetrics_listen = \"{metrics_at}\"\n[outbox]\nkeep_free_bytes = {keep_free}\n\
             [[sources]]\ntype = \"simulator\"\nstream = \"line\"\ninterval_ms = 20\nreadings_per_signal = {PER_SIGNAL}\n",
            edge_dir.path().join("data"),
            edge_dir.path().join("credential"),
        )
    };
    let outbox = edge_dir.path().join("data").join("outbox.db");
    let pages = || -> i64 {
        if !outbox.exists() {
            return 0;
        }
        let db = rusqlite::Connection::open(&outbox).unwrap();
        db.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap()
    };
    let dropped = || edge_metric(&metrics_at, "strata_edge_outbox_dropped_total");

    // With the disk's room, a backlog builds while the hub is away.
    let agent = EdgeProcess::start(edge_dir.path(), &config(64 << 20));
    eventually(Duration::from_secs(30), "a backlog of 20 pages", || {
        pages() >= 20
    });
    agent.kill();
    let backlog = pages();

    // No disk has i64::MAX bytes free: the disk is "nearly full" from here.
    let agent = EdgeProcess::start(edge_dir.path(), &config(i64::MAX as u64));
    eventually(
        Duration::from_secs(30),
        "the oldest batches dropped",
        || dropped() >= 20.0,
    );
    assert!(
        pages() <= backlog,
        "the file grew: {backlog} to {} pages",
        pages()
    );

    let hub = HubProcess::start_on(hub_dir.path(), &mqtt, &[]);
    let back_ns = now_ns();
    eventually(Duration::from_secs(60), "fresh readings stored", || {
        hub.readings("edge-disk", "temperature")
            .iter()
            .filter(|(ts, _)| *ts > back_ns)
            .count()
            >= 50 * PER_SIGNAL
    });
    assert!(
        pages() <= backlog,
        "the file grew: {backlog} to {} pages",
        pages()
    );
    let stored = hub.readings("edge-disk", "temperature");
    assert!(
        stored.windows(2).all(|w| w[0].0 < w[1].0),
        "each reading stored once, in time order"
    );
    agent.kill();
}
