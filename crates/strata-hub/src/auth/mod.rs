//! Who may do what: users with argon2 passwords, service accounts, scoped
//! expiring API tokens, and the roles that bound them.
//!
//! A request's bearer token is looked up by its SHA-256 in a cache filled
//! from storage, so checking it costs a hash and a map lookup. What each
//! route needs is the table in [`policy`]; a route missing from it is
//! refused. The hub's bootstrap token (`admin.token`) acts as the built-in
//! `admin` account and never expires. Logins are throttled per user name
//! after wrong passwords in a row, and per source address after logins
//! without a right password whatever the names ([`throttle`], one table
//! for each).
//!
//! Accounts that several hub replicas share (`[shared] postgres`) change
//! behind this hub's back too: [`Access::refresh`] reloads the cache when
//! the store's change count moved (every `refresh_ms`, and before a change
//! made here that reads the cache first). A reload and a change made here
//! take turns, so a reload never puts back what the change replaced.

pub mod policy;
pub mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, MutexGuard, RwLock};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};
use strata_store::{AccessStore, ApiToken, User, UserChange};
use utoipa::ToSchema;

use crate::config::AuthConfig;
use crate::error::{Error, Result};
use crate::shared::Freshness;
use crate::{now_ns, secret};

/// Prefix of API tokens, so secret scanners can recognise them.
pub const API_TOKEN_PREFIX: &str = "stapi_";
/// The name the bootstrap admin token acts as.
pub const BOOTSTRAP_ADMIN: &str = "admin";
/// Longest lifetime of an API token: a year.
pub const MAX_TOKEN_TTL_S: u64 = 365 * 24 * 3600;
/// Lifetime of an API token when none is asked for: 90 days.
pub const DEFAULT_TOKEN_TTL_S: u64 = 90 * 24 * 3600;

/// One thing a token may allow.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Read the fleet, telemetry, models, alerts and rollouts.
    Read,
    /// Acknowledge alerts, approve closed-loop actions.
    Operate,
    /// Upload, promote and deploy models; train; roll out model releases.
    Ml,
    /// Devices, sites, users, tokens, keys, non-model releases, the audit log.
    Admin,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 4] = [
        Permission::Read,
        Permission::Operate,
        Permission::Ml,
        Permission::Admin,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// Its name, as scopes are written.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Operate => "operate",
            Permission::Ml => "ml",
            Permission::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Result<Permission> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "unknown scope {s:?}: use read, operate, ml or admin"
                ))
            })
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// The set of `ps`.
    pub fn of(ps: &[Permission]) -> Permissions {
        Permissions(ps.iter().fold(0, |acc, p| acc | p.bit()))
    }

    /// Whether `p` is in it.
    pub fn has(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// Those in both.
    pub fn and(self, other: Permissions) -> Permissions {
        Permissions(self.0 & other.0)
    }

    /// Whether every one of `self` is in `other`.
    pub fn within(self, other: Permissions) -> bool {
        self.0 & !other.0 == 0
    }

    /// The permissions, in order.
    pub fn list(self) -> Vec<Permission> {
        Permission::ALL
            .into_iter()
            .filter(|p| self.has(*p))
            .collect()
    }
}

/// What a person or service is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything but secrets and the audit log.
    Viewer,
    /// A viewer who handles alerts and approves closed-loop actions.
    Operator,
    /// A viewer who manages models, training and model rollouts.
    MlEngineer,
    /// Everything.
    Admin,
}

