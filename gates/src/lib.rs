//! Barrier gates: what to answer a vehicle at a barrier, and the parking sessions that
//! follow.
//!
//! [`GateService::handle_request`] turns a gate's request payload into the one
//! [`GateCommand`] the gate gets for it: decoded strictly, answered even when refused, the
//! same answer for a repeated request id (recorded in the store before it is sent), and a
//! deny with a reason rather than silence when the database is down. [`mqtt`] connects it to
//! the broker.
//!
//! Entry: a valid reservation (by code, else by plate) admits and checks it in; otherwise a
//! walk-in is admitted only if a spot that fits the vehicle is free in live availability (which
//! already excludes spots held for upcoming reservations), and the allocation rule assigns
//! one. Exit: the vehicle's open session is closed (a tariff-less lot charges nothing until
//! payments exist: [`ExitCharge`] is the seam), its reservation completed and the overstay
//! measured. The assigned spot is held in live availability until the sensors see the car
//! park (`GateService::awaiting_arrival`).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use dashmap::DashMap;
use parkd_core::account::Plate;
use parkd_core::allocation::{Candidate, Interval, Policy, Request, Timeline, allocate};
use parkd_core::clock::Clock;
use parkd_core::garage::Lot;
use parkd_core::gate::{
    Action, Direction, GateCommand, GateRequest, Reason, overstay_s, reservation_admits,
};
use parkd_core::ids::{GateId, LotId, SpotId};
use parkd_core::reservation::ReservationState;
use parkd_core::vehicle::{VehicleType, fits};
use parkd_occupancy::{OccupancyEngine, SpotState};
use parkd_store::{
    DeviceBinding, OperatorAction, ParkingSession, ReservationRow, Store, StoreError,
};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use rand::RngCore;
use tokio_util::sync::CancellationToken;

pub mod charge;
pub mod mqtt;

pub use charge::{Bill, ChargeError, ExitCharge, NoCharge, TariffCharge};

use mqtt::CommandOut;

/// Tunables of the gate rules (`[gates]` in the configuration).
#[derive(Debug, Clone)]
pub struct GateSettings {
    /// A plate read with less confidence counts as unread.
    pub min_plate_confidence: f64,
    /// A request whose `ts` is older than this (a replay, a gate with a stale queue) is denied.
    pub max_request_age: Duration,
    /// How long before its expected entry a reservation admits its vehicle.
    pub early_entry: Duration,
    /// The stay assumed for a walk-in when choosing its spot (reservations starting within it
    /// make a spot a worse choice).
    pub walk_in_stay: Duration,
    /// How long an assigned spot stays held for a car that entered but has not been seen
    /// parking.
    pub arrival_timeout: Duration,
    /// The vehicle type of a walk-in whose gate does not say.
    pub default_vehicle: VehicleType,
    /// How long the answer to a request is kept for the gate's repeats (idempotency); older
    /// answers are deleted by [`GateService::prune_decisions`].
    pub decision_retention: Duration,
}

impl Default for GateSettings {
    fn default() -> Self {
        Self {
            min_plate_confidence: 0.8,
            max_request_age: Duration::seconds(60),
            early_entry: Duration::minutes(30),
            walk_in_stay: Duration::hours(3),
            arrival_timeout: Duration::minutes(20),
            default_vehicle: VehicleType::Car,
            decision_retention: Duration::hours(72),
        }
    }
}

/// Recorded answers deleted per statement by [`GateService::prune_decisions`].
pub const PRUNE_BATCH: u32 = 10_000;

/// The gate metrics.
#[derive(Debug, Clone)]
pub struct GateMetrics {
    /// `parkd_gate_decisions_total{direction,action,reason}`.
    decisions: IntCounterVec,
    /// `parkd_gate_rejected_total{reason}`: payloads that were not valid requests or events.
    rejected: IntCounterVec,
    /// `parkd_gate_replays_total`: repeated request ids answered from the record.
    replays: prometheus::IntCounter,
    /// `parkd_gate_decision_seconds`: payload in to command out.
    seconds: Histogram,
    /// `parkd_gate_events_total{event}`.
    pub(crate) events: IntCounterVec,
    /// `parkd_gate_arrivals_total{outcome}`: cars seen parking after entry.
    arrivals: IntCounterVec,
    /// `parkd_gate_decisions_pruned_total`: recorded answers deleted past their retention.
    pruned: prometheus::IntCounter,
}

impl GateMetrics {
    /// Counts a payload that was not a valid request or event.
    pub(crate) fn reject(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }

    /// Registers the metrics.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "parkd_gate_decisions_total",
                "Answers given to gate requests, by direction, action and reason",
            ),
            &["direction", "action", "reason"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "parkd_gate_rejected_total",
                "Gate payloads that were not valid requests or events, by reason",
            ),
            &["reason"],
        )?;
        let replays = prometheus::IntCounter::new(
            "parkd_gate_replays_total",
            "Repeated gate requests answered with the recorded answer",
        )?;
        let seconds = Histogram::with_opts(
            HistogramOpts::new(
                "parkd_gate_decision_seconds",
                "Time from a gate request's arrival to its answer",
            )
            .buckets(vec![
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
            ]),
        )?;
        let events = IntCounterVec::new(
            Opts::new(
                "parkd_gate_events_total",
                "Barrier events reported by gates",
            ),
            &["event"],
        )?;
        let arrivals = IntCounterVec::new(
            Opts::new(
                "parkd_gate_arrivals_total",
                "Cars seen parking after entry: in the assigned spot, elsewhere, in a spot \
                 held for someone else",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(replays.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        registry.register(Box::new(events.clone()))?;
        let pruned = prometheus::IntCounter::new(
            "parkd_gate_decisions_pruned_total",
            "Recorded answers to gate requests deleted past gates.decision_retention_h",
        )?;
        registry.register(Box::new(arrivals.clone()))?;
        registry.register(Box::new(pruned.clone()))?;
        Ok(Self {
            decisions,
            rejected,
            replays,
            seconds,
            events,
            arrivals,
            pruned,
        })
    }
}

/// The gate rules over the store and the live state.
#[derive(Debug)]
pub struct GateService {
    store: Arc<dyn Store>,
    engine: Arc<OccupancyEngine>,
    clock: Arc<dyn Clock>,
    settings: GateSettings,
    charge: Arc<dyn ExitCharge>,
    metrics: GateMetrics,
    /// Entries of one lot are decided one at a time, so two walk-ins never get the last
    /// spot; lots do not wait for each other.
    lot_locks: DashMap<LotId, Arc<tokio::sync::Mutex<()>>>,
    /// The registered gates, reloaded from the store at most every few seconds.
    known: tokio::sync::RwLock<KnownGates>,
    /// Where commands nobody asked for go (manual open, emergency).
    out: Arc<dyn CommandOut>,
    /// Lots in emergency mode.
    emergencies: DashMap<LotId, Emergency>,
    /// Sessions opened per lot since the start; with `no_waiting`, lets [`Self::car_parked`]
    /// skip the database on the sensor hot path when no car can be waiting to be seen.
    opened: DashMap<LotId, u64>,
    /// Per lot, the `opened` count at which the store last had no session waiting for its
    /// car: while it still equals `opened`, none can be waiting (waiting sessions only come
    /// from openings).
    no_waiting: DashMap<LotId, u64>,
}

/// A lot's emergency: every barrier held open, nobody charged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Emergency {
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Who started it (a user id).
    pub started_by: String,
    /// Why.
    pub reason: String,
}

/// Why an operator's action was refused.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No such registered gate in the lot.
    #[error("no registered gate {gate} in lot {lot}")]
    UnknownGate {
        /// The lot.
        lot: LotId,
        /// The gate.
        gate: GateId,
    },
    /// No such lot.
    #[error("no lot {0}")]
    UnknownLot(LotId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Default)]
struct KnownGates {
    loaded: Option<std::time::Instant>,
    gates: std::collections::HashSet<(LotId, GateId)>,
}

/// How long the list of registered gates is trusted; a gate registered meanwhile is found by
/// a reload on its first request (at most one reload per [`GATE_MISS_RELOAD`]).
const GATE_LIST_TTL: std::time::Duration = std::time::Duration::from_secs(10);
const GATE_MISS_RELOAD: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a decision could not be made (the gate is told [`Reason::Unavailable`]).
#[derive(Debug, thiserror::Error)]
enum Undecided {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Charge(#[from] ChargeError),
}

impl GateService {
    /// The service.
    pub fn new(
        store: Arc<dyn Store>,
        engine: Arc<OccupancyEngine>,
        clock: Arc<dyn Clock>,
        settings: GateSettings,
        charge: Arc<dyn ExitCharge>,
        metrics: GateMetrics,
        out: Arc<dyn CommandOut>,
    ) -> Self {
        Self {
            store,
            engine,
            clock,
            settings,
            charge,
            metrics,
            lot_locks: DashMap::new(),
            known: tokio::sync::RwLock::new(KnownGates::default()),
            out,
            emergencies: DashMap::new(),
            opened: DashMap::new(),
            no_waiting: DashMap::new(),
        }
    }

    /// Restores the emergencies still active from the audit trail (after a restart).
    /// Returns the lots in emergency mode.
    pub async fn restore(&self) -> Result<Vec<(LotId, Emergency)>, StoreError> {
        // Each lot's newest emergency action says whether its emergency is on.
        for action in self.store.latest_emergency_actions().await? {
            if action.action == "emergency_start" {
                self.emergencies.insert(
                    action.lot.clone(),
                    Emergency {
                        started_at: action.at,
                        started_by: action.user_id,
                        reason: action.reason,
                    },
                );
            }
        }
        Ok(self
            .emergencies
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect())
    }

