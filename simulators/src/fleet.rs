//! Fleet mode: N lots x M spots of simulated occupancy sensors over real MQTT.
//!
//! Each sensor behaves like the device described in `parkd_core::topic`:
//!
//! - its MQTT client id is its device id, `{lot}-s-{spot}` (see [`sensor_device_id`]), with
//!   spot ids `L{level}-{nnn}` ([`spot_id`]), all within the `parkd_core::ids` grammar;
//! - it connects with a clean session, an optional login from [`FleetConfig::credentials`],
//!   and a last will `{"online":false}` (QoS 1, retained) on its `status` topic;
//! - after every CONNACK it publishes `{"online":true,"ts":..}` retained on `status`, then its
//!   current `state`;
//! - it publishes `state` (QoS [`FleetConfig::state_qos`]) on every change, and a `heartbeat`
//!   (QoS 0) every [`FleetConfig::heartbeat_every`] of real time, the heartbeats of the fleet
//!   spread evenly over that period;
//! - `state` and `heartbeat` share one message counter `seq` per device, which grows by one per
//!   message and starts at [`FleetConfig::seq_base`] (by default the start time in
//!   microseconds, so that a restarted simulator is never taken for a replay);
//! - `ts` is the real send time in Unix milliseconds; only the demand model runs on simulated
//!   time, [`FleetConfig::speed`] simulated seconds per real second.
//!
//! **Connections.** One MQTT connection per sensor is the realistic shape, but costs a socket
//! and a task per sensor. Up to [`FleetConfig::max_connections`] sensors (default 500) each get
//! their own connection; above that the fleet opens exactly `max_connections` connections,
//! with client ids `{gateway_prefix}-{n}`, and sensor `i` (counted lot by lot, spot by spot)
//! publishes through connection `i % max_connections`, like sensors behind a gateway. A shared
//! connection cannot carry one will per sensor, so it has no will; each of its sensors still
//! announces itself online on connect and offline at a clean shutdown. A broker with per-device
//! topic ACLs (the embedded one) must grant a gateway's client id every topic it publishes.
//!
//! **Shutdown.** When the token fires (or [`FleetConfig::duration`] has passed) every sensor
//! publishes `{"online":false}` retained ([`FleetConfig::offline_on_shutdown`]; a clean
//! DISCONNECT does not fire the will), each connection queues a DISCONNECT behind its last
//! publishes, and the event loops get [`FleetConfig::shutdown_grace`] to send them before they
//! are aborted.
//!
//! The fleet is driven by one task (the caller's) that ticks every [`FleetConfig::tick`] of real
//! time; publishing never blocks it: a message that does not fit in its connection's request
//! queue, or whose connection is down, is counted, not waited for. A reconnecting sensor
//! republishes its current state anyway.
//!
//! **Driven fleets.** [`run_fleet`] decides arrivals and departures itself with the demand
//! model. [`run_fleet_driven`] leaves that to another simulator, the cars of the gate
//! simulator ([`crate::gates`]): every spot starts free, and a spot changes only when a
//! [`SensorLink`] reports a car parking or leaving; the sensors are the same devices
//! (connections, `seq`, heartbeats, status), so a spot is never reported by two sources.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{NaiveTime, Timelike};
use parkd_core::ids::{DeviceId, LotId, SpotId};
use parkd_core::payload::{DeviceStatus, Heartbeat, SpotState};
use parkd_core::throttle::LogThrottle;
use parkd_core::topic::{SpotChannel, Topic};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, EventLoop, LastWill, QoS};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::demand::{DAY_S, DemandConfig, DemandModel, Spot};
use crate::error::SimError;
use crate::mqtt::{
    ConnCounters, ConnSpec, Credentials, MIN_KEEP_ALIVE, MqttEndpoint, Qos, poll_loop,
    seq_base_now, unix_ms, wait_connected,
};

/// The spot id of the `index`-th spot (from 0) of a lot with `per_level` spots per level:
/// `L1-001`, `L1-002`, ... `L2-001`, ... (at least three digits).
pub fn spot_id(index: u32, per_level: u32) -> Result<SpotId, SimError> {
    let per_level = per_level.max(1);
    let raw = format!("L{}-{:03}", index / per_level + 1, index % per_level + 1);
    SpotId::parse(&raw).map_err(|source| SimError::InvalidId { value: raw, source })
}

