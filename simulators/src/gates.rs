//! Gate mode: cars through the barriers of one lot, over real MQTT.
//!
//! Cars arrive at the entry gates on the same accelerated day as the sensor fleet (the demand
//! model of [`crate::demand`]: the arrival rate that holds the customer's occupancy curve, stays
//! around two hours), each with a random plate and a vehicle type drawn from
//! [`GateSimConfig::vehicles`]. Some drivers booked ahead through the REST API
//! ([`crate::bookings`]) and come on their reservation; the others are walk-ins. A car:
//!
//! 1. queues at the entry gate with the shortest queue (a walk-in drives on when every queue is
//!    longer than [`GateSimConfig::max_queue`]);
//! 2. the gate publishes a [`GateRequest`] on `parking/v1/{lot}/gates/{gate}/request` (QoS 1)
//!    and waits for the [`GateCommand`] with the same `request_id` on its `command` topic; with
//!    no answer in [`GateSimConfig::request_timeout`] it publishes the same payload again, the
//!    same `request_id` included, up to [`GateSimConfig::attempts`] times, as a real gate does;
//! 3. on `deny` the car goes away; on `open` it passes the barrier (the gate publishes a
//!    `passed` event), drives to the spot in the command (or, with probability
//!    [`GateSimConfig::elsewhere_share`], to another free spot that fits it, so that the
//!    platform has to reconcile the session) and its spot's sensor reports `{"occupied":true}`;
//! 4. after its stay it leaves the spot (the sensor reports free), drives to the exit gate with
//!    the shortest queue and asks to leave with the same plate (and code, if it showed one).
//!
//! Spot sensors are not simulated here: parked cars are reported through a [`SensorLink`] to a
//! driven sensor fleet ([`crate::fleet::run_fleet_driven`]), whose sensors publish with their
//! own connections and counters. [`run_garage`] runs both for one lot; that is what
//! `parkd demo` does.
//!
//! Each gate is one MQTT connection with the gate's device id as client id (see
//! [`gate_device_id`]), a will `{"online":false}` retained on its `status` topic, a retained
//! `{"online":true}` after every CONNACK, and a subscription to its own `command` topic (only):
//! what a registered gate may do under the platform's ACL. Times at the barrier, on the ramps
//! and in the spot are simulated ([`GateSimConfig::speed`]); waiting for an answer is real time.
//!
//! Every decision is logged at debug level (`RUST_LOG=parkd_sim=debug`) and counted in the
//! [`GateReport`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{NaiveTime, Timelike, Utc};
use parkd_core::gate::{
    Action, BarrierEvent, Direction, GateCommand, GateEvent, GateRequest, Reason,
};
use parkd_core::ids::{DeviceId, GateId, LotId, SpotId};
use parkd_core::payload::DeviceStatus;
use parkd_core::throttle::LogThrottle;
use parkd_core::topic::{GateChannel, Topic};
use parkd_core::vehicle::{SpotKind, VehicleType, fits};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, LastWill, QoS};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bookings::{
    Booked, BookingConfig, BookingReport, NotBooked, Office, Plates, spot_kinds,
};
use crate::demand::{DAY_S, DemandConfig, DemandModel};
use crate::error::SimError;
use crate::fleet::{FleetConfig, FleetReport, SensorLink, run_fleet_driven, sensor_link, spot_id};
use crate::http::HttpEndpoint;
use crate::mqtt::{
    ConnCounters, ConnSpec, Credentials, MIN_KEEP_ALIVE, MqttEndpoint, poll_loop_with_inbox,
    unix_ms, wait_connected,
};
use crate::payments::{Cashier, Payer, PaymentConfig, PaymentReport, Settled};

/// The device id (and MQTT client id) of a gate: `{lot}-g-{gate}`, as the sensors are
/// `{lot}-s-{spot}`.
pub fn gate_device_id(lot: &LotId, gate: &GateId) -> Result<DeviceId, SimError> {
    let raw = format!("{lot}-g-{gate}");
    DeviceId::parse(&raw).map_err(|source| SimError::InvalidId { value: raw, source })
}

fn gate_ids(names: &[&str]) -> Vec<GateId> {
    names
        .iter()
        .filter_map(|name| GateId::parse(name).ok())
        .collect()
}

/// The entry gates of a simulated lot: `in-1`, `in-2`.
pub fn default_entry_gates() -> Vec<GateId> {
    gate_ids(&["in-1", "in-2"])
}

/// The exit gates of a simulated lot: `out-1`, `out-2`.
pub fn default_exit_gates() -> Vec<GateId> {
    gate_ids(&["out-1", "out-2"])
}

/// The vehicles that arrive, as weights: mostly cars, then compacts, EVs, vans,
/// motorcycles and cars with an accessible-parking permit.
pub fn default_vehicle_mix() -> Vec<(VehicleType, f64)> {
    vec![
        (VehicleType::Car, 0.72),
        (VehicleType::Compact, 0.08),
        (VehicleType::Ev, 0.08),
        (VehicleType::Van, 0.05),
        (VehicleType::Motorcycle, 0.04),
        (VehicleType::Accessible, 0.03),
    ]
}

/// Everything a gate run needs. [`GateSimConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct GateSimConfig {
    /// The broker.
    pub mqtt: MqttEndpoint,
    /// The lot.
    pub lot: LotId,
    /// Its spots, numbered as the fleet numbers them ([`spot_id`]).
    pub spots: u32,
    /// Spots per level in the spot ids. Default 100.
    pub spots_per_level: u32,
    /// Entry gates. Default `in-1`, `in-2`.
    pub entry_gates: Vec<GateId>,
    /// Exit gates. Default `out-1`, `out-2`.
    pub exit_gates: Vec<GateId>,
    /// Logins by client id (the gates' device ids); `None` connects anonymously.
    pub credentials: Option<Credentials>,
    /// MQTT keep alive (at least 5 s). Default 30 s.
    pub keep_alive: Duration,
    /// Simulated seconds per real second. Default 60.
    pub speed: f64,
    /// Simulated time of day at the start; `None` (the default) takes the local time of day.
    pub start: Option<NaiveTime>,
    /// Real time between two arrival decisions. Default 250 ms.
    pub tick: Duration,
    /// Seed of every random choice.
    pub seed: u64,
    /// The demand model (customer figures by default).
    pub demand: DemandConfig,
    /// Vehicle types of arriving cars, as weights. Default [`default_vehicle_mix`].
    pub vehicles: Vec<(VehicleType, f64)>,
    /// Share of admitted cars that park elsewhere than assigned. Default 0.05.
    pub elsewhere_share: f64,
    /// Real time a gate waits for its answer before asking again. Default 2 s.
    pub request_timeout: Duration,
    /// Requests per car and gate (the first and the repeats). Default 5.
    pub attempts: u32,
    /// Simulated seconds a car takes through an open barrier (read, open, pass, close).
    /// Default 8 s; a refused car takes half.
    pub barrier_s: f64,
    /// Simulated seconds from the entry barrier to the spot (uniform). Default 1-4 min.
    pub drive_in_s: (f64, f64),
    /// Simulated seconds from the spot to the exit barrier (uniform). Default 1-3 min.
    pub drive_out_s: (f64, f64),
    /// Cars waiting at every entry gate beyond which a walk-in drives on. Default 15.
    pub max_queue: usize,
    /// parkd's HTTP API: drivers book there ([`GateSimConfig::bookings`]), and the spot
    /// kinds are read from it. `None`: walk-ins only.
    pub api: Option<HttpEndpoint>,
    /// How drivers book ahead (with [`GateSimConfig::api`]).
    pub bookings: BookingConfig,
    /// How drivers pay (with [`GateSimConfig::api`]); off unless the pay station's account
    /// is given.
    pub payments: PaymentConfig,
    /// Stop by itself after this much real time; `None` runs until the token fires.
    pub duration: Option<Duration>,
    /// How long to wait for the gates' connections (and the fleet's sensors) before the first
    /// car. Default 10 s.
    pub connect_timeout: Duration,
    /// How long the event loops get to send their last messages at shutdown. Default 3 s.
    pub shutdown_grace: Duration,
}

