//! Worked examples a reader can check by hand (the hand calculation is in each comment), and
//! every validation error.

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;

use super::*;

/// The customer's garage (docs/tariffs.md): 2.50 an hour by the started 15 minutes, a stay of
/// up to 15 minutes free, 1.00 an hour from 20:00 to 07:00, at most 20.00 per 24 hours,
/// EVs +10 %, motorcycles 1.00 an hour (at most 8.00), accessible bays free, overstay 1.5
/// times the rate after 10 minutes' grace.
const GARAGE: &str = r#"{
  "currency": "EUR",
  "unit_minutes": 15,
  "grace_minutes": 15,
  "rates": {
    "base": { "per_hour": 250 },
    "bands": [
      { "name": "evening", "days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
        "start": "20:00", "end": "07:00", "rate": { "per_hour": 100 } }
    ],
    "daily_max": 2000
  },
  "by_kind": [
    { "kinds": ["motorcycle"], "rates": { "base": { "per_hour": 100 }, "daily_max": 800 } },
    { "kinds": ["accessible"], "rates": { "base": { "per_hour": 0 } } }
  ],
  "ev": { "basis_points": 1000 },
  "overstay": { "grace_minutes": 10, "charge": { "rate_basis_points": 15000 } },
  "no_show": "reserved_price",
  "cancellation": { "free_until_hours_before": 24, "late_refund_bp": 5000 }
}"#;

const BERLIN: Tz = chrono_tz::Europe::Berlin;
const CAR: Occupant = Occupant {
    spot_kind: SpotKind::Standard,
    ev: false,
};

fn garage() -> Tariff {
    Tariff::from_json(GARAGE.as_bytes()).unwrap()
}

