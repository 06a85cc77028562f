//! Persistence for parkd, behind traits, with two backends:
//!
//! - [`sqlite`]: embedded, the default; one file under the data directory. Calls run on
//!   blocking threads, never on the async workers.
//! - [`postgres`]: PostgreSQL 15+ through tokio-postgres and deadpool; telemetry is written with
//!   binary `COPY`. When the `timescaledb` extension is available, telemetry tables become
//!   hypertables with compression, retention and an hourly continuous aggregate; without it
//!   the same migrations succeed on plain PostgreSQL (ordinary indexes and a plain view).
//!
//! Migrations live in `sql/` at the repository root and are embedded in the binary.
//! Every backend passes the same conformance suite (`tests/conformance.rs`).
//!
//! This crate must not know about MQTT, HTTP or the ingest pipeline: it stores rows.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parkd_core::account::{Email, Plate, Role, VehicleProfile};
use parkd_core::garage::Lot;
use parkd_core::ids::{DeviceId, GateId, LotId, SpotId};
use parkd_core::reservation::ReservationState;
use parkd_core::tariff::Currency;
use parkd_core::vehicle::VehicleType;

mod common;
pub mod postgres;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

/// Errors from any backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or the connection broke.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A migration failed; the database is left at the previous version.
    #[error("migration {version} failed: {message}")]
    Migration {
        /// The migration that failed.
        version: i64,
        /// Why.
        message: String,
    },
    /// A value read back from the database does not parse (a bug or a hand edit).
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A uniqueness or foreign-key rule refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A refund would take a payment's refunded amount above what it captured (a payment
    /// that has not succeeded has captured nothing). Nothing was written. Distinct from
    /// [`StoreError::Conflict`] so that the API can tell the customer how much is left.
    #[error(
        "refund of {requested_minor} refused: payment {payment_id} has {refundable_minor} left to refund"
    )]
    RefundExceedsCapture {
        /// The payment.
        payment_id: String,
        /// The refund asked for, in minor units.
        requested_minor: i64,
        /// What the payment had left to refund when the refund was refused.
        refundable_minor: i64,
    },
    /// Another payment for the same parking session or reservation is still open (created,
    /// requires action, processing or of unknown outcome): at most one may be in flight, or
    /// two payments of one bill could both succeed. Nothing was written.
    #[error("payment {payment_id} for the same bill is still {}", status.as_str())]
    PaymentInProgress {
        /// The open payment.
        payment_id: String,
        /// Where it stands.
        status: PaymentStatus,
    },
    /// The idempotency key of the write is already recorded (answered, still running, or used
    /// for another request): nothing was written. [`IdempotencyStore::idempotent_lookup`]
    /// tells which.
    #[error("idempotency key already recorded")]
    IdempotencyKeyTaken,
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// What kind of device a registry entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// A spot occupancy sensor, bound to one spot.
    Sensor,
    /// A gate controller, bound to one gate.
    Gate,
    /// A read-only integration (may subscribe to anything, publish nothing).
    Observer,
}

impl DeviceKind {
    /// The stored and configured name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Sensor => "sensor",
            DeviceKind::Gate => "gate",
            DeviceKind::Observer => "observer",
        }
    }

    /// Parses the stored name.
    pub fn parse(raw: &str) -> Option<DeviceKind> {
        match raw {
            "sensor" => Some(DeviceKind::Sensor),
            "gate" => Some(DeviceKind::Gate),
            "observer" => Some(DeviceKind::Observer),
            _ => None,
        }
    }
}

/// What a device is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceBinding {
    /// A sensor over one spot.
    Spot {
        /// The lot.
        lot: LotId,
        /// The spot.
        spot: SpotId,
    },
    /// A gate controller.
    Gate {
        /// The lot.
        lot: LotId,
        /// The gate.
        gate: GateId,
    },
    /// An observer, bound to nothing.
    Observer,
}

impl DeviceBinding {
    /// The kind of device this binding implies.
    pub fn kind(&self) -> DeviceKind {
        match self {
            DeviceBinding::Spot { .. } => DeviceKind::Sensor,
            DeviceBinding::Gate { .. } => DeviceKind::Gate,
            DeviceBinding::Observer => DeviceKind::Observer,
        }
    }
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its id, which is also its MQTT client id and username.
    pub id: DeviceId,
    /// What it is bound to.
    pub binding: DeviceBinding,
    /// SHA-256 of its secret; `None` for a device that may not log in (anonymous demo only).
    pub secret_sha256: Option<[u8; 32]>,
    /// A disabled device may not connect and its messages are rejected.
    pub disabled: bool,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

/// One occupancy reading, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpotReading {
    /// When the platform received it (the time-series dimension: device clocks lie).
    pub received_at: DateTime<Utc>,
    /// When the device says it measured, if plausible.
    pub device_ts: Option<DateTime<Utc>>,
    /// The lot.
    pub lot: LotId,
    /// The spot.
    pub spot: SpotId,
    /// The device that published it.
    pub device: DeviceId,
    /// Occupied or free.
    pub occupied: bool,
    /// The device's counter, if it sent one.
    pub seq: Option<i64>,
    /// Battery in millivolts.
    pub battery_mv: Option<i32>,
    /// Signal strength in dBm.
    pub rssi: Option<i16>,
}

/// One heartbeat, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRow {
    /// When the platform received it.
    pub received_at: DateTime<Utc>,
    /// When the device says it sent it, if plausible.
    pub device_ts: Option<DateTime<Utc>>,
    /// The device.
    pub device: DeviceId,
    /// Battery in millivolts.
    pub battery_mv: Option<i32>,
    /// Signal strength in dBm.
    pub rssi: Option<i16>,
    /// Seconds since boot.
    pub uptime_s: Option<i64>,
    /// Firmware version.
    pub firmware: Option<String>,
}

/// A device going online or offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// When the platform received it.
    pub received_at: DateTime<Utc>,
    /// The device.
    pub device: DeviceId,
    /// Online or offline.
    pub online: bool,
}

/// What one ingest flush writes, in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryBatch {
    /// Occupancy readings.
    pub readings: Vec<SpotReading>,
    /// Heartbeats.
    pub heartbeats: Vec<HeartbeatRow>,
    /// Online/offline changes.
    pub statuses: Vec<StatusChange>,
}

impl TelemetryBatch {
    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.readings.len() + self.heartbeats.len() + self.statuses.len()
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The last known state of a spot, kept so the live engine can restore at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpotLatest {
    /// The lot.
    pub lot: LotId,
    /// The spot.
    pub spot: SpotId,
    /// Occupied or free.
    pub occupied: bool,
    /// When it was received.
    pub received_at: DateTime<Utc>,
}

/// The last known connectivity of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatusRow {
    /// The device.
    pub device: DeviceId,
    /// Online or offline.
    pub online: bool,
    /// When that was last reported.
    pub changed_at: DateTime<Utc>,
}

