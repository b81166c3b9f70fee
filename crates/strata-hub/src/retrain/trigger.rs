//! The three triggers of a retraining policy, each judged on what the hub
//! has stored: the champion's drift sketches, its accuracy on late labels,
//! and its age.

use std::collections::{BTreeMap, BTreeSet};

use strata_proto::DeviceId;
use strata_store::{Device, ModelVersion};

use super::{RetrainDeps, RetrainPolicy, S, Trigger};
use crate::drift::accuracy::{self, AccuracySpec};
use crate::drift::report::{self, Dimension, ReportSpec};
use crate::error::Result;

/// The first trigger that fires now, if any. Drift and accuracy are
/// judged only on evidence from after `last_start_ns`, the start of the
/// model's last cycle: a cycle that did not promote is not started again
/// on what it already acted on.
pub(super) fn fire(
    deps: &RetrainDeps,
    p: &RetrainPolicy,
    champion: &ModelVersion,
    last_start_ns: Option<i64>,
    now: i64,
) -> Result<Option<Trigger>> {
    let devices = deps.registry.devices_by_id()?;
    if let Some(psi) = p.drift_psi
        && let Some(t) = drift(deps, p, champion, psi, &devices, last_start_ns, now)?
    {
        return Ok(Some(t));
    }
    if (p.max_mae_ratio.is_some() || p.max_accuracy_drop.is_some())
        && champion.lineage.target.is_some()
        && let Some(t) = accuracy(deps, p, champion, &devices, last_start_ns, now)?
    {
        return Ok(Some(t));
    }
    if let Some(every) = p.every_s {
        let since = last_start_ns
            .unwrap_or(champion.created_ns)
            .max(champion.created_ns);
        if now - since >= every as i64 * S {
            return Ok(Some(Trigger {
                kind: "schedule".into(),
                at_ns: now,
                detail: format!(
                    "v{} has served {} s without retraining (every {every} s)",
                    champion.version,
                    (now - since) / S
                ),
                devices: Vec::new(),
                findings: Vec::new(),
                evidence_from_ns: None,
            }));
        }
    }
    Ok(None)
}

/// The devices on which `champion` drifts now: in each of the last
/// `drift_windows` windows (none when the policy has no drift trigger).
pub(super) fn drifting_now(
    deps: &RetrainDeps,
    p: &RetrainPolicy,
    champion: &ModelVersion,
    now: i64,
) -> Result<Vec<String>> {
    let Some(psi) = p.drift_psi else {
        return Ok(Vec::new());
    };
    let devices = deps.registry.devices_by_id()?;
    Ok(drift(deps, p, champion, psi, &devices, None, now)?
        .map(|t| t.devices)
        .unwrap_or_default())
}

