//! A duty that one hub replica at a time performs (retraining, say): the
//! replica holding a PostgreSQL advisory lock on its own session performs
//! it. The lock goes with the session, so when that replica stops or its
//! connection breaks, another takes the duty at its next look.

use std::sync::Mutex;

use super::{Session, connect};
use crate::error::{Context, Result};

/// One duty's lease.
pub struct PostgresLease {
    url: String,
    duty: String,
    /// The advisory lock's key, from the duty's name.
    key: i64,
    /// The session the lock is taken on, and whether it holds the lock.
    session: Mutex<Option<(Session, bool)>>,
}

/// The lock key of `name`: FNV-1a, halved to a positive key. Advisory
/// locks are the database's, so the name includes the schema: hubs kept
/// apart by schemas in one database each have their own lease.
fn key(name: &str) -> i64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash >> 1) as i64
}

/// The advisory-lock key of `name` in the schema `session` works in.
pub(super) fn schema_key(session: &mut postgres::Client, name: &str) -> Result<i64> {
    let schema: Option<String> = session
        .query_one("SELECT current_schema()", &[])
        .context(|| format!("cannot read the schema for the {name} lock"))?
        .get(0);
    Ok(key(&format!("{}.{name}", schema.unwrap_or_default())))
}

impl PostgresLease {
    /// The lease of `duty` among the replicas sharing the database at
    /// `url`; checks that the database can be reached.
    pub fn connect(url: &str, duty: &str) -> Result<Self> {
        let (session, key) = super::off_runtime(|| {
            let mut session = lease_session(url)?;
            let key = schema_key(&mut session, duty)?;
            Ok::<_, crate::Error>((session, key))
        })?;
        Ok(PostgresLease {
            url: url.to_owned(),
            duty: duty.to_owned(),
            key,
            session: Mutex::new(Some((session, false))),
        })
    }

    /// Whether this replica holds the duty now: takes it when no other
    /// replica holds it. An error (the database unreachable) means it does
    /// not: a replica that cannot reach the database cannot know that no
    /// other performs the duty.
    pub fn held(&self) -> Result<bool> {
        super::off_runtime(|| {
            let mut slot = self.session.lock().unwrap_or_else(|e| e.into_inner());
            let out = self.look(&mut slot);
            if out.is_err() {
                // The lock (if held) went with the session; a new one is
                // made at the next look.
                *slot = None;
            }
            out
        })
    }

    fn look(&self, slot: &mut Option<(Session, bool)>) -> Result<bool> {
        let what = || format!("cannot take the {} lease", self.duty);
        if slot.is_none() {
            *slot = Some((lease_session(&self.url)?, false));
        }
        let (session, holds) = slot.as_mut().expect("made above");
        if *holds {
            // Still ours while the session lives.
            session.simple_query("SELECT 1").context(what)?;
            return Ok(true);
        }
        *holds = session
            .query_one("SELECT pg_try_advisory_lock($1)", &[&self.key])
            .context(what)?
            .get(0);
        Ok(*holds)
    }
}

/// A session for the lease's lock. The lock lives as long as the server
/// keeps the session: a holder that vanishes without closing it (a power
/// cut) must let the duty go within about half a minute, not after the
/// server's system keepalive of two hours. (The settings are ignored
/// over a Unix socket, where the kernel tells at once.)
fn lease_session(url: &str) -> Result<Session> {
    let mut session = connect(url)?;
    session
        .batch_execute(
            "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
             SET tcp_keepalives_count = 3; SET tcp_user_timeout = 30000",
        )
        .context(|| "cannot set the lease session's keepalive".to_owned())?;
    Ok(session)
}

/// A replica that stops hands its duty over at once: the lock is let go
/// before the session closes (the server would let it go only once it has
/// seen the session end, a moment after).
impl Drop for PostgresLease {
    fn drop(&mut self) {
        let key = self.key;
        let slot = self.session.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some((session, true)) = slot {
            super::off_runtime(|| {
                // On failure the session's end lets it go.
                let _ = session.execute("SELECT pg_advisory_unlock($1)", &[&key]);
            });
        }
    }
}

impl std::fmt::Debug for PostgresLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLease")
            .field("duty", &self.duty)
            .finish()
    }
}
