//! People and services as stored: users (with an argon2 password hash, or
//! none for a service account) and their API tokens (only as hashes).
//!
//! Roles and scopes are kept as the hub's names for them; what they allow
//! is the hub's business (`strata_hub::auth`).

use serde::{Deserialize, Serialize};

use crate::Result;

/// A user or a service account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The login name.
    pub name: String,
    /// The role's name, e.g. `operator`.
    pub role: String,
    /// A service account: no password, API tokens only.
    pub service: bool,
    /// The password as an argon2 PHC string; `None` for service accounts.
    pub password_phc: Option<String>,
    /// When it was created, ns.
    pub created_ns: i64,
    /// When it was disabled, ns; a disabled account's tokens stop working.
    pub disabled_ns: Option<i64>,
}

/// A change to a user. What it leaves `None` stays as the store has it,
/// whatever another hub wrote there meanwhile: two admins changing one
/// account through two replicas at once (one its role, the other its
/// password) both see their change kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserChange {
    /// A new role.
    pub role: Option<String>,
    /// A new password hash.
    pub password_phc: Option<String>,
    /// Disabled from this time, unless disabled already (the first time
    /// is kept).
    pub disable_at: Option<i64>,
    /// Enabled again.
    pub enable: bool,
}

/// An API token, without the token itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Its id (public, used to revoke it).
    pub id: String,
    /// The user or service account it acts as.
    pub user: String,
    /// What it is for, e.g. `grafana` or `dashboard session`.
    pub label: String,
    /// The permissions it carries (a subset of its user's role).
    pub scopes: Vec<String>,
    /// SHA-256 of the token, in hex.
    pub token_sha256: String,
    /// When it was made, ns.
    pub created_ns: i64,
    /// When it stops working, ns; `None` never.
    pub expires_ns: Option<i64>,
    /// When it was revoked, ns.
    pub revoked_ns: Option<i64>,
}

/// Where users and tokens go.
pub trait AccessStore: Send + Sync + 'static {
    /// Adds a user; `Conflict` when the name is taken.
    fn create_user(&self, user: &User) -> Result<()>;
    /// Changes a user's role, password or disabled time in one statement;
    /// returns the user as stored then. `NotFound` when there is no such
    /// user.
    fn update_user(&self, name: &str, change: &UserChange) -> Result<User>;
    /// Every user, by name.
    fn users(&self) -> Result<Vec<User>>;
    /// Adds a token.
    fn create_token(&self, token: &ApiToken) -> Result<()>;
    /// Every token, oldest first.
    fn tokens(&self) -> Result<Vec<ApiToken>>;
    /// Marks a token revoked; false when there is no such live token.
    fn revoke_token(&self, id: &str, at_ns: i64) -> Result<bool>;
    /// Deletes the tokens that expired or were revoked before
    /// `before_ns` (refused either way, they would only pile up: a
    /// service account may get a short-lived token every hour); returns
    /// how many.
    fn forget_tokens(&self, before_ns: i64) -> Result<u64>;
    /// For accounts other hubs write too: a count that moves with every
    /// change, so a hub knows when to reload its cache. `None`: only this
    /// hub writes them.
    fn changes(&self) -> Result<Option<i64>> {
        Ok(None)
    }
}
