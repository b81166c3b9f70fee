//! The operators of the interpreter: exactly what skl2onnx emits for tree
//! ensembles, IsolationForest, scalers, label encoders and small MLPs, plus
//! a few neighbours that cost nothing. Each is compiled once from its node
//! (attributes checked, constants resolved) and then run on tensors.

use std::collections::HashMap;

use super::tree::{TreeEnsemble, logistic, softmax};
use super::value::{Data, Value, broadcast_indices, broadcast_shape};
use crate::error::{Error, Result};
use crate::onnx::{NodeCtx, dtype, dtype_name, tensor_f64, tensor_i64, tensor_shape};

/// Every (domain, op) the interpreter runs. Identity and ZipMap are not
/// listed as ops: the compiler turns them into aliases of their input.
pub const SUPPORTED_OPS: &[(&str, &str)] = &[
    ("ai.onnx.ml", "TreeEnsembleRegressor"),
    ("ai.onnx.ml", "TreeEnsembleClassifier"),
    ("ai.onnx.ml", "Scaler"),
    ("ai.onnx.ml", "LabelEncoder"),
    ("ai.onnx.ml", "ArrayFeatureExtractor"),
    ("ai.onnx.ml", "ZipMap"),
    ("ai.onnx", "Identity"),
    ("ai.onnx", "Cast"),
    ("ai.onnx", "Reshape"),
    ("ai.onnx", "Flatten"),
    ("ai.onnx", "Gather"),
    ("ai.onnx", "Concat"),
    ("ai.onnx", "Add"),
    ("ai.onnx", "Sub"),
    ("ai.onnx", "Mul"),
    ("ai.onnx", "Div"),
    ("ai.onnx", "Pow"),
    ("ai.onnx", "Equal"),
    ("ai.onnx", "Greater"),
    ("ai.onnx", "Less"),
    ("ai.onnx", "GreaterOrEqual"),
    ("ai.onnx", "LessOrEqual"),
    ("ai.onnx", "Sum"),
    ("ai.onnx", "Max"),
    ("ai.onnx", "Min"),
    ("ai.onnx", "Mean"),
    ("ai.onnx", "Neg"),
    ("ai.onnx", "Abs"),
    ("ai.onnx", "Log"),
    ("ai.onnx", "Exp"),
    ("ai.onnx", "Sqrt"),
    ("ai.onnx", "Reciprocal"),
    ("ai.onnx", "Floor"),
    ("ai.onnx", "Ceil"),
    ("ai.onnx", "Relu"),
    ("ai.onnx", "Sigmoid"),
    ("ai.onnx", "Tanh"),
    ("ai.onnx", "Not"),
    ("ai.onnx", "MatMul"),
    ("ai.onnx", "Gemm"),
    ("ai.onnx", "ArgMax"),
    ("ai.onnx", "Softmax"),
];

#[derive(Debug, Clone, Copy)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    Equal,
    Greater,
    Less,
    GreaterOrEqual,
    LessOrEqual,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum UnOp {
    Neg,
    Abs,
    Log,
    Exp,
    Sqrt,
    Reciprocal,
    Floor,
    Ceil,
    Relu,
    Sigmoid,
    Tanh,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Elem {
    F32,
    I64,
    Bool,
}

#[derive(Debug, Clone)]
pub(crate) enum LabelMap {
    IntToFloat(HashMap<i64, f32>, f32),
    IntToInt(HashMap<i64, i64>, i64),
    FloatToFloat(HashMap<u32, f32>, f32),
    FloatToInt(HashMap<u32, i64>, i64),
}

/// A compiled operator.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Tree(Box<TreeEnsemble>),
    Scaler {
        offset: Vec<f32>,
        scale: Vec<f32>,
    },
    LabelEncoder(LabelMap),
    ArrayFeatureExtractor,
    Cast(Elem),
    Reshape {
        allow_zero: bool,
    },
    Flatten {
        axis: i64,
    },
    Gather {
        axis: i64,
    },
    Concat {
        axis: i64,
    },
    Binary(BinOp),
    /// Sum, Max, Min over any number of inputs; `mean` divides at the end.
    Variadic {
        op: BinOp,
        mean: bool,
    },
    Unary(UnOp),
    MatMul,
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    ArgMax {
        axis: i64,
        keep_dims: bool,
        last: bool,
    },
    Softmax {
        axis: i64,
    },
}