/// Fires when some device drifts in each of the last `drift_windows`
/// windows, all after `since` when given; names the devices that drift in
/// all of them, and what the report over those windows says about where
/// the drift is.
fn drift(
    deps: &RetrainDeps,
    p: &RetrainPolicy,
    champion: &ModelVersion,
    psi: f64,
    devices: &BTreeMap<DeviceId, Device>,
    since: Option<i64>,
    now: i64,
) -> Result<Option<Trigger>> {
    let Some(profile) = deps.drift.profile(&champion.model, champion.version)? else {
        return Ok(None);
    };
    let window = p.drift_window_s as i64 * S;
    // Windows end at the newest sketch stored, not at the clock: the
    // sketches of the last moments are still on their way.
    let span = window * i64::from(p.drift_windows);
    let mut batches = deps.drift.store().sketches(
        &champion.model,
        champion.version,
        now - span - window,
        now + 1,
    )?;
    let Some(end) = batches.iter().map(|b| b.batch.end_ns).max() else {
        return Ok(None);
    };
    let from = end - span;
    if since.is_some_and(|since| from < since) {
        return Ok(None);
    }
    batches.retain(|b| b.batch.end_ns > from);
    let spec = |from_ns, to_ns, by| ReportSpec {
        from_ns,
        to_ns,
        by,
        psi_threshold: psi,
        min_count: p.drift_min_count,
    };
    let mut steady_in_all: Option<BTreeSet<String>> = None;
    let mut worst: BTreeMap<String, (f64, String)> = BTreeMap::new();
    for k in 0..i64::from(p.drift_windows) {
        let (to_ns, from_ns) = (end - k * window, end - (k + 1) * window);
        let in_window: Vec<_> = batches
            .iter()
            .filter(|b| b.batch.end_ns > from_ns && b.batch.end_ns <= to_ns)
            .cloned()
            .collect();
        let r = report::build(
            &champion.model,
            champion.version,
            &profile,
            &in_window,
            devices,
            &spec(from_ns, to_ns, vec![Dimension::Device]),
        );
        let mut drifting = BTreeSet::new();
        for s in &r.signals {
            for g in s.segments.get("device").into_iter().flatten() {
                if let Some(score) = g.score.as_ref().filter(|sc| sc.drifted) {
                    drifting.insert(g.value.clone());
                    let w = worst.entry(g.value.clone()).or_insert((0.0, String::new()));
                    if score.psi > w.0 {
                        *w = (score.psi, s.name.clone());
                    }
                }
            }
        }
        steady_in_all = Some(match steady_in_all {
            None => drifting,
            Some(before) => before.intersection(&drifting).cloned().collect(),
        });
    }
    let named: Vec<String> = steady_in_all.unwrap_or_default().into_iter().collect();
    if named.is_empty() {
        return Ok(None);
    }
    let whole = report::build(
        &champion.model,
        champion.version,
        &profile,
        &batches,
        devices,
        &spec(
            from,
            end,
            vec![Dimension::Device, Dimension::Site, Dimension::Firmware],
        ),
    );
    let worst_of: Vec<String> = named
        .iter()
        .map(|d| {
            let (psi, signal) = &worst[d];
            format!("{d} ({signal}, PSI {psi:.2})")
        })
        .collect();
    Ok(Some(Trigger {
        kind: "drift".into(),
        at_ns: now,
        detail: format!(
            "v{} drifts (PSI >= {psi}) in each of the last {} windows of {} s on {}",
            champion.version,
            p.drift_windows,
            p.drift_window_s,
            worst_of.join(", ")
        ),
        devices: named,
        findings: whole.findings,
        evidence_from_ns: Some(from),
    }))
}

/// Fires when the champion's accuracy on the labels of the last
/// `accuracy_window_s` (from `since` at the earliest) has decayed past the
/// policy's floor.
fn accuracy(
    deps: &RetrainDeps,
    p: &RetrainPolicy,
    champion: &ModelVersion,
    devices: &BTreeMap<DeviceId, Device>,
    since: Option<i64>,
    now: i64,
) -> Result<Option<Trigger>> {
    let from = (now - p.accuracy_window_s as i64 * S).max(since.unwrap_or(i64::MIN));
    let spec = AccuracySpec {
        from_ns: from,
        to_ns: now,
        bucket_ns: (now - from).max(1),
        max_lag_ns: p.max_lag_s as i64 * S,
        by: vec![Dimension::Device],
        devices: Vec::new(),
    };
    let a = accuracy::version_accuracy(champion, &*deps.labels, &*deps.telemetry, devices, &spec)?;
    if a.overall.pairs < p.min_pairs {
        return Ok(None);
    }
    let Some(registered) = a.registered else {
        return Ok(None);
    };
    let (decayed, detail) = match (a.overall.mae, a.overall.accuracy) {
        (Some(mae), _) if registered > 0.0 => {
            let ratio = mae / registered;
            (
                p.max_mae_ratio.is_some_and(|max| ratio >= max),
                format!(
                    "v{}'s MAE on {} late labels is {mae:.3}, {ratio:.2} times its registered {registered:.3}",
                    champion.version, a.overall.pairs
                ),
            )
        }
        (None, Some(acc)) => (
            p.max_accuracy_drop
                .is_some_and(|max| registered - acc >= max),
            format!(
                "v{}'s accuracy on {} late labels is {acc:.3}, registered {registered:.3}",
                champion.version, a.overall.pairs
            ),
        ),
        _ => return Ok(None),
    };
    if !decayed {
        return Ok(None);
    }
    // The devices it is worst on: above the overall figure.
    let overall = a.overall.mae.or(a.overall.accuracy.map(|x| 1.0 - x));
    let named = a
        .segments
        .get("device")
        .into_iter()
        .flatten()
        .filter(|g| {
            let e = g.scores.mae.or(g.scores.accuracy.map(|x| 1.0 - x));
            matches!((e, overall), (Some(e), Some(o)) if e > o)
        })
        .map(|g| g.value.clone())
        .collect();
    Ok(Some(Trigger {
        kind: "accuracy".into(),
        at_ns: now,
        detail,
        devices: named,
        findings: Vec::new(),
        evidence_from_ns: Some(from),
    }))
}
