//! Webhooks: signed HTTP notifications of hub events (an alert raised,
//! acknowledged or cleared) for ticketing, maintenance and chat systems.
//!
//! Deliveries are queued in storage in the same transaction as the change
//! they announce, and a worker thread sends them: at least once, to each
//! endpoint in the order they were queued, retried with exponential backoff while the receiver is down
//! or answers 5xx, 408 or 429, until `max_attempts` (then `failed`); any
//! other 4xx (a bad signature, no such path) fails at once, as sending it
//! again cannot help, and would hold up the endpoint's queue. Each
//! request carries `X-Strata-Delivery` (a stable id, for the receiver to
//! drop repeats), `X-Strata-Event`, `X-Strata-Timestamp` and
//! `X-Strata-Signature` (see [`signature`]).

pub mod signature;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use strata_store::{AlertStore, Delivery, NewDelivery};

use crate::error::{Error, Result};
use crate::now_ns;
use crate::wake::Worker;

/// The events a webhook can subscribe to.
pub const EVENTS: &[&str] = &["alert.raised", "alert.acknowledged", "alert.cleared"];

/// The longest backoff and request timeout an endpoint may set.
const DAY_S: f64 = 86_400.0;
const HOUR_S: f64 = 3_600.0;

/// One `[[webhooks]]` endpoint of the hub's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// Its name, used in deliveries, metrics and the secret's file name.
    pub name: String,
    /// Where to POST (`https://` or `http://`).
    pub url: String,
    /// For an `https://` URL: the PEM file of the CA the endpoint's
    /// certificate must chain to (relative to the data directory), trusted
    /// instead of the public web's CAs (an internal system's own CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The events it receives; every event when empty.
    #[serde(default)]
    pub events: Vec<String>,
    /// The file holding its signing secret (relative to the data
    /// directory); `webhooks/{name}.secret` by default, created with a
    /// random secret (owner-readable only) when absent.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Attempts before a delivery is given up as `failed`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry, seconds; doubled at each retry.
    #[serde(default = "default_backoff_s")]
    pub backoff_s: f64,
    /// The longest wait between retries, seconds.
    #[serde(default = "default_max_backoff_s")]
    pub max_backoff_s: f64,
    /// Time allowed for one request, seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
}

fn default_max_attempts() -> u32 {
    20
}
fn default_backoff_s() -> f64 {
    1.0
}
fn default_max_backoff_s() -> f64 {
    300.0
}
fn default_timeout_s() -> f64 {
    10.0
}

impl WebhookEndpoint {
    /// Checks what serde cannot.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let at = format!("[[webhooks]] {:?}", self.name);
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "{at}: name must be letters, digits, '-' or '_' (it names the secret's file)"
            ));
        }
        let https = self.url.starts_with("https://");
        let rest = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"));
        // A host must follow: `http://?token=x` would fail every attempt
        // with its secret in the error.
        let host = rest
            .map(host_and_port)
            .map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h))
            .unwrap_or_default();
        if host.is_empty() {
            return Err(format!(
                "{at}: url must start with https:// or http:// and name a host, got {:?}",
                origin(&self.url)
            ));
        }
        if self.ca_file.is_some() && !https {
            return Err(format!("{at}: ca_file is for https:// URLs only"));
        }
        if let Some(e) = self.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
            return Err(format!("{at}: unknown event {e:?} (known: {EVENTS:?})"));
        }
        if self.max_attempts == 0 {
            return Err(format!("{at}: max_attempts must be at least 1"));
        }
        for (key, v, most) in [
            ("backoff_s", self.backoff_s, DAY_S),
            ("max_backoff_s", self.max_backoff_s, DAY_S),
            ("timeout_s", self.timeout_s, HOUR_S),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= most) {
                return Err(format!(
                    "{at}: {key} must be a positive number of seconds, at most {most}"
                ));
            }
        }
        if self.max_backoff_s < self.backoff_s {
            return Err(format!("{at}: max_backoff_s must be at least backoff_s"));
        }
        Ok(())
    }

    /// Whether it receives `event`.
    pub fn wants(&self, event: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event)
    }

    /// The wait after the `attempts`-th failed attempt.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
        Duration::from_secs_f64((self.backoff_s * factor).min(self.max_backoff_s))
    }

    fn secret_path(&self, data_dir: &Path) -> PathBuf {
        match &self.secret_file {
            Some(p) => data_dir.join(p),
            None => data_dir
                .join("webhooks")
                .join(format!("{}.secret", self.name)),
        }
    }
}

