//! Load mode: C connections publish `state` messages as fast as asked, and count exactly.
//!
//! Connection `c` (client id `{client_prefix}-{c}`) owns [`LoadConfig::spots_per_connection`]
//! spots of its own, `C{c:03}-{k:04}` in lot [`LoadConfig::lot`], and publishes to them in
//! turn, so that no two connections ever write the same spot. Every message is a valid
//! [`SpotState`] whose `seq` is unique per spot (it grows by one per round over the spots,
//! from [`LoadConfig::seq_base`]) and whose `ts` is the Unix time in milliseconds at which the
//! message was handed to the MQTT client, so a receiver can compute the latency.
//!
//! **Pacing.** With a [`LoadConfig::rate`] (messages per second for the whole run, split evenly
//! over the connections) each connection wakes on a tokio interval of [`LoadConfig::tick`]
//! (1 ms by default) and sends, in one burst, the messages that are due since the start (at most
//! 50 ms worth at once), so high rates need no per-message timer and a late tick is caught up.
//! Without a rate each connection sends bursts of 64 as fast as its request queue drains. The
//! client's send is never awaited (a send future dropped at the deadline may already have
//! handed its message over, which would make the count wrong): a full queue is retried after a
//! millisecond, which the queue covers many times over.
//!
//! **Counting.** `queued` is what the client accepted, `sent` the PUBLISH packets the event loop
//! wrote to its socket, and `acked` the PUBACKs (QoS 1). After the last message the run waits
//! (up to [`LoadConfig::drain_timeout`]) until every queued message is written, and acknowledged
//! at QoS 1, before it disconnects; `elapsed_s` and `achieved_rate` run from the first message
//! to that moment. A reconnect at QoS 1 loses the unacknowledged messages of the clean session
//! (rumqttc drops them); such losses show as `queued > sent` or `sent > acked`, never hidden.
//!
//! **Throughput settings.** rumqttc writes and flushes one packet per poll, so the request queue
//! ([`LoadConfig::channel_capacity`], 1,024 by default, against 10 in rumqttc's default) must
//! absorb a whole burst, and QoS 1 needs a window of unacknowledged publishes
//! ([`LoadConfig::inflight`], 1,000 by default against 100) larger than a round trip's worth.
//! `pending_throttle` only delays the replay of pending messages after a reconnect and stays 0;
//! rumqttc 0.25 stores `max_request_batch` but never reads it. On this project's 2-core machine
//! against a local Mosquitto 2.0 these defaults gave about 120,000-180,000 messages/s at QoS 0
//! (8 to 32 connections) and 30,000-45,000 at QoS 1, with Mosquitto's single thread saturated
//! (see `simulators/README.md`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parkd_core::ids::{LotId, SpotId};
use parkd_core::payload::SpotState;
use parkd_core::throttle::LogThrottle;
use parkd_core::topic::{SpotChannel, Topic};
use rumqttc::{AsyncClient, ClientError, Request};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::error::SimError;
use crate::fleet::sleep_until_opt;
use crate::mqtt::{
    ConnCounters, ConnSpec, Credentials, MIN_KEEP_ALIVE, MqttEndpoint, Qos, poll_loop,
    seq_base_now, unix_ms, wait_connected,
};

/// Messages sent per burst without a rate limit.
const UNLIMITED_BURST: u64 = 64;

