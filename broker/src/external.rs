//! External-broker mode: read device messages from Mosquitto, EMQX, HiveMQ or VerneMQ, and
//! publish the gates' commands there.
//!
//! One MQTT client per parkd instance ([`ExternalBroker`]) carries everything: the ingest
//! subscription, the gates' subscriptions and the gate commands parkd publishes. With
//! `shared_group` set, a shared route's subscription is `$share/{group}/{filter}`, so several
//! parkd instances split the stream (MQTT 5 shared subscriptions, also offered on 3.1.1 by
//! these brokers). Topic ACLs are then the external broker's job.
//!
//! rumqttc's event loop is polled on its own task. `EventLoop::poll` is not cancel-safe, so it
//! is only raced against the final abort (when losing an in-flight packet no longer matters),
//! never against a timer. It reconnects without backoff on its own, so errors sleep with a
//! growing delay. Sessions are clean, so every CONNACK re-subscribes.
//!
//! Publishes (QoS 0, never retained) wait in a bounded queue of ours, not in rumqttc's: a
//! forwarder task moves them into rumqttc only while connected and subscribed, so rumqttc's
//! small request channel always has room for the subscriptions after a reconnect. A publish
//! that finds the queue full, or that was on its way when the connection broke, is counted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use parkd_core::clock::Clock;
use prometheus::IntCounter;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, Request};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{BrokerError, InboundMessage, MessageSink};

/// How to reach the external broker.
#[derive(Clone)]
pub struct ExternalSettings {
    /// `mqtt://host:port` (TLS is not built in; terminate it in front or on the broker's side).
    pub url: String,
    /// Client id of this parkd instance; distinct per instance.
    pub client_id: String,
    /// Username, if the broker wants one.
    pub username: Option<String>,
    /// Password, if the broker wants one; never printed.
    pub password: Option<String>,
    /// Shared-subscription group; `None` for a plain subscription.
    pub shared_group: Option<String>,
    /// Keep alive.
    pub keep_alive: Duration,
}

impl std::fmt::Debug for ExternalSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalSettings")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("shared_group", &self.shared_group)
            .finish()
    }
}

fn host_port(url: &str) -> Result<(String, u16), BrokerError> {
    let error = |reason: &str| BrokerError::ExternalUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| error("scheme must be mqtt:// or tcp://"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| error("port is not a number"))?,
        ),
        None => (rest, 1883),
    };
    if host.is_empty() {
        return Err(error("host is empty"));
    }
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
}

/// Commands waiting for the external broker, at most; beyond, a publish is dropped and
/// counted. Large enough for an emergency's `hold_open` to every gate of a city of lots.
pub const PUBLISH_QUEUE: usize = 4096;

/// rumqttc's own request channel: our subscriptions plus a few publishes on their way to the
/// socket. Kept small so that commands wait in [`PUBLISH_QUEUE`] (counted when full), not here.
const REQUEST_CHANNEL: usize = 16;

/// One subscription on the external broker and where its messages go.
pub struct Route {
    /// The topic filter, e.g. [`parkd_core::topic::SPOT_FILTER`].
    pub filter: String,
    /// Whether the shared-subscription group applies: each message then goes to one parkd
    /// instance of the group. Off for messages every instance must see.
    pub shared: bool,
    /// Where its messages go.
    pub sink: Arc<dyn MessageSink>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("filter", &self.filter)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// A command on its way out: topic and payload.
type Outgoing = (String, Vec<u8>);

/// Publishes on the external broker (QoS 0, not retained) through a bounded queue; never
/// blocks. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ExternalPublisher {
    tx: flume::Sender<Outgoing>,
    dropped: IntCounter,
}

impl ExternalPublisher {
    /// Queues one message. `false` (and counted as dropped) when the queue is full or the
    /// connection is closed.
    pub fn publish(&self, topic: String, payload: Vec<u8>) -> bool {
        let queued = self.tx.try_send((topic, payload)).is_ok();
        if !queued {
            self.dropped.inc();
        }
        queued
    }
}

/// The connection to the external broker: one MQTT client (one client id) that subscribes to
/// the routes' filters and publishes what [`ExternalPublisher`]s queue.
///
/// Two tasks, both owned here: the event loop (connects, reconnects with backoff,
/// re-subscribes after every CONNACK, hands messages to the routes' sinks) and the forwarder
/// (moves queued publishes into rumqttc while connected and subscribed). Stop it in two steps:
/// [`Self::stop_delivery`] when the consumers must stop getting messages, [`Self::close`] once
/// nothing will publish any more.
#[derive(Debug)]
pub struct ExternalBroker {
    client: AsyncClient,
    filters: Vec<String>,
    publisher: ExternalPublisher,
    delivering: Arc<Mutex<bool>>,
    close: CancellationToken,
    abort: CancellationToken,
    loop_ended: CancellationToken,
    tasks: TaskTracker,
}