impl Op {
    /// Compiles a node, or `Ok(None)` for ops that only rename a value.
    pub(crate) fn compile(ctx: &NodeCtx<'_>, domain: &str) -> Result<Option<Op>> {
        let op = ctx.node.op_type.as_str();
        let ml = domain == "ai.onnx.ml";
        let std = domain == "ai.onnx";
        let compiled = match op {
            "TreeEnsembleRegressor" | "TreeEnsembleClassifier" if ml => {
                Op::Tree(Box::new(TreeEnsemble::from_node(ctx)?))
            }
            "Scaler" if ml => {
                let offset = ctx
                    .floats("offset")
                    .map(<[f32]>::to_vec)
                    .unwrap_or_default();
                let scale = ctx.floats("scale").map(<[f32]>::to_vec).unwrap_or_default();
                Op::Scaler { offset, scale }
            }
            "LabelEncoder" if ml => Op::LabelEncoder(label_map(ctx)?),
            "ArrayFeatureExtractor" if ml => Op::ArrayFeatureExtractor,
            "ZipMap" if ml => return Ok(None),
            "Identity" if std => return Ok(None),
            "Cast" if std => {
                let to = ctx.int("to").ok_or_else(|| missing(ctx, "to"))? as i32;
                Op::Cast(match to {
                    dtype::FLOAT | dtype::DOUBLE => Elem::F32,
                    dtype::INT64 | dtype::INT32 => Elem::I64,
                    dtype::BOOL => Elem::Bool,
                    other => {
                        return Err(
                            ctx.invalid(format!("cast to {} is not supported", dtype_name(other)))
                        );
                    }
                })
            }
            "Reshape" if std => Op::Reshape {
                allow_zero: ctx.int("allowzero").unwrap_or(0) != 0,
            },
            "Flatten" if std => Op::Flatten {
                axis: ctx.int("axis").unwrap_or(1),
            },
            "Gather" if std => Op::Gather {
                axis: ctx.int("axis").unwrap_or(0),
            },
            "Concat" if std => Op::Concat {
                axis: ctx.int("axis").ok_or_else(|| missing(ctx, "axis"))?,
            },
            "Add" if std => Op::Binary(BinOp::Add),
            "Sub" if std => Op::Binary(BinOp::Sub),
            "Mul" if std => Op::Binary(BinOp::Mul),
            "Div" if std => Op::Binary(BinOp::Div),
            "Pow" if std => Op::Binary(BinOp::Pow),
            "Equal" if std => Op::Binary(BinOp::Equal),
            "Greater" if std => Op::Binary(BinOp::Greater),
            "Less" if std => Op::Binary(BinOp::Less),
            "GreaterOrEqual" if std => Op::Binary(BinOp::GreaterOrEqual),
            "LessOrEqual" if std => Op::Binary(BinOp::LessOrEqual),
            "Sum" if std => Op::Variadic {
                op: BinOp::Add,
                mean: false,
            },
            "Mean" if std => Op::Variadic {
                op: BinOp::Add,
                mean: true,
            },
            "Max" if std => Op::Variadic {
                op: BinOp::Max,
                mean: false,
            },
            "Min" if std => Op::Variadic {
                op: BinOp::Min,
                mean: false,
            },
            "Neg" if std => Op::Unary(UnOp::Neg),
            "Abs" if std => Op::Unary(UnOp::Abs),
            "Log" if std => Op::Unary(UnOp::Log),
            "Exp" if std => Op::Unary(UnOp::Exp),
            "Sqrt" if std => Op::Unary(UnOp::Sqrt),
            "Reciprocal" if std => Op::Unary(UnOp::Reciprocal),
            "Floor" if std => Op::Unary(UnOp::Floor),
            "Ceil" if std => Op::Unary(UnOp::Ceil),
            "Relu" if std => Op::Unary(UnOp::Relu),
            "Sigmoid" if std => Op::Unary(UnOp::Sigmoid),
            "Tanh" if std => Op::Unary(UnOp::Tanh),
            "Not" if std => Op::Unary(UnOp::Not),
            "MatMul" if std => Op::MatMul,
            "Gemm" if std => Op::Gemm {
                alpha: ctx.float("alpha").unwrap_or(1.0),
                beta: ctx.float("beta").unwrap_or(1.0),
                trans_a: ctx.int("transA").unwrap_or(0) != 0,
                trans_b: ctx.int("transB").unwrap_or(0) != 0,
            },
            "ArgMax" if std => Op::ArgMax {
                axis: ctx.int("axis").unwrap_or(0),
                keep_dims: ctx.int("keepdims").unwrap_or(1) != 0,
                last: ctx.int("select_last_index").unwrap_or(0) != 0,
            },
            "Softmax" if std => Op::Softmax {
                axis: ctx
                    .int("axis")
                    .unwrap_or(if ctx.opset >= 13 { -1 } else { 1 }),
            },
            _ => {
                let hint = match op {
                    "TreeEnsemble" => {
                        "export with ai.onnx.ml opset 3 (TreeEnsembleRegressor/Classifier)"
                    }
                    "SVMClassifier" | "SVMRegressor" | "LinearClassifier" | "LinearRegressor" => {
                        "Strata's ML runtime covers tree ensembles, scalers and small MLPs"
                    }
                    _ => "",
                };
                return Err(ctx.unsupported(hint));
            }
        };
        Ok(Some(compiled))
    }

    /// How many outputs the op produces.
    pub(crate) fn n_outputs(&self) -> usize {
        match self {
            Op::Tree(t) if t.is_classifier() => 2,
            _ => 1,
        }
    }

