//! Payload encodings: protobuf (compact, the default for agents) and the JSON
//! equivalent (for `mosquitto_pub` users and other languages).
//!
//! The encoding is recognised from the first byte, so it works with MQTT
//! 3.1.1, which has no content-type property: a JSON document starts with `{`
//! (after optional whitespace), which as a protobuf tag would be field 15 with
//! the deprecated group wire type, something no Strata message uses.

use prost::Message;
use serde::{Deserialize, Serialize};

use crate::v1::{Health, Quality, SignalSeries, TelemetryBatch};

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Protocol buffers, `proto/strata/v1/strata.proto`.
    Protobuf,
    /// The JSON equivalent described in `docs/design/wire.md`.
    Json,
}

impl Encoding {
    /// Recognises the encoding of a payload from its first non-blank byte.
    pub fn sniff(payload: &[u8]) -> Encoding {
        match payload.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Encoding::Json,
            _ => Encoding::Protobuf,
        }
    }
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not valid protobuf for the expected message.
    #[error("malformed protobuf {message}: {reason}")]
    Protobuf {
        /// The expected message type.
        message: &'static str,
        /// What the decoder reported.
        reason: String,
    },
    /// Not valid JSON for the expected message.
    #[error("malformed JSON {message} at line {line} column {column}: {reason}")]
    Json {
        /// The expected message type.
        message: &'static str,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser reported.
        reason: String,
    },
    /// Well-formed, but not a valid message (the text says why).
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn json_error(message: &'static str, e: serde_json::Error) -> DecodeError {
    let reason = e.to_string();
    // serde_json appends " at line L column C"; keep the reason itself.
    let reason = match reason.rfind(" at line ") {
        Some(i) => reason[..i].to_owned(),
        None => reason,
    };
    DecodeError::Json {
        message,
        line: e.line(),
        column: e.column(),
        reason,
    }
}

fn protobuf_error(message: &'static str, e: prost::DecodeError) -> DecodeError {
    DecodeError::Protobuf {
        message,
        reason: e.to_string(),
    }
}

/// JSON form of [`TelemetryBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonTelemetryBatch {
    /// Producer stream inside the device.
    pub stream: String,
    /// Sequence number of this batch in its stream.
    pub seq: u64,
    /// One entry per signal.
    pub signals: Vec<JsonSignalSeries>,
}

/// JSON form of [`SignalSeries`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSignalSeries {
    /// Signal name.
    pub name: String,
    /// Unit of measure; may be omitted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    /// Timestamps, nanoseconds since the Unix epoch.
    pub ts_ns: Vec<i64>,
    /// Values, one per timestamp.
    pub values: Vec<f64>,
    /// Omitted (all good) or one entry per value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quality: Vec<JsonQuality>,
}

/// JSON form of [`Quality`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonQuality {
    /// [`Quality::Good`].
    Good,
    /// [`Quality::Uncertain`].
    Uncertain,
    /// [`Quality::Bad`].
    Bad,
}

impl From<JsonQuality> for Quality {
    fn from(q: JsonQuality) -> Quality {
        match q {
            JsonQuality::Good => Quality::Good,
            JsonQuality::Uncertain => Quality::Uncertain,
            JsonQuality::Bad => Quality::Bad,
        }
    }
}

impl From<Quality> for JsonQuality {
    fn from(q: Quality) -> JsonQuality {
        match q {
            Quality::Good => JsonQuality::Good,
            Quality::Uncertain => JsonQuality::Uncertain,
            Quality::Bad => JsonQuality::Bad,
        }
    }
}

impl From<JsonTelemetryBatch> for TelemetryBatch {
    fn from(j: JsonTelemetryBatch) -> TelemetryBatch {
        TelemetryBatch {
            stream: j.stream,
            seq: j.seq,
            signals: j
                .signals
                .into_iter()
                .map(|s| SignalSeries {
                    name: s.name,
                    unit: s.unit,
                    ts_ns: s.ts_ns,
                    values: s.values,
                    quality: s
                        .quality
                        .into_iter()
                        .map(|q| Quality::from(q) as i32)
                        .collect(),
                })
                .collect(),
        }
    }
}

impl From<&TelemetryBatch> for JsonTelemetryBatch {
    fn from(b: &TelemetryBatch) -> JsonTelemetryBatch {
        JsonTelemetryBatch {
            stream: b.stream.clone(),
            seq: b.seq,
            signals: b
                .signals
                .iter()
                .map(|s| JsonSignalSeries {
                    name: s.name.clone(),
                    unit: s.unit.clone(),
                    ts_ns: s.ts_ns.clone(),
                    values: s.values.clone(),
                    quality: s
                        .quality
                        .iter()
                        .map(|&q| Quality::try_from(q).unwrap_or(Quality::Bad).into())
                        .collect(),
                })
                .collect(),
        }
    }
}

