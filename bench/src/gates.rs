//! `parkd-bench gates`: the time from a gate's request publish to the receipt of its command,
//! with `--gates` (50) barrier gates asking at `--rate` (1) request/s each while the garage's
//! sensors report where the cars park, on PostgreSQL (issue 5's target).
//!
//! One process. parkd ([`RunningApp`], serve mode: anonymous MQTT off, every device logs in
//! with its own secret and the broker's ACL applies to it) runs on a runtime of
//! `--parkd-threads` (2) workers named `parkd`; the gates, sensors, cars and drivers on another
//! (`--load-threads`, 2, `loadgen`). Before parkd starts, a fresh PostgreSQL database gets a
//! `demo_garage` cut to `--spots` (300) spots, one registered sensor per spot and the gates.
//!
//! - **Gates.** Each is an MQTT client (rumqttc) logged in as its registered device
//!   (`{lot}-g-{gate}`), with a retained online status and will, subscribed to its own
//!   `command` topic only, publishing the documented request payload ([`GateRequest`], QoS 1)
//!   at `--rate` per second, every gap drawn uniformly within ±`--jitter` of the mean. A request
//!   is timed from the instant before its publish to the instant the gate's event loop reads
//!   the command carrying its `request_id`. Without an answer in `--request-timeout` (2 s) the
//!   gate publishes the same payload again (same id), up to `--attempts` (5) in all, as a real
//!   gate does; the latency still counts from the first publish.
//! - **What they ask.** Entry gates: a walk-in (a fresh plate, a vehicle of the simulator's mix),
//!   a driver on a reservation booked through the REST API (by its code or its plate), or a
//!   code nobody booked. Exit gates: the next car waiting at the exits if there is one, else a
//!   plate the platform never saw enter (answered `no_session`).
//! - **Cars.** An admitted car drives to its spot (1-3 s), parks there (or, for
//!   `--elsewhere-share` of them or when the spot is taken, in another free spot that fits it,
//!   so the platform reconciles the session), stays `--stay-min`..`--stay-max`, leaves its spot,
//!   drives to the exits (1-2 s) and queues for the next exit gate's request.
//! - **Sensors.** `parkd-sim`'s fleet, driven by the cars (`run_fleet_driven`, as `parkd demo`
//!   runs it with its gates): one connection and secret per sensor, `state` at QoS 1 on every
//!   change, a heartbeat every 60 s, retained status.
//! - **Reservations.** A pool of driver accounts (made through the API) with vehicles; a booking
//!   office keeps `--booked-ahead` reservations booked (starting 2 minutes ahead, one hour
//!   long) for the next drivers who come on one.
//! - **Probe.** One more gate (unless `--no-probe`) sends an invalid request every second,
//!   which parkd answers `bad_request` without the database: the broker, queue and runtime part
//!   of the latency under the same load.
//!
//! During the measured window: CPU per thread group of this process and of every PostgreSQL
//! process, parkd's own decision time (`parkd_gate_decision_seconds`), what parkd's pooled
//! connections do (`pg_stat_activity` every 100 ms, with the statements running), the lot's
//! occupancy, the sensors' messages as ingest counted them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chrono::{SecondsFormat, Utc};
use parkd::app::{Mode, RunningApp};
use parkd_broker::auth::hash_secret;
use parkd_core::garage::Lot;
use parkd_core::gate::{Action, Direction, GateCommand, GateRequest, Reason};
use parkd_core::ids::{GateId, LotId, SpotId};
use parkd_core::payload::DeviceStatus;
use parkd_core::topic::{GateChannel, Topic};
use parkd_core::vehicle::{SpotKind, VehicleType, fits};
use parkd_occupancy::OccupancyEngine;
use parkd_sim::{Credentials, FleetConfig, FleetReport, Login, MqttEndpoint, SensorLink};
use parkd_store::{Device, DeviceBinding, Store};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cpu::{CpuSnapshot, CpuUsage};
use crate::drivers::{self, Rng, StoreSetup, VehicleSpec};
use crate::hist::{Histogram, Summary};
use crate::http1::Connection;
use crate::machine::RunHeader;
use crate::report::{thousands, verdict};
use crate::server::{self, label, metric_sum};
use crate::{Backend, GatesArgs};

/// The issue's target.
const P99_TARGET_MS: f64 = 20.0;
const TARGET_GATES: usize = 50;
const TARGET_RATE: f64 = 1.0;
const ISSUE_TARGET: &str = "From a gate's request publish to its command receipt: p99 under \
     20 ms with 50 gates sending 1 request/s each while the sensor fleet runs at its normal \
     rate, on PostgreSQL.";
/// The demo's sensor traffic for 300 spots (`parkd demo`: speed 60, the customer's ~2,400
/// arrivals per simulated day of 24 real minutes = 1.67 arrivals/s, two state changes each,
/// plus a heartbeat per sensor every 60 s).
const DEMO_SENSOR_RATE: f64 = 2.0 * 2_400.0 / 1_440.0 + 300.0 / 60.0;
/// Real seconds from the entry barrier to the spot, and from the spot to the exit queue.
const DRIVE_IN_S: (f64, f64) = (1.0, 3.0);
const DRIVE_OUT_S: (f64, f64) = (1.0, 2.0);
/// Reservations start this far ahead of their booking and last this long.
const BOOK_LEAD_S: i64 = 120;
const BOOK_LENGTH_S: i64 = 3_600;
/// Latency over time: one histogram per this many seconds of the run.
const SLOT_S: f64 = 5.0;
/// The slowest requests listed in the report.
const SLOWEST: usize = 12;
/// The report's request classes, in order.
const CLASSES: [&str; 5] = ["entry walk-in", "entry reserved", "exit", "deny", "other"];

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Uniform in `[0, 1)`.
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Uniform in `[low, high)`.
fn between(rng: &mut Rng, (low, high): (f64, f64)) -> f64 {
    low + (high - low).max(0.0) * unit(rng)
}

fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or_default()
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The vehicle at `x` (uniform in `[0, 1)`) of a weighted mix.
fn draw_vehicle(mix: &[(VehicleType, f64)], x: f64) -> VehicleType {
    let total: f64 = mix.iter().map(|(_, w)| w.max(0.0)).sum();
    let mut left = x * total;
    for &(vehicle, weight) in mix {
        if left < weight {
            return vehicle;
        }
        left -= weight.max(0.0);
    }
    mix.last().map_or(VehicleType::Car, |(vehicle, _)| *vehicle)
}

/// The vehicle as the accounts API takes it.
fn spec_of(vehicle: VehicleType) -> VehicleSpec {
    let (class, ev, accessible) = match vehicle {
        VehicleType::Motorcycle => ("motorcycle", false, false),
        VehicleType::Compact => ("compact", false, false),
        VehicleType::Van => ("van", false, false),
        VehicleType::Ev => ("car", true, false),
        VehicleType::Accessible => ("car", false, true),
        VehicleType::Car => ("car", false, false),
    };
    VehicleSpec {
        class,
        ev,
        accessible,
    }
}

/// What a gate asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Intent {
    /// Entry without a reservation.
    WalkIn,
    /// Entry on a reservation, showing its code.
    ReservedCode,
    /// Entry on a reservation, recognised by the plate.
    ReservedPlate,
    /// Entry showing a code nobody booked.
    UnknownCode,
    /// Exit of a car that entered.
    Exit,
    /// Exit of a plate never seen entering.
    ExitUnknown,
    /// The probe's invalid payload.
    Probe,
}

impl Intent {
    fn name(self) -> &'static str {
        match self {
            Intent::WalkIn => "entry, walk-in",
            Intent::ReservedCode => "entry, reservation code",
            Intent::ReservedPlate => "entry, reserved plate",
            Intent::UnknownCode => "entry, unknown code",
            Intent::Exit => "exit, a car that entered",
            Intent::ExitUnknown => "exit, a plate never seen entering",
            Intent::Probe => "probe (invalid payload)",
        }
    }

    fn is_entry(self) -> bool {
        matches!(
            self,
            Intent::WalkIn | Intent::ReservedCode | Intent::ReservedPlate | Intent::UnknownCode
        )
    }
}

/// The report's class of an answer.
fn class_of(command: &GateCommand) -> &'static str {
    match (command.action, command.reason) {
        (Action::Open, Reason::WalkIn) => CLASSES[0],
        (Action::Open, Reason::Reservation) => CLASSES[1],
        (Action::Open, Reason::NothingDue) => CLASSES[2],
        (Action::Deny, _) => CLASSES[3],
        _ => CLASSES[4],
    }
}

/// A vehicle of the driver pool: booked for, driven in, returned after its exit.
#[derive(Debug, Clone)]
struct Slot {
    driver: usize,
    vehicle_id: String,
    plate: String,
    vehicle: VehicleType,
}

/// A reservation waiting for its car.
#[derive(Debug, Clone)]
struct Booking {
    id: String,
    code: String,
    /// Its spot in the lot view.
    spot: Option<usize>,
    slot: Slot,
}

/// A car at a gate or in the lot.
#[derive(Debug)]
struct Car {
    plate: String,
    vehicle: VehicleType,
    confidence: f64,
    booking: Option<Booking>,
    /// Showed the reservation's code at the entry (and shows it again at the exit).
    show_code: bool,
    rng: Rng,
}

/// A request waiting for its answer.
#[derive(Debug)]
struct Pending {
    intent: Intent,
    car: Option<Car>,
    payload: Vec<u8>,
    /// The instant before the first publish.
    first: Instant,
    last: Instant,
    attempts: u32,
}

/// One spot as the cars see it.
#[derive(Debug)]
struct SpotView {
    id: SpotId,
    level: String,
    kind: SpotKind,
    occupied: bool,
    /// Admitted cars on their way to it.
    heading: u32,
    /// Reservations booked on it whose car has not come yet.
    reserved: u32,
}

#[derive(Debug)]
struct LotView {
    spots: Vec<SpotView>,
    index: HashMap<String, usize>,
}

impl LotView {
    fn new(lot: &Lot) -> Self {
        let spots: Vec<SpotView> = lot
            .spots
            .iter()
            .map(|spot| SpotView {
                id: spot.id.clone(),
                level: spot.level.to_string(),
                kind: spot.kind,
                occupied: false,
                heading: 0,
                reserved: 0,
            })
            .collect();
        let index = spots
            .iter()
            .enumerate()
            .map(|(i, spot)| (spot.id.to_string(), i))
            .collect();
        Self { spots, index }
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Where a car heading for `assigned` parks: there, unless the driver `wander`s or it is
    /// taken; otherwise a free spot that fits, on the same level if there is one (`pick`,
    /// uniform in `[0, 1)`, chooses among them). The spot is taken; `true` when it is not the
    /// assigned one. `None`: nowhere to park.
    fn park(
        &mut self,
        assigned: Option<usize>,
        vehicle: VehicleType,
        wander: bool,
        pick: f64,
    ) -> Option<(usize, bool)> {
        if let Some(spot) = assigned.and_then(|i| self.spots.get_mut(i)) {
            spot.heading = spot.heading.saturating_sub(1);
            if !wander && !spot.occupied {
                spot.occupied = true;
                return assigned.map(|i| (i, false));
            }
        }
        let level = assigned
            .and_then(|i| self.spots.get(i))
            .map(|spot| spot.level.clone());
        let free: Vec<usize> = self
            .spots
            .iter()
            .enumerate()
            .filter(|(i, spot)| {
                Some(*i) != assigned
                    && !spot.occupied
                    && spot.heading == 0
                    && spot.reserved == 0
                    && fits(vehicle, spot.kind)
            })
            .map(|(i, _)| i)
            .collect();
        let near: Vec<usize> = free
            .iter()
            .copied()
            .filter(|i| self.spots.get(*i).map(|s| &s.level) == level.as_ref())
            .collect();
        let choices = if near.is_empty() { &free } else { &near };
        if !choices.is_empty() {
            let at = ((pick * choices.len() as f64) as usize).min(choices.len() - 1);
            let chosen = choices[at];
            if let Some(spot) = self.spots.get_mut(chosen) {
                spot.occupied = true;
            }
            return Some((chosen, Some(chosen) != assigned));
        }
        // Nowhere else: the assigned spot after all, if it is free.
        let spot = assigned.and_then(|i| self.spots.get_mut(i))?;
        if spot.occupied {
            return None;
        }
        spot.occupied = true;
        assigned.map(|i| (i, false))
    }
}

/// The run's phases.
#[derive(Debug, Clone, Copy)]
struct Plan {
    start: Instant,
    warm_end: Instant,
    end: Instant,
}

impl Plan {
    fn measured(&self, at: Instant) -> bool {
        at >= self.warm_end && at < self.end
    }

