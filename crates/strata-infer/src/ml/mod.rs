//! Strata's own runtime for classic-ML ONNX graphs: the `ai.onnx.ml` ops
//! that tract lacks or runs slowly (tree ensembles, scalers, label
//! encoders) plus the standard ops skl2onnx puts around them. The graph is
//! compiled once (names resolved to slots, attributes checked, trees
//! flattened) and each row runs through it in order. A graph that is one
//! tree ensemble on the model input, the usual case, skips the interpreter
//! and writes straight into the caller's buffer without allocating.

mod ops;
pub mod tree;
mod value;

use std::collections::HashMap;

use tract_onnx::pb;

use crate::error::{Error, Result};
use crate::onnx::{self, NodeCtx};
use crate::runtime::{InferenceRuntime, Model, OutputSpec, input_width};
use ops::{Op, StepInfo};
use tree::TreeEnsemble;
use value::Value;

pub use ops::SUPPORTED_OPS;

/// The runtime for classic-ML graphs (tree ensembles and friends).
#[derive(Debug, Default, Clone, Copy)]
pub struct MlRuntime;

impl InferenceRuntime for MlRuntime {
    fn name(&self) -> &'static str {
        "strata-ml"
    }

    fn load(&self, onnx: &[u8]) -> Result<Box<dyn Model>> {
        Ok(Box::new(MlModel::compile(&onnx::decode(onnx)?)?))
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Input,
    Const(usize),
    Computed(usize),
}

#[derive(Debug)]
struct Step {
    op: Op,
    info: StepInfo,
    inputs: Vec<Option<Slot>>,
    outputs: Vec<Option<usize>>,
}

/// A single tree ensemble fed by the model input: where its outputs go in
/// the caller's buffer.
#[derive(Debug)]
struct Direct {
    scores_at: Option<usize>,
    label_at: Option<usize>,
}

/// A compiled classic-ML graph.
#[derive(Debug)]
pub struct MlModel {
    steps: Vec<Step>,
    consts: Vec<Value>,
    n_values: usize,
    input_shape: Vec<usize>,
    outputs: Vec<Slot>,
    specs: Vec<OutputSpec>,
    direct: Option<Direct>,
}

impl std::fmt::Debug for StepInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.node, self.op)
    }
}

