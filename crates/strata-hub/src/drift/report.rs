//! Drift reports: sketches merged per segment and compared with the
//! model version's profile, and where the drift is confined.
//!
//! Segments are devices, sites, firmware versions or the values of a
//! device tag. Attribution looks at which devices drift (each judged on
//! its own merged sketch) and finds the coarsest dimension whose segments
//! are each nearly all drifting or nearly all steady: "only on firmware
//! 2.3", "only at site plant-b". When no dimension separates them it
//! names the devices.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_drift::detect::{Detector, PageHinkley, PageHinkleyParams};
use strata_drift::profile::ModelProfile;
use strata_drift::sketch::{FeatureProfile, Sketch, SketchDrift};
use strata_proto::DeviceId;
use strata_store::{Device, StoredSketches};

/// Segments with fewer values than this are not judged.
pub const DEFAULT_MIN_COUNT: u64 = 50;

/// The PSI at which a segment counts as drifting (Evidently's default).
pub const DEFAULT_PSI_THRESHOLD: f64 = 0.1;

/// A segment whose devices drift at this share or more is drifting; at
/// one minus it or less, steady; in between, mixed.
const CLEAR_SHARE: f64 = 0.8;

/// How to split the fleet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Dimension {
    /// Each device.
    Device,
    /// The device's site.
    Site,
    /// The device's firmware version.
    Firmware,
    /// The value of a device tag.
    Tag(String),
}

impl Dimension {
    /// Parses `device`, `site`, `firmware` or `tag:<key>`.
    pub fn parse(s: &str) -> Option<Dimension> {
        match s {
            "device" => Some(Dimension::Device),
            "site" => Some(Dimension::Site),
            "firmware" => Some(Dimension::Firmware),
            _ => s
                .strip_prefix("tag:")
                .filter(|k| !k.is_empty())
                .map(|k| Dimension::Tag(k.to_owned())),
        }
    }

    /// The name `parse` reads.
    pub fn name(&self) -> String {
        match self {
            Dimension::Device => "device".into(),
            Dimension::Site => "site".into(),
            Dimension::Firmware => "firmware".into(),
            Dimension::Tag(k) => format!("tag:{k}"),
        }
    }

    /// In words, for a summary: "firmware 2.3", "site plant-b".
    fn describe(&self, value: &str) -> String {
        match self {
            Dimension::Device => format!("device {value}"),
            Dimension::Site => format!("site {value}"),
            Dimension::Firmware => format!("firmware {value}"),
            Dimension::Tag(k) => format!("{k}={value}"),
        }
    }

    /// The segment `device` falls in.
    pub fn value_of(&self, device: &DeviceId, info: Option<&Device>) -> String {
        match self {
            Dimension::Device => device.to_string(),
            Dimension::Site => info.map_or("unknown".into(), |d| d.site.to_string()),
            Dimension::Firmware => info
                .and_then(|d| d.firmware_version.clone())
                .unwrap_or_else(|| "unknown".into()),
            Dimension::Tag(k) => info
                .and_then(|d| d.tags.get(k).cloned())
                .unwrap_or_else(|| "unset".into()),
        }
    }
}

/// What a report covers and how it judges.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSpec {
    /// Windows ending in `[from_ns, to_ns)`.
    pub from_ns: i64,
    /// See `from_ns`.
    pub to_ns: i64,
    /// Dimensions to segment by (the device dimension is always judged,
    /// for attribution).
    pub by: Vec<Dimension>,
    /// PSI threshold for drift.
    pub psi_threshold: f64,
    /// Fewest values a segment needs to be judged.
    pub min_count: u64,
}