/// The device registry.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Registers a device or replaces its binding and secret. A new device is stored as given;
    /// for an existing one `disabled` and `created_at` are kept (see
    /// [`DeviceStore::set_device_disabled`]). A second sensor on the same spot, or a second
    /// controller on the same gate, is a [`StoreError::Conflict`].
    async fn upsert_device(&self, device: &Device) -> StoreResult<()>;
    /// Looks a device up by id.
    async fn device(&self, id: &DeviceId) -> StoreResult<Option<Device>>;
    /// Every device, ordered by id.
    async fn devices(&self) -> StoreResult<Vec<Device>>;
    /// Enables or disables a device; `false` when no such device exists.
    async fn set_device_disabled(&self, id: &DeviceId, disabled: bool) -> StoreResult<bool>;
    /// Removes a device; `false` when no such device exists. Its telemetry is kept.
    async fn delete_device(&self, id: &DeviceId) -> StoreResult<bool>;
}

/// Telemetry: append-mostly time series plus the latest state per spot and device.
#[async_trait]
pub trait TelemetryStore: Send + Sync {
    /// Writes a whole batch in one transaction: every row or none. Also updates the latest
    /// state per spot (a newer `received_at` wins) and per device.
    async fn write_batch(&self, batch: &TelemetryBatch) -> StoreResult<()>;
    /// The latest state of every spot that ever reported.
    async fn latest_spot_states(&self) -> StoreResult<Vec<SpotLatest>>;
    /// The latest connectivity of every device that ever reported.
    async fn device_statuses(&self) -> StoreResult<Vec<DeviceStatusRow>>;
    /// The newest readings of a spot, newest first.
    async fn spot_readings(
        &self,
        lot: &LotId,
        spot: &SpotId,
        limit: u32,
    ) -> StoreResult<Vec<SpotReading>>;
    /// Total rows in the readings table (tests and benchmarks).
    async fn count_readings(&self) -> StoreResult<u64>;
    /// Deletes raw telemetry received before `before`, unless the database enforces retention
    /// itself (TimescaleDB policy), in which case it returns 0. Returns rows deleted.
    async fn enforce_retention(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

/// A whole store: registry, telemetry and health.
/// The garage model: lots with their levels, zones and spots.
#[async_trait]
pub trait GarageStore: Send + Sync {
    /// Creates or replaces a lot (validated by the caller) and its spots in one transaction:
    /// spots no longer in the document are deleted. Returns the lot's new version (1 for a new
    /// lot, then +1 per replacement).
    async fn put_lot(&self, lot: &Lot) -> StoreResult<i64>;
    /// One lot, whole.
    async fn lot(&self, id: &LotId) -> StoreResult<Option<Lot>>;
    /// Every lot, whole, by id.
    async fn lots(&self) -> StoreResult<Vec<Lot>>;
    /// Every lot's id and version, by id (cheap: to notice changes).
    async fn lot_versions(&self) -> StoreResult<Vec<(LotId, i64)>>;
    /// Deletes a lot and its spots; `false` if there was none.
    async fn delete_lot(&self, id: &LotId) -> StoreResult<bool>;
}

/// An account, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Random id (UUID v4 text).
    pub id: String,
    /// Normalised e-mail, unique.
    pub email: Email,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// What it may do.
    pub role: Role,
    /// Optional display name.
    pub display_name: String,
    /// Refused at login and for every session.
    pub disabled: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its password last changed.
    pub password_changed_at: DateTime<Utc>,
}

/// A login session, as stored (the token itself is never stored, only its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Random id, shown to the user to revoke it.
    pub id: String,
    /// Whose.
    pub user_id: String,
    /// SHA-256 of the bearer token.
    pub token_sha256: [u8; 32],
    /// Login time.
    pub created_at: DateTime<Utc>,
    /// Last request (updated at most once a minute).
    pub last_seen_at: DateTime<Utc>,
    /// Absolute expiry.
    pub expires_at: DateTime<Utc>,
    /// The client's User-Agent at login (truncated).
    pub user_agent: String,
    /// The client's address at login.
    pub ip: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why: `logout`, `password_changed`, `disabled`, `revoked`.
    pub revoked_reason: Option<String>,
}

/// A driver's vehicle, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VehicleRow {
    /// Random id.
    pub id: String,
    /// Whose.
    pub user_id: String,
    /// Its plate.
    pub plate: Plate,
    /// Body, EV, permit.
    pub profile: VehicleProfile,
    /// The driver's name for it.
    pub label: String,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// Accounts, sessions and vehicles.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account; [`StoreError::Conflict`] if the e-mail is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    /// One account by id.
    async fn user(&self, id: &str) -> StoreResult<Option<User>>;
    /// One account by e-mail.
    async fn user_by_email(&self, email: &Email) -> StoreResult<Option<User>>;
    /// Every account, by e-mail.
    async fn users(&self) -> StoreResult<Vec<User>>;
    /// Replaces the password hash and, in the same transaction, revokes every session of the
    /// account not revoked and not past its absolute expiry, except `keep` (reason
    /// `password_changed`). Returns how many it revoked;
    /// [`StoreError::Conflict`] if there is no such account.
    async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        at: DateTime<Utc>,
        keep: Option<&str>,
    ) -> StoreResult<u64>;
    /// Disables (revoking every session, reason `disabled`) or enables an account; `false`
    /// if there is none.
    async fn set_user_disabled(
        &self,
        user_id: &str,
        disabled: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Changes an account's role; `false` if there is none.
    async fn set_role(&self, user_id: &str, role: Role) -> StoreResult<bool>;
    /// Records a new session.
    async fn create_session(&self, session: &SessionRow) -> StoreResult<()>;
    /// The session with this token hash (revoked or not) and its account.
    async fn session_by_token(
        &self,
        token_sha256: &[u8; 32],
    ) -> StoreResult<Option<(SessionRow, User)>>;
    /// Moves a session's `last_seen_at`.
    async fn touch_session(&self, session_id: &str, at: DateTime<Utc>) -> StoreResult<()>;
    /// Revokes one of `user_id`'s sessions; `false` if it has no such active session.
    async fn revoke_session(
        &self,
        user_id: &str,
        session_id: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<bool>;
    /// An account's sessions not revoked and not past their absolute expiry at `now`.
    async fn active_sessions(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionRow>>;
    /// Adds a vehicle; [`StoreError::Conflict`] if the driver has one with that plate.
    async fn add_vehicle(&self, vehicle: &VehicleRow) -> StoreResult<()>;
    /// A driver's vehicles, oldest first.
    async fn vehicles(&self, user_id: &str) -> StoreResult<Vec<VehicleRow>>;
    /// Removes one of a driver's vehicles; `false` if it has none with that id.
    async fn delete_vehicle(&self, user_id: &str, vehicle_id: &str) -> StoreResult<bool>;
}

/// A reservation, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRow {
    /// Random id.
    pub id: String,
    /// A short code for the gate's reader and the QR code; unique.
    pub code: String,
    /// Whose.
    pub user_id: String,
    /// The vehicle it was made for, if registered.
    pub vehicle_id: Option<String>,
    /// The plate key (letters and digits) at creation, for plate readers.
    pub plate_key: String,
    /// What it needs.
    pub vehicle_type: VehicleType,
    /// Where.
    pub lot: LotId,
    /// Which spot.
    pub spot: SpotId,
    /// Expected entry.
    pub starts_at: DateTime<Utc>,
    /// Expected exit.
    pub ends_at: DateTime<Utc>,
    /// Where it is in its life.
    pub state: ReservationState,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// The answer of an idempotent request under a key not yet recorded, written with its key in
/// the same transaction as the write it answers: a reservation never exists without the
/// answer a retry of its request replays, and a key that is already recorded (answered, still
/// running, or used for another request) refuses the write with
/// [`StoreError::IdempotencyKeyTaken`].
#[derive(Debug, Clone, Copy)]
pub struct IdempotentAnswer<'a> {
    /// Whose key.
    pub user_id: &'a str,
    /// The `Idempotency-Key`.
    pub key: &'a str,
    /// What kind of request (e.g. `POST /api/v1/reservations`): a key is good for one.
    pub scope: &'a str,
    /// The hash of the request's canonical body: a retry must send the same.
    pub request_sha256: &'a [u8; 32],
    /// The HTTP status answered.
    pub status: u16,
    /// The body answered.
    pub body: &'a str,
    /// When.
    pub at: DateTime<Utc>,
}

/// Where and when a reservation holds its spot: what allocation needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldingSpan {
    /// The reservation.
    pub id: String,
    /// Its spot.
    pub spot: SpotId,
    /// Expected entry.
    pub starts_at: DateTime<Utc>,
    /// Expected exit.
    pub ends_at: DateTime<Utc>,
}

