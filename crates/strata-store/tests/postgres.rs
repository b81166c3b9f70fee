//! The PostgreSQL stores against the real server (this machine's,
//! `STRATA_TEST_POSTGRES` or `host=127.0.0.1 user=postgres dbname=test`),
//! each test in a schema of its own. Telemetry: exactly-once writes, also
//! from two replicas at once, queries, replay, retention by age and by
//! size. The registry: the contract the SQLite one meets, shared by
//! replicas (one enrollment per token, presence in time order, a change
//! count that moves with what the authentication cache holds). Accounts
//! and tokens: the same contract, and a count of their own. Twins: the same
//! contract, versions counted once each when replicas race, and a late
//! report never replacing a newer one. Drift sketches and action records:
//! the same contracts, and a resend through another replica kept once.
//! The command log: a replica following it sees every command another
//! sends, once, in order, and none sent before it started. Audit logs: one
//! per replica, listed together, each written by one replica only.
#![cfg(feature = "postgres")]

use std::collections::BTreeMap;
use strata_proto::{DeviceId, SignalSeries, TelemetryBatch};

use strata_proto::SiteId;
use strata_store::postgres::{
    PostgresAccess, PostgresAudit, PostgresCampaigns, PostgresCommands, PostgresCycles,
    PostgresJobs, PostgresLease, PostgresModels, PostgresRecords, PostgresRegistry,
    PostgresReleases, PostgresTelemetry, PostgresTwins,
};
use strata_store::*;

mod common;

const SECOND: i64 = 1_000_000_000;
const DAY: i64 = 86_400 * SECOND;
const BASE: i64 = 1_764_000_000 * SECOND;

