//! Shared helpers for the end-to-end tests: run the `strata` binary as a
//! real process, talk to it with third-party MQTT tools and over HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A `strata hub` process.
pub struct HubProcess {
    pub child: Child,
    pub mqtt: SocketAddr,
    /// The MQTT TLS listener, when the hub has one.
    pub mqtts: Option<SocketAddr>,
    pub http: SocketAddr,
    /// The API's base URL (`https://` when the hub serves TLS).
    pub api: String,
    pub data_dir: PathBuf,
    pub token: String,
    agent: ureq::Agent,
}

impl HubProcess {
    /// Starts `strata hub` on free ports with `data_dir`, and waits until it is ready.
    pub fn start(data_dir: &Path) -> HubProcess {
        Self::start_with(data_dir, &[])
    }

    /// Same, with extra arguments.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> HubProcess {
        Self::start_on(data_dir, "127.0.0.1:0", extra)
    }

    /// Same, with the MQTT listener on `mqtt` (to restart on the same port).
    pub fn start_on(data_dir: &Path, mqtt: &str, extra: &[&str]) -> HubProcess {
        Self::start_at(data_dir, mqtt, "127.0.0.1:0", extra)
    }

    /// A hub on given MQTT and HTTP addresses (e.g. the ones a killed hub
    /// had, so its devices find it again).
    pub fn start_at(data_dir: &Path, mqtt: &str, http: &str, extra: &[&str]) -> HubProcess {
        let mut args = vec![
            "--mqtt-listen",
            mqtt,
            "--http-listen",
            http,
            "--mqtt-plaintext",
        ];
        args.extend(extra);
        Self::spawn(data_dir, &args)
    }

    /// A hub as in production: MQTT over TLS with device certificates
    /// only, no plain-text listener.
    pub fn start_secure(data_dir: &Path, extra: &[&str]) -> HubProcess {
        let mut args = vec![
            "--mqtt-tls-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ];
        args.extend(extra);
        Self::spawn(data_dir, &args)
    }

    fn spawn(data_dir: &Path, args: &[&str]) -> HubProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("hub")
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("STRATA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start strata hub");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the hub prints its ready line");
        let field = |name: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
                .to_owned()
        };
        let token = std::fs::read_to_string(data_dir.join("admin.token"))
            .expect("admin token")
            .trim()
            .to_owned();
        HubProcess {
            child,
            mqtt: field("mqtt").parse().expect("mqtt address"),
            mqtts: line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("mqtts="))
                .map(|a| a.parse().expect("mqtts address")),
            http: field("http").parse().expect("http address"),
            agent: api_agent(&field("api"), data_dir),
            api: field("api"),
            data_dir: data_dir.to_owned(),
            token,
        }
    }

    /// Sends SIGTERM and waits for the hub to stop; returns how it ended.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let terminated = Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(terminated.success());
        self.child.wait().unwrap()
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn send(&self, method: &str, path: &str, body: Option<Value>, auth: bool) -> (u16, Value) {
        let token = auth.then_some(self.token.as_str());
        self.send_as(token, method, path, body)
    }

    /// An API call with `token` (none: anonymous).
    pub fn api_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.send_as(Some(token), method, path, body)
    }

    fn send_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.api);
        let bearer = format!("Bearer {}", token.unwrap_or_default());
        let auth = token.is_some();
        let response = match method {
            "GET" | "DELETE" => {
                let mut r = if method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                if auth {
                    r = r.header("Authorization", &bearer);
                }
                r.call()
            }
            "PATCH" | "POST" | "PUT" => {
                let mut r = match method {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.patch(&url),
                };
                if auth {
                    r = r.header("Authorization", &bearer);
                }
                r.send_json(body.unwrap_or(json!({})))
            }
            _ => panic!("method {method}"),
        };
        let mut response = response.unwrap_or_else(|e| panic!("HTTP {method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// An authenticated API call.
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send(method, path, body, true)
    }

    /// POSTs raw bytes (an ONNX file) with the admin token.
    pub fn api_bytes(&self, path: &str, bytes: &[u8]) -> (u16, Value) {
        let mut response = self
            .agent
            .post(format!("{}{path}", self.api))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/octet-stream")
            .send(bytes)
            .expect("HTTP request");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GETs raw bytes with the given `Authorization` header (or none).
    pub fn get_bytes(&self, path: &str, authorization: Option<&str>) -> (u16, Vec<u8>) {
        let mut request = self.agent.get(format!("{}{path}", self.api));
        if let Some(a) = authorization {
            request = request.header("Authorization", a);
        }
        let mut response = request.call().expect("HTTP request");
        let status = response.status().as_u16();
        let bytes = response.body_mut().read_to_vec().expect("body");
        (status, bytes)
    }

    /// Waits for a job to finish; returns it (panics if it failed).
    pub fn wait_job(&self, id: i64, timeout: Duration) -> Value {
        let mut job = Value::Null;
        eventually(timeout, &format!("job {id} finishes"), || {
            job = self.api("GET", &format!("/api/v1/jobs/{id}"), None).1;
            matches!(
                job["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        });
        if job["state"] != "succeeded" {
            let log = self.api("GET", &format!("/api/v1/jobs/{id}/log"), None).1;
            panic!("job {id} failed: {job}\nlog: {log}");
        }
        job
    }

    /// An API call without the admin token.
    pub fn api_anonymous(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send(method, path, body, false)
    }

    /// The Prometheus text.
    pub fn metrics(&self) -> String {
        let mut r = self
            .agent
            .get(format!("{}/metrics", self.api))
            .call()
            .expect("metrics");
        r.body_mut().read_to_string().expect("metrics body")
    }

    /// One counter value from /metrics (0 when absent).
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Creates a site (once) and a device, enrolls it, returns its credential.
    pub fn provision(&self, device: &str, signals: Value) -> String {
        let (status, _) = self.api(
            "POST",
            "/api/v1/sites",
            Some(json!({"id": "site-1", "region": "eu-west"})),
        );
        assert!(status == 201 || status == 409, "create site: {status}");
        let (status, created) = self.api(
            "POST",
            "/api/v1/devices",
            Some(json!({"id": device, "site": "site-1", "signals": signals})),
        );
        assert_eq!(status, 201, "register {device}: {created}");
        let token = created["enrollment_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let (status, enrolled) = self.api_anonymous(
            "POST",
            "/api/v1/enroll",
            Some(json!({"device": device, "token": token})),
        );
        assert_eq!(status, 200, "enroll {device}: {enrolled}");
        enrolled["credential"]
            .as_str()
            .expect("credential")
            .to_owned()
    }

    /// Stored batches of a device, per the API's series/range view: the
    /// number of readings of `signal` in all time.
    pub fn readings(&self, device: &str, signal: &str) -> Vec<(i64, f64)> {
        let (status, body) = self.api(
            "GET",
            &format!(
                "/api/v1/devices/{device}/signals/{signal}?from=0&to={}&limit=100000",
                i64::MAX
            ),
            None,
        );
        assert_eq!(status, 200, "{body}");
        body["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| (p["ts_ns"].as_i64().unwrap(), p["value"].as_f64().unwrap()))
            .collect()
    }
}

/// The harness's HTTP client: for an `https://` API, one that trusts the
/// hub's CA (`ca.pem` in its data directory) and nothing else.
pub fn api_agent(api: &str, data_dir: &Path) -> ureq::Agent {
    // A hub that hangs fails the test instead of stopping the run.
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)));
    if api.starts_with("https://") {
        let pem = std::fs::read(data_dir.join("ca.pem")).expect("the hub's ca.pem");
        let certificates = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(
                    certificates,
                )))
                .build(),
        );
    }
    config.build().into()
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `strata` CLI, checks it succeeded; answers its standard output.
pub fn strata(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strata {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs Debian's `openssl` (in the current directory), checks it
/// succeeded; answers its standard output.
pub fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A server certificate for 127.0.0.1 from a CA of its own, made with
/// `openssl` in a directory: the PEM files' paths.
pub struct ServerCertificate {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl ServerCertificate {
    /// Makes a CA named `ca_name` and its certificate for 127.0.0.1 in `dir`.
    pub fn make(dir: &Path, ca_name: &str) -> ServerCertificate {
        std::fs::create_dir_all(dir).unwrap();
        let at = |file: &str| dir.join(file).to_str().unwrap().to_owned();
        let (ca_key, ca) = (at("ca.key"), at("ca.pem"));
        let (key, csr, cert, ext) = (
            at("server.key"),
            at("server.csr"),
            at("server.pem"),
            at("server.ext"),
        );
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let subject = format!("/CN={ca_name}");
        let mut request = vec!["req", "-x509", "-days", "2", "-subj", &subject];
        request.extend(ec);
        request.extend(["-keyout", &ca_key, "-out", &ca]);
        openssl(&request);
        let mut request = vec!["req", "-subj", "/CN=127.0.0.1"];
        request.extend(ec);
        request.extend(["-keyout", &key, "-out", &csr]);
        openssl(&request);
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
        ServerCertificate { ca, cert, key }
    }
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

/// Runs `mosquitto_pub` as `device` and returns its output.
pub fn mosquitto_pub(
    hub: &HubProcess,
    device: &str,
    credential: &str,
    version: &str,
    topic: &str,
    payload: PubPayload<'_>,
) -> Output {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &hub.mqtt.port().to_string(),
        "-V",
        version,
        "-q",
        "1",
    ])
    .args(["-i", device, "-u", device, "-P", credential, "-t", topic]);
    match payload {
        PubPayload::Text(m) => cmd.args(["-m", m]),
        PubPayload::File(f) => cmd.arg("-f").arg(f),
    };
    cmd.output()
        .expect("run mosquitto_pub (Debian package mosquitto-clients)")
}

/// What `mosquitto_pub` sends.
pub enum PubPayload<'a> {
    /// `-m`.
    Text(&'a str),
    /// `-f`.
    File(&'a Path),
}

/// A telemetry batch in JSON: one reading of signal `temp` (Cel).
pub fn json_batch(stream: &str, seq: u64, ts: i64, value: f64) -> String {
    format!(
        r#"{{"stream":"{stream}","seq":{seq},"signals":[{{"name":"temp","unit":"Cel","ts_ns":[{ts}],"values":[{value}]}}]}}"#
    )
}

/// A TCP port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Current time in ns.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// The Python with the reference peers (asyncua, pymodbus, scikit-learn,
/// onnxruntime): `STRATA_PEERS_PYTHON`, else the virtualenv that
/// scripts/test.sh makes under target/peers.
pub fn peers_python() -> PathBuf {
    let python = std::env::var_os("STRATA_PEERS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/bin/python")
        });
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh once (it installs the Python test peers)",
        python.display()
    );
    python
}

/// Runs tests/peers/`script` with the peers' Python and `args` to the end;
/// returns its standard output (panics with its standard error on failure).
pub fn peer_script(script: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = Command::new(peers_python())
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/peers")
                .join(script),
        )
        .args(args)
        .output()
        .expect("run a Python peer script");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A third-party peer process (a Python server, a Mosquitto), killed on drop.
pub struct Peer {
    child: Child,
}

impl Peer {
    /// Runs one of the scripts in tests/peers with `args` and waits until it
    /// prints `ready`.
    pub fn python(script: &str, args: &[&str]) -> Peer {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/peers")
            .join(script);
        let mut cmd = Command::new(peers_python());
        cmd.arg(path).args(args);
        Self::spawn(cmd, "ready", script)
    }

    /// A Mosquitto broker (Debian package `mosquitto`) on 127.0.0.1:`port`,
    /// anonymous access allowed, configured in `dir`.
    pub fn mosquitto(dir: &Path, port: u16) -> Peer {
        Self::mosquitto_with(
            dir,
            port,
            &format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
        )
    }

    /// A Mosquitto broker with the configuration `conf`, which must open a
    /// listener on 127.0.0.1:`port`.
    pub fn mosquitto_with(dir: &Path, port: u16, conf: &str) -> Peer {
        let path = dir.join(format!("mosquitto-{port}.conf"));
        // As root it would switch to its own user, who cannot read the
        // test's files.
        std::fs::write(
            &path,
            format!("{conf}\npersistence false\nlog_dest none\nuser root\n"),
        )
        .unwrap();
        Self::daemon("mosquitto", &path, port)
    }

    /// A NATS server (Debian package `nats-server`) with JetStream kept in
    /// `dir`, and its MQTT listener on 127.0.0.1:`mqtt_port`.
    pub fn nats_mqtt(dir: &Path, mqtt_port: u16) -> Peer {
        let store = dir.join(format!("nats-{mqtt_port}"));
        let conf = dir.join(format!("nats-{mqtt_port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "server_name: strata-test-{mqtt_port}\nlisten: 127.0.0.1:{}\n\
                 jetstream {{ store_dir: {:?} }}\nmqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n",
                free_port(),
                store.display().to_string()
            ),
        )
        .unwrap();
        Self::daemon("nats-server", &conf, mqtt_port)
    }

    /// Runs Debian's `name` (from /usr/sbin, /usr/bin or the PATH) with
    /// the configuration file `conf`, and waits until it listens on
    /// 127.0.0.1:`port` (its logs are block-buffered on a pipe: the port
    /// tells sooner).
    fn daemon(name: &str, conf: &Path, port: u16) -> Peer {
        let binary = ["/usr/sbin", "/usr/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(name));
        let log = conf.with_extension("log");
        let child = Command::new(binary)
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} (Debian package {name}): {e}"));
        let peer = Peer { child };
        let what = format!("{name} listening (its errors: {})", log.display());
        eventually(Duration::from_secs(30), &what, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        peer
    }

    fn spawn(mut cmd: Command, ready: &str, what: &str) -> Peer {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(ready) => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!("{what} did not print {ready:?} within 30 s");
                }
            }
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in rx {});
        Peer { child }
    }

    /// Kills the peer (SIGKILL) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `strata edge` process, killed on drop.