    /// Runs the op. `inputs` has `None` for absent optional inputs.
    pub(crate) fn run(&self, ctx: &StepInfo, inputs: &[Option<&Value>]) -> Result<Vec<Value>> {
        let input = |i: usize| -> Result<&Value> {
            inputs
                .get(i)
                .copied()
                .flatten()
                .ok_or_else(|| ctx.err(format!("input {i} is missing")))
        };
        Ok(match self {
            Op::Tree(tree) => run_tree(ctx, tree, input(0)?)?,
            Op::Scaler { offset, scale } => {
                let x = input(0)?;
                let (rows, cols) = matrix_dims(ctx, x)?;
                let v = x.to_f32();
                let pick = |p: &[f32], j: usize, default: f32| match p.len() {
                    0 => Ok(default),
                    1 => Ok(p[0]),
                    n if n == cols => Ok(p[j]),
                    n => Err(ctx.err(format!("has {n} offsets/scales for {cols} columns"))),
                };
                let mut out = Vec::with_capacity(v.len());
                for r in 0..rows {
                    for j in 0..cols {
                        out.push((v[r * cols + j] - pick(offset, j, 0.0)?) * pick(scale, j, 1.0)?);
                    }
                }
                vec![Value::f32(x.shape.clone(), out)]
            }
            Op::LabelEncoder(map) => vec![label_encode(ctx, map, input(0)?)?],
            Op::ArrayFeatureExtractor => vec![array_feature_extractor(ctx, input(0)?, input(1)?)?],
            Op::Cast(to) => vec![cast(input(0)?, *to)],
            Op::Reshape { allow_zero } => {
                let x = input(0)?;
                let spec = ints_of(ctx, input(1)?)?;
                vec![x.reshaped(reshape_dims(ctx, &x.shape, &spec, *allow_zero)?)]
            }
            Op::Flatten { axis } => {
                let x = input(0)?;
                // The axis may be the rank itself (all dimensions outer);
                // a negative one counts from the rank, as ONNX says.
                let rank = x.shape.len() as i64;
                let axis = if *axis < 0 { *axis + rank } else { *axis };
                if !(0..=rank).contains(&axis) {
                    return Err(ctx.err(format!("axis {axis} is out of range for rank {rank}")));
                }
                let axis = axis as usize;
                let outer: usize = x.shape[..axis].iter().product();
                vec![x.reshaped(vec![outer, x.len() / outer.max(1)])]
            }
            Op::Gather { axis } => vec![gather(ctx, input(0)?, input(1)?, *axis)?],
            Op::Concat { axis } => {
                let values: Vec<&Value> = inputs.iter().flatten().copied().collect();
                vec![concat(ctx, &values, *axis)?]
            }
            Op::Binary(op) => vec![binary(ctx, *op, input(0)?, input(1)?)?],
            Op::Variadic { op, mean } => {
                let values: Vec<&Value> = inputs.iter().flatten().copied().collect();
                let first = values
                    .first()
                    .ok_or_else(|| ctx.err("needs at least one input"))?;
                let mut acc = (*first).clone();
                for v in &values[1..] {
                    acc = binary(ctx, *op, &acc, v)?;
                }
                if *mean {
                    let n = Value::f32(vec![], vec![values.len() as f32]);
                    acc = binary(ctx, BinOp::Div, &acc, &n)?;
                }
                vec![acc]
            }
            Op::Unary(op) => vec![unary(ctx, *op, input(0)?)?],
            Op::MatMul => vec![matmul(ctx, input(0)?, input(1)?)?],
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let c = inputs.get(2).copied().flatten();
                vec![gemm(
                    ctx,
                    input(0)?,
                    input(1)?,
                    c,
                    *alpha,
                    *beta,
                    *trans_a,
                    *trans_b,
                )?]
            }
            Op::ArgMax {
                axis,
                keep_dims,
                last,
            } => vec![argmax(ctx, input(0)?, *axis, *keep_dims, *last)?],
            Op::Softmax { axis } => {
                let x = input(0)?;
                let axis = norm_axis(ctx, *axis, x.shape.len())?;
                if axis + 1 != x.shape.len() && x.shape[axis + 1..].iter().product::<usize>() != 1 {
                    return Err(ctx.err("Softmax is supported over the last axis only"));
                }
                let mut v = floats_of(ctx, x)?.to_vec();
                let width = x.shape.get(axis).copied().unwrap_or(1).max(1);
                v.chunks_mut(width).for_each(softmax);
                vec![Value::f32(x.shape.clone(), v)]
            }
        })
    }
}

/// What a running step needs for its error messages.
pub(crate) struct StepInfo {
    pub node: String,
    pub op: String,
}

impl StepInfo {
    pub fn err(&self, message: impl Into<String>) -> Error {
        Error::InvalidNode {
            node: self.node.clone(),
            op: self.op.clone(),
            message: message.into(),
        }
    }
}

fn missing(ctx: &NodeCtx<'_>, attribute: &str) -> Error {
    Error::MissingAttribute {
        node: ctx.name.clone(),
        op: ctx.node.op_type.clone(),
        attribute: attribute.to_string(),
    }
}

fn floats_of<'a>(ctx: &StepInfo, v: &'a Value) -> Result<&'a [f32]> {
    match &v.data {
        Data::F32(x) => Ok(x),
        _ => Err(ctx.err(format!("expects a float tensor, got {}", v.type_name()))),
    }
}