    fn window_s(&self) -> f64 {
        (self.end - self.warm_end).as_secs_f64()
    }
}

/// One of the slowest requests.
#[derive(Debug, Clone)]
struct Slow {
    us: u64,
    /// Seconds from the start of the load to the first publish.
    at_s: f64,
    gate: String,
    intent: Intent,
    reason: String,
    attempts: u32,
}

/// What the gates and cars saw.
#[derive(Debug, Default)]
struct Stats {
    /// Answers to requests first published in the measured window (the probe's apart).
    all: Histogram,
    classes: BTreeMap<&'static str, Histogram>,
    /// By (direction, action, reason).
    reasons: BTreeMap<(&'static str, &'static str, &'static str), Histogram>,
    /// By what was asked and the reason answered.
    intents: BTreeMap<(Intent, &'static str), u64>,
    probe: Histogram,
    probe_sent: u64,
    /// Every answer of the run by the slot of its first publish.
    slots: Vec<Histogram>,
    slowest: Vec<Slow>,
    /// Requests (first publishes) in the window and in the whole run (probe apart).
    sent_window: u64,
    sent_all: u64,
    sent_by_intent: BTreeMap<Intent, u64>,
    answered_window: u64,
    answered_all: u64,
    /// Answered only after the gate asked again.
    answered_after_repeat: u64,
    unanswered_window: u64,
    unanswered_all: u64,
    unanswered_examples: Vec<String>,
    repeats: u64,
    /// Answers whose request was already answered (a repeat's second answer).
    late: u64,
    unsolicited: u64,
    bad_commands: u64,
    publish_errors: u64,
    /// Requests still waiting when the gates stopped.
    left_waiting: u64,
    // The cars.
    admitted: u64,
    parked: u64,
    parked_elsewhere: u64,
    assigned_taken: u64,
    found_no_spot: u64,
    exits_opened: u64,
    /// A car that entered was refused at the exit, by reason (never expected).
    exit_refused: BTreeMap<&'static str, u64>,
    /// A driver with a valid reservation was refused at the entry, by reason (only `full`-like
    /// races expected, and rare).
    reserved_refused: BTreeMap<&'static str, u64>,
    /// An entry drawn as reserved found no booked reservation ready: it came as a walk-in.
    reserved_missing: u64,
    // The booking office.
    booked: u64,
    booking_refused: BTreeMap<String, u64>,
    booking_failed: u64,
    booking_first_error: Option<String>,
    cancelled: u64,
}

impl Stats {
    fn sent(&mut self, plan: &Plan, intent: Intent, at: Instant) {
        if intent == Intent::Probe {
            self.probe_sent += u64::from(plan.measured(at));
            return;
        }
        self.sent_all += 1;
        if plan.measured(at) {
            self.sent_window += 1;
            *self.sent_by_intent.entry(intent).or_default() += 1;
        }
    }

    fn answered(
        &mut self,
        plan: &Plan,
        gate: &GateId,
        pending: &Pending,
        command: &GateCommand,
        at: Instant,
    ) {
        let us = at.saturating_duration_since(pending.first).as_micros() as u64;
        let measured = plan.measured(pending.first);
        if pending.intent == Intent::Probe {
            if measured {
                self.probe.record(us);
            }
            return;
        }
        self.answered_all += 1;
        self.answered_after_repeat += u64::from(pending.attempts > 1);
        let since = pending.first.saturating_duration_since(plan.start);
        let slot = (since.as_secs_f64() / SLOT_S) as usize;
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, Histogram::new);
        }
        self.slots[slot].record(us);
        if !measured {
            return;
        }
        self.answered_window += 1;
        self.all.record(us);
        self.classes
            .entry(class_of(command))
            .or_default()
            .record(us);
        let direction = if pending.intent.is_entry() {
            "entry"
        } else {
            "exit"
        };
        self.reasons
            .entry((direction, command.action.as_str(), command.reason.as_str()))
            .or_default()
            .record(us);
        *self
            .intents
            .entry((pending.intent, command.reason.as_str()))
            .or_default() += 1;
        let slowest_floor = self.slowest.last().map_or(0, |s| s.us);
        if self.slowest.len() < SLOWEST || us > slowest_floor {
            self.slowest.push(Slow {
                us,
                at_s: since.as_secs_f64(),
                gate: gate.to_string(),
                intent: pending.intent,
                reason: command.reason.as_str().to_owned(),
                attempts: pending.attempts,
            });
            self.slowest.sort_by_key(|slow| std::cmp::Reverse(slow.us));
            self.slowest.truncate(SLOWEST);
        }
    }

    fn unanswered(&mut self, plan: &Plan, gate: &GateId, id: &str, pending: &Pending) {
        if pending.intent == Intent::Probe {
            return;
        }
        self.unanswered_all += 1;
        if plan.measured(pending.first) {
            self.unanswered_window += 1;
        }
        if self.unanswered_examples.len() < 5 {
            self.unanswered_examples.push(format!(
                "{gate} `{id}` ({}, {} attempts)",
                pending.intent.name(),
                pending.attempts
            ));
        }
    }
}

/// One gate: its MQTT client and the requests waiting for an answer.
#[derive(Debug)]
struct Gate {
    id: GateId,
    direction: Direction,
    probe: bool,
    client: AsyncClient,
    request_topic: String,
    command_topic: String,
    status_topic: String,
    pending: Mutex<HashMap<String, Pending>>,
    next: AtomicU64,
    connacks: AtomicU64,
    subscribed: AtomicBool,
    errors: AtomicU64,
    stopped: AtomicBool,
}

/// The knobs of the load.
#[derive(Debug, Clone)]
struct Params {
    mean_gap_s: f64,
    jitter: f64,
    reserved_share: f64,
    code_share: f64,
    unknown_code_share: f64,
    elsewhere_share: f64,
    stay_s: (f64, f64),
    booked_ahead: usize,
    request_timeout: Duration,
    attempts: u32,
    mix: Vec<(VehicleType, f64)>,
}

/// Everything the gates, cars and the booking office share.
#[derive(Debug)]
struct World {
    lot: LotId,
    /// Fixed once every gate is connected, before the first request.
    plan: OnceLock<Plan>,
    /// Far in the future: what [`World::plan`] gives until then.
    placeholder: Plan,
    params: Params,
    tag: String,
    api: SocketAddr,
    view: Mutex<LotView>,
    sensors: SensorLink,
    /// Cars waiting at the exits, first come first served.
    exits: Mutex<VecDeque<Car>>,
    /// Reservations booked for the next drivers who come on one.
    ready: Mutex<VecDeque<Booking>>,
    /// Vehicles of the drivers free to be booked for.
    pool: Mutex<Vec<Slot>>,
    /// The drivers' bearer tokens.
    tokens: Vec<String>,
    stats: Mutex<Stats>,
    plates: AtomicU64,
    /// Cars and the booking office stop when it fires.
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl World {
    fn plan(&self) -> Plan {
        self.plan.get().copied().unwrap_or(self.placeholder)
    }

    fn fresh_plate(&self, prefix: char) -> String {
        let n = self.plates.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{prefix}{} {n}", self.tag)
    }

    fn walk_in(&self, rng: &mut Rng, prefix: char) -> Car {
        let vehicle = draw_vehicle(&self.params.mix, unit(rng));
        let confidence = (between(rng, (0.86, 0.99)) * 100.0).round() / 100.0;
        Car {
            plate: self.fresh_plate(prefix),
            vehicle,
            confidence,
            booking: None,
            show_code: false,
            rng: Rng::new(rng.next_u64()),
        }
    }

    /// Sleeps; `false` if the run stopped meanwhile.
    async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            () = self.stop.cancelled() => false,
            () = tokio::time::sleep(duration) => true,
        }
    }
}

/// The gate's request for the next vehicle at an entry.
fn entry_request(world: &World, rng: &mut Rng, id: &str) -> (Intent, Car, Vec<u8>) {
    let p = &world.params;
    let x = unit(rng);
    let (intent, car, code) = if x < p.unknown_code_share {
        let n = world.plates.fetch_add(1, Ordering::Relaxed) + 1;
        // Ten characters: never one of the platform's eight-character codes.
        let code = format!("NC{n:08}");
        (Intent::UnknownCode, world.walk_in(rng, 'U'), Some(code))
    } else if x < p.unknown_code_share + p.reserved_share {
        let booked = lock(&world.ready).pop_front();
        match booked {
            Some(booking) => {
                let show_code = unit(rng) < p.code_share;
                let code = show_code.then(|| booking.code.clone());
                let car = Car {
                    plate: booking.slot.plate.clone(),
                    vehicle: booking.slot.vehicle,
                    confidence: (between(rng, (0.86, 0.99)) * 100.0).round() / 100.0,
                    booking: Some(booking),
                    show_code,
                    rng: Rng::new(rng.next_u64()),
                };
                let intent = if show_code {
                    Intent::ReservedCode
                } else {
                    Intent::ReservedPlate
                };
                (intent, car, code)
            }
            None => {
                lock(&world.stats).reserved_missing += 1;
                (Intent::WalkIn, world.walk_in(rng, 'W'), None)
            }
        }
    } else {
        (Intent::WalkIn, world.walk_in(rng, 'W'), None)
    };
    let request = GateRequest {
        request_id: id.to_owned(),
        direction: Direction::Entry,
        plate: Some(car.plate.clone()),
        plate_confidence: Some(car.confidence),
        code,
        vehicle: Some(car.vehicle),
        ts: Some(now_ms()),
    };
    (intent, car, request.encode())
}

/// The gate's request for the next vehicle at an exit.
fn exit_request(world: &World, id: &str) -> (Intent, Option<Car>, Vec<u8>) {
    let waiting = lock(&world.exits).pop_front();
    let (intent, plate, confidence, code) = match &waiting {
        Some(car) => (
            Intent::Exit,
            car.plate.clone(),
            car.confidence,
            car.booking
                .as_ref()
                .filter(|_| car.show_code)
                .map(|b| b.code.clone()),
        ),
        None => (Intent::ExitUnknown, world.fresh_plate('X'), 0.93, None),
    };
    let request = GateRequest {
        request_id: id.to_owned(),
        direction: Direction::Exit,
        plate: Some(plate),
        plate_confidence: Some(confidence),
        code,
        vehicle: None,
        ts: Some(now_ms()),
    };
    (intent, waiting, request.encode())
}

/// Publishes one request of `gate` and registers it as waiting.
async fn ask(world: &Arc<World>, gate: &Gate, rng: &mut Rng) {
    let n = gate.next.fetch_add(1, Ordering::Relaxed) + 1;
    let id = format!("{}-{}-{n:06}", gate.id, world.tag);
    let (intent, car, payload) = if gate.probe {
        // Not a valid direction: decoded, refused as `bad_request`, never stored.
        let payload = format!(
            r#"{{"request_id":"{id}","direction":"sideways","ts":{}}}"#,
            now_ms()
        );
        (Intent::Probe, None, payload.into_bytes())
    } else {
        match gate.direction {
            Direction::Entry => {
                let (intent, car, payload) = entry_request(world, rng, &id);
                (intent, Some(car), payload)
            }
            Direction::Exit => exit_request(world, &id),
        }
    };
    let first = Instant::now();
    lock(&gate.pending).insert(
        id.clone(),
        Pending {
            intent,
            car,
            payload: payload.clone(),
            first,
            last: first,
            attempts: 1,
        },
    );
    lock(&world.stats).sent(&world.plan(), intent, first);
    let published = gate
        .client
        .publish(gate.request_topic.clone(), QoS::AtLeastOnce, false, payload)
        .await;
    if published.is_err() {
        let pending = lock(&gate.pending).remove(&id);
        if let Some(pending) = pending {
            lock(&world.stats).publish_errors += 1;
            settle(world, pending, None);
        }
    }
}

/// A gate's requests on its schedule until the end of the run.
async fn schedule(world: Arc<World>, gate: Arc<Gate>, seed: u64) {
    let mut rng = Rng::new(seed);
    let gap = world.params.mean_gap_s;
    let jitter = world.params.jitter;
    let plan = world.plan();
    let mut at = plan.start + seconds(gap * unit(&mut rng));
    while at < plan.end {
        tokio::select! {
            () = world.stop.cancelled() => return,
            () = tokio::time::sleep_until(at.into()) => {}
        }
        ask(&world, &gate, &mut rng).await;
        let factor = 1.0 - jitter + 2.0 * jitter * unit(&mut rng);
        at += seconds((gap * factor).max(0.001));
    }
}

/// A command arrived on `gate`'s command topic at `at`.
fn receipt(world: &Arc<World>, gate: &Gate, payload: &[u8], at: Instant) {
    let Ok(command) = GateCommand::decode(payload) else {
        lock(&world.stats).bad_commands += 1;
        return;
    };
    let Some(id) = command.request_id.as_deref() else {
        lock(&world.stats).unsolicited += 1;
        return;
    };
    let pending = lock(&gate.pending).remove(id);
    match pending {
        Some(pending) => {
            lock(&world.stats).answered(&world.plan(), &gate.id, &pending, &command, at);
            settle(world, pending, Some(command));
        }
        None => lock(&world.stats).late += 1,
    }
}

/// What follows an answer (or none at all) for the car concerned.
fn settle(world: &Arc<World>, pending: Pending, command: Option<GateCommand>) {
    let Some(mut car) = pending.car else {
        return;
    };
    let opened = command.as_ref().is_some_and(|c| c.action == Action::Open);
    let reason = command.as_ref().map_or("no answer", |c| c.reason.as_str());
    if pending.intent.is_entry() {
        if let Some(spot) = car.booking.as_ref().and_then(|b| b.spot) {
            let mut view = lock(&world.view);
            if let Some(spot) = view.spots.get_mut(spot) {
                spot.reserved = spot.reserved.saturating_sub(1);
            }
        }
        if opened {
            let assigned = command
                .as_ref()
                .and_then(|c| c.spot.as_deref())
                .and_then(|spot| {
                    let mut view = lock(&world.view);
                    let index = view.index(spot)?;
                    if let Some(spot) = view.spots.get_mut(index) {
                        spot.heading += 1;
                    }
                    Some(index)
                });
            lock(&world.stats).admitted += 1;
            world.tasks.spawn(trip(world.clone(), car, assigned));
            return;
        }
        if let Some(booking) = car.booking.take() {
            if command.is_some() {
                *lock(&world.stats)
                    .reserved_refused
                    .entry(reason)
                    .or_default() += 1;
            }
            // The reservation would hold its spot for an hour: cancel it. The vehicle goes
            // back to the pool unless the platform may still think it is inside.
            let retire = command.is_none() || reason == Reason::AlreadyInside.as_str();
            world.tasks.spawn(cancel(world.clone(), booking, retire));
        }
        return;
    }
    // An exit of a car that entered.
    if opened {
        lock(&world.stats).exits_opened += 1;
        if let Some(booking) = car.booking {
            lock(&world.pool).push(booking.slot);
        }
    } else {
        // Its session may still be open: its vehicle is not booked again.
        *lock(&world.stats).exit_refused.entry(reason).or_default() += 1;
    }
}

/// An admitted car: to its spot, the stay, to the exits.
async fn trip(world: Arc<World>, mut car: Car, assigned: Option<usize>) {
    if !world
        .sleep(seconds(between(&mut car.rng, DRIVE_IN_S)))
        .await
    {
        return;
    }
    let wander = unit(&mut car.rng) < world.params.elsewhere_share;
    let pick = unit(&mut car.rng);
    let (parked, taken) = {
        let mut view = lock(&world.view);
        let taken = !wander
            && assigned
                .and_then(|i| view.spots.get(i))
                .is_some_and(|spot| spot.occupied);
        (view.park(assigned, car.vehicle, wander, pick), taken)
    };
    match parked {
        Some((index, elsewhere)) => {
            let spot = lock(&world.view).spots.get(index).map(|s| s.id.clone());
            {
                let mut stats = lock(&world.stats);
                stats.parked += 1;
                stats.parked_elsewhere += u64::from(elsewhere);
                stats.assigned_taken += u64::from(taken);
            }
            if let Some(spot) = &spot {
                world.sensors.report(&world.lot, spot, true);
            }
            let stay = seconds(between(&mut car.rng, world.params.stay_s));
            let stayed = world.sleep(stay).await;
            if let Some(view_spot) = lock(&world.view).spots.get_mut(index) {
                view_spot.occupied = false;
            }
            if let Some(spot) = &spot {
                world.sensors.report(&world.lot, spot, false);
            }
            if !stayed {
                return;
            }
        }
        None => lock(&world.stats).found_no_spot += 1,
    }
    if !world
        .sleep(seconds(between(&mut car.rng, DRIVE_OUT_S)))
        .await
    {
        return;
    }
    lock(&world.exits).push_back(car);
}