impl GateSimConfig {
    /// Gates for `lot` of `spots` spots on the broker at `mqtt`, with the defaults documented
    /// on each field.
    pub fn new(mqtt: MqttEndpoint, lot: LotId, spots: u32) -> Self {
        Self {
            mqtt,
            lot,
            spots,
            spots_per_level: 100,
            entry_gates: default_entry_gates(),
            exit_gates: default_exit_gates(),
            credentials: None,
            keep_alive: Duration::from_secs(30),
            speed: 60.0,
            start: None,
            tick: Duration::from_millis(250),
            seed: 1,
            demand: DemandConfig::default(),
            vehicles: default_vehicle_mix(),
            elsewhere_share: 0.05,
            request_timeout: Duration::from_secs(2),
            attempts: 5,
            barrier_s: 8.0,
            drive_in_s: (60.0, 240.0),
            drive_out_s: (60.0, 180.0),
            max_queue: 15,
            api: None,
            bookings: BookingConfig::default(),
            payments: PaymentConfig::default(),
            duration: None,
            connect_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(3),
        }
    }

    /// Every gate with its direction, entries first.
    pub fn gates(&self) -> impl Iterator<Item = (&GateId, Direction)> {
        self.entry_gates
            .iter()
            .map(|gate| (gate, Direction::Entry))
            .chain(self.exit_gates.iter().map(|gate| (gate, Direction::Exit)))
    }

    /// Whether drivers book ahead in this run.
    pub fn books(&self) -> bool {
        self.api.is_some() && self.bookings.share > 0.0
    }

    /// Whether drivers pay in this run (the API and the pay station's account are given).
    pub fn pays(&self) -> bool {
        self.api.is_some() && self.payments.enabled()
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.entry_gates.is_empty() || self.exit_gates.is_empty() {
            return Err(SimError::config(
                "a lot needs at least one entry and one exit gate",
            ));
        }
        let mut gates: Vec<&GateId> = self.gates().map(|(gate, _)| gate).collect();
        gates.sort();
        gates.dedup();
        if gates.len() != self.entry_gates.len() + self.exit_gates.len() {
            return Err(SimError::config("gate ids must be distinct"));
        }
        for gate in gates {
            gate_device_id(&self.lot, gate)?;
        }
        if self.spots == 0 || self.spots > 100_000 || self.spots_per_level == 0 {
            return Err(SimError::config(
                "spots must be within 1..=100000 and spots_per_level at least 1",
            ));
        }
        spot_id(self.spots - 1, self.spots_per_level)?;
        if !(self.speed.is_finite() && self.speed > 0.0 && self.speed <= 1e6) {
            return Err(SimError::config("speed must be within (0, 1e6]"));
        }
        if self.tick < Duration::from_millis(1)
            || self.request_timeout < Duration::from_millis(10)
            || self.attempts == 0
            || self.attempts > 20
        {
            return Err(SimError::config(
                "tick must be >= 1 ms, request_timeout >= 10 ms, attempts within 1..=20",
            ));
        }
        if self.keep_alive < MIN_KEEP_ALIVE {
            return Err(SimError::config(format!(
                "keep alive must be at least {MIN_KEEP_ALIVE:?}"
            )));
        }
        if !(self.elsewhere_share.is_finite() && (0.0..=1.0).contains(&self.elsewhere_share)) {
            return Err(SimError::config("elsewhere_share must be within 0..=1"));
        }
        let range_ok = |(low, high): (f64, f64)| {
            low.is_finite() && high.is_finite() && 0.0 <= low && low <= high
        };
        let times_ok = self.barrier_s.is_finite()
            && self.barrier_s >= 0.0
            && range_ok(self.drive_in_s)
            && range_ok(self.drive_out_s);
        if !times_ok {
            return Err(SimError::config(
                "barrier and driving times must be non-negative seconds",
            ));
        }
        let weights_ok = self
            .vehicles
            .iter()
            .all(|(_, weight)| weight.is_finite() && *weight >= 0.0);
        let total: f64 = self.vehicles.iter().map(|(_, weight)| weight).sum();
        if !weights_ok || total <= 0.0 {
            return Err(SimError::config(
                "the vehicle mix needs non-negative weights with a positive sum",
            ));
        }
        self.bookings.validate()?;
        self.payments.validate()?;
        self.demand.validate()
    }
}

/// What a gate run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GateReport {
    /// The lot.
    pub lot: String,
    /// Gates simulated (entry and exit).
    pub gates: usize,
    /// Real seconds from the first car to the shutdown.
    pub real_seconds: f64,
    /// Simulated time of day at the start (`HH:MM:SS`).
    pub sim_start: String,
    /// Simulated seconds elapsed.
    pub sim_seconds: f64,
    /// Cars that came to an entry gate (or drove on at its queue).
    pub arrivals: u64,
    /// Arrivals by vehicle type.
    pub vehicles: BTreeMap<String, u64>,
    /// Walk-ins that drove on: every entry queue was too long.
    pub drove_on: u64,
    /// Entries opened, by reason (`walk_in`, `reservation`, `emergency`, ...).
    pub admitted: BTreeMap<String, u64>,
    /// Entries refused, by reason (`full`, `no_fitting_spot`, ...); those cars went away.
    pub denied: BTreeMap<String, u64>,
    /// Cars that parked (their sensor reported them).
    pub parked: u64,
    /// Of those, cars that parked elsewhere than assigned: by choice
    /// ([`GateSimConfig::elsewhere_share`]), or because their spot was taken.
    pub parked_elsewhere: u64,
    /// Cars whose assigned spot was taken when they got there (by a car that parked
    /// elsewhere, or because the platform gave it to two cars).
    pub assigned_taken: u64,
    /// Admitted cars that found no free spot and left again.
    pub found_no_spot: u64,
    /// Exits opened, by reason (`nothing_due`, ...).
    pub exits: BTreeMap<String, u64>,
    /// Exits refused, by reason (`no_session`, ...); the driver pressed help and left.
    pub exit_denied: BTreeMap<String, u64>,
    /// Requests published (first attempts).
    pub requests: u64,
    /// Requests published again with the same `request_id` after a timeout.
    pub retries: u64,
    /// Attempts that got no answer in time.
    pub timeouts: u64,
    /// Cars whose every attempt timed out (an entering car went away, a leaving one pressed
    /// help and left).
    pub unanswered: u64,
    /// Commands no request of ours asked for (manual opens, emergencies).
    pub unsolicited: u64,
    /// Answers that came after their gate had given up on them.
    pub late_answers: u64,
    /// Payloads on a command topic that were not commands.
    pub bad_commands: u64,
    /// Cars inside at the end (driving or parked).
    pub inside_at_end: u64,
    /// Drivers who booked through the API.
    pub bookings: BookingReport,
    /// What the drivers paid, in advance and at the exit.
    pub payments: PaymentReport,
    /// CONNACKs received by the gates (first connects and reconnects).
    pub connacks: u64,
    /// Connection errors of the gates.
    pub connection_errors: u64,
    /// PUBLISH packets the gates wrote.
    pub publishes_sent: u64,
    /// Gate event loops that had to be aborted at shutdown.
    pub aborted_connections: usize,
}

