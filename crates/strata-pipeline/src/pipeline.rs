//! The pipeline: built once from its configuration (names resolved to
//! indices, every value checked), then fed batches of readings.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use rustfft::FftPlannerScalar;
use strata_proto::{SignalSeries, TelemetryBatch};

use crate::config::{PipelineConfig, Unlisted, WindowConfig};
use crate::error::{Error, Result};
use crate::features::{FeatureSet, MAX_FFT_LEN, Spectrum, band_name, bin_frequency};
use crate::join::{Joiner, Source, VectorStats};
use crate::output::{Output, VectorSchema};
use crate::transform::{BAD, Chain, GOOD, Reading, SignalStats, interval_ns};
use crate::window::{WindowState, WindowStats};

/// Most signals an unlisted-`pass` pipeline takes on beyond its configured
/// ones; series of further new names are dropped (counted in
/// [`Stats::unknown_series`]) so a misbehaving source cannot exhaust memory.
pub const MAX_UNLISTED_SIGNALS: usize = 4096;

/// Longest signal, window or vector name, in bytes (as on the wire).
const MAX_NAME_LEN: usize = 128;
/// The most windows of one config a reading may be in at once (size over
/// hop): 10 minutes hopping every 60 ms.
const MAX_WINDOWS_OPEN: i64 = 10_000;
/// Longest unit, in bytes (as on the wire).
const MAX_UNIT_LEN: usize = 32;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Counters since the pipeline was built: everything dropped, flagged or
/// given up, so that nothing disappears silently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Series whose columns had different lengths (dropped whole).
    pub malformed_series: u64,
    /// Series of signals the pipeline does not take: unlisted with
    /// `unlisted = "drop"`, beyond [`MAX_UNLISTED_SIGNALS`], named like
    /// another signal's output, or with a name the hub would refuse
    /// (not 1..=128 of `[A-Za-z0-9_.:-]`).
    pub unknown_series: u64,
    /// Per signal, by output name.
    pub signals: Vec<(String, SignalStats)>,
    /// Per window and signal, as `<window>.<signal>`.
    pub windows: Vec<(String, WindowStats)>,
    /// Per vector.
    pub vectors: Vec<(String, VectorStats)>,
}

/// The edge's stream preprocessing: per-signal transforms, windows and
/// feature vectors. Deterministic: the same readings give the same output
/// however they are split into pushes.
#[derive(Debug)]
pub struct Pipeline {
    id: u64,
    unlisted: Unlisted,
    /// One chain per signal ("slot").
    chains: Vec<Chain>,
    by_input: HashMap<String, usize>,
    output_names: HashSet<String>,
    /// Per slot, the window states it feeds.
    slot_windows: Vec<Vec<usize>>,
    windows: Vec<WindowState>,
    /// Per window state, `<window>.<signal>`.
    window_names: Vec<String>,
    /// Per window state, (vector, source index in that vector).
    window_vectors: Vec<Vec<(usize, usize)>>,
    joiners: Vec<Joiner>,
    configured_slots: usize,
    malformed_series: u64,
    unknown_series: u64,
}

fn valid_name(s: &str, allow_dot: bool) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-') || (allow_dot && b == b'.')
        })
}

fn check_name(key: String, name: &str, allow_dot: bool) -> Result<()> {
    if valid_name(name, allow_dot) {
        return Ok(());
    }
    let chars = if allow_dot {
        "[A-Za-z0-9_.:-]"
    } else {
        "[A-Za-z0-9_:-] (no `.`)"
    };
    Err(Error::config(
        key,
        format!("{name:?} is not a valid name: use 1..={MAX_NAME_LEN} of {chars}"),
    ))
}

impl Pipeline {
    /// Builds a pipeline, checking every value of `config`. Errors name the
    /// offending key, e.g. `pipeline.windows[1].hop_ms: 0 must be > 0`.
    pub fn new(config: &PipelineConfig) -> Result<Pipeline> {
        let mut p = Pipeline {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            unlisted: config.unlisted,
            chains: Vec::new(),
            by_input: HashMap::new(),
            output_names: HashSet::new(),
            slot_windows: Vec::new(),
            windows: Vec::new(),
            window_names: Vec::new(),
            window_vectors: Vec::new(),
            joiners: Vec::new(),
            configured_slots: 0,
            malformed_series: 0,
            unknown_series: 0,
        };
        p.add_signals(config)?;
        let features = p.add_windows(config)?;
        p.add_vectors(config, &features)?;
        for (i, w) in config.windows.iter().enumerate() {
            let used = p
                .window_names
                .iter()
                .zip(&p.window_vectors)
                .any(|(name, vectors)| {
                    name.split_once('.')
                        .is_some_and(|(window, _)| window == w.name)
                        && !vectors.is_empty()
                });
            if !used {
                return Err(Error::config(
                    format!("pipeline.windows[{i}]"),
                    format!(
                        "window {:?} is used by no vector; add its features to a vector or remove it",
                        w.name
                    ),
                ));
            }
        }
        p.configured_slots = p.chains.len();
        Ok(p)
    }

