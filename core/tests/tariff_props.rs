//! Properties of the tariff arithmetic (parkd_core::tariff), over random valid tariffs, time
//! zones with clock changes (Paris, New York, Lord Howe's half-hour change) and stays.
//!
//! The central one compares every quote with a deliberately naive reference written here: it
//! prices each billing unit one by one, reading the band from the unit start's local calendar
//! date and time (chrono-tz), where the library walks the wall clock piece by piece. Both must
//! agree to the minor unit, across clock changes.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use proptest::prelude::*;
use proptest::sample::subsequence;

use parkd_core::tariff::{
    Band, CancellationPolicy, Currency, EvAdjustment, FirstPeriod, LineKind, Money, NoShowFee,
    Occupant, OverstayCharge, OverstayRule, Quote, Rate, RateTable, ReservedPeriod, Tariff,
    TimeOfDay, no_show_fee, quote_reservation, quote_stay, refund_on_cancel,
};
use parkd_core::vehicle::SpotKind;

const DAY: i64 = 86_400;
/// The common denominator of the reference: 60 (minutes in an hour) x 10^4 x 10^4.
const DEN: i128 = 6_000_000_000;

const ZONES: [Tz; 6] = [
    chrono_tz::UTC,
    chrono_tz::Europe::Paris,
    chrono_tz::America::New_York,
    chrono_tz::Australia::Lord_Howe,
    chrono_tz::Asia::Kolkata,
    chrono_tz::Europe::Berlin,
];

/// Clock changes of 2026 (UTC): Paris spring and autumn, New York spring and autumn, Lord Howe
/// (half an hour) autumn and spring.
const CHANGES: [(usize, &str); 6] = [
    (1, "2026-03-29T01:00:00Z"),
    (1, "2026-10-25T01:00:00Z"),
    (2, "2026-03-08T07:00:00Z"),
    (2, "2026-11-01T06:00:00Z"),
    (3, "2026-04-04T15:00:00Z"),
    (3, "2026-10-03T15:30:00Z"),
];

fn utc(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap()
}

