//! The MQTT topic scheme: `strata/v1/{device}/{up|down}/{kind}`.
//!
//! Every topic is scoped by device so that the broker can enforce a simple,
//! exact ACL: a device may only touch topics under its own prefix.

use std::fmt;

use crate::ids::{DeviceId, IdError};

/// First two levels of every Strata topic.
pub const ROOT: &str = "strata/v1";

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Device to hub.
    Up,
    /// Hub to device.
    Down,
}

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// `up/telemetry`: [`crate::TelemetryBatch`].
    Telemetry,
    /// `up/inference`: model outputs, as a [`crate::TelemetryBatch`].
    Inference,
    /// `up/events`: discrete device events.
    Events,
    /// `up/health`: [`crate::Health`]; also the device's last will.
    Health,
    /// `up/sketch`: feature sketches for drift detection.
    Sketch,
    /// `up/twin` (reported) and `down/twin` (desired).
    Twin,
    /// `up/cmd-result`: the outcome of a command.
    CmdResult,
    /// `down/cmd`: a command for the device.
    Cmd,
    /// `down/control`: the site's phase gate for closed-loop rules
    /// ([`crate::ControlGate`], retained).
    Control,
}

impl TopicKind {
    /// The topic level for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Telemetry => "telemetry",
            TopicKind::Inference => "inference",
            TopicKind::Events => "events",
            TopicKind::Health => "health",
            TopicKind::Sketch => "sketch",
            TopicKind::Twin => "twin",
            TopicKind::CmdResult => "cmd-result",
            TopicKind::Cmd => "cmd",
            TopicKind::Control => "control",
        }
    }

    fn parse(direction: Direction, s: &str) -> Option<Self> {
        use TopicKind::*;
        let kind = match (direction, s) {
            (Direction::Up, "telemetry") => Telemetry,
            (Direction::Up, "inference") => Inference,
            (Direction::Up, "events") => Events,
            (Direction::Up, "health") => Health,
            (Direction::Up, "sketch") => Sketch,
            (Direction::Up, "twin") => Twin,
            (Direction::Up, "cmd-result") => CmdResult,
            (Direction::Down, "twin") => Twin,
            (Direction::Down, "cmd") => Cmd,
            (Direction::Down, "control") => Control,
            _ => return None,
        };
        Some(kind)
    }
}

/// A parsed Strata topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    /// The device the topic belongs to.
    pub device: DeviceId,
    /// Up (device to hub) or down.
    pub direction: Direction,
    /// What the topic carries.
    pub kind: TopicKind,
}

/// Why a topic name is not a Strata topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Does not start with `strata/v1/` or has the wrong number of levels.
    #[error("topic {0:?} is not of the form strata/v1/{{device}}/{{up|down}}/{{kind}}")]
    Shape(String),
    /// The device level is not a valid device id.
    #[error("topic {topic:?}: {source}")]
    Device {
        /// The topic.
        topic: String,
        /// Why the device id is invalid.
        source: IdError,
    },
    /// Unknown direction or kind for that direction.
    #[error("topic {0:?}: unknown kind for its direction")]
    Kind(String),
}

impl Topic {
    /// Builds the topic for `device`, `direction` and `kind`.
    pub fn new(device: DeviceId, direction: Direction, kind: TopicKind) -> Self {
        Topic {
            device,
            direction,
            kind,
        }
    }

    /// Parses a topic name.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let shape = || TopicError::Shape(topic.to_owned());
        let rest = topic
            .strip_prefix(ROOT)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(shape)?;
        let mut levels = rest.split('/');
        let (Some(device), Some(dir), Some(kind), None) =
            (levels.next(), levels.next(), levels.next(), levels.next())
        else {
            return Err(shape());
        };
        let device = DeviceId::new(device).map_err(|source| TopicError::Device {
            topic: topic.to_owned(),
            source,
        })?;
        let direction = match dir {
            "up" => Direction::Up,
            "down" => Direction::Down,
            _ => return Err(TopicError::Kind(topic.to_owned())),
        };
        let kind =
            TopicKind::parse(direction, kind).ok_or_else(|| TopicError::Kind(topic.to_owned()))?;
        Ok(Topic {
            device,
            direction,
            kind,
        })
    }

    /// The prefix every topic of `device` starts with: `strata/v1/{device}/`.
    pub fn device_prefix(device: &str) -> String {
        format!("{ROOT}/{device}/")
    }

    /// What a device's uplink topic carries, from what follows its prefix
    /// (`up/{kind}`); `None` for anything [`Topic::parse`] would not read
    /// as an uplink topic.
    pub fn uplink_kind(after_prefix: &str) -> Option<TopicKind> {
        TopicKind::parse(Direction::Up, after_prefix.strip_prefix("up/")?)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self.direction {
            Direction::Up => "up",
            Direction::Down => "down",
        };
        write!(f, "{ROOT}/{}/{dir}/{}", self.device, self.kind.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        let dev = DeviceId::new("gw-1").unwrap();
        for (dir, kind) in [
            (Direction::Up, TopicKind::Telemetry),
            (Direction::Up, TopicKind::Inference),
            (Direction::Up, TopicKind::Events),
            (Direction::Up, TopicKind::Health),
            (Direction::Up, TopicKind::Sketch),
            (Direction::Up, TopicKind::Twin),
            (Direction::Up, TopicKind::CmdResult),
            (Direction::Down, TopicKind::Twin),
            (Direction::Down, TopicKind::Cmd),
        ] {
            let t = Topic::new(dev.clone(), dir, kind);
            assert_eq!(Topic::parse(&t.to_string()).unwrap(), t);
        }
        assert_eq!(
            Topic::new(dev, Direction::Up, TopicKind::CmdResult).to_string(),
            "strata/v1/gw-1/up/cmd-result"
        );
    }

    #[test]
    fn uplink_kinds_read_as_parse_reads_them() {
        let prefix = Topic::device_prefix("gw-1");
        for rest in [
            "up/telemetry",
            "up/cmd-result",
            "down/cmd",
            "up",
            "up/",
            "up/telemetry/x",
            "up/unknown",
        ] {
            let parsed = Topic::parse(&format!("{prefix}{rest}"))
                .ok()
                .filter(|t| t.direction == Direction::Up)
                .map(|t| t.kind);
            assert_eq!(Topic::uplink_kind(rest), parsed, "{rest}");
        }
    }

    #[test]
    fn refuses_foreign_shapes() {
        for bad in [
            "strata/v1/gw-1/up",
            "strata/v1/gw-1/up/telemetry/x",
            "strata/v2/gw-1/up/telemetry",
            "other/gw-1/up/telemetry",
            "strata/v1/gw-1/down/telemetry",
            "strata/v1/gw-1/sideways/telemetry",
            "strata/v1/+/up/telemetry",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