fn ints_of(ctx: &StepInfo, v: &Value) -> Result<Vec<i64>> {
    match &v.data {
        Data::I64(x) => Ok(x.clone()),
        _ => Err(ctx.err(format!("expects an int64 tensor, got {}", v.type_name()))),
    }
}

fn matrix_dims(ctx: &StepInfo, x: &Value) -> Result<(usize, usize)> {
    match x.shape.as_slice() {
        [c] => Ok((1, *c)),
        [r, c] => Ok((*r, *c)),
        other => Err(ctx.err(format!(
            "expects a [rows, columns] input, got shape {other:?}"
        ))),
    }
}

/// The most values one tensor may hold (64 MiB of f32). These graphs turn
/// feature vectors into a few predictions; a model whose shapes ask for
/// more (a broadcast of two long constants, doubling concatenations) is
/// refused with an error, not allocated until the process aborts.
pub(crate) const MAX_ELEMENTS: usize = 1 << 24;

/// The most values all of one run's steps may hold together (each within
/// [`MAX_ELEMENTS`]).
pub(crate) const MAX_LIVE_ELEMENTS: usize = 1 << 26;

/// The most multiply-adds one matrix product may take: far beyond any
/// model of this kind, and a fraction of a second, so a hostile graph
/// cannot hold a thread for minutes at load.
const MAX_PRODUCT_WORK: usize = 1 << 28;

/// Checks that an `m`×`k` by `k`×`n` product is within the limits.
fn product(ctx: &StepInfo, m: usize, k: usize, n: usize) -> Result<()> {
    elements(ctx, &[m, n])?;
    let work = m.checked_mul(n).and_then(|mn| mn.checked_mul(k));
    if work.is_none_or(|w| w > MAX_PRODUCT_WORK) {
        return Err(ctx.err(format!(
            "a product of {m}x{k} by {k}x{n} takes more than {MAX_PRODUCT_WORK} multiplications"
        )));
    }
    Ok(())
}

/// The number of values of `shape`, if it is at most [`MAX_ELEMENTS`].
fn elements(ctx: &StepInfo, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            ctx.err(format!(
                "shape {shape:?} holds more than {MAX_ELEMENTS} values"
            ))
        })
}

