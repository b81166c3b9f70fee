//! The example configuration in `config/` parses, and documents the
//! defaults. (strata-cli's tests check that every key is commented.)

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