/// The device id (and MQTT client id) of a spot's sensor: `{lot}-s-{spot}`.
pub fn sensor_device_id(lot: &LotId, spot: &SpotId) -> Result<DeviceId, SimError> {
    let raw = format!("{lot}-s-{spot}");
    DeviceId::parse(&raw).map_err(|source| SimError::InvalidId { value: raw, source })
}

/// Lot ids `lot-1` .. `lot-n`.
pub fn default_lot_ids(n: u32) -> Vec<LotId> {
    (1..=n)
        .filter_map(|i| LotId::parse(&format!("lot-{i}")).ok())
        .collect()
}

/// Everything a fleet run needs. [`FleetConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The broker.
    pub mqtt: MqttEndpoint,
    /// The lots, each with [`FleetConfig::spots_per_lot`] sensors.
    pub lots: Vec<LotId>,
    /// Sensors per lot.
    pub spots_per_lot: u32,
    /// Spots per level, for the spot ids (`L{level}-{nnn}`). Default 100.
    pub spots_per_level: u32,
    /// Simulated seconds per real second. Default 60.
    pub speed: f64,
    /// Simulated time of day at the start; `None` (the default) takes the local time of day.
    pub start: Option<NaiveTime>,
    /// Real time between two decisions of the demand model. Default 250 ms.
    pub tick: Duration,
    /// Real time between two heartbeats of one sensor. Default 60 s.
    pub heartbeat_every: Duration,
    /// Connections above which sensors share connections round-robin. Default 500.
    pub max_connections: usize,
    /// Client id prefix of shared connections. Default `parkd-sim-gw`.
    pub gateway_prefix: String,
    /// Logins by client id; `None` connects anonymously.
    pub credentials: Option<Credentials>,
    /// MQTT keep alive (at least 5 s). Default 30 s.
    pub keep_alive: Duration,
    /// QoS of `state` messages. Default 1. (`status` is always QoS 1, `heartbeat` QoS 0.)
    pub state_qos: Qos,
    /// Seed of every random choice.
    pub seed: u64,
    /// First `seq` of every device; `None` (the default) takes the start time in
    /// microseconds. `Some(0)` mimics devices that just booted.
    pub seq_base: Option<u64>,
    /// Stop by itself after this much real time; `None` runs until the token fires.
    pub duration: Option<Duration>,
    /// Publish `{"online":false}` retained for every sensor at a clean shutdown. Default true.
    pub offline_on_shutdown: bool,
    /// How long to wait for the connections before starting the clock (the run goes on with
    /// those that are up; the others join when they connect). Default 10 s.
    pub connect_timeout: Duration,
    /// How long the event loops get to send their last messages at shutdown. Default 3 s.
    pub shutdown_grace: Duration,
    /// Firmware version reported in heartbeats (at most 32 characters).
    pub firmware: String,
    /// The demand model (customer figures by default).
    pub demand: DemandConfig,
}

impl FleetConfig {
    /// `lots` lots (`lot-1`..) of `spots_per_lot` sensors on the broker at `mqtt`, with the
    /// defaults documented on each field.
    pub fn new(mqtt: MqttEndpoint, lots: u32, spots_per_lot: u32) -> Self {
        Self {
            mqtt,
            lots: default_lot_ids(lots),
            spots_per_lot,
            spots_per_level: 100,
            speed: 60.0,
            start: None,
            tick: Duration::from_millis(250),
            heartbeat_every: Duration::from_secs(60),
            max_connections: 500,
            gateway_prefix: "parkd-sim-gw".to_owned(),
            credentials: None,
            keep_alive: Duration::from_secs(30),
            state_qos: Qos::AtLeastOnce,
            seed: 1,
            seq_base: None,
            duration: None,
            offline_on_shutdown: true,
            connect_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(3),
            firmware: concat!("parkd-sim/", env!("CARGO_PKG_VERSION")).to_owned(),
            demand: DemandConfig::default(),
        }
    }

    /// Total sensors.
    pub fn sensors(&self) -> usize {
        self.lots.len() * self.spots_per_lot as usize
    }

