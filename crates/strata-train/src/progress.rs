//! Progress reports from a running trainer, so a hub job can show how far
//! it is and keep a log line per step.

use serde::Serialize;

/// One step of a training run: `done` of `total` steps (trees, or the
/// phases of a closed-form fit) and what just happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Steps finished.
    pub done: usize,
    /// Steps in the whole run.
    pub total: usize,
    /// A line for the job log, e.g. `tree 12/100: train loss 0.4321`.
    pub message: String,
}

/// A progress callback that ignores every report.
pub fn ignore_progress() -> impl FnMut(Progress) {
    |_| {}
}