fn norm_axis(ctx: &StepInfo, axis: i64, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank {
        return Err(ctx.err(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(a as usize)
}

fn run_tree(ctx: &StepInfo, tree: &TreeEnsemble, x: &Value) -> Result<Vec<Value>> {
    let (rows, cols) = matrix_dims(ctx, x)?;
    if cols < tree.input_len() {
        return Err(ctx.err(format!(
            "the trees use feature {} but the input has {cols} columns",
            tree.input_len() - 1
        )));
    }
    let v = x.to_f32();
    let n = tree.n_outputs();
    elements(ctx, &[rows, n])?;
    let mut scores = vec![0.0f32; rows * n];
    let mut labels = Vec::with_capacity(rows);
    for r in 0..rows {
        let label = tree.eval_row(
            &v[r * cols..(r + 1) * cols],
            &mut scores[r * n..(r + 1) * n],
        );
        labels.extend(label);
    }
    Ok(if tree.is_classifier() {
        vec![
            Value::i64(vec![rows], labels),
            Value::f32(vec![rows, n], scores),
        ]
    } else {
        vec![Value::f32(vec![rows, n], scores)]
    })
}

fn label_map(ctx: &NodeCtx<'_>) -> Result<LabelMap> {
    let strings_hint =
        "string keys or values are not supported (Strata's inputs and outputs are numbers)";
    if ctx.has("keys_strings") || ctx.has("values_strings") || ctx.has("classes_strings") {
        return Err(ctx.invalid(strings_hint));
    }
    let tensor_keys = ctx.tensor("keys_tensor");
    let tensor_values = ctx.tensor("values_tensor");
    let keys_int = match (ctx.ints("keys_int64s"), tensor_keys) {
        (Some(k), _) => Some(k.to_vec()),
        (None, Some(t)) if t.data_type == dtype::INT64 || t.data_type == dtype::INT32 => {
            Some(tensor_i64(t).map_err(|m| ctx.invalid(m))?)
        }
        _ => None,
    };
    let keys_float = match (ctx.floats("keys_floats"), tensor_keys) {
        (Some(k), _) => Some(k.to_vec()),
        (None, Some(t)) if t.data_type == dtype::FLOAT || t.data_type == dtype::DOUBLE => Some(
            tensor_f64(t)
                .map_err(|m| ctx.invalid(m))?
                .into_iter()
                .map(|x| x as f32)
                .collect(),
        ),
        _ => None,
    };
    let values_int = match (ctx.ints("values_int64s"), tensor_values) {
        (Some(v), _) => Some(v.to_vec()),
        (None, Some(t)) if t.data_type == dtype::INT64 || t.data_type == dtype::INT32 => {
            Some(tensor_i64(t).map_err(|m| ctx.invalid(m))?)
        }
        _ => None,
    };
    let values_float = match (ctx.floats("values_floats"), tensor_values) {
        (Some(v), _) => Some(v.to_vec()),
        (None, Some(t)) if t.data_type == dtype::FLOAT || t.data_type == dtype::DOUBLE => Some(
            tensor_f64(t)
                .map_err(|m| ctx.invalid(m))?
                .into_iter()
                .map(|x| x as f32)
                .collect(),
        ),
        _ => None,
    };
    if tensor_keys.is_some_and(|t| t.data_type == dtype::STRING)
        || tensor_values.is_some_and(|t| t.data_type == dtype::STRING)
    {
        return Err(ctx.invalid(strings_hint));
    }
    let default_tensor = ctx.tensor("default_tensor");
    let default_float = match default_tensor {
        Some(t) => tensor_f64(t)
            .ok()
            .and_then(|v| v.first().copied())
            .map(|x| x as f32),
        None => None,
    }
    .or(ctx.float("default_float"))
    .unwrap_or(-0.0);
    let default_int = match default_tensor {
        Some(t) => tensor_i64(t).ok().and_then(|v| v.first().copied()),
        None => None,
    }
    .or(ctx.int("default_int64"))
    .unwrap_or(-1);
    let check = |k: usize, v: usize| {
        if k == v {
            Ok(())
        } else {
            Err(ctx.invalid(format!("{k} keys but {v} values")))
        }
    };
    Ok(match (keys_int, keys_float, values_int, values_float) {
        (Some(k), None, None, Some(v)) => {
            check(k.len(), v.len())?;
            LabelMap::IntToFloat(k.into_iter().zip(v).collect(), default_float)
        }
        (Some(k), None, Some(v), None) => {
            check(k.len(), v.len())?;
            LabelMap::IntToInt(k.into_iter().zip(v).collect(), default_int)
        }
        (None, Some(k), None, Some(v)) => {
            check(k.len(), v.len())?;
            LabelMap::FloatToFloat(k.into_iter().map(float_key).zip(v).collect(), default_float)
        }
        (None, Some(k), Some(v), None) => {
            check(k.len(), v.len())?;
            LabelMap::FloatToInt(k.into_iter().map(float_key).zip(v).collect(), default_int)
        }
        _ => {
            return Err(ctx.invalid(
                "needs exactly one kind of keys and one kind of values (int64 or float)",
            ));
        }
    })
}

/// Hash key of a float: -0.0 and 0.0 are one key, as they compare equal.
fn float_key(x: f32) -> u32 {
    if x == 0.0 { 0 } else { x.to_bits() }
}

fn label_encode(ctx: &StepInfo, map: &LabelMap, x: &Value) -> Result<Value> {
    let shape = x.shape.clone();
    Ok(match (map, &x.data) {
        (LabelMap::IntToFloat(m, d), Data::I64(v)) => {
            Value::f32(shape, v.iter().map(|k| *m.get(k).unwrap_or(d)).collect())
        }
        (LabelMap::IntToInt(m, d), Data::I64(v)) => {
            Value::i64(shape, v.iter().map(|k| *m.get(k).unwrap_or(d)).collect())
        }
        (LabelMap::FloatToFloat(m, d), Data::F32(v)) => Value::f32(
            shape,
            v.iter()
                .map(|k| *m.get(&float_key(*k)).unwrap_or(d))
                .collect(),
        ),
        (LabelMap::FloatToInt(m, d), Data::F32(v)) => Value::i64(
            shape,
            v.iter()
                .map(|k| *m.get(&float_key(*k)).unwrap_or(d))
                .collect(),
        ),
        _ => {
            return Err(ctx.err(format!(
                "keys are of another type than the {} input",
                x.type_name()
            )));
        }
    })
}

fn array_feature_extractor(ctx: &StepInfo, x: &Value, idx: &Value) -> Result<Value> {
    let indices = ints_of(ctx, idx)?;
    let cols = *x.shape.last().ok_or_else(|| ctx.err("input is a scalar"))?;
    let rows = x.len() / cols.max(1);
    let mut picks = Vec::with_capacity(indices.len());
    for &i in &indices {
        if i < 0 || i as usize >= cols {
            return Err(ctx.err(format!("index {i} is out of range for {cols} columns")));
        }
        picks.push(i as usize);
    }
    let mut shape = if x.shape.len() == 1 {
        vec![1]
    } else {
        x.shape[..x.shape.len() - 1].to_vec()
    };
    shape.push(picks.len());
    elements(ctx, &shape)?;
    let select = |r: usize, j: usize| r * cols + picks[j];
    let order = (0..rows).flat_map(|r| (0..picks.len()).map(move |j| (r, j)));
    Ok(match &x.data {
        Data::F32(v) => Value::f32(shape, order.map(|(r, j)| v[select(r, j)]).collect()),
        Data::I64(v) => Value::i64(shape, order.map(|(r, j)| v[select(r, j)]).collect()),
        Data::Bool(v) => Value {
            shape,
            data: Data::Bool(order.map(|(r, j)| v[select(r, j)]).collect()),
        },
    })
}

fn cast(x: &Value, to: Elem) -> Value {
    let shape = x.shape.clone();
    match (to, &x.data) {
        (Elem::F32, _) => Value::f32(shape, x.to_f32()),
        (Elem::I64, Data::F32(v)) => Value::i64(shape, v.iter().map(|&f| f as i64).collect()),
        (Elem::I64, Data::I64(v)) => Value::i64(shape, v.clone()),
        (Elem::I64, Data::Bool(v)) => Value::i64(shape, v.iter().map(|&b| b as i64).collect()),
        (Elem::Bool, Data::F32(v)) => Value {
            shape,
            data: Data::Bool(v.iter().map(|&f| f != 0.0).collect()),
        },
        (Elem::Bool, Data::I64(v)) => Value {
            shape,
            data: Data::Bool(v.iter().map(|&i| i != 0).collect()),
        },
        (Elem::Bool, Data::Bool(v)) => Value {
            shape,
            data: Data::Bool(v.clone()),
        },
    }
}

fn reshape_dims(
    ctx: &StepInfo,
    from: &[usize],
    spec: &[i64],
    allow_zero: bool,
) -> Result<Vec<usize>> {
    let total: usize = from.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        out.push(match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                1
            }
            0 if !allow_zero => *from
                .get(i)
                .ok_or_else(|| ctx.err("shape copies a dimension the input lacks"))?,
            d if d >= 0 => d as usize,
            _ => return Err(ctx.err(format!("invalid target shape {spec:?}"))),
        });
    }
    let known = out
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| ctx.err(format!("target shape {spec:?} overflows")))?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(ctx.err(format!("cannot reshape {from:?} to {spec:?}")));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(ctx.err(format!(
            "cannot reshape {from:?} ({total} values) to {spec:?}"
        )));
    }
    Ok(out)
}

