//! The processing stage between the sources and the outbox: runs on its
//! own thread, takes frames in arrival order, and appends each stream's
//! readings to the outbox as one batch with the stream's next sequence
//! number. Health frames pass straight through.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use strata_proto::payload::{Encoding, encode_telemetry};
use strata_proto::{SignalSeries, TelemetryBatch};
use tokio::sync::Notify;

use crate::health::HealthState;
use crate::outbox::Outbox;
use crate::sources::Frame;

/// The processing stage.
pub struct Processor {
    outbox: Arc<Outbox>,
    appended: Arc<Notify>,
    health: Arc<HealthState>,
}

impl Processor {
    /// A processor appending to `outbox` and waking the uplink.
    pub fn new(outbox: Arc<Outbox>, appended: Arc<Notify>, health: Arc<HealthState>) -> Self {
        Processor {
            outbox,
            appended,
            health,
        }
    }

    /// Handles one frame.
    pub fn handle(&mut self, frame: Frame) {
        self.append(&frame.stream, frame.signals);
    }

    /// Appends one batch of `stream` to the outbox.
    fn append(&self, stream: &str, signals: Vec<SignalSeries>) {
        if signals.iter().all(|s| s.values.is_empty()) {
            return;
        }
        let result = self.outbox.append(stream, |seq| {
            let batch = TelemetryBatch {
                stream: stream.to_string(),
                seq,
                signals,
            };
            encode_telemetry(&batch, Encoding::Protobuf)
        });
        match result {
            Ok(_) => self.appended.notify_one(),
            Err(e) => {
                self.health.outbox_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(stream, "batch not kept: {e}");
            }
        }
    }
}
