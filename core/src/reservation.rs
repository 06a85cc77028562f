//! Reservations: their states, the moves between them, and the rules on times. Pure.
//!
//! ```text
//!            payment due          paid / free lot
//! (create) ─► requested ─────────────► confirmed ──► checked_in ──► completed
//!                │  └── not paid by start ─► expired     │
//!                └──────── cancel ─────────┐    ├─ cancel ─► cancelled
//!                                          ▼    └─ not checked in by start + grace ─► no_show
//!                                      cancelled
//! ```
//!
//! A reservation *holds* its spot (the spot cannot be booked again for an overlapping time)
//! while it is `requested`, `confirmed` or `checked_in`. The store enforces that no two
//! holding reservations of one spot overlap, in the database itself (an exclusion constraint
//! on PostgreSQL, a serialised check-and-insert on SQLite).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Where a reservation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ReservationState {
    /// Created, waiting for payment in advance.
    Requested,
    /// Valid: the spot is the driver's for the time.
    Confirmed,
    /// The car is in.
    CheckedIn,
    /// The car left.
    Completed,
    /// Cancelled by the driver or an operator before check-in.
    Cancelled,
    /// Not checked in by the start plus the grace period; the spot was released.
    NoShow,
    /// Never paid before its start.
    Expired,
}

impl ReservationState {
    /// Every state.
    pub const ALL: [ReservationState; 7] = [
        ReservationState::Requested,
        ReservationState::Confirmed,
        ReservationState::CheckedIn,
        ReservationState::Completed,
        ReservationState::Cancelled,
        ReservationState::NoShow,
        ReservationState::Expired,
    ];

    /// The states that hold the spot.
    pub const HOLDING: [ReservationState; 3] = [
        ReservationState::Requested,
        ReservationState::Confirmed,
        ReservationState::CheckedIn,
    ];

    /// The wire and database name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReservationState::Requested => "requested",
            ReservationState::Confirmed => "confirmed",
            ReservationState::CheckedIn => "checked_in",
            ReservationState::Completed => "completed",
            ReservationState::Cancelled => "cancelled",
            ReservationState::NoShow => "no_show",
            ReservationState::Expired => "expired",
        }
    }

    /// Whether it holds its spot.
    pub const fn holds_spot(self) -> bool {
        matches!(
            self,
            ReservationState::Requested | ReservationState::Confirmed | ReservationState::CheckedIn
        )
    }

    /// Whether nothing can happen to it any more.
    pub const fn is_final(self) -> bool {
        !self.holds_spot()
    }

    /// Whether `self -> next` is a move of the diagram.
    pub const fn can_become(self, next: ReservationState) -> bool {
        use ReservationState as S;
        matches!(
            (self, next),
            (S::Requested, S::Confirmed | S::Cancelled | S::Expired)
                | (S::Confirmed, S::CheckedIn | S::Cancelled | S::NoShow)
                | (S::CheckedIn, S::Completed)
        )
    }
}

impl fmt::Display for ReservationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReservationState {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        ReservationState::ALL
            .into_iter()
            .find(|state| state.as_str() == raw)
            .ok_or_else(|| {
                format!(
                    "unknown reservation state {:?}",
                    raw.chars().take(32).collect::<String>()
                )
            })
    }
}

/// The operator's rules on reservation times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRules {
    /// How far in the past a start may be (clock skew, a driver at the gate): 5 min.
    pub start_slack: Duration,
    /// Shortest stay: 15 min.
    pub min_duration: Duration,
    /// Longest stay: 7 days.
    pub max_duration: Duration,
    /// Furthest start ahead: 90 days.
    pub max_advance: Duration,
    /// Time after the start within which a confirmed reservation must check in: 30 min.
    pub grace: Duration,
}

impl Default for TimeRules {
    fn default() -> Self {
        Self {
            start_slack: Duration::minutes(5),
            min_duration: Duration::minutes(15),
            max_duration: Duration::days(7),
            max_advance: Duration::days(90),
            grace: Duration::minutes(30),
        }
    }
}

