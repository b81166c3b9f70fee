//! Checks every registry, access, twin, sketch, action, model, release, job,
//! retraining cycle and label store must pass, whatever its engine.

use std::collections::BTreeMap;

use strata_proto::{DeviceId, SignalSketch, SiteId, SketchBatch};
use strata_store::labels::{Label, LabelStore};
use strata_store::retrain::{RetrainStore, StoredCycle};
use strata_store::*;

fn dev(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

/// Sites and devices from creation to revocation: conflicts, enrollment's
/// outcomes, presence, last seen, updates.
pub fn registry_lifecycle(store: &dyn RegistryStore) {
    let site = Site {
        id: SiteId::new("plant-1").unwrap(),
        name: "Plant 1".into(),
        region: "eu-west".into(),
        created_ns: 1,
    };
    store.create_site(&site).unwrap();
    assert!(matches!(store.create_site(&site), Err(Error::Conflict(_))));
    assert_eq!(store.sites().unwrap(), vec![site.clone()]);
    assert_eq!(store.site(&site.id).unwrap(), Some(site.clone()));

    let new = |id: &str, site: &str| NewDevice {
        id: dev(id),
        site: SiteId::new(site).unwrap(),
        tags: BTreeMap::from([("line".into(), "2".into())]),
        signals: BTreeMap::new(),
        token_sha256: [1; 32],
        token_expires_ns: 1_000,
        created_ns: 5,
    };
    assert!(matches!(
        store.create_device(&new("d1", "nowhere")),
        Err(Error::NotFound(_))
    ));
    store.create_device(&new("d1", "plant-1")).unwrap();
    assert!(matches!(
        store.create_device(&new("d1", "plant-1")),
        Err(Error::Conflict(_))
    ));

    assert_eq!(
        store.enroll(&dev("d1"), &[2; 32], &[9; 32], 10).unwrap(),
        EnrollOutcome::BadToken
    );
    assert_eq!(
        store.enroll(&dev("d1"), &[1; 32], &[9; 32], 2_000).unwrap(),
        EnrollOutcome::Expired
    );
    assert_eq!(
        store.enroll(&dev("zz"), &[1; 32], &[9; 32], 10).unwrap(),
        EnrollOutcome::UnknownDevice
    );
    assert_eq!(
        store.enroll(&dev("d1"), &[1; 32], &[9; 32], 10).unwrap(),
        EnrollOutcome::Enrolled
    );
    // The token is one-time.
    assert_eq!(
        store.enroll(&dev("d1"), &[1; 32], &[8; 32], 10).unwrap(),
        EnrollOutcome::NotPending
    );

    let cred = store.credentials().unwrap();
    assert_eq!(cred[0].credential_sha256, Some([9; 32]));
    assert_eq!(cred[0].state, DeviceState::Active);

    store
        .set_presence(&[(dev("d1"), false, 45), (dev("d1"), true, 50)])
        .unwrap();
    assert_eq!(
        store.presence_log(48, 100).unwrap(),
        vec![(dev("d1"), 45, false), (dev("d1"), 50, true)],
        "the window's changes and the state it opens in"
    );
    assert_eq!(store.presence_log(0, 44).unwrap(), vec![]);
    // History: only each device's last change before the cut stays of
    // what came before it.
    store
        .set_presence(&[(dev("d1"), false, 52), (dev("d1"), true, 55)])
        .unwrap();
    assert_eq!(store.forget_presence(53).unwrap(), 2, "45 and 50 go");
    assert_eq!(
        store.presence_log(53, 100).unwrap(),
        vec![(dev("d1"), 52, false), (dev("d1"), 55, true)],
        "the state at the cut is still known"
    );
    assert_eq!(store.forget_presence(53).unwrap(), 0);
    store.touch(&[(dev("d1"), 40), (dev("d1"), 60)]).unwrap();
    let d = store.device(&dev("d1")).unwrap().unwrap();
    assert!(d.online);
    assert_eq!(d.last_seen_ns, Some(60));
    assert_eq!(d.tags["line"], "2");

    let update = DeviceUpdate {
        firmware_version: Some("2.3.0".into()),
        ..Default::default()
    };
    assert!(store.update_device(&dev("d1"), &update).unwrap());
    assert_eq!(
        store
            .device(&dev("d1"))
            .unwrap()
            .unwrap()
            .firmware_version
            .as_deref(),
        Some("2.3.0")
    );

    assert!(store.revoke(&dev("d1"), 70).unwrap());
    assert!(
        !store.revoke(&dev("d1"), 80).unwrap(),
        "revoking twice changes nothing"
    );
    let d = store.device(&dev("d1")).unwrap().unwrap();
    assert_eq!(
        (d.state, d.online, d.revoked_ns),
        (DeviceState::Revoked, false, Some(70))
    );
    assert_eq!(store.credentials().unwrap()[0].credential_sha256, None);
    assert_eq!(store.devices(Some(&site.id)).unwrap().len(), 1);
}

/// Users and tokens: conflicts, updates, revocation once.
pub fn access_round_trip(store: &dyn AccessStore) {
    let mut alice = User {
        name: "alice".into(),
        role: "operator".into(),
        service: false,
        password_phc: Some("$argon2id$...".into()),
        created_ns: 1,
        disabled_ns: None,
    };
    store.create_user(&alice).unwrap();
    assert!(matches!(store.create_user(&alice), Err(Error::Conflict(_))));
    // Each change writes what it names and keeps the rest as stored (as
    // another hub may have left it).
    let change = |role: Option<&str>, password: Option<&str>, disable_at, enable| UserChange {
        role: role.map(Into::into),
        password_phc: password.map(Into::into),
        disable_at,
        enable,
    };
    alice.role = "viewer".into();
    let stored = store
        .update_user("alice", &change(Some("viewer"), None, None, false))
        .unwrap();
    assert_eq!(stored, alice);
    alice.disabled_ns = Some(5);
    let stored = store
        .update_user("alice", &change(None, None, Some(5), false))
        .unwrap();
    assert_eq!(stored, alice, "the role another change set is kept");
    let stored = store
        .update_user(
            "alice",
            &change(None, Some("$argon2id$new"), Some(9), false),
        )
        .unwrap();
    alice.password_phc = Some("$argon2id$new".into());
    assert_eq!(stored, alice, "disabled from the first time");
    assert_eq!(store.users().unwrap(), vec![alice.clone()]);
    let stored = store
        .update_user("alice", &change(None, None, None, true))
        .unwrap();
    assert_eq!((stored.disabled_ns, &stored.role), (None, &alice.role));
    alice.disabled_ns = None;
    assert_eq!(store.users().unwrap(), vec![alice.clone()]);
    assert!(matches!(
        store.update_user("bob", &change(Some("admin"), None, None, false)),
        Err(Error::NotFound(_))
    ));

    let token = ApiToken {
        id: "tok1".into(),
        user: "alice".into(),
        label: "grafana".into(),
        scopes: vec!["read".into()],
        token_sha256: "ab".repeat(32),
        created_ns: 2,
        expires_ns: Some(10),
        revoked_ns: None,
    };
    store.create_token(&token).unwrap();
    assert_eq!(store.tokens().unwrap(), vec![token.clone()]);
    assert!(store.revoke_token("tok1", 7).unwrap());
    assert!(!store.revoke_token("tok1", 8).unwrap());
    assert_eq!(store.tokens().unwrap()[0].revoked_ns, Some(7));

    // Tokens revoked or expired before a time are forgotten; live ones
    // and those without an expiry stay.
    let more = |id: &str, expires_ns: Option<i64>| ApiToken {
        id: id.into(),
        token_sha256: id.repeat(64 / id.len()),
        expires_ns,
        ..token.clone()
    };
    for t in [more("t2", Some(20)), more("t3", Some(40)), more("t4", None)] {
        store.create_token(&t).unwrap();
    }
    assert_eq!(
        store.forget_tokens(30).unwrap(),
        2,
        "tok1 (revoked), t2 (expired)"
    );
    let left: Vec<String> = store.tokens().unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(left, ["t3", "t4"]);
}

/// Desired keys merge and count versions; edits see the value they change
/// and, made at once, all land; reports are kept apart; only twins with a
/// desired document are listed.
pub fn twins_merge(store: &dyn TwinStore) {
    use serde_json::json;
    let d = DeviceId::new("m-1").unwrap();
    assert_eq!(store.twin(&d).unwrap().desired_version, 0);
    store.set_desired(&d, "models", &json!([1]), 1).unwrap();
    let t = store
        .set_desired(&d, "config", &json!({"a": 2}), 2)
        .unwrap();
    assert_eq!(t.desired, json!({"models": [1], "config": {"a": 2}}));
    assert_eq!(t.desired_version, 2);
    store.set_reported(&d, &json!({"models": []}), 3).unwrap();
    let t = store.twin(&d).unwrap();
    assert_eq!(t.reported, json!({"models": []}));
    assert_eq!(t.desired_version, 2);
    assert_eq!(t.reported_ns, Some(3));
    // Only twins with a desired document are listed for republishing.
    store
        .set_reported(&DeviceId::new("m-2").unwrap(), &json!({}), 4)
        .unwrap();
    let desired = store.desired_twins().unwrap();
    assert_eq!(desired.len(), 1);
    assert_eq!(desired[0].device, d);

    // An edit gets the key's value (null when absent); one that fails
    // changes nothing.
    let t = store
        .edit_desired(&d, "models", 5, &mut |v| {
            assert_eq!(v, &json!([1]));
            Ok(json!([1, 2]))
        })
        .unwrap();
    assert_eq!((t.desired_version, t.desired_ns), (3, Some(5)));
    let refused = store.edit_desired(&d, "models", 6, &mut |_| {
        Err(strata_store::Error::Conflict("damaged".into()))
    });
    assert!(matches!(refused, Err(strata_store::Error::Conflict(_))));
    let t = store.twin(&d).unwrap();
    assert_eq!(
        (t.desired_version, &t.desired["models"]),
        (3, &json!([1, 2]))
    );
    // Edits at once, each adding to the list it read, all land.
    let other = DeviceId::new("m-3").unwrap();
    edit_one_key_at_once(&[store; 4], &other, "list", 25);
    let t = store.twin(&other).unwrap();
    assert_eq!(t.desired_version, 100);
    assert_eq!(
        t.desired["list"].as_array().unwrap().len(),
        100,
        "none lost"
    );
}

/// Each of `stores` on a thread of its own, all at once, edits `key` of
/// `device`'s desired twin `edits` times, each time adding a number of its
/// own to the list it reads there.
pub fn edit_one_key_at_once(stores: &[&dyn TwinStore], device: &DeviceId, key: &str, edits: i64) {
    use serde_json::json;
    std::thread::scope(|s| {
        for (thread, store) in (0..).zip(stores) {
            s.spawn(move || {
                for i in 0..edits {
                    store
                        .edit_desired(device, key, i, &mut |v| {
                            let mut list = v.as_array().cloned().unwrap_or_default();
                            list.push(json!(thread * 1000 + i));
                            Ok(json!(list))
                        })
                        .unwrap();
                }
            });
        }
    });
}

/// Closed-loop action records: once per (device, seq), newest first,
/// filtered by device and rule.
pub fn control_actions_once_newest_first(store: &dyn ControlStore) {
    use strata_proto::{ActionOutcome, ControlAction};
    let record = |device: &str, seq: u64, rule: &str, outcome| StoredAction {
        device: DeviceId::new(device).unwrap(),
        received_ns: 99,
        action: ControlAction {
            seq,
            ts_ns: seq as i64 * 10,
            rule: rule.into(),
            output: "fan".into(),
            action: format!("{rule}-{seq}"),
            outcome,
            requested: Some(1.0),
            value: Some(1.0),
            previous: None,
            reason: "because".into(),
            approved_by: None,
        },
    };
    assert!(
        store
            .record_action(&record("gw-1", 1, "cool", ActionOutcome::Written))
            .unwrap()
    );
    assert!(
        !store
            .record_action(&record("gw-1", 1, "cool", ActionOutcome::Written))
            .unwrap()
    );
    assert!(
        store
            .record_action(&record("gw-2", 1, "cool", ActionOutcome::DryRun))
            .unwrap()
    );
    assert!(
        store
            .record_action(&record("gw-1", 2, "load", ActionOutcome::Blocked))
            .unwrap()
    );
    let all = store
        .actions(&ActionFilter {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].action.rule, "load", "newest first");
    let gw1_cool = store
        .actions(&ActionFilter {
            device: Some(DeviceId::new("gw-1").unwrap()),
            rule: Some("cool".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(gw1_cool.len(), 1);
    assert_eq!(
        gw1_cool[0],
        record("gw-1", 1, "cool", ActionOutcome::Written)
    );
}

/// A sketch batch of `rul` v2 ending at `end_ns`.
fn sketch_batch(seq: u64, end_ns: i64) -> SketchBatch {
    SketchBatch {
        stream: "sketch:rul:2".into(),
        seq,
        model: "rul".into(),
        version: 2,
        start_ns: end_ns - 10,
        end_ns,
        vectors: 3,
        features: vec![SignalSketch {
            name: "x".into(),
            bins: "ab".into(),
            counts: vec![1, 2, 0],
            n: 3,
            dropped: 0,
            sum: 1.5,
            sum_sq: 1.0,
            min: Some(0.1),
            max: Some(0.9),
        }],
        outputs: vec![],
        detections: vec![],
    }
}

/// Sketch batches: once per (device, stream, seq), read back by window.
pub fn sketches_once_by_window(store: &dyn DriftStore) {
    let d = DeviceId::new("press-1").unwrap();
    assert!(store.add_sketches(&d, &sketch_batch(1, 100), 5).unwrap());
    assert!(
        !store.add_sketches(&d, &sketch_batch(1, 100), 6).unwrap(),
        "a retry is a duplicate"
    );
    assert!(store.add_sketches(&d, &sketch_batch(2, 200), 7).unwrap());
    let all = store.sketches("rul", 2, 0, 1000).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].batch, sketch_batch(1, 100));
    assert_eq!(store.sketches("rul", 2, 150, 1000).unwrap().len(), 1);
    assert!(store.sketches("rul", 3, 0, 1000).unwrap().is_empty());
    // Retention: the batches whose window ended before a time go.
    assert_eq!(store.forget_sketches(150).unwrap(), 1);
    assert_eq!(store.forget_sketches(150).unwrap(), 0);
    let left = store.sketches("rul", 2, 0, 1000).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].batch.seq, 2);
}