    fn add_slot(&mut self, input: &str, chain: Chain) -> usize {
        let slot = self.chains.len();
        self.by_input.insert(input.to_owned(), slot);
        self.output_names.insert(chain.name.clone());
        self.chains.push(chain);
        self.slot_windows.push(Vec::new());
        slot
    }

    fn add_signals(&mut self, config: &PipelineConfig) -> Result<()> {
        let inputs: HashSet<&str> = config.signals.iter().map(|s| s.name.as_str()).collect();
        for (i, s) in config.signals.iter().enumerate() {
            let key = |field: &str| format!("pipeline.signals[{i}].{field}");
            if s.name.is_empty() {
                return Err(Error::config(key("name"), "must not be empty"));
            }
            if self.by_input.contains_key(&s.name) {
                return Err(Error::config(
                    key("name"),
                    format!("signal {:?} is configured twice", s.name),
                ));
            }
            let chain = Chain::new(i, s)?;
            let name_key = if s.rename.is_some() {
                key("rename")
            } else {
                key("name")
            };
            check_name(name_key.clone(), &chain.name, true)?;
            if self.output_names.contains(&chain.name) {
                return Err(Error::config(
                    name_key,
                    format!("two signals are output as {:?}", chain.name),
                ));
            }
            if chain.name != s.name && inputs.contains(chain.name.as_str()) {
                return Err(Error::config(
                    name_key,
                    format!(
                        "{:?} is also an input signal's name; outputs must not collide with inputs",
                        chain.name
                    ),
                ));
            }
            if let Some(unit) = &chain.unit
                && (unit.len() > MAX_UNIT_LEN || unit.chars().any(char::is_control))
            {
                let field = if s.convert.is_some() {
                    "convert"
                } else {
                    "unit"
                };
                return Err(Error::config(
                    key(field),
                    format!(
                        "unit {unit:?} is longer than {MAX_UNIT_LEN} bytes or has control characters"
                    ),
                ));
            }
            self.add_slot(&s.name, chain);
        }
        Ok(())
    }

    /// Slot of the output signal `name` for a window, made if unconfigured.
    fn window_slot(&mut self, key: String, name: &str, config: &PipelineConfig) -> Result<usize> {
        if let Some(slot) = self.chains.iter().position(|c| c.name == name) {
            return Ok(slot);
        }
        if let Some(s) = config.signals.iter().find(|s| s.name == name) {
            return Err(Error::config(
                key,
                format!(
                    "signal {name:?} is renamed to {:?}; windows use output names",
                    s.rename.as_deref().unwrap_or(name)
                ),
            ));
        }
        check_name(key, name, true)?;
        Ok(self.add_slot(name, Chain::identity(name)))
    }

