//! The records of OTA rollout campaigns: the campaign and one row per
//! targeted device, everything the hub needs to carry a campaign on after
//! a restart (`docs/design/ota.md`).

use serde::{Deserialize, Serialize};
use strata_proto::DeviceId;

/// A rollout campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Campaign {
    /// Its id.
    pub id: i64,
    /// What it was asked to do, as given (the hub's campaign spec).
    pub spec: serde_json::Value,
    /// `running`, `paused`, `completed`, `aborted`, `rolling_back` or
    /// `rolled_back`.
    pub state: String,
    /// Why it paused or stopped (empty while all is well).
    pub reason: String,
    /// The last wave opened (0 is the canary).
    pub wave: u32,
    /// How many waves it has.
    pub waves: u32,
    /// When it was created, ns.
    pub created_ns: i64,
    /// When its state last changed, ns.
    pub updated_ns: i64,
    /// Devices decided when it was last resumed: the failure threshold
    /// counts what happened since.
    pub baseline_decided: u64,
    /// Devices failed when it was last resumed.
    pub baseline_failed: u64,
}

/// One device of a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CampaignDevice {
    /// The device.
    pub device: DeviceId,
    /// Its wave.
    pub wave: u32,
    /// `pending`, `assigned`, `committed`, `failed`, `timed_out`,
    /// `skipped`, `withdrawn`, `rolling_back`, `rolled_back` or
    /// `rollback_failed`.
    pub state: String,
    /// The version of the release's kind and name its twin named before
    /// the campaign reached it (what a rollback returns to).
    pub previous: Option<u64>,
    /// When its current assignment was signed, ns.
    pub assigned_ns: Option<i64>,
    /// When its current assignment expires, ns.
    pub expires_ns: Option<i64>,
    /// When its state last became final, ns.
    pub decided_ns: Option<i64>,
    /// The device's reason code or the hub's (`timeout`), when it failed.
    pub reason: Option<String>,
}

/// Storage of campaigns.
pub trait CampaignStore: Send + Sync + 'static {
    /// Stores a new campaign with its devices in one transaction; returns
    /// its id.
    fn create_campaign(
        &self,
        campaign: &Campaign,
        devices: &[CampaignDevice],
    ) -> crate::Result<i64>;
    /// Every campaign, newest first.
    fn campaigns(&self) -> crate::Result<Vec<Campaign>>;
    /// One campaign.
    fn campaign(&self, id: i64) -> crate::Result<Option<Campaign>>;
    /// The devices of a campaign, in wave order.
    fn campaign_devices(&self, id: i64) -> crate::Result<Vec<CampaignDevice>>;
    /// Writes a campaign and the given device rows in one transaction.
    fn save_campaign(&self, campaign: &Campaign, devices: &[CampaignDevice]) -> crate::Result<()>;
}