/// Drift of one merged sketch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Score {
    /// Values merged.
    pub n: u64,
    /// Non-finite values left out, as a share of all offered.
    pub dropped_share: f64,
    /// Population stability index over the profile's bins.
    pub psi: f64,
    /// Jensen-Shannon distance over the bins.
    pub jensen_shannon: f64,
    /// Chi-squared p-value of the bin counts.
    pub chi_square_p: f64,
    /// Largest CDF gap at the bin edges (a lower bound of KS).
    pub ks_lower_bound: f64,
    /// Wasserstein distance normed by the reference's std.
    pub wasserstein_normed: f64,
    /// Mean minus the reference mean.
    pub mean_shift: f64,
    /// PSI at or over the threshold.
    pub drifted: bool,
}

/// One segment's score (None: too few values to judge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SegmentScore {
    /// The segment's value (device id, site id, firmware version, tag value).
    pub value: String,
    /// Devices in it.
    pub devices: usize,
    /// Its drift.
    pub score: Option<Score>,
}

/// Where a signal's drift is confined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attribution {
    /// The dimension that separates drifting from steady devices
    /// (`fleet` when every judged device drifts).
    pub by: String,
    /// Its drifting values.
    pub drifting: Vec<String>,
    /// Its steady values.
    pub steady: Vec<String>,
    /// In words.
    pub summary: String,
}

/// Drift of one feature or output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignalDrift {
    /// Feature or output name.
    pub name: String,
    /// `feature` or `output`.
    pub kind: String,
    /// Every sketch merged.
    pub overall: Option<Score>,
    /// Per dimension asked for, per value.
    pub segments: BTreeMap<String, Vec<SegmentScore>>,
    /// Where the drift is, when any device drifts.
    pub attribution: Option<Attribution>,
}

/// A change an edge detector reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceDetection {
    /// The device.
    pub device: String,
    /// The output watched.
    pub signal: String,
    /// The detector.
    pub detector: String,
    /// When, ns.
    pub ts_ns: i64,
    /// The value that completed it.
    pub value: f64,
}

/// A change the hub's detector found in a device's series of window
/// means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HubDetection {
    /// The device.
    pub device: String,
    /// The feature or output.
    pub signal: String,
    /// End of the window that completed the detection, ns.
    pub window_end_ns: i64,
    /// That window's mean, in reference standard deviations from the
    /// reference mean.
    pub z: f64,
}

/// The hub's detector over standardised window means: Page-Hinkley with
/// a tolerance of 0.25 and an alarm at 4 reference standard deviations of
/// accumulated shift, from the fifth window on.
pub fn hub_detector() -> PageHinkleyParams {
    PageHinkleyParams {
        min_instances: 5,
        delta: 0.25,
        threshold: 4.0,
        ..PageHinkleyParams::default()
    }
}

/// A drift report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriftReport {
    /// The model.
    pub model: String,
    /// Its version.
    pub version: u32,
    /// Window ends covered, from (ns).
    pub from_ns: i64,
    /// To (ns, exclusive).
    pub to_ns: i64,
    /// Sketch batches merged.
    pub batches: usize,
    /// Devices that sent them.
    pub devices: usize,
    /// PSI threshold used.
    pub psi_threshold: f64,
    /// Per input feature, then per output.
    pub signals: Vec<SignalDrift>,
    /// Edge detections in the windows.
    pub detections: Vec<DeviceDetection>,
    /// Hub detections: changes in each device's window means of a signal
    /// (standardised by the reference), found by Page-Hinkley. Any change
    /// counts, a machine's wear too: drift verdicts come from the profile.
    pub hub_detections: Vec<HubDetection>,
    /// One line per drifting signal.
    pub findings: Vec<String>,
}