impl Role {
    /// What the role allows.
    pub fn permissions(self) -> Permissions {
        use Permission::*;
        Permissions::of(match self {
            Role::Viewer => &[Read],
            Role::Operator => &[Read, Operate],
            Role::MlEngineer => &[Read, Ml],
            Role::Admin => &[Read, Operate, Ml, Admin],
        })
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::MlEngineer => "ml_engineer",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Result<Role> {
        [Role::Viewer, Role::Operator, Role::MlEngineer, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Error::Unavailable(format!("stored role {s:?} is unknown")))
    }
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Principal {
    /// The user or service account.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Whether it is a service account.
    pub service: bool,
    /// What this request may do: the token's scopes within the role.
    #[schema(value_type = Vec<Permission>)]
    #[serde(serialize_with = "serialize_permissions")]
    pub permissions: Permissions,
    /// The token used (none for the bootstrap token).
    pub token_id: Option<String>,
    /// When the token expires, ns.
    pub expires_ns: Option<i64>,
}

fn serialize_permissions<S: serde::Serializer>(p: &Permissions, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(p.list())
}

impl Principal {
    /// Refuses with 403 unless the principal has `p`.
    pub fn require(&self, p: Permission) -> Result<()> {
        if self.permissions.has(p) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "{} ({}) may not do this: it needs the {} permission",
                self.name,
                self.role.as_str(),
                p.as_str()
            )))
        }
    }
}

/// What rolling out a release of `kind` needs: model releases are the ML
/// engineers'; config and bundle releases change the gateway and are admins'.
pub fn release_permission(kind: &str) -> Permission {
    if kind == "model" {
        Permission::Ml
    } else {
        Permission::Admin
    }
}

/// A user or service account as the API shows it (no password hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserInfo {
    /// The login name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// A service account (tokens only).
    pub service: bool,
    /// When it was created, ns.
    pub created_ns: i64,
    /// When it was disabled, ns.
    pub disabled_ns: Option<i64>,
}

/// A token as the API lists it (never the token).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenInfo {
    /// Its id.
    pub id: String,
    /// Whom it acts as.
    pub user: String,
    /// What it is for.
    pub label: String,
    /// Its scopes.
    pub scopes: Vec<Permission>,
    /// When it was made, ns.
    pub created_ns: i64,
    /// When it expires, ns.
    pub expires_ns: Option<i64>,
    /// When it was revoked, ns.
    pub revoked_ns: Option<i64>,
}

/// A new token: shown once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IssuedToken {
    /// The bearer token. Only its hash is kept.
    pub token: String,
    /// Its record.
    pub info: TokenInfo,
}

/// A user or service account to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Letters, digits, '.', '_', '-' and '@', at most 64.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// A password of at least 12 characters, for people; none for service accounts.
    #[serde(default)]
    pub password: Option<String>,
    /// A service account: no password, API tokens only.
    #[serde(default)]
    pub service: bool,
}

/// A change to a user.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// A new role; tokens already issued shrink to it.
    #[serde(default)]
    pub role: Option<Role>,
    /// A new password.
    #[serde(default)]
    pub password: Option<String>,
    /// Disable (true) or enable (false); a disabled account's tokens stop working.
    #[serde(default)]
    pub disabled: Option<bool>,
}

struct Cache {
    users: HashMap<String, User>,
    /// token SHA-256 -> token.
    tokens: HashMap<[u8; 32], ApiToken>,
}

/// The throttle's key for a source address: an IPv4 address, or the /64
/// an IPv6 address is in (the least a site gets, so one attacker's).
fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// A throttle per source address with the configured limits of logins
/// per address (none when they are off).
fn per_address_throttle(config: &AuthConfig) -> Option<throttle::LoginThrottle> {
    (config.login_free_attempts_per_address > 0).then(|| {
        throttle::LoginThrottle::fading(
            config.login_free_attempts_per_address,
            std::time::Duration::from_secs(config.login_max_wait_s),
            throttle::ADDRESS_FADE,
        )
    })
}

/// The refusal of an attempt a throttle holds back: `what` happened, and
/// when to try again.
fn too_many(refused: throttle::Refused, what: &str) -> Error {
    let retry_after_s = refused.wait.as_secs_f64().ceil() as u64;
    Error::TooManyRequests {
        message: format!("{what}: try again in {retry_after_s} s"),
        retry_after_s,
        first: refused.first,
    }
}