    /// The lot's emergency, if one is on.
    pub fn emergency(&self, lot: &LotId) -> Option<Emergency> {
        self.emergencies.get(lot).map(|e| e.value().clone())
    }

    /// The registered, enabled gates of a lot, read from the registry now.
    pub async fn gates_of(&self, lot: &LotId) -> Result<Vec<GateId>, StoreError> {
        let mut gates: Vec<GateId> = self
            .reload_gates()
            .await?
            .into_iter()
            .filter_map(|(l, gate)| (&l == lot).then_some(gate))
            .collect();
        gates.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(gates)
    }

    /// Reads the registered, enabled gates of every lot and keeps them for [`Self::is_gate_of`].
    async fn reload_gates(&self) -> Result<std::collections::HashSet<(LotId, GateId)>, StoreError> {
        let gates: std::collections::HashSet<(LotId, GateId)> = self
            .store
            .devices()
            .await?
            .into_iter()
            .filter(|device| !device.disabled)
            .filter_map(|device| match device.binding {
                DeviceBinding::Gate { lot, gate } => Some((lot, gate)),
                _ => None,
            })
            .collect();
        *self.known.write().await = KnownGates {
            loaded: Some(std::time::Instant::now()),
            gates: gates.clone(),
        };
        Ok(gates)
    }

    /// The lock that decides one lot's entries one at a time.
    fn entries_lock(&self, lot: &LotId) -> Arc<tokio::sync::Mutex<()>> {
        self.lot_locks
            .entry(lot.clone())
            .or_default()
            .value()
            .clone()
    }

    /// An operator opens a gate by hand: recorded in the audit trail first, then the gate
    /// gets `open` / `manual`.
    pub async fn open_by_hand(
        &self,
        lot: &LotId,
        gate: &GateId,
        user_id: &str,
        reason: &str,
    ) -> Result<GateCommand, OperatorError> {
        if !self.gates_of(lot).await?.contains(gate) {
            return Err(OperatorError::UnknownGate {
                lot: lot.clone(),
                gate: gate.clone(),
            });
        }
        let now = self.clock.now();
        self.audit(lot, Some(gate), "gate_open", user_id, reason, now)
            .await?;
        let command = GateCommand::new(None, Action::Open, Reason::Manual, now);
        self.send(lot, gate, &command);
        tracing::info!(%lot, %gate, user = user_id, reason, "gate opened by hand");
        Ok(command)
    }

    /// Starts a lot's emergency: recorded, then every gate of the lot is told `hold_open`.
    /// Starting it again while on changes nothing and returns the one that is on.
    pub async fn start_emergency(
        &self,
        lot: &LotId,
        user_id: &str,
        reason: &str,
    ) -> Result<Emergency, OperatorError> {
        if self.engine.model(lot).is_none() {
            return Err(OperatorError::UnknownLot(lot.clone()));
        }
        if let Some(on) = self.emergency(lot) {
            return Ok(on);
        }
        let now = self.clock.now();
        self.audit(lot, None, "emergency_start", user_id, reason, now)
            .await?;
        let emergency = Emergency {
            started_at: now,
            started_by: user_id.to_owned(),
            reason: reason.to_owned(),
        };
        self.emergencies.insert(lot.clone(), emergency.clone());
        self.broadcast(lot, Action::HoldOpen, Reason::Emergency, now)
            .await?;
        tracing::warn!(%lot, user = user_id, reason, "EMERGENCY: every barrier held open");
        Ok(emergency)
    }

    /// Ends a lot's emergency: recorded, then every gate is told `release`. `false` if none
    /// was on.
    pub async fn end_emergency(
        &self,
        lot: &LotId,
        user_id: &str,
        reason: &str,
    ) -> Result<bool, OperatorError> {
        if self.emergency(lot).is_none() {
            return Ok(false);
        }
        let now = self.clock.now();
        self.audit(lot, None, "emergency_end", user_id, reason, now)
            .await?;
        self.emergencies.remove(lot);
        self.broadcast(lot, Action::Release, Reason::EmergencyOver, now)
            .await?;
        tracing::warn!(%lot, user = user_id, reason, "emergency over: barriers back to normal");
        Ok(true)
    }

    /// Tells every gate of the lot the emergency state again (a gate that reconnected, or
    /// the start of the process).
    pub async fn repeat_emergency(&self, lot: &LotId) -> Result<(), StoreError> {
        if self.emergency(lot).is_some() {
            let now = self.clock.now();
            self.broadcast(lot, Action::HoldOpen, Reason::Emergency, now)
                .await?;
        }
        Ok(())
    }

    async fn broadcast(
        &self,
        lot: &LotId,
        action: Action,
        reason: Reason,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let command = GateCommand::new(None, action, reason, at);
        for gate in self.gates_of(lot).await? {
            self.send(lot, &gate, &command);
        }
        Ok(())
    }

    fn send(&self, lot: &LotId, gate: &GateId, command: &GateCommand) {
        let topic = parkd_core::topic::Topic::Gate {
            lot: lot.clone(),
            gate: gate.clone(),
            channel: parkd_core::topic::GateChannel::Command,
        };
        self.out.send(topic.to_string(), command.encode());
    }

