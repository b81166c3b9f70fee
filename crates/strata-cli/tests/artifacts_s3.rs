//! Artifacts in S3-compatible object storage (`[artifacts.s3]`), against
//! moto's S3 server with request authentication on (every request must
//! carry a valid Signature Version 4) and boto3 looking at the bucket as
//! another client: uploads land in the bucket and nowhere on disk, come
//! back byte for byte, an object changed in the bucket is refused until
//! uploaded again, and a hub whose bucket is missing or whose secret is
//! wrong does not start.

mod common;

use std::process::Command;

use common::*;

#[test]
fn artifacts_live_in_an_s3_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::start(dir.path());
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, bucket.config("models", &bucket.secret)).unwrap();
    let data = dir.path().join("hub");
    let hub = HubProcess::start_with(&data, &["--config", config.to_str().unwrap()]);

    // A release artifact goes to the bucket, under the prefix, and not to
    // the data directory.
    let (status, stored) = hub.api_bytes("/api/v1/artifacts", b"firmware 1.2.0");
    assert_eq!(status, 201, "{stored}");
    let firmware = stored["sha256"].as_str().unwrap().to_owned();
    assert_eq!(
        bucket.get(&format!("strata/sha256/{firmware}")),
        b"firmware 1.2.0"
    );
    assert!(!data.join("artifacts/sha256").join(&firmware).exists());
    // The same bytes again are stored once (the hub checks first).
    let (status, again) = hub.api_bytes("/api/v1/artifacts", b"firmware 1.2.0");
    assert_eq!((status, &again["sha256"]), (201, &stored["sha256"]));

    // A scikit-learn model and its tree statistics: registered, then
    // served back byte for byte from the bucket.
    let onnx = train_rul(dir.path());
    let v = register_rul(&hub, &onnx);
    let model = v["sha256"].as_str().unwrap().to_owned();
    assert_eq!(bucket.get(&format!("strata/sha256/{model}")), onnx);
    let bearer = format!("Bearer {}", hub.token);
    let path = "/api/v1/models/rul/versions/1/artifact";
    let (status, served) = hub.get_bytes(path, Some(&bearer));
    assert_eq!(status, 200);
    assert_eq!(served, onnx);

    // Changed in the bucket by someone else: refused, never served.
    let mut changed = onnx.clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    let file = dir.path().join("changed.onnx");
    std::fs::write(&file, &changed).unwrap();
    bucket.put(&format!("strata/sha256/{model}"), &file);
    let (status, body) = hub.get_bytes(path, Some(&bearer));
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("damaged in its bucket"), "{body}");
    // Uploading the same bytes again repairs it.
    let (status, _) = hub.api_bytes("/api/v1/artifacts", &onnx);
    assert_eq!(status, 201);
    let (status, served) = hub.get_bytes(path, Some(&bearer));
    assert_eq!((status, served == onnx), (200, true));
    hub.kill();

    // A missing bucket and a wrong secret each stop the hub at start,
    // saying why.
    for (bucket_name, secret, says) in [
        ("absent", bucket.secret.as_str(), "does not exist"),
        ("models", "wrong", "refuses access"),
    ] {
        std::fs::write(&config, bucket.config(bucket_name, secret)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["hub", "--data-dir"])
            .arg(&data)
            .args([
                "--mqtt-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(["--mqtt-plaintext", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bucket_name}: {stderr}");
        assert!(stderr.contains(says), "{bucket_name}: {stderr}");
    }
}
