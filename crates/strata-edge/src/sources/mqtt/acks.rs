//! Acknowledging only what is kept. With a persistent session the broker
//! keeps a QoS 1 message until the source acknowledges it, so the source
//! acknowledges a message only once the frame holding it has been handled
//! (its reading is in the outbox, or in a pipeline's window): one the
//! agent had not kept when it stopped or crashed is delivered again at the
//! restart instead of lost.
//!
//! Readings the outbox refuses for now (full with `refuse_new`, or its
//! database failing) wait here, their messages unacknowledged, and are
//! offered again each second, oldest first; frames made meanwhile queue
//! behind them, and acknowledgements go in the order the messages came.
//! The broker, its messages in flight unacknowledged, stops sending more
//! (and queues them, up to its own limit).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Publish, QoS};
use strata_proto::SignalSeries;
use tokio::sync::{mpsc, oneshot};

use crate::sources::{Frame, FrameBuilder, FrameSender, Handled, Outcome};

/// Messages held unacknowledged before the source sends its frame without
/// waiting for `batch_ms`: brokers cap the QoS 1 messages in flight to one
/// client (Mosquitto's default is 20), and a source holding that many
/// would stall its topics until the next frame.
pub const SEND_AT: usize = 10;

/// How often readings the outbox refused are offered again.
const RESEND: Duration = Duration::from_secs(1);

/// Messages held, each with the number of the connection it came on.
type Held = Vec<(u64, Publish)>;

/// The number of the connection messages arrive on, and the lock under
/// which acknowledgements are queued for it. A message not acknowledged
/// when its connection is lost is delivered again on the next one, with
/// the same packet id, and only that copy may be acknowledged: before
/// reconnecting, the poller takes the lock, moves to the next number and
/// drops the acknowledgements still queued for the lost connection.
#[derive(Debug, Default)]
pub struct Connection(Mutex<u64>);

impl Connection {
    /// The connection messages arrive on now.
    fn current(&self) -> u64 {
        *self.0.lock().expect("connection lock")
    }

    /// Runs `drop_queued` (the event loop's `clean`) as the connection
    /// moves to the next number, so that no acknowledgement for the lost
    /// one is queued after it. The source also moves it on (with nothing
    /// to drop) as soon as it learns the connection is lost, so that
    /// readings of its messages are not offered again meanwhile.
    pub fn next(&self, drop_queued: impl FnOnce()) {
        let mut number = self.0.lock().expect("connection lock");
        *number += 1;
        drop_queued();
    }
}

/// What the source hands the acknowledging task, in the order its
/// messages arrived.
enum Due {
    /// A frame sent to the processing thread, with its receipt (none for
    /// messages that made no readings), and its messages.
    Sent(Option<oneshot::Receiver<Outcome>>, Held),
    /// Readings made while others wait to be offered again: they are
    /// offered after those.
    Waiting(Vec<SignalSeries>, Held),
}

/// The messages of the frame being collected, and the task that
/// acknowledges those of the frames sent.
pub struct Acks {
    held: Held,
    connection: Arc<Connection>,
    due: mpsc::UnboundedSender<Due>,
    /// Whether readings wait to be offered again.
    waiting: Arc<AtomicBool>,
}

impl Acks {
    /// Starts the acknowledging task for `client` (which must have been
    /// made with manual acknowledgements), whose event loop moves
    /// `connection` on at each reconnect; readings refused for now are
    /// offered again to `frames` as frames of `stream`. The task ends
    /// after the source drops this.
    pub fn start(
        client: AsyncClient,
        connection: Arc<Connection>,
        stream: Arc<str>,
        frames: FrameSender,
    ) -> Acks {
        let (due, queue) = mpsc::unbounded_channel();
        let waiting = Arc::new(AtomicBool::new(false));
        let line = Line {
            client,
            connection: connection.clone(),
            stream,
            frames,
            waiting: waiting.clone(),
            slots: VecDeque::new(),
        };
        tokio::spawn(line.run(queue));
        Acks {
            held: Vec::new(),
            connection,
            due,
            waiting,
        }
    }

    /// Holds a message (taken or refused) until the frame it went into is
    /// handled; `true` when enough are held that the frame should go now.
    pub fn hold(&mut self, mut publish: Publish) -> bool {
        if publish.qos == QoS::AtMostOnce {
            return false;
        }
        // Only its packet id is needed from here on.
        publish.payload = Default::default();
        self.held.push((self.connection.current(), publish));
        self.held.len() >= SEND_AT
    }

