//! Strata's wire contract: the MQTT topic scheme, the protobuf messages and
//! their JSON equivalent, and the identifiers that cross process boundaries.
//!
//! Devices, the hub and the CLI all speak through this crate, so a change to
//! the contract is a change in one place. See `docs/design/wire.md`.

pub mod control;
pub mod ids;
pub mod payload;
pub mod sketch;
pub mod topic;
pub mod twin;
pub mod validate;
pub mod view;

/// Generated protobuf types (`strata.v1`), compiled from
/// `proto/strata/v1/strata.proto` by `build.rs` without a system `protoc`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/strata.v1.rs"));
}

pub use control::{ActionOutcome, Approval, ControlAction, ControlGate, GateCheck};
pub use ids::{DeviceId, IdError, SiteId};
pub use payload::{DecodeError, Encoding};
pub use sketch::{Detection, DriftSettings, SignalSketch, SketchBatch};
pub use topic::{Direction, Topic, TopicError, TopicKind};
pub use twin::{DesiredTwin, ModelAssignment, ModelReport, ReportedTwin, UpdateReport};
pub use v1::{Health, Quality, SignalSeries, TelemetryBatch};
