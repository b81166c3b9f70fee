//! `strata user ...`, `strata token ...` and `strata audit ...`: people,
//! service accounts, API tokens and the audit log.

#[cfg(feature = "hub")]
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::registry::{HubAccess, blocking, print};

/// `strata user`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List users and service accounts.
    List(HubAccess),
    /// Add a user (the password is read from $STRATA_NEW_PASSWORD or, if
    /// unset, from the first line of standard input) or a service account.
    Add {
        /// The login name.
        name: String,
        /// viewer, operator, ml_engineer or admin.
        #[arg(long)]
        role: String,
        /// A service account: no password, tokens only.
        #[arg(long)]
        service: bool,
        #[command(flatten)]
        access: HubAccess,
    },
    /// Change a user's role, or disable or enable it.
    Set {
        /// The login name.
        name: String,
        /// A new role.
        #[arg(long)]
        role: Option<String>,
        /// Disable the account: its tokens stop working at once.
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Enable it again.
        #[arg(long)]
        enable: bool,
        #[command(flatten)]
        access: HubAccess,
    },
}

/// `strata token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue an API token (printed once).
    Issue {
        /// Whom it acts as (yourself when absent; only an admin may name another).
        #[arg(long)]
        user: Option<String>,
        /// What it is for.
        #[arg(long, default_value = "")]
        label: String,
        /// Scopes (repeatable): read, operate, ml, admin. The role's when absent.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime, e.g. `30d`, `12h` (default 90 days, at most a year).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        #[command(flatten)]
        access: HubAccess,
    },
    /// List tokens (yours, or all for an admin).
    List(HubAccess),
    /// Revoke a token by id.
    Revoke {
        /// The token's id (`tok_...`).
        id: String,
        #[command(flatten)]
        access: HubAccess,
    },
}

/// `strata audit`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// The newest entries of the audit log.
    List {
        /// Only this actor's.
        #[arg(long)]
        actor: Option<String>,
        /// Only this action's (e.g. `device.revoke`).
        #[arg(long)]
        action: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        access: HubAccess,
    },
    /// The latest signed checkpoint, `seq:sha256`: keep it somewhere else
    /// and give it to `verify --anchor` later.
    Head(HubAccess),
    /// Check the log in a hub's data directory (or, with `--postgres`,
    /// the replicas' logs in their shared database): every hash, every
    /// checkpoint signature, and the anchor if given. Exits 1 on any problem.
    #[cfg(feature = "hub")]
    Verify {
        /// The hub's data directory.
        #[arg(long, env = "STRATA_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// The database hub replicas share (`[shared] postgres`): checks
        /// every replica's log there against the public key it registered,
        /// or, with `--public-key`, the log of that key against it.
        #[arg(long)]
        postgres: Option<String>,
        /// The audit public key (hex) you recorded; by default the one of
        /// the data directory's audit.key.
        #[arg(long)]
        public_key: Option<String>,
        /// A checkpoint kept elsewhere, `seq:sha256`, that the log must still contain.
        #[arg(long)]
        anchor: Option<String>,
    },
}

/// Runs `strata user ...`.
pub async fn user(cmd: UserCommand) -> anyhow::Result<()> {
    blocking(move || {
        match cmd {
            UserCommand::List(access) => print(
                &access
                    .client()?
                    .get::<Value>("list users", "/api/v1/users")?,
            ),
            UserCommand::Add {
                name,
                role,
                service,
                access,
            } => {
                let mut body = json!({"name": name, "role": role, "service": service});
                if !service {
                    body["password"] = json!(new_password()?);
                }
                print(
                    &access
                        .client()?
                        .post::<Value>("add a user", "/api/v1/users", &body)?,
                );
            }
            UserCommand::Set {
                name,
                role,
                disable,
                enable,
                access,
            } => {
                let mut body = json!({});
                if let Some(r) = role {
                    body["role"] = json!(r);
                }
                if disable || enable {
                    body["disabled"] = json!(disable);
                }
                let path = format!("/api/v1/users/{name}");
                print(
                    &access
                        .client()?
                        .patch::<Value>("change a user", &path, &body)?,
                );
            }
        }
        Ok(())
    })
    .await
}

fn new_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("STRATA_NEW_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let p = line.trim_end_matches(['\r', '\n']).to_owned();
    if p.is_empty() {
        bail!("give the password in $STRATA_NEW_PASSWORD or on standard input");
    }
    Ok(p)
}

/// Runs `strata token ...`.
pub async fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    blocking(move || {
        match cmd {
            TokenCommand::Issue {
                user,
                label,
                scopes,
                ttl,
                access,
            } => {
                let mut body = json!({"label": label});
                if let Some(u) = user {
                    body["user"] = json!(u);
                }
                if !scopes.is_empty() {
                    body["scopes"] = json!(scopes);
                }
                if let Some(t) = ttl {
                    body["ttl_s"] = json!(t.as_secs().max(1));
                }
                print(
                    &access
                        .client()?
                        .post::<Value>("issue a token", "/api/v1/tokens", &body)?,
                );
            }
            TokenCommand::List(access) => print(
                &access
                    .client()?
                    .get::<Value>("list tokens", "/api/v1/tokens")?,
            ),
            TokenCommand::Revoke { id, access } => {
                let path = format!("/api/v1/tokens/{id}");
                print(&access.client()?.delete::<Value>("revoke a token", &path)?);
            }
        }
        Ok(())
    })
    .await
}

