//! When each rule last wrote to its output, on the wall clock, kept in the
//! data directory. The engine's clock starts again at every start, so
//! without it an agent in a crash loop (or restarted by a watchdog) would
//! write once per start, however long the rule's cooldown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file in the data directory.
pub const FILE: &str = "control-last-writes.json";

/// Each rule's last write, in nanoseconds since the Unix epoch.
#[derive(Debug)]
pub struct LastWrites {
    path: PathBuf,
    at: BTreeMap<String, i64>,
}

impl LastWrites {
    /// What an earlier run kept: nothing when there is no file; a file
    /// that cannot be read is said in the log and counts as nothing.
    pub fn open(data_dir: &Path) -> LastWrites {
        let path = data_dir.join(FILE);
        let at = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    "{} cannot be read, so cooldowns start afresh: {e}",
                    path.display()
                );
                BTreeMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(
                    "{} cannot be read, so cooldowns start afresh: {e}",
                    path.display()
                );
                BTreeMap::new()
            }
        };
        LastWrites { path, at }
    }

    /// How long ago each rule last wrote, in ns, as of `now_ns`. A write
    /// stamped after `now_ns` (the clock was set back since) counts as
    /// just now: the whole cooldown runs again.
    pub fn ages(&self, now_ns: i64) -> impl Iterator<Item = (&str, i64)> {
        self.at
            .iter()
            .map(move |(rule, &t)| (rule.as_str(), now_ns.saturating_sub(t).max(0)))
    }

    /// Notes that `rule` writes at `now_ns`; returns the file's path and
    /// new contents, to be written ([`crate::write_atomic`]) before the
    /// write goes out.
    pub fn note(&mut self, rule: &str, now_ns: i64) -> (PathBuf, Vec<u8>) {
        self.at.insert(rule.to_string(), now_ns);
        let json = serde_json::to_vec(&self.at).expect("JSON of a map of numbers");
        (self.path.clone(), json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_come_back_after_a_restart_and_a_clock_set_back_restarts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut kept = LastWrites::open(dir.path());
        assert_eq!(kept.ages(0).count(), 0);
        let (path, json) = kept.note("cool", 1_000);
        crate::write_atomic(&path, &json).unwrap();
        let (path, json) = kept.note("derate", 5_000);
        crate::write_atomic(&path, &json).unwrap();

        let again = LastWrites::open(dir.path());
        let ages: Vec<_> = again.ages(6_000).collect();
        assert_eq!(ages, [("cool", 5_000), ("derate", 1_000)]);
        // The wall clock went back below both stamps.
        let ages: Vec<_> = again.ages(500).collect();
        assert_eq!(ages, [("cool", 0), ("derate", 0)]);

        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert_eq!(LastWrites::open(dir.path()).ages(0).count(), 0);
    }
}
