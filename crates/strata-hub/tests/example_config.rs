//! The example configuration in `config/` parses, and documents the defaults.

use strata_hub::HubConfig;

#[test]
fn example_hub_config_is_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/hub.toml");
    let parsed = HubConfig::load(std::path::Path::new(path)).expect("config/hub.toml parses");
    assert_eq!(
        parsed,
        HubConfig::default(),
        "config/hub.toml must show the defaults"
    );
}

#[test]
fn every_key_in_the_example_is_commented() {
    let text = include_str!("../../../config/hub.toml");
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with('[') {
            continue;
        }
        assert!(
            i > 0 && lines[i - 1].trim().starts_with('#'),
            "config/hub.toml line {}: key without a comment above it: {l}",
            i + 1
        );
    }
}