/// Local time in Berlin (unambiguous ones only).
fn local(date: &str, time: &str) -> DateTime<Utc> {
    let naive =
        chrono::NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y-%m-%d %H:%M").unwrap();
    BERLIN
        .from_local_datetime(&naive)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

fn utc(raw: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(raw)
        .unwrap()
        .with_timezone(&Utc)
}

/// 2026-11-23 is a Monday; Berlin is UTC+1 then.
const MONDAY: &str = "2026-11-23";

fn walk_in(tariff: &Tariff, from: DateTime<Utc>, to: DateTime<Utc>, who: Occupant) -> Quote {
    quote_stay(tariff, BERLIN, from, to, who, None).unwrap()
}

fn amounts(quote: &Quote) -> Vec<(LineKind, i64)> {
    quote
        .lines
        .iter()
        .map(|line| (line.kind, line.amount.0))
        .collect()
}

fn check_sums(quote: &Quote) {
    let sum: i64 = quote.lines.iter().map(|line| line.amount.0).sum();
    assert_eq!(sum, quote.total.0, "lines add up to the total: {quote:#?}");
    assert!(quote.total.0 >= 0);
}

#[test]
fn grace_then_every_started_unit_from_the_entry() {
    let tariff = garage();
    // 15 minutes: within the grace.
    let quote = walk_in(&tariff, local(MONDAY, "10:00"), local(MONDAY, "10:15"), CAR);
    assert_eq!(quote.total, Money(0));
    assert_eq!(amounts(&quote), [(LineKind::Grace, 0)]);
    // 16 minutes: two started units from the entry, 2 x 62.5 = 125.
    let quote = walk_in(&tariff, local(MONDAY, "10:00"), local(MONDAY, "10:16"), CAR);
    assert_eq!(quote.total, Money(125));
    // 80 minutes: 6 started units (10:00, 10:15, ..., 11:15), 6 x 62.5 = 375.
    let quote = walk_in(&tariff, local(MONDAY, "10:00"), local(MONDAY, "11:20"), CAR);
    assert_eq!(quote.total, Money(375));
    assert_eq!(quote.lines.len(), 1);
    let line = &quote.lines[0];
    assert_eq!(
        (line.kind, line.units, line.rate),
        (LineKind::Time, 6, Some(Rate::PerHour(Money(250))))
    );
    assert_eq!(
        (line.from, line.to),
        (local(MONDAY, "10:00"), local(MONDAY, "11:20"))
    );
    // Fractions of a second are dropped: 15:00.9 is still within the grace.
    let quote = walk_in(
        &tariff,
        local(MONDAY, "10:00"),
        local(MONDAY, "10:15") + Duration::milliseconds(900),
        CAR,
    );
    assert_eq!(quote.total, Money(0));
}

#[test]
fn a_unit_is_charged_at_the_rate_in_force_at_its_start() {
    // 17:50 to 21:05 is 195 minutes = 13 units. Units starting 17:50 ... 19:50 (9 of them)
    // are at 2.50/h: 9 x 62.5 = 562.5; the unit 19:50-20:05 straddles 20:00 and counts at
    // its start. Units starting 20:05 ... 20:50 (4) are evening: 4 x 25 = 100.
    // Exact total 662.5 -> 663 (half up). Lines round cumulatively: 562.5 -> 563, then
    // 662.5 -> 663, so the evening line shows 663 - 563 = 100.
    let quote = walk_in(
        &garage(),
        local(MONDAY, "17:50"),
        local(MONDAY, "21:05"),
        CAR,
    );
    check_sums(&quote);
    assert_eq!(quote.total, Money(663));
    assert_eq!(
        amounts(&quote),
        [(LineKind::Time, 563), (LineKind::Time, 100)]
    );
    assert_eq!(quote.lines[0].units, 9);
    assert_eq!(quote.lines[0].band, None);
    assert_eq!(quote.lines[1].units, 4);
    assert_eq!(quote.lines[1].band.as_deref(), Some("evening"));
    assert_eq!(quote.lines[0].to, local(MONDAY, "20:05"));
    assert_eq!(quote.lines[1].from, local(MONDAY, "20:05"));
}

#[test]
fn ev_surcharge_is_its_own_line() {
    // 6 units = 375; +10 % = 412.5 -> 413; the EV line is 413 - 375 = 38.
    let ev = Occupant {
        spot_kind: SpotKind::Ev,
        ev: true,
    };
    let quote = walk_in(
        &garage(),
        local(MONDAY, "10:00"),
        local(MONDAY, "11:20"),
        ev,
    );
    check_sums(&quote);
    assert_eq!(amounts(&quote), [(LineKind::Time, 375), (LineKind::Ev, 38)]);
    assert_eq!(quote.lines[1].basis_points, Some(1000));
}

#[test]
fn the_daily_maximum_caps_each_24_hours_from_the_entry() {
    // Monday 08:00 to Tuesday 10:00 (26 h).
    // Window 1, Mon 08:00 - Tue 08:00: 08:00-20:00 48 units x 62.5 = 3000; 20:00-07:00 44
    // units x 25 = 1100; 07:00-08:00 4 units x 62.5 = 250. 4350, capped at 2000 (-2350).
    // Window 2, Tue 08:00-10:00: 8 units x 62.5 = 500. Total 2500.
    let quote = walk_in(
        &garage(),
        local(MONDAY, "08:00"),
        local("2026-11-24", "10:00"),
        CAR,
    );
    check_sums(&quote);
    assert_eq!(
        amounts(&quote),
        [
            (LineKind::Time, 3000),
            (LineKind::Time, 1100),
            (LineKind::Time, 250),
            (LineKind::DailyMaximum, -2350),
            (LineKind::Time, 500),
        ]
    );
    assert_eq!(quote.total, Money(2500));
    let cap = &quote.lines[3];
    assert_eq!(
        (cap.from, cap.to),
        (local(MONDAY, "08:00"), local("2026-11-24", "08:00"))
    );
}

#[test]
fn spot_kinds_have_their_own_tables() {
    // Motorcycle: 6 units x 25 = 150. Accessible: 0.
    let tariff = garage();
    let bike = Occupant::new(SpotKind::Motorcycle, VehicleType::Motorcycle);
    let quote = walk_in(
        &tariff,
        local(MONDAY, "10:00"),
        local(MONDAY, "11:20"),
        bike,
    );
    assert_eq!(quote.total, Money(150));
    // 48 hours on a motorcycle: 2 windows of 96 units x 25 = 2400 each, capped at 800.
    let quote = walk_in(
        &tariff,
        local(MONDAY, "10:00"),
        local("2026-11-25", "10:00"),
        bike,
    );
    assert_eq!(quote.total, Money(1600));
    let permit = Occupant {
        spot_kind: SpotKind::Accessible,
        ev: true,
    };
    let quote = walk_in(
        &tariff,
        local(MONDAY, "10:00"),
        local(MONDAY, "18:00"),
        permit,
    );
    assert_eq!(quote.total, Money(0), "+10 % of nothing is nothing");
    check_sums(&quote);
}

#[test]
fn clock_changes_count_real_hours() {
    let tariff = garage();
    // Autumn: Saturday 22:00 CEST to Sunday 06:00 CET is 9 real hours (02:00-03:00 happens
    // twice), all evening: 36 units x 25 = 900.
    let quote = walk_in(
        &tariff,
        utc("2026-10-24T20:00:00Z"),
        utc("2026-10-25T05:00:00Z"),
        CAR,
    );
    assert_eq!(quote.total, Money(900));
    assert_eq!(quote.lines[0].units, 36);
    // Spring: Saturday 22:00 CET to Sunday 06:00 CEST is 7 real hours: 28 x 25 = 700.
    let quote = walk_in(
        &tariff,
        utc("2026-03-28T21:00:00Z"),
        utc("2026-03-29T04:00:00Z"),
        CAR,
    );
    assert_eq!(quote.total, Money(700));
}

#[test]
fn a_band_boundary_inside_a_clock_change_follows_the_wall_clock() {
    // Paris, a "night" band Saturday 22:00 to Sunday 02:30 at 1.00/h, 2.50/h otherwise.
    let mut tariff = garage();
    tariff.grace_minutes = 0;
    tariff.rates.daily_max = None;
    tariff.rates.bands = vec![Band {
        name: "night".into(),
        days: vec![chrono::Weekday::Sat],
        start: TimeOfDay::new(22, 0).unwrap(),
        end: TimeOfDay::new(2, 30).unwrap(),
        rate: Rate::PerHour(Money(100)),
    }];
    let paris = chrono_tz::Europe::Paris;
    let quote =
        |from: &str, to: &str| quote_stay(&tariff, paris, utc(from), utc(to), CAR, None).unwrap();
    // Spring, 2026-03-29: 02:30 does not exist (01:59:59 CET is followed by 03:00 CEST).
    // 01:00-02:00 CET (4 units) are night: 100; from 03:00 CEST (4 units) base: 250.
    let spring = quote("2026-03-29T00:00:00Z", "2026-03-29T02:00:00Z");
    assert_eq!(
        amounts(&spring),
        [(LineKind::Time, 100), (LineKind::Time, 250)]
    );
    // Autumn, 2026-10-25: 02:00-03:00 happens twice, and so does 02:30. Units at 02:00 and
    // 02:15 CEST are night (50), 02:30 and 02:45 CEST base (125), then the wall clock shows
    // 02:00 again: 02:00 and 02:15 CET night (50), 02:30 and 02:45 CET base (125). 350.
    let autumn = quote("2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z");
    assert_eq!(
        amounts(&autumn),
        [
            (LineKind::Time, 50),
            (LineKind::Time, 125),
            (LineKind::Time, 50),
            (LineKind::Time, 125)
        ]
    );
    check_sums(&autumn);
}

#[test]
fn reservations_prepay_their_period_and_overstay_past_the_grace() {
    let tariff = garage();
    let reserved = ReservedPeriod {
        starts_at: local(MONDAY, "10:00"),
        ends_at: local(MONDAY, "12:00"),
    };
    // 8 units x 62.5 = 500.
    let prepaid = quote_reservation(&tariff, BERLIN, reserved, CAR).unwrap();
    assert_eq!(prepaid.total, Money(500));
    let stay = |entry: &str, exit: &str| {
        quote_stay(
            &tariff,
            BERLIN,
            local(MONDAY, entry),
            local(MONDAY, exit),
            CAR,
            Some(reserved),
        )
        .unwrap()
    };
    // Early, late, short: the reserved period's price.
    assert_eq!(stay("09:45", "11:00").total, Money(500));
    // Leaving 10 minutes after the reserved exit: within the overstay grace.
    assert_eq!(stay("10:00", "12:10").total, Money(500));
    // 25 minutes after: 2 units from 12:00 at 1.5 x 62.5 = 93.75: 187.5 -> 188. 688.
    let late = stay("10:00", "12:25");
    check_sums(&late);
    assert_eq!(late.total, Money(688));
    let overstay = late.lines.last().unwrap();
    assert_eq!(
        (overstay.kind, overstay.units, overstay.basis_points),
        (LineKind::Overstay, 2, Some(15_000))
    );
    assert_eq!(overstay.from, local(MONDAY, "12:00"));
    // One second past the grace: 1 unit, 93.75 -> 94.
    let just = quote_stay(
        &tariff,
        BERLIN,
        local(MONDAY, "10:00"),
        local(MONDAY, "12:10") + Duration::seconds(1),
        CAR,
        Some(reserved),
    )
    .unwrap();
    assert_eq!(just.total, Money(594));
}

#[test]
fn without_an_overstay_rule_overstay_is_the_ordinary_rate() {
    let mut tariff = garage();
    tariff.overstay = None;
    let reserved = ReservedPeriod {
        starts_at: local(MONDAY, "10:00"),
        ends_at: local(MONDAY, "12:00"),
    };
    // 500 + 1 unit of 62.5 (12:00-12:01) -> 63.
    let quote = quote_stay(
        &tariff,
        BERLIN,
        local(MONDAY, "10:00"),
        local(MONDAY, "12:01"),
        CAR,
        Some(reserved),
    )
    .unwrap();
    assert_eq!(quote.total, Money(563));
}

#[test]
fn no_show_fees() {
    let mut tariff = garage();
    let reserved = ReservedPeriod {
        starts_at: local(MONDAY, "10:00"),
        ends_at: local(MONDAY, "12:00"),
    };
    let fee = |tariff: &Tariff| no_show_fee(tariff, BERLIN, reserved, CAR).unwrap();
    // The reserved price: 500.
    assert_eq!(fee(&tariff).total, Money(500));
    assert_eq!(amounts(&fee(&tariff)), [(LineKind::NoShowFee, 500)]);
    // 33.33 % of 500 = 166.65 -> 167.
    tariff.no_show = NoShowFee::BasisPoints(3_333);
    assert_eq!(fee(&tariff).total, Money(167));
    tariff.no_show = NoShowFee::Flat(Money(900));
    assert_eq!(fee(&tariff).total, Money(900));
    tariff.no_show = NoShowFee::None;
    assert_eq!(fee(&tariff).total, Money(0));
    assert!(fee(&tariff).lines.is_empty());
}

#[test]
fn refunds_on_cancellation() {
    let policy = garage().cancellation;
    let entry = local(MONDAY, "10:00");
    let refund = |now| refund_on_cancel(Money(501), &policy, now, entry).unwrap();
    // Up to 24 h before: everything.
    assert_eq!(refund(entry - Duration::hours(30)), Money(501));
    assert_eq!(refund(entry - Duration::hours(24)), Money(501));
    // After: 50 % of 501 = 250.5, rounded down to 250.
    assert_eq!(
        refund(entry - Duration::hours(24) + Duration::seconds(1)),
        Money(250)
    );
    assert_eq!(refund(entry - Duration::seconds(1)), Money(250));
    // From the entry on: nothing.
    assert_eq!(refund(entry), Money(0));
    assert_eq!(
        refund_on_cancel(Money(-1), &policy, entry, entry),
        Err(QuoteError::NegativePaid)
    );
}

#[test]
fn a_first_period_is_a_minimum_charge() {
    // First hour 3.00, then 2.00 an hour by the 15 minutes, no grace.
    let tariff = Tariff::from_json(
        br#"{"currency":"EUR","unit_minutes":15,
             "rates":{"base":{"per_hour":200},"first_period":{"minutes":60,"amount":300}}}"#,
    )
    .unwrap();
    // 20 minutes: the first period, in full.
    let quote = walk_in(&tariff, local(MONDAY, "10:00"), local(MONDAY, "10:20"), CAR);
    assert_eq!(amounts(&quote), [(LineKind::FirstPeriod, 300)]);
    assert_eq!(quote.lines[0].units, 2);
    // 75 minutes: 300 + one unit of 50.
    let quote = walk_in(&tariff, local(MONDAY, "10:00"), local(MONDAY, "11:15"), CAR);
    assert_eq!(
        amounts(&quote),
        [(LineKind::FirstPeriod, 300), (LineKind::Time, 50)]
    );
    // A zero-length stay has no started unit.
    let quote = walk_in(&tariff, local(MONDAY, "10:00"), local(MONDAY, "10:00"), CAR);
    assert_eq!(quote.total, Money(0));
}

