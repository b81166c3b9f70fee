//! The dashboard in a real headless Chromium, driven over WebDriver
//! (chromedriver, Debian `chromium-driver`) against `strata demo`: a hub, a
//! simulated fleet and the model lifecycle. Every page loads without an
//! error; live values change without a reload; an alert is acknowledged
//! with a click and the hub records who did it; the gate shows why it is
//! open or closed. Screenshots of every page, on a laptop and on a tablet,
//! land in `target/dashboard-screenshots/`.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{eventually, free_port};
use serde_json::{Value, json};

/// The hub configuration of the test: an alert every machine raises as
/// soon as it streams, so there is one to acknowledge, and the plant in
/// phase 2 behind a gate on uptime.
const HUB_CONFIG: &str = r#"
[[alerts]]
name = "warm"
severity = "warning"
signal = "temperature"
condition = "above"
value = -100.0
message = "{device} is warm: {value}"

[control]
phases = { demo-plant = 2 }
interval_s = 1

[control.gates.2]
window_days = 1
min_uptime = 0.5
"#;

/// Signs the registry's `rul` v1 again as release 2 with the demo's key
/// and rolls it out to the plant in waves (a canary of one, then the rest);
/// answers the campaign id.
fn roll_out_rul(dir: &Path, base: &str, token: &str) -> String {
    let get = |path: &str| {
        ureq::get(format!("{base}{path}"))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    };
    let version: Value = get("/api/v1/models/rul/versions/1")
        .body_mut()
        .read_json()
        .unwrap();
    let features: Vec<&str> = version["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let artifact = dir.join("rul.onnx");
    let bytes = get("/api/v1/models/rul/versions/1/artifact")
        .body_mut()
        .read_to_vec()
        .unwrap();
    std::fs::write(&artifact, bytes).unwrap();
    let (key, artifact) = (
        dir.join("release.key"),
        artifact.to_str().unwrap().to_owned(),
    );
    let features = features.join(",");
    let signed = strata(&[
        "release",
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--kind",
        "model",
        "--name",
        "rul",
        "--version",
        "2",
        "--artifact",
        &artifact,
        "--vector",
        "bearing",
        "--features",
        &features,
    ]);
    let signed_file = dir.join("rul-2.json");
    std::fs::write(&signed_file, signed).unwrap();
    let access = ["--hub", base, "--token", token];
    let mut submit = vec![
        "release",
        "submit",
        signed_file.to_str().unwrap(),
        "--artifact",
        &artifact,
    ];
    submit.extend(access);
    strata(&submit);
    let mut start = vec![
        "campaign",
        "start",
        "model",
        "rul",
        "2",
        "--site",
        "demo-plant",
        "--canary",
        "1",
    ];
    start.extend(access);
    let out = strata(&start);
    out.lines()
        .next()
        .and_then(|l| l.strip_prefix("campaign "))
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no campaign id in {out}"))
        .to_owned()
}

/// Runs the `strata` CLI; answers its standard output.
fn strata(args: &[&str]) -> String {
    common::strata(&args.iter().map(std::ffi::OsStr::new).collect::<Vec<_>>())
}

/// A process killed and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `strata demo` with 3 machines; answers the dashboard URL it prints and
/// keeps the rest of its output flowing.
/// Starts `strata demo`; answers it, its dashboard URL (with the admin
/// token), its MQTT address and the rest of its output.
fn start_demo(dir: &Path) -> (Killed, String, String, mpsc::Receiver<String>) {
    let public = strata(&[
        "release",
        "keygen",
        dir.join("release.key").to_str().unwrap(),
    ]);
    let config = dir.join("hub.toml");
    let ota = format!("\n[ota]\nrelease_keys = [\"{}\"]\n", public.trim());
    std::fs::write(&config, format!("{HUB_CONFIG}{ota}")).unwrap();
    let data = dir.join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["demo", "--devices", "3", "--collect-s", "20"])
        .args([
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .env("STRATA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start strata demo");
    let stdout = child.stdout.take().unwrap();
    let child = Killed(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut url = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the demo prints its dashboard URL and MQTT address");
        if let Some(u) = line.trim().strip_prefix("dashboard:") {
            url = Some(u.trim().to_owned());
        }
        if let Some(m) = line.trim().strip_prefix("MQTT:") {
            let mqtt = m.split_whitespace().next().unwrap().to_owned();
            return (child, url.expect("dashboard before MQTT"), mqtt, rx);
        }
    }
}

/// A WebDriver session of headless Chromium.
struct Browser {
    _driver: Killed,
    agent: ureq::Agent,
    session: String,
}

impl Drop for Browser {
    /// Ends the session, so chromedriver closes Chromium before it is
    /// killed (killed first, it would leave Chromium running).
    fn drop(&mut self) {
        let _ = self.agent.delete(self.session.as_str()).call();
    }
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (Debian packages chromium and chromium-driver)");
        let driver = Killed(driver);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(20), "chromedriver listens", || {
            agent.get(format!("{base}/status")).call().is_ok()
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1366,900"],
            },
        }}});
        let mut response = agent
            .post(format!("{base}/session"))
            .send_json(caps)
            .expect("create a WebDriver session");
        let body: Value = response.body_mut().read_json().unwrap();
        let session = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {body}"))
            .to_owned();
        Browser {
            _driver: driver,
            agent,
            session: format!("{base}/session/{session}"),
        }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        let response = match method {
            "GET" => self.agent.get(&url).call(),
            _ => self.agent.post(&url).send_json(body),
        };
        let mut response = response.expect("WebDriver request");
        let status = response.status().as_u16();
        let body: Value = response.body_mut().read_json().expect("WebDriver JSON");
        assert_eq!(status, 200, "WebDriver {method} {path}: {body}");
        body["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` in the page (its `arguments` are `args`).
    fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
    }

    /// The text of the first element matching `css`, if any.
    fn text(&self, css: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : null;",
            json!([css]),
        )
        .as_str()
        .map(str::to_owned)
    }

    fn count(&self, css: &str) -> usize {
        self.js(
            "return document.querySelectorAll(arguments[0]).length;",
            json!([css]),
        )
        .as_u64()
        .unwrap() as usize
    }

    /// A real click on the first element matching `css`.
    fn click(&self, css: &str) {
        let found = self.call(
            "POST",
            "/element",
            json!({ "using": "css selector", "value": css }),
        );
        let id = found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned();
        self.call("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// Signs out, then in with the form: a user name and password, or
    /// (with an empty name) a token.
    fn sign_in(&self, base: &str, user: &str, secret: &str) {
        self.open(&format!("{base}/ui/#/fleet"));
        eventually(Duration::from_secs(10), "the page", || {
            self.count("#login-form") == 1 || self.count("#signout:not([hidden])") == 1
        });
        if self.count("#login-form") == 0 {
            self.click("#signout");
        }
        eventually(Duration::from_secs(10), "the sign-in form", || {
            self.count("#login-form") == 1
        });
        self.js(
            "document.getElementById('user').value = arguments[0]; document.getElementById('token').value = arguments[1]; document.querySelector('#login-form button').click();",
            json!([user, secret]),
        );
    }

    /// Types `text` into the fleet's device search, as a user would.
    fn search(&self, text: &str) {
        self.js(
            "const i = document.querySelector('input[type=search]'); i.value = arguments[0]; i.dispatchEvent(new Event('input'));",
            json!([text]),
        );
    }

    fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            json!({ "width": width, "height": height }),
        );
    }

    /// Saves a PNG screenshot of the window.
    fn screenshot(&self, path: &Path) {
        let data = self.call("GET", "/screenshot", json!({}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64 screenshot"))
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }

    /// Waits until the page shows no error banner and its first refresh
    /// happened; panics with the banner's text otherwise.
    fn settled(&self, what: &str) {
        eventually(Duration::from_secs(20), what, || {
            self.text("#live")
                .is_some_and(|t| t.starts_with("live") || t.starts_with("stale"))
        });
        std::thread::sleep(Duration::from_millis(300));
        let error = self.js(
            "const e = document.getElementById('error'); return e.hidden ? '' : e.textContent;",
            json!([]),
        );
        assert_eq!(error, json!(""), "{what}: the page shows an error");
    }
}

fn chromium() -> String {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromium (Debian package chromium)")
        .to_owned()
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A number shown on the page, e.g. "71.203" or "1,024".
fn number(text: &str) -> f64 {
    text.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("{text:?} is not a number"))
}

/// Creates a user through the API with the admin token.
fn create_user(base: &str, token: &str, name: &str, role: &str) {
    let r = ureq::post(format!("{base}/api/v1/users"))
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(
            json!({"name": name, "role": role, "password": format!("{name}'s long password")}),
        )
        .expect("POST user");
    assert_eq!(r.status().as_u16(), 201);
}

/// Registers `device` at a new `site` and enrolls it; answers its
/// credential.
fn enroll(base: &str, token: &str, device: &str, site: &str) -> String {
    ureq::post(format!("{base}/api/v1/sites"))
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(json!({"id": site, "region": "eu-west"}))
        .expect("POST site");
    let mut r = ureq::post(format!("{base}/api/v1/devices"))
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(json!({"id": device, "site": site}))
        .expect("POST device");
    let created: Value = r.body_mut().read_json().unwrap();
    let mut r = ureq::post(format!("{base}/api/v1/enroll"))
        .send_json(json!({"device": device, "token": created["enrollment_token"]}))
        .expect("POST enroll");
    let enrolled: Value = r.body_mut().read_json().unwrap();
    enrolled["credential"].as_str().unwrap().to_owned()
}

/// The newest entries of the hub's audit log.
fn audit(base: &str, token: &str) -> Vec<Value> {
    let mut r = ureq::get(format!("{base}/api/v1/audit?limit=50"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .expect("GET audit");
    r.body_mut().read_json().unwrap()
}

/// The hub's own record of alert `id`, through its API.
fn alert_from_api(base: &str, token: &str, id: &str) -> Value {
    let mut r = ureq::get(format!("{base}/api/v1/alerts/{id}"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .expect("GET alert");
    r.body_mut().read_json().unwrap()
}

#[test]
fn every_page_loads_live_values_update_and_an_alert_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (_demo, url, mqtt, demo_out) = start_demo(dir.path());
    let base = url.split("/ui/").next().unwrap().to_owned();
    let token = url.split("#token=").nth(1).unwrap().to_owned();
    let shots = screenshots_dir();
    let browser = Browser::start();

    // Without a token the page asks for one; a wrong one is refused.
    browser.open(&format!("{base}/ui/"));
    eventually(Duration::from_secs(10), "the sign-in form", || {
        browser.count("#login-form") == 1
    });
    browser.js(
        "document.getElementById('token').value = 'wrong'; document.querySelector('#login-form button').click();",
        json!([]),
    );
    eventually(Duration::from_secs(10), "the wrong token refused", || {
        browser
            .text("#login-error")
            .is_some_and(|t| t.contains("refused"))
    });

    // The URL the demo prints signs in and lands on the fleet.
    browser.open(&url);
    eventually(Duration::from_secs(60), "3 devices, all online", || {
        browser.text("[data-stat=devices] .v").as_deref() == Some("3")
            && browser.text("[data-stat=online] .v").as_deref() == Some("3")
    });
    browser.settled("fleet");
    assert_eq!(browser.count("tr[data-device]"), 3);
    assert!(browser.text("h1").unwrap().contains("Fleet"));
    browser.screenshot(&shots.join("fleet.png"));

    // Searching narrows the device table without a reload.
    browser.search("machine-02");
    eventually(Duration::from_secs(10), "search narrows to one", || {
        browser.count("tr[data-device]") == 1
            && browser.text("tr[data-device] a").as_deref() == Some("machine-02")
    });

    // Device page: the latest temperature changes while we watch, and the
    // charts draw (uPlot canvases).
    browser.click("tr[data-device] a");
    let temperature = "tr[data-signal=temperature] td.num";
    eventually(Duration::from_secs(30), "the latest temperature", || {
        browser.text(temperature).is_some()
    });
    browser.settled("device");
    let marker = browser.js("window.__notReloaded = true; return true;", json!([]));
    assert_eq!(marker, json!(true));
    let first = number(&browser.text(temperature).unwrap());
    eventually(
        Duration::from_secs(30),
        "the temperature updates live",
        || {
            browser
                .text(temperature)
                .is_some_and(|t| number(&t) != first)
        },
    );
    eventually(Duration::from_secs(20), "telemetry charts", || {
        browser.count("[data-chart] canvas") >= 3
    });
    assert_eq!(
        browser.js("return window.__notReloaded === true;", json!([])),
        json!(true),
        "the page reloaded instead of updating in place"
    );
    browser.screenshot(&shots.join("device.png"));

    // Alerts: an operator signs in with a password and acknowledges the
    // first active one with a click.
    create_user(&base, &token, "olga", "operator");
    create_user(&base, &token, "vic", "viewer");
    browser.sign_in(&base, "olga", "not olga's password");
    eventually(
        Duration::from_secs(10),
        "the wrong password refused",
        || {
            browser
                .text("#login-error")
                .is_some_and(|t| t.contains("wrong user name or password"))
        },
    );
    browser.sign_in(&base, "olga", "olga's long password");
    eventually(Duration::from_secs(10), "signed in as olga", || {
        browser.text("#whoami").as_deref() == Some("olga · operator")
    });
    browser.open(&format!("{base}/ui/#/alerts"));
    let active = "tr[data-state=active] button.ack";
    eventually(Duration::from_secs(30), "an active alert", || {
        browser.count(active) >= 1
    });
    browser.settled("alerts");
    let id = browser
        .js(
            "return document.querySelector('tr[data-state=active]').dataset.alert;",
            json!([]),
        )
        .as_str()
        .unwrap()
        .to_owned();
    browser.screenshot(&shots.join("alerts.png"));
    browser.click(&format!("tr[data-alert='{id}'] button.ack"));
    eventually(
        Duration::from_secs(15),
        "the alert shows acknowledged",
        || browser.count(&format!("tr[data-alert='{id}'][data-state=acknowledged]")) == 1,
    );
    let alert = alert_from_api(&base, &token, &id);
    assert_eq!(alert["state"], "acknowledged", "{alert}");
    assert_eq!(alert["acknowledged_by"], "olga", "{alert}");
    let history: Vec<&str> = alert["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["raised", "acknowledged"], "{alert}");
    browser.screenshot(&shots.join("alerts-acknowledged.png"));

    // Control: the plant's gate with each check and its measured value.
    browser.open(&format!("{base}/ui/#/control"));
    eventually(Duration::from_secs(30), "the plant's gate", || {
        browser
            .text("[data-gate=demo-plant] h2")
            .is_some_and(|t| t.contains("phase 2") && t.contains("gate"))
            && browser
                .text("[data-gate=demo-plant] td")
                .is_some_and(|t| t.starts_with("uptime"))
    });
    browser.settled("control");
    browser.screenshot(&shots.join("control.png"));

    // A plant device's rule in approval mode proposes an action (the device
    // sends the record itself, over MQTT); olga approves it with a click,
    // and the hub relays it and records that she did.
    // (At a site of its own: the plant's rollout below waits for every
    // plant device, and this one runs no agent.)
    let credential = enroll(&base, &token, "press-9", "bench");
    let proposal = json!({
        "seq": 1, "ts_ns": common::now_ns(), "rule": "cool", "output": "fan",
        "action": "cool-abc-1", "outcome": "proposed", "value": 40.0,
        "reason": "temperature 85 > 80",
    });
    let port = mqtt.rsplit(':').next().unwrap();
    let sent = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", port, "-q", "1", "-i", "press-9"])
        .args(["-u", "press-9", "-P", &credential])
        .args([
            "-t",
            "strata/v1/press-9/up/events",
            "-m",
            &proposal.to_string(),
        ])
        .output()
        .expect("run mosquitto_pub (Debian package mosquitto-clients)");
    assert!(sent.status.success(), "{sent:?}");
    let approve = "tr[data-action=cool-abc-1] button.approve";
    eventually(Duration::from_secs(20), "the proposal to approve", || {
        browser.count(approve) == 1
    });
    let row = browser.text("tr[data-action=cool-abc-1]").unwrap();
    assert!(
        row.contains("press-9") && row.contains("cool") && row.contains("proposed"),
        "{row}"
    );
    browser.click(approve);
    eventually(
        Duration::from_secs(15),
        "the approval on the audit log",
        || {
            audit(&base, &token).iter().any(|e| {
                e["action"] == "control.approve"
                    && e["actor"] == "olga"
                    && e["outcome"] == "ok"
                    && e["target"]
                        .as_str()
                        .is_some_and(|t| t.contains("cool-abc-1"))
            })
        },
    );

    // The model lifecycle finishes: the model is on the models page, the
    // device page charts its predictions.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("[4/4]")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match demo_out.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("the demo did not deploy its model ({e}): {seen:#?}"),
        }
    }
    browser.open(&format!("{base}/ui/#/models"));
    eventually(Duration::from_secs(20), "the rul model", || {
        browser.count("[data-model=rul] tbody tr") >= 1
    });
    browser.settled("models");
    assert!(
        browser
            .text("[data-model=rul] tbody tr")
            .unwrap()
            .contains("champion")
    );
    browser.screenshot(&shots.join("models.png"));
    browser.open(&format!("{base}/ui/#/device/machine-01"));
    eventually(Duration::from_secs(60), "a predictions chart", || {
        browser.count("[data-chart='rul.prediction'] canvas") >= 1
    });
    browser.settled("device with predictions");
    browser.screenshot(&shots.join("device-predictions.png"));

    // A phased rollout: its waves fill in on the page until it completes.
    let campaign = roll_out_rul(dir.path(), &base, &token);
    browser.open(&format!("{base}/ui/#/rollouts"));
    let card = format!("[data-campaign='{campaign}']");
    eventually(Duration::from_secs(20), "the campaign's waves", || {
        browser.count(&format!("{card} tbody tr")) >= 2
            && browser.count(&format!("{card} .bar")) >= 2
    });
    browser.settled("rollouts");
    browser.screenshot(&shots.join("rollouts-running.png"));
    eventually(
        Duration::from_secs(120),
        "the campaign completes on the page",
        || {
            browser
                .text(&format!("{card} h2 .pill"))
                .is_some_and(|t| t == "completed")
        },
    );
    browser.screenshot(&shots.join("rollouts.png"));

    // The other pages load without an error.
    for (page, heading) in [("drift", "Drift"), ("audit", "Audit")] {
        browser.open(&format!("{base}/ui/#/{page}"));
        eventually(Duration::from_secs(20), page, || {
            browser.text("h1").is_some_and(|t| t.contains(heading))
        });
        browser.settled(page);
        browser.screenshot(&shots.join(format!("{page}.png")));
    }
    assert!(
        browser
            .text("main table")
            .is_some_and(|t| t.contains("alert acknowledged")),
        "the audit page lists the acknowledgement"
    );
    // The signed log is the admins'; the operator does not see it.
    assert_eq!(browser.count("#audit-verify"), 0);

    // A viewer sees the alerts but is offered no action on them.
    browser.sign_in(&base, "vic", "vic's long password");
    eventually(Duration::from_secs(10), "signed in as vic", || {
        browser.text("#whoami").as_deref() == Some("vic · viewer")
    });
    browser.open(&format!("{base}/ui/#/alerts"));
    eventually(Duration::from_secs(20), "the alerts, for a viewer", || {
        browser.count("tr[data-alert]") >= 1
    });
    browser.settled("alerts for a viewer");
    assert_eq!(
        browser.count("button.ack"),
        0,
        "a viewer is offered Acknowledge"
    );
    browser.screenshot(&shots.join("alerts-viewer.png"));

    // The admin checks the signed audit log from the dashboard.
    browser.open(&url);
    eventually(Duration::from_secs(10), "signed in as admin", || {
        browser.text("#whoami").as_deref() == Some("admin · admin")
    });
    browser.open(&format!("{base}/ui/#/audit"));
    eventually(Duration::from_secs(20), "the signed log", || {
        browser
            .text("main table")
            .is_some_and(|t| t.contains("alert.acknowledge") && t.contains("olga"))
    });
    browser.click("#audit-verify");
    eventually(Duration::from_secs(20), "the chain verifies", || {
        browser
            .text("#audit-verdict")
            .is_some_and(|t| t.starts_with("intact"))
    });
    browser.screenshot(&shots.join("audit-signed.png"));

    // The admin cancels a training job from the models page: a trainer
    // that would run for ten minutes, or wait behind the demo's own jobs.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/external_trainer.py");
    let mut r = ureq::post(format!("{base}/api/v1/jobs/train"))
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(json!({
            "model": "slow",
            "trainer": { "type": "external", "command": [common::peers_python(), script, "--sleep", "600"] },
            "dataset": { "devices": ["machine-01", "machine-02"], "pipeline": common::pipeline(common::MACHINE_PIPELINE),
                         "vector": "bearing", "target": "label.rul_h" },
        }))
        .expect("POST training job");
    let job: Value = r.body_mut().read_json().unwrap();
    let id = job["id"].as_i64().unwrap();
    browser.open(&format!("{base}/ui/#/models"));
    let row = format!("tr[data-job='{id}']");
    eventually(Duration::from_secs(20), "the job's Cancel button", || {
        browser.count(&format!("{row} button.cancel-job")) == 1
    });
    browser.click(&format!("{row} button.cancel-job"));
    eventually(Duration::from_secs(15), "the job shows cancelled", || {
        browser.count(&format!("{row}[data-state=cancelled]")) == 1
    });
    let mut r = ureq::get(format!("{base}/api/v1/jobs/{id}"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .expect("GET job");
    let job: Value = r.body_mut().read_json().unwrap();
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(job["message"], "cancelled by admin: on the dashboard");

    // A tablet in portrait: the fleet still fits, navigation scrolls.
    browser.resize(768, 1024);
    browser.open(&format!("{base}/ui/#/fleet"));
    eventually(Duration::from_secs(20), "the fleet on a tablet", || {
        browser.count("tr[data-device]") == 1
    });
    // The search was kept while browsing; clearing it shows every device
    // (the three machines and the bench's press).
    browser.search("");
    eventually(Duration::from_secs(10), "every device again", || {
        browser.count("tr[data-device]") == 4
    });
    // The release the campaign committed is what the devices run.
    eventually(Duration::from_secs(20), "the fleet runs rul@2", || {
        browser
            .text("main .grid section:nth-of-type(2) table")
            .is_some_and(|t| t.contains("rul@2"))
    });
    browser.settled("fleet on a tablet");
    let overflow = browser.js(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        json!([]),
    );
    assert_eq!(overflow, json!(0), "the page scrolls sideways on a tablet");
    browser.screenshot(&shots.join("fleet-tablet.png"));
}

/// A hub whose registry holds `n` devices over two sites, a third of them
/// marked online, written straight into its database between two runs (the
/// API would take minutes to register them one by one in a debug build).
fn hub_with_devices(dir: &Path, n: usize) -> common::HubProcess {
    common::HubProcess::start(dir).kill();
    let mut db = rusqlite::Connection::open(dir.join("strata.db")).unwrap();
    let tx = db.transaction().unwrap();
    for site in ["plant-a", "plant-b"] {
        tx.execute(
            "INSERT INTO sites (id, name, region, created_ns) VALUES (?1, ?1, 'eu-west', 0)",
            [site],
        )
        .unwrap();
    }
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO devices (id, site_id, tags, model_version, firmware_version, state, online, last_seen_ns, created_ns)
                 VALUES (?1, ?2, '{\"line\":\"1\"}', 'rul@1', ?3, 'active', ?4, ?5, 0)",
            )
            .unwrap();
        let now = common::now_ns();
        for i in 0..n {
            let site = if i % 2 == 0 { "plant-a" } else { "plant-b" };
            let firmware = if i % 10 == 0 { "2.3.0" } else { "2.2.1" };
            insert
                .execute(rusqlite::params![
                    format!("dev-{i:05}"),
                    site,
                    firmware,
                    i64::from(i % 3 == 0),
                    now
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    drop(db);
    common::HubProcess::start(dir)
}

#[test]
fn the_fleet_page_pages_ten_thousand_devices() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_devices(dir.path(), 10_000);
    let (_, fleet) = hub.api("GET", "/api/v1/fleet?limit=1", None);
    assert_eq!(fleet["devices"], 10_000, "{fleet}");
    let online = fleet["online"].as_u64().unwrap();
    let browser = Browser::start();
    browser.open(&format!("http://{}/ui/#token={}", hub.http, hub.token));
    eventually(Duration::from_secs(30), "10,000 devices counted", || {
        browser.text("[data-stat=devices] .v").as_deref() == Some("10,000")
    });
    browser.settled("fleet of 10,000");
    assert_eq!(
        number(&browser.text("[data-stat=online] .v").unwrap()) as u64,
        online
    );
    // One page of 50 rows is in the document, not 10,000.
    assert_eq!(browser.count("tr[data-device]"), 50);
    assert_eq!(
        browser.text("main .toolbar span").unwrap(),
        "1–50 of 10,000"
    );
    let fetched = browser.js(
        "return performance.getEntriesByType('resource').filter(e => e.name.includes('/api/v1/fleet')).map(e => [e.duration, e.transferSize]);",
        json!([]),
    );
    eprintln!("fleet requests (ms, bytes), debug build: {fetched}");
    browser.screenshot(&screenshots_dir().join("fleet-10000.png"));

    browser.click("main .toolbar button:nth-of-type(2)");
    eventually(Duration::from_secs(10), "the second page", || {
        browser.text("main .toolbar span").as_deref() == Some("51–100 of 10,000")
            && browser.text("tr[data-device] a").as_deref() == Some("dev-00050")
    });
    browser.search("dev-0999");
    eventually(Duration::from_secs(10), "the search over all pages", || {
        browser.text("main .toolbar span").as_deref() == Some("1–10 of 10")
            && browser.count("tr[data-device]") == 10
    });
    // The version table counts the whole fleet.
    let versions = browser
        .text("main .grid section:nth-of-type(2) table")
        .unwrap();
    assert!(
        versions.contains("2.3.0") && versions.contains("1,000"),
        "{versions}"
    );
    assert!(
        versions.contains("2.2.1") && versions.contains("9,000"),
        "{versions}"
    );
    hub.kill();
}
