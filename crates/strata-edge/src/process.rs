//! The processing stage between the sources and the outbox, on its own
//! thread: each frame goes through the pipeline (transforms, windows,
//! feature vectors), every completed vector through the models bound to
//! it, and the results into the outbox, one batch per stream with the
//! stream's next sequence number. Health frames pass straight through.
//! Readings as sent on, and predictions, are offered to the closed-loop
//! rules.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use strata_pipeline::{Output, Pipeline};
use strata_proto::payload::{self, Encoding, encode_telemetry};
use strata_proto::{SignalSeries, SketchBatch, TelemetryBatch};
use tokio::sync::Notify;

use crate::health::{HEALTH_STREAM, HealthState};
use crate::inference::Models;
use crate::outbox::Outbox;
use crate::sources::{Frame, Outcome};
use crate::throttle::Throttle;

/// How far ahead of the gateway's clock a reading may be stamped: the
/// hub's default (`max_future_s`). One stamped years ahead (a device's
/// clock glitch) would be dropped by the hub anyway, and here it would
/// make every later reading of its signal look late, silencing it.
const MAX_AHEAD_NS: i64 = 300 * 1_000_000_000;

/// Removes the readings stamped more than [`MAX_AHEAD_NS`] after `now`
/// (and signals left empty); returns how many.
fn drop_ahead(signals: &mut Vec<SignalSeries>, now: i64) -> u64 {
    let limit = now.saturating_add(MAX_AHEAD_NS);
    let mut dropped = 0;
    for s in signals.iter_mut() {
        if s.ts_ns.iter().all(|&t| t <= limit) {
            continue;
        }
        let kept: Vec<usize> = (0..s.ts_ns.len())
            .filter(|&i| s.ts_ns[i] <= limit)
            .collect();
        dropped += (s.ts_ns.len() - kept.len()) as u64;
        s.values = kept
            .iter()
            .filter_map(|&i| s.values.get(i).copied())
            .collect();
        if s.quality.len() == s.ts_ns.len() {
            s.quality = kept.iter().map(|&i| s.quality[i]).collect();
        }
        s.ts_ns = kept.iter().map(|&i| s.ts_ns[i]).collect();
    }
    signals.retain(|s| !s.values.is_empty());
    dropped
}
use crate::split;

/// The processing stage.
pub struct Processor {
    outbox: Arc<Outbox>,
    appended: Arc<Notify>,
    health: Arc<HealthState>,
    pipeline: Option<Pipeline>,
    output: Output,
    models: Models,
    control: Option<crate::control::Feed>,
    /// The warning for a batch the outbox did not keep (counted in
    /// `outbox_errors`), which repeats for as long as the outbox refuses.
    not_kept: Throttle,
}

impl Processor {
    /// A processor appending to `outbox` and waking the uplink. Without a
    /// pipeline, frames are kept as the sources made them.
    pub fn new(
        outbox: Arc<Outbox>,
        appended: Arc<Notify>,
        health: Arc<HealthState>,
        pipeline: Option<Pipeline>,
        models: Models,
    ) -> Self {
        Processor {
            outbox,
            appended,
            health,
            pipeline,
            output: Output::new(),
            models,
            control: None,
            not_kept: Throttle::default(),
        }
    }

    /// Offers readings and predictions to the closed-loop rules too.
    pub fn with_control(mut self, feed: crate::control::Feed) -> Self {
        self.control = Some(feed);
        self
    }

    /// Replaces the models (a deployment from the hub); frames already
    /// handled keep the predictions of the models that saw them.
    pub fn set_models(&mut self, models: Models) {
        for batch in self.models.flush_sketches() {
            self.append_sketch(batch);
        }
        self.health.set_models(models.stats());
        self.models = models;
    }

    /// Replaces the pipeline (a config release; its windows start empty)
    /// and the models bound to its vectors.
    pub fn set_pipeline(&mut self, pipeline: Option<Pipeline>, models: Models) {
        self.pipeline = pipeline;
        self.output = Output::new();
        self.set_models(models);
    }

    /// Handles one frame, then tells its source (when it asked) that
    /// what the frame made is in the outbox, or which of its readings the
    /// outbox refused for now.
    pub fn handle(&mut self, mut frame: Frame) {
        let handled = frame.handled.take();
        let refused = self.process(frame);
        if let Some(handled) = handled {
            handled.tell(if refused.is_empty() {
                Outcome::Kept
            } else {
                Outcome::Refused(refused)
            });
        }
    }