/// Runs `strata audit ...`.
pub async fn audit(cmd: AuditCommand) -> anyhow::Result<()> {
    blocking(move || {
        match cmd {
            AuditCommand::List {
                actor,
                action,
                limit,
                access,
            } => {
                let mut path = format!("/api/v1/audit?limit={limit}");
                if let Some(a) = actor {
                    path.push_str(&format!("&actor={}", crate::api_client::query_value(&a)));
                }
                if let Some(a) = action {
                    path.push_str(&format!("&action={}", crate::api_client::query_value(&a)));
                }
                print(&access.client()?.get::<Value>("read the audit log", &path)?);
            }
            AuditCommand::Head(access) => {
                let head: Value = access
                    .client()?
                    .get("read the audit head", "/api/v1/audit/head")?;
                println!(
                    "{}:{}",
                    head["seq"],
                    head["sha256"].as_str().unwrap_or_default()
                );
            }
            #[cfg(feature = "hub")]
            AuditCommand::Verify {
                postgres: Some(url),
                public_key,
                anchor,
                ..
            } => verify_shared(&url, public_key, anchor)?,
            #[cfg(feature = "hub")]
            AuditCommand::Verify {
                data_dir,
                postgres: None,
                public_key,
                anchor,
            } => verify(&data_dir, public_key, anchor)?,
        }
        Ok(())
    })
    .await
}

/// `strata audit verify --postgres`: the replicas' logs in their shared
/// database, each against the key it registered (which must be the key
/// its id names), or the one log of `public_key` against that key.
#[cfg(feature = "hub")]
fn verify_shared(
    url: &str,
    public_key: Option<String>,
    anchor: Option<String>,
) -> anyhow::Result<()> {
    use strata_hub::audit;
    use strata_store::AuditStore;
    let store = strata_store::postgres::PostgresAudit::reader(url)?;
    let Some(key) = public_key else {
        anyhow::ensure!(
            anchor.is_none(),
            "--anchor names an entry of one log: give that replica's --public-key too"
        );
        let reports = audit::verify_replicas(&store, "")?;
        anyhow::ensure!(
            !reports.is_empty(),
            "no replica's audit log is in that database"
        );
        let mut problems = 0;
        for r in &reports {
            println!(
                "replica {}: {} entries, {} signed checkpoints, head {}",
                r.replica, r.entries, r.checkpoints, r.head_seq
            );
            for p in &r.problems {
                println!("problem: {p}");
            }
            problems += r.problems.len();
        }
        anyhow::ensure!(
            problems == 0,
            "the audit logs were tampered with: {problems} problem(s)"
        );
        println!("the audit logs of {} replica(s) are intact", reports.len());
        return Ok(());
    };
    let key = audit::chain::unhex32(key.trim())
        .with_context(|| format!("--public-key {key:?} is not 64 hex characters"))?;
    let replica = audit::chain::key_id(&key);
    anyhow::ensure!(
        store.replica_logs()?.iter().any(|l| l.replica == replica),
        "no audit log of key {replica} is in that database"
    );
    let log = store
        .replica_log(&replica)
        .context("a shared store reads each replica's log")?;
    println!("replica {replica}:");
    report(audit::verify(
        log.as_ref(),
        &key,
        parse_anchor(anchor)?.as_ref(),
    )?)
}

#[cfg(feature = "hub")]
fn parse_anchor(anchor: Option<String>) -> anyhow::Result<Option<strata_hub::audit::Anchor>> {
    anchor
        .map(|a| a.parse())
        .transpose()
        .map_err(anyhow::Error::msg)
}

/// Prints what a verification of one log found; an error if it found a
/// problem.
#[cfg(feature = "hub")]
fn report(report: strata_hub::audit::Report) -> anyhow::Result<()> {
    println!(
        "{} entries, {} signed checkpoints, head {}:{}",
        report.entries, report.checkpoints, report.head_seq, report.head_sha256
    );
    if report.ok() {
        println!("the audit log is intact");
        return Ok(());
    }
    for p in &report.problems {
        println!("problem: {p}");
    }
    bail!(
        "the audit log was tampered with: {} problem(s)",
        report.problems.len()
    )
}

#[cfg(feature = "hub")]
fn verify(
    data_dir: &std::path::Path,
    public_key: Option<String>,
    anchor: Option<String>,
) -> anyhow::Result<()> {
    use strata_hub::audit;
    let key = match public_key {
        Some(k) => audit::chain::unhex32(k.trim())
            .with_context(|| format!("--public-key {k:?} is not 64 hex characters"))?,
        None => audit::read_public_key(data_dir)?,
    };
    let anchor = parse_anchor(anchor)?;
    if !data_dir.join(strata_store::sqlite::DB_FILE).exists() {
        bail!("{} holds no hub database", data_dir.display());
    }
    let store = strata_store::SqliteStore::open(data_dir, strata_store::Durability::Process)?;
    report(audit::verify(&store, &key, anchor.as_ref())?)
}
