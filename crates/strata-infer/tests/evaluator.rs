//! The tree evaluator and the classic-ML interpreter on hand-built models:
//! every branch mode, NaN handling, aggregates, post-transforms, the
//! double-threshold form, random ensembles against a naive evaluator, and
//! the errors users see for bad models.

use prost::Message;
use strata_infer::{Error, InferenceRuntime, MlRuntime, ModelSet, load_model};
use tract_onnx::pb;

fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 7,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn floats(name: &str, v: &[f32]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 6,
        floats: v.to_vec(),
        ..Default::default()
    }
}

fn strings(name: &str, v: &[&str]) -> pb::AttributeProto {
    let strings = v.iter().map(|s| s.as_bytes().to_vec()).collect();
    pb::AttributeProto {
        name: name.into(),
        r#type: 8,
        strings,
        ..Default::default()
    }
}

fn string(name: &str, s: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 3,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 2,
        i,
        ..Default::default()
    }
}

fn value_info(name: &str, elem: i32, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => dimension::Value::DimValue(*v),
                None => dimension::Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(nodes: Vec<pb::NodeProto>, width: i64, outputs: &[&str]) -> Vec<u8> {
    let graph = pb::GraphProto {
        node: nodes,
        name: "test".into(),
        input: vec![value_info("X", 1, &[None, Some(width)])],
        output: outputs.iter().map(|o| value_info(o, 1, &[None])).collect(),
        ..Default::default()
    };
    let proto = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![
            pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            },
            pb::OperatorSetIdProto {
                domain: "ai.onnx.ml".into(),
                version: 3,
            },
        ],
        graph: Some(graph),
        ..Default::default()
    };
    proto.encode_to_vec()
}

