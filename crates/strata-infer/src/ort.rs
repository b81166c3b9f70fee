//! onnxruntime as a runtime (feature `ort`), loaded at run time from a
//! shared library such as the one in the `onnxruntime` Python wheel. Used as
//! the same-process reference for correctness and speed; sessions run
//! single-threaded and sequentially, as the edge would run them.

use std::path::Path;
use std::sync::Mutex;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::tensor::TensorElementType;
use ort::value::{TensorRef, ValueType};

use crate::error::{Error, Result};
use crate::onnx;
use crate::runtime::{
    FlatOutput, InferenceRuntime, Model, OutputSpec, check_widths, input_width, output_specs,
};

/// onnxruntime through the `ort` crate with `load-dynamic`.
#[derive(Debug)]
pub struct OrtRuntime {
    _private: (),
}

fn ort_err(e: impl std::fmt::Display) -> Error {
    Error::Onnxruntime(e.to_string())
}

impl OrtRuntime {
    /// Loads `libonnxruntime.so` from `dylib` (once per process: later
    /// calls reuse the library loaded first).
    pub fn from_library(dylib: impl AsRef<Path>) -> Result<Self> {
        let path = dylib.as_ref();
        if !path.is_file() {
            return Err(Error::Onnxruntime(format!(
                "no onnxruntime library at {}",
                path.display()
            )));
        }
        ort::init_from(path.display().to_string())
            .with_name("strata")
            .commit()
            .map_err(ort_err)?;
        Ok(OrtRuntime { _private: () })
    }
}

struct OrtModel {
    session: Mutex<Session>,
    input_name: String,
    input_shape: Vec<usize>,
    specs: Vec<OutputSpec>,
}

impl InferenceRuntime for OrtRuntime {
    fn name(&self) -> &'static str {
        "onnxruntime"
    }

    fn load(&self, onnx_bytes: &[u8]) -> Result<Box<dyn Model>> {
        let proto = onnx::decode(onnx_bytes)?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| Error::Decode("the model has no graph".into()))?;
        let (input_name, input_shape) = input_width(graph)?;
        let session = Session::builder()
            .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::Level3))
            .and_then(|b| b.with_intra_threads(1))
            .and_then(|b| b.with_inter_threads(1))
            .and_then(|b| b.with_parallel_execution(false))
            .and_then(|b| b.commit_from_memory(onnx_bytes))
            .map_err(ort_err)?;
        for output in &session.outputs {
            if !matches!(output.output_type, ValueType::Tensor { .. }) {
                return Err(Error::Onnxruntime(format!(
                    "output \"{}\" is not a tensor (a ZipMap?); export classifiers with zipmap=False \
                     to compare them with onnxruntime",
                    output.name
                )));
            }
        }
        let mut model = OrtModel {
            session: Mutex::new(session),
            input_name: input_name.to_string(),
            input_shape,
            specs: Vec::new(),
        };
        let probe = model.run_raw(&vec![0.0; model.input_len()])?;
        model.specs = output_specs(graph, probe.iter().map(Vec::len));
        Ok(Box::new(model))
    }
}

impl OrtModel {
    fn run_raw(&self, features: &[f32]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::new();
        self.run_with(features, |v| {
            out.push(v.to_vec());
            Ok(())
        })?;
        Ok(out)
    }

    fn run_with(&self, features: &[f32], mut each: impl FnMut(&[f32]) -> Result<()>) -> Result<()> {
        let mut session = self
            .session
            .lock()
            .map_err(|_| ort_err("session lock poisoned"))?;
        let input =
            TensorRef::from_array_view((self.input_shape.clone(), features)).map_err(ort_err)?;
        let outputs = session
            .run(ort::inputs![self.input_name.as_str() => input])
            .map_err(ort_err)?;
        let mut converted = Vec::new();
        for (_, value) in outputs.iter() {
            match value.dtype() {
                ValueType::Tensor {
                    ty: TensorElementType::Float32,
                    ..
                } => {
                    let (_, data) = value.try_extract_tensor::<f32>().map_err(ort_err)?;
                    each(data)?;
                }
                ValueType::Tensor {
                    ty: TensorElementType::Int64,
                    ..
                } => {
                    let (_, data) = value.try_extract_tensor::<i64>().map_err(ort_err)?;
                    converted.clear();
                    converted.extend(data.iter().map(|&x| x as f32));
                    each(&converted)?;
                }
                ValueType::Tensor {
                    ty: TensorElementType::Bool,
                    ..
                } => {
                    let (_, data) = value.try_extract_tensor::<bool>().map_err(ort_err)?;
                    converted.clear();
                    converted.extend(data.iter().map(|&x| x as u8 as f32));
                    each(&converted)?;
                }
                other => {
                    return Err(Error::Onnxruntime(format!(
                        "output of type {other:?} is not supported"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Model for OrtModel {
    fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    fn outputs(&self) -> &[OutputSpec] {
        &self.specs
    }

    fn runtime(&self) -> &'static str {
        "onnxruntime"
    }

    fn run(&self, features: &[f32], out: &mut [f32]) -> Result<()> {
        check_widths(self, features, out)?;
        let mut out = FlatOutput::new(out);
        self.run_with(features, |v| out.push(v))?;
        out.finish()
    }
}
