//! The runtime-neutral API: a runtime loads ONNX bytes into a model; a
//! model takes one feature row and writes every output, flattened, into the
//! caller's buffer. `load_model` picks the runtime for a graph, and
//! `ModelSet` runs several models, each bound to named features of one
//! feature vector.

use std::collections::HashMap;

use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension;
use tract_onnx::pb::type_proto;

use crate::error::{Error, Result};
use crate::ml::MlModel;
use crate::onnx;

/// One output of a model, as it lies in the flat output buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// The graph output's name, e.g. `variable`, `label`, `probabilities`.
    pub name: String,
    /// Values per row (labels and booleans are written as f32).
    pub len: usize,
}

/// A name per output value, as the edge names its predictions: the graph
/// output's name with every character outside `[A-Za-z0-9_]` made `_`,
/// and `.{k}` after it for outputs wider than one.
pub fn output_names(outputs: &[OutputSpec]) -> Vec<String> {
    let mut names = Vec::new();
    for o in outputs {
        let base: String = o
            .name
            .chars()
            .map(|ch| {
                if ch.is_ascii_alphanumeric() || ch == '_' {
                    ch
                } else {
                    '_'
                }
            })
            .collect();
        if o.len == 1 {
            names.push(base);
        } else {
            names.extend((0..o.len).map(|k| format!("{base}.{k}")));
        }
    }
    names
}

/// Something that turns ONNX bytes into a runnable [`Model`].
pub trait InferenceRuntime: Send + Sync {
    /// Short name, e.g. `strata-ml`, `tract`, `onnxruntime`.
    fn name(&self) -> &'static str;

    /// Loads a model; errors name the op, node or attribute at fault.
    fn load(&self, onnx: &[u8]) -> Result<Box<dyn Model>>;
}

/// A loaded model: one row of features in, every output out.
pub trait Model: Send + Sync {
    /// Features per row.
    fn input_len(&self) -> usize;

    /// The outputs, in the order they are written.
    fn outputs(&self) -> &[OutputSpec];

    /// Name of the runtime running this model.
    fn runtime(&self) -> &'static str;

    /// Values per row across all outputs.
    fn output_len(&self) -> usize {
        self.outputs().iter().map(|o| o.len).sum()
    }

    /// Runs one row: `features.len()` must be [`Model::input_len`] and
    /// `out.len()` must be [`Model::output_len`]; outputs are written one
    /// after the other in [`Model::outputs`] order.
    fn run(&self, features: &[f32], out: &mut [f32]) -> Result<()>;

    /// Runs `rows.len() / input_len` rows laid end to end; `out` receives
    /// `output_len` values per row.
    fn run_batch(&self, rows: &[f32], out: &mut [f32]) -> Result<()> {
        let (width, out_width) = (self.input_len(), self.output_len());
        if width == 0 || !rows.len().is_multiple_of(width) {
            return Err(Error::InputWidth {
                expected: width,
                got: rows.len() % width.max(1),
            });
        }
        let n = rows.len() / width;
        if out.len() != n * out_width {
            return Err(Error::OutputWidth {
                expected: n * out_width,
                got: out.len(),
            });
        }
        for (row, o) in rows
            .chunks_exact(width)
            .zip(out.chunks_exact_mut(out_width.max(1)))
        {
            self.run(row, o)?;
        }
        Ok(())
    }
}

/// Loads a model with the runtime that suits its graph: Strata's own
/// evaluator when the graph uses any `ai.onnx.ml` op (tree ensembles,
/// scalers, label encoders...), tract for graphs of standard ops only.
pub fn load_model(onnx_bytes: &[u8]) -> Result<Box<dyn Model>> {
    let proto = onnx::decode(onnx_bytes)?;
    if uses_ml_ops(&proto) {
        Ok(Box::new(MlModel::compile(&proto)?))
    } else {
        crate::tract::load_proto(&proto)
    }
}

/// Whether the graph has any `ai.onnx.ml` node.
pub fn uses_ml_ops(model: &pb::ModelProto) -> bool {
    model
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .any(|n| onnx::domain_of(n) == "ai.onnx.ml")
}

/// The most features a model's input may take: far above any feature
/// vector, and a row of it is 4 MiB of f32.
pub const MAX_FEATURES: usize = 1 << 20;

/// The graph's one real input (initializers excluded): its name and shape
/// for one row, `[1, width]` (or `[width]` for a 1-D input).
pub(crate) fn input_width(graph: &pb::GraphProto) -> Result<(&str, Vec<usize>)> {
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(Error::InvalidModel(format!(
            "the graph has {} inputs; Strata feeds a model one feature vector, so it needs exactly one \
             (export with a single float input of shape [N, features])",
            inputs.len()
        )));
    };
    let Some(type_proto::Value::TensorType(t)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(Error::InvalidModel(format!(
            "input \"{}\" is not a tensor",
            input.name
        )));
    };
    if t.elem_type != onnx::dtype::FLOAT {
        return Err(Error::InvalidModel(format!(
            "input \"{}\" is of type {}; Strata feeds float32 features",
            input.name,
            onnx::dtype_name(t.elem_type)
        )));
    }
    let dims: Vec<Option<i64>> = t
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(dimension::Value::DimValue(v)) if v > 0 => Some(v),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let shape = match dims.as_slice() {
        [Some(w)] | [_, Some(w)] if *w > MAX_FEATURES as i64 => {
            return Err(Error::InvalidModel(format!(
                "input \"{}\" has {w} features; at most {MAX_FEATURES} are taken",
                input.name
            )));
        }
        [Some(w)] => vec![*w as usize],
        [_, Some(w)] => vec![1, *w as usize],
        _ => {
            return Err(Error::InvalidModel(format!(
                "input \"{}\" must have shape [N, features] with a fixed number of features, got {dims:?}",
                input.name
            )));
        }
    };
    Ok((input.name.as_str(), shape))
}