/// Users, service accounts and tokens.
pub struct Access {
    store: Arc<dyn AccessStore>,
    bootstrap_sha256: [u8; 32],
    session_ttl_s: u64,
    cache: RwLock<Cache>,
    /// A hash to verify against when the user is unknown, so a login takes
    /// as long whether or not the name exists.
    dummy_phc: String,
    /// Wrong passwords in a row, per name.
    throttle: throttle::LoginThrottle,
    /// Logins without a right password, per source address (none: off).
    address_throttle: Option<throttle::LoginThrottle>,
    /// Failed device enrollments, per source address (as logins: anyone
    /// may call it, and each attempt is a durable, audited write).
    enroll_throttle: Option<throttle::LoginThrottle>,
    /// The store's change count the cache holds, and the turn changes
    /// made here and reloads take.
    freshness: Freshness,
    /// When an unknown token last made the cache catch up, ns.
    caught_up_ns: AtomicI64,
    /// Requests waiting for a catch-up in flight.
    waiting: AtomicUsize,
}

/// How often unknown tokens may make the cache catch up with the store.
const CATCH_UP_NS: i64 = 100_000_000;

/// The most requests that wait for a catch-up in flight (each holds a
/// blocking thread while the store answers).
const MAX_WAITING: usize = 16;

/// Users and tokens as the store has them now.
fn load_cache(store: &dyn AccessStore) -> Result<Cache> {
    let users = store
        .users()?
        .into_iter()
        .map(|u| (u.name.clone(), u))
        .collect();
    let mut tokens = HashMap::new();
    for t in store.tokens()? {
        let hash = crate::audit::chain::unhex32(&t.token_sha256)
            .ok_or_else(|| Error::Unavailable(format!("token {} has a malformed hash", t.id)))?;
        tokens.insert(hash, t);
    }
    Ok(Cache { users, tokens })
}

impl Access {
    /// Loads users and tokens from `store`. `bootstrap_sha256` is the hash
    /// of the hub's admin token; `config` sets how long sessions last and
    /// how logins are throttled.
    pub fn load(
        store: Arc<dyn AccessStore>,
        bootstrap_sha256: [u8; 32],
        config: &AuthConfig,
    ) -> Result<Access> {
        // The count first: a change after it makes the next refresh reload.
        let changes = store.changes()?;
        let cache = load_cache(&*store)?;
        Ok(Access {
            store,
            bootstrap_sha256,
            session_ttl_s: config.session_ttl_s,
            cache: RwLock::new(cache),
            freshness: Freshness::new(changes),
            caught_up_ns: AtomicI64::new(0),
            waiting: AtomicUsize::new(0),
            dummy_phc: hash_password("not a password of anyone")?,
            throttle: throttle::LoginThrottle::new(
                config.login_free_attempts,
                std::time::Duration::from_secs(config.login_max_wait_s),
            ),
            address_throttle: per_address_throttle(config),
            enroll_throttle: per_address_throttle(config),
        })
    }

    /// Before a device enrollment from `source`: refused with
    /// [`Error::TooManyRequests`] while the address waits after too many
    /// failed ones (the same limits as logins per address).
    pub fn begin_enrollment(&self, source: IpAddr) -> Result<()> {
        let Some(t) = &self.enroll_throttle else {
            return Ok(());
        };
        t.begin(&address_key(source), std::time::Instant::now())
            .map_err(|r| too_many(r, "too many failed enrollments from this address"))
    }

    /// After a device enrollment from `source`: a failure (a wrong token)
    /// counts towards the address's wait, anything else takes its attempt
    /// back.
    pub fn end_enrollment(&self, source: IpAddr, ok: bool) {
        let Some(t) = &self.enroll_throttle else {
            return;
        };
        let key = address_key(source);
        if ok {
            t.take_back(&key);
        } else {
            t.failed(&key, std::time::Instant::now());
        }
    }

    /// For accounts other replicas share: reloads the cache if the store
    /// changed since it was last loaded. Returns whether it reloaded.
    pub fn refresh(&self) -> Result<bool> {
        let turn = self.freshness.turn();
        self.reload(&turn)
    }

    /// [`Access::refresh`], for the holder of the turn to change.
    fn reload(&self, _turn: &MutexGuard<'_, ()>) -> Result<bool> {
        let Some(changes) = self.freshness.moved(self.store.changes()?) else {
            return Ok(false);
        };
        let fresh = load_cache(&*self.store)?;
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        self.freshness.reloaded(changes);
        Ok(true)
    }