    async fn audit(
        &self,
        lot: &LotId,
        gate: Option<&GateId>,
        action: &str,
        user_id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.store
            .record_operator_action(&OperatorAction {
                id: random_id(),
                at,
                user_id: user_id.to_owned(),
                lot: lot.clone(),
                gate: gate.cloned(),
                action: action.to_owned(),
                reason: reason.chars().take(500).collect(),
            })
            .await
    }

    /// The metrics.
    pub fn metrics(&self) -> &GateMetrics {
        &self.metrics
    }

    /// Deletes the recorded answers older than `decision_retention`, [`PRUNE_BATCH`] rows per
    /// statement, until none is left or `stop` fires; returns how many went. A request
    /// repeated after its answer is gone is decided afresh (its session then says
    /// `already_inside` or `no_session`).
    pub async fn prune_decisions(&self, stop: &CancellationToken) -> Result<u64, StoreError> {
        let before = self.clock.now() - self.settings.decision_retention;
        let mut total = 0;
        loop {
            let deleted = self
                .store
                .delete_gate_decisions_before(before, PRUNE_BATCH)
                .await?;
            self.metrics.pruned.inc_by(deleted);
            total += deleted;
            if deleted < u64::from(PRUNE_BATCH) || stop.is_cancelled() {
                return Ok(total);
            }
        }
    }

    /// The answer to one request payload from `gate` of `lot`. Always an answer: a payload
    /// that is not a request is denied to the id it carries (or to no id), a failure of the
    /// database is denied as `unavailable` without being recorded, so the gate's retry can
    /// succeed.
    pub async fn handle_request(
        &self,
        lot: &LotId,
        gate: &GateId,
        payload: &[u8],
        received_at: DateTime<Utc>,
    ) -> GateCommand {
        let started = std::time::Instant::now();
        let (direction, command) = self.answer(lot, gate, payload, received_at).await;
        self.metrics
            .seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .decisions
            .with_label_values(&[
                direction.map_or("unknown", Direction::as_str),
                command.action.as_str(),
                command.reason.as_str(),
            ])
            .inc();
        command
    }

    async fn answer(
        &self,
        lot: &LotId,
        gate: &GateId,
        payload: &[u8],
        received_at: DateTime<Utc>,
    ) -> (Option<Direction>, GateCommand) {
        let request = match GateRequest::decode(payload) {
            Ok(request) => request,
            Err(error) => {
                self.metrics.reject(error.reason());
                tracing::debug!(%lot, %gate, %error, "gate request refused");
                let id = GateRequest::salvage_id(payload);
                return (None, GateCommand::deny(id, Reason::BadRequest, received_at));
            }
        };
        let direction = Some(request.direction);
        let id = Some(request.request_id.clone());
        match self.recorded(lot, gate, &request.request_id).await {
            Ok(Some(command)) => {
                self.metrics.replays.inc();
                return (direction, command);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%lot, %gate, %error, "gate request: store unavailable");
                return (
                    direction,
                    GateCommand::deny(id, Reason::Unavailable, received_at),
                );
            }
        }
        let decided = match self.decide(lot, gate, &request, received_at).await {
            Ok(command) => command,
            Err(error) => {
                tracing::warn!(%lot, %gate, %error, "gate request: no decision");
                return (
                    direction,
                    GateCommand::deny(id, Reason::Unavailable, received_at),
                );
            }
        };
        // One answer per request: if a duplicate was decided meanwhile, its answer stands.
        let wire = String::from_utf8(decided.encode()).unwrap_or_default();
        match self
            .store
            .record_gate_decision(lot, gate, &request.request_id, &wire, received_at)
            .await
        {
            Ok(Some(earlier)) => match GateCommand::decode(earlier.as_bytes()) {
                Ok(earlier) => (direction, earlier),
                Err(_) => (direction, decided),
            },
            Ok(None) => (direction, decided),
            Err(error) => {
                // Decided (and acted on) but not recorded: a repeat would be decided afresh,
                // which the session rules keep safe (already inside / no session).
                tracing::warn!(%lot, %gate, %error, "gate decision not recorded");
                (direction, decided)
            }
        }
    }

    async fn recorded(
        &self,
        lot: &LotId,
        gate: &GateId,
        request_id: &str,
    ) -> Result<Option<GateCommand>, StoreError> {
        let Some(wire) = self.store.gate_decision(lot, gate, request_id).await? else {
            return Ok(None);
        };
        Ok(GateCommand::decode(wire.as_bytes()).ok())
    }