impl GateReport {
    /// Entries opened, all reasons.
    pub fn admitted_total(&self) -> u64 {
        self.admitted.values().sum()
    }

    /// Entries refused, all reasons.
    pub fn denied_total(&self) -> u64 {
        self.denied.values().sum()
    }

    /// Exits opened, all reasons.
    pub fn exits_total(&self) -> u64 {
        self.exits.values().sum()
    }
}

/// A simulated garage: the driven sensor fleet and the gates of one lot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GarageReport {
    /// The sensors.
    pub fleet: FleetReport,
    /// The gates and cars.
    pub gates: GateReport,
}

/// Runs a driven sensor fleet and the gate simulator of one of its lots together until
/// `shutdown` fires (or the gates' [`GateSimConfig::duration`] has passed): the cars come
/// through the gates, the sensors report where they park. At the end the gates stop first,
/// then the sensors (their last words and DISCONNECT), as a garage would. The fleet's own
/// `duration` is ignored.
pub async fn run_garage(
    mut fleet: FleetConfig,
    gates: GateSimConfig,
    shutdown: CancellationToken,
) -> Result<GarageReport, SimError> {
    fleet.validate()?;
    gates.validate()?;
    if !fleet.lots.contains(&gates.lot) {
        return Err(SimError::config(format!(
            "the fleet has no sensors in lot {}",
            gates.lot
        )));
    }
    if fleet.spots_per_lot < gates.spots || fleet.spots_per_level != gates.spots_per_level {
        return Err(SimError::config(
            "the gates' spots must be sensors of the fleet (same numbering)",
        ));
    }
    fleet.duration = None;
    let (link, feed) = sensor_link();
    let fleet_stop = CancellationToken::new();
    let gates_stop = shutdown.child_token();
    let sensors = {
        let fleet_stop = fleet_stop.clone();
        let gates_stop = gates_stop.clone();
        async move {
            let result = run_fleet_driven(fleet, feed, fleet_stop).await;
            // Without sensors the cars would park unseen.
            gates_stop.cancel();
            result
        }
    };
    let cars = async move {
        let result = run_gates(gates, link, gates_stop).await;
        fleet_stop.cancel();
        result
    };
    let (fleet, gates) = tokio::join!(sensors, cars);
    Ok(GarageReport {
        fleet: fleet?,
        gates: gates?,
    })
}

/// Runs the gates of one lot until `shutdown` fires or [`GateSimConfig::duration`] has
/// passed; parked cars are reported through `sensors`. Fails only on an invalid
/// configuration; connection problems and refusals are counted in the report.
pub async fn run_gates(
    config: GateSimConfig,
    sensors: SensorLink,
    shutdown: CancellationToken,
) -> Result<GateReport, SimError> {
    config.validate()?;
    let lot_view = LotView::new(&config)?;
    let model = DemandModel::new(config.demand.clone(), config.seed)?;
    let poll_token = shutdown.child_token();
    let log = Arc::new(LogThrottle::new(Duration::from_secs(5)));
    let mut polls = JoinSet::new();
    let mut conns = Vec::new();
    for (gate, direction) in config.gates() {
        let (conn, eventloop, inbox_tx) = GateConn::build(&config, gate, direction)?;
        polls.spawn(poll_loop_with_inbox(
            eventloop,
            conn.counters.clone(),
            poll_token.clone(),
            log.clone(),
            Some(inbox_tx),
        ));
        conns.push(conn);
    }
    tracing::info!(
        lot = %config.lot,
        entries = config.entry_gates.len(),
        exits = config.exit_gates.len(),
        endpoint = %config.mqtt,
        bookings = config.books(),
        payments = config.pays(),
        "gates connecting"
    );
    let counters: Vec<_> = conns.iter().map(|c| c.counters.clone()).collect();
    let up = wait_connected(&counters, config.connect_timeout, &shutdown).await;
    if up < conns.len() && !shutdown.is_cancelled() {
        tracing::warn!(up, gates = conns.len(), "not every gate is up; going on");
    }
    if !shutdown.is_cancelled() && !sensors.wait_ready(config.connect_timeout).await {
        tracing::warn!("the spot sensors are not ready; cars come anyway");
    }
    for conn in &mut conns {
        conn.announce();
    }

    // Always starts with a letter: an all-digit tag (one run in 43) made request ids like
    // `gate-1-12345678-000042` whose digits read as a 15-digit number, a card number to the
    // Luhn check one time in ten (the demo test scans every stored value for card numbers).
    let run_tag = format!("r{:08x}", rand::random::<u32>());
    let office = match (&config.api, config.books()) {
        (Some(api), true) => Some(Office::new(
            api.clone(),
            config.bookings.clone(),
            config.lot.clone(),
            run_tag.clone(),
            config.seed ^ 0xB00C_1265,
        )),
        _ => None,
    };
    let cashier = config.api.as_ref().and_then(|api| {
        Cashier::new(
            api.clone(),
            config.payments.clone(),
            run_tag.clone(),
            config.bookings.request_timeout,
            config.bookings.attempts,
        )
    });
    let mut lot_view = lot_view;
    if let Some(api) = &config.api {
        match spot_kinds(api, &config.lot, config.bookings.request_timeout).await {
            Ok(kinds) => lot_view.set_kinds(&kinds),
            Err(error) => {
                tracing::warn!(%error, "spot kinds unknown; cars parking elsewhere pick any bay")
            }
        }
    }

    let start = config.start.unwrap_or_else(|| chrono::Local::now().time());
    let start_s = f64::from(start.num_seconds_from_midnight())
        + f64::from(start.nanosecond().min(999_999_999)) / 1e9;
    let stop = CancellationToken::new();
    let mut receivers = Vec::new();
    let mut lanes = Vec::new();
    for conn in &conns {
        let (tx, rx) = mpsc::unbounded_channel();
        lanes.push(Lane {
            direction: conn.direction,
            tx,
            waiting: AtomicUsize::new(0),
        });
        receivers.push(rx);
    }
    // API calls at once: bookings and payments.
    let permits = if office.is_some() || cashier.is_some() {
        config.bookings.concurrency
    } else {
        1
    };
    let ctx = Arc::new(Ctx {
        report: Mutex::new(GateReport {
            lot: config.lot.to_string(),
            gates: conns.len(),
            sim_start: start.format("%H:%M:%S").to_string(),
            ..GateReport::default()
        }),
        clock: Clock {
            started: Instant::now(),
            start_s,
            speed: config.speed,
        },
        config,
        sensors,
        lot: Mutex::new(lot_view),
        plates: Plates::default(),
        present: AtomicUsize::new(0),
        inside: AtomicUsize::new(0),
        lanes,
        stop: stop.clone(),
        tasks: TaskTracker::new(),
        office,
        cashier,
        permits: Semaphore::new(permits),
        run_tag,
        bookings: AtomicU64::new(0),
        log,
    });
    let goodbyes: Vec<(AsyncClient, String, Arc<ConnCounters>)> = conns
        .iter()
        .map(|c| (c.client.clone(), c.status_topic.clone(), c.counters.clone()))
        .collect();
    for (index, (conn, rx)) in conns.into_iter().zip(receivers).enumerate() {
        ctx.tasks.spawn(lane_worker(ctx.clone(), index, conn, rx));
    }

    arrivals(&ctx, model, &shutdown).await;
    let real_seconds = ctx.clock.started.elapsed().as_secs_f64();

    // Shutdown: cars and lanes stop where they are, then the gates say goodbye.
    stop.cancel();
    ctx.tasks.close();
    ctx.tasks.wait().await;
    if let Some(office) = &ctx.office {
        let cancelled = office.cancel_pending(ctx.config.shutdown_grace).await;
        ctx.count(|report| report.bookings.cancelled_at_end = cancelled);
    }
    poll_token.cancel();
    for (client, status_topic, counters) in &goodbyes {
        if counters.connected.load(Ordering::Acquire) {
            let offline = DeviceStatus {
                online: false,
                ts: Some(unix_ms()),
            }
            .encode();
            let _ = client.try_publish(status_topic.clone(), QoS::AtLeastOnce, true, offline);
        }
        let _ = client.try_disconnect();
    }
    let mut report = ctx.report_copy();
    let drained = tokio::time::timeout(ctx.config.shutdown_grace, async {
        while let Some(joined) = polls.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "gate MQTT event loop task failed");
            }
        }
    })
    .await;
    if drained.is_err() {
        report.aborted_connections = polls.len();
        polls.abort_all();
        while polls.join_next().await.is_some() {}
    }
    for (_, _, counters) in &goodbyes {
        report.connacks += counters.connacks.load(Ordering::Relaxed);
        report.connection_errors += counters.errors.load(Ordering::Relaxed);
        report.publishes_sent += counters.publishes_sent.load(Ordering::Relaxed);
    }
    report.real_seconds = real_seconds;
    report.sim_seconds = real_seconds * ctx.config.speed;
    report.inside_at_end = ctx.inside.load(Ordering::Relaxed) as u64;
    if let Some(office) = &ctx.office {
        report.bookings.drivers = office.drivers();
    }
    Ok(report)
}