    /// Deletes the tokens that expired or were revoked before
    /// `before_ns`, from the store and from the cache; returns how many.
    pub fn forget_tokens(&self, before_ns: i64) -> Result<u64> {
        let turn = self.freshness.turn();
        let forgotten = self.store.forget_tokens(before_ns)?;
        // A shared store counted the change (and the reload marks the
        // cache as holding it); a store only this hub writes did not.
        if forgotten > 0 && !self.reload(&turn)? {
            let fresh = load_cache(&*self.store)?;
            *self.cache.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
        Ok(forgotten)
    }

    /// Whether the cache knows `bearer` at all (revoked and expired tokens
    /// included): one it does not may have been issued at another replica
    /// a moment ago.
    pub fn knows(&self, bearer: &str) -> bool {
        let hash = secret::hash(bearer.trim().as_bytes());
        secret::same(&hash, &self.bootstrap_sha256)
            || self
                .cache
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .tokens
                .contains_key(&hash)
    }

    /// [`Access::authenticate`] for a token the cache did not know, once
    /// the cache has caught up with the shared store (a login at another
    /// replica, the next request here through a load balancer). Blocking:
    /// call it off the async runtime. The cache reloads, if the store
    /// changed, at most once per [`CATCH_UP_NS`], so unknown tokens in a
    /// flood cost one small query per interval; a request that comes
    /// while a reload runs waits for it (at most [`MAX_WAITING`] do; the
    /// rest are answered at once from the cache as it is). Also says
    /// whether this call reloaded the cache.
    pub fn authenticate_caught_up(&self, bearer: &str) -> (Result<Principal>, bool) {
        let mut reloaded = false;
        let now = now_ns();
        let last = self.caught_up_ns.load(Relaxed);
        let mine = now.saturating_sub(last) >= CATCH_UP_NS
            && self
                .caught_up_ns
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok();
        if mine {
            match self.refresh() {
                Ok(r) => reloaded = r,
                Err(e) => {
                    tracing::debug!("cannot look for a token issued at another replica: {e}")
                }
            }
        } else if self.waiting.fetch_add(1, Relaxed) < MAX_WAITING {
            // The reload in flight, if any, holds the turn.
            drop(self.freshness.turn());
            self.waiting.fetch_sub(1, Relaxed);
        } else {
            self.waiting.fetch_sub(1, Relaxed);
        }
        (self.authenticate(bearer), reloaded)
    }

    /// The store's change count the cache holds.
    pub fn freshness(&self) -> &Freshness {
        &self.freshness
    }

    /// Who presents `bearer`; 401 when it is unknown, expired or revoked,
    /// or its account is disabled.
    pub fn authenticate(&self, bearer: &str) -> Result<Principal> {
        let hash = secret::hash(bearer.trim().as_bytes());
        if secret::same(&hash, &self.bootstrap_sha256) {
            return Ok(Principal {
                name: BOOTSTRAP_ADMIN.into(),
                role: Role::Admin,
                service: true,
                permissions: Role::Admin.permissions(),
                token_id: None,
                expires_ns: None,
            });
        }
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let invalid = || Error::Unauthorized("the bearer token is not valid".into());
        let token = cache.tokens.get(&hash).ok_or_else(invalid)?;
        if token.revoked_ns.is_some() {
            return Err(Error::Unauthorized(format!(
                "token {} was revoked",
                token.id
            )));
        }
        if token.expires_ns.is_some_and(|e| e <= now_ns()) {
            return Err(Error::Unauthorized(format!(
                "token {} has expired; log in again or ask for a new token",
                token.id
            )));
        }
        let user = cache.users.get(&token.user).ok_or_else(invalid)?;
        if user.disabled_ns.is_some() {
            return Err(Error::Unauthorized(format!(
                "account {} is disabled",
                user.name
            )));
        }
        let role = Role::parse(&user.role)?;
        let scopes = token
            .scopes
            .iter()
            .map(|s| Permission::parse(s))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| Error::Unavailable(format!("token {}: {e}", token.id)))?;
        Ok(Principal {
            name: user.name.clone(),
            role,
            service: user.service,
            permissions: Permissions::of(&scopes).and(role.permissions()),
            token_id: Some(token.id.clone()),
            expires_ns: token.expires_ns,
        })
    }

