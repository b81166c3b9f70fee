//! A retraining policy, as written in the hub config (`[[retrain]]`):
//! when to retrain a model, on what data, how the challenger must prove
//! itself, and where it shadows the champion first.

use serde::{Deserialize, Serialize};

/// When and how one model is retrained. Any of the three triggers (drift,
/// accuracy, schedule) starts a cycle; at most one cycle per model runs at
/// a time, and `cooldown_s` passes after one ends before the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainPolicy {
    /// The model.
    pub model: String,
    /// How often the triggers and the open cycle are looked at, seconds.
    #[serde(default = "d_check")]
    pub check_s: u64,

    /// Drift trigger: a device drifts when one of the champion's features
    /// or outputs has a PSI at or above this over an evaluation window...
    #[serde(default)]
    pub drift_psi: Option<f64>,
    /// ...and the trigger fires when some device drifts in each of this
    /// many consecutive windows...
    #[serde(default = "d_windows")]
    pub drift_windows: u32,
    /// ...of this length, seconds (the edge's sketches merged over it).
    #[serde(default = "d_drift_window")]
    pub drift_window_s: u64,
    /// Fewest values a device needs in a window to be judged.
    #[serde(default = "d_min_count")]
    pub drift_min_count: u64,

    /// Accuracy trigger (regression): the champion's MAE on the labels of
    /// the last `accuracy_window_s` over its registered MAE at or above
    /// this.
    #[serde(default)]
    pub max_mae_ratio: Option<f64>,
    /// Accuracy trigger (classification): registered accuracy minus live
    /// accuracy at or above this.
    #[serde(default)]
    pub max_accuracy_drop: Option<f64>,
    /// Labels looked at by the accuracy trigger, seconds.
    #[serde(default = "d_accuracy_window")]
    pub accuracy_window_s: u64,
    /// Fewest (prediction, label) pairs for an accuracy verdict, by the
    /// trigger and by the shadow comparison.
    #[serde(default = "d_min_pairs")]
    pub min_pairs: u64,
    /// The longest a label may come after the prediction it is joined to,
    /// seconds (by the trigger and by the shadow comparison): at least
    /// the time between two of the model's predictions.
    #[serde(default = "d_max_lag")]
    pub max_lag_s: u64,

    /// Schedule trigger: retrain when the champion (or the last cycle) is
    /// this old, seconds.
    #[serde(default)]
    pub every_s: Option<u64>,

    /// Fresh data to collect after a trigger before training, seconds.
    #[serde(default = "d_collect")]
    pub collect_s: u64,
    /// The fresh window trained and evaluated on: the last this many
    /// seconds.
    #[serde(default = "d_train_window")]
    pub train_window_s: u64,
    /// Newest share of the window kept out of training: champion and
    /// challenger are both scored on it.
    #[serde(default = "d_eval_share")]
    pub eval_share: f64,
    /// How much lower the challenger's error (MAE, or 1 - ROC AUC) must
    /// be than the champion's on that share, as a fraction.
    #[serde(default = "d_min_improvement")]
    pub min_improvement: f64,
    /// Fewest held-out rows the two are scored on: a challenger judged on
    /// fewer is rejected, however much better it looks.
    #[serde(default = "d_min_eval_rows")]
    pub min_eval_rows: u64,
    /// The longest the training or the backtest job may take, seconds;
    /// past it the job is cancelled and the cycle fails (the champion
    /// stays).
    #[serde(default = "d_max_job")]
    pub max_job_s: u64,

    /// Which devices the challenger shadows on.
    #[serde(default)]
    pub canary: Canary,
    /// How long the challenger shadows before the verdict, seconds.
    #[serde(default = "d_shadow")]
    pub shadow_s: u64,
    /// Quiet time after a cycle ends, seconds.
    #[serde(default = "d_cooldown")]
    pub cooldown_s: u64,
}

/// Where a challenger shadows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Canary {
    /// The devices the trigger named (all serving devices when it named
    /// none, e.g. a schedule).
    #[default]
    Drifting,
    /// Every device the champion serves on.
    All,
}

fn d_check() -> u64 {
    60
}
fn d_windows() -> u32 {
    3
}
fn d_drift_window() -> u64 {
    3600
}
fn d_min_count() -> u64 {
    50
}
fn d_accuracy_window() -> u64 {
    86_400
}
fn d_max_lag() -> u64 {
    300
}

fn d_min_pairs() -> u64 {
    20
}
fn d_collect() -> u64 {
    3600
}
fn d_train_window() -> u64 {
    7 * 86_400
}
fn d_eval_share() -> f64 {
    0.25
}
fn d_min_improvement() -> f64 {
    0.05
}
fn d_min_eval_rows() -> u64 {
    100
}
fn d_max_job() -> u64 {
    86_400
}
fn d_shadow() -> u64 {
    86_400
}
fn d_cooldown() -> u64 {
    3600
}