fn node(
    op: &str,
    domain: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        domain: domain.into(),
        name: format!("my_{op}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

/// A node in ONNX's attribute form: (tree, node, feature, mode, threshold,
/// true id, false id, missing value goes to the true child).
type RawNode = (i64, i64, i64, &'static str, f32, i64, i64, bool);
/// A comparison as a branch mode names it.
type Compare = fn(f32, f32) -> bool;

/// A tree ensemble in ONNX's attribute form, for building and for the
/// naive reference evaluation.
#[derive(Clone)]
struct Spec {
    /// (tree, node, feature, mode, threshold, true id, false id, missing→true)
    nodes: Vec<RawNode>,
    /// (tree, node, output, weight)
    leaves: Vec<(i64, i64, i64, f32)>,
}

impl Spec {
    fn regressor(&self, n_targets: i64, extra: Vec<pb::AttributeProto>) -> pb::NodeProto {
        let mut attrs = self.node_attrs("target");
        attrs.push(int("n_targets", n_targets));
        attrs.extend(extra);
        node("TreeEnsembleRegressor", "ai.onnx.ml", &["X"], &["Y"], attrs)
    }

    fn classifier(&self, labels: &[i64], extra: Vec<pb::AttributeProto>) -> pb::NodeProto {
        let mut attrs = self.node_attrs("class");
        attrs.push(ints("classlabels_int64s", labels));
        attrs.extend(extra);
        node(
            "TreeEnsembleClassifier",
            "ai.onnx.ml",
            &["X"],
            &["label", "probabilities"],
            attrs,
        )
    }

    fn node_attrs(&self, prefix: &str) -> Vec<pb::AttributeProto> {
        let n = &self.nodes;
        let l = &self.leaves;
        vec![
            ints("nodes_treeids", &n.iter().map(|x| x.0).collect::<Vec<_>>()),
            ints("nodes_nodeids", &n.iter().map(|x| x.1).collect::<Vec<_>>()),
            ints(
                "nodes_featureids",
                &n.iter().map(|x| x.2).collect::<Vec<_>>(),
            ),
            strings("nodes_modes", &n.iter().map(|x| x.3).collect::<Vec<_>>()),
            floats("nodes_values", &n.iter().map(|x| x.4).collect::<Vec<_>>()),
            ints(
                "nodes_truenodeids",
                &n.iter().map(|x| x.5).collect::<Vec<_>>(),
            ),
            ints(
                "nodes_falsenodeids",
                &n.iter().map(|x| x.6).collect::<Vec<_>>(),
            ),
            ints(
                "nodes_missing_value_tracks_true",
                &n.iter().map(|x| x.7 as i64).collect::<Vec<_>>(),
            ),
            ints(
                &format!("{prefix}_treeids"),
                &l.iter().map(|x| x.0).collect::<Vec<_>>(),
            ),
            ints(
                &format!("{prefix}_nodeids"),
                &l.iter().map(|x| x.1).collect::<Vec<_>>(),
            ),
            ints(
                &format!("{prefix}_ids"),
                &l.iter().map(|x| x.2).collect::<Vec<_>>(),
            ),
            floats(
                &format!("{prefix}_weights"),
                &l.iter().map(|x| x.3).collect::<Vec<_>>(),
            ),
        ]
    }

    /// Leaf weight (summed over outputs 0) reached in each tree, naively.
    fn naive(&self, x: &[f32]) -> Vec<f32> {
        let mut trees: Vec<i64> = self.nodes.iter().map(|n| n.0).collect();
        trees.dedup();
        trees
            .iter()
            .map(|&t| {
                let mut id = 0;
                loop {
                    let n = self.nodes.iter().find(|n| n.0 == t && n.1 == id).unwrap();
                    if n.3 == "LEAF" {
                        return self
                            .leaves
                            .iter()
                            .filter(|l| l.0 == t && l.1 == id)
                            .map(|l| l.3)
                            .sum();
                    }
                    let v = x[n.2 as usize];
                    let go = match n.3 {
                        "BRANCH_LEQ" => v <= n.4,
                        "BRANCH_LT" => v < n.4,
                        "BRANCH_GTE" => v >= n.4,
                        "BRANCH_GT" => v > n.4,
                        "BRANCH_EQ" => v == n.4,
                        _ => v != n.4,
                    } || (n.7 && v.is_nan());
                    id = if go { n.5 } else { n.6 };
                }
            })
            .collect()
    }
}

/// One split on feature 0 at 1.0: true leaf weighs 10, false leaf 20.
fn stump(mode: &'static str, missing_true: bool) -> Spec {
    Spec {
        nodes: vec![
            (0, 0, 0, mode, 1.0, 1, 2, missing_true),
            (0, 1, 0, "LEAF", 0.0, 0, 0, false),
            (0, 2, 0, "LEAF", 0.0, 0, 0, false),
        ],
        leaves: vec![(0, 1, 0, 10.0), (0, 2, 0, 20.0)],
    }
}

fn run1(bytes: &[u8], x: &[f32]) -> Vec<f32> {
    let m = MlRuntime.load(bytes).expect("load");
    let mut out = vec![0.0; m.output_len()];
    m.run(x, &mut out).expect("run");
    out
}

#[test]
fn each_branch_mode_compares_as_named() {
    let cases: [(&str, Compare); 6] = [
        ("BRANCH_LEQ", |x, t| x <= t),
        ("BRANCH_LT", |x, t| x < t),
        ("BRANCH_GTE", |x, t| x >= t),
        ("BRANCH_GT", |x, t| x > t),
        ("BRANCH_EQ", |x, t| x == t),
        ("BRANCH_NEQ", |x, t| x != t),
    ];
    for (mode, cmp) in cases {
        let bytes = model(vec![stump(mode, false).regressor(1, vec![])], 1, &["Y"]);
        for x in [0.5f32, 1.0, 1.5, -1e30, f32::INFINITY] {
            let want = if cmp(x, 1.0) { 10.0 } else { 20.0 };
            assert_eq!(run1(&bytes, &[x]), vec![want], "{mode} at {x}");
        }
    }
}

#[test]
fn nan_follows_missing_value_tracks_true() {
    for mode in [
        "BRANCH_LEQ",
        "BRANCH_LT",
        "BRANCH_GTE",
        "BRANCH_GT",
        "BRANCH_EQ",
        "BRANCH_NEQ",
    ] {
        // Without tracking, NaN fails every comparison but "not equal".
        let plain = model(vec![stump(mode, false).regressor(1, vec![])], 1, &["Y"]);
        let want = if mode == "BRANCH_NEQ" { 10.0 } else { 20.0 };
        assert_eq!(run1(&plain, &[f32::NAN]), vec![want], "{mode}");
        let tracked = model(vec![stump(mode, true).regressor(1, vec![])], 1, &["Y"]);
        assert_eq!(
            run1(&tracked, &[f32::NAN]),
            vec![10.0],
            "{mode} tracking missing values"
        );
    }
}

/// Three trees over feature 0: leaves 1|2, 4|8, and a lone leaf 16.
fn three_trees() -> Spec {
    Spec {
        nodes: vec![
            (0, 0, 0, "BRANCH_LEQ", 0.0, 1, 2, false),
            (0, 1, 0, "LEAF", 0.0, 0, 0, false),
            (0, 2, 0, "LEAF", 0.0, 0, 0, false),
            (1, 0, 0, "BRANCH_LEQ", 5.0, 1, 2, false),
            (1, 1, 0, "LEAF", 0.0, 0, 0, false),
            (1, 2, 0, "LEAF", 0.0, 0, 0, false),
            (2, 0, 0, "LEAF", 0.0, 0, 0, false),
        ],
        leaves: vec![
            (0, 1, 0, 1.0),
            (0, 2, 0, 2.0),
            (1, 1, 0, 4.0),
            (1, 2, 0, 8.0),
            (2, 0, 0, 16.0),
        ],
    }
}

#[test]
fn aggregate_functions_and_base_values() {
    // x = 3: leaves 2, 4, 16.
    for (agg, want) in [
        ("SUM", 22.0),
        ("AVERAGE", 22.0 / 3.0),
        ("MIN", 2.0),
        ("MAX", 16.0),
    ] {
        let attrs = vec![
            string("aggregate_function", agg),
            floats("base_values", &[0.5]),
        ];
        let bytes = model(vec![three_trees().regressor(1, attrs)], 1, &["Y"]);
        let got = run1(&bytes, &[3.0])[0];
        assert!((got - (want + 0.5)).abs() < 1e-6, "{agg}: {got}");
    }
}

#[test]
fn post_transforms_on_two_targets() {
    let mut spec = three_trees();
    // Second target: the same leaves, negated, so scores differ in sign.
    let extra: Vec<_> = spec
        .leaves
        .iter()
        .map(|&(t, n, _, w)| (t, n, 1, -w / 10.0))
        .collect();
    spec.leaves.extend(extra);
    let raw = [22.0f32, -2.2];
    let logistic = |v: f32| 1.0 / (1.0 + (-v).exp());
    let e = [(raw[0] - raw[0]).exp(), (raw[1] - raw[0]).exp()];
    let cases: Vec<(&str, [f32; 2])> = vec![
        ("NONE", raw),
        ("LOGISTIC", [logistic(raw[0]), logistic(raw[1])]),
        ("SOFTMAX", [e[0] / (e[0] + e[1]), e[1] / (e[0] + e[1])]),
        ("SOFTMAX_ZERO", [e[0] / (e[0] + e[1]), e[1] / (e[0] + e[1])]),
    ];
    for (post, want) in cases {
        let bytes = model(
            vec![spec.regressor(2, vec![string("post_transform", post)])],
            1,
            &["Y"],
        );
        let got = run1(&bytes, &[3.0]);
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{post}: {got:?} vs {want:?}");
        }
    }
    // PROBIT maps 0.5 to 0 and is increasing.
    let mut p = three_trees();
    p.leaves = vec![
        (0, 1, 0, 0.1),
        (0, 2, 0, 0.2),
        (1, 1, 0, 0.1),
        (1, 2, 0, 0.2),
        (2, 0, 0, 0.3),
    ];
    let bytes = model(
        vec![p.regressor(1, vec![string("post_transform", "PROBIT")])],
        1,
        &["Y"],
    );
    assert!(run1(&bytes, &[-1.0])[0].abs() < 1e-3, "probit(0.5) = 0");
    assert!(run1(&bytes, &[10.0])[0] > 0.5, "probit(0.7) = 0.52");
}

#[test]
fn classifier_label_is_the_top_class() {
    let spec = Spec {
        nodes: vec![
            (0, 0, 0, "BRANCH_LEQ", 0.0, 1, 2, false),
            (0, 1, 0, "LEAF", 0.0, 0, 0, false),
            (0, 2, 0, "LEAF", 0.0, 0, 0, false),
        ],
        leaves: vec![
            (0, 1, 0, 0.7),
            (0, 1, 1, 0.2),
            (0, 1, 2, 0.1),
            (0, 2, 0, 0.1),
            (0, 2, 1, 0.3),
            (0, 2, 2, 0.6),
        ],
    };
    let bytes = model(
        vec![spec.classifier(&[10, 20, 30], vec![])],
        1,
        &["label", "probabilities"],
    );
    assert_eq!(run1(&bytes, &[-1.0]), vec![10.0, 0.7, 0.2, 0.1]);
    assert_eq!(run1(&bytes, &[1.0]), vec![30.0, 0.1, 0.3, 0.6]);
    // Binary, weights for class 0 only holding P(class 1) (skl2onnx's form).
    let binary = Spec {
        nodes: spec.nodes.clone(),
        leaves: vec![(0, 1, 0, 0.25), (0, 2, 0, 0.75)],
    };
    let bytes = model(
        vec![binary.classifier(&[0, 1], vec![])],
        1,
        &["label", "probabilities"],
    );
    assert_eq!(run1(&bytes, &[-1.0]), vec![0.0, 0.75, 0.25]);
    assert_eq!(run1(&bytes, &[1.0]), vec![1.0, 0.25, 0.75]);
}

#[test]
fn double_thresholds_compare_exactly() {
    // 0.1f32 is above 0.1 (f64): `x <= 0.1` must be false for it, though
    // naively narrowing the threshold to f32 would make it true.
    let spec = stump("BRANCH_LEQ", false);
    let mut n = spec.regressor(1, vec![]);
    n.attribute.retain(|a| a.name != "nodes_values");
    let t = pb::TensorProto {
        dims: vec![3],
        data_type: 11,
        double_data: vec![0.1, 0.0, 0.0],
        ..Default::default()
    };
    n.attribute.push(pb::AttributeProto {
        name: "nodes_values_as_tensor".into(),
        r#type: 4,
        t: Some(t),
        ..Default::default()
    });
    let bytes = model(vec![n], 1, &["Y"]);
    assert_eq!(run1(&bytes, &[0.1f32]), vec![20.0]);
    assert_eq!(run1(&bytes, &[0.099_999_99f32]), vec![10.0]);
}

#[test]
fn random_ensembles_match_a_naive_walk() {
    let mut state = 12345u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let modes = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT"];
    for case in 0..40 {
        let n_trees = 1 + (next() % 11) as i64;
        let uniform = case % 2 == 0;
        let mut spec = Spec {
            nodes: vec![],
            leaves: vec![],
        };
        for t in 0..n_trees {
            // Grow a random tree breadth-first up to depth 7.
            let mut pending = vec![(0i64, 0u32)];
            let mut next_id = 1;
            while let Some((id, depth)) = pending.pop() {
                if depth >= 7 || next() % 4 == 0 {
                    spec.nodes.push((t, id, 0, "LEAF", 0.0, 0, 0, false));
                    spec.leaves.push((t, id, 0, (next() % 1000) as f32 / 100.0));
                } else {
                    let mode = if uniform {
                        modes[case % 4]
                    } else {
                        modes[(next() % 4) as usize]
                    };
                    let thr = ((next() % 9) as f32 - 4.0) / 2.0;
                    let missing = next() % 3 == 0;
                    spec.nodes.push((
                        t,
                        id,
                        (next() % 3) as i64,
                        mode,
                        thr,
                        next_id,
                        next_id + 1,
                        missing,
                    ));
                    pending.push((next_id, depth + 1));
                    pending.push((next_id + 1, depth + 1));
                    next_id += 2;
                }
            }
        }
        let bytes = model(vec![spec.regressor(1, vec![])], 3, &["Y"]);
        let m = MlRuntime.load(&bytes).unwrap();
        for _ in 0..50 {
            let pick = |r: u64| {
                if r.is_multiple_of(10) {
                    f32::NAN
                } else {
                    ((r % 9) as f32 - 4.0) / 2.0
                }
            };
            let x = [pick(next()), pick(next()), pick(next())];
            let mut out = [0.0];
            m.run(&x, &mut out).unwrap();
            let want: f32 = spec.naive(&x).iter().sum();
            assert!(
                (out[0] - want).abs() <= 1e-4 * want.abs().max(1.0),
                "case {case} x {x:?}: {} vs {want}",
                out[0]
            );
        }
    }
}

#[test]
fn interpreter_runs_a_scaler_and_label_encoder_graph() {
    let scaler = node(
        "Scaler",
        "ai.onnx.ml",
        &["X"],
        &["S"],
        vec![floats("offset", &[1.0, 2.0]), floats("scale", &[2.0, 0.5])],
    );
    let cast = node("Cast", "", &["S"], &["I"], vec![int("to", 7)]);
    let enc = node(
        "LabelEncoder",
        "ai.onnx.ml",
        &["I"],
        &["Y"],
        vec![
            ints("keys_int64s", &[0, 1, 2]),
            floats("values_floats", &[5.0, 6.0, 7.0]),
            floats("default_float", &[]),
        ],
    );
    let bytes = model(vec![scaler, cast, enc], 2, &["Y"]);
    // (x - offset) * scale = [2, 1] -> ints [2, 1] -> [7, 6]
    assert_eq!(run1(&bytes, &[2.0, 4.0]), vec![7.0, 6.0]);
    // Unknown keys take default_float (-0.0 when absent, as the spec says).
    assert_eq!(run1(&bytes, &[10.0, 4.0]), vec![-0.0, 6.0]);
}

#[test]
fn bad_models_give_errors_a_user_can_act_on() {
    let good = model(
        vec![stump("BRANCH_LEQ", false).regressor(1, vec![])],
        1,
        &["Y"],
    );
    // Truncated bytes.
    let err = load_model(&good[..good.len() / 2])
        .err()
        .expect("truncated model must fail");
    assert!(matches!(err, Error::Decode(_)), "{err}");
    assert!(matches!(load_model(&[]).err(), Some(Error::Decode(_))));
    // Unknown op, named with its domain and opset.
    let bytes = model(
        vec![node("FancyForest", "ai.onnx.ml", &["X"], &["Y"], vec![])],
        1,
        &["Y"],
    );
    let err = load_model(&bytes).err().expect("unknown op must fail");
    assert_eq!(
        err.to_string(),
        "unsupported op \"FancyForest\" (domain \"ai.onnx.ml\", opset 3) in node \"my_FancyForest\""
    );
    // An input so wide that a row of it would not fit in memory (a model
    // of a few hundred bytes asking for 4 TiB): refused at load.
    let wide = model(
        vec![node("Relu", "", &["X"], &["Y"], vec![])],
        1 << 40,
        &["Y"],
    );
    let err = load_model(&wide)
        .err()
        .expect("too wide an input must fail");
    assert!(err.to_string().contains("at most"), "{err}");
    // Wrong input width at run time.
    let m = load_model(&good).unwrap();
    let mut out = [0.0];
    assert_eq!(
        m.run(&[1.0, 2.0], &mut out).err(),
        Some(Error::InputWidth {
            expected: 1,
            got: 2
        })
    );
    assert_eq!(
        m.run(&[1.0], &mut [0.0; 3]).err(),
        Some(Error::OutputWidth {
            expected: 1,
            got: 3
        })
    );
    // Missing attribute.
    let mut n = stump("BRANCH_LEQ", false).regressor(1, vec![]);
    n.attribute.retain(|a| a.name != "nodes_modes");
    let err = load_model(&model(vec![n], 1, &["Y"])).err().unwrap();
    assert!(
        matches!(&err, Error::MissingAttribute { attribute, .. } if attribute == "nodes_modes"),
        "{err}"
    );
    // A tree whose split points back to its root: no node is the root.
    let mut cyclic = three_trees();
    cyclic.nodes[2] = (0, 2, 0, "BRANCH_LEQ", 1.0, 0, 1, false);
    cyclic.leaves.retain(|l| (l.0, l.1) != (0, 2));
    let err = load_model(&model(vec![cyclic.regressor(1, vec![])], 1, &["Y"]))
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "node \"my_TreeEnsembleRegressor\" (TreeEnsembleRegressor): tree 0 has 0 root nodes \
         (nodes nobody points to); a tree has exactly one"
    );
    // A split whose two children are one node.
    let mut shared = stump("BRANCH_LEQ", false);
    shared.nodes[0].6 = 1;
    shared.nodes.pop();
    shared.leaves.pop();
    let err = load_model(&model(vec![shared.regressor(1, vec![])], 1, &["Y"]))
        .err()
        .unwrap();
    assert!(err.to_string().contains("reached twice"), "{err}");
    // Trees reading a feature the input does not have.
    let mut wide = stump("BRANCH_LEQ", false);
    wide.nodes[0].2 = 4;
    let err = load_model(&model(vec![wide.regressor(1, vec![])], 3, &["Y"]))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("feature 4 but the input has 3 columns"),
        "{err}"
    );
    // A graph with two inputs.
    let mut two = pb::ModelProto::decode(&good[..]).unwrap();
    two.graph
        .as_mut()
        .unwrap()
        .input
        .push(value_info("Z", 1, &[None, Some(1)]));
    let err = load_model(&two.encode_to_vec()).err().unwrap();
    assert!(err.to_string().contains("exactly one"), "{err}");
}