fn parse_utc(raw: &str) -> i64 {
    DateTime::parse_from_rfc3339(raw).unwrap().timestamp()
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

fn rate() -> impl Strategy<Value = Rate> {
    prop_oneof![
        4 => (0i64..=1_000).prop_map(|a| Rate::PerHour(Money(a))),
        1 => (0i64..=300).prop_map(|a| Rate::PerUnit(Money(a))),
    ]
}

/// Minutes where bands start and end: any minute, or ones that fall in or at clock changes.
fn minute() -> impl Strategy<Value = u32> {
    prop_oneof![
        0u32..1_440,
        prop::sample::select(vec![0, 60, 90, 120, 135, 150, 180, 420, 1_200, 1_380]),
    ]
}

const WEEK: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

/// Bands that never overlap: distinct cut points of the day paired in order, the last pair
/// optionally running past midnight to before the first cut.
fn bands() -> impl Strategy<Value = Vec<Band>> {
    (
        prop::collection::btree_set(minute(), 0..=6),
        any::<bool>(),
        prop::collection::vec((subsequence(WEEK.to_vec(), 1..=7), rate()), 4),
    )
        .prop_map(|(cuts, wrap, looks)| {
            let cuts: Vec<u32> = cuts.into_iter().collect();
            let mut spans: Vec<(u32, u32)> = cuts
                .chunks_exact(2)
                .map(|pair| (pair[0], pair[1]))
                .collect();
            if wrap && cuts.len() % 2 == 1 && cuts.len() > 1 {
                // The odd last cut runs to the first cut of the next day.
                spans.push((cuts[cuts.len() - 1], cuts[0]));
            }
            spans
                .into_iter()
                .zip(looks)
                .enumerate()
                .map(|(i, ((start, end), (days, rate)))| Band {
                    name: format!("band{i}"),
                    days,
                    start: TimeOfDay::new(start / 60, start % 60).unwrap(),
                    end: TimeOfDay::new(end / 60, end % 60).unwrap(),
                    rate,
                })
                .collect()
        })
}

fn one_unit(rate: Rate, unit: u32) -> i64 {
    match rate {
        Rate::PerHour(a) => (a.0 * i64::from(unit) + 59) / 60,
        Rate::PerUnit(a) => a.0,
    }
}

fn table(unit: u32) -> impl Strategy<Value = RateTable> {
    (
        rate(),
        bands(),
        prop::option::weighted(0.3, (1u32..=4, 0i64..=400)),
        prop::option::weighted(0.6, 1i64..=4_000),
    )
        .prop_map(move |(base, bands, first, cap)| {
            let first_period = first.map(|(units, amount)| FirstPeriod {
                minutes: (units * unit).min(1_440 / unit * unit),
                amount: Money(amount),
            });
            // A valid maximum: at least one unit at the base rate and the first period.
            let daily_max = cap.map(|cap| {
                let floor = one_unit(base, unit)
                    .max(first_period.map_or(0, |first| first.amount.0))
                    .max(1);
                Money(cap.max(floor))
            });
            RateTable {
                base,
                bands,
                first_period,
                daily_max,
            }
        })
}

fn tariff() -> impl Strategy<Value = Tariff> {
    prop::sample::select(vec![1u32, 5, 10, 15, 20, 30, 60])
        .prop_flat_map(|unit| {
            (
                Just(unit),
                0u32..=30,
                table(unit),
                prop::option::weighted(0.3, table(unit)),
                prop::option::weighted(
                    0.5,
                    prop_oneof![
                        (-10_000i32..=20_000).prop_map(EvAdjustment::BasisPoints),
                        (-200i64..=200).prop_map(|a| EvAdjustment::PerUnit(Money(a))),
                    ],
                ),
                prop::option::weighted(
                    0.7,
                    (
                        0u32..=30,
                        prop_oneof![
                            (0u32..=30_000).prop_map(OverstayCharge::RateBasisPoints),
                            rate().prop_map(OverstayCharge::Rate),
                        ],
                        prop::option::weighted(0.4, 200i64..=5_000),
                    ),
                ),
            )
        })
        .prop_map(|(unit, grace, rates, bikes, ev, overstay)| {
            let overstay = overstay.map(|(grace_minutes, charge, cap)| {
                let one = match charge {
                    OverstayCharge::RateBasisPoints(bp) => {
                        (one_unit(rates.base, unit) * i64::from(bp) + 9_999) / 10_000
                    }
                    OverstayCharge::Rate(rate) => one_unit(rate, unit),
                };
                OverstayRule {
                    grace_minutes,
                    charge,
                    daily_max: cap.map(|cap| Money(cap.max(one).max(1))),
                }
            });
            Tariff {
                currency: Currency::parse("EUR").unwrap(),
                unit_minutes: unit,
                grace_minutes: grace,
                rates,
                by_kind: bikes
                    .map(|rates| parkd_core::tariff::KindRates {
                        kinds: vec![SpotKind::Motorcycle],
                        rates,
                    })
                    .into_iter()
                    .collect(),
                ev,
                overstay,
                no_show: NoShowFee::ReservedPrice,
                cancellation: CancellationPolicy::default(),
            }
        })
}

fn zone() -> impl Strategy<Value = Tz> {
    prop::sample::select(ZONES.to_vec())
}

fn occupant() -> impl Strategy<Value = Occupant> {
    (
        prop::sample::select(vec![SpotKind::Standard, SpotKind::Motorcycle, SpotKind::Ev]),
        any::<bool>(),
    )
        .prop_map(|(spot_kind, ev)| Occupant { spot_kind, ev })
}

/// 2026-01-01 .. 2027-01-01.
fn instant() -> impl Strategy<Value = i64> {
    let start = parse_utc("2026-01-01T00:00:00Z");
    start..start + 365 * DAY
}

/// A zone with clock changes and an instant up to 30 hours either side of one of them.
fn near_a_clock_change() -> impl Strategy<Value = (Tz, i64)> {
    (
        prop::sample::select(CHANGES.to_vec()),
        -30 * 3_600i64..30 * 3_600,
    )
        .prop_map(|((zone, at), offset)| (ZONES[zone], parse_utc(at) + offset))
}

/// A stay length: often short, sometimes several days, sometimes to the second.
fn duration() -> impl Strategy<Value = i64> {
    prop_oneof![
        0i64..=4 * 3_600,
        0i64..=4 * DAY,
        (0i64..=96).prop_map(|quarter| quarter * 900),
    ]
}

// ---------------------------------------------------------------------------------------
// The reference: one unit at a time
// ---------------------------------------------------------------------------------------

fn numerator(rate: Rate, unit: u32) -> i128 {
    match rate {
        Rate::PerHour(a) => i128::from(a.0) * i128::from(unit) * (DEN / 60),
        Rate::PerUnit(a) => i128::from(a.0) * DEN,
    }
}

/// Whether a band covers local `(day, second of the day)`, by the calendar.
fn covers(band: &Band, day: Weekday, second: u32) -> bool {
    let start = band.start.minutes() * 60;
    let end = band.end.minutes() * 60;
    band.days.iter().any(|&first| {
        if end > start {
            day == first && (start..end).contains(&second)
        } else {
            (day == first && second >= start) || (day == first.succ() && second < end)
        }
    })
}

fn rate_at(table: &RateTable, tz: Tz, t: i64) -> Rate {
    let local = utc(t).with_timezone(&tz);
    let second = local.time().num_seconds_from_midnight();
    table
        .bands
        .iter()
        .find(|band| covers(band, local.weekday(), second))
        .map_or(table.base, |band| band.rate)
}

fn round(exact: i128) -> i64 {
    i64::try_from((exact + DEN / 2) / DEN).unwrap()
}

/// Windows of exact amounts -> the total, with EV per unit and the cap per window.
fn settle(windows: &[(i128, i128)], cap: Option<Money>) -> i64 {
    windows
        .iter()
        .map(|(_, adjusted)| {
            let amount = round(*adjusted);
            cap.map_or(amount, |cap| amount.min(cap.0))
        })
        .sum()
}

fn ev_adjust(ev: Option<EvAdjustment>, exact: i128, units: i64) -> i128 {
    match ev {
        None => exact,
        Some(EvAdjustment::BasisPoints(bp)) => (exact * (10_000 + i128::from(bp)) / 10_000).max(0),
        Some(EvAdjustment::PerUnit(a)) => {
            (exact + i128::from(a.0) * DEN * i128::from(units)).max(0)
        }
    }
}

/// The price of units `[origin, end)` of a rate table, unit by unit.
fn reference_run(
    tariff: &Tariff,
    table: &RateTable,
    tz: Tz,
    origin: i64,
    end: i64,
    ev: Option<EvAdjustment>,
    first_period: bool,
) -> i64 {
    let unit = i64::from(tariff.unit_minutes) * 60;
    let units = (end - origin + unit - 1) / unit;
    let windows = usize::try_from((units * unit + DAY - 1) / DAY).unwrap();
    let mut sums = vec![(0i128, 0i128); windows];
    let mut skip = 0;
    if first_period && let Some(first) = table.first_period {
        let first_units = i64::from(first.minutes / tariff.unit_minutes);
        if units > 0 {
            let exact = i128::from(first.amount.0) * DEN;
            sums[0].0 += exact;
            sums[0].1 += ev_adjust(ev, exact, first_units.min(units));
        }
        skip = first_units;
    }
    for k in skip..units {
        let start = origin + k * unit;
        let exact = numerator(rate_at(table, tz, start), tariff.unit_minutes);
        let window = usize::try_from(k * unit / DAY).unwrap();
        sums[window].0 += exact;
        sums[window].1 += ev_adjust(ev, exact, 1);
    }
    settle(&sums, table.daily_max)
}

fn reference_walk_in(tariff: &Tariff, tz: Tz, entry: i64, exit: i64, who: Occupant) -> i64 {
    if tariff.grace_minutes > 0 && exit - entry <= i64::from(tariff.grace_minutes) * 60 {
        return 0;
    }
    let table = tariff.table_for(who.spot_kind);
    reference_run(
        tariff,
        table,
        tz,
        entry,
        exit,
        tariff.ev.filter(|_| who.ev),
        true,
    )
}

fn reference_overstay(
    tariff: &Tariff,
    tz: Tz,
    reserved_exit: i64,
    exit: i64,
    who: Occupant,
) -> i64 {
    let table = tariff.table_for(who.spot_kind);
    let rule = tariff.overstay.unwrap_or(OverstayRule {
        grace_minutes: 0,
        charge: OverstayCharge::RateBasisPoints(10_000),
        daily_max: table.daily_max,
    });
    if exit - reserved_exit <= i64::from(rule.grace_minutes) * 60 {
        return 0;
    }
    let unit = i64::from(tariff.unit_minutes) * 60;
    let units = (exit - reserved_exit + unit - 1) / unit;
    let windows = usize::try_from((units * unit + DAY - 1) / DAY).unwrap();
    let mut sums = vec![(0i128, 0i128); windows];
    for k in 0..units {
        let start = reserved_exit + k * unit;
        let exact = match rule.charge {
            OverstayCharge::RateBasisPoints(bp) => {
                numerator(rate_at(table, tz, start), tariff.unit_minutes) * i128::from(bp) / 10_000
            }
            OverstayCharge::Rate(rate) => numerator(rate, tariff.unit_minutes),
        };
        let window = usize::try_from(k * unit / DAY).unwrap();
        sums[window].0 += exact;
        sums[window].1 += exact;
    }
    settle(&sums, rule.daily_max)
}

// ---------------------------------------------------------------------------------------
// Checks shared by several properties
// ---------------------------------------------------------------------------------------

fn is_reduction(kind: LineKind) -> bool {
    matches!(kind, LineKind::DailyMaximum | LineKind::OverstayMaximum)
}

/// Lines add up to the total; nothing but reductions and EV lines is negative; charged
/// periods lie within the stay and follow each other without gap or overlap.
fn well_formed(quote: &Quote, from: i64, to: i64) -> Result<(), TestCaseError> {
    let sum: i64 = quote.lines.iter().map(|line| line.amount.0).sum();
    prop_assert_eq!(sum, quote.total.0, "lines add up");
    prop_assert!(quote.total.0 >= 0, "never negative");
    let mut previous_end: Option<i64> = None;
    for line in &quote.lines {
        if is_reduction(line.kind) {
            prop_assert!(line.amount.0 < 0, "a maximum line reduces: {:?}", line);
        } else if line.kind != LineKind::Ev {
            prop_assert!(line.amount.0 >= 0, "a charge is never negative: {:?}", line);
        }
        let (start, end) = (line.from.timestamp(), line.to.timestamp());
        prop_assert!(from <= start && start <= end && end <= to, "{:?}", line);
        if matches!(line.kind, LineKind::Time | LineKind::FirstPeriod) {
            if let Some(previous_end) = previous_end {
                prop_assert_eq!(start, previous_end, "contiguous: {:?}", line);
            } else {
                prop_assert_eq!(start, from, "the first line starts at the entry");
            }
            previous_end = Some(end);
        }
    }
    if let Some(previous_end) = previous_end {
        prop_assert_eq!(previous_end, to, "the last line ends at the exit");
    }
    Ok(())
}

/// Every 24-hour window from `origin` costs at most `cap`, and so the whole at most
/// `windows x cap`.
fn capped(
    quote: &Quote,
    kinds: &[LineKind],
    origin: i64,
    end: i64,
    cap: Money,
) -> Result<(), TestCaseError> {
    let mut per_window = std::collections::BTreeMap::<i64, i64>::new();
    for line in quote.lines.iter().filter(|line| kinds.contains(&line.kind)) {
        let window = (line.from.timestamp() - origin).div_euclid(DAY);
        *per_window.entry(window).or_default() += line.amount.0;
    }
    for (window, amount) in &per_window {
        prop_assert!(
            *amount <= cap.0,
            "window {} costs {} > {}",
            window,
            amount,
            cap.0
        );
    }
    let windows = (end - origin + DAY - 1) / DAY;
    let sum: i64 = per_window.values().sum();
    prop_assert!(sum <= windows * cap.0);
    Ok(())
}

const STAY_LINES: [LineKind; 4] = [
    LineKind::FirstPeriod,
    LineKind::Time,
    LineKind::Ev,
    LineKind::DailyMaximum,
];

// 256 cases per property by default; `PROPTEST_CASES=5000 cargo test ...` for a longer run.
proptest! {
    /// The walk agrees with the unit-by-unit reference, and every quote is well formed.
    #[test]
    fn priced_like_the_unit_by_unit_reference(
        tariff in tariff(),
        tz in zone(),
        entry in instant(),
        length in duration(),
        who in occupant(),
    ) {
        prop_assert_eq!(tariff.validate(), Ok(()));
        let exit = entry + length;
        let quote = quote_stay(&tariff, tz, utc(entry), utc(exit), who, None).unwrap();
        prop_assert_eq!(quote.total.0, reference_walk_in(&tariff, tz, entry, exit, who));
        well_formed(&quote, entry, exit)?;
        let grace = tariff.grace_minutes > 0 && length <= i64::from(tariff.grace_minutes) * 60;
        if !grace {
            // Every started unit is charged exactly once.
            let unit = i64::from(tariff.unit_minutes) * 60;
            let table = tariff.table_for(who.spot_kind);
            let first = table.first_period.map_or(0, |first| i64::from(first.minutes) * 60 / unit);
            let started = (length + unit - 1) / unit;
            let counted: i64 = quote
                .lines
                .iter()
                .filter(|line| line.kind == LineKind::Time)
                .map(|line| i64::from(line.units))
                .sum();
            prop_assert_eq!(counted, (started - first).max(0));
        }
    }

    /// The same, on the days clocks change, with bands that start or end inside the change.
    #[test]
    fn clock_change_days_are_priced_like_the_reference(
        tariff in tariff(),
        (tz, entry) in near_a_clock_change(),
        length in duration(),
        who in occupant(),
    ) {
        let exit = entry + length;
        let quote = quote_stay(&tariff, tz, utc(entry), utc(exit), who, None).unwrap();
        prop_assert_eq!(quote.total.0, reference_walk_in(&tariff, tz, entry, exit, who));
        well_formed(&quote, entry, exit)?;
        let reserved = ReservedPeriod { starts_at: utc(entry), ends_at: utc(exit + 60) };
        let prepaid = quote_reservation(&tariff, tz, reserved, who).unwrap();
        let table = tariff.table_for(who.spot_kind);
        prop_assert_eq!(
            prepaid.total.0,
            reference_run(&tariff, table, tz, entry, exit + 60, tariff.ev.filter(|_| who.ev), true)
        );
    }

    /// Leaving later never costs less.
    #[test]
    fn monotone_in_the_exit(
        tariff in tariff(),
        tz in zone(),
        entry in instant(),
        a in duration(),
        b in duration(),
        who in occupant(),
        reserved in prop::option::of((0i64..=3 * DAY, 900i64..=2 * DAY)),
    ) {
        let (shorter, longer) = (a.min(b), a.max(b));
        let reservation = reserved.map(|(lead, length)| ReservedPeriod {
            starts_at: utc(entry + lead),
            ends_at: utc(entry + lead + length),
        });
        let price = |length: i64| {
            quote_stay(&tariff, tz, utc(entry), utc(entry + length), who, reservation)
                .unwrap()
                .total
        };
        prop_assert!(price(shorter) <= price(longer), "{} s vs {} s", shorter, longer);
        // One more second never costs less either.
        prop_assert!(price(longer) <= price(longer + 1));
    }

    /// No 24-hour window from the entry costs more than the daily maximum.
    #[test]
    fn the_daily_maximum_holds(
        tariff in tariff(),
        tz in zone(),
        entry in instant(),
        length in 0i64..=6 * DAY,
        who in occupant(),
    ) {
        let exit = entry + length;
        let quote = quote_stay(&tariff, tz, utc(entry), utc(exit), who, None).unwrap();
        if let Some(cap) = tariff.table_for(who.spot_kind).daily_max {
            capped(&quote, &STAY_LINES, entry, exit, cap)?;
        }
    }

    /// A stay within the grace costs nothing; the grace never applies to reservations.
    #[test]
    fn a_stay_within_the_grace_is_free(
        tariff in tariff(),
        tz in zone(),
        entry in instant(),
        within in 0i64..=1_800,
        who in occupant(),
    ) {
        let length = within.min(i64::from(tariff.grace_minutes) * 60);
        let quote = quote_stay(&tariff, tz, utc(entry), utc(entry + length), who, None).unwrap();
        prop_assert_eq!(quote.total, Money(0));
        if tariff.grace_minutes > 0 {
            prop_assert_eq!(quote.lines.len(), 1);
            prop_assert_eq!(quote.lines[0].kind, LineKind::Grace);
        }
    }

    /// Overstay is charged only past the reserved exit plus its grace, exactly as the
    /// reference says, and never within the reserved period.
    #[test]
    fn overstay_only_past_the_reserved_exit_and_its_grace(
        tariff in tariff(),
        tz in zone(),
        start in instant(),
        reserved_length in 900i64..=2 * DAY,
        early in 0i64..=1_800,
        past in -3_600i64..=3 * DAY,
        who in occupant(),
    ) {
        let reserved = ReservedPeriod {
            starts_at: utc(start),
            ends_at: utc(start + reserved_length),
        };
        let reserved_exit = start + reserved_length;
        let entry = start - early;
        let exit = (reserved_exit + past).max(entry);
        let past = exit - reserved_exit;
        let prepaid = quote_reservation(&tariff, tz, reserved, who).unwrap();
        well_formed(&prepaid, start, reserved_exit)?;
        let quote = quote_stay(&tariff, tz, utc(entry), utc(exit), who, Some(reserved)).unwrap();
        let overstay = reference_overstay(&tariff, tz, reserved_exit, exit, who);
        prop_assert_eq!(quote.total.0, prepaid.total.0 + overstay);
        let grace = tariff.overstay.map_or(0, |rule| i64::from(rule.grace_minutes) * 60);
        let overstay_lines: Vec<_> = quote
            .lines
            .iter()
            .filter(|line| matches!(line.kind, LineKind::Overstay | LineKind::OverstayMaximum))
            .collect();
        if past <= grace {
            prop_assert_eq!(quote.total, prepaid.total);
            prop_assert!(overstay_lines.is_empty());
        }
        for line in &overstay_lines {
            prop_assert!(line.from.timestamp() >= reserved_exit);
        }
        if let Some(cap) = tariff.overstay.and_then(|rule| rule.daily_max) {
            capped(
                &quote,
                &[LineKind::Overstay, LineKind::OverstayMaximum],
                reserved_exit,
                exit.max(reserved_exit),
                cap,
            )?;
        }
    }

    /// A refund is between nothing and what was paid, and shrinks as the entry nears.
    #[test]
    fn a_refund_is_never_above_what_was_paid(
        paid in 0i64..=10_000_000_000,
        hours in 0u32..=2_160,
        late_refund_bp in 0u32..=10_000,
        entry in instant(),
        a in -100 * DAY..=DAY,
        b in -100 * DAY..=DAY,
    ) {
        let policy = CancellationPolicy { free_until_hours_before: hours, late_refund_bp };
        let refund = |at: i64| {
            refund_on_cancel(Money(paid), &policy, utc(entry + at), utc(entry)).unwrap()
        };
        let (earlier, later) = (a.min(b), a.max(b));
        prop_assert!(refund(earlier) <= Money(paid));
        prop_assert!(refund(later) >= Money(0));
        prop_assert!(refund(earlier) >= refund(later));
    }

    /// A no-show fee is never negative and a share never exceeds the reserved price.
    #[test]
    fn no_show_fees_are_bounded(
        mut tariff in tariff(),
        tz in zone(),
        start in instant(),
        length in 900i64..=2 * DAY,
        bp in 0u32..=10_000,
        who in occupant(),
    ) {
        let reserved = ReservedPeriod { starts_at: utc(start), ends_at: utc(start + length) };
        let price = quote_reservation(&tariff, tz, reserved, who).unwrap().total;
        prop_assert_eq!(no_show_fee(&tariff, tz, reserved, who).unwrap().total, price);
        tariff.no_show = NoShowFee::BasisPoints(bp);
        let fee = no_show_fee(&tariff, tz, reserved, who).unwrap();
        prop_assert!(Money(0) <= fee.total && fee.total <= price);
        well_formed(&fee, start, start + length)?;
    }

    /// Every generated tariff survives JSON unchanged.
    #[test]
    fn tariffs_round_trip_through_json(tariff in tariff()) {
        let json = serde_json::to_vec(&tariff).unwrap();
        prop_assert_eq!(Tariff::from_json(&json), Ok(tariff));
    }

    /// Any times at all: an answer or an error, never a panic.
    #[test]
    fn any_times_give_an_answer_or_an_error(
        tariff in tariff(),
        tz in zone(),
        entry in -10_000_000_000_000i64..=10_000_000_000_000,
        exit in -10_000_000_000_000i64..=10_000_000_000_000,
        who in occupant(),
    ) {
        let (Some(entry), Some(exit)) =
            (DateTime::from_timestamp(entry, 0), DateTime::from_timestamp(exit, 0))
        else {
            return Ok(());
        };
        let _ = quote_stay(&tariff, tz, entry, exit, who, None);
        let _ = quote_stay(
            &tariff,
            tz,
            entry,
            exit,
            who,
            Some(ReservedPeriod { starts_at: entry, ends_at: exit }),
        );
        let _ = refund_on_cancel(Money(100), &tariff.cancellation, entry, exit);
    }

    /// Random JSON tariffs are accepted or refused, never a panic.
    #[test]
    fn any_document_gives_a_tariff_or_an_error(raw in "\\PC{0,200}") {
        let _ = Tariff::from_json(raw.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// The documentation's example
// ---------------------------------------------------------------------------------------

/// The first ```json block of docs/tariffs.md.
fn documented_tariff() -> Tariff {
    let doc = include_str!("../../docs/tariffs.md");
    let start = doc.find("```json\n").unwrap() + "```json\n".len();
    let end = start + doc[start..].find("```").unwrap();
    Tariff::from_json(&doc.as_bytes()[start..end]).unwrap()
}

fn berlin(date: &str, time: &str) -> DateTime<Utc> {
    let naive =
        chrono::NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y-%m-%d %H:%M").unwrap();
    chrono_tz::Europe::Berlin
        .from_local_datetime(&naive)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn the_documented_examples_hold() {
    let tariff = documented_tariff();
    let tz = chrono_tz::Europe::Berlin;
    let car = Occupant {
        spot_kind: SpotKind::Standard,
        ev: false,
    };
    let ev = Occupant {
        spot_kind: SpotKind::Ev,
        ev: true,
    };
    let bike = Occupant {
        spot_kind: SpotKind::Motorcycle,
        ev: false,
    };
    let day = "2026-11-23";
    let stay = |from: &str, to: &str, who: Occupant| {
        quote_stay(&tariff, tz, berlin(day, from), berlin(day, to), who, None)
            .unwrap()
            .total
    };
    // Examples 1-5 of docs/tariffs.md.
    assert_eq!(stay("10:00", "10:12", car), Money(0));
    assert_eq!(stay("10:00", "11:20", car), Money(375));
    assert_eq!(stay("10:00", "11:20", ev), Money(413));
    assert_eq!(stay("17:50", "21:05", car), Money(663));
    assert_eq!(stay("10:00", "11:20", bike), Money(150));
    let long = quote_stay(
        &tariff,
        tz,
        berlin(day, "08:00"),
        berlin("2026-11-24", "10:00"),
        car,
        None,
    )
    .unwrap();
    assert_eq!(long.total, Money(2500));
    // Example 6: a reservation 10:00-12:00, left at 12:25.
    let reserved = ReservedPeriod {
        starts_at: berlin(day, "10:00"),
        ends_at: berlin(day, "12:00"),
    };
    assert_eq!(
        quote_reservation(&tariff, tz, reserved, car).unwrap().total,
        Money(500)
    );
    let late = quote_stay(
        &tariff,
        tz,
        berlin(day, "09:55"),
        berlin(day, "12:25"),
        car,
        Some(reserved),
    )
    .unwrap();
    assert_eq!(late.total, Money(688));
    // Example 7: the autumn night, 9 real hours of evening rate.
    let autumn = quote_stay(
        &tariff,
        tz,
        berlin("2026-10-24", "22:00"),
        berlin("2026-10-25", "06:00"),
        car,
        None,
    )
    .unwrap();
    assert_eq!(autumn.total, Money(900));
    // Example 8: the no-show fee and refunds.
    assert_eq!(
        no_show_fee(&tariff, tz, reserved, car).unwrap().total,
        Money(500)
    );
    let entry = reserved.starts_at;
    let refund = |hours_before: i64| {
        refund_on_cancel(
            Money(500),
            &tariff.cancellation,
            entry - chrono::Duration::hours(hours_before),
            entry,
        )
        .unwrap()
    };
    assert_eq!(refund(30), Money(500));
    assert_eq!(refund(3), Money(250));
    assert_eq!(refund(0), Money(0));
    // The quote shown in the documentation is what example 3 serialises to.
    let doc = include_str!("../../docs/tariffs.md");
    let start = doc.find("```text\n{\"currency\"").unwrap() + "```text\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let shown: String = doc[start..end].split_whitespace().collect();
    let json = serde_json::to_string(&stay_quote(&tariff, tz, day)).unwrap();
    assert_eq!(shown, json);
}

fn stay_quote(tariff: &Tariff, tz: Tz, day: &str) -> Quote {
    quote_stay(
        tariff,
        tz,
        berlin(day, "17:50"),
        berlin(day, "21:05"),
        Occupant {
            spot_kind: SpotKind::Standard,
            ev: false,
        },
        None,
    )
    .unwrap()
}