#[test]
fn an_ev_discount_never_makes_a_line_negative() {
    // 0.10 per unit, EVs 0.30 off per unit: the line is clamped at 0, the EV line takes
    // exactly what the time line charged.
    let tariff = Tariff::from_json(
        br#"{"currency":"EUR","unit_minutes":15,
             "rates":{"base":{"per_unit":10}}, "ev":{"per_unit":-30}}"#,
    )
    .unwrap();
    let ev = Occupant {
        spot_kind: SpotKind::Standard,
        ev: true,
    };
    let quote = walk_in(&tariff, local(MONDAY, "10:00"), local(MONDAY, "11:00"), ev);
    assert_eq!(amounts(&quote), [(LineKind::Time, 40), (LineKind::Ev, -40)]);
    assert_eq!(quote.total, Money(0));
}

#[test]
fn bad_times_and_absurd_stays_are_errors_not_panics() {
    let tariff = garage();
    let entry = local(MONDAY, "10:00");
    assert_eq!(
        quote_stay(
            &tariff,
            BERLIN,
            entry,
            entry - Duration::seconds(1),
            CAR,
            None
        ),
        Err(QuoteError::ExitBeforeEntry)
    );
    assert_eq!(
        quote_stay(
            &tariff,
            BERLIN,
            entry,
            entry + Duration::days(MAX_STAY_DAYS + 1),
            CAR,
            None
        ),
        Err(QuoteError::TooLong(MAX_STAY_DAYS))
    );
    assert_eq!(
        quote_stay(
            &tariff,
            BERLIN,
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            CAR,
            None
        ),
        Err(QuoteError::TooLong(MAX_STAY_DAYS))
    );
    let empty = ReservedPeriod {
        starts_at: entry,
        ends_at: entry,
    };
    assert_eq!(
        quote_reservation(&tariff, BERLIN, empty, CAR),
        Err(QuoteError::EmptyReservation)
    );
    // The largest amounts over the longest stay still fit.
    let mut dear = garage();
    dear.rates.base = Rate::PerUnit(Money(MAX_AMOUNT));
    dear.rates.bands.clear();
    dear.rates.daily_max = None;
    dear.unit_minutes = 1;
    dear.ev = Some(EvAdjustment::BasisPoints(100_000));
    let quote = quote_stay(
        &dear,
        BERLIN,
        entry,
        entry + Duration::days(MAX_STAY_DAYS),
        Occupant {
            spot_kind: SpotKind::Standard,
            ev: true,
        },
        None,
    )
    .unwrap();
    assert_eq!(
        quote.total,
        Money(MAX_AMOUNT * 1_440 * MAX_STAY_DAYS * 11),
        "{} minutes at the maximum, +1000 %",
        1_440 * MAX_STAY_DAYS
    );
}

