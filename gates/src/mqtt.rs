//! The gate side of MQTT: messages on `parking/v1/+/gates/+/+` come in through a
//! [`GateSink`] (a bounded queue: the broker's delivery thread never waits for the database),
//! [`run`] answers each request on the gate's `command` topic through a [`CommandOut`], and
//! [`watch_arrivals`] follows the spots' live state to confirm where entered cars park.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parkd_broker::embedded::LocalPublisher;
use parkd_broker::external::ExternalPublisher;
use parkd_broker::{InboundMessage, MessageSink};
use parkd_core::gate::GateEvent;
use parkd_core::ids::{GateId, LotId, SpotId};
use parkd_core::payload::DeviceStatus;
use parkd_core::topic::{GateChannel, Topic};
use parkd_occupancy::{OccupancyEngine, SpotState};
use prometheus::IntCounter;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::GateService;

/// Requests decided at once; more wait in the queue.
const CONCURRENT_DECISIONS: usize = 64;

/// Where commands go: the broker, embedded or external.
pub trait CommandOut: Send + Sync + std::fmt::Debug {
    /// Queues `payload` for `topic` (QoS 0, not retained); never blocks.
    fn send(&self, topic: String, payload: Vec<u8>);
}

/// External-broker mode: commands go to the connection's bounded publish queue, which counts
/// what it cannot take (and what a lost connection took with it) as dropped.
impl CommandOut for ExternalPublisher {
    fn send(&self, topic: String, payload: Vec<u8>) {
        // `false` means dropped, and the publisher has counted it already.
        let _queued = self.publish(topic, payload);
    }
}

/// Hands received gate messages to [`run`] through a bounded queue.
#[derive(Debug, Clone)]
pub struct GateSink {
    tx: flume::Sender<InboundMessage>,
    dropped: IntCounter,
}

impl GateSink {
    /// A sink and the receiving end for [`run`]; `capacity` messages may wait.
    pub fn new(capacity: usize, dropped: IntCounter) -> (Self, flume::Receiver<InboundMessage>) {
        let (tx, rx) = flume::bounded(capacity.max(1));
        (Self { tx, dropped }, rx)
    }
}

impl MessageSink for GateSink {
    fn deliver(&self, message: InboundMessage) {
        // A full queue means the database is far behind; the gate repeats its request.
        if self.tx.try_send(message).is_err() {
            self.dropped.inc();
        }
    }
}

/// A command on its way out: topic and payload.
type Outgoing = (String, Vec<u8>);

/// Publishes commands through the embedded broker from a thread of its own (a local link's
/// publish is a blocking channel send).
#[derive(Debug)]
pub struct EmbeddedCommands {
    tx: Mutex<Option<flume::Sender<Outgoing>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    dropped: IntCounter,
}

impl EmbeddedCommands {
    /// Starts the publishing thread.
    pub fn start(mut publisher: LocalPublisher, dropped: IntCounter) -> std::io::Result<Self> {
        let (tx, rx) = flume::bounded::<Outgoing>(4096);
        let thread = std::thread::Builder::new()
            .name("gate-commands".into())
            .spawn(move || {
                while let Ok((topic, payload)) = rx.recv() {
                    if let Err(error) = publisher.publish(&topic, payload) {
                        tracing::warn!(%topic, %error, "gate command not published");
                    }
                }
            })?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            dropped,
        })
    }

    /// Publishes what is queued, then stops the thread.
    pub fn stop(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl CommandOut for EmbeddedCommands {
    fn send(&self, topic: String, payload: Vec<u8>) {
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|tx| tx.try_send((topic, payload)).is_ok());
        if !sent {
            self.dropped.inc();
        }
    }
}

/// The gates' last words, for operators.
#[derive(Debug, Clone, Default)]
pub struct GateState {
    /// Online per its retained status (or its will).
    pub online: Option<bool>,
    /// When it last said anything.
    pub last_contact: Option<chrono::DateTime<chrono::Utc>>,
    /// Its last barrier event.
    pub last_event: Option<GateEvent>,
}

/// The last known state of every gate that spoke since the start.
#[derive(Debug, Default)]
pub struct GateStates {
    states: Mutex<HashMap<(LotId, GateId), GateState>>,
}

impl GateStates {
    fn update(&self, lot: &LotId, gate: &GateId, f: impl FnOnce(&mut GateState)) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        f(states.entry((lot.clone(), gate.clone())).or_default());
    }

    /// A copy of one lot's gate states.
    pub fn of_lot(&self, lot: &LotId) -> Vec<(GateId, GateState)> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(GateId, GateState)> = states
            .iter()
            .filter(|((l, _), _)| l == lot)
            .map(|((_, g), s)| (g.clone(), s.clone()))
            .collect();
        out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        out
    }
}