/// An endpoint with its secret and HTTP client.
struct Endpoint {
    config: WebhookEndpoint,
    secret: Vec<u8>,
    agent: ureq::Agent,
}

impl Endpoint {
    /// POSTs `body` signed; the response body on a 2xx answer.
    fn post(&self, id: &str, event: &str, body: &str) -> std::result::Result<String, Failure> {
        let timestamp_s = now_ns() / 1_000_000_000;
        let signature = signature::sign(&self.secret, timestamp_s, body.as_bytes());
        let result = self
            .agent
            .post(&self.config.url)
            .header("Content-Type", "application/json")
            .header(
                "User-Agent",
                concat!("strata-hub/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Strata-Delivery", id)
            .header("X-Strata-Event", event)
            .header("X-Strata-Timestamp", timestamp_s.to_string())
            .header("X-Strata-Signature", &signature)
            .send(body.as_bytes());
        match result {
            Ok(mut r) if r.status().is_success() => Ok(r
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .unwrap_or_default()),
            Ok(r) if r.status().is_redirection() => {
                let to = r
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .map_or_else(|| "elsewhere".to_owned(), origin);
                Err(Failure {
                    why: format!(
                        "HTTP {}: the endpoint redirects to {to}; set its url to where it points (redirects are not followed)",
                        r.status().as_u16()
                    ),
                    for_good: true,
                })
            }
            Ok(r) => {
                let status = r.status().as_u16();
                Err(Failure {
                    why: format!("HTTP {status}"),
                    // The receiver refuses the request itself (bad
                    // signature, no such path): sending it again cannot
                    // help. A timeout or "too many requests" can.
                    for_good: (400..500).contains(&status) && ![408, 425, 429].contains(&status),
                })
            }
            Err(e) => Err(Failure {
                why: format!("cannot reach {}: {e}", origin(&self.config.url)),
                for_good: false,
            }),
        }
    }
}

/// The scheme, host and port of `url`, which delivery errors show (to
/// viewers, and in the log): an incoming-webhook URL's path or query is
/// often its secret, and its user:password part always is.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    format!("{scheme}://{}", host_and_port(rest))
}

/// The host and port of what follows a URL's `scheme://`: its authority
/// without the `user:password@` part.
fn host_and_port(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.rsplit_once('@').map_or(authority, |(_, h)| h)
}

/// Why a POST failed, and whether trying again could change that.
pub struct Failure {
    /// What went wrong, for the log and the record.
    pub why: String,
    /// True when sending the same again cannot succeed.
    pub for_good: bool,
}

/// The webhook deliverer.
pub struct Webhooks {
    endpoints: BTreeMap<String, Endpoint>,
    store: Arc<dyn AlertStore>,
    worker: Worker,
    /// Attempts by (endpoint, outcome): `delivered`, `retry`, `failed`.
    outcomes: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Webhooks {
    /// Reads (or creates) each endpoint's secret and starts the worker,
    /// which first sends whatever an earlier run left pending.
    pub fn start(
        store: Arc<dyn AlertStore>,
        endpoints: &[WebhookEndpoint],
        data_dir: &Path,
    ) -> Result<Arc<Webhooks>> {
        let mut by_name = BTreeMap::new();
        for config in endpoints {
            let secret = load_secret(&config.secret_path(data_dir))?;
            let roots = match &config.ca_file {
                Some(file) => {
                    ureq::tls::RootCerts::Specific(Arc::new(load_ca(&data_dir.join(file))?))
                }
                None => ureq::tls::RootCerts::WebPki,
            };
            // No redirects: following one turns the POST into a GET
            // without its body (and a 200 to that would count as
            // delivered), and sends the signed request where the
            // receiver, not the operator, says.
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(Duration::from_secs_f64(config.timeout_s)))
                .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
                .build()
                .into();
            by_name.insert(
                config.name.clone(),
                Endpoint {
                    config: config.clone(),
                    secret,
                    agent,
                },
            );
        }
        let hooks = Arc::new(Webhooks {
            endpoints: by_name,
            store,
            worker: Worker::default(),
            outcomes: Mutex::new(BTreeMap::new()),
        });
        if !hooks.endpoints.is_empty() {
            let worker = Arc::clone(&hooks);
            hooks
                .worker
                .spawn("strata-webhooks", move || worker.run())
                .map_err(|e| Error::Unavailable(format!("cannot start the webhook worker: {e}")))?;
        }
        Ok(hooks)
    }