/// Simulated time.
#[derive(Debug)]
struct Clock {
    started: Instant,
    start_s: f64,
    speed: f64,
}

impl Clock {
    fn now_s(&self) -> f64 {
        self.start_s + self.started.elapsed().as_secs_f64() * self.speed
    }

    /// The real duration of `sim_s` simulated seconds.
    fn real(&self, sim_s: f64) -> Duration {
        Duration::try_from_secs_f64((sim_s / self.speed).clamp(0.0, 1e9)).unwrap_or_default()
    }
}

/// One spot as the cars see it.
#[derive(Debug)]
struct SpotSim {
    id: SpotId,
    level: u32,
    kind: Option<SpotKind>,
    occupied: bool,
    /// Admitted cars on their way to it.
    heading: u32,
    /// Reservations of our drivers not yet arrived (the bay shows "reserved").
    reserved: u32,
}

impl SpotSim {
    fn is_free(&self) -> bool {
        !self.occupied && self.heading == 0 && self.reserved == 0
    }
}

#[derive(Debug)]
struct LotView {
    spots: Vec<SpotSim>,
    by_id: HashMap<SpotId, usize>,
}

impl LotView {
    fn new(config: &GateSimConfig) -> Result<Self, SimError> {
        let per_level = config.spots_per_level.max(1);
        let mut spots = Vec::with_capacity(config.spots as usize);
        let mut by_id = HashMap::new();
        for index in 0..config.spots {
            let id = spot_id(index, per_level)?;
            by_id.insert(id.clone(), spots.len());
            spots.push(SpotSim {
                id,
                level: index / per_level,
                kind: None,
                occupied: false,
                heading: 0,
                reserved: 0,
            });
        }
        Ok(Self { spots, by_id })
    }

    fn set_kinds(&mut self, kinds: &HashMap<SpotId, SpotKind>) {
        for spot in &mut self.spots {
            spot.kind = kinds.get(&spot.id).copied();
        }
    }

    fn index(&self, raw: &str) -> Option<usize> {
        SpotId::parse(raw)
            .ok()
            .and_then(|id| self.by_id.get(&id).copied())
    }

    /// Where a car that drove to `assigned` parks: there if it is free and the driver does
    /// not `wander`, otherwise a free spot that fits the vehicle, on the same level if
    /// possible. `None` if nothing is free. The spot is taken; `true` if it is not the
    /// assigned one.
    fn park(
        &mut self,
        assigned: Option<usize>,
        vehicle: VehicleType,
        wander: bool,
        rng: &mut StdRng,
    ) -> Option<(usize, bool)> {
        if let Some(index) = assigned {
            let spot = &mut self.spots[index];
            spot.heading = spot.heading.saturating_sub(1);
            if !wander && !spot.occupied {
                spot.occupied = true;
                return Some((index, false));
            }
        }
        let level = assigned.map(|index| self.spots[index].level);
        let fitting = |spot: &SpotSim| spot.kind.is_none_or(|kind| fits(vehicle, kind));
        let candidates: Vec<usize> = self
            .spots
            .iter()
            .enumerate()
            .filter(|(index, spot)| Some(*index) != assigned && spot.is_free() && fitting(spot))
            .map(|(index, _)| index)
            .collect();
        let same_level: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|index| Some(self.spots[*index].level) == level)
            .collect();
        let pool = if same_level.is_empty() {
            &candidates
        } else {
            &same_level
        };
        match pool.get(rng.gen_range(0..pool.len().max(1))) {
            Some(&index) => {
                self.spots[index].occupied = true;
                Some((index, Some(index) != assigned))
            }
            // Nowhere else to go: the assigned spot after all, if it is free.
            None => match assigned {
                Some(index) if !self.spots[index].occupied => {
                    self.spots[index].occupied = true;
                    Some((index, false))
                }
                _ => None,
            },
        }
    }
}

/// A gate's queue.
#[derive(Debug)]
struct Lane {
    direction: Direction,
    tx: mpsc::UnboundedSender<Pass>,
    waiting: AtomicUsize,
}

/// A car at a barrier.
#[derive(Debug)]
struct Pass {
    plate: String,
    confidence: f64,
    vehicle: VehicleType,
    code: Option<String>,
    reply: oneshot::Sender<Passed>,
}

/// What the gate was told.
#[derive(Debug)]
enum Passed {
    Answered(GateCommand),
    Unanswered,
}

/// One gate's MQTT side, owned by its lane worker.
struct GateConn {
    gate: GateId,
    direction: Direction,
    client: AsyncClient,
    counters: Arc<ConnCounters>,
    inbox: mpsc::UnboundedReceiver<rumqttc::Publish>,
    request_topic: String,
    command_topic: String,
    event_topic: String,
    status_topic: String,
    /// CONNACKs already announced (subscribed, online published).
    announced: u64,
    /// Requests made, for their ids.
    next: u64,
}