pub struct EdgeProcess {
    child: Child,
}

impl EdgeProcess {
    /// Writes `config` (TOML) to `dir/edge.toml` and starts the agent on it.
    pub fn start(dir: &Path, config: &str) -> EdgeProcess {
        let path = dir.join("edge.toml");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["edge", "--config"])
            .arg(&path)
            .env("STRATA_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start strata edge");
        EdgeProcess { child }
    }

    /// Kills the agent (SIGKILL) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A series of an agent's `/metrics` on `metrics_at` (`[health]
/// metrics_listen`), by the start of its line (its name, or its name and
/// labels); NaN while the agent does not answer or has no such series.
pub fn edge_metric(metrics_at: &str, series: &str) -> f64 {
    let text = ureq::get(format!("http://{metrics_at}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The `[hub]` part of an edge config for a device provisioned at `hub`.
pub fn edge_hub_config(hub: &HubProcess, dir: &Path, device: &str, credential: &str) -> String {
    let cred = dir.join("credential");
    std::fs::write(&cred, credential).unwrap();
    format!(
        "device = \"{device}\"\ndata_dir = {:?}\n[hub]\nmqtt = \"{}\"\nhttp = \"{}\"\ncredential_file = {:?}\n[health]\ninterval_ms = 300\n",
        dir.join("data"),
        hub.mqtt,
        hub.api,
        cred
    )
}

/// An HTTP Basic `Authorization` value for a device and its credential.
pub fn basic_auth(device: &str, secret: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{device}:{secret}");
    let mut out = String::from("Basic ");
    for c in raw.as_bytes().chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, &b)| a | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

// ---------------------------------------------------------------- history

use strata_edge::sources::simulator::{Scenario, SimulatorConfig};
use strata_store::{BatchWrite, Durability, EncodedBatch, SqliteStore, TelemetryStore};

/// The machines' pipeline: 5 s windows every second, vector `bearing`.
pub const MACHINE_PIPELINE: &str = r#"
[[windows]]
name = "w"
signals = ["temperature", "vibration_rms", "current"]
size_ms = 5000
hop_ms = 1000
features = ["mean", "std", "max"]
[[vectors]]
name = "bearing"
features = ["w.temperature.mean", "w.temperature.std", "w.temperature.max",
            "w.vibration_rms.mean", "w.vibration_rms.std", "w.vibration_rms.max",
            "w.current.mean", "w.current.std", "w.current.max"]
"#;

/// A pipeline's TOML as the JSON the API takes.
pub fn pipeline(toml_text: &str) -> Value {
    let p: strata_pipeline::PipelineConfig = toml::from_str(toml_text).unwrap();
    serde_json::to_value(p).unwrap()
}

/// The simulator history is made with: time runs 3600 times fast.
pub fn simulator(scenario: Scenario, seed: u64) -> SimulatorConfig {
    SimulatorConfig {
        scenario,
        seed,
        // A two-day bearing life passes in 48 s; a building week in 168 s.
        time_scale: 3600.0,
        lifetime_s: 2.0 * 86_400.0,
        failure_horizon_s: 8.0 * 3600.0,
        ..SimulatorConfig::default()
    }
}

/// Where simulated history ends: a fixed instant, so that the buildings'
/// days, weekdays and seasons (and so every figure) are the same in every
/// run. Overridable to try other seasons: `STRATA_TEST_SIM_END_S`.
pub fn history_end_ns() -> i64 {
    std::env::var("STRATA_TEST_SIM_END_S")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(1_780_272_000) // 2026-06-01T00:00:00Z
        * 1_000_000_000
}

/// Registers `devices` and stores `seconds` of their simulated telemetry
/// (one batch a second, ending at [`history_end_ns`]) straight into the
/// hub's database, as if they had streamed it. Returns the devices'
/// credentials.
pub fn seed(hub: &HubProcess, devices: &[&str], scenario: Scenario, seconds: i64) -> Vec<String> {
    seed_with(hub, devices, seconds, &|i| {
        simulator(scenario, i as u64 + 1)
    })
}

/// [`seed`] with the simulator of the `i`th device given.
pub fn seed_with(
    hub: &HubProcess,
    devices: &[&str],
    seconds: i64,
    simulator: &dyn Fn(usize) -> SimulatorConfig,
) -> Vec<String> {
    let store = SqliteStore::open(&hub.data_dir, Durability::Process).unwrap();
    seed_into(hub, &store, devices, seconds, simulator)
}

/// [`seed_with`], the history written into `store` (the hub's telemetry
/// store, wherever it is).
pub fn seed_into(
    hub: &HubProcess,
    store: &dyn TelemetryStore,
    devices: &[&str],
    seconds: i64,
    simulator: &dyn Fn(usize) -> SimulatorConfig,
) -> Vec<String> {
    let credentials = devices
        .iter()
        .map(|d| hub.provision(d, json!({})))
        .collect();
    let start = history_end_ns() - seconds * 1_000_000_000;
    for (i, d) in devices.iter().enumerate() {
        let sim = simulator(i);
        let writes: Vec<BatchWrite> = (1..=seconds)
            .map(|seq| BatchWrite {
                device: strata_proto::DeviceId::new(*d).unwrap(),
                received_ns: now_ns(),
                batch: EncodedBatch::encode(&sim.batch(seq as u64, start + seq * 1_000_000_000)),
            })
            .collect();
        for chunk in writes.chunks(500) {
            store.write_batches(chunk).unwrap();
        }
    }
    credentials
}

/// Runs a training job to its end; returns the job.
pub fn train(hub: &HubProcess, spec: Value) -> Value {
    let (status, job) = hub.api("POST", "/api/v1/jobs/train", Some(spec));
    assert_eq!(status, 202, "{job}");
    hub.wait_job(job["id"].as_i64().unwrap(), Duration::from_secs(240))
}

/// A bucket `models` in moto's S3 server (request signatures checked),
/// its endpoint and the access key moto made for it; the server stops
/// when it is dropped.
pub struct Bucket {
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
    _server: Peer,
}

impl Bucket {
    /// Starts the server, keeping its credentials file in `dir`.
    pub fn start(dir: &Path) -> Bucket {
        let port = free_port();
        let credentials = dir.join("s3.credentials");
        let server = Peer::python(
            "s3_server.py",
            &[&port.to_string(), "models", credentials.to_str().unwrap()],
        );
        let text = std::fs::read_to_string(&credentials).unwrap();
        let mut lines = text.lines();
        Bucket {
            endpoint: format!("http://127.0.0.1:{port}"),
            key_id: lines.next().unwrap().to_owned(),
            secret: lines.next().unwrap().to_owned(),
            _server: server,
        }
    }

    /// The object `key`, read with boto3.
    pub fn get(&self, key: &str) -> Vec<u8> {
        peer_script("s3_object.py", &self.args("get", key, &[]))
    }

    /// Replaces the object `key` with the file `from`, with boto3.
    pub fn put(&self, key: &str, from: &Path) {
        peer_script("s3_object.py", &self.args("put", key, &[from.as_os_str()]));
    }

    fn args<'a>(
        &'a self,
        command: &'a str,
        key: &'a str,
        rest: &[&'a std::ffi::OsStr],
    ) -> Vec<&'a std::ffi::OsStr> {
        let mut args: Vec<&std::ffi::OsStr> = [
            command,
            self.endpoint.as_str(),
            self.key_id.as_str(),
            self.secret.as_str(),
            "models",
            key,
        ]
        .into_iter()
        .map(std::ffi::OsStr::new)
        .collect();
        args.extend(rest);
        args
    }

    /// A hub configuration keeping artifacts in `bucket` with `secret`.
    pub fn config(&self, bucket: &str, secret: &str) -> String {
        format!(
            "[artifacts.s3]\nendpoint = \"{}\"\nbucket = \"{bucket}\"\nprefix = \"strata/\"\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{secret}\"\n",
            self.endpoint, self.key_id
        )
    }
}

/// A schema of the test's own in this machine's PostgreSQL
/// (`STRATA_TEST_POSTGRES`, or `host=127.0.0.1 user=postgres dbname=test`),
/// dropped at the end.
pub struct PgSchema {
    server: String,
    name: String,
    /// A connection string for the schema.
    pub url: String,
}

impl PgSchema {
    /// Makes the schema, dropping one of the same name first.
    pub fn new(test: &str) -> PgSchema {
        let server = std::env::var("STRATA_TEST_POSTGRES")
            .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into());
        let name = format!("strata_hub_{test}_{}", std::process::id());
        let mut admin = postgres::Client::connect(&server, postgres::NoTls)
            .expect("PostgreSQL runs here (scripts/test.sh starts it)");
        admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .unwrap();
        let url = format!("{server} options='-c search_path={name}'");
        PgSchema { server, name, url }
    }

    /// A connection to it.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&self.server, postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

/// Signs a model release of `artifact` (reading `features` of `vector`,
/// plus any `extra` arguments); returns the envelope.
pub fn sign_release(
    key: &Path,
    version: u64,
    artifact: &Path,
    vector: &str,
    features: &str,
    extra: &[&str],
) -> Value {
    let version = version.to_string();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "release".as_ref(),
        "sign".as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        "--kind".as_ref(),
        "model".as_ref(),
        "--name".as_ref(),
        "rul".as_ref(),
        "--version".as_ref(),
        version.as_ref(),
        "--artifact".as_ref(),
        artifact.as_os_str(),
        "--vector".as_ref(),
        vector.as_ref(),
        "--features".as_ref(),
        features.as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    serde_json::from_str(&strata(&args)).unwrap()
}

/// The window features the test model of `models.py` reads.
pub const RUL_FEATURES: &str = "w.temperature.mean,w.temperature.max,w.current.mean,w.current.max";

/// Trains the scikit-learn test model (`models.py train`) into `dir`;
/// returns its ONNX bytes.
pub fn train_rul(dir: &Path) -> Vec<u8> {
    peer_script("models.py", &["train".as_ref(), dir.as_os_str()]);
    std::fs::read(dir.join("rul.onnx")).unwrap()
}

/// Registers `onnx` as models `m0` to `m11`, then deploys them to
/// `device` (provisioned), an equal share through each of `hubs`, all at
/// once, one model after another: every deployment reads the twin's list
/// of models, adds its own and writes the list back. Returns the names the
/// device's desired twin then lists.
pub fn deploy_models_at_once(hubs: &[&HubProcess], device: &str, onnx: &[u8]) -> Vec<String> {
    let names: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
    for name in &names {
        let (status, v) = hubs[0].api_bytes(
            &format!("/api/v1/models/{name}/versions?features={RUL_FEATURES}"),
            onnx,
        );
        assert_eq!(status, 201, "{v}");
    }
    std::thread::scope(|s| {
        for (hub, share) in hubs.iter().zip(names.chunks(names.len() / hubs.len())) {
            s.spawn(move || {
                for name in share {
                    let (status, deployed) = hub.api(
                        "POST",
                        &format!("/api/v1/models/{name}/deploy"),
                        Some(serde_json::json!({
                            "version": "1", "vector": "machine", "devices": [device]
                        })),
                    );
                    assert_eq!(status, 200, "{deployed}");
                }
            });
        }
    });
    let (status, twin) = hubs[0].api("GET", &format!("/api/v1/devices/{device}/twin"), None);
    assert_eq!(status, 200, "{twin}");
    assert_eq!(twin["desired_version"], 12, "one change each: {twin}");
    let mut listed: Vec<String> = twin["desired"]["models"]
        .as_array()
        .unwrap_or_else(|| panic!("no models: {twin}"))
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    listed.sort_by_key(|n| n[1..].parse::<u32>().unwrap());
    listed
}

/// Registers `onnx` as a version of model `rul` at `hub`, reading
/// [`RUL_FEATURES`]; returns the version's record.
pub fn register_rul(hub: &HubProcess, onnx: &[u8]) -> Value {
    let (status, v) = hub.api_bytes(
        &format!("/api/v1/models/rul/versions?features={RUL_FEATURES}"),
        onnx,
    );
    assert_eq!(status, 201, "{v}");
    v
}