    /// How many MQTT connections the fleet opens.
    pub fn connections(&self) -> usize {
        self.sensors().min(self.max_connections.max(1))
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.lots.is_empty() || self.spots_per_lot == 0 {
            return Err(SimError::config(
                "a fleet needs at least one lot and one spot",
            ));
        }
        let mut lots = self.lots.clone();
        lots.sort();
        lots.dedup();
        if lots.len() != self.lots.len() {
            return Err(SimError::config("lot ids must be distinct"));
        }
        if self.sensors() > 1_000_000 {
            return Err(SimError::config("at most 1,000,000 sensors"));
        }
        if !(self.speed.is_finite() && self.speed > 0.0 && self.speed <= 1e6) {
            return Err(SimError::config("speed must be within (0, 1e6]"));
        }
        if self.tick < Duration::from_millis(1) || self.heartbeat_every < Duration::from_millis(10)
        {
            return Err(SimError::config(
                "tick must be >= 1 ms and heartbeat >= 10 ms",
            ));
        }
        if self.keep_alive < MIN_KEEP_ALIVE {
            return Err(SimError::config(format!(
                "keep alive must be at least {MIN_KEEP_ALIVE:?}"
            )));
        }
        if self.max_connections == 0 {
            return Err(SimError::config("max_connections must be at least 1"));
        }
        if self.firmware.chars().count() > 32 {
            return Err(SimError::config("firmware is at most 32 characters"));
        }
        if self.sensors() > self.max_connections {
            let last = format!("{}-{}", self.gateway_prefix, self.max_connections - 1);
            DeviceId::parse(&last).map_err(|source| SimError::InvalidId {
                value: last,
                source,
            })?;
        }
        self.demand.validate()
    }
}

/// One lot at the end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct LotReport {
    /// The lot.
    pub lot: String,
    /// Its spots.
    pub spots: u32,
    /// Spots occupied at the end.
    pub occupied: u32,
}

/// What a fleet run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetReport {
    /// Sensors simulated.
    pub sensors: usize,
    /// MQTT connections opened.
    pub connections: usize,
    /// Whether sensors shared connections.
    pub shared_connections: bool,
    /// Real seconds from the start of the clock to the shutdown.
    pub real_seconds: f64,
    /// Simulated time of day at the start (`HH:MM:SS`).
    pub sim_start: String,
    /// Simulated seconds elapsed.
    pub sim_seconds: f64,
    /// Cars that arrived.
    pub arrivals: u64,
    /// Cars that left.
    pub departures: u64,
    /// Cars that found their lot full.
    pub turned_away: u64,
    /// Whether another simulator decided the occupancy ([`run_fleet_driven`]).
    pub driven: bool,
    /// Reported changes for spots the fleet does not simulate (driven fleets).
    pub unknown_spots: u64,
    /// `state` messages handed to the MQTT client (changes and announcements).
    pub state_messages: u64,
    /// `heartbeat` messages handed to the MQTT client.
    pub heartbeats: u64,
    /// `status` messages handed to the MQTT client (online and offline).
    pub status_messages: u64,
    /// Messages not sent because their connection was down (the state is republished on
    /// reconnect).
    pub skipped_offline: u64,
    /// Messages refused by a full request queue.
    pub queue_full: u64,
    /// PUBLISH packets written to sockets.
    pub publishes_sent: u64,
    /// PUBACKs received.
    pub pubacks: u64,
    /// CONNACKs received (first connects and reconnects).
    pub connacks: u64,
    /// Connection errors (failed connects and dropped connections).
    pub connection_errors: u64,
    /// Event loops that had to be aborted at shutdown.
    pub aborted_connections: usize,
    /// The lots at the end.
    pub lots: Vec<LotReport>,
}

/// A car parked in a spot or left it: what a [`SensorLink`] tells a driven fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpotChange {
    /// The lot.
    pub lot: LotId,
    /// The spot.
    pub spot: SpotId,
    /// Whether a car is there now.
    pub occupied: bool,
}

/// The sending half of a link to a driven fleet ([`run_fleet_driven`]): a simulator whose cars
/// park tells the spots' sensors through it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SensorLink {
    tx: mpsc::UnboundedSender<SpotChange>,
    ready: watch::Receiver<bool>,
}

impl SensorLink {
    /// Tells the sensor of `spot` that a car parked there (`true`) or left (`false`); the
    /// sensor publishes it at once (or on reconnect). `false` if the fleet has stopped.
    pub fn report(&self, lot: &LotId, spot: &SpotId, occupied: bool) -> bool {
        self.tx
            .send(SpotChange {
                lot: lot.clone(),
                spot: spot.clone(),
                occupied,
            })
            .is_ok()
    }

