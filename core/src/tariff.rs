//! Tariffs: what parking costs, and the pure, exact arithmetic that prices a stay, a
//! reservation, a no-show and a cancellation. `docs/tariffs.md` is the operator's guide.
//!
//! A [`Tariff`] belongs to a lot (a caller may keep one per zone and pick it; spot kinds are
//! handled inside, by [`KindRates`]). Amounts are integers in the currency's minor unit
//! ([`Money`]); rates are per hour or per billing unit ([`Rate`]); no float ever touches money.
//!
//! # How a stay is priced
//!
//! 1. **Grace**: a walk-in stay no longer than `grace_minutes` costs nothing. A longer one is
//!    charged from its entry.
//! 2. **Units**: the stay is cut into billing units of `unit_minutes`, counted from the entry;
//!    every *started* unit is charged.
//! 3. **Rate table**: the spot kind's table ([`Tariff::by_kind`]) if it has one, else
//!    [`Tariff::rates`]. Its optional first period is a flat amount for the first units.
//! 4. **Bands**: each unit is charged at the rate in force at the *start* of the unit, read on
//!    the lot's wall clock (weekday and local time, chrono-tz): a band's rate if the start falls
//!    in a band, the base rate otherwise.
//! 5. **EV**: for an electric vehicle, the adjustment (basis points or an amount per unit) is
//!    applied per line, and a line never goes below zero.
//! 6. **Daily maximum**: per 24-hour window counted from the entry (entry + 0 h, + 24 h, ...),
//!    the charges are capped at `daily_max`.
//! 7. **Overstay**: with a reservation, time past the reserved exit is charged by the
//!    overstay rule, only when the vehicle leaves more than the overstay grace after the
//!    reserved exit.
//!
//! # Exactness
//!
//! Unit prices are exact rationals (an hourly rate of 2.50 is 62.5 cents per 15 minutes) held
//! as `i128` numerators over one fixed denominator. Rounding happens once per window, half up
//! to the minor unit, cumulatively over its lines, so the lines of a [`Quote`] always add up to
//! its total. Every operation is checked: an absurd input is an error, never a panic or a wrap.

mod engine;
#[cfg(test)]
mod tests;
mod validate;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::vehicle::{SpotKind, VehicleType};

use engine::{DAY_S, Run, RunRates};

/// The largest amount or rate a tariff may state, in minor units (100 million in a currency
/// with two decimals).
pub const MAX_AMOUNT: i64 = 10_000_000_000;
/// Most time-of-day bands in one rate table.
pub const MAX_BANDS: usize = 32;
/// Longest band name, in bytes.
pub const MAX_NAME: usize = 64;
/// Longest grace period (stay or overstay), minutes: one day.
pub const MAX_GRACE_MINUTES: u32 = 1_440;
/// Longest stay (or overstay, or reservation) priced automatically, in days. Longer ones are
/// refused with [`QuoteError::TooLong`]: an abandoned vehicle is a case for staff.
pub const MAX_STAY_DAYS: i64 = 400;
/// Furthest a cancellation deadline may lie before the entry, hours (the 90 days reservations
/// may be made ahead).
pub const MAX_CANCEL_HOURS: u32 = 2_160;
/// 100 %, in basis points.
pub const FULL_BP: u32 = 10_000;
/// One window of a daily maximum, seconds: windows run from the entry (or the reserved entry,
/// or the reserved exit for overstay) in steps of 24 hours.
pub const WINDOW_SECONDS: i64 = DAY_S;

/// An amount in the minor unit of a currency (cents for EUR and USD, yen for JPY).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Money(pub i64);

impl Money {
    /// Nothing.
    pub const ZERO: Money = Money(0);

