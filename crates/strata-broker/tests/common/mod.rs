//! Test harness: a broker on port 0 with recording hooks, and wrappers around
//! the real `mosquitto_sub` / `mosquitto_pub` clients that wait on output
//! lines and hook events instead of sleeping.

#![allow(dead_code, missing_docs)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use strata_broker::*;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

pub const WAIT: Duration = Duration::from_secs(10);

/// Hooks that record what happened. Users named "bad" have bad credentials,
/// client id "banned" is not authorized, client ids starting with "brief"
/// are allowed for one second; topics under `denied/` cannot be published
/// and filters under `secret/` cannot be subscribed.
#[derive(Default)]
pub struct TestHooks {
    pub events: Mutex<Vec<String>>,
    pub disconnects: Mutex<Vec<(String, DisconnectReason)>>,
}

impl TestHooks {
    pub fn has_event(&self, e: &str) -> bool {
        self.events.lock().unwrap().iter().any(|x| x == e)
    }
    pub fn disconnect_reason(&self, client: &str) -> Option<DisconnectReason> {
        self.disconnects
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(c, _)| c == client)
            .map(|(_, r)| *r)
    }
}

impl Hooks for TestHooks {
    fn authenticate(&self, info: &ConnectInfo<'_>) -> AuthDecision {
        if info.username == Some("bad") {
            AuthDecision::BadCredentials
        } else if info.client_id == "banned" {
            AuthDecision::Deny
        } else if info.client_id.starts_with("brief") {
            AuthDecision::AllowUntil(std::time::SystemTime::now() + Duration::from_secs(1))
        } else {
            AuthDecision::Allow
        }
    }
    fn authorize_publish(&self, _client: Client<'_>, topic: &str) -> bool {
        !topic.starts_with("denied/")
    }
    fn authorize_subscribe(&self, _client: Client<'_>, filter: &str) -> bool {
        !filter.starts_with("secret/")
    }
    fn on_publish(&self, _client: Client<'_>, _msg: &InboundPublish) -> PublishDecision {
        PublishDecision::Route
    }
    fn on_connect(&self, client_id: &str) {
        self.events
            .lock()
            .unwrap()
            .push(format!("connect:{client_id}"));
    }
    fn on_disconnect(&self, client_id: &str, reason: DisconnectReason) {
        self.events
            .lock()
            .unwrap()
            .push(format!("disconnect:{client_id}"));
        self.disconnects
            .lock()
            .unwrap()
            .push((client_id.to_owned(), reason));
    }
}

pub async fn start_with(config: Config, hooks: Arc<dyn Hooks>) -> BrokerHandle {
    Broker::start(config, hooks).await.expect("broker starts")
}

pub async fn start() -> (BrokerHandle, Arc<TestHooks>) {
    let hooks = Arc::new(TestHooks::default());
    let handle = start_with(
        Config::with_bind("127.0.0.1:0".parse().unwrap()),
        hooks.clone(),
    )
    .await;
    (handle, hooks)
}

/// Polls `cond` every 10 ms until it holds; panics after [`WAIT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn base_args(port: u16, version: &str) -> Vec<String> {
    ["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// A running `mosquitto_sub -v` whose stdout lines can be awaited.
pub struct Sub {
    pub child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Sub {
    pub fn spawn(port: u16, version: &str, extra: &[&str]) -> Sub {
        let mut args = base_args(port, version);
        args.push("-v".into());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new("mosquitto_sub")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto_sub runs");
        let stdout = child.stdout.take().expect("stdout piped");
        Sub {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// Next stdout line, or None at end of output; panics after [`WAIT`].
    pub async fn next_line(&mut self) -> Option<String> {
        tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("timed out waiting for mosquitto_sub output")
            .expect("read stdout")
    }

    /// Publishes QoS 0 probes on `topic` from inside the broker until one is
    /// printed, proving the subscription is active. Skips nothing else: the
    /// caller must not expect other output before the probe.
    pub async fn wait_ready(&mut self, broker: &BrokerHandle, topic: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            broker
                .publish(topic, Bytes::from_static(b"probe"), QoS::AtMostOnce, false)
                .unwrap();
            match tokio::time::timeout(Duration::from_millis(100), self.lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    assert_eq!(line, format!("{topic} probe"));
                    break;
                }
                Ok(other) => panic!("mosquitto_sub ended early: {other:?}"),
                Err(_) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "subscription never became active"
                ),
            }
        }
        // Drain probes that were already in flight.
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_millis(150), self.lines.next_line()).await
        {
            assert_eq!(line, format!("{topic} probe"));
        }
    }

    /// The next line if one arrives within `wait`.
    pub async fn try_line(&mut self, wait: Duration) -> Option<String> {
        match tokio::time::timeout(wait, self.lines.next_line()).await {
            Ok(Ok(line)) => line,
            _ => None,
        }
    }

    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("mosquitto_sub did not exit")
            .expect("wait")
    }

    pub async fn stderr(mut self) -> String {
        use tokio::io::AsyncReadExt;
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = tokio::time::timeout(WAIT, e.read_to_string(&mut s)).await;
        }
        s
    }
}

/// Runs `mosquitto_pub` to completion; returns (success, stdout+stderr).
pub async fn publish(port: u16, version: &str, extra: &[&str]) -> (bool, String) {
    let mut args = base_args(port, version);
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = tokio::time::timeout(
        WAIT,
        Command::new("mosquitto_pub")
            .args(&args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("mosquitto_pub finished in time")
    .expect("mosquitto_pub runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