impl ExternalBroker {
    /// Connects (in the background: an unreachable broker is retried, not an error) and
    /// subscribes to every route. Publishes that cannot be sent are counted in `dropped`.
    pub fn connect(
        settings: ExternalSettings,
        routes: Vec<Route>,
        clock: Arc<dyn Clock>,
        dropped: IntCounter,
    ) -> Result<Self, BrokerError> {
        let (host, port) = host_port(&settings.url)?;
        let mut options = MqttOptions::new(settings.client_id.clone(), host, port);
        options
            .set_keep_alive(settings.keep_alive.max(Duration::from_secs(5)))
            .set_clean_session(true)
            .set_max_packet_size(64 * 1024, 64 * 1024)
            .set_request_channel_capacity(REQUEST_CHANNEL);
        if let Some(username) = &settings.username {
            options.set_credentials(
                username.clone(),
                settings.password.clone().unwrap_or_default(),
            );
        }
        let filters: Vec<String> = routes
            .iter()
            .map(|route| match (&settings.shared_group, route.shared) {
                (Some(group), true) => format!("$share/{group}/{}", route.filter),
                _ => route.filter.clone(),
            })
            .collect();
        let (client, eventloop) = AsyncClient::new(options, REQUEST_CHANNEL);
        let (tx, rx) = flume::bounded(PUBLISH_QUEUE);
        let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
        let broker = Self {
            client: client.clone(),
            filters: filters.clone(),
            publisher: ExternalPublisher {
                tx,
                dropped: dropped.clone(),
            },
            delivering: Arc::new(Mutex::new(true)),
            close: CancellationToken::new(),
            abort: CancellationToken::new(),
            loop_ended: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let event_loop = EventLoopTask {
            url: settings.url,
            client: client.clone(),
            routes,
            filters,
            clock,
            ready: ready_tx,
            dropped: dropped.clone(),
            delivering: broker.delivering.clone(),
            close: broker.close.clone(),
            abort: broker.abort.clone(),
        };
        let ended = broker.loop_ended.clone();
        broker.tasks.spawn(async move {
            let _ended = ended.drop_guard();
            event_loop.run(eventloop).await;
        });
        broker
            .tasks
            .spawn(forward(client, rx, ready_rx, broker.close.clone(), dropped));
        broker.tasks.close();
        Ok(broker)
    }

    /// Where to queue publishes.
    pub fn publisher(&self) -> ExternalPublisher {
        self.publisher.clone()
    }

    /// Whether the event loop still runs (connected or retrying).
    pub fn is_running(&self) -> bool {
        !self.loop_ended.is_cancelled()
    }

    /// Stops handing messages to the sinks and unsubscribes; publishing goes on. When it
    /// returns, no sink is given anything any more.
    pub fn stop_delivery(&self) {
        *self.delivering.lock().unwrap_or_else(|p| p.into_inner()) = false;
        for filter in &self.filters {
            if let Err(error) = self.client.try_unsubscribe(filter.clone()) {
                tracing::debug!(%error, filter, "unsubscribe not queued");
            }
        }
    }

    /// Sends what is queued (while connected), disconnects and waits for both tasks; gives up
    /// after `within` (an unreachable broker), counting what was not sent.
    pub async fn close(&self, within: Duration) {
        self.stop_delivery();
        self.close.cancel();
        if tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(?within, "external mqtt broker: closing timed out");
            self.abort.cancel();
            self.tasks.wait().await;
        }
    }
}

/// What the event loop task owns.
struct EventLoopTask {
    url: String,
    client: AsyncClient,
    routes: Vec<Route>,
    filters: Vec<String>,
    clock: Arc<dyn Clock>,
    ready: tokio::sync::watch::Sender<bool>,
    dropped: IntCounter,
    /// Whether messages still go to the sinks; held while one is handed over.
    delivering: Arc<Mutex<bool>>,
    close: CancellationToken,
    abort: CancellationToken,
}

