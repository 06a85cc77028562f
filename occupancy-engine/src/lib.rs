//! Live occupancy: the state of every spot, availability counters, and the change feed.
//!
//! The engine knows the garage model ([`OccupancyEngine::install_lot`]) and is fed readings
//! and heartbeats by ingest (after validation and de-duplication), the passage of time by a
//! ticker ([`OccupancyEngine::tick`], clock injected by the caller), and holds and closures by
//! reservations and operators. Each spot runs a pure [`SpotMachine`] (debounce, staleness,
//! ordering); the engine keeps per-lot counters of spots by (kind, state), one grid for the lot
//! and one per level and per zone, moved incrementally on every change. Availability per
//! vehicle type is derived from those grids through the compatibility table, so a read is
//! O(levels + zones), whatever the number of spots, and never touches the database.
//!
//! **Change feed.** Every change gets the lot's next sequence number and is broadcast as a
//! [`Delta`] (with the lot's counters after it) on a bounded per-lot channel. Sequence numbers
//! are assigned and sent under one lock, while the spot is still locked, so they are gap-free
//! and per-spot ordered. Each spot remembers the sequence number of its last change (`v`), so
//! a [`Snapshot`] taken while changes flow can be merged with the deltas that follow it. A
//! subscriber that falls behind the channel loses deltas (never memory) and resynchronises from
//! a fresh snapshot.
//!
//! Invariants (property-tested): every grid equals a recount of the spots, every modelled spot
//! is counted exactly once per grid, and no count is negative.

pub mod machine;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use parkd_core::garage::Lot;
use parkd_core::ids::{LevelId, LotId, SpotId, ZoneId};
use parkd_core::vehicle::{SpotKind, VehicleType, fits};
use serde::Serialize;
use tokio::sync::broadcast;

pub use machine::{MachineSettings, SpotMachine, SpotState};

/// The engine's tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSettings {
    /// The spot state machine's debounce and staleness.
    pub machine: MachineSettings,
    /// Deltas buffered per lot for subscribers; one that falls further behind resyncs.
    pub feed_capacity: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            machine: MachineSettings::default(),
            feed_capacity: 4096,
        }
    }
}

/// Spots by state (and in all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counts {
    /// Spots in the group.
    pub spots: i64,
    /// Free.
    pub free: i64,
    /// Occupied.
    pub occupied: i64,
    /// Held for reservations.
    pub held: i64,
    /// Unknown (no trustworthy reading).
    pub unknown: i64,
    /// Out of service.
    pub out_of_service: i64,
}

impl Counts {
    fn add_state(&mut self, state: SpotState, n: i64) {
        self.spots += n;
        match state {
            SpotState::Free => self.free += n,
            SpotState::Occupied => self.occupied += n,
            SpotState::Held => self.held += n,
            SpotState::Unknown => self.unknown += n,
            SpotState::OutOfService => self.out_of_service += n,
        }
    }

    fn plus(mut self, other: Counts) -> Counts {
        self.spots += other.spots;
        self.free += other.free;
        self.occupied += other.occupied;
        self.held += other.held;
        self.unknown += other.unknown;
        self.out_of_service += other.out_of_service;
        self
    }
}

/// Spots one vehicle type may use, and how many of them are free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VehicleAvailability {
    /// Spots of every kind this vehicle may use.
    pub spots: i64,
    /// Of them, free now.
    pub free: i64,
}

/// Spots by (kind, state): 30 atomics.
#[derive(Debug, Default)]
struct Grid([[AtomicI64; 5]; 6]);

impl Grid {
    fn add(&self, kind: SpotKind, state: SpotState, delta: i64) {
        self.0[kind.index()][state.index()].fetch_add(delta, Ordering::Relaxed);
    }

    fn kind(&self, kind: SpotKind) -> Counts {
        let mut counts = Counts::default();
        for state in SpotState::ALL {
            counts.add_state(
                state,
                self.0[kind.index()][state.index()].load(Ordering::Relaxed),
            );
        }
        counts
    }

    fn by_kind(&self) -> [Counts; 6] {
        SpotKind::ALL.map(|kind| self.kind(kind))
    }
}

fn total_of(by_kind: &[Counts; 6]) -> Counts {
    by_kind
        .iter()
        .fold(Counts::default(), |sum, c| sum.plus(*c))
}