impl GateConn {
    fn build(
        config: &GateSimConfig,
        gate: &GateId,
        direction: Direction,
    ) -> Result<
        (
            Self,
            rumqttc::EventLoop,
            mpsc::UnboundedSender<rumqttc::Publish>,
        ),
        SimError,
    > {
        let device = gate_device_id(&config.lot, gate)?;
        let topic = |channel| {
            Topic::Gate {
                lot: config.lot.clone(),
                gate: gate.clone(),
                channel,
            }
            .to_string()
        };
        let status_topic = topic(GateChannel::Status);
        let will = LastWill::new(
            status_topic.clone(),
            DeviceStatus {
                online: false,
                ts: None,
            }
            .encode(),
            QoS::AtLeastOnce,
            true,
        );
        let client_id = device.to_string();
        let spec = ConnSpec {
            endpoint: &config.mqtt,
            client_id: &client_id,
            credentials: config.credentials.as_ref(),
            keep_alive: config.keep_alive,
            will: Some(will),
            inflight: 100,
            channel_capacity: 256,
        };
        let (client, eventloop) = spec.connect(true);
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        Ok((
            Self {
                gate: gate.clone(),
                direction,
                client,
                counters: ConnCounters::new(),
                inbox,
                request_topic: topic(GateChannel::Request),
                command_topic: topic(GateChannel::Command),
                event_topic: topic(GateChannel::Event),
                status_topic,
                announced: 0,
                next: 0,
            },
            eventloop,
            inbox_tx,
        ))
    }

    /// After a (re)connection: subscribe to the command topic again (clean session) and say
    /// online, retained. Never waits: with a full request queue it tries again next time.
    fn announce(&mut self) {
        let connacks = self.counters.connacks.load(Ordering::Acquire);
        if connacks == self.announced || !self.counters.connected.load(Ordering::Acquire) {
            return;
        }
        if self
            .client
            .try_subscribe(self.command_topic.clone(), QoS::AtMostOnce)
            .is_err()
        {
            return;
        }
        self.announced = connacks;
        let online = DeviceStatus {
            online: true,
            ts: Some(unix_ms()),
        }
        .encode();
        let _ = self
            .client
            .try_publish(self.status_topic.clone(), QoS::AtLeastOnce, true, online);
    }
}

