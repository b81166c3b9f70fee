//! Passwords, tokens, scopes, expiry and revocation.

use std::sync::Arc;

use strata_store::{Durability, SqliteStore};

use super::*;

fn access(dir: &std::path::Path) -> Access {
    let store = Arc::new(SqliteStore::open(dir, Durability::Process).unwrap());
    let config = AuthConfig {
        session_ttl_s: 3600,
        ..AuthConfig::default()
    };
    Access::load(store, secret::hash(b"bootstrap"), &config).unwrap()
}

fn user(name: &str, role: Role) -> CreateUser {
    CreateUser {
        name: name.into(),
        role,
        password: Some(format!("{name} has a long password")),
        service: false,
    }
}

#[test]
fn a_login_gives_a_session_with_the_role_and_a_wrong_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = access(dir.path());
    a.create_user(user("olga", Role::Operator)).unwrap();
    let session = a.login("olga", "olga has a long password", None).unwrap();
    let p = a.authenticate(&session.token).unwrap();
    assert_eq!((p.name.as_str(), p.role), ("olga", Role::Operator));
    assert!(p.permissions.has(Permission::Operate) && !p.permissions.has(Permission::Ml));
    assert!(p.require(Permission::Admin).is_err());
    assert!(matches!(
        a.login("olga", "wrong password!!", None),
        Err(Error::Unauthorized(_))
    ));
    assert!(matches!(
        a.login("nobody", "olga has a long password", None),
        Err(Error::Unauthorized(_))
    ));
    // Only the hash is stored.
    let mut stored = std::fs::read(dir.path().join("strata.db")).unwrap();
    stored.extend(std::fs::read(dir.path().join("strata.db-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&stored);
    assert!(!text.contains("olga has a long password"));
    assert!(!text.contains(&session.token));
    assert!(text.contains("$argon2id$"));
}

#[test]
fn wrong_passwords_in_a_row_make_a_name_wait_even_for_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = access(dir.path());
    a.create_user(user("olga", Role::Operator)).unwrap();
    for _ in 0..AuthConfig::default().login_free_attempts {
        assert!(matches!(
            a.login("olga", "wrong password!!", None),
            Err(Error::Unauthorized(_))
        ));
    }
    let refused = a
        .login("olga", "olga has a long password", None)
        .unwrap_err();
    assert!(
        matches!(
            refused,
            Error::TooManyRequests {
                retry_after_s: 1,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(refused.status(), 429);
    // Unknown names wait the same way; other names are not held up.
    for _ in 0..AuthConfig::default().login_free_attempts {
        let _ = a.login("nobody", "guess", None);
    }
    assert!(matches!(
        a.login("nobody", "guess", None),
        Err(Error::TooManyRequests { .. })
    ));
    a.create_user(user("piet", Role::Viewer)).unwrap();
    assert!(a.login("piet", "piet has a long password", None).is_ok());
}

#[test]
fn one_address_spraying_guesses_over_many_names_is_made_to_wait() {
    let dir = tempfile::tempdir().unwrap();
    let a = access(dir.path());
    a.create_user(user("olga", Role::Operator)).unwrap();
    let sprayer: std::net::IpAddr = "2001:db8:1:2::77".parse().unwrap();
    let free = AuthConfig::default().login_free_attempts_per_address;
    // One guess per name: no name's own throttle ever triggers.
    for i in 0..free {
        assert!(matches!(
            a.login(&format!("name-{i}"), "guess", Some(sprayer)),
            Err(Error::Unauthorized(_))
        ));
    }
    // The next guess from that address waits, whichever name it tries,
    // and so does the rest of its /64 ...
    let neighbour: std::net::IpAddr = "2001:db8:1:2::99".parse().unwrap();
    for (name, from) in [("fresh-name", sprayer), ("olga", neighbour)] {
        let refused = a.login(name, "guess", Some(from)).unwrap_err();
        assert!(
            matches!(refused, Error::TooManyRequests { .. }),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("address"), "{refused}");
    }
    // ... while olga, from elsewhere, logs in.
    let office: std::net::IpAddr = "192.0.2.10".parse().unwrap();
    assert!(
        a.login("olga", "olga has a long password", Some(office))
            .is_ok()
    );
    // A right password takes back its own attempt only: a sprayer with an
    // account of its own cannot wipe its guesses by logging in.
    for i in 0..free - 1 {
        let _ = a.login(&format!("other-{i}"), "guess", Some(office));
    }
    assert!(
        a.login("olga", "olga has a long password", Some(office))
            .is_ok()
    );
    assert!(matches!(
        a.login("nobody", "guess", Some(office)),
        Err(Error::Unauthorized(_))
    ));
    assert!(matches!(
        a.login("nobody-else", "guess", Some(office)),
        Err(Error::TooManyRequests { .. })
    ));
}

#[test]
fn the_bootstrap_token_is_the_admin_and_unknown_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = access(dir.path());
    let p = a.authenticate("bootstrap").unwrap();
    assert_eq!(
        (p.name.as_str(), p.permissions),
        (BOOTSTRAP_ADMIN, Role::Admin.permissions())
    );
    assert!(matches!(
        a.authenticate("stapi_nope"),
        Err(Error::Unauthorized(_))
    ));
}

#[test]
fn scopes_narrow_a_token_and_cannot_widen_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = access(dir.path());
    let admin = a.authenticate("bootstrap").unwrap();
    a.create_user(user("mia", Role::MlEngineer)).unwrap();
    let read_only = a
        .issue_token(
            &admin,
            Some("mia"),
            "grafana",
            Some(&["read".into()]),
            Some(60),
        )
        .unwrap();
    let p = a.authenticate(&read_only.token).unwrap();
    assert!(p.permissions.has(Permission::Read) && !p.permissions.has(Permission::Ml));
    // Beyond her role: refused.
    let err = a
        .issue_token(&admin, Some("mia"), "x", Some(&["admin".into()]), None)
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)), "{err}");
    // A read-only token cannot mint an ml token, nor one for someone else.
    assert!(matches!(
        a.issue_token(&p, None, "x", Some(&["ml".into()]), None),
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        a.issue_token(&p, Some("admin"), "x", None, None),
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        a.issue_token(&admin, Some("mia"), "x", Some(&["root".into()]), None),
        Err(Error::BadRequest(_))
    ));
    // An admin's token scoped down cannot mint more for someone else.
    a.create_user(user("ann", Role::Admin)).unwrap();
    let scoped = a
        .issue_token(
            &admin,
            Some("ann"),
            "users only",
            Some(&["admin".into()]),
            None,
        )
        .unwrap();
    let scoped = a.authenticate(&scoped.token).unwrap();
    assert!(matches!(
        a.issue_token(&scoped, Some("mia"), "x", Some(&["ml".into()]), None),
        Err(Error::Forbidden(_))
    ));
    // Demoting her shrinks the tokens she already has.
    let full = a
        .issue_token(&admin, Some("mia"), "ci", None, None)
        .unwrap();
    assert!(
        a.authenticate(&full.token)
            .unwrap()
            .permissions
            .has(Permission::Ml)
    );
    a.update_user(
        "mia",
        UpdateUser {
            role: Some(Role::Viewer),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        !a.authenticate(&full.token)
            .unwrap()
            .permissions
            .has(Permission::Ml)
    );
}