    /// The deliveries announcing `event` with `body`, one per endpoint that
    /// wants it; queue them (with the change they announce), then call
    /// [`Webhooks::queued`].
    pub fn deliveries_for(&self, event: &str, body: &serde_json::Value) -> Vec<NewDelivery> {
        let text = body.to_string();
        self.endpoints
            .values()
            .filter(|e| e.config.wants(event))
            .map(|e| NewDelivery {
                endpoint: e.config.name.clone(),
                event: event.to_owned(),
                body: text.clone(),
            })
            .collect()
    }

    /// Tells the worker that deliveries were queued.
    pub fn queued(&self) {
        self.worker.wake();
    }

    /// Stops the worker after its current attempt.
    pub fn stop(&self) {
        self.worker.stop();
    }

    /// Deliveries, newest first.
    pub fn deliveries(
        &self,
        endpoint: Option<&str>,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        Ok(self.store.deliveries(endpoint, state, limit)?)
    }

    /// `strata_webhook_attempts_total{endpoint, outcome}`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str(
            "# HELP strata_webhook_attempts_total Webhook delivery attempts by endpoint and outcome.\n\
             # TYPE strata_webhook_attempts_total counter\n",
        );
        let outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        for name in self.endpoints.keys() {
            for outcome in ["delivered", "retry", "failed"] {
                let n = outcomes.get(&(name.clone(), outcome)).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "strata_webhook_attempts_total{{endpoint=\"{name}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
    }

    /// An endpoint's configuration.
    pub fn endpoint(&self, name: &str) -> Option<&WebhookEndpoint> {
        self.endpoints.get(name).map(|e| &e.config)
    }

    /// POSTs `body` to `endpoint` now, signed like a delivery, with `id` as
    /// its `X-Strata-Delivery` (a workflow step, whose answer the next steps
    /// use); returns the answer's body, or why it failed.
    pub fn call(
        &self,
        endpoint: &str,
        id: &str,
        event: &str,
        body: &str,
    ) -> std::result::Result<String, Failure> {
        let e = self.endpoints.get(endpoint).ok_or_else(|| Failure {
            why: format!("no webhook endpoint {endpoint:?} is configured"),
            for_good: true,
        })?;
        e.post(id, event, body)
    }

    fn run(&self) {
        while !self.worker.stopping() {
            let due = match self.store.due_deliveries(now_ns(), 64) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("webhooks: cannot read due deliveries: {e}");
                    self.worker.wait(Duration::from_secs(1));
                    continue;
                }
            };
            let mut unrecorded = false;
            for mut d in due {
                if self.worker.stopping() {
                    return;
                }
                self.attempt(&mut d);
                if let Err(e) = self.store.record_attempt(&d) {
                    tracing::warn!("webhooks: cannot record delivery {}: {e}", d.id);
                    unrecorded = true;
                }
            }
            if unrecorded {
                // The delivery is still due as stored: going round at once
                // would post it again and again while the store fails.
                self.worker.wait(crate::wake::STORE_RETRY);
                continue;
            }
            self.worker
                .wait_until(self.store.next_delivery_ns().ok().flatten());
        }
    }

    /// Makes one attempt at `d` and updates it with the outcome.
    fn attempt(&self, d: &mut Delivery) {
        let Some(endpoint) = self.endpoints.get(&d.endpoint) else {
            // The endpoint left the configuration: nothing can deliver it.
            d.state = "failed".into();
            d.last_error = Some(format!(
                "no webhook endpoint {:?} is configured",
                d.endpoint
            ));
            return;
        };
        d.attempts += 1;
        let error = endpoint.post(&d.id.to_string(), &d.event, &d.body).err();
        let outcome = match error {
            None => {
                d.state = "delivered".into();
                d.delivered_ns = Some(now_ns());
                d.last_error = None;
                "delivered"
            }
            Some(f) if f.for_good || d.attempts >= endpoint.config.max_attempts => {
                tracing::warn!(
                    "webhook {}: giving up delivery {} after {} attempts: {}",
                    d.endpoint,
                    d.id,
                    d.attempts,
                    f.why
                );
                d.state = "failed".into();
                d.last_error = Some(f.why);
                "failed"
            }
            Some(f) => {
                let wait = endpoint.config.backoff(d.attempts);
                d.next_ns = now_ns() + wait.as_nanos() as i64;
                d.last_error = Some(f.why);
                "retry"
            }
        };
        *self
            .outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((d.endpoint.clone(), outcome))
            .or_default() += 1;
    }
}

