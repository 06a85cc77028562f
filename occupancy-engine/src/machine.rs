//! The state machine of one spot: pure, no clock of its own, no locks.
//!
//! Inputs: sensor readings (with their receive time), heartbeats, the passage of time
//! ([`SpotMachine::tick`]), and the operator's or reservations' flags (out of service, held).
//! Output: the spot's effective [`SpotState`], and whether it changed.
//!
//! **Debounce (minimum dwell).** A sensor value that differs from the accepted one is accepted
//! at once if the accepted value has stood for at least `debounce`; otherwise it waits
//! (pending) until the accepted value has stood that long and is then accepted if no reading
//! took it back meanwhile. A real arrival is therefore shown immediately, and a flapping
//! sensor changes the spot at most once per `debounce` instead of on every flap. `debounce`
//! zero turns it off.
//!
//! **Staleness.** A spot whose sensor has said nothing (reading or heartbeat) for
//! `stale_after` becomes `unknown` until it speaks again; a spot never heard from is `unknown`.
//!
//! **Order.** A reading older than the newest one seen for the spot is ignored, so replays and
//! reordering never move a spot backwards; a duplicate changes nothing.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// What drivers and operators see of a spot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SpotState {
    /// The sensor says free and nobody holds it.
    Free,
    /// The sensor says occupied.
    Occupied,
    /// Held for a reservation (and not occupied).
    Held,
    /// No trustworthy reading: never heard from, or silent too long.
    Unknown,
    /// Closed by the operator.
    OutOfService,
}

impl SpotState {
    /// Every state, in [`SpotState::index`] order.
    pub const ALL: [SpotState; 5] = [
        SpotState::Free,
        SpotState::Occupied,
        SpotState::Held,
        SpotState::Unknown,
        SpotState::OutOfService,
    ];

    /// A dense index `0..5`.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            SpotState::Free => "free",
            SpotState::Occupied => "occupied",
            SpotState::Held => "held",
            SpotState::Unknown => "unknown",
            SpotState::OutOfService => "out_of_service",
        }
    }
}

/// The machine's tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineSettings {
    /// Minimum time an accepted sensor value stands before another replaces it; zero = off.
    pub debounce: Duration,
    /// Silence after which a spot is `unknown`; zero = never.
    pub stale_after: Duration,
}

impl Default for MachineSettings {
    fn default() -> Self {
        Self {
            debounce: Duration::zero(),
            stale_after: Duration::minutes(15),
        }
    }
}

/// One spot's state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpotMachine {
    /// The accepted sensor value, `None` until the first reading.
    sensor: Option<bool>,
    /// When the accepted value was accepted.
    sensor_since: DateTime<Utc>,
    /// The receive time of the newest reading (accepted or not).
    newest_reading: Option<DateTime<Utc>>,
    /// The last time the sensor said anything (reading or heartbeat).
    last_heard: Option<DateTime<Utc>>,
    /// A differing value waiting for the debounce: (value, first seen).
    pending: Option<(bool, DateTime<Utc>)>,
    stale: bool,
    held: bool,
    out_of_service: bool,
    state: SpotState,
    since: DateTime<Utc>,
}

impl SpotMachine {
    /// A spot never heard from, created at `now`.
    pub fn new(out_of_service: bool, now: DateTime<Utc>) -> Self {
        let mut machine = Self {
            sensor: None,
            sensor_since: now,
            newest_reading: None,
            last_heard: None,
            pending: None,
            stale: false,
            held: false,
            out_of_service,
            state: SpotState::Unknown,
            since: now,
        };
        machine.state = machine.derive();
        machine
    }

    /// The effective state.
    pub fn state(&self) -> SpotState {
        self.state
    }

    /// When the spot entered its state.
    pub fn since(&self) -> DateTime<Utc> {
        self.since
    }