#[test]
fn the_document_round_trips_and_is_strict() {
    let tariff = garage();
    let json = serde_json::to_string(&tariff).unwrap();
    assert_eq!(Tariff::from_json(json.as_bytes()).unwrap(), tariff);
    assert!(json.contains(r#""start":"20:00""#), "{json}");

    let mut value: serde_json::Value = serde_json::from_str(GARAGE).unwrap();
    value["rates"]["colour"] = serde_json::json!("red");
    let error = Tariff::from_json(value.to_string().as_bytes()).unwrap_err();
    assert!(
        error.to_string().contains("unknown field `colour`"),
        "{error}"
    );

    for (field, bad, expect) in [
        ("currency", serde_json::json!("eur"), "ISO 4217"),
        ("currency", serde_json::json!("EURO"), "ISO 4217"),
        ("unit_minutes", serde_json::json!(-5), "invalid value"),
    ] {
        let mut value: serde_json::Value = serde_json::from_str(GARAGE).unwrap();
        value[field] = bad;
        let error = Tariff::from_json(value.to_string().as_bytes()).unwrap_err();
        assert!(error.to_string().contains(expect), "{field}: {error}");
    }
    for bad in [
        "24:00",
        "7:00",
        "07:60",
        "07:00:30",
        "07-00",
        "",
        "07:00:00:00",
    ] {
        assert!(TimeOfDay::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(TimeOfDay::parse("07:05:00").unwrap().to_string(), "07:05");
    assert_eq!(TimeOfDay::parse("23:59").unwrap().minutes(), 1_439);

    let quote = walk_in(&tariff, local(MONDAY, "10:00"), local(MONDAY, "11:20"), CAR);
    let json = serde_json::to_value(&quote).unwrap();
    assert_eq!(json["total"], 375);
    assert_eq!(json["lines"][0]["kind"], "time");
    assert_eq!(json["lines"][0]["rate"]["per_hour"], 250);
    let back: Quote = serde_json::from_value(json).unwrap();
    assert_eq!(back, quote);
}

/// Applies `change` to the customer's tariff and returns the validation error.
fn refused(change: impl FnOnce(&mut Tariff)) -> TariffError {
    let mut tariff = garage();
    change(&mut tariff);
    tariff.validate().unwrap_err()
}

#[test]
fn every_bad_tariff_is_named() {
    let t = |h, m| TimeOfDay::new(h, m).unwrap();
    assert_eq!(refused(|t| t.unit_minutes = 0), TariffError::UnitMinutes(0));
    assert_eq!(refused(|t| t.unit_minutes = 7), TariffError::UnitMinutes(7));
    assert_eq!(
        refused(|t| t.unit_minutes = 2_880),
        TariffError::UnitMinutes(2_880)
    );
    assert_eq!(
        refused(|t| t.rates.base = Rate::PerHour(Money(-1))),
        TariffError::Negative {
            path: "rates.base.per_hour".into(),
            value: -1
        }
    );
    assert_eq!(
        refused(|t| t.rates.bands[0].rate = Rate::PerUnit(Money(MAX_AMOUNT + 1))),
        TariffError::TooLarge {
            path: "rates.bands[0].rate.per_unit".into(),
            value: MAX_AMOUNT + 1,
            max: MAX_AMOUNT
        }
    );
    assert_eq!(
        refused(|t| t.grace_minutes = 1_441),
        TariffError::TooLarge {
            path: "grace_minutes".into(),
            value: 1_441,
            max: 1_440
        }
    );
    // A second band Friday 23:00-01:00 meets the everyday 20:00-07:00 on Friday at 23:00.
    assert_eq!(
        refused(|tariff| tariff.rates.bands.push(Band {
            name: "late".into(),
            days: vec![chrono::Weekday::Fri],
            start: t(23, 0),
            end: t(1, 0),
            rate: Rate::PerHour(Money(50)),
        })),
        TariffError::OverlappingBands {
            first: "rates.bands[0]".into(),
            second: "rates.bands[1]".into(),
            day: chrono::Weekday::Fri,
            at: t(23, 0)
        }
    );
    // A Monday band from 06:00 overlaps Sunday's evening band, which runs to Monday 07:00.
    let error = refused(|tariff| {
        tariff.rates.bands.push(Band {
            name: String::new(),
            days: vec![chrono::Weekday::Mon],
            start: t(6, 0),
            end: t(8, 0),
            rate: Rate::PerHour(Money(50)),
        })
    });
    assert_eq!(
        error.to_string(),
        "rates.bands[0] and rates.bands[1] overlap from Mon 06:00"
    );
    // Back to back is fine.
    let mut tariff = garage();
    tariff.rates.bands.push(Band {
        name: String::new(),
        days: vec![chrono::Weekday::Mon],
        start: t(7, 0),
        end: t(8, 0),
        rate: Rate::PerHour(Money(50)),
    });
    assert_eq!(tariff.validate(), Ok(()));

    assert_eq!(
        refused(|t| t.rates.bands[0].days.clear()),
        TariffError::NoDays {
            path: "rates.bands[0].days".into()
        }
    );
    assert_eq!(
        refused(|t| t.rates.bands[0].days.push(chrono::Weekday::Tue)),
        TariffError::DuplicateDay {
            path: "rates.bands[0].days[7]".into(),
            day: chrono::Weekday::Tue
        }
    );
    assert_eq!(
        refused(|t| t.rates.bands[0].name = "x".repeat(65)),
        TariffError::Text {
            path: "rates.bands[0].name".into(),
            problem: "longer than 64 bytes"
        }
    );
    assert_eq!(
        refused(|t| t.rates.bands[0].name = "a\nb".into()),
        TariffError::Text {
            path: "rates.bands[0].name".into(),
            problem: "contains control characters"
        }
    );
    assert_eq!(
        refused(|t| {
            let band = t.rates.bands[0].clone();
            t.rates.bands = vec![band; MAX_BANDS + 1];
        }),
        TariffError::TooMany {
            path: "rates.bands".into(),
            max: MAX_BANDS
        }
    );
    // 0.50 a day is below one 15-minute unit at 2.50/h (62.5, rounded up 63).
    assert_eq!(
        refused(|t| t.rates.daily_max = Some(Money(50))),
        TariffError::CapBelowOneUnit {
            path: "rates.daily_max".into(),
            cap: 50,
            unit_minutes: 15,
            unit_price: 63
        }
    );
    assert_eq!(
        refused(|t| t.rates.daily_max = Some(Money(0))),
        TariffError::Zero {
            path: "rates.daily_max".into()
        }
    );
    assert_eq!(
        refused(|t| t.rates.first_period = Some(FirstPeriod {
            minutes: 20,
            amount: Money(100)
        })),
        TariffError::NotWholeUnits {
            path: "rates.first_period.minutes".into(),
            minutes: 20,
            unit_minutes: 15
        }
    );
    assert_eq!(
        refused(|t| t.rates.first_period = Some(FirstPeriod {
            minutes: 0,
            amount: Money(100)
        })),
        TariffError::Zero {
            path: "rates.first_period.minutes".into()
        }
    );
    assert_eq!(
        refused(|t| t.rates.first_period = Some(FirstPeriod {
            minutes: 60,
            amount: Money(2_500)
        })),
        TariffError::FirstPeriodAboveCap {
            path: "rates.first_period.amount".into(),
            amount: 2_500,
            cap: 2_000
        }
    );
    assert_eq!(
        refused(|t| t.by_kind[1].kinds.push(SpotKind::Motorcycle)),
        TariffError::DuplicateKind {
            path: "by_kind[1].kinds[1]".into(),
            kind: SpotKind::Motorcycle,
            first: "by_kind[0].kinds[0]".into()
        }
    );
    assert_eq!(
        refused(|t| t.by_kind[0].kinds.clear()),
        TariffError::Empty {
            path: "by_kind[0].kinds".into()
        }
    );
    assert_eq!(
        refused(|t| t.by_kind[0].rates.daily_max = Some(Money(24))),
        TariffError::CapBelowOneUnit {
            path: "by_kind[0].rates.daily_max".into(),
            cap: 24,
            unit_minutes: 15,
            unit_price: 25
        }
    );
    assert_eq!(
        refused(|t| t.ev = Some(EvAdjustment::BasisPoints(-10_001))),
        TariffError::OutOfRange {
            path: "ev.basis_points".into(),
            value: -10_001,
            min: -10_000,
            max: 100_000
        }
    );
    assert_eq!(
        refused(|t| t.overstay = Some(OverstayRule {
            grace_minutes: 10,
            charge: OverstayCharge::RateBasisPoints(100_001),
            daily_max: None
        })),
        TariffError::OutOfRange {
            path: "overstay.charge.rate_basis_points".into(),
            value: 100_001,
            min: 0,
            max: 100_000
        }
    );
    // One overstay unit is 1.5 x 62.5 = 93.75: a maximum of 90 is below it.
    assert_eq!(
        refused(|t| t.overstay = Some(OverstayRule {
            grace_minutes: 10,
            charge: OverstayCharge::RateBasisPoints(15_000),
            daily_max: Some(Money(90))
        })),
        TariffError::CapBelowOneUnit {
            path: "overstay.daily_max".into(),
            cap: 90,
            unit_minutes: 15,
            unit_price: 94
        }
    );
    assert_eq!(
        refused(|t| t.overstay = Some(OverstayRule {
            grace_minutes: 0,
            charge: OverstayCharge::Rate(Rate::PerHour(Money(-5))),
            daily_max: None
        })),
        TariffError::Negative {
            path: "overstay.charge.rate.per_hour".into(),
            value: -5
        }
    );
    assert_eq!(
        refused(|t| t.no_show = NoShowFee::BasisPoints(10_001)),
        TariffError::OutOfRange {
            path: "no_show.basis_points".into(),
            value: 10_001,
            min: 0,
            max: 10_000
        }
    );
    assert_eq!(
        refused(|t| t.no_show = NoShowFee::Flat(Money(-100))),
        TariffError::Negative {
            path: "no_show.flat".into(),
            value: -100
        }
    );
    assert_eq!(
        refused(|t| t.cancellation.late_refund_bp = 12_000),
        TariffError::OutOfRange {
            path: "cancellation.late_refund_bp".into(),
            value: 12_000,
            min: 0,
            max: 10_000
        }
    );
    assert_eq!(
        refused(|t| t.cancellation.free_until_hours_before = 5_000),
        TariffError::TooLarge {
            path: "cancellation.free_until_hours_before".into(),
            value: 5_000,
            max: 2_160
        }
    );
    // A quote on a bad tariff says why.
    let mut bad = garage();
    bad.unit_minutes = 0;
    let entry = local(MONDAY, "10:00");
    assert_eq!(
        quote_stay(&bad, BERLIN, entry, entry, CAR, None),
        Err(QuoteError::Tariff(TariffError::UnitMinutes(0)))
    );
}
