//! The checks a device makes before it installs anything, in the order of
//! `docs/design/ota.md`; the first that fails names the refusal.

use std::collections::BTreeMap;

use crate::envelope::{DocumentType, Envelope};
use crate::error::Refusal;
use crate::keys::PublicKey;
use crate::release::{Assignment, Release};

/// The keys a device trusts, by role.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Keys that may sign releases (what may be installed).
    pub release_keys: Vec<PublicKey>,
    /// Keys that may sign assignments (which release, now).
    pub rollout_keys: Vec<PublicKey>,
}

/// The device as the selector sees it.
#[derive(Debug, Clone, Default)]
pub struct Device {
    /// Its id.
    pub id: String,
    /// Its site.
    pub site: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// An assignment and its release that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The assignment.
    pub assignment: Assignment,
    /// The release.
    pub release: Release,
}

/// Checks an assignment and its release for `device`, given its
/// anti-rollback floor for the release's (kind, name): the lowest version
/// the release it last committed allows (`None`: it never committed one).
///
/// `committed_before` says whether the device committed the release with
/// that digest before. Such a release may have expired since: a fresh
/// assignment may still take the device back to it (a campaign's
/// rollback), as the device ran it and the floor still holds.
pub fn verify(
    trust: &Trust,
    device: &Device,
    assignment: &Envelope,
    release: &Envelope,
    floor: impl FnOnce(&Release) -> Option<u64>,
    committed_before: impl FnOnce(&str) -> bool,
    now_ns: i64,
) -> Result<Verified, Refusal> {
    let a: Assignment = assignment.open(DocumentType::Assignment, &trust.rollout_keys)?;
    if a.device != device.id {
        return Err(Refusal::NotForThisDevice(format!(
            "the assignment is for device {}",
            a.device
        )));
    }
    not_expired("assignment", a.expires_ns, now_ns)?;

    let r: Release = release.open(DocumentType::Release, &trust.release_keys)?;
    let digest = release.digest();
    agree("release digest", &a.release_digest, &digest)?;
    agree("kind", a.kind.as_str(), r.kind.as_str())?;
    agree("name", &a.name, &r.name)?;
    agree("version", &a.version.to_string(), &r.version.to_string())?;
    if !committed_before(&digest) {
        not_expired("release", r.expires_ns, now_ns)?;
    }
    targets(&r, device)?;
    if let Some(floor) = floor(&r)
        && r.version < floor
    {
        return Err(Refusal::Rollback {
            kind: r.kind.as_str().into(),
            name: r.name.clone(),
            offered: r.version,
            floor,
        });
    }
    Ok(Verified {
        assignment: a,
        release: r,
    })
}

fn not_expired(document: &'static str, expires_ns: i64, now_ns: i64) -> Result<(), Refusal> {
    if now_ns >= expires_ns {
        return Err(Refusal::Expired {
            document,
            expired_ns: expires_ns,
            now_ns,
        });
    }
    Ok(())
}

fn agree(field: &'static str, assignment: &str, release: &str) -> Result<(), Refusal> {
    if assignment != release {
        return Err(Refusal::Mismatch {
            field,
            assignment: assignment.into(),
            release: release.into(),
        });
    }
    Ok(())
}