/// The output specs of a graph: each output's name with the width a probe
/// run gave it (every runtime learns widths by running a row of zeros).
pub(crate) fn output_specs(
    graph: &pb::GraphProto,
    widths: impl IntoIterator<Item = usize>,
) -> Vec<OutputSpec> {
    graph
        .output
        .iter()
        .zip(widths)
        .map(|(o, len)| OutputSpec {
            name: o.name.clone(),
            len,
        })
        .collect()
}

/// Writes a run's outputs one after another into the caller's flat buffer,
/// refusing to run past its end.
pub(crate) struct FlatOutput<'a> {
    out: &'a mut [f32],
    at: usize,
}

impl<'a> FlatOutput<'a> {
    /// Starts at the beginning of `out`.
    pub(crate) fn new(out: &'a mut [f32]) -> Self {
        FlatOutput { out, at: 0 }
    }

    /// Appends one output's values.
    pub(crate) fn push(&mut self, values: &[f32]) -> Result<()> {
        let end = self.at + values.len();
        if end > self.out.len() {
            return Err(Error::OutputWidth {
                expected: end,
                got: self.out.len(),
            });
        }
        self.out[self.at..end].copy_from_slice(values);
        self.at = end;
        Ok(())
    }

    /// Ends the run: an error unless the outputs filled the buffer (a
    /// shape computed from the data may make a row's outputs shorter than
    /// at load, and the tail would keep the last row's values).
    pub(crate) fn finish(self) -> Result<()> {
        if self.at != self.out.len() {
            return Err(Error::OutputWidth {
                expected: self.out.len(),
                got: self.at,
            });
        }
        Ok(())
    }
}

/// The width checks every `run` starts with.
pub(crate) fn check_widths(
    model: &(impl Model + ?Sized),
    features: &[f32],
    out: &[f32],
) -> Result<()> {
    if features.len() != model.input_len() {
        return Err(Error::InputWidth {
            expected: model.input_len(),
            got: features.len(),
        });
    }
    if out.len() != model.output_len() {
        return Err(Error::OutputWidth {
            expected: model.output_len(),
            got: out.len(),
        });
    }
    Ok(())
}

struct Bound {
    name: String,
    model: Box<dyn Model>,
    features: Vec<usize>,
}

/// What one model of a [`ModelSet`] predicted for a row.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The model's name in the set.
    pub model: String,
    /// Every output, flattened as described by the model's `outputs()`.
    pub values: Vec<f32>,
}

/// Several models run on one feature vector, each reading the features it
/// was trained on, by name, in its own order.
pub struct ModelSet {
    features: HashMap<String, usize>,
    width: usize,
    models: Vec<Bound>,
}

impl ModelSet {
    /// A set over feature vectors with these features, in this order.
    pub fn new<S: Into<String>>(features: impl IntoIterator<Item = S>) -> Self {
        let features: HashMap<String, usize> = features
            .into_iter()
            .enumerate()
            .map(|(i, f)| (f.into(), i))
            .collect();
        ModelSet {
            width: features.len(),
            features,
            models: Vec::new(),
        }
    }

    /// Adds a model that reads `features` (its input columns, in order).
    pub fn bind(
        &mut self,
        name: impl Into<String>,
        model: Box<dyn Model>,
        features: &[&str],
    ) -> Result<()> {
        let name = name.into();
        if features.len() != model.input_len() {
            return Err(Error::InputWidth {
                expected: model.input_len(),
                got: features.len(),
            });
        }
        let features = features
            .iter()
            .map(|f| {
                self.features
                    .get(*f)
                    .copied()
                    .ok_or_else(|| Error::UnknownFeature {
                        model: name.clone(),
                        feature: f.to_string(),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        self.models.push(Bound {
            name,
            model,
            features,
        });
        Ok(())
    }

    /// The models, by name, in the order they were bound.
    pub fn models(&self) -> impl Iterator<Item = (&str, &dyn Model)> {
        self.models.iter().map(|b| (b.name.as_str(), &*b.model))
    }

    /// Runs every model on one feature vector.
    pub fn run(&self, row: &[f32]) -> Result<Vec<Prediction>> {
        if row.len() != self.width {
            return Err(Error::InputWidth {
                expected: self.width,
                got: row.len(),
            });
        }
        let mut picked = Vec::new();
        self.models
            .iter()
            .map(|b| {
                picked.clear();
                picked.extend(b.features.iter().map(|&i| row[i]));
                let mut values = vec![0.0; b.model.output_len()];
                b.model.run(&picked, &mut values)?;
                Ok(Prediction {
                    model: b.name.clone(),
                    values,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::FlatOutput;

    #[test]
    fn outputs_must_fill_the_buffer_exactly() {
        let mut buf = [0.0f32; 3];
        let mut out = FlatOutput::new(&mut buf);
        out.push(&[1.0, 2.0]).unwrap();
        assert!(out.push(&[3.0, 4.0]).is_err(), "past the end");
        assert!(out.finish().is_err(), "one value short");
        let mut out = FlatOutput::new(&mut buf);
        out.push(&[1.0]).unwrap();
        out.push(&[2.0, 3.0]).unwrap();
        out.finish().unwrap();
        assert_eq!(buf, [1.0, 2.0, 3.0]);
    }
}
