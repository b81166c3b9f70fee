//! The SQLite store against its contract: exactly-once writes, queries,
//! persistence across reopen, and the registry lifecycle.

use strata_proto::{DeviceId, SignalSeries, TelemetryBatch};
use strata_store::*;

mod common;

fn dev(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

fn batch(device: &str, stream: &str, seq: u64, t0: i64, n: usize) -> BatchWrite {
    BatchWrite {
        device: dev(device),
        received_ns: 0,
        batch: EncodedBatch::encode(&TelemetryBatch {
            stream: stream.into(),
            seq,
            signals: vec![SignalSeries {
                name: "temp".into(),
                unit: "Cel".into(),
                ts_ns: (0..n).map(|i| t0 + i as i64 * 10).collect(),
                values: (0..n).map(|i| (t0 as f64) + i as f64).collect(),
                quality: vec![],
            }],
        }),
    }
}

#[test]
fn stores_each_batch_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    let a = batch("d1", "main", 1, 0, 10);
    let out = store
        .write_batches(&[a.clone(), a.clone(), batch("d1", "main", 2, 100, 10)])
        .unwrap();
    assert_eq!(
        out,
        vec![
            WriteOutcome::Stored,
            WriteOutcome::Duplicate,
            WriteOutcome::Stored
        ]
    );
    assert_eq!(
        store.write_batches(&[a]).unwrap(),
        vec![WriteOutcome::Duplicate]
    );
    // Same stream and seq from another device is another batch.
    assert_eq!(
        store
            .write_batches(&[batch("d2", "main", 1, 0, 10)])
            .unwrap(),
        vec![WriteOutcome::Stored]
    );
    assert_eq!(store.batch_count(Some(&dev("d1"))).unwrap(), 2);
    assert_eq!(store.batch_count(None).unwrap(), 3);

    let q = RangeQuery {
        device: dev("d1"),
        signal: "temp".into(),
        from_ns: 0,
        to_ns: i64::MAX,
        bucket_ns: None,
        limit: 1000,
    };
    let raw = store.range(&q).unwrap();
    assert_eq!(raw.points.len(), 20, "duplicates must not add readings");
    assert!(raw.points.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
}

#[test]
fn downsamples_and_reports_latest() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Fsync).unwrap();
    // Out of order on purpose: the later batch first.
    store
        .write_batches(&[batch("d1", "s", 2, 100, 10), batch("d1", "s", 1, 0, 10)])
        .unwrap();
    let q = RangeQuery {
        device: dev("d1"),
        signal: "temp".into(),
        from_ns: 0,
        to_ns: 195,
        bucket_ns: Some(50),
        limit: 100,
    };
    let r = store.range(&q).unwrap();
    // Readings at 0,10,..,90 valued 0..9 and 100,110,..,190 valued 100..109.
    assert_eq!(r.buckets.len(), 4);
    assert_eq!(
        r.buckets[0],
        Bucket {
            start_ns: 0,
            min: 0.0,
            max: 4.0,
            avg: 2.0,
            count: 5
        }
    );
    assert_eq!(
        r.buckets[3],
        Bucket {
            start_ns: 150,
            min: 105.0,
            max: 109.0,
            avg: 107.0,
            count: 5
        }
    );
    let cut = store
        .range(&RangeQuery {
            limit: 2,
            ..q.clone()
        })
        .unwrap();
    assert!(cut.truncated && cut.buckets.len() == 2);

    let latest = store.latest(&dev("d1")).unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!((latest[0].ts_ns, latest[0].value), (190, 109.0));
    // An older batch arriving late does not move "latest" back.
    store
        .write_batches(&[batch("d1", "s", 0, -500, 3)])
        .unwrap();
    assert_eq!(store.latest(&dev("d1")).unwrap()[0].ts_ns, 190);
    let series = store.series(None).unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].unit, "Cel");
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path(), Durability::Fsync).unwrap();
        store.write_batches(&[batch("d1", "s", 7, 0, 5)]).unwrap();
    }
    let store = SqliteStore::open(dir.path(), Durability::Fsync).unwrap();
    assert_eq!(
        store.write_batches(&[batch("d1", "s", 7, 0, 5)]).unwrap(),
        vec![WriteOutcome::Duplicate]
    );
    assert_eq!(
        store.write_batches(&[batch("d1", "s", 8, 50, 5)]).unwrap(),
        vec![WriteOutcome::Stored]
    );
}