    /// Returns the frame's readings the outbox refused for now, when they
    /// passed no pipeline.
    fn process(&mut self, mut frame: Frame) -> Vec<SignalSeries> {
        // Only ahead of a pipeline, where one such reading would hold its
        // signal back; without one the hub judges by its own clock.
        if self.pipeline.is_some() {
            let ahead = drop_ahead(&mut frame.signals, crate::now_ns());
            if ahead > 0 {
                self.health
                    .readings_ahead
                    .fetch_add(ahead, Ordering::Relaxed);
            }
        }
        let Some(pipeline) = self
            .pipeline
            .as_mut()
            .filter(|_| &*frame.stream != HEALTH_STREAM)
        else {
            // Rules see readings as the pipeline sends them on: here, as
            // the sources made them (once, when they are sent again).
            if let Some(feed) = &self.control
                && &*frame.stream != HEALTH_STREAM
                && !frame.resent
            {
                feed.offer(&frame.stream, &frame.signals);
            }
            return self.append(&frame.stream, frame.signals, frame.resent);
        };
        for series in &frame.signals {
            pipeline.push_series(series, &mut self.output);
        }
        self.health
            .pipeline_dropped
            .store(pipeline.dropped(), Ordering::Relaxed);
        let series = self.output.take_series();
        if !series.is_empty() || !self.output.vectors().is_empty() {
            self.health.pipeline_outputs.fetch_add(1, Ordering::Relaxed);
        }
        for vector in self.output.vectors() {
            self.models.run(vector);
        }
        self.output.clear();
        // The pipeline's outputs have names of their own (it refuses two
        // the same), whichever source's frame completed them.
        if let Some(feed) = &self.control {
            feed.offer(&Arc::from("pipeline"), &series);
        }
        // Outputs the outbox refuses are counted and let go: the readings
        // that made them are in the pipeline's windows already.
        self.append(&frame.stream, series, false);
        for (stream, series) in self.models.take() {
            // Not the stream: it names the model's version, which a
            // deployment changes.
            if let Some(feed) = &self.control {
                feed.offer(&Arc::from("models"), &series);
            }
            self.append(&stream, series, false);
        }
        for batch in self.models.take_sketches() {
            self.append_sketch(batch);
        }
        Vec::new()
    }

    /// Appends one window of drift sketches to the outbox (its stream's
    /// next seq; the uplink sends `sketch:` streams to `up/sketch`).
    fn append_sketch(&self, batch: SketchBatch) {
        let stream = batch.stream.clone();
        self.health
            .drift_detections
            .fetch_add(batch.detections.len() as u64, Ordering::Relaxed);
        let result = self.outbox.append(&stream, |seq| {
            serde_json::to_vec(&SketchBatch { seq, ..batch }).expect("JSON of a sketch batch")
        });
        match result {
            Ok(_) => {
                self.health.sketch_batches.fetch_add(1, Ordering::Relaxed);
                self.appended.notify_one();
            }
            Err(e) => {
                self.health.outbox_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(held_back) = self.not_kept.pass() {
                    tracing::warn!(stream, held_back, "sketch batch not kept: {e}");
                }
            }
        }
    }

