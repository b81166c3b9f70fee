//! Telemetry ingestion: decode, validate, apply the device's signal
//! declarations, then hand the batch to the storage writer and acknowledge
//! the MQTT publish only once the writer says it is durable.
//!
//! Decoding, validation and packing run on the connection's own task (so
//! they spread over cores with the connections); storage runs on one writer
//! thread that commits many batches per transaction (see [`writer`]).

pub mod writer;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use strata_broker::{IngestRefusal, PublishDecision};
use strata_proto::validate::{BatchError, Limits, validate};
use strata_proto::{DeviceId, TelemetryBatch, TopicKind, payload};
use strata_store::{BatchWrite, EncodedBatch};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::{Metrics, RejectReason};
use crate::now_ns;
use crate::registry::Registry;
use writer::Command;

/// MQTT 5 reason code "payload format invalid", sent with the PUBACK of a
/// refused batch (MQTT 3.1.1 has no negative acknowledgement).
pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;

/// The front half of ingestion, called from the broker's hooks.
pub struct Ingest {
    commands: mpsc::UnboundedSender<Command>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    limits: Limits,
}

impl Ingest {
    /// Creates the ingest front end feeding `commands` (the writer's queue).
    pub fn new(
        commands: mpsc::UnboundedSender<Command>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        limits: Limits,
    ) -> Self {
        Ingest {
            commands,
            registry,
            metrics,
            limits,
        }
    }

    /// Handles a telemetry (or inference) publish from `device`.
    ///
    /// Inference batches are stored under the stream `inference/{stream}`
    /// ('/' cannot occur in a stream name), so they never share an
    /// exactly-once key with telemetry of the same stream name.
    pub fn telemetry(&self, device: &DeviceId, kind: TopicKind, payload: &[u8]) -> PublishDecision {
        let mut batch = match payload::decode_telemetry(payload) {
            Ok(b) => b,
            Err(e) => {
                self.metrics.reject(RejectReason::Malformed, 1, || {
                    format!("device {device}: {e}")
                });
                return PublishDecision::Drop {
                    v5_reason: PAYLOAD_FORMAT_INVALID,
                };
            }
        };
        if let Err(e) = self.check(device, &mut batch) {
            let reason = match e {
                BatchError::TooLarge { .. } => RejectReason::Oversized,
                _ => RejectReason::InvalidBatch,
            };
            self.metrics.reject(reason, 1, || {
                format!("device {device} stream {:?}: {e}", batch.stream)
            });
            return PublishDecision::Drop {
                v5_reason: PAYLOAD_FORMAT_INVALID,
            };
        }
        if kind == TopicKind::Inference {
            batch.stream = format!("inference/{}", batch.stream);
        }
        let (done, acked) = oneshot::channel();
        let write = BatchWrite {
            device: device.clone(),
            received_ns: now_ns(),
            batch: EncodedBatch::encode(&batch),
        };
        self.metrics.queue_depth.fetch_add(1, Relaxed);
        if self.commands.send(Command::Batch { write, done }).is_err() {
            // The writer is gone (the hub is stopping): let the client resend.
            self.metrics.queue_depth.fetch_sub(1, Relaxed);
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(Err(IngestRefusal::Retry));
            return PublishDecision::RouteAfter(rx);
        }
        PublishDecision::RouteAfter(acked)
    }

    /// Validates `batch` in place, counting what it removes.
    fn check(&self, device: &DeviceId, batch: &mut TelemetryBatch) -> Result<(), BatchError> {
        let removed = validate(batch, &self.limits, now_ns())?;
        if removed.non_finite > 0 {
            self.metrics
                .reject(RejectReason::NonFinite, removed.non_finite as u64, || {
                    format!(
                        "device {device}: {}",
                        removed.first_non_finite.clone().unwrap_or_default()
                    )
                });
        }
        if removed.future > 0 {
            self.metrics
                .reject(RejectReason::FutureTimestamp, removed.future as u64, || {
                    format!(
                        "device {device}: {}",
                        removed.first_future.clone().unwrap_or_default()
                    )
                });
        }
        let declared = self.registry.declared_signals(device);
        if declared.is_empty() {
            return Ok(());
        }
        batch.signals.retain_mut(|s| match declared.get(&s.name) {
            None => {
                self.metrics
                    .reject(RejectReason::UnknownSignal, s.values.len() as u64, || {
                        format!("device {device} sent undeclared signal {:?}", s.name)
                    });
                false
            }
            Some(unit) if s.unit.is_empty() => {
                s.unit = unit.clone();
                true
            }
            Some(unit) if !unit.is_empty() && *unit != s.unit => {
                self.metrics
                    .reject(RejectReason::UnitMismatch, s.values.len() as u64, || {
                        format!(
                            "device {device} signal {:?} in {:?}, declared in {unit:?}",
                            s.name, s.unit
                        )
                    });
                false
            }
            Some(_) => true,
        });
        Ok(())
    }

    /// Records a device going online or offline (from the broker or a will).
    pub fn presence(&self, device: &DeviceId, online: bool) {
        let _ = self.commands.send(Command::Presence {
            device: device.clone(),
            online,
        });
    }
}
