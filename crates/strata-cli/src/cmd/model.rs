//! `strata model ...` and `strata job ...`: the model registry, deployments,
//! training and backtest jobs through a running hub's API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::registry::{HubAccess, TargetArgs, blocking, print, print_line};

/// `strata model`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// List models with their newest version and aliases.
    List(HubAccess),
    /// Show a model and its versions (lineage, metrics, ops).
    Show {
        /// Model name.
        name: String,
        #[command(flatten)]
        access: HubAccess,
    },
    /// Upload an ONNX file as a new version; the hub loads it in the edge
    /// runtime first and refuses what a gateway could not run.
    Upload {
        /// Model name.
        name: String,
        /// The ONNX file.
        file: PathBuf,
        /// Input feature names, comma-separated, in input order.
        #[arg(long)]
        features: Option<String>,
        /// The edge pipeline vector it reads.
        #[arg(long)]
        vector: Option<String>,
        /// Alias to point at the new version (e.g. `challenger`).
        #[arg(long)]
        alias: Option<String>,
        #[command(flatten)]
        access: HubAccess,
    },
    /// Point an alias (`champion`, `challenger`...) at a version.
    Alias {
        /// Model name.
        name: String,
        /// Alias.
        alias: String,
        /// Version number.
        version: u32,
        #[command(flatten)]
        access: HubAccess,
    },
    /// Deploy a version (number or alias) to devices through their twins.
    Deploy {
        /// Model name.
        name: String,
        /// Version number or alias.
        #[arg(long)]
        version: String,
        #[command(flatten)]
        target: TargetArgs,
        /// The pipeline vector it reads on the devices (default: the one
        /// recorded with the version).
        #[arg(long)]
        vector: Option<String>,
        #[command(flatten)]
        access: HubAccess,
    },
    /// Queue a training job from a JSON spec file and follow it.
    Train {
        /// The spec (model, trainer, dataset...).
        spec: PathBuf,
        /// Return once queued instead of following the job.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        access: HubAccess,
    },
    /// Queue a backtest (e.g. champion against challenger) and follow it.
    Backtest {
        /// The spec (model, versions, dataset).
        spec: PathBuf,
        /// Return once queued instead of following the job.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        access: HubAccess,
    },
    /// Show a device's twin: the models it should run and what it reports.
    Twin {
        /// Device id.
        device: String,
        #[command(flatten)]
        access: HubAccess,
    },
}

/// `strata job`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// The newest jobs.
    List(HubAccess),
    /// One job: state, progress, result.
    Show {
        /// Job id.
        id: i64,
        #[command(flatten)]
        access: HubAccess,
    },
    /// A job's log.
    Log {
        /// Job id.
        id: i64,
        #[command(flatten)]
        access: HubAccess,
    },
    /// Cancel a queued or running job: it stops at its next step and
    /// registers nothing.
    Cancel {
        /// Job id.
        id: i64,
        /// Why, kept in the job's message and log.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        access: HubAccess,
    },
}

/// Runs `strata model ...`.
pub async fn model(cmd: ModelCommand) -> anyhow::Result<()> {
    blocking(move || {
        let value: Value = match cmd {
            ModelCommand::List(access) => access.client()?.get("list models", "/api/v1/models")?,
            ModelCommand::Show { name, access } => access
                .client()?
                .get("show model", &format!("/api/v1/models/{name}"))?,
            ModelCommand::Upload {
                name,
                file,
                features,
                vector,
                alias,
                access,
            } => {
                let bytes = std::fs::read(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let mut query = Vec::new();
                for (key, value) in [("features", features), ("vector", vector), ("alias", alias)] {
                    if let Some(v) = value {
                        query.push(format!("{key}={}", crate::api_client::query_value(&v)));
                    }
                }
                access.client()?.post_bytes(
                    "upload model",
                    &format!("/api/v1/models/{name}/versions?{}", query.join("&")),
                    &bytes,
                )?
            }
            ModelCommand::Alias {
                name,
                alias,
                version,
                access,
            } => access.client()?.put(
                "set alias",
                &format!("/api/v1/models/{name}/aliases/{alias}"),
                &json!({ "version": version }),
            )?,
            ModelCommand::Deploy {
                name,
                version,
                target,
                vector,
                access,
            } => {
                let mut body = json!({ "version": version });
                target.add_to(&mut body);
                if let Some(v) = vector {
                    body["vector"] = json!(v);
                }
                access
                    .client()?
                    .post("deploy", &format!("/api/v1/models/{name}/deploy"), &body)?
            }
            ModelCommand::Train {
                spec,
                detach,
                access,
            } => submit(&access, "/api/v1/jobs/train", &spec, detach)?,
            ModelCommand::Backtest {
                spec,
                detach,
                access,
            } => submit(&access, "/api/v1/jobs/backtest", &spec, detach)?,
            ModelCommand::Twin { device, access } => access
                .client()?
                .get("twin", &format!("/api/v1/devices/{device}/twin"))?,
        };
        print(&value);
        Ok(())
    })
    .await
}

/// Queues a job from a spec file; unless detached, prints its progress and
/// returns it finished.
fn submit(access: &HubAccess, path: &str, spec: &PathBuf, detach: bool) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(spec).with_context(|| format!("cannot read {}", spec.display()))?;
    let body: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", spec.display()))?;
    let api = access.client()?;
    let job: Value = api.post("queue job", path, &body)?;
    if detach {
        return Ok(job);
    }
    let id = job["id"].as_i64().context("no job id")?;
    let mut last = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let job: Value = api.get("job", &format!("/api/v1/jobs/{id}"))?;
        let line = format!(
            "job {id}: {} {:.0}% {}",
            job["state"].as_str().unwrap_or("?"),
            job["progress"].as_f64().unwrap_or(0.0) * 100.0,
            job["message"].as_str().unwrap_or("")
        );
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        match job["state"].as_str() {
            Some("succeeded") => return Ok(job),
            Some(ended @ ("failed" | "cancelled")) => bail!(
                "job {id} {ended}: {} (see `strata job log {id}`)",
                job["message"].as_str().unwrap_or("no message")
            ),
            _ => {}
        }
    }
}

/// Runs `strata job ...`.
pub async fn job(cmd: JobCommand) -> anyhow::Result<()> {
    blocking(move || {
        let value: Value = match cmd {
            JobCommand::List(access) => access.client()?.get("list jobs", "/api/v1/jobs")?,
            JobCommand::Show { id, access } => access
                .client()?
                .get("show job", &format!("/api/v1/jobs/{id}"))?,
            JobCommand::Log { id, access } => {
                let lines: Vec<Value> = access
                    .client()?
                    .get("job log", &format!("/api/v1/jobs/{id}/log"))?;
                for l in lines {
                    print_line(l["line"].as_str().unwrap_or(""));
                }
                return Ok(());
            }
            JobCommand::Cancel { id, reason, access } => access.client()?.post(
                "cancel job",
                &format!("/api/v1/jobs/{id}/cancel"),
                &serde_json::json!({ "reason": reason }),
            )?,
        };
        print(&value);
        Ok(())
    })
    .await
}
