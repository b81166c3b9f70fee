//! Acknowledging only what is kept. With a persistent session the broker
//! keeps a QoS 1 message until the source acknowledges it, so the source
//! acknowledges a message only once the frame holding it has been handled
//! (its reading is in the outbox, or in a pipeline's window): one the
//! agent had not kept when it stopped or crashed is delivered again at the
//! restart instead of lost. Readings the outbox refuses for now (full with
//! `refuse_new`) are kept here, their messages unacknowledged, and sent
//! again ([`Acks::resend_refused`]); the broker, its messages in flight
//! unacknowledged, stops sending more meanwhile.

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

/// Messages held, each with the number of the connection it came on.
type Held = Vec<(u64, Publish)>;

/// One frame's messages to acknowledge once the frame is handled.
type Due = (Option<oneshot::Receiver<Outcome>>, Held);

/// Readings the outbox refused for now, with the messages they came in.
type Refused = Arc<Mutex<Vec<(Vec<SignalSeries>, Held)>>>;

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
    /// one is queued after it.
    pub fn next(&self, drop_queued: impl FnOnce()) {
        let mut number = self.0.lock().expect("connection lock");
        *number += 1;
        drop_queued();
    }
}

/// The messages of the frame being collected, and the task that
/// acknowledges those of the frames sent.
pub struct Acks {
    held: Held,
    connection: Arc<Connection>,
    due: mpsc::UnboundedSender<Due>,
    refused: Refused,
}