#[test]
fn blocks_live_in_segment_files_and_a_crashed_append_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let segment = dir.path().join("telemetry").join("00000000.seg");
    let written = {
        let store = SqliteStore::open(dir.path(), Durability::Fsync).unwrap();
        store
            .write_batches(&[batch("d1", "s", 1, 0, 5), batch("d2", "s", 1, 0, 3)])
            .unwrap();
        std::fs::metadata(&segment).unwrap().len()
    };
    assert!(written > 0, "the blocks went to the segment");
    // What a crash between the segment append and the commit leaves.
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&[42; 100]);
    std::fs::write(&segment, &bytes).unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Fsync).unwrap();
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), written);
    assert_eq!(timestamps(&store, "d1", 0, 1000).len(), 5);
    store.write_batches(&[batch("d1", "s", 2, 50, 5)]).unwrap();
    assert_eq!(timestamps(&store, "d1", 0, 1000).len(), 10);
    assert_eq!(timestamps(&store, "d2", 0, 1000).len(), 3);
    // A damaged block is an error, not wrong readings.
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    let q = RangeQuery {
        device: dev("d1"),
        signal: "temp".into(),
        from_ns: 0,
        to_ns: 1000,
        bucket_ns: None,
        limit: 100,
    };
    assert!(matches!(store.range(&q), Err(Error::Corrupt(_))));
    // A signal the device never sent is answered without reading a block.
    let none = store
        .range(&RangeQuery {
            signal: "never-sent".into(),
            ..q
        })
        .unwrap();
    assert!(none.points.is_empty() && none.buckets.is_empty() && !none.truncated);
}

#[test]
fn desired_keys_merge_and_count_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    common::twins_merge(&store);
    // The twins' epoch is made once: the same after a reopen, another in
    // another store.
    let epoch = store.twin_epoch().unwrap();
    assert_eq!(epoch.len(), 32, "{epoch}");
    drop(store);
    let again = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    assert_eq!(again.twin_epoch().unwrap(), epoch);
    let renewed = again.renew_twin_epoch().unwrap();
    assert_ne!(renewed, epoch);
    assert_eq!(again.twin_epoch().unwrap(), renewed);
    let other = tempfile::tempdir().unwrap();
    let fresh = SqliteStore::open(other.path(), Durability::Process).unwrap();
    assert_ne!(fresh.twin_epoch().unwrap(), epoch);
}

#[test]
fn users_and_tokens_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    common::access_round_trip(&store);
    assert_eq!(AccessStore::changes(&store).unwrap(), None);
}

#[test]
fn models_count_versions_and_move_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    common::models_count_versions_and_move_aliases(&store);
}

#[test]
fn releases_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    common::releases_once_and_latest_known(&store);
}

#[test]
fn jobs_go_through_their_life_and_a_restart_requeues_a_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    let running = common::jobs_go_through_their_life(&store);
    // The hub dies here: a restart puts the job back in the queue.
    assert_eq!(store.requeue_running_jobs(15).unwrap(), 1);
    let again = store.claim_job(20).unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (running, 2));
    // A hub that stops cleanly lets it go: that does not count, and the
    // old run can no longer record anything.
    assert!(store.release_job(again.claim()).unwrap());
    assert!(!store.release_job(again.claim()).unwrap());
    let released = store.job(running).unwrap().unwrap();
    assert_eq!(released.state, JobState::Queued);
    let after_stop = store.claim_job(22).unwrap().unwrap();
    assert_eq!(after_stop.attempts, 3);
    assert!(!store.job_progress(again.claim(), 0.5, "stale", 23).unwrap());
    // Cut short again, and a third time: then it fails instead of
    // bringing a hub it crashes down at every start.
    assert_eq!(store.requeue_running_jobs(25).unwrap(), 1);
    let third = store.claim_job(30).unwrap().unwrap();
    assert_eq!(third.attempts, 4);
    assert_eq!(store.requeue_running_jobs(35).unwrap(), 0);
    let failed = store.job(running).unwrap().unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert!(
        failed.message.contains("cut short every time"),
        "{}",
        failed.message
    );
    assert_eq!(failed.finished_ns, Some(35));
    assert!(store.claim_job(40).unwrap().is_none());
    common::jobs_are_cancelled(&store);
}

