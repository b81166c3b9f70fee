//! Phased rollouts over 1,000 simulated devices, against the `strata hub`
//! binary and `strata simulate` (a real edge agent per device): a
//! campaign with no failures opens every wave and completes, even across
//! a hub killed with SIGKILL mid-campaign; the same campaign for a release
//! 5 % of the fleet cannot run (their pipeline lacks the vector it reads)
//! pauses at its failure threshold, and an operator's abort returns the
//! devices that committed it to the release they had.

mod common;

use std::ffi::OsStr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const DEVICES: usize = 1000;

/// `strata simulate`, stopped when dropped.
struct Fleet(Child);

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PIPELINE: &str = "[[pipeline.windows]]\nname = \"w\"\nsignals = [\"temperature\", \"current\"]\nsize_ms = 500\nfeatures = [\"mean\", \"max\"]\n\
     [[pipeline.vectors]]\nname = \"machine\"\nfeatures = [\"w.temperature.mean\", \"w.temperature.max\", \"w.current.mean\", \"w.current.max\"]\n";
const FEATURES: &str = "w.temperature.mean,w.temperature.max,w.current.mean,w.current.max";

/// The campaign's state once it stops moving (or the last seen).
fn wait_campaign(hub: &HubProcess, id: i64, until: &[&str], timeout: Duration) -> Value {
    let mut view = Value::Null;
    eventually(timeout, &format!("campaign {id} reaches {until:?}"), || {
        view = hub.api("GET", &format!("/api/v1/campaigns/{id}"), None).1;
        until.contains(&view["state"].as_str().unwrap_or(""))
    });
    view
}

fn hub_args(hub: &HubProcess) -> [String; 4] {
    [
        "--hub".into(),
        format!("http://{}", hub.http),
        "--token".into(),
        hub.token.clone(),
    ]
}

/// Starts a campaign of `rul` `version` with the CLI; returns its id.
fn start_campaign(hub: &HubProcess, version: u64, extra: &[&str]) -> i64 {
    let version = version.to_string();
    let mut args: Vec<&str> = vec![
        "campaign",
        "start",
        "model",
        "rul",
        &version,
        "--site",
        "plant",
        "--failure-threshold",
        "3%",
        "--min-sample",
        "30",
        "--timeout-s",
        "180",
    ];
    args.extend(extra);
    let access = hub_args(hub);
    args.extend(access.iter().map(String::as_str));
    let out = strata(&args.iter().map(OsStr::new).collect::<Vec<_>>());
    let first = out.lines().next().unwrap_or_default();
    first
        .strip_prefix("campaign ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no campaign id in {out}"))
}

/// Every device's reported update of `rul` at `version`, by device.
fn reports(hub: &HubProcess, devices: &[String], version: u64) -> Vec<Option<Value>> {
    devices
        .iter()
        .map(|d| {
            let (_, twin) = hub.api("GET", &format!("/api/v1/devices/{d}/twin"), None);
            twin["reported"]["updates"]
                .as_array()
                .and_then(|u| {
                    u.iter()
                        .find(|u| u["name"] == "rul" && u["version"] == version)
                })
                .cloned()
        })
        .collect()
}