    /// Waits until the fleet's connections are up (or its connect timeout passed) and every
    /// sensor has announced its state, at most `timeout`; whether it has.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut ready = self.ready.clone();
        matches!(
            tokio::time::timeout(timeout, ready.wait_for(|up| *up)).await,
            Ok(Ok(_))
        )
    }
}

/// The receiving half of a [`SensorLink`], for [`run_fleet_driven`].
#[derive(Debug)]
pub struct SensorFeed {
    rx: mpsc::UnboundedReceiver<SpotChange>,
    ready: watch::Sender<bool>,
}

/// A link between a simulator that parks cars and the fleet whose sensors see them.
pub fn sensor_link() -> (SensorLink, SensorFeed) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = watch::channel(false);
    (
        SensorLink {
            tx,
            ready: ready_rx,
        },
        SensorFeed {
            rx,
            ready: ready_tx,
        },
    )
}

struct Sensor {
    device_id: DeviceId,
    lot: usize,
    spot: usize,
    conn: usize,
    state_topic: String,
    heartbeat_topic: String,
    status_topic: String,
    seq: u64,
    battery_mv: u16,
    rssi: i16,
    next_heartbeat: Instant,
}

impl Sensor {
    fn next_seq(&mut self) -> u64 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        seq
    }
}

struct LotRun {
    id: LotId,
    model: DemandModel,
    spots: Vec<Spot>,
    /// Global sensor index of the lot's first spot.
    first_sensor: usize,
}

struct Conn {
    client: AsyncClient,
    counters: Arc<ConnCounters>,
    sensors: Vec<usize>,
    /// CONNACKs already announced.
    announced: u64,
}

impl Conn {
    fn is_ready(&self) -> bool {
        self.counters.connected.load(Ordering::Acquire)
            && self.counters.connacks.load(Ordering::Acquire) == self.announced
    }
}

struct Fleet {
    config: FleetConfig,
    lots: Vec<LotRun>,
    sensors: Vec<Sensor>,
    /// Driven fleets: the sensor of each (lot, spot).
    index: HashMap<(LotId, SpotId), usize>,
    feed: Option<SensorFeed>,
    conns: Vec<Conn>,
    rng: StdRng,
    started: Instant,
    sim_start_s: f64,
    report: FleetReport,
}

/// Runs a fleet until `shutdown` fires or [`FleetConfig::duration`] has passed. Fails only on
/// an invalid configuration; connection problems are counted in the report.
pub async fn run_fleet(
    config: FleetConfig,
    shutdown: CancellationToken,
) -> Result<FleetReport, SimError> {
    run(config, None, shutdown).await
}

/// Runs a fleet whose occupancy another simulator decides through the [`SensorLink`] paired
/// with `feed`: every spot starts free and changes only when a car is reported parking or
/// leaving; connections, heartbeats, status and shutdown are as in [`run_fleet`]. The
/// link's [`SensorLink::wait_ready`] returns once the sensors have announced themselves.
pub async fn run_fleet_driven(
    config: FleetConfig,
    feed: SensorFeed,
    shutdown: CancellationToken,
) -> Result<FleetReport, SimError> {
    run(config, Some(feed), shutdown).await
}

async fn run(
    config: FleetConfig,
    feed: Option<SensorFeed>,
    shutdown: CancellationToken,
) -> Result<FleetReport, SimError> {
    config.validate()?;
    let poll_token = shutdown.child_token();
    let log = Arc::new(LogThrottle::new(Duration::from_secs(5)));
    let mut polls = JoinSet::new();
    let (mut fleet, eventloops) = Fleet::build(config, feed)?;
    let connections = fleet.conns.len();
    for (conn, eventloop) in fleet.conns.iter().zip(eventloops) {
        polls.spawn(poll_loop(
            eventloop,
            conn.counters.clone(),
            poll_token.clone(),
            log.clone(),
        ));
    }
    tracing::info!(
        sensors = fleet.sensors.len(),
        connections,
        endpoint = %fleet.config.mqtt,
        "fleet connecting"
    );
    let counters: Vec<_> = fleet.conns.iter().map(|c| c.counters.clone()).collect();
    let up = wait_connected(&counters, fleet.config.connect_timeout, &shutdown).await;
    if up < connections && !shutdown.is_cancelled() {
        tracing::warn!(up, connections, "not every connection is up; going on");
    }

    fleet.drive(&shutdown).await;

    // Shutdown: last words, then DISCONNECT behind them, then a grace period.
    poll_token.cancel();
    fleet.say_goodbye();
    let grace = fleet.config.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while let Some(joined) = polls.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "MQTT event loop task failed");
            }
        }
    })
    .await;
    if drained.is_err() {
        fleet.report.aborted_connections = polls.len();
        polls.abort_all();
        while polls.join_next().await.is_some() {}
    }
    Ok(fleet.finish())
}