#[test]
fn retraining_cycles_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    common::cycles_round_trip(&store);
}

#[test]
fn a_label_sent_again_replaces_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    common::labels_replace_and_read_back(&store);
}

#[test]
fn campaigns_are_saved_and_a_stale_save_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    common::campaigns_save_and_refuse_stale_revisions(&store);
}

/// More old presence changes than one transaction deletes: all go, in
/// several, but each device's state at the cut.
#[test]
fn a_long_presence_history_is_forgotten_a_few_thousand_rows_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    let changes: Vec<(DeviceId, bool, i64)> = (0..12_000)
        .map(|i| (dev(if i % 2 == 0 { "a" } else { "b" }), i % 4 < 2, i))
        .collect();
    store.set_presence(&changes).unwrap();
    assert_eq!(store.forget_presence(11_000).unwrap(), 10_998);
    let log = store.presence_log(11_000, 20_000).unwrap();
    assert_eq!(
        log.len(),
        1_002,
        "the 1,000 since the cut and one before it each"
    );
    assert_eq!(log[0], (dev("a"), 10_998, false));
}

#[test]
fn registry_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    common::registry_lifecycle(&store);
    assert_eq!(
        RegistryStore::changes(&store).unwrap(),
        None,
        "only this hub writes its SQLite registry"
    );
}

/// The timestamps of `temp` readings of `device` in `[from_ns, to_ns]`.
fn timestamps(store: &SqliteStore, device: &str, from_ns: i64, to_ns: i64) -> Vec<i64> {
    let q = RangeQuery {
        device: dev(device),
        signal: "temp".into(),
        from_ns,
        to_ns,
        bucket_ns: None,
        limit: 1000,
    };
    store
        .range(&q)
        .unwrap()
        .points
        .iter()
        .map(|p| p.ts_ns)
        .collect()
}

#[test]
fn replay_hands_batches_on_in_time_order_across_blocks_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    // One commit: a block per stream, each holding batches out of order.
    store
        .write_batches(&[
            batch("d1", "a", 1, 300, 5),
            batch("d1", "a", 2, 0, 5),
            batch("d1", "b", 1, 100, 5),
            batch("d1", "b", 2, 500, 5),
        ])
        .unwrap();
    // A later commit with a batch that starts before all of them.
    store.write_batches(&[batch("d1", "a", 3, -50, 5)]).unwrap();
    let mut seen = Vec::new();
    store
        .replay(&dev("d1"), None, i64::MIN, i64::MAX, &mut |b| {
            seen.push((b.signals[0].ts_ns[0], b.stream.clone(), b.seq));
            Ok(())
        })
        .unwrap();
    let starts: Vec<i64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(starts, [-50, 0, 100, 300, 500], "{seen:?}");
    // A window that cuts through a block keeps only overlapping batches.
    let mut inside = Vec::new();
    store
        .replay(&dev("d1"), Some("a"), 10, 320, &mut |b| {
            inside.push(b.seq);
            Ok(())
        })
        .unwrap();
    assert_eq!(inside, [2, 1]);
    let ts = timestamps(&store, "d1", 120, 310);
    assert_eq!(ts, [120, 130, 140, 300, 310]);
}