/// Repeats requests without an answer in time; gives up after the last attempt.
async fn repeats(world: Arc<World>, gates: Vec<Arc<Gate>>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = world.params.request_timeout;
    let attempts = world.params.attempts;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        for gate in &gates {
            let mut again = Vec::new();
            let mut given_up = Vec::new();
            {
                let mut pending = lock(&gate.pending);
                let due: Vec<String> = pending
                    .iter()
                    .filter(|(_, p)| now.saturating_duration_since(p.last) >= timeout)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in due {
                    if let Some(p) = pending.get_mut(&id)
                        && p.attempts < attempts
                    {
                        p.attempts += 1;
                        p.last = now;
                        again.push(p.payload.clone());
                    } else if let Some(p) = pending.remove(&id) {
                        given_up.push((id, p));
                    }
                }
            }
            for payload in again {
                lock(&world.stats).repeats += 1;
                let _ = gate.client.try_publish(
                    gate.request_topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                );
            }
            for (id, p) in given_up {
                lock(&world.stats).unanswered(&world.plan(), &gate.id, &id, &p);
                settle(&world, p, None);
            }
        }
    }
}

/// A gate's event loop: connection, subscription, and the commands it receives.
async fn poll_gate(
    world: Arc<World>,
    gate: Arc<Gate>,
    mut eventloop: EventLoop,
    stop: CancellationToken,
) {
    let mut disconnecting = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let at = Instant::now();
                if publish.topic == gate.command_topic {
                    receipt(&world, &gate, &publish.payload, at);
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                gate.connacks.fetch_add(1, Ordering::AcqRel);
                let _ = gate
                    .client
                    .try_subscribe(gate.command_topic.clone(), QoS::AtMostOnce);
                let online = DeviceStatus {
                    online: true,
                    ts: Some(now_ms()),
                }
                .encode();
                let _ = gate.client.try_publish(
                    gate.status_topic.clone(),
                    QoS::AtLeastOnce,
                    true,
                    online,
                );
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                gate.subscribed.store(true, Ordering::Release);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => disconnecting = true,
            Ok(_) => {}
            Err(_) if disconnecting || stop.is_cancelled() => break,
            Err(error) => {
                gate.errors.fetch_add(1, Ordering::Relaxed);
                gate.subscribed.store(false, Ordering::Release);
                tracing::warn!(gate = %gate.id, %error, "bench gate: MQTT connection error");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
    gate.stopped.store(true, Ordering::Release);
}

/// A gate's client, logged in as its registered device.
fn gate_client(
    lot: &LotId,
    id: GateId,
    direction: Direction,
    probe: bool,
    mqtt: SocketAddr,
    secret: &str,
) -> anyhow::Result<(Arc<Gate>, EventLoop)> {
    let device = parkd_sim::gates::gate_device_id(lot, &id)
        .map_err(|e| anyhow!("device id of gate {id}: {e}"))?;
    let topic = |channel| {
        Topic::Gate {
            lot: lot.clone(),
            gate: id.clone(),
            channel,
        }
        .to_string()
    };
    let status_topic = topic(GateChannel::Status);
    let request_topic = topic(GateChannel::Request);
    let command_topic = topic(GateChannel::Command);
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
    let mut options = MqttOptions::new(device.as_str(), mqtt.ip().to_string(), mqtt.port());
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_credentials(device.as_str(), secret)
        .set_last_will(will)
        .set_inflight(64)
        .set_request_channel_capacity(256);
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(5);
    eventloop.set_network_options(network);
    let gate = Gate {
        id,
        direction,
        probe,
        client,
        request_topic,
        command_topic,
        status_topic,
        pending: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
        connacks: AtomicU64::new(0),
        subscribed: AtomicBool::new(false),
        errors: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
    };
    Ok((Arc::new(gate), eventloop))
}

/// Books reservations ahead of the drivers who come on them, until the run stops.
async fn office(world: Arc<World>) {
    let mut connection: Option<Connection> = None;
    let mut n = 0u64;
    while !world.stop.is_cancelled() {
        let enough = lock(&world.ready).len() >= world.params.booked_ahead;
        let slot = if enough {
            None
        } else {
            lock(&world.pool).pop()
        };
        let Some(slot) = slot else {
            if !world.sleep(Duration::from_millis(50)).await {
                break;
            }
            continue;
        };
        n += 1;
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => match Connection::open(world.api).await {
                Ok(conn) => connection.insert(conn),
                Err(error) => {
                    note_booking_error(&world, format!("connecting: {error:#}"));
                    lock(&world.pool).push(slot);
                    world.sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        match book(&world, conn, &slot, n).await {
            Ok(Some(booking)) => {
                lock(&world.stats).booked += 1;
                if let Some(spot) = booking.spot {
                    let mut view = lock(&world.view);
                    if let Some(spot) = view.spots.get_mut(spot) {
                        spot.reserved += 1;
                    }
                }
                lock(&world.ready).push_back(booking);
            }
            Ok(None) => {
                // Refused (counted): try again a little later.
                lock(&world.pool).insert(0, slot);
                world.sleep(Duration::from_millis(200)).await;
            }
            Err(error) => {
                note_booking_error(&world, format!("{error:#}"));
                lock(&world.pool).insert(0, slot);
                connection = None;
                world.sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn note_booking_error(world: &World, error: String) {
    let mut stats = lock(&world.stats);
    stats.booking_failed += 1;
    if stats.booking_first_error.is_none() {
        stats.booking_first_error = Some(error);
    }
}

/// One reservation for `slot`'s vehicle starting [`BOOK_LEAD_S`] ahead; `None` if refused.
async fn book(
    world: &World,
    connection: &mut Connection,
    slot: &Slot,
    n: u64,
) -> anyhow::Result<Option<Booking>> {
    let token = world
        .tokens
        .get(slot.driver)
        .ok_or_else(|| anyhow!("no token for driver {}", slot.driver))?;
    let starts_at = Utc::now() + chrono::Duration::seconds(BOOK_LEAD_S);
    let ends_at = starts_at + chrono::Duration::seconds(BOOK_LENGTH_S);
    let body = serde_json::json!({
        "lot": world.lot.as_str(),
        "vehicle_id": slot.vehicle_id,
        "starts_at": starts_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "ends_at": ends_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    })
    .to_string();
    let bearer = format!("Bearer {token}");
    let key = format!("gbench-{}-{n}", world.tag);
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        connection.send(
            "POST",
            "/api/v1/reservations",
            &[("Authorization", &bearer), ("Idempotency-Key", &key)],
            body.as_bytes(),
        ),
    )
    .await
    .map_err(|_| anyhow!("no answer to a booking within 10 s"))??;
    match answer.status {
        201 => {
            let json = answer.json()?;
            let field = |name: &str| {
                json.get(name)
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("no {name} in the reservation: {}", answer.text()))
            };
            let spot = field("spot")?;
            Ok(Some(Booking {
                id: field("id")?,
                code: field("code")?,
                spot: lock(&world.view).index(&spot),
                slot: slot.clone(),
            }))
        }
        409 => {
            *lock(&world.stats)
                .booking_refused
                .entry(answer.problem_kind())
                .or_default() += 1;
            Ok(None)
        }
        status => bail!("booking: status {status}: {}", answer.text()),
    }
}

/// Cancels a reservation whose driver was refused at the entry; the vehicle returns to the
/// pool unless `retire`.
async fn cancel(world: Arc<World>, booking: Booking, retire: bool) {
    let Some(token) = world.tokens.get(booking.slot.driver) else {
        return;
    };
    let bearer = format!("Bearer {token}");
    let path = format!("/api/v1/reservations/{}/cancel", booking.id);
    let cancelled = match Connection::open(world.api).await {
        Ok(mut conn) => matches!(
            tokio::time::timeout(
                Duration::from_secs(10),
                conn.send("POST", &path, &[("Authorization", &bearer)], b""),
            )
            .await,
            Ok(Ok(answer)) if answer.status == 200
        ),
        Err(_) => false,
    };
    lock(&world.stats).cancelled += u64::from(cancelled);
    if !retire && cancelled {
        lock(&world.pool).push(booking.slot);
    }
}

/// Driver accounts with vehicles, made through the API: (tokens, vehicles).
async fn enrol(
    api: SocketAddr,
    tag: &str,
    drivers: usize,
    per_driver: usize,
    mix: &[(VehicleType, f64)],
) -> anyhow::Result<(Vec<String>, Vec<Slot>)> {
    let mut tokens = Vec::new();
    let mut slots = Vec::new();
    let total = (drivers * per_driver).max(1);
    for d in 0..drivers {
        let mut conn = Connection::open(api).await?;
        let (email, password) = drivers::credentials(&format!("g{tag}"), d);
        drivers::register(&mut conn, &email, &password).await?;
        let token = drivers::login(&mut conn, &email, &password).await?;
        for v in 0..per_driver {
            let i = d * per_driver + v;
            // The mix's shares, spread evenly over the pool.
            let vehicle = draw_vehicle(mix, (i as f64 + 0.5) / total as f64);
            let plate = format!("R{tag} {d}-{v:02}");
            let vehicle_id = drivers::add_vehicle(&mut conn, &token, &plate, spec_of(vehicle))
                .await
                .with_context(|| format!("vehicle {plate}"))?;
            slots.push(Slot {
                driver: d,
                vehicle_id,
                plate,
                vehicle,
            });
        }
        tokens.push(token);
    }
    Ok((tokens, slots))
}

/// Registers every spot's sensor and every gate with `secret`.
async fn register_devices(
    store: &Arc<dyn Store>,
    lot: &Lot,
    gates: &[GateId],
    secret: &str,
) -> anyhow::Result<()> {
    let hash = hash_secret(secret);
    let mut devices = Vec::new();
    for spot in &lot.spots {
        devices.push(Device {
            id: parkd_sim::fleet::sensor_device_id(&lot.id, &spot.id)
                .map_err(|e| anyhow!("sensor id for {}: {e}", spot.id))?,
            binding: DeviceBinding::Spot {
                lot: lot.id.clone(),
                spot: spot.id.clone(),
            },
            secret_sha256: Some(hash),
            disabled: false,
            created_at: Utc::now(),
        });
    }
    for gate in gates {
        devices.push(Device {
            id: parkd_sim::gates::gate_device_id(&lot.id, gate)
                .map_err(|e| anyhow!("gate id for {gate}: {e}"))?,
            binding: DeviceBinding::Gate {
                lot: lot.id.clone(),
                gate: gate.clone(),
            },
            secret_sha256: Some(hash),
            disabled: false,
            created_at: Utc::now(),
        });
    }
    for device in &devices {
        store
            .upsert_device(device)
            .await
            .with_context(|| format!("registering {}", device.id))?;
    }
    Ok(())
}

/// parkd's own counters at one instant.
#[derive(Debug, Clone, Default)]
struct ServerSnap {
    /// `parkd_gate_decision_seconds`: count, sum (s), cumulative buckets (upper bound s, count).
    decisions: (u64, f64, Vec<(f64, u64)>),
    arrivals: BTreeMap<String, f64>,
    /// `parkd_ingest_received_total` by channel.
    received: BTreeMap<String, f64>,
    rows: f64,
    batches: f64,
    lost: f64,
    rejected: f64,
    replays: f64,
    dropped: BTreeMap<String, f64>,
    link_messages: f64,
}

fn by_label(registry: &prometheus::Registry, name: &str, key: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for metric in family.get_metric() {
            let value = metric
                .get_label()
                .iter()
                .find(|l| l.name() == key)
                .map(|l| l.value().to_owned())
                .unwrap_or_default();
            *out.entry(value).or_default() +=
                metric.get_counter().get_value() + metric.get_gauge().get_value();
        }
    }
    out
}

fn plain_histogram(registry: &prometheus::Registry, name: &str) -> (u64, f64, Vec<(f64, u64)>) {
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        if let Some(metric) = family.get_metric().first() {
            let h = metric.get_histogram();
            let buckets = h
                .get_bucket()
                .iter()
                .map(|b| (b.upper_bound(), b.cumulative_count()))
                .collect();
            return (h.get_sample_count(), h.get_sample_sum(), buckets);
        }
    }
    (0, 0.0, Vec::new())
}

fn server_snap(registry: &prometheus::Registry) -> ServerSnap {
    let all = |_: &[(&str, &str)]| true;
    ServerSnap {
        decisions: plain_histogram(registry, "parkd_gate_decision_seconds"),
        arrivals: by_label(registry, "parkd_gate_arrivals_total", "outcome"),
        received: by_label(registry, "parkd_ingest_received_total", "channel"),
        rows: metric_sum(registry, "parkd_ingest_rows_written_total", |l| {
            label(l, "table") == Some("spot_readings")
        }),
        batches: metric_sum(registry, "parkd_ingest_batches_total", all),
        lost: metric_sum(registry, "parkd_ingest_lost_total", all),
        rejected: metric_sum(registry, "parkd_ingest_rejected_total", all),
        replays: metric_sum(registry, "parkd_gate_replays_total", all),
        dropped: by_label(registry, "parkd_gate_dropped_total", "stage"),
        link_messages: metric_sum(registry, "parkd_mqtt_link_messages_total", all),
    }
}

fn map_delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<(String, u64)> {
    after
        .iter()
        .map(|(k, v)| {
            let b = before.get(k).copied().unwrap_or(0.0);
            (k.clone(), (v - b).max(0.0).round() as u64)
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The lot's live occupancy, sampled during the window.
#[derive(Debug, Default, Clone)]
struct Occupancy {
    samples: u64,
    occupied: i64,
    held: i64,
    free: i64,
    min_free: Option<i64>,
    max_taken: i64,
    unknown: i64,
    /// Moments (s from the start of the load) when at least [`HELD_DROP`] spots stopped being
    /// held within 100 ms, and how many: parkd's reservation sweep recomputing the holds.
    held_drops: Vec<(f64, i64)>,
}

/// Held spots released at once that mark a sweep of the holds.
const HELD_DROP: i64 = 10;

/// The lot's counts every 100 ms from the start of the load; the averages over the window.
async fn sample_occupancy(engine: Arc<OccupancyEngine>, lot: LotId, plan: Plan) -> Occupancy {
    let mut out = Occupancy::default();
    tokio::time::sleep_until(plan.start.into()).await;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_held: Option<i64> = None;
    let mut n = 0u64;
    while Instant::now() < plan.end {
        tick.tick().await;
        let Some(c) = engine.counts(&lot) else {
            continue;
        };
        let now = Instant::now();
        if let Some(before) = last_held
            && before - c.held >= HELD_DROP
        {
            let at = now.saturating_duration_since(plan.start).as_secs_f64();
            out.held_drops.push((at, before - c.held));
        }
        last_held = Some(c.held);
        n += 1;
        // The window's averages from every fifth sample (500 ms).
        if !plan.measured(now) || !n.is_multiple_of(5) {
            continue;
        }
        out.samples += 1;
        out.occupied += c.occupied;
        out.held += c.held;
        out.free += c.free;
        out.unknown += c.unknown;
        out.min_free = Some(out.min_free.map_or(c.free, |m| m.min(c.free)));
        out.max_taken = out.max_taken.max(c.occupied + c.held);
    }
    out
}

/// One slot of [`SLOT_S`] seconds of the monitor's time series.
#[derive(Debug, Default, Clone, Copy)]
struct DbSlot {
    samples: u64,
    /// parkd's connections active (summed over samples).
    active: u64,
    /// Of those, waiting for the WAL to be written or flushed (`IO: WALSync`, `IO: WALWrite`,
    /// `LWLock: WALWrite`).
    wal: u64,
    /// Time with at least one task of the machine stalled on IO / waiting for a CPU
    /// (`/proc/pressure`, µs), and the wall time they were read over (µs).
    io_stall_us: u64,
    cpu_stall_us: u64,
    wall_us: u64,
}

/// What PostgreSQL (and the machine) did during the window.
#[derive(Debug, Default)]
struct DbWindow {
    error: Option<String>,
    samples: u64,
    /// parkd's connections, sampled: what they were doing → occurrences.
    states: BTreeMap<String, u64>,
    /// The statements of parkd's active connections, sampled → occurrences.
    statements: BTreeMap<String, u64>,
    connections: u64,
    commits: i64,
    rollbacks: i64,
    wal_syncs: Option<i64>,
    wal_bytes: Option<i64>,
    /// CPU ticks (1/100 s) of PostgreSQL's processes in the window, by kind.
    ticks: BTreeMap<String, u64>,
    /// Whether every process's CPU could be read (the server is local).
    ticks_complete: bool,
    lift: Option<i32>,
    lifted: u64,
    lift_failed: u64,
    /// PostgreSQL's processes by scheduler autogroup nice at the start of the window.
    nice: BTreeMap<i32, u64>,
    /// Every [`SLOT_S`] from the start of the load.
    series: Vec<DbSlot>,
    /// Share of the window with some task stalled on IO, and waiting for a CPU.
    pressure: Option<(f64, f64)>,
    /// Every sample from the start of the load.
    moments: Vec<Moment>,
}

/// One sample of the monitor.
#[derive(Debug, Default, Clone, Copy)]
struct Moment {
    /// Seconds from the start of the load.
    at_s: f64,
    /// parkd's connections active, and of those waiting for the WAL.
    active: u64,
    wal: u64,
    /// Time with some task of the machine stalled on IO since the previous sample, and the
    /// time since the previous sample (µs).
    io_stall_us: u64,
    wall_us: u64,
    /// The machine's dirty and writeback memory (KiB, `/proc/meminfo`), if readable.
    dirty_writeback_kb: Option<(u64, u64)>,
}

/// `Dirty` and `Writeback` of `/proc/meminfo`, KiB.
fn dirty_writeback_kb() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("Dirty:")?, field("Writeback:")?))
}

/// `some ... total=N` of `/proc/pressure/{kind}` (µs), where the kernel has it.
fn pressure_total(kind: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/pressure/{kind}")).ok()?;
    let line = text.lines().find(|l| l.starts_with("some"))?;
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("total="))?
        .parse()
        .ok()
}

impl DbWindow {
    fn cores(&self, window_s: f64) -> f64 {
        self.ticks.values().sum::<u64>() as f64 / 100.0 / window_s.max(1e-9)
    }
}

/// Server counters at one instant: (commits, rollbacks, wal syncs, wal bytes).
type Counters = (i64, i64, Option<i64>, Option<i64>);
/// Per pid: (kind, CPU ticks); `None` when a process's CPU could not be read.
type ProcTicks = Option<HashMap<i32, (String, u64)>>;
/// What the monitor read when the window opened: counters, CPU ticks, pressure totals.
type Opened = (Counters, ProcTicks, (Option<u64>, Option<u64>));

async fn db_counters(client: &tokio_postgres::Client) -> anyhow::Result<Counters> {
    let row = client
        .query_one(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database
             WHERE datname = current_database()",
            &[],
        )
        .await?;
    let (commits, rollbacks) = (row.try_get(0)?, row.try_get(1)?);
    let wal = client
        .query_one("SELECT wal_sync, wal_bytes::bigint FROM pg_stat_wal", &[])
        .await
        .ok();
    let syncs = wal.as_ref().and_then(|r| r.try_get(0).ok());
    let bytes = wal.as_ref().and_then(|r| r.try_get(1).ok());
    Ok((commits, rollbacks, syncs, bytes))
}

/// CPU ticks of every PostgreSQL process by pid: (kind, ticks); `None` if one could not be
/// read (the server is on another machine).
async fn db_ticks(client: &tokio_postgres::Client) -> anyhow::Result<ProcTicks> {
    let rows = client
        .query(
            "SELECT pid, CASE
                 WHEN pid = pg_backend_pid() THEN 'the benchmark''s monitor'
                 WHEN backend_type <> 'client backend' THEN backend_type
                 WHEN datname = current_database() THEN 'parkd''s connections'
                 ELSE 'other connections' END
             FROM pg_stat_activity",
            &[],
        )
        .await?;
    let mut out = HashMap::new();
    for row in rows {
        let pid: i32 = row.try_get(0)?;
        let kind: String = row.try_get(1)?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        match stat.as_deref().and_then(crate::cpu::parse_stat) {
            Some((name, ticks)) if name.starts_with("postgres") => {
                out.insert(pid, (kind, ticks));
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// Gives every process of a local server the autogroup nice value `nice`: (changed, failed).
async fn lift_priority(client: &tokio_postgres::Client, nice: i32) -> anyhow::Result<(u64, u64)> {
    let (mut changed, mut failed) = (0, 0);
    for row in client
        .query("SELECT pid FROM pg_stat_activity", &[])
        .await?
    {
        let pid: i32 = row.try_get(0)?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "postgres" || drivers::autogroup_nice(pid) == Some(nice) {
            continue;
        }
        if std::fs::write(format!("/proc/{pid}/autogroup"), nice.to_string()).is_ok() {
            changed += 1;
        } else {
            failed += 1;
        }
    }
    Ok((changed, failed))
}

fn state_class(state: &str, wait_type: &str, wait: &str) -> String {
    match (state, wait_type) {
        ("active", "") => "active, on CPU".to_owned(),
        ("active", _) => format!("active, waiting on {wait_type}: {wait}"),
        ("idle in transaction", _) => "idle in transaction (parkd between two statements)".into(),
        ("idle", _) => "idle in parkd's pool".to_owned(),
        (other, _) => format!("{other} ({wait_type}: {wait})"),
    }
}

/// A statement's text, short, on one line.
fn statement_key(query: &str) -> String {
    let flat = query.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut key: String = flat.chars().take(110).collect();
    if key.len() < flat.len() {
        key.push_str(" …");
    }
    key
}

/// On a thread of its own: PostgreSQL's counters and processes' CPU at `from` and `to`; from
/// `start` to `to`, parkd's connections and the machine's pressure every 100 ms. Under
/// `bench/prio.sh` the server's processes get the benchmark's autogroup nice at `start` and
/// again at `from` (for connections opened meanwhile).
fn db_monitor(
    url: String,
    start: Instant,
    from: Instant,
    to: Instant,
    lift: Option<i32>,
) -> std::thread::JoinHandle<DbWindow> {
    let run = move || {
        let mut window = DbWindow {
            lift,
            ..DbWindow::default()
        };
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                window.error = Some(error.to_string());
                return window;
            }
        };
        let outcome = runtime.block_on(monitor(&url, start, from, to, &mut window));
        if let Err(error) = outcome {
            window.error = Some(format!("{error:#}"));
        }
        window
    };
    std::thread::Builder::new()
        .name("pgmon".to_owned())
        .spawn(run)
        .unwrap_or_else(|_| std::thread::spawn(DbWindow::default))
}

async fn monitor(
    url: &str,
    start: Instant,
    from: Instant,
    to: Instant,
    window: &mut DbWindow,
) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute("SET application_name = 'parkd-bench-monitor'")
        .await?;
    let sample = client
        .prepare(
            "SELECT coalesce(state, ''), coalesce(wait_event_type, ''),
                    coalesce(wait_event, ''), coalesce(query, '')
             FROM pg_stat_activity
             WHERE datname = current_database() AND backend_type = 'client backend'
               AND pid <> pg_backend_pid()
               AND application_name <> 'parkd-bench-monitor'",
        )
        .await?;
    tokio::time::sleep_until(start.into()).await;
    if let Some(nice) = window.lift {
        let (changed, failed) = lift_priority(&client, nice).await?;
        window.lifted += changed;
        window.lift_failed += failed;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (Instant::now(), pressure_total("io"), pressure_total("cpu"));
    let mut opened: Option<Opened> = None;
    while Instant::now() < to {
        tick.tick().await;
        let now = Instant::now();
        if opened.is_none() && now >= from {
            if let Some(nice) = window.lift {
                let (changed, failed) = lift_priority(&client, nice).await?;
                window.lifted += changed;
                window.lift_failed += failed;
            }
            for row in client
                .query("SELECT pid FROM pg_stat_activity", &[])
                .await?
            {
                let pid: i32 = row.try_get(0)?;
                if let Some(nice) = drivers::autogroup_nice(pid) {
                    *window.nice.entry(nice).or_default() += 1;
                }
            }
            opened = Some((
                db_counters(&client).await?,
                db_ticks(&client).await?,
                (pressure_total("io"), pressure_total("cpu")),
            ));
        }
        let measured = opened.is_some() && now < to;
        let rows = client.query(&sample, &[]).await?;
        let at = Instant::now();
        let index = (at.saturating_duration_since(start).as_secs_f64() / SLOT_S) as usize;
        if window.series.len() <= index {
            window.series.resize(index + 1, DbSlot::default());
        }
        let (io, cpu) = (pressure_total("io"), pressure_total("cpu"));
        let mut moment = Moment {
            at_s: at.saturating_duration_since(start).as_secs_f64(),
            wall_us: at.saturating_duration_since(last.0).as_micros() as u64,
            io_stall_us: io.zip(last.1).map_or(0, |(a, b)| a.saturating_sub(b)),
            dirty_writeback_kb: dirty_writeback_kb(),
            ..Moment::default()
        };
        let slot = &mut window.series[index];
        slot.samples += 1;
        slot.wall_us += moment.wall_us;
        slot.io_stall_us += moment.io_stall_us;
        slot.cpu_stall_us += cpu.zip(last.2).map_or(0, |(a, b)| a.saturating_sub(b));
        last = (at, io, cpu);
        if measured {
            window.samples += 1;
            window.connections += rows.len() as u64;
        }
        for row in rows {
            let state: String = row.try_get(0)?;
            let wait_type: String = row.try_get(1)?;
            let wait: String = row.try_get(2)?;
            if state == "active" {
                slot.active += 1;
                moment.active += 1;
                let on_wal = matches!(
                    (wait_type.as_str(), wait.as_str()),
                    ("IO", "WALSync" | "WALWrite") | ("LWLock", "WALWrite")
                );
                slot.wal += u64::from(on_wal);
                moment.wal += u64::from(on_wal);
            }
            if !measured {
                continue;
            }
            *window
                .states
                .entry(state_class(&state, &wait_type, &wait))
                .or_default() += 1;
            if state == "active" {
                let query: String = row.try_get(3)?;
                *window.statements.entry(statement_key(&query)).or_default() += 1;
            }
        }
        window.moments.push(moment);
    }
    let Some((counters0, ticks0, pressure0)) = opened else {
        return Ok(());
    };
    let wall_us = from.elapsed().as_micros().max(1) as f64;
    let counters1 = db_counters(&client).await?;
    let ticks1 = db_ticks(&client).await?;
    let pressure1 = (pressure_total("io"), pressure_total("cpu"));
    window.commits = counters1.0 - counters0.0;
    window.rollbacks = counters1.1 - counters0.1;
    window.wal_syncs = counters1.2.zip(counters0.2).map(|(a, b)| a - b);
    window.wal_bytes = counters1.3.zip(counters0.3).map(|(a, b)| a - b);
    if let (Some(io1), Some(io0), Some(cpu1), Some(cpu0)) =
        (pressure1.0, pressure0.0, pressure1.1, pressure0.1)
    {
        window.pressure = Some((
            io1.saturating_sub(io0) as f64 / wall_us,
            cpu1.saturating_sub(cpu0) as f64 / wall_us,
        ));
    }
    if let (Some(before), Some(after)) = (ticks0, ticks1) {
        window.ticks_complete = true;
        for (pid, (kind, ticks)) in after {
            let earlier = before.get(&pid).map_or(0, |(_, t)| *t);
            *window.ticks.entry(kind).or_default() += ticks.saturating_sub(earlier);
        }
    }
    Ok(())
}

/// The database after the run.
#[derive(Debug, Default)]
struct DbAfter {
    sessions: i64,
    open: i64,
    on_reservation: i64,
    reconciled: i64,
    never_seen: i64,
    decisions: i64,
    reservations: Vec<(String, i64)>,
}

async fn db_after(url: &str) -> anyhow::Result<DbAfter> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to read the tables")?;
    let task = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*),
                    count(*) FILTER (WHERE exited_at IS NULL),
                    count(*) FILTER (WHERE reservation_id IS NOT NULL),
                    count(*) FILTER (WHERE sensed_spot IS NOT NULL AND sensed_spot <> assigned_spot),
                    count(*) FILTER (WHERE sensed_spot IS NULL)
             FROM parking_sessions",
            &[],
        )
        .await?;
    let mut after = DbAfter {
        sessions: row.try_get(0)?,
        open: row.try_get(1)?,
        on_reservation: row.try_get(2)?,
        reconciled: row.try_get(3)?,
        never_seen: row.try_get(4)?,
        ..DbAfter::default()
    };
    after.decisions = client
        .query_one("SELECT count(*) FROM gate_decisions", &[])
        .await?
        .try_get(0)?;
    for row in client
        .query(
            "SELECT state, count(*) FROM reservations GROUP BY state ORDER BY state",
            &[],
        )
        .await?
    {
        after.reservations.push((row.try_get(0)?, row.try_get(1)?));
    }
    drop(client);
    let _ = task.await;
    Ok(after)
}

/// The gates' connections.
#[derive(Debug, Default, Clone, Copy)]
struct GateConns {
    connacks: u64,
    errors: u64,
    aborted: usize,
}

/// Everything the report needs.
#[derive(Debug)]
struct Results {
    setup_s: f64,
    stats: Stats,
    plan: Plan,
    cpu: CpuUsage,
    load_at_end: String,
    server: (ServerSnap, ServerSnap),
    db: Option<DbWindow>,
    after: Option<DbAfter>,
    occupancy: Occupancy,
    fleet: Option<FleetReport>,
    conns: GateConns,
    entry_gates: usize,
    exit_gates: usize,
    probe: bool,
    drivers: usize,
    vehicles: usize,
    /// fdatasync of 8 KiB in the run's temporary directory, before the run.
    disk: Option<Summary>,
    /// Whether that directory is on the device of PostgreSQL's data directory.
    same_device: Option<bool>,
    /// The `sync` before the load: the machine's dirty + writeback KiB before it, how long it
    /// took, whether it ran.
    sync: (Option<(u64, u64)>, Duration, bool),
}

/// fdatasync of 100 appended 8 KiB blocks in `dir` (µs).
fn disk_probe(dir: &std::path::Path) -> Option<Summary> {
    use std::io::Write as _;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).ok()?;
    let block = vec![0u8; 8192];
    let mut h = Histogram::new();
    for _ in 0..100 {
        let t = Instant::now();
        file.write_all(&block).ok()?;
        file.sync_data().ok()?;
        h.record(t.elapsed().as_micros() as u64);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Some(h.summary())
}

/// Whether `dir` is on the device of the server's data directory (a local server, a role
/// allowed to read `data_directory`).
async fn same_device(url: &str, dir: &std::path::Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.ok()?;
    let task = tokio::spawn(connection);
    let data: Option<String> = match client.query_one("SHOW data_directory", &[]).await {
        Ok(row) => row.try_get(0).ok(),
        Err(_) => None,
    };
    drop(client);
    let _ = task.await;
    let data = std::fs::metadata(data?).ok()?.dev();
    Some(data == std::fs::metadata(dir).ok()?.dev())
}

/// The experiment: `synchronous_commit = off` for the bench database's new sessions.
async fn set_async_commit(url: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to set synchronous_commit")?;
    let task = tokio::spawn(connection);
    let name: String = client
        .query_one("SELECT current_database()", &[])
        .await?
        .try_get(0)?;
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET synchronous_commit = off",
            name.replace('"', "\"\"")
        ))
        .await?;
    drop(client);
    let _ = task.await;
    Ok(())
}

