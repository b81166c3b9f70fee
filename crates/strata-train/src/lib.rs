//! Strata's built-in model trainers, in pure Rust, exporting ONNX files
//! that `strata-infer` (the edge runtime) and onnxruntime both run, plus the
//! metrics and naive baselines a training job reports.
//!
//! - [`train_gbt_regressor`] / [`train_gbt_classifier`]: histogram
//!   gradient-boosted trees (e.g. remaining useful life, failure within a
//!   horizon), exported as an `ai.onnx.ml` `TreeEnsembleRegressor`
//!   (classification adds a `Sigmoid`).
//! - [`train_isolation_forest`]: unsupervised anomaly scores in (0, 1].
//! - [`train_ridge`]: closed-form ridge regression (load forecasts),
//!   exported as `MatMul` + `Add`.
//!
//! Every trainer takes a validated [`Dataset`], parameters with defaults
//! (`serde` with unknown keys refused, checked by `validate`), and a
//! progress callback called once per tree or phase, whose answer can stop
//! the training ([`Error::Stopped`]). Training is
//! deterministic given the parameters' seed. The result, a
//! [`TrainedModel`], carries the ONNX bytes (input `features`, float
//! `[N, features]`; one float `[N, 1]` output), the parameters as JSON, the
//! per-node training sample counts of tree ensembles ([`TreeStats`], which
//! ONNX cannot hold and exact TreeSHAP needs), and the model itself, which
//! predicts natively the same values the runtimes compute.
//!
//! Hold-out splits ([`time_holdout`], [`group_holdout`]) never shuffle
//! rows across time. No I/O, no clock, no threads.

pub mod baseline;
mod check;
pub mod dataset;
pub mod error;
pub mod gbt;
pub mod iforest;
pub mod metrics;
pub mod model;
mod onnx;
pub mod progress;
pub mod ridge;
mod rng;
pub mod split;
pub mod tree;

pub use baseline::Evaluation;
pub use dataset::Dataset;
pub use error::{Error, Result};
pub use gbt::{GbtModel, GbtParams, GbtTask, Growth, train_gbt_classifier, train_gbt_regressor};
pub use iforest::{IsolationForestModel, IsolationForestParams, train_isolation_forest};
pub use metrics::{Confusion, Metrics};
pub use model::{INPUT_NAME, ModelKind, Predictor, TrainedModel};
pub use onnx::{IR_VERSION, ML_OPSET, ONNX_OPSET};
pub use progress::{OnProgress, Progress, ignore_progress};
pub use ridge::{RidgeModel, RidgeParams, train_ridge};
pub use split::{Split, group_holdout, time_holdout};
pub use tree::{NodeKind, Tree, TreeNode, TreeNodeSamples, TreeStats};