/// Queries look for a stream's blocks among those that end by the
/// window's end plus the stream's longest block span: a block that spans
/// long (a batch that covers hours) is found by a window in its middle,
/// however many shorter blocks came after it, also after a reopen.
#[test]
fn a_long_block_is_found_by_a_window_in_its_middle() {
    let dir = tempfile::tempdir().unwrap();
    let in_window = |store: &SqliteStore| {
        let mut seqs = Vec::new();
        store
            .replay(&dev("d1"), None, 4_000, 4_005, &mut |b| {
                seqs.push(b.seq);
                Ok(())
            })
            .unwrap();
        (timestamps(store, "d1", 4_000, 4_005), seqs)
    };
    {
        let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
        // Readings at 0, 10, ..., 9990 in one block; then short blocks.
        store
            .write_batches(&[batch("d1", "main", 1, 0, 1000)])
            .unwrap();
        for seq in 2..50 {
            let t0 = 10_000 + seq as i64 * 100;
            store
                .write_batches(&[batch("d1", "main", seq, t0, 2)])
                .unwrap();
        }
        assert_eq!(in_window(&store), (vec![4_000], vec![1]));
    }
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    // A shorter block after the reopen leaves the longest span as it was.
    store
        .write_batches(&[batch("d1", "main", 50, 20_000, 50)])
        .unwrap();
    assert_eq!(in_window(&store), (vec![4_000], vec![1]));
    assert_eq!(timestamps(&store, "d1", 20_480, 20_490), [20_480, 20_490]);

    // Readings ages apart in one block (a sentinel time, or a clock at
    // 1970, beside the right one): the span overflows, and both are found.
    let (old, now) = (-9_000_000_000_000_000_000, 1_800_000_000_000_000_000);
    store
        .write_batches(&[
            batch("d2", "main", 1, old, 1),
            batch("d2", "main", 2, now, 1),
        ])
        .unwrap();
    assert_eq!(timestamps(&store, "d2", now, now + 100), [now]);
    assert_eq!(timestamps(&store, "d2", i64::MIN, old + 5), [old]);
    assert_eq!(timestamps(&store, "d2", i64::MIN, i64::MAX), [old, now]);
}

/// A database written by the one-row-per-batch layout (schema version 4)
/// opens with every batch readable and its seqs still refused as duplicates.
#[test]
fn batches_of_the_old_layout_move_into_blocks() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
        drop(store);
    }
    let db = rusqlite::Connection::open(dir.path().join("strata.db")).unwrap();
    db.execute_batch(
        "DROP TABLE blocks; DROP TABLE stream_seqs;
         DROP TABLE sketch_batches; DROP TABLE labels; DROP TABLE presence_log;
         DROP TABLE retrain_cycles; DROP TABLE alerts; DROP TABLE alert_events;
         DROP TABLE webhook_deliveries; DROP TABLE workflow_runs; DROP TABLE control_actions;
         DROP TABLE audit_log; DROP TABLE audit_checkpoints; DROP TABLE api_tokens;
         DROP TABLE users; DROP TABLE device_certificates;
         ALTER TABLE campaigns DROP COLUMN revision; ALTER TABLE jobs DROP COLUMN cut_short;
         ALTER TABLE streams DROP COLUMN max_span_ns; DROP TABLE twin_epoch;
         ALTER TABLE jobs DROP COLUMN cancelled_ns; ALTER TABLE jobs DROP COLUMN committing;
         CREATE TABLE batches (
            stream_id INTEGER NOT NULL, seq INTEGER NOT NULL, t_min INTEGER NOT NULL,
            t_max INTEGER NOT NULL, readings INTEGER NOT NULL, received_ns INTEGER NOT NULL,
            data BLOB NOT NULL, PRIMARY KEY (stream_id, seq));
         INSERT INTO streams (id, device_id, name) VALUES (1, 'old', 'main');
         INSERT INTO series (device_id, signal, unit) VALUES ('old', 'temp', '');
         PRAGMA user_version = 4;",
    )
    .unwrap();
    // Version-1 batch blobs with version-1 (uncompressed) chunks, as stored then.
    for seq in [1i64, 2, 4] {
        #[rustfmt::skip]
        let chunk = [
            1u8, 0, 1,                       // version 1, no quality, 1 reading
            (seq * 20) as u8,                // zigzag(seq * 10)
            0, 0, 0, 0, 0, 0, 0xf0, 0x3f,    // 1.0
        ];
        let mut blob = vec![1u8, 1, 4, b't', b'e', b'm', b'p', 0, chunk.len() as u8];
        blob.extend_from_slice(&chunk);
        db.execute(
            "INSERT INTO batches VALUES (1, ?1, ?2, ?2, 1, 0, ?3)",
            rusqlite::params![seq, seq * 10, blob],
        )
        .unwrap();
    }
    drop(db);

    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    assert_eq!(store.batch_count(Some(&dev("old"))).unwrap(), 3);
    let ts = timestamps(&store, "old", 0, 100);
    assert_eq!(ts, [10, 20, 40]);
    let out = store
        .write_batches(&[
            batch("old", "main", 2, 0, 1),
            batch("old", "main", 3, 30, 1),
        ])
        .unwrap();
    assert_eq!(out, [WriteOutcome::Duplicate, WriteOutcome::Stored]);
    let db = rusqlite::Connection::open(dir.path().join("strata.db")).unwrap();
    let intervals: Vec<(i64, i64)> = db
        .prepare("SELECT lo, hi FROM stream_seqs WHERE stream_id = 1")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(intervals, [(1, 4)], "seq 3 joined both intervals");
}