pub(crate) fn run(args: &GatesArgs) -> anyhow::Result<String> {
    if args.gates < 2 {
        bail!("--gates must be at least 2 (an entry and an exit)");
    }
    let entry_gates = args.entry_gates.unwrap_or(args.gates / 2);
    if entry_gates == 0 || entry_gates >= args.gates {
        bail!("--entry-gates must leave at least one entry and one exit gate");
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be above zero");
    }
    if !(0.0..1.0).contains(&args.jitter) {
        bail!("--jitter must be within [0, 1)");
    }
    let shares = [
        args.reserved_share,
        args.code_share,
        args.unknown_code_share,
        args.elsewhere_share,
    ];
    if shares.iter().any(|s| !(0.0..=1.0).contains(s))
        || args.reserved_share + args.unknown_code_share > 1.0
    {
        bail!("shares must be within 0..=1, reserved + unknown code at most 1");
    }
    if args.stay_max < args.stay_min || args.attempts == 0 || args.spots == 0 {
        bail!("--stay-max must be at least --stay-min, --attempts and --spots above zero");
    }
    if args.vehicles_per_driver > 20 {
        bail!("--vehicles-per-driver: parkd allows 20 vehicles per account");
    }
    let header = RunHeader::gather();
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let mut config = server::base_config(&dir.path().join("data"));
    config.demo.simulate = false;
    let lot_id = server::lot_id("bench-garage")?;
    let per_level = parkd_core::garage::DEMO_SPOTS_PER_LEVEL;
    let mut lot = parkd_core::garage::demo_garage(
        lot_id.clone(),
        args.spots.div_ceil(per_level).max(1),
        per_level,
    );
    lot.spots.truncate(args.spots as usize);

    let runtime = server::parkd_runtime(args.parkd_threads)?;
    let load = server::load_runtime(args.load_threads)?;
    let setup = runtime.block_on(StoreSetup::fresh(
        &mut config,
        Backend::Postgres,
        args.database_url.clone(),
        args.pool_size,
    ))?;
    let description = setup.description(&config);
    let disk = disk_probe(dir.path());
    let same = match setup.pg_url() {
        Some(url) => runtime.block_on(same_device(url, dir.path())),
        None => None,
    };
    let prepared = match (args.experiment_async_commit, setup.pg_url()) {
        (true, Some(url)) => runtime.block_on(set_async_commit(url)),
        _ => Ok(()),
    };
    let outcome =
        prepared.and_then(|()| measure(args, &config, &setup, &lot, entry_gates, &runtime, &load));
    let disposed = runtime.block_on(setup.dispose());
    load.shutdown_timeout(Duration::from_secs(5));
    runtime.shutdown_timeout(Duration::from_secs(5));
    let mut results = outcome?;
    disposed?;
    results.disk = disk;
    results.same_device = same;
    Ok(render(&header, args, &config, &description, &lot, &results))
}

