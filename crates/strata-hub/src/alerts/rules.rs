//! Alert rules as configured: `[[alerts]]` in the hub's TOML.
//!
//! ```toml
//! [[alerts]]
//! name = "bearing-failing"
//! severity = "critical"
//! signal = "rul.prediction"     # a reading or a model output
//! condition = "below"           # above, below, rate_above, anomaly, offline
//! value = 8.0
//! for_s = 30                    # the condition must hold this long
//! ```

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// Its name, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What a rule watches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// A reading above `value`.
    Above,
    /// A reading below `value`.
    Below,
    /// The signal changing faster than `value` units per second (either way).
    RateAbove,
    /// A reading more than `value` standard deviations from the mean of the
    /// device's previous `window` normal readings.
    Anomaly,
    /// The device disconnected (its last will, or a lost connection).
    Offline,
}

/// One alert rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Its name (unique), used in alerts, metrics and webhooks.
    pub name: String,
    /// How bad its alerts are.
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// The signal it watches (not used by `offline`).
    #[serde(default)]
    pub signal: String,
    /// What it watches for.
    pub condition: Condition,
    /// The threshold, rate (per second) or z-score.
    #[serde(default)]
    pub value: Option<f64>,
    /// `anomaly`: how many past readings make the baseline.
    #[serde(default = "default_window")]
    pub window: usize,
    /// The condition must hold this many seconds before the alert is raised.
    #[serde(default)]
    pub for_s: f64,
    /// The condition must stay away this many seconds before the alert
    /// clears (so a signal hovering at the threshold does not flap).
    #[serde(default)]
    pub clear_for_s: f64,
    /// Only these devices; every device when empty.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Only devices of this site.
    #[serde(default)]
    pub site: Option<String>,
    /// What the alert says, for people; generated when absent.
    #[serde(default)]
    pub message: Option<String>,
}

fn default_severity() -> Severity {
    Severity::Warning
}
fn default_window() -> usize {
    60
}

impl AlertRule {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        let at = format!("[[alerts]] {:?}", self.name);
        if self.name.trim().is_empty() {
            return Err("[[alerts]]: every rule needs a name".into());
        }
        if self.condition == Condition::Offline {
            if !self.signal.is_empty() || self.value.is_some() {
                return Err(format!("{at}: an offline rule takes no signal or value"));
            }
        } else {
            if self.signal.is_empty() {
                return Err(format!(
                    "{at}: condition {:?} needs a signal",
                    self.condition
                ));
            }
            match self.value {
                Some(v) if v.is_finite() => {}
                Some(_) => return Err(format!("{at}: value must be a finite number")),
                None => {
                    return Err(format!(
                        "{at}: condition {:?} needs a value",
                        self.condition
                    ));
                }
            }
        }
        let positive = matches!(self.condition, Condition::RateAbove | Condition::Anomaly);
        if positive && self.value.is_some_and(|v| v <= 0.0) {
            return Err(format!(
                "{at}: value must be above 0 for {:?}",
                self.condition
            ));
        }
        if self.condition == Condition::Anomaly && self.window < 10 {
            return Err(format!("{at}: window must be at least 10 readings"));
        }
        if !(self.for_s.is_finite() && self.for_s >= 0.0) {
            return Err(format!("{at}: for_s must be 0 or more seconds"));
        }
        if !(self.clear_for_s.is_finite() && self.clear_for_s >= 0.0) {
            return Err(format!("{at}: clear_for_s must be 0 or more seconds"));
        }
        Ok(())
    }

    /// The value the condition compares with (0 for `offline`).
    pub fn threshold(&self) -> f64 {
        self.value.unwrap_or(0.0)
    }

    /// What an alert of this rule says about `device`.
    pub fn describe(&self, device: &str, value: f64) -> String {
        if let Some(m) = &self.message {
            return m
                .replace("{device}", device)
                .replace("{value}", &format!("{value}"));
        }
        let v = self.threshold();
        match self.condition {
            Condition::Above => format!("{device}: {} is {value} (above {v})", self.signal),
            Condition::Below => format!("{device}: {} is {value} (below {v})", self.signal),
            Condition::RateAbove => format!(
                "{device}: {} changes by {value:.3}/s (faster than {v}/s)",
                self.signal
            ),
            Condition::Anomaly => format!(
                "{device}: {} is {value:.1} standard deviations from its recent mean (limit {v})",
                self.signal
            ),
            Condition::Offline => format!("{device} is offline"),
        }
    }
}

/// Checks a set of rules: each valid, names unique.
pub fn validate_all(rules: &[AlertRule]) -> Result<(), String> {
    for (i, r) in rules.iter().enumerate() {
        r.validate()?;
        if rules[..i].iter().any(|o| o.name == r.name) {
            return Err(format!("[[alerts]]: two rules named {:?}", r.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> Result<AlertRule, String> {
        let r: AlertRule = toml::from_str(text).map_err(|e| e.to_string())?;
        r.validate().map(|()| r)
    }

    #[test]
    fn parses_each_condition_and_refuses_what_is_incomplete() {
        let r =
            rule("name = \"hot\"\nsignal = \"t\"\ncondition = \"above\"\nvalue = 80\n").unwrap();
        assert_eq!(r.severity, Severity::Warning);
        assert_eq!(r.describe("m1", 81.0), "m1: t is 81 (above 80)");
        rule("name = \"gone\"\ncondition = \"offline\"\nfor_s = 30\n").unwrap();
        rule("name = \"odd\"\nsignal = \"t\"\ncondition = \"anomaly\"\nvalue = 4\nwindow = 30\n")
            .unwrap();
        let err = |text: &str| rule(text).unwrap_err();
        assert!(err("name = \"x\"\ncondition = \"above\"\nvalue = 1\n").contains("needs a signal"));
        assert!(
            err("name = \"x\"\nsignal = \"t\"\ncondition = \"below\"\n").contains("needs a value")
        );
        assert!(err("name = \"x\"\ncondition = \"offline\"\nvalue = 1\n").contains("no signal"));
        assert!(
            err("name = \"x\"\nsignal = \"t\"\ncondition = \"rate_above\"\nvalue = -1\n")
                .contains("above 0")
        );
        assert!(
            err("name = \"x\"\nsignal = \"t\"\ncondition = \"anomaly\"\nvalue = 3\nwindow = 2\n")
                .contains("window")
        );
        assert!(
            err("name = \"x\"\nsignal = \"t\"\ncondition = \"sideways\"\nvalue = 1\n")
                .contains("sideways")
        );
        let twice = vec![
            rule("name = \"a\"\ncondition = \"offline\"\n").unwrap(),
            rule("name = \"a\"\ncondition = \"offline\"\n").unwrap(),
        ];
        assert!(validate_all(&twice).unwrap_err().contains("two rules"));
    }

    #[test]
    fn a_message_template_names_the_device_and_value() {
        let r = rule(
            "name = \"rul\"\nsignal = \"rul.prediction\"\ncondition = \"below\"\nvalue = 8\n\
             message = \"bearing of {device} fails in {value} h\"\n",
        )
        .unwrap();
        assert_eq!(
            r.describe("press-2", 5.5),
            "bearing of press-2 fails in 5.5 h"
        );
    }
}