/// Builds a report of `model` v`version` from its stored sketches.
pub fn build(
    model: &str,
    version: u32,
    profile: &ModelProfile,
    batches: &[StoredSketches],
    devices: &BTreeMap<DeviceId, Device>,
    spec: &ReportSpec,
) -> DriftReport {
    let mut detections = Vec::new();
    let mut senders = std::collections::BTreeSet::new();
    for b in batches {
        senders.insert(b.device.clone());
        detections.extend(b.batch.detections.iter().map(|d| DeviceDetection {
            device: b.device.to_string(),
            signal: d.signal.clone(),
            detector: d.detector.clone(),
            ts_ns: d.ts_ns,
            value: d.value,
        }));
    }
    let mut signals = Vec::new();
    let mut hub_detections = Vec::new();
    let named = profile
        .features
        .iter()
        .map(|p| (p, "feature"))
        .chain(profile.outputs.iter().map(|p| (p, "output")));
    for (p, kind) in named {
        // Per device: its merged sketch of this signal, and its series of
        // standardised window means (batches come oldest first).
        let mut per_device: BTreeMap<DeviceId, Sketch> = BTreeMap::new();
        let mut means: BTreeMap<DeviceId, Vec<(i64, f64)>> = BTreeMap::new();
        let reference = &p.profile.reference;
        let sd = p.profile.std.max(1e-12);
        for b in batches {
            let list = if kind == "feature" {
                &b.batch.features
            } else {
                &b.batch.outputs
            };
            let Some(s) = list.iter().find(|s| s.name == p.name) else {
                continue;
            };
            if s.n > 0 {
                let z = (s.sum / s.n as f64 - reference.mean()) / sd;
                means
                    .entry(b.device.clone())
                    .or_default()
                    .push((b.batch.end_ns, z));
            }
            let sketch = per_device
                .entry(b.device.clone())
                .or_insert_with(|| p.profile.empty_sketch());
            if sketch.counts.len() == s.counts.len() {
                let incoming = Sketch {
                    edges: sketch.edges.clone(),
                    counts: s.counts.clone(),
                    n: s.n,
                    dropped: s.dropped,
                    sum: s.sum,
                    sum_sq: s.sum_sq,
                    min: s.min.unwrap_or(f64::INFINITY),
                    max: s.max.unwrap_or(f64::NEG_INFINITY),
                };
                let _ = sketch.merge(&incoming);
            }
        }
        for (device, series) in &means {
            let mut ph = PageHinkley::new(hub_detector());
            for &(end_ns, z) in series {
                if ph.update(z) {
                    hub_detections.push(HubDetection {
                        device: device.to_string(),
                        signal: p.name.clone(),
                        window_end_ns: end_ns,
                        z,
                    });
                }
            }
        }
        signals.push(signal_drift(
            &p.name,
            kind,
            &p.profile,
            &per_device,
            devices,
            spec,
        ));
    }
    let findings = signals
        .iter()
        .filter_map(|s| {
            s.attribution
                .as_ref()
                .map(|a| format!("{} {}: {}", s.kind, s.name, a.summary))
        })
        .collect();
    DriftReport {
        model: model.to_owned(),
        version,
        from_ns: spec.from_ns,
        to_ns: spec.to_ns,
        batches: batches.len(),
        devices: senders.len(),
        psi_threshold: spec.psi_threshold,
        signals,
        detections,
        hub_detections,
        findings,
    }
}

fn score(profile: &FeatureProfile, sketch: &Sketch, spec: &ReportSpec) -> Option<Score> {
    if sketch.n < spec.min_count {
        return None;
    }
    let d: SketchDrift = profile.compare(sketch).ok()?;
    Some(Score {
        n: sketch.n,
        dropped_share: sketch.dropped as f64 / (sketch.n + sketch.dropped) as f64,
        psi: d.psi,
        jensen_shannon: d.jensen_shannon,
        chi_square_p: d.chi_square_p,
        ks_lower_bound: d.ks_lower_bound,
        wasserstein_normed: d.wasserstein_normed,
        mean_shift: d.mean_shift,
        drifted: d.psi >= spec.psi_threshold,
    })
}