    /// The amount in minor units.
    pub const fn minor(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Money {
    /// The amount in minor units (the currency's exponent is the display's business).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An ISO 4217 currency code: three upper-case ASCII letters, e.g. `EUR`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, example = "EUR"))]
pub struct Currency(String);

impl Currency {
    /// Checks the shape (three upper-case letters). Whether the code is assigned is not
    /// checked: the list changes, and a payment provider refuses unknown ones anyway.
    pub fn parse(raw: &str) -> Result<Currency, TariffError> {
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(raw.to_owned()))
        } else {
            Err(TariffError::Currency(raw.chars().take(16).collect()))
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Currency {
    type Err = TariffError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Currency::parse(raw)
    }
}

impl TryFrom<String> for Currency {
    type Error = TariffError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Currency::parse(&raw)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> String {
        currency.0
    }
}

/// A local time of day on whole minutes, written `HH:MM` (`HH:MM:00` is accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    /// Midnight.
    pub const MIDNIGHT: TimeOfDay = TimeOfDay(0);

    /// `hour:minute`, if it is a time of day.
    pub const fn new(hour: u32, minute: u32) -> Option<TimeOfDay> {
        if hour < 24 && minute < 60 {
            Some(TimeOfDay((hour * 60 + minute) as u16))
        } else {
            None
        }
    }

    /// Minutes since midnight, `0..1440`.
    pub const fn minutes(self) -> u32 {
        self.0 as u32
    }

    /// Parses `HH:MM` or `HH:MM:00`.
    pub fn parse(raw: &str) -> Result<TimeOfDay, TariffError> {
        let bad = || TariffError::TimeOfDay(raw.chars().take(16).collect());
        let bytes = raw.as_bytes();
        let digits = |at: usize| -> Option<u32> {
            let pair = bytes.get(at..at + 2)?;
            pair.iter()
                .all(u8::is_ascii_digit)
                .then(|| u32::from(pair[0] - b'0') * 10 + u32::from(pair[1] - b'0'))
        };
        let whole_minute = match bytes.len() {
            5 => true,
            8 => bytes[5] == b':' && digits(6) == Some(0),
            _ => false,
        };
        if !whole_minute || bytes[2] != b':' {
            return Err(bad());
        }
        match (digits(0), digits(3)) {
            (Some(hour), Some(minute)) => TimeOfDay::new(hour, minute).ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl FromStr for TimeOfDay {
    type Err = TariffError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        TimeOfDay::parse(raw)
    }
}

impl TryFrom<String> for TimeOfDay {
    type Error = TariffError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        TimeOfDay::parse(&raw)
    }
}

impl From<TimeOfDay> for String {
    fn from(time: TimeOfDay) -> String {
        time.to_string()
    }
}

/// A time rate: `{"per_hour": 250}` (2.50 an hour, charged by the started unit: 62.5 per
/// 15-minute unit, exactly) or `{"per_unit": 60}` (0.60 per started unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Rate {
    /// Minor units per hour, prorated exactly to the billing unit.
    PerHour(Money),
    /// Minor units per billing unit.
    PerUnit(Money),
}

/// A time-of-day band: on each of `days`, from `start` to `end` (local time of the lot), units
/// that start in it are charged at `rate`. An `end` at or before `start` runs past midnight
/// into the next day (`18:00`-`08:00`); `end == start` is a whole day from `start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Band {
    /// What receipts call it ("evening"); may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The days the band starts on (`Mon` ... `Sun`).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>, example = json!(["Mon", "Tue"])))]
    pub days: Vec<Weekday>,
    /// Local start, `HH:MM`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "18:00"))]
    pub start: TimeOfDay,
    /// Local end, `HH:MM` (at or before `start`: the next day).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "08:00"))]
    pub end: TimeOfDay,
    /// The rate of units starting in the band.
    pub rate: Rate,
}

/// A flat amount for the first minutes of a stay (a minimum charge: it is due in full for a
/// shorter stay past the grace). `amount` 0 makes the first minutes free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FirstPeriod {
    /// Its length, a whole number of billing units, at most a day.
    pub minutes: u32,
    /// What it costs.
    pub amount: Money,
}

/// The rates for one kind of spot (or the lot's default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RateTable {
    /// The rate outside every band.
    pub base: Rate,
    /// Time-of-day bands; they must not overlap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bands: Vec<Band>,
    /// A flat first period, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_period: Option<FirstPeriod>,
    /// The most one 24-hour window (from the entry) costs, if capped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_max: Option<Money>,
}