impl HoldingSpan {
    /// Where and when `reservation` is.
    pub fn of(reservation: &ReservationRow) -> Self {
        Self {
            id: reservation.id.clone(),
            spot: reservation.spot.clone(),
            starts_at: reservation.starts_at,
            ends_at: reservation.ends_at,
        }
    }
}

/// Reservations. No two reservations that hold a spot overlap on it: the store refuses such a
/// write with [`StoreError::Conflict`], atomically, however many writers race.
#[async_trait]
pub trait ReservationStore: Send + Sync {
    /// Records a reservation; [`StoreError::Conflict`] if it holds its spot and overlaps
    /// another holding reservation of that spot (or its id or code is taken). With `answer`,
    /// records its idempotency key with that answer in the same transaction, or refuses with
    /// [`StoreError::IdempotencyKeyTaken`] if the key is already recorded (nothing is written
    /// on either refusal). A concurrent writer of the same key waits for the first to end.
    async fn create_reservation(
        &self,
        reservation: &ReservationRow,
        answer: Option<IdempotentAnswer<'_>>,
    ) -> StoreResult<()>;
    /// One reservation.
    async fn reservation(&self, id: &str) -> StoreResult<Option<ReservationRow>>;
    /// The reservation with this gate code.
    async fn reservation_by_code(&self, code: &str) -> StoreResult<Option<ReservationRow>>;
    /// A driver's reservations, newest start first, at most `limit`.
    async fn reservations_of(&self, user_id: &str, limit: u32) -> StoreResult<Vec<ReservationRow>>;
    /// The reservations of a lot that hold their spot and overlap `[from, to)`.
    async fn holding_between(
        &self,
        lot: &LotId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<ReservationRow>>;
    /// Like [`holding_between`](Self::holding_between), only where and when (no other
    /// column), of one spot or of the whole lot.
    async fn holding_spans(
        &self,
        lot: &LotId,
        spot: Option<&SpotId>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<HoldingSpan>>;
    /// Moves a reservation to `to` if it is in one of `from`; `false` if it was not.
    async fn transition_reservation(
        &self,
        id: &str,
        from: &[ReservationState],
        to: ReservationState,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Moves a holding reservation to new times (modify, extend), refusing an overlap with
    /// [`StoreError::Conflict`] like a new booking; `false` if it does not exist or does not
    /// hold its spot.
    async fn move_reservation(
        &self,
        id: &str,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Marks every confirmed reservation that started at or before `started_before` as a
    /// no-show (releasing its spot) and returns them.
    async fn mark_no_shows(
        &self,
        started_before: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<ReservationRow>>;
}

/// A parking session: one vehicle's stay in a lot, from entry to exit. Kept for the life of
/// the transaction history (no retention policy touches it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkingSession {
    /// Random id.
    pub id: String,
    /// Where.
    pub lot: LotId,
    /// The plate key (letters and digits) read at entry, if one was.
    pub plate_key: Option<String>,
    /// The plate as read.
    pub plate: Option<String>,
    /// What the vehicle was admitted as.
    pub vehicle_type: VehicleType,
    /// The reservation it entered on, if any (checked in with the session).
    pub reservation_id: Option<String>,
    /// The driver, when known (a reservation's or an app check-in's).
    pub user_id: Option<String>,
    /// The entry gate; `None` for an app check-in.
    pub entry_gate: Option<GateId>,
    /// The spot the platform assigned.
    pub assigned_spot: Option<SpotId>,
    /// The spot the sensors saw the vehicle park in.
    pub sensed_spot: Option<SpotId>,
    /// Entry time.
    pub entered_at: DateTime<Utc>,
    /// The exit gate; `None` for an app check-out or while open.
    pub exit_gate: Option<GateId>,
    /// Exit time; `None` while the vehicle is inside.
    pub exited_at: Option<DateTime<Utc>>,
    /// Seconds past the reservation's exit, measured at exit.
    pub overstay_s: Option<i64>,
}

/// Something an operator did to a lot's gates, kept as an audit trail (append-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorAction {
    /// Random id.
    pub id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Who (a user id).
    pub user_id: String,
    /// Where.
    pub lot: LotId,
    /// The gate, for a gate action.
    pub gate: Option<GateId>,
    /// `gate_open`, `emergency_start`, `emergency_end` or `tariff_set`.
    pub action: String,
    /// Why, as the operator wrote it.
    pub reason: String,
}

/// Gate decisions, parking sessions and operators' actions.
#[async_trait]
pub trait GateStore: Send + Sync {
    /// The recorded answer (the command as sent) to a gate's request.
    async fn gate_decision(
        &self,
        lot: &LotId,
        gate: &GateId,
        request_id: &str,
    ) -> StoreResult<Option<String>>;
    /// Records the answer to a request. If an answer was recorded first (the same request
    /// decided twice at once), that one is returned and nothing is written: the gate must get
    /// one answer, whichever decision won.
    async fn record_gate_decision(
        &self,
        lot: &LotId,
        gate: &GateId,
        request_id: &str,
        command: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<String>>;
    /// Deletes at most `limit` recorded answers decided before `before`, in one short
    /// transaction; returns how many. The caller repeats while a whole batch comes back, so
    /// a large backlog never holds locks (or SQLite's one writer) for long.
    async fn delete_gate_decisions_before(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64>;
    /// Opens a session and, if it has a reservation, checks that in (confirmed to checked
    /// in), atomically. [`StoreError::Conflict`] if the plate or the reservation already has
    /// an open session in the lot, or the reservation is no longer confirmed.
    async fn open_parking_session(
        &self,
        session: &ParkingSession,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// One session.
    async fn parking_session(&self, id: &str) -> StoreResult<Option<ParkingSession>>;
    /// The open session of a plate in a lot.
    async fn open_parking_session_of_plate(
        &self,
        lot: &LotId,
        plate_key: &str,
    ) -> StoreResult<Option<ParkingSession>>;
    /// The open session of a reservation.
    async fn open_parking_session_of_reservation(
        &self,
        reservation_id: &str,
    ) -> StoreResult<Option<ParkingSession>>;
    /// A lot's open sessions, oldest entry first.
    async fn open_parking_sessions(&self, lot: &LotId) -> StoreResult<Vec<ParkingSession>>;
    /// Records where the sensors saw the session's vehicle park; `false` if the session is not
    /// open.
    async fn set_sensed_spot(&self, id: &str, spot: &SpotId) -> StoreResult<bool>;
    /// Closes an open session and completes its reservation (checked in to completed),
    /// atomically; `false` if the session was not open.
    async fn close_parking_session(
        &self,
        id: &str,
        exited_at: DateTime<Utc>,
        exit_gate: Option<&GateId>,
        overstay_s: Option<i64>,
    ) -> StoreResult<bool>;
    /// Appends an operator's action to the audit trail.
    async fn record_operator_action(&self, action: &OperatorAction) -> StoreResult<()>;
    /// A lot's operator actions, last recorded first, at most `limit`; all lots if `lot` is
    /// `None`.
    async fn operator_actions(
        &self,
        lot: Option<&LotId>,
        limit: u32,
    ) -> StoreResult<Vec<OperatorAction>>;
    /// Each lot's newest `emergency_start` or `emergency_end` action (whether an emergency is
    /// on), however many other actions came after it.
    async fn latest_emergency_actions(&self) -> StoreResult<Vec<OperatorAction>>;
    /// A lot's sessions that entered in `[from, to)`, newest first, at most `limit`.
    async fn parking_sessions_between(
        &self,
        lot: &LotId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<ParkingSession>>;
}

/// What [`IdempotencyStore::begin_idempotent`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// The key is new: the caller runs the request and then calls `finish_idempotent`.
    Started,
    /// The key was used for the same request, which finished: its answer.
    Replay {
        /// The HTTP status it got.
        status: u16,
        /// The body it got.
        body: String,
    },
    /// The same key is being used by a request still running.
    InFlight,
    /// The key was used for a different request (or scope).
    Mismatch,
}

/// Idempotency keys of state-changing requests.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `key` for `user_id`'s request with this body hash, atomically.
    async fn begin_idempotent(
        &self,
        user_id: &str,
        key: &str,
        scope: &str,
        request_sha256: &[u8; 32],
        at: DateTime<Utc>,
    ) -> StoreResult<IdempotencyBegin>;
    /// Records the answer of a started request.
    async fn finish_idempotent(
        &self,
        user_id: &str,
        key: &str,
        status: u16,
        body: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Records `answer` under its key, which was not claimed before: `None` when recorded
    /// now; when the key was already there, what it holds (never `Started`), and nothing is
    /// written. For requests that do their work first and record their answer after (the key
    /// then only exists once answered, so a retry waits or replays instead of a 409).
    async fn record_idempotent(
        &self,
        answer: IdempotentAnswer<'_>,
    ) -> StoreResult<Option<IdempotencyBegin>>;
    /// What a key holds for a request with this scope and body hash (never `Started`); `None`
    /// if the key is not recorded.
    async fn idempotent_lookup(
        &self,
        user_id: &str,
        key: &str,
        scope: &str,
        request_sha256: &[u8; 32],
    ) -> StoreResult<Option<IdempotencyBegin>>;
    /// Forgets a started request that failed without an answer worth replaying (a 5xx), so a
    /// retry runs it again.
    async fn abandon_idempotent(&self, user_id: &str, key: &str) -> StoreResult<()>;
    /// Deletes keys created before `before`; returns how many.
    async fn purge_idempotent(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

/// A lot's tariff, as stored: the JSON text the caller validated with
/// `parkd_core::tariff::Tariff::from_json`, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TariffRow {
    /// The lot.
    pub lot: LotId,
    /// The tariff document (JSON).
    pub tariff_json: String,
    /// 1 for the first tariff of the lot, then +1 per replacement.
    pub version: i64,
    /// When it was last replaced.
    pub updated_at: DateTime<Utc>,
}

/// What a payment pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentPurpose {
    /// A reservation, in advance (`reservation_id` is set).
    Reservation,
    /// A parking session, at exit, from the app or a pay station (`session_id` is set).
    Exit,
    /// The fee of a reservation that was never used (`reservation_id` is set); its ledger
    /// entry is a `no_show_fee`.
    NoShowFee,
}

impl PaymentPurpose {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentPurpose::Reservation => "reservation",
            PaymentPurpose::Exit => "exit",
            PaymentPurpose::NoShowFee => "no_show_fee",
        }
    }

    /// Parses the stored name.
    pub fn parse(raw: &str) -> Option<PaymentPurpose> {
        match raw {
            "reservation" => Some(PaymentPurpose::Reservation),
            "exit" => Some(PaymentPurpose::Exit),
            "no_show_fee" => Some(PaymentPurpose::NoShowFee),
            _ => None,
        }
    }
}

/// Where a payment stands. `Succeeded` is terminal in the store and reached only through
/// [`PaymentStore::settle_payment`], which writes the ledger entry with it. "Refunded" is not
/// a status: it is `amount_refunded_minor` of a succeeded payment (see
/// [`PaymentRow::fully_refunded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    /// Recorded, the provider not yet asked (or not yet confirmed).
    Created,
    /// The customer must act (3-D Secure).
    RequiresAction,
    /// The provider is working on it.
    Processing,
    /// Paid; the charge is in the ledger.
    Succeeded,
    /// Declined; another attempt may follow.
    Failed,
    /// Cancelled; nothing was charged.
    Cancelled,
    /// The provider's outcome is unknown (timeout, 5xx): the reconciler will find out.
    PendingUnknown,
}

impl PaymentStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [PaymentStatus; 7] = [
        PaymentStatus::Created,
        PaymentStatus::RequiresAction,
        PaymentStatus::Processing,
        PaymentStatus::Succeeded,
        PaymentStatus::Failed,
        PaymentStatus::Cancelled,
        PaymentStatus::PendingUnknown,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Created => "created",
            PaymentStatus::RequiresAction => "requires_action",
            PaymentStatus::Processing => "processing",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Cancelled => "cancelled",
            PaymentStatus::PendingUnknown => "pending_unknown",
        }
    }

    /// Parses the stored name.
    pub fn parse(raw: &str) -> Option<PaymentStatus> {
        PaymentStatus::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether the outcome is still open (what [`PaymentStore::payments_pending`] returns).
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            PaymentStatus::Created
                | PaymentStatus::RequiresAction
                | PaymentStatus::Processing
                | PaymentStatus::PendingUnknown
        )
    }
}

