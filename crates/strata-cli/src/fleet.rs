//! Simulated fleets: registering and enrolling devices through the API,
//! and publishing pre-encoded batches as fast as the broker acknowledges
//! them, with `rumqttc`, a client written outside this project, so what the
//! benchmark and the history backfill measure is the hub as any device
//! would see it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::{Value, json};

use crate::api_client::ApiClient;

/// A device's MQTT identity.
#[derive(Debug, Clone)]
pub struct Login {
    /// Device id (client id and username).
    pub device: String,
    /// Its credential (password).
    pub credential: String,
    /// Connect over TLS with this client configuration (the device's
    /// certificate) instead of a password.
    pub tls: Option<std::sync::Arc<strata_broker::rustls::ClientConfig>>,
}

fn options(addr: SocketAddr, client_id: &str, login: Option<&Login>, inflight: u16) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    // The hub's default packet limit, not rumqttc's 10 KiB: a batch of
    // 1,000 readings is more.
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_inflight(inflight);
    o.set_clean_session(true);
    match login {
        Some(Login { tls: Some(tls), .. }) => {
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        Some(l) => {
            o.set_credentials(&l.device, &l.credential);
        }
        None => {}
    }
    o
}

/// Connects as `login`, waits for the CONNACK, disconnects.
pub async fn connect_once(addr: SocketAddr, login: &Login) -> anyhow::Result<()> {
    let (client, mut eventloop) = AsyncClient::new(options(addr, &login.device, Some(login), 1), 4);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => bail!("{}: cannot connect: {e}", login.device),
        }
    }
    disconnect(&client, &mut eventloop).await;
    Ok(())
}

/// Publishes `payloads` to `topic` with QoS 1, at most `inflight` unacknowledged
/// at a time; returns once every one is acknowledged.
pub async fn publish_all(
    addr: SocketAddr,
    client_id: &str,
    login: Option<&Login>,
    topic: &str,
    payloads: Vec<Bytes>,
    inflight: u16,
) -> anyhow::Result<()> {
    let total = payloads.len();
    let (client, mut eventloop) =
        AsyncClient::new(options(addr, client_id, login, inflight), inflight as usize);
    let topic = topic.to_owned();
    let sender = client.clone();
    let feeder = tokio::spawn(async move {
        for p in payloads {
            if sender
                .publish_bytes(topic.clone(), QoS::AtLeastOnce, false, p)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut acked = 0;
    while acked < total {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => {
                feeder.abort();
                bail!(
                    "{client_id}: MQTT connection failed after {acked} of {total} acknowledgements: {e}"
                );
            }
        }
    }
    let _ = feeder.await;
    disconnect(&client, &mut eventloop).await;
    Ok(())
}

/// Sends DISCONNECT and lets it go out before the connection is dropped.
async fn disconnect(client: &AsyncClient, eventloop: &mut rumqttc::EventLoop) {
    let _ = client.disconnect().await;
    for _ in 0..4 {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// A simulated fleet to register at a hub.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// The site (created if missing).
    pub site: String,
    /// Its human name.
    pub site_name: String,
    /// Device ids are `{prefix}{n:02}`, n from 1.
    pub prefix: String,
    /// How many devices.
    pub count: usize,
}

/// The fleet's logins: read from `saved` when an earlier run registered it,
/// else registered and enrolled through the API and saved there (readable
/// by the owner only), so a second run reconnects the same devices.
pub fn logins(api: &ApiClient, spec: &FleetSpec, saved: &Path) -> anyhow::Result<Vec<Login>> {
    if let Ok(text) = std::fs::read_to_string(saved) {
        let pairs: Vec<(String, String)> = serde_json::from_str(&text)
            .with_context(|| format!("cannot read {}", saved.display()))?;
        if pairs.len() == spec.count {
            return Ok(pairs
                .into_iter()
                .map(|(device, credential)| Login {
                    device,
                    credential,
                    tls: None,
                })
                .collect());
        }
        bail!(
            "{} holds a fleet of {}, not {}: ask for {} devices or use another directory",
            saved.display(),
            pairs.len(),
            spec.count,
            pairs.len()
        );
    }
    let logins = register(api, spec)?;
    let pairs: Vec<(&str, &str)> = logins
        .iter()
        .map(|l| (l.device.as_str(), l.credential.as_str()))
        .collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(saved)
        .with_context(|| format!("cannot write {}", saved.display()))?;
    std::io::Write::write_all(&mut file, serde_json::to_string(&pairs)?.as_bytes())?;
    Ok(logins)
}

/// The tags of the `n`th device (from 1) of a fleet.
pub fn tags(n: usize) -> BTreeMap<String, String> {
    BTreeMap::from([("line".to_owned(), format!("{}", 1 + n % 2))])
}

/// The OTA settings of the `n`th simulated device (from 1) of `site`: it
/// trusts the keys the hub trusts, as `GET /api/v1/ota/keys` answered them,
/// as a real install would be configured.
pub fn ota_config(
    keys: &Value,
    site: &str,
    n: usize,
    health_window_ms: u64,
) -> strata_edge::config::OtaConfig {
    strata_edge::config::OtaConfig {
        release_keys: serde_json::from_value(keys["release_keys"].clone()).unwrap_or_default(),
        rollout_keys: keys["rollout_key"]
            .as_str()
            .map(str::to_owned)
            .into_iter()
            .collect(),
        site: site.to_owned(),
        tags: tags(n),
        health_window_ms,
        hooks: Default::default(),
        // The demo's fleet takes the hub's own model deployments.
        signed_only: false,
    }
}

fn register(api: &ApiClient, spec: &FleetSpec) -> anyhow::Result<Vec<Login>> {
    let created: anyhow::Result<Value> = api.post(
        "create site",
        "/api/v1/sites",
        &json!({ "id": spec.site, "name": spec.site_name, "region": "local" }),
    );
    if let Err(e) = created
        && !e.to_string().contains("exists")
    {
        return Err(e);
    }
    // No declared signals: simulated machines also send ground-truth
    // labels and their agent's heartbeat (`health.*`, named after its
    // sources), which a fixed declaration would refuse.
    (1..=spec.count)
        .map(|i| {
            let id = format!("{}{i:02}", spec.prefix);
            let created: Value = api.post(
                "register device",
                "/api/v1/devices",
                &json!({ "id": id, "site": spec.site, "tags": tags(i) }),
            )?;
            let token = created["enrollment_token"]
                .as_str()
                .context("no enrollment token")?;
            let enrolled: Value = api.post(
                "enroll",
                "/api/v1/enroll",
                &json!({ "device": id, "token": token }),
            )?;
            Ok(Login {
                device: id,
                credential: enrolled["credential"]
                    .as_str()
                    .context("no credential")?
                    .to_owned(),
                tls: None,
            })
        })
        .collect()
}