/// Everything the cars and lanes share.
struct Ctx {
    config: GateSimConfig,
    clock: Clock,
    sensors: SensorLink,
    lot: Mutex<LotView>,
    plates: Plates,
    /// Cars that hold or will hold a spot: queued, driving in, parked, and booked.
    present: AtomicUsize,
    /// Cars admitted and not yet out.
    inside: AtomicUsize,
    lanes: Vec<Lane>,
    stop: CancellationToken,
    tasks: TaskTracker,
    office: Option<Office>,
    cashier: Option<Cashier>,
    permits: Semaphore,
    run_tag: String,
    bookings: AtomicU64,
    report: Mutex<GateReport>,
    log: Arc<LogThrottle>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Ctx {
    fn count(&self, update: impl FnOnce(&mut GateReport)) {
        update(&mut lock(&self.report));
    }

    fn report_copy(&self) -> GateReport {
        lock(&self.report).clone()
    }

    /// Sleeps `sim_s` simulated seconds; `false` if the run stopped meanwhile.
    async fn sleep_sim(&self, sim_s: f64) -> bool {
        let real = self.clock.real(sim_s);
        if real.is_zero() {
            return !self.stop.is_cancelled();
        }
        tokio::select! {
            () = self.stop.cancelled() => false,
            () = tokio::time::sleep(real) => true,
        }
    }

    /// The gate of that direction with the shortest queue.
    fn pick_lane(&self, direction: Direction) -> Option<usize> {
        self.lanes
            .iter()
            .enumerate()
            .filter(|(_, lane)| lane.direction == direction)
            .min_by_key(|(_, lane)| lane.waiting.load(Ordering::Acquire))
            .map(|(index, _)| index)
    }

    /// Queues `car` at `lane` and waits for its turn and answer; `None` if the run stopped.
    async fn pass(
        &self,
        lane: usize,
        car: &Car,
        confidence: f64,
        code: Option<String>,
    ) -> Option<Passed> {
        let lane = self.lanes.get(lane)?;
        let (reply, answer) = oneshot::channel();
        lane.waiting.fetch_add(1, Ordering::AcqRel);
        let queued = lane.tx.send(Pass {
            plate: car.plate.clone(),
            confidence,
            vehicle: car.vehicle,
            code,
            reply,
        });
        if queued.is_err() {
            lane.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        tokio::select! {
            () = self.stop.cancelled() => None,
            answer = answer => answer.ok(),
        }
    }

    /// Counts a payment's end; `true` if it was paid.
    fn count_payment(&self, settled: &Settled, declined: u64, at_exit: bool) -> bool {
        self.count(|report| {
            let payments = &mut report.payments;
            payments.declined += declined;
            match settled {
                Settled::Paid {
                    amount_minor,
                    currency,
                    at_station,
                } => {
                    if at_exit {
                        payments.paid_at_exit += 1;
                        payments.paid_at_pay_station += u64::from(*at_station);
                    } else {
                        payments.paid_in_advance += 1;
                    }
                    *payments.amount_minor.entry(currency.clone()).or_default() += amount_minor;
                }
                Settled::NothingDue => payments.nothing_due += 1,
                Settled::Failed(_) => payments.failures += 1,
            }
        });
        match settled {
            Settled::Paid { .. } => true,
            Settled::NothingDue => false,
            Settled::Failed(error) => {
                if let Some(suppressed) = self.log.allow(std::time::Instant::now()) {
                    tracing::warn!(%error, suppressed, "a simulated payment failed");
                }
                false
            }
        }
    }

    /// Pays through the API with a permit, unless the run stops first (`None`). `path` is
    /// the payments route; `rng` decides whether the first card is declined.
    async fn pay(&self, payer: Payer, path: &str, rng: &mut StdRng) -> Option<(Settled, u64)> {
        let cashier = self.cashier.as_ref()?;
        let decline_first = rng.gen_bool(cashier.config().decline_share);
        let Ok(_permit) = (tokio::select! {
            () = self.stop.cancelled() => return None,
            permit = self.permits.acquire() => permit,
        }) else {
            return None;
        };
        tokio::select! {
            () = self.stop.cancelled() => None,
            settled = cashier.settle(self.office.as_ref(), payer, path, decline_first) => Some(settled),
        }
    }

    /// A car that never got in goes away: no spot is promised to it any more.
    fn went_away(&self, car: &Car) {
        self.present.fetch_sub(1, Ordering::AcqRel);
        self.release(car);
    }

    /// The car has left the garage's world: its plate (walk-in) or its driver (booking) is
    /// free again.
    fn release(&self, car: &Car) {
        match (&car.booking, &self.office) {
            (Some(booked), Some(office)) => office.release(booked.driver),
            _ => self.plates.release(&car.plate),
        }
    }
}

fn opens(action: Action) -> bool {
    matches!(action, Action::Open | Action::HoldOpen)
}

fn draw_vehicle(mix: &[(VehicleType, f64)], rng: &mut StdRng) -> VehicleType {
    let total: f64 = mix.iter().map(|(_, weight)| weight).sum();
    let mut pick = rng.gen_range(0.0..1.0) * total;
    for &(vehicle, weight) in mix {
        if pick < weight {
            return vehicle;
        }
        pick -= weight;
    }
    mix.iter()
        .rev()
        .find(|(_, weight)| *weight > 0.0)
        .map_or(VehicleType::Car, |(vehicle, _)| *vehicle)
}

/// Serves one gate's queue, one car at a time.
async fn lane_worker(
    ctx: Arc<Ctx>,
    lane: usize,
    mut conn: GateConn,
    mut queue: mpsc::UnboundedReceiver<Pass>,
) {
    loop {
        let pass = tokio::select! {
            () = ctx.stop.cancelled() => break,
            pass = queue.recv() => match pass {
                Some(pass) => pass,
                None => break,
            },
        };
        let passed = ask(&ctx, &mut conn, &pass).await;
        let (through, request_id) = match &passed {
            Passed::Answered(command) if opens(command.action) => {
                if conn.direction == Direction::Entry {
                    // Promised to this car from now on: no other car takes it meanwhile.
                    let mut lot = lock(&ctx.lot);
                    let assigned = command.spot.as_deref().and_then(|spot| lot.index(spot));
                    if let Some(spot) = assigned.and_then(|index| lot.spots.get_mut(index)) {
                        spot.heading += 1;
                    }
                }
                (ctx.config.barrier_s, command.request_id.clone())
            }
            // The driver reads the display and backs out.
            Passed::Answered(_) => (ctx.config.barrier_s / 2.0, None),
            Passed::Unanswered => (0.0, None),
        };
        let carried_on = ctx.sleep_sim(through).await;
        if let Some(request_id) = request_id {
            let event = GateEvent {
                event: BarrierEvent::Passed,
                request_id: Some(request_id),
                detail: None,
                ts: Some(unix_ms()),
            };
            let _ = conn.client.try_publish(
                conn.event_topic.clone(),
                QoS::AtMostOnce,
                false,
                event.encode(),
            );
        }
        if let Some(lane) = ctx.lanes.get(lane) {
            lane.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        let _ = pass.reply.send(passed);
        if !carried_on {
            break;
        }
    }
}

/// One car's request at one gate: published, and published again with the same id after
/// each timeout, until the answer with that id comes or the attempts are used up.
async fn ask(ctx: &Ctx, conn: &mut GateConn, pass: &Pass) -> Passed {
    conn.next += 1;
    let gate: String = conn.gate.as_str().chars().take(24).collect();
    let id = format!("{gate}-{}-{:06}", ctx.run_tag, conn.next);
    let request = GateRequest {
        request_id: id.clone(),
        direction: conn.direction,
        plate: Some(pass.plate.clone()),
        plate_confidence: Some((pass.confidence * 100.0).round() / 100.0),
        code: pass.code.clone(),
        vehicle: Some(pass.vehicle),
        ts: Some(unix_ms()),
    };
    let payload = request.encode();
    for attempt in 0..ctx.config.attempts {
        conn.announce();
        ctx.count(|report| {
            if attempt == 0 {
                report.requests += 1;
            } else {
                report.retries += 1;
            }
        });
        // Waits while the request queue is full (the broker is away); the stop cuts it short.
        let publish = conn.client.publish(
            conn.request_topic.clone(),
            QoS::AtLeastOnce,
            false,
            payload.clone(),
        );
        let sent = tokio::select! {
            () = ctx.stop.cancelled() => return Passed::Unanswered,
            sent = publish => sent,
        };
        if sent.is_err() {
            // The client is gone: the run is stopping.
            return Passed::Unanswered;
        }
        let deadline = Instant::now() + ctx.config.request_timeout;
        loop {
            let received = tokio::select! {
                () = ctx.stop.cancelled() => return Passed::Unanswered,
                received = tokio::time::timeout_at(deadline, conn.inbox.recv()) => received,
            };
            let publish = match received {
                Ok(Some(publish)) => publish,
                Ok(None) => return Passed::Unanswered,
                Err(_) => {
                    ctx.count(|report| report.timeouts += 1);
                    if let Some(suppressed) = ctx.log.allow(std::time::Instant::now()) {
                        tracing::warn!(
                            gate = %conn.gate,
                            request_id = %id,
                            attempt = attempt + 1,
                            suppressed,
                            "no answer from the platform in time; asking again"
                        );
                    }
                    break;
                }
            };
            if publish.topic != conn.command_topic {
                continue;
            }
            match GateCommand::decode(&publish.payload) {
                Ok(command) if command.request_id.as_deref() == Some(id.as_str()) => {
                    tracing::debug!(
                        lot = %ctx.config.lot,
                        gate = %conn.gate,
                        request_id = %id,
                        direction = conn.direction.as_str(),
                        plate = %pass.plate,
                        vehicle = %pass.vehicle,
                        code = pass.code.is_some(),
                        attempts = attempt + 1,
                        action = ?command.action,
                        reason = command.reason.as_str(),
                        spot = command.spot.as_deref().unwrap_or("-"),
                        "gate decision"
                    );
                    return Passed::Answered(command);
                }
                Ok(command) if command.request_id.is_none() => {
                    ctx.count(|report| report.unsolicited += 1);
                    tracing::debug!(
                        gate = %conn.gate,
                        action = ?command.action,
                        reason = command.reason.as_str(),
                        "gate command nobody here asked for"
                    );
                }
                Ok(_) => ctx.count(|report| report.late_answers += 1),
                Err(_) => ctx.count(|report| report.bad_commands += 1),
            }
        }
    }
    ctx.count(|report| report.unanswered += 1);
    tracing::debug!(gate = %conn.gate, request_id = %id, plate = %pass.plate, "no answer at all");
    Passed::Unanswered
}

/// Decides arrivals on the demand curve until `shutdown` or the duration: walk-ins come at
/// once, drivers who book come at their booked time.
async fn arrivals(ctx: &Arc<Ctx>, mut model: DemandModel, shutdown: &CancellationToken) {
    let config = &ctx.config;
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x6A7E_5EED_0000_0001);
    let mut interval = tokio::time::interval(config.tick);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = config.duration.map(|d| ctx.clock.started + d);
    let capacity = config.spots as usize;
    let mut last = ctx.clock.now_s();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = crate::fleet::sleep_until_opt(deadline) => break,
            _ = interval.tick() => {}
        }
        let now = ctx.clock.now_s();
        let dt = now - last;
        last = now;
        let present = ctx.present.load(Ordering::Acquire);
        let wanted = model.arrivals(now, dt, capacity, present);
        for _ in 0..wanted {
            let vehicle = draw_vehicle(&config.vehicles, &mut rng);
            let stay_s = model.draw_stay_s();
            let car_rng = StdRng::seed_from_u64(rng.r#gen());
            ctx.present.fetch_add(1, Ordering::AcqRel);
            if ctx.office.is_some() && rng.gen_bool(config.bookings.share) {
                let (low, high) = config.bookings.lead_s;
                let lead_s = rng.gen_range(low..=high);
                ctx.tasks.spawn(book_then_come(
                    ctx.clone(),
                    vehicle,
                    stay_s,
                    lead_s,
                    car_rng,
                ));
            } else {
                ctx.tasks
                    .spawn(walk_in(ctx.clone(), vehicle, stay_s, car_rng));
            }
        }
        if (now - ctx.clock.start_s) % 3600.0 < dt {
            let report = ctx.report_copy();
            tracing::info!(
                lot = %config.lot,
                sim_hour = format!("{:.2}", (now % DAY_S) / 3600.0),
                inside = ctx.inside.load(Ordering::Relaxed),
                arrivals = report.arrivals,
                admitted = report.admitted_total(),
                denied = report.denied_total(),
                exits = report.exits_total(),
                booked = report.bookings.booked,
                "gates"
            );
        }
    }
}

/// A car through the lot.
#[derive(Debug)]
struct Car {
    plate: String,
    vehicle: VehicleType,
    stay_s: f64,
    booking: Option<Booked>,
    show_code: bool,
    rng: StdRng,
}

async fn walk_in(ctx: Arc<Ctx>, vehicle: VehicleType, stay_s: f64, mut rng: StdRng) {
    let plate = ctx.plates.fresh(&mut rng);
    let car = Car {
        plate,
        vehicle,
        stay_s,
        booking: None,
        show_code: false,
        rng,
    };
    trip(&ctx, car).await;
}

/// A driver books through the API, then comes at the booked time; a driver who cannot book
/// stays at home (refused) or comes as a walk-in (no account available).
async fn book_then_come(
    ctx: Arc<Ctx>,
    vehicle: VehicleType,
    stay_s: f64,
    lead_s: f64,
    mut rng: StdRng,
) {
    let Some(office) = &ctx.office else {
        return;
    };
    let booking_no = ctx.bookings.fetch_add(1, Ordering::Relaxed) + 1;
    let lead = ctx.clock.real(lead_s);
    let arrive = Instant::now() + lead;
    let starts_at = Utc::now() + chrono::Duration::from_std(lead).unwrap_or_default();
    let starts_at = starts_at.with_nanosecond(0).unwrap_or(starts_at);
    // Booked in simulated quarter hours, at least the platform's minimum.
    let booked_s = (stay_s / 900.0).ceil().max(1.0) * 900.0;
    let length = ctx.clock.real(booked_s).max(office.config().min_booking);
    let ends_at = starts_at + chrono::Duration::seconds(length.as_secs_f64().ceil() as i64);
    let result = {
        let Ok(_permit) = (tokio::select! {
            () = ctx.stop.cancelled() => return,
            permit = ctx.permits.acquire() => permit,
        }) else {
            return;
        };
        let plates = &ctx.plates;
        let rng = &mut rng;
        let booking = office.book(vehicle, starts_at, ends_at, booking_no, || {
            plates.fresh(rng)
        });
        tokio::select! {
            () = ctx.stop.cancelled() => return,
            result = booking => result,
        }
    };
    match result {
        Ok(booked) => {
            ctx.count(|report| report.bookings.booked += 1);
            {
                let mut lot = lock(&ctx.lot);
                if let Some(index) = lot.index(booked.spot.as_str())
                    && let Some(spot) = lot.spots.get_mut(index)
                {
                    spot.reserved += 1;
                }
            }
            tracing::debug!(
                plate = %booked.plate,
                vehicle = %booked.vehicle,
                spot = %booked.spot,
                starts_at = %crate::bookings::rfc3339(starts_at),
                ends_at = %crate::bookings::rfc3339(ends_at),
                "booked"
            );
            // Some pay in advance, right away; the others at the exit.
            let advance = ctx
                .cashier
                .as_ref()
                .is_some_and(|cashier| rng.gen_bool(cashier.config().advance_share));
            if advance {
                let path = format!("/api/v1/reservations/{}/payments", booked.id);
                match ctx.pay(Payer::Driver(booked.driver), &path, &mut rng).await {
                    Some((settled, declined)) => {
                        ctx.count_payment(&settled, declined, false);
                    }
                    None => {
                        office.release(booked.driver);
                        return;
                    }
                }
            }
            let come = tokio::select! {
                () = ctx.stop.cancelled() => false,
                () = tokio::time::sleep_until(arrive) => true,
            };
            if !come {
                office.release(booked.driver);
                return;
            }
            let show_code = rng.gen_bool(office.config().code_share);
            let car = Car {
                plate: booked.plate.clone(),
                vehicle: booked.vehicle,
                stay_s,
                booking: Some(booked),
                show_code,
                rng,
            };
            trip(&ctx, car).await;
        }
        Err(NotBooked::NoDriver) => {
            ctx.count(|report| report.bookings.walked_in += 1);
            walk_in(ctx.clone(), vehicle, stay_s, rng).await;
        }
        Err(NotBooked::Refused(kind)) => {
            tracing::debug!(%vehicle, refused = %kind, "booking refused; the driver stays home");
            ctx.count(|report| *report.bookings.refused.entry(kind).or_default() += 1);
            ctx.present.fetch_sub(1, Ordering::AcqRel);
        }
        Err(NotBooked::Failed(error)) => {
            if let Some(suppressed) = ctx.log.allow(std::time::Instant::now()) {
                tracing::warn!(%error, suppressed, "booking failed");
            }
            ctx.count(|report| report.bookings.failed += 1);
            ctx.present.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Entry, parking, stay, exit.
async fn trip(ctx: &Arc<Ctx>, mut car: Car) {
    let config = &ctx.config;
    ctx.count(|report| {
        report.arrivals += 1;
        *report.vehicles.entry(car.vehicle.to_string()).or_default() += 1;
    });
    let reserved = car
        .booking
        .as_ref()
        .and_then(|booked| lock(&ctx.lot).index(booked.spot.as_str()));
    let Some(entry) = ctx.pick_lane(Direction::Entry) else {
        ctx.went_away(&car);
        return;
    };
    let queue = ctx.lanes[entry].waiting.load(Ordering::Acquire);
    if car.booking.is_none() && queue >= config.max_queue {
        ctx.count(|report| report.drove_on += 1);
        ctx.went_away(&car);
        return;
    }
    let confidence = car.rng.gen_range(0.86..0.99);
    let code = car
        .booking
        .as_ref()
        .filter(|_| car.show_code)
        .map(|booked| booked.code.clone());
    if code.is_some() {
        ctx.count(|report| report.bookings.showed_code += 1);
    }
    let passed = ctx.pass(entry, &car, confidence, code.clone()).await;
    if let (Some(booked), Some(office)) = (&car.booking, &ctx.office)
        && passed.is_some()
    {
        office.arrived(&booked.id);
    }
    if let Some(index) = reserved
        && let Some(spot) = lock(&ctx.lot).spots.get_mut(index)
    {
        spot.reserved = spot.reserved.saturating_sub(1);
    }
    let command = match passed {
        Some(Passed::Answered(command)) if opens(command.action) => command,
        Some(Passed::Answered(command)) => {
            ctx.count(|report| {
                *report
                    .denied
                    .entry(command.reason.as_str().to_owned())
                    .or_default() += 1;
            });
            ctx.went_away(&car);
            return;
        }
        Some(Passed::Unanswered) | None => {
            ctx.went_away(&car);
            return;
        }
    };
    ctx.count(|report| {
        *report
            .admitted
            .entry(command.reason.as_str().to_owned())
            .or_default() += 1;
    });
    ctx.inside.fetch_add(1, Ordering::AcqRel);
    // The lane marked the spot as promised to this car when the answer came.
    let assigned = command
        .spot
        .as_deref()
        .and_then(|spot| lock(&ctx.lot).index(spot));
    let (low, high) = config.drive_in_s;
    if !ctx.sleep_sim(car.rng.gen_range(low..=high)).await {
        return;
    }
    let wander = car.rng.gen_bool(config.elsewhere_share);
    let (parked, taken) = {
        let mut lot = lock(&ctx.lot);
        let taken = !wander
            && assigned
                .and_then(|index| lot.spots.get(index))
                .is_some_and(|spot| spot.occupied);
        (lot.park(assigned, car.vehicle, wander, &mut car.rng), taken)
    };
    match parked {
        Some((index, elsewhere)) => {
            let spot = lock(&ctx.lot).spots[index].id.clone();
            ctx.sensors.report(&config.lot, &spot, true);
            ctx.count(|report| {
                report.parked += 1;
                report.parked_elsewhere += u64::from(elsewhere);
                report.assigned_taken += u64::from(taken);
            });
            tracing::debug!(
                plate = %car.plate,
                %spot,
                assigned = command.spot.as_deref().unwrap_or("-"),
                stay_min = (car.stay_s / 60.0).round(),
                "car parked"
            );
            if !ctx.sleep_sim(car.stay_s).await {
                return;
            }
            if let Some(spot) = lock(&ctx.lot).spots.get_mut(index) {
                spot.occupied = false;
            }
            ctx.sensors.report(&config.lot, &spot, false);
        }
        None => ctx.count(|report| report.found_no_spot += 1),
    }
    ctx.present.fetch_sub(1, Ordering::AcqRel);
    let (low, high) = config.drive_out_s;
    if !ctx.sleep_sim(car.rng.gen_range(low..=high)).await {
        return;
    }
    let Some(exit) = ctx.pick_lane(Direction::Exit) else {
        return;
    };
    // A stay that is due: the driver pays (in the app, or a walk-in at the pay station) and
    // asks the gate again, at most twice.
    let mut payments = 0;
    let passed = loop {
        let passed = ctx.pass(exit, &car, confidence, code.clone()).await;
        let session = match &passed {
            Some(Passed::Answered(command))
                if !opens(command.action)
                    && command.reason == Reason::PaymentRequired
                    && ctx.cashier.is_some()
                    && payments < 2 =>
            {
                command.session.clone()
            }
            _ => None,
        };
        let Some(session) = session else {
            break passed;
        };
        let payer = match &car.booking {
            Some(booked) => Payer::Driver(booked.driver),
            None => Payer::Station,
        };
        let path = format!("/api/v1/sessions/{session}/payments");
        let Some((settled, declined)) = ctx.pay(payer, &path, &mut car.rng).await else {
            return;
        };
        tracing::debug!(plate = %car.plate, %session, ?settled, "paid at the exit");
        let paid = ctx.count_payment(&settled, declined, true);
        if !paid && settled != Settled::NothingDue {
            break passed;
        }
        payments += 1;
    };
    match passed {
        Some(Passed::Answered(command)) => ctx.count(|report| {
            let by_reason = if opens(command.action) {
                report.payments.exits_after_payment += u64::from(payments > 0);
                &mut report.exits
            } else {
                &mut report.exit_denied
            };
            *by_reason
                .entry(command.reason.as_str().to_owned())
                .or_default() += 1;
        }),
        Some(Passed::Unanswered) => {}
        None => return,
    }
    ctx.inside.fetch_sub(1, Ordering::AcqRel);
    ctx.release(&car);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GateSimConfig {
        GateSimConfig::new(MqttEndpoint::default(), LotId::parse("lot-1").unwrap(), 30)
    }

    #[test]
    fn gate_ids_follow_the_grammar() {
        let lot = LotId::parse("demo-garage").unwrap();
        let gate = GateId::parse("in-1").unwrap();
        assert_eq!(
            gate_device_id(&lot, &gate).unwrap().as_str(),
            "demo-garage-g-in-1"
        );
        let long = LotId::parse(&"x".repeat(64)).unwrap();
        assert!(gate_device_id(&long, &gate).is_err());
        assert_eq!(default_entry_gates().len(), 2);
        assert_eq!(default_exit_gates().len(), 2);
    }

    #[test]
    fn invalid_configurations_are_refused() {
        assert!(config().validate().is_ok());
        let cases = [
            GateSimConfig {
                entry_gates: vec![],
                ..config()
            },
            GateSimConfig {
                exit_gates: default_entry_gates(),
                ..config()
            },
            GateSimConfig {
                speed: f64::NAN,
                ..config()
            },
            GateSimConfig {
                attempts: 0,
                ..config()
            },
            GateSimConfig {
                elsewhere_share: 2.0,
                ..config()
            },
            GateSimConfig {
                drive_in_s: (10.0, 1.0),
                ..config()
            },
            GateSimConfig {
                vehicles: vec![(VehicleType::Car, 0.0)],
                ..config()
            },
            GateSimConfig {
                spots: 0,
                ..config()
            },
        ];
        for case in cases {
            assert!(case.validate().is_err(), "{case:?}");
        }
    }

    #[test]
    fn the_vehicle_mix_is_followed() {
        let mut rng = StdRng::seed_from_u64(5);
        let mix = default_vehicle_mix();
        let mut counts: HashMap<VehicleType, u32> = HashMap::new();
        for _ in 0..20_000 {
            *counts.entry(draw_vehicle(&mix, &mut rng)).or_default() += 1;
        }
        for (vehicle, weight) in mix {
            let share = f64::from(counts.get(&vehicle).copied().unwrap_or(0)) / 20_000.0;
            assert!((share - weight).abs() < 0.015, "{vehicle}: {share}");
        }
        let only_vans = [(VehicleType::Car, 0.0), (VehicleType::Van, 1.0)];
        assert_eq!(draw_vehicle(&only_vans, &mut rng), VehicleType::Van);
    }

    #[test]
    fn cars_park_where_assigned_or_on_a_free_fitting_spot_nearby() {
        let mut lot = LotView::new(&GateSimConfig {
            spots: 6,
            spots_per_level: 3,
            ..config()
        })
        .unwrap();
        let mut kinds = HashMap::new();
        for (index, spot) in lot.spots.iter().enumerate() {
            let kind = if index == 1 {
                SpotKind::Ev
            } else {
                SpotKind::Standard
            };
            kinds.insert(spot.id.clone(), kind);
        }
        lot.set_kinds(&kinds);
        let mut rng = StdRng::seed_from_u64(1);
        // Straight to the assigned spot.
        lot.spots[0].heading = 1;
        assert_eq!(
            lot.park(Some(0), VehicleType::Car, false, &mut rng),
            Some((0, false))
        );
        assert_eq!(lot.spots[0].heading, 0);
        // Elsewhere: the only other fitting free spot of level 1 is L1-003 (L1-002 is EV).
        assert_eq!(
            lot.park(Some(1), VehicleType::Car, true, &mut rng),
            Some((2, true))
        );
        // Level 1 full but for the EV bay: a car goes one level up.
        let (index, elsewhere) = lot.park(Some(1), VehicleType::Car, true, &mut rng).unwrap();
        assert!(elsewhere && lot.spots[index].level == 1, "{index}");
        // A reserved bay is left alone; the assigned one taken meanwhile sends the car on.
        lot.spots[4].reserved = 1;
        lot.spots[5].occupied = true;
        assert_eq!(
            lot.park(Some(5), VehicleType::Ev, false, &mut rng),
            Some((1, true))
        );
        // Nothing left.
        assert_eq!(lot.park(Some(5), VehicleType::Car, false, &mut rng), None);
        assert_eq!(lot.index("L2-003"), Some(5));
        assert_eq!(lot.index("L9-001"), None);
    }

    #[test]
    fn real_durations_follow_the_speed() {
        let clock = Clock {
            started: Instant::now(),
            start_s: 0.0,
            speed: 60.0,
        };
        assert_eq!(clock.real(120.0), Duration::from_secs(2));
        assert_eq!(clock.real(-5.0), Duration::ZERO);
        assert_eq!(clock.real(f64::NAN), Duration::ZERO);
        assert!(clock.real(f64::INFINITY) <= Duration::from_secs(1_000_000_000));
    }
}