    /// Checks a password and opens a session: a token with the role's
    /// permissions for the configured session lifetime. After too many
    /// wrong passwords in a row for `name`, or from `source`'s address,
    /// refuses with [`Error::TooManyRequests`] until its wait is over (see
    /// [`throttle`]).
    pub fn login(&self, name: &str, password: &str, source: Option<IpAddr>) -> Result<IssuedToken> {
        let now = std::time::Instant::now();
        let address = source.map(address_key);
        if let (Some(t), Some(a)) = (&self.address_throttle, &address) {
            t.begin(a, now)
                .map_err(|r| too_many(r, "too many wrong passwords from this address"))?;
        }
        self.throttle
            .begin(name, now)
            .map_err(|r| too_many(r, &format!("too many wrong passwords for {name:?}")))?;
        let user = self.user(name);
        let phc = user
            .as_ref()
            .filter(|u| u.disabled_ns.is_none())
            .and_then(|u| u.password_phc.clone());
        let matches = verify_password(password, phc.as_deref().unwrap_or(&self.dummy_phc));
        let refused = || Error::Unauthorized("wrong user name or password".into());
        let (user, phc) = match (user, phc, matches) {
            (Some(u), Some(phc), true) => (u, phc),
            _ => {
                let now = std::time::Instant::now();
                self.throttle.failed(name, now);
                if let (Some(t), Some(a)) = (&self.address_throttle, &address) {
                    t.failed(a, now);
                }
                return Err(refused());
            }
        };
        self.throttle.succeeded(name);
        if let (Some(t), Some(a)) = (&self.address_throttle, &address) {
            t.take_back(a);
        }
        let role = Role::parse(&user.role)?;
        self.issue(
            &user.name,
            "login session",
            role.permissions(),
            self.session_ttl_s,
            Some(&phc),
        )
    }

