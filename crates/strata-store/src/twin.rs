//! The device twin: what the hub wants a device to run (desired) and what
//! the device says it runs (reported), each a JSON document with a version.

use serde::{Deserialize, Serialize};
use strata_proto::DeviceId;

/// A device's twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Twin {
    /// The device.
    pub device: DeviceId,
    /// The desired document.
    pub desired: serde_json::Value,
    /// Grows by one with every change of `desired`.
    pub desired_version: u64,
    /// When `desired` last changed, ns.
    pub desired_ns: Option<i64>,
    /// The last reported document.
    pub reported: serde_json::Value,
    /// When it was reported, ns.
    pub reported_ns: Option<i64>,
}

impl Twin {
    /// The twin of a device nothing was set for yet.
    pub fn empty(device: DeviceId) -> Twin {
        Twin {
            device,
            desired: serde_json::json!({}),
            desired_version: 0,
            desired_ns: None,
            reported: serde_json::json!({}),
            reported_ns: None,
        }
    }

    /// Changes one top-level key of the desired document at `now_ns` and
    /// bumps its version (what [`crate::TwinStore::edit_desired`] stores).
    pub(crate) fn edit_desired_key(
        &mut self,
        key: &str,
        now_ns: i64,
        edit: &mut crate::DesiredEdit<'_>,
    ) -> crate::Result<()> {
        let doc = self.desired.as_object_mut().ok_or_else(|| {
            crate::error::corrupt(format!("desired twin of {} is not an object", self.device))
        })?;
        let value = edit(doc.get(key).unwrap_or(&serde_json::Value::Null))?;
        doc.insert(key.to_owned(), value);
        self.desired_version += 1;
        self.desired_ns = Some(now_ns);
        Ok(())
    }
}
