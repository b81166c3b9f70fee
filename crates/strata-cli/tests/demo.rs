//! `strata demo`, the README's first command, runs end to end: a hub, a
//! simulated fleet enrolled through the API, telemetry stored; then the
//! model lifecycle: labelled data collected, a model trained, registered,
//! deployed to every machine, and its predictions stored.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `strata demo` with 3 machines for `seconds` on `data_dir`; returns
/// its standard output after checking it succeeded.
fn run_demo(data_dir: &Path, seconds: u32) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "demo",
            "--devices",
            "3",
            "--duration-s",
            &seconds.to_string(),
            "--stream-only",
        ])
        .args([
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("STRATA_LOG", "warn")
        .output()
        .expect("run strata demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The count on the demo's last line, "demo stopped: N readings stored".
fn stored_readings(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("demo stopped: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no final count in {stdout}"))
}

#[test]
fn demo_streams_a_simulated_fleet_into_storage() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = run_demo(dir.path(), 4);
    assert!(stdout.contains("3 simulated machines"), "{stdout}");
    let stored = stored_readings(&stdout);
    // 3 machines x 3 signals x 10 readings a second, for about 4 seconds.
    assert!(
        stored >= 3 * 30 * 2,
        "only {stored} readings stored: {stdout}"
    );
    assert!(dir.path().join("strata.db").exists());
    // Labels and heartbeats are stored beside the readings, not refused.
    let db = rusqlite::Connection::open(dir.path().join("strata.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT signal FROM series WHERE device_id = 'machine-01' ORDER BY signal")
        .unwrap();
    let signals: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for want in [
        "current",
        "health.uptime_s",
        "label.failure",
        "label.rul_h",
        "temperature",
        "vibration_rms",
    ] {
        assert!(
            signals.iter().any(|s| s == want),
            "{want} not stored: {signals:?}"
        );
    }

    // A second run on the same data directory reconnects the same fleet.
    let stdout = run_demo(dir.path(), 2);
    assert!(stored_readings(&stdout) > 0, "{stdout}");
}

#[test]
fn demo_trains_deploys_and_predicts_on_the_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["demo", "--devices", "4", "--collect-s", "30"])
        .args([
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("STRATA_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run strata demo");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while !seen
        .iter()
        .any(|l: &String| l.contains("predictions flowing"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the demo never reached \"predictions flowing\":\n{}",
                    seen.join("\n")
                );
            }
        }
    }
    let all = seen.join("\n");
    assert!(all.contains("[1/4] collecting labelled telemetry"), "{all}");
    let trained = seen
        .iter()
        .find(|l| l.contains("hold-out MAE"))
        .expect("training figures");
    // "rul v1: hold-out MAE 3.1 h (predicting the mean: 12.4 h), ..."
    let figure = |after: &str| -> f64 {
        let rest = &trained[trained.find(after).unwrap() + after.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!(figure("MAE ") < figure("mean: "), "{trained}");

    // Predictions of the deployed version are in storage for every machine.
    let db = rusqlite::Connection::open(dir.path().join("strata.db")).unwrap();
    let devices: i64 = db
        .query_row(
            "SELECT count(DISTINCT device_id) FROM streams WHERE name = 'model:rul:1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(devices, 4, "{all}");
    let versions: i64 = db
        .query_row(
            "SELECT count(*) FROM model_versions WHERE model = 'rul'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(versions, 1);

    // SIGTERM stops it cleanly.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