impl Fleet {
    /// Lays out lots, sensors and connections; the event loops are returned for the caller to
    /// poll (nothing connects before they are polled).
    fn build(
        config: FleetConfig,
        feed: Option<SensorFeed>,
    ) -> Result<(Self, Vec<EventLoop>), SimError> {
        let driven = feed.is_some();
        let seq_base = config.seq_base.unwrap_or_else(seq_base_now);
        let mut rng = StdRng::seed_from_u64(config.seed ^ 0x5EED_F1EE_7000_0001);
        let connections = config.connections();
        let total = config.sensors();
        let started = Instant::now();
        let start = config.start.unwrap_or_else(|| chrono::Local::now().time());
        let sim_start_s = f64::from(start.num_seconds_from_midnight())
            + f64::from(start.nanosecond().min(999_999_999)) / 1e9;
        let mut lots = Vec::with_capacity(config.lots.len());
        let mut sensors = Vec::with_capacity(total);
        let mut index = HashMap::new();
        for (lot_index, lot_id) in config.lots.iter().enumerate() {
            let mut model = DemandModel::new(
                config.demand.clone(),
                config.seed.wrapping_add(lot_index as u64),
            )?;
            let spots = if driven {
                vec![Spot::Free; config.spots_per_lot as usize]
            } else {
                model.initial_spots(config.spots_per_lot as usize, sim_start_s)
            };
            lots.push(LotRun {
                id: lot_id.clone(),
                model,
                spots,
                first_sensor: sensors.len(),
            });
            for spot_index in 0..config.spots_per_lot {
                let spot = spot_id(spot_index, config.spots_per_level)?;
                let device_id = sensor_device_id(lot_id, &spot)?;
                let position = sensors.len();
                let topic = |channel| Topic::spot(lot_id, &spot, channel).to_string();
                let stagger = config
                    .heartbeat_every
                    .mul_f64((position + 1) as f64 / total as f64);
                sensors.push(Sensor {
                    device_id,
                    lot: lot_index,
                    spot: spot_index as usize,
                    conn: position % connections,
                    state_topic: topic(SpotChannel::State),
                    heartbeat_topic: topic(SpotChannel::Heartbeat),
                    status_topic: topic(SpotChannel::Status),
                    seq: seq_base,
                    battery_mv: rng.gen_range(3_300..=3_700),
                    rssi: rng.gen_range(-95..=-55),
                    next_heartbeat: started + stagger,
                });
                if driven {
                    index.insert((lot_id.clone(), spot), position);
                }
            }
        }
        let shared = connections < total;
        let mut conns = Vec::with_capacity(connections);
        let mut eventloops = Vec::with_capacity(connections);
        for index in 0..connections {
            let members: Vec<usize> = (index..total).step_by(connections).collect();
            let (client_id, will) = if shared {
                (format!("{}-{index}", config.gateway_prefix), None)
            } else {
                // Not shared: connection `index` is sensor `index`'s own.
                let sensor = &sensors[members[0]];
                let will = LastWill::new(
                    sensor.status_topic.clone(),
                    DeviceStatus {
                        online: false,
                        ts: None,
                    }
                    .encode(),
                    QoS::AtLeastOnce,
                    true,
                );
                (sensor.device_id.to_string(), Some(will))
            };
            let spec = ConnSpec {
                endpoint: &config.mqtt,
                client_id: &client_id,
                credentials: config.credentials.as_ref(),
                keep_alive: config.keep_alive,
                will,
                inflight: 100,
                channel_capacity: 16 + 4 * members.len(),
            };
            let (client, eventloop) = spec.connect(true);
            eventloops.push(eventloop);
            conns.push(Conn {
                client,
                counters: ConnCounters::new(),
                sensors: members,
                announced: 0,
            });
        }
        let report = FleetReport {
            sensors: total,
            connections,
            shared_connections: connections < total,
            sim_start: start.format("%H:%M:%S").to_string(),
            driven,
            ..FleetReport::default()
        };
        let fleet = Self {
            config,
            lots,
            sensors,
            index,
            feed,
            conns,
            rng,
            started,
            sim_start_s,
            report,
        };
        Ok((fleet, eventloops))
    }

