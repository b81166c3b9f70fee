//! Drift at the edge: for a model whose deployment carries drift settings,
//! each input feature and each output is counted into a histogram over the
//! bins of the model version's reference profile, window by window; a
//! window's histograms leave as one `SketchBatch` (stream
//! `sketch:{model}:{version}`), so the hub measures drift without the
//! readings leaving the site. An optional streaming detector (ADWIN or
//! Page-Hinkley, river's parameters) watches every output value and its
//! detections ride along in the batch.

use strata_drift::detect::{Detector, DetectorParams};
use strata_drift::sketch::Sketch;
use strata_proto::sketch::sketch_stream;
use strata_proto::{Detection, DriftSettings, SignalSketch, SketchBatch};

/// One watched value: its position in the model's inputs or outputs.
struct Watched {
    index: usize,
    name: String,
    sketch: Sketch,
    empty: Sketch,
}

impl Watched {
    fn take(&mut self) -> SignalSketch {
        let s = std::mem::replace(&mut self.sketch, self.empty.clone());
        SignalSketch {
            name: self.name.clone(),
            bins: s.bins_id(),
            n: s.n,
            dropped: s.dropped,
            sum: s.sum,
            sum_sq: s.sum_sq,
            min: (s.n > 0).then_some(s.min),
            max: (s.n > 0).then_some(s.max),
            counts: s.counts,
        }
    }
}

/// The drift state of one model.
pub struct ModelDrift {
    model: String,
    version: u32,
    window_ns: i64,
    features: Vec<Watched>,
    outputs: Vec<Watched>,
    detector: Option<(String, DetectorParams)>,
    detectors: Vec<Box<dyn Detector + Send>>,
    detections: Vec<Detection>,
    start_ns: Option<i64>,
    end_ns: i64,
    vectors: u64,
}

impl ModelDrift {
    /// Drift state for `model` v`version` with these input and output
    /// names; the message says which setting is wrong.
    pub fn new(
        model: &str,
        version: u32,
        settings: &DriftSettings,
        inputs: &[String],
        outputs: &[String],
    ) -> Result<ModelDrift, String> {
        if settings.window_s == 0 {
            return Err("drift: window_s must be at least 1".into());
        }
        let watch = |edges: &std::collections::BTreeMap<String, Vec<f64>>,
                     names: &[String],
                     what: &str|
         -> Result<Vec<Watched>, String> {
            edges
                .iter()
                .map(|(name, e)| {
                    let index = names.iter().position(|n| n == name).ok_or_else(|| {
                        format!(
                            "drift: the model has no {what} {name:?} (it has: {})",
                            names.join(", ")
                        )
                    })?;
                    let sketch =
                        Sketch::new(e.clone()).map_err(|err| format!("drift: {name}: {err}"))?;
                    Ok(Watched {
                        index,
                        name: name.clone(),
                        empty: sketch.clone(),
                        sketch,
                    })
                })
                .collect()
        };
        let features = watch(&settings.features, inputs, "input")?;
        let outputs_w = watch(&settings.outputs, outputs, "output")?;
        let detector = settings
            .detector
            .as_ref()
            .map(|v| {
                let params: DetectorParams = serde_json::from_value(v.clone())
                    .map_err(|e| format!("drift: detector: {e}"))?;
                let kind = match params {
                    DetectorParams::Adwin(_) => "adwin",
                    DetectorParams::PageHinkley(_) => "page_hinkley",
                };
                Ok::<_, String>((kind.to_string(), params))
            })
            .transpose()?;
        let detectors = match &detector {
            Some((_, p)) => outputs_w.iter().map(|_| p.build()).collect(),
            None => Vec::new(),
        };
        Ok(ModelDrift {
            model: model.to_owned(),
            version,
            window_ns: i64::try_from(settings.window_s)
                .unwrap_or(i64::MAX / 1_000_000_000)
                .saturating_mul(1_000_000_000),
            features,
            outputs: outputs_w,
            detector,
            detectors,
            detections: Vec::new(),
            start_ns: None,
            end_ns: 0,
            vectors: 0,
        })
    }

    /// The stream its batches go on.
    pub fn stream(&self) -> String {
        sketch_stream(&self.model, self.version)
    }

