//! The gateway's configuration parser (files on disk and the configs OTA
//! bundles carry) on arbitrary text: a clear error or a config, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = strata_edge::config::EdgeConfig::parse(text);
    }
});