fn vehicles_of(by_kind: &[Counts; 6]) -> BTreeMap<VehicleType, VehicleAvailability> {
    VehicleType::ALL
        .into_iter()
        .map(|vehicle| {
            let mut availability = VehicleAvailability::default();
            for kind in vehicle.kinds() {
                availability.spots += by_kind[kind.index()].spots;
                availability.free += by_kind[kind.index()].free;
            }
            (vehicle, availability)
        })
        .collect()
}

fn free_of(by_kind: &[Counts; 6]) -> BTreeMap<VehicleType, i64> {
    VehicleType::ALL
        .into_iter()
        .map(|vehicle| {
            let free = SpotKind::ALL
                .into_iter()
                .filter(|kind| fits(vehicle, *kind))
                .map(|kind| by_kind[kind.index()].free)
                .sum();
            (vehicle, free)
        })
        .collect()
}

/// One spot as the feed and the API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpotView {
    /// The spot.
    pub id: SpotId,
    /// Its state.
    pub state: SpotState,
    /// When it entered that state.
    pub since: DateTime<Utc>,
    /// Its newest sensor reading's receive time.
    pub updated_at: Option<DateTime<Utc>>,
    /// The lot sequence number of its last change (0: none since the engine started).
    pub v: u64,
}

/// One spot changed. Serialised once, however many subscribers send it ([`Delta::json`]).
#[derive(Debug, Serialize)]
pub struct Delta {
    #[serde(rename = "type")]
    kind: &'static str,
    /// The lot.
    pub lot: LotId,
    /// Its sequence number: the lot's previous delta has `seq - 1`.
    pub seq: u64,
    /// When the change happened.
    pub at: DateTime<Utc>,
    /// The lot's newest sensor message (reading or heartbeat).
    pub updated_at: Option<DateTime<Utc>>,
    /// The spot after the change.
    pub spot: SpotView,
    /// The lot's counts after the change.
    pub total: Counts,
    /// Free spots per vehicle type after the change.
    pub free_by_vehicle: BTreeMap<VehicleType, i64>,
    #[serde(skip)]
    json: OnceLock<bytes::Bytes>,
}

impl Delta {
    /// The delta as UTF-8 JSON, computed on first use and shared (cloning is a refcount).
    pub fn json(&self) -> bytes::Bytes {
        self.json
            .get_or_init(|| bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default()))
            .clone()
    }
}

/// A lot's whole live state at one sequence number.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    #[serde(rename = "type")]
    kind: &'static str,
    /// Why it was sent (`lagged`, `resync`, `reloaded`), absent for the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The lot.
    pub lot: LotId,
    /// Every delta with a higher `seq` follows it.
    pub seq: u64,
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// The lot's newest sensor message (reading or heartbeat).
    pub updated_at: Option<DateTime<Utc>>,
    /// The lot's counts.
    pub total: Counts,
    /// Free spots per vehicle type.
    pub free_by_vehicle: BTreeMap<VehicleType, i64>,
    /// Every spot.
    pub spots: Vec<SpotView>,
}

/// Counts for a level or a zone.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(bound = ""))]
pub struct AreaAvailability<Id> {
    /// The level or zone.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: Id,
    /// Its counts.
    pub total: Counts,
    /// Per vehicle type.
    pub by_vehicle: BTreeMap<VehicleType, VehicleAvailability>,
}

/// A lot's availability, from the counters.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Availability {
    /// The lot.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub lot: LotId,
    /// When this was read.
    pub as_of: DateTime<Utc>,
    /// The lot's newest sensor message (reading or heartbeat).
    pub updated_at: Option<DateTime<Utc>>,
    /// The lot's sequence number when this was read.
    pub seq: u64,
    /// The lot's counts.
    pub total: Counts,
    /// Per vehicle type, by the compatibility table.
    pub by_vehicle: BTreeMap<VehicleType, VehicleAvailability>,
    /// Per spot kind.
    pub by_kind: BTreeMap<SpotKind, Counts>,
    /// Per level.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<AreaAvailability<String>>))]
    pub levels: Vec<AreaAvailability<LevelId>>,
    /// Per zone.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<AreaAvailability<String>>))]
    pub zones: Vec<AreaAvailability<ZoneId>>,
}