/// Everything a load run needs. [`LoadConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The broker.
    pub mqtt: MqttEndpoint,
    /// MQTT connections. Default 8.
    pub connections: usize,
    /// Distinct spots per connection. Default 100.
    pub spots_per_connection: usize,
    /// The lot of every spot. Default `load`.
    pub lot: LotId,
    /// Messages per second for the whole run; `None` sends as fast as possible.
    pub rate: Option<f64>,
    /// QoS of every message. Default 0.
    pub qos: Qos,
    /// Stop after this much time from the first message.
    pub duration: Option<Duration>,
    /// Stop after this many messages in total (split over the connections).
    pub count: Option<u64>,
    /// Pacing interval with a rate. Default 1 ms.
    pub tick: Duration,
    /// Client ids are `{client_prefix}-{n}`. Default `parkd-load`.
    pub client_prefix: String,
    /// Logins by client id; `None` connects anonymously.
    pub credentials: Option<Credentials>,
    /// MQTT keep alive (at least 5 s). Default 30 s.
    pub keep_alive: Duration,
    /// Unacknowledged QoS 1 publishes allowed per connection. Default 1,000.
    pub inflight: u16,
    /// Capacity of each client's request queue. Default 1,024.
    pub channel_capacity: usize,
    /// TCP_NODELAY on the sockets (no Nagle delay; better latency figures). Default true.
    pub tcp_nodelay: bool,
    /// First `seq` of every spot; `None` (the default) takes the start time in microseconds.
    pub seq_base: Option<u64>,
    /// How long every connection gets to come up. Default 10 s.
    pub connect_timeout: Duration,
    /// How long the queued messages get to be written (and acknowledged) at the end.
    /// Default 10 s.
    pub drain_timeout: Duration,
}

impl LoadConfig {
    /// `connections` connections to `mqtt` with the defaults documented on each field; set a
    /// `duration` or a `count` before running.
    pub fn new(mqtt: MqttEndpoint, connections: usize) -> Self {
        Self {
            mqtt,
            connections,
            spots_per_connection: 100,
            lot: LotId::parse("load").unwrap_or_else(|_| unreachable!("a valid literal id")),
            rate: None,
            qos: Qos::AtMostOnce,
            duration: None,
            count: None,
            tick: Duration::from_millis(1),
            client_prefix: "parkd-load".to_owned(),
            credentials: None,
            keep_alive: Duration::from_secs(30),
            inflight: 1_000,
            channel_capacity: 1_024,
            tcp_nodelay: true,
            seq_base: None,
            connect_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), SimError> {
        if !(1..=10_000).contains(&self.connections) {
            return Err(SimError::config("connections must be within 1..=10000"));
        }
        if !(1..=100_000).contains(&self.spots_per_connection) {
            return Err(SimError::config(
                "spots per connection must be within 1..=100000",
            ));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(SimError::config("the rate must be a positive number"));
        }
        if self.duration.is_none() && self.count.is_none() {
            return Err(SimError::config("a load run needs a duration or a count"));
        }
        if self.tick < Duration::from_millis(1) {
            return Err(SimError::config("the tick must be at least 1 ms"));
        }
        if self.keep_alive < MIN_KEEP_ALIVE {
            return Err(SimError::config(format!(
                "keep alive must be at least {MIN_KEEP_ALIVE:?}"
            )));
        }
        if self.inflight == 0 || self.channel_capacity == 0 {
            return Err(SimError::config(
                "inflight and channel capacity must be positive",
            ));
        }
        let last = self.connections - 1;
        client_id(&self.client_prefix, last)?;
        load_spot_id(last, self.spots_per_connection - 1)?;
        Ok(())
    }
}

fn client_id(prefix: &str, conn: usize) -> Result<String, SimError> {
    let raw = format!("{prefix}-{conn}");
    parkd_core::ids::DeviceId::parse(&raw)
        .map(|id| id.to_string())
        .map_err(|source| SimError::InvalidId { value: raw, source })
}

/// The spot id of spot `k` of connection `conn` (both from 0): `C001-0001`.
pub fn load_spot_id(conn: usize, k: usize) -> Result<SpotId, SimError> {
    let raw = format!("C{:03}-{:04}", conn + 1, k + 1);
    SpotId::parse(&raw).map_err(|source| SimError::InvalidId { value: raw, source })
}

/// What one connection did.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionReport {
    /// Its MQTT client id.
    pub client_id: String,
    /// Messages the client accepted.
    pub queued: u64,
    /// PUBLISH packets written to the socket.
    pub sent: u64,
    /// PUBACKs received (QoS 1).
    pub acked: u64,
    /// Connection errors (failed connects, dropped connections).
    pub connection_errors: u64,
    /// Messages the client refused (its event loop had stopped).
    pub publish_errors: u64,
    /// The last connection error, if any.
    pub last_error: Option<String>,
}