/// The card behind a payment, as far as parkd may know it: the provider's token, the brand
/// and the last four digits. Never a card number: the schema refuses a token with a run of 13
/// digits and last four digits that are not exactly four digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRef {
    /// The provider's payment-method token (`pm_...`, `tok_test_...`).
    pub token: String,
    /// The network, lower case (`visa`, `mastercard`, `unknown`...).
    pub brand: String,
    /// The last four digits.
    pub last4: String,
}

/// A payment, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRow {
    /// Random id; also the base of the provider idempotency key, so a retry of the same
    /// payment reaches the same provider intent.
    pub id: String,
    /// The payer, when known (a pay-station payment of a drive-up session has none).
    pub user_id: Option<String>,
    /// The reservation paid for (purposes `reservation` and `no_show_fee`).
    pub reservation_id: Option<String>,
    /// The parking session paid for (purpose `exit`).
    pub session_id: Option<String>,
    /// The lot whose revenue this is.
    pub lot: LotId,
    /// What it pays for.
    pub purpose: PaymentPurpose,
    /// The amount, in minor units, more than zero.
    pub amount_minor: i64,
    /// The currency (upper case).
    pub currency: Currency,
    /// The provider's name (`test`, `stripe`).
    pub provider: String,
    /// The provider's intent id, once it has one; unique per provider.
    pub provider_intent_id: Option<String>,
    /// Where it stands.
    pub status: PaymentStatus,
    /// Why it failed (a stable decline reason), when it did.
    pub failure_reason: Option<String>,
    /// The card, once the provider named it.
    pub method: Option<CardRef>,
    /// Refunded or being refunded (pending refunds count), in minor units.
    pub amount_refunded_minor: i64,
    /// The quote the amount came from (`parkd_core::tariff::Quote` as JSON).
    pub quote_json: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// The payment method token the customer gave (the provider's token; never card data),
    /// kept so that a payment whose provider answer was lost can be sent again under the same
    /// provider idempotency key.
    pub requested_method: Option<String>,
}