fn measure(
    args: &GatesArgs,
    config: &parkd::config::ParkdConfig,
    setup: &StoreSetup,
    lot: &Lot,
    entry_gates: usize,
    runtime: &tokio::runtime::Runtime,
    load: &tokio::runtime::Runtime,
) -> anyhow::Result<Results> {
    let tag = drivers::run_tag();
    let mut seed_rng = Rng::new(args.seed ^ 0x6A7E_BE7C);
    let secret = format!(
        "gbench-{tag}-{:016x}{:016x}",
        seed_rng.next_u64() ^ std::process::id() as u64,
        Utc::now().timestamp_nanos_opt().unwrap_or(0).unsigned_abs()
    );
    let exit_gates = args.gates - entry_gates;
    let mut gate_ids: Vec<(GateId, Direction, bool)> = Vec::new();
    let parse_gate = |raw: String| GateId::parse(&raw).map_err(|e| anyhow!("gate id {raw}: {e}"));
    for i in 0..entry_gates {
        gate_ids.push((
            parse_gate(format!("in-{:02}", i + 1))?,
            Direction::Entry,
            false,
        ));
    }
    for i in 0..exit_gates {
        gate_ids.push((
            parse_gate(format!("out-{:02}", i + 1))?,
            Direction::Exit,
            false,
        ));
    }
    if !args.no_probe {
        gate_ids.push((parse_gate("probe".to_owned())?, Direction::Entry, true));
    }
    let all_gates: Vec<GateId> = gate_ids.iter().map(|(g, _, _)| g.clone()).collect();
    runtime.block_on(async {
        let store = parkd::app::open_store(config).await?;
        store.put_lot(lot).await.context("importing the lot")?;
        register_devices(&store, lot, &all_gates, &secret).await
    })?;
    let app = runtime
        .block_on(RunningApp::start(config.clone(), Mode::Serve))
        .context("starting parkd")?;
    let outcome = drive(args, &app, setup, lot, &gate_ids, (&tag, &secret), load);
    runtime.block_on(app.shutdown()).context("stopping parkd")?;
    let mut results = outcome?;
    results.entry_gates = entry_gates;
    results.exit_gates = exit_gates;
    results.after = match setup.pg_url() {
        Some(url) => match runtime.block_on(db_after(url)) {
            Ok(after) => Some(after),
            Err(error) => {
                eprintln!("reading the tables after the run failed: {error:#}");
                None
            }
        },
        None => None,
    };
    Ok(results)
}

fn drive(
    args: &GatesArgs,
    app: &RunningApp,
    setup: &StoreSetup,
    lot: &Lot,
    gate_ids: &[(GateId, Direction, bool)],
    (tag, secret): (&str, &str),
    load: &tokio::runtime::Runtime,
) -> anyhow::Result<Results> {
    let api = app.http_addr();
    let mqtt = app
        .mqtt_addr()
        .ok_or_else(|| anyhow!("parkd has no embedded broker"))?;
    let registry = app.registry().clone();
    let engine = app.engine();
    eprintln!(
        "parkd up (HTTP {api}, MQTT {mqtt}, PostgreSQL); sensors of {} spots connecting",
        lot.spots.len()
    );
    let setup_started = Instant::now();

    // The sensors: the simulator's fleet, driven by the cars.
    let (link, feed) = parkd_sim::sensor_link();
    let mut fleet = FleetConfig::new(
        MqttEndpoint::new(mqtt.ip().to_string(), mqtt.port()),
        1,
        lot.spots.len() as u32,
    );
    fleet.lots = vec![lot.id.clone()];
    fleet.spots_per_level = parkd_core::garage::DEMO_SPOTS_PER_LEVEL;
    fleet.seed = args.seed;
    let sensor_secret = secret.to_owned();
    fleet.credentials = Some(Credentials::from_fn(move |client_id| {
        Some(Login::new(client_id, sensor_secret.clone()))
    }));
    let fleet_stop = CancellationToken::new();
    let fleet_task = load.spawn(parkd_sim::run_fleet_driven(fleet, feed, fleet_stop.clone()));
    let spots = lot.spots.len() as i64;
    let sensors_ready = load.block_on(async {
        if !link.wait_ready(Duration::from_secs(60)).await {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while server::known_spots(&engine, &lot.id) < spots && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server::known_spots(&engine, &lot.id) == spots
    });
    if !sensors_ready {
        fleet_stop.cancel();
        bail!(
            "the sensors did not all report within the timeouts ({} of {spots} spots known)",
            server::known_spots(&engine, &lot.id)
        );
    }

    // Drivers and their vehicles, through the API.
    let mix = parkd_sim::gates::default_vehicle_mix();
    let enrolled = load.block_on(enrol(
        api,
        tag,
        args.drivers,
        args.vehicles_per_driver,
        &mix,
    ));
    let (tokens, slots) = match enrolled {
        Ok(enrolled) => enrolled,
        Err(error) => {
            fleet_stop.cancel();
            return Err(error.context("enrolling the drivers"));
        }
    };
    let vehicles = slots.len();

    // The world the gates, cars and the booking office share; its plan is fixed once every
    // gate is connected.
    let far = Instant::now() + Duration::from_secs(86_400);
    let world = Arc::new(World {
        lot: lot.id.clone(),
        plan: OnceLock::new(),
        placeholder: Plan {
            start: far,
            warm_end: far,
            end: far,
        },
        params: Params {
            mean_gap_s: 1.0 / args.rate,
            jitter: args.jitter,
            reserved_share: args.reserved_share,
            code_share: args.code_share,
            unknown_code_share: args.unknown_code_share,
            elsewhere_share: args.elsewhere_share,
            stay_s: (args.stay_min.as_secs_f64(), args.stay_max.as_secs_f64()),
            booked_ahead: args.booked_ahead,
            request_timeout: args.request_timeout,
            attempts: args.attempts,
            mix,
        },
        tag: tag.to_owned(),
        api,
        view: Mutex::new(LotView::new(lot)),
        sensors: link,
        exits: Mutex::new(VecDeque::new()),
        ready: Mutex::new(VecDeque::new()),
        pool: Mutex::new(slots),
        tokens,
        stats: Mutex::new(Stats::default()),
        plates: AtomicU64::new(0),
        stop: CancellationToken::new(),
        tasks: TaskTracker::new(),
    });

    // The gates.
    let poll_stop = CancellationToken::new();
    let mut gates = Vec::new();
    let mut polls = tokio::task::JoinSet::new();
    for (id, direction, probe) in gate_ids {
        let (gate, eventloop) = gate_client(&lot.id, id.clone(), *direction, *probe, mqtt, secret)?;
        polls.spawn_on(
            poll_gate(world.clone(), gate.clone(), eventloop, poll_stop.clone()),
            load.handle(),
        );
        gates.push(gate);
    }
    let connected = load.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !gates.iter().all(|g| g.subscribed.load(Ordering::Acquire)) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    });
    if !connected {
        let up = gates
            .iter()
            .filter(|g| g.subscribed.load(Ordering::Acquire))
            .count();
        poll_stop.cancel();
        fleet_stop.cancel();
        bail!(
            "only {up} of {} gates connected and subscribed within 20 s",
            gates.len()
        );
    }

    // The fresh database's files (the template's copy, the migrations, the lot) sit in the
    // page cache; the kernel writes dirty pages back once they are 30 s old, which would land
    // in the window and hold up every WAL flush behind it. Write them now.
    let dirty_before = dirty_writeback_kb();
    let synced = Instant::now();
    let sync_ok = std::process::Command::new("sync")
        .status()
        .is_ok_and(|status| status.success());
    let sync = (dirty_before, synced.elapsed(), sync_ok);

    // The plan; the booking office books ahead before the first car.
    let start = Instant::now() + Duration::from_secs(3);
    let plan = Plan {
        start,
        warm_end: start + args.warmup,
        end: start + args.warmup + args.duration,
    };
    let _ = world.plan.set(plan);
    world.tasks.spawn_on(office(world.clone()), load.handle());
    let setup_s = setup_started.elapsed().as_secs_f64();
    eprintln!(
        "{spots} sensors up, {} drivers with {vehicles} vehicles, {} gates subscribed in \
         {setup_s:.1} s; {:.0} s warm-up + {:.0} s measured",
        world.tokens.len(),
        gates.len(),
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64()
    );
    // Under bench/prio.sh (autogroup nice below 0), PostgreSQL gets the same priority.
    let lift = drivers::autogroup_nice(0).filter(|nice| *nice < 0 && !args.leave_postgres_priority);
    let monitor = setup
        .pg_url()
        .map(|url| db_monitor(url.to_owned(), plan.start, plan.warm_end, plan.end, lift));
    let repeat_stop = CancellationToken::new();
    let repeater = load.spawn(repeats(world.clone(), gates.clone(), repeat_stop.clone()));
    let occupancy = load.spawn(sample_occupancy(engine.clone(), lot.id.clone(), plan));
    let schedules: Vec<_> = gates
        .iter()
        .enumerate()
        .map(|(i, gate)| {
            let seed = args.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            load.spawn(schedule(world.clone(), gate.clone(), seed))
        })
        .collect();

    let (cpu, server, load_at_end) = load.block_on(async {
        tokio::time::sleep_until(plan.warm_end.into()).await;
        let cpu0 = CpuSnapshot::take();
        let server0 = server_snap(&registry);
        tokio::time::sleep_until(plan.end.into()).await;
        let cpu1 = CpuSnapshot::take();
        let server1 = server_snap(&registry);
        let load_at_end = std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".to_owned());
        (cpu0.usage_until(&cpu1), (server0, server1), load_at_end)
    });
    eprintln!("load stopped; waiting for the last answers");
    let (occupancy, fleet_report, conns) = load.block_on(async {
        for schedule in schedules {
            let _ = schedule.await;
        }
        // Answers to the last requests, repeats included.
        let settle = args.request_timeout * args.attempts + Duration::from_secs(1);
        let deadline = Instant::now() + settle;
        while gates.iter().any(|g| !lock(&g.pending).is_empty()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        repeat_stop.cancel();
        let _ = repeater.await;
        let mut left = 0u64;
        for gate in &gates {
            let waiting: Vec<(String, Pending)> = lock(&gate.pending).drain().collect();
            for (id, pending) in waiting {
                left += u64::from(pending.intent != Intent::Probe);
                lock(&world.stats).unanswered(&plan, &gate.id, &id, &pending);
            }
        }
        lock(&world.stats).left_waiting = left;
        world.stop.cancel();
        world.tasks.close();
        world.tasks.wait().await;
        let occupancy = occupancy.await.unwrap_or_default();
        // The gates say goodbye, then the sensors.
        poll_stop.cancel();
        for gate in &gates {
            let offline = DeviceStatus {
                online: false,
                ts: Some(now_ms()),
            }
            .encode();
            let _ =
                gate.client
                    .try_publish(gate.status_topic.clone(), QoS::AtLeastOnce, true, offline);
            let _ = gate.client.try_disconnect();
        }
        let drained = tokio::time::timeout(Duration::from_secs(3), async {
            while polls.join_next().await.is_some() {}
        })
        .await;
        let mut conns = GateConns::default();
        if drained.is_err() {
            conns.aborted = polls.len();
            polls.abort_all();
            while polls.join_next().await.is_some() {}
        }
        for gate in &gates {
            conns.connacks += gate.connacks.load(Ordering::Relaxed);
            conns.errors += gate.errors.load(Ordering::Relaxed);
        }
        fleet_stop.cancel();
        let fleet_report = match fleet_task.await {
            Ok(Ok(report)) => Some(report),
            Ok(Err(error)) => {
                eprintln!("the sensor fleet failed: {error}");
                None
            }
            Err(error) => {
                eprintln!("the sensor fleet task failed: {error}");
                None
            }
        };
        (occupancy, fleet_report, conns)
    });
    let db = monitor.map(|m| m.join().unwrap_or_default());
    let stats = std::mem::take(&mut *lock(&world.stats));
    let all = stats.all.summary();
    eprintln!(
        "measured: {} requests answered in the window, p50 {:.2} ms, p99 {:.2} ms, max {:.2} \
         ms; {} unanswered",
        all.count,
        all.p50 / 1000.0,
        all.p99 / 1000.0,
        all.max / 1000.0,
        stats.unanswered_all
    );
    Ok(Results {
        setup_s,
        stats,
        plan,
        cpu,
        load_at_end,
        server,
        db,
        after: None,
        occupancy,
        fleet: fleet_report,
        conns,
        entry_gates: 0,
        exit_gates: 0,
        probe: !args.no_probe,
        drivers: world.tokens.len(),
        vehicles,
        disk: None,
        same_device: None,
        sync,
    })
}

