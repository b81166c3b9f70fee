//! tract as a runtime for graphs of standard ONNX ops (MLPs and other
//! networks). Ops tract does not know are reported before tract is asked to
//! analyse the graph, so the user sees the op and node, not an inference
//! failure deep in the graph.

use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::onnx::{self, NodeCtx};
use crate::runtime::{
    FlatOutput, InferenceRuntime, Model, OutputSpec, check_widths, input_width, output_specs,
};

/// tract (`tract-onnx`, default features off).
#[derive(Debug, Default, Clone, Copy)]
pub struct TractRuntime;

impl InferenceRuntime for TractRuntime {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn load(&self, onnx: &[u8]) -> Result<Box<dyn Model>> {
        load_proto(&onnx::decode(onnx)?)
    }
}

type Plan = TypedRunnableModel<TypedModel>;

struct TractModel {
    plan: Plan,
    input_shape: Vec<usize>,
    specs: Vec<OutputSpec>,
}

fn tract_err(e: impl std::fmt::Display) -> Error {
    Error::Tract(format!("{e:#}"))
}

pub(crate) fn load_proto(proto: &pb::ModelProto) -> Result<Box<dyn Model>> {
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| Error::Decode("the model has no graph".into()))?;
    let (_, input_shape) = input_width(graph)?;
    let framework = tract_onnx::onnx();
    for (index, node) in graph.node.iter().enumerate() {
        if !framework.op_register.0.contains_key(&node.op_type) {
            let domain = onnx::domain_of(node);
            let ctx = NodeCtx::new(node, index, onnx::opset_of(proto, domain));
            let hint = if domain == "ai.onnx.ml" {
                "load it with the strata-ml runtime (load_model does)"
            } else {
                ""
            };
            return Err(ctx.unsupported(hint));
        }
    }
    let plan = framework
        .model_for_proto_model(proto)
        .and_then(|m| m.with_input_fact(0, f32::fact(&input_shape).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(tract_err)?;
    let mut model = TractModel {
        plan,
        input_shape,
        specs: Vec::new(),
    };
    let probe = model.run_raw(&vec![0.0; model.input_len()])?;
    model.specs = output_specs(graph, probe.iter().map(Vec::len));
    Ok(Box::new(model))
}

impl TractModel {
    fn run_raw(&self, features: &[f32]) -> Result<Vec<Vec<f32>>> {
        let input = Tensor::from_shape(&self.input_shape, features).map_err(tract_err)?;
        let outputs = self
            .plan
            .run(tvec!(input.into_tvalue()))
            .map_err(tract_err)?;
        outputs
            .iter()
            .map(|o| {
                let f = o.cast_to::<f32>().map_err(tract_err)?;
                Ok(f.as_slice::<f32>().map_err(tract_err)?.to_vec())
            })
            .collect()
    }
}

impl Model for TractModel {
    fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    fn outputs(&self) -> &[OutputSpec] {
        &self.specs
    }

    fn runtime(&self) -> &'static str {
        "tract"
    }

    fn run(&self, features: &[f32], out: &mut [f32]) -> Result<()> {
        check_widths(self, features, out)?;
        let mut out = FlatOutput::new(out);
        for v in self.run_raw(features)? {
            out.push(&v)?;
        }
        out.finish()
    }
}