/// An alert change, its history and its deliveries are stored together;
/// each endpoint gets its deliveries in queue order, a retried one holding
/// back the later ones, and a given-up one releasing them.
#[test]
fn alerts_with_history_and_deliveries_in_queue_order_per_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    assert_eq!(store.max_alert_id().unwrap(), 0);
    let mut alert = StoredAlert {
        id: 7,
        rule: "hot".into(),
        device: "m1".into(),
        state: "active".into(),
        raised_ns: 100,
        updated_ns: 100,
        body: serde_json::json!({"breaches": 1}),
    };
    let event = |ts_ns: i64, kind: &str| AlertEvent {
        ts_ns,
        kind: kind.into(),
        detail: format!("{kind} at {ts_ns}"),
    };
    let delivery = |endpoint: &str, ev: &str| NewDelivery {
        endpoint: endpoint.into(),
        event: ev.into(),
        body: format!("{{\"event\":\"{ev}\"}}"),
    };
    store
        .record_alert(
            &alert,
            &event(100, "raised"),
            &[delivery("a", "alert.raised"), delivery("b", "alert.raised")],
            &[StoredRun {
                id: 0,
                workflow: "respond".into(),
                state: "running".into(),
                next_ns: 100,
                created_ns: 100,
                updated_ns: 100,
                body: serde_json::json!({"step": 0}),
            }],
        )
        .unwrap();
    let open = AlertFilter {
        open: true,
        ..AlertFilter::default()
    };
    let of_device = |device: &str| AlertFilter {
        device: Some(device.into()),
        ..AlertFilter::default()
    };
    assert_eq!(store.count_alerts(&open).unwrap(), 1);
    assert_eq!(store.count_alerts(&of_device("m2")).unwrap(), 0);
    alert.state = "cleared".into();
    alert.updated_ns = 200;
    store
        .record_alert(
            &alert,
            &event(200, "cleared"),
            &[delivery("a", "alert.cleared")],
            &[],
        )
        .unwrap();
    assert_eq!(store.max_alert_id().unwrap(), 7);
    assert_eq!(store.alert(7).unwrap().unwrap().state, "cleared");
    let kinds: Vec<String> = store
        .alert_events(7)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["raised", "cleared"]);
    assert!(store.alerts(&open, 10).unwrap().is_empty());
    assert_eq!(store.count_alerts(&open).unwrap(), 0);
    assert_eq!(store.count_alerts(&of_device("m1")).unwrap(), 1);

    // Heads: a's first and b's only delivery.
    let due = store.due_deliveries(1_000, 10).unwrap();
    let heads: Vec<(&str, &str)> = due
        .iter()
        .map(|d| (d.endpoint.as_str(), d.event.as_str()))
        .collect();
    assert_eq!(heads, [("a", "alert.raised"), ("b", "alert.raised")]);
    // a's first is retried later: a's second waits behind it.
    let mut first = due[0].clone();
    first.attempts = 1;
    first.next_ns = 5_000;
    first.last_error = Some("HTTP 503".into());
    store.record_attempt(&first).unwrap();
    let due: Vec<String> = store
        .due_deliveries(1_000, 10)
        .unwrap()
        .into_iter()
        .map(|d| d.endpoint)
        .collect();
    assert_eq!(due, ["b"]);
    // b's head is due since it was queued; a's second (queued at 200) is
    // not a head.
    assert_eq!(store.next_delivery_ns().unwrap(), Some(100));
    let mut b = store.due_deliveries(1_000, 10).unwrap().remove(0);
    b.state = "delivered".into();
    store.record_attempt(&b).unwrap();
    assert_eq!(store.next_delivery_ns().unwrap(), Some(5_000));
    // Given up: the next one of a is due.
    first.state = "failed".into();
    store.record_attempt(&first).unwrap();
    let due = store.due_deliveries(1_000, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].event, "alert.cleared");
    assert_eq!(
        store
            .deliveries(Some("a"), Some("failed"), 10)
            .unwrap()
            .len(),
        1
    );

    // History: the delivered and the failed go, the pending one stays;
    // a running run stays until it ends.
    assert_eq!(store.forget_history(150).unwrap(), (2, 0));
    let left: Vec<String> = store
        .deliveries(None, None, 10)
        .unwrap()
        .into_iter()
        .map(|d| d.state)
        .collect();
    assert_eq!(left, ["pending"]);
    assert_eq!(store.forget_history(i64::MAX).unwrap(), (0, 0));
    let mut run = store.runs(None, 10).unwrap().remove(0);
    run.state = "succeeded".into();
    run.updated_ns = 300;
    store.update_run(&run).unwrap();
    assert_eq!(store.forget_history(300).unwrap(), (0, 0));
    assert_eq!(store.forget_history(301).unwrap(), (0, 1));
    assert!(store.runs(None, 10).unwrap().is_empty());

    // Once every row is forgotten, new deliveries and runs still get ids
    // never used before: a receiver deduplicates deliveries by id.
    let mut last = store.deliveries(None, None, 10).unwrap().remove(0);
    let (last_delivery, last_run) = (last.id, run.id);
    last.state = "delivered".into();
    store.record_attempt(&last).unwrap();
    assert_eq!(store.forget_history(i64::MAX).unwrap(), (1, 0));
    assert!(store.deliveries(None, None, 10).unwrap().is_empty());
    alert.id = 8;
    store
        .record_alert(
            &alert,
            &event(400, "raised"),
            &[delivery("a", "alert.raised")],
            &[StoredRun {
                id: 0,
                workflow: "respond".into(),
                state: "running".into(),
                next_ns: 400,
                created_ns: 400,
                updated_ns: 400,
                body: serde_json::json!({"step": 0}),
            }],
        )
        .unwrap();
    assert!(store.deliveries(None, None, 10).unwrap()[0].id > last_delivery);
    assert!(store.runs(None, 10).unwrap()[0].id > last_run);
}