    fn user(&self, name: &str) -> Option<User> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .users
            .get(name)
            .cloned()
    }

    /// Creates a user or service account.
    pub fn create_user(&self, req: CreateUser) -> Result<UserInfo> {
        check_name(&req.name)?;
        if req.name == BOOTSTRAP_ADMIN {
            return Err(Error::Conflict(format!(
                "{BOOTSTRAP_ADMIN:?} is the hub's built-in account"
            )));
        }
        let password_phc = match (req.service, req.password) {
            (true, Some(_)) => {
                return Err(Error::BadRequest(
                    "a service account has no password: issue it a token instead".into(),
                ));
            }
            (true, None) => None,
            (false, None) => {
                return Err(Error::BadRequest(
                    "a user needs a password (or make it a service account)".into(),
                ));
            }
            (false, Some(p)) => Some(hash_password(&check_password(p)?)?),
        };
        let user = User {
            name: req.name,
            role: req.role.as_str().into(),
            service: req.service,
            password_phc,
            created_ns: now_ns(),
            disabled_ns: None,
        };
        let _turn = self.freshness.turn();
        self.store.create_user(&user)?;
        self.cached(user)
    }

    /// Changes a user's role, password or whether it is disabled. A new
    /// password or disabling revokes every token the account holds (its
    /// sessions and API tokens), so that enabling it again does not bring
    /// back a token that leaked meanwhile.
    ///
    /// Only what the request names is written: an account changed through
    /// two replicas at once keeps both changes (a role set at one, the
    /// account disabled at the other, say).
    pub fn update_user(&self, name: &str, req: UpdateUser) -> Result<UserInfo> {
        let turn = self.freshness.turn();
        self.reload(&turn)?;
        let user = self
            .user(name)
            .ok_or_else(|| Error::NotFound(format!("no user named {name:?}")))?;
        let mut change = UserChange {
            role: req.role.map(|r| r.as_str().into()),
            ..UserChange::default()
        };
        if let Some(p) = req.password {
            if user.service {
                return Err(Error::BadRequest(
                    "a service account has no password".into(),
                ));
            }
            change.password_phc = Some(hash_password(&check_password(p)?)?);
        }
        match req.disabled {
            Some(true) => change.disable_at = Some(now_ns()),
            Some(false) => change.enable = true,
            None => {}
        }
        if change.password_phc.is_some() || change.disable_at.is_some() {
            self.revoke_all_of(name)?;
        }
        let user = self.store.update_user(name, &change)?;
        self.cached(user)
    }

    /// Revokes every token of `name` not revoked yet; returns how many.
    fn revoke_all_of(&self, name: &str) -> Result<usize> {
        let ids: Vec<String> = {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            cache
                .tokens
                .values()
                .filter(|t| t.user == name && t.revoked_ns.is_none())
                .map(|t| t.id.clone())
                .collect()
        };
        let now = now_ns();
        for id in &ids {
            self.store.revoke_token(id, now)?;
        }
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        for t in cache.tokens.values_mut().filter(|t| ids.contains(&t.id)) {
            t.revoked_ns = Some(now);
        }
        if !ids.is_empty() {
            tracing::info!(
                user = name,
                tokens = ids.len(),
                "revoked every token of the account"
            );
        }
        Ok(ids.len())
    }

    /// Puts a stored user in the cache; returns what the API shows of it.
    fn cached(&self, user: User) -> Result<UserInfo> {
        let info = user_info(&user)?;
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .users
            .insert(user.name.clone(), user);
        Ok(info)
    }

    /// Every user and service account.
    pub fn users(&self) -> Result<Vec<UserInfo>> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let mut users = cache
            .users
            .values()
            .map(user_info)
            .collect::<Result<Vec<_>>>()?;
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    /// Issues a token for `user` with `scopes` (all of the role's when
    /// `None`) for `ttl_s` seconds. `by` is who asks: anyone may issue
    /// tokens for themselves within their own permissions; only an admin
    /// for someone else.
    pub fn issue_token(
        &self,
        by: &Principal,
        user: Option<&str>,
        label: &str,
        scopes: Option<&[String]>,
        ttl_s: Option<u64>,
    ) -> Result<IssuedToken> {
        let name = user.unwrap_or(&by.name);
        if name != by.name {
            by.require(Permission::Admin)?;
        }
        let account = self
            .user(name)
            .ok_or_else(|| Error::NotFound(format!("no user named {name:?}")))?;
        if account.disabled_ns.is_some() {
            return Err(Error::Conflict(format!("account {name} is disabled")));
        }
        let role = Role::parse(&account.role)?.permissions();
        let wanted = match scopes {
            Some(s) => Permissions::of(
                &s.iter()
                    .map(|s| Permission::parse(s))
                    .collect::<Result<Vec<_>>>()?,
            ),
            None => role,
        };
        if !wanted.within(role) {
            return Err(Error::Forbidden(format!(
                "{name} is {} and cannot hold a token with scopes {:?}",
                account.role,
                wanted.list()
            )));
        }
        // Also for someone else: an admin token scoped down stays scoped.
        if !wanted.within(by.permissions) {
            return Err(Error::Forbidden(
                "a token cannot issue a token with more permissions than it has".into(),
            ));
        }
        let ttl_s = ttl_s.unwrap_or(DEFAULT_TOKEN_TTL_S);
        if ttl_s == 0 || ttl_s > MAX_TOKEN_TTL_S {
            return Err(Error::BadRequest(format!(
                "a token lives 1 s to {MAX_TOKEN_TTL_S} s (a year), not {ttl_s} s"
            )));
        }
        if label.len() > 128 {
            return Err(Error::BadRequest(
                "a token label is at most 128 bytes".into(),
            ));
        }
        self.issue(name, label, wanted, ttl_s, None)
    }

    /// Makes a token for `user`. `verified` is the password hash a login
    /// checked: the token is refused if the password changed meanwhile,
    /// as it is if the account was disabled (those revoke every token,
    /// and one made during the change must not slip past).
    fn issue(
        &self,
        user: &str,
        label: &str,
        scopes: Permissions,
        ttl_s: u64,
        verified: Option<&str>,
    ) -> Result<IssuedToken> {
        let token = secret::generate(API_TOKEN_PREFIX);
        let hash = secret::hash(token.as_bytes());
        let now = now_ns();
        let record = ApiToken {
            id: format!(
                "tok_{}",
                &crate::audit::chain::hex(&secret::hash(&hash))[..16]
            ),
            user: user.to_owned(),
            label: label.to_owned(),
            scopes: scopes
                .list()
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            token_sha256: crate::audit::chain::hex(&hash),
            created_ns: now,
            expires_ns: Some(now.saturating_add((ttl_s as i64).saturating_mul(1_000_000_000))),
            revoked_ns: None,
        };
        let _turn = self.freshness.turn();
        let account = self.user(user);
        let changed = match &account {
            None => true,
            Some(a) => {
                a.disabled_ns.is_some()
                    || verified.is_some_and(|phc| a.password_phc.as_deref() != Some(phc))
            }
        };
        if changed && verified.is_some() {
            return Err(Error::Unauthorized("wrong user name or password".into()));
        }
        if changed {
            return Err(Error::Conflict(format!(
                "account {user} was disabled while its token was being made"
            )));
        }
        self.store.create_token(&record)?;
        let info = token_info(&record);
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .tokens
            .insert(hash, record);
        Ok(IssuedToken { token, info })
    }

    /// Tokens, of one user or of all.
    pub fn tokens(&self, user: Option<&str>) -> Vec<TokenInfo> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = cache
            .tokens
            .values()
            .filter(|t| user.is_none_or(|u| t.user == u))
            .map(token_info)
            .collect();
        out.sort_by(|a, b| (a.created_ns, &a.id).cmp(&(b.created_ns, &b.id)));
        out
    }

    /// Revokes token `id`; anyone may revoke their own, an admin any.
    /// It stops working at once.
    pub fn revoke_token(&self, by: &Principal, id: &str) -> Result<TokenInfo> {
        // A token another replica issued may not be in the cache yet.
        let turn = self.freshness.turn();
        self.reload(&turn)?;
        let owner = {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            cache
                .tokens
                .values()
                .find(|t| t.id == id)
                .map(|t| t.user.clone())
        }
        .ok_or_else(|| Error::NotFound(format!("no token {id}")))?;
        if owner != by.name {
            by.require(Permission::Admin)?;
        }
        let now = now_ns();
        if !self.store.revoke_token(id, now)? {
            return Err(Error::Conflict(format!("token {id} was already revoked")));
        }
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        let token = cache
            .tokens
            .values_mut()
            .find(|t| t.id == id)
            .expect("a token just found");
        token.revoked_ns = Some(now);
        Ok(token_info(token))
    }
}