fn gather(ctx: &StepInfo, x: &Value, idx: &Value, axis: i64) -> Result<Value> {
    let axis = norm_axis(ctx, axis, x.shape.len())?;
    let indices = ints_of(ctx, idx)?;
    let dim = x.shape[axis];
    let outer: usize = x.shape[..axis].iter().product();
    let inner: usize = x.shape[axis + 1..].iter().product();
    let mut picks = Vec::with_capacity(indices.len());
    for &i in &indices {
        let j = if i < 0 { i + dim as i64 } else { i };
        if j < 0 || j as usize >= dim {
            return Err(ctx.err(format!(
                "index {i} is out of range for axis {axis} of size {dim}"
            )));
        }
        picks.push(j as usize);
    }
    let mut shape = x.shape[..axis].to_vec();
    shape.extend_from_slice(&idx.shape);
    shape.extend_from_slice(&x.shape[axis + 1..]);
    elements(ctx, &shape)?;
    let positions: Vec<usize> = (0..outer)
        .flat_map(|o| {
            picks
                .iter()
                .flat_map(move |&p| (0..inner).map(move |k| (o * dim + p) * inner + k))
        })
        .collect();
    Ok(take(x, shape, &positions))
}

fn take(x: &Value, shape: Vec<usize>, positions: &[usize]) -> Value {
    match &x.data {
        Data::F32(v) => Value::f32(shape, positions.iter().map(|&p| v[p]).collect()),
        Data::I64(v) => Value::i64(shape, positions.iter().map(|&p| v[p]).collect()),
        Data::Bool(v) => Value {
            shape,
            data: Data::Bool(positions.iter().map(|&p| v[p]).collect()),
        },
    }
}

fn concat(ctx: &StepInfo, values: &[&Value], axis: i64) -> Result<Value> {
    let first = values
        .first()
        .ok_or_else(|| ctx.err("needs at least one input"))?;
    let rank = first.shape.len();
    let axis = norm_axis(ctx, axis, rank)?;
    let outer: usize = first.shape[..axis].iter().product();
    let mut shape = first.shape.clone();
    shape[axis] = 0;
    for v in values {
        if v.shape.len() != rank
            || v.shape[..axis] != first.shape[..axis]
            || v.shape[axis + 1..] != first.shape[axis + 1..]
            || std::mem::discriminant(&v.data) != std::mem::discriminant(&first.data)
        {
            return Err(ctx.err(format!(
                "cannot concatenate shapes {:?} and {:?}",
                first.shape, v.shape
            )));
        }
        shape[axis] = shape[axis].saturating_add(v.shape[axis]);
    }
    elements(ctx, &shape)?;
    let chunk = |v: &Value| v.shape[axis..].iter().product::<usize>();
    macro_rules! join {
        ($variant:ident) => {{
            let mut out = Vec::new();
            for o in 0..outer {
                for v in values {
                    let Data::$variant(d) = &v.data else {
                        unreachable!()
                    };
                    let c = chunk(v);
                    out.extend_from_slice(&d[o * c..(o + 1) * c]);
                }
            }
            Data::$variant(out)
        }};
    }
    let data = match first.data {
        Data::F32(_) => join!(F32),
        Data::I64(_) => join!(I64),
        Data::Bool(_) => join!(Bool),
    };
    Ok(Value { shape, data })
}

