//! The example agent configuration in `config/` parses and has every key commented.

use strata_edge::EdgeConfig;
use strata_edge::sources::SourceConfig;

#[test]
fn example_edge_config_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/edge.toml");
    let config = EdgeConfig::load(std::path::Path::new(path)).expect("config/edge.toml parses");
    assert_eq!(config.device, "machine-01");
    assert_eq!(config.sources.len(), 1);
    let SourceConfig::Simulator(sim) = &config.sources[0] else {
        panic!("the example's source is the simulator");
    };
    assert_eq!((sim.interval_ms, sim.readings_per_signal), (1000, 10));
}

#[test]
fn every_key_in_the_example_is_commented() {
    let text = include_str!("../../../config/edge.toml");
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with('[') {
            continue;
        }
        assert!(
            i > 0 && lines[i - 1].trim().starts_with('#'),
            "config/edge.toml line {}: no comment above {l}",
            i + 1
        );
    }
}
