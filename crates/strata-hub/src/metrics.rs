//! The hub's own counters, rendered in the Prometheus text format at
//! `/metrics`, and the rate-limited log for refused input.
//!
//! Counters are plain atomics: the ingest hot path touches them for every
//! message, so they must cost a few nanoseconds and take no lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::now_ns;

/// `value` as a Prometheus label value: backslash, double quote and
/// newline escaped (a rule or model name with one would otherwise break
/// the whole scrape).
pub fn label_value(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.into()
}

/// Why a piece of input was refused. The label in `strata_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Not valid protobuf/JSON.
    Malformed,
    /// A NaN or infinite value.
    NonFinite,
    /// A timestamp too far ahead of the hub's clock.
    FutureTimestamp,
    /// A timestamp before 2000-01-01.
    PastTimestamp,
    /// A batch over the size limits.
    Oversized,
    /// A batch with an invalid shape (names, column lengths, quality codes).
    InvalidBatch,
    /// A signal the device did not declare.
    UnknownSignal,
    /// A unit different from the declared one.
    UnitMismatch,
    /// A connection from a device the registry does not know.
    UnknownDevice,
    /// A connection from a revoked device.
    RevokedDevice,
    /// A wrong or missing credential, or a client id that is not the username.
    BadCredentials,
    /// A publish outside the device's own topics.
    AclPublish,
    /// A subscription outside the device's own topics.
    AclSubscribe,
    /// A message on a topic the hub does not accept from devices.
    UnknownTopic,
    /// Drift sketches not over the bins of their model version's profile
    /// (or of a version without one).
    SketchMismatch,
}

impl RejectReason {
    /// Every reason, in label order.
    pub const ALL: [RejectReason; REASONS] = [
        RejectReason::Malformed,
        RejectReason::NonFinite,
        RejectReason::FutureTimestamp,
        RejectReason::PastTimestamp,
        RejectReason::Oversized,
        RejectReason::InvalidBatch,
        RejectReason::UnknownSignal,
        RejectReason::UnitMismatch,
        RejectReason::UnknownDevice,
        RejectReason::RevokedDevice,
        RejectReason::BadCredentials,
        RejectReason::AclPublish,
        RejectReason::AclSubscribe,
        RejectReason::UnknownTopic,
        RejectReason::SketchMismatch,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::NonFinite => "non_finite",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::PastTimestamp => "past_timestamp",
            RejectReason::Oversized => "oversized",
            RejectReason::InvalidBatch => "invalid_batch",
            RejectReason::UnknownSignal => "unknown_signal",
            RejectReason::UnitMismatch => "unit_mismatch",
            RejectReason::UnknownDevice => "unknown_device",
            RejectReason::RevokedDevice => "revoked_device",
            RejectReason::BadCredentials => "bad_credentials",
            RejectReason::AclPublish => "acl_publish",
            RejectReason::AclSubscribe => "acl_subscribe",
            RejectReason::UnknownTopic => "unknown_topic",
            RejectReason::SketchMismatch => "sketch_mismatch",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).expect("listed")
    }
}

/// How many reasons there are.
const REASONS: usize = 15;

/// Nanoseconds between two log lines for the same reason.
const LOG_EVERY_NS: i64 = 10_000_000_000;

/// A log line that repeats for as long as its cause lasts (refused input,
/// a store that is down), let through at most once a period, with how
/// many were held back since the last one. Lock-free: every connection
/// task may share one.
#[derive(Debug, Default)]
pub struct LogTurn {
    last_ns: AtomicI64,
    suppressed: AtomicU64,
}