fn targets(r: &Release, d: &Device) -> Result<(), Refusal> {
    let t = &r.target;
    if !t.devices.is_empty() && !t.devices.contains(&d.id) {
        return Err(Refusal::NotForThisDevice(format!(
            "the release targets devices {:?}",
            t.devices
        )));
    }
    if !t.sites.is_empty() && !t.sites.contains(&d.site) {
        return Err(Refusal::NotForThisDevice(format!(
            "the release targets sites {:?}, this device is at {}",
            t.sites, d.site
        )));
    }
    for (k, v) in &t.tags {
        if d.tags.get(k) != Some(v) {
            return Err(Refusal::NotForThisDevice(format!(
                "the release targets devices tagged {k}={v}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;
    use crate::release::{Artifact, Kind, Target};

    const NOW: i64 = 1_000_000;

    struct Fixture {
        release_key: KeyPair,
        rollout_key: KeyPair,
        trust: Trust,
        device: Device,
    }

    fn fixture() -> Fixture {
        let (release_key, _) = KeyPair::generate().unwrap();
        let (rollout_key, _) = KeyPair::generate().unwrap();
        let trust = Trust {
            release_keys: vec![release_key.public()],
            rollout_keys: vec![rollout_key.public()],
        };
        let device = Device {
            id: "press-7".into(),
            site: "plant-1".into(),
            tags: [("line".to_owned(), "2".to_owned())].into(),
        };
        Fixture {
            release_key,
            rollout_key,
            trust,
            device,
        }
    }

    fn release(version: u64) -> Release {
        Release {
            kind: Kind::Model,
            name: "rul".into(),
            version,
            min_version: None,
            artifact: Artifact {
                sha256: "ab".repeat(32),
                size: 10,
            },
            target: Target {
                sites: vec!["plant-1".into()],
                ..Target::default()
            },
            created_ns: 0,
            expires_ns: NOW + 1000,
            model: None,
            bundle: None,
        }
    }

    fn assignment(for_release: &Envelope, r: &Release) -> Assignment {
        Assignment {
            device: "press-7".into(),
            release_digest: for_release.digest(),
            kind: r.kind,
            name: r.name.clone(),
            version: r.version,
            campaign: "c-1".into(),
            issued_ns: NOW - 10,
            expires_ns: NOW + 100,
        }
    }

    fn check(
        f: &Fixture,
        a: &Assignment,
        r: &Envelope,
        floor: Option<u64>,
    ) -> Result<Verified, Refusal> {
        let a = Envelope::sign(DocumentType::Assignment, a, &f.rollout_key);
        verify(&f.trust, &f.device, &a, r, |_| floor, |_| false, NOW)
    }

    #[test]
    fn a_signed_current_newer_release_for_this_device_passes() {
        let f = fixture();
        let r = release(3);
        let env = Envelope::sign(DocumentType::Release, &r, &f.release_key);
        let ok = check(&f, &assignment(&env, &r), &env, Some(2)).unwrap();
        assert_eq!(ok.release, r);
    }

    #[test]
    fn a_release_sets_how_far_back_a_device_may_go() {
        let f = fixture();
        let mut v5 = release(5);
        assert_eq!(v5.floor(), 5);
        v5.min_version = Some(3);
        assert_eq!(v5.floor(), 3);
        // A device that committed v5 (floor 3) may take v3 back, not v2.
        let v3 = release(3);
        let env3 = Envelope::sign(DocumentType::Release, &v3, &f.release_key);
        assert!(check(&f, &assignment(&env3, &v3), &env3, Some(v5.floor())).is_ok());
        let v2 = release(2);
        let env2 = Envelope::sign(DocumentType::Release, &v2, &f.release_key);
        let refused = check(&f, &assignment(&env2, &v2), &env2, Some(v5.floor())).unwrap_err();
        assert_eq!(refused.code(), "rollback");
        assert!(refused.to_string().contains("below 3"), "{refused}");
        // A min_version above the version is no licence to go forward.
        v5.min_version = Some(9);
        assert_eq!(v5.floor(), 5);
    }

    #[test]
    fn each_attack_is_refused_with_its_reason() {
        let f = fixture();
        let r = release(3);
        let env = Envelope::sign(DocumentType::Release, &r, &f.release_key);
        let a = assignment(&env, &r);
        let code = |res: Result<Verified, Refusal>| res.unwrap_err().code();

        // Rollback: below the floor the committed release set.
        assert_eq!(code(check(&f, &a, &env, Some(4))), "rollback");
        // Tampered release: the signature breaks.
        let mut tampered = env.clone();
        tampered.payload = tampered.payload.replace(&"ab".repeat(32), &"cd".repeat(32));
        assert_eq!(code(check(&f, &a, &tampered, None)), "bad_signature");
        // A release signed by the rollout key (a stolen hub) is refused.
        let forged = Envelope::sign(DocumentType::Release, &r, &f.rollout_key);
        assert_eq!(
            code(check(&f, &assignment(&forged, &r), &forged, None)),
            "unknown_key"
        );
        // Expired assignment (freeze) and expired release.
        let mut stale = a.clone();
        stale.expires_ns = NOW;
        assert_eq!(code(check(&f, &stale, &env, None)), "expired");
        let mut old = release(3);
        old.expires_ns = NOW - 1;
        let old_env = Envelope::sign(DocumentType::Release, &old, &f.release_key);
        assert_eq!(
            code(check(&f, &assignment(&old_env, &old), &old_env, None)),
            "expired"
        );
        // A release this device committed before may take it back after
        // the release expired, by a fresh assignment; only that release,
        // and never below the floor or by an expired assignment.
        let back = |a: &Assignment, floor: Option<u64>, known: &str| {
            let a = Envelope::sign(DocumentType::Assignment, a, &f.rollout_key);
            verify(
                &f.trust,
                &f.device,
                &a,
                &old_env,
                |_| floor,
                |d| d == known,
                NOW,
            )
        };
        let to_old = assignment(&old_env, &old);
        assert_eq!(
            back(&to_old, Some(3), &old_env.digest()).unwrap().release,
            old
        );
        assert_eq!(code(back(&to_old, Some(3), &env.digest())), "expired");
        assert_eq!(code(back(&to_old, Some(4), &old_env.digest())), "rollback");
        let mut stale_back = to_old.clone();
        stale_back.expires_ns = NOW;
        assert_eq!(code(back(&stale_back, None, &old_env.digest())), "expired");
        // Mix-and-match: the assignment names another release.
        let other = release(4);
        let other_env = Envelope::sign(DocumentType::Release, &other, &f.release_key);
        assert_eq!(code(check(&f, &a, &other_env, None)), "mismatch");
        let mut wrong_version = assignment(&env, &r);
        wrong_version.version = 9;
        assert_eq!(code(check(&f, &wrong_version, &env, None)), "mismatch");
        // Another device's assignment, another site's release.
        let mut elsewhere = a.clone();
        elsewhere.device = "press-8".into();
        assert_eq!(
            code(check(&f, &elsewhere, &env, None)),
            "not_for_this_device"
        );
        let mut site2 = release(3);
        site2.target.sites = vec!["plant-2".into()];
        let site2_env = Envelope::sign(DocumentType::Release, &site2, &f.release_key);
        assert_eq!(
            code(check(&f, &assignment(&site2_env, &site2), &site2_env, None)),
            "not_for_this_device"
        );
        // An assignment signed by the release key is not a rollout.
        let by_release_key = Envelope::sign(DocumentType::Assignment, &a, &f.release_key);
        assert_eq!(
            verify(
                &f.trust,
                &f.device,
                &by_release_key,
                &env,
                |_| None,
                |_| false,
                NOW,
            )
            .unwrap_err()
            .code(),
            "unknown_key"
        );
    }
}
