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
    /// How many times it was saved: a save of a campaign read at an older
    /// revision is refused (another hub sharing the store changed it
    /// meanwhile).
    #[serde(default)]
    pub revision: u64,
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
    /// Writes a campaign and the given device rows in one transaction,
    /// if the stored campaign is still at `campaign.revision` (else
    /// `Conflict`), and moves its revision on by one.
    fn save_campaign(&self, campaign: &Campaign, devices: &[CampaignDevice]) -> crate::Result<()>;
    /// Keeps every other hub sharing this store from acting on campaign
    /// `id` (`None`: from creating one) until the lock is dropped; waits
    /// for one that holds it. A store only one hub uses has nobody to
    /// keep out.
    fn lock_campaign(&self, id: Option<i64>) -> crate::Result<CampaignLock> {
        let _ = id;
        Ok(CampaignLock::default())
    }
}

/// Held while a hub acts on a campaign ([`CampaignStore::lock_campaign`]):
/// released when dropped.
#[derive(Default)]
pub struct CampaignLock {
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl CampaignLock {
    /// A lock that `release` gives up.
    pub fn new(release: impl FnOnce() + Send + 'static) -> CampaignLock {
        CampaignLock {
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for CampaignLock {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// The refusal of a save of `campaign`, read at its revision, when the
/// stored one is at `stored`.
pub(crate) fn changed_meanwhile(campaign: &Campaign, stored: u64) -> crate::Error {
    crate::Error::Conflict(format!(
        "campaign {} changed meanwhile (revision {stored}, read at {}): read it again",
        campaign.id, campaign.revision
    ))
}