/// Reads a secret file, or creates it with a new random secret.
/// The certificates of a CA file (PEM) an endpoint's certificate must
/// chain to.
fn load_ca(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem = std::fs::read(path).map_err(|e| {
        Error::BadRequest(format!(
            "cannot read webhook CA file {}: {e}",
            path.display()
        ))
    })?;
    let certificates: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certificates.is_empty() {
        return Err(Error::BadRequest(format!(
            "webhook CA file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certificates)
}

fn load_secret(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().as_bytes().to_vec()),
        Ok(_) => {
            return Err(Error::BadRequest(format!(
                "webhook secret file {} is empty",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::Unavailable(format!(
                "cannot read webhook secret {}: {e}",
                path.display()
            )));
        }
    }
    let secret = crate::secret::generate("stwh_");
    let created = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| crate::write_private(path, secret.as_bytes()));
    created.map_err(|e| {
        Error::Unavailable(format!(
            "cannot write webhook secret {}: {e}",
            path.display()
        ))
    })?;
    tracing::info!(path = %path.display(), "created a webhook secret");
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(toml_text: &str) -> WebhookEndpoint {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn delivery_errors_show_the_endpoint_without_its_secrets() {
        assert_eq!(
            origin("https://hooks.example.com/services/T000/B000/XXXXsecret"),
            "https://hooks.example.com"
        );
        assert_eq!(
            origin("http://user:pa@ss@10.0.0.5:8080/hook?token=abc#x"),
            "http://10.0.0.5:8080"
        );
        assert_eq!(origin("http://cmms?key=1"), "http://cmms");
    }

    #[test]
    fn defaults_and_validation() {
        let e = endpoint("name = \"cmms\"\nurl = \"http://127.0.0.1:9/hook\"\n");
        assert!(e.validate().is_ok());
        assert!(e.wants("alert.cleared"));
        assert_eq!(e.max_attempts, 20);
        let bad = |extra: &str| {
            endpoint(&format!("name = \"cmms\"\nurl = \"http://h/\"\n{extra}"))
                .validate()
                .unwrap_err()
        };
        assert!(bad("events = [\"alert.exploded\"]").contains("alert.exploded"));
        assert!(bad("max_attempts = 0").contains("max_attempts"));
        assert!(bad("backoff_s = -1").contains("backoff_s"));
        assert!(bad("backoff_s = 10\nmax_backoff_s = 5").contains("max_backoff_s"));
        let e = endpoint("name = \"a b\"\nurl = \"http://h/\"\n");
        assert!(e.validate().unwrap_err().contains("name"));
        let e = endpoint("name = \"a\"\nurl = \"ftp://h/\"\n");
        assert!(e.validate().unwrap_err().contains("http://"));
        assert!(
            endpoint("name = \"a\"\nurl = \"https://h/\"\n")
                .validate()
                .is_ok()
        );
        for url in [
            "https://",
            "http://?token=x",
            "http://user@/x",
            "https://:443/",
        ] {
            let e = endpoint(&format!("name = \"a\"\nurl = \"{url}\"\n"));
            assert!(e.validate().unwrap_err().contains("https://"), "{url}");
        }
        assert!(bad("timeout_s = 1e30").contains("timeout_s"));
        assert!(bad("max_backoff_s = 1e30").contains("max_backoff_s"));
        let e = endpoint("name = \"a\"\nurl = \"http://h/\"\nca_file = \"ca.pem\"\n");
        assert!(e.validate().unwrap_err().contains("ca_file"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let e = endpoint("name = \"a\"\nurl = \"http://h/\"\nbackoff_s = 0.5\nmax_backoff_s = 3\n");
        let waits: Vec<f64> = (1..=5).map(|n| e.backoff(n).as_secs_f64()).collect();
        assert_eq!(waits, [0.5, 1.0, 2.0, 3.0, 3.0]);
    }

    #[test]
    fn a_missing_secret_is_created_private_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhooks/a.secret");
        let first = load_secret(&path).unwrap();
        assert!(first.starts_with(b"stwh_"));
        assert_eq!(load_secret(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
    }
}