    /// Adds the window states; returns the map from feature name to
    /// (window state, index in its features).
    fn add_windows(
        &mut self,
        config: &PipelineConfig,
    ) -> Result<HashMap<String, Option<(usize, usize)>>> {
        let mut planner = FftPlannerScalar::<f64>::new();
        let mut names = HashSet::new();
        let mut features: HashMap<String, Option<(usize, usize)>> = HashMap::new();
        for (i, w) in config.windows.iter().enumerate() {
            let key = |field: &str| format!("pipeline.windows[{i}].{field}");
            check_name(key("name"), &w.name, false)?;
            if !names.insert(w.name.as_str()) {
                return Err(Error::config(
                    key("name"),
                    format!("two windows are named {:?}", w.name),
                ));
            }
            let size = interval_ns(&key("size_ms"), w.size_ms)?;
            let hop = match w.hop_ms {
                None => size,
                Some(ms) => interval_ns(&key("hop_ms"), ms)?,
            };
            if hop > size {
                return Err(Error::config(
                    key("hop_ms"),
                    format!("{} must be <= size_ms ({})", hop / 1_000_000, w.size_ms),
                ));
            }
            // Each reading is in size/hop windows at once: bounded, so one
            // config (or a training spec sent to the hub) cannot ask for
            // billions of windows per reading.
            if size / hop > MAX_WINDOWS_OPEN {
                return Err(Error::config(
                    key("hop_ms"),
                    format!(
                        "{} makes a reading part of {} windows at once; at most {MAX_WINDOWS_OPEN}",
                        hop / 1_000_000,
                        size / hop
                    ),
                ));
            }
            if w.min_readings == 0 {
                return Err(Error::config(key("min_readings"), "0 must be >= 1"));
            }
            if w.features.is_empty() && w.fft_bands_hz.is_empty() {
                return Err(Error::config(
                    key("features"),
                    "the window computes nothing: list features or fft_bands_hz",
                ));
            }
            let mut seen = HashSet::new();
            for (j, f) in w.features.iter().enumerate() {
                if !seen.insert(*f) {
                    return Err(Error::config(
                        format!("pipeline.windows[{i}].features[{j}]"),
                        format!("{:?} is listed twice", f.name()),
                    ));
                }
            }
            let mut band_names: Vec<String> = Vec::new();
            for (j, &[lo, hi]) in w.fft_bands_hz.iter().enumerate() {
                let name = band_name(lo, hi);
                if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo < hi) {
                    return Err(Error::config(
                        format!("pipeline.windows[{i}].fft_bands_hz[{j}]"),
                        format!("[{lo}, {hi}] must be finite with 0 <= lo < hi"),
                    ));
                }
                if band_names.contains(&name) {
                    return Err(Error::config(
                        format!("pipeline.windows[{i}].fft_bands_hz[{j}]"),
                        format!("[{lo}, {hi}] is listed twice"),
                    ));
                }
                band_names.push(name);
            }
            if w.signals.is_empty() {
                return Err(Error::config(
                    key("signals"),
                    "must name at least one signal",
                ));
            }
            for (j, signal) in w.signals.iter().enumerate() {
                let skey = format!("pipeline.windows[{i}].signals[{j}]");
                if w.signals[..j].contains(signal) {
                    return Err(Error::config(skey, format!("{signal:?} is listed twice")));
                }
                let slot = self.window_slot(skey, signal, config)?;
                let spectrum = self.spectrum(i, w, slot, size, &mut planner)?;
                let set = FeatureSet::new(w.features.clone(), spectrum);
                let state = self.windows.len();
                let prefix = format!("{}.{}", w.name, signal);
                let all = w
                    .features
                    .iter()
                    .map(|f| f.name().to_owned())
                    .chain(band_names.iter().cloned());
                for (index, feature) in all.enumerate() {
                    let full = format!("{prefix}.{feature}");
                    // Dotted signal names could make two features look alike.
                    features
                        .entry(full)
                        .and_modify(|e| *e = None)
                        .or_insert(Some((state, index)));
                }
                self.windows
                    .push(WindowState::new(size, hop, w.min_readings, set));
                self.window_names.push(prefix);
                self.window_vectors.push(Vec::new());
                self.slot_windows[slot].push(state);
            }
        }
        Ok(features)
    }

    fn spectrum(
        &self,
        i: usize,
        w: &WindowConfig,
        slot: usize,
        size: i64,
        planner: &mut FftPlannerScalar<f64>,
    ) -> Result<Option<Spectrum>> {
        if w.fft_bands_hz.is_empty() {
            return Ok(None);
        }
        let key = |field: &str| format!("pipeline.windows[{i}].{field}");
        let period = match w.sample_rate_hz {
            Some(rate) => {
                if !(rate.is_finite() && (1e-6..=1e9).contains(&rate)) {
                    return Err(Error::config(
                        key("sample_rate_hz"),
                        format!("{rate} must be a number in 1e-6..=1e9"),
                    ));
                }
                (1e9 / rate).round() as i64
            }
            None => self.chains[slot].resample_ns().ok_or_else(|| {
                Error::config(
                    key("fft_bands_hz"),
                    format!(
                        "needs a sample rate: signal {:?} has no resample_ms; set sample_rate_hz or resample the signal",
                        self.chains[slot].name
                    ),
                )
            })?,
        };
        let n = size / period;
        if !(2..=MAX_FFT_LEN as i64).contains(&n) {
            return Err(Error::config(
                key("size_ms"),
                format!(
                    "{} ms holds {n} samples of {period} ns; the FFT needs 2..={MAX_FFT_LEN}",
                    size / 1_000_000
                ),
            ));
        }
        let n = n as usize;
        let spectrum = Spectrum::new(planner, period, n, &w.fft_bands_hz);
        let fs = 1e9 / period as f64;
        for (j, &[lo, hi]) in w.fft_bands_hz.iter().enumerate() {
            let has_bin = (0..=n / 2).any(|k| {
                let f = bin_frequency(k, fs, n);
                lo <= f && f < hi
            });
            if !has_bin {
                return Err(Error::config(
                    format!("pipeline.windows[{i}].fft_bands_hz[{j}]"),
                    format!(
                        "[{lo}, {hi}) holds no FFT bin: bins are {} Hz apart from 0 to {} Hz",
                        fs / n as f64,
                        bin_frequency(n / 2, fs, n)
                    ),
                ));
            }
        }
        Ok(Some(spectrum))
    }

    fn add_vectors(
        &mut self,
        config: &PipelineConfig,
        features: &HashMap<String, Option<(usize, usize)>>,
    ) -> Result<()> {
        let mut names = HashSet::new();
        for (i, v) in config.vectors.iter().enumerate() {
            let key = |field: &str| format!("pipeline.vectors[{i}].{field}");
            check_name(key("name"), &v.name, true)?;
            if !names.insert(v.name.as_str()) {
                return Err(Error::config(
                    key("name"),
                    format!("two vectors are named {:?}", v.name),
                ));
            }
            if v.features.is_empty() {
                return Err(Error::config(
                    key("features"),
                    "must list at least one feature",
                ));
            }
            let mut sources: Vec<Source> = Vec::new();
            let mut hop: Option<(i64, &str)> = None;
            for (j, f) in v.features.iter().enumerate() {
                let fkey = format!("pipeline.vectors[{i}].features[{j}]");
                if v.features[..j].contains(f) {
                    return Err(Error::config(fkey, format!("{f:?} is listed twice")));
                }
                let (state, index) = match features.get(f) {
                    Some(Some(found)) => *found,
                    Some(None) => {
                        return Err(Error::config(
                            fkey,
                            format!(
                                "{f:?} is ambiguous: signal names with dots make two features look alike"
                            ),
                        ));
                    }
                    None => return Err(Error::config(fkey, self.unknown_feature(f, features))),
                };
                let state_hop = self.windows[state].hop();
                let window = &self.window_names[state];
                match hop {
                    None => hop = Some((state_hop, window)),
                    Some((h, first)) if h != state_hop => {
                        return Err(Error::config(
                            fkey,
                            format!(
                                "{window} has hop {} ms but {first} has {} ms; a vector joins windows with the same hop",
                                state_hop / 1_000_000,
                                h / 1_000_000
                            ),
                        ));
                    }
                    Some(_) => {}
                }
                match sources.iter_mut().find(|s| s.window == state) {
                    Some(s) => s.picks.push((index, j)),
                    None => sources.push(Source {
                        window: state,
                        picks: vec![(index, j)],
                    }),
                }
            }
            let vector = self.joiners.len();
            for (k, s) in sources.iter().enumerate() {
                self.window_vectors[s.window].push((vector, k));
            }
            self.joiners.push(Joiner::new(
                VectorSchema::new(&v.name, v.features.clone()),
                sources,
            ));
        }
        Ok(())
    }

    fn unknown_feature(
        &self,
        f: &str,
        features: &HashMap<String, Option<(usize, usize)>>,
    ) -> String {
        let window = f.split('.').next().unwrap_or("");
        let mut same_window: Vec<&str> = features
            .keys()
            .filter(|k| k.split('.').next() == Some(window))
            .map(String::as_str)
            .collect();
        same_window.sort_unstable();
        if same_window.is_empty() {
            let mut windows: Vec<&str> = self
                .window_names
                .iter()
                .filter_map(|n| n.split('.').next())
                .collect();
            windows.dedup();
            format!(
                "no window {window:?} (features are `<window>.<signal>.<feature>`; windows: {})",
                windows.join(", ")
            )
        } else {
            format!(
                "no feature {f:?}; window {window:?} has {}",
                same_window.join(", ")
            )
        }
    }

    /// The vectors this pipeline emits, in configuration order.
    pub fn vector_schemas(&self) -> impl Iterator<Item = &VectorSchema> {
        self.joiners.iter().map(|j| &j.schema)
    }

    /// The schema of vector `name`: check a model's input width against it
    /// when the model is loaded.
    pub fn vector_schema(&self, name: &str) -> Option<&VectorSchema> {
        self.vector_schemas().find(|s| s.name() == name)
    }

    /// Pushes every series of a batch, in order. The batch's stream and
    /// sequence number are the source's and play no part.
    pub fn push_batch(&mut self, batch: &TelemetryBatch, out: &mut Output) {
        for series in &batch.signals {
            self.push_series(series, out);
        }
    }

    /// Pushes one series: its readings must come later than the signal's
    /// earlier readings (late ones are dropped and counted). Transformed
    /// readings and completed feature vectors are appended to `out`.
    pub fn push_series(&mut self, series: &SignalSeries, out: &mut Output) {
        out.bind(self.id);
        let n = series.values.len();
        if series.ts_ns.len() != n || (!series.quality.is_empty() && series.quality.len() != n) {
            self.malformed_series += 1;
            return;
        }
        let Some(slot) = self.slot_of(&series.name) else {
            self.unknown_series += 1;
            return;
        };
        let chain = &mut self.chains[slot];
        if chain.input_unit != series.unit {
            chain.input_unit.clone_from(&series.unit);
        }
        let mut dst = None;
        for i in 0..n {
            let quality = series.quality.get(i).copied().unwrap_or(GOOD);
            let chain = &mut self.chains[slot];
            if let Some(r) = chain.step(series.ts_ns[i], series.values[i], quality) {
                let index = *dst
                    .get_or_insert_with(|| out.series_for(slot, &chain.name, chain.output_unit()));
                out.push_reading(index, r);
                self.feed_windows(slot, r, out);
            }
        }
    }

    /// Ends the stream (e.g. at the end of a backtest): emits every signal's
    /// open resample interval. Windows still open stay open: a partial
    /// window never produces features.
    pub fn finish(&mut self, out: &mut Output) {
        out.bind(self.id);
        for slot in 0..self.chains.len() {
            if let Some(r) = self.chains[slot].finish() {
                let chain = &self.chains[slot];
                let index = out.series_for(slot, &chain.name, chain.output_unit());
                out.push_reading(index, r);
                self.feed_windows(slot, r, out);
            }
        }
    }

    fn slot_of(&mut self, name: &str) -> Option<usize> {
        if let Some(&slot) = self.by_input.get(name) {
            return Some(slot);
        }
        let room = self.chains.len() - self.configured_slots < MAX_UNLISTED_SIGNALS;
        // A name the hub would refuse would cost the whole uplink batch.
        if self.unlisted == Unlisted::Drop
            || !room
            || self.output_names.contains(name)
            || !valid_name(name, true)
        {
            return None;
        }
        Some(self.add_slot(name, Chain::identity(name)))
    }

    #[inline]
    fn feed_windows(&mut self, slot: usize, r: Reading, out: &mut Output) {
        let usable = r.quality != BAD;
        for &w in &self.slot_windows[slot] {
            let joiners = &mut self.joiners;
            let subscribers = &self.window_vectors[w];
            let advanced = self.windows[w].push(r.ts, r.value, usable, &mut |end, features| {
                for &(vector, source) in subscribers {
                    joiners[vector].contribute(source, end, features);
                }
            });
            if advanced {
                for &(vector, _) in subscribers {
                    let joiner = &mut self.joiners[vector];
                    let watermark = joiner
                        .sources
                        .iter()
                        .map(|s| self.windows[s.window].watermark)
                        .min()
                        .unwrap_or(i64::MIN);
                    joiner.drain(watermark, out);
                }
            }
        }
    }

    /// Readings and series dropped as unusable since the pipeline was built
    /// (malformed or unknown series, plus every signal's
    /// [`SignalStats::dropped`]), without building a [`Stats`] snapshot.
    pub fn dropped(&self) -> u64 {
        self.malformed_series
            + self.unknown_series
            + self.chains.iter().map(|c| c.stats.dropped()).sum::<u64>()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        Stats {
            malformed_series: self.malformed_series,
            unknown_series: self.unknown_series,
            signals: self
                .chains
                .iter()
                .map(|c| (c.name.clone(), c.stats.clone()))
                .collect(),
            windows: self
                .window_names
                .iter()
                .zip(&self.windows)
                .map(|(n, w)| (n.clone(), w.stats.clone()))
                .collect(),
            vectors: self
                .joiners
                .iter()
                .map(|j| (j.schema.name().to_owned(), j.stats.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn build(toml_text: &str) -> Result<Pipeline> {
        let config: PipelineConfig = toml::from_str(toml_text).expect("config parses");
        Pipeline::new(&config)
    }

    fn error(toml_text: &str) -> String {
        build(toml_text).expect_err("config is refused").to_string()
    }

    fn series(name: &str, ts: &[i64], values: &[f64]) -> SignalSeries {
        SignalSeries {
            name: name.into(),
            unit: "raw".into(),
            ts_ns: ts.to_vec(),
            values: values.to_vec(),
            quality: Vec::new(),
        }
    }

    const TWO_SIGNALS: &str = r#"
        [[signals]]
        name = "temperature"
        rename = "temp_c"
        convert = { from = "degF", to = "Cel" }

        [[windows]]
        name = "w"
        signals = ["temp_c", "current"]
        size_ms = 1000
        features = ["mean", "max"]

        [[vectors]]
        name = "machine"
        features = ["w.current.max", "w.temp_c.mean"]
    "#;

    #[test]
    fn the_example_from_the_issue_builds() {
        let text = r#"
            [pipeline]
            [[pipeline.signals]]
            name = "temperature"
            rename = "temp_c"
            scale = 0.1
            offset = 0.0
            convert = { from = "degF", to = "Cel" }
            range = { min = -40.0, max = 150.0, action = "flag" }
            deadband = 0.5
            resample_ms = 100
            resample = "mean"

            [[pipeline.signals]]
            name = "vibration"
            resample_ms = 1

            [[pipeline.windows]]
            name = "vib"
            signals = ["vibration"]
            size_ms = 1000
            hop_ms = 500
            features = ["mean", "std", "min", "max", "rms", "peak_to_peak", "kurtosis", "skewness"]
            fft_bands_hz = [[10.0, 50.0], [50.0, 200.0]]

            [[pipeline.windows]]
            name = "temp"
            signals = ["temp_c"]
            size_ms = 1000
            hop_ms = 500
            features = ["mean"]

            [[pipeline.vectors]]
            name = "machine"
            features = ["vib.vibration.rms", "vib.vibration.kurtosis", "vib.vibration.band_50_200", "temp.temp_c.mean"]
        "#;
        #[derive(serde::Deserialize)]
        struct Agent {
            pipeline: PipelineConfig,
        }
        let agent: Agent = toml::from_str(text).unwrap();
        let p = Pipeline::new(&agent.pipeline).unwrap();
        let schema = p.vector_schema("machine").unwrap();
        assert_eq!(schema.width(), 4);
        assert_eq!(schema.position("temp.temp_c.mean"), Some(3));
        assert_eq!(p.vector_schemas().count(), 1);
    }

    #[test]
    fn unknown_keys_and_features_are_refused_by_the_parser() {
        let err = toml::from_str::<PipelineConfig>("[[signals]]\nname = \"a\"\nscael = 2.0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("scael"), "{err}");
        let err = toml::from_str::<PipelineConfig>(
            "[[windows]]\nname = \"w\"\nsignals = [\"a\"]\nsize_ms = 1\nfeatures = [\"median\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("median") && err.contains("kurtosis"), "{err}");
    }

    #[test]
    fn config_errors_name_the_key_and_value() {
        let window = |extra: &str| {
            format!(
                "[[windows]]\nname = \"w\"\nsignals = [\"a\"]\nsize_ms = 1000\nfeatures = [\"mean\"]\n{extra}\n[[vectors]]\nname = \"v\"\nfeatures = [\"w.a.mean\"]\n"
            )
        };
        assert_eq!(
            error(&format!(
                "[[windows]]\nname = \"x\"\nsignals = [\"a\"]\nsize_ms = 1\nfeatures = [\"mean\"]\n{}",
                window("hop_ms = 0")
            )),
            "pipeline.windows[1].hop_ms: 0 must be > 0"
        );
        assert_eq!(
            error(&window("hop_ms = 2000")),
            "pipeline.windows[0].hop_ms: 2000 must be <= size_ms (1000)"
        );
        assert_eq!(
            error(
                &window(
                    "size_ms = 31622400000
hop_ms = 1"
                )
                .replace(
                    "size_ms = 1000
",
                    ""
                )
            ),
            "pipeline.windows[0].hop_ms: 1 makes a reading part of 31622400000 windows at once; at most 10000"
        );
        assert!(
            error(&window("min_readings = 0")).starts_with("pipeline.windows[0].min_readings:")
        );
        let err = error(&window("fft_bands_hz = [[10.0, 20.0]]"));
        assert!(
            err.starts_with("pipeline.windows[0].fft_bands_hz: needs a sample rate: signal \"a\""),
            "{err}"
        );
        let err = error(&window(
            "fft_bands_hz = [[20.0, 10.0]]\nsample_rate_hz = 100.0",
        ));
        assert!(
            err.starts_with("pipeline.windows[0].fft_bands_hz[0]: [20, 10]"),
            "{err}"
        );
        let err = error(&window(
            "fft_bands_hz = [[60.0, 70.0]]\nsample_rate_hz = 100.0",
        ));
        assert!(
            err.contains("holds no FFT bin") && err.contains("from 0 to 50 Hz"),
            "{err}"
        );
        let err = error(&window("fft_bands_hz = [[0.0, 1.0]]\nsample_rate_hz = 1.0"));
        assert!(
            err.starts_with("pipeline.windows[0].size_ms: 1000 ms holds 1 samples"),
            "{err}"
        );
        let err = error(&window("").replace("w.a.mean", "w.a.median"));
        assert_eq!(
            err,
            "pipeline.vectors[0].features[0]: no feature \"w.a.median\"; window \"w\" has w.a.mean"
        );
        let err = error(&window("").replace("w.a.mean\"]", "w.a.mean\", \"w.a.mean\"]"));
        assert!(
            err.starts_with("pipeline.vectors[0].features[1]: \"w.a.mean\" is listed twice"),
            "{err}"
        );
        let err = error(
            &window("").replace("[[vectors]]\nname = \"v\"\nfeatures = [\"w.a.mean\"]\n", ""),
        );
        assert!(
            err.starts_with("pipeline.windows[0]: window \"w\" is used by no vector"),
            "{err}"
        );
        let err = error(&window("").replace("name = \"w\"", "name = \"w.1\""));
        assert!(
            err.starts_with("pipeline.windows[0].name: \"w.1\" is not a valid name"),
            "{err}"
        );
        let err = error(&format!(
            "[[signals]]\nname = \"a\"\nrename = \"b\"\n{}",
            window("")
        ));
        assert_eq!(
            err,
            "pipeline.windows[0].signals[0]: signal \"a\" is renamed to \"b\"; windows use output names"
        );
        let err = error("[[signals]]\nname = \"a\"\n[[signals]]\nname = \"a\"\n");
        assert!(
            err.starts_with("pipeline.signals[1].name: signal \"a\" is configured twice"),
            "{err}"
        );
        let err = error(
            "[[signals]]\nname = \"a\"\nrename = \"c\"\n[[signals]]\nname = \"b\"\nrename = \"c\"\n",
        );
        assert!(
            err.starts_with("pipeline.signals[1].rename: two signals are output as \"c\""),
            "{err}"
        );
        let err = error(
            "[[signals]]\nname = \"a\"\nrename = \"b\"\n[[signals]]\nname = \"b\"\nrename = \"c\"\n",
        );
        assert!(
            err.starts_with("pipeline.signals[0].rename: \"b\" is also an input"),
            "{err}"
        );
        let err = error("[[signals]]\nname = \"a\"\nrename = \"a b\"\n");
        assert!(
            err.starts_with("pipeline.signals[0].rename: \"a b\" is not a valid name"),
            "{err}"
        );
        let err = error(
            "[[signals]]\nname = \"a\"\nunit = \"x\"\nconvert = { from = \"K\", to = \"Cel\" }\n",
        );
        assert!(
            err.starts_with("pipeline.signals[0].unit: set either"),
            "{err}"
        );
        let err = error(
            "[[windows]]\nname = \"a\"\nsignals = [\"x\"]\nsize_ms = 1000\nfeatures = [\"mean\"]\n\
             [[windows]]\nname = \"b\"\nsignals = [\"x\"]\nsize_ms = 1000\nhop_ms = 500\nfeatures = [\"mean\"]\n\
             [[vectors]]\nname = \"v\"\nfeatures = [\"a.x.mean\", \"b.x.mean\"]\n",
        );
        assert!(
            err.starts_with(
                "pipeline.vectors[0].features[1]: b.x has hop 500 ms but a.x has 1000 ms"
            ),
            "{err}"
        );
    }

    #[test]
    fn transforms_rename_and_convert_and_keep_the_wire_shape() {
        let mut p = build(TWO_SIGNALS).unwrap();
        let mut out = Output::new();
        let mut s = series("temperature", &[1, 2, 3], &[32.0, 212.0, f64::NAN]);
        s.quality = vec![0, 1, 0];
        p.push_series(&s, &mut out);
        let t = &out.series()[0];
        assert_eq!((t.name.as_str(), t.unit.as_str()), ("temp_c", "Cel"));
        assert_eq!(t.ts_ns, vec![1, 2]);
        assert!(t.values[0].abs() < 1e-9 && (t.values[1] - 100.0).abs() < 1e-9);
        assert_eq!(t.quality, vec![0, 1]);
        // An unconfigured signal passes through with its unit; quality stays
        // empty while every reading is Good.
        p.push_series(&series("current", &[5, 6], &[1.0, 2.0]), &mut out);
        let c = &out.series()[1];
        assert_eq!((c.name.as_str(), c.unit.as_str()), ("current", "raw"));
        assert!(c.quality.is_empty());
        // A second push appends to the same series.
        p.push_series(&series("current", &[7], &[3.0]), &mut out);
        assert_eq!(out.series().len(), 2);
        assert_eq!(out.series()[1].values, vec![1.0, 2.0, 3.0]);
        let stats = p.stats();
        assert_eq!(stats.signals[0].1.non_finite, 1);
        assert_eq!(p.dropped(), 1);
        // A late reading is a drop too.
        p.push_series(&series("current", &[6], &[9.0]), &mut out);
        assert_eq!(p.dropped(), 2);
        assert_eq!(p.stats().signals[1].1.late, 1);
    }

    #[test]
    fn a_vector_waits_for_all_its_windows() {
        let mut p = build(TWO_SIGNALS).unwrap();
        let mut out = Output::new();
        let s = 1000 * MS;
        p.push_series(
            &series("current", &[0, s / 2, s, 2 * s], &[1.0, 4.0, 2.0, 0.0]),
            &mut out,
        );
        assert!(
            out.vectors().is_empty(),
            "temperature has not closed a window yet"
        );
        p.push_series(
            &series("temperature", &[10, s + 10], &[212.0, 32.0]),
            &mut out,
        );
        let v = &out.vectors()[0];
        assert_eq!(out.vectors().len(), 1);
        assert_eq!((&*v.name, v.ts_ns), ("machine", s));
        assert_eq!(v.values[0], 4.0);
        assert!((v.values[1] - 100.0).abs() < 1e-4);
        assert_eq!(&v.names[..], ["w.current.max", "w.temp_c.mean"]);
        // Window [1s, 2s) closes for temperature at 2 s.
        out.clear();
        p.push_series(&series("temperature", &[2 * s], &[32.0]), &mut out);
        assert_eq!(out.vectors().len(), 1);
        assert_eq!(out.vectors()[0].ts_ns, 2 * s);
        assert_eq!(out.vectors()[0].values[0], 2.0);
        assert_eq!(
            p.stats().vectors,
            vec![(
                "machine".into(),
                VectorStats {
                    emitted: 2,
                    incomplete: 0,
                    overflowed: 0
                }
            )]
        );
    }

    #[test]
    fn quality_is_kept_when_a_push_starts_with_a_bad_reading() {
        let mut p = build("").unwrap();
        let mut out = Output::new();
        let mut s = series("x", &[1, 2], &[1.0, 2.0]);
        s.quality = vec![2, 0];
        p.push_series(&s, &mut out);
        assert_eq!(out.series()[0].quality, vec![2, 0]);
        s = series("x", &[3, 4], &[1.0, 2.0]);
        s.quality = vec![0, 1];
        p.push_series(&s, &mut out);
        assert_eq!(out.series()[0].quality, vec![2, 0, 0, 1]);
    }

    #[test]
    fn unlisted_signals_pass_or_drop() {
        let mut p = build("").unwrap();
        let mut out = Output::new();
        p.push_series(&series("x", &[1], &[1.0]), &mut out);
        assert_eq!(out.series().len(), 1);
        let mut p = build("unlisted = \"drop\"").unwrap();
        let mut out = Output::new();
        p.push_series(&series("x", &[1], &[1.0]), &mut out);
        assert!(out.is_empty());
        assert_eq!(p.stats().unknown_series, 1);
        // An input named like another signal's output would make two
        // series of one name in the uplink batch.
        let mut p = build("[[signals]]\nname = \"a\"\nrename = \"b\"\n").unwrap();
        let mut out = Output::new();
        p.push_series(&series("b", &[1], &[1.0]), &mut out);
        assert!(out.is_empty());
        assert_eq!(p.stats().unknown_series, 1);
        // So would a name the hub refuses.
        p.push_series(&series("b c", &[1], &[1.0]), &mut out);
        p.push_series(&series("", &[1], &[1.0]), &mut out);
        assert!(out.is_empty());
        assert_eq!(p.stats().unknown_series, 3);
    }

    #[test]
    fn unlisted_signals_are_capped() {
        let mut p = build("").unwrap();
        let mut out = Output::new();
        for i in 0..MAX_UNLISTED_SIGNALS + 3 {
            p.push_series(&series(&format!("s{i}"), &[1], &[1.0]), &mut out);
        }
        assert_eq!(out.series().len(), MAX_UNLISTED_SIGNALS);
        assert_eq!(p.stats().unknown_series, 3);
    }

    #[test]
    fn malformed_series_are_dropped_whole() {
        let mut p = build("").unwrap();
        let mut out = Output::new();
        p.push_series(&series("x", &[1, 2], &[1.0]), &mut out);
        let mut s = series("x", &[1, 2], &[1.0, 2.0]);
        s.quality = vec![0];
        p.push_series(&s, &mut out);
        assert!(out.is_empty());
        assert_eq!(p.stats().malformed_series, 2);
    }

    #[test]
    fn output_buffers_are_reused() {
        let mut p = build(TWO_SIGNALS).unwrap();
        let mut out = Output::new();
        let ts: Vec<i64> = (0..100).collect();
        let values = vec![1.0; 100];
        p.push_series(&series("current", &ts, &values), &mut out);
        let before = out.series()[0].values.as_ptr();
        out.clear();
        let ts: Vec<i64> = (100..200).collect();
        p.push_series(&series("current", &ts, &values), &mut out);
        assert_eq!(out.series()[0].values.as_ptr(), before);
        assert_eq!(out.series()[0].ts_ns, ts);
    }

    #[test]
    fn one_output_can_serve_two_pipelines() {
        let mut a = build("").unwrap();
        let mut b = build("").unwrap();
        let mut out = Output::new();
        a.push_series(&series("x", &[1], &[1.0]), &mut out);
        b.push_series(&series("y", &[1], &[2.0]), &mut out);
        let names: Vec<&str> = out.series().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["x", "y"]);
    }

    #[test]
    fn finish_flushes_resampling_with_the_input_unit() {
        let mut p = build("[[signals]]\nname = \"a\"\nresample_ms = 10\n").unwrap();
        let mut out = Output::new();
        p.push_series(&series("a", &[MS, 2 * MS], &[1.0, 2.0]), &mut out);
        assert!(out.is_empty());
        p.finish(&mut out);
        let s = &out.series()[0];
        assert_eq!(
            (s.unit.as_str(), s.ts_ns.as_slice(), s.values.as_slice()),
            ("raw", &[0][..], &[2.0][..])
        );
    }

    #[test]
    fn the_pipeline_can_move_between_threads() {
        fn send<T: Send + Sync>() {}
        send::<Pipeline>();
        send::<Output>();
    }
}
