//! `strata demo`, the README's first command, runs end to end: a hub, a
//! simulated fleet enrolled through the API, telemetry stored.

use std::process::Command;

#[test]
fn demo_streams_a_simulated_fleet_into_storage() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["demo", "--devices", "3", "--duration-s", "4"])
        .args([
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("STRATA_LOG", "warn")
        .output()
        .expect("run strata demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 simulated machines"), "{stdout}");
    let stored: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("demo stopped: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no final count in {stdout}"));
    // 3 machines x 3 signals x 10 readings a second, for about 4 seconds.
    assert!(
        stored >= 3 * 30 * 2,
        "only {stored} readings stored: {stdout}"
    );
    assert!(dir.path().join("strata.db").exists());

    // A second run on the same data directory reconnects the same fleet.
    let again = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["demo", "--devices", "3", "--duration-s", "2"])
        .args([
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("STRATA_LOG", "warn")
        .output()
        .expect("run strata demo again");
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(!stdout.contains("demo stopped: 0 readings"), "{stdout}");
}