/// JSON form of [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonHealth {
    /// Whether the device is online; `false` in its last will.
    pub online: bool,
    /// When this was measured, nanoseconds since the Unix epoch.
    #[serde(default)]
    pub ts_ns: i64,
    /// Seconds since the agent started.
    #[serde(default)]
    pub uptime_s: u64,
}

/// Decodes a telemetry (or inference) batch in either encoding.
pub fn decode_telemetry(payload: &[u8]) -> Result<TelemetryBatch, DecodeError> {
    const NAME: &str = "TelemetryBatch";
    match Encoding::sniff(payload) {
        Encoding::Json => serde_json::from_slice::<JsonTelemetryBatch>(payload)
            .map(Into::into)
            .map_err(|e| json_error(NAME, e))
            .or_else(|json| {
                // A protobuf batch whose stream name is 123 bytes long
                // starts with "\n{" (its field tag, then its length), which
                // reads as JSON after a blank line.
                TelemetryBatch::decode(payload)
                    .ok()
                    .filter(|_| payload.first() == Some(&b'\n'))
                    .ok_or(json)
            }),
        Encoding::Protobuf => TelemetryBatch::decode(payload).map_err(|e| protobuf_error(NAME, e)),
    }
}

/// Encodes a telemetry batch.
pub fn encode_telemetry(batch: &TelemetryBatch, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => batch.encode_to_vec(),
        Encoding::Json => {
            serde_json::to_vec(&JsonTelemetryBatch::from(batch)).expect("JSON of plain data")
        }
    }
}

/// The length of the protobuf [`encode_telemetry`] would write for a batch
/// of `signals` on `stream` numbered `seq`, without writing it.
pub fn telemetry_len(stream: &str, seq: u64, signals: &[SignalSeries]) -> usize {
    use prost::encoding::{encoded_len_varint, key_len};
    let mut n = 0;
    if !stream.is_empty() {
        n += key_len(1) + encoded_len_varint(stream.len() as u64) + stream.len();
    }
    if seq != 0 {
        n += key_len(2) + encoded_len_varint(seq);
    }
    for s in signals {
        let len = s.encoded_len();
        n += key_len(3) + encoded_len_varint(len as u64) + len;
    }
    n
}

/// Decodes a health message in either encoding.
pub fn decode_health(payload: &[u8]) -> Result<Health, DecodeError> {
    const NAME: &str = "Health";
    match Encoding::sniff(payload) {
        Encoding::Json => serde_json::from_slice::<JsonHealth>(payload)
            .map(|h| Health {
                online: h.online,
                ts_ns: h.ts_ns,
                uptime_s: h.uptime_s,
            })
            .map_err(|e| json_error(NAME, e)),
        Encoding::Protobuf => Health::decode(payload).map_err(|e| protobuf_error(NAME, e)),
    }
}