    /// The newest reading's receive time.
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.newest_reading
    }

    /// The accepted sensor value.
    pub fn sensor(&self) -> Option<bool> {
        self.sensor
    }

    /// Whether it is held for a reservation.
    pub fn held(&self) -> bool {
        self.held
    }

    /// Whether a differing sensor value waits for the debounce.
    pub fn pending(&self) -> Option<bool> {
        self.pending.map(|(value, _)| value)
    }

    fn derive(&self) -> SpotState {
        if self.out_of_service {
            SpotState::OutOfService
        } else if self.sensor == Some(true) && !self.stale {
            SpotState::Occupied
        } else if self.held {
            SpotState::Held
        } else if self.sensor.is_none() || self.stale {
            SpotState::Unknown
        } else {
            SpotState::Free
        }
    }

    /// Recomputes the effective state; returns the previous one if it changed.
    fn settle(&mut self, now: DateTime<Utc>) -> Option<SpotState> {
        let next = self.derive();
        if next == self.state {
            return None;
        }
        let before = self.state;
        self.state = next;
        self.since = now;
        Some(before)
    }

    fn hear(&mut self, at: DateTime<Utc>) {
        if self.last_heard.is_none_or(|heard| at > heard) {
            self.last_heard = Some(at);
        }
        self.stale = false;
    }

    /// A sensor reading received at `at`. Returns the previous state if the spot changed.
    pub fn reading(
        &mut self,
        occupied: bool,
        at: DateTime<Utc>,
        settings: &MachineSettings,
    ) -> Option<SpotState> {
        if self.newest_reading.is_some_and(|newest| at < newest) {
            return None;
        }
        self.newest_reading = Some(at);
        self.hear(at);
        if self.sensor == Some(occupied) {
            self.pending = None;
        } else if self.sensor.is_none()
            || settings.debounce.is_zero()
            || at - self.sensor_since >= settings.debounce
        {
            self.accept(occupied, at);
        } else if self.pending.is_none_or(|(value, _)| value != occupied) {
            self.pending = Some((occupied, at));
        }
        self.settle(at)
    }

    fn accept(&mut self, occupied: bool, at: DateTime<Utc>) {
        self.sensor = Some(occupied);
        self.sensor_since = at;
        self.pending = None;
    }

    /// Any other sign of life from the sensor (a heartbeat) at `at`.
    pub fn heard(&mut self, at: DateTime<Utc>) -> Option<SpotState> {
        self.hear(at);
        self.settle(at)
    }

    /// The passage of time: applies a pending value whose debounce is over, marks a silent
    /// sensor stale. Returns the previous state if the spot changed.
    pub fn tick(&mut self, now: DateTime<Utc>, settings: &MachineSettings) -> Option<SpotState> {
        if let Some((value, _)) = self.pending
            && now - self.sensor_since >= settings.debounce
        {
            self.accept(value, now);
        }
        if !settings.stale_after.is_zero()
            && !self.stale
            && self
                .last_heard
                .is_some_and(|heard| now - heard > settings.stale_after)
        {
            self.stale = true;
        }
        self.settle(now)
    }

    /// Whether [`SpotMachine::tick`] at `now` could change anything (cheap pre-check).
    pub fn wants_tick(&self, now: DateTime<Utc>, settings: &MachineSettings) -> bool {
        self.pending.is_some()
            || (!settings.stale_after.is_zero()
                && !self.stale
                && self
                    .last_heard
                    .is_some_and(|heard| now - heard > settings.stale_after))
    }

    /// Sets or clears the reservation hold.
    pub fn set_held(&mut self, held: bool, now: DateTime<Utc>) -> Option<SpotState> {
        self.held = held;
        self.settle(now)
    }

    /// Sets or clears out of service.
    pub fn set_out_of_service(&mut self, oos: bool, now: DateTime<Utc>) -> Option<SpotState> {
        self.out_of_service = oos;
        self.settle(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn settings(debounce: i64, stale: i64) -> MachineSettings {
        MachineSettings {
            debounce: Duration::seconds(debounce),
            stale_after: Duration::seconds(stale),
        }
    }

    #[test]
    fn first_reading_and_changes_without_debounce() {
        let s = settings(0, 0);
        let mut spot = SpotMachine::new(false, t(0));
        assert_eq!(spot.state(), SpotState::Unknown);
        assert_eq!(spot.reading(false, t(1), &s), Some(SpotState::Unknown));
        assert_eq!(spot.state(), SpotState::Free);
        assert_eq!(spot.reading(true, t(2), &s), Some(SpotState::Free));
        assert_eq!(spot.state(), SpotState::Occupied);
        assert_eq!(spot.since(), t(2));
        assert_eq!(spot.reading(true, t(3), &s), None, "duplicate");
        assert_eq!(spot.reading(false, t(1), &s), None, "older than newest");
        assert_eq!(spot.state(), SpotState::Occupied);
    }

    #[test]
    fn debounce_shows_real_changes_at_once_and_damps_flapping() {
        let s = settings(10, 0);
        let mut spot = SpotMachine::new(false, t(0));
        spot.reading(false, t(0), &s);
        // The free value has stood 100 s: an arrival shows at once.
        assert!(spot.reading(true, t(100), &s).is_some());
        assert_eq!(spot.state(), SpotState::Occupied);
        // Flapping within 10 s of the change: held back.
        assert_eq!(spot.reading(false, t(101), &s), None);
        assert_eq!(spot.reading(true, t(102), &s), None, "taken back");
        assert_eq!(spot.pending(), None);
        assert_eq!(spot.reading(false, t(103), &s), None);
        assert_eq!(spot.pending(), Some(false));
        // Nothing yet at 109; at 110 the occupied value has stood 10 s: the free one wins.
        assert_eq!(spot.tick(t(109), &s), None);
        assert_eq!(spot.tick(t(110), &s), Some(SpotState::Occupied));
        assert_eq!(spot.state(), SpotState::Free);
    }

    #[test]
    fn silence_makes_a_spot_unknown_until_it_speaks() {
        let s = settings(0, 60);
        let mut spot = SpotMachine::new(false, t(0));
        spot.reading(true, t(0), &s);
        assert_eq!(spot.tick(t(60), &s), None);
        assert_eq!(spot.heard(t(50)), None, "a heartbeat keeps it alive");
        assert_eq!(spot.tick(t(100), &s), None);
        assert_eq!(spot.tick(t(111), &s), Some(SpotState::Occupied));
        assert_eq!(spot.state(), SpotState::Unknown);
        assert_eq!(spot.heard(t(112)), Some(SpotState::Unknown));
        assert_eq!(spot.state(), SpotState::Occupied);
    }

    #[test]
    fn holds_and_out_of_service() {
        let s = settings(0, 0);
        let mut spot = SpotMachine::new(false, t(0));
        spot.reading(false, t(0), &s);
        assert_eq!(spot.set_held(true, t(1)), Some(SpotState::Free));
        assert_eq!(spot.state(), SpotState::Held);
        spot.reading(true, t(2), &s);
        assert_eq!(
            spot.state(),
            SpotState::Occupied,
            "a car in a held spot shows"
        );
        spot.reading(false, t(3), &s);
        assert_eq!(spot.state(), SpotState::Held);
        assert_eq!(spot.set_out_of_service(true, t(4)), Some(SpotState::Held));
        assert_eq!(spot.state(), SpotState::OutOfService);
        spot.set_out_of_service(false, t(5));
        spot.set_held(false, t(6));
        assert_eq!(spot.state(), SpotState::Free);
    }
}
