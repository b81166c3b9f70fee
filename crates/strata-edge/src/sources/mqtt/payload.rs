//! Payloads of local devices' MQTT messages: a number as text, or JSON
//! with the value and timestamp found by JSON pointer.

use serde::Deserialize;

use super::TopicConfig;

/// How a message's payload holds its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// The payload is a number as UTF-8 text, e.g. `21.5`.
    #[default]
    Number,
    /// The payload is JSON; `value` and `timestamp` point into it.
    Json,
}

/// Unit of a timestamp number in a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampUnit {
    /// Seconds since the Unix epoch (fractions allowed).
    S,
    /// Milliseconds since the Unix epoch.
    #[default]
    Ms,
    /// Microseconds since the Unix epoch.
    Us,
    /// Nanoseconds since the Unix epoch.
    Ns,
}

impl TimestampUnit {
    /// Integer timestamps are converted exactly (an f64 cannot hold every
    /// nanosecond of today).
    fn int_to_ns(self, t: i64) -> Option<i64> {
        match self {
            TimestampUnit::S => t.checked_mul(1_000_000_000),
            TimestampUnit::Ms => t.checked_mul(1_000_000),
            TimestampUnit::Us => t.checked_mul(1_000),
            TimestampUnit::Ns => Some(t),
        }
    }

    fn to_ns(self, t: f64) -> Option<i64> {
        let ns = match self {
            TimestampUnit::S => t * 1e9,
            TimestampUnit::Ms => t * 1e6,
            TimestampUnit::Us => t * 1e3,
            TimestampUnit::Ns => t,
        };
        (ns.is_finite() && ns.abs() < i64::MAX as f64).then_some(ns as i64)
    }
}

/// The raw value and the timestamp (if the payload has one).
pub(super) fn parse(topic: &TopicConfig, payload: &[u8]) -> Result<(f64, Option<i64>), String> {
    let text = std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8".to_string())?;
    match topic.format {
        PayloadFormat::Number => {
            let v: f64 = text
                .trim()
                .parse()
                .map_err(|_| format!("payload {:?} is not a number", truncate(text)))?;
            Ok((v, None))
        }
        PayloadFormat::Json => {
            let doc: serde_json::Value =
                serde_json::from_str(text).map_err(|e| format!("payload is not JSON: {e}"))?;
            let at = |pointer: &Option<String>| -> Result<Option<f64>, String> {
                let Some(p) = pointer else { return Ok(None) };
                let v = doc
                    .pointer(p)
                    .ok_or_else(|| format!("payload has nothing at {p}"))?;
                v.as_f64()
                    .or_else(|| v.as_bool().map(|b| f64::from(u8::from(b))))
                    .map(Some)
                    .ok_or_else(|| format!("{p} is not a number"))
            };
            let value = match &topic.value {
                Some(_) => at(&topic.value)?.expect("pointer given"),
                None => doc.as_f64().ok_or("payload is not a JSON number")?,
            };
            let unit = topic.timestamp_unit;
            let ts = match &topic.timestamp {
                Some(p) => {
                    let exact = doc
                        .pointer(p)
                        .and_then(|v| v.as_i64())
                        .map(|t| unit.int_to_ns(t));
                    let ns = match exact {
                        Some(ns) => ns,
                        None => at(&topic.timestamp)?.and_then(|t| unit.to_ns(t)),
                    };
                    Some(ns.ok_or("timestamp is out of range")?)
                }
                None => None,
            };
            Ok((value, ts))
        }
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_topic(value: Option<&str>, ts: Option<&str>, unit: TimestampUnit) -> TopicConfig {
        TopicConfig {
            filter: "#".into(),
            signal: "x".into(),
            unit: String::new(),
            format: PayloadFormat::Json,
            value: value.map(Into::into),
            timestamp: ts.map(Into::into),
            timestamp_unit: unit,
            scale: 1.0,
            offset: 0.0,
        }
    }

    #[test]
    fn json_values_and_timestamps_by_pointer() {
        let t = json_topic(Some("/data/0/v"), Some("/ts"), TimestampUnit::Ms);
        let (v, ts) = parse(&t, br#"{"ts": 1700000000123, "data": [{"v": -4.25}]}"#).unwrap();
        assert_eq!(v, -4.25);
        assert_eq!(ts, Some(1_700_000_000_123_000_000));
        let t = json_topic(Some("/on"), Some("/t"), TimestampUnit::S);
        let (v, ts) = parse(&t, br#"{"on": true, "t": 1.5}"#).unwrap();
        assert_eq!((v, ts), (1.0, Some(1_500_000_000)));
        let t = json_topic(None, None, TimestampUnit::Ms);
        assert_eq!(parse(&t, b"12").unwrap(), (12.0, None));
        assert!(parse(&t, br#""12""#).is_err());
        let t = json_topic(Some("/v"), Some("/ts"), TimestampUnit::S);
        assert!(
            parse(&t, br#"{"v": 1, "ts": 1e300}"#)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            parse(&t, br#"{"v": 1, "ts": "x"}"#)
                .unwrap_err()
                .contains("/ts is not a number")
        );
        assert!(parse(&t, b"{").unwrap_err().contains("not JSON"));
        assert!(parse(&t, &[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
    }
}