fn binary(ctx: &StepInfo, op: BinOp, a: &Value, b: &Value) -> Result<Value> {
    let shape = broadcast_shape(&a.shape, &b.shape).ok_or_else(|| {
        ctx.err(format!(
            "shapes {:?} and {:?} do not broadcast",
            a.shape, b.shape
        ))
    })?;
    elements(ctx, &shape)?;
    let ia = broadcast_indices(&a.shape, &shape);
    let ib = broadcast_indices(&b.shape, &shape);
    let pairs = ia.iter().zip(&ib);
    use BinOp::*;
    Ok(match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => {
            let it = pairs.map(|(&i, &j)| (x[i], y[j]));
            match op {
                Add => Value::f32(shape, it.map(|(p, q)| p + q).collect()),
                Sub => Value::f32(shape, it.map(|(p, q)| p - q).collect()),
                Mul => Value::f32(shape, it.map(|(p, q)| p * q).collect()),
                Div => Value::f32(shape, it.map(|(p, q)| p / q).collect()),
                Pow => Value::f32(shape, it.map(|(p, q)| p.powf(q)).collect()),
                Max => Value::f32(
                    shape,
                    it.map(|(p, q)| {
                        if p.is_nan() || q.is_nan() {
                            f32::NAN
                        } else {
                            p.max(q)
                        }
                    })
                    .collect(),
                ),
                Min => Value::f32(
                    shape,
                    it.map(|(p, q)| {
                        if p.is_nan() || q.is_nan() {
                            f32::NAN
                        } else {
                            p.min(q)
                        }
                    })
                    .collect(),
                ),
                Equal => bools(shape, it.map(|(p, q)| p == q)),
                Greater => bools(shape, it.map(|(p, q)| p > q)),
                Less => bools(shape, it.map(|(p, q)| p < q)),
                GreaterOrEqual => bools(shape, it.map(|(p, q)| p >= q)),
                LessOrEqual => bools(shape, it.map(|(p, q)| p <= q)),
            }
        }
        (Data::I64(x), Data::I64(y)) => {
            let it = pairs.map(|(&i, &j)| (x[i], y[j]));
            match op {
                Add => Value::i64(shape, it.map(|(p, q)| p.wrapping_add(q)).collect()),
                Sub => Value::i64(shape, it.map(|(p, q)| p.wrapping_sub(q)).collect()),
                Mul => Value::i64(shape, it.map(|(p, q)| p.wrapping_mul(q)).collect()),
                Div => {
                    let v: Option<Vec<i64>> = it.map(|(p, q)| p.checked_div(q)).collect();
                    Value::i64(shape, v.ok_or_else(|| ctx.err("integer division by zero"))?)
                }
                Pow => Value::i64(
                    shape,
                    it.map(|(p, q)| p.wrapping_pow(q.clamp(0, u32::MAX as i64) as u32))
                        .collect(),
                ),
                Max => Value::i64(shape, it.map(|(p, q)| p.max(q)).collect()),
                Min => Value::i64(shape, it.map(|(p, q)| p.min(q)).collect()),
                Equal => bools(shape, it.map(|(p, q)| p == q)),
                Greater => bools(shape, it.map(|(p, q)| p > q)),
                Less => bools(shape, it.map(|(p, q)| p < q)),
                GreaterOrEqual => bools(shape, it.map(|(p, q)| p >= q)),
                LessOrEqual => bools(shape, it.map(|(p, q)| p <= q)),
            }
        }
        (Data::F32(x), Data::I64(y)) if matches!(op, Pow) => Value::f32(
            shape,
            pairs.map(|(&i, &j)| x[i].powf(y[j] as f32)).collect(),
        ),
        (Data::Bool(x), Data::Bool(y)) if matches!(op, Equal) => {
            bools(shape, pairs.map(|(&i, &j)| x[i] == y[j]))
        }
        _ => {
            return Err(ctx.err(format!(
                "operands are {} and {}, which this op does not combine",
                a.type_name(),
                b.type_name()
            )));
        }
    })
}

fn bools(shape: Vec<usize>, it: impl Iterator<Item = bool>) -> Value {
    Value {
        shape,
        data: Data::Bool(it.collect()),
    }
}

fn unary(ctx: &StepInfo, op: UnOp, x: &Value) -> Result<Value> {
    let shape = x.shape.clone();
    if let UnOp::Not = op {
        return match &x.data {
            Data::Bool(v) => Ok(bools(shape, v.iter().map(|b| !b))),
            _ => Err(ctx.err(format!("Not takes a bool tensor, got {}", x.type_name()))),
        };
    }
    if let Data::I64(v) = &x.data {
        let f: fn(i64) -> i64 = match op {
            UnOp::Neg => i64::wrapping_neg,
            UnOp::Abs => i64::wrapping_abs,
            UnOp::Relu => |i| i.max(0),
            UnOp::Floor | UnOp::Ceil => |i| i,
            _ => return Err(ctx.err("takes a float tensor, got int64")),
        };
        return Ok(Value::i64(shape, v.iter().map(|&i| f(i)).collect()));
    }
    let v = floats_of(ctx, x)?;
    let f: fn(f32) -> f32 = match op {
        UnOp::Neg => |x| -x,
        UnOp::Abs => f32::abs,
        UnOp::Log => f32::ln,
        UnOp::Exp => f32::exp,
        UnOp::Sqrt => f32::sqrt,
        UnOp::Reciprocal => |x| 1.0 / x,
        UnOp::Floor => f32::floor,
        UnOp::Ceil => f32::ceil,
        UnOp::Relu => |x| if x > 0.0 { x } else { 0.0 },
        UnOp::Sigmoid => logistic,
        UnOp::Tanh => f32::tanh,
        UnOp::Not => unreachable!("handled above"),
    };
    Ok(Value::f32(shape, v.iter().map(|&x| f(x)).collect()))
}

