//! What every source hands to the pipeline: a frame of readings, one
//! series per signal, and the counters a source keeps for health.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use strata_proto::{Quality, SignalSeries};

/// Readings from one source, ready for the pipeline.
#[derive(Debug)]
pub struct Frame {
    /// The stream the source's readings are sent under.
    pub stream: Arc<str>,
    /// One series per signal that had readings.
    pub signals: Vec<SignalSeries>,
    /// Told when the processing thread is done with the frame, for a
    /// source that acknowledges its peer only then.
    pub handled: Option<Handled>,
    /// Readings the outbox refused once, sent again: the closed-loop
    /// rules have seen them already (readings that only queued behind
    /// them are not marked).
    pub resent: bool,
}

/// What the processing thread did with a frame that asked.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// What the frame made is in the outbox (as durable as the outbox is
    /// set to be), or was refused and counted: for good (too large), or,
    /// for a pipeline's outputs, for now as well. Readings a pipeline
    /// holds in an unfinished window are not in the outbox yet: its
    /// windows start empty after a restart.
    Kept,
    /// The outbox refused these readings of the frame for now (full with
    /// `refuse_new`, or a database error), counted: the source may send
    /// them again later instead of letting them go. Only for readings
    /// that passed no pipeline (a pipeline's outputs cannot be made
    /// again from readings its windows have already taken).
    Refused(Vec<SignalSeries>),
}

/// The processing thread's word on a frame ([`Outcome`]). Dropped unsent
/// when the thread dies first.
#[derive(Debug)]
pub struct Handled(tokio::sync::oneshot::Sender<Outcome>);

impl Handled {
    /// A receipt to attach to a frame, and where its word arrives.
    pub fn new() -> (Handled, tokio::sync::oneshot::Receiver<Outcome>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Handled(tx), rx)
    }

    /// Says what became of the frame.
    pub fn tell(self, outcome: Outcome) {
        // The source may have stopped waiting; nothing to tell then.
        let _ = self.0.send(outcome);
    }

    /// Says the frame is kept.
    pub fn done(self) {
        self.tell(Outcome::Kept);
    }
}

impl Frame {
    /// Number of readings in the frame.
    pub fn readings(&self) -> usize {
        self.signals.iter().map(|s| s.values.len()).sum()
    }
}

/// Where sources send their frames; bounded, so a slow pipeline slows the
/// sources instead of growing memory.
pub type FrameSender = tokio::sync::mpsc::Sender<Frame>;

/// Counters one source keeps, read by the health heartbeat.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Readings produced.
    pub readings: AtomicU64,
    /// Failed reads, refused values and lost connections.
    pub errors: AtomicU64,
    /// Times the source connected again after losing its peer.
    pub reconnects: AtomicU64,
    /// Whether the source is connected to its peer now.
    pub connected: AtomicBool,
}

impl SourceStats {
    /// Counts one error.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a (re)connection; the first one is not a reconnect.
    pub fn set_connected(&self, connected: bool) {
        let was = self.connected.swap(connected, Ordering::Relaxed);
        if connected && !was && self.readings.load(Ordering::Relaxed) > 0 {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Collects readings per signal until they are taken as a frame.
#[derive(Debug)]
pub struct FrameBuilder {
    stream: Arc<str>,
    signals: Vec<SignalSeries>,
    flagged: Vec<bool>,
    readings: usize,
}

impl FrameBuilder {
    /// A builder for the given (name, unit) signals, in index order.
    pub fn new(stream: &str, signals: impl IntoIterator<Item = (String, String)>) -> Self {
        let signals: Vec<SignalSeries> = signals
            .into_iter()
            .map(|(name, unit)| SignalSeries {
                name,
                unit,
                ..Default::default()
            })
            .collect();
        FrameBuilder {
            stream: stream.into(),
            flagged: vec![false; signals.len()],
            signals,
            readings: 0,
        }
    }

    /// Adds a signal found while running; returns its index.
    pub fn add_signal(&mut self, name: String, unit: String) -> usize {
        self.signals.push(SignalSeries {
            name,
            unit,
            ..Default::default()
        });
        self.flagged.push(false);
        self.signals.len() - 1
    }

    /// Adds one reading of signal `index`.
    pub fn push(&mut self, index: usize, ts_ns: i64, value: f64, quality: Quality) {
        let s = &mut self.signals[index];
        s.ts_ns.push(ts_ns);
        s.values.push(value);
        s.quality.push(quality as i32);
        self.flagged[index] |= quality != Quality::Good;
        self.readings += 1;
    }

    /// Sends what was collected (if anything) to the pipeline; `false` when
    /// the pipeline has gone and the source should stop.
    pub async fn send(&mut self, frames: &FrameSender) -> bool {
        tracing::trace!(stream = %self.stream, readings = self.readings, "frame");
        match self.take() {
            Some(frame) => frames.send(frame).await.is_ok(),
            None => true,
        }
    }

    /// The frame collected so far (signals without readings left out), or
    /// `None` when there is nothing.
    pub fn take(&mut self) -> Option<Frame> {
        if self.readings == 0 {
            return None;
        }
        let mut signals = Vec::new();
        for (s, flagged) in self.signals.iter_mut().zip(self.flagged.iter_mut()) {
            if s.values.is_empty() {
                continue;
            }
            let mut out = SignalSeries {
                name: s.name.clone(),
                unit: s.unit.clone(),
                ts_ns: std::mem::take(&mut s.ts_ns),
                values: std::mem::take(&mut s.values),
                quality: std::mem::take(&mut s.quality),
            };
            // The wire leaves quality empty when every reading is good.
            if !*flagged {
                out.quality.clear();
            }
            *flagged = false;
            signals.push(out);
        }
        self.readings = 0;
        Some(Frame {
            stream: self.stream.clone(),
            signals,
            handled: None,
            resent: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_hold_only_signals_with_readings_and_drop_all_good_quality() {
        let mut b = FrameBuilder::new("plc", [("a".into(), "A".into()), ("b".into(), "".into())]);
        assert!(b.take().is_none());
        b.push(0, 1, 1.5, Quality::Good);
        b.push(0, 2, 2.5, Quality::Good);
        let f = b.take().unwrap();
        assert_eq!(f.signals.len(), 1);
        assert_eq!(f.signals[0].values, vec![1.5, 2.5]);
        assert!(f.signals[0].quality.is_empty());
        b.push(1, 3, 0.0, Quality::Bad);
        b.push(1, 4, 1.0, Quality::Good);
        let f = b.take().unwrap();
        assert_eq!(f.signals[0].name, "b");
        assert_eq!(f.signals[0].quality, vec![2, 0]);
        assert_eq!(f.readings(), 2);
        assert!(b.take().is_none());
    }
}
