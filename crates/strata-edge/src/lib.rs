//! The Strata edge agent (`strata edge`), which runs on a gateway: sources
//! produce batches of readings, a durable outbox keeps them until the hub
//! acknowledges them, and the uplink sends them over MQTT. Closed-loop
//! rules ([`control`]) write setpoints back to the machines, behind safety
//! interlocks and the site's phase gate.
//!
//! The edge depends on the wire contract only, never on the hub, so a
//! gateway build compiles no broker, web server or hub storage.

pub mod agent;
pub mod bundle;
pub mod config;
pub mod control;
pub mod drift;
pub mod health;
pub mod identity;
pub mod inference;
pub mod metrics;
pub mod outbox;
pub mod process;
pub mod sources;
pub mod split;
pub mod throttle;
pub mod twin;
pub mod uplink;

pub use agent::Agent;
pub use config::EdgeConfig;

/// A spawned task that is aborted when this is dropped (a connection's
/// event loop that must end with its owner).
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Gives the synced file `from` the name `to`, durably: the directory is
/// synced too, or a power loss may bring back the old name (or none).
pub(crate) fn rename_durably(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    if let Some(dir) = to.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Writes `bytes` to `path` whole: a new file, synced, renamed over the
/// old one.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    rename_durably(&tmp, path)
}