/// A version of `model` as a store receives it (its number not yet set).
pub fn model_version(model: &str) -> ModelVersion {
    ModelVersion {
        model: model.into(),
        version: 0,
        sha256: "ab".repeat(32),
        size: 10,
        runtime: "ml".into(),
        input_len: 3,
        outputs: vec![ModelOutputInfo {
            name: "prediction".into(),
            len: 1,
        }],
        ops: vec!["ai.onnx.ml:TreeEnsembleRegressor".into()],
        features: vec!["a".into(), "b".into(), "c".into()],
        vector: Some("v".into()),
        lineage: Lineage {
            trigger: "upload".into(),
            ..Lineage::default()
        },
        metrics: [("mae".to_owned(), 1.5)].into(),
        has_tree_stats: true,
        description: "d".into(),
        created_ns: 5,
    }
}

/// Versions count up per model, come back as registered, and aliases move
/// only to versions that exist.
pub fn models_count_versions_and_move_aliases(store: &dyn ModelStore) {
    assert_eq!(store.add_model_version(&model_version("rul")).unwrap(), 1);
    assert_eq!(store.add_model_version(&model_version("rul")).unwrap(), 2);
    assert_eq!(store.add_model_version(&model_version("other")).unwrap(), 1);
    let v2 = store.model_version("rul", 2).unwrap().unwrap();
    assert_eq!(
        v2,
        ModelVersion {
            version: 2,
            ..model_version("rul")
        }
    );
    assert!(store.model_version("rul", 3).unwrap().is_none());

    // Moved only from where it was: not from a version it has left, not
    // created where it exists, not to a version the model lacks.
    assert!(!store.move_alias("rul", "champion", Some(1), 2, 9).unwrap());
    assert!(!store.move_alias("rul", "champion", None, 7, 9).unwrap());
    assert!(store.move_alias("rul", "champion", None, 1, 9).unwrap());
    assert!(!store.move_alias("rul", "champion", None, 2, 9).unwrap());
    assert!(!store.move_alias("rul", "champion", Some(2), 1, 9).unwrap());
    assert!(!store.move_alias("rul", "champion", Some(1), 7, 9).unwrap());
    assert!(store.move_alias("rul", "champion", Some(1), 2, 9).unwrap());
    assert_eq!(store.set_alias("rul", "champion", 1, 9).unwrap(), Some(2));
    assert_eq!(store.set_alias("rul", "champion", 2, 9).unwrap(), Some(1));
    assert!(matches!(
        store.set_alias("rul", "champion", 7, 9),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.set_alias("unknown", "champion", 1, 9),
        Err(Error::NotFound(_))
    ));
    let info = store.model("rul").unwrap().unwrap();
    assert_eq!(
        (info.created_ns, info.latest_version, info.aliases.clone()),
        (5, Some(2), [("champion".to_owned(), 2)].into())
    );
    assert!(store.model("unknown").unwrap().is_none());
    assert!(store.remove_alias("rul", "champion").unwrap());
    assert!(!store.remove_alias("rul", "champion").unwrap());
    let names: Vec<String> = store
        .models()
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["other", "rul"]);
    let versions: Vec<u32> = store
        .model_versions("rul")
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(versions, [1, 2]);
}

