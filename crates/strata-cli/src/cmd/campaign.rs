//! `strata campaign`: phased rollouts of signed releases through a running
//! hub's API: start one, follow its waves, pause, resume or abort it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::registry::{HubAccess, TargetArgs, print, print_line};

/// `strata campaign`.
#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Start a campaign rolling a release out: a canary, then waves; each
    /// wave opens once the one before committed enough.
    Start(Box<StartArgs>),
    /// List campaigns, newest first.
    List(HubAccess),
    /// A campaign's progress per wave and the devices that failed.
    Show {
        /// The campaign's id.
        id: i64,
        /// Follow it until it ends; the exit status is 0 only if it
        /// completed.
        #[arg(long)]
        follow: bool,
        /// Print the API's JSON instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        access: HubAccess,
    },
    /// Stop opening waves until resumed.
    Pause(Action),
    /// Go on: the failure threshold counts afresh.
    Resume(Action),
    /// Stop for good (rolling back if the campaign says so).
    Abort(Action),
}

/// Options of `strata campaign start`.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// `model`, `config` or `bundle`.
    kind: String,
    /// The release's name.
    name: String,
    /// Its version (an accepted release).
    version: u64,
    #[command(flatten)]
    target: TargetArgs,
    /// Only devices now on these versions (0: none yet; repeatable).
    #[arg(long = "from-version")]
    from_versions: Vec<u64>,
    /// The first wave: a count (`10`) or a share (`5%`).
    #[arg(long, default_value = "5%")]
    canary: String,
    /// Waves after the canary: `exponential` (each `--factor` times
    /// the one before) or `fixed` (`--wave-size` devices each).
    #[arg(long, default_value = "exponential")]
    waves: String,
    /// Growth per wave (exponential).
    #[arg(long, default_value_t = 2.0)]
    factor: f64,
    /// Devices per wave (fixed), or the first wave after the canary
    /// (exponential; default twice the canary).
    #[arg(long)]
    wave_size: Option<usize>,
    /// Share of a wave that must commit before the next opens.
    #[arg(long, default_value_t = 90.0)]
    success_percent: f64,
    /// Failed or silent devices that stop the campaign: a count or a
    /// share (`10%`).
    #[arg(long, default_value = "10%")]
    failure_threshold: String,
    /// Devices that must have answered before a share applies.
    #[arg(long, default_value_t = 10)]
    min_sample: usize,
    /// `pause` or `abort` at the failure threshold.
    #[arg(long, default_value = "pause")]
    on_failure: String,
    /// Seconds after its assignment a silent device counts as failed.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// On abort, return devices that committed to the release they had.
    #[arg(long)]
    rollback: bool,
    /// Take every setting from this JSON campaign spec instead.
    #[arg(long, conflicts_with_all = ["canary", "waves", "rollback"])]
    spec: Option<PathBuf>,
    /// Follow the campaign until it ends; the exit status is 0 only if it
    /// completed.
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    access: HubAccess,
}

/// A campaign to act on.
#[derive(Debug, clap::Args)]
pub struct Action {
    /// The campaign's id.
    id: i64,
    #[command(flatten)]
    access: HubAccess,
}

/// Runs `strata campaign ...`.
pub fn run(cmd: CampaignCommand) -> anyhow::Result<()> {
    match cmd {
        CampaignCommand::Start(args) => {
            let StartArgs {
                kind,
                name,
                version,
                target,
                from_versions,
                canary,
                waves,
                factor,
                wave_size,
                success_percent,
                failure_threshold,
                min_sample,
                on_failure,
                timeout_s,
                rollback,
                spec,
                follow,
                access,
            } = *args;
            let mut body = match spec {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", path.display()))?
                }
                None => json!({
                    "from_versions": from_versions,
                    "canary": share(&canary, "--canary")?,
                    "waves": match waves.as_str() {
                        "exponential" => json!({ "mode": "exponential", "start": wave_size, "factor": factor }),
                        "fixed" => json!({ "mode": "fixed", "size": wave_size.context("--waves fixed needs --wave-size")? }),
                        other => bail!("--waves {other:?}: use exponential or fixed"),
                    },
                    "success_percent": success_percent,
                    "failure_threshold": share(&failure_threshold, "--failure-threshold")?,
                    "min_sample": min_sample,
                    "on_failure": on_failure,
                    "device_timeout_s": timeout_s,
                    "rollback": rollback,
                }),
            };
            body["release"] = json!({ "kind": kind, "name": name, "version": version });
            let mut selector = json!({});
            target.add_to(&mut selector);
            if body.get("target").is_none() {
                body["target"] = selector;
            }
            let api = access.client()?;
            let view: Value = api.post("start campaign", "/api/v1/campaigns", &body)?;
            let id = view["id"]
                .as_i64()
                .context("the hub answered without an id")?;
            show(&view);
            if follow {
                follow_campaign(&access, id)?;
            }
            Ok(())
        }
        CampaignCommand::List(access) => {
            let list: Vec<Value> = access
                .client()?
                .get("list campaigns", "/api/v1/campaigns")?;
            for c in &list {
                print_line(&format!(
                    "{:>4}  {}  {}  wave {}/{}  {}",
                    c["id"],
                    release(c),
                    c["state"].as_str().unwrap_or("?"),
                    c["wave"].as_u64().unwrap_or(0) + 1,
                    c["waves"],
                    c["reason"].as_str().unwrap_or("")
                ));
            }
            Ok(())
        }
        CampaignCommand::Show {
            id,
            follow,
            json,
            access,
        } => {
            if follow {
                return follow_campaign(&access, id);
            }
            let view: Value = access
                .client()?
                .get("show campaign", &format!("/api/v1/campaigns/{id}"))?;
            if json {
                print(&view)
            } else {
                show(&view)
            }
            Ok(())
        }
        CampaignCommand::Pause(a) => act(a, "pause"),
        CampaignCommand::Resume(a) => act(a, "resume"),
        CampaignCommand::Abort(a) => act(a, "abort"),
    }
}