fn server() -> String {
    std::env::var("STRATA_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// A schema of the test's own, dropped at the end.
struct Schema {
    name: String,
    url: String,
}

impl Schema {
    fn new(test: &str) -> Schema {
        let name = format!("strata_test_{test}_{}", std::process::id());
        let mut admin = ::postgres::Client::connect(&server(), ::postgres::NoTls)
            .expect("PostgreSQL runs here (scripts/test.sh starts it)");
        admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .unwrap();
        let url = format!("{} options='-c search_path={name}'", server());
        Schema { name, url }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut admin) = ::postgres::Client::connect(&server(), ::postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

/// Ends the server sessions of clients that named themselves
/// `application_name` (as a restart or a failover would); returns how many.
fn end_sessions(application_name: &str) -> i64 {
    let mut admin = ::postgres::Client::connect(&server(), ::postgres::NoTls).unwrap();
    admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1) t",
            &[&application_name],
        )
        .unwrap()
        .get(0)
}

fn dev(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

/// `n` readings of "temp" a second apart from `t0`.
fn batch(device: &str, stream: &str, seq: u64, t0: i64, n: usize) -> BatchWrite {
    BatchWrite {
        device: dev(device),
        received_ns: t0,
        batch: EncodedBatch::encode(&TelemetryBatch {
            stream: stream.into(),
            seq,
            signals: vec![SignalSeries {
                name: "temp".into(),
                unit: "Cel".into(),
                ts_ns: (0..n).map(|i| t0 + i as i64 * SECOND).collect(),
                values: (0..n)
                    .map(|i| (seq * 100 + i as u64) as f64 * 0.5)
                    .collect(),
                quality: vec![],
            }],
        }),
    }
}

fn query(device: &str, from_ns: i64, to_ns: i64, bucket_ns: Option<i64>) -> RangeQuery {
    RangeQuery {
        device: dev(device),
        signal: "temp".into(),
        from_ns,
        to_ns,
        bucket_ns,
        limit: 100_000,
    }
}

#[test]
fn each_batch_is_stored_exactly_once_and_reads_back() {
    let schema = Schema::new("once");
    let url = &schema.url;
    let store = PostgresTelemetry::connect(url).unwrap();
    let a = batch("d1", "main", 1, BASE, 10);
    let out = store
        .write_batches(&[
            a.clone(),
            a.clone(),
            batch("d1", "main", 2, BASE + 100 * SECOND, 10),
        ])
        .unwrap();
    use WriteOutcome::{Duplicate, Stored};
    assert_eq!(out, vec![Stored, Duplicate, Stored]);
    assert_eq!(store.write_batches(&[a]).unwrap(), vec![Duplicate]);
    // The same stream and seq from another device is another batch.
    assert_eq!(
        store
            .write_batches(&[batch("d2", "main", 1, BASE, 10)])
            .unwrap(),
        vec![Stored]
    );
    assert_eq!(store.batch_count(Some(&dev("d1"))).unwrap(), 2);
    assert_eq!(store.batch_count(None).unwrap(), 3);

    let raw = store.range(&query("d1", 0, i64::MAX, None)).unwrap();
    assert_eq!(raw.points.len(), 20);
    assert!(raw.points.windows(2).all(|w| w[0].ts_ns < w[1].ts_ns));
    assert_eq!(raw.points[0].value, 50.0);
    // Buckets of 5 s: min, max and mean of each.
    let buckets = store
        .range(&query("d1", BASE, BASE + 9 * SECOND, Some(5 * SECOND)))
        .unwrap()
        .buckets;
    assert_eq!(buckets.len(), 2, "{buckets:?}");
    assert_eq!(
        (buckets[0].count, buckets[0].min, buckets[0].max),
        (5, 50.0, 52.0)
    );
    assert_eq!(buckets[0].avg, 51.0);
    // Latest: the newest reading, whatever order batches came in.
    store
        .write_batches(&[batch("d1", "main", 0, BASE - 100 * SECOND, 1)])
        .unwrap();
    let latest = store.latest(&dev("d1")).unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].ts_ns, BASE + 109 * SECOND);
    assert_eq!(latest[0].unit, "Cel");
    let series = store.series(None).unwrap();
    assert_eq!(series.len(), 2);

    // Reconnected (a restarted hub): the ledger holds.
    drop(store);
    let store = PostgresTelemetry::connect(url).unwrap();
    assert_eq!(
        store
            .write_batches(&[batch("d1", "main", 2, BASE, 10)])
            .unwrap(),
        vec![Duplicate]
    );
}

#[test]
fn two_replicas_given_the_same_batches_store_each_once() {
    let schema = Schema::new("replicas");
    let url = &schema.url;
    let stores: Vec<PostgresTelemetry> = (0..2)
        .map(|_| PostgresTelemetry::connect(url).unwrap())
        .collect();
    let batches: Vec<BatchWrite> = (1..=200)
        .map(|seq| batch("d1", "main", seq, BASE + seq as i64 * 10 * SECOND, 5))
        .collect();
    let outcomes: Vec<Vec<WriteOutcome>> = std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .iter()
            .map(|store| {
                let batches = &batches;
                s.spawn(move || {
                    let mut out = Vec::new();
                    for chunk in batches.chunks(10) {
                        // A conflict between the two is retryable.
                        loop {
                            match store.write_batches(chunk) {
                                Ok(o) => {
                                    out.extend(o);
                                    break;
                                }
                                Err(e) if e.is_retryable() => continue,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for i in 0..batches.len() {
        let stored = outcomes
            .iter()
            .filter(|o| o[i] == WriteOutcome::Stored)
            .count();
        assert_eq!(stored, 1, "batch {i}");
    }
    assert_eq!(stores[0].batch_count(None).unwrap(), 200);
    let points = stores[1]
        .range(&query("d1", 0, i64::MAX, None))
        .unwrap()
        .points;
    assert_eq!(points.len(), 1000);
}

#[test]
fn replay_hands_batches_on_in_time_order() {
    let schema = Schema::new("replay");
    let url = &schema.url;
    let store = PostgresTelemetry::connect(url).unwrap();
    store
        .write_batches(&[
            batch("d1", "b", 1, BASE + 20 * SECOND, 3),
            batch("d1", "a", 1, BASE, 3),
            batch("d1", "a", 2, BASE + 40 * SECOND, 3),
            batch("d2", "a", 1, BASE + 10 * SECOND, 3),
        ])
        .unwrap();
    let mut seen = Vec::new();
    store
        .replay(&dev("d1"), None, 0, i64::MAX, &mut |b| {
            seen.push((b.stream.clone(), b.seq, b.signals[0].ts_ns[0]));
            Ok(())
        })
        .unwrap();
    assert_eq!(
        seen,
        vec![
            ("a".into(), 1, BASE),
            ("b".into(), 1, BASE + 20 * SECOND),
            ("a".into(), 2, BASE + 40 * SECOND),
        ]
    );
    let mut only_a = 0;
    store
        .replay(&dev("d1"), Some("a"), 0, i64::MAX, &mut |_| {
            only_a += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(only_a, 2);
}

/// The seqs left in the exactly-once ledger, in order.
fn ledger(url: &str) -> Vec<i64> {
    let mut c = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
    c.query("SELECT seq FROM telemetry_seqs ORDER BY seq", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Retention drops whole days, and keeps the ledger to the batches left:
/// a batch it deleted, sent again, is still a duplicate.
#[test]
fn retention_drops_whole_days_and_keeps_the_ledger() {
    let schema = Schema::new("retention");
    let url = &schema.url;
    let store = PostgresTelemetry::connect(url).unwrap();
    let day0 = BASE - BASE.rem_euclid(DAY);
    for day in 0..10 {
        store
            .write_batches(&[batch(
                "d1",
                "main",
                day as u64 + 1,
                day0 + day * DAY + 3600 * SECOND,
                10,
            )])
            .unwrap();
    }
    // A batch starting just before midnight of day 6 and ending after it.
    store
        .write_batches(&[batch("d1", "main", 100, day0 + 7 * DAY - 5 * SECOND, 10)])
        .unwrap();
    let cutoff = day0 + 7 * DAY;
    let expired = store.expire(cutoff).unwrap();
    assert_eq!((expired.batches, expired.readings), (7, 70));
    // Days 0..=5 are dropped; day 6 keeps the batch reaching past the cutoff.
    assert_eq!(expired.segments, 6);
    assert!(expired.bytes > 0);
    let left = store
        .range(&query("d1", 0, cutoff - 1, None))
        .unwrap()
        .points;
    assert_eq!(left.len(), 5);
    assert_eq!(store.batch_count(None).unwrap(), 4);
    assert_eq!(ledger(url), [8, 9, 10, 100]);
    for seq in [1, 7] {
        assert_eq!(
            store
                .write_batches(&[batch("d1", "main", seq, day0, 10)])
                .unwrap(),
            vec![WriteOutcome::Duplicate]
        );
    }
    assert_eq!(ledger(url), [8, 9, 10, 100]);
    // By size: down to the newest day, whatever the limit.
    let shrunk = store.shrink_to(0).unwrap();
    assert_eq!(shrunk.batches, 3);
    let kept = store.range(&query("d1", 0, i64::MAX, None)).unwrap().points;
    assert_eq!(kept.len(), 10);
    assert_eq!(kept[0].ts_ns, day0 + 9 * DAY + 3600 * SECOND);
    // The dropped days held seqs 8, 9 and 100: their rows go, and the floor
    // rises to seq 100 and past day 8. Below it, a batch as old as those is
    // a duplicate (seq 60); one still stored is found in the ledger (seq
    // 10); a fresh one never stored is stored (seq 50: a gateway whose
    // clock was once wrong numbered its old-stamped batches first).
    assert_eq!(ledger(url), [10]);
    let day9 = day0 + 9 * DAY;
    assert_eq!(
        store
            .write_batches(&[
                batch("d1", "main", 60, day0 + 3 * DAY, 10),
                batch("d1", "main", 10, day9 + 3600 * SECOND, 10),
                batch("d1", "main", 50, day9 + 2 * 3600 * SECOND, 10),
                batch("d1", "main", 101, day9 + 3 * 3600 * SECOND, 10),
            ])
            .unwrap(),
        vec![
            WriteOutcome::Duplicate,
            WriteOutcome::Duplicate,
            WriteOutcome::Stored,
            WriteOutcome::Stored
        ]
    );
    assert_eq!(ledger(url), [10, 50, 101]);
}

/// A day partition one replica's retention drops while another replica
/// still counts it as made: that replica's next write for the day fails
/// once (the devices resend), and the one after makes the partition again.
#[test]
fn a_day_dropped_by_another_replica_is_made_again() {
    let schema = Schema::new("dropped_day");
    let (a, b) = (
        PostgresTelemetry::connect(&schema.url).unwrap(),
        PostgresTelemetry::connect(&schema.url).unwrap(),
    );
    let day0 = BASE - BASE.rem_euclid(DAY);
    b.write_batches(&[batch("d1", "main", 1, day0 + SECOND, 10)])
        .unwrap();
    a.write_batches(&[batch("d1", "main", 2, day0 + 3 * DAY, 10)])
        .unwrap();
    assert_eq!(a.expire(day0 + 2 * DAY).unwrap().segments, 1);
    let late = batch("d1", "main", 3, day0 + 2 * SECOND, 10);
    let stored = b
        .write_batches(std::slice::from_ref(&late))
        .or_else(|_| b.write_batches(std::slice::from_ref(&late)));
    assert_eq!(stored.unwrap(), vec![WriteOutcome::Stored]);
    assert_eq!(b.batch_count(None).unwrap(), 2);
}

/// A new day's partition is made while a long query reads the table (a
/// replay for training): it once waited for the query, and every
/// replica's inserts queued behind it.
#[test]
fn a_new_day_is_stored_while_a_long_query_reads_the_table() {
    let schema = Schema::new("new_day");
    let store = PostgresTelemetry::connect(&schema.url).unwrap();
    let day0 = BASE - BASE.rem_euclid(DAY);
    store
        .write_batches(&[batch("d1", "main", 1, day0 + SECOND, 10)])
        .unwrap();
    let mut reader = ::postgres::Client::connect(&schema.url, ::postgres::NoTls).unwrap();
    let mut long = reader.transaction().unwrap();
    long.query("SELECT count(*) FROM telemetry_batches", &[])
        .unwrap();
    let (done, stored) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let out = store.write_batches(&[batch("d1", "main", 2, day0 + 2 * DAY, 10)]);
            let _ = done.send(out.map_err(|e| e.to_string()));
        });
        let out = stored.recv_timeout(std::time::Duration::from_secs(30));
        // Let the writer go either way before judging.
        long.rollback().unwrap();
        assert_eq!(
            out.expect("stored without waiting for the reader").unwrap(),
            vec![WriteOutcome::Stored]
        );
    });
    assert_eq!(store.batch_count(None).unwrap(), 2);
}

#[test]
fn a_lost_connection_is_made_again() {
    let schema = Schema::new("reconnect");
    let name = format!("strata_reconnect_{}", std::process::id());
    let url = format!("{} application_name={name}", schema.url);
    let store = PostgresTelemetry::connect(&url).unwrap();
    store
        .write_batches(&[batch("d1", "main", 1, BASE, 5)])
        .unwrap();
    // The server ends the store's sessions (a restart, a failover).
    assert_eq!(end_sessions(&name), 2);
    // The next calls may fail once each, as retryable, then work again.
    let write = || store.write_batches(&[batch("d1", "main", 2, BASE + 10 * SECOND, 5)]);
    let written = match write() {
        Ok(o) => o,
        Err(e) => {
            assert!(e.is_retryable(), "{e}");
            write().unwrap()
        }
    };
    assert_eq!(written, vec![WriteOutcome::Stored]);
    let count = match store.batch_count(None) {
        Ok(n) => n,
        Err(e) => {
            assert!(e.is_retryable(), "{e}");
            store.batch_count(None).unwrap()
        }
    };
    assert_eq!(count, 2);
}

#[test]
fn the_registry_keeps_the_contract() {
    let schema = Schema::new("registry");
    common::registry_lifecycle(&PostgresRegistry::connect(&schema.url).unwrap());
}

#[test]
fn replicas_share_one_registry() {
    let schema = Schema::new("replicas");
    // Two replicas start at once on an empty schema: one makes the tables.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| PostgresRegistry::connect(&schema.url).unwrap());
        let b = s.spawn(|| PostgresRegistry::connect(&schema.url).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    let version = |r: &PostgresRegistry| {
        RegistryStore::changes(r)
            .unwrap()
            .expect("a shared registry counts")
    };
    let start = version(&a);
    assert_eq!(version(&b), start);

    a.create_site(&Site {
        id: SiteId::new("plant-1").unwrap(),
        name: "Plant 1".into(),
        region: "eu-west".into(),
        created_ns: 1,
    })
    .unwrap();
    b.create_device(&NewDevice {
        id: dev("d1"),
        site: SiteId::new("plant-1").unwrap(),
        tags: BTreeMap::new(),
        signals: BTreeMap::new(),
        token_sha256: [1; 32],
        token_expires_ns: i64::MAX,
        created_ns: 5,
    })
    .unwrap();
    assert_eq!(version(&a), start + 1, "a new device is a change");
    assert_eq!(a.credentials().unwrap()[0].state, DeviceState::Pending);

    // Both replicas are handed the token at the same moment: one trades it.
    let outcomes = std::thread::scope(|s| {
        let one = s.spawn(|| a.enroll(&dev("d1"), &[1; 32], &[7; 32], 10).unwrap());
        let two = s.spawn(|| b.enroll(&dev("d1"), &[1; 32], &[8; 32], 10).unwrap());
        [one.join().unwrap(), two.join().unwrap()]
    });
    assert_eq!(
        outcomes
            .iter()
            .filter(|&&o| o == EnrollOutcome::Enrolled)
            .count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&EnrollOutcome::NotPending),
        "{outcomes:?}"
    );
    let stored = b.credentials().unwrap()[0].credential_sha256.unwrap();
    let winner = if outcomes[0] == EnrollOutcome::Enrolled {
        [7; 32]
    } else {
        [8; 32]
    };
    assert_eq!(stored, winner);
    assert_eq!(version(&b), start + 2);

    // Presence and last-seen times are no change for the cache.
    b.set_presence(&[(dev("d1"), true, 100)]).unwrap();
    // Another replica's older news arrives late: it is logged, not taken.
    a.set_presence(&[(dev("d1"), false, 90)]).unwrap();
    a.touch(&[(dev("d1"), 120)]).unwrap();
    let d = b.device(&dev("d1")).unwrap().unwrap();
    assert_eq!((d.online, d.last_seen_ns), (true, Some(120)));
    assert_eq!(
        b.presence_log(0, 200).unwrap(),
        vec![(dev("d1"), 90, false), (dev("d1"), 100, true)]
    );
    assert_eq!(version(&a), start + 2);

    // Declared signals are in the cache, tags are not.
    let tags = DeviceUpdate {
        tags: Some(BTreeMap::from([("line".into(), "3".into())])),
        ..Default::default()
    };
    assert!(a.update_device(&dev("d1"), &tags).unwrap());
    assert_eq!(version(&b), start + 2);
    let signals = DeviceUpdate {
        signals: Some(BTreeMap::from([("temp".into(), "Cel".into())])),
        ..Default::default()
    };
    assert!(a.update_device(&dev("d1"), &signals).unwrap());
    assert_eq!(version(&b), start + 3);
    assert_eq!(b.credentials().unwrap()[0].signals["temp"], "Cel");

    // Revoked through one replica, revoked for the other.
    assert!(b.revoke(&dev("d1"), 130).unwrap());
    assert!(!a.revoke(&dev("d1"), 140).unwrap(), "once is enough");
    assert_eq!(version(&a), start + 4);
    let cred = &a.credentials().unwrap()[0];
    assert_eq!(
        (cred.state, cred.credential_sha256),
        (DeviceState::Revoked, None)
    );
}

#[test]
fn accounts_keep_the_contract_and_move_their_own_count() {
    let schema = Schema::new("access");
    let a = PostgresAccess::connect(&schema.url).unwrap();
    let registry = PostgresRegistry::connect(&schema.url).unwrap();
    let start = AccessStore::changes(&a).unwrap().expect("shared");
    let devices = RegistryStore::changes(&registry).unwrap();
    common::access_round_trip(&a);
    // Created, updated four times, a token issued, then revoked, three
    // more issued and the old ones deleted at once: eleven changes, and
    // the refused ones (a taken name, an unknown user, a second
    // revocation) none.
    assert_eq!(AccessStore::changes(&a).unwrap(), Some(start + 11));
    assert_eq!(
        RegistryStore::changes(&registry).unwrap(),
        devices,
        "the device cache has nothing to reload"
    );
    // Another replica sees it all.
    let b = PostgresAccess::connect(&schema.url).unwrap();
    assert_eq!(b.tokens().unwrap()[0].id, "t3");
    assert_eq!(b.users().unwrap()[0].role, "viewer");
}

#[test]
fn twins_keep_the_contract_across_replicas() {
    let schema = Schema::new("twins");
    let a = PostgresTwins::connect(&schema.url).unwrap();
    common::twins_merge(&a);
    let b = PostgresTwins::connect(&schema.url).unwrap();
    // Replicas share one epoch, made by whichever connected first.
    let epoch = a.twin_epoch().unwrap();
    assert_eq!(epoch.len(), 32, "{epoch}");
    assert_eq!(b.twin_epoch().unwrap(), epoch);
    let renewed = b.renew_twin_epoch().unwrap();
    assert_ne!(renewed, epoch);
    assert_eq!(a.twin_epoch().unwrap(), renewed, "for every replica");
    let other = Schema::new("twins_other");
    let fresh = PostgresTwins::connect(&other.url).unwrap();
    assert_ne!(fresh.twin_epoch().unwrap(), epoch);
    let d = dev("m-9");
    // Two replicas set keys of one device's desired document at once.
    std::thread::scope(|s| {
        for (store, key) in [(&a, "models"), (&b, "updates")] {
            let d = &d;
            s.spawn(move || {
                for i in 0..20 {
                    store
                        .set_desired(d, &format!("{key}-{i}"), &serde_json::json!(i), i)
                        .unwrap();
                }
            });
        }
    });
    let twin = b.twin(&d).unwrap();
    assert_eq!(twin.desired_version, 40, "every change counted once");
    assert_eq!(twin.desired.as_object().unwrap().len(), 40, "and none lost");
    // Both edit one key at once, each adding to the list it reads there:
    // every edit reads what the other wrote before it.
    common::edit_one_key_at_once(&[&a, &b], &d, "models", 20);
    let twin = a.twin(&d).unwrap();
    assert_eq!(twin.desired_version, 80);
    assert_eq!(
        twin.desired["models"].as_array().unwrap().len(),
        40,
        "none lost"
    );
    // A late report through the other replica does not replace a newer one.
    a.set_reported(&d, &serde_json::json!({"desired_version": 40}), 200)
        .unwrap();
    b.set_reported(&d, &serde_json::json!({"desired_version": 39}), 150)
        .unwrap();
    let twin = a.twin(&d).unwrap();
    assert_eq!(
        (twin.reported["desired_version"].as_u64(), twin.reported_ns),
        (Some(40), Some(200))
    );
}

#[test]
fn a_replica_following_the_desired_changes_misses_none_of_another_replicas() {
    let schema = Schema::new("twin_log");
    let (a, b) = (
        PostgresTwins::connect(&schema.url).unwrap(),
        PostgresTwins::connect(&schema.url).unwrap(),
    );
    let start = b
        .desired_position()
        .unwrap()
        .expect("a shared store has a log");
    let (nothing, same) = b.desired_after(start, 100).unwrap();
    assert!(nothing.is_empty());
    assert_eq!(same, start);
    // A report is not a desired change.
    a.set_reported(&dev("r-1"), &serde_json::json!({}), 1)
        .unwrap();
    assert!(b.desired_after(start, 100).unwrap().0.is_empty());

    // Replica A changes 30 twins from two threads while B follows, a few
    // at a time: B sees each device's newest desired document, and once
    // more only for a change it had not seen.
    let mut seen: std::collections::HashMap<String, u64> = Default::default();
    let mut position = start;
    let mut follow = |seen: &mut std::collections::HashMap<String, u64>| {
        let (twins, reached) = b.desired_after(position, 7).unwrap();
        assert!(reached >= position);
        for t in twins {
            let before = seen.insert(t.device.to_string(), t.desired_version);
            assert!(before < Some(t.desired_version), "{t:?} came twice");
        }
        position = reached;
    };
    std::thread::scope(|s| {
        for half in 0..2 {
            let a = &a;
            s.spawn(move || {
                for i in 0..15 {
                    let device = dev(&format!("d-{}", i % 10 + half * 10));
                    a.set_desired(&device, &format!("k{i}"), &serde_json::json!(i), i)
                        .unwrap();
                }
            });
        }
        for _ in 0..20 {
            follow(&mut seen);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });
    for _ in 0..10 {
        follow(&mut seen);
    }
    assert_eq!(seen.len(), 20, "{seen:?}");
    for (device, version) in &seen {
        let twin = a.twin(&dev(device)).unwrap();
        assert_eq!(*version, twin.desired_version, "{device}: the newest");
    }
    assert_eq!(b.desired_position().unwrap(), Some(position));
}

#[test]
fn a_replica_following_the_command_log_gets_every_command_of_the_others_once() {
    let schema = Schema::new("command_log");
    let (a, b) = (
        PostgresCommands::connect(&schema.url).unwrap(),
        PostgresCommands::connect(&schema.url).unwrap(),
    );
    // What was sent before B started following is not relayed to it.
    a.append("a", &dev("early"), b"{}", 1).unwrap();
    let start = b.position().unwrap();
    let (nothing, same) = b.after(start, 100).unwrap();
    assert!(nothing.is_empty());
    assert_eq!(same, start);

    // Two threads of replica A send 40 commands while B follows, a few at
    // a time: B reads each once, in the order A sent them from each
    // thread, with what A sent.
    let mut seen: Vec<RelayedCommand> = Vec::new();
    let mut position = start;
    let mut follow = |seen: &mut Vec<RelayedCommand>| {
        let (commands, reached) = b.after(position, 7).unwrap();
        assert!(commands.len() <= 7);
        assert!(
            commands
                .iter()
                .all(|c| c.position > position && c.position <= reached)
        );
        seen.extend(commands);
        position = reached;
    };
    std::thread::scope(|s| {
        for thread in 0..2 {
            let a = &a;
            s.spawn(move || {
                for i in 0..20 {
                    let payload = format!("{{\"n\":{i}}}");
                    let device = dev(&format!("t-{thread}"));
                    a.append("a", &device, payload.as_bytes(), i).unwrap();
                }
            });
        }
        for _ in 0..20 {
            follow(&mut seen);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });
    for _ in 0..10 {
        follow(&mut seen);
    }
    assert_eq!(seen.len(), 40, "{seen:?}");
    for thread in 0..2 {
        let sent: Vec<String> = seen
            .iter()
            .filter(|c| c.device.as_str() == format!("t-{thread}"))
            .map(|c| String::from_utf8(c.payload.clone()).unwrap())
            .collect();
        let want: Vec<String> = (0..20).map(|i| format!("{{\"n\":{i}}}")).collect();
        assert_eq!(
            sent, want,
            "thread {thread}'s commands, once each, in order"
        );
    }
    assert!(seen.iter().all(|c| c.origin == "a"));
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(b.position().unwrap(), position);

    // Old commands are forgotten; the positions go on.
    assert_eq!(
        a.forget_before(10).unwrap(),
        21,
        "the early one and ten of each thread's"
    );
    assert_eq!(b.after(start, 100).unwrap().0.len(), 20);
    let next = a.append("b", &dev("late"), b"{}", 99).unwrap();
    assert_eq!(next, position + 1);
}

fn audit_entry(seq: u64, ts_ns: i64, action: &str) -> AuditEntry {
    AuditEntry {
        seq,
        ts_ns,
        actor: "alice".into(),
        action: action.into(),
        target: format!("t{seq}"),
        outcome: "ok".into(),
        detail: "{}".into(),
        sha256: format!("{seq:064x}"),
        replica: None,
    }
}

fn audit_checkpoint(seq: u64) -> AuditCheckpoint {
    AuditCheckpoint {
        seq,
        sha256: format!("{seq:064x}"),
        ts_ns: seq as i64,
        key_id: "k".into(),
        signature: "00".into(),
    }
}

#[test]
fn each_replica_writes_an_audit_log_of_its_own_and_reads_them_all() {
    let schema = Schema::new("audit");
    let a = PostgresAudit::connect(&schema.url, "aaaa", "aa-key").unwrap();
    let b = PostgresAudit::connect(&schema.url, "bbbb", "bb-key").unwrap();
    // A second replica with A's key is refused while A runs.
    let twin = PostgresAudit::connect(&schema.url, "aaaa", "aa-key");
    assert!(
        matches!(&twin, Err(Error::Conflict(m)) if m.contains("same audit key")),
        "{:?}",
        twin.err()
    );

    // Each numbers its own entries from 1.
    a.append_audit(
        &[
            audit_entry(1, 10, "user.create"),
            audit_entry(2, 30, "token.issue"),
        ],
        &audit_checkpoint(2),
    )
    .unwrap();
    b.append_audit(&[audit_entry(1, 20, "device.revoke")], &audit_checkpoint(1))
        .unwrap();
    assert!(
        b.append_audit(&[audit_entry(1, 25, "again")], &audit_checkpoint(1))
            .is_err(),
        "seq taken"
    );
    let seqs = |s: &dyn AuditStore| -> Vec<u64> {
        s.audit_entries(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    };
    assert_eq!(seqs(&a), [1, 2]);
    assert_eq!(seqs(&b), [1]);
    assert_eq!(a.audit_head().unwrap().unwrap().seq, 2);
    assert_eq!(b.audit_checkpoints(0, 10).unwrap(), [audit_checkpoint(1)]);

    // Listing reads every replica's, newest first, each naming its log.
    let listed: Vec<(Option<String>, String)> = b
        .recent_audit(None, None, 10)
        .unwrap()
        .into_iter()
        .map(|e| (e.replica, e.action))
        .collect();
    let name = |r: &str| Some(r.to_string());
    assert_eq!(
        listed,
        [
            (name("aaaa"), "token.issue".to_string()),
            (name("bbbb"), "device.revoke".to_string()),
            (name("aaaa"), "user.create".to_string()),
        ]
    );
    assert_eq!(
        a.recent_audit(None, Some("device.revoke"), 10)
            .unwrap()
            .len(),
        1
    );
    let logs = a.replica_logs().unwrap();
    assert_eq!(
        logs,
        [
            ReplicaLog {
                replica: "aaaa".into(),
                public_key: "aa-key".into()
            },
            ReplicaLog {
                replica: "bbbb".into(),
                public_key: "bb-key".into()
            },
        ]
    );
    // Another replica's log reads as its own store would, and takes no
    // entry.
    let other = a.replica_log("bbbb").unwrap();
    assert_eq!(seqs(other.as_ref()), [1]);
    assert!(
        other
            .append_audit(&[audit_entry(2, 40, "forged")], &audit_checkpoint(2))
            .is_err()
    );

    // Once A stops, a replica with its key carries its log on.
    drop(a);
    let again = PostgresAudit::connect(&schema.url, "aaaa", "aa-key").unwrap();
    assert_eq!(again.audit_head().unwrap().unwrap().seq, 2);
}

#[test]
fn campaigns_keep_the_contract_and_replicas_take_turns_on_each() {
    let schema = Schema::new("campaigns");
    let a = PostgresCampaigns::connect(&schema.url).unwrap();
    common::campaigns_save_and_refuse_stale_revisions(&a);
    let name = format!("strata_campaigns_{}", std::process::id());
    let b = PostgresCampaigns::connect(&format!("{} application_name={name}", schema.url)).unwrap();
    let listed = b.campaigns().unwrap();
    assert_eq!(listed, a.campaigns().unwrap(), "one list for both");
    let id = listed[0].id;

    // While A holds campaign `id`, B waits for it; another campaign, or
    // creating one, it takes at once.
    let held = a.lock_campaign(Some(id)).unwrap();
    drop(b.lock_campaign(Some(id + 1)).unwrap());
    drop(b.lock_campaign(None).unwrap());
    let taken = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let lock = b.lock_campaign(Some(id)).unwrap();
            taken.store(true, std::sync::atomic::Ordering::SeqCst);
            lock
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!taken.load(std::sync::atomic::Ordering::SeqCst), "B waits");
        drop(held);
        let lock = waiter.join().unwrap();
        assert!(taken.load(std::sync::atomic::Ordering::SeqCst));
        drop(lock);
    });
    // A replica whose session ends (it stopped, its connection broke)
    // gives up what it held, and takes locks again on a new session.
    std::mem::forget(b.lock_campaign(Some(id)).unwrap());
    assert_eq!(end_sessions(&name), 2, "its data and lock sessions");
    drop(a.lock_campaign(Some(id)).unwrap());
    drop(b.lock_campaign(Some(id)).unwrap());
}

#[test]
fn sketches_and_actions_keep_the_contract_across_replicas() {
    let schema = Schema::new("records");
    let a = PostgresRecords::connect(&schema.url).unwrap();
    common::sketches_once_by_window(&a);
    common::control_actions_once_newest_first(&a);
    // What one replica stored (and kept past retention), another reads,
    // and a resend through it is a duplicate.
    let b = PostgresRecords::connect(&schema.url).unwrap();
    assert_eq!(b.sketches("rul", 2, 0, 1000).unwrap().len(), 1);
    let first = &b.sketches("rul", 2, 0, 1000).unwrap()[0];
    assert!(!b.add_sketches(&first.device, &first.batch, 50).unwrap());
    let all = b
        .actions(&ActionFilter {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.len(), 3);
    assert!(!b.record_action(&all[0]).unwrap());
}

#[test]
fn models_keep_the_contract_and_replicas_number_versions_once() {
    let schema = Schema::new("models");
    let a = PostgresModels::connect(&schema.url).unwrap();
    common::models_count_versions_and_move_aliases(&a);
    // Two replicas register versions of one model at once: every version
    // gets its own number.
    let b = PostgresModels::connect(&schema.url).unwrap();
    let numbers = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for store in [&a, &b] {
            let numbers = &numbers;
            s.spawn(move || {
                for _ in 0..15 {
                    let n = store
                        .add_model_version(&common::model_version("pump"))
                        .unwrap();
                    numbers.lock().unwrap().push(n);
                }
            });
        }
    });
    let mut numbers = numbers.into_inner().unwrap();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=30).collect::<Vec<u32>>());
    // What one replica moved, the other reads.
    assert_eq!(b.set_alias("pump", "champion", 30, 1).unwrap(), None);
    assert_eq!(a.model("pump").unwrap().unwrap().aliases["champion"], 30);
    assert_eq!(a.set_alias("pump", "champion", 29, 2).unwrap(), Some(30));
    // A move decided on where the alias was loses to one made meanwhile.
    assert!(!b.move_alias("pump", "champion", Some(30), 28, 3).unwrap());
    assert!(b.move_alias("pump", "champion", Some(29), 28, 3).unwrap());
    assert_eq!(a.model("pump").unwrap().unwrap().aliases["champion"], 28);
    assert_eq!(b.model_versions("pump").unwrap().len(), 30);
}

#[test]
fn releases_keep_the_contract_across_replicas() {
    let schema = Schema::new("releases");
    let a = PostgresReleases::connect(&schema.url).unwrap();
    common::releases_once_and_latest_known(&a);
    // The other replica sees them, and cannot accept a version again.
    let b = PostgresReleases::connect(&schema.url).unwrap();
    assert_eq!(b.latest_release_version("model", "rul").unwrap(), Some(5));
    let mut again = b.releases(None, None).unwrap().remove(0);
    assert!(matches!(b.add_release(&again), Err(Error::Conflict(_))));
    again.version = u64::MAX;
    assert!(matches!(b.add_release(&again), Err(Error::Conflict(_))));
}

#[test]
fn one_replica_at_a_time_holds_a_lease_and_another_takes_it_when_it_goes() {
    let schema = Schema::new("lease");
    let name = format!("strata_lease_{}", std::process::id());
    let url = format!("{} application_name={name}", schema.url);
    let a = PostgresLease::connect(&url, "retrain").unwrap();
    let b = PostgresLease::connect(&schema.url, "retrain").unwrap();
    let other_duty = PostgresLease::connect(&schema.url, "rollouts").unwrap();
    assert!(a.held().unwrap());
    assert!(!b.held().unwrap());
    assert!(a.held().unwrap(), "a holder keeps it");
    assert!(!b.held().unwrap());
    assert!(other_duty.held().unwrap(), "each duty has its own lease");
    // Another schema of the same database is another set of hubs.
    let apart = Schema::new("lease_apart");
    assert!(
        PostgresLease::connect(&apart.url, "retrain")
            .unwrap()
            .held()
            .unwrap()
    );

    // The holder's session ends (its replica stopped, its connection
    // broke): it no longer holds the lease, and the other takes it.
    assert_eq!(end_sessions(&name), 1);
    assert!(a.held().is_err() || !a.held().unwrap());
    assert!(b.held().unwrap());
    assert!(!a.held().unwrap(), "back, but the other holds it now");
    // Dropped with its replica, the lease is free again.
    drop(b);
    assert!(a.held().unwrap());
}

#[test]
fn jobs_keep_the_contract_replicas_claim_each_once_and_an_abandoned_one_is_queued_again() {
    let schema = Schema::new("jobs");
    let a = PostgresJobs::connect(&schema.url).unwrap();
    let running = common::jobs_go_through_their_life(&a);
    // Another replica starting puts nothing back: the job may be running
    // at the replica that took it.
    let b = PostgresJobs::connect(&schema.url).unwrap();
    assert_eq!(b.requeue_running_jobs(0).unwrap(), 0);
    // Its worker says it is alive; silent for longer, it is abandoned.
    let silent = strata_store::postgres::SILENT_NS;
    let first = a.job(running).unwrap().unwrap().claim();
    assert!(b.job_alive(first, 100).unwrap());
    assert_eq!(b.requeue_abandoned_jobs(100 + silent - 1).unwrap(), 0);
    assert_eq!(b.requeue_abandoned_jobs(100 + silent + 1).unwrap(), 1);
    let again = b.claim_job(200).unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (running, 2));
    assert_eq!(a.job(running).unwrap().unwrap().state, JobState::Running);
    // The silent worker, back, learns the job is no longer its own and
    // records nothing; the new one carries on and ends it.
    assert!(!a.job_alive(first, 210).unwrap());
    assert!(!a.job_progress(first, 0.9, "stale", 210).unwrap());
    assert!(
        !a.finish_job(first, JobState::Succeeded, "stale", None, 210)
            .unwrap()
    );
    assert!(b.job_alive(again.claim(), 220).unwrap());
    assert!(
        b.finish_job(again.claim(), JobState::Succeeded, "done", None, 230)
            .unwrap()
    );
    let ended = a.job(running).unwrap().unwrap();
    assert_eq!(
        (ended.state, ended.finished_ns),
        (JobState::Succeeded, Some(230))
    );
    assert!(
        !a.job_log(running)
            .unwrap()
            .iter()
            .any(|l| l.line.contains("stale"))
    );

    // A job whose worker goes silent every time it runs fails at the
    // third time instead of being queued again.
    let doomed = a
        .create_job("train", &serde_json::json!({"crash": true}), 300)
        .unwrap();
    for attempt in 1..=strata_store::MAX_JOB_ATTEMPTS {
        let at = 300 + i64::from(attempt) * 10 * silent;
        let claimed = b.claim_job(at).unwrap().unwrap();
        assert_eq!((claimed.id, claimed.attempts), (doomed, attempt));
        let requeued = b.requeue_abandoned_jobs(at + 2 * silent).unwrap();
        assert_eq!(
            requeued,
            u64::from(attempt < strata_store::MAX_JOB_ATTEMPTS)
        );
    }
    let failed = a.job(doomed).unwrap().unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert!(
        failed.message.contains("cut short every time"),
        "{}",
        failed.message
    );

    // Two replicas' workers taking jobs at once take each once.
    for i in 0..40 {
        a.create_job("train", &serde_json::json!({ "i": i }), 300)
            .unwrap();
    }
    let taken = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for store in [&a, &b] {
            let taken = &taken;
            s.spawn(move || {
                while let Some(job) = store.claim_job(400).unwrap() {
                    taken.lock().unwrap().push((job.id, job.attempts));
                }
            });
        }
    });
    let mut taken = taken.into_inner().unwrap();
    taken.sort_unstable();
    taken.dedup();
    assert_eq!(taken.len(), 40, "each job taken once");
    assert!(taken.iter().all(|&(_, attempts)| attempts == 1));
    common::jobs_are_cancelled(&b);
}

#[test]
fn retraining_cycles_keep_the_contract_across_replicas() {
    let schema = Schema::new("cycles");
    let a = PostgresCycles::connect(&schema.url).unwrap();
    common::cycles_round_trip(&a);
    let b = PostgresCycles::connect(&schema.url).unwrap();
    use strata_store::retrain::RetrainStore;
    assert_eq!(b.cycles(None, 10).unwrap().len(), 3);
}

#[test]
fn labels_keep_the_contract_across_replicas() {
    let schema = Schema::new("labels");
    let a = strata_store::postgres::PostgresLabels::connect(&schema.url).unwrap();
    common::labels_replace_and_read_back(&a);
    // Sent again through another replica: a replacement, not a new label.
    let b = strata_store::postgres::PostgresLabels::connect(&schema.url).unwrap();
    use strata_store::labels::LabelStore;
    let again = a.labels("label.rul_h", None, 0, 100).unwrap();
    assert_eq!(b.add_labels(&again, 3).unwrap(), 0);
    assert_eq!(b.labels("label.rul_h", None, 0, 100).unwrap(), again);
}