impl LogTurn {
    /// Whether a line may be logged at `now_ns`, at most once every
    /// `every_ns`; if so, how many were held back since the last one.
    pub fn take(&self, now_ns: i64, every_ns: i64) -> Option<u64> {
        let last = self.last_ns.load(Relaxed);
        if now_ns - last >= every_ns
            && self
                .last_ns
                .compare_exchange(last, now_ns, Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// Counters of the ingest path.
#[derive(Debug, Default)]
pub struct Metrics {
    rejected: [AtomicU64; REASONS],
    log_turns: [LogTurn; REASONS],
    /// Batches stored.
    pub batches_stored: AtomicU64,
    /// Batches that were already stored (retries).
    pub batches_duplicate: AtomicU64,
    /// Readings stored.
    pub readings_stored: AtomicU64,
    /// Storage transactions committed.
    pub commits: AtomicU64,
    /// Storage transactions that failed (their batches were not acknowledged).
    pub commit_failures: AtomicU64,
    /// Total time spent committing, microseconds.
    pub commit_micros: AtomicU64,
    /// Retention: telemetry batches deleted (past the period or over the
    /// size limit).
    pub batches_expired: AtomicU64,
    /// Retention: readings deleted.
    pub readings_expired: AtomicU64,
    /// Retention: telemetry segment files removed.
    pub segments_removed: AtomicU64,
    /// Retention: bytes of the segment files removed.
    pub segment_bytes_freed: AtomicU64,
    /// Retention: drift sketch batches deleted.
    pub sketch_batches_expired: AtomicU64,
    /// Retention passes that failed.
    pub retention_failures: AtomicU64,
    /// Finished webhook deliveries and workflow runs, cleared alerts, old
    /// API tokens and presence changes deleted past `history_days`.
    pub history_deleted: AtomicU64,
    /// Reloads of the registry's or the accounts' cache after other
    /// replicas changed them.
    pub shared_reloads: AtomicU64,
    /// Looks for other replicas' changes that failed.
    pub shared_refresh_failures: AtomicU64,
    /// Desired twins changed in the shared store (by any replica)
    /// published on this replica's broker.
    pub shared_twins_published: AtomicU64,
    /// Commands other replicas sent, published on this replica's broker.
    pub shared_commands_relayed: AtomicU64,
    /// Commands other replicas sent that were too old to relay when found.
    pub shared_commands_stale: AtomicU64,
    /// Drift sketch batches stored.
    pub sketch_batches_stored: AtomicU64,
    /// Drift sketch batches received again and not stored twice.
    pub sketch_batches_duplicate: AtomicU64,
    /// Closed-loop action records stored.
    pub control_actions_stored: AtomicU64,
    /// Action records received again and not stored twice.
    pub control_actions_duplicate: AtomicU64,
    /// Logins refused (wrong name or password, disabled account).
    pub login_failures: AtomicU64,
    /// Logins refused unchecked: too many wrong passwords in a row.
    pub logins_throttled: AtomicU64,
    /// Enrollments refused unchecked: too many failed ones from an address.
    pub enrollments_throttled: AtomicU64,
    /// API requests refused for a missing, unknown, expired or revoked token.
    pub api_unauthorized: AtomicU64,
    /// API requests refused because the caller lacks the permission.
    pub api_forbidden: AtomicU64,
    /// Messages received from the upstream broker (`[upstream]`).
    pub upstream_messages: AtomicU64,
    /// Connections made to the upstream broker (the first and every
    /// reconnection).
    pub upstream_connections: AtomicU64,
    /// 1 while the hub is connected to the upstream broker.
    pub upstream_connected: AtomicI64,
    /// Messages for devices (twins, gates, commands) handed to the
    /// connection to the upstream broker.
    pub upstream_downlinks: AtomicU64,
    /// Messages for devices dropped while the upstream broker was out of
    /// reach: retained ones (sent again after the next connection) and
    /// commands over a minute old.
    pub upstream_downlinks_dropped: AtomicU64,
    /// The shared registry's change count as of its cache's last load.
    pub shared_registry_version: AtomicI64,
    /// The shared accounts' change count as of their cache's last load.
    pub shared_accounts_version: AtomicI64,
    /// 1 while this replica runs the retraining policies (always, alone;
    /// with shared stores, while it holds their lease).
    pub retrain_leader: AtomicI64,
    /// 1 while this replica raises `offline` alerts (always, alone; with
    /// shared stores, while it holds their lease).
    pub offline_alerts_leader: AtomicI64,
    /// 1 while this replica runs telemetry retention (always, alone; with
    /// telemetry in PostgreSQL, while it holds its lease).
    pub retention_leader: AtomicI64,
    /// Batches waiting for the writer.
    pub queue_depth: AtomicI64,
    /// OTA releases refused, by reason code.
    ota_refusals: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts `n` refusals for `reason` and logs `detail` unless a line for
    /// the same reason was logged in the last ten seconds.
    pub fn reject(&self, reason: RejectReason, n: u64, detail: impl FnOnce() -> String) {
        let i = reason.index();
        self.rejected[i].fetch_add(n, Relaxed);
        if let Some(suppressed) = self.log_turns[i].take(now_ns(), LOG_EVERY_NS) {
            tracing::warn!(
                reason = reason.label(),
                suppressed,
                "refused input: {}",
                detail()
            );
        }
    }

    /// Counts a refused OTA release.
    pub fn ota_refusal(&self, reason: &'static str) {
        *self
            .ota_refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// How many refusals were counted for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Relaxed)
    }

    /// Renders the counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP strata_rejected_total Input refused by the hub, by reason."
        );
        let _ = writeln!(out, "# TYPE strata_rejected_total counter");
        for r in RejectReason::ALL {
            let _ = writeln!(
                out,
                "strata_rejected_total{{reason=\"{}\"}} {}",
                r.label(),
                self.rejected(r)
            );
        }
        let counters = [
            (
                "strata_batches_stored_total",
                "Telemetry batches stored.",
                &self.batches_stored,
            ),
            (
                "strata_batches_duplicate_total",
                "Telemetry batches received again and not stored twice.",
                &self.batches_duplicate,
            ),
            (
                "strata_readings_stored_total",
                "Readings stored.",
                &self.readings_stored,
            ),
            (
                "strata_store_commits_total",
                "Storage transactions committed.",
                &self.commits,
            ),
            (
                "strata_store_commit_failures_total",
                "Storage transactions that failed.",
                &self.commit_failures,
            ),
            ("strata_store_commit_seconds_total", "", &self.commit_micros),
            (
                "strata_retention_batches_deleted_total",
                "Telemetry batches deleted by retention (past its period or over its size limit).",
                &self.batches_expired,
            ),
            (
                "strata_retention_readings_deleted_total",
                "Readings deleted by retention.",
                &self.readings_expired,
            ),
            (
                "strata_retention_segments_removed_total",
                "Telemetry segment files removed by retention.",
                &self.segments_removed,
            ),
            (
                "strata_retention_bytes_freed_total",
                "Bytes of the telemetry segment files retention removed.",
                &self.segment_bytes_freed,
            ),
            (
                "strata_retention_sketch_batches_deleted_total",
                "Drift sketch batches deleted by retention (their window ended past the period).",
                &self.sketch_batches_expired,
            ),
            (
                "strata_retention_failures_total",
                "Retention passes that failed (retried at the next check).",
                &self.retention_failures,
            ),
            (
                "strata_history_deleted_total",
                "Finished webhook deliveries, workflow runs, cleared alerts, old API tokens and presence changes deleted past history_days.",
                &self.history_deleted,
            ),
            (
                "strata_shared_reloads_total",
                "Reloads of the device or account cache after other replicas changed the shared registry or accounts.",
                &self.shared_reloads,
            ),
            (
                "strata_shared_refresh_failures_total",
                "Looks for other replicas' changes that failed (the caches are kept; tried again).",
                &self.shared_refresh_failures,
            ),
            (
                "strata_shared_twins_published_total",
                "Desired twins changed in the shared store, by this replica or another, published on this replica's broker for the devices connected to it.",
                &self.shared_twins_published,
            ),
            (
                "strata_shared_commands_relayed_total",
                "Commands for devices sent through other replicas, published on this replica's broker for the devices connected to it.",
                &self.shared_commands_relayed,
            ),
            (
                "strata_shared_commands_stale_total",
                "Commands sent through other replicas that were over a minute old when this replica found them, and so not published.",
                &self.shared_commands_stale,
            ),
            (
                "strata_sketch_batches_stored_total",
                "Drift sketch batches stored.",
                &self.sketch_batches_stored,
            ),
            (
                "strata_sketch_batches_duplicate_total",
                "Drift sketch batches received again and not stored twice.",
                &self.sketch_batches_duplicate,
            ),
            (
                "strata_control_actions_stored_total",
                "Closed-loop action records stored.",
                &self.control_actions_stored,
            ),
            (
                "strata_control_actions_duplicate_total",
                "Closed-loop action records received again and not stored twice.",
                &self.control_actions_duplicate,
            ),
            (
                "strata_upstream_messages_total",
                "Messages received from the upstream broker.",
                &self.upstream_messages,
            ),
            (
                "strata_upstream_connections_total",
                "Connections made to the upstream broker.",
                &self.upstream_connections,
            ),
            (
                "strata_upstream_downlinks_total",
                "Messages for devices (twins, gates, commands) handed to the connection to the upstream broker.",
                &self.upstream_downlinks,
            ),
            (
                "strata_upstream_downlinks_dropped_total",
                "Messages for devices dropped while the upstream broker was out of reach: twins and gates (all sent again after the next connection) and commands over a minute old.",
                &self.upstream_downlinks_dropped,
            ),
            (
                "strata_login_failures_total",
                "Logins refused.",
                &self.login_failures,
            ),
            (
                "strata_logins_throttled_total",
                "Logins refused unchecked after too many wrong passwords in a row.",
                &self.logins_throttled,
            ),
            (
                "strata_enrollments_throttled_total",
                "Enrollments refused unchecked after too many failed ones from one address.",
                &self.enrollments_throttled,
            ),
            (
                "strata_api_unauthorized_total",
                "API requests refused for a missing, unknown, expired or revoked token.",
                &self.api_unauthorized,
            ),
            (
                "strata_api_forbidden_total",
                "API requests refused because the caller lacks the permission.",
                &self.api_forbidden,
            ),
        ];
        for (name, help, value) in counters {
            let value = value.load(Relaxed);
            if name == "strata_store_commit_seconds_total" {
                let _ = writeln!(out, "# HELP {name} Time spent committing telemetry.");
                let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", value as f64 / 1e6);
            } else {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP strata_ingest_queue_depth Batches waiting for the storage writer.\n# TYPE strata_ingest_queue_depth gauge\nstrata_ingest_queue_depth {}",
            self.queue_depth.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP strata_upstream_connected 1 while the hub is connected to its upstream broker.\n# TYPE strata_upstream_connected gauge\nstrata_upstream_connected {}",
            self.upstream_connected.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP strata_shared_version A shared store's change count as of this hub's last reload of its cache (a replica behind the others has not seen their latest changes).\n# TYPE strata_shared_version gauge\nstrata_shared_version{{cache=\"registry\"}} {}\nstrata_shared_version{{cache=\"accounts\"}} {}",
            self.shared_registry_version.load(Relaxed),
            self.shared_accounts_version.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP strata_shared_leader 1 while this replica performs a duty that one replica at a time performs.\n# TYPE strata_shared_leader gauge\nstrata_shared_leader{{duty=\"retrain\"}} {}\nstrata_shared_leader{{duty=\"offline_alerts\"}} {}\nstrata_shared_leader{{duty=\"retention\"}} {}",
            self.retrain_leader.load(Relaxed),
            self.offline_alerts_leader.load(Relaxed),
            self.retention_leader.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP strata_ota_refusals_total OTA releases refused, by reason.\n# TYPE strata_ota_refusals_total counter"
        );
        for (reason, n) in self
            .ota_refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "strata_ota_refusals_total{{reason=\"{reason}\"}} {n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("bearing-hot"), "bearing-hot");
        assert_eq!(
            label_value("a \"hot\" one\\\nnext"),
            "a \\\"hot\\\" one\\\\\\nnext"
        );
    }

    #[test]
    fn counts_every_rejection_but_logs_few() {
        let m = Metrics::default();
        for _ in 0..100 {
            m.reject(RejectReason::NonFinite, 2, || "x".into());
        }
        assert_eq!(m.rejected(RejectReason::NonFinite), 200);
        // The first call logged; the next 99 were suppressed.
        let i = RejectReason::NonFinite.index();
        let turn = &m.log_turns[i];
        let t = turn.last_ns.load(Relaxed);
        assert_eq!(turn.take(t + 1, LOG_EVERY_NS), None);
        assert_eq!(turn.take(t + LOG_EVERY_NS, LOG_EVERY_NS), Some(100));
        assert_eq!(turn.take(t + LOG_EVERY_NS + 1, LOG_EVERY_NS), None);
        let mut text = String::new();
        m.render(&mut text);
        assert!(text.contains("strata_rejected_total{reason=\"non_finite\"} 200"));
        assert!(text.contains("strata_rejected_total{reason=\"malformed\"} 0"));
    }
}
