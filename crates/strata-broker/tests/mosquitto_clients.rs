//! End-to-end tests driving the broker with the real `mosquitto_pub` and
//! `mosquitto_sub` clients, in MQTT 3.1.1 and 5.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use strata_broker::{Config, DisconnectReason, QoS};

const VERSIONS: [&str; 2] = ["mqttv311", "mqttv5"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_qos0_1_2_both_versions() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    for v in VERSIONS {
        let mut sub = Sub::spawn(port, v, &["-t", "t/#", "-q", "1"]);
        sub.wait_ready(&b, "t/ready").await;
        // v5 clients honour the CONNACK's Maximum QoS 1 and will not send QoS 2.
        let levels: &[&str] = if v == "mqttv5" {
            &["0", "1"]
        } else {
            &["0", "1", "2"]
        };
        for qos in levels {
            let (ok, out) = publish(
                port,
                v,
                &["-t", "t/a", "-q", qos, "-m", &format!("hello{qos}")],
            )
            .await;
            assert!(ok, "{v} qos {qos}: {out}");
            assert_eq!(
                sub.next_line().await.as_deref(),
                Some(format!("t/a hello{qos}").as_str())
            );
        }
    }
    let stats = b.stats();
    assert_eq!(stats.messages_in, 5, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_delivered_on_subscribe_then_cleared() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    for v in VERSIONS {
        let topic = format!("r/{v}");
        let (ok, out) = publish(port, v, &["-t", &topic, "-r", "-q", "1", "-m", "keep"]).await;
        assert!(ok, "{out}");
        let mut sub = Sub::spawn(port, v, &["-t", "r/#", "-C", "1"]);
        assert_eq!(sub.next_line().await, Some(format!("{topic} keep")));
        assert!(sub.wait_exit().await.success());

        let (ok, out) = publish(port, v, &["-t", &topic, "-r", "-n"]).await;
        assert!(ok, "{out}");
        // After clearing, the first thing a new subscriber sees is the probe.
        let mut sub = Sub::spawn(port, v, &["-t", "r/#"]);
        sub.wait_ready(&b, "r/probe").await;
    }
}

/// MQTT 5 Will Delay Interval: a will waits out its delay, and is not sent
/// at all once the client has connected again within it, even when that
/// connection has ended too (cleanly) before the delay is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_will_waits_and_is_not_sent_once_the_client_came_back() {
    let (b, hooks) = start().await;
    let port = b.local_addr().port();
    let v = "mqttv5";
    let mut watcher = Sub::spawn(port, v, &["-t", "will/#"]);
    watcher.wait_ready(&b, "will/ready").await;
    let with_will = |id: &str| {
        Sub::spawn(
            port,
            v,
            &[
                "-i",
                id,
                "-c",
                "-x",
                "60",
                "-t",
                "x",
                "-k",
                "60",
                "--will-topic",
                "will/delayed",
                "--will-payload",
                id,
                "-D",
                "will",
                "will-delay-interval",
                "2",
            ],
        )
    };

    // Dropped and not back: the will comes once its delay is over.
    let mut lost = with_will("lost");
    wait_until("lost connects", || hooks.has_event("connect:lost")).await;
    let dropped = std::time::Instant::now();
    lost.child.kill().await.unwrap();
    assert_eq!(
        watcher.next_line().await.as_deref(),
        Some("will/delayed lost")
    );
    assert!(dropped.elapsed() >= Duration::from_millis(1900));

    // Dropped, back within the delay, then gone cleanly: no will.
    let mut back = with_will("back");
    wait_until("back connects", || hooks.has_event("connect:back")).await;
    back.child.kill().await.unwrap();
    wait_until("the drop is seen", || {
        hooks.disconnect_reason("back") == Some(DisconnectReason::Abnormal)
    })
    .await;
    let (ok, out) = publish(
        port,
        v,
        &["-i", "back", "-c", "-x", "60", "-t", "other", "-m", "x"],
    )
    .await;
    assert!(ok, "{out}");
    // Past the first connection's delay, only the marker arrives.
    tokio::time::sleep(Duration::from_secs(3)).await;
    b.publish(
        "will/marker",
        Bytes::from_static(b"m"),
        QoS::AtMostOnce,
        false,
    )
    .unwrap();
    assert_eq!(watcher.next_line().await.as_deref(), Some("will/marker m"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_on_killed_client_not_on_clean_disconnect() {
    let (b, hooks) = start().await;
    let port = b.local_addr().port();
    for v in VERSIONS {
        let mut watcher = Sub::spawn(port, v, &["-t", "will/#"]);
        watcher.wait_ready(&b, "will/ready").await;

        let id = format!("dying-{v}");
        let mut dying = Sub::spawn(
            port,
            v,
            &[
                "-i",
                &id,
                "-t",
                "x",
                "--will-topic",
                "will/dead",
                "--will-payload",
                "gone",
                "-k",
                "60",
            ],
        );
        wait_until("dying client connects", || {
            hooks.has_event(&format!("connect:{id}"))
        })
        .await;
        dying.child.kill().await.unwrap();
        assert_eq!(watcher.next_line().await.as_deref(), Some("will/dead gone"));
        wait_until("disconnect hook", || hooks.disconnect_reason(&id).is_some()).await;
        assert_eq!(
            hooks.disconnect_reason(&id),
            Some(DisconnectReason::Abnormal)
        );

        // A client that disconnects cleanly does not leave its will.
        let (ok, out) = publish(
            port,
            v,
            &[
                "-t",
                "other",
                "-m",
                "x",
                "--will-topic",
                "will/clean",
                "--will-payload",
                "no",
            ],
        )
        .await;
        assert!(ok, "{out}");
        b.publish(
            "will/marker",
            Bytes::from_static(b"m"),
            QoS::AtMostOnce,
            false,
        )
        .unwrap();
        assert_eq!(watcher.next_line().await.as_deref(), Some("will/marker m"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_queues_qos1_while_offline() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    for v in VERSIONS {
        let id = format!("persist-{v}");
        let mut session_args = vec!["-c", "-i", &id, "-q", "1", "-t", "p/#"];
        if v == "mqttv5" {
            session_args.extend(["-x", "300"]);
        }
        let mut first = Sub::spawn(port, v, &[&session_args[..], &["-C", "1"]].concat());
        first.wait_ready(&b, "p/ready").await;
        assert!(first.wait_exit().await.success());

        let (ok, out) = publish(port, v, &["-t", "p/1", "-q", "1", "-m", "queued"]).await;
        assert!(ok, "{out}");
        let (ok, out) = publish(port, v, &["-t", "p/2", "-q", "0", "-m", "not-queued"]).await;
        assert!(ok, "{out}");

        let mut again = Sub::spawn(port, v, &session_args);
        assert_eq!(again.next_line().await.as_deref(), Some("p/1 queued"));
        // The QoS 0 message was not kept for the offline session.
        again.wait_ready(&b, "p/after").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_denies_publish_and_subscribe() {
    let (b, hooks) = start().await;
    let port = b.local_addr().port();
    let mut watcher = Sub::spawn(port, "mqttv5", &["-t", "#"]);
    watcher.wait_ready(&b, "watch/ready").await;

    // v5: PUBACK with 0x87 (Not authorized) and the message dropped.
    let (_, out) = publish(port, "mqttv5", &["-t", "denied/x", "-q", "1", "-m", "no"]).await;
    assert!(out.contains("Not authorized"), "{out}");
    // 3.1.1: the connection is closed.
    let (ok, out) = publish(
        port,
        "mqttv311",
        &["-i", "deny311", "-t", "denied/x", "-q", "1", "-m", "no"],
    )
    .await;
    assert!(!ok, "{out}");
    assert_eq!(
        hooks.disconnect_reason("deny311"),
        Some(DisconnectReason::PublishDenied)
    );
    assert_eq!(b.stats().dropped_acl, 2);
    b.publish(
        "watch/marker",
        Bytes::from_static(b"m"),
        QoS::AtMostOnce,
        false,
    )
    .unwrap();
    assert_eq!(
        watcher.next_line().await.as_deref(),
        Some("watch/marker m"),
        "denied messages were not routed"
    );

    for v in VERSIONS {
        let sub = Sub::spawn(port, v, &["-t", "secret/x"]);
        let mut sub = sub;
        sub.wait_exit().await;
        let err = sub.stderr().await;
        assert!(
            err.contains("All subscription requests were denied"),
            "{v}: {err}"
        );
    }
    assert_eq!(b.stats().subscriptions_denied, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refusals_use_the_right_connack_codes() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    let cases = [
        (
            "mqttv311",
            &["-u", "bad", "-P", "x"][..],
            "bad user name or password",
        ),
        ("mqttv311", &["-i", "banned"][..], "not authorised"),
        (
            "mqttv5",
            &["-u", "bad", "-P", "x"][..],
            "Bad User Name or Password",
        ),
        ("mqttv5", &["-i", "banned"][..], "Not authorized"),
    ];
    for (v, args, expected) in cases {
        let (ok, out) = publish(port, v, &[args, &["-t", "a", "-m", "x"]].concat()).await;
        assert!(!ok && out.contains(expected), "{v} {args:?}: {out}");
    }
    assert_eq!(b.stats().connections_refused, 4);
    assert_eq!(b.stats().connections_accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_kicks_a_live_client_and_drops_its_session() {
    let (b, hooks) = start().await;
    let port = b.local_addr().port();
    let mut sub = Sub::spawn(
        port,
        "mqttv5",
        &["-i", "revoked", "-c", "-x", "600", "-q", "1", "-t", "k/#"],
    );
    sub.wait_ready(&b, "k/ready").await;
    assert_eq!(b.connected_clients(), 1);
    assert!(b.disconnect("revoked"));
    assert!(sub.wait_exit().await.success());
    wait_until("disconnect hook", || {
        hooks.disconnect_reason("revoked").is_some()
    })
    .await;
    assert_eq!(
        hooks.disconnect_reason("revoked"),
        Some(DisconnectReason::Kicked)
    );
    assert_eq!(b.connected_clients(), 0);
    assert!(!b.disconnect("revoked"), "session is gone");
    // The persistent session was discarded: nothing is queued for it.
    b.publish("k/1", Bytes::from_static(b"lost"), QoS::AtLeastOnce, false)
        .unwrap();
    let mut again = Sub::spawn(
        port,
        "mqttv5",
        &["-i", "revoked", "-c", "-x", "600", "-q", "1", "-t", "k/#"],
    );
    again.wait_ready(&b, "k/again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_allowed_until_a_time_is_closed_then_with_its_will() {
    let (b, hooks) = start().await;
    let port = b.local_addr().port();
    let mut watcher = Sub::spawn(port, "mqttv5", &["-t", "will/#"]);
    watcher.wait_ready(&b, "will/ready").await;
    // The hooks allow "brief" clients one second (as the hub allows a
    // device until its certificate expires).
    let mut brief = Sub::spawn(
        port,
        "mqttv5",
        &[
            "-i",
            "brief",
            "-t",
            "x",
            "--will-topic",
            "will/brief",
            "--will-payload",
            "expired",
            "-k",
            "60",
        ],
    );
    wait_until("the client connects", || hooks.has_event("connect:brief")).await;
    // mosquitto_sub ends on the server's DISCONNECT (0xA0) without our help.
    assert!(brief.wait_exit().await.success());
    assert_eq!(
        hooks.disconnect_reason("brief"),
        Some(DisconnectReason::Expired)
    );
    assert_eq!(
        watcher.next_line().await.as_deref(),
        Some("will/brief expired")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_takeover_closes_the_old_connection() {
    let (b, hooks) = start().await;
    let port = b.local_addr().port();
    let mut old = Sub::spawn(port, "mqttv5", &["-i", "twin", "-t", "o/#"]);
    old.wait_ready(&b, "o/ready").await;
    let mut new = Sub::spawn(port, "mqttv5", &["-i", "twin", "-t", "n/#"]);
    assert!(
        old.wait_exit().await.success(),
        "old connection closed by the server"
    );
    assert_eq!(
        hooks.disconnect_reason("twin"),
        Some(DisconnectReason::TakenOver)
    );
    new.wait_ready(&b, "n/ready").await;
    assert_eq!(b.connected_clients(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_publish_closes_311_connection() {
    let hooks = std::sync::Arc::new(TestHooks::default());
    let mut config = Config::with_bind("127.0.0.1:0".parse().unwrap());
    config.max_packet_size = 1024;
    let b = start_with(config, hooks.clone()).await;
    let port = b.local_addr().port();
    let big = "x".repeat(2000);
    let (ok, out) = publish(
        port,
        "mqttv311",
        &["-i", "big", "-q", "1", "-t", "a", "-m", &big],
    )
    .await;
    assert!(!ok, "{out}");
    assert_eq!(b.stats().dropped_too_large, 1);
    assert_eq!(
        hooks.disconnect_reason("big"),
        Some(DisconnectReason::ProtocolError)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_round_robins() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    let mut a = Sub::spawn(port, "mqttv5", &["-t", "$share/g/s/#"]);
    let mut c = Sub::spawn(port, "mqttv5", &["-t", "$share/g/s/#"]);
    // Probe until both members have received one.
    let mut got = [false, false];
    let deadline = tokio::time::Instant::now() + WAIT;
    while got != [true, true] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "share group never formed"
        );
        b.publish("s/probe", Bytes::from_static(b"p"), QoS::AtMostOnce, false)
            .unwrap();
        for (i, s) in [&mut a, &mut c].into_iter().enumerate() {
            if let Some(line) = s.try_line(Duration::from_millis(50)).await {
                assert_eq!(line, "s/probe p");
                got[i] = true;
            }
        }
    }
    while a.try_line(Duration::from_millis(150)).await.is_some() {}
    while c.try_line(Duration::from_millis(150)).await.is_some() {}
    for i in 0..4 {
        b.publish("s/m", Bytes::from(format!("{i}")), QoS::AtLeastOnce, false)
            .unwrap();
    }
    let (mut na, mut nc) = (0, 0);
    while na + nc < 4 {
        if a.try_line(Duration::from_millis(50)).await.is_some() {
            na += 1;
        }
        if c.try_line(Duration::from_millis(50)).await.is_some() {
            nc += 1;
        }
    }
    assert_eq!((na, nc), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_error_on_a_taken_port_is_actionable() {
    // Something (the machine's Mosquitto, or the listener below) holds the port.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let err = strata_broker::Broker::start(
        Config::with_bind(addr),
        std::sync::Arc::new(TestHooks::default()),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "MQTT listener cannot bind {addr}: address already in use (is another broker such as Mosquitto running? choose another port)"
        )
    );
    // The machine's own Mosquitto on 1883, when present, gives the same error.
    if std::net::TcpStream::connect("127.0.0.1:1883").is_ok() {
        let err = strata_broker::Broker::start(
            Config::default(),
            std::sync::Arc::new(TestHooks::default()),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, strata_broker::BrokerError::AddressInUse { .. }),
            "{err}"
        );
    }
}
