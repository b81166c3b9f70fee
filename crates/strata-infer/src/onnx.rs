//! Reading ONNX files: decoding the protobuf (with the prost types that
//! `tract-onnx` already brings, so the build holds one ONNX model type) and
//! typed access to node attributes and constant tensors, with errors that
//! name the node and attribute at fault.

use tract_onnx::pb;
use tract_onnx::prelude::Framework;

use crate::error::{Error, Result};

/// ONNX element type codes (`TensorProto.DataType`) this crate handles.
pub(crate) mod dtype {
    pub const FLOAT: i32 = 1;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const STRING: i32 = 8;
    pub const BOOL: i32 = 9;
    pub const DOUBLE: i32 = 11;
}

/// Decodes ONNX bytes into the protobuf model.
pub fn decode(onnx: &[u8]) -> Result<pb::ModelProto> {
    if onnx.is_empty() {
        return Err(Error::Decode("the file is empty".into()));
    }
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &onnx[..])
        .map_err(|e| Error::Decode(format!("{e:#}")))?;
    if proto.graph.is_none() {
        return Err(Error::Decode("the model has no graph".into()));
    }
    Ok(proto)
}

/// The ops a model's graph uses, as sorted unique `domain:Op` strings
/// (`ai.onnx:Sigmoid`, `ai.onnx.ml:TreeEnsembleRegressor`): what a model
/// registry records so that a gateway's runtime can be checked against it.
pub fn op_list(model: &pb::ModelProto) -> Vec<String> {
    let mut ops: Vec<String> = model
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .map(|n| format!("{}:{}", domain_of(n), n.op_type))
        .collect();
    ops.sort();
    ops.dedup();
    ops
}

/// The ONNX domain of a node, with the empty default spelled out.
pub(crate) fn domain_of(node: &pb::NodeProto) -> &str {
    if node.domain.is_empty() {
        "ai.onnx"
    } else {
        &node.domain
    }
}

/// The opset version a model imports for `domain` (0 when it imports none).
pub(crate) fn opset_of(model: &pb::ModelProto, domain: &str) -> i64 {
    model
        .opset_import
        .iter()
        .filter(|o| {
            let d = if o.domain.is_empty() {
                "ai.onnx"
            } else {
                o.domain.as_str()
            };
            d == domain
        })
        .map(|o| o.version)
        .max()
        .unwrap_or(0)
}

/// A node being compiled, with the context its error messages need.
pub(crate) struct NodeCtx<'a> {
    pub node: &'a pb::NodeProto,
    pub name: String,
    pub opset: i64,
}

impl<'a> NodeCtx<'a> {
    pub fn new(node: &'a pb::NodeProto, index: usize, opset: i64) -> Self {
        let name = if node.name.is_empty() {
            format!("#{index} {}", node.op_type)
        } else {
            node.name.clone()
        };
        NodeCtx { node, name, opset }
    }

    /// An error about this node.
    pub fn invalid(&self, message: impl Into<String>) -> Error {
        Error::InvalidNode {
            node: self.name.clone(),
            op: self.node.op_type.clone(),
            message: message.into(),
        }
    }

    pub fn unsupported(&self, hint: &str) -> Error {
        Error::UnsupportedOp {
            op: self.node.op_type.clone(),
            domain: domain_of(self.node).to_string(),
            opset: self.opset,
            node: self.name.clone(),
            hint: if hint.is_empty() {
                String::new()
            } else {
                format!("; {hint}")
            },
        }
    }

    fn missing(&self, attribute: &str) -> Error {
        Error::MissingAttribute {
            node: self.name.clone(),
            op: self.node.op_type.clone(),
            attribute: attribute.to_string(),
        }
    }

