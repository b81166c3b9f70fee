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
use crate::sources::Frame;
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

    /// Handles one frame.
    pub fn handle(&mut self, frame: Frame) {
        let Some(pipeline) = self
            .pipeline
            .as_mut()
            .filter(|_| &*frame.stream != HEALTH_STREAM)
        else {
            // Rules see readings as the pipeline sends them on: here, as
            // the sources made them.
            if let Some(feed) = &self.control
                && &*frame.stream != HEALTH_STREAM
            {
                feed.offer(&frame.signals);
            }
            self.append(&frame.stream, frame.signals);
            return;
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
        if let Some(feed) = &self.control {
            feed.offer(&series);
        }
        self.append(&frame.stream, series);
        for (stream, series) in self.models.take() {
            if let Some(feed) = &self.control {
                feed.offer(&series);
            }
            self.append(&stream, series);
        }
        for batch in self.models.take_sketches() {
            self.append_sketch(batch);
        }
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
                tracing::warn!(stream, "sketch batch not kept: {e}");
            }
        }
    }

    /// Appends `signals` to the outbox as one batch of `stream`, or as
    /// several in time order when they would not fit in one ([`split`]).
    fn append(&self, stream: &str, signals: Vec<SignalSeries>) {
        if signals.iter().all(|s| s.values.is_empty()) {
            return;
        }
        // Measured with the largest seq, so that the real one fits too.
        let fits = |part: &[SignalSeries]| {
            payload::telemetry_len(stream, u64::MAX, part) <= split::MAX_BATCH_BYTES
        };
        for signals in split::split(signals, split::MAX_BATCH_READINGS, &fits) {
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
}