/// Rates that replace [`Tariff::rates`] for some spot kinds (the whole table: nothing is
/// merged field by field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KindRates {
    /// The spot kinds it applies to (a kind may appear in one entry only).
    pub kinds: Vec<SpotKind>,
    /// Their rates.
    pub rates: RateTable,
}

/// The adjustment for electric vehicles: `{"basis_points": 1000}` is +10 %,
/// `{"basis_points": -2000}` is -20 %, `{"per_unit": -10}` is 0.10 off every unit. A line is
/// never adjusted below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EvAdjustment {
    /// A percentage of the time charges, in basis points (`-10000` ..= `100000`).
    BasisPoints(i32),
    /// An amount per billing unit (negative: a discount).
    PerUnit(Money),
}

/// How overstay units are charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OverstayCharge {
    /// The rate in force (bands and spot kind included) times this, in basis points:
    /// `15000` is 1.5 times.
    RateBasisPoints(u32),
    /// A flat rate of its own.
    Rate(Rate),
}

/// Time past a reservation's exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OverstayRule {
    /// Leaving up to this long after the reserved exit costs nothing extra; leaving later is
    /// charged from the reserved exit.
    #[serde(default)]
    pub grace_minutes: u32,
    /// The charge per unit.
    pub charge: OverstayCharge,
    /// The most one 24-hour window of overstay (from the reserved exit) costs; none: uncapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_max: Option<Money>,
}

/// What a no-show costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NoShowFee {
    /// Nothing.
    #[default]
    None,
    /// A flat fee.
    Flat(Money),
    /// The price of the reserved period.
    ReservedPrice,
    /// A share of the price of the reserved period, in basis points (`0` ..= `10000`).
    BasisPoints(u32),
}

/// Refunds of a cancelled reservation: in full until `free_until_hours_before` the entry,
/// then `late_refund_bp` of what was paid until the entry, nothing from the entry on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancellationPolicy {
    /// Cancelling at least this many hours before the entry refunds everything.
    #[serde(default)]
    pub free_until_hours_before: u32,
    /// The share refunded after that deadline, in basis points (`0` ..= `10000`).
    #[serde(default)]
    pub late_refund_bp: u32,
}

/// A lot's tariff. Build it from operators' JSON with [`Tariff::from_json`], or check one
/// built otherwise with [`Tariff::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tariff {
    /// The currency of every amount.
    pub currency: Currency,
    /// The billing unit, minutes; it divides a day (1, 5, 10, 15, 20, 30, 60, ...).
    pub unit_minutes: u32,
    /// A walk-in stay up to this long is free.
    #[serde(default)]
    pub grace_minutes: u32,
    /// The default rates.
    pub rates: RateTable,
    /// Rates for some spot kinds (motorcycle cheaper, accessible free).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_kind: Vec<KindRates>,
    /// The electric-vehicle adjustment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ev: Option<EvAdjustment>,
    /// Time past a reservation's exit; none: the ordinary rates, without grace, capped by the
    /// table's daily maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overstay: Option<OverstayRule>,
    /// What a no-show costs.
    #[serde(default)]
    pub no_show: NoShowFee,
    /// Refunds on cancellation.
    #[serde(default)]
    pub cancellation: CancellationPolicy,
}

impl Tariff {
    /// Parses and validates a tariff document.
    pub fn from_json(raw: &[u8]) -> Result<Tariff, TariffError> {
        let tariff: Tariff = serde_json::from_slice(raw).map_err(|error| TariffError::Json {
            at: format!("line {} column {}", error.line(), error.column()),
            message: error.to_string(),
        })?;
        tariff.validate()?;
        Ok(tariff)
    }

    /// The rate table of a spot kind: its override if it has one, else the default.
    pub fn table_for(&self, kind: SpotKind) -> &RateTable {
        self.by_kind
            .iter()
            .find(|entry| entry.kinds.contains(&kind))
            .map_or(&self.rates, |entry| &entry.rates)
    }
}

