//! Commands for devices connected to other replicas (`[shared] postgres`
//! with no upstream broker, where each device connects straight to one
//! replica): an operator's approval or a workflow's command sent through
//! this replica goes into the command log the replicas share
//! ([`CommandLog`]) and out on its own broker; at every refresh tick each replica
//! publishes, on its own broker, the commands the others recorded since
//! its last look ([`CommandRelay::follow`]).
//!
//! A command is not retained: a device that is not connected anywhere
//! when it is sent does not get it, as with a single hub. Nor is one
//! relayed late: a replica that finds a command older than [`MAX_AGE`]
//! (it could not reach the database for a while) counts it as stale
//! instead of publishing it, so an approval cannot actuate a machine long
//! after the operator gave it. The log keeps an hour of commands.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_broker::{BrokerHandle, QoS};
use strata_proto::{DeviceId, Direction, Topic, TopicKind};
use strata_store::{CommandLog, RelayedCommand};

use crate::now_ns;

/// A command older than this when a replica finds it is not published.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// How long the log keeps commands.
const KEEP: Duration = Duration::from_secs(3600);
/// How often a replica forgets commands older than [`KEEP`].
const FORGET_EVERY: Duration = Duration::from_secs(60);
/// The most commands read in one look.
const FOLLOW_BATCH: usize = 10_000;

/// This replica's end of the command log.
pub struct CommandRelay {
    log: Arc<dyn CommandLog>,
    /// This replica in the log: what it recorded it published itself.
    origin: String,
    broker: BrokerHandle,
    followed: Mutex<Followed>,
}

struct Followed {
    /// The position in the log read up to.
    position: i64,
    /// When old commands were last forgotten.
    forgot: Instant,
}

/// What one look at the log found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// Commands of other replicas published on this replica's broker.
    pub published: u64,
    /// Commands of other replicas found older than [`MAX_AGE`].
    pub stale: u64,
}

impl CommandRelay {
    /// Follows `log` from now on, publishing on `broker`.
    pub fn start(log: Arc<dyn CommandLog>, broker: BrokerHandle) -> strata_store::Result<Self> {
        let position = log.position()?;
        Ok(CommandRelay {
            log,
            // A random name for this process's entries.
            origin: crate::secret::generate("replica-"),
            broker,
            followed: Mutex::new(Followed {
                position,
                forgot: Instant::now(),
            }),
        })
    }

    /// Records a command this replica sends to `device` (and publishes
    /// itself), for the other replicas.
    pub fn record(&self, device: &DeviceId, payload: &[u8]) -> strata_store::Result<()> {
        self.log
            .append(&self.origin, device, payload, now_ns())
            .map(drop)
    }

    /// Publishes the commands other replicas recorded since the last look.
    pub fn follow(&self) -> strata_store::Result<Relayed> {
        let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = now_ns().saturating_sub(MAX_AGE.as_nanos() as i64);
        let mut relayed = Relayed::default();
        loop {
            let (commands, reached) = self.log.after(followed.position, FOLLOW_BATCH)?;
            let (due, stale) = sort_out(&commands, &self.origin, oldest);
            for c in &stale {
                tracing::warn!(
                    device = %c.device,
                    "a command sent through another replica is too old to relay; not sent"
                );
            }
            relayed.stale += stale.len() as u64;
            for c in due {
                let topic = Topic::new(c.device.clone(), Direction::Down, TopicKind::Cmd);
                let payload = Bytes::copy_from_slice(&c.payload);
                // Fails only while the broker stops.
                if self
                    .broker
                    .publish(&topic.to_string(), payload, QoS::AtLeastOnce, false)
                    .is_ok()
                {
                    relayed.published += 1;
                }
            }
            followed.position = reached;
            if commands.len() < FOLLOW_BATCH {
                break;
            }
        }
        if followed.forgot.elapsed() >= FORGET_EVERY {
            followed.forgot = Instant::now();
            self.log
                .forget_before(now_ns().saturating_sub(KEEP.as_nanos() as i64))?;
        }
        Ok(relayed)
    }
}

/// Of the commands read from the log, those to publish here (other
/// replicas' sent at `oldest` or later) and those too old to.
fn sort_out<'c>(
    commands: &'c [RelayedCommand],
    origin: &str,
    oldest: i64,
) -> (Vec<&'c RelayedCommand>, Vec<&'c RelayedCommand>) {
    commands
        .iter()
        .filter(|c| c.origin != origin)
        .partition(|c| c.sent_ns >= oldest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(position: i64, origin: &str, sent_ns: i64) -> RelayedCommand {
        RelayedCommand {
            position,
            origin: origin.into(),
            device: DeviceId::new("press-1").unwrap(),
            payload: b"{}".to_vec(),
            sent_ns,
        }
    }

    #[test]
    fn a_replica_publishes_the_fresh_commands_of_the_others_in_order() {
        let log = [
            command(1, "b", 100),
            command(2, "me", 100),
            command(3, "c", 99),
            command(4, "b", 150),
            command(5, "me", 10),
        ];
        let (due, stale) = sort_out(&log, "me", 100);
        let positions =
            |cs: Vec<&RelayedCommand>| cs.iter().map(|c| c.position).collect::<Vec<_>>();
        assert_eq!(positions(due), [1, 4], "its own it published itself");
        assert_eq!(positions(stale), [3]);
    }
}