    pub fn attr(&self, name: &str) -> Option<&'a pb::AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.attr(name).map(|a| a.i)
    }

    pub fn float(&self, name: &str) -> Option<f32> {
        self.attr(name).map(|a| a.f)
    }

    pub fn string(&self, name: &str) -> Result<Option<String>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => String::from_utf8(a.s.clone())
                .map(Some)
                .map_err(|_| self.invalid(format!("attribute \"{name}\" is not UTF-8"))),
        }
    }

    pub fn ints(&self, name: &str) -> Option<&'a [i64]> {
        self.attr(name).map(|a| a.ints.as_slice())
    }

    pub fn floats(&self, name: &str) -> Option<&'a [f32]> {
        self.attr(name).map(|a| a.floats.as_slice())
    }

    pub fn strings(&self, name: &str) -> Result<Option<Vec<String>>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => a
                .strings
                .iter()
                .map(|s| {
                    String::from_utf8(s.clone()).map_err(|_| {
                        self.invalid(format!("attribute \"{name}\" holds a non-UTF-8 string"))
                    })
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&'a pb::TensorProto> {
        self.attr(name).and_then(|a| a.t.as_ref())
    }

    pub fn req_ints(&self, name: &str) -> Result<&'a [i64]> {
        self.ints(name).ok_or_else(|| self.missing(name))
    }

    pub fn req_strings(&self, name: &str) -> Result<Vec<String>> {
        self.strings(name)?.ok_or_else(|| self.missing(name))
    }

    /// A float list given either as `name` (floats) or `name_as_tensor`
    /// (a double tensor): `Some(values, was_double)`.
    pub fn floats_or_tensor(&self, name: &str) -> Result<Option<(Vec<f64>, bool)>> {
        if let Some(v) = self.floats(name)
            && (!v.is_empty() || self.tensor(&format!("{name}_as_tensor")).is_none())
        {
            return Ok(Some((v.iter().map(|&x| x as f64).collect(), false)));
        }
        match self.tensor(&format!("{name}_as_tensor")) {
            None => Ok(None),
            Some(t) => {
                let values = tensor_f64(t)
                    .map_err(|m| self.invalid(format!("attribute \"{name}_as_tensor\": {m}")))?;
                Ok(Some((values, t.data_type == dtype::DOUBLE)))
            }
        }
    }

    pub fn req_floats_or_tensor(&self, name: &str) -> Result<(Vec<f64>, bool)> {
        self.floats_or_tensor(name)?
            .ok_or_else(|| self.missing(name))
    }

    /// The i-th input name, or `None` when absent or left empty (optional).
    pub fn input(&self, i: usize) -> Option<&'a str> {
        self.node
            .input
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// Shape of a tensor proto as `usize` dimensions.
pub(crate) fn tensor_shape(t: &pb::TensorProto) -> Result<Vec<usize>, String> {
    t.dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect()
}

fn check_inline(t: &pb::TensorProto) -> Result<(), String> {
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        return Err(
            "tensor data stored outside the ONNX file is not supported; \
                    save the model as one file"
                .into(),
        );
    }
    Ok(())
}

fn raw_chunks<const N: usize>(t: &pb::TensorProto) -> Result<Vec<[u8; N]>, String> {
    if !t.raw_data.len().is_multiple_of(N) {
        return Err(format!(
            "raw data of {} bytes is not a whole number of {N}-byte values",
            t.raw_data.len()
        ));
    }
    Ok(t.raw_data
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            a
        })
        .collect())
}

/// Values of a numeric tensor proto as f64 (float, double, int32, int64, bool).
pub(crate) fn tensor_f64(t: &pb::TensorProto) -> Result<Vec<f64>, String> {
    check_inline(t)?;
    let raw = !t.raw_data.is_empty();
    Ok(match t.data_type {
        dtype::FLOAT if raw => raw_chunks::<4>(t)?
            .into_iter()
            .map(|b| f32::from_le_bytes(b) as f64)
            .collect(),
        dtype::FLOAT => t.float_data.iter().map(|&x| x as f64).collect(),
        dtype::DOUBLE if raw => raw_chunks::<8>(t)?
            .into_iter()
            .map(f64::from_le_bytes)
            .collect(),
        dtype::DOUBLE => t.double_data.clone(),
        _ => tensor_i64(t)?.into_iter().map(|x| x as f64).collect(),
    })
}

/// Values of an integer (or bool) tensor proto as i64.
pub(crate) fn tensor_i64(t: &pb::TensorProto) -> Result<Vec<i64>, String> {
    check_inline(t)?;
    let raw = !t.raw_data.is_empty();
    Ok(match t.data_type {
        dtype::INT64 if raw => raw_chunks::<8>(t)?
            .into_iter()
            .map(i64::from_le_bytes)
            .collect(),
        dtype::INT64 => t.int64_data.clone(),
        dtype::INT32 if raw => raw_chunks::<4>(t)?
            .into_iter()
            .map(|b| i32::from_le_bytes(b) as i64)
            .collect(),
        dtype::BOOL if raw => t.raw_data.iter().map(|&b| (b != 0) as i64).collect(),
        dtype::INT32 | dtype::BOOL => t.int32_data.iter().map(|&x| x as i64).collect(),
        other => {
            return Err(format!(
                "element type {} is not supported here",
                dtype_name(other)
            ));
        }
    })
}

/// A readable name for an ONNX element type code.
pub(crate) fn dtype_name(code: i32) -> String {
    match code {
        1 => "float".into(),
        2 => "uint8".into(),
        3 => "int8".into(),
        4 => "uint16".into(),
        5 => "int16".into(),
        6 => "int32".into(),
        7 => "int64".into(),
        8 => "string".into(),
        9 => "bool".into(),
        10 => "float16".into(),
        11 => "double".into(),
        12 => "uint32".into(),
        13 => "uint64".into(),
        16 => "bfloat16".into(),
        other => format!("type #{other}"),
    }
}
