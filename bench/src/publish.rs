//! Sensor state changes over real MQTT, paced, with the send instant of every change kept so
//! that a receiver in the same process can compute publish → receipt latency.
//!
//! Spot `i` of the list is published by connection `i % connections` (so one spot's messages
//! share a connection and stay in order). Each connection walks its spots round-robin, and
//! every message carries the opposite of the spot's last published value (first `occupied`),
//! remembered across calls in [`SendTimes`], so with the debounce off every message is a
//! change. Payloads are `{"occupied":..,"ts":<Unix ms>}` at QoS 0, no
//! `seq` (ingest's de-duplication window only applies to messages with one).
//!
//! **Send clock.** Before a message is handed to its MQTT client, its [`Instant`] (as ns since
//! the base instant of [`SendTimes`]) is stored for (spot, value). A receiver that sees spot `i` turn to
//! `value` looks that up: the latency is exact as long as it is shorter than the time until
//! the same spot is published with the same value again (`2 x spots / rate`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parkd_core::ids::{LotId, SpotId};
use parkd_core::payload::SpotState;
use parkd_core::topic::{SpotChannel, Topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio_util::sync::CancellationToken;

/// The send instant of the latest message per (spot, value).
#[derive(Debug)]
pub(crate) struct SendTimes {
    base: Instant,
    /// `[free, occupied]` per spot: ns since `base` + 1 (0 = never sent).
    sent: Vec<[AtomicU64; 2]>,
    /// Spot id → index.
    index: HashMap<Box<str>, u32>,
    /// The last value published per spot: 0 none, 1 free, 2 occupied.
    last: Vec<AtomicU8>,
}

impl SendTimes {
    pub(crate) fn new(spots: &[SpotId]) -> Self {
        Self {
            base: Instant::now(),
            sent: spots
                .iter()
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
            index: spots
                .iter()
                .enumerate()
                .map(|(i, s)| (Box::from(s.as_str()), i as u32))
                .collect(),
            last: spots.iter().map(|_| AtomicU8::new(0)).collect(),
        }
    }

    /// The value spot `i` is published with next (the opposite of the last; first occupied),
    /// remembered as published.
    fn next_value(&self, spot: usize) -> bool {
        let occupied = self.last[spot].load(Ordering::Relaxed) != 2;
        self.last[spot].store(if occupied { 2 } else { 1 }, Ordering::Relaxed);
        occupied
    }

    /// Nanoseconds from [`SendTimes::base`] to `at`.
    pub(crate) fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }

    fn mark(&self, spot: usize, occupied: bool) {
        let now = self.ns(Instant::now()) + 1;
        self.sent[spot][usize::from(occupied)].store(now, Ordering::Release);
    }

    /// When spot `id` was last published with `occupied`, as ns since base.
    pub(crate) fn sent_ns(&self, id: &str, occupied: bool) -> Option<u64> {
        let i = *self.index.get(id)? as usize;
        match self.sent[i][usize::from(occupied)].load(Ordering::Acquire) {
            0 => None,
            ns => Some(ns - 1),
        }
    }
}

/// What to publish.
#[derive(Debug, Clone)]
pub(crate) struct PublishPlan {
    pub(crate) broker: std::net::SocketAddr,
    pub(crate) lot: LotId,
    pub(crate) spots: Vec<SpotId>,
    /// Messages per second, all connections together.
    pub(crate) rate: f64,
    /// Messages in all.
    pub(crate) count: u64,
    pub(crate) connections: usize,
    /// Client ids are `{client_prefix}-{n}` (valid device ids).
    pub(crate) client_prefix: String,
}

/// What the publishers did.
#[derive(Debug, Clone, Default)]
pub(crate) struct PublishReport {
    /// Messages the MQTT clients accepted.
    pub(crate) queued: u64,
    /// PUBLISH packets written to the sockets.
    pub(crate) sent: u64,
    /// Times a full client queue made a connection wait for the next tick.
    pub(crate) backpressure: u64,
    /// Event loop errors (dropped connections).
    pub(crate) errors: u64,
    /// First message → last message queued.
    pub(crate) elapsed: Duration,
    /// When the first message was due.
    pub(crate) started: Option<Instant>,
}

impl PublishReport {
    pub(crate) fn rate(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            self.queued as f64 / self.elapsed.as_secs_f64()
        }
    }
}

