//! The binary decision tree both tree trainers grow, its walk (the same
//! `x <= threshold` test, in `f32`, as the exported `BRANCH_LEQ` nodes), and
//! the per-node training sample counts that ONNX has no place for.

use serde::{Deserialize, Serialize};

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NodeKind {
    /// Rows with `x[feature] <= threshold` go to `left`, the others to
    /// `right` (`left` is the ONNX "true" child).
    Split {
        /// Feature (column) index.
        feature: usize,
        /// The threshold, compared in `f32`.
        threshold: f32,
        /// Node id of the `<=` child.
        left: usize,
        /// Node id of the `>` child.
        right: usize,
    },
    /// A leaf and its value.
    Leaf {
        /// The value the tree gives rows ending here.
        value: f32,
    },
}

/// One node with the number of training rows that reached it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeNode {
    /// Split or leaf.
    pub kind: NodeKind,
    /// Training rows (of the tree's own subsample) that reached the node.
    pub samples: u64,
}

/// A tree; node ids are indices into `nodes` and equal the exported ONNX
/// `nodes_nodeids`. The root is node 0.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tree {
    /// The nodes, root first.
    pub nodes: Vec<TreeNode>,
}

impl Tree {
    /// The leaf value a row ends at.
    pub fn predict(&self, x: &[f32]) -> f32 {
        let mut at = 0;
        loop {
            match self.nodes[at].kind {
                NodeKind::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => at = if x[feature] <= threshold { left } else { right },
                NodeKind::Leaf { value } => return value,
            }
        }
    }

    /// Number of leaves.
    pub fn n_leaves(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::Leaf { .. }))
            .count()
    }

    /// Splits on the longest root-to-leaf path.
    pub fn depth(&self) -> usize {
        fn depth_of(tree: &Tree, at: usize) -> usize {
            match tree.nodes[at].kind {
                NodeKind::Split { left, right, .. } => {
                    1 + depth_of(tree, left).max(depth_of(tree, right))
                }
                NodeKind::Leaf { .. } => 0,
            }
        }
        depth_of(self, 0)
    }
}

/// Training sample counts per tree and node (exact TreeSHAP needs them and
/// ONNX drops them), stored beside the artifact as
/// `{"trees":[{"node_samples":[...]}, ...]}`: tree `k` is the ONNX
/// `nodes_treeids` value `k`, and `node_samples[i]` belongs to node id `i`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeStats {
    /// One entry per tree, in tree id order.
    pub trees: Vec<TreeNodeSamples>,
}

/// The sample counts of one tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeNodeSamples {
    /// Training rows that reached each node, by node id.
    pub node_samples: Vec<u64>,
}

impl TreeStats {
    /// The counts of an ensemble, tree `k` being `trees[k]`.
    pub fn of(trees: &[Tree]) -> Self {
        TreeStats {
            trees: trees
                .iter()
                .map(|t| TreeNodeSamples {
                    node_samples: t.nodes.iter().map(|n| n.samples).collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `x0 <= 1.5 ? (x1 <= 0 ? 1 : 2) : 3`, with counts 10 = 6 + 4, 6 = 2 + 4.
    pub(crate) fn small_tree() -> Tree {
        let split = |feature, threshold, left, right, samples| TreeNode {
            kind: NodeKind::Split {
                feature,
                threshold,
                left,
                right,
            },
            samples,
        };
        let leaf = |value, samples| TreeNode {
            kind: NodeKind::Leaf { value },
            samples,
        };
        Tree {
            nodes: vec![
                split(0, 1.5, 1, 2, 10),
                split(1, 0.0, 3, 4, 6),
                leaf(3.0, 4),
                leaf(1.0, 2),
                leaf(2.0, 4),
            ],
        }
    }

    #[test]
    fn walks_with_less_or_equal() {
        let t = small_tree();
        assert_eq!(t.predict(&[1.5, 0.0]), 1.0);
        assert_eq!(t.predict(&[1.0, 0.1]), 2.0);
        assert_eq!(t.predict(&[1.6, -5.0]), 3.0);
        assert_eq!(t.depth(), 2);
        assert_eq!(t.n_leaves(), 3);
    }

    #[test]
    fn stats_serialise_keyed_by_tree_and_node() {
        let stats = TreeStats::of(&[small_tree()]);
        let json = serde_json::to_string(&stats).unwrap();
        assert_eq!(json, r#"{"trees":[{"node_samples":[10,6,4,2,4]}]}"#);
        assert_eq!(serde_json::from_str::<TreeStats>(&json).unwrap(), stats);
    }
}