/// `10` is a count, `5%` a share.
fn share(text: &str, flag: &str) -> anyhow::Result<Value> {
    let t = text.trim();
    Ok(match t.strip_suffix('%') {
        Some(p) => {
            json!({ "percent": p.trim().parse::<f64>().with_context(|| format!("{flag} {text:?}: not a percentage"))? })
        }
        None => {
            json!({ "count": t.parse::<usize>().with_context(|| format!("{flag} {text:?}: a count, or a share like 5%"))? })
        }
    })
}

fn act(a: Action, action: &str) -> anyhow::Result<()> {
    let view: Value = a.access.client()?.post(
        &format!("{action} campaign"),
        &format!("/api/v1/campaigns/{}/{action}", a.id),
        &json!({}),
    )?;
    show(&view);
    Ok(())
}

/// Prints the campaign's progress until it ends (a line per change).
fn follow_campaign(access: &HubAccess, id: i64) -> anyhow::Result<()> {
    let api = access.client()?;
    let mut last = String::new();
    loop {
        let view: Value = api.get("show campaign", &format!("/api/v1/campaigns/{id}"))?;
        let line = summary(&view);
        if line != last {
            print_line(&line);
            last = line;
        }
        let state = view["state"].as_str().unwrap_or("");
        if !["running", "rolling_back"].contains(&state) {
            show(&view);
            // A script that goes on after `--follow` must not take a
            // paused, aborted or rolled-back rollout for a done one.
            anyhow::ensure!(
                state == "completed",
                "campaign {id} ended {state}, not completed{}",
                view["reason"]
                    .as_str()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One line: state, wave and totals.
fn summary(view: &Value) -> String {
    let totals = view["totals"]
        .as_object()
        .map(|t| {
            t.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    format!(
        "campaign {}: {} (wave {}/{}): {totals}",
        view["id"],
        view["state"].as_str().unwrap_or("?"),
        view["wave"].as_u64().unwrap_or(0) + 1,
        view["waves"]
    )
}

/// A campaign's release: `model rul v3`.
fn release(campaign: &Value) -> String {
    let r = &campaign["spec"]["release"];
    format!(
        "{} {} v{}",
        r["kind"].as_str().unwrap_or("?"),
        r["name"].as_str().unwrap_or("?"),
        r["version"]
    )
}

/// The campaign as a table of waves, then its failures.
fn show(view: &Value) {
    print_line(&format!(
        "campaign {}: {} to {} devices: {}{}",
        view["id"],
        release(view),
        view["devices"],
        view["state"].as_str().unwrap_or("?"),
        match view["reason"].as_str() {
            Some(reason) if !reason.is_empty() => format!(" ({reason})"),
            _ => String::new(),
        }
    ));
    let columns = ["committed", "failed", "timed_out", "assigned", "pending"];
    print_line(&format!(
        "{:>5} {:>7} {:>9} {:>6} {:>9} {:>8} {:>7}  {:>8}  other",
        "wave", "devices", columns[0], columns[1], columns[2], columns[3], columns[4], "took"
    ));
    for w in view["progress"].as_array().into_iter().flatten() {
        let states = &w["states"];
        let n = |k: &str| states[k].as_u64().unwrap_or(0);
        let other: Vec<String> = states
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !columns.contains(&k.as_str()))
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let took = match (w["started_ns"].as_i64(), w["finished_ns"].as_i64()) {
            (Some(a), Some(b)) => format!("{:.1} s", (b - a) as f64 / 1e9),
            (Some(_), None) => "open".into(),
            _ => "-".into(),
        };
        print_line(&format!(
            "{:>5} {:>7} {:>9} {:>6} {:>9} {:>8} {:>7}  {:>8}  {}",
            w["wave"].to_string(),
            w["devices"].to_string(),
            n("committed"),
            n("failed"),
            n("timed_out"),
            n("assigned"),
            n("pending"),
            took,
            other.join(", ")
        ));
    }
    let failures = view["failures"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if !failures.is_empty() {
        print_line(&format!("failures (first {}):", failures.len()));
        for f in failures.iter().take(20) {
            print_line(&format!(
                "  {}  wave {}  {}  {}",
                f["device"].as_str().unwrap_or("?"),
                f["wave"],
                f["state"].as_str().unwrap_or("?"),
                f["reason"].as_str().unwrap_or("")
            ));
        }
    }
}
