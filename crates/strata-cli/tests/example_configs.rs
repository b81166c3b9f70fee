//! Every example configuration in `config/` comments every key. (Each
//! role's own tests check that its examples parse.)

#[test]
fn every_key_in_every_example_config_is_commented() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') || l.starts_with('[') {
                continue;
            }
            assert!(
                i > 0 && lines[i - 1].trim().starts_with('#'),
                "config/{name} line {}: key without a comment above it: {l}",
                i + 1
            );
        }
        checked.push(name);
    }
    checked.sort();
    assert_eq!(checked, ["edge-plant.toml", "edge.toml", "hub.toml"]);
}
