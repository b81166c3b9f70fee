//! Inference for Strata's edge and hub: ONNX models run on one feature row
//! at a time, several models at once, each bound to the features it was
//! trained on.
//!
//! Runtimes behind one [`InferenceRuntime`] trait:
//! - [`MlRuntime`], Strata's own evaluator for classic-ML graphs
//!   (`ai.onnx.ml` tree ensembles, scalers, label encoders and the standard
//!   ops scikit-learn exporters put around them). Trees are compiled into a
//!   flat layout; a 100-tree depth-6 ensemble runs a row in well under a
//!   microsecond.
//! - [`TractRuntime`], tract for graphs of standard ops (MLPs, CNNs...).
//! - `OrtRuntime` (feature `ort`), onnxruntime loaded at run time from a
//!   shared library: the reference for correctness and speed.
//!
//! [`load_model`] picks the runtime for a graph. Classifier outputs that
//! skl2onnx wraps in `ZipMap` (a list of maps) come out as the plain
//! probability vector, in class order.

pub mod error;
pub mod ml;
pub mod onnx;
#[cfg(feature = "ort")]
pub mod ort;
pub mod runtime;
pub mod tract;

pub use error::{Error, Result};
pub use ml::{MlModel, MlRuntime};
#[cfg(feature = "ort")]
pub use ort::OrtRuntime;
pub use runtime::{
    InferenceRuntime, Model, ModelSet, OutputSpec, Prediction, load_model, output_names,
};
pub use tract::TractRuntime;