impl PaymentRow {
    /// What is left to refund: nothing unless succeeded.
    pub fn refundable_minor(&self) -> i64 {
        if self.status == PaymentStatus::Succeeded {
            self.amount_minor - self.amount_refunded_minor
        } else {
            0
        }
    }

    /// Whether everything charged is refunded (or being refunded).
    pub fn fully_refunded(&self) -> bool {
        self.status == PaymentStatus::Succeeded && self.amount_refunded_minor >= self.amount_minor
    }
}

/// What the provider told us with a status change; `None` fields keep the stored value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentUpdate {
    /// The provider's intent id (set once: a stored id is never replaced).
    pub provider_intent_id: Option<String>,
    /// Why it failed; replaces the stored reason (so `None` clears it on a new attempt).
    pub failure_reason: Option<String>,
    /// The card, when the provider named it.
    pub method: Option<CardRef>,
}

/// Where a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefundStatus {
    /// Asked for (or about to be); its amount is reserved on the payment.
    Pending,
    /// Done; the negative ledger entry is written.
    Succeeded,
    /// Failed or cancelled; the reserved amount went back to the payment.
    Failed,
}

impl RefundStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }

    /// Parses the stored name.
    pub fn parse(raw: &str) -> Option<RefundStatus> {
        match raw {
            "pending" => Some(RefundStatus::Pending),
            "succeeded" => Some(RefundStatus::Succeeded),
            "failed" => Some(RefundStatus::Failed),
            _ => None,
        }
    }
}

/// A refund of (part of) a succeeded payment, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRow {
    /// Random id; also the base of the provider idempotency key of the refund.
    pub id: String,
    /// The payment refunded.
    pub payment_id: String,
    /// How much, in minor units, more than zero.
    pub amount_minor: i64,
    /// The payment's currency.
    pub currency: Currency,
    /// The provider's name.
    pub provider: String,
    /// The provider's refund id, once known; unique per provider.
    pub provider_refund_id: Option<String>,
    /// Where it stands.
    pub status: RefundStatus,
    /// Why (free text, e.g. `requested_by_customer`, `cancelled_reservation`).
    pub reason: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LedgerKind {
    /// A payment captured (positive).
    Charge,
    /// Money given back (negative).
    Refund,
    /// A no-show fee captured (positive).
    NoShowFee,
    /// A correction by staff (either sign, never zero).
    Adjustment,
}

impl LedgerKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::Charge => "charge",
            LedgerKind::Refund => "refund",
            LedgerKind::NoShowFee => "no_show_fee",
            LedgerKind::Adjustment => "adjustment",
        }
    }

    /// Parses the stored name.
    pub fn parse(raw: &str) -> Option<LedgerKind> {
        match raw {
            "charge" => Some(LedgerKind::Charge),
            "refund" => Some(LedgerKind::Refund),
            "no_show_fee" => Some(LedgerKind::NoShowFee),
            "adjustment" => Some(LedgerKind::Adjustment),
            _ => None,
        }
    }
}

/// One money movement. The ledger is append-only (the database refuses UPDATE and DELETE)
/// and no retention touches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Append order, assigned by the database.
    pub seq: i64,
    /// When the money moved.
    pub at: DateTime<Utc>,
    /// The lot whose revenue it is.
    pub lot: LotId,
    /// What it is.
    pub kind: LedgerKind,
    /// Signed, in minor units: charges and fees positive, refunds negative.
    pub amount_minor: i64,
    /// The currency (upper case).
    pub currency: Currency,
    /// The payment (every kind but an adjustment has one).
    pub payment_id: Option<String>,
    /// The refund, for a refund entry.
    pub refund_id: Option<String>,
    /// The reservation, if any.
    pub reservation_id: Option<String>,
    /// The parking session, if any.
    pub session_id: Option<String>,
    /// The payer, if known.
    pub user_id: Option<String>,
    /// Free text.
    pub memo: String,
}

/// A correction written to the ledger by staff (a goodwill credit, a chargeback, a cash
/// difference at a pay station).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAdjustment {
    /// When.
    pub at: DateTime<Utc>,
    /// The lot.
    pub lot: LotId,
    /// Signed, never zero.
    pub amount_minor: i64,
    /// The currency.
    pub currency: Currency,
    /// The payment it corrects, if any.
    pub payment_id: Option<String>,
    /// The reservation, if any.
    pub reservation_id: Option<String>,
    /// The parking session, if any.
    pub session_id: Option<String>,
    /// The customer, if any.
    pub user_id: Option<String>,
    /// Why (required in practice: say who and why).
    pub memo: String,
}

