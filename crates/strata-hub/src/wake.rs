//! A wake-up call for a worker thread: set by whoever has news, waited on
//! (with a timeout) by the worker.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A flag and the condition variable that announces it.
#[derive(Debug, Default)]
pub struct Wake {
    woken: Mutex<bool>,
    cvar: Condvar,
}

impl Wake {
    /// A wake that is already set (the worker looks once at start).
    pub fn set() -> Wake {
        Wake {
            woken: Mutex::new(true),
            cvar: Condvar::new(),
        }
    }

    /// Wakes the worker (or makes its next wait return at once).
    pub fn wake(&self) {
        *self.woken.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cvar.notify_one();
    }

    /// Waits until woken or `timeout` passed, then clears the flag.
    pub fn wait(&self, timeout: Duration) {
        let mut woken = self.woken.lock().unwrap_or_else(|e| e.into_inner());
        if !*woken {
            woken = self
                .cvar
                .wait_timeout(woken, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *woken = false;
    }
}