    fn sim_now(&self) -> f64 {
        self.sim_start_s + self.started.elapsed().as_secs_f64() * self.config.speed
    }

    async fn drive(&mut self, shutdown: &CancellationToken) {
        let sim_start_s = self.sim_start_s;
        self.started = Instant::now();
        let mut interval = tokio::time::interval(self.config.tick);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let deadline = self.config.duration.map(|d| self.started + d);
        let mut last_sim = sim_start_s;
        let mut feed = self.feed.take();
        let driven = feed.is_some();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = sleep_until_opt(deadline) => break,
                change = next_change(feed.as_mut()) => {
                    match change {
                        Some(change) => self.apply_change(&change),
                        // Every link is gone: the spots stay as they are.
                        None => feed = None,
                    }
                    continue;
                }
                _ = interval.tick() => {}
            }
            self.announce();
            if let Some(feed) = &feed {
                // The first announcement is out: the sensors are there to report cars.
                feed.ready
                    .send_if_modified(|ready| !std::mem::replace(ready, true));
            }
            let now_sim = self.sim_now();
            let dt = now_sim - last_sim;
            last_sim = now_sim;
            if !driven {
                self.step_demand(now_sim, dt);
            }
            self.heartbeats();
            if (now_sim - sim_start_s) % 3600.0 < dt {
                let occupied: usize = self
                    .lots
                    .iter()
                    .map(|lot| lot.spots.iter().filter(|s| s.is_occupied()).count())
                    .sum();
                tracing::info!(
                    sim_hour = format!("{:.2}", (now_sim % DAY_S) / 3600.0),
                    occupied,
                    arrivals = self.report.arrivals,
                    departures = self.report.departures,
                    "fleet"
                );
            }
        }
        // Cars reported until the end are still seen by their sensors.
        if let Some(feed) = &mut feed {
            while let Ok(change) = feed.rx.try_recv() {
                self.apply_change(&change);
            }
        }
        self.report.real_seconds = self.started.elapsed().as_secs_f64();
        self.report.sim_seconds = self.sim_now() - sim_start_s;
    }

    /// Online status and current state for every sensor of a connection that (re)connected.
    fn announce(&mut self) {
        for conn in 0..self.conns.len() {
            let counters = &self.conns[conn].counters;
            let connacks = counters.connacks.load(Ordering::Acquire);
            if connacks == self.conns[conn].announced || !counters.connected.load(Ordering::Acquire)
            {
                continue;
            }
            self.conns[conn].announced = connacks;
            for position in 0..self.conns[conn].sensors.len() {
                let sensor = self.conns[conn].sensors[position];
                let online = DeviceStatus {
                    online: true,
                    ts: Some(unix_ms()),
                }
                .encode();
                let topic = self.sensors[sensor].status_topic.clone();
                if self.send(conn, topic, QoS::AtLeastOnce, true, online) {
                    self.report.status_messages += 1;
                }
                self.publish_state(sensor);
            }
        }
    }

    fn step_demand(&mut self, now_sim: f64, dt: f64) {
        for lot in 0..self.lots.len() {
            let run = &mut self.lots[lot];
            let plan = run.model.plan(now_sim, dt, &run.spots);
            plan.apply(&mut run.spots);
            let first = run.first_sensor;
            self.report.arrivals += plan.arrivals.len() as u64;
            self.report.departures += plan.departures.len() as u64;
            self.report.turned_away += u64::from(plan.turned_away);
            let changed = plan
                .departures
                .iter()
                .copied()
                .chain(plan.arrivals.iter().map(|a| a.spot));
            for spot in changed.collect::<Vec<_>>() {
                self.publish_state(first + spot);
            }
        }
    }

    /// A car parked or left (driven fleets): the spot's sensor reports it if that changes
    /// the spot.
    fn apply_change(&mut self, change: &SpotChange) {
        let Some(&index) = self.index.get(&(change.lot.clone(), change.spot.clone())) else {
            self.report.unknown_spots += 1;
            return;
        };
        let (lot, spot) = (self.sensors[index].lot, self.sensors[index].spot);
        let current = &mut self.lots[lot].spots[spot];
        if current.is_occupied() == change.occupied {
            return;
        }
        if change.occupied {
            *current = Spot::Occupied {
                until_s: f64::INFINITY,
            };
            self.report.arrivals += 1;
        } else {
            *current = Spot::Free;
            self.report.departures += 1;
        }
        self.publish_state(index);
    }

    fn heartbeats(&mut self) {
        let now = Instant::now();
        let uptime_s = self.started.elapsed().as_secs();
        for index in 0..self.sensors.len() {
            if self.sensors[index].next_heartbeat > now {
                continue;
            }
            // Catch up without a burst if the driver was late.
            while self.sensors[index].next_heartbeat <= now {
                self.sensors[index].next_heartbeat += self.config.heartbeat_every;
            }
            let conn = self.sensors[index].conn;
            if !self.conns[conn].is_ready() {
                self.report.skipped_offline += 1;
                continue;
            }
            let rssi = self.jitter_rssi(index);
            let sensor = &mut self.sensors[index];
            let payload = Heartbeat {
                seq: Some(sensor.next_seq()),
                ts: Some(unix_ms()),
                battery_mv: Some(sensor.battery_mv),
                rssi: Some(rssi),
                uptime_s: Some(uptime_s),
                fw: Some(self.config.firmware.clone()),
            }
            .encode();
            let topic = sensor.heartbeat_topic.clone();
            if self.send(conn, topic, QoS::AtMostOnce, false, payload) {
                self.report.heartbeats += 1;
            }
        }
    }

    fn publish_state(&mut self, index: usize) {
        let conn = self.sensors[index].conn;
        if !self.conns[conn].is_ready() {
            self.report.skipped_offline += 1;
            return;
        }
        let rssi = self.jitter_rssi(index);
        let sensor = &mut self.sensors[index];
        let occupied = self.lots[sensor.lot].spots[sensor.spot].is_occupied();
        // A battery loses a little with every report, as real ones do.
        if sensor.seq.is_multiple_of(256) {
            sensor.battery_mv = sensor.battery_mv.saturating_sub(1).max(2_800);
        }
        let payload = SpotState {
            occupied,
            seq: Some(sensor.next_seq()),
            ts: Some(unix_ms()),
            battery_mv: Some(sensor.battery_mv),
            rssi: Some(rssi),
        }
        .encode();
        let topic = sensor.state_topic.clone();
        let qos = self.config.state_qos.into();
        if self.send(conn, topic, qos, false, payload) {
            self.report.state_messages += 1;
        }
    }

    fn jitter_rssi(&mut self, index: usize) -> i16 {
        let base = self.sensors[index].rssi;
        (base + self.rng.gen_range(-3..=3)).clamp(-120, -30)
    }

    /// Hands a message to the connection's queue without waiting.
    fn send(
        &mut self,
        conn: usize,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
    ) -> bool {
        match self.conns[conn]
            .client
            .try_publish(topic, qos, retain, payload)
        {
            Ok(()) => true,
            Err(_) => {
                self.report.queue_full += 1;
                false
            }
        }
    }

    /// Offline status for every sensor (if configured), then a DISCONNECT per connection.
    fn say_goodbye(&mut self) {
        for conn in 0..self.conns.len() {
            let up = self.conns[conn].counters.connected.load(Ordering::Acquire);
            if up && self.config.offline_on_shutdown {
                for position in 0..self.conns[conn].sensors.len() {
                    let sensor = self.conns[conn].sensors[position];
                    let offline = DeviceStatus {
                        online: false,
                        ts: Some(unix_ms()),
                    }
                    .encode();
                    let topic = self.sensors[sensor].status_topic.clone();
                    if self.send(conn, topic, QoS::AtLeastOnce, true, offline) {
                        self.report.status_messages += 1;
                    }
                }
            }
            // If the queue is full the event loop is aborted after the grace period.
            let _ = self.conns[conn].client.try_disconnect();
        }
    }

    fn finish(mut self) -> FleetReport {
        for conn in &self.conns {
            let counters = &conn.counters;
            self.report.publishes_sent += counters.publishes_sent.load(Ordering::Relaxed);
            self.report.pubacks += counters.pubacks.load(Ordering::Relaxed);
            self.report.connacks += counters.connacks.load(Ordering::Relaxed);
            self.report.connection_errors += counters.errors.load(Ordering::Relaxed);
        }
        self.report.lots = self
            .lots
            .iter()
            .map(|lot| LotReport {
                lot: lot.id.to_string(),
                spots: lot.spots.len() as u32,
                occupied: lot.spots.iter().filter(|s| s.is_occupied()).count() as u32,
            })
            .collect();
        self.report
    }
}

