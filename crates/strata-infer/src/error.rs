//! The crate's one error type. Its messages are shown to people uploading
//! models, so each one names the node, operator or attribute at fault.

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The bytes are not an ONNX model (truncated, or another format).
    #[error("not a valid ONNX model: {0}")]
    Decode(String),

    /// The graph uses an operator this runtime does not implement.
    #[error(
        "unsupported op \"{op}\" (domain \"{domain}\", opset {opset}) in node \"{node}\"{hint}"
    )]
    UnsupportedOp {
        /// Operator type, e.g. `TreeEnsemble`.
        op: String,
        /// Operator domain, `ai.onnx` or `ai.onnx.ml`.
        domain: String,
        /// Opset version the model imports for that domain.
        opset: i64,
        /// Name of the node (or its index when it has no name).
        node: String,
        /// Extra advice, starting with "; " when present.
        hint: String,
    },

    /// A node lacks an attribute its operator needs.
    #[error("node \"{node}\" ({op}) is missing attribute \"{attribute}\"")]
    MissingAttribute {
        /// Name of the node.
        node: String,
        /// Operator type.
        op: String,
        /// The attribute that is missing.
        attribute: String,
    },

    /// A node is malformed: inconsistent attributes, bad tree structure,
    /// operand shapes or types that do not fit.
    #[error("node \"{node}\" ({op}): {message}")]
    InvalidNode {
        /// Name of the node.
        node: String,
        /// Operator type.
        op: String,
        /// What is wrong.
        message: String,
    },

    /// The graph as a whole does not fit what Strata can run (several
    /// inputs, unknown input width, a dangling value...).
    #[error("invalid model: {0}")]
    InvalidModel(String),

    /// The feature vector handed to `run` has the wrong length.
    #[error("the model takes {expected} features per row, got {got}")]
    InputWidth {
        /// Features the model takes.
        expected: usize,
        /// Features given.
        got: usize,
    },

    /// The output buffer handed to `run` has the wrong length.
    #[error("the model writes {expected} output values per row, the buffer holds {got}")]
    OutputWidth {
        /// Values the model writes.
        expected: usize,
        /// Length of the buffer given.
        got: usize,
    },

    /// A named feature a model is bound to is not in the feature vector.
    #[error("model \"{model}\" needs feature \"{feature}\", which the feature vector lacks")]
    UnknownFeature {
        /// The model's name in the set.
        model: String,
        /// The missing feature.
        feature: String,
    },

    /// tract refused or failed to run the model.
    #[error("tract: {0}")]
    Tract(String),

    /// onnxruntime refused or failed to run the model.
    #[error("onnxruntime: {0}")]
    Onnxruntime(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