#[test]
fn model_set_feeds_each_model_its_features() {
    let a = load_model(&model(
        vec![stump("BRANCH_LEQ", false).regressor(1, vec![])],
        1,
        &["Y"],
    ))
    .unwrap();
    let b = load_model(&model(
        vec![stump("BRANCH_GT", false).regressor(1, vec![])],
        1,
        &["Y"],
    ))
    .unwrap();
    let mut set = ModelSet::new(["temperature", "vibration"]);
    set.bind("by_temperature", a, &["temperature"]).unwrap();
    set.bind("by_vibration", b, &["vibration"]).unwrap();
    let p = set.run(&[0.0, 5.0]).unwrap();
    assert_eq!(p[0].values, vec![10.0]);
    assert_eq!(p[1].values, vec![10.0]);
    let c = load_model(&model(
        vec![stump("BRANCH_LEQ", false).regressor(1, vec![])],
        1,
        &["Y"],
    ))
    .unwrap();
    let err = set.bind("c", c, &["pressure"]).err().unwrap();
    assert_eq!(
        err,
        Error::UnknownFeature {
            model: "c".into(),
            feature: "pressure".into()
        }
    );
}

/// A model of `nodes` with initializers `inits` (name, dims, values).
fn model_with(
    nodes: Vec<pb::NodeProto>,
    width: i64,
    outputs: &[&str],
    inits: &[(&str, &[i64], Vec<f32>, bool)],
) -> Vec<u8> {
    let mut proto = pb::ModelProto::decode(&model(nodes, width, outputs)[..]).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    for (name, dims, values, int64) in inits {
        graph.initializer.push(pb::TensorProto {
            name: (*name).into(),
            dims: dims.to_vec(),
            data_type: if *int64 { 7 } else { 1 },
            float_data: if *int64 { vec![] } else { values.clone() },
            int64_data: if *int64 {
                values.iter().map(|v| *v as i64).collect()
            } else {
                vec![]
            },
            ..Default::default()
        });
    }
    proto.encode_to_vec()
}

