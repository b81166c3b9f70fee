//! The fleet at a glance: counts per site, state and version, and one page
//! of the devices matching a search. The dashboard reads this instead of
//! the full device list, so a browser never holds 10,000 devices at once.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use strata_store::{AlertFilter, Device, DeviceState};
use utoipa::{IntoParams, ToSchema};

use super::{ApiState, blocking};
use crate::error::{Error, Result};

/// Largest page of devices one request returns.
const MAX_PAGE: usize = 500;

/// Which devices to list on the page.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct FleetQuery {
    /// Only devices whose id contains this text (case-insensitive).
    pub q: Option<String>,
    /// Only devices of this site.
    pub site: Option<String>,
    /// Only devices in this state: `online`, `offline` (enrolled, not
    /// connected), `pending` (not enrolled yet) or `revoked`.
    pub status: Option<String>,
    /// Devices skipped before the page (default 0).
    pub offset: Option<usize>,
    /// Devices on the page (default 50, at most 500).
    pub limit: Option<usize>,
}

/// One site's devices, counted.
#[derive(Debug, Serialize, ToSchema)]
pub struct SiteSummary {
    /// Site id.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Region its data stays in.
    pub region: String,
    /// Devices registered.
    pub devices: usize,
    /// Devices connected now.
    pub online: usize,
    /// Devices revoked.
    pub revoked: usize,
}

/// The fleet at a glance and one page of devices.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetOverview {
    /// Devices registered.
    pub devices: usize,
    /// Enrolled and connected.
    pub online: usize,
    /// Enrolled, not connected.
    pub offline: usize,
    /// Registered, not enrolled yet.
    pub pending: usize,
    /// Cut off.
    pub revoked: usize,
    /// Alerts active or acknowledged.
    pub open_alerts: usize,
    /// Every site, in id order.
    pub sites: Vec<SiteSummary>,
    /// Devices per reported firmware version ("unknown" when none).
    pub firmware_versions: BTreeMap<String, usize>,
    /// Devices per reported model version ("none" when none).
    pub model_versions: BTreeMap<String, usize>,
    /// Devices matching the query.
    pub matching: usize,
    /// Index of the page's first device among the matching ones.
    pub offset: usize,
    /// The page, in id order.
    pub page: Vec<Device>,
}

/// Where a device stands, in the words of [`FleetQuery::status`].
fn status(d: &Device) -> &'static str {
    match d.state {
        DeviceState::Pending => "pending",
        DeviceState::Revoked => "revoked",
        DeviceState::Active if d.online => "online",
        DeviceState::Active => "offline",
    }
}

/// Counts the fleet and picks the page `q` asks for.
fn overview(
    sites: Vec<strata_store::Site>,
    devices: Vec<Device>,
    open_alerts: usize,
    q: &FleetQuery,
) -> FleetOverview {
    let mut by_site: BTreeMap<String, SiteSummary> = sites
        .into_iter()
        .map(|s| {
            let summary = SiteSummary {
                id: s.id.to_string(),
                name: s.name,
                region: s.region,
                devices: 0,
                online: 0,
                revoked: 0,
            };
            (summary.id.clone(), summary)
        })
        .collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut firmware_versions = BTreeMap::new();
    let mut model_versions = BTreeMap::new();
    for d in &devices {
        let st = status(d);
        *counts.entry(st).or_default() += 1;
        if let Some(site) = by_site.get_mut(d.site.as_str()) {
            site.devices += 1;
            site.online += usize::from(st == "online");
            site.revoked += usize::from(st == "revoked");
        }
        let firmware = d.firmware_version.as_deref().unwrap_or("unknown");
        *firmware_versions.entry(firmware.to_owned()).or_default() += 1;
        let model = d.model_version.as_deref().filter(|m| !m.is_empty());
        let model = model.unwrap_or("none");
        *model_versions.entry(model.to_owned()).or_default() += 1;
    }
    let needle = q.q.as_deref().map(str::to_lowercase).unwrap_or_default();
    let matches = |d: &Device| {
        (needle.is_empty() || d.id.as_str().to_lowercase().contains(&needle))
            && q.site.as_deref().is_none_or(|s| d.site.as_str() == s)
            && q.status.as_deref().is_none_or(|s| status(d) == s)
    };
    let total = devices.len();
    let mut matching: Vec<Device> = devices.into_iter().filter(matches).collect();
    matching.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    let offset = q.offset.unwrap_or(0).min(matching.len());
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let count = matching.len();
    let page = matching.into_iter().skip(offset).take(limit).collect();
    let get = |k: &str| counts.get(k).copied().unwrap_or(0);
    FleetOverview {
        devices: total,
        online: get("online"),
        offline: get("offline"),
        pending: get("pending"),
        revoked: get("revoked"),
        open_alerts,
        sites: by_site.into_values().collect(),
        firmware_versions,
        model_versions,
        matching: count,
        offset,
        page,
    }
}