#[test]
fn a_thousand_device_campaign_completes_and_one_that_fails_pauses_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release.key");
    let public = strata(&["release".as_ref(), "keygen".as_ref(), key.as_os_str()]);
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!("[ota]\nrelease_keys = [\"{}\"]\n", public.trim()),
    )
    .unwrap();
    let data = dir.path().join("hub");
    let config_arg = ["--config", config.to_str().unwrap()];
    let mut hub = HubProcess::start_with(&data, &config_arg);

    // Two releases of the scikit-learn model: v2 reads the `machine`
    // vector every device computes; v3 reads `machine_v2`, which the 5 %
    // of devices on the legacy pipeline lack. v3 allows going back to v2.
    peer_script("models.py", &["train".as_ref(), dir.path().as_os_str()]);
    let model = dir.path().join("rul.onnx");
    let access = hub_args(&hub);
    for (version, vector, extra) in [(2, "machine", None), (3, "machine_v2", Some("2"))] {
        let version = version.to_string();
        let words = [
            "release",
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--kind",
            "model",
            "--name",
            "rul",
            "--version",
            &version,
            "--artifact",
            model.to_str().unwrap(),
            "--vector",
            vector,
            "--features",
            FEATURES,
        ];
        let mut args: Vec<&OsStr> = words.iter().map(OsStr::new).collect();
        if let Some(floor) = extra {
            args.extend(["--min-version".as_ref(), OsStr::new(floor)]);
        }
        let signed = dir.path().join(format!("v{version}.json"));
        std::fs::write(&signed, strata(&args)).unwrap();
        let mut submit: Vec<&OsStr> = vec![
            "release".as_ref(),
            "submit".as_ref(),
            signed.as_os_str(),
            "--artifact".as_ref(),
            model.as_os_str(),
        ];
        submit.extend(access.iter().map(OsStr::new));
        strata(&submit);
    }

    // The fleet: 1,000 agents in one process, 50 on the legacy pipeline.
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            "{PIPELINE}[[pipeline.vectors]]\nname = \"machine_v2\"\nfeatures = [{}]\n",
            FEATURES
                .split(',')
                .map(|f| format!("\"{f}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .unwrap();
    let legacy = dir.path().join("legacy.toml");
    std::fs::write(&legacy, PIPELINE).unwrap();
    let log = std::fs::File::create(dir.path().join("fleet.log")).unwrap();
    let fleet = Fleet(
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args([
                "simulate",
                "--devices",
                &DEVICES.to_string(),
                "--site",
                "plant",
            ])
            .args(["--mqtt", &hub.mqtt.to_string(), "--interval-ms", "1000"])
            .args(["--health-window-ms", "2000", "--legacy-share", "0.05"])
            .arg("--pipeline")
            .arg(&pipeline)
            .arg("--legacy-pipeline")
            .arg(&legacy)
            .arg("--state-dir")
            .arg(dir.path().join("fleet"))
            .args(&access)
            .env("STRATA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    eventually(
        Duration::from_secs(240),
        "every simulated device is online",
        || {
            let (_, devices) = hub.api("GET", "/api/v1/devices", None);
            let online = devices.as_array().map_or(0, |d| {
                d.iter().filter(|d| d["online"] == json!(true)).count()
            });
            online == DEVICES
        },
    );
    let ids: Vec<String> = (1..=DEVICES).map(|n| format!("machine-{n:02}")).collect();
    // `strata simulate` puts every 20th device on the legacy pipeline.
    let is_legacy = |id: &str| {
        id.strip_prefix("machine-")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n % 20 == 0)
    };

    // Campaign 1: v2 for everyone. The hub is killed once the canary is
    // through, and a new hub on the same addresses carries the campaign on.
    let started = Instant::now();
    let first = start_campaign(&hub, 2, &["--on-failure", "pause"]);
    eventually(Duration::from_secs(180), "the canary passes", || {
        let (_, view) = hub.api("GET", &format!("/api/v1/campaigns/{first}"), None);
        view["wave"].as_u64().unwrap_or(0) >= 1
    });
    let (mqtt, http) = (hub.mqtt.to_string(), hub.http.to_string());
    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
    hub = HubProcess::start_at(&data, &mqtt, &http, &config_arg);
    let done = wait_campaign(
        &hub,
        first,
        &["completed", "paused", "aborted"],
        Duration::from_secs(600),
    );
    let rollout_s = started.elapsed().as_secs_f64();
    assert_eq!(done["state"], "completed", "{done:#}");
    assert_eq!(done["totals"], json!({ "committed": DEVICES }), "{done:#}");
    let waves = done["progress"].as_array().unwrap();
    assert_eq!(
        waves
            .iter()
            .map(|w| w["devices"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [50, 100, 200, 400, 250]
    );
    for w in waves {
        assert_eq!(w["states"]["committed"], w["devices"], "{w}");
    }
    eprintln!("campaign of {DEVICES} devices (a hub restart included): {rollout_s:.1} s");
    let v2 = reports(&hub, &ids, 2);
    assert!(
        v2.iter()
            .all(|r| r.as_ref().is_some_and(|r| r["state"] == "committed")),
        "every device reports v2 committed"
    );

    // Campaign 2: the same campaign for v3, which the legacy devices
    // cannot run: it pauses at 3 % failures, long before its last wave.
    let second = start_campaign(&hub, 3, &["--on-failure", "pause", "--rollback"]);
    let paused = wait_campaign(
        &hub,
        second,
        &["paused", "completed"],
        Duration::from_secs(600),
    );
    assert_eq!(paused["state"], "paused", "{paused:#}");
    assert!(
        paused["reason"]
            .as_str()
            .unwrap()
            .contains("failure threshold"),
        "{paused:#}"
    );
    let totals = &paused["totals"];
    assert!(totals["pending"].as_u64().unwrap() > 0, "{paused:#}");
    for f in paused["failures"].as_array().unwrap() {
        let device = f["device"].as_str().unwrap();
        assert!(is_legacy(device), "{device} failed: {f}");
        assert_eq!(f["reason"], "incompatible", "{f}");
    }
    let shown = strata(
        &["campaign", "show", &second.to_string()]
            .iter()
            .map(OsStr::new)
            .chain(access.iter().map(OsStr::new))
            .collect::<Vec<_>>(),
    );
    assert!(
        shown.contains("paused") && shown.contains("incompatible"),
        "{shown}"
    );

    // The operator aborts: devices that committed v3 go back to v2.
    strata(
        &["campaign", "abort", &second.to_string()]
            .iter()
            .map(OsStr::new)
            .chain(access.iter().map(OsStr::new))
            .collect::<Vec<_>>(),
    );
    let back = wait_campaign(
        &hub,
        second,
        &["rolled_back", "aborted"],
        Duration::from_secs(300),
    );
    assert_eq!(back["state"], "rolled_back", "{back:#}");
    let totals = back["totals"].as_object().unwrap();
    assert!(!totals.contains_key("committed"), "{back:#}");
    assert!(!totals.contains_key("rollback_failed"), "{back:#}");
    assert!(totals["rolled_back"].as_u64().unwrap() > 0, "{back:#}");
    assert!(totals["skipped"].as_u64().unwrap() > 0, "{back:#}");
    // Every device runs v2 again: committed under the rollback tag, or
    // never moved off it. (Devices withdrawn mid-install answer once that
    // install is over.)
    let mut v2 = Vec::new();
    eventually(
        Duration::from_secs(180),
        "every device reports v2 committed",
        || {
            v2 = reports(&hub, &ids, 2);
            v2.iter()
                .all(|r| r.as_ref().is_some_and(|r| r["state"] == "committed"))
        },
    );
    let mut rolled_back = 0;
    for (id, r) in ids.iter().zip(&v2) {
        let r = r.as_ref().unwrap_or_else(|| panic!("{id} reports no v2"));
        assert_eq!(r["state"], "committed", "{id}: {r}");
        if r["campaign"] == format!("campaign-{second}-rollback") {
            rolled_back += 1;
        }
    }
    assert!(rolled_back as u64 >= totals["rolled_back"].as_u64().unwrap());
    drop(fleet);
}
