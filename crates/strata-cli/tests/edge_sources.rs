//! The edge agent's protocol sources against real peers nobody here wrote:
//! an OPC UA server (asyncua), a Modbus TCP server (pymodbus) and a
//! Mosquitto broker. Readings go through `strata edge` to a real `strata
//! hub` and must arrive correctly scaled; each peer is also killed and
//! restarted, and readings must resume.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// Values of `signal` stored at the hub for `device`.
fn values(hub: &HubProcess, device: &str, signal: &str) -> Vec<f64> {
    hub.readings(device, signal)
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

fn is_multiple(v: f64, step: f64) -> bool {
    let k = v / step;
    (k - k.round()).abs() < 1e-6
}

#[test]
fn opcua_subscription_values_arrive_scaled_and_resume_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&dir.path().join("hub"));
    let credential = hub.provision("gw-ua", json!({}));
    let port = free_port().to_string();
    let server = Peer::python("opcua_server.py", &[&port]);
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let config = format!(
        "{}[[sources]]\ntype = \"opcua\"\nstream = \"ua\"\nendpoint = \"opc.tcp://127.0.0.1:{port}/strata/\"\n\
         sampling_ms = 50\npublishing_ms = 100\nbatch_ms = 200\nheartbeat_ms = 500\n\
         [[sources.nodes]]\nnode = \"ns=2;s=Line1.Temperature\"\nname = \"temperature\"\nunit = \"Cel\"\nscale = 2.0\noffset = 1.0\n\
         [[sources.nodes]]\nnode = \"ns=2;s=Line1.Pressure\"\nname = \"pressure\"\nunit = \"bar\"\nscale = 0.001\n\
         [[sources.nodes]]\nnode = \"ns=2;s=Line1.Running\"\nname = \"running\"\n\
         [[sources.nodes]]\nnode = \"ns=2;s=Line1.Steady\"\nname = \"steady\"\n\
         [[sources.nodes]]\nnode = \"ns=2;s=Line1.Late\"\nname = \"late\"\n",
        edge_hub_config(&hub, &edge_dir, "gw-ua", &credential)
    );
    let _agent = EdgeProcess::start(&edge_dir, &config);

    eventually(
        Duration::from_secs(60),
        "OPC UA readings at the hub",
        || {
            values(&hub, "gw-ua", "temperature").len() >= 10
                && values(&hub, "gw-ua", "running").len() >= 4
        },
    );
    // The server writes 20 + 0.25 k; scaled by 2 and offset 1: 41 + 0.5 k.
    let temps = values(&hub, "gw-ua", "temperature");
    assert!(
        temps
            .iter()
            .all(|v| *v >= 41.0 && is_multiple(v - 41.0, 0.5)),
        "{temps:?}"
    );
    let distinct: std::collections::BTreeSet<i64> =
        temps.iter().map(|v| (v * 2.0) as i64).collect();
    assert!(distinct.len() >= 5, "values change: {temps:?}");
    // Int32 1000 + k, scaled to bar: a multiple of 0.001 above 1.0.
    let pressures = values(&hub, "gw-ua", "pressure");
    assert!(
        pressures
            .iter()
            .all(|v| *v >= 1.0 && is_multiple(*v, 0.001)),
        "{pressures:?}"
    );
    let running = values(&hub, "gw-ua", "running");
    assert!(
        running.iter().all(|v| *v == 0.0 || *v == 1.0),
        "{running:?}"
    );
    assert!(running.contains(&0.0) && running.contains(&1.0));
    // A node the server adds only after the agent subscribed (refused
    // then) is asked for again, and monitored once it exists.
    eventually(Duration::from_secs(60), "the late node monitored", || {
        values(&hub, "gw-ua", "late").len() >= 3
    });
    assert!(values(&hub, "gw-ua", "late").iter().all(|v| *v >= 2000.0));
    // A value that never changes is reported once by the subscription and
    // sent again every heartbeat, stamped when sent.
    eventually(
        Duration::from_secs(30),
        "the steady node sent again",
        || values(&hub, "gw-ua", "steady").len() >= 6,
    );
    let steady = hub.readings("gw-ua", "steady");
    assert!(steady.iter().all(|(_, v)| *v == 7.5), "{steady:?}");
    assert!(
        steady.windows(2).all(|w| w[1].0 - w[0].0 >= 400_000_000),
        "one a heartbeat: {steady:?}"
    );

    // The server dies and comes back on the same port: the client library
    // reconnects and recreates the subscription; readings resume.
    server.kill();
    // No heartbeat while the server is gone: the value may have changed.
    std::thread::sleep(Duration::from_secs(3));
    let steady_down = values(&hub, "gw-ua", "steady").len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        values(&hub, "gw-ua", "steady").len(),
        steady_down,
        "nothing sent while the server is down"
    );
    let before = values(&hub, "gw-ua", "temperature").len();
    let late_before = values(&hub, "gw-ua", "late").len();
    let _server = Peer::python("opcua_server.py", &[&port]);
    eventually(
        Duration::from_secs(60),
        "readings after the server restart",
        || values(&hub, "gw-ua", "temperature").len() >= before + 10,
    );
    // The recreated subscription lost the late node (the new server did
    // not have it yet); it is monitored again once it is back.
    eventually(
        Duration::from_secs(60),
        "the late node after the server restart",
        || values(&hub, "gw-ua", "late").len() >= late_before + 3,
    );
    eventually(
        Duration::from_secs(30),
        "the steady node sent again after the restart",
        || values(&hub, "gw-ua", "steady").len() >= steady_down + 3,
    );
    eventually(
        Duration::from_secs(30),
        "the reconnect counted in a heartbeat",
        || {
            values(&hub, "gw-ua", "health.source.ua.reconnects_total")
                .last()
                .is_some_and(|n| *n >= 1.0)
        },
    );
}

