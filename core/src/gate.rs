//! Barrier gates: the payloads of the gate topics (docs/mqtt.md §4) and the pure rules that
//! turn what the platform knows into an answer.
//!
//! A gate publishes a [`GateRequest`] on `parking/v1/{lot}/gates/{gate}/request`; the platform
//! answers with a [`GateCommand`] on `.../command` carrying the same `request_id`. Gates also
//! publish [`GateEvent`]s (barrier opened, closed, vehicle passed, fault) on `.../event` and
//! their online/offline [`crate::payload::DeviceStatus`] on `.../status`.
//!
//! Decoding follows the rest of the device contract: strict about what it needs, lenient about
//! fields it does not know, every failure a typed [`PayloadError`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::account::Plate;
use crate::payload::{PayloadError, check_ts, decode_json};
use crate::reservation::ReservationState;
use crate::vehicle::VehicleType;

/// Longest request id, in bytes.
pub const MAX_REQUEST_ID: usize = 64;
/// Longest reservation code a gate may send, in bytes.
pub const MAX_CODE: usize = 32;
/// Longest text for a gate's display, in characters.
pub const MAX_DISPLAY: usize = 64;

/// Which way a vehicle wants to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Direction {
    /// Into the lot.
    Entry,
    /// Out of the lot.
    Exit,
}

impl Direction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Entry => "entry",
            Direction::Exit => "exit",
        }
    }
}

/// A vehicle at a barrier asks to pass: published on `.../gates/{gate}/request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRequest {
    /// Chosen by the gate, unique per vehicle and gate; a repeated request (the answer was
    /// lost) carries the same id and gets the same answer.
    pub request_id: String,
    /// Entry or exit.
    pub direction: Direction,
    /// The plate the reader saw, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plate: Option<String>,
    /// The reader's confidence in `plate`, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plate_confidence: Option<f64>,
    /// A reservation code or QR token read at the gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The vehicle type, if the gate knows it (a lane for motorcycles, a height sensor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vehicle: Option<VehicleType>,
    /// When the gate sent it, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
}

/// The part of a request needed to answer it at all: its id, read even from a payload that
/// is otherwise wrong, so that a gate never waits for an answer that will not come.
#[derive(Debug, Deserialize)]
struct RequestId {
    request_id: Option<serde_json::Value>,
}

impl GateRequest {
    /// Decodes and validates a request.
    pub fn decode(bytes: &[u8]) -> Result<GateRequest, PayloadError> {
        let request: GateRequest = decode_json(bytes)?;
        if !valid_request_id(&request.request_id) {
            return Err(PayloadError::OutOfRange("request_id"));
        }
        if let Some(confidence) = request.plate_confidence
            && !(0.0..=1.0).contains(&confidence)
        {
            return Err(PayloadError::OutOfRange("plate_confidence"));
        }
        if let Some(code) = &request.code
            && (code.is_empty()
                || code.len() > MAX_CODE
                || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(PayloadError::OutOfRange("code"));
        }
        check_ts(request.ts)?;
        Ok(request)
    }

    /// The request id of a payload that [`decode`](Self::decode) refused, if it has a usable
    /// one: the refusal is then answered to that id.
    pub fn salvage_id(bytes: &[u8]) -> Option<String> {
        let parsed: RequestId = decode_json(bytes).ok()?;
        match parsed.request_id {
            Some(serde_json::Value::String(id)) if valid_request_id(&id) => Some(id),
            _ => None,
        }
    }

    /// The plate, if one was read with at least `min_confidence` and is a plausible plate.
    /// A reader that gives no confidence is trusted.
    pub fn usable_plate(&self, min_confidence: f64) -> Option<Plate> {
        let raw = self.plate.as_deref()?;
        if self.plate_confidence.unwrap_or(1.0) < min_confidence {
            return None;
        }
        let plate = Plate::parse(raw).ok()?;
        // A plate has at least two letters or digits; "-" or "?" is the reader guessing.
        (plate.key().chars().count() >= 2).then_some(plate)
    }

    /// Encodes to the wire form (simulated gates, tests).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn valid_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.chars().all(|c| c.is_ascii_graphic())
}

/// What a barrier did: published on `.../gates/{gate}/event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateEvent {
    /// What happened.
    pub event: BarrierEvent,
    /// The request it follows, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// For `fault`: what is wrong, at most 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
}

