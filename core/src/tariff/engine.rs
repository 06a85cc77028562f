//! The arithmetic: the wall-clock walk that finds where the rate may change, and the exact
//! pricing of billing units, per 24-hour window, with rounding.
//!
//! Times are Unix seconds (`i64`). Amounts in flight are `i128` numerators over [`DEN`]:
//! 60 (hourly rates prorated to minutes) times 10^4 twice (two basis-point factors: the
//! overstay multiplier and the EV percentage), so every product is exact and only the final
//! rounding of a window loses anything, and then less than one minor unit.

use chrono::{DateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use super::{Band, EvAdjustment, FULL_BP, LineKind, Money, QuoteError, QuoteLine, Rate, RateTable};

/// A day (and a daily-maximum window), seconds.
pub(super) const DAY_S: i64 = 86_400;
/// A week, seconds: bands repeat weekly.
const WEEK_S: i64 = 7 * DAY_S;
/// The common denominator of exact amounts.
pub(super) const DEN: i128 = 6_000_000_000;
/// 100 % in basis points, as `i128`.
const BP: i128 = FULL_BP as i128;

fn ceil_div(value: i64, by: i64) -> i64 {
    value.div_euclid(by) + i64::from(value.rem_euclid(by) != 0)
}

/// The exact price of one unit at `rate`, over [`DEN`]. Always a multiple of 10^8.
pub(super) fn unit_numerator(rate: Rate, unit_minutes: u32) -> Option<i128> {
    match rate {
        Rate::PerUnit(amount) => i128::from(amount.0).checked_mul(DEN),
        Rate::PerHour(amount) => i128::from(amount.0)
            .checked_mul(i128::from(unit_minutes))?
            .checked_mul(DEN / 60),
    }
}

/// `numerator / DEN` rounded half up, for a non-negative numerator.
fn round_half_up(numerator: i128) -> Result<i64, QuoteError> {
    let rounded = numerator
        .checked_add(DEN / 2)
        .ok_or(QuoteError::Overflow)?
        .div_euclid(DEN);
    i64::try_from(rounded).map_err(|_| QuoteError::Overflow)
}

/// `amount * bp / 10^4`, rounded half up.
pub(super) fn share_half_up(amount: Money, bp: u32) -> Result<Money, QuoteError> {
    let product = i128::from(amount.0)
        .checked_mul(i128::from(bp))
        .ok_or(QuoteError::Overflow)?;
    let rounded = (product + BP / 2).div_euclid(BP);
    Ok(Money(
        i64::try_from(rounded).map_err(|_| QuoteError::Overflow)?,
    ))
}

fn at(seconds: i64) -> Result<DateTime<Utc>, QuoteError> {
    DateTime::from_timestamp(seconds, 0).ok_or(QuoteError::Overflow)
}

/// Seconds since Monday 00:00 of a local time given in seconds since 1970-01-01 00:00 local
/// (a Thursday).
fn week_second(local: i64) -> i64 {
    (local.div_euclid(DAY_S) + 3).rem_euclid(7) * DAY_S + local.rem_euclid(DAY_S)
}

/// The UTC offset of `tz` at `t`, seconds.
fn offset_at(tz: Tz, t: i64) -> Result<i64, QuoteError> {
    let utc = at(t)?;
    Ok(i64::from(
        tz.offset_from_utc_datetime(&utc.naive_utc())
            .fix()
            .local_minus_utc(),
    ))
}

/// Where a band lies in the week: the second it starts on each of its days, and its length.
pub(super) fn band_span(band: &Band) -> (Vec<i64>, i64) {
    let start = i64::from(band.start.minutes()) * 60;
    let end = i64::from(band.end.minutes()) * 60;
    let length = if end > start {
        end - start
    } else {
        DAY_S - start + end
    };
    let starts = band
        .days
        .iter()
        .map(|day| i64::from(day.num_days_from_monday()) * DAY_S + start)
        .collect();
    (starts, length)
}

/// Where two bands first overlap in the week (a week second), if they do.
pub(super) fn overlap(a: &Band, b: &Band) -> Option<i64> {
    let (a_starts, a_length) = band_span(a);
    let (b_starts, b_length) = band_span(b);
    let mut first: Option<i64> = None;
    for a_start in &a_starts {
        for b_start in &b_starts {
            let begins = if (b_start - a_start).rem_euclid(WEEK_S) < a_length {
                Some(*b_start)
            } else if (a_start - b_start).rem_euclid(WEEK_S) < b_length {
                Some(*a_start)
            } else {
                None
            };
            if let Some(begins) = begins {
                first = Some(first.map_or(begins, |known| known.min(begins)));
            }
        }
    }
    first
}

/// A rate table's bands laid out on the week.
struct Schedule {
    spans: Vec<(Vec<i64>, i64)>,
    /// Every week second where a band starts or ends, sorted.
    changes: Vec<i64>,
}

impl Schedule {
    fn new(bands: &[Band]) -> Schedule {
        let spans: Vec<(Vec<i64>, i64)> = bands.iter().map(band_span).collect();
        let mut changes: Vec<i64> = spans
            .iter()
            .flat_map(|(starts, length)| {
                starts
                    .iter()
                    .flat_map(move |start| [*start, (start + length).rem_euclid(WEEK_S)])
            })
            .collect();
        changes.sort_unstable();
        changes.dedup();
        Schedule { spans, changes }
    }

    /// The band in force at a week second (bands do not overlap: at most one).
    fn band_at(&self, week: i64) -> Option<usize> {
        self.spans.iter().position(|(starts, length)| {
            starts
                .iter()
                .any(|start| (week - start).rem_euclid(WEEK_S) < *length)
        })
    }

    /// Wall-clock seconds from `week` to the next band start or end strictly after it.
    fn until_change(&self, week: i64) -> Option<i64> {
        let next = self.changes.partition_point(|change| *change <= week);
        match self.changes.get(next) {
            Some(change) => Some(change - week),
            None => self.changes.first().map(|first| first + WEEK_S - week),
        }
    }
}

/// A stretch of time with one band (or none) in force.
struct Piece {
    start: i64,
    end: i64,
    band: Option<usize>,
}

/// Cuts `[from, to)` where the band in force may change: band starts and ends on the wall
/// clock, clock changes (found exactly, to the second), and the 24-hour windows from `origin`.
fn pieces(
    tz: Tz,
    schedule: &Schedule,
    from: i64,
    to: i64,
    origin: i64,
) -> Result<Vec<Piece>, QuoteError> {
    let mut pieces = Vec::new();
    let mut t = from;
    while t < to {
        let offset = offset_at(tz, t)?;
        let week = week_second(t + offset);
        let window_end = origin + ((t - origin).div_euclid(DAY_S) + 1) * DAY_S;
        let mut next = to.min(window_end);
        if let Some(wall) = schedule.until_change(week) {
            // Without a clock change, the wall clock reaches the change after `wall` seconds.
            next = next.min(t + wall);
        }
        if offset_at(tz, next)? != offset {
            // A clock change in (t, next]: the wall clock jumps there, so stop at it. Pieces
            // are at most a day long, and no zone changes its clock twice within a day.
            let (mut same, mut changed) = (t, next);
            while changed - same > 1 {
                let mid = same + (changed - same) / 2;
                if offset_at(tz, mid)? == offset {
                    same = mid;
                } else {
                    changed = mid;
                }
            }
            next = changed;
        }
        pieces.push(Piece {
            start: t,
            end: next,
            band: schedule.band_at(week),
        });
        t = next;
    }
    Ok(pieces)
}

/// Where a run's unit prices come from.
#[derive(Debug, Clone, Copy)]
pub(super) enum RunRates<'a> {
    /// A rate table: its first period, bands and base rate.
    Table(&'a RateTable),
    /// Overstay: a table's bands and base rate times basis points, no first period.
    Overstay(&'a RateTable, u32),
    /// Overstay at a flat rate.
    OverstayFlat(Rate),
}

/// One priced run of units: `[origin, end)` cut into units from `origin`, capped per 24 hours
/// from `origin`.
#[derive(Debug)]
pub(super) struct Run<'a> {
    pub(super) tz: Tz,
    pub(super) unit_minutes: u32,
    pub(super) origin: i64,
    pub(super) end: i64,
    pub(super) rates: RunRates<'a>,
    pub(super) ev: Option<EvAdjustment>,
    pub(super) cap: Option<Money>,
}

/// A line before rounding.
struct Raw {
    kind: LineKind,
    band: Option<usize>,
    rate: Option<Rate>,
    /// Index of its first unit.
    first_unit: i64,
    units: i64,
    /// Exact amount over [`DEN`].
    exact: i128,
    window: i64,
}

impl Run<'_> {
    /// Appends the run's lines and returns its total.
    pub(super) fn price(&self, lines: &mut Vec<QuoteLine>) -> Result<Money, QuoteError> {
        let unit_s = i64::from(self.unit_minutes) * 60;
        if unit_s <= 0 || self.end <= self.origin {
            return Ok(Money::ZERO);
        }
        let total_units = ceil_div(self.end - self.origin, unit_s);
        let (base, bands, scale, first_period, kind) = match self.rates {
            RunRates::Table(table) => (
                table.base,
                &table.bands[..],
                FULL_BP,
                table.first_period,
                LineKind::Time,
            ),
            RunRates::Overstay(table, bp) => {
                (table.base, &table.bands[..], bp, None, LineKind::Overstay)
            }
            RunRates::OverstayFlat(rate) => (rate, &[][..], FULL_BP, None, LineKind::Overstay),
        };
        let schedule = Schedule::new(bands);
        let mut raws: Vec<Raw> = Vec::new();
        let mut walk_from = self.origin;
        if let Some(first) = first_period {
            let first_units = i64::from(first.minutes / self.unit_minutes);
            raws.push(Raw {
                kind: LineKind::FirstPeriod,
                band: None,
                rate: None,
                first_unit: 0,
                units: first_units.min(total_units),
                exact: i128::from(first.amount.0)
                    .checked_mul(DEN)
                    .ok_or(QuoteError::Overflow)?,
                window: 0,
            });
            walk_from = self.origin + first_units * unit_s;
        }
        if walk_from < self.end {
            for piece in pieces(self.tz, &schedule, walk_from, self.end, self.origin)? {
                let first_unit = ceil_div(piece.start - self.origin, unit_s);
                let units = ceil_div(piece.end - self.origin, unit_s) - first_unit;
                if units <= 0 {
                    continue;
                }
                let rate = piece.band.map_or(base, |band| bands[band].rate);
                let unit_price = unit_numerator(rate, self.unit_minutes)
                    .and_then(|price| (price / BP).checked_mul(i128::from(scale)))
                    .ok_or(QuoteError::Overflow)?;
                let exact = unit_price
                    .checked_mul(i128::from(units))
                    .ok_or(QuoteError::Overflow)?;
                let window = (piece.start - self.origin).div_euclid(DAY_S);
                match raws.last_mut() {
                    Some(last)
                        if last.kind == kind
                            && last.window == window
                            && last.band == piece.band
                            && last.first_unit + last.units == first_unit =>
                    {
                        last.units += units;
                        last.exact = last.exact.checked_add(exact).ok_or(QuoteError::Overflow)?;
                    }
                    _ => raws.push(Raw {
                        kind,
                        band: piece.band,
                        rate: Some(rate),
                        first_unit,
                        units,
                        exact,
                        window,
                    }),
                }
            }
        }
        let basis_points = match self.rates {
            RunRates::Overstay(_, bp) => i32::try_from(bp).ok(),
            _ => None,
        };
        let mut total = Money::ZERO;
        let mut rest = &raws[..];
        while let Some(head) = rest.first() {
            let in_window = rest
                .iter()
                .take_while(|raw| raw.window == head.window)
                .count();
            let (window, tail) = rest.split_at(in_window);
            rest = tail;
            let amount = self.window(window, bands, basis_points, kind, lines)?;
            total = Money(total.0.checked_add(amount).ok_or(QuoteError::Overflow)?);
        }
        Ok(total)
    }

    /// Rounds one window's lines (cumulatively, so they add up), then its EV adjustment and
    /// its maximum. Returns the window's amount.
    fn window(
        &self,
        raws: &[Raw],
        bands: &[Band],
        basis_points: Option<i32>,
        kind: LineKind,
        lines: &mut Vec<QuoteLine>,
    ) -> Result<i64, QuoteError> {
        let unit_s = i64::from(self.unit_minutes) * 60;
        let period = |raw: &Raw| -> Result<(DateTime<Utc>, DateTime<Utc>), QuoteError> {
            let from = self.origin + raw.first_unit * unit_s;
            let to = (self.origin + (raw.first_unit + raw.units) * unit_s).min(self.end);
            Ok((at(from)?, at(to)?))
        };
        let units = |count: i64| u32::try_from(count).map_err(|_| QuoteError::Overflow);
        let (mut exact, mut adjusted, mut shown, mut window_units) = (0i128, 0i128, 0i64, 0i64);
        for raw in raws {
            exact = exact.checked_add(raw.exact).ok_or(QuoteError::Overflow)?;
            adjusted = adjusted
                .checked_add(self.adjust(raw)?)
                .ok_or(QuoteError::Overflow)?;
            let rounded = round_half_up(exact)?;
            let (from, to) = period(raw)?;
            lines.push(QuoteLine {
                kind: raw.kind,
                band: raw
                    .band
                    .and_then(|band| bands.get(band))
                    .map(|band| band.name.clone())
                    .filter(|name| !name.is_empty()),
                from,
                to,
                units: units(raw.units)?,
                unit_minutes: self.unit_minutes,
                rate: raw.rate,
                basis_points: basis_points.filter(|_| raw.kind == LineKind::Overstay),
                amount: Money(rounded - shown),
            });
            shown = rounded;
            window_units += raw.units;
        }
        let (Some(first), Some(last)) = (raws.first(), raws.last()) else {
            return Ok(0);
        };
        let from = period(first)?.0;
        let to = period(last)?.1;
        let mut amount = round_half_up(adjusted)?;
        if amount != shown
            && let Some(ev) = self.ev
        {
            let (rate, basis_points) = match ev {
                EvAdjustment::BasisPoints(bp) => (None, Some(bp)),
                EvAdjustment::PerUnit(per_unit) => (Some(Rate::PerUnit(per_unit)), None),
            };
            lines.push(QuoteLine {
                kind: LineKind::Ev,
                band: None,
                from,
                to,
                units: units(window_units)?,
                unit_minutes: self.unit_minutes,
                rate,
                basis_points,
                amount: Money(amount - shown),
            });
        }
        if let Some(cap) = self.cap
            && amount > cap.0
        {
            lines.push(QuoteLine {
                kind: if kind == LineKind::Overstay {
                    LineKind::OverstayMaximum
                } else {
                    LineKind::DailyMaximum
                },
                band: None,
                from,
                to,
                units: 0,
                unit_minutes: self.unit_minutes,
                rate: None,
                basis_points: None,
                amount: Money(cap.0 - amount),
            });
            amount = cap.0;
        }
        Ok(amount)
    }

    /// A line's exact amount after the EV adjustment, never below zero.
    fn adjust(&self, raw: &Raw) -> Result<i128, QuoteError> {
        Ok(match self.ev {
            None => raw.exact,
            // Exact: every amount is a multiple of 10^4 over DEN.
            Some(EvAdjustment::BasisPoints(bp)) => (raw.exact / BP)
                .checked_mul(BP + i128::from(bp))
                .ok_or(QuoteError::Overflow)?
                .max(0),
            Some(EvAdjustment::PerUnit(per_unit)) => i128::from(per_unit.0)
                .checked_mul(DEN)
                .and_then(|per_unit| per_unit.checked_mul(i128::from(raw.units)))
                .and_then(|adjustment| raw.exact.checked_add(adjustment))
                .ok_or(QuoteError::Overflow)?
                .max(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn week_seconds_start_on_monday() {
        // 1970-01-05 was a Monday.
        assert_eq!(week_second(4 * DAY_S), 0);
        assert_eq!(week_second(4 * DAY_S + 3_600), 3_600);
        assert_eq!(week_second(0), 3 * DAY_S, "1970-01-01 was a Thursday");
        assert_eq!(week_second(-1), 3 * DAY_S - 1, "before 1970 too");
    }

    #[test]
    fn exact_unit_prices() {
        // 2.50 an hour is 62.5 cents per 15 minutes.
        assert_eq!(
            unit_numerator(Rate::PerHour(Money(250)), 15),
            Some(625 * DEN / 10)
        );
        assert_eq!(unit_numerator(Rate::PerUnit(Money(60)), 15), Some(60 * DEN));
        assert_eq!(round_half_up(625 * DEN / 10), Ok(63));
        assert_eq!(round_half_up(624 * DEN / 10), Ok(62));
        assert_eq!(share_half_up(Money(125), 5_000), Ok(Money(63)));
    }
}