#[test]
fn modbus_registers_arrive_decoded_and_scaled_and_resume_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&dir.path().join("hub"));
    let credential = hub.provision("gw-mb", json!({}));
    let port = free_port().to_string();
    let server = Peer::python("modbus_server.py", &[&port]);
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let register = |name: &str, kind: &str, address: u16, extra: &str| {
        format!(
            "[[sources.registers]]\nname = \"{name}\"\nkind = \"{kind}\"\naddress = {address}\n{extra}"
        )
    };
    let config = format!(
        "{}[[sources]]\ntype = \"modbus\"\nstream = \"plc\"\naddress = \"127.0.0.1:{port}\"\nunit_id = 1\npoll_ms = 50\nbatch_ms = 200\n{}{}{}{}{}{}{}",
        edge_hub_config(&hub, &edge_dir, "gw-mb", &credential),
        register(
            "torque",
            "holding",
            0,
            "data_type = \"i16\"\nscale = 0.1\nunit = \"N.m\"\n"
        ),
        register("flow", "holding", 1, "data_type = \"f32\"\n"),
        register(
            "level",
            "holding",
            3,
            "data_type = \"f32\"\nword_order = \"little\"\n"
        ),
        register(
            "energy",
            "holding",
            5,
            "data_type = \"u32\"\nword_order = \"little\"\nscale = 0.001\n"
        ),
        register("counter", "holding", 7, ""),
        register("position", "holding", 20, "data_type = \"f64\"\n"),
        register("speed", "input", 0, "scale = 0.01\noffset = -1.0\n"),
    );
    // Unit 2 refuses the one read that would cover both registers and
    // the four undefined ones between them: each is then read alone.
    let config = format!(
        "{config}[[sources]]\ntype = \"modbus\"\nstream = \"sparse\"\naddress = \"127.0.0.1:{port}\"\nunit_id = 2\npoll_ms = 50\nbatch_ms = 200\n{}{}",
        register("left", "holding", 0, ""),
        register("right", "holding", 5, ""),
    );
    let _agent = EdgeProcess::start(&edge_dir, &config);

    eventually(
        Duration::from_secs(60),
        "Modbus readings at the hub",
        || {
            values(&hub, "gw-mb", "counter").len() >= 10
                && values(&hub, "gw-mb", "speed").len() >= 3
                && !values(&hub, "gw-mb", "right").is_empty()
        },
    );
    let close = |signal: &str, want: f64| {
        let got = values(&hub, "gw-mb", signal);
        assert!(!got.is_empty(), "{signal}: no readings");
        assert!(
            got.iter().all(|v| (v - want).abs() < 1e-9),
            "{signal}: want {want}, got {got:?}"
        );
    };
    close("torque", -123.4);
    close("flow", 12.5);
    close("level", -3.25);
    close("energy", 70.0);
    close("position", -1234.5);
    close("speed", 4.0);
    close("left", 42.0);
    close("right", 7.0);
    let counter = values(&hub, "gw-mb", "counter");
    assert!(
        counter.windows(2).filter(|w| w[1] > w[0]).count() >= 5,
        "the counter moves: {counter:?}"
    );

    server.kill();
    std::thread::sleep(Duration::from_millis(500));
    let before = values(&hub, "gw-mb", "counter").len();
    let _server = Peer::python("modbus_server.py", &[&port]);
    eventually(
        Duration::from_secs(60),
        "readings after the server restart",
        || values(&hub, "gw-mb", "counter").len() >= before + 10,
    );
    eventually(
        Duration::from_secs(30),
        "errors and the reconnect counted",
        || {
            let errors = values(&hub, "gw-mb", "health.source.plc.errors_total");
            let reconnects = values(&hub, "gw-mb", "health.source.plc.reconnects_total");
            errors.last().is_some_and(|n| *n >= 1.0) && reconnects.last().is_some_and(|n| *n >= 1.0)
        },
    );
}