/// Encodes a health message.
pub fn encode_health(health: &Health, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => health.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&JsonHealth {
            online: health.online,
            ts_ns: health.ts_ns,
            uptime_s: health.uptime_s,
        })
        .expect("JSON of plain data"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> TelemetryBatch {
        TelemetryBatch {
            stream: "main".into(),
            seq: 1,
            signals: vec![SignalSeries {
                name: "t".into(),
                unit: "Cel".into(),
                ts_ns: vec![1],
                values: vec![1.5],
                quality: vec![],
            }],
        }
    }

    /// The protobuf bytes of `sample()`, written out by hand from the schema so
    /// that a change in field numbers or wire types cannot go unnoticed.
    const SAMPLE_PROTOBUF: &[u8] = &[
        0x0a, 0x04, b'm', b'a', b'i', b'n', // 1: stream = "main"
        0x10, 0x01, // 2: seq = 1
        0x1a, 0x1c, // 3: signals, 28 bytes
        0x0a, 0x01, b't', // 1: name = "t"
        0x12, 0x03, b'C', b'e', b'l', // 2: unit = "Cel"
        0x1a, 0x08, 1, 0, 0, 0, 0, 0, 0, 0, // 3: ts_ns = [1] (packed sfixed64)
        0x22, 0x08, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, // 4: values = [1.5] (packed double)
    ];

    #[test]
    fn a_protobuf_batch_that_looks_like_json_is_read_as_protobuf() {
        // Field 1 (stream), 123 bytes long: "\n{" then the name.
        let batch = TelemetryBatch {
            stream: "s".repeat(123),
            seq: 7,
            signals: vec![SignalSeries {
                name: "t".into(),
                unit: String::new(),
                ts_ns: vec![1],
                values: vec![f64::NAN],
                quality: vec![],
            }],
        };
        let bytes = encode_telemetry(&batch, Encoding::Protobuf);
        assert_eq!(&bytes[..2], b"\n{");
        assert_eq!(Encoding::sniff(&bytes), Encoding::Json);
        let read = decode_telemetry(&bytes).unwrap();
        assert_eq!((read.stream.len(), read.seq), (123, 7));
        // JSON that is not valid JSON stays a JSON error.
        assert!(
            decode_telemetry(b"\n{nope")
                .unwrap_err()
                .to_string()
                .contains("JSON")
        );
    }

    #[test]
    fn telemetry_len_is_the_encoded_length() {
        let signal = |name: &str, n: usize, quality: bool| SignalSeries {
            name: name.into(),
            unit: "mm/s".into(),
            ts_ns: (0..n as i64)
                .map(|i| 1_700_000_000_000_000_000 + i * 1_000)
                .collect(),
            values: (0..n).map(|i| i as f64 * 0.25).collect(),
            quality: if quality { vec![0; n] } else { Vec::new() },
        };
        for (stream, seq) in [
            ("line", 1u64),
            ("", 0),
            ("a-much-longer-stream-name", u64::MAX),
        ] {
            for signals in [
                vec![],
                vec![signal("x", 0, false)],
                vec![signal("vibration", 3000, false), signal("temp", 2, true)],
            ] {
                let batch = TelemetryBatch {
                    stream: stream.into(),
                    seq,
                    signals: signals.clone(),
                };
                assert_eq!(
                    telemetry_len(stream, seq, &signals),
                    encode_telemetry(&batch, Encoding::Protobuf).len()
                );
            }
        }
    }

    #[test]
    fn protobuf_fixture() {
        assert_eq!(
            encode_telemetry(&sample(), Encoding::Protobuf),
            SAMPLE_PROTOBUF
        );
        assert_eq!(decode_telemetry(SAMPLE_PROTOBUF).unwrap(), sample());
    }

    #[test]
    fn json_fixture() {
        let json = br#"{"stream":"main","seq":1,"signals":[{"name":"t","unit":"Cel","ts_ns":[1],"values":[1.5]}]}"#;
        assert_eq!(encode_telemetry(&sample(), Encoding::Json), json);
        assert_eq!(decode_telemetry(json).unwrap(), sample());
        assert_eq!(
            decode_telemetry(b"  \n{\"stream\":\"main\",\"seq\":1,\"signals\":[]}")
                .unwrap()
                .seq,
            1
        );
    }

    #[test]
    fn json_errors_say_where() {
        let err =
            decode_telemetry(b"{\"stream\":\"a\",\n\"seq\":\"x\",\"signals\":[]}").unwrap_err();
        let DecodeError::Json { line, reason, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*line, 2);
        assert!(reason.contains("invalid type"), "{reason}");
        let err = decode_telemetry(b"{\"stream\":\"a\",\"seq\":1,\"signals\":[],\"extra\":1}")
            .unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn protobuf_garbage_is_an_error() {
        assert!(matches!(
            decode_telemetry(&[0x0a, 0xff, 0xff]),
            Err(DecodeError::Protobuf { .. })
        ));
    }

    #[test]
    fn health_round_trips() {
        let h = Health {
            online: false,
            ts_ns: 5,
            uptime_s: 9,
        };
        for enc in [Encoding::Json, Encoding::Protobuf] {
            assert_eq!(decode_health(&encode_health(&h, enc)).unwrap(), h);
        }
        assert!(!decode_health(br#"{"online":false}"#).unwrap().online);
    }

    fn batch_strategy() -> impl Strategy<Value = TelemetryBatch> {
        let signal = (
            "[a-z][a-z0-9_.]{0,12}",
            "[A-Za-z/]{0,4}",
            prop::collection::vec((any::<i64>(), -1e12f64..1e12, 0i32..3), 0..20),
        )
            .prop_map(|(name, unit, rows)| SignalSeries {
                name,
                unit,
                ts_ns: rows.iter().map(|r| r.0).collect(),
                values: rows.iter().map(|r| r.1).collect(),
                quality: rows.iter().map(|r| r.2).collect(),
            });
        (
            "[a-z0-9-]{1,10}",
            any::<u64>(),
            prop::collection::vec(signal, 0..5),
        )
            .prop_map(|(stream, seq, signals)| TelemetryBatch {
                stream,
                seq,
                signals,
            })
    }

    proptest! {
        #[test]
        fn round_trip_both_encodings(batch in batch_strategy()) {
            for enc in [Encoding::Protobuf, Encoding::Json] {
                let bytes = encode_telemetry(&batch, enc);
                prop_assert_eq!(Encoding::sniff(&bytes), enc);
                prop_assert_eq!(decode_telemetry(&bytes).unwrap(), batch.clone());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_telemetry(&bytes);
            let _ = decode_health(&bytes);
        }
    }
}
