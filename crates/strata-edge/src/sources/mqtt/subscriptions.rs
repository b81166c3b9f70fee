//! The filters a persistent session may still hold at the broker. The
//! broker keeps a session's subscriptions across disconnects, so a topic
//! removed from the source's config would go on being delivered (and
//! refused, one error each). The source remembers the filters it
//! subscribed to, in its data directory, per client id, and unsubscribes
//! from those it no longer has at the next connect.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Remembered {
    client_id: String,
    filters: BTreeSet<String>,
}

/// The filters of one source's session: those configured and those to
/// unsubscribe from.
#[derive(Debug)]
pub struct Subscriptions {
    path: PathBuf,
    client_id: String,
    configured: BTreeSet<String>,
    stale: BTreeSet<String>,
}

impl Subscriptions {
    /// Reads what the session was subscribed to, for `stream` under
    /// `client_id`, and records the configured filters with it (before any
    /// connect, so a stop before the unsubscribes leaves both known).
    pub fn open(data_dir: &Path, stream: &str, client_id: &str, configured: &[String]) -> Self {
        let path = data_dir.join(format!("mqtt-source-{stream}.json"));
        let earlier: Remembered = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let configured: BTreeSet<String> = configured.iter().cloned().collect();
        // Another client id is another session: its filters are not ours.
        let stale = if earlier.client_id == client_id {
            earlier.filters.difference(&configured).cloned().collect()
        } else {
            BTreeSet::new()
        };
        let subscriptions = Subscriptions {
            path,
            client_id: client_id.to_string(),
            configured,
            stale,
        };
        subscriptions.save();
        subscriptions
    }

    /// The filters to unsubscribe from at a connect.
    pub fn stale(&self) -> Vec<String> {
        self.stale.iter().cloned().collect()
    }

    /// The broker has confirmed the unsubscribes: only the configured
    /// filters are left.
    pub fn unsubscribed(&mut self) {
        self.stale.clear();
        self.save();
    }

    fn save(&self) {
        let remembered = Remembered {
            client_id: self.client_id.clone(),
            filters: self.configured.union(&self.stale).cloned().collect(),
        };
        let json = serde_json::to_vec(&remembered).expect("JSON of strings");
        // Best effort: without the file, a removed topic's messages are
        // refused and counted, as before.
        let tmp = self.path.with_extension("json.tmp");
        if let Err(e) = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &self.path))
        {
            tracing::warn!(path = %self.path.display(), "cannot remember the source's subscriptions: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(list: &[&str]) -> Vec<String> {
        list.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn a_removed_filter_is_stale_until_unsubscribed_and_only_for_the_same_client() {
        let dir = tempfile::tempdir().unwrap();
        let first = Subscriptions::open(dir.path(), "floor", "c1", &filters(&["a/#", "b/+"]));
        assert!(first.stale().is_empty());
        let mut second = Subscriptions::open(dir.path(), "floor", "c1", &filters(&["b/+"]));
        assert_eq!(second.stale(), ["a/#"]);
        // Stopped before the broker confirmed: still stale next time.
        let mut third = Subscriptions::open(dir.path(), "floor", "c1", &filters(&["b/+"]));
        assert_eq!(third.stale(), ["a/#"]);
        third.unsubscribed();
        second.unsubscribed();
        assert!(
            Subscriptions::open(dir.path(), "floor", "c1", &filters(&["b/+"]))
                .stale()
                .is_empty()
        );
        // Another client id starts another session.
        assert!(
            Subscriptions::open(dir.path(), "floor", "c2", &filters(&[]))
                .stale()
                .is_empty()
        );
        // Another stream has a file of its own.
        let other = Subscriptions::open(dir.path(), "hall", "c2", &filters(&["x"]));
        assert!(other.stale().is_empty());
    }
}
