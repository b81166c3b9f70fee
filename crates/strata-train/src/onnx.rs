//! Writing ONNX: the protobuf types `tract-onnx` already brings, encoded
//! with the `prost` it uses, and builders for what the trainers export
//! (a float `[N, features]` input, constants, standard and `ai.onnx.ml`
//! nodes, a `TreeEnsembleRegressor` from [`Tree`]s). Opsets are ones both
//! onnxruntime and Strata's evaluator take: `ai.onnx` 17, `ai.onnx.ml` 3.

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};

use crate::tree::{NodeKind, Tree};

/// ONNX IR version written.
pub const IR_VERSION: i64 = 8;
/// `ai.onnx` opset imported.
pub const ONNX_OPSET: i64 = 17;
/// `ai.onnx.ml` opset imported (`TreeEnsembleRegressor` as of opset 3).
pub const ML_OPSET: i64 = 3;
/// The `ai.onnx.ml` domain.
pub const ML_DOMAIN: &str = "ai.onnx.ml";

const FLOAT: i32 = 1;

fn tensor_type(dims: Vec<Dimension>) -> pb::TypeProto {
    pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: FLOAT,
            shape: Some(pb::TensorShapeProto { dim: dims }),
        })),
        ..Default::default()
    }
}

/// A float tensor `[N, width]` with a symbolic batch dimension `N`.
pub(crate) fn batch_value(name: &str, width: usize) -> pb::ValueInfoProto {
    let dims = vec![
        Dimension {
            value: Some(dimension::Value::DimParam("N".into())),
            ..Default::default()
        },
        Dimension {
            value: Some(dimension::Value::DimValue(width as i64)),
            ..Default::default()
        },
    ];
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(tensor_type(dims)),
        ..Default::default()
    }
}

/// A float constant of the given shape.
pub(crate) fn tensor(name: &str, dims: &[usize], values: Vec<f32>) -> pb::TensorProto {
    debug_assert_eq!(dims.iter().product::<usize>(), values.len());
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: FLOAT,
        float_data: values,
        ..Default::default()
    }
}

/// An attribute; build it with one of the helpers below.
pub(crate) struct Attr(pb::AttributeProto);

fn attr(name: &str, r#type: AttributeType) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: r#type as i32,
        ..Default::default()
    }
}

pub(crate) fn ints(name: &str, v: Vec<i64>) -> Attr {
    Attr(pb::AttributeProto {
        ints: v,
        ..attr(name, AttributeType::Ints)
    })
}

pub(crate) fn floats(name: &str, v: Vec<f32>) -> Attr {
    Attr(pb::AttributeProto {
        floats: v,
        ..attr(name, AttributeType::Floats)
    })
}

pub(crate) fn int(name: &str, v: i64) -> Attr {
    Attr(pb::AttributeProto {
        i: v,
        ..attr(name, AttributeType::Int)
    })
}

pub(crate) fn string(name: &str, v: &str) -> Attr {
    Attr(pb::AttributeProto {
        s: v.as_bytes().to_vec(),
        ..attr(name, AttributeType::String)
    })
}

pub(crate) fn strings(name: &str, v: Vec<&str>) -> Attr {
    Attr(pb::AttributeProto {
        strings: v.into_iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..attr(name, AttributeType::Strings)
    })
}

/// A node; `domain` is `""` for standard ops.
pub(crate) fn node(
    op: &str,
    domain: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<Attr>,
) -> pb::NodeProto {
    pb::NodeProto {
        name: format!("{}_{}", op, outputs.first().copied().unwrap_or("out")),
        op_type: op.into(),
        domain: domain.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs.into_iter().map(|a| a.0).collect(),
        ..Default::default()
    }
}

/// How a `TreeEnsembleRegressor` combines its trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Aggregate {
    Sum,
    Average,
}