/// A lot's headline figures.
#[derive(Debug, Clone, Serialize)]
pub struct LotFigures {
    /// The lot's counts.
    pub total: Counts,
    /// Free spots per vehicle type.
    pub free_by_vehicle: BTreeMap<VehicleType, i64>,
    /// The lot's newest sensor message (reading or heartbeat).
    pub updated_at: Option<DateTime<Utc>>,
    /// The lot's sequence number.
    pub seq: u64,
}

/// What became of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The spot's state changed from the first to the second.
    Changed(SpotState, SpotState),
    /// Recorded; the visible state did not change.
    Unchanged,
    /// No such lot in the model.
    UnknownLot,
    /// No such spot in the lot.
    UnknownSpot,
}

#[derive(Debug)]
struct SpotSlot {
    machine: SpotMachine,
    kind: SpotKind,
    level: usize,
    zone: Option<usize>,
    v: u64,
}

/// Identifies everything [`OccupancyEngine::availability`] reports about a lot except `as_of`:
/// equal versions mean equal answers, so an answer rendered once can be served again while
/// the version stands. Any spot change, sensor message (it moves `updated_at`) or model
/// reload gives a new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LotVersion {
    generation: u64,
    seq: u64,
    newest_ms: i64,
}

impl LotVersion {
    /// Whether `self` was taken after `other` (versions of one lot only grow).
    pub fn is_newer_than(&self, other: &Self) -> bool {
        (self.generation, self.seq, self.newest_ms) > (other.generation, other.seq, other.newest_ms)
    }
}

/// One lot, live.
#[derive(Debug)]
struct LotLive {
    /// Unique per installed model in this engine.
    generation: u64,
    model: Arc<Lot>,
    spots: DashMap<SpotId, SpotSlot>,
    total: Grid,
    levels: Vec<Grid>,
    zones: Vec<Grid>,
    /// Newest message from any of the lot's sensors (reading or heartbeat), Unix ms;
    /// `i64::MIN` for none.
    newest_ms: AtomicI64,
    /// Guards sequence assignment and sending, so deltas leave in `seq` order.
    seq: Mutex<u64>,
    feed: broadcast::Sender<Arc<Delta>>,
}

impl LotLive {
    fn grids(&self, slot: &SpotSlot) -> impl Iterator<Item = &Grid> {
        std::iter::once(&self.total)
            .chain(self.levels.get(slot.level))
            .chain(slot.zone.and_then(|zone| self.zones.get(zone)))
    }

    fn move_counts(&self, slot: &SpotSlot, before: SpotState, after: SpotState) {
        for grid in self.grids(slot) {
            grid.add(slot.kind, before, -1);
            grid.add(slot.kind, after, 1);
        }
    }

    fn updated_at(&self) -> Option<DateTime<Utc>> {
        match self.newest_ms.load(Ordering::Relaxed) {
            i64::MIN => None,
            ms => DateTime::from_timestamp_millis(ms),
        }
    }

    fn version(&self) -> LotVersion {
        // The sequence number before the sensor time: a change moves the counters first and
        // then the sequence, so figures read after this are at least as new as the version.
        let seq = self.current_seq();
        LotVersion {
            generation: self.generation,
            seq,
            newest_ms: self.newest_ms.load(Ordering::Acquire),
        }
    }

