//! The example agent configurations in `config/` parse. (strata-cli's tests
//! check that every key is commented.)

use strata_edge::EdgeConfig;
use strata_edge::sources::SourceConfig;

fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config")
        .join(name)
}

#[test]
fn example_edge_config_parses() {
    let config = EdgeConfig::load(&example("edge.toml")).expect("config/edge.toml parses");
    assert_eq!(config.device, "machine-01");
    assert_eq!(config.sources.len(), 1);
    let SourceConfig::Simulator(sim) = &config.sources[0] else {
        panic!("the example's source is the simulator");
    };
    assert_eq!((sim.interval_ms, sim.readings_per_signal), (1000, 10));
    assert_eq!(
        config.outbox,
        strata_edge::config::OutboxConfig::default(),
        "the example's [outbox] spells out the defaults"
    );
}

#[test]
fn plant_example_has_every_source_a_pipeline_and_two_models() {
    let config =
        EdgeConfig::load(&example("edge-plant.toml")).expect("config/edge-plant.toml parses");
    let kinds: Vec<&str> = config
        .sources
        .iter()
        .map(|s| match s {
            SourceConfig::Opcua(_) => "opcua",
            SourceConfig::Modbus(_) => "modbus",
            SourceConfig::Mqtt(_) => "mqtt",
            SourceConfig::Simulator(_) => "simulator",
        })
        .collect();
    assert_eq!(kinds, ["opcua", "modbus", "mqtt"]);
    let pipeline = config.pipeline.as_ref().expect("a pipeline");
    assert_eq!(pipeline.vectors[0].name, "press");
    assert_eq!(config.models.len(), 2);
    assert!(config.base_dir.ends_with("config"));
}