/// A one-target `TreeEnsembleRegressor` over `trees`: node ids are the
/// trees' own node indices and tree ids their positions, as in
/// [`crate::TreeStats`].
pub(crate) fn tree_ensemble_regressor(
    input: &str,
    output: &str,
    trees: &[Tree],
    aggregate: Aggregate,
    base_value: f32,
) -> pb::NodeProto {
    let n: usize = trees.iter().map(|t| t.nodes.len()).sum();
    let mut tree_ids = Vec::with_capacity(n);
    let mut node_ids = Vec::with_capacity(n);
    let mut feature_ids = Vec::with_capacity(n);
    let mut modes = Vec::with_capacity(n);
    let mut values = Vec::with_capacity(n);
    let mut true_ids = Vec::with_capacity(n);
    let mut false_ids = Vec::with_capacity(n);
    let (mut t_tree, mut t_node, mut t_weight) = (Vec::new(), Vec::new(), Vec::new());
    for (k, tree) in trees.iter().enumerate() {
        for (i, node) in tree.nodes.iter().enumerate() {
            tree_ids.push(k as i64);
            node_ids.push(i as i64);
            match node.kind {
                NodeKind::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => {
                    feature_ids.push(feature as i64);
                    modes.push("BRANCH_LEQ");
                    values.push(threshold);
                    true_ids.push(left as i64);
                    false_ids.push(right as i64);
                }
                NodeKind::Leaf { value } => {
                    feature_ids.push(0);
                    modes.push("LEAF");
                    values.push(0.0);
                    true_ids.push(0);
                    false_ids.push(0);
                    t_tree.push(k as i64);
                    t_node.push(i as i64);
                    t_weight.push(value);
                }
            }
        }
    }
    let n_leaves = t_tree.len();
    let aggregate = match aggregate {
        Aggregate::Sum => "SUM",
        Aggregate::Average => "AVERAGE",
    };
    node(
        "TreeEnsembleRegressor",
        ML_DOMAIN,
        &[input],
        &[output],
        vec![
            int("n_targets", 1),
            string("aggregate_function", aggregate),
            string("post_transform", "NONE"),
            floats("base_values", vec![base_value]),
            ints("nodes_treeids", tree_ids),
            ints("nodes_nodeids", node_ids),
            ints("nodes_featureids", feature_ids),
            strings("nodes_modes", modes),
            floats("nodes_values", values),
            ints("nodes_truenodeids", true_ids),
            ints("nodes_falsenodeids", false_ids),
            ints("target_treeids", t_tree),
            ints("target_nodeids", t_node),
            ints("target_ids", vec![0; n_leaves]),
            floats("target_weights", t_weight),
        ],
    )
}

/// A graph with one input, given nodes, constants and outputs.
pub(crate) struct Graph {
    pub name: &'static str,
    pub input: pb::ValueInfoProto,
    pub nodes: Vec<pb::NodeProto>,
    pub constants: Vec<pb::TensorProto>,
    pub outputs: Vec<pb::ValueInfoProto>,
}

/// Encodes a model; `metadata` goes to `metadata_props` (kind, feature
/// names) so the file says what it was trained on.
pub(crate) fn encode(graph: Graph, metadata: &[(&str, String)]) -> Vec<u8> {
    let uses_ml = graph.nodes.iter().any(|n| n.domain == ML_DOMAIN);
    let mut opset_import = vec![pb::OperatorSetIdProto {
        domain: String::new(),
        version: ONNX_OPSET,
    }];
    if uses_ml {
        opset_import.push(pb::OperatorSetIdProto {
            domain: ML_DOMAIN.into(),
            version: ML_OPSET,
        });
    }
    let model = pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import,
        producer_name: "strata-train".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(pb::GraphProto {
            name: graph.name.into(),
            node: graph.nodes,
            initializer: graph.constants,
            input: vec![graph.input],
            output: graph.outputs,
            ..Default::default()
        }),
        metadata_props: metadata
            .iter()
            .map(|(k, v)| pb::StringStringEntryProto {
                key: (*k).into(),
                value: v.clone(),
            })
            .collect(),
        ..Default::default()
    };
    model.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::tests::small_tree;

    fn attr_of<'a>(node: &'a pb::NodeProto, name: &str) -> &'a pb::AttributeProto {
        node.attribute.iter().find(|a| a.name == name).unwrap()
    }

    #[test]
    fn tree_ensemble_lists_nodes_by_tree_and_node_id() {
        let node =
            tree_ensemble_regressor("x", "y", &[small_tree(), small_tree()], Aggregate::Sum, 0.5);
        assert_eq!(node.domain, ML_DOMAIN);
        assert_eq!(
            attr_of(&node, "nodes_treeids").ints,
            [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
        );
        assert_eq!(attr_of(&node, "nodes_nodeids").ints[..5], [0, 1, 2, 3, 4]);
        assert_eq!(attr_of(&node, "nodes_truenodeids").ints[..2], [1, 3]);
        assert_eq!(attr_of(&node, "nodes_falsenodeids").ints[..2], [2, 4]);
        assert_eq!(attr_of(&node, "nodes_values").floats[..2], [1.5, 0.0]);
        assert_eq!(attr_of(&node, "target_nodeids").ints, [2, 3, 4, 2, 3, 4]);
        assert_eq!(
            attr_of(&node, "target_weights").floats[..3],
            [3.0, 1.0, 2.0]
        );
        assert_eq!(attr_of(&node, "base_values").floats, [0.5]);
        assert_eq!(attr_of(&node, "aggregate_function").s, b"SUM");
    }

    #[test]
    fn encoded_models_decode_with_their_opsets() {
        let graph = Graph {
            name: "g",
            input: batch_value("features", 2),
            nodes: vec![node("Neg", "", &["features"], &["y"], vec![])],
            constants: vec![],
            outputs: vec![batch_value("y", 2)],
        };
        let bytes = encode(graph, &[("strata.kind", "test".into())]);
        let model = pb::ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(model.ir_version, IR_VERSION);
        assert_eq!(model.opset_import.len(), 1);
        assert_eq!(model.metadata_props[0].value, "test");
        assert_eq!(model.graph.unwrap().node[0].op_type, "Neg");
    }
}
