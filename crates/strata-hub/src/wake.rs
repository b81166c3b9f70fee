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

/// How long a worker waits after its store failed to take an outcome (a
/// webhook delivery, a workflow run) before it goes round again: at once,
/// it would post or command the same thing again and again.
pub const STORE_RETRY: Duration = Duration::from_secs(5);

/// A background thread with a stop flag and a [`Wake`]: what the alert,
/// webhook and workflow threads share. [`Worker::stop`] sets the flag,
/// wakes the thread and joins it.
#[derive(Debug)]
pub struct Worker {
    stopping: std::sync::atomic::AtomicBool,
    wake: Wake,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Default for Worker {
    fn default() -> Self {
        Worker {
            stopping: std::sync::atomic::AtomicBool::new(false),
            // Set, so the thread's first wait returns at once.
            wake: Wake::set(),
            handle: Mutex::new(None),
        }
    }
}

impl Worker {
    /// Runs `body` on a thread named `name`.
    pub fn spawn(&self, name: &str, body: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let handle = std::thread::Builder::new().name(name.into()).spawn(body)?;
        *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    /// Whether [`Worker::stop`] was called.
    pub fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Wakes the thread.
    pub fn wake(&self) {
        self.wake.wake();
    }

    /// Waits until woken or `timeout` passed.
    pub fn wait(&self, timeout: Duration) {
        self.wake.wait(timeout);
    }

    /// Waits until `next_ns` (the earliest due work; a minute when none),
    /// at most a minute, or until woken; returns at once when it is due.
    pub fn wait_until(&self, next_ns: Option<i64>) {
        let wait = match next_ns {
            Some(next) => Duration::from_nanos((next - crate::now_ns()).max(0) as u64),
            None => Duration::from_secs(60),
        };
        if !wait.is_zero() {
            self.wake.wait(wait.min(Duration::from_secs(60)));
        }
    }

    /// Stops the thread after its current piece of work and joins it.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.wake.wake();
        let handle = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}
