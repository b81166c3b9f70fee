//! `strata demo`, the README's first command, runs end to end: a hub, a
//! simulated fleet enrolled through the API, telemetry stored.

use std::path::Path;
use std::process::Command;

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