#[test]
fn expired_revoked_and_disabled_are_refused_and_survive_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let a = access(dir.path());
    let admin = a.authenticate("bootstrap").unwrap();
    a.create_user(CreateUser {
        name: "etl".into(),
        role: Role::Viewer,
        password: None,
        service: true,
    })
    .unwrap();
    let short = a
        .issue_token(&admin, Some("etl"), "short", None, Some(1))
        .unwrap();
    let kept = a
        .issue_token(&admin, Some("etl"), "kept", None, None)
        .unwrap();
    let revoked = a
        .issue_token(&admin, Some("etl"), "gone", None, None)
        .unwrap();
    a.authenticate(&short.token).unwrap();
    a.revoke_token(&admin, &revoked.info.id).unwrap();
    assert!(matches!(
        a.authenticate(&revoked.token),
        Err(Error::Unauthorized(_))
    ));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let err = a.authenticate(&short.token).unwrap_err().to_string();
    assert!(err.contains("expired"), "{err}");

    let again = access(dir.path());
    assert!(again.authenticate(&short.token).is_err());
    assert!(again.authenticate(&revoked.token).is_err());
    assert_eq!(again.authenticate(&kept.token).unwrap().name, "etl");
    again
        .update_user(
            "etl",
            UpdateUser {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    // Disabling revokes the account's tokens: enabling it again does not
    // bring back one that leaked meanwhile, here or after a reload.
    assert!(
        again
            .authenticate(&kept.token)
            .unwrap_err()
            .to_string()
            .contains("revoked")
    );
    again
        .update_user(
            "etl",
            UpdateUser {
                disabled: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(again.authenticate(&kept.token).is_err());
    assert!(access(dir.path()).authenticate(&kept.token).is_err());
    // A service account cannot log in.
    assert!(again.login("etl", "anything at all", None).is_err());

    // A new password ends the sessions opened with the old one.
    again.create_user(user("olga", Role::Operator)).unwrap();
    let session = again
        .login("olga", "olga has a long password", None)
        .unwrap();
    again.authenticate(&session.token).unwrap();
    again
        .update_user(
            "olga",
            UpdateUser {
                password: Some("olga's brand new password".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(again.authenticate(&session.token).is_err());
    again
        .login("olga", "olga's brand new password", None)
        .unwrap();

    // A login that checked the old password while it changed (the argon2
    // work takes a while) gets no token once the change is made.
    let old = again.user("olga").unwrap().password_phc.unwrap();
    again
        .update_user(
            "olga",
            UpdateUser {
                password: Some("and yet another password".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let perms = Role::Operator.permissions();
    assert!(matches!(
        again.issue("olga", "login session", perms, 60, Some(&old)),
        Err(Error::Unauthorized(_))
    ));
    // Nor does one for an account disabled meanwhile.
    again
        .update_user(
            "olga",
            UpdateUser {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(again.issue("olga", "api", perms, 60, None).is_err());
}

#[test]
fn bad_users_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = access(dir.path());
    let mut short = user("sam", Role::Viewer);
    short.password = Some("short".into());
    assert!(matches!(a.create_user(short), Err(Error::BadRequest(_))));
    assert!(matches!(
        a.create_user(user("bad name", Role::Viewer)),
        Err(Error::BadRequest(_))
    ));
    assert!(matches!(
        a.create_user(user("admin", Role::Viewer)),
        Err(Error::Conflict(_))
    ));
    a.create_user(user("sam", Role::Viewer)).unwrap();
    assert!(a.create_user(user("sam", Role::Viewer)).is_err());
}