/// The barrier events of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BarrierEvent {
    /// The barrier opened.
    Opened,
    /// The barrier closed.
    Closed,
    /// A vehicle went through.
    Passed,
    /// The gate reports a fault (barrier stuck, reader down).
    Fault,
}

impl BarrierEvent {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BarrierEvent::Opened => "opened",
            BarrierEvent::Closed => "closed",
            BarrierEvent::Passed => "passed",
            BarrierEvent::Fault => "fault",
        }
    }
}

impl GateEvent {
    /// Decodes and validates an event.
    pub fn decode(bytes: &[u8]) -> Result<GateEvent, PayloadError> {
        let event: GateEvent = decode_json(bytes)?;
        if let Some(id) = &event.request_id
            && !valid_request_id(id)
        {
            return Err(PayloadError::OutOfRange("request_id"));
        }
        if event
            .detail
            .as_ref()
            .is_some_and(|detail| detail.chars().count() > 200)
        {
            return Err(PayloadError::OutOfRange("detail"));
        }
        check_ts(event.ts)?;
        Ok(event)
    }

    /// Encodes to the wire form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What the platform tells a gate to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Action {
    /// Open for one vehicle, then close as usual.
    Open,
    /// Stay closed; show the display text.
    Deny,
    /// Open and stay open until `release` (emergency).
    HoldOpen,
    /// Back to normal operation after `hold_open`.
    Release,
}

impl Action {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Open => "open",
            Action::Deny => "deny",
            Action::HoldOpen => "hold_open",
            Action::Release => "release",
        }
    }
}

/// Why: a stable, machine-readable code on every command. New codes may be added; a gate
/// that does not know one treats it by the command's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Reason {
    /// Entry on a valid reservation (it is now checked in).
    Reservation,
    /// Entry without a reservation, on live availability; a spot was assigned.
    WalkIn,
    /// Exit: nothing is due.
    NothingDue,
    /// Exit: what was due is paid.
    Paid,
    /// Opened by an operator.
    Manual,
    /// Emergency mode: barriers open, nobody is charged.
    Emergency,
    /// Emergency mode ended.
    EmergencyOver,
    /// No spot fits this vehicle now (after the holds of upcoming reservations).
    Full,
    /// The lot has no spot this vehicle may use at all.
    NoFittingSpot,
    /// Outside the lot's opening hours.
    LotClosed,
    /// No reservation has this code.
    UnknownCode,
    /// The reservation is for another lot.
    WrongLot,
    /// The reservation's entry window has not begun.
    ReservationNotYetValid,
    /// The reservation has ended, was cancelled, or was released as a no-show.
    ReservationNotValid,
    /// This vehicle is already inside (anti-passback).
    AlreadyInside,
    /// No plate could be read and no code was given.
    PlateUnreadable,
    /// Exit: no parking session matches this vehicle.
    NoSession,
    /// Exit: an amount is due and not paid.
    PaymentRequired,
    /// The request is older than the platform accepts (a replay, a gate with a stale queue).
    StaleRequest,
    /// The payload is not a valid request.
    BadRequest,
    /// This gate is not registered for this lot.
    UnknownGate,
    /// The platform could not decide (its database is unavailable); ask for help.
    Unavailable,
}

impl Reason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Reservation => "reservation",
            Reason::WalkIn => "walk_in",
            Reason::NothingDue => "nothing_due",
            Reason::Paid => "paid",
            Reason::Manual => "manual",
            Reason::Emergency => "emergency",
            Reason::EmergencyOver => "emergency_over",
            Reason::Full => "full",
            Reason::NoFittingSpot => "no_fitting_spot",
            Reason::LotClosed => "lot_closed",
            Reason::UnknownCode => "unknown_code",
            Reason::WrongLot => "wrong_lot",
            Reason::ReservationNotYetValid => "reservation_not_yet_valid",
            Reason::ReservationNotValid => "reservation_not_valid",
            Reason::AlreadyInside => "already_inside",
            Reason::PlateUnreadable => "plate_unreadable",
            Reason::NoSession => "no_session",
            Reason::PaymentRequired => "payment_required",
            Reason::StaleRequest => "stale_request",
            Reason::BadRequest => "bad_request",
            Reason::UnknownGate => "unknown_gate",
            Reason::Unavailable => "unavailable",
        }
    }

    /// The standard text for the gate's display (a command may carry a more specific one).
    pub fn display(self) -> &'static str {
        match self {
            Reason::Reservation | Reason::WalkIn => "Welcome",
            Reason::NothingDue | Reason::Paid => "Goodbye",
            Reason::Manual => "Opened by staff",
            Reason::Emergency => "Emergency - please leave calmly",
            Reason::EmergencyOver => "Normal operation",
            Reason::Full => "Full for your vehicle",
            Reason::NoFittingSpot => "No space for this vehicle",
            Reason::LotClosed => "Closed",
            Reason::UnknownCode => "Code not recognised",
            Reason::WrongLot => "Reservation is for another car park",
            Reason::ReservationNotYetValid => "Reservation not valid yet",
            Reason::ReservationNotValid => "Reservation no longer valid",
            Reason::AlreadyInside => "Vehicle already inside - press help",
            Reason::PlateUnreadable => "Plate not read - press help",
            Reason::NoSession => "No parking record - press help",
            Reason::PaymentRequired => "Please pay",
            Reason::StaleRequest | Reason::BadRequest | Reason::UnknownGate => "Please press help",
            Reason::Unavailable => "Please press help",
        }
    }
}