fn identity_scaler(input: &str, output: &str, width: usize) -> pb::NodeProto {
    node(
        "Scaler",
        "ai.onnx.ml",
        &[input],
        &[output],
        vec![
            floats("offset", &vec![0.0; width]),
            floats("scale", &vec![1.0; width]),
        ],
    )
}

/// A regressor's leaf with two weights for one target: onnxruntime takes
/// the first, the sum or one vote each depending on the target count and
/// the aggregate, so it is refused; a classifier's add up (as there).
#[test]
fn a_regressor_leaf_with_two_weights_for_one_target_is_refused() {
    let mut spec = stump("BRANCH_LEQ", false);
    spec.leaves.push((0, 1, 0, 2.0));
    let err = load_model(&model(vec![spec.regressor(1, vec![])], 1, &["Y"]))
        .err()
        .expect("two weights for one target must fail");
    assert!(
        err.to_string().contains("two weights for target 0"),
        "{err}"
    );
    let bytes = model(
        vec![spec.classifier(&[0, 1], vec![])],
        1,
        &["label", "probabilities"],
    );
    assert!(load_model(&bytes).is_ok());
}

/// Models whose shapes ask for more memory than a row can need are
/// refused at load with an error, not allocated (the process would abort).
#[test]
fn models_asking_for_huge_tensors_are_refused() {
    // A regressor of 2^40 targets: a few hundred bytes.
    let huge = model(
        vec![stump("BRANCH_LEQ", false).regressor(1 << 40, vec![])],
        1,
        &["Y"],
    );
    let err = load_model(&huge).err().expect("2^40 targets must fail");
    assert!(err.to_string().contains("n_targets must be 1 to"), "{err}");
    // Two long constants broadcast against each other: 2^25 values.
    let nodes = vec![
        identity_scaler("X", "S", 1),
        node("Add", "", &["A", "B"], &["Big"], vec![]),
        node("Add", "", &["S", "Big"], &["Y"], vec![]),
    ];
    let bytes = model_with(
        nodes,
        1,
        &["Y"],
        &[
            ("A", &[4096, 1], vec![0.0; 4096], false),
            ("B", &[1, 8192], vec![0.0; 8192], false),
        ],
    );
    let err = MlRuntime
        .load(&bytes)
        .err()
        .expect("a 2^25 broadcast must fail");
    assert!(err.to_string().contains("more than"), "{err}");
    // A product of a column and a row of 65,536: 2^32 values from 512 KiB.
    let nodes = vec![
        identity_scaler("X", "S", 1),
        node("MatMul", "", &["A", "B"], &["Big"], vec![]),
        node("Add", "", &["S", "Big"], &["Y"], vec![]),
    ];
    let bytes = model_with(
        nodes,
        1,
        &["Y"],
        &[
            ("A", &[65_536, 1], vec![0.0; 65_536], false),
            ("B", &[1, 65_536], vec![0.0; 65_536], false),
        ],
    );
    let err = MlRuntime
        .load(&bytes)
        .err()
        .expect("a 2^32 product must fail");
    assert!(err.to_string().contains("more than"), "{err}");
    // Two 2,048-square matrices: within the size limit, but 2^33
    // multiplications.
    let nodes = vec![
        identity_scaler("X", "S", 1),
        node("Gemm", "", &["A", "A"], &["Big"], vec![]),
        node("Add", "", &["S", "Big"], &["Y"], vec![]),
    ];
    let bytes = model_with(
        nodes,
        1,
        &["Y"],
        &[("A", &[2048, 2048], vec![0.0; 2048 * 2048], false)],
    );
    let err = MlRuntime
        .load(&bytes)
        .err()
        .expect("2^33 multiplications must fail");
    assert!(err.to_string().contains("multiplications"), "{err}");
    // Many steps, each within its limit: 2^22 values each, 2^27 in all.
    let mut nodes = vec![identity_scaler("X", "S", 1)];
    let mut last = "S".to_string();
    for i in 0..32 {
        let out = if i == 31 {
            "Y".to_string()
        } else {
            format!("V{i}")
        };
        nodes.push(node("Add", "", &[&last, "Wide"], &[&out], vec![]));
        last = out;
    }
    let bytes = model_with(
        nodes,
        1,
        &["Y"],
        &[("Wide", &[1 << 22], vec![0.0; 1 << 22], false)],
    );
    let err = MlRuntime
        .load(&bytes)
        .err()
        .expect("2^27 values in all must fail");
    assert!(err.to_string().contains("in all"), "{err}");
}

