//! Telemetry ingestion: decode, validate, apply the device's signal
//! declarations, then hand the batch to the storage writer and acknowledge
//! the MQTT publish only once the writer says it is durable.
//!
//! Decoding, validation and packing run on the connection's own task (so
//! they spread over cores with the connections); storage runs on one writer
//! thread that commits many batches per transaction (see [`writer`]).
//!
//! A batch in the form agents send is packed straight from the payload
//! bytes ([`TelemetryView`]); anything else (JSON, quality flags, readings to
//! remove, a batch to refuse) is decoded and validated in full. Both paths
//! store the same bytes.

pub mod writer;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use std::collections::BTreeMap;
use strata_broker::{Acks, IngestRefusal, PublishDecision};

use strata_proto::validate::{BatchError, Limits, validate};
use strata_proto::view::{Readings, TelemetryView};
use strata_proto::{DeviceId, TelemetryBatch, TopicKind, payload};
use strata_store::{BatchWrite, EncodedBatch};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::{Metrics, RejectReason};
use crate::now_ns;
use writer::{Command, Done};

/// MQTT 5 reason code "payload format invalid", sent with the PUBACK of a
/// refused batch (MQTT 3.1.1 has no negative acknowledgement).
pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;

/// The front half of ingestion, called from the broker's hooks.
pub struct Ingest {
    commands: mpsc::UnboundedSender<Command>,
    metrics: Arc<Metrics>,
    limits: Limits,
}

impl Ingest {
    /// Creates the ingest front end feeding `commands` (the writer's queue).
    pub fn new(
        commands: mpsc::UnboundedSender<Command>,
        metrics: Arc<Metrics>,
        limits: Limits,
    ) -> Self {
        Ingest {
            commands,
            metrics,
            limits,
        }
    }

    /// The latest time a reading (or a sketch window) may carry now:
    /// later ones are refused as stamped in the future.
    pub fn horizon_ns(&self) -> i64 {
        crate::now_ns().saturating_add(self.limits.max_future_ns)
    }

    /// Handles a telemetry (or inference) publish from `device`, which
    /// declared the signals `declared` (empty: any). With the connection's
    /// tickets (`acks`), its acknowledgement waits on one of them;
    /// otherwise on a channel of its own.
    ///
    /// Inference batches are stored under the stream `inference/{stream}`
    /// ('/' cannot occur in a stream name), so they never share an
    /// exactly-once key with telemetry of the same stream name.
    pub fn telemetry(
        &self,
        device: &DeviceId,
        kind: TopicKind,
        payload: &[u8],
        declared: &BTreeMap<String, String>,
        acks: Option<&Arc<Acks>>,
    ) -> PublishDecision {
        let now = now_ns();
        let mut packed = match TelemetryView::parse(payload, &self.limits, now) {
            Some(view) => self.pack_view(device, declared, &view),
            None => match self.decode_and_check(device, declared, payload, now) {
                Ok(batch) => EncodedBatch::encode(&batch),
                Err(refused) => return refused,
            },
        };
        if kind == TopicKind::Inference {
            packed.stream = format!("inference/{}", packed.stream);
        }
        let write = BatchWrite {
            device: device.clone(),
            received_ns: now,
            batch: packed,
        };
        let (done, decision) = match acks {
            Some(acks) => {
                let ticket = acks.issue();
                (
                    Done::Ticket(Arc::clone(acks), ticket),
                    PublishDecision::AfterTicket(ticket),
                )
            }
            None => {
                let (done, acked) = oneshot::channel();
                (Done::Channel(done), PublishDecision::RouteAfter(acked))
            }
        };
        self.metrics.queue_depth.fetch_add(1, Relaxed);
        if let Err(refused) = self.commands.send(Command::Batch { write, done }) {
            // The writer is gone (the hub is stopping): let the client resend.
            self.metrics.queue_depth.fetch_sub(1, Relaxed);
            if let Command::Batch { done, .. } = refused.0 {
                done.send(Err(IngestRefusal::Retry));
            }
        }
        decision
    }