/// The platform's answer, published on `.../gates/{gate}/command`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateCommand {
    /// The request answered; absent for commands no request asked for (manual open,
    /// emergency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// What to do.
    pub action: Action,
    /// Why.
    pub reason: Reason,
    /// Text for the gate's display, at most [`MAX_DISPLAY`] characters.
    pub display: String,
    /// The spot assigned (entry), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot: Option<String>,
    /// The parking session, if one was opened or closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Exit: the amount due, in minor units of `currency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_due: Option<i64>,
    /// Exit: the currency of `amount_due` (ISO 4217).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// When the platform decided, Unix milliseconds.
    pub ts: i64,
}

impl GateCommand {
    /// A command with the reason's standard display text.
    pub fn new(
        request_id: Option<String>,
        action: Action,
        reason: Reason,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            request_id,
            action,
            reason,
            display: reason.display().to_owned(),
            spot: None,
            session: None,
            amount_due: None,
            currency: None,
            ts: at.timestamp_millis(),
        }
    }

    /// A refusal.
    pub fn deny(request_id: Option<String>, reason: Reason, at: DateTime<Utc>) -> Self {
        Self::new(request_id, Action::Deny, reason, at)
    }

    /// Replaces the display text, cut to [`MAX_DISPLAY`] characters.
    pub fn with_display(mut self, text: &str) -> Self {
        self.display = text.chars().take(MAX_DISPLAY).collect();
        self
    }

    /// Encodes to the wire form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes (gates, tests).
    pub fn decode(bytes: &[u8]) -> Result<GateCommand, PayloadError> {
        decode_json(bytes)
    }
}

/// Whether a reservation admits its vehicle at `now`: confirmed, and `now` within
/// `[starts_at - early, ends_at)`. The error is the reason to deny.
pub fn reservation_admits(
    state: ReservationState,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    now: DateTime<Utc>,
    early: chrono::Duration,
) -> Result<(), Reason> {
    match state {
        ReservationState::Confirmed => {}
        ReservationState::CheckedIn => return Err(Reason::AlreadyInside),
        // Payment in advance is still due: not valid yet.
        ReservationState::Requested => return Err(Reason::ReservationNotYetValid),
        ReservationState::Completed
        | ReservationState::Cancelled
        | ReservationState::NoShow
        | ReservationState::Expired => return Err(Reason::ReservationNotValid),
    }
    if now < starts_at - early {
        Err(Reason::ReservationNotYetValid)
    } else if now >= ends_at {
        Err(Reason::ReservationNotValid)
    } else {
        Ok(())
    }
}