/// Flatten's negative axis counts from the rank (ONNX): -1 on [1, 2] is
/// axis 1, so a bias of 2 added after it gives 2 values, not 4.
#[test]
fn flatten_with_a_negative_axis_and_scalar_axes() {
    let nodes = vec![
        identity_scaler("X", "S", 2),
        node("Flatten", "", &["S"], &["F"], vec![int("axis", -1)]),
        node("Add", "", &["F", "Bias"], &["Y"], vec![]),
    ];
    let bytes = model_with(nodes, 2, &["Y"], &[("Bias", &[2], vec![10.0, 20.0], false)]);
    assert_eq!(run1(&bytes, &[1.0, 2.0]), vec![11.0, 22.0]);
    // An axis on a scalar is refused, not a panic.
    let nodes = vec![
        identity_scaler("X", "S", 1),
        node("ArgMax", "", &["C"], &["Y"], vec![int("axis", 0)]),
    ];
    let bytes = model_with(nodes, 1, &["S", "Y"], &[("C", &[], vec![3.0], false)]);
    let err = MlRuntime
        .load(&bytes)
        .err()
        .expect("an axis of a scalar must fail");
    assert!(err.to_string().contains("out of range for rank 0"), "{err}");
}

/// A shape computed from the data can change a model's output width from
/// one row to the next: that row fails, it does not overrun the buffer.
#[test]
fn an_output_wider_than_at_load_is_an_error() {
    let nodes = vec![
        identity_scaler("X", "S", 2),
        node("Cast", "", &["S"], &["I"], vec![int("to", 7)]),
        node("Reshape", "", &["I", "Flat"], &["V"], vec![]),
        node("Add", "", &["V", "Base"], &["Shape"], vec![]),
        node("Reshape", "", &["Six", "Shape"], &["R"], vec![]),
        node("Add", "", &["R", "Bias"], &["Y"], vec![]),
    ];
    let bytes = model_with(
        nodes,
        2,
        &["Y"],
        &[
            ("Flat", &[1], vec![2.0], true),
            ("Base", &[2], vec![1.0, 6.0], true),
            ("Six", &[6], vec![1.0; 6], false),
            ("Bias", &[6], vec![0.0; 6], false),
        ],
    );
    let m = MlRuntime.load(&bytes).expect("load");
    assert_eq!(m.output_len(), 6);
    let mut out = vec![0.0; 6];
    m.run(&[0.0, 0.0], &mut out)
        .expect("the width seen at load");
    // [5, -5] makes the shape [6, 1]: broadcast with the bias, 36 values.
    let err = m
        .run(&[5.0, -5.0], &mut out)
        .expect_err("36 values must fail");
    assert!(err.to_string().contains("36 output values"), "{err}");
}