    fn current_seq(&self) -> u64 {
        *self
            .seq
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a change of `slot` (still locked by the caller) and broadcasts it.
    fn emit(&self, id: &SpotId, slot: &mut SpotSlot, before: SpotState, at: DateTime<Utc>) {
        let after = slot.machine.state();
        self.move_counts(slot, before, after);
        let mut seq = self
            .seq
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *seq += 1;
        slot.v = *seq;
        if self.feed.receiver_count() == 0 {
            return;
        }
        let by_kind = self.total.by_kind();
        let delta = Delta {
            kind: "delta",
            lot: self.model.id.clone(),
            seq: *seq,
            at,
            updated_at: self.updated_at(),
            spot: view(id, slot),
            total: total_of(&by_kind),
            free_by_vehicle: free_of(&by_kind),
            json: OnceLock::new(),
        };
        // Only fails without receivers, checked above (a race with the last one leaving is fine).
        let _ = self.feed.send(Arc::new(delta));
    }

    fn note_sensor(&self, at: DateTime<Utc>) {
        self.newest_ms
            .fetch_max(at.timestamp_millis(), Ordering::Release);
    }
}

fn view(id: &SpotId, slot: &SpotSlot) -> SpotView {
    SpotView {
        id: id.clone(),
        state: slot.machine.state(),
        since: slot.machine.since(),
        updated_at: slot.machine.updated_at(),
        v: slot.v,
    }
}

/// The live state of every modelled spot.
#[derive(Debug)]
pub struct OccupancyEngine {
    settings: EngineSettings,
    lots: DashMap<LotId, Arc<LotLive>>,
    generations: AtomicU64,
    unknown_lot: AtomicU64,
    unknown_spot: AtomicU64,
}

impl Default for OccupancyEngine {
    fn default() -> Self {
        Self::new(EngineSettings::default())
    }
}

impl OccupancyEngine {
    /// An engine with no lots.
    pub fn new(settings: EngineSettings) -> Self {
        Self {
            settings,
            lots: DashMap::new(),
            generations: AtomicU64::new(0),
            unknown_lot: AtomicU64::new(0),
            unknown_spot: AtomicU64::new(0),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Installs or replaces a lot's model. Spots that remain keep their live state; new spots
    /// start unknown. Subscribers of a replaced lot see their feed close and must resubscribe.
    pub fn install_lot(&self, lot: Lot, now: DateTime<Utc>) {
        let previous = self.lots.get(&lot.id).map(|entry| entry.value().clone());
        let (feed, _) = broadcast::channel(self.settings.feed_capacity.max(1));
        let live = LotLive {
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            spots: DashMap::with_capacity(lot.spots.len()),
            total: Grid::default(),
            levels: lot.levels.iter().map(|_| Grid::default()).collect(),
            zones: lot.zones.iter().map(|_| Grid::default()).collect(),
            newest_ms: AtomicI64::new(
                previous
                    .as_ref()
                    .map_or(i64::MIN, |p| p.newest_ms.load(Ordering::Relaxed)),
            ),
            seq: Mutex::new(previous.as_ref().map_or(0, |p| p.current_seq())),
            feed,
            model: Arc::new(lot),
        };
        for spot in &live.model.spots {
            let level = live
                .model
                .levels
                .iter()
                .position(|level| level.id == spot.level)
                .unwrap_or(0);
            let zone = spot
                .zone
                .as_ref()
                .and_then(|zone| live.model.zones.iter().position(|z| &z.id == zone));
            let (mut machine, v) = previous
                .as_ref()
                .and_then(|p| {
                    p.spots
                        .get(&spot.id)
                        .map(|slot| (slot.machine.clone(), slot.v))
                })
                .unwrap_or_else(|| (SpotMachine::new(spot.out_of_service, now), 0));
            machine.set_out_of_service(spot.out_of_service, now);
            let slot = SpotSlot {
                machine,
                kind: spot.kind,
                level,
                zone,
                v,
            };
            for grid in live.grids(&slot) {
                grid.add(slot.kind, slot.machine.state(), 1);
            }
            live.spots.insert(spot.id.clone(), slot);
        }
        self.lots.insert(live.model.id.clone(), Arc::new(live));
    }

    /// Removes a lot. Its subscribers' feeds close.
    pub fn remove_lot(&self, lot: &LotId) -> bool {
        self.lots.remove(lot).is_some()
    }

    /// The lot's [`LotVersion`]: cheap (a lock-free map read and a short mutex).
    pub fn version(&self, lot: &LotId) -> Option<LotVersion> {
        self.lot(lot).map(|live| live.version())
    }

    fn lot(&self, lot: &LotId) -> Option<Arc<LotLive>> {
        self.lots.get(lot).map(|entry| entry.value().clone())
    }

    /// Runs `f` on one spot's machine; emits the change if the state moved.
    fn with_spot(
        &self,
        lot: &LotId,
        spot: &SpotId,
        at: DateTime<Utc>,
        from_sensor: bool,
        f: impl FnOnce(&mut SpotMachine) -> Option<SpotState>,
    ) -> Applied {
        let Some(live) = self.lot(lot) else {
            self.unknown_lot.fetch_add(1, Ordering::Relaxed);
            return Applied::UnknownLot;
        };
        let Some(mut slot) = live.spots.get_mut(spot) else {
            self.unknown_spot.fetch_add(1, Ordering::Relaxed);
            return Applied::UnknownSpot;
        };
        if from_sensor {
            live.note_sensor(at);
        }
        match f(&mut slot.machine) {
            Some(before) => {
                let after = slot.machine.state();
                live.emit(spot, &mut slot, before, at);
                Applied::Changed(before, after)
            }
            None => Applied::Unchanged,
        }
    }

    /// A sensor reading, received at `at`.
    pub fn apply(&self, lot: &LotId, spot: &SpotId, occupied: bool, at: DateTime<Utc>) -> Applied {
        let settings = self.settings.machine;
        self.with_spot(lot, spot, at, true, |machine| {
            machine.reading(occupied, at, &settings)
        })
    }

    /// A heartbeat from the spot's sensor, received at `at`. It moves the lot's `updated_at`
    /// (the sensors are alive, so the counts are current) but not the spot's.
    pub fn heard(&self, lot: &LotId, spot: &SpotId, at: DateTime<Utc>) -> Applied {
        self.with_spot(lot, spot, at, true, |machine| machine.heard(at))
    }

    /// Holds a spot for a reservation, or releases it.
    pub fn set_held(&self, lot: &LotId, spot: &SpotId, held: bool, now: DateTime<Utc>) -> Applied {
        self.with_spot(lot, spot, now, false, |machine| machine.set_held(held, now))
    }

    /// Closes a spot, or reopens it.
    pub fn set_out_of_service(
        &self,
        lot: &LotId,
        spot: &SpotId,
        out_of_service: bool,
        now: DateTime<Utc>,
    ) -> Applied {
        self.with_spot(lot, spot, now, false, |machine| {
            machine.set_out_of_service(out_of_service, now)
        })
    }

    /// The passage of time: applies due debounces and marks silent sensors stale. O(spots);
    /// call it about once a second. Returns how many spots changed.
    pub fn tick(&self, now: DateTime<Utc>) -> usize {
        let settings = self.settings.machine;
        let lots: Vec<Arc<LotLive>> = self.lots.iter().map(|e| e.value().clone()).collect();
        let mut changed = 0;
        for live in lots {
            for mut entry in live.spots.iter_mut() {
                if !entry.machine.wants_tick(now, &settings) {
                    continue;
                }
                let (id, slot) = entry.pair_mut();
                if let Some(before) = slot.machine.tick(now, &settings) {
                    live.emit(id, slot, before, now);
                    changed += 1;
                }
            }
        }
        changed
    }

    /// Inputs refused because their lot or spot is not modelled: (unknown lot, unknown spot).
    pub fn rejected(&self) -> (u64, u64) {
        (
            self.unknown_lot.load(Ordering::Relaxed),
            self.unknown_spot.load(Ordering::Relaxed),
        )
    }

    /// The ids of every lot, sorted.
    pub fn lot_ids(&self) -> Vec<LotId> {
        let mut ids: Vec<LotId> = self.lots.iter().map(|e| e.key().clone()).collect();
        ids.sort();
        ids
    }

    /// A lot's model.
    pub fn model(&self, lot: &LotId) -> Option<Arc<Lot>> {
        self.lot(lot).map(|live| live.model.clone())
    }

    /// A lot's headline figures. O(1).
    pub fn figures(&self, lot: &LotId) -> Option<LotFigures> {
        let live = self.lot(lot)?;
        let seq = live.current_seq();
        let by_kind = live.total.by_kind();
        Some(LotFigures {
            total: total_of(&by_kind),
            free_by_vehicle: free_of(&by_kind),
            updated_at: live.updated_at(),
            seq,
        })
    }

    /// A lot's counts. O(1).
    pub fn counts(&self, lot: &LotId) -> Option<Counts> {
        self.lot(lot).map(|live| total_of(&live.total.by_kind()))
    }

    /// A lot's availability by vehicle type, kind, level and zone. O(levels + zones).
    pub fn availability(&self, lot: &LotId, now: DateTime<Utc>) -> Option<Availability> {
        self.versioned_availability(lot, now)
            .map(|(_, availability)| availability)
    }

    /// [`availability`](Self::availability) with the [`LotVersion`] it is at least as new as:
    /// a cache keyed by the version never serves figures older than the version says.
    pub fn versioned_availability(
        &self,
        lot: &LotId,
        now: DateTime<Utc>,
    ) -> Option<(LotVersion, Availability)> {
        let live = self.lot(lot)?;
        let version = live.version();
        let by_kind = live.total.by_kind();
        let area = |grid: &Grid| {
            let by_kind = grid.by_kind();
            (total_of(&by_kind), vehicles_of(&by_kind))
        };
        let availability = Availability {
            lot: lot.clone(),
            as_of: now,
            updated_at: live.updated_at(),
            seq: version.seq,
            total: total_of(&by_kind),
            by_vehicle: vehicles_of(&by_kind),
            by_kind: SpotKind::ALL
                .into_iter()
                .map(|kind| (kind, by_kind[kind.index()]))
                .collect(),
            levels: live
                .model
                .levels
                .iter()
                .zip(&live.levels)
                .map(|(level, grid)| {
                    let (total, by_vehicle) = area(grid);
                    AreaAvailability {
                        id: level.id.clone(),
                        total,
                        by_vehicle,
                    }
                })
                .collect(),
            zones: live
                .model
                .zones
                .iter()
                .zip(&live.zones)
                .map(|(zone, grid)| {
                    let (total, by_vehicle) = area(grid);
                    AreaAvailability {
                        id: zone.id.clone(),
                        total,
                        by_vehicle,
                    }
                })
                .collect(),
        };
        Some((version, availability))
    }

    /// One spot.
    pub fn spot(&self, lot: &LotId, spot: &SpotId) -> Option<SpotView> {
        let live = self.lot(lot)?;
        live.spots.get(spot).map(|slot| view(spot, &slot))
    }

    /// Every spot of a lot, in model order, with the sequence number they are consistent with
    /// (see the module documentation). O(spots).
    pub fn snapshot(
        &self,
        lot: &LotId,
        now: DateTime<Utc>,
        reason: Option<&'static str>,
    ) -> Option<Snapshot> {
        let live = self.lot(lot)?;
        let seq = live.current_seq();
        let spots = live
            .model
            .spots
            .iter()
            .filter_map(|spot| live.spots.get(&spot.id).map(|slot| view(&spot.id, &slot)))
            .collect();
        let by_kind = live.total.by_kind();
        Some(Snapshot {
            kind: "snapshot",
            reason,
            lot: lot.clone(),
            seq,
            at: now,
            updated_at: live.updated_at(),
            total: total_of(&by_kind),
            free_by_vehicle: free_of(&by_kind),
            spots,
        })
    }

    /// Subscribes to a lot's deltas. Subscribe *before* taking the snapshot.
    pub fn subscribe(&self, lot: &LotId) -> Option<broadcast::Receiver<Arc<Delta>>> {
        self.lot(lot).map(|live| live.feed.subscribe())
    }

    /// A lot's current sequence number.
    pub fn seq(&self, lot: &LotId) -> Option<u64> {
        self.lot(lot).map(|live| live.current_seq())
    }

    /// Counts a lot's spots from their states, ignoring the counters: (lot, per level, per
    /// zone) by kind. O(spots); tests and self-checks.
    pub fn recount(&self, lot: &LotId) -> Option<Recount> {
        let live = self.lot(lot)?;
        let mut recount = Recount {
            total: [Counts::default(); 6],
            levels: vec![[Counts::default(); 6]; live.levels.len()],
            zones: vec![[Counts::default(); 6]; live.zones.len()],
        };
        for slot in live.spots.iter() {
            let state = slot.machine.state();
            recount.total[slot.kind.index()].add_state(state, 1);
            if let Some(level) = recount.levels.get_mut(slot.level) {
                level[slot.kind.index()].add_state(state, 1);
            }
            if let Some(zone) = slot.zone.and_then(|z| recount.zones.get_mut(z)) {
                zone[slot.kind.index()].add_state(state, 1);
            }
        }
        Some(recount)
    }

    /// The counters as [`OccupancyEngine::recount`] shapes them, for comparison.
    pub fn counters(&self, lot: &LotId) -> Option<Recount> {
        let live = self.lot(lot)?;
        Some(Recount {
            total: live.total.by_kind(),
            levels: live.levels.iter().map(Grid::by_kind).collect(),
            zones: live.zones.iter().map(Grid::by_kind).collect(),
        })
    }
}

/// Counts by kind for a lot, its levels and its zones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recount {
    /// The lot, by kind.
    pub total: [Counts; 6],
    /// Each level, by kind.
    pub levels: Vec<[Counts; 6]>,
    /// Each zone, by kind.
    pub zones: Vec<[Counts; 6]>,
}

#[cfg(test)]
mod tests;