impl Acks {
    /// Starts the acknowledging task for `client` (which must have been
    /// made with manual acknowledgements), whose event loop moves
    /// `connection` on at each reconnect. The task ends after the source
    /// drops this.
    pub fn start(client: AsyncClient, connection: Arc<Connection>) -> Acks {
        let (due, queue) = mpsc::unbounded_channel();
        let refused = Refused::default();
        tokio::spawn(acknowledge(
            client,
            connection.clone(),
            queue,
            refused.clone(),
        ));
        Acks {
            held: Vec::new(),
            connection,
            due,
            refused,
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

    /// Sends the frame collected so far with a receipt, and has its
    /// messages acknowledged when the receipt comes back; `false` when the
    /// pipeline has gone.
    pub async fn send(&mut self, builder: &mut FrameBuilder, frames: &FrameSender) -> bool {
        if self.held.is_empty() {
            return builder.send(frames).await;
        }
        let mut receipt = None;
        if let Some(mut frame) = builder.take() {
            let (handled, rx) = Handled::new();
            frame.handled = Some(handled);
            if frames.send(frame).await.is_err() {
                return false;
            }
            receipt = Some(rx);
        }
        // Refused messages only: acknowledged after the frames before.
        let held = std::mem::take(&mut self.held);
        self.due.send((receipt, held)).is_ok()
    }

    /// Sends again, as frames of `stream`, the readings the outbox refused
    /// for now; `false` when the pipeline has gone. Readings whose
    /// messages all came on a connection since lost are let go: the
    /// broker sends those messages again on the new one.
    pub async fn resend_refused(&mut self, stream: &Arc<str>, frames: &FrameSender) -> bool {
        let refused = std::mem::take(&mut *self.refused.lock().expect("refused lock"));
        let current = self.connection.current();
        for (signals, held) in refused {
            if held.iter().all(|(on, _)| *on != current) {
                continue;
            }
            let (handled, receipt) = Handled::new();
            let frame = Frame {
                stream: stream.clone(),
                signals,
                handled: Some(handled),
                resent: true,
            };
            if frames.send(frame).await.is_err() {
                return false;
            }
            if self.due.send((Some(receipt), held)).is_err() {
                return false;
            }
        }
        true
    }
}

/// Acknowledges each frame's messages, in the order they arrived, once the
/// frame is kept; those of a connection since lost are left for their
/// copies, and those of readings the outbox refused for now wait in
/// `refused` to be sent again. Stops when the processing thread drops a
/// frame unhandled (the agent is stopping: nothing after it is
/// acknowledged) or the source has stopped.
async fn acknowledge(
    client: AsyncClient,
    connection: Arc<Connection>,
    mut queue: mpsc::UnboundedReceiver<Due>,
    refused: Refused,
) {
    while let Some((receipt, held)) = queue.recv().await {
        if let Some(receipt) = receipt {
            match receipt.await {
                Ok(Outcome::Kept) => {}
                Ok(Outcome::Refused(signals)) => {
                    refused.lock().expect("refused lock").push((signals, held));
                    continue;
                }
                Err(_) => return,
            }
        }
        for (on, publish) in held {
            loop {
                let queued = {
                    let current = connection.0.lock().expect("connection lock");
                    *current != on || client.try_ack(&publish).is_ok()
                };
                if queued {
                    break;
                }
                // The client's queue is full (it drains as the connection
                // writes) or the source has stopped.
                if queue.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
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

    #[tokio::test]
    async fn messages_are_acknowledged_in_order_once_their_frame_is_handled() {
        let (requests_tx, requests) = flume::unbounded();
        let connection = Arc::new(Connection::default());
        let mut acks = Acks::start(AsyncClient::from_senders(requests_tx), connection.clone());
        let (frames, mut frames_rx) = tokio::sync::mpsc::channel(4);
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
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            acked(&requests),
            Vec::<u16>::new(),
            "nothing before handled"
        );
        first.handled.expect("a receipt").done();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(acked(&requests), vec![12]);
    }

    /// A frame of one reading per message `pkids`, queued for its
    /// messages to be acknowledged.
    fn frame_with_receipt(
        builder: &mut FrameBuilder,
        acks: &mut Acks,
        pkids: std::ops::Range<u16>,
    ) -> Frame {
        for pkid in pkids {
            builder.push(0, pkid as i64, pkid as f64, strata_proto::Quality::Good);
            acks.hold(publish(pkid, QoS::AtLeastOnce));
        }
        let mut frame = builder.take().expect("readings");
        let (handled, receipt) = Handled::new();
        frame.handled = Some(handled);
        let held = std::mem::take(&mut acks.held);
        acks.due.send((Some(receipt), held)).unwrap();
        frame
    }

    #[tokio::test]
    async fn readings_the_outbox_refuses_wait_unacknowledged_and_are_sent_again() {
        let (requests_tx, requests) = flume::unbounded();
        let connection = Arc::new(Connection::default());
        let mut acks = Acks::start(AsyncClient::from_senders(requests_tx), connection.clone());
        let (frames, mut frames_rx) = tokio::sync::mpsc::channel(4);
        let mut builder = FrameBuilder::new("floor", [("p".into(), "kPa".into())]);
        let stream: Arc<str> = "floor".into();
        // Frames 1-2 (refused) and 3 (kept).
        let mut sent = Vec::new();
        for pkids in [1..3, 3..4] {
            sent.push(frame_with_receipt(&mut builder, &mut acks, pkids));
        }
        let first = sent.remove(0);
        let refused = first.signals.clone();
        first
            .handled
            .unwrap()
            .tell(Outcome::Refused(refused.clone()));
        sent.remove(0).handled.unwrap().done();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(acked(&requests), vec![3], "the kept frame only");

        // Offered again, marked as sent before; acknowledged once kept.
        assert!(acks.resend_refused(&stream, &frames).await);
        let again = frames_rx.recv().await.unwrap();
        assert!(again.resent);
        assert_eq!(again.signals, refused);
        assert!(
            acks.resend_refused(&stream, &frames).await,
            "nothing more to send"
        );
        assert!(frames_rx.try_recv().is_err());
        again.handled.unwrap().done();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(acked(&requests), vec![1, 2]);

        // Refused, then its connection lost: the broker sends the message
        // again on the next one, so its reading is not offered again.
        let mut frame = frame_with_receipt(&mut builder, &mut acks, 4..5);
        let signals = std::mem::take(&mut frame.signals);
        frame.handled.unwrap().tell(Outcome::Refused(signals));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        connection.next(|| ());
        assert!(acks.resend_refused(&stream, &frames).await);
        assert!(frames_rx.try_recv().is_err());
        assert_eq!(acked(&requests), Vec::<u16>::new());
    }

    #[tokio::test]
    async fn a_frame_dropped_unhandled_stops_the_acknowledgements() {
        let (requests_tx, requests) = flume::unbounded();
        let mut acks = Acks::start(
            AsyncClient::from_senders(requests_tx),
            Arc::new(Connection::default()),
        );
        let (frames, mut frames_rx) = tokio::sync::mpsc::channel(4);
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