/// The next reported change, or never without a feed.
async fn next_change(feed: Option<&mut SensorFeed>) -> Option<SpotChange> {
    match feed {
        Some(feed) => feed.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_grammar() {
        assert_eq!(spot_id(0, 100).unwrap().as_str(), "L1-001");
        assert_eq!(spot_id(99, 100).unwrap().as_str(), "L1-100");
        assert_eq!(spot_id(100, 100).unwrap().as_str(), "L2-001");
        assert_eq!(spot_id(299, 100).unwrap().as_str(), "L3-100");
        assert_eq!(spot_id(1234, 1000).unwrap().as_str(), "L2-235");
        let lot = LotId::parse("lot-1").unwrap();
        let spot = spot_id(0, 100).unwrap();
        assert_eq!(
            sensor_device_id(&lot, &spot).unwrap().as_str(),
            "lot-1-s-L1-001"
        );
        let long = LotId::parse(&"x".repeat(64)).unwrap();
        assert!(sensor_device_id(&long, &spot).is_err());
        assert_eq!(
            default_lot_ids(2)
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>(),
            ["lot-1", "lot-2"]
        );
    }

    #[test]
    fn connections_are_shared_only_above_the_cap() {
        let endpoint = MqttEndpoint::default();
        let config = FleetConfig::new(endpoint.clone(), 1, 300);
        assert_eq!(config.connections(), 300);
        let config = FleetConfig::new(endpoint.clone(), 4, 300);
        assert_eq!(config.connections(), 500);
        let (fleet, _) = Fleet::build(config, None).unwrap();
        assert_eq!(fleet.conns[0].sensors[..3], [0, 500, 1000]);
        assert_eq!(fleet.conns[499].sensors, [499, 999]);
        assert_eq!(fleet.sensors[1000].conn, 0);
    }

    #[test]
    fn a_sensor_connects_as_itself_with_its_will() {
        let config = FleetConfig::new(MqttEndpoint::default(), 1, 3);
        let (_, eventloops) = Fleet::build(config, None).unwrap();
        let options = &eventloops[2].mqtt_options;
        assert_eq!(options.client_id(), "lot-1-s-L1-003");
        let will = options.last_will().expect("a will");
        assert_eq!(will.topic, "parking/v1/lot-1/spots/L1-003/status");
        assert_eq!(&will.message[..], br#"{"online":false}"#);
        assert!(will.retain);
        assert_eq!(will.qos, QoS::AtLeastOnce);
        assert!(options.keep_alive() >= MIN_KEEP_ALIVE);

        let mut shared = FleetConfig::new(MqttEndpoint::default(), 1, 3);
        shared.max_connections = 2;
        let (_, eventloops) = Fleet::build(shared, None).unwrap();
        assert_eq!(eventloops[1].mqtt_options.client_id(), "parkd-sim-gw-1");
        assert!(eventloops[1].mqtt_options.last_will().is_none());
    }

    #[test]
    fn invalid_configurations_are_refused() {
        let endpoint = MqttEndpoint::default();
        let base = FleetConfig::new(endpoint, 1, 10);
        assert!(base.validate().is_ok());
        let cases = [
            FleetConfig {
                lots: vec![],
                ..base.clone()
            },
            FleetConfig {
                speed: 0.0,
                ..base.clone()
            },
            FleetConfig {
                keep_alive: Duration::ZERO,
                ..base.clone()
            },
            FleetConfig {
                lots: [default_lot_ids(1), default_lot_ids(1)].concat(),
                ..base.clone()
            },
            FleetConfig {
                max_connections: 0,
                ..base.clone()
            },
        ];
        for case in cases {
            assert!(case.validate().is_err(), "{case:?}");
        }
    }
}