/// Waits until `signal` of `device` has as many readings as `times_ms`, then
/// checks they are those, in milliseconds.
fn arrive_with_times(hub: &HubProcess, device: &str, signal: &str, times_ms: &[i64], what: &str) {
    eventually(Duration::from_secs(60), what, || {
        hub.readings(device, signal).len() >= times_ms.len()
    });
    let times: Vec<i64> = hub
        .readings(device, signal)
        .iter()
        .map(|(ts, _)| ts / 1_000_000)
        .collect();
    assert_eq!(times, times_ms);
}

/// Publishes one message at QoS 1 to the Mosquitto on `port`.
fn publish_at(port: u16, topic: &str, payload: &str) {
    let out = std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ])
        .output()
        .expect("mosquitto_pub");
    assert!(out.status.success(), "{out:?}");
}

/// With `drop_policy = "refuse_new"`, an outbox full while the hub is away
/// refuses new batches. The MQTT source (a persistent session) then keeps
/// the readings refused, their messages unacknowledged, and offers them
/// again: once the hub is back and the outbox drains, every message
/// published meanwhile arrives, once.
#[test]
fn mqtt_readings_a_full_outbox_refuses_arrive_once_it_has_room() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = format!("127.0.0.1:{}", free_port());
    let hub = HubProcess::start_on(&dir.path().join("hub"), &mqtt, &[]);
    let credential = hub.provision("gw-full", json!({}));
    let port = free_port();
    let _broker = Peer::mosquitto(dir.path(), port);
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    // A few batches fill the outbox. One heartbeat, at the start (larger
    // than the outbox, refused and counted); the count is read from the
    // agent's metrics.
    let metrics_at = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "{}[outbox]\nmax_bytes = 400\ndrop_policy = \"refuse_new\"\n\
         [[sources]]\ntype = \"mqtt\"\nstream = \"floor\"\nbroker = \"127.0.0.1:{port}\"\nbatch_ms = 50\nclean_session = false\n\
         [[sources.topics]]\nfilter = \"plant/+/status\"\nsignal = \"{{1}}.pressure\"\nformat = \"json\"\nvalue = \"/kpa\"\ntimestamp = \"/ts\"\nunit = \"kPa\"\n",
        edge_hub_config(&hub, &edge_dir, "gw-full", &credential).replace(
            "interval_ms = 300",
            &format!("interval_ms = 600000\nmetrics_listen = \"{metrics_at}\"")
        )
    );
    let refused = || edge_metric(&metrics_at, "strata_edge_outbox_errors_total");
    let _agent = EdgeProcess::start(&edge_dir, &config);
    let base_ms: i64 = now_ns() / 1_000_000 - 60_000;
    let mut round = 0;
    eventually(Duration::from_secs(60), "the source subscribed", || {
        publish_at(
            port,
            "plant/m0/status",
            &format!(r#"{{"ts": {}, "kpa": 1.0}}"#, base_ms + round),
        );
        round += 1;
        !hub.readings("gw-full", "m0.pressure").is_empty()
    });

    let before = refused();
    assert!(before.is_finite(), "the agent's metrics");
    hub.kill();
    let published: Vec<i64> = (0..40).map(|i| base_ms + 10_000 + i).collect();
    for ts in &published {
        publish_at(
            port,
            "plant/m1/status",
            &format!(r#"{{"ts": {ts}, "kpa": 2.0}}"#),
        );
    }
    eventually(Duration::from_secs(30), "batches refused", || {
        refused() > before
    });
    let hub = HubProcess::start_on(&dir.path().join("hub"), &mqtt, &[]);
    arrive_with_times(
        &hub,
        "gw-full",
        "m1.pressure",
        &published,
        "what a full outbox refused",
    );
}

#[test]
fn mqtt_messages_from_a_local_mosquitto_arrive_scaled_with_their_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&dir.path().join("hub"));
    let credential = hub.provision("gw-mq", json!({}));
    let port = free_port();
    let broker = Peer::mosquitto(dir.path(), port);
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    // Twenty filters nothing is published on come first: the two that
    // matter are past the client's queue of 16 requests.
    let unused: String = (0..20)
        .map(|i| format!("[[sources.topics]]\nfilter = \"unused/{i}\"\nsignal = \"unused_{i}\"\n"))
        .collect();
    let config = format!(
        "{}[[sources]]\ntype = \"mqtt\"\nstream = \"floor\"\nbroker = \"127.0.0.1:{port}\"\nbatch_ms = 100\nclean_session = false\n{unused}\
         [[sources.topics]]\nfilter = \"plant/+/temp_f\"\nsignal = \"{{1}}.temperature\"\nunit = \"Cel\"\nscale = 0.5555555555555556\noffset = -17.77777777777778\n\
         [[sources.topics]]\nfilter = \"plant/+/status\"\nsignal = \"{{1}}.pressure\"\nformat = \"json\"\nvalue = \"/p/kpa\"\ntimestamp = \"/ts\"\nunit = \"kPa\"\n",
        edge_hub_config(&hub, &edge_dir, "gw-mq", &credential)
    );
    let agent = EdgeProcess::start(&edge_dir, &config);
    // Publish until the source has subscribed and the readings arrive.
    let base_ms: i64 = now_ns() / 1_000_000 - 60_000;
    let publish = |topic: &str, payload: &str| publish_at(port, topic, payload);
    let mut round = 0;
    eventually(Duration::from_secs(60), "MQTT readings at the hub", || {
        publish("plant/m1/temp_f", "212");
        publish("plant/m2/temp_f", " 32.0 ");
        publish(
            "plant/m1/status",
            &format!(r#"{{"ts": {}, "p": {{"kpa": 101.325}}}}"#, base_ms + round),
        );
        // Malformed messages are refused and counted; nothing else is lost.
        publish("plant/m1/status", "{not json");
        publish("plant/m1/temp_f", "NaN");
        round += 1;
        values(&hub, "gw-mq", "m2.temperature").len() >= 3
            && values(&hub, "gw-mq", "m1.pressure").len() >= 3
    });
    let boiling = values(&hub, "gw-mq", "m1.temperature");
    assert!(
        boiling.iter().all(|v| (v - 100.0).abs() < 1e-9),
        "{boiling:?}"
    );
    let freezing = values(&hub, "gw-mq", "m2.temperature");
    assert!(freezing.iter().all(|v| v.abs() < 1e-9), "{freezing:?}");
    let pressure = hub.readings("gw-mq", "m1.pressure");
    assert!(pressure.iter().all(|(_, v)| *v == 101.325));
    // The timestamp came from the payload, in milliseconds, exactly.
    let (first_ts, _) = pressure[0];
    assert_eq!(first_ts % 1_000_000, 0);
    assert!((first_ts / 1_000_000 - base_ms) < 1000, "{first_ts}");
    eventually(Duration::from_secs(30), "refused messages counted", || {
        values(&hub, "gw-mq", "health.source.floor.errors_total")
            .last()
            .is_some_and(|n| *n >= 2.0)
    });

    // With a persistent session, what is published while the agent is
    // down is kept by the broker and arrives after the restart, with the
    // times in its payloads.
    agent.kill();
    let while_down: Vec<i64> = (0..5).map(|i| base_ms + 10_000 + i).collect();
    for ts in &while_down {
        publish(
            "plant/m3/status",
            &format!(r#"{{"ts": {ts}, "p": {{"kpa": 99.5}}}}"#),
        );
    }
    let agent = EdgeProcess::start(&edge_dir, &config);
    arrive_with_times(
        &hub,
        "gw-mq",
        "m3.pressure",
        &while_down,
        "what was published while the agent was down",
    );

    // Messages the agent has received but not yet kept (its frame waits
    // for batch_ms) are not acknowledged: killed then, it gets them again
    // at the restart.
    agent.kill();
    let holding = config.replace("batch_ms = 100", "batch_ms = 600000");
    let started_ns = now_ns();
    let agent = EdgeProcess::start(&edge_dir, &holding);
    let received: Vec<i64> = (0..3).map(|i| base_ms + 20_000 + i).collect();
    for ts in &received {
        publish(
            "plant/m4/status",
            &format!(r#"{{"ts": {ts}, "p": {{"kpa": 98.5}}}}"#),
        );
    }
    eventually(
        Duration::from_secs(30),
        "the agent has the messages",
        || {
            hub.readings("gw-mq", "health.source.floor.readings_total")
                .iter()
                .any(|(ts, n)| *ts >= started_ns && *n >= received.len() as f64)
        },
    );
    assert!(hub.readings("gw-mq", "m4.pressure").is_empty());
    agent.kill();
    let agent = EdgeProcess::start(&edge_dir, &config);
    arrive_with_times(
        &hub,
        "gw-mq",
        "m4.pressure",
        &received,
        "what the killed agent had received",
    );

    // A topic removed from the config: the broker would keep the persistent
    // session's subscription to it, and deliver its messages to be refused
    // one by one. The source unsubscribes from it at the connect.
    agent.kill();
    let removed = "[[sources.topics]]\nfilter = \"plant/+/temp_f\"\n";
    let start = config.find(removed).expect("the temp_f topic");
    let end = config[start + removed.len()..]
        .find("[[sources.topics]]")
        .map_or(config.len(), |i| start + removed.len() + i);
    let fewer = format!("{}{}", &config[..start], &config[end..]);
    let started_ns = now_ns();
    let _agent = EdgeProcess::start(&edge_dir, &fewer);
    let remembered = edge_dir.join("data/mqtt-source-floor.json");
    eventually(Duration::from_secs(30), "the filter unsubscribed", || {
        std::fs::read_to_string(&remembered).is_ok_and(|f| !f.contains("temp_f"))
    });
    for _ in 0..5 {
        publish("plant/m1/temp_f", "212");
    }
    let marker = base_ms + 30_000;
    publish(
        "plant/m5/status",
        &format!(r#"{{"ts": {marker}, "p": {{"kpa": 97.5}}}}"#),
    );
    eventually(Duration::from_secs(30), "the marker", || {
        !hub.readings("gw-mq", "m5.pressure").is_empty()
    });
    let seen_ns = now_ns();
    let mut errors = None;
    eventually(Duration::from_secs(30), "a later heartbeat", || {
        errors = hub
            .readings("gw-mq", "health.source.floor.errors_total")
            .into_iter()
            .find(|(ts, _)| *ts > seen_ns)
            .map(|(_, n)| n);
        errors.is_some()
    });
    assert!(started_ns < seen_ns);
    assert_eq!(
        errors,
        Some(0.0),
        "messages of the removed topic were delivered"
    );

    // The broker restarts without its sessions: the source connects again,
    // subscribes again, and what is published then arrives.
    broker.kill();
    let _broker = Peer::mosquitto(dir.path(), port);
    let mut round = 0;
    eventually(
        Duration::from_secs(60),
        "readings after the broker's restart",
        || {
            publish(
                "plant/m6/status",
                &format!(
                    r#"{{"ts": {}, "p": {{"kpa": 96.5}}}}"#,
                    base_ms + 40_000 + round
                ),
            );
            round += 1;
            !hub.readings("gw-mq", "m6.pressure").is_empty()
        },
    );
}