fn user_info(u: &User) -> Result<UserInfo> {
    Ok(UserInfo {
        name: u.name.clone(),
        role: Role::parse(&u.role)?,
        service: u.service,
        created_ns: u.created_ns,
        disabled_ns: u.disabled_ns,
    })
}

fn token_info(t: &ApiToken) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        user: t.user.clone(),
        label: t.label.clone(),
        scopes: t
            .scopes
            .iter()
            .filter_map(|s| Permission::parse(s).ok())
            .collect(),
        created_ns: t.created_ns,
        expires_ns: t.expires_ns,
        revoked_ns: t.revoked_ns,
    }
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "user name {name:?} must be 1 to 64 letters, digits, '.', '_', '-' or '@'"
        )))
    }
}

fn check_password(p: String) -> Result<String> {
    if p.chars().count() < 12 {
        return Err(Error::BadRequest(
            "a password needs at least 12 characters".into(),
        ));
    }
    if p.len() > 1024 {
        return Err(Error::BadRequest("a password is at most 1024 bytes".into()));
    }
    Ok(p)
}

/// An argon2id PHC string of `password` with a random salt (OWASP's
/// parameters: 19 MiB, 2 passes).
fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| Error::Unavailable(format!("no random salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Unavailable(format!("cannot hash a password: {e}")))
}

fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(hash) = argon2::password_hash::phc::PasswordHash::new(phc) else {
        return false;
    };
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

#[cfg(test)]
mod tests;