/// Why a tariff is refused. Every variant names the offending field (`rates.bands[1].rate`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TariffError {
    /// The document is not JSON of the tariff's shape.
    #[error("{at}: {message}")]
    Json {
        /// Where (`line 3 column 7`).
        at: String,
        /// What serde said.
        message: String,
    },
    /// Not three upper-case letters.
    #[error("currency: {0:?} is not an ISO 4217 code (three upper-case letters, e.g. EUR)")]
    Currency(String),
    /// Not a time of day on whole minutes.
    #[error("{0:?} is not a time of day (expected HH:MM, 00:00 to 23:59)")]
    TimeOfDay(String),
    /// A negative amount or rate.
    #[error("{path}: must not be negative (got {value})")]
    Negative {
        /// The field.
        path: String,
        /// Its value.
        value: i64,
    },
    /// Zero where zero makes no sense.
    #[error("{path}: must be greater than zero (leave it out instead)")]
    Zero {
        /// The field.
        path: String,
    },
    /// Above the largest value accepted.
    #[error("{path}: {value} is above the maximum {max}")]
    TooLarge {
        /// The field.
        path: String,
        /// Its value.
        value: i64,
        /// The maximum.
        max: i64,
    },
    /// Outside a range (basis points).
    #[error("{path}: {value} is outside {min} ..= {max}")]
    OutOfRange {
        /// The field.
        path: String,
        /// Its value.
        value: i64,
        /// The least accepted.
        min: i64,
        /// The most accepted.
        max: i64,
    },
    /// A billing unit that is zero or does not divide a day.
    #[error(
        "unit_minutes: {0} must be between 1 and 1440 and divide a day (1440 minutes) into whole units, e.g. 1, 5, 10, 15, 20, 30 or 60"
    )]
    UnitMinutes(u32),
    /// A length that is not a whole number of billing units.
    #[error(
        "{path}: {minutes} minutes is not a whole number of {unit_minutes}-minute billing units"
    )]
    NotWholeUnits {
        /// The field.
        path: String,
        /// Its value.
        minutes: u32,
        /// The billing unit.
        unit_minutes: u32,
    },
    /// A band without days.
    #[error("{path}: a band needs at least one day")]
    NoDays {
        /// The field.
        path: String,
    },
    /// A day listed twice in one band.
    #[error("{path}: {day} is listed twice")]
    DuplicateDay {
        /// The field.
        path: String,
        /// The day.
        day: Weekday,
    },
    /// Two bands cover the same time.
    #[error("{first} and {second} overlap from {day} {at}")]
    OverlappingBands {
        /// The first band.
        first: String,
        /// The second band.
        second: String,
        /// The local day where the overlap begins.
        day: Weekday,
        /// The local time where it begins.
        at: TimeOfDay,
    },
    /// A daily maximum below the price of one unit at the base rate.
    #[error(
        "{path}: the daily maximum {cap} is below the price of one {unit_minutes}-minute unit at the base rate ({unit_price}, rounded up)"
    )]
    CapBelowOneUnit {
        /// The field.
        path: String,
        /// The maximum.
        cap: i64,
        /// The billing unit.
        unit_minutes: u32,
        /// One unit at the base rate, rounded up to the minor unit.
        unit_price: i64,
    },
    /// A first period dearer than the daily maximum.
    #[error("{path}: the first period's amount {amount} is above the daily maximum {cap}")]
    FirstPeriodAboveCap {
        /// The field.
        path: String,
        /// The first period's amount.
        amount: i64,
        /// The daily maximum.
        cap: i64,
    },
    /// Too many entries in a list.
    #[error("{path}: at most {max} entries")]
    TooMany {
        /// The field.
        path: String,
        /// The most accepted.
        max: usize,
    },
    /// An empty list where one entry is needed.
    #[error("{path}: must not be empty")]
    Empty {
        /// The field.
        path: String,
    },
    /// A spot kind with two rate tables.
    #[error("{path}: spot kind {kind} already has rates in {first}")]
    DuplicateKind {
        /// The field.
        path: String,
        /// The kind.
        kind: SpotKind,
        /// Where it appeared first.
        first: String,
    },
    /// A bad name.
    #[error("{path}: {problem}")]
    Text {
        /// The field.
        path: String,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Why a price cannot be computed. The texts are safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The tariff is not valid.
    #[error("invalid tariff: {0}")]
    Tariff(#[from] TariffError),
    /// The exit is before the entry.
    #[error("the exit is before the entry")]
    ExitBeforeEntry,
    /// A reservation that does not end after it starts.
    #[error("the reserved exit must be after the reserved entry")]
    EmptyReservation,
    /// Longer than [`MAX_STAY_DAYS`].
    #[error("a stay longer than {0} days is not priced automatically")]
    TooLong(i64),
    /// A negative amount paid.
    #[error("the amount paid must not be negative")]
    NegativePaid,
    /// Times or amounts outside what the arithmetic supports.
    #[error("the times or amounts are outside the supported range")]
    Overflow,
}

/// Who occupies what: the spot's kind picks the rate table, `ev` the EV adjustment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Occupant {
    /// The kind of the spot used (or reserved).
    pub spot_kind: SpotKind,
    /// An electric vehicle (gets [`Tariff::ev`]).
    pub ev: bool,
}

