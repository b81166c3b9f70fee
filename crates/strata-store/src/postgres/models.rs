//! The model registry in PostgreSQL, shared by hub replicas: a version
//! registered or an alias moved through one replica is so at all of them,
//! and every replica serves its artifact (which must then be in a bucket
//! every replica reads).
//!
//! `shared_models`, `shared_model_versions` and `shared_model_aliases` hold
//! what the SQLite store keeps in `models`, `model_versions` and
//! `model_aliases`. Numbering a version locks its model's row, so two
//! replicas registering versions of one model at once get two numbers.

use std::collections::BTreeMap;

use postgres::{GenericClient, Row};

use super::Connection;
use crate::error::{Context, Error, Result, corrupt};
use crate::models::{JsonColumns, VERSION_COLUMNS, to_json};
use crate::{ModelInfo, ModelStore, ModelVersion};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shared_models (
    name        TEXT PRIMARY KEY,
    created_ns  BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS shared_model_versions (
    model           TEXT NOT NULL REFERENCES shared_models(name),
    version         BIGINT NOT NULL,
    sha256          TEXT NOT NULL,
    size            BIGINT NOT NULL,
    runtime         TEXT NOT NULL,
    input_len       BIGINT NOT NULL,
    outputs         TEXT NOT NULL,
    ops             TEXT NOT NULL,
    features        TEXT NOT NULL,
    vector          TEXT,
    lineage         TEXT NOT NULL,
    metrics         TEXT NOT NULL,
    has_tree_stats  BOOLEAN NOT NULL,
    description     TEXT NOT NULL,
    created_ns      BIGINT NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS shared_model_aliases (
    model       TEXT NOT NULL,
    alias       TEXT NOT NULL,
    version     BIGINT NOT NULL,
    updated_ns  BIGINT NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES shared_model_versions(model, version)
);
";

/// The PostgreSQL model registry.
pub struct PostgresModels {
    db: Connection,
}

impl PostgresModels {
    /// Connects to the database at `url` and makes the tables if needed.
    pub fn connect(url: &str) -> Result<Self> {
        Ok(PostgresModels {
            db: Connection::open(url, SCHEMA, "model registry")?,
        })
    }
}

/// A version number as stored.
fn number(n: i64) -> Result<u32> {
    u32::try_from(n).map_err(corrupt)
}

/// A row of [`VERSION_COLUMNS`].
fn version_row(r: &Row) -> Result<ModelVersion> {
    let partial = ModelVersion {
        model: r.get(0),
        version: number(r.get(1))?,
        sha256: r.get(2),
        size: u64::try_from(r.get::<_, i64>(3)).map_err(corrupt)?,
        runtime: r.get(4),
        input_len: number(r.get(5))?,
        outputs: Vec::new(),
        ops: Vec::new(),
        features: Vec::new(),
        vector: r.get(9),
        lineage: Default::default(),
        metrics: BTreeMap::new(),
        has_tree_stats: r.get(12),
        description: r.get(13),
        created_ns: r.get(14),
    };
    let json = JsonColumns {
        outputs: r.get(6),
        ops: r.get(7),
        features: r.get(8),
        lineage: r.get(10),
        metrics: r.get(11),
    };
    ModelVersion::with_json(partial, json)
}

/// The model `name` made at `created_ns`, with its newest version and
/// aliases.
fn model_info(c: &mut impl GenericClient, name: &str, created_ns: i64) -> Result<ModelInfo> {
    let what = || format!("cannot read model {name}");
    let latest: Option<i64> = c
        .query_one(
            "SELECT max(version) FROM shared_model_versions WHERE model = $1",
            &[&name],
        )
        .context(what)?
        .get(0);
    let aliases = c
        .query(
            "SELECT alias, version FROM shared_model_aliases WHERE model = $1 ORDER BY alias",
            &[&name],
        )
        .context(what)?
        .iter()
        .map(|r| Ok((r.get(0), number(r.get(1))?)))
        .collect::<Result<BTreeMap<String, u32>>>()?;
    Ok(ModelInfo {
        name: name.to_owned(),
        created_ns,
        latest_version: latest.map(number).transpose()?,
        aliases,
    })
}

impl ModelStore for PostgresModels {
    fn add_model_version(&self, v: &ModelVersion) -> Result<u32> {
        self.db.with(|c| {
            let what = || format!("cannot register a version of {}", v.model);
            let mut tx = c.transaction().context(what)?;
            tx.execute(
                "INSERT INTO shared_models (name, created_ns) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
                &[&v.model, &v.created_ns],
            )
            .context(what)?;
            // The model's row is the lock that numbers its versions.
            tx.execute(
                "SELECT 1 FROM shared_models WHERE name = $1 FOR UPDATE",
                &[&v.model],
            )
            .context(what)?;
            let version: i64 = tx
                .query_one(
                    "SELECT coalesce(max(version), 0) + 1 FROM shared_model_versions
                     WHERE model = $1",
                    &[&v.model],
                )
                .context(what)?
                .get(0);
            tx.execute(
                &format!(
                    "INSERT INTO shared_model_versions ({VERSION_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                ),
                &[
                    &v.model,
                    &version,
                    &v.sha256,
                    &i64::try_from(v.size).map_err(corrupt)?,
                    &v.runtime,
                    &i64::from(v.input_len),
                    &to_json(&v.outputs),
                    &to_json(&v.ops),
                    &to_json(&v.features),
                    &v.vector,
                    &to_json(&v.lineage),
                    &to_json(&v.metrics),
                    &v.has_tree_stats,
                    &v.description,
                    &v.created_ns,
                ],
            )
            .and_then(|_| tx.commit())
            .context(what)?;
            number(version)
        })
    }

    fn models(&self) -> Result<Vec<ModelInfo>> {
        self.db.with(|c| {
            let rows = c
                .query(
                    "SELECT name, created_ns FROM shared_models ORDER BY name",
                    &[],
                )
                .context(|| "cannot list models".into())?;
            rows.iter()
                .map(|r| model_info(c, r.get(0), r.get(1)))
                .collect()
        })
    }

    fn model(&self, name: &str) -> Result<Option<ModelInfo>> {
        self.db.with(|c| {
            let created: Option<i64> = c
                .query_opt(
                    "SELECT created_ns FROM shared_models WHERE name = $1",
                    &[&name],
                )
                .context(|| format!("cannot look up model {name}"))?
                .map(|r| r.get(0));
            created.map(|at| model_info(c, name, at)).transpose()
        })
    }

    fn model_versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        self.db.with(|c| {
            c.query(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM shared_model_versions WHERE model = $1
                     ORDER BY version"
                ),
                &[&name],
            )
            .context(|| format!("cannot list versions of {name}"))?
            .iter()
            .map(version_row)
            .collect()
        })
    }

    fn model_version(&self, name: &str, version: u32) -> Result<Option<ModelVersion>> {
        self.db.with(|c| {
            c.query_opt(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM shared_model_versions
                     WHERE model = $1 AND version = $2"
                ),
                &[&name, &i64::from(version)],
            )
            .context(|| format!("cannot look up {name} version {version}"))?
            .map(|r| version_row(&r))
            .transpose()
        })
    }

    fn set_alias(&self, name: &str, alias: &str, version: u32, now_ns: i64) -> Result<Option<u32>> {
        self.db.with(|c| {
            let what = || format!("cannot set alias {alias} of {name}");
            let mut tx = c.transaction().context(what)?;
            // The model's row is the lock here too: two replicas moving an
            // alias at once each report the version the other left.
            tx.execute(
                "SELECT 1 FROM shared_models WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .context(what)?;
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM shared_model_versions WHERE model = $1 AND version = $2",
                    &[&name, &i64::from(version)],
                )
                .context(what)?
                .is_some();
            if !exists {
                return Err(Error::NotFound(format!(
                    "model {name} has no version {version}"
                )));
            }
            let before: Option<i64> = tx
                .query_opt(
                    "SELECT version FROM shared_model_aliases WHERE model = $1 AND alias = $2",
                    &[&name, &alias],
                )
                .context(what)?
                .map(|r| r.get(0));
            tx.execute(
                "INSERT INTO shared_model_aliases (model, alias, version, updated_ns)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (model, alias) DO UPDATE SET version = $3, updated_ns = $4",
                &[&name, &alias, &i64::from(version), &now_ns],
            )
            .and_then(|_| tx.commit())
            .context(what)?;
            before.map(number).transpose()
        })
    }

    fn move_alias(
        &self,
        name: &str,
        alias: &str,
        from: Option<u32>,
        to: u32,
        now_ns: i64,
    ) -> Result<bool> {
        let sql = match from {
            Some(_) => {
                "UPDATE shared_model_aliases SET version = $4, updated_ns = $5
                 WHERE model = $1 AND alias = $2 AND version = $3
                   AND EXISTS (SELECT 1 FROM shared_model_versions WHERE model = $1 AND version = $4)"
            }
            None => {
                "INSERT INTO shared_model_aliases (model, alias, version, updated_ns)
                 SELECT $1::TEXT, $2::TEXT, $4::BIGINT, $5::BIGINT WHERE $3::BIGINT IS NULL
                   AND EXISTS (SELECT 1 FROM shared_model_versions WHERE model = $1 AND version = $4)
                 ON CONFLICT (model, alias) DO NOTHING"
            }
        };
        let from = from.map(i64::from);
        self.db.with(|c| {
            let n = c
                .execute(sql, &[&name, &alias, &from, &i64::from(to), &now_ns])
                .context(|| format!("cannot move alias {alias} of {name}"))?;
            Ok(n == 1)
        })
    }

    fn remove_alias(&self, name: &str, alias: &str) -> Result<bool> {
        self.db.with(|c| {
            let n = c
                .execute(
                    "DELETE FROM shared_model_aliases WHERE model = $1 AND alias = $2",
                    &[&name, &alias],
                )
                .context(|| format!("cannot remove alias {alias} of {name}"))?;
            Ok(n > 0)
        })
    }
}