fn signal_drift(
    name: &str,
    kind: &str,
    profile: &FeatureProfile,
    per_device: &BTreeMap<DeviceId, Sketch>,
    devices: &BTreeMap<DeviceId, Device>,
    spec: &ReportSpec,
) -> SignalDrift {
    let mut all = profile.empty_sketch();
    for s in per_device.values() {
        let _ = all.merge(s);
    }
    let overall = score(profile, &all, spec);
    // Device-level verdicts (None: too few values).
    let verdicts: BTreeMap<&DeviceId, Option<bool>> = per_device
        .iter()
        .map(|(d, s)| (d, score(profile, s, spec).map(|sc| sc.drifted)))
        .collect();
    let mut segments = BTreeMap::new();
    for dim in &spec.by {
        let mut groups: BTreeMap<String, (Sketch, usize)> = BTreeMap::new();
        for (d, s) in per_device {
            let value = dim.value_of(d, devices.get(d));
            let g = groups
                .entry(value)
                .or_insert_with(|| (profile.empty_sketch(), 0));
            let _ = g.0.merge(s);
            g.1 += 1;
        }
        segments.insert(
            dim.name(),
            groups
                .into_iter()
                .map(|(value, (s, n))| SegmentScore {
                    value,
                    devices: n,
                    score: score(profile, &s, spec),
                })
                .collect(),
        );
    }
    let attribution = attribute(&verdicts, devices, spec, per_device);
    SignalDrift {
        name: name.to_owned(),
        kind: kind.to_owned(),
        overall,
        segments,
        attribution,
    }
}