    /// The fast path: packs a clean batch from the payload's bytes, keeping
    /// the device's declared signals.
    fn pack_view(
        &self,
        device: &DeviceId,
        declared: &BTreeMap<String, String>,
        view: &TelemetryView<'_>,
    ) -> EncodedBatch {
        let signals = view.signals.iter().filter_map(|s| {
            let unit = self.declared_unit(device, declared, s.name, s.unit, s.len())?;
            Some((s.name, unit, s))
        });
        EncodedBatch::pack(view.stream, view.seq, signals)
    }

    /// The full path: decodes and validates, counting what is refused.
    fn decode_and_check(
        &self,
        device: &DeviceId,
        declared: &BTreeMap<String, String>,
        payload: &[u8],
        now: i64,
    ) -> Result<TelemetryBatch, PublishDecision> {
        // Counted before decoding: a megabyte of empty signals would
        // allocate half a million series first.
        if payload::Encoding::sniff(payload) == payload::Encoding::Protobuf
            && let Some(signals) = strata_proto::view::protobuf_signal_count(payload)
            && signals > self.limits.max_signals
        {
            self.metrics.reject(RejectReason::Oversized, 1, || {
                format!(
                    "device {device}: a batch of {signals} signals; the limit is {}",
                    self.limits.max_signals
                )
            });
            return Err(PublishDecision::Drop {
                v5_reason: PAYLOAD_FORMAT_INVALID,
            });
        }
        let mut batch = match payload::decode_telemetry(payload) {
            Ok(b) => b,
            Err(e) => {
                self.metrics.reject(RejectReason::Malformed, 1, || {
                    format!("device {device}: {e}")
                });
                return Err(PublishDecision::Drop {
                    v5_reason: PAYLOAD_FORMAT_INVALID,
                });
            }
        };
        if let Err(e) = self.check(device, declared, &mut batch, now) {
            let reason = match e {
                BatchError::TooLarge { .. } => RejectReason::Oversized,
                _ => RejectReason::InvalidBatch,
            };
            self.metrics.reject(reason, 1, || {
                format!("device {device} stream {:?}: {e}", batch.stream)
            });
            return Err(PublishDecision::Drop {
                v5_reason: PAYLOAD_FORMAT_INVALID,
            });
        }
        Ok(batch)
    }

    /// The unit to store a signal under, or `None` when the device's
    /// declaration refuses it (counted). A device that declares nothing may
    /// send any signal.
    fn declared_unit<'u>(
        &self,
        device: &DeviceId,
        declared: &'u BTreeMap<String, String>,
        name: &str,
        unit: &'u str,
        readings: usize,
    ) -> Option<&'u str> {
        if declared.is_empty() {
            return Some(unit);
        }
        match declared.get(name) {
            None => {
                self.metrics
                    .reject(RejectReason::UnknownSignal, readings as u64, || {
                        format!("device {device} sent undeclared signal {name:?}")
                    });
                None
            }
            Some(want) if unit.is_empty() => Some(want.as_str()),
            Some(want) if !want.is_empty() && want != unit => {
                self.metrics
                    .reject(RejectReason::UnitMismatch, readings as u64, || {
                        format!("device {device} signal {name:?} in {unit:?}, declared in {want:?}")
                    });
                None
            }
            Some(_) => Some(unit),
        }
    }

    /// Validates `batch` in place, counting what it removes.
    fn check(
        &self,
        device: &DeviceId,
        declared: &BTreeMap<String, String>,
        batch: &mut TelemetryBatch,
        now: i64,
    ) -> Result<(), BatchError> {
        let removed = validate(batch, &self.limits, now)?;
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
        if removed.past > 0 {
            self.metrics
                .reject(RejectReason::PastTimestamp, removed.past as u64, || {
                    format!(
                        "device {device}: {}",
                        removed.first_past.clone().unwrap_or_default()
                    )
                });
        }
        batch.signals.retain_mut(|s| {
            let Some(unit) = self.declared_unit(device, declared, &s.name, &s.unit, s.len()) else {
                return false;
            };
            if unit != s.unit {
                s.unit = unit.to_owned();
            }
            true
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