impl Occupant {
    /// A vehicle of `vehicle` type on a spot of `spot_kind`; EV when the type is
    /// [`VehicleType::Ev`] (a caller knowing more, such as an accessible-permit holder's EV,
    /// sets `ev` itself).
    pub fn new(spot_kind: SpotKind, vehicle: VehicleType) -> Occupant {
        Occupant {
            spot_kind,
            ev: vehicle == VehicleType::Ev,
        }
    }
}

/// A reservation's period, `[starts_at, ends_at)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservedPeriod {
    /// The reserved entry.
    pub starts_at: DateTime<Utc>,
    /// The reserved exit.
    pub ends_at: DateTime<Utc>,
}

/// What a line of a quote is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LineKind {
    /// The stay was within the grace period: free.
    Grace,
    /// The rate table's flat first period.
    FirstPeriod,
    /// Units at a rate (the base rate, or the band named in `band`).
    Time,
    /// The EV adjustment of a window (negative: a discount).
    Ev,
    /// The daily maximum applied to a window (never positive).
    DailyMaximum,
    /// Units past a reservation's exit.
    Overstay,
    /// The daily maximum of overstay applied to a window (never positive).
    OverstayMaximum,
    /// A no-show fee.
    NoShowFee,
}

/// One line of a quote: what, when, how many units at what rate, and the amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuoteLine {
    /// What it is.
    pub kind: LineKind,
    /// The band's name, for time and overstay lines charged at a named band's rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<String>,
    /// Start of the period it covers.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub from: DateTime<Utc>,
    /// End of the period it covers (the stay's end when its last unit runs past it).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub to: DateTime<Utc>,
    /// Billing units charged (0 for lines not counted in units).
    pub units: u32,
    /// The billing unit, minutes.
    pub unit_minutes: u32,
    /// The rate charged, as configured (for EV lines: the per-unit adjustment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// A factor applied, in basis points: the overstay multiplier, the EV percentage or the
    /// no-show share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis_points: Option<i32>,
    /// The amount, minor units; negative only for reductions (EV discount, maxima).
    pub amount: Money,
}

/// A priced stay, reservation or fee, itemised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quote {
    /// The currency.
    pub currency: Currency,
    /// Start of the period priced.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub from: DateTime<Utc>,
    /// End of the period priced.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub to: DateTime<Utc>,
    /// The sum of the lines, never negative.
    pub total: Money,
    /// The lines, in time order (each window's EV and maximum lines after its time lines).
    pub lines: Vec<QuoteLine>,
}

