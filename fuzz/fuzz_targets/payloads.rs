//! Every decoder of device payloads on arbitrary bytes: telemetry (JSON or
//! protobuf, the fast in-place view and the slow path with validation),
//! health, drift sketches, and topics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proto::payload::{decode_health, decode_telemetry};
use strata_proto::sketch::decode_sketch_batch;
use strata_proto::validate::{Limits, validate};
use strata_proto::view::TelemetryView;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let now = 1_764_064_800_000_000_000;
    let _ = TelemetryView::parse(data, &limits, now);
    if let Ok(mut batch) = decode_telemetry(data) {
        let _ = validate(&mut batch, &limits, now);
    }
    let _ = decode_health(data);
    let _ = decode_sketch_batch(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = strata_proto::topic::Topic::parse(text);
    }
});