impl RetrainPolicy {
    /// Checks the policy; the message names the model and the field.
    pub fn validate(&self) -> Result<(), String> {
        let at = format!("[[retrain]] model {:?}", self.model);
        crate::models::check_name("model name", &self.model).map_err(|e| format!("{at}: {e}"))?;
        if self.drift_psi.is_none()
            && self.max_mae_ratio.is_none()
            && self.max_accuracy_drop.is_none()
            && self.every_s.is_none()
        {
            return Err(format!(
                "{at}: no trigger; set drift_psi, max_mae_ratio, max_accuracy_drop or every_s"
            ));
        }
        let positive = [
            ("check_s", self.check_s),
            ("drift_window_s", self.drift_window_s),
            ("train_window_s", self.train_window_s),
            ("shadow_s", self.shadow_s),
            ("drift_windows", u64::from(self.drift_windows)),
            ("min_pairs", self.min_pairs),
            ("max_lag_s", self.max_lag_s),
            ("min_eval_rows", self.min_eval_rows),
            ("max_job_s", self.max_job_s),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{at}: {name} must be above 0"));
        }
        // Durations are counted in nanoseconds: ten years at most.
        const MOST_S: u64 = 10 * 366 * 86_400;
        let durations = [
            ("check_s", self.check_s),
            ("drift_window_s", self.drift_window_s),
            ("accuracy_window_s", self.accuracy_window_s),
            ("max_lag_s", self.max_lag_s),
            ("every_s", self.every_s.unwrap_or(0)),
            ("collect_s", self.collect_s),
            ("train_window_s", self.train_window_s),
            ("shadow_s", self.shadow_s),
            ("cooldown_s", self.cooldown_s),
            ("max_job_s", self.max_job_s),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, v)| *v > MOST_S) {
            return Err(format!("{at}: {name} must be at most {MOST_S} (ten years)"));
        }
        let finite_positive = |name: &str, v: Option<f64>| match v {
            Some(x) if !(x.is_finite() && x > 0.0) => {
                Err(format!("{at}: {name} must be a number above 0"))
            }
            _ => Ok(()),
        };
        finite_positive("drift_psi", self.drift_psi)?;
        finite_positive("max_mae_ratio", self.max_mae_ratio)?;
        finite_positive("max_accuracy_drop", self.max_accuracy_drop)?;
        if !(0.05..=0.5).contains(&self.eval_share) {
            return Err(format!("{at}: eval_share must be between 0.05 and 0.5"));
        }
        if !(0.0..1.0).contains(&self.min_improvement) {
            return Err(format!("{at}: min_improvement must be in [0, 1)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<RetrainPolicy, String> {
        let p: RetrainPolicy = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        p.validate().map(|()| p)
    }

    #[test]
    fn the_commented_example_policy_parses() {
        let text = include_str!("../../../../config/hub.toml");
        let at = text.find("# [[retrain]]").expect("an example policy");
        let policy: String = text[at..]
            .lines()
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let p = parse(&policy).unwrap();
        assert_eq!((p.model.as_str(), p.drift_psi), ("rul", Some(12.0)));
        assert_eq!(p.every_s, Some(604_800));
    }

    #[test]
    fn policies_are_checked() {
        let p = parse("model = \"rul\"\ndrift_psi = 3.0\n").unwrap();
        assert_eq!((p.drift_windows, p.canary), (3, Canary::Drifting));
        let e = parse("model = \"rul\"\ndrift_psi = 3.0\nmax_lag_s = 99999999999\n").unwrap_err();
        assert!(e.contains("max_lag_s must be at most"), "{e}");
        let p = parse("model = \"rul\"\ndrift_psi = 3.0\nmax_lag_s = 7200\n").unwrap();
        assert_eq!(p.max_lag_s, 7200);
        let e = parse("model = \"rul\"\n").unwrap_err();
        assert!(e.contains("no trigger"), "{e}");
        let e = parse("model = \"rul\"\nevery_s = 60\neval_share = 0.9\n").unwrap_err();
        assert!(e.contains("eval_share"), "{e}");
        let e = parse("model = \"rul\"\ndrift_psi = -1.0\n").unwrap_err();
        assert!(e.contains("drift_psi"), "{e}");
        let e = parse("model = \"rul\"\nevery_s = 60\nshadow_s = 0\n").unwrap_err();
        assert!(e.contains("shadow_s"), "{e}");
        let e = parse("model = \"rul\"\nevery_s = 60\nmax_job_s = 0\n").unwrap_err();
        assert!(e.contains("max_job_s must be above 0"), "{e}");
        let e = parse("model = \"rul\"\nevery_s = 60\nmin_eval_rows = 0\n").unwrap_err();
        assert!(e.contains("min_eval_rows"), "{e}");
        let e = parse("model = \"rul\"\nevery_s = 60\ncanary = \"some\"\n").unwrap_err();
        assert!(e.contains("canary"), "{e}");
    }
}
