//! People's accounts and API tokens in PostgreSQL, shared by hub
//! replicas: a user created, a token issued or revoked, an account
//! disabled through one replica is so for all of them.
//!
//! `access_users` and `access_tokens` hold what the SQLite store keeps in
//! `users` and `api_tokens`. Every change moves the accounts' change count
//! ([`super::changes`]) in the same transaction, so replicas know when to
//! reload the cache they authenticate requests from.

use postgres::Row;

use super::Connection;
use super::changes::{self, Count};
use crate::access::{AccessStore, ApiToken, User, UserChange};
use crate::error::{Context, Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS access_users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    service       BOOLEAN NOT NULL,
    password_phc  TEXT,
    created_ns    BIGINT NOT NULL,
    disabled_ns   BIGINT
);
CREATE TABLE IF NOT EXISTS access_tokens (
    id            TEXT PRIMARY KEY,
    user_name     TEXT NOT NULL,
    label         TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    token_sha256  TEXT NOT NULL,
    created_ns    BIGINT NOT NULL,
    expires_ns    BIGINT,
    revoked_ns    BIGINT
);
";

/// The PostgreSQL access store.
pub struct PostgresAccess {
    db: Connection,
}

fn token_row(r: &Row) -> Result<ApiToken> {
    let id: String = r.get(0);
    let scopes = serde_json::from_str(r.get(3))
        .map_err(|e| Error::Corrupt(format!("scopes of token {id}: {e}")))?;
    Ok(ApiToken {
        user: r.get(1),
        label: r.get(2),
        scopes,
        token_sha256: r.get(4),
        created_ns: r.get(5),
        expires_ns: r.get(6),
        revoked_ns: r.get(7),
        id,
    })
}

/// A user from `name, role, service, password_phc, created_ns,
/// disabled_ns`.
fn user_row(r: &Row) -> User {
    User {
        name: r.get(0),
        role: r.get(1),
        service: r.get(2),
        password_phc: r.get(3),
        created_ns: r.get(4),
        disabled_ns: r.get(5),
    }
}

impl PostgresAccess {
    /// Connects to the database at `url` and makes the tables if needed.
    pub fn connect(url: &str) -> Result<Self> {
        Ok(PostgresAccess {
            db: Connection::open(url, SCHEMA, "account")?,
        })
    }

    /// Runs `statement` with `params` and moves the change count, in one
    /// transaction; returns the rows it changed.
    fn change(
        &self,
        statement: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        what: impl Fn() -> String + Send + Sync,
    ) -> Result<u64> {
        self.db.with(|c| {
            let mut tx = c.transaction().context(&what)?;
            let n = tx.execute(statement, params).context(&what)?;
            if n > 0 {
                changes::bump(&mut tx, Count::Accounts).context(&what)?;
            }
            tx.commit().context(&what)?;
            Ok(n)
        })
    }
}

impl AccessStore for PostgresAccess {
    fn create_user(&self, u: &User) -> Result<()> {
        let n = self.change(
            "INSERT INTO access_users (name, role, service, password_phc, created_ns, disabled_ns)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &u.name,
                &u.role,
                &u.service,
                &u.password_phc,
                &u.created_ns,
                &u.disabled_ns,
            ],
            || format!("cannot store user {:?}", u.name),
        )?;
        if n == 0 {
            return Err(Error::Conflict(format!(
                "there is already a user named {:?}",
                u.name
            )));
        }
        Ok(())
    }

    fn update_user(&self, name: &str, change: &UserChange) -> Result<User> {
        self.db.with(|c| {
            let what = || format!("cannot update user {name:?}");
            let mut tx = c.transaction().context(what)?;
            let row = tx
                .query_opt(
                    "UPDATE access_users SET role = coalesce($2, role),
                       password_phc = coalesce($3, password_phc),
                       disabled_ns = CASE WHEN $5 THEN NULL ELSE coalesce(disabled_ns, $4) END
                     WHERE name = $1
                     RETURNING name, role, service, password_phc, created_ns, disabled_ns",
                    &[
                        &name,
                        &change.role,
                        &change.password_phc,
                        &change.disable_at,
                        &change.enable,
                    ],
                )
                .context(what)?
                .ok_or_else(|| Error::NotFound(format!("no user named {name:?}")))?;
            changes::bump(&mut tx, Count::Accounts).context(what)?;
            tx.commit().context(what)?;
            Ok(user_row(&row))
        })
    }

    fn users(&self) -> Result<Vec<User>> {
        self.db.with(|c| {
            let rows = c
                .query(
                    "SELECT name, role, service, password_phc, created_ns, disabled_ns
                     FROM access_users ORDER BY name",
                    &[],
                )
                .context(|| "cannot read users".into())?;
            Ok(rows.iter().map(user_row).collect())
        })
    }

    fn create_token(&self, t: &ApiToken) -> Result<()> {
        let scopes = serde_json::to_string(&t.scopes).expect("JSON of scopes");
        self.change(
            "INSERT INTO access_tokens
                (id, user_name, label, scopes, token_sha256, created_ns, expires_ns, revoked_ns)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &t.id,
                &t.user,
                &t.label,
                &scopes,
                &t.token_sha256,
                &t.created_ns,
                &t.expires_ns,
                &t.revoked_ns,
            ],
            || format!("cannot store a token of {:?}", t.user),
        )
        .map(drop)
    }

    fn tokens(&self) -> Result<Vec<ApiToken>> {
        self.db.with(|c| {
            let rows = c
                .query(
                    "SELECT id, user_name, label, scopes, token_sha256, created_ns, expires_ns, revoked_ns
                     FROM access_tokens ORDER BY created_ns, id",
                    &[],
                )
                .context(|| "cannot read tokens".into())?;
            rows.iter().map(token_row).collect()
        })
    }

    fn revoke_token(&self, id: &str, at_ns: i64) -> Result<bool> {
        let n = self.change(
            "UPDATE access_tokens SET revoked_ns = $2 WHERE id = $1 AND revoked_ns IS NULL",
            &[&id, &at_ns],
            || format!("cannot revoke token {id}"),
        )?;
        Ok(n == 1)
    }

    fn forget_tokens(&self, before_ns: i64) -> Result<u64> {
        self.change(
            "DELETE FROM access_tokens WHERE expires_ns < $1 OR revoked_ns < $1",
            &[&before_ns],
            || "cannot delete old tokens".into(),
        )
    }

    fn changes(&self) -> Result<Option<i64>> {
        self.db
            .with(|c| changes::version(c, Count::Accounts).map(Some))
    }
}
