//! Progress reports from a running trainer, so a hub job can show how far
//! it is and keep a log line per step, and stop it: the callback's answer
//! to each report says whether training goes on.

use std::ops::ControlFlow;

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

/// What a trainer takes: called after each step; `Break` stops the
/// training, which then fails with [`crate::Error::Stopped`].
pub type OnProgress<'a> = &'a mut dyn FnMut(Progress) -> ControlFlow<()>;

/// A progress callback that ignores every report and never stops.
pub fn ignore_progress() -> impl FnMut(Progress) -> ControlFlow<()> {
    |_| ControlFlow::Continue(())
}

/// Reports `step` and fails with [`crate::Error::Stopped`] when the
/// callback says to stop.
pub(crate) fn report(progress: OnProgress<'_>, step: Progress) -> crate::Result<()> {
    let (done, total) = (step.done, step.total);
    match progress(step) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(crate::Error::Stopped { done, total }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_break_stops_with_the_step_reached() {
        let step = |done| Progress {
            done,
            total: 3,
            message: String::new(),
        };
        let mut seen = 0;
        let mut stop_at_two = |p: Progress| {
            seen += 1;
            if p.done >= 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        assert!(report(&mut stop_at_two, step(1)).is_ok());
        let e = report(&mut stop_at_two, step(2)).unwrap_err();
        assert_eq!(e.to_string(), "training stopped after step 2 of 3");
        assert_eq!(seen, 2);
    }
}
