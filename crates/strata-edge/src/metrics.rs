//! Prometheus metrics of the agent (`[health] metrics_listen`): the
//! heartbeat's figures as counters and gauges on `GET /metrics`, served by
//! a minimal HTTP/1.1 responder (the agent carries no web framework).
//! Latency quantiles cover the current heartbeat interval.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::control::ControlStats;
use crate::health::HealthState;
use crate::outbox::Outbox;

/// Largest request head read.
const MAX_REQUEST: usize = 8192;

/// The metrics in the Prometheus text format.
pub fn render(
    device: &str,
    health: &HealthState,
    outbox: &Outbox,
    control: Option<&ControlStats>,
) -> String {
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, series: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in series {
            if v.is_finite() {
                let _ = writeln!(out, "{name}{{device=\"{device}\"{labels}}} {v}");
            }
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    metric(
        "strata_edge_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
        &one(health.uptime_s()),
    );
    if let Ok(o) = outbox.stats() {
        metric(
            "strata_edge_outbox_batches",
            "gauge",
            "Batches waiting in the outbox.",
            &one(o.depth as f64),
        );
        metric(
            "strata_edge_outbox_bytes",
            "gauge",
            "Bytes waiting in the outbox.",
            &one(o.bytes as f64),
        );
        metric(
            "strata_edge_outbox_dropped_total",
            "counter",
            "Batches the outbox dropped to make room: for its size bound or for a nearly full disk.",
            &one(o.dropped as f64),
        );
        if let Some(free) = o.disk_free {
            metric(
                "strata_edge_disk_free_bytes",
                "gauge",
                "Bytes free on the data directory's disk.",
                &one(free as f64),
            );
        }
    }
    let counters = [
        (
            "strata_edge_outbox_errors_total",
            "Batches that could not be written to the outbox.",
            &health.outbox_errors,
        ),
        (
            "strata_edge_pipeline_dropped_total",
            "Readings the pipeline refused.",
            &health.pipeline_dropped,
        ),
        (
            "strata_edge_readings_ahead_total",
            "Readings stamped more than five minutes ahead of the gateway's clock, dropped before the pipeline.",
            &health.readings_ahead,
        ),
        (
            "strata_edge_sketch_batches_total",
            "Drift sketch windows written to the outbox.",
            &health.sketch_batches,
        ),
        (
            "strata_edge_drift_detections_total",
            "Changes the edge's drift detectors found.",
            &health.drift_detections,
        ),
    ];
    for (name, help, v) in counters {
        metric(name, "counter", help, &one(v.load(Relaxed) as f64));
    }
    let sources: Vec<_> = health.sources.iter().collect();
    let per_source = |f: &dyn Fn(&crate::sources::SourceStats) -> f64| -> Vec<(String, f64)> {
        sources
            .iter()
            .map(|(s, st)| (format!(",source=\"{s}\""), f(st)))
            .collect()
    };
    metric(
        "strata_edge_source_readings_total",
        "counter",
        "Readings a source produced.",
        &per_source(&|s| s.readings.load(Relaxed) as f64),
    );
    metric(
        "strata_edge_source_errors_total",
        "counter",
        "Failed reads and refused values of a source.",
        &per_source(&|s| s.errors.load(Relaxed) as f64),
    );
    metric(
        "strata_edge_source_connected",
        "gauge",
        "Whether a source is connected to its peer.",
        &per_source(&|s| f64::from(u8::from(s.connected.load(Relaxed)))),
    );
    let models = health.models();
    let per_model = |f: &dyn Fn(&crate::health::ModelStats) -> f64| -> Vec<(String, f64)> {
        models
            .iter()
            .map(|(m, st)| (format!(",model=\"{m}\""), f(st)))
            .collect()
    };
    metric(
        "strata_edge_inferences_total",
        "counter",
        "Inferences a model ran.",
        &per_model(&|m| m.runs.load(Relaxed) as f64),
    );
    metric(
        "strata_edge_inference_errors_total",
        "counter",
        "Inferences that failed.",
        &per_model(&|m| m.errors.load(Relaxed) as f64),
    );
    let mut latency = Vec::new();
    for (m, st) in &models {
        for q in [0.5, 0.99] {
            if let Some(ns) = st.latency.quantile(q) {
                latency.push((format!(",model=\"{m}\",quantile=\"{q}\""), ns / 1e3));
            }
        }
    }
    metric(
        "strata_edge_inference_latency_microseconds",
        "gauge",
        "Inference latency over the current heartbeat interval.",
        &latency,
    );
    if let Some(c) = control {
        let per_outcome: Vec<(String, f64)> = crate::control::OUTCOMES
            .iter()
            .zip(&c.actions)
            .map(|(o, n)| {
                (
                    format!(",outcome=\"{}\"", o.as_str()),
                    n.load(Relaxed) as f64,
                )
            })
            .collect();
        metric(
            "strata_edge_control_actions_total",
            "counter",
            "Closed-loop rule decisions, by outcome.",
            &per_outcome,
        );
        metric(
            "strata_edge_control_readings_dropped_total",
            "counter",
            "Readings the closed-loop rules could not keep up with.",
            &one(c.dropped.load(Relaxed) as f64),
        );
        metric(
            "strata_edge_control_approvals_refused_total",
            "counter",
            "Approvals that matched no open proposal.",
            &one(c.approvals_refused.load(Relaxed) as f64),
        );
    }
    out
}

/// Serves `GET /metrics` on `addr` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    device: String,
    health: Arc<HealthState>,
    outbox: Arc<Outbox>,
    control: Option<Arc<ControlStats>>,
) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let (device, health, outbox) = (device.clone(), health.clone(), outbox.clone());
        let control = control.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            let (status, body) = if line.starts_with(b"GET /metrics ") {
                (
                    "200 OK",
                    render(&device, &health, &outbox, control.as_deref()),
                )
            } else {
                (
                    "404 Not Found",
                    "only GET /metrics is served here\n".to_string(),
                )
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}