    /// Sends the frame collected so far with a receipt (or, while readings
    /// wait to be offered again, queues it behind them), and has its
    /// messages acknowledged once it is kept; `false` when the pipeline has
    /// gone.
    pub async fn send(&mut self, builder: &mut FrameBuilder, frames: &FrameSender) -> bool {
        if self.held.is_empty() {
            return builder.send(frames).await;
        }
        let held = std::mem::take(&mut self.held);
        let due = match builder.take() {
            Some(frame) if self.waiting.load(Ordering::Relaxed) => {
                Due::Waiting(frame.signals, held)
            }
            Some(mut frame) => {
                let (handled, rx) = Handled::new();
                frame.handled = Some(handled);
                if frames.send(frame).await.is_err() {
                    return false;
                }
                Due::Sent(Some(rx), held)
            }
            // Refused messages only.
            None => Due::Sent(None, held),
        };
        self.due.send(due).is_ok()
    }
}

/// Where one frame's messages stand.
enum State {
    /// Sent; the processing thread's word is awaited.
    Sent(oneshot::Receiver<Outcome>),
    /// Kept: its messages may be acknowledged.
    Kept,
    /// Refused for now, or queued behind readings that were: to be
    /// offered (again). `seen`: the processing thread had them (and
    /// offered them to the closed-loop rules) before.
    Refused {
        signals: Vec<SignalSeries>,
        seen: bool,
    },
}

/// One frame's messages and where they stand.
struct Slot {
    held: Held,
    state: State,
}

/// The acknowledging task: frames' messages in the order they came.
struct Line {
    client: AsyncClient,
    connection: Arc<Connection>,
    stream: Arc<str>,
    frames: FrameSender,
    waiting: Arc<AtomicBool>,
    slots: VecDeque<Slot>,
}