fn check_length(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(), QuoteError> {
    if to - from > chrono::Duration::days(MAX_STAY_DAYS) {
        return Err(QuoteError::TooLong(MAX_STAY_DAYS));
    }
    Ok(())
}

/// Prices a stay on a spot from `entry` to `exit` (a running session: `exit` = now).
///
/// Without a reservation: the grace, then the rate table from the entry (see the module
/// documentation). With one: the reserved period's price ([`quote_reservation`]: arriving
/// early or leaving early changes nothing), plus overstay when the vehicle leaves more than the
/// overstay grace after the reserved exit. The caller subtracts what was already paid.
/// Times count in whole seconds (fractions of a second are dropped).
///
/// ```
/// use parkd_core::tariff::{Money, Occupant, Tariff, quote_stay};
/// use parkd_core::vehicle::SpotKind;
///
/// let tariff = Tariff::from_json(
///     br#"{"currency": "EUR", "unit_minutes": 15, "grace_minutes": 15,
///          "rates": {"base": {"per_hour": 250}, "daily_max": 2000}}"#,
/// )?;
/// let car = Occupant { spot_kind: SpotKind::Standard, ev: false };
/// let entry = "2026-11-23T09:00:00Z".parse()?;
/// let exit = "2026-11-23T10:20:00Z".parse()?;
/// let quote = quote_stay(&tariff, chrono_tz::Europe::Berlin, entry, exit, car, None)?;
/// // 80 minutes: 6 started quarter hours at 62.5 = 375.
/// assert_eq!(quote.total, Money(375));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn quote_stay(
    tariff: &Tariff,
    tz: Tz,
    entry: DateTime<Utc>,
    exit: DateTime<Utc>,
    occupant: Occupant,
    reservation: Option<ReservedPeriod>,
) -> Result<Quote, QuoteError> {
    tariff.validate()?;
    if exit < entry {
        return Err(QuoteError::ExitBeforeEntry);
    }
    check_length(entry, exit)?;
    let table = tariff.table_for(occupant.spot_kind);
    let mut lines = Vec::new();
    let mut total = Money::ZERO;
    let Some(reserved) = reservation else {
        let entry_s = entry.timestamp();
        let exit_s = exit.timestamp();
        let grace_s = i64::from(tariff.grace_minutes) * 60;
        if tariff.grace_minutes > 0 && exit_s - entry_s <= grace_s {
            lines.push(QuoteLine {
                kind: LineKind::Grace,
                band: None,
                from: entry,
                to: exit,
                units: 0,
                unit_minutes: tariff.unit_minutes,
                rate: None,
                basis_points: None,
                amount: Money::ZERO,
            });
        } else {
            total = Run {
                tz,
                unit_minutes: tariff.unit_minutes,
                origin: entry_s,
                end: exit_s,
                rates: RunRates::Table(table),
                ev: tariff.ev.filter(|_| occupant.ev),
                cap: table.daily_max,
            }
            .price(&mut lines)?;
        }
        return Ok(Quote {
            currency: tariff.currency.clone(),
            from: entry,
            to: exit,
            total,
            lines,
        });
    };
    total = reservation_lines(tariff, tz, reserved, occupant, &mut lines)?;
    let rule = tariff.overstay.unwrap_or(OverstayRule {
        grace_minutes: 0,
        charge: OverstayCharge::RateBasisPoints(FULL_BP),
        daily_max: table.daily_max,
    });
    let reserved_exit_s = reserved.ends_at.timestamp();
    let exit_s = exit.timestamp();
    if exit_s - reserved_exit_s > i64::from(rule.grace_minutes) * 60 {
        check_length(reserved.ends_at, exit)?;
        let rates = match rule.charge {
            OverstayCharge::RateBasisPoints(bp) => RunRates::Overstay(table, bp),
            OverstayCharge::Rate(rate) => RunRates::OverstayFlat(rate),
        };
        let overstay = Run {
            tz,
            unit_minutes: tariff.unit_minutes,
            origin: reserved_exit_s,
            end: exit_s,
            rates,
            ev: None,
            cap: rule.daily_max,
        }
        .price(&mut lines)?;
        total = Money(
            total
                .0
                .checked_add(overstay.0)
                .ok_or(QuoteError::Overflow)?,
        );
    }
    Ok(Quote {
        currency: tariff.currency.clone(),
        from: entry,
        to: exit,
        total,
        lines,
    })
}