    /// Counts one inference: the model's inputs and outputs at `ts_ns`.
    /// Returns the finished window first when this value starts a new one.
    pub fn observe(&mut self, ts_ns: i64, inputs: &[f32], outputs: &[f32]) -> Option<SketchBatch> {
        let done = match self.start_ns {
            Some(start) if ts_ns - start >= self.window_ns => self.take(),
            _ => None,
        };
        self.start_ns.get_or_insert(ts_ns);
        self.end_ns = self.end_ns.max(ts_ns);
        self.vectors += 1;
        for w in &mut self.features {
            w.sketch.add(f64::from(inputs[w.index]));
        }
        for (k, w) in self.outputs.iter_mut().enumerate() {
            let v = f64::from(outputs[w.index]);
            w.sketch.add(v);
            if let Some(d) = self.detectors.get_mut(k)
                && v.is_finite()
                && d.update(v)
            {
                self.detections.push(Detection {
                    signal: w.name.clone(),
                    detector: self
                        .detector
                        .as_ref()
                        .map(|(k, _)| k.clone())
                        .unwrap_or_default(),
                    ts_ns,
                    value: v,
                });
            }
        }
        done
    }

    /// The current window as a batch (seq 0: the outbox numbers it), or
    /// None when it is empty; the next window starts empty.
    pub fn take(&mut self) -> Option<SketchBatch> {
        let start = self.start_ns.take()?;
        let batch = SketchBatch {
            stream: self.stream(),
            seq: 0,
            model: self.model.clone(),
            version: self.version,
            start_ns: start,
            end_ns: self.end_ns,
            vectors: std::mem::take(&mut self.vectors),
            features: self.features.iter_mut().map(Watched::take).collect(),
            outputs: self.outputs.iter_mut().map(Watched::take).collect(),
            detections: std::mem::take(&mut self.detections),
        };
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn settings(detector: Option<serde_json::Value>) -> DriftSettings {
        DriftSettings {
            window_s: 10,
            features: BTreeMap::from([("b".to_string(), vec![0.0, 1.0, 2.0])]),
            outputs: BTreeMap::from([("y".to_string(), vec![0.0, 10.0])]),
            detector,
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn windows_close_on_time_and_count_what_the_model_saw() {
        let mut d =
            ModelDrift::new("m", 2, &settings(None), &names(&["a", "b"]), &names(&["y"])).unwrap();
        let s = 1_000_000_000;
        assert!(d.observe(0, &[9.0, 0.5], &[1.0]).is_none());
        assert!(d.observe(5 * s, &[9.0, 1.5], &[20.0]).is_none());
        let w = d
            .observe(10 * s, &[9.0, 5.0], &[f32::NAN])
            .expect("the first window closes");
        assert_eq!(
            (w.stream.as_str(), w.start_ns, w.end_ns, w.vectors),
            ("sketch:m:2", 0, 5 * s, 2)
        );
        assert_eq!(w.features[0].counts, vec![0, 1, 1, 0]);
        assert_eq!(w.outputs[0].counts, vec![0, 1, 1]);
        assert_eq!(
            (w.outputs[0].min, w.outputs[0].max),
            (Some(1.0), Some(20.0))
        );
        let w = d.take().unwrap();
        assert_eq!(w.features[0].counts, vec![0, 0, 0, 1]);
        assert_eq!(
            (w.outputs[0].n, w.outputs[0].dropped, w.outputs[0].min),
            (0, 1, None)
        );
        assert!(d.take().is_none());
    }

    #[test]
    fn a_detector_reports_a_shift_in_an_output() {
        let detector = serde_json::json!({"kind": "page_hinkley", "threshold": 5.0});
        let mut d = ModelDrift::new(
            "m",
            1,
            &settings(Some(detector)),
            &names(&["b"]),
            &names(&["y"]),
        )
        .unwrap();
        for i in 0..200 {
            let y = if i < 100 { 1.0 } else { 4.0 };
            d.observe(i, &[0.5], &[y]);
        }
        let w = d.take().unwrap();
        assert!(!w.detections.is_empty());
        assert!(w.detections[0].ts_ns >= 100 && w.detections[0].detector == "page_hinkley");
    }

    #[test]
    fn bad_settings_name_what_is_wrong() {
        let err = ModelDrift::new("m", 1, &settings(None), &names(&["a"]), &names(&["y"]))
            .err()
            .unwrap();
        assert!(err.contains("no input \"b\""), "{err}");
        let mut s = settings(None);
        s.outputs.insert("y".into(), vec![1.0]);
        let err = ModelDrift::new("m", 1, &s, &names(&["b"]), &names(&["y"]))
            .err()
            .unwrap();
        assert!(err.contains("edges"), "{err}");
        let err = ModelDrift::new(
            "m",
            1,
            &settings(Some(serde_json::json!({"kind": "cusum"}))),
            &names(&["b"]),
            &names(&["y"]),
        )
        .err()
        .unwrap();
        assert!(err.contains("detector"), "{err}");
    }
}
