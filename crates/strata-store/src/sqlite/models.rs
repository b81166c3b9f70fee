//! [`ModelStore`] for SQLite: models, versions and aliases.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use crate::error::{Context, Error, Result};
use crate::models::{JsonColumns, VERSION_COLUMNS, to_json as json};
use crate::{ModelInfo, ModelStore, ModelVersion};

fn version_row(r: &Row<'_>) -> rusqlite::Result<Result<ModelVersion>> {
    let partial = ModelVersion {
        model: r.get(0)?,
        version: r.get(1)?,
        sha256: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        runtime: r.get(4)?,
        input_len: r.get(5)?,
        outputs: Vec::new(),
        ops: Vec::new(),
        features: Vec::new(),
        vector: r.get(9)?,
        lineage: Default::default(),
        metrics: BTreeMap::new(),
        has_tree_stats: r.get::<_, i64>(12)? != 0,
        description: r.get(13)?,
        created_ns: r.get(14)?,
    };
    let json = JsonColumns {
        outputs: r.get_ref(6)?.as_str()?,
        ops: r.get_ref(7)?.as_str()?,
        features: r.get_ref(8)?.as_str()?,
        lineage: r.get_ref(10)?.as_str()?,
        metrics: r.get_ref(11)?.as_str()?,
    };
    Ok(ModelVersion::with_json(partial, json))
}

fn model_info(conn: &Connection, name: &str, created_ns: i64) -> Result<ModelInfo> {
    let latest_version: Option<u32> = conn
        .query_row(
            "SELECT max(version) FROM model_versions WHERE model = ?1",
            params![name],
            |r| r.get(0),
        )
        .context(|| format!("cannot read model {name}"))?;
    let mut stmt = conn
        .prepare_cached("SELECT alias, version FROM model_aliases WHERE model = ?1 ORDER BY alias")
        .context(|| "cannot read aliases".into())?;
    let aliases = stmt
        .query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?)))
        .context(|| format!("cannot read aliases of {name}"))?
        .collect::<rusqlite::Result<BTreeMap<String, u32>>>()
        .context(|| format!("cannot read aliases of {name}"))?;
    Ok(ModelInfo {
        name: name.to_owned(),
        created_ns,
        latest_version,
        aliases,
    })
}

impl ModelStore for SqliteStore {
    fn add_model_version(&self, v: &ModelVersion) -> Result<u32> {
        self.write(|w| {
            let tx = w
                .conn
                .transaction()
                .context(|| "cannot start a transaction".into())?;
            tx.execute(
                "INSERT OR IGNORE INTO models (name, created_ns) VALUES (?1, ?2)",
                params![v.model, v.created_ns],
            )
            .context(|| format!("cannot create model {}", v.model))?;
            let version: u32 = tx
                .query_row(
                    "SELECT coalesce(max(version), 0) + 1 FROM model_versions WHERE model = ?1",
                    params![v.model],
                    |r| r.get(0),
                )
                .context(|| format!("cannot number a version of {}", v.model))?;
            let sql = format!(
                "INSERT INTO model_versions ({VERSION_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
            );
            tx.execute(
                &sql,
                params![
                    v.model,
                    version,
                    v.sha256,
                    v.size as i64,
                    v.runtime,
                    v.input_len,
                    json(&v.outputs),
                    json(&v.ops),
                    json(&v.features),
                    v.vector,
                    json(&v.lineage),
                    json(&v.metrics),
                    v.has_tree_stats as i64,
                    v.description,
                    v.created_ns,
                ],
            )
            .context(|| format!("cannot register a version of {}", v.model))?;
            tx.commit()
                .context(|| format!("cannot register a version of {}", v.model))?;
            Ok(version)
        })
    }