impl Line {
    /// Acknowledges the messages of each frame once it and every frame
    /// before it are kept; those of a connection since lost are left for
    /// their copies. Offers refused readings again, oldest first, each
    /// [`RESEND`] (at once after one is kept: the outbox has room again).
    /// Stops when the processing thread drops a frame unhandled (the agent
    /// is stopping: nothing after it is acknowledged) or the source has
    /// stopped.
    async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Due>) {
        let mut resend = tokio::time::interval(RESEND);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut offer_now = false;
        loop {
            while self
                .slots
                .front()
                .is_some_and(|s| matches!(s.state, State::Kept))
            {
                let slot = self.slots.pop_front().expect("a front slot");
                if !self.acknowledge(slot.held, &queue).await {
                    return;
                }
            }
            let refused = self
                .slots
                .iter()
                .any(|s| matches!(s.state, State::Refused { .. }));
            self.waiting.store(refused, Ordering::Relaxed);
            let Some(front) = self.slots.front_mut() else {
                match queue.recv().await {
                    Some(due) => self.push(due),
                    None => return,
                }
                continue;
            };
            match &mut front.state {
                State::Sent(receipt) => tokio::select! {
                    outcome = receipt => match outcome {
                        Ok(Outcome::Kept) => {
                            front.state = State::Kept;
                            offer_now = refused;
                        }
                        Ok(Outcome::Refused(signals)) => {
                            front.state = State::Refused { signals, seen: true };
                            offer_now = false;
                            resend.reset();
                        }
                        Err(_) => return,
                    },
                    due = queue.recv() => match due {
                        Some(due) => self.push(due),
                        None => return,
                    },
                },
                State::Refused { .. } if offer_now => {
                    offer_now = false;
                    if !self.offer_front().await {
                        return;
                    }
                }
                State::Refused { .. } => tokio::select! {
                    _ = resend.tick() => if !self.offer_front().await {
                        return;
                    },
                    due = queue.recv() => match due {
                        Some(due) => self.push(due),
                        None => return,
                    },
                },
                State::Kept => unreachable!("kept slots are acknowledged above"),
            }
        }
    }

    fn push(&mut self, due: Due) {
        let (held, state) = match due {
            Due::Sent(Some(receipt), held) => (held, State::Sent(receipt)),
            Due::Sent(None, held) => (held, State::Kept),
            Due::Waiting(signals, held) => (
                held,
                State::Refused {
                    signals,
                    seen: false,
                },
            ),
        };
        self.slots.push_back(Slot { held, state });
    }

    /// Offers the front slot's readings again; `false` when the pipeline
    /// has gone. Readings whose messages all came on a connection since
    /// lost are let go instead: the broker sends those messages again on
    /// the next one (QoS 0 messages among them are not sent again).
    async fn offer_front(&mut self) -> bool {
        let current = self.connection.current();
        let front = self.slots.front_mut().expect("a front slot");
        if front.held.iter().all(|(on, _)| *on != current) {
            self.slots.pop_front();
            return true;
        }
        let State::Refused { signals, seen } = std::mem::replace(&mut front.state, State::Kept)
        else {
            unreachable!("only refused readings are offered again");
        };
        let (handled, receipt) = Handled::new();
        front.state = State::Sent(receipt);
        let frame = Frame {
            stream: self.stream.clone(),
            signals,
            handled: Some(handled),
            resent: seen,
        };
        self.frames.send(frame).await.is_ok()
    }

    /// Acknowledges `held` (those of a lost connection are left for their
    /// copies); `false` when the source has stopped.
    async fn acknowledge(&self, held: Held, queue: &mpsc::UnboundedReceiver<Due>) -> bool {
        for (on, publish) in held {
            loop {
                let queued = {
                    let current = self.connection.0.lock().expect("connection lock");
                    *current != on || self.client.try_ack(&publish).is_ok()
                };
                if queued {
                    break;
                }
                // The client's queue is full (it drains as the connection
                // writes) or the source has stopped.
                if queue.is_closed() {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::Request;

    fn publish(pkid: u16, qos: QoS) -> Publish {
        let mut p = Publish::new("plant/m1/status", qos, b"{}".to_vec());
        p.pkid = pkid;
        p
    }

    fn acked(requests: &flume::Receiver<Request>) -> Vec<u16> {
        requests
            .try_iter()
            .map(|r| match r {
                Request::PubAck(ack) => ack.pkid,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// Acknowledgements for `connection`, to the returned requests, with
    /// refused readings offered again to the returned frames.
    fn start(
        connection: &Arc<Connection>,
    ) -> (
        Acks,
        flume::Receiver<Request>,
        FrameSender,
        mpsc::Receiver<Frame>,
    ) {
        let (requests_tx, requests) = flume::unbounded();
        let (frames, frames_rx) = mpsc::channel(8);
        let acks = Acks::start(
            AsyncClient::from_senders(requests_tx),
            connection.clone(),
            "floor".into(),
            frames.clone(),
        );
        (acks, requests, frames, frames_rx)
    }

    /// Lets the acknowledging task run (the clock is paused: it moves on
    /// only when every task waits).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn messages_are_acknowledged_in_order_once_their_frame_is_handled() {
        let connection = Arc::new(Connection::default());
        let (mut acks, requests, frames, mut frames_rx) = start(&connection);
        let mut builder = FrameBuilder::new("floor", [("p".into(), "kPa".into())]);

        // QoS 0 needs no acknowledgement; the tenth held sends the frame.
        assert!(!acks.hold(publish(0, QoS::AtMostOnce)));
        for pkid in 1..10 {
            builder.push(0, pkid as i64, 1.0, strata_proto::Quality::Good);
            assert!(!acks.hold(publish(pkid, QoS::AtLeastOnce)));
        }
        assert!(acks.hold(publish(10, QoS::AtLeastOnce)));
        assert!(acks.send(&mut builder, &frames).await);
        let first = frames_rx.recv().await.unwrap();
        // Messages refused (no readings): a frame of none, after the first.
        assert!(!acks.hold(publish(11, QoS::AtLeastOnce)));
        assert!(acks.send(&mut builder, &frames).await);
        settle().await;
        assert_eq!(
            acked(&requests),
            Vec::<u16>::new(),
            "nothing before handled"
        );
        first.handled.expect("a receipt").done();
        settle().await;
        assert_eq!(acked(&requests), (1..=11).collect::<Vec<u16>>());

        // A message held on a connection since lost is not acknowledged:
        // its copy sent again on the new one is.
        builder.push(0, 12, 1.0, strata_proto::Quality::Good);
        acks.hold(publish(12, QoS::AtLeastOnce));
        connection.next(|| ());
        builder.push(0, 13, 1.0, strata_proto::Quality::Good);
        acks.hold(publish(12, QoS::AtLeastOnce));
        assert!(acks.send(&mut builder, &frames).await);
        let second = frames_rx.recv().await.unwrap();
        second.handled.expect("a receipt").done();
        settle().await;
        assert_eq!(acked(&requests), vec![12]);
    }

    /// Sends a frame of one reading per message `pkids` through `acks`.
    async fn send(
        acks: &mut Acks,
        builder: &mut FrameBuilder,
        frames: &FrameSender,
        pkids: std::ops::Range<u16>,
    ) {
        for pkid in pkids {
            builder.push(0, pkid as i64, pkid as f64, strata_proto::Quality::Good);
            acks.hold(publish(pkid, QoS::AtLeastOnce));
        }
        assert!(acks.send(builder, frames).await);
    }

    #[tokio::test(start_paused = true)]
    async fn refused_readings_wait_unacknowledged_and_are_offered_again_in_order() {
        let connection = Arc::new(Connection::default());
        let (mut acks, requests, frames, mut frames_rx) = start(&connection);
        let mut builder = FrameBuilder::new("floor", [("p".into(), "kPa".into())]);

        // Frame a (messages 1, 2) is refused, frame b (3) kept: nothing is
        // acknowledged out of order.
        send(&mut acks, &mut builder, &frames, 1..3).await;
        send(&mut acks, &mut builder, &frames, 3..4).await;
        let a = frames_rx.recv().await.unwrap();
        let b = frames_rx.recv().await.unwrap();
        let refused = a.signals.clone();
        a.handled.unwrap().tell(Outcome::Refused(refused.clone()));
        b.handled.unwrap().done();
        settle().await;
        assert_eq!(acked(&requests), Vec::<u16>::new(), "3 waits for 1 and 2");

        // Frame c (4), made while a waits, queues behind it.
        send(&mut acks, &mut builder, &frames, 4..5).await;
        settle().await;
        assert!(frames_rx.try_recv().is_err(), "c went ahead of a");

        // A second on, a is offered again, marked so; kept, then c is
        // offered at once, and everything is acknowledged in order.
        tokio::time::sleep(RESEND).await;
        let again = frames_rx.recv().await.unwrap();
        assert!(again.resent);
        assert_eq!(again.signals, refused);
        again.handled.unwrap().done();
        let c = frames_rx.recv().await.unwrap();
        assert!(!c.resent, "c's readings reach the rules for the first time");
        assert_eq!(c.signals[0].values, [4.0]);
        settle().await;
        assert_eq!(acked(&requests), [1, 2, 3]);
        c.handled.unwrap().done();
        settle().await;
        assert_eq!(acked(&requests), [4]);

        // Refused, then its connection is lost: the broker sends the
        // message again on the next one, so its reading is let go.
        send(&mut acks, &mut builder, &frames, 5..6).await;
        let d = frames_rx.recv().await.unwrap();
        d.handled.unwrap().tell(Outcome::Refused(d.signals));
        settle().await;
        connection.next(|| ());
        tokio::time::sleep(RESEND * 3).await;
        assert!(frames_rx.try_recv().is_err(), "d offered again");
        // Nothing waits now: the next frame goes to the processor.
        send(&mut acks, &mut builder, &frames, 6..7).await;
        frames_rx.recv().await.unwrap().handled.unwrap().done();
        settle().await;
        assert_eq!(acked(&requests), [6]);
    }

    #[tokio::test]
    async fn a_frame_dropped_unhandled_stops_the_acknowledgements() {
        let (mut acks, requests, frames, mut frames_rx) = start(&Arc::new(Connection::default()));
        let mut builder = FrameBuilder::new("floor", [("p".into(), "kPa".into())]);
        for pkid in 1..=2 {
            builder.push(0, pkid as i64, 1.0, strata_proto::Quality::Good);
            acks.hold(publish(pkid, QoS::AtLeastOnce));
            assert!(acks.send(&mut builder, &frames).await);
        }
        // The processing thread died with the first frame.
        drop(frames_rx.recv().await.unwrap());
        frames_rx.recv().await.unwrap().handled.unwrap().done();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(acked(&requests), Vec::<u16>::new());
    }
}