/// A release of `rul` at `version`.
fn release(version: u64) -> ReleaseRecord {
    ReleaseRecord {
        kind: "model".into(),
        name: "rul".into(),
        version,
        digest: format!("d{version}"),
        key_id: "k".into(),
        sha256: "ab".repeat(32),
        size: 3,
        expires_ns: 10,
        accepted_ns: version as i64,
        envelope: "{}".into(),
    }
}

/// A release version is stored once, and the latest of each is known.
pub fn releases_once_and_latest_known(store: &dyn ReleaseStore) {
    assert_eq!(store.latest_release_version("model", "rul").unwrap(), None);
    store.add_release(&release(2)).unwrap();
    store.add_release(&release(5)).unwrap();
    assert!(matches!(
        store.add_release(&release(5)),
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        store.latest_release_version("model", "rul").unwrap(),
        Some(5)
    );
    assert_eq!(store.latest_release_version("config", "rul").unwrap(), None);
    let all = store.releases(Some("model"), None).unwrap();
    assert_eq!(all.iter().map(|r| r.version).collect::<Vec<_>>(), [5, 2]);
    assert_eq!(all[1], release(2));
    assert_eq!(store.releases(None, Some("rul")).unwrap().len(), 2);
    assert_eq!(store.releases(None, Some("other")).unwrap().len(), 0);
    assert_eq!(store.releases(None, None).unwrap().len(), 2);
}

/// Jobs are claimed oldest first, once each, and record progress, a log
/// and their end, each only by the claim that runs it. Returns the id of
/// the job it leaves running.
pub fn jobs_go_through_their_life(store: &dyn JobStore) -> i64 {
    let a = store
        .create_job("train", &serde_json::json!({"x": 1}), 1)
        .unwrap();
    let b = store
        .create_job("backtest", &serde_json::json!({}), 2)
        .unwrap();
    let got = store.claim_job(3).unwrap().unwrap();
    assert_eq!(
        (got.id, got.state, got.attempts, got.started_ns),
        (a, JobState::Running, 1, Some(3))
    );
    assert_eq!(got.spec, serde_json::json!({"x": 1}));
    let claim = got.claim();
    assert!(store.job_progress(claim, 0.5, "half way", 4).unwrap());
    // Another start's claim records nothing.
    let other = JobClaim {
        attempt: 2,
        ..claim
    };
    assert!(!store.job_progress(other, 0.7, "not mine", 5).unwrap());
    let running = store.job(a).unwrap().unwrap();
    assert_eq!(
        (running.progress, running.message.as_str()),
        (0.5, "half way")
    );
    assert!(
        !store
            .finish_job(other, JobState::Failed, "not mine", None, 5)
            .unwrap()
    );
    assert!(
        store
            .finish_job(
                claim,
                JobState::Succeeded,
                "done",
                Some(&serde_json::json!({"v": 1})),
                6,
            )
            .unwrap()
    );
    let done = store.job(a).unwrap().unwrap();
    assert_eq!(
        (done.state, done.progress, done.finished_ns),
        (JobState::Succeeded, 1.0, Some(6))
    );
    assert_eq!(done.result, Some(serde_json::json!({"v": 1})));
    // A finished job takes nothing more, even from its own claim.
    assert!(!store.job_progress(claim, 0.9, "late", 7).unwrap());
    assert!(
        !store
            .finish_job(claim, JobState::Failed, "late", None, 7)
            .unwrap()
    );
    let log: Vec<String> = store
        .job_log(a)
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(log, ["half way", "succeeded: done"]);
    let b_claim = store.claim_job(7).unwrap().unwrap().claim();
    assert_eq!(b_claim.id, b);
    assert!(store.claim_job(8).unwrap().is_none());
    let listed: Vec<i64> = store.jobs(10).unwrap().iter().map(|j| j.id).collect();
    assert_eq!(listed, [b, a], "newest first");
    assert!(store.job(b + 100).unwrap().is_none());
    // A failed job keeps its progress and says why.
    assert!(store.job_progress(b_claim, 0.25, "reading", 9).unwrap());
    let c = store
        .create_job("train", &serde_json::json!({}), 10)
        .unwrap();
    let c_claim = store.claim_job(11).unwrap().unwrap().claim();
    assert_eq!(c_claim.id, c);
    assert!(
        store
            .finish_job(c_claim, JobState::Failed, "no data", None, 12)
            .unwrap()
    );
    let failed = store.job(c).unwrap().unwrap();
    assert_eq!(
        (failed.state, failed.progress, failed.message.as_str()),
        (JobState::Failed, 0.0, "no data")
    );
    b
}

/// A queued job cancelled never starts; a running one cancelled takes
/// nothing more from its worker; a finished one is not changed.
pub fn jobs_are_cancelled(store: &dyn JobStore) {
    let queued = store
        .create_job("train", &serde_json::json!({}), 1_000)
        .unwrap();
    let cancelled = store
        .cancel_job(queued, "not needed", 1_001)
        .unwrap()
        .unwrap();
    assert_eq!(
        (cancelled.state, cancelled.message.as_str()),
        (JobState::Cancelled, "not needed")
    );
    assert_eq!(cancelled.finished_ns, Some(1_001));
    assert!(cancelled.state.is_finished());

    let running = store
        .create_job("train", &serde_json::json!({}), 1_002)
        .unwrap();
    let claimed = store.claim_job(1_003).unwrap().unwrap();
    assert_eq!(claimed.id, running, "the cancelled job is not taken");
    let claim = claimed.claim();
    assert!(store.job_progress(claim, 0.4, "tree 4/10", 1_004).unwrap());
    let stopped = store
        .cancel_job(running, "ran past max_job_s", 1_005)
        .unwrap()
        .unwrap();
    assert_eq!(stopped.state, JobState::Cancelled);
    assert_eq!(stopped.progress, 0.4);
    // The worker learns at its next write, and records nothing more.
    assert!(!store.job_alive(claim, 1_006).unwrap());
    assert!(!store.job_progress(claim, 0.5, "tree 5/10", 1_006).unwrap());
    assert!(
        !store
            .finish_job(claim, JobState::Succeeded, "done", None, 1_007)
            .unwrap()
    );
    assert!(!store.release_job(claim).unwrap());
    let log: Vec<String> = store
        .job_log(running)
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(log, ["tree 4/10", "cancelled: ran past max_job_s"]);

    // Ended jobs stay as they are; an unknown one is none.
    let again = store.cancel_job(running, "twice", 1_008).unwrap().unwrap();
    assert_eq!(again.message, "ran past max_job_s");
    assert_eq!(again.finished_ns, Some(1_005));
    assert!(
        store
            .cancel_job(running + 1_000, "x", 1_009)
            .unwrap()
            .is_none()
    );
    assert!(store.claim_job(1_010).unwrap().is_none());

    // A job registering its result can no longer be cancelled; one
    // cancelled first can no longer begin to.
    let committing = store
        .create_job("train", &serde_json::json!({}), 1_011)
        .unwrap();
    let claim = store.claim_job(1_012).unwrap().unwrap().claim();
    assert!(store.begin_commit(claim).unwrap());
    let still = store
        .cancel_job(committing, "too late", 1_013)
        .unwrap()
        .unwrap();
    assert_eq!(still.state, JobState::Running);
    assert!(
        store
            .finish_job(claim, JobState::Succeeded, "done", None, 1_014)
            .unwrap()
    );
    let late = store
        .create_job("train", &serde_json::json!({}), 1_015)
        .unwrap();
    let claim = store.claim_job(1_016).unwrap().unwrap().claim();
    store.cancel_job(late, "first", 1_017).unwrap();
    assert!(!store.begin_commit(claim).unwrap());
}

fn cycle(model: &str, at: i64) -> StoredCycle {
    StoredCycle {
        id: 0,
        model: model.into(),
        state: "collecting".into(),
        done: false,
        created_ns: at,
        updated_ns: at,
        body: serde_json::json!({"trigger": {"kind": "schedule"}}),
    }
}

/// Cycles are numbered by the store, updated in place, and listed newest
/// first, of one model or all.
pub fn cycles_round_trip(store: &dyn RetrainStore) {
    let first = store.create_cycle(&cycle("rul", 1)).unwrap();
    let other = store.create_cycle(&cycle("load", 2)).unwrap();
    let second = store.create_cycle(&cycle("rul", 3)).unwrap();
    assert!(first < other && other < second);
    let mut ended = store.cycle(first).unwrap().unwrap();
    assert_eq!(
        ended,
        StoredCycle {
            id: first,
            ..cycle("rul", 1)
        }
    );
    ended.state = "promoted".into();
    ended.done = true;
    ended.updated_ns = 9;
    ended.body = serde_json::json!({"steps": [1, 2]});
    store.update_cycle(&ended).unwrap();
    assert_eq!(store.cycle(first).unwrap().unwrap(), ended);
    let ids = |model, limit| -> Vec<i64> {
        store
            .cycles(model, limit)
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect()
    };
    assert_eq!(ids(Some("rul"), 10), [second, first]);
    assert_eq!(ids(None, 10), [second, other, first]);
    assert_eq!(ids(None, 1), [second]);
    assert!(store.cycle(second + 100).unwrap().is_none());
}

fn label(device: &str, ts_ns: i64, value: f64) -> Label {
    Label {
        device: dev(device),
        target: "label.rul_h".into(),
        ts_ns,
        value,
        source: "cmms".into(),
    }
}

/// A label sent again replaces the first, and labels come back by device
/// then time.
pub fn labels_replace_and_read_back(store: &dyn LabelStore) {
    assert_eq!(
        store
            .add_labels(&[label("a", 10, 1.0), label("b", 10, 2.0)], 1)
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .add_labels(&[label("a", 10, 1.5), label("a", 20, 3.0)], 2)
            .unwrap(),
        1
    );
    let all = store.labels("label.rul_h", None, 0, 100).unwrap();
    assert_eq!(
        all,
        vec![
            label("a", 10, 1.5),
            label("a", 20, 3.0),
            label("b", 10, 2.0)
        ]
    );
    let a = dev("a");
    assert_eq!(
        store
            .labels("label.rul_h", Some(&a), 15, 100)
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .labels("label.failure", None, 0, 100)
            .unwrap()
            .is_empty()
    );
}

/// Campaigns: created with their devices (kept in the order given within
/// a wave), saved, read back; a save of a campaign read at an older
/// revision is refused, and of one that does not exist too.
pub fn campaigns_save_and_refuse_stale_revisions(store: &dyn CampaignStore) {
    let device = |id: &str, wave: u32| CampaignDevice {
        device: DeviceId::new(id).unwrap(),
        wave,
        state: "pending".into(),
        previous: Some(1),
        assigned_ns: None,
        expires_ns: None,
        decided_ns: None,
        reason: None,
    };
    let mut c = Campaign {
        id: 0,
        spec: serde_json::json!({"release": {"name": "rul"}}),
        state: "running".into(),
        reason: String::new(),
        wave: 0,
        waves: 2,
        created_ns: 1,
        updated_ns: 1,
        baseline_decided: 0,
        baseline_failed: 0,
        revision: 0,
    };
    let devices = [device("b", 0), device("a", 0), device("c", 1)];
    c.id = store.create_campaign(&c, &devices).unwrap();
    let read = c.clone();
    c.state = "paused".into();
    c.reason = "too many failures".into();
    c.baseline_failed = 3;
    let mut a = device("a", 0);
    a.state = "failed".into();
    a.reason = Some("health_check".into());
    store.save_campaign(&c, &[a]).unwrap();
    c.revision = 1;
    assert_eq!(store.campaign(c.id).unwrap().unwrap(), c);
    assert_eq!(store.campaigns().unwrap(), vec![c.clone()]);
    let listed = store.campaign_devices(c.id).unwrap();
    let order: Vec<&str> = listed.iter().map(|d| d.device.as_str()).collect();
    assert_eq!(order, ["b", "a", "c"]);
    assert_eq!(listed[1].state, "failed");
    assert_eq!(listed[1].reason.as_deref(), Some("health_check"));

    // A step computed from the campaign as first read would undo the
    // pause: refused, and nothing of it stored.
    let mut stale = read;
    stale.wave = 1;
    let mut b = device("b", 0);
    b.state = "assigned".into();
    let refused = store.save_campaign(&stale, &[b]).unwrap_err();
    assert!(matches!(refused, Error::Conflict(_)), "{refused}");
    assert_eq!(store.campaign(c.id).unwrap().unwrap(), c);
    assert_eq!(store.campaign_devices(c.id).unwrap()[0].state, "pending");

    assert!(store.campaign(c.id + 1).unwrap().is_none());
    let mut missing = c.clone();
    missing.id = c.id + 1;
    assert!(matches!(
        store.save_campaign(&missing, &[]),
        Err(Error::NotFound(_))
    ));
    // A newer campaign is listed first.
    let second = store.create_campaign(&c, &[]).unwrap();
    assert_eq!(store.campaigns().unwrap()[0].id, second);
}