    async fn decide(
        &self,
        lot: &LotId,
        gate: &GateId,
        request: &GateRequest,
        now: DateTime<Utc>,
    ) -> Result<GateCommand, Undecided> {
        let id = Some(request.request_id.clone());
        if let Some(ts) = request.ts
            && now.timestamp_millis() - ts > self.settings.max_request_age.num_milliseconds()
        {
            return Ok(GateCommand::deny(id, Reason::StaleRequest, now));
        }
        if !self.is_gate_of(lot, gate).await? {
            return Ok(GateCommand::deny(id, Reason::UnknownGate, now));
        }
        let Some(model) = self.engine.model(lot) else {
            return Ok(GateCommand::deny(id, Reason::UnknownGate, now));
        };
        if self.emergency(lot).is_some() {
            return self.during_emergency(lot, gate, request, now).await;
        }
        match request.direction {
            Direction::Entry => {
                let lock = self.entries_lock(lot);
                let _entries = lock.lock().await;
                self.entry(&model, Some(gate), None, request, now).await
            }
            Direction::Exit => self.exit(lot, gate, request, now).await,
        }
    }

    /// Whether `gate` is a registered gate of `lot` (the broker's ACL already keeps an
    /// authenticated gate to its own topics; this catches anonymous publishers in demo mode
    /// and gates removed from the registry).
    async fn is_gate_of(&self, lot: &LotId, gate: &GateId) -> Result<bool, StoreError> {
        let key = (lot.clone(), gate.clone());
        {
            let known = self.known.read().await;
            if let Some(loaded) = known.loaded {
                let age = loaded.elapsed();
                let found = known.gates.contains(&key);
                if (found && age < GATE_LIST_TTL) || (!found && age < GATE_MISS_RELOAD) {
                    return Ok(found);
                }
            }
        }
        Ok(self.reload_gates().await?.contains(&key))
    }

    async fn entry(
        &self,
        model: &Lot,
        gate: Option<&GateId>,
        user: Option<&str>,
        request: &GateRequest,
        now: DateTime<Utc>,
    ) -> Result<GateCommand, Undecided> {
        let id = Some(request.request_id.clone());
        let lot = &model.id;
        // Closed: nobody comes in (leaving is always allowed: exits never check the hours).
        if !model.is_open_at(now) {
            return Ok(GateCommand::deny(id, Reason::LotClosed, now));
        }
        let plate = request.usable_plate(self.settings.min_plate_confidence);
        let reservation = match &request.code {
            Some(code) => match self.store.reservation_by_code(code).await? {
                None => return Ok(GateCommand::deny(id, Reason::UnknownCode, now)),
                Some(r) if &r.lot != lot => {
                    return Ok(GateCommand::deny(id, Reason::WrongLot, now));
                }
                Some(r) => Some(r),
            },
            None => match &plate {
                Some(plate) => self.reservation_of_plate(lot, plate, now).await?,
                None => None,
            },
        };
        if let Some(reservation) = reservation {
            return self
                .enter_on_reservation(model, gate, request, plate.as_ref(), &reservation, now)
                .await;
        }
        let Some(plate) = plate else {
            return Ok(GateCommand::deny(id, Reason::PlateUnreadable, now));
        };
        if self
            .store
            .open_parking_session_of_plate(lot, &plate.key())
            .await?
            .is_some()
        {
            return Ok(GateCommand::deny(id, Reason::AlreadyInside, now));
        }
        let vehicle = request.vehicle.unwrap_or(self.settings.default_vehicle);
        if !model.spots.iter().any(|spot| fits(vehicle, spot.kind)) {
            return Ok(GateCommand::deny(id, Reason::NoFittingSpot, now));
        }
        let Some(spot) = self.walk_in_spot(model, vehicle, now).await? else {
            return Ok(GateCommand::deny(id, Reason::Full, now));
        };
        let session = Entered {
            lot,
            gate,
            user,
            plate_key: plate.key(),
            plate: Some(plate.as_str()),
            vehicle,
            reservation: None,
            spot: &spot,
            at: now,
        }
        .session();
        if !self.open(&session).await? {
            return Ok(GateCommand::deny(id, Reason::AlreadyInside, now));
        }
        self.engine.set_held(lot, &spot, true, now);
        Ok(admitted(
            GateCommand::new(id, Action::Open, Reason::WalkIn, now),
            model,
            &spot,
            &session.id,
        ))
    }

