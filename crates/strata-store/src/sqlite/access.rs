//! [`AccessStore`] for SQLite.

use rusqlite::{ErrorCode, OptionalExtension, params};

use super::SqliteStore;
use crate::access::{AccessStore, ApiToken, User, UserChange};
use crate::error::{Context, Error, Result};

/// A user from `name, role, service, password_phc, created_ns,
/// disabled_ns`.
fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        name: r.get(0)?,
        role: r.get(1)?,
        service: r.get(2)?,
        password_phc: r.get(3)?,
        created_ns: r.get(4)?,
        disabled_ns: r.get(5)?,
    })
}

impl AccessStore for SqliteStore {
    fn create_user(&self, u: &User) -> Result<()> {
        self.write(|w| {
            let done = w.conn.execute(
                "INSERT INTO users (name, role, service, password_phc, created_ns, disabled_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    u.name,
                    u.role,
                    u.service,
                    u.password_phc,
                    u.created_ns,
                    u.disabled_ns
                ],
            );
            match done {
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => Err(
                    Error::Conflict(format!("there is already a user named {:?}", u.name)),
                ),
                other => other
                    .map(drop)
                    .context(|| format!("cannot store user {:?}", u.name)),
            }
        })
    }

    fn update_user(&self, name: &str, change: &UserChange) -> Result<User> {
        self.write(|w| {
            w.conn
                .query_row(
                    "UPDATE users SET role = coalesce(?2, role),
                       password_phc = coalesce(?3, password_phc),
                       disabled_ns = CASE WHEN ?5 THEN NULL ELSE coalesce(disabled_ns, ?4) END
                     WHERE name = ?1
                     RETURNING name, role, service, password_phc, created_ns, disabled_ns",
                    params![
                        name,
                        change.role,
                        change.password_phc,
                        change.disable_at,
                        change.enable
                    ],
                    user_row,
                )
                .optional()
                .context(|| format!("cannot update user {name:?}"))?
                .ok_or_else(|| Error::NotFound(format!("no user named {name:?}")))
        })
    }

    fn users(&self) -> Result<Vec<User>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, role, service, password_phc, created_ns, disabled_ns
                     FROM users ORDER BY name",
                )
                .context(|| "cannot read users".into())?;
            stmt.query_map([], user_row)
                .and_then(|rows| rows.collect())
                .context(|| "cannot read users".into())
        })
    }

    fn create_token(&self, t: &ApiToken) -> Result<()> {
        let scopes = serde_json::to_string(&t.scopes).expect("JSON of scopes");
        self.write(|w| {
            w.conn
                .execute(
                    "INSERT INTO api_tokens
                        (id, user_name, label, scopes, token_sha256, created_ns, expires_ns, revoked_ns)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        t.id,
                        t.user,
                        t.label,
                        scopes,
                        t.token_sha256,
                        t.created_ns,
                        t.expires_ns,
                        t.revoked_ns
                    ],
                )
                .map(drop)
                .context(|| format!("cannot store a token of {:?}", t.user))
        })
    }

    fn tokens(&self) -> Result<Vec<ApiToken>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, user_name, label, scopes, token_sha256, created_ns, expires_ns, revoked_ns
                     FROM api_tokens ORDER BY created_ns, id",
                )
                .context(|| "cannot read tokens".into())?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        ApiToken {
                            id: r.get(0)?,
                            user: r.get(1)?,
                            label: r.get(2)?,
                            scopes: Vec::new(),
                            token_sha256: r.get(4)?,
                            created_ns: r.get(5)?,
                            expires_ns: r.get(6)?,
                            revoked_ns: r.get(7)?,
                        },
                        r.get::<_, String>(3)?,
                    ))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .context(|| "cannot read tokens".into())?;
            rows.into_iter()
                .map(|(mut t, scopes)| {
                    t.scopes = serde_json::from_str(&scopes)
                        .map_err(|e| Error::Corrupt(format!("scopes of token {}: {e}", t.id)))?;
                    Ok(t)
                })
                .collect()
        })
    }

    fn revoke_token(&self, id: &str, at_ns: i64) -> Result<bool> {
        self.write(|w| {
            let n = w
                .conn
                .execute(
                    "UPDATE api_tokens SET revoked_ns = ?2 WHERE id = ?1 AND revoked_ns IS NULL",
                    params![id, at_ns],
                )
                .context(|| format!("cannot revoke token {id}"))?;
            Ok(n == 1)
        })
    }

    fn forget_tokens(&self, before_ns: i64) -> Result<u64> {
        self.write(|w| {
            let n = w
                .conn
                .execute(
                    "DELETE FROM api_tokens WHERE expires_ns < ?1 OR revoked_ns < ?1",
                    params![before_ns],
                )
                .context(|| "cannot delete old tokens".into())?;
            Ok(n as u64)
        })
    }
}