/// Counts per site, state and version, and one page of matching devices.
#[utoipa::path(get, path = "/api/v1/fleet", tag = "registry", security(("bearer_token" = [])),
    params(FleetQuery), responses((status = 200, body = FleetOverview), (status = 400, body = super::ErrorBody)))]
pub async fn get_fleet(
    State(s): State<ApiState>,
    Query(q): Query<FleetQuery>,
) -> Result<Json<FleetOverview>> {
    if let Some(st) = q.status.as_deref()
        && !["online", "offline", "pending", "revoked"].contains(&st)
    {
        return Err(Error::BadRequest(format!(
            "`status` = {st:?}: expected online, offline, pending or revoked"
        )));
    }
    let result = blocking(move || {
        let sites = s.registry.sites()?;
        let devices = s.registry.devices(None)?;
        let open = AlertFilter {
            open: true,
            ..AlertFilter::default()
        };
        let open_alerts = s.alerts.count(&open)? as usize;
        Ok(overview(sites, devices, open_alerts, &q))
    })
    .await?;
    Ok(Json(result))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::{DeviceId, SiteId};

    fn device(id: &str, site: &str, state: DeviceState, online: bool) -> Device {
        Device {
            id: DeviceId::new(id).unwrap(),
            site: SiteId::new(site).unwrap(),
            tags: BTreeMap::new(),
            model_version: (id.ends_with('1')).then(|| "rul@2".to_owned()),
            firmware_version: Some("1.0".into()),
            state,
            online,
            last_seen_ns: None,
            created_ns: 0,
            revoked_ns: None,
            signals: BTreeMap::new(),
        }
    }

    fn site(id: &str) -> strata_store::Site {
        strata_store::Site {
            id: SiteId::new(id).unwrap(),
            name: id.to_uppercase(),
            region: "eu".into(),
            created_ns: 0,
        }
    }

    fn fleet() -> Vec<Device> {
        let mut devices: Vec<Device> = (0..120)
            .map(|i| {
                let site = if i % 3 == 0 { "b" } else { "a" };
                device(&format!("m-{i:03}"), site, DeviceState::Active, i % 2 == 0)
            })
            .collect();
        devices.push(device("p-1", "a", DeviceState::Pending, false));
        devices.push(device("r-1", "b", DeviceState::Revoked, false));
        devices
    }

    #[test]
    fn counts_the_whole_fleet_whatever_the_page() {
        let q = FleetQuery {
            q: Some("M-00".into()),
            limit: Some(5),
            ..FleetQuery::default()
        };
        let o = overview(vec![site("a"), site("b")], fleet(), 3, &q);
        assert_eq!((o.devices, o.online, o.offline), (122, 60, 60));
        assert_eq!((o.pending, o.revoked, o.open_alerts), (1, 1, 3));
        assert_eq!(o.sites[0].devices + o.sites[1].devices, 122);
        assert_eq!(o.sites[1].revoked, 1);
        assert_eq!(o.firmware_versions["1.0"], 122);
        assert_eq!(o.model_versions["rul@2"], 14);
        // m-000 .. m-009 match "m-00"; the page holds the first five.
        assert_eq!(o.matching, 10);
        let ids: Vec<&str> = o.page.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["m-000", "m-001", "m-002", "m-003", "m-004"]);
    }

    #[test]
    fn filters_by_site_and_status_and_pages_past_the_end() {
        let q = FleetQuery {
            site: Some("b".into()),
            status: Some("online".into()),
            offset: Some(18),
            limit: Some(100),
            ..FleetQuery::default()
        };
        let o = overview(vec![site("a"), site("b")], fleet(), 0, &q);
        // Site b holds m-000, m-003, ... (40 devices), every other one online.
        assert_eq!(o.matching, 20);
        assert_eq!(o.offset, 18);
        assert_eq!(o.page.len(), 2);
        assert!(o.page.iter().all(|d| d.online && d.site.as_str() == "b"));
        let past = FleetQuery {
            offset: Some(10_000),
            ..FleetQuery::default()
        };
        let o = overview(vec![], fleet(), 0, &past);
        assert_eq!((o.offset, o.page.len()), (122, 0));
    }
}