struct Conn {
    client: AsyncClient,
    connected: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

fn connect(plan: &PublishPlan, n: usize, stop: &CancellationToken) -> Conn {
    let mut options = MqttOptions::new(
        format!("{}-{n}", plan.client_prefix),
        plan.broker.ip().to_string(),
        plan.broker.port(),
    );
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_request_channel_capacity(8192);
    let (client, mut eventloop) = AsyncClient::new(options, 8192);
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(5);
    eventloop.set_network_options(network);
    let connected = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let task = {
        let (connected, sent, errors, stop) = (
            connected.clone(),
            sent.clone(),
            errors.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut disconnecting = false;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected.store(true, Ordering::Release);
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => disconnecting = true,
                    Ok(_) => {}
                    Err(_) if disconnecting || stop.is_cancelled() => break,
                    Err(error) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        connected.store(false, Ordering::Release);
                        tracing::warn!(%error, "bench publisher: MQTT connection error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };
    Conn {
        client,
        connected,
        sent,
        errors,
        task,
    }
}

/// Publishes `plan.count` state changes at `plan.rate`, recording every send in `times`
/// (whose spot list must be `plan.spots`). `on_start` is told the instant the first message
/// is due (after the connections are up). Runs on the caller's runtime.
pub(crate) async fn publish(
    plan: &PublishPlan,
    times: Arc<SendTimes>,
    on_start: impl FnOnce(Instant),
) -> anyhow::Result<PublishReport> {
    if plan.spots.is_empty() || plan.connections == 0 || !plan.rate.is_finite() || plan.rate <= 0.0
    {
        bail!("nothing to publish");
    }
    let stop = CancellationToken::new();
    let conns: Vec<Conn> = (0..plan.connections)
        .map(|n| connect(plan, n, &stop))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !conns.iter().all(|c| c.connected.load(Ordering::Acquire)) {
        if Instant::now() > deadline {
            bail!("the bench publishers did not connect within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let topics: Vec<String> = plan
        .spots
        .iter()
        .map(|spot| {
            Topic::Spot {
                lot: plan.lot.clone(),
                spot: spot.clone(),
                channel: SpotChannel::State,
            }
            .to_string()
        })
        .collect();
    let topics = Arc::new(topics);
    let started = Instant::now();
    on_start(started);
    let mut tasks = tokio::task::JoinSet::new();
    let n = plan.connections;
    for (c, conn) in conns.iter().enumerate() {
        let mine: Vec<usize> = (c..plan.spots.len()).step_by(n).collect();
        if mine.is_empty() {
            continue;
        }
        // Split the count and the rate evenly (the first `count % n` connections send one more).
        let count = plan.count / n as u64 + u64::from((c as u64) < plan.count % n as u64);
        let rate = plan.rate / n as f64;
        let client = conn.client.clone();
        let (times, topics) = (times.clone(), topics.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut done = 0u64;
            let mut backpressure = 0u64;
            // At most 50 ms worth in one burst after a late tick.
            let burst = ((rate * 0.05).ceil() as u64).max(1);
            while done < count {
                tick.tick().await;
                let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(count);
                let mut budget = due.saturating_sub(done).min(burst);
                while budget > 0 {
                    let k = done as usize;
                    let spot = mine[k % mine.len()];
                    let occupied = times.next_value(spot);
                    times.mark(spot, occupied);
                    let payload = SpotState {
                        occupied,
                        seq: None,
                        ts: Some(chrono::Utc::now().timestamp_millis()),
                        battery_mv: None,
                        rssi: None,
                    }
                    .encode();
                    match client.try_publish(&topics[spot], QoS::AtMostOnce, false, payload) {
                        Ok(()) => {
                            done += 1;
                            budget -= 1;
                        }
                        Err(_) => {
                            // Not sent: the next attempt publishes the same value again.
                            times.last[spot].store(if occupied { 1 } else { 2 }, Ordering::Relaxed);
                            backpressure += 1;
                            break;
                        }
                    }
                }
            }
            (done, backpressure, started.elapsed())
        });
    }
    let mut report = PublishReport {
        started: Some(started),
        ..PublishReport::default()
    };
    while let Some(done) = tasks.join_next().await {
        let (queued, backpressure, elapsed) = done.context("a publisher task failed")?;
        report.queued += queued;
        report.backpressure += backpressure;
        report.elapsed = report.elapsed.max(elapsed);
    }
    // Let the event loops write what is queued, then disconnect.
    let drain = Instant::now() + Duration::from_secs(10);
    while conns
        .iter()
        .map(|c| c.sent.load(Ordering::Relaxed))
        .sum::<u64>()
        < report.queued
        && Instant::now() < drain
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for conn in &conns {
        let _ = conn.client.try_disconnect();
    }
    let closing = Instant::now() + Duration::from_secs(2);
    while !conns.iter().all(|c| c.task.is_finished()) && Instant::now() < closing {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    for conn in conns {
        report.sent += conn.sent.load(Ordering::Relaxed);
        report.errors += conn.errors.load(Ordering::Relaxed);
        conn.task.abort();
    }
    Ok(report)
}
