//! Stored telemetry over HTTP: series, latest values, range queries with
//! downsampling.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use strata_store::{LatestReading, RangeQuery, RangeResult, SeriesInfo};
use utoipa::IntoParams;

use super::registry::device_id;
use super::{ApiState, ErrorBody, blocking};
use crate::error::{Error, Result};

/// Most raw points or buckets one query returns.
const MAX_LIMIT: usize = 100_000;

/// Filter for the series list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SeriesFilter {
    /// Only series of this device.
    pub device: Option<String>,
}

/// The series (device, signal) stored, with their latest readings.
#[utoipa::path(get, path = "/api/v1/series", tag = "telemetry", security(("bearer_token" = [])), params(SeriesFilter),
    responses((status = 200, body = [SeriesInfo]), (status = 400, body = ErrorBody)))]
pub async fn list_series(
    State(s): State<ApiState>,
    Query(f): Query<SeriesFilter>,
) -> Result<Json<Vec<SeriesInfo>>> {
    let device = f.device.as_deref().map(device_id).transpose()?;
    let store = s.store.clone();
    Ok(Json(
        blocking(move || Ok(store.series(device.as_ref())?)).await?,
    ))
}

/// The latest reading of every signal of a device.
#[utoipa::path(get, path = "/api/v1/devices/{id}/latest", tag = "telemetry", security(("bearer_token" = [])),
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = [LatestReading]), (status = 400, body = ErrorBody)))]
pub async fn latest(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<LatestReading>>> {
    let id = device_id(&id)?;
    let store = s.store.clone();
    Ok(Json(blocking(move || Ok(store.latest(&id)?)).await?))
}

/// A time range of one signal.
#[derive(Debug, Deserialize, IntoParams)]
pub struct RangeParams {
    /// Start: ns since the Unix epoch, or RFC 3339 (`2026-11-25T10:00:00Z`). Default: 1 hour before `to`.
    pub from: Option<String>,
    /// End: ns since the Unix epoch, or RFC 3339. Default: now.
    pub to: Option<String>,
    /// Bucket width for min/max/avg downsampling, e.g. `10s`, `5m`, `1h`, or ns. Raw readings when absent.
    pub bucket: Option<String>,
    /// Most points or buckets returned (default 10000, at most 100000).
    pub limit: Option<usize>,
}

/// Readings of one signal in a time range, raw or downsampled.
#[utoipa::path(get, path = "/api/v1/devices/{id}/signals/{signal}", tag = "telemetry", security(("bearer_token" = [])),
    params(("id" = String, Path, description = "Device id"), ("signal" = String, Path, description = "Signal name"), RangeParams),
    responses((status = 200, body = RangeResult), (status = 400, body = ErrorBody)))]
pub async fn range(
    State(s): State<ApiState>,
    Path((id, signal)): Path<(String, String)>,
    Query(p): Query<RangeParams>,
) -> Result<Json<RangeResult>> {
    let to_ns =
        p.to.as_deref()
            .map(|t| parse_time("to", t))
            .transpose()?
            .unwrap_or_else(crate::now_ns);
    let from_ns = p
        .from
        .as_deref()
        .map(|t| parse_time("from", t))
        .transpose()?
        .unwrap_or(to_ns.saturating_sub(3_600_000_000_000));
    if from_ns > to_ns {
        return Err(Error::BadRequest(format!(
            "`from` ({from_ns}) is after `to` ({to_ns})"
        )));
    }
    let bucket_ns = p.bucket.as_deref().map(parse_width).transpose()?;
    let limit = p.limit.unwrap_or(10_000);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Error::BadRequest(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let query = RangeQuery {
        device: device_id(&id)?,
        signal,
        from_ns,
        to_ns,
        bucket_ns,
        limit,
    };
    let store = s.store.clone();
    Ok(Json(blocking(move || Ok(store.range(&query)?)).await?))
}

/// Parses ns since the epoch or an RFC 3339 time.
fn parse_time(name: &str, text: &str) -> Result<i64> {
    if let Ok(ns) = text.parse::<i64>() {
        return Ok(ns);
    }
    let t = humantime::parse_rfc3339_weak(text).map_err(|e| {
        Error::BadRequest(format!(
            "`{name}` = {text:?} is neither ns since the epoch nor RFC 3339: {e}"
        ))
    })?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| Error::BadRequest(format!("`{name}` = {text:?} is before 1970")))?;
    i64::try_from(d.as_nanos())
        .map_err(|_| Error::BadRequest(format!("`{name}` = {text:?} is too far ahead")))
}

/// Parses a bucket width: ns, or a duration such as `10s`, `5m`, `1h`.
fn parse_width(text: &str) -> Result<i64> {
    let ns = match text.parse::<i64>() {
        Ok(ns) => ns,
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| {
                Error::BadRequest(format!(
                    "`bucket` = {text:?} is not a duration (e.g. 10s, 5m): {e}"
                ))
            })?
            .as_nanos()
            .try_into()
            .unwrap_or(i64::MAX),
    };
    if ns <= 0 {
        return Err(Error::BadRequest(
            "`bucket` must be longer than zero".into(),
        ));
    }
    Ok(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_times_and_widths() {
        assert_eq!(
            parse_time("from", "1700000000000000000").unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_time("from", "1970-01-01T00:00:01Z").unwrap(),
            1_000_000_000
        );
        assert!(
            parse_time("from", "yesterday")
                .unwrap_err()
                .to_string()
                .contains("`from`")
        );
        assert_eq!(parse_width("5m").unwrap(), 300_000_000_000);
        assert_eq!(parse_width("250").unwrap(), 250);
        assert!(parse_width("0").is_err());
        assert!(parse_width("soon").is_err());
    }
}