impl EventLoopTask {
    async fn run(self, mut eventloop: EventLoop) {
        let mut backoff = Duration::from_millis(100);
        loop {
            // `poll` is not cancel-safe: raced against the final abort only, never a timer.
            let event = tokio::select! {
                () = self.abort.cancelled() => break,
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(100);
                    tracing::info!(url = self.url, "connected to external mqtt broker");
                    self.connected();
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => self.deliver(publish),
                // Everything queued before the DISCONNECT has been written.
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(error) => {
                    self.ready.send_replace(false);
                    // Publishes that were on their way are gone with the connection (clean
                    // session); subscriptions are made again after the next CONNACK.
                    count_lost(&mut eventloop, &self.dropped);
                    if self.close.is_cancelled() {
                        tracing::warn!(url = self.url, %error, "external mqtt broker lost while closing");
                        break;
                    }
                    tracing::warn!(url = self.url, %error, ?backoff, "external mqtt broker unreachable; retrying");
                    tokio::select! {
                        () = self.abort.cancelled() => break,
                        () = self.close.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        self.ready.send_replace(false);
        eventloop.clean();
        count_lost(&mut eventloop, &self.dropped);
    }

    /// After a CONNACK: subscribe (unless delivery has stopped), then let publishes through.
    fn connected(&self) {
        if self.is_delivering() {
            for filter in &self.filters {
                // The forwarder holds back while not ready, so the channel has room.
                if let Err(error) = self.client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                    tracing::error!(%error, filter, "cannot subscribe on external broker");
                }
            }
        }
        if self.close.is_cancelled() {
            // A DISCONNECT queued before the connection broke went with it.
            let _ = self.client.try_disconnect();
        }
        self.ready.send_replace(true);
    }

    fn is_delivering(&self) -> bool {
        *self.delivering.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deliver(&self, publish: rumqttc::Publish) {
        // Held while handing over, so that `stop_delivery` waits for a delivery under way.
        let delivering = self.delivering.lock().unwrap_or_else(|p| p.into_inner());
        if !*delivering {
            return;
        }
        let Some(route) = self
            .routes
            .iter()
            .find(|route| rumqttc::matches(&publish.topic, &route.filter))
        else {
            return;
        };
        route.sink.deliver(InboundMessage {
            topic: bytes::Bytes::from(publish.topic),
            payload: publish.payload,
            received_at: self.clock.now(),
        });
    }
}

/// Counts (and forgets) the publishes rumqttc kept from a lost connection: with a clean
/// session it would drop them at the next CONNACK anyway.
fn count_lost(eventloop: &mut EventLoop, dropped: &IntCounter) {
    let before = eventloop.pending.len();
    eventloop
        .pending
        .retain(|request| !matches!(request, Request::Publish(_)));
    dropped.inc_by((before - eventloop.pending.len()) as u64);
}

/// Moves queued publishes into rumqttc while the connection is up and subscribed; on close,
/// sends what is left (or counts it) and disconnects.
async fn forward(
    client: AsyncClient,
    rx: flume::Receiver<Outgoing>,
    mut ready: tokio::sync::watch::Receiver<bool>,
    close: CancellationToken,
    dropped: IntCounter,
) {
    loop {
        let (topic, payload) = tokio::select! {
            biased;
            () = close.cancelled() => break,
            next = rx.recv_async() => match next {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        let up = tokio::select! {
            biased;
            up = ready.wait_for(|up| *up) => up.is_ok(),
            () = close.cancelled() => false,
        };
        send(&client, up, topic, payload, &dropped).await;
    }
    // Closing: nothing new is accepted; what is queued goes out if the connection is up.
    let queued = rx.drain().collect::<Vec<_>>();
    drop(rx);
    for (topic, payload) in queued {
        let up = *ready.borrow();
        send(&client, up, topic, payload, &dropped).await;
    }
    let _ = client.disconnect().await;
}

/// Hands one publish to rumqttc (QoS 0, not retained) if the connection is `up`; counts it
/// as dropped otherwise or when rumqttc has stopped.
async fn send(
    client: &AsyncClient,
    up: bool,
    topic: String,
    payload: Vec<u8>,
    dropped: &IntCounter,
) {
    let sent = up
        && client
            .publish(topic, QoS::AtMostOnce, false, payload)
            .await
            .is_ok();
    if !sent {
        dropped.inc();
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        assert_eq!(host_port("mqtt://mq:1884").unwrap(), ("mq".into(), 1884));
        assert_eq!(
            host_port("tcp://10.0.0.1").unwrap(),
            ("10.0.0.1".into(), 1883)
        );
        assert_eq!(
            host_port("mqtt://[::1]:1883").unwrap(),
            ("::1".into(), 1883)
        );
        assert!(host_port("http://x").is_err());
        assert!(host_port("mqtt://:1883").is_err());
        assert!(host_port("mqtt://x:port").is_err());
    }

    #[tokio::test]
    async fn publishes_that_cannot_be_sent_are_counted_and_close_does_not_hang() {
        // A port nobody listens on: the broker is down for the whole test.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dropped = IntCounter::new("dropped", "test").unwrap();
        let broker = ExternalBroker::connect(
            ExternalSettings {
                url: format!("mqtt://127.0.0.1:{port}"),
                client_id: "parkd-test".into(),
                username: None,
                password: None,
                shared_group: None,
                keep_alive: Duration::from_secs(5),
            },
            Vec::new(),
            Arc::new(parkd_core::clock::SystemClock),
            dropped.clone(),
        )
        .unwrap();
        let publisher = broker.publisher();
        let offered = PUBLISH_QUEUE + 3;
        let queued = (0..offered)
            .filter(|_| {
                publisher.publish("parking/v1/g1/gates/in-1/command".into(), b"{}".to_vec())
            })
            .count();
        // The queue holds PUBLISH_QUEUE (and the forwarder may hold one more, waiting).
        assert!(queued >= PUBLISH_QUEUE, "{queued}");
        assert_eq!(dropped.get() as usize, offered - queued);
        assert!(broker.is_running());

        // Closing gives up on the unreachable broker and counts what it could not send.
        tokio::time::timeout(Duration::from_secs(5), broker.close(Duration::from_secs(2)))
            .await
            .expect("close returns");
        assert!(!broker.is_running());
        assert_eq!(dropped.get() as usize, offered);
        assert!(!publisher.publish("parking/v1/g1/gates/in-1/command".into(), Vec::new()));
        assert_eq!(dropped.get() as usize, offered + 1);
    }
}