/// Finds the dimension that separates drifting devices from steady ones.
fn attribute(
    verdicts: &BTreeMap<&DeviceId, Option<bool>>,
    devices: &BTreeMap<DeviceId, Device>,
    spec: &ReportSpec,
    per_device: &BTreeMap<DeviceId, Sketch>,
) -> Option<Attribution> {
    let judged: Vec<(&DeviceId, bool)> = verdicts
        .iter()
        .filter_map(|(d, v)| v.map(|v| (*d, v)))
        .collect();
    let drifting: Vec<&DeviceId> = judged.iter().filter(|(_, v)| *v).map(|(d, _)| *d).collect();
    if drifting.is_empty() {
        return None;
    }
    // Non-finite values can be the story: say so when a drifting device
    // dropped many.
    let dropped_note = |ids: &[&DeviceId]| -> String {
        let (dropped, total) = ids.iter().fold((0u64, 0u64), |(d, t), id| {
            per_device
                .get(*id)
                .map_or((d, t), |s| (d + s.dropped, t + s.n + s.dropped))
        });
        if total > 0 && dropped as f64 / total as f64 > 0.05 {
            format!(
                " ({:.0}% of their values were not finite)",
                100.0 * dropped as f64 / total as f64
            )
        } else {
            String::new()
        }
    };
    if drifting.len() == judged.len() {
        return Some(Attribution {
            by: "fleet".into(),
            drifting: vec!["all".into()],
            steady: vec![],
            summary: format!(
                "drifts on all {} judged devices{}",
                judged.len(),
                dropped_note(&drifting)
            ),
        });
    }
    let mut best: Option<(Dimension, Vec<String>, Vec<String>)> = None;
    for dim in spec.by.iter().filter(|d| **d != Dimension::Device) {
        let mut groups: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (d, v) in &judged {
            let g = groups.entry(dim.value_of(d, devices.get(*d))).or_default();
            g.0 += usize::from(*v);
            g.1 += 1;
        }
        // One device per value says no more than the devices themselves.
        if groups.len() == judged.len() {
            continue;
        }
        let (mut hot, mut cold, mut mixed) = (Vec::new(), Vec::new(), false);
        for (value, (drift, n)) in groups {
            let share = drift as f64 / n as f64;
            if share >= CLEAR_SHARE {
                hot.push(value);
            } else if share <= 1.0 - CLEAR_SHARE {
                cold.push(value);
            } else {
                mixed = true;
            }
        }
        if !mixed
            && !hot.is_empty()
            && !cold.is_empty()
            && best.as_ref().is_none_or(|b| hot.len() < b.1.len())
        {
            best = Some((dim.clone(), hot, cold));
        }
    }
    Some(match best {
        Some((dim, hot, cold)) => {
            let hot_words: Vec<String> = hot.iter().map(|v| dim.describe(v)).collect();
            Attribution {
                by: dim.name(),
                summary: format!(
                    "drifts only on {} ({} of {} judged devices){}; steady on {}",
                    hot_words.join(", "),
                    drifting.len(),
                    judged.len(),
                    dropped_note(&drifting),
                    cold.join(", ")
                ),
                drifting: hot,
                steady: cold,
            }
        }
        None => {
            let hot: Vec<String> = drifting.iter().map(|d| d.to_string()).collect();
            let cold: Vec<String> = judged
                .iter()
                .filter(|(_, v)| !*v)
                .map(|(d, _)| d.to_string())
                .collect();
            Attribution {
                by: "device".into(),
                summary: format!(
                    "drifts on {} of {} judged devices: {}{}",
                    hot.len(),
                    judged.len(),
                    hot.join(", "),
                    dropped_note(&drifting)
                ),
                drifting: hot,
                steady: cold,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use strata_drift::Sample;
    use strata_drift::profile::NamedProfile;
    use strata_proto::{SignalSketch, SiteId, SketchBatch};
    use strata_store::DeviceState;

    use super::*;

    fn device(id: &str, site: &str, firmware: &str) -> Device {
        Device {
            id: DeviceId::new(id).unwrap(),
            site: SiteId::new(site).unwrap(),
            tags: BTreeMap::from([("line".to_string(), format!("line-{}", &id[id.len() - 1..]))]),
            model_version: None,
            firmware_version: Some(firmware.into()),
            state: DeviceState::Active,
            online: true,
            last_seen_ns: None,
            created_ns: 0,
            revoked_ns: None,
            signals: BTreeMap::new(),
        }
    }

    /// A deterministic spread of values around `centre`.
    fn values(centre: f64, n: usize) -> impl Iterator<Item = f64> {
        (0..n).map(move |i| centre + ((i * 7919) % 1000) as f64 / 500.0 - 1.0)
    }

    fn profile() -> ModelProfile {
        ModelProfile {
            rows: 5000,
            features: vec![NamedProfile {
                name: "x".into(),
                profile: FeatureProfile::from_reference(&Sample::new(values(0.0, 5000)), 20)
                    .unwrap(),
            }],
            outputs: vec![],
        }
    }

    fn stored(p: &ModelProfile, id: &str, centre: f64) -> StoredSketches {
        stored_at(p, id, centre, 10)
    }

    fn stored_at(p: &ModelProfile, id: &str, centre: f64, end_ns: i64) -> StoredSketches {
        let mut s = p.features[0].profile.empty_sketch();
        for v in values(centre, 400) {
            s.add(v);
        }
        StoredSketches {
            device: DeviceId::new(id).unwrap(),
            received_ns: 0,
            batch: SketchBatch {
                stream: "sketch:m:1".into(),
                seq: 1,
                model: "m".into(),
                version: 1,
                start_ns: end_ns - 10,
                end_ns,
                vectors: 400,
                features: vec![SignalSketch {
                    name: "x".into(),
                    bins: s.bins_id(),
                    n: s.n,
                    dropped: s.dropped,
                    sum: s.sum,
                    sum_sq: s.sum_sq,
                    min: Some(s.min),
                    max: Some(s.max),
                    counts: s.counts,
                }],
                outputs: vec![],
                detections: vec![],
            },
        }
    }

    fn fleet() -> BTreeMap<DeviceId, Device> {
        [
            device("press-1", "plant-a", "2.2"),
            device("press-2", "plant-a", "2.2"),
            device("press-3", "plant-b", "2.2"),
            device("press-4", "plant-b", "2.2"),
            device("press-5", "plant-a", "2.3"),
            device("press-6", "plant-b", "2.3"),
        ]
        .into_iter()
        .map(|d| (d.id.clone(), d))
        .collect()
    }

    fn spec() -> ReportSpec {
        ReportSpec {
            from_ns: 0,
            to_ns: 100,
            by: vec![
                Dimension::Device,
                Dimension::Site,
                Dimension::Firmware,
                Dimension::Tag("line".into()),
            ],
            psi_threshold: DEFAULT_PSI_THRESHOLD,
            min_count: DEFAULT_MIN_COUNT,
        }
    }

    fn run(shifted: &[&str]) -> SignalDrift {
        let p = profile();
        let batches: Vec<StoredSketches> = (1..=6)
            .map(|i| {
                let id = format!("press-{i}");
                let centre = if shifted.contains(&id.as_str()) {
                    1.5
                } else {
                    0.0
                };
                stored(&p, &id, centre)
            })
            .collect();
        let r = build("m", 1, &p, &batches, &fleet(), &spec());
        assert_eq!((r.batches, r.devices), (6, 6));
        r.signals.into_iter().next().unwrap()
    }

    #[test]
    fn drift_on_one_firmware_is_attributed_to_it() {
        let s = run(&["press-5", "press-6"]);
        let a = s.attribution.expect("drift found");
        assert_eq!(a.by, "firmware");
        assert_eq!(
            (a.drifting, a.steady),
            (vec!["2.3".to_string()], vec!["2.2".to_string()])
        );
        assert!(
            a.summary.contains("only on firmware 2.3 (2 of 6"),
            "{}",
            a.summary
        );
        let firmware = &s.segments["firmware"];
        assert!(
            firmware
                .iter()
                .find(|g| g.value == "2.3")
                .unwrap()
                .score
                .as_ref()
                .unwrap()
                .drifted
        );
        assert!(
            !firmware
                .iter()
                .find(|g| g.value == "2.2")
                .unwrap()
                .score
                .as_ref()
                .unwrap()
                .drifted
        );
    }

    #[test]
    fn drift_on_one_device_is_attributed_to_the_device() {
        // Each device has a line of its own: the tag says no more than the
        // device id, so the device is named.
        let a = run(&["press-3"]).attribution.unwrap();
        assert_eq!(
            (a.by.as_str(), a.drifting.clone()),
            ("device", vec!["press-3".to_string()])
        );
        assert!(
            a.summary.contains("1 of 6 judged devices: press-3"),
            "{}",
            a.summary
        );
        let s = run(&["press-1", "press-4"]);
        let a = s.attribution.unwrap();
        // Two devices on different sites, firmware and lines: only devices.
        assert_eq!((a.by.as_str(), a.drifting.len()), ("device", 2));
    }

    #[test]
    fn the_hub_detector_finds_where_a_device_changed() {
        let p = profile();
        let mut batches = Vec::new();
        for w in 0..20i64 {
            let end = (w + 1) * 100;
            batches.push(stored_at(&p, "press-1", 0.0, end));
            let centre = if w < 10 { 0.0 } else { 1.5 };
            batches.push(stored_at(&p, "press-2", centre, end));
        }
        let r = build("m", 1, &p, &batches, &fleet(), &spec());
        assert!(
            r.hub_detections.iter().all(|d| d.device == "press-2"),
            "{:?}",
            r.hub_detections
        );
        let first = &r.hub_detections[0];
        // The shift starts with window 11 (ending at 1100).
        assert!((1100..=1400).contains(&first.window_end_ns), "{first:?}");
        assert!(first.z > 2.0, "{first:?}");
    }

    #[test]
    fn no_drift_and_fleet_wide_drift() {
        let s = run(&[]);
        assert!(s.attribution.is_none());
        assert!(!s.overall.unwrap().drifted);
        let all = [
            "press-1", "press-2", "press-3", "press-4", "press-5", "press-6",
        ];
        assert_eq!(run(&all).attribution.unwrap().by, "fleet");
    }
}