    /// Appends `signals` to the outbox as one batch of `stream`, or as
    /// several in time order when they would not fit in one ([`split`]).
    /// Returns the readings refused for now ([`OutboxError::may_pass_later`]).
    /// Readings `offered_before` (refused, counted and logged then) are
    /// not counted again when refused again.
    ///
    /// [`OutboxError::may_pass_later`]: crate::outbox::OutboxError::may_pass_later
    fn append(
        &self,
        stream: &str,
        signals: Vec<SignalSeries>,
        offered_before: bool,
    ) -> Vec<SignalSeries> {
        if signals.iter().all(|s| s.values.is_empty()) {
            return Vec::new();
        }
        // Measured with the largest seq, so that the real one fits too.
        let fits = |part: &[SignalSeries]| {
            payload::telemetry_len(stream, u64::MAX, part) <= split::MAX_BATCH_BYTES
        };
        let mut refused = Vec::new();
        for signals in split::split(signals, split::MAX_BATCH_READINGS, &fits) {
            let mut batch = TelemetryBatch {
                stream: stream.to_string(),
                seq: 0,
                signals,
            };
            let result = self.outbox.append(stream, |seq| {
                batch.seq = seq;
                encode_telemetry(&batch, Encoding::Protobuf)
            });
            match result {
                Ok(_) => self.appended.notify_one(),
                Err(e) if offered_before && e.may_pass_later() => {
                    tracing::debug!(stream, "batch offered again not kept: {e}");
                    refused.push(batch.signals);
                }
                Err(e) => {
                    self.health.outbox_errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = self.not_kept.pass() {
                        tracing::warn!(stream, held_back, "batch not kept: {e}");
                    }
                    if e.may_pass_later() {
                        refused.push(batch.signals);
                    }
                }
            }
        }
        split::join(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{DropPolicy, Durability};
    use crate::sources::Handled;

    fn frame(signal: &str, from: i64, n: i64) -> Frame {
        Frame {
            stream: "floor".into(),
            signals: vec![SignalSeries {
                name: signal.into(),
                unit: String::new(),
                ts_ns: (from..from + n).collect(),
                values: (from..from + n).map(|t| t as f64).collect(),
                quality: Vec::new(),
            }],
            handled: None,
            resent: false,
        }
    }

    /// Hands `frame` over with a receipt; returns what the processor said.
    fn outcome(processor: &mut Processor, mut frame: Frame) -> Outcome {
        let (handled, mut receipt) = Handled::new();
        frame.handled = Some(handled);
        processor.handle(frame);
        receipt.try_recv().expect("told at once")
    }

    #[test]
    fn readings_a_full_outbox_refuses_go_back_to_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(
            Outbox::open(
                dir.path(),
                4_000,
                DropPolicy::RefuseNew,
                Durability::Process,
            )
            .unwrap(),
        );
        let health = Arc::new(HealthState::new(Vec::new(), Vec::new()));
        let mut processor = Processor::new(
            outbox.clone(),
            Arc::new(Notify::new()),
            health.clone(),
            None,
            Models::default(),
        );
        // About 1.7 kB, then 3.4 kB: the second does not fit beside the
        // first, refused whole, counted, and given back.
        const T: i64 = 1_700_000_000_000_000_000;
        assert_eq!(outcome(&mut processor, frame("p", T, 100)), Outcome::Kept);
        let refused = frame("p", T + 100, 200);
        let signals = refused.signals.clone();
        assert_eq!(
            outcome(&mut processor, refused),
            Outcome::Refused(signals.clone())
        );
        assert_eq!(health.outbox_errors.load(Ordering::Relaxed), 1);
        assert_eq!(outbox.stats().unwrap().depth, 1);
        // Offered again while the outbox is still full: refused again, but
        // counted once.
        let mut again = frame("p", T + 100, 200);
        again.resent = true;
        assert_eq!(
            outcome(&mut processor, again),
            Outcome::Refused(signals.clone())
        );
        assert_eq!(health.outbox_errors.load(Ordering::Relaxed), 1);
        // Room again: the readings sent again are kept.
        let sent = outbox.peek(0, 10).unwrap();
        outbox.remove(&[sent[0].id]).unwrap();
        let mut again = frame("p", T + 100, 200);
        again.resent = true;
        assert_eq!(outcome(&mut processor, again), Outcome::Kept);
        assert_eq!(outbox.stats().unwrap().depth, 1);
    }

    #[test]
    fn readings_far_ahead_of_the_clock_are_dropped_and_counted() {
        let now = 1_000 * 1_000_000_000;
        let year = 365 * 86_400 * 1_000_000_000i64;
        let series = |name: &str, ts: Vec<i64>, quality: Vec<i32>| SignalSeries {
            name: name.into(),
            unit: String::new(),
            values: ts.iter().map(|&t| t as f64).collect(),
            ts_ns: ts,
            quality,
        };
        let mut signals = vec![
            series(
                "t",
                vec![now - 1, now + year, now + MAX_AHEAD_NS],
                vec![0, 1, 2],
            ),
            series("glitch", vec![now + 5 * year], Vec::new()),
            series("fine", vec![now], Vec::new()),
        ];
        assert_eq!(drop_ahead(&mut signals, now), 2);
        assert_eq!(
            signals,
            vec![
                series("t", vec![now - 1, now + MAX_AHEAD_NS], vec![0, 2]),
                series("fine", vec![now], Vec::new()),
            ]
        );
    }
}