fn ms2(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

fn mix_text(mix: &[(VehicleType, f64)]) -> String {
    mix.iter()
        .map(|(vehicle, weight)| format!("{:.0} % {vehicle}", weight * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

fn counts_text(counts: &[(String, u64)]) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k} {}", thousands(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn reasons_text<K: std::fmt::Display>(counts: &BTreeMap<K, u64>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k} {}", thousands(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The decision-time histogram of the window: (count, mean µs, [(upper bound ms, share)]).
fn decision_window(before: &ServerSnap, after: &ServerSnap) -> (u64, f64, Vec<(f64, f64)>) {
    let (c0, s0, b0) = &before.decisions;
    let (c1, s1, b1) = &after.decisions;
    let count = c1.saturating_sub(*c0);
    let mean_us = if count > 0 {
        (s1 - s0) / count as f64 * 1e6
    } else {
        0.0
    };
    let shares = b1
        .iter()
        .map(|(upper, n1)| {
            let n0 = b0
                .iter()
                .find(|(u, _)| (u - upper).abs() < 1e-12)
                .map_or(0, |(_, n)| *n);
            (
                upper * 1000.0,
                n1.saturating_sub(n0) as f64 / count.max(1) as f64,
            )
        })
        .collect();
    (count, mean_us, shares)
}

fn render(
    header: &RunHeader,
    args: &GatesArgs,
    config: &parkd::config::ParkdConfig,
    store: &str,
    lot: &Lot,
    r: &Results,
) -> String {
    let s = &r.stats;
    let window_s = r.plan.window_s();
    let all = s.all.summary();
    let gates = r.entry_gates + r.exit_gates;
    let offered = s.sent_window as f64 / window_s;
    let on_shape = gates == TARGET_GATES && (args.rate - TARGET_RATE).abs() < 1e-9;
    let (s0, s1) = &r.server;
    let received = map_delta(&s0.received, &s1.received);
    let sensor_msgs: u64 = received.iter().map(|(_, n)| n).sum();
    let sensor_rate = sensor_msgs as f64 / window_s;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# parkd gate latency benchmark ({gates} gates, PostgreSQL)\n"
    );
    out.push_str(&header.markdown());
    let _ = writeln!(
        out,
        "- Load average at the end of the measured window: {} (1, 5, 15 min)",
        r.load_at_end
    );
    let _ = writeln!(out, "\nIssue target: \"{ISSUE_TARGET}\"");

    let _ = writeln!(out, "\n## Setup\n");
    let _ = writeln!(
        out,
        "- parkd in this process (`RunningApp`, **serve mode**: anonymous MQTT off, every device \
         logs in with its own secret and the embedded broker checks each publish against the \
         device's grant) on a tokio runtime of {} worker threads (`parkd`). Store: {store}. \
         parkd's defaults otherwise: `gates.queue_capacity` {}, `gates.arrival_timeout_min` {}, \
         `live.debounce_ms` {}, `reservations.sweep_every_s` {}.",
        args.parkd_threads,
        config.gates.queue_capacity,
        config.gates.arrival_timeout_min,
        config.live.debounce_ms,
        config.reservations.sweep_every_s
    );
    if args.experiment_async_commit {
        let _ = writeln!(
            out,
            "- **EXPERIMENT, not parkd as shipped: `synchronous_commit = off` for the bench \
             database** (`--experiment-async-commit`; a commit returns before its WAL is on \
             disk, and the last ~0.6 s of commits can be lost in a crash). The server settings \
             above were read before it was set."
        );
    }
    if let Some(disk) = &r.disk {
        let _ = writeln!(
            out,
            "- Disk: `fdatasync` of an 8 KiB write in this run's temporary directory, 100 times \
             before the run: p50 {} ms, p99 {} ms, max {} ms; that directory is {} PostgreSQL's \
             data directory. A commit waits for one such flush (`synchronous_commit=on`), \
             shared by the commits that queue behind it.",
            ms2(disk.p50),
            ms2(disk.p99),
            ms2(disk.max),
            match r.same_device {
                Some(true) => "on the same device as",
                Some(false) => "on another device than",
                None => "on a device unknown to be",
            }
        );
    }
    let _ = writeln!(
        out,
        "- Lot `{}`: `demo_garage` cut to {} spots on {} levels ({}), imported before parkd \
         starts, with one registered sensor per spot and every gate registered with a secret.",
        lot.id,
        lot.spots.len(),
        lot.levels.len(),
        crate::report::kind_counts(lot)
    );
    let _ = writeln!(
        out,
        "- **Gates: {} entry (`in-01`…) + {} exit (`out-01`…) = {gates}**, each its own MQTT \
         connection (rumqttc, `TCP_NODELAY`) logged in as its device `{}-g-{{gate}}`, with a \
         retained online status and will, subscribed (QoS 0) to its own `command` topic only, \
         publishing requests at QoS 1, in this process on a runtime of {} workers (`loadgen`). \
         Every gap between two requests of a gate is uniform within ±{:.0} % of {:.2} s, from a \
         random phase. Why half and half: every car that enters leaves once, so a garage's exit \
         lanes pass as many cars as its entry lanes over time, and the issue gives one rate for \
         all 50. A 300-spot garage has one or two lanes each way (the demo has 2 + 2); {gates} \
         gates at {} request/s ({} requests an hour) are platform load, about {:.0} times the \
         customer's average gate traffic (~2,250 cars a day, 4,500 passes, 0.05/s).",
        r.entry_gates,
        r.exit_gates,
        lot.id,
        args.load_threads,
        args.jitter * 100.0,
        1.0 / args.rate,
        args.rate,
        thousands((gates as f64 * args.rate * 3600.0).round() as u64),
        gates as f64 * args.rate / (4_500.0 / 86_400.0)
    );
    let _ = writeln!(
        out,
        "- What they ask (the documented payload, `parkd_core::gate::GateRequest`: \
         `request_id`, `direction`, `plate`, `plate_confidence` 0.86–0.99, `code`, `vehicle`, \
         `ts`). Entry: {:.0} % a code nobody booked; {:.0} % a driver on a reservation booked \
         through the REST API ({:.0} % of them show its code, the others are recognised by their \
         plate); the rest walk-ins with a fresh plate and the simulator's vehicle mix ({}). \
         Exit: the next car waiting at the exits, with its plate (and its code if it showed one \
         at the entry); if no car is waiting, a plate the platform never saw enter (a car that \
         came in behind another), answered `no_session`. Refusals such as `full` come from the \
         lot itself.",
        args.unknown_code_share * 100.0,
        args.reserved_share * 100.0,
        args.code_share * 100.0,
        mix_text(&parkd_sim::gates::default_vehicle_mix())
    );
    let _ = writeln!(
        out,
        "- Cars: an admitted car drives {}–{} s to its spot, parks there (or, {:.0} % of them \
         and any car whose spot is taken, in another free spot that fits it, on the same level \
         if possible, so the platform reconciles the session), stays {}–{} s (uniform: time is \
         compressed so that the lot turns over and never fills for good), leaves, drives \
         {}–{} s to the exits and queues there. Nothing is accelerated on the platform's side: \
         holds, arrival confirmation and reconciliation run as in production.",
        DRIVE_IN_S.0,
        DRIVE_IN_S.1,
        args.elsewhere_share * 100.0,
        args.stay_min.as_secs_f64(),
        args.stay_max.as_secs_f64(),
        DRIVE_OUT_S.0,
        DRIVE_OUT_S.1
    );
    let _ = writeln!(
        out,
        "- **Sensors**: the garage's {} sensors are `parkd-sim`'s fleet as `parkd demo` runs it \
         with its gates (`run_fleet_driven`): one MQTT connection and secret per sensor, \
         retained status, `state` at QoS 1 on every change, a heartbeat every 60 s. A spot \
         changes only when a car of this benchmark parks in it or leaves it, so every spot has \
         one source of truth and parkd's arrival watcher and reconciliation see real arrivals. \
         **The normal rate**: `parkd demo` runs these {} sensors on the customer's demand at \
         60x (about 2,400 arrivals per simulated day, 24 real minutes), i.e. ~{:.1} changes/s \
         plus {:.0} heartbeats/s ≈ **{:.1} messages/s**. Here the changes follow the gates' \
         cars instead: **{:.1} sensor messages/s** reached ingest in the measured window, \
         {:.1}x the demo's rate (the issue's gate traffic makes more arrivals than the \
         customer's).",
        lot.spots.len(),
        lot.spots.len(),
        2.0 * 2_400.0 / 1_440.0,
        lot.spots.len() as f64 / 60.0,
        DEMO_SENSOR_RATE,
        sensor_rate,
        sensor_rate / DEMO_SENSOR_RATE
    );
    let _ = writeln!(
        out,
        "- Reservations: {} driver accounts made through the API (register, login) with {} \
         vehicles (the same mix); a booking office keeps {} reservations booked ahead \
         (`POST /api/v1/reservations`, entry {} s ahead, one hour long) for the next drivers who \
         come on one; a vehicle is booked again after its car has left.",
        r.drivers, r.vehicles, args.booked_ahead, BOOK_LEAD_S
    );
    if r.probe {
        let _ = writeln!(
            out,
            "- Probe: one more registered gate (`probe`) sends a request with an invalid \
             `direction` every second; parkd refuses it as `bad_request` after decoding, without \
             the database. Its latency is the broker, queue and runtime part of a decision under \
             the same load. It is not in the target's figures."
        );
    }
    let _ = writeln!(
        out,
        "- Latency = from the instant before the gate hands its request to its MQTT client to \
         the instant the gate's event loop reads the command with the same `request_id` (both \
         `Instant`s of this process). Without an answer in {} s the gate publishes the same \
         payload again (same id), up to {} attempts, as a real gate does; the latency counts \
         from the first publish. Requests first published in the measured window count \
         (histograms with < 0.8 % bucket error, max exact). {} s warm-up (the lot fills), then \
         {} s measured; after the last request, up to {:.0} s for the last answers. \
         **Unanswered** = no answer after every attempt, or none when the gates stopped.",
        args.request_timeout.as_secs_f64(),
        args.attempts,
        args.warmup.as_secs_f64(),
        window_s,
        (args.request_timeout * args.attempts).as_secs_f64() + 1.0
    );
    let (dirty, took, synced) = r.sync;
    let _ = writeln!(
        out,
        "- Setup before the load (sensors up and every spot known, drivers and vehicles, gates \
         connected): {:.1} s. Then {}: the fresh database's files (the template's copy, the \
         migrations) sit dirty in the page cache, and the kernel writes them back once they \
         are 30 s old (`vm.dirty_expire_centisecs`), which lands in the window and holds up \
         every WAL flush queued behind it (a stall of 0.38 to 0.64 s in each of the four runs \
         made before this step).\n",
        r.setup_s,
        if synced {
            format!(
                "`sync` ({} dirty or under writeback machine-wide before it; {:.2} s)",
                dirty.map_or("? MB".to_owned(), |(d, w)| format!(
                    "{:.0} MB",
                    (d + w) as f64 / 1024.0
                )),
                took.as_secs_f64()
            )
        } else {
            "`sync` was attempted and FAILED".to_owned()
        }
    );

    // Summary.
    let _ = writeln!(out, "## Summary\n");
    if args.experiment_async_commit {
        let _ = writeln!(
            out,
            "**EXPERIMENT** (`--experiment-async-commit`): PostgreSQL does not wait for the \
             disk at commit in this run; these are not the figures of parkd as shipped.\n"
        );
    }
    let shape_note = if on_shape {
        String::new()
    } else {
        format!(
            " (this run: {gates} gates at {} request/s; the target is stated for 50 at 1)",
            args.rate
        )
    };
    let _ = writeln!(out, "| Target | Measured | Result |");
    let _ = writeln!(out, "|---|---|---|");
    let _ = writeln!(
        out,
        "| p99 publish → command < {P99_TARGET_MS:.0} ms, every request of the {gates} \
         gates{shape_note} | **{} ms** (p50 {} ms, p90 {} ms, p99.9 {} ms, max {} ms; {} \
         answers) | {} |",
        ms2(all.p99),
        ms2(all.p50),
        ms2(all.p90),
        ms2(all.p999),
        ms2(all.max),
        thousands(all.count),
        verdict(
            all.count > 0
                && all.p99 / 1000.0 < P99_TARGET_MS
                && on_shape
                && !args.experiment_async_commit
        )
    );
    let _ = writeln!(
        out,
        "| every request answered | **{}** unanswered of {} requests in the window ({} of {} \
         over the whole run; {} answered only after a repeat) | {} |",
        s.unanswered_window,
        thousands(s.sent_window),
        s.unanswered_all,
        thousands(s.sent_all),
        s.answered_after_repeat,
        verdict(s.unanswered_all == 0 && s.sent_window > 0)
    );
    let wanted = gates as f64 * args.rate;
    let _ = writeln!(
        out,
        "| load: {gates} gates x {} request/s = {} requests/s | **{:.1} requests/s** first \
         published in the window ({} in {:.0} s) | {} |",
        args.rate,
        wanted,
        offered,
        thousands(s.sent_window),
        window_s,
        verdict((offered - wanted).abs() <= 0.05 * wanted)
    );
    let _ = writeln!(
        out,
        "| the sensor fleet running at least at its normal rate (the demo's ≈ {:.1} \
         messages/s) | **{:.1} messages/s** into ingest ({}), every spot's sensor connected | {} |",
        DEMO_SENSOR_RATE,
        sensor_rate,
        counts_text(&received),
        verdict(sensor_rate >= DEMO_SENSOR_RATE)
    );
    for class in CLASSES {
        if let Some(h) = s.classes.get(class) {
            let k = h.summary();
            let _ = writeln!(
                out,
                "| per kind: {class}, p99 < {P99_TARGET_MS:.0} ms | {} ms (p50 {} ms, max {} ms; \
                 {} answers) | {} |",
                ms2(k.p99),
                ms2(k.p50),
                ms2(k.max),
                thousands(k.count),
                verdict(k.p99 / 1000.0 < P99_TARGET_MS)
            );
        }
    }

    let parkd_cores = r.cpu.process_cores;
    let pg_cores =
        r.db.as_ref()
            .filter(|db| db.ticks_complete)
            .map(|db| db.cores(window_s));
    let _ = writeln!(
        out,
        "\nThe machine was shared during the window: {} of its {} CPUs busy in all (this \
         process {:.2}{}); some task of the machine waiting for a CPU {} of the time and \
         stalled on IO {} (`/proc/pressure`); load average {} at the start, {} at the end. \
         This benchmark ran under `bench/prio.sh` only if the header says so.",
        r.cpu
            .machine_cores
            .map_or("?".to_owned(), |m| format!("{m:.2}")),
        header.cpus,
        parkd_cores,
        pg_cores.map_or(String::new(), |c| format!(", PostgreSQL {c:.2}")),
        r.db.as_ref()
            .and_then(|db| db.pressure)
            .map_or("?".to_owned(), |(_, cpu)| format!("{:.0} %", cpu * 100.0)),
        r.db.as_ref()
            .and_then(|db| db.pressure)
            .map_or("?".to_owned(), |(io, _)| format!("{:.1} %", io * 100.0)),
        header.load_average,
        r.load_at_end
    );

    // Latency by kind.
    let _ = writeln!(
        out,
        "\n## Latency by kind (requests first published in the window)\n"
    );
    let _ = writeln!(
        out,
        "| Kind | Answers | Per s | p50 / p90 / p99 / p99.9 / max (ms) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---|");
    let _ = writeln!(
        out,
        "| **all** | {} | {:.1} | {} |",
        thousands(all.count),
        all.count as f64 / window_s,
        all.ms_row(2)
    );
    for class in CLASSES {
        if let Some(h) = s.classes.get(class) {
            let k = h.summary();
            let _ = writeln!(
                out,
                "| {class} | {} | {:.1} | {} |",
                thousands(k.count),
                k.count as f64 / window_s,
                k.ms_row(2)
            );
        }
    }
    if r.probe {
        let p = s.probe.summary();
        let _ = writeln!(
            out,
            "| probe (`bad_request`, no database; not in \"all\") | {} | {:.1} | {} |",
            thousands(p.count),
            p.count as f64 / window_s,
            p.ms_row(2)
        );
    }
    let _ = writeln!(
        out,
        "\n\"entry walk-in\", \"entry reserved\" and \"exit\" are the `open` answers \
         (`walk_in`, `reservation`, `nothing_due`); \"deny\" is every refusal, whatever was \
         asked."
    );

    let _ = writeln!(out, "\n### By answer\n");
    let _ = writeln!(
        out,
        "| Direction | Action | Reason | Answers | p50 / p90 / p99 / p99.9 / max (ms) |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---|");
    for ((direction, action, reason), h) in &s.reasons {
        let k = h.summary();
        let _ = writeln!(
            out,
            "| {direction} | {action} | `{reason}` | {} | {} |",
            thousands(k.count),
            k.ms_row(2)
        );
    }

    let _ = writeln!(out, "\n### What the gates asked, and what they were told\n");
    let _ = writeln!(out, "| Asked | Sent in the window | Answers by reason |");
    let _ = writeln!(out, "|---|---:|---|");
    for (intent, sent) in &s.sent_by_intent {
        let answers: BTreeMap<&str, u64> = s
            .intents
            .iter()
            .filter(|((i, _), _)| i == intent)
            .map(|((_, reason), n)| (*reason, *n))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            intent.name(),
            thousands(*sent),
            reasons_text(&answers)
        );
    }
    if s.reserved_missing > 0 {
        let _ = writeln!(
            out,
            "\n{} entries drawn as a reserved driver found no reservation booked ahead and came \
             as walk-ins.",
            thousands(s.reserved_missing)
        );
    }

    let _ = writeln!(out, "\n### Over time\n");
    let _ = writeln!(
        out,
        "Every answered request of the run by when it was first published ({} s slots; the \
         first {:.0} s are the warm-up, with the lot filling):\n",
        SLOT_S,
        args.warmup.as_secs_f64()
    );
    let series = r.db.as_ref().map_or(&[][..], |db| db.series.as_slice());
    let _ = writeln!(
        out,
        "Beside each slot, from the monitor (every 100 ms): parkd's connections active in \
         PostgreSQL and, of those, waiting for the WAL (`IO: WALSync`/`WALWrite`, \
         `LWLock: WALWrite`), on average; and the share of the slot with some task of the \
         machine stalled on IO or waiting for a CPU (`/proc/pressure`, every process of the \
         machine, other users' included).\n"
    );
    let _ = writeln!(
        out,
        "| Seconds | Answers | p50 (ms) | p99 (ms) | max (ms) | Active | On the WAL | IO stall | \
         CPU wait |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, h) in s.slots.iter().enumerate() {
        let k = h.summary();
        if k.count == 0 {
            continue;
        }
        let from = i as f64 * SLOT_S;
        let warm = if from + SLOT_S <= args.warmup.as_secs_f64() {
            " (warm-up)"
        } else {
            ""
        };
        let db = series.get(i).filter(|d| d.samples > 0);
        let per_sample = |n: u64| {
            db.map_or("-".to_owned(), |d| {
                format!("{:.2}", n as f64 / d.samples as f64)
            })
        };
        let share = |us: u64| {
            db.filter(|d| d.wall_us > 0).map_or("-".to_owned(), |d| {
                format!("{:.0} %", 100.0 * us as f64 / d.wall_us as f64)
            })
        };
        let _ = writeln!(
            out,
            "| {from:.0}–{:.0}{warm} | {} | {} | {} | {} | {} | {} | {} | {} |",
            from + SLOT_S,
            thousands(k.count),
            ms2(k.p50),
            ms2(k.p99),
            ms2(k.max),
            per_sample(db.map_or(0, |d| d.active)),
            per_sample(db.map_or(0, |d| d.wal)),
            share(db.map_or(0, |d| d.io_stall_us)),
            share(db.map_or(0, |d| d.cpu_stall_us))
        );
    }

    let mut moments: Vec<Moment> = r.db.as_ref().map_or_else(Vec::new, |db| db.moments.clone());
    moments.sort_by(|a, b| {
        (b.wal, b.io_stall_us)
            .cmp(&(a.wal, a.io_stall_us))
            .then(a.at_s.total_cmp(&b.at_s))
    });
    moments.truncate(8);
    moments.retain(|m| m.wal > 0);
    if !moments.is_empty() {
        let _ = writeln!(
            out,
            "\nThe monitor's samples with the most of parkd's connections waiting for the WAL \
             (whole run; IO stall = share of the 100 ms before the sample with some task of the \
             machine stalled on IO; dirty and writeback = the machine's page cache waiting to be \
             written, every process's):\n"
        );
        let _ = writeln!(
            out,
            "| Seconds from the start | Active | On the WAL | IO stall | Dirty + writeback (MB) |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|");
        for m in &moments {
            let _ = writeln!(
                out,
                "| {:.1} | {} | {} | {:.0} % | {} |",
                m.at_s,
                m.active,
                m.wal,
                100.0 * m.io_stall_us as f64 / m.wall_us.max(1) as f64,
                m.dirty_writeback_kb
                    .map_or("?".to_owned(), |(d, w)| format!(
                        "{:.0} + {:.0}",
                        d as f64 / 1024.0,
                        w as f64 / 1024.0
                    ))
            );
        }
    }

    let _ = writeln!(out, "\n### The slowest requests of the window\n");
    let _ = writeln!(
        out,
        "| Latency (ms) | First published (s from the start) | Gate | Asked | Answer | Attempts |"
    );
    let _ = writeln!(out, "|---:|---:|---|---|---|---:|");
    for slow in &s.slowest {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {} | {} | `{}` | {} |",
            ms2(slow.us as f64),
            slow.at_s,
            slow.gate,
            slow.intent.name(),
            slow.reason,
            slow.attempts
        );
    }

    // Cars, sessions, sensors.
    let _ = writeln!(out, "\n## Cars, sessions and sensors (whole run)\n");
    let _ = writeln!(
        out,
        "- Cars admitted {}, parked {} ({} elsewhere than assigned, {} of them because their \
         spot was taken), found no spot {}; exits opened {}; cars that entered and were refused \
         at an exit: {} (expected none).",
        thousands(s.admitted),
        thousands(s.parked),
        thousands(s.parked_elsewhere),
        thousands(s.assigned_taken),
        thousands(s.found_no_spot),
        thousands(s.exits_opened),
        reasons_text(&s.exit_refused)
    );
    let _ = writeln!(
        out,
        "- Reservations booked {} (refused: {}; failed {}{}); drivers on a valid reservation \
         refused at the entry: {}; reservations cancelled after such a refusal: {}.",
        thousands(s.booked),
        reasons_text(&s.booking_refused),
        s.booking_failed,
        s.booking_first_error
            .as_deref()
            .map_or(String::new(), |e| format!(", first: {e}")),
        reasons_text(&s.reserved_refused),
        s.cancelled
    );
    let o = &r.occupancy;
    if o.samples > 0 {
        let n = o.samples as f64;
        let _ = writeln!(
            out,
            "- The lot in the measured window (parkd's live state, every 500 ms, {} samples): on \
             average {:.0} occupied, {:.0} held (cars on their way, reservations), {:.0} free, \
             {:.1} unknown; at least {} free, at most {} occupied + held.",
            o.samples,
            o.occupied as f64 / n,
            o.held as f64 / n,
            o.free as f64 / n,
            o.unknown as f64 / n,
            o.min_free.unwrap_or(0),
            o.max_taken
        );
    }
    if !o.held_drops.is_empty() {
        let drops: Vec<String> = o
            .held_drops
            .iter()
            .map(|(at, n)| format!("{at:.1} s ({n} spots)"))
            .collect();
        let _ = writeln!(
            out,
            "- Moments when {HELD_DROP} or more spots stopped being held within 100 ms (parkd's \
             reservation sweep recomputing the holds, every `reservations.sweep_every_s`), in \
             seconds from the start of the load: {}.",
            drops.join(", ")
        );
    }
    let arrivals = map_delta(&s0.arrivals, &s1.arrivals);
    let _ = writeln!(
        out,
        "- parkd's arrival watcher in the window (`parkd_gate_arrivals_total`): {}.",
        counts_text(&arrivals)
    );
    if let Some(after) = &r.after {
        let states: Vec<(String, u64)> = after
            .reservations
            .iter()
            .map(|(k, v)| (k.clone(), v.unsigned_abs()))
            .collect();
        let _ = writeln!(
            out,
            "- The tables after the run: {} parking sessions ({} still open, {} on a \
             reservation, {} reconciled to another spot than assigned, {} never seen parking), \
             {} recorded gate decisions (answers to distinct requests other than the probe's: \
             {}), reservations by state: {}.",
            thousands(after.sessions.unsigned_abs()),
            thousands(after.open.unsigned_abs()),
            thousands(after.on_reservation.unsigned_abs()),
            thousands(after.reconciled.unsigned_abs()),
            thousands(after.never_seen.unsigned_abs()),
            thousands(after.decisions.unsigned_abs()),
            thousands(s.answered_all),
            counts_text(&states)
        );
    }
    let ingest_rows = (s1.rows - s0.rows).max(0.0);
    let _ = writeln!(
        out,
        "- Sensors in the window, as ingest counted them: {} messages ({}), {:.1}/s; {} reading \
         rows written in {} batches; lost {}, rejected {}. Broker → ingest link: {} messages.",
        thousands(sensor_msgs),
        counts_text(&received),
        sensor_rate,
        thousands(ingest_rows as u64),
        thousands((s1.batches - s0.batches).max(0.0) as u64),
        (s1.lost - s0.lost).max(0.0),
        (s1.rejected - s0.rejected).max(0.0),
        thousands((s1.link_messages - s0.link_messages).max(0.0) as u64)
    );
    if let Some(fleet) = &r.fleet {
        let _ = writeln!(
            out,
            "- The fleet over the whole run: {} sensors on {} connections; {} state, {} \
             heartbeat and {} status messages handed to MQTT, {} PUBLISH written, {} PUBACKs; \
             {} refused by a full queue, {} skipped while offline; {} connection errors.",
            fleet.sensors,
            fleet.connections,
            thousands(fleet.state_messages),
            thousands(fleet.heartbeats),
            thousands(fleet.status_messages),
            thousands(fleet.publishes_sent),
            thousands(fleet.pubacks),
            fleet.queue_full,
            fleet.skipped_offline,
            fleet.connection_errors
        );
    }
    let dropped = map_delta(&s0.dropped, &s1.dropped);
    let _ = writeln!(
        out,
        "- Gates: {} CONNACKs for {} connections, {} connection errors, {} event loops aborted \
         at the end; repeats published {}; answers after their request was answered {}; \
         commands nobody asked for {}; undecodable commands {}; publish errors {}. parkd in \
         the window: gate messages dropped {}, answers replayed from the record {}.",
        r.conns.connacks,
        gates + usize::from(r.probe),
        r.conns.errors,
        r.conns.aborted,
        s.repeats,
        s.late,
        s.unsolicited,
        s.bad_commands,
        s.publish_errors,
        counts_text(&dropped),
        (s1.replays - s0.replays).max(0.0)
    );
    if !s.unanswered_examples.is_empty() {
        let _ = writeln!(
            out,
            "- Unanswered, first ones: {}.",
            s.unanswered_examples.join("; ")
        );
    }

    render_time(&mut out, header, r, window_s);
    out
}

fn render_time(out: &mut String, header: &RunHeader, r: &Results, window_s: f64) {
    let s = &r.stats;
    let (s0, s1) = &r.server;
    let answers_per_s = (s.all.summary().count as f64 / window_s).max(1e-9);
    let _ = writeln!(out, "\n## Where the time goes\n");
    let cpu = &r.cpu;
    let parkd = cpu.cores("parkd");
    let loadgen = cpu.cores("loadgen");
    let router = cpu.cores("router");
    let links = cpu.cores("mqtt-link");
    let commands = cpu.cores("gate-commands");
    let monitor = cpu.cores("pgmon");
    let other =
        (cpu.process_cores - parkd - loadgen - router - links - commands - monitor).max(0.0);
    let pg =
        r.db.as_ref()
            .filter(|db| db.ticks_complete)
            .map(|db| db.cores(window_s));
    let _ = writeln!(
        out,
        "CPU in the measured window, in cores (of {} CPUs), and per answered request ({:.1} \
         answers/s, the probe's apart):\n",
        header.cpus, answers_per_s
    );
    let _ = writeln!(out, "| Who | Cores | µs of CPU per answer |");
    let _ = writeln!(out, "|---|---:|---:|");
    let per = |cores: f64| cores * 1e6 / answers_per_s;
    let mut row = |who: &str, cores: f64| {
        // An empty sum of floats is -0.0.
        let cores = cores + 0.0;
        let _ = writeln!(out, "| {who} | {cores:.3} | {:.0} |", per(cores));
    };
    row(
        "parkd (`parkd` workers: gate decisions, ingest, engine, HTTP, the store's client side)",
        parkd,
    );
    row("rumqttd's router (`router-*`)", router);
    row("parkd's broker links (`mqtt-link-*`: ingest, gates)", links);
    row("parkd's gate command publisher (`gate-commands`)", commands);
    if let Some(pg) = pg {
        row("PostgreSQL (every server process, from /proc)", pg);
    }
    row(
        "the load (`loadgen`: gates, sensors, cars, booking office)",
        loadgen,
    );
    row("the PostgreSQL monitor thread (`pgmon`)", monitor);
    row("other threads of this process", other);
    let _ = writeln!(
        out,
        "| whole machine (includes other users of this shared machine) | {} | |",
        cpu.machine_cores
            .map_or("?".to_owned(), |m| format!("{m:.3}"))
    );
    let threads: Vec<String> = cpu
        .by_thread
        .iter()
        .take(10)
        .map(|(name, cores)| format!("{name} {cores:.3}"))
        .collect();
    let _ = writeln!(out, "\nThreads of this process: {}.", threads.join(", "));

    let (count, mean_us, shares) = decision_window(s0, s1);
    let client_mean = s.all.mean();
    let _ = writeln!(
        out,
        "\n**parkd's own decision time** (`parkd_gate_decision_seconds`: from the request \
         handed to the decision task to its answer, before it is queued for the broker; probe \
         included): {} decisions in the window, mean **{} ms**, against a mean of {} ms \
         publish → command at the gates. The difference, {} ms on average, is the way there and \
         back: the gate's client and socket, rumqttd's router, the `gates` link thread, the \
         queue and a free decision permit, the command thread, the router again.",
        thousands(count),
        ms2(mean_us),
        ms2(client_mean),
        ms2((client_mean - mean_us).max(0.0))
    );
    if count > 0 {
        let mut below = Vec::new();
        for (upper_ms, share) in &shares {
            below.push(format!("≤ {upper_ms} ms {:.1} %", share * 100.0));
        }
        let _ = writeln!(
            out,
            "Cumulative share of decisions by bucket: {}.",
            below.join(", ")
        );
    }
    if r.probe {
        let p = s.probe.summary();
        if p.count > 0 {
            let _ = writeln!(
                out,
                "\nThe probe (`bad_request`: decoded and refused, no database) took p50 {} ms, \
                 p99 {} ms, max {} ms publish → command: the transport and queueing floor \
                 under this load.",
                ms2(p.p50),
                ms2(p.p99),
                ms2(p.max)
            );
        }
    }
    if let Some(db) = &r.db {
        render_db(out, db, window_s, answers_per_s);
    }
}

fn render_db(out: &mut String, db: &DbWindow, window_s: f64, answers_per_s: f64) {
    let _ = writeln!(out, "\n### PostgreSQL during the window\n");
    if let Some(error) = &db.error {
        let _ = writeln!(out, "The monitor failed: {error}\n");
    }
    let nice: Vec<String> = db
        .nice
        .iter()
        .map(|(nice, n)| format!("{n} at nice {nice}"))
        .collect();
    let _ = writeln!(
        out,
        "- Scheduling: the server's processes by scheduler autogroup when the window opened: \
         {}{}.",
        if nice.is_empty() {
            "unknown".to_owned()
        } else {
            nice.join(", ")
        },
        match db.lift {
            Some(lift) => format!(
                " (the harness gave them the benchmark's autogroup nice {lift} when the load \
                 started and again when the window opened: {} changed, {} refused; each \
                 backend is an autogroup of its own at 0, which `bench/prio.sh`'s -10 would \
                 outweigh about nine to one)",
                db.lifted, db.lift_failed
            ),
            None => " (left as they were)".to_owned(),
        }
    );
    if let Some((io, cpu)) = db.pressure {
        let _ = writeln!(
            out,
            "- The machine (`/proc/pressure`, every process, other users' included): some task \
             stalled on IO {:.1} % of the window, waiting for a CPU {:.1} % of it.",
            io * 100.0,
            cpu * 100.0
        );
    }
    let answers = answers_per_s * window_s;
    let _ = writeln!(
        out,
        "- Transactions committed in the bench database: {} ({:.0}/s, {:.1} per answered \
         request, ingest's batches and every statement outside `BEGIN` included); rolled back \
         {}. `pg_stat_database` is flushed by each backend at most once a second: ±1 s.",
        thousands(db.commits.max(0).unsigned_abs()),
        db.commits as f64 / window_s,
        db.commits as f64 / answers.max(1.0),
        db.rollbacks
    );
    if let (Some(syncs), Some(bytes)) = (db.wal_syncs, db.wal_bytes) {
        let _ = writeln!(
            out,
            "- WAL (server-wide): {} syncs ({:.0}/s), {:.1} MB.",
            thousands(syncs.max(0).unsigned_abs()),
            syncs as f64 / window_s,
            bytes as f64 / 1e6
        );
    }
    if db.ticks_complete {
        let parts: Vec<String> = db
            .ticks
            .iter()
            .filter(|(_, t)| **t > 0)
            .map(|(kind, t)| format!("{kind} {:.3}", *t as f64 / 100.0 / window_s))
            .collect();
        let _ = writeln!(
            out,
            "- CPU of the server's processes: **{:.3} cores** ({:.0} µs per answered request): \
             {}.",
            db.cores(window_s),
            db.cores(window_s) * 1e6 / answers_per_s.max(1e-9),
            parts.join(", ")
        );
    } else {
        let _ = writeln!(
            out,
            "- CPU of the server's processes: not readable (not on this machine?)."
        );
    }
    if db.samples > 0 {
        let n = db.samples as f64;
        let _ = writeln!(
            out,
            "- parkd's pooled connections, sampled every 100 ms from `pg_stat_activity` ({} \
             samples): on average {:.2} open. What they were doing, in connections on \
             average:\n",
            db.samples,
            db.connections as f64 / n
        );
        let _ = writeln!(out, "| State | Connections (mean) | Share |");
        let _ = writeln!(out, "|---|---:|---:|");
        let mut states: Vec<(&String, &u64)> = db.states.iter().collect();
        states.sort_by(|a, b| b.1.cmp(a.1));
        for (state, k) in states {
            let _ = writeln!(
                out,
                "| {state} | {:.3} | {:.1} % |",
                *k as f64 / n,
                100.0 * *k as f64 / db.connections.max(1) as f64
            );
        }
        if !db.statements.is_empty() {
            let active: u64 = db.statements.values().sum();
            let _ = writeln!(
                out,
                "\nThe statements of the active samples ({} in all; a statement seen in a sample \
                 was running or, for an active connection waiting on the client, just \
                 sent):\n",
                active
            );
            let _ = writeln!(out, "| Samples | Share | Statement |");
            let _ = writeln!(out, "|---:|---:|---|");
            let mut statements: Vec<(&String, &u64)> = db.statements.iter().collect();
            statements.sort_by(|a, b| b.1.cmp(a.1));
            for (statement, k) in statements.into_iter().take(12) {
                let _ = writeln!(
                    out,
                    "| {k} | {:.1} % | `{}` |",
                    100.0 * *k as f64 / active.max(1) as f64,
                    statement.replace('|', "\\|").replace('`', "'")
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use parkd_core::ids::LotId;
    use parkd_core::vehicle::VehicleType;

    use super::{LotView, draw_vehicle, spec_of};

    #[test]
    fn the_mix_is_drawn_by_its_weights() {
        let mix = parkd_sim::gates::default_vehicle_mix();
        assert_eq!(draw_vehicle(&mix, 0.0), VehicleType::Car);
        assert_eq!(draw_vehicle(&mix, 0.999_999), VehicleType::Accessible);
        let cars = (0..1000)
            .filter(|i| draw_vehicle(&mix, (f64::from(*i) + 0.5) / 1000.0) == VehicleType::Car)
            .count();
        assert_eq!(cars, 720);
        for vehicle in VehicleType::ALL {
            assert_eq!(spec_of(vehicle).vehicle_type(), vehicle, "{vehicle}");
        }
    }

    #[test]
    fn cars_park_where_told_or_nearby() {
        let lot = parkd_core::garage::demo_garage(LotId::parse("t").expect("id"), 2, 100);
        let mut view = LotView::new(&lot);
        let standard = view
            .spots
            .iter()
            .position(|s| s.kind == parkd_core::vehicle::SpotKind::Standard)
            .expect("a standard spot");
        view.spots[standard].heading = 1;
        assert_eq!(
            view.park(Some(standard), VehicleType::Car, false, 0.5),
            Some((standard, false))
        );
        assert_eq!(view.spots[standard].heading, 0);
        // Taken: another free standard or large spot on the same level.
        let (other, elsewhere) = view
            .park(Some(standard), VehicleType::Car, false, 0.5)
            .expect("a spot");
        assert!(elsewhere);
        assert_eq!(view.spots[other].level, view.spots[standard].level);
        assert!(parkd_core::vehicle::fits(
            VehicleType::Car,
            view.spots[other].kind
        ));
        // Every motorcycle bay taken: nowhere for a motorcycle.
        for spot in &mut view.spots {
            if spot.kind == parkd_core::vehicle::SpotKind::Motorcycle {
                spot.occupied = true;
            }
        }
        assert_eq!(view.park(None, VehicleType::Motorcycle, false, 0.1), None);
    }
}
