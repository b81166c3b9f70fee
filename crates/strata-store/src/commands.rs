//! Commands for devices relayed between hub replicas: an operator's
//! approval or a workflow's command sent through one replica must reach a
//! device connected to another. The sending replica publishes the command
//! on its own broker and records it in a log the replicas share; every
//! other replica follows the log and publishes what it finds on its own.
//!
//! Only a store that replicas share keeps such a log (PostgreSQL,
//! [`crate::postgres::PostgresCommands`]): a single hub has no one to relay
//! to.

use strata_proto::DeviceId;

use crate::Result;

/// A command in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedCommand {
    /// Its place in the log: commands are read in the order their records
    /// committed.
    pub position: i64,
    /// The replica that sent it (and published it on its own broker).
    pub origin: String,
    /// The device it is for.
    pub device: DeviceId,
    /// What the device is sent on `down/cmd`.
    pub payload: Vec<u8>,
    /// When it was sent, ns.
    pub sent_ns: i64,
}

/// The log of commands replicas relay to each other.
pub trait CommandLog: Send + Sync {
    /// Records a command `origin` sent; returns its position.
    fn append(&self, origin: &str, device: &DeviceId, payload: &[u8], now_ns: i64) -> Result<i64>;

    /// The position of the newest command recorded: a replica that starts
    /// following there relays nothing sent before it started.
    fn position(&self) -> Result<i64>;

    /// Up to `limit` commands after `position`, oldest first, and the
    /// position reached (`position` itself when there are none).
    fn after(&self, position: i64, limit: usize) -> Result<(Vec<RelayedCommand>, i64)>;

    /// Forgets commands sent before `before_ns`; returns how many.
    fn forget_before(&self, before_ns: i64) -> Result<u64>;
}
