//! A small client for the hub's HTTP API, used by the CLI subcommands and
//! the demo. Error responses are turned into their message.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The admin token's file in the hub's data directory (the hub's
/// `ADMIN_TOKEN_FILE`, repeated so a gateway build needs no hub code).
const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Where the hub is and how to authenticate.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// How long the client waits for the hub to answer a connection, and for
/// each read or write to make progress: a hub that accepts and then stalls
/// (or a link that drops packets) gives an error, not a command that hangs
/// for good. A large upload or a long answer may take as long as it
/// needs while bytes move.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The agent every client uses: statuses are answers, not errors, and
/// nothing waits for ever.
fn agent(tls: Option<ureq::tls::TlsConfig>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_resolve(Some(CONNECT_TIMEOUT))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(STALL_TIMEOUT))
        .timeout_per_write(Some(STALL_TIMEOUT));
    if let Some(tls) = tls {
        config = config.tls_config(tls);
    }
    config.build().into()
}

impl ApiClient {
    /// A client for the hub at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = agent(None);
        ApiClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent,
        }
    }

    /// A client for a hub whose API may be served over HTTPS: `ca` is the
    /// PEM file of the CA its certificate must chain to (the hub's
    /// `ca.pem`); no other CA is trusted.
    pub fn with_ca(base: &str, token: Option<String>, ca: Option<&Path>) -> anyhow::Result<Self> {
        let Some(ca) = ca else {
            return Ok(Self::new(base, token));
        };
        let pem = std::fs::read(ca)
            .with_context(|| format!("cannot read the CA file {}", ca.display()))?;
        let certificates: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        anyhow::ensure!(
            !certificates.is_empty(),
            "{} holds no PEM certificate",
            ca.display()
        );
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(
                certificates,
            )))
            .build();
        let agent = agent(Some(tls));
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent,
        })
    }

    /// Reads the admin token from a hub's data directory.
    pub fn token_from_data_dir(dir: &Path) -> anyhow::Result<String> {
        let path = dir.join(ADMIN_TOKEN_FILE);
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the admin token from {}", path.display()))?;
        Ok(token.trim().to_owned())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn finish<T: DeserializeOwned>(
        &self,
        what: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<T> {
        let mut response =
            response.with_context(|| format!("{what}: cannot reach the hub at {}", self.base))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .with_context(|| format!("{what}: cannot read the hub's answer ({status})"))?;
        let body = serde_json::from_str::<Value>(&text);
        if !status.is_success() {
            // The hub's errors are JSON; a request it could not even read
            // (a field of the wrong type) is answered in plain text, and a
            // proxy in front of it may answer in HTML: say what came.
            let message = match &body {
                Ok(b) => b["error"]["message"]
                    .as_str()
                    .unwrap_or("no message")
                    .to_owned(),
                Err(_) => plain_message(&text),
            };
            return Err(anyhow!("{what}: {status}: {message}"));
        }
        let body = body.with_context(|| {
            format!("{what}: the hub answered {status} with a body that is not JSON")
        })?;
        serde_json::from_value(body).with_context(|| format!("{what}: unexpected answer"))
    }

    /// GET `path`.
    pub fn get<T: DeserializeOwned>(&self, what: &str, path: &str) -> anyhow::Result<T> {
        let mut req = self.agent.get(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(what, req.call())
    }

    /// GET `path` as text (e.g. `/metrics`, which the demo reads).
    #[cfg(feature = "hub")]
    pub fn get_text(&self, what: &str, path: &str) -> anyhow::Result<String> {
        let mut response = self
            .agent
            .get(self.url(path))
            .call()
            .with_context(|| format!("{what}: cannot reach the hub at {}", self.base))?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("{what}: cannot read the answer"))?;
        if !status.is_success() {
            return Err(anyhow!("{what}: {status}"));
        }
        Ok(text)
    }

    /// PUT `body` as JSON to `path`.
    pub fn put<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let mut req = self.agent.put(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(what, req.send_json(body))
    }

    /// PATCH `body` as JSON to `path`.
    pub fn patch<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let mut req = self.agent.patch(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(what, req.send_json(body))
    }

    /// DELETE `path`.
    pub fn delete<T: DeserializeOwned>(&self, what: &str, path: &str) -> anyhow::Result<T> {
        let mut req = self.agent.delete(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(what, req.call())
    }

    /// POST raw bytes (e.g. an ONNX file) to `path`.
    pub fn post_bytes<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        bytes: &[u8],
    ) -> anyhow::Result<T> {
        let mut req = self
            .agent
            .post(self.url(path))
            .header("Content-Type", "application/octet-stream");
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(what, req.send(bytes))
    }

    /// POST `body` as JSON to `path`.
    pub fn post<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let mut req = self.agent.post(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(what, req.send_json(body))
    }
}

/// `value` percent-encoded for a query string: everything but letters,
/// digits and `-._~`, so a `+`, `&`, `#` or space in a value arrives as
/// given instead of changing the query.
pub fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The most of an answer the client reads (a fleet's device list is a few
/// MiB; ureq's default limit is 10 MiB).
const MAX_ANSWER: u64 = 256 * 1024 * 1024;

/// An answer that is not JSON, as one line of at most 300 characters.
fn plain_message(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None if line.is_empty() => "no message".to_owned(),
        None => line,
    }
}

#[cfg(test)]
mod plain_tests {
    use super::{plain_message, query_value};

    #[test]
    fn query_values_arrive_as_given() {
        assert_eq!(query_value("rms,kurt"), "rms%2Ckurt");
        assert_eq!(query_value("a+b c&d#e"), "a%2Bb%20c%26d%23e");
        assert_eq!(query_value("plant-1.x_y~"), "plant-1.x_y~");
        assert_eq!(query_value("°C"), "%C2%B0C");
    }

    #[test]
    fn an_answer_that_is_not_json_is_shown_on_one_line() {
        assert_eq!(
            plain_message(
                "Failed to deserialize the JSON body into the target type: role: unknown variant `superuser`\n"
            ),
            "Failed to deserialize the JSON body into the target type: role: unknown variant `superuser`"
        );
        assert_eq!(plain_message("  "), "no message");
        assert!(plain_message(&"x".repeat(1000)).ends_with("..."));
    }
}

#[cfg(all(test, feature = "hub"))]
mod tests {
    #[test]
    fn the_admin_token_file_is_the_hubs() {
        assert_eq!(super::ADMIN_TOKEN_FILE, strata_hub::ADMIN_TOKEN_FILE);
    }
}
