//! Signed OTA releases at the hub, against the `strata hub` binary: a
//! release signed offline with `strata release sign` by a key the hub's
//! config trusts is accepted; a wrong signature, an untrusted key, an
//! expired release, an older or equal version and a tampered artifact are
//! each refused with their reason, and counted.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::*;
use serde_json::{Value, json};

fn strata(args: &[&OsStr]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keygen(path: &Path) -> String {
    strata(&["release".as_ref(), "keygen".as_ref(), path.as_os_str()])
        .trim()
        .to_owned()
}

/// Signs a model release of `artifact`; returns the envelope.
fn sign(key: &Path, version: u64, artifact: &Path, expires_in: &str) -> Value {
    let out = strata(&[
        "release".as_ref(),
        "sign".as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        "--kind".as_ref(),
        "model".as_ref(),
        "--name".as_ref(),
        "rul".as_ref(),
        "--version".as_ref(),
        version.to_string().as_ref(),
        "--artifact".as_ref(),
        artifact.as_os_str(),
        "--expires-in".as_ref(),
        expires_in.as_ref(),
        "--vector".as_ref(),
        "bearing".as_ref(),
        "--features".as_ref(),
        "a,b".as_ref(),
    ]);
    serde_json::from_str(&out).unwrap()
}

fn upload(hub: &HubProcess, bytes: &[u8]) -> String {
    let (status, body) = hub.api_bytes("/api/v1/artifacts", bytes);
    assert_eq!(status, 201, "{body}");
    body["sha256"].as_str().unwrap().to_owned()
}

/// Submits a release; returns (status, error code or the record).
fn submit(hub: &HubProcess, envelope: &Value) -> (u16, Value) {
    let (status, body) = hub.api("POST", "/api/v1/releases", Some(envelope.clone()));
    if status == 201 {
        (status, body)
    } else {
        (status, body["error"]["code"].clone())
    }
}

#[test]
fn the_hub_accepts_only_signed_current_newer_intact_releases() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release.key");
    let public = keygen(&key);
    let stranger = dir.path().join("stranger.key");
    keygen(&stranger);
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, format!("[ota]\nrelease_keys = [\"{public}\"]\n")).unwrap();
    let data = dir.path().join("hub");
    let hub = HubProcess::start_with(&data, &["--config", config.to_str().unwrap()]);

    // The keys an agent will trust; the rollout key was made at first start.
    let (_, keys) = hub.api("GET", "/api/v1/ota/keys", None);
    assert_eq!(keys["release_keys"], json!([public]));
    assert_eq!(keys["rollout_key"].as_str().unwrap().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join("rollout.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let artifact = dir.path().join("model.onnx");
    std::fs::write(&artifact, b"model version three").unwrap();
    // Not uploaded yet: refused, saying what to do.
    let v3 = sign(&key, 3, &artifact, "30d");
    let (status, body) = hub.api("POST", "/api/v1/releases", Some(v3.clone()));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("POST it to /api/v1/artifacts")
    );

    upload(&hub, b"model version three");
    let (status, record) = submit(&hub, &v3);
    assert_eq!(status, 201, "{record}");
    assert_eq!(record["version"], 3);
    assert_eq!(record["size"], 19);

    // An equal or older version: rollback.
    assert_eq!(submit(&hub, &v3), (422, json!("rollback")));
    assert_eq!(
        submit(&hub, &sign(&key, 2, &artifact, "30d")),
        (422, json!("rollback"))
    );
    // Signed by a key the hub does not trust.
    assert_eq!(
        submit(&hub, &sign(&stranger, 4, &artifact, "30d")),
        (422, json!("unknown_key"))
    );
    // Edited after signing (the version raised by hand).
    let mut edited = sign(&key, 4, &artifact, "30d");
    let payload = edited["payload"]
        .as_str()
        .unwrap()
        .replace("\"version\":4", "\"version\":5");
    edited["payload"] = json!(payload);
    assert_eq!(submit(&hub, &edited), (422, json!("bad_signature")));
    // Expired.
    assert_eq!(
        submit(&hub, &sign(&key, 4, &artifact, "0s")),
        (422, json!("expired"))
    );
    // The artifact changed in the store after upload (same size).
    let four = dir.path().join("four.onnx");
    std::fs::write(&four, b"model version four!").unwrap();
    let sha = upload(&hub, b"model version four!");
    std::fs::write(
        data.join("artifacts/sha256").join(&sha),
        b"model version f0ur!",
    )
    .unwrap();
    assert_eq!(
        submit(&hub, &sign(&key, 4, &four, "30d")),
        (422, json!("hash_mismatch"))
    );

    // Only v3 was accepted; every refusal was counted by its reason.
    let (_, releases) = hub.api("GET", "/api/v1/releases?kind=model&name=rul", None);
    let versions: Vec<u64> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [3]);
    for (reason, n) in [
        ("rollback", 2.0),
        ("unknown_key", 1.0),
        ("bad_signature", 1.0),
        ("expired", 1.0),
        ("hash_mismatch", 1.0),
    ] {
        assert_eq!(
            hub.metric(&format!("strata_ota_refusals_total{{reason=\"{reason}\"}}")),
            n,
            "{reason}"
        );
    }
}
