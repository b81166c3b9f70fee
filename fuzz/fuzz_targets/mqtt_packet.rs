//! The broker's MQTT decoder on arbitrary bytes, in both protocol
//! versions: it must return packets or an error, never panic or loop.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use strata_mqtt::{Decoder, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    let decoder = Decoder::new(64 * 1024);
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut buf = BytesMut::from(data);
        // Each successful decode consumes bytes, so this ends.
        while let Ok(Some(_)) = decoder.decode(&mut buf, version) {}
    }
});