/// Answers gate requests from `rx` until `stop`, then lets the decisions in flight finish.
pub async fn run(
    service: Arc<GateService>,
    rx: flume::Receiver<InboundMessage>,
    out: Arc<dyn CommandOut>,
    states: Arc<GateStates>,
    stop: CancellationToken,
) {
    let tasks = TaskTracker::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_DECISIONS));
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = rx.recv_async() => match message {
                Ok(message) => message,
                Err(_) => break,
            },
        };
        let Ok(topic) = std::str::from_utf8(&message.topic)
            .map_err(|_| ())
            .and_then(|raw| Topic::parse(raw).map_err(|_| ()))
        else {
            service.metrics().reject("bad_topic");
            continue;
        };
        let Topic::Gate { lot, gate, channel } = topic else {
            continue;
        };
        match channel {
            GateChannel::Request => {
                states.update(&lot, &gate, |s| s.last_contact = Some(message.received_at));
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    break;
                };
                let service = Arc::clone(&service);
                let out = Arc::clone(&out);
                tasks.spawn(async move {
                    let command = service
                        .handle_request(&lot, &gate, &message.payload, message.received_at)
                        .await;
                    let topic = Topic::Gate {
                        lot,
                        gate,
                        channel: GateChannel::Command,
                    };
                    out.send(topic.to_string(), command.encode());
                    drop(permit);
                });
            }
            GateChannel::Event => match GateEvent::decode(&message.payload) {
                Ok(event) => {
                    service
                        .metrics()
                        .events
                        .with_label_values(&[event.event.as_str()])
                        .inc();
                    if event.event == parkd_core::gate::BarrierEvent::Fault {
                        tracing::warn!(%lot, %gate, detail = ?event.detail, "gate fault");
                    }
                    states.update(&lot, &gate, |s| {
                        s.last_contact = Some(message.received_at);
                        s.last_event = Some(event);
                    });
                }
                Err(error) => service.metrics().reject(error.reason()),
            },
            GateChannel::Status => match DeviceStatus::decode(&message.payload) {
                Ok(status) => states.update(&lot, &gate, |s| {
                    s.online = Some(status.online);
                    s.last_contact = Some(message.received_at);
                }),
                Err(error) => service.metrics().reject(error.reason()),
            },
            // Our own answers, seen through the wildcard subscription.
            GateChannel::Command => {}
        }
    }
    tasks.close();
    tasks.wait().await;
}

/// Follows every lot's live feed and tells the service when a car parks (a spot turns
/// occupied), so sessions learn their real spot. Lots added later are picked up within
/// `rescan`.
pub async fn watch_arrivals(
    service: Arc<GateService>,
    engine: Arc<OccupancyEngine>,
    rescan: Duration,
    stop: CancellationToken,
) {
    let watchers = TaskTracker::new();
    let watched: Arc<Mutex<HashSet<LotId>>> = Arc::default();
    let mut tick = tokio::time::interval(rescan);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        for lot in engine.lot_ids() {
            if !watched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(lot.clone())
            {
                continue;
            }
            watchers.spawn(watch_lot(
                Arc::clone(&service),
                Arc::clone(&engine),
                lot,
                Arc::clone(&watched),
                stop.clone(),
            ));
        }
    }
    watchers.close();
    watchers.wait().await;
}

async fn watch_lot(
    service: Arc<GateService>,
    engine: Arc<OccupancyEngine>,
    lot: LotId,
    watched: Arc<Mutex<HashSet<LotId>>>,
    stop: CancellationToken,
) {
    'subscribe: while let Some(mut feed) = engine.subscribe(&lot) {
        let mut last: HashMap<SpotId, SpotState> = engine
            .snapshot(&lot, chrono::Utc::now(), None)
            .map(|s| s.spots.into_iter().map(|v| (v.id, v.state)).collect())
            .unwrap_or_default();
        loop {
            let delta = tokio::select! {
                () = stop.cancelled() => break 'subscribe,
                delta = feed.recv() => delta,
            };
            match delta {
                Ok(delta) => {
                    let now = delta.spot.state;
                    let was = last
                        .insert(delta.spot.id.clone(), now)
                        .unwrap_or(SpotState::Unknown);
                    if now == SpotState::Occupied
                        && was != SpotState::Occupied
                        && let Err(error) = service
                            .car_parked(&lot, &delta.spot.id, was, delta.at)
                            .await
                    {
                        tracing::warn!(%lot, spot = %delta.spot.id, %error, "arrival not recorded");
                    }
                }
                // Fell behind: start again from the current state (arrivals in the gap are
                // matched by the next ones or released by the arrival timeout).
                Err(RecvError::Lagged(_)) => continue 'subscribe,
                // The model was reloaded (resubscribe) or the lot removed (the loop ends).
                Err(RecvError::Closed) => continue 'subscribe,
            }
        }
    }
    watched
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&lot);
}