fn matrix<'a>(ctx: &StepInfo, v: &'a Value, what: &str) -> Result<(usize, usize, &'a [f32])> {
    let data = floats_of(ctx, v)?;
    match v.shape.as_slice() {
        [r, c] => Ok((*r, *c, data)),
        [c] if what == "A" => Ok((1, *c, data)),
        [r] => Ok((*r, 1, data)),
        other => Err(ctx.err(format!(
            "supports 2-D operands only, {what} has shape {other:?}"
        ))),
    }
}

fn matmul(ctx: &StepInfo, a: &Value, b: &Value) -> Result<Value> {
    let (m, k, x) = matrix(ctx, a, "A")?;
    let (k2, n, y) = matrix(ctx, b, "B")?;
    if k != k2 {
        return Err(ctx.err(format!("cannot multiply {:?} by {:?}", a.shape, b.shape)));
    }
    product(ctx, m, k, n)?;
    // Dot products accumulate in f64 and round once: results do not depend
    // on summation order, which differs between runtimes.
    let mut acc = vec![0.0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            let xv = x[i * k + p] as f64;
            for j in 0..n {
                acc[i * n + j] += xv * y[p * n + j] as f64;
            }
        }
    }
    let out = acc.into_iter().map(|v| v as f32).collect();
    let mut shape = vec![m, n];
    if a.shape.len() == 1 {
        shape.remove(0);
    }
    if b.shape.len() == 1 {
        shape.pop();
    }
    Ok(Value::f32(shape, out))
}

#[allow(clippy::too_many_arguments)]
fn gemm(
    ctx: &StepInfo,
    a: &Value,
    b: &Value,
    c: Option<&Value>,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
) -> Result<Value> {
    let (ar, ac, x) = matrix(ctx, a, "A")?;
    let (br, bc, y) = matrix(ctx, b, "B")?;
    let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if trans_b { (bc, br) } else { (br, bc) };
    if k != k2 {
        return Err(ctx.err(format!("cannot multiply {:?} by {:?}", a.shape, b.shape)));
    }
    let at = |i: usize, p: usize| {
        if trans_a {
            x[p * ac + i]
        } else {
            x[i * ac + p]
        }
    };
    let bt = |p: usize, j: usize| {
        if trans_b {
            y[j * bc + p]
        } else {
            y[p * bc + j]
        }
    };
    product(ctx, m, k, n)?;
    let mut out = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                s += at(i, p) as f64 * bt(p, j) as f64;
            }
            out[i * n + j] = alpha * s as f32;
        }
    }
    if let Some(c) = c {
        let shape = vec![m, n];
        if broadcast_shape(&c.shape, &shape).as_deref() != Some(&shape[..]) {
            return Err(ctx.err(format!(
                "C of shape {:?} does not broadcast to {shape:?}",
                c.shape
            )));
        }
        let cv = floats_of(ctx, c)?;
        for (o, i) in out.iter_mut().zip(broadcast_indices(&c.shape, &shape)) {
            *o += beta * cv[i];
        }
    }
    Ok(Value::f32(vec![m, n], out))
}

fn argmax(ctx: &StepInfo, x: &Value, axis: i64, keep_dims: bool, last: bool) -> Result<Value> {
    let axis = norm_axis(ctx, axis, x.shape.len())?;
    let v = x.to_f32();
    let dim = x.shape[axis];
    let outer: usize = x.shape[..axis].iter().product();
    let inner: usize = x.shape[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for k in 0..inner {
            let mut best = 0usize;
            for d in 1..dim {
                let cand = v[(o * dim + d) * inner + k];
                let cur = v[(o * dim + best) * inner + k];
                if cand > cur || (last && cand == cur) {
                    best = d;
                }
            }
            out.push(best as i64);
        }
    }
    let mut shape = x.shape.clone();
    if keep_dims {
        shape[axis] = 1;
    } else {
        shape.remove(axis);
    }
    Ok(Value::i64(shape, out))
}

/// Converts an initializer or constant to a tensor.
pub(crate) fn constant(t: &tract_onnx::pb::TensorProto) -> Result<Value, String> {
    let shape = tensor_shape(t)?;
    let data = match t.data_type {
        dtype::FLOAT | dtype::DOUBLE => {
            Data::F32(tensor_f64(t)?.into_iter().map(|x| x as f32).collect())
        }
        dtype::INT64 | dtype::INT32 => Data::I64(tensor_i64(t)?),
        dtype::BOOL => Data::Bool(tensor_i64(t)?.into_iter().map(|x| x != 0).collect()),
        other => {
            return Err(format!(
                "constants of type {} are not supported",
                dtype_name(other)
            ));
        }
    };
    let v = Value { shape, data };
    let declared = v.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if declared != Some(v.len()) {
        return Err(format!("holds {} values for shape {:?}", v.len(), v.shape));
    }
    Ok(v)
}