fn reservation_lines(
    tariff: &Tariff,
    tz: Tz,
    reserved: ReservedPeriod,
    occupant: Occupant,
    lines: &mut Vec<QuoteLine>,
) -> Result<Money, QuoteError> {
    if reserved.ends_at <= reserved.starts_at {
        return Err(QuoteError::EmptyReservation);
    }
    check_length(reserved.starts_at, reserved.ends_at)?;
    let table = tariff.table_for(occupant.spot_kind);
    Run {
        tz,
        unit_minutes: tariff.unit_minutes,
        origin: reserved.starts_at.timestamp(),
        end: reserved.ends_at.timestamp(),
        rates: RunRates::Table(table),
        ev: tariff.ev.filter(|_| occupant.ev),
        cap: table.daily_max,
    }
    .price(lines)
}

/// Prices a reservation's reserved period, for payment in advance: the rate table from the
/// reserved entry to the reserved exit, with bands, EV and the daily maximum, without the
/// grace (the spot is held for the whole period, however short).
pub fn quote_reservation(
    tariff: &Tariff,
    tz: Tz,
    reserved: ReservedPeriod,
    occupant: Occupant,
) -> Result<Quote, QuoteError> {
    tariff.validate()?;
    let mut lines = Vec::new();
    let total = reservation_lines(tariff, tz, reserved, occupant, &mut lines)?;
    Ok(Quote {
        currency: tariff.currency.clone(),
        from: reserved.starts_at,
        to: reserved.ends_at,
        total,
        lines,
    })
}

/// The fee for a reservation that was never used, by [`Tariff::no_show`]: one
/// [`LineKind::NoShowFee`] line over the reserved period (no line when the policy charges
/// nothing). A share of the price is rounded half up.
pub fn no_show_fee(
    tariff: &Tariff,
    tz: Tz,
    reserved: ReservedPeriod,
    occupant: Occupant,
) -> Result<Quote, QuoteError> {
    let price = || quote_reservation(tariff, tz, reserved, occupant).map(|quote| quote.total);
    tariff.validate()?;
    if reserved.ends_at <= reserved.starts_at {
        return Err(QuoteError::EmptyReservation);
    }
    let (amount, basis_points) = match tariff.no_show {
        NoShowFee::None => (None, None),
        NoShowFee::Flat(amount) => (Some(amount), None),
        NoShowFee::ReservedPrice => (Some(price()?), None),
        NoShowFee::BasisPoints(bp) => {
            let share = engine::share_half_up(price()?, bp)?;
            (Some(share), i32::try_from(bp).ok())
        }
    };
    let lines = amount
        .map(|amount| QuoteLine {
            kind: LineKind::NoShowFee,
            band: None,
            from: reserved.starts_at,
            to: reserved.ends_at,
            units: 0,
            unit_minutes: tariff.unit_minutes,
            rate: None,
            basis_points,
            amount,
        })
        .into_iter()
        .collect();
    Ok(Quote {
        currency: tariff.currency.clone(),
        from: reserved.starts_at,
        to: reserved.ends_at,
        total: amount.unwrap_or(Money::ZERO),
        lines,
    })
}

/// What to refund of `paid` when a reservation entering at `entry` is cancelled at `now`:
/// everything up to `free_until_hours_before` the entry (inclusive), then
/// `late_refund_bp` of it (rounded down: never more than paid) until the entry, nothing from
/// the entry on (a started reservation is settled as a stay or a no-show, so cancelling at the
/// gate cannot undercut the no-show fee).
pub fn refund_on_cancel(
    paid: Money,
    policy: &CancellationPolicy,
    now: DateTime<Utc>,
    entry: DateTime<Utc>,
) -> Result<Money, QuoteError> {
    if paid.0 < 0 {
        return Err(QuoteError::NegativePaid);
    }
    if now >= entry {
        return Ok(Money::ZERO);
    }
    let free_until = entry.checked_sub_signed(chrono::Duration::hours(i64::from(
        policy.free_until_hours_before,
    )));
    if free_until.is_some_and(|free_until| now <= free_until) {
        return Ok(paid);
    }
    let bp = policy.late_refund_bp.min(FULL_BP);
    let refund = i128::from(paid.0) * i128::from(bp) / i128::from(FULL_BP);
    Ok(Money(
        i64::try_from(refund).map_err(|_| QuoteError::Overflow)?,
    ))
}
