//! A text progress bar for the demo's long steps: redrawn in place on a
//! terminal, printed as occasional lines when the output is a file or pipe
//! (so logs and tests still show the steps).

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// One step's bar.
pub struct Bar {
    label: String,
    total: u64,
    terminal: bool,
    last_line: Option<Instant>,
    last_done: Option<u64>,
}

const WIDTH: usize = 24;

impl Bar {
    /// A bar for `total` units of work.
    pub fn new(label: &str, total: u64) -> Bar {
        Bar {
            label: label.to_owned(),
            total: total.max(1),
            terminal: std::io::stdout().is_terminal(),
            last_line: None,
            last_done: None,
        }
    }

    fn line(&self, done: u64, note: &str) -> String {
        let done = done.min(self.total);
        let filled = (done as usize * WIDTH) / self.total as usize;
        format!(
            "{} [{}{}] {done}/{} {note}",
            self.label,
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            self.total
        )
    }

    /// Shows `done` units and a note.
    pub fn set(&mut self, done: u64, note: &str) {
        let line = self.line(done, note);
        if self.terminal {
            print!("\r\x1b[2K{line}");
            let _ = std::io::stdout().flush();
        } else if self
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            println!("{line}");
            self.last_line = Some(Instant::now());
            self.last_done = Some(done.min(self.total));
        }
    }

    /// Completes the bar.
    pub fn finish(self, note: &str) {
        let line = self.line(self.total, note);
        if self.terminal {
            println!("\r\x1b[2K{line}");
        } else if self.last_done != Some(self.total) {
            println!("{line}");
        }
    }
}