/// Tariffs, payments, refunds, the money ledger and webhook de-duplication.
///
/// The ledger and the payments never disagree: the charge entry is written in the same
/// transaction as the move to succeeded ([`settle_payment`](Self::settle_payment)), the
/// refund entry in the same transaction as the refund's success, and refunds are checked
/// against the captured amount atomically, however many run at once.
#[async_trait]
pub trait PaymentStore: Send + Sync {
    /// Creates or replaces a lot's tariff (validated by the caller); returns its new version
    /// (1, then +1 per replacement). [`StoreError::Conflict`] if the lot does not exist.
    async fn put_tariff(
        &self,
        lot: &LotId,
        tariff_json: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<i64>;
    /// A lot's tariff.
    async fn tariff(&self, lot: &LotId) -> StoreResult<Option<TariffRow>>;
    /// Records a new payment. It may not start succeeded or refunded (that goes through
    /// [`settle_payment`](Self::settle_payment) and [`record_refund`](Self::record_refund));
    /// [`StoreError::Conflict`] for a taken id or provider intent id, an unknown user,
    /// reservation or session, or such a start; [`StoreError::PaymentInProgress`] while
    /// another exit payment of the session (or prepayment of the reservation) is open.
    async fn create_payment(&self, payment: &PaymentRow) -> StoreResult<()>;
    /// One payment.
    async fn payment(&self, id: &str) -> StoreResult<Option<PaymentRow>>;
    /// The payment with this provider intent id (webhooks name intents).
    async fn payment_by_intent(
        &self,
        provider: &str,
        intent_id: &str,
    ) -> StoreResult<Option<PaymentRow>>;
    /// A reservation's payments, oldest first.
    async fn payments_of_reservation(&self, reservation_id: &str) -> StoreResult<Vec<PaymentRow>>;
    /// A parking session's payments, oldest first.
    async fn payments_of_session(&self, session_id: &str) -> StoreResult<Vec<PaymentRow>>;
    /// Payments whose outcome is open ([`PaymentStatus::is_pending`]) and unchanged since
    /// before `older_than`, least recently changed first, at most `limit`: the reconciler's
    /// work list.
    async fn payments_pending(
        &self,
        older_than: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<PaymentRow>>;
    /// Moves a payment to `to` if it is in one of `from` (compare-and-set), applying
    /// `update`; `false` if it was not. A succeeded payment never moves, and `to` may not be
    /// `Succeeded` ([`StoreError::Conflict`]: use [`settle_payment`](Self::settle_payment)).
    async fn update_payment_status(
        &self,
        id: &str,
        from: &[PaymentStatus],
        to: PaymentStatus,
        update: &PaymentUpdate,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Moves a payment from one of `from` to succeeded, applying `update`, and appends its
    /// charge (or no-show fee) to the ledger, in one transaction; `false` (and nothing
    /// written) if it was not in `from` or already succeeded.
    async fn settle_payment(
        &self,
        id: &str,
        from: &[PaymentStatus],
        update: &PaymentUpdate,
        at: DateTime<Utc>,
        memo: &str,
    ) -> StoreResult<bool>;
    /// Records a refund of a succeeded payment, `Pending` (before asking the provider) or
    /// `Succeeded` (the provider already said so: the negative ledger entry, dated the
    /// refund's `updated_at`, is appended in the same transaction). The payment's refunded amount grows by the refund's in the same
    /// transaction, with the check in the database: [`StoreError::RefundExceedsCapture`] (and
    /// nothing written) if that would pass the captured amount, also under concurrency.
    /// [`StoreError::Conflict`] for an unknown payment, another currency, a taken id or a
    /// `Failed` refund.
    async fn record_refund(&self, refund: &RefundRow, memo: &str) -> StoreResult<()>;
    /// Ends a pending refund: `succeeded` appends its negative ledger entry, otherwise its
    /// amount goes back to the payment's refundable amount; in one transaction. `false` if it
    /// was not pending.
    async fn complete_refund(
        &self,
        id: &str,
        succeeded: bool,
        provider_refund_id: Option<&str>,
        at: DateTime<Utc>,
        memo: &str,
    ) -> StoreResult<bool>;
    /// Records the provider's id of a refund still pending (the provider answered `pending`),
    /// so that it can be retrieved later; `false` if the refund is not pending or already has
    /// an id.
    async fn set_refund_provider_id(
        &self,
        id: &str,
        provider_refund_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// One refund.
    async fn refund(&self, id: &str) -> StoreResult<Option<RefundRow>>;
    /// A payment's refunds, oldest first.
    async fn refunds_of_payment(&self, payment_id: &str) -> StoreResult<Vec<RefundRow>>;
    /// Refunds pending since before `older_than`, oldest change first, at most `limit`.
    async fn refunds_pending(
        &self,
        older_than: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<RefundRow>>;
    /// Appends an adjustment to the ledger; returns its `seq`.
    async fn record_adjustment(&self, adjustment: &NewAdjustment) -> StoreResult<i64>;
    /// The ledger entries with `at` in `[from, to)`, of one lot or all, in append order
    /// (`seq`), after `after_seq` if given, at most `limit`: page through a period by passing
    /// the last `seq` seen.
    async fn ledger_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        lot: Option<&LotId>,
        after_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<LedgerEntry>>;
    /// The ledger's sum per currency over `[from, to)`, of one lot or all, by currency code:
    /// revenue net of refunds.
    async fn revenue_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        lot: Option<&LotId>,
    ) -> StoreResult<Vec<(Currency, i64)>>;
    /// Records a provider's webhook event id; `true` the first time, `false` for a
    /// redelivery (insert-if-absent, atomic).
    async fn record_webhook_event(
        &self,
        provider: &str,
        event_id: &str,
        received_at: DateTime<Utc>,
    ) -> StoreResult<bool>;
}

#[async_trait]
pub trait Store:
    DeviceStore
    + TelemetryStore
    + GarageStore
    + AccountStore
    + ReservationStore
    + IdempotencyStore
    + GateStore
    + PaymentStore
    + std::fmt::Debug
{
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;
    /// Whether the database answers (readiness).
    async fn ping(&self) -> StoreResult<()>;
    /// Whether TimescaleDB features are active.
    fn timescale(&self) -> bool {
        false
    }
    /// Waits until the writes it was given are done (the PostgreSQL store writes
    /// reservations in batches of its own tasks); called at shutdown, after the last request.
    async fn settle(&self) {}
    /// What the batched reservation writes did since start (PostgreSQL; `None` elsewhere).
    fn reservation_batches(&self) -> Option<ReservationBatches> {
        None
    }
}

/// Counts of the PostgreSQL store's batched reservation writes (group commit), since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReservationBatches {
    /// Multi-row statements run (a create written alone is not counted).
    pub statements: u64,
    /// Rows in them.
    pub rows: u64,
    /// Of those statements, how many the exclusion constraint refused whole (another
    /// instance booked one of the spots): written again leaving out the overlapping rows.
    pub refused_overlap: u64,
    /// Of those statements, how many failed whole otherwise (a taken key, a missing user, a
    /// deadlock): written again row by row.
    pub rewritten: u64,
}

/// Where to keep data.
#[derive(Clone)]
pub enum StoreConfig {
    /// An SQLite file.
    Sqlite {
        /// The database file; its directory is created if missing.
        path: std::path::PathBuf,
    },
    /// A PostgreSQL server.
    Postgres {
        /// A libpq-style URL or key/value string; contains the password, never printed.
        url: String,
        /// Connections in the pool.
        pool_size: usize,
        /// Raw telemetry retention, in days, for the TimescaleDB policy.
        retention_days: u32,
    },
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            StoreConfig::Postgres {
                pool_size,
                retention_days,
                ..
            } => f
                .debug_struct("Postgres")
                .field("url", &"<redacted>")
                .field("pool_size", pool_size)
                .field("retention_days", retention_days)
                .finish(),
        }
    }
}

/// Opens the configured store and brings its schema up to date.
pub async fn open(config: &StoreConfig) -> StoreResult<Arc<dyn Store>> {
    match config {
        StoreConfig::Sqlite { path } => Ok(Arc::new(sqlite::SqliteStore::open(path).await?)),
        StoreConfig::Postgres {
            url,
            pool_size,
            retention_days,
        } => Ok(Arc::new(
            postgres::PostgresStore::open(url, *pool_size, *retention_days).await?,
        )),
    }
}

/// Implements [`ReservationStore`] for a wrapper by forwarding every call to one of its fields,
/// like [`forward_gate_store!`]: `forward_reservation_store!(impl[S: Store] for Wrapper<S>, inner);`.
#[macro_export]
macro_rules! forward_reservation_store {
    (impl[$($generics:tt)*] for $ty:ty, $field:ident) => {
        #[::async_trait::async_trait]
        impl<$($generics)*> $crate::ReservationStore for $ty {
            async fn create_reservation(
                &self,
                reservation: &$crate::ReservationRow,
                answer: Option<$crate::IdempotentAnswer<'_>>,
            ) -> $crate::StoreResult<()> {
                self.$field.create_reservation(reservation, answer).await
            }
            async fn reservation(
                &self,
                id: &str,
            ) -> $crate::StoreResult<Option<$crate::ReservationRow>> {
                self.$field.reservation(id).await
            }
            async fn reservation_by_code(
                &self,
                code: &str,
            ) -> $crate::StoreResult<Option<$crate::ReservationRow>> {
                self.$field.reservation_by_code(code).await
            }
            async fn reservations_of(
                &self,
                user_id: &str,
                limit: u32,
            ) -> $crate::StoreResult<Vec<$crate::ReservationRow>> {
                self.$field.reservations_of(user_id, limit).await
            }
            async fn holding_between(
                &self,
                lot: &::parkd_core::ids::LotId,
                from: ::chrono::DateTime<::chrono::Utc>,
                to: ::chrono::DateTime<::chrono::Utc>,
            ) -> $crate::StoreResult<Vec<$crate::ReservationRow>> {
                self.$field.holding_between(lot, from, to).await
            }
            async fn holding_spans(
                &self,
                lot: &::parkd_core::ids::LotId,
                spot: Option<&::parkd_core::ids::SpotId>,
                from: ::chrono::DateTime<::chrono::Utc>,
                to: ::chrono::DateTime<::chrono::Utc>,
            ) -> $crate::StoreResult<Vec<$crate::HoldingSpan>> {
                self.$field.holding_spans(lot, spot, from, to).await
            }
            async fn transition_reservation(
                &self,
                id: &str,
                from: &[::parkd_core::reservation::ReservationState],
                to: ::parkd_core::reservation::ReservationState,
                at: ::chrono::DateTime<::chrono::Utc>,
            ) -> $crate::StoreResult<bool> {
                self.$field.transition_reservation(id, from, to, at).await
            }
            async fn move_reservation(
                &self,
                id: &str,
                starts_at: ::chrono::DateTime<::chrono::Utc>,
                ends_at: ::chrono::DateTime<::chrono::Utc>,
                at: ::chrono::DateTime<::chrono::Utc>,
            ) -> $crate::StoreResult<bool> {
                self.$field.move_reservation(id, starts_at, ends_at, at).await
            }
            async fn mark_no_shows(
                &self,
                started_before: ::chrono::DateTime<::chrono::Utc>,
                at: ::chrono::DateTime<::chrono::Utc>,
            ) -> $crate::StoreResult<Vec<$crate::ReservationRow>> {
                self.$field.mark_no_shows(started_before, at).await
            }
        }
    };
}

/// Implements [`IdempotencyStore`] for a wrapper by forwarding every call to one of its
/// fields, like [`forward_gate_store!`]:
/// `forward_idempotency_store!(impl[S: Store] for Wrapper<S>, inner);`.
#[macro_export]
macro_rules! forward_idempotency_store {
    (impl[$($generics:tt)*] for $ty:ty, $field:ident) => {
        #[::async_trait::async_trait]
        impl<$($generics)*> $crate::IdempotencyStore for $ty {
            async fn begin_idempotent(
                &self,
                user_id: &str,
                key: &str,
                scope: &str,
                request_sha256: &[u8; 32],
                at: ::chrono::DateTime<::chrono::Utc>,
            ) -> $crate::StoreResult<$crate::IdempotencyBegin> {
                self.$field
                    .begin_idempotent(user_id, key, scope, request_sha256, at)
                    .await
            }
            async fn finish_idempotent(
                &self,
                user_id: &str,
                key: &str,
                status: u16,
                body: &str,
                at: ::chrono::DateTime<::chrono::Utc>,
            ) -> $crate::StoreResult<()> {
                self.$field
                    .finish_idempotent(user_id, key, status, body, at)
                    .await
            }
            async fn record_idempotent(
                &self,
                answer: $crate::IdempotentAnswer<'_>,
            ) -> $crate::StoreResult<Option<$crate::IdempotencyBegin>> {
                self.$field.record_idempotent(answer).await
            }
            async fn idempotent_lookup(
                &self,
                user_id: &str,
                key: &str,
                scope: &str,
                request_sha256: &[u8; 32],
            ) -> $crate::StoreResult<Option<$crate::IdempotencyBegin>> {
                self.$field
                    .idempotent_lookup(user_id, key, scope, request_sha256)
                    .await
            }
            async fn abandon_idempotent(&self, user_id: &str, key: &str) -> $crate::StoreResult<()> {
                self.$field.abandon_idempotent(user_id, key).await
            }
            async fn purge_idempotent(
                &self,
                before: ::chrono::DateTime<::chrono::Utc>,
            ) -> $crate::StoreResult<u64> {
                self.$field.purge_idempotent(before).await
            }
        }
    };
}

/// Implements [`GateStore`] for a wrapper by forwarding every call to one of its fields (test
/// doubles and instrumented stores that change other traits only):
/// `forward_gate_store!(impl[S: Store] for Wrapper<S>, inner);`. The caller needs the
/// `async-trait` crate.
#[macro_export]
macro_rules! forward_gate_store {
    (impl[$($generics:tt)*] for $ty:ty, $field:ident) => {
        #[::async_trait::async_trait]
        impl<$($generics)*> $crate::GateStore for $ty {
            async fn gate_decision(
                &self,
                lot: &::parkd_core::ids::LotId,
                gate: &::parkd_core::ids::GateId,
                request_id: &str,
            ) -> $crate::StoreResult<Option<String>> {
                self.$field.gate_decision(lot, gate, request_id).await
            }
            async fn record_gate_decision(
                &self,
                lot: &::parkd_core::ids::LotId,
                gate: &::parkd_core::ids::GateId,
                request_id: &str,
                command: &str,
                at: ::chrono::DateTime<::chrono::Utc>,
            ) -> $crate::StoreResult<Option<String>> {
                self.$field
                    .record_gate_decision(lot, gate, request_id, command, at)
                    .await
            }
            async fn delete_gate_decisions_before(
                &self,
                before: ::chrono::DateTime<::chrono::Utc>,
                limit: u32,
            ) -> $crate::StoreResult<u64> {
                self.$field.delete_gate_decisions_before(before, limit).await
            }
            async fn open_parking_session(
                &self,
                session: &$crate::ParkingSession,
                at: ::chrono::DateTime<::chrono::Utc>,
            ) -> $crate::StoreResult<()> {
                self.$field.open_parking_session(session, at).await
            }
            async fn parking_session(
                &self,
                id: &str,
            ) -> $crate::StoreResult<Option<$crate::ParkingSession>> {
                self.$field.parking_session(id).await
            }
            async fn open_parking_session_of_plate(
                &self,
                lot: &::parkd_core::ids::LotId,
                plate_key: &str,
            ) -> $crate::StoreResult<Option<$crate::ParkingSession>> {
                self.$field.open_parking_session_of_plate(lot, plate_key).await
            }
            async fn open_parking_session_of_reservation(
                &self,
                reservation_id: &str,
            ) -> $crate::StoreResult<Option<$crate::ParkingSession>> {
                self.$field
                    .open_parking_session_of_reservation(reservation_id)
                    .await
            }
            async fn open_parking_sessions(
                &self,
                lot: &::parkd_core::ids::LotId,
            ) -> $crate::StoreResult<Vec<$crate::ParkingSession>> {
                self.$field.open_parking_sessions(lot).await
            }
            async fn set_sensed_spot(
                &self,
                id: &str,
                spot: &::parkd_core::ids::SpotId,
            ) -> $crate::StoreResult<bool> {
                self.$field.set_sensed_spot(id, spot).await
            }
            async fn close_parking_session(
                &self,
                id: &str,
                exited_at: ::chrono::DateTime<::chrono::Utc>,
                exit_gate: Option<&::parkd_core::ids::GateId>,
                overstay_s: Option<i64>,
            ) -> $crate::StoreResult<bool> {
                self.$field
                    .close_parking_session(id, exited_at, exit_gate, overstay_s)
                    .await
            }
            async fn record_operator_action(
                &self,
                action: &$crate::OperatorAction,
            ) -> $crate::StoreResult<()> {
                self.$field.record_operator_action(action).await
            }
            async fn latest_emergency_actions(
                &self,
            ) -> $crate::StoreResult<Vec<$crate::OperatorAction>> {
                self.$field.latest_emergency_actions().await
            }
            async fn operator_actions(
                &self,
                lot: Option<&::parkd_core::ids::LotId>,
                limit: u32,
            ) -> $crate::StoreResult<Vec<$crate::OperatorAction>> {
                self.$field.operator_actions(lot, limit).await
            }
            async fn parking_sessions_between(
                &self,
                lot: &::parkd_core::ids::LotId,
                from: ::chrono::DateTime<::chrono::Utc>,
                to: ::chrono::DateTime<::chrono::Utc>,
                limit: u32,
            ) -> $crate::StoreResult<Vec<$crate::ParkingSession>> {
                self.$field
                    .parking_sessions_between(lot, from, to, limit)
                    .await
            }
        }
    };
}

/// Implements [`PaymentStore`] for a wrapper by forwarding every call to one of its fields,
/// like [`forward_gate_store!`]: `forward_payment_store!(impl[S: Store] for Wrapper<S>, inner);`.
#[macro_export]
macro_rules! forward_payment_store {
    (impl[$($generics:tt)*] for $ty:ty, $field:ident) => {
        #[::async_trait::async_trait]
        impl<$($generics)*> $crate::PaymentStore for $ty {
            async fn put_tariff(
                &self,
                lot: &::parkd_core::ids::LotId,
                tariff_json: &str,
                at: ::chrono::DateTime<::chrono::Utc>,
            ) -> $crate::StoreResult<i64> {
                self.$field.put_tariff(lot, tariff_json, at).await
            }
            async fn tariff(
                &self,
                lot: &::parkd_core::ids::LotId,
            ) -> $crate::StoreResult<Option<$crate::TariffRow>> {
                self.$field.tariff(lot).await
            }
            async fn create_payment(
                &self,
                payment: &$crate::PaymentRow,
            ) -> $crate::StoreResult<()> {
                self.$field.create_payment(payment).await
            }
            async fn payment(
                &self,
                id: &str,
            ) -> $crate::StoreResult<Option<$crate::PaymentRow>> {
                self.$field.payment(id).await
            }
            async fn payment_by_intent(
                &self,
                provider: &str,
                intent_id: &str,
            ) -> $crate::StoreResult<Option<$crate::PaymentRow>> {
                self.$field.payment_by_intent(provider, intent_id).await
            }
            async fn payments_of_reservation(
                &self,
                reservation_id: &str,
            ) -> $crate::StoreResult<Vec<$crate::PaymentRow>> {
                self.$field.payments_of_reservation(reservation_id).await
            }
            async fn payments_of_session(
                &self,
                session_id: &str,
            ) -> $crate::StoreResult<Vec<$crate::PaymentRow>> {
                self.$field.payments_of_session(session_id).await
            }
            async fn payments_pending(
                &self,
                older_than: ::chrono::DateTime<::chrono::Utc>,
                limit: u32,
            ) -> $crate::StoreResult<Vec<$crate::PaymentRow>> {
                self.$field.payments_pending(older_than, limit).await
            }
            async fn update_payment_status(
                &self,
                id: &str,
                from: &[$crate::PaymentStatus],
                to: $crate::PaymentStatus,
                update: &$crate::PaymentUpdate,
                at: ::chrono::DateTime<::chrono::Utc>,
            ) -> $crate::StoreResult<bool> {
                self.$field
                    .update_payment_status(id, from, to, update, at)
                    .await
            }
            async fn settle_payment(
                &self,
                id: &str,
                from: &[$crate::PaymentStatus],
                update: &$crate::PaymentUpdate,
                at: ::chrono::DateTime<::chrono::Utc>,
                memo: &str,
            ) -> $crate::StoreResult<bool> {
                self.$field.settle_payment(id, from, update, at, memo).await
            }
            async fn record_refund(
                &self,
                refund: &$crate::RefundRow,
                memo: &str,
            ) -> $crate::StoreResult<()> {
                self.$field.record_refund(refund, memo).await
            }
            async fn complete_refund(
                &self,
                id: &str,
                succeeded: bool,
                provider_refund_id: Option<&str>,
                at: ::chrono::DateTime<::chrono::Utc>,
                memo: &str,
            ) -> $crate::StoreResult<bool> {
                self.$field
                    .complete_refund(id, succeeded, provider_refund_id, at, memo)
                    .await
            }
            async fn set_refund_provider_id(
                &self,
                id: &str,
                provider_refund_id: &str,
                at: ::chrono::DateTime<::chrono::Utc>,
            ) -> $crate::StoreResult<bool> {
                self.$field
                    .set_refund_provider_id(id, provider_refund_id, at)
                    .await
            }
            async fn refund(
                &self,
                id: &str,
            ) -> $crate::StoreResult<Option<$crate::RefundRow>> {
                self.$field.refund(id).await
            }
            async fn refunds_of_payment(
                &self,
                payment_id: &str,
            ) -> $crate::StoreResult<Vec<$crate::RefundRow>> {
                self.$field.refunds_of_payment(payment_id).await
            }
            async fn refunds_pending(
                &self,
                older_than: ::chrono::DateTime<::chrono::Utc>,
                limit: u32,
            ) -> $crate::StoreResult<Vec<$crate::RefundRow>> {
                self.$field.refunds_pending(older_than, limit).await
            }
            async fn record_adjustment(
                &self,
                adjustment: &$crate::NewAdjustment,
            ) -> $crate::StoreResult<i64> {
                self.$field.record_adjustment(adjustment).await
            }
            async fn ledger_between(
                &self,
                from: ::chrono::DateTime<::chrono::Utc>,
                to: ::chrono::DateTime<::chrono::Utc>,
                lot: Option<&::parkd_core::ids::LotId>,
                after_seq: Option<i64>,
                limit: u32,
            ) -> $crate::StoreResult<Vec<$crate::LedgerEntry>> {
                self.$field
                    .ledger_between(from, to, lot, after_seq, limit)
                    .await
            }
            async fn revenue_between(
                &self,
                from: ::chrono::DateTime<::chrono::Utc>,
                to: ::chrono::DateTime<::chrono::Utc>,
                lot: Option<&::parkd_core::ids::LotId>,
            ) -> $crate::StoreResult<Vec<(::parkd_core::tariff::Currency, i64)>> {
                self.$field.revenue_between(from, to, lot).await
            }
            async fn record_webhook_event(
                &self,
                provider: &str,
                event_id: &str,
                received_at: ::chrono::DateTime<::chrono::Utc>,
            ) -> $crate::StoreResult<bool> {
                self.$field
                    .record_webhook_event(provider, event_id, received_at)
                    .await
            }
        }
    };
}