/// What a load run did.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// QoS used.
    pub qos: Qos,
    /// Connections used.
    pub connections: usize,
    /// Distinct spots written.
    pub spots: usize,
    /// The rate asked for, messages per second (`null`: unlimited).
    pub target_rate: Option<f64>,
    /// Seconds from the first message to the last one written (and acknowledged at QoS 1).
    pub elapsed_s: f64,
    /// Messages accepted by the clients.
    pub queued: u64,
    /// PUBLISH packets written to the sockets.
    pub sent: u64,
    /// PUBACKs received (0 at QoS 0).
    pub acked: u64,
    /// `sent / elapsed_s`.
    pub achieved_rate: f64,
    /// Messages queued but never written.
    pub unsent: u64,
    /// Connection errors, all connections.
    pub connection_errors: u64,
    /// Messages refused by the clients.
    pub publish_errors: u64,
    /// Whether the drain at the end timed out.
    pub drain_timed_out: bool,
    /// The first `seq` of every spot.
    pub seq_base: u64,
    /// Per connection, in client id order.
    pub per_connection: Vec<ConnectionReport>,
}

/// One connection's share of the work.
struct Job {
    client: AsyncClient,
    counters: Arc<ConnCounters>,
    topics: Vec<String>,
    quota: Option<u64>,
    rate: Option<f64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct JobOutcome {
    queued: u64,
    publish_errors: u64,
}

/// Runs a load test until its duration or count is reached, or `shutdown` fires. Fails on an
/// invalid configuration or when the connections do not all come up within the connect
/// timeout.
pub async fn run_load(
    config: LoadConfig,
    shutdown: CancellationToken,
) -> Result<LoadReport, SimError> {
    config.validate()?;
    let seq_base = config.seq_base.unwrap_or_else(seq_base_now);
    let poll_token = shutdown.child_token();
    let log = Arc::new(LogThrottle::new(Duration::from_secs(5)));
    let mut polls = JoinSet::new();
    let mut clients = Vec::with_capacity(config.connections);
    let mut counters = Vec::with_capacity(config.connections);
    let mut client_ids = Vec::with_capacity(config.connections);
    for conn in 0..config.connections {
        let id = client_id(&config.client_prefix, conn)?;
        let spec = ConnSpec {
            endpoint: &config.mqtt,
            client_id: &id,
            credentials: config.credentials.as_ref(),
            keep_alive: config.keep_alive,
            will: None,
            inflight: config.inflight,
            channel_capacity: config.channel_capacity,
        };
        let (client, eventloop) = spec.connect(config.tcp_nodelay);
        let conn_counters = ConnCounters::new();
        polls.spawn(poll_loop(
            eventloop,
            conn_counters.clone(),
            poll_token.clone(),
            log.clone(),
        ));
        clients.push(client);
        counters.push(conn_counters);
        client_ids.push(id);
    }
    let up = wait_connected(&counters, config.connect_timeout, &shutdown).await;
    if up < config.connections && !shutdown.is_cancelled() {
        let detail = counters
            .iter()
            .find_map(|c| c.last_error())
            .unwrap_or_else(|| "no answer".to_owned());
        poll_token.cancel();
        polls.abort_all();
        while polls.join_next().await.is_some() {}
        return Err(SimError::Connect {
            endpoint: config.mqtt.to_string(),
            connected: up,
            wanted: config.connections,
            detail,
        });
    }
    tracing::info!(
        connections = config.connections,
        rate = ?config.rate,
        qos = config.qos.level(),
        "load connected; publishing"
    );

    let start = Instant::now();
    let deadline = config.duration.map(|d| start + d);
    let per_conn_rate = config.rate.map(|r| r / config.connections as f64);
    let mut publishers = JoinSet::new();
    for (conn, client) in clients.iter().enumerate() {
        let quota = config.count.map(|count| {
            let n = config.connections as u64;
            count / n + u64::from((conn as u64) < count % n)
        });
        let mut topics = Vec::with_capacity(config.spots_per_connection);
        for k in 0..config.spots_per_connection {
            let spot = load_spot_id(conn, k)?;
            topics.push(Topic::spot(&config.lot, &spot, SpotChannel::State).to_string());
        }
        let job = Job {
            client: client.clone(),
            counters: counters[conn].clone(),
            topics,
            quota,
            rate: per_conn_rate,
        };
        let context = PublishContext {
            qos: config.qos,
            seq_base,
            start,
            deadline,
            tick: config.tick,
            shutdown: shutdown.clone(),
        };
        publishers.spawn(async move { (conn, publish(job, context).await) });
    }
    let mut outcomes = vec![JobOutcome::default(); config.connections];
    while let Some(joined) = publishers.join_next().await {
        match joined {
            Ok((conn, outcome)) => outcomes[conn] = outcome,
            Err(error) => tracing::error!(%error, "publisher task failed"),
        }
    }

    // Drain: wait until every queued message is written (and acknowledged at QoS 1).
    let drain_deadline = Instant::now() + config.drain_timeout;
    let drained = |outcomes: &[JobOutcome]| {
        counters.iter().zip(outcomes).all(|(c, outcome)| {
            let sent = c.publishes_sent.load(Ordering::Acquire);
            let acked = c.pubacks.load(Ordering::Acquire);
            sent >= outcome.queued && (config.qos == Qos::AtMostOnce || acked >= sent)
        })
    };
    let mut drain_timed_out = false;
    while !drained(&outcomes) {
        if Instant::now() >= drain_deadline {
            drain_timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed_s = start.elapsed().as_secs_f64();

    poll_token.cancel();
    for client in &clients {
        let _ = client.try_disconnect();
    }
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        while polls.join_next().await.is_some() {}
    })
    .await;
    if closed.is_err() {
        polls.abort_all();
        while polls.join_next().await.is_some() {}
    }

    let per_connection: Vec<ConnectionReport> = client_ids
        .into_iter()
        .zip(&counters)
        .zip(&outcomes)
        .map(|((client_id, c), outcome)| ConnectionReport {
            client_id,
            queued: outcome.queued,
            sent: c.publishes_sent.load(Ordering::Acquire),
            acked: c.pubacks.load(Ordering::Acquire),
            connection_errors: c.errors.load(Ordering::Acquire),
            publish_errors: outcome.publish_errors,
            last_error: c.last_error(),
        })
        .collect();
    let sum = |f: fn(&ConnectionReport) -> u64| per_connection.iter().map(f).sum::<u64>();
    let queued = sum(|c| c.queued);
    let sent = sum(|c| c.sent);
    Ok(LoadReport {
        qos: config.qos,
        connections: config.connections,
        spots: config.connections * config.spots_per_connection,
        target_rate: config.rate,
        elapsed_s,
        queued,
        sent,
        acked: sum(|c| c.acked),
        achieved_rate: if elapsed_s > 0.0 {
            sent as f64 / elapsed_s
        } else {
            0.0
        },
        unsent: queued.saturating_sub(sent),
        connection_errors: sum(|c| c.connection_errors),
        publish_errors: sum(|c| c.publish_errors),
        drain_timed_out,
        seq_base,
        per_connection,
    })
}

struct PublishContext {
    qos: Qos,
    seq_base: u64,
    start: Instant,
    deadline: Option<Instant>,
    tick: Duration,
    shutdown: CancellationToken,
}

enum Sent {
    Ok,
    Refused,
    Stop,
}

/// One connection's publisher: bursts of messages, paced or not, until its quota, the deadline
/// or the token.
async fn publish(job: Job, ctx: PublishContext) -> JobOutcome {
    let mut outcome = JobOutcome::default();
    let quota = job.quota.unwrap_or(u64::MAX);
    let mut interval = tokio::time::interval(ctx.tick);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let max_burst = job
        .rate
        .map(|rate| (rate * 0.05).ceil().max(1.0) as u64)
        .unwrap_or(UNLIMITED_BURST);
    loop {
        if outcome.queued >= quota || ctx.shutdown.is_cancelled() {
            break;
        }
        let burst = match job.rate {
            Some(rate) => {
                tokio::select! {
                    biased;
                    () = ctx.shutdown.cancelled() => break,
                    () = sleep_until_opt(ctx.deadline) => break,
                    _ = interval.tick() => {}
                }
                let due = (ctx.start.elapsed().as_secs_f64() * rate) as u64;
                due.min(quota).saturating_sub(outcome.queued).min(max_burst)
            }
            None => {
                if ctx.deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                (quota - outcome.queued).min(max_burst)
            }
        };
        for _ in 0..burst {
            match send_one(&job, &ctx, outcome.queued).await {
                Sent::Ok => outcome.queued += 1,
                Sent::Refused => {
                    outcome.publish_errors += 1;
                    return outcome;
                }
                Sent::Stop => return outcome,
            }
        }
        if job.rate.is_none() {
            // Never starve the event loops of this worker thread.
            tokio::task::yield_now().await;
        }
    }
    outcome
}

/// Sends message number `m` of the connection: spot `m % spots`, seq `base + m / spots`.
async fn send_one(job: &Job, ctx: &PublishContext, m: u64) -> Sent {
    let spots = job.topics.len() as u64;
    let round = m / spots;
    let topic = &job.topics[(m % spots) as usize];
    let payload = SpotState {
        occupied: round.is_multiple_of(2),
        seq: Some(ctx.seq_base + round),
        ts: Some(unix_ms()),
        battery_mv: Some(3_600),
        rssi: Some(-60),
    }
    .encode();
    let qos = ctx.qos.into();
    let mut message = (topic.clone(), payload);
    // Never await the client's send: a send future dropped at the deadline may still have
    // handed its message over, which would make the count wrong. A full queue is retried after
    // a millisecond instead (the queue holds far more than a millisecond's worth).
    loop {
        match job.client.try_publish(message.0, qos, false, message.1) {
            Ok(()) => return Sent::Ok,
            Err(ClientError::TryRequest(Request::Publish(publish)))
                if !job.counters.stopped.load(Ordering::Acquire) =>
            {
                message = (publish.topic, publish.payload.to_vec());
                tokio::select! {
                    biased;
                    () = ctx.shutdown.cancelled() => return Sent::Stop,
                    () = sleep_until_opt(ctx.deadline) => return Sent::Stop,
                    () = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
            Err(_) => return Sent::Refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spot_and_client_ids_are_valid() {
        assert_eq!(load_spot_id(0, 0).unwrap().as_str(), "C001-0001");
        assert_eq!(load_spot_id(11, 99).unwrap().as_str(), "C012-0100");
        assert_eq!(client_id("parkd-load", 3).unwrap(), "parkd-load-3");
        assert!(client_id("bad/prefix", 0).is_err());
    }

    #[test]
    fn configurations_are_checked() {
        let base = LoadConfig {
            count: Some(10),
            ..LoadConfig::new(MqttEndpoint::default(), 2)
        };
        assert!(base.validate().is_ok());
        for bad in [
            LoadConfig {
                count: None,
                ..base.clone()
            },
            LoadConfig {
                connections: 0,
                ..base.clone()
            },
            LoadConfig {
                rate: Some(0.0),
                ..base.clone()
            },
            LoadConfig {
                keep_alive: Duration::from_secs(1),
                ..base.clone()
            },
            LoadConfig {
                client_prefix: "a+b".into(),
                ..base.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
