//! The API over HTTPS (`[http] tls`): the `strata` CLI and Python's `ssl`
//! module (a client nobody here wrote) reach it trusting the hub's
//! `ca.pem`; plain HTTP, and clients that trust other CAs, get nothing.

mod common;

use std::ffi::OsStr;
use std::process::Command;

use common::*;
use serde_json::Value;

fn strata_fails(args: &[&OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "strata {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Python's answer to GET `url` with the CAs of `cafile` (the system's
/// when `None`): the status, or the error's text.
fn python_get(url: &str, cafile: Option<&std::path::Path>) -> String {
    let script = "import ssl, sys, urllib.request\n\
        ctx = ssl.create_default_context(cafile=sys.argv[2] or None)\n\
        try:\n    print(urllib.request.urlopen(sys.argv[1], context=ctx, timeout=10).status)\n\
        except Exception as e:\n    print('error', e)\n";
    let out = Command::new("python3")
        .args(["-c", script, url])
        .arg(cafile.map(|p| p.as_os_str()).unwrap_or(OsStr::new("")))
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_api_over_https_answers_clients_that_trust_the_hubs_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, "[http]\ntls = true\n").unwrap();
    let hub = HubProcess::start_with(&data, &["--config", config.to_str().unwrap()]);
    let url = format!("https://{}", hub.http);
    let ca = data.join("ca.pem");
    let access = |args: &[&str]| -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
        v.extend(["--hub".into(), url.clone().into(), "--data-dir".into()]);
        v.push(data.clone().into());
        v
    };
    let run = |args: &[&str]| -> Value {
        let args = access(args);
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        serde_json::from_str(&strata(&args)).unwrap()
    };

    // The CLI finds the token and the CA in the data directory.
    run(&["site", "create", "plant-1", "--region", "eu"]);
    let created = run(&["device", "create", "press-1", "--site", "plant-1"]);
    let token = created["enrollment_token"]
        .as_str()
        .expect("an enrollment token");
    // A device enrolls with the CA handed out beside its token.
    let enrolled: Value = serde_json::from_str(&strata(&[
        OsStr::new("device"),
        OsStr::new("enroll"),
        OsStr::new("press-1"),
        OsStr::new("--token"),
        OsStr::new(token),
        OsStr::new("--hub"),
        OsStr::new(&url),
        OsStr::new("--ca-file"),
        ca.as_os_str(),
    ]))
    .unwrap();
    assert!(enrolled["credential"].as_str().is_some(), "{enrolled}");
    let devices = run(&["device", "list"]);
    assert_eq!(devices[0]["id"], "press-1", "{devices}");
    assert_eq!(devices[0]["state"], "active", "{devices}");

    // Python: with the hub's CA, yes; with the system's CAs, no.
    assert_eq!(python_get(&format!("{url}/healthz"), Some(&ca)), "200");
    let refused = python_get(&format!("{url}/healthz"), None);
    assert!(refused.contains("CERTIFICATE_VERIFY_FAILED"), "{refused}");

    // Plain HTTP to the TLS port gets no answer.
    let plain = format!("http://{}", hub.http);
    let err = strata_fails(&[
        OsStr::new("device"),
        OsStr::new("list"),
        OsStr::new("--hub"),
        OsStr::new(&plain),
        OsStr::new("--data-dir"),
        data.as_os_str(),
    ]);
    assert!(!err.is_empty());
    // A file that holds no certificate is refused up front.
    let not_a_ca = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_a_ca, "hello").unwrap();
    let err = strata_fails(&[
        OsStr::new("device"),
        OsStr::new("list"),
        OsStr::new("--hub"),
        OsStr::new(&url),
        OsStr::new("--data-dir"),
        data.as_os_str(),
        OsStr::new("--ca-file"),
        not_a_ca.as_os_str(),
    ]);
    assert!(err.contains("no PEM certificate"), "{err}");
}