/// How long a vehicle stayed past its reservation's exit, in whole seconds (0 if it left in
/// time).
pub fn overstay_s(reserved_exit: DateTime<Utc>, exited_at: DateTime<Utc>) -> i64 {
    (exited_at - reserved_exit).num_seconds().max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    #[test]
    fn requests_decode_strictly_on_what_they_need() {
        let ok = br#"{"request_id":"r-1","direction":"entry","plate":"ab 123","plate_confidence":0.93,"vehicle":"ev","ts":1800000000000,"firmware":"2.1"}"#;
        let request = GateRequest::decode(ok).unwrap();
        assert_eq!(request.direction, Direction::Entry);
        assert_eq!(request.vehicle, Some(VehicleType::Ev));
        assert_eq!(request.usable_plate(0.8).unwrap().key(), "AB123");
        assert_eq!(request.usable_plate(0.95), None);

        for (bad, why) in [
            (&br#"{"direction":"entry"}"#[..], "wrong_type"),
            (br#"{"request_id":"","direction":"entry"}"#, "out_of_range"),
            (
                br#"{"request_id":"a b","direction":"entry"}"#,
                "out_of_range",
            ),
            (
                br#"{"request_id":"r","direction":"sideways"}"#,
                "wrong_type",
            ),
            (
                br#"{"request_id":"r","direction":"exit","plate_confidence":1.5}"#,
                "out_of_range",
            ),
            (
                br#"{"request_id":"r","direction":"exit","code":"x y"}"#,
                "out_of_range",
            ),
            (
                br#"{"request_id":"r","direction":"exit","ts":-4}"#,
                "out_of_range",
            ),
            (br#"[1,2]"#, "wrong_type"),
            (b"\xff\xfe", "malformed"),
        ] {
            let error = GateRequest::decode(bad).unwrap_err();
            assert_eq!(error.reason(), why, "{}", String::from_utf8_lossy(bad));
        }
        let huge = format!(
            r#"{{"request_id":"r","direction":"entry","plate":"{}"}}"#,
            "A".repeat(2000)
        );
        assert_eq!(
            GateRequest::decode(huge.as_bytes()).unwrap_err().reason(),
            "oversized"
        );
    }

    #[test]
    fn a_refused_request_is_still_answered_to_its_id() {
        assert_eq!(
            GateRequest::salvage_id(br#"{"request_id":"r-9","direction":"up"}"#).as_deref(),
            Some("r-9")
        );
        assert_eq!(GateRequest::salvage_id(br#"{"request_id":7}"#), None);
        assert_eq!(GateRequest::salvage_id(b"nonsense"), None);
    }

    #[test]
    fn garbage_plates_are_unread_plates() {
        for plate in ["?", "-", "", "  ", "Ä#!", "A"] {
            let request = GateRequest {
                request_id: "r".into(),
                direction: Direction::Entry,
                plate: Some(plate.into()),
                plate_confidence: None,
                code: None,
                vehicle: None,
                ts: None,
            };
            assert_eq!(request.usable_plate(0.5), None, "{plate:?}");
        }
    }

    #[test]
    fn commands_round_trip_with_stable_names() {
        let command = GateCommand::new(Some("r-1".into()), Action::Open, Reason::WalkIn, t(0))
            .with_display(&"x".repeat(100));
        assert_eq!(command.display.chars().count(), MAX_DISPLAY);
        let wire = String::from_utf8(command.encode()).unwrap();
        assert!(wire.contains(r#""action":"open""#) && wire.contains(r#""reason":"walk_in""#));
        assert_eq!(GateCommand::decode(wire.as_bytes()).unwrap(), command);
        let json = serde_json::to_value(Reason::ReservationNotYetValid).unwrap();
        assert_eq!(json, Reason::ReservationNotYetValid.as_str());
        for action in [
            Action::Open,
            Action::Deny,
            Action::HoldOpen,
            Action::Release,
        ] {
            assert_eq!(serde_json::to_value(action).unwrap(), action.as_str());
        }
    }

    #[test]
    fn a_reservation_admits_from_its_early_window_until_its_exit() {
        let early = Duration::minutes(30);
        let admits = |state, now| reservation_admits(state, t(60), t(180), now, early);
        assert_eq!(
            admits(ReservationState::Confirmed, t(29)),
            Err(Reason::ReservationNotYetValid)
        );
        assert_eq!(admits(ReservationState::Confirmed, t(30)), Ok(()));
        assert_eq!(admits(ReservationState::Confirmed, t(179)), Ok(()));
        assert_eq!(
            admits(ReservationState::Confirmed, t(180)),
            Err(Reason::ReservationNotValid)
        );
        assert_eq!(
            admits(ReservationState::CheckedIn, t(90)),
            Err(Reason::AlreadyInside)
        );
        for state in [
            ReservationState::Cancelled,
            ReservationState::NoShow,
            ReservationState::Completed,
            ReservationState::Expired,
        ] {
            assert_eq!(admits(state, t(90)), Err(Reason::ReservationNotValid));
        }
        assert_eq!(overstay_s(t(180), t(170)), 0);
        assert_eq!(overstay_s(t(180), t(185)), 300);
    }
}