/// Cleared alerts past the history go with their history; open ones,
/// recent ones and the one with the largest id (ids are never given
/// twice) stay.
#[test]
fn cleared_alerts_past_the_history_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    let record = |id: i64, state: &str, updated_ns: i64| {
        let alert = StoredAlert {
            id,
            rule: "hot".into(),
            device: "m1".into(),
            state: state.into(),
            raised_ns: 10,
            updated_ns,
            body: serde_json::json!({}),
        };
        let event = AlertEvent {
            ts_ns: updated_ns,
            kind: state.into(),
            detail: String::new(),
        };
        store.record_alert(&alert, &event, &[], &[]).unwrap();
    };
    record(1, "cleared", 100);
    record(2, "active", 100);
    record(3, "cleared", 500);
    record(4, "cleared", 100);
    assert_eq!(store.forget_cleared_alerts(200).unwrap(), 1);
    assert!(store.alert(1).unwrap().is_none());
    assert!(store.alert_events(1).unwrap().is_empty());
    for kept in [2, 3, 4] {
        assert!(store.alert(kept).unwrap().is_some(), "alert {kept}");
    }
    assert_eq!(store.alert_events(4).unwrap().len(), 1);
    assert_eq!(store.max_alert_id().unwrap(), 4);
}

#[test]
fn control_actions_are_kept_once_per_device_and_seq_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    common::control_actions_once_newest_first(&store);
}

#[test]
fn sketches_are_stored_once_and_read_back_by_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
    common::sketches_once_by_window(&store);
}