/// Why reservation times are refused. The texts are safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The start is in the past.
    #[error("the expected entry is in the past")]
    StartInPast,
    /// The exit is not after the entry.
    #[error("the expected exit must be after the expected entry")]
    ExitBeforeEntry,
    /// Shorter than the minimum.
    #[error("a reservation lasts at least {0} minutes")]
    TooShort(i64),
    /// Longer than the maximum.
    #[error("a reservation lasts at most {0} hours")]
    TooLong(i64),
    /// Too far ahead.
    #[error("a reservation starts at most {0} days ahead")]
    TooFarAhead(i64),
}

impl TimeRules {
    /// Checks a new (or moved) reservation's times at `now`.
    pub fn check(
        &self,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), TimeError> {
        if ends_at <= starts_at {
            return Err(TimeError::ExitBeforeEntry);
        }
        if starts_at < now - self.start_slack {
            return Err(TimeError::StartInPast);
        }
        if starts_at > now + self.max_advance {
            return Err(TimeError::TooFarAhead(self.max_advance.num_days()));
        }
        let length = ends_at - starts_at;
        if length < self.min_duration {
            return Err(TimeError::TooShort(self.min_duration.num_minutes()));
        }
        if length > self.max_duration {
            return Err(TimeError::TooLong(self.max_duration.num_hours()));
        }
        Ok(())
    }

    /// When a confirmed reservation starting at `starts_at` becomes a no-show.
    pub fn no_show_at(&self, starts_at: DateTime<Utc>) -> DateTime<Utc> {
        starts_at + self.grace
    }
}

/// Whether `[a_start, a_end)` and `[b_start, b_end)` overlap (half-open: back to back is fine).
pub fn overlaps(
    a_start: DateTime<Utc>,
    a_end: DateTime<Utc>,
    b_start: DateTime<Utc>,
    b_end: DateTime<Utc>,
) -> bool {
    a_start < b_end && b_start < a_end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minutes * 60, 0).unwrap()
    }

    #[test]
    fn the_diagram() {
        use ReservationState as S;
        assert!(S::Requested.can_become(S::Confirmed));
        assert!(S::Confirmed.can_become(S::NoShow));
        assert!(S::CheckedIn.can_become(S::Completed));
        assert!(
            !S::CheckedIn.can_become(S::Cancelled),
            "a parked car is not cancelled"
        );
        assert!(!S::Cancelled.can_become(S::Confirmed));
        for state in S::ALL {
            assert_eq!(state.as_str().parse::<S>(), Ok(state));
            if state.is_final() {
                assert!(
                    S::ALL.iter().all(|next| !state.can_become(*next)),
                    "{state}"
                );
            }
        }
        assert_eq!(S::HOLDING.iter().filter(|s| s.holds_spot()).count(), 3);
    }

    #[test]
    fn time_rules() {
        let rules = TimeRules::default();
        let now = t(0);
        assert_eq!(rules.check(t(60), t(180), now), Ok(()));
        assert_eq!(rules.check(t(-4), t(60), now), Ok(()), "within the slack");
        assert_eq!(rules.check(t(-10), t(60), now), Err(TimeError::StartInPast));
        assert_eq!(
            rules.check(t(60), t(60), now),
            Err(TimeError::ExitBeforeEntry)
        );
        assert_eq!(
            rules.check(t(60), t(30), now),
            Err(TimeError::ExitBeforeEntry)
        );
        assert_eq!(rules.check(t(60), t(70), now), Err(TimeError::TooShort(15)));
        assert_eq!(
            rules.check(t(60), t(60 + 8 * 24 * 60), now),
            Err(TimeError::TooLong(168))
        );
        assert_eq!(
            rules.check(t(91 * 24 * 60), t(91 * 24 * 60 + 60), now),
            Err(TimeError::TooFarAhead(90))
        );
        assert_eq!(rules.no_show_at(t(60)), t(90));
    }

    #[test]
    fn half_open_overlap() {
        assert!(overlaps(t(0), t(60), t(30), t(90)));
        assert!(!overlaps(t(0), t(60), t(60), t(120)), "back to back");
        assert!(overlaps(t(0), t(120), t(30), t(60)), "inside");
    }
}