impl MlModel {
    /// Compiles a decoded model; fails on the first op it cannot run.
    pub fn compile(model: &pb::ModelProto) -> Result<Self> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| Error::Decode("the model has no graph".into()))?;
        let (input_name, input_shape) = input_width(graph)?;
        let mut names: HashMap<&str, Slot> = HashMap::new();
        let mut consts = Vec::new();
        for init in &graph.initializer {
            let v = ops::constant(init)
                .map_err(|m| Error::InvalidModel(format!("initializer \"{}\": {m}", init.name)))?;
            names.insert(init.name.as_str(), Slot::Const(consts.len()));
            consts.push(v);
        }
        names.insert(input_name, Slot::Input);

        let mut steps = Vec::new();
        let mut n_values = 0;
        for (index, node) in graph.node.iter().enumerate() {
            let domain = onnx::domain_of(node);
            let ctx = NodeCtx::new(node, index, onnx::opset_of(model, domain));
            let resolve = |name: &str| -> Result<Slot> {
                names.get(name).copied().ok_or_else(|| {
                    ctx.invalid(format!(
                        "uses value \"{name}\", which no earlier node, initializer or input defines \
                         (nodes must be in topological order)"
                    ))
                })
            };
            if node.op_type == "Constant" && domain == "ai.onnx" {
                let t = ctx
                    .tensor("value")
                    .ok_or_else(|| ctx.invalid("only tensor constants are supported"))?;
                let v = ops::constant(t).map_err(|m| ctx.invalid(m))?;
                if let Some(out) = node.output.first() {
                    names.insert(out.as_str(), Slot::Const(consts.len()));
                }
                consts.push(v);
                continue;
            }
            let Some(op) = Op::compile(&ctx, domain)? else {
                // Identity and ZipMap: the output is another name for the input.
                let src = ctx.input(0).ok_or_else(|| ctx.invalid("has no input"))?;
                let slot = resolve(src)?;
                if let Some(out) = node.output.first() {
                    names.insert(out.as_str(), slot);
                }
                continue;
            };
            let inputs = (0..node.input.len())
                .map(|i| ctx.input(i).map(&resolve).transpose())
                .collect::<Result<Vec<_>>>()?;
            let mut outputs = Vec::new();
            for (i, out) in node.output.iter().enumerate() {
                if out.is_empty() || i >= op.n_outputs() {
                    outputs.push(None);
                    continue;
                }
                names.insert(out.as_str(), Slot::Computed(n_values));
                outputs.push(Some(n_values));
                n_values += 1;
            }
            steps.push(Step {
                op,
                info: StepInfo {
                    node: ctx.name.clone(),
                    op: node.op_type.clone(),
                },
                inputs,
                outputs,
            });
        }
        let outputs = graph
            .output
            .iter()
            .map(|o| {
                names.get(o.name.as_str()).copied().ok_or_else(|| {
                    Error::InvalidModel(format!(
                        "graph output \"{}\" is not produced by any node",
                        o.name
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if outputs.is_empty() {
            return Err(Error::InvalidModel("the graph has no outputs".into()));
        }

        let mut model = MlModel {
            steps,
            consts,
            n_values,
            input_shape,
            outputs,
            specs: Vec::new(),
            direct: None,
        };
        // Output widths come from a run on a row of zeros: every op here has
        // data-independent shapes, and a graph that cannot run fails now,
        // at upload, rather than on the first reading.
        let probe = model.eval(&vec![0.0; model.input_len()])?;
        model.specs = crate::runtime::output_specs(graph, probe.iter().map(|v| v.len()));
        model.direct = model.direct_plan();
        Ok(model)
    }

    fn direct_plan(&self) -> Option<Direct> {
        let [step] = self.steps.as_slice() else {
            return None;
        };
        let Op::Tree(tree) = &step.op else {
            return None;
        };
        if !matches!(step.inputs.as_slice(), [Some(Slot::Input)])
            || tree.input_len() > self.input_len()
        {
            return None;
        }
        let mut direct = Direct {
            scores_at: None,
            label_at: None,
        };
        let scores_index = if tree.is_classifier() { 1 } else { 0 };
        let mut offset = 0;
        for (slot, spec) in self.outputs.iter().zip(&self.specs) {
            let Slot::Computed(v) = slot else { return None };
            let which = step.outputs.iter().position(|o| *o == Some(*v))?;
            let target = if which == scores_index {
                &mut direct.scores_at
            } else {
                &mut direct.label_at
            };
            if target.is_some() {
                return None;
            }
            *target = Some(offset);
            offset += spec.len;
        }
        Some(direct)
    }

    fn get<'a>(
        &'a self,
        slot: Slot,
        input: &'a Value,
        values: &'a [Option<Value>],
    ) -> Option<&'a Value> {
        match slot {
            Slot::Input => Some(input),
            Slot::Const(i) => self.consts.get(i),
            Slot::Computed(i) => values.get(i).and_then(Option::as_ref),
        }
    }

    /// Runs the graph on one row and returns the graph outputs.
    fn eval(&self, features: &[f32]) -> Result<Vec<Value>> {
        let input = Value::f32(self.input_shape.clone(), features.to_vec());
        let mut values: Vec<Option<Value>> = vec![None; self.n_values];
        let mut live = 0usize;
        for step in &self.steps {
            let inputs: Vec<Option<&Value>> = step
                .inputs
                .iter()
                .map(|s| s.and_then(|s| self.get(s, &input, &values)))
                .collect();
            let results = step.op.run(&step.info, &inputs)?;
            for (slot, value) in step.outputs.iter().zip(results) {
                // Every value is kept until the run ends: a graph of many
                // steps, each within its own limit, must not add up to
                // more than a model of this kind ever needs either.
                live += value.len();
                if live > ops::MAX_LIVE_ELEMENTS {
                    return Err(step.info.err(format!(
                        "the graph's values hold more than {} values in all",
                        ops::MAX_LIVE_ELEMENTS
                    )));
                }
                if let Some(i) = slot {
                    values[*i] = Some(value);
                }
            }
        }
        self.outputs
            .iter()
            .map(|&s| {
                self.get(s, &input, &values)
                    .cloned()
                    .ok_or_else(|| Error::InvalidModel("a graph output was not computed".into()))
            })
            .collect()
    }

    /// The tree ensembles in the graph (for inspection and benchmarks).
    pub fn tree_ensembles(&self) -> impl Iterator<Item = &TreeEnsemble> {
        self.steps.iter().filter_map(|s| match &s.op {
            Op::Tree(t) => Some(&**t),
            _ => None,
        })
    }
}

impl Model for MlModel {
    fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    fn outputs(&self) -> &[OutputSpec] {
        &self.specs
    }

    fn runtime(&self) -> &'static str {
        "strata-ml"
    }

    fn run(&self, features: &[f32], out: &mut [f32]) -> Result<()> {
        crate::runtime::check_widths(self, features, out)?;
        if let (Some(direct), [step]) = (&self.direct, self.steps.as_slice())
            && let Op::Tree(tree) = &step.op
        {
            let n = tree.n_outputs();
            let mut discard = [0.0f32; 32];
            let label = match direct.scores_at {
                Some(at) => tree.eval_row(features, &mut out[at..at + n]),
                None if n <= discard.len() => tree.eval_row(features, &mut discard[..n]),
                None => tree.eval_row(features, &mut vec![0.0; n]),
            };
            if let (Some(at), Some(label)) = (direct.label_at, label) {
                out[at] = label as f32;
            }
            return Ok(());
        }
        let values = self.eval(features)?;
        // Widths were learned from a trial row; a shape computed from the
        // data (a Reshape of a computed shape) may differ for this one.
        let produced: usize = values.iter().map(Value::len).sum();
        if produced != out.len() {
            return Err(Error::InvalidModel(format!(
                "it gave {produced} output values for this row, {} at load (a shape computed from the data)",
                out.len()
            )));
        }
        let mut at = 0;
        for v in &values {
            v.write_f32(&mut out[at..at + v.len()]);
            at += v.len();
        }
        Ok(())
    }
}