    /// Opens a session (checking its reservation in); `false` if the store refused it as a
    /// second open session of the plate or reservation.
    async fn open(&self, session: &ParkingSession) -> Result<bool, StoreError> {
        match self
            .store
            .open_parking_session(session, session.entered_at)
            .await
        {
            Ok(()) => {
                *self.opened.entry(session.lot.clone()).or_default() += 1;
                Ok(true)
            }
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// The reservation a plate holds around `now` in `lot`: confirmed or checked in, its entry
    /// window open; the one starting first if several.
    async fn reservation_of_plate(
        &self,
        lot: &LotId,
        plate: &Plate,
        now: DateTime<Utc>,
    ) -> Result<Option<ReservationRow>, StoreError> {
        let key = plate.key();
        let around = self
            .store
            .holding_between(
                lot,
                now,
                now + self.settings.early_entry + Duration::seconds(1),
            )
            .await?;
        Ok(around
            .into_iter()
            .filter(|r| r.plate_key == key)
            .filter(|r| {
                matches!(
                    r.state,
                    ReservationState::Confirmed | ReservationState::CheckedIn
                )
            })
            .min_by_key(|r| r.starts_at))
    }

    async fn enter_on_reservation(
        &self,
        model: &Lot,
        gate: Option<&GateId>,
        request: &GateRequest,
        plate: Option<&Plate>,
        reservation: &ReservationRow,
        now: DateTime<Utc>,
    ) -> Result<GateCommand, Undecided> {
        let id = Some(request.request_id.clone());
        if let Err(reason) = reservation_admits(
            reservation.state,
            reservation.starts_at,
            reservation.ends_at,
            now,
            self.settings.early_entry,
        ) {
            let mut command = GateCommand::deny(id, reason, now);
            if reason == Reason::ReservationNotYetValid {
                let from = reservation.starts_at - self.settings.early_entry;
                command = command
                    .with_display(&format!("Valid from {} UTC", from.format("%Y-%m-%d %H:%M")));
            }
            return Ok(command);
        }
        let plate_key = plate
            .map(Plate::key)
            .unwrap_or_else(|| reservation.plate_key.clone());
        let session = Entered {
            lot: &model.id,
            gate,
            user: None,
            plate_key,
            plate: plate.map(Plate::as_str),
            vehicle: reservation.vehicle_type,
            reservation: Some(reservation),
            spot: &reservation.spot,
            at: now,
        }
        .session();
        // Refused: the plate is inside already, or the reservation moved on meanwhile.
        if !self.open(&session).await? {
            return Ok(GateCommand::deny(id, Reason::AlreadyInside, now));
        }
        self.engine
            .set_held(&model.id, &reservation.spot, true, now);
        Ok(admitted(
            GateCommand::new(id, Action::Open, Reason::Reservation, now),
            model,
            &reservation.spot,
            &session.id,
        ))
    }

    /// A spot for a walk-in: live free, fitting, chosen by the allocation rule over the
    /// reservations of the next `walk_in_stay` (falling back to the hold window's length when
    /// every free spot is booked later in the stay); `None` if nothing fits now.
    async fn walk_in_spot(
        &self,
        model: &Lot,
        vehicle: VehicleType,
        now: DateTime<Utc>,
    ) -> Result<Option<SpotId>, StoreError> {
        let free: Vec<&parkd_core::garage::Spot> = model
            .spots
            .iter()
            .filter(|spot| fits(vehicle, spot.kind) && !spot.out_of_service)
            .filter(|spot| {
                self.engine
                    .spot(&model.id, &spot.id)
                    .is_some_and(|live| live.state == SpotState::Free)
            })
            .collect();
        if free.is_empty() {
            return Ok(None);
        }
        let bookings = self
            .store
            .holding_between(&model.id, now, now + self.settings.walk_in_stay)
            .await?;
        let mut busy: HashMap<&SpotId, Vec<Interval>> = HashMap::new();
        for booking in &bookings {
            if let Ok(interval) = Interval::from_datetimes(booking.starts_at, booking.ends_at) {
                busy.entry(&booking.spot).or_default().push(interval);
            }
        }
        let timelines: Vec<Timeline> = free
            .iter()
            .map(|spot| {
                busy.get(&spot.id)
                    .map(|intervals| Timeline::from_intervals(intervals.iter().copied()))
                    .unwrap_or_default()
            })
            .collect();
        for stay in [self.settings.walk_in_stay, self.settings.early_entry] {
            let Ok(interval) = Interval::from_datetimes(now, now + stay) else {
                continue;
            };
            let mut request = Request::new(vehicle, interval);
            request.now = Some(now.timestamp());
            let candidates = free
                .iter()
                .zip(&timelines)
                .map(|(spot, booked)| Candidate { spot, booked });
            if let Ok(chosen) = allocate(candidates, &request, &Policy::default()) {
                return Ok(Some(chosen.spot.id.clone()));
            }
        }
        Ok(None)
    }

    /// Everyone may pass and nobody is charged; a car leaving closes its session.
    async fn during_emergency(
        &self,
        lot: &LotId,
        gate: &GateId,
        request: &GateRequest,
        now: DateTime<Utc>,
    ) -> Result<GateCommand, Undecided> {
        let mut command = GateCommand::new(
            Some(request.request_id.clone()),
            Action::Open,
            Reason::Emergency,
            now,
        );
        if request.direction == Direction::Exit
            && let Some(plate) = request.usable_plate(self.settings.min_plate_confidence)
            && let Some(session) = self
                .store
                .open_parking_session_of_plate(lot, &plate.key())
                .await?
            && self
                .store
                .close_parking_session(&session.id, now, Some(gate), None)
                .await?
        {
            command.session = Some(session.id);
        }
        Ok(command)
    }

    async fn exit(
        &self,
        lot: &LotId,
        gate: &GateId,
        request: &GateRequest,
        now: DateTime<Utc>,
    ) -> Result<GateCommand, Undecided> {
        let id = Some(request.request_id.clone());
        let plate = request.usable_plate(self.settings.min_plate_confidence);
        let session = match (&request.code, &plate) {
            (Some(code), _) => match self.store.reservation_by_code(code).await? {
                Some(r) if &r.lot == lot => {
                    self.store
                        .open_parking_session_of_reservation(&r.id)
                        .await?
                }
                Some(_) => return Ok(GateCommand::deny(id, Reason::WrongLot, now)),
                None => return Ok(GateCommand::deny(id, Reason::UnknownCode, now)),
            },
            (None, Some(plate)) => {
                self.store
                    .open_parking_session_of_plate(lot, &plate.key())
                    .await?
            }
            (None, None) => return Ok(GateCommand::deny(id, Reason::PlateUnreadable, now)),
        };
        let Some(session) = session else {
            return Ok(GateCommand::deny(id, Reason::NoSession, now));
        };
        self.leave(session, Some(gate), id, now).await
    }

    /// Closes a session if nothing is due: the exit gate's answer, or the app's check-out.
    async fn leave(
        &self,
        session: ParkingSession,
        gate: Option<&GateId>,
        id: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<GateCommand, Undecided> {
        let lot = &session.lot;
        let bill = self.charge.bill(&session, now).await?;
        if let Some(bill) = &bill
            && bill.due_minor > 0
        {
            let mut command = GateCommand::deny(id, Reason::PaymentRequired, now);
            command.amount_due = Some(bill.due_minor);
            command.currency = Some(bill.currency.as_str().to_owned());
            command.session = Some(session.id);
            return Ok(command);
        }
        // Open because it was paid, or because nothing was ever due.
        let reason = if bill.is_some_and(|b| b.paid_minor > 0) {
            Reason::Paid
        } else {
            Reason::NothingDue
        };
        let overstay = match &session.reservation_id {
            Some(reservation) => self
                .store
                .reservation(reservation)
                .await?
                .map(|r| overstay_s(r.ends_at, now)),
            None => None,
        };
        if !self
            .store
            .close_parking_session(&session.id, now, gate, overstay)
            .await?
        {
            // Closed meanwhile by a duplicate request or the app.
            return Ok(GateCommand::deny(id, Reason::NoSession, now));
        }
        if session.sensed_spot.is_none()
            && let Some(spot) = &session.assigned_spot
        {
            // Never seen parking (no sensor, or it parked elsewhere unseen): release the hold.
            self.engine.set_held(lot, spot, false, now);
        }
        if let Some(seconds) = overstay.filter(|s| *s > 0) {
            tracing::info!(%lot, session = %session.id, overstay_s = seconds, "left after the reservation's end");
        }
        let mut command = GateCommand::new(id, Action::Open, reason, now);
        command.session = Some(session.id);
        Ok(command)
    }

    /// A driver checks in from the app (a lot without a plate reader): the entry rules of a
    /// gate, by the reservation's code if given, else by the vehicle's plate (its reservation
    /// around now, or a walk-in). The answer is what a gate would show; the session has no
    /// entry gate and carries the driver.
    pub async fn check_in(
        &self,
        lot: &LotId,
        user_id: &str,
        plate: &Plate,
        vehicle: VehicleType,
        code: Option<&str>,
    ) -> Result<GateCommand, StoreError> {
        let now = self.clock.now();
        let Some(model) = self.engine.model(lot) else {
            return Ok(GateCommand::deny(None, Reason::UnknownGate, now));
        };
        let request = GateRequest {
            request_id: format!("app-{}", random_id()),
            direction: Direction::Entry,
            plate: Some(plate.as_str().to_owned()),
            plate_confidence: None,
            code: code.map(str::to_owned),
            vehicle: Some(vehicle),
            ts: None,
        };
        if self.emergency(lot).is_some() {
            return Ok(GateCommand::new(None, Action::Open, Reason::Emergency, now));
        }
        let lock = self.entries_lock(lot);
        let _entries = lock.lock().await;
        let mut command = match self.entry(&model, None, Some(user_id), &request, now).await {
            Ok(command) => command,
            Err(Undecided::Store(error)) => return Err(error),
            Err(Undecided::Charge(error)) => {
                tracing::error!(%lot, %error, "check-in could not be decided");
                GateCommand::deny(None, Reason::Unavailable, now)
            }
        };
        command.request_id = None;
        Ok(command)
    }

    /// A driver checks out from the app: the exit rules for one session.
    pub async fn check_out(&self, session: ParkingSession) -> Result<GateCommand, StoreError> {
        let now = self.clock.now();
        let lot = session.lot.clone();
        match self.leave(session, None, None, now).await {
            Ok(command) => Ok(command),
            Err(Undecided::Store(error)) => Err(error),
            Err(Undecided::Charge(error)) => {
                tracing::error!(%lot, %error, "check-out could not be billed");
                Ok(GateCommand::deny(None, Reason::Unavailable, now))
            }
        }
    }

    /// Spots held for cars that entered and have not been seen parking yet, per lot (for the
    /// holds sweep): sessions with an assigned spot, no sensed spot, younger than
    /// `arrival_timeout`.
    pub async fn awaiting_arrival(&self, lot: &LotId) -> Result<Vec<SpotId>, StoreError> {
        let now = self.clock.now();
        let open = self.store.open_parking_sessions(lot).await?;
        Ok(open
            .into_iter()
            .filter(|s| {
                s.sensed_spot.is_none() && now - s.entered_at < self.settings.arrival_timeout
            })
            .filter_map(|s| s.assigned_spot)
            .collect())
    }

    /// A car was seen parking in `spot` of `lot` (a spot turned occupied): the open session
    /// waiting for a car there is confirmed; otherwise the oldest session still waiting is
    /// reconciled to this spot (the driver parked elsewhere) and its assigned spot released.
    /// A car in a spot held for someone else's reservation is reported.
    pub async fn car_parked(
        &self,
        lot: &LotId,
        spot: &SpotId,
        was: SpotState,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let opened = self.opened.get(lot).map_or(0, |n| *n);
        if self.no_waiting.get(lot).is_some_and(|n| *n == opened) {
            return Ok(());
        }
        let waiting: Vec<ParkingSession> = self
            .store
            .open_parking_sessions(lot)
            .await?
            .into_iter()
            .filter(|s| s.sensed_spot.is_none() && s.assigned_spot.is_some())
            .collect();
        if waiting.is_empty() {
            // Read before the query: an opening after it leaves this stale, so we look again.
            self.no_waiting.insert(lot.clone(), opened);
            return Ok(());
        }
        if let Some(session) = waiting
            .iter()
            .find(|s| s.assigned_spot.as_ref() == Some(spot))
        {
            self.store.set_sensed_spot(&session.id, spot).await?;
            // The car is in: the hold has done its job. Kept, it would show the spot as held
            // once the car leaves, until the next sweep.
            self.engine.set_held(lot, spot, false, at);
            self.metrics.arrivals.with_label_values(&["assigned"]).inc();
            return Ok(());
        }
        let Some(session) = waiting
            .iter()
            .filter(|s| at - s.entered_at < self.settings.arrival_timeout)
            .min_by_key(|s| s.entered_at)
        else {
            return Ok(());
        };
        self.store.set_sensed_spot(&session.id, spot).await?;
        if let Some(assigned) = &session.assigned_spot {
            self.engine.set_held(lot, assigned, false, at);
        }
        if was == SpotState::Held {
            self.metrics
                .arrivals
                .with_label_values(&["held_for_another"])
                .inc();
            tracing::warn!(
                %lot, %spot, session = %session.id,
                "a car parked in a spot held for a reservation; operators should check"
            );
        } else {
            self.metrics
                .arrivals
                .with_label_values(&["elsewhere"])
                .inc();
            tracing::info!(%lot, %spot, session = %session.id, "a car parked elsewhere than assigned; session reconciled");
        }
        Ok(())
    }
}

/// A vehicle let in: what its session records.
struct Entered<'a> {
    lot: &'a LotId,
    gate: Option<&'a GateId>,
    /// The driver, when known other than through the reservation (an app check-in).
    user: Option<&'a str>,
    plate_key: String,
    plate: Option<&'a str>,
    vehicle: VehicleType,
    reservation: Option<&'a ReservationRow>,
    spot: &'a SpotId,
    at: DateTime<Utc>,
}

impl Entered<'_> {
    fn session(self) -> ParkingSession {
        ParkingSession {
            id: random_id(),
            lot: self.lot.clone(),
            plate_key: Some(self.plate_key),
            plate: self.plate.map(str::to_owned),
            vehicle_type: self.vehicle,
            reservation_id: self.reservation.map(|r| r.id.clone()),
            user_id: self
                .reservation
                .map(|r| r.user_id.clone())
                .or(self.user.map(str::to_owned)),
            entry_gate: self.gate.cloned(),
            assigned_spot: Some(self.spot.clone()),
            sensed_spot: None,
            entered_at: self.at,
            exit_gate: None,
            exited_at: None,
            overstay_s: None,
        }
    }
}

/// An open command with the spot to show and the session.
fn admitted(mut command: GateCommand, model: &Lot, spot: &SpotId, session: &str) -> GateCommand {
    let place = model.spot(spot);
    let level = place.and_then(|s| model.levels.iter().find(|l| l.id == s.level));
    let label = place.map_or(spot.as_str(), |s| s.label.as_str());
    command = match level {
        Some(level) => command.with_display(&format!("Welcome - spot {label}, {}", level.name)),
        None => command.with_display(&format!("Welcome - spot {label}")),
    };
    command.spot = Some(spot.to_string());
    command.session = Some(session.to_owned());
    command
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}