    fn models(&self) -> Result<Vec<ModelInfo>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name, created_ns FROM models ORDER BY name")
                .context(|| "cannot list models".into())?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .context(|| "cannot list models".into())?
                .collect::<rusqlite::Result<Vec<_>>>()
                .context(|| "cannot list models".into())?;
            rows.into_iter()
                .map(|(name, created)| model_info(conn, &name, created))
                .collect()
        })
    }

    fn model(&self, name: &str) -> Result<Option<ModelInfo>> {
        self.read(|conn| {
            let created: Option<i64> = conn
                .query_row(
                    "SELECT created_ns FROM models WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()
                .context(|| format!("cannot look up model {name}"))?;
            created.map(|c| model_info(conn, name, c)).transpose()
        })
    }

    fn model_versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        self.read(|conn| {
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM model_versions WHERE model = ?1 ORDER BY version"
            );
            let mut stmt = conn
                .prepare_cached(&sql)
                .context(|| "cannot list versions".into())?;
            let rows = stmt
                .query_map(params![name], version_row)
                .context(|| format!("cannot list versions of {name}"))?;
            rows.map(|r| r.context(|| "cannot read a version".into())?)
                .collect()
        })
    }

    fn model_version(&self, name: &str, version: u32) -> Result<Option<ModelVersion>> {
        self.read(|conn| {
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM model_versions WHERE model = ?1 AND version = ?2"
            );
            conn.query_row(&sql, params![name, version], version_row)
                .optional()
                .context(|| format!("cannot look up {name} version {version}"))?
                .transpose()
        })
    }

    fn set_alias(&self, name: &str, alias: &str, version: u32, now_ns: i64) -> Result<Option<u32>> {
        self.write(|w| {
            let tx = w
                .conn
                .transaction()
                .context(|| "cannot start a transaction".into())?;
            let exists = tx
                .query_row(
                    "SELECT 1 FROM model_versions WHERE model = ?1 AND version = ?2",
                    params![name, version],
                    |_| Ok(()),
                )
                .optional()
                .context(|| format!("cannot look up {name} version {version}"))?
                .is_some();
            if !exists {
                return Err(Error::NotFound(format!(
                    "model {name} has no version {version}"
                )));
            }
            let before: Option<u32> = tx
                .query_row(
                    "SELECT version FROM model_aliases WHERE model = ?1 AND alias = ?2",
                    params![name, alias],
                    |r| r.get(0),
                )
                .optional()
                .context(|| format!("cannot read alias {alias} of {name}"))?;
            tx.execute(
                "INSERT INTO model_aliases (model, alias, version, updated_ns) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (model, alias) DO UPDATE SET version = ?3, updated_ns = ?4",
                params![name, alias, version, now_ns],
            )
            .context(|| format!("cannot set alias {alias} of {name}"))?;
            tx.commit()
                .context(|| format!("cannot set alias {alias} of {name}"))?;
            Ok(before)
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
        self.write(|w| {
            let sql = match from {
                Some(_) => {
                    "UPDATE model_aliases SET version = ?4, updated_ns = ?5
                     WHERE model = ?1 AND alias = ?2 AND version = ?3
                       AND EXISTS (SELECT 1 FROM model_versions WHERE model = ?1 AND version = ?4)"
                }
                None => {
                    "INSERT INTO model_aliases (model, alias, version, updated_ns)
                     SELECT ?1, ?2, ?4, ?5 WHERE ?3 IS NULL
                       AND EXISTS (SELECT 1 FROM model_versions WHERE model = ?1 AND version = ?4)
                     ON CONFLICT (model, alias) DO NOTHING"
                }
            };
            let n = w
                .conn
                .execute(sql, params![name, alias, from, to, now_ns])
                .context(|| format!("cannot move alias {alias} of {name}"))?;
            Ok(n == 1)
        })
    }

    fn remove_alias(&self, name: &str, alias: &str) -> Result<bool> {
        self.write(|w| {
            let n = w
                .conn
                .execute(
                    "DELETE FROM model_aliases WHERE model = ?1 AND alias = ?2",
                    params![name, alias],
                )
                .context(|| format!("cannot remove alias {alias} of {name}"))?;
            Ok(n > 0)
        })
    }
}
