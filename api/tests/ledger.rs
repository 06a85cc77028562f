//! The ledger export and revenue over real HTTP on both stores: only operators may read them,
//! the CSV is RFC 4180 and parses back to exactly the store's entries (a hostile memo
//! included, defused), periods are half-open, the lot filter holds, an export longer than one
//! page arrives whole and in order, revenue agrees with the store's own sums, and bad input
//! gets a precise problem.

#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use common::{Reply, Server, postgres, sqlite};
use parkd_api::ledger::{COLUMNS, PAGE};
use parkd_core::account::{Email, Role};
use parkd_core::garage::demo_garage;
use parkd_core::ids::{LotId, SpotId};
use parkd_core::reservation::ReservationState;
use parkd_core::tariff::Currency;
use parkd_core::vehicle::VehicleType;
use parkd_store::{
    LedgerEntry, NewAdjustment, PaymentPurpose, PaymentRow, PaymentStatus, PaymentUpdate,
    RefundRow, RefundStatus, ReservationRow,
};
use serde_json::Value;

const PASSWORD: &str = "violet tram under lantern";

/// A memo that tries everything: a formula, separators, quotes, a line break, non-ASCII.
const HOSTILE: &str = "=HYPERLINK(\"http://evil.example\",\"click, now\")\r\nline 2 \u{20ac}";

fn t(s: &Server, secs: i64) -> DateTime<Utc> {
    parkd_core::clock::Clock::now(s.clock.as_ref()) + Duration::seconds(secs)
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn lot(raw: &str) -> LotId {
    LotId::parse(raw).unwrap()
}

fn currency(code: &str) -> Currency {
    Currency::parse(code).unwrap()
}

/// A token of a new account with `role` (drivers register; others are promoted).
async fn account(s: &Server, email: &str, role: Role) -> (String, String) {
    s.register(email, PASSWORD).await;
    let user = s
        .store
        .user_by_email(&Email::parse(email).unwrap())
        .await
        .unwrap()
        .unwrap();
    if role != Role::Driver {
        s.store.set_role(&user.id, role).await.unwrap();
    }
    (s.token(email, PASSWORD).await, user.id)
}

async fn get(s: &Server, path: &str, token: Option<&str>) -> Reply {
    s.call("GET", path, token, None).await
}

/// RFC 4180, strictly: every record ends with CRLF, a quote only opens a field or is doubled
/// inside a quoted one, and a bare LF outside quotes is an error.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut field_start = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                    assert!(
                        matches!(chars.peek(), Some(',' | '\r')),
                        "a closing quote not followed by a separator or CRLF"
                    );
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' if field_start => quoted = true,
            '"' => panic!("a quote inside an unquoted field: {field:?}"),
            ',' => {
                record.push(std::mem::take(&mut field));
                field_start = true;
                continue;
            }
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "CR without LF outside quotes");
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                field_start = true;
                continue;
            }
            '\n' => panic!("a bare LF outside quotes"),
            _ => field.push(c),
        }
        field_start = false;
    }
    assert!(!quoted, "an unterminated quoted field");
    assert!(
        field.is_empty() && record.is_empty(),
        "the last record does not end with CRLF"
    );
    records
}

/// The export's rows (header checked and dropped).
fn rows(reply: &Reply) -> Vec<Vec<String>> {
    assert_eq!(reply.status, 200, "{}", reply.text);
    let mut records = parse_csv(&reply.text);
    assert!(!records.is_empty(), "no header row");
    assert_eq!(records.remove(0), COLUMNS, "the header row");
    for record in &records {
        assert_eq!(record.len(), COLUMNS.len(), "{record:?}");
    }
    records
}

/// What a CSV text field holds for `value`: with a leading `'` if it starts like a formula.
fn defused(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}

/// The CSV row must be exactly this entry.
fn assert_row(row: &[String], entry: &LedgerEntry) {
    assert_eq!(row[0], entry.seq.to_string(), "seq");
    let at = DateTime::parse_from_rfc3339(&row[1]).unwrap();
    assert_eq!(at, entry.at, "at");
    assert!(row[1].ends_with('Z'), "at in UTC: {}", row[1]);
    assert_eq!(row[2], defused(entry.lot.as_str()), "lot");
    assert_eq!(row[3], entry.kind.as_str(), "kind");
    assert_eq!(row[4], entry.amount_minor.to_string(), "amount_minor");
    assert_eq!(row[6], entry.currency.as_str(), "currency");
    let ids = [
        &entry.payment_id,
        &entry.refund_id,
        &entry.reservation_id,
        &entry.session_id,
        &entry.user_id,
    ];
    for (i, id) in ids.into_iter().enumerate() {
        assert_eq!(
            row[7 + i],
            defused(id.as_deref().unwrap_or_default()),
            "{}",
            COLUMNS[7 + i]
        );
    }
    assert_eq!(row[12], defused(&entry.memo), "memo");
}

fn adjustment(
    at: DateTime<Utc>,
    lot_id: &str,
    amount: i64,
    code: &str,
    memo: &str,
) -> NewAdjustment {
    NewAdjustment {
        at,
        lot: lot(lot_id),
        amount_minor: amount,
        currency: currency(code),
        payment_id: None,
        reservation_id: None,
        session_id: None,
        user_id: None,
        memo: memo.into(),
    }
}

/// A reservation of `user` at lot `garage`, and a payment of it created and settled at `at`.
async fn paid(
    s: &Server,
    user: &str,
    id: &str,
    lot_id: &str,
    amount: i64,
    code: &str,
    at: DateTime<Utc>,
) {
    let reservation = ReservationRow {
        id: format!("r-{id}"),
        code: format!("C{id}"),
        user_id: user.into(),
        vehicle_id: None,
        plate_key: "BAB123".into(),
        vehicle_type: VehicleType::Car,
        lot: lot(lot_id),
        spot: SpotId::parse("L0-A-001").unwrap(),
        starts_at: at + Duration::hours(1),
        ends_at: at + Duration::hours(2),
        state: ReservationState::Confirmed,
        created_at: at,
        updated_at: at,
    };
    s.store
        .create_reservation(&reservation, None)
        .await
        .unwrap();
    let payment = PaymentRow {
        id: id.into(),
        user_id: Some(user.into()),
        reservation_id: Some(reservation.id.clone()),
        session_id: None,
        lot: lot(lot_id),
        purpose: PaymentPurpose::Reservation,
        amount_minor: amount,
        currency: currency(code),
        provider: "test".into(),
        provider_intent_id: None,
        status: PaymentStatus::Created,
        failure_reason: None,
        method: None,
        amount_refunded_minor: 0,
        quote_json: format!(r#"{{"currency":"{code}","total":{amount},"lines":[]}}"#),
        created_at: at,
        updated_at: at,
        requested_method: None,
    };
    s.store.create_payment(&payment).await.unwrap();
    assert!(
        s.store
            .settle_payment(
                id,
                &[PaymentStatus::Created],
                &PaymentUpdate::default(),
                at,
                &format!("reservation {}", reservation.id),
            )
            .await
            .unwrap()
    );
}

async fn refunded(s: &Server, id: &str, payment: &str, amount: i64, at: DateTime<Utc>) {
    let refund = RefundRow {
        id: id.into(),
        payment_id: payment.into(),
        amount_minor: amount,
        currency: currency("EUR"),
        provider: "test".into(),
        provider_refund_id: None,
        status: RefundStatus::Succeeded,
        reason: "requested_by_customer".into(),
        created_at: at,
        updated_at: at,
    };
    s.store
        .record_refund(&refund, "-refund requested")
        .await
        .unwrap();
}

/// Lots `garage` and `annex` live, `closed` only in the ledger; a driver's charges, a refund
/// and adjustments, from `t(0)` (included in `[t(0), t(1000))`) to `t(1000)` (not included).
async fn seed(s: &Server, user: &str) {
    let now = t(s, 0);
    for id in ["garage", "annex"] {
        let model = demo_garage(lot(id), 1, 10);
        s.store.put_lot(&model).await.unwrap();
        s.engine.install_lot(model, now);
    }
    let store = &s.store;
    store
        .record_adjustment(&adjustment(t(s, 0), "garage", 5, "EUR", "@start of period"))
        .await
        .unwrap();
    paid(s, user, "pay-1", "garage", 1_250, "EUR", t(s, 100)).await;
    refunded(s, "rf-1", "pay-1", 300, t(s, 200)).await;
    store
        .record_adjustment(&NewAdjustment {
            payment_id: Some("pay-1".into()),
            user_id: Some(user.into()),
            ..adjustment(t(s, 300), "garage", 25, "EUR", HOSTILE)
        })
        .await
        .unwrap();
    store
        .record_adjustment(&adjustment(
            t(s, 400),
            "annex",
            -1_250,
            "EUR",
            "-cash difference, pay station 2",
        ))
        .await
        .unwrap();
    paid(s, user, "pay-2", "annex", 900, "USD", t(s, 500)).await;
    store
        .record_adjustment(&adjustment(t(s, 600), "annex", 500, "JPY", "+tip"))
        .await
        .unwrap();
    // A lot gone from the garage, its money history kept.
    store
        .record_adjustment(&adjustment(t(s, 700), "closed", -75, "EUR", "last refund"))
        .await
        .unwrap();
    // Sub-second instants keep their digits.
    store
        .record_adjustment(&adjustment(
            t(s, 800) + Duration::microseconds(250_000),
            "garage",
            1,
            "EUR",
            "\tcash",
        ))
        .await
        .unwrap();
    // At the end of the period: outside it.
    store
        .record_adjustment(&adjustment(t(s, 1_000), "garage", 7, "EUR", "next period"))
        .await
        .unwrap();
}

fn query(s: &Server, from: i64, to: i64) -> String {
    format!("from={}&to={}", rfc3339(t(s, from)), rfc3339(t(s, to)))
}

async fn export_and_revenue(s: Server) {
    let (_, user) = account(&s, "ana@example.com", Role::Driver).await;
    seed(&s, &user).await;
    let period = query(&s, 0, 1_000);
    let csv = format!("/api/v1/ledger.csv?{period}");
    let revenue = format!("/api/v1/revenue?{period}");

    // Roles: anonymous 401, a driver 403, operators and admins 200.
    let (driver, _) = account(&s, "dirk@example.com", Role::Driver).await;
    let (operator, _) = account(&s, "olga@example.com", Role::Operator).await;
    let (admin, _) = account(&s, "adam@example.com", Role::Admin).await;
    for path in [&csv, &revenue] {
        let anonymous = get(&s, path, None).await;
        assert_eq!(anonymous.status, 401, "{path}");
        assert_eq!(
            anonymous.body["type"],
            "https://parkd.dev/problems/missing-token"
        );
        let refused = get(&s, path, Some(&driver)).await;
        assert_eq!(refused.status, 403, "{path}");
        assert_eq!(refused.body["type"], "https://parkd.dev/problems/forbidden");
        assert_eq!(get(&s, path, Some(&admin)).await.status, 200, "{path}");
    }

    // The export: headers, and exactly the store's entries of [from, to), in append order.
    let reply = get(&s, &csv, Some(&operator)).await;
    assert!(
        reply
            .headers
            .contains("content-type: text/csv; charset=utf-8"),
        "{}",
        reply.headers
    );
    let from = t(&s, 0).format("%Y%m%dT%H%M%SZ");
    let to = t(&s, 1_000).format("%Y%m%dT%H%M%SZ");
    assert!(
        reply.headers.contains(&format!(
            "content-disposition: attachment; filename=\"parkd-ledger-{}-{}.csv\"",
            from.to_string().to_lowercase(),
            to.to_string().to_lowercase()
        )),
        "{}",
        reply.headers
    );
    assert!(reply.headers.contains("cache-control: no-store"));
    let exported = rows(&reply);
    let stored = s
        .store
        .ledger_between(t(&s, 0), t(&s, 1_000), None, None, 10_000)
        .await
        .unwrap();
    assert_eq!(stored.len(), 9, "the seed has nine entries in the period");
    assert_eq!(exported.len(), stored.len());
    for (row, entry) in exported.iter().zip(&stored) {
        assert_row(row, entry);
    }
    // The bounds: t(0) is in, t(1000) is out.
    assert_eq!(exported[0][12], "'@start of period");
    assert!(exported.iter().all(|row| row[12] != "next period"));

    // The hostile memo round-trips, defused; the signed amounts stay numbers.
    let by_memo = |memo: &str| {
        exported
            .iter()
            .find(|row| row[12] == defused(memo))
            .unwrap_or_else(|| panic!("no row with memo {memo:?}"))
            .clone()
    };
    let hostile = by_memo(HOSTILE);
    assert_eq!(hostile[12], format!("'{HOSTILE}"));
    assert_eq!(hostile[7], "pay-1");
    assert_eq!(hostile[11], user);
    assert_eq!((hostile[4].as_str(), hostile[5].as_str()), ("25", "0.25"));
    let cash = by_memo("-cash difference, pay station 2");
    assert_eq!(cash[12], "'-cash difference, pay station 2");
    assert_eq!((cash[4].as_str(), cash[5].as_str()), ("-1250", "-12.50"));
    let refund = exported.iter().find(|row| row[3] == "refund").unwrap();
    assert_eq!(
        (refund[4].as_str(), refund[5].as_str(), refund[8].as_str()),
        ("-300", "-3.00", "rf-1")
    );
    assert_eq!(refund[12], "'-refund requested");
    let charge = exported.iter().find(|row| row[7] == "pay-1").unwrap();
    assert_eq!(
        (charge[3].as_str(), charge[5].as_str()),
        ("charge", "12.50")
    );
    assert_eq!(charge[9], "r-pay-1");
    let yen = by_memo("+tip");
    assert_eq!((yen[5].as_str(), yen[6].as_str()), ("500", "JPY"));
    let tab = by_memo("\tcash");
    assert_eq!(tab[1], rfc3339(t(&s, 800)).replace('Z', ".250Z"));
    // Nothing but the memo needed quoting: the raw text holds the hostile memo quoted.
    assert!(
        reply
            .text
            .contains(&format!(",\"'{}\"\r\n", HOSTILE.replace('"', "\"\"")))
    );

    // The lot filter; a removed lot with history is still exportable.
    let annex = rows(&get(&s, &format!("{csv}&lot=annex"), Some(&operator)).await);
    assert_eq!(annex.len(), 3);
    assert!(annex.iter().all(|row| row[2] == "annex"), "{annex:?}");
    let closed = rows(&get(&s, &format!("{csv}&lot=closed"), Some(&operator)).await);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0][4], "-75");
    // A period without entries: the header alone.
    let empty = get(
        &s,
        &format!("/api/v1/ledger.csv?{}", query(&s, 5_000, 6_000)),
        Some(&operator),
    )
    .await;
    assert!(rows(&empty).is_empty());
    assert_eq!(empty.text, format!("{}\r\n", COLUMNS.join(",")));
    // An offset other than Z, with its + encoded.
    let offset = format!(
        "/api/v1/ledger.csv?from={}&to={}",
        t(&s, 0)
            .with_timezone(&chrono::FixedOffset::east_opt(3_600).unwrap())
            .to_rfc3339()
            .replace('+', "%2B"),
        rfc3339(t(&s, 1_000))
    );
    assert_eq!(rows(&get(&s, &offset, Some(&operator)).await).len(), 9);

    // Revenue: the store's own sums, split by kind.
    for (lot_filter, from, to) in [
        (None, 0, 1_000),
        (Some("garage"), 0, 1_000),
        (Some("annex"), 0, 1_000),
        (Some("closed"), 0, 1_000),
        (None, 150, 650),
        (None, 0, 1_001),
    ] {
        let mut path = format!("/api/v1/revenue?{}", query(&s, from, to));
        if let Some(id) = lot_filter {
            path.push_str(&format!("&lot={id}"));
        }
        let reply = get(&s, &path, Some(&operator)).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert_eq!(
            reply.body["lot"],
            lot_filter.map_or(Value::Null, Value::from)
        );
        assert_eq!(reply.body["from"], rfc3339(t(&s, from)));
        let expected = s
            .store
            .revenue_between(t(&s, from), t(&s, to), lot_filter.map(lot).as_ref())
            .await
            .unwrap();
        let currencies = reply.body["currencies"].as_array().unwrap();
        let got: Vec<(String, i64)> = currencies
            .iter()
            .map(|c| {
                (
                    c["currency"].as_str().unwrap().to_owned(),
                    c["net_minor"].as_i64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, i64)> = expected
            .iter()
            .map(|(c, net)| (c.as_str().to_owned(), *net))
            .collect();
        assert_eq!(got, want, "{path}");
        let entries = s
            .store
            .ledger_between(
                t(&s, from),
                t(&s, to),
                lot_filter.map(lot).as_ref(),
                None,
                10_000,
            )
            .await
            .unwrap();
        for c in currencies {
            let parts: i64 = [
                "charges_minor",
                "no_show_fees_minor",
                "refunds_minor",
                "adjustments_minor",
            ]
            .iter()
            .map(|k| c[*k].as_i64().unwrap())
            .sum();
            assert_eq!(parts, c["net_minor"].as_i64().unwrap(), "{c}");
            assert!(c["refunds_minor"].as_i64().unwrap() <= 0, "{c}");
            let code = c["currency"].as_str().unwrap();
            let count = entries
                .iter()
                .filter(|e| e.currency.as_str() == code)
                .count();
            assert_eq!(c["entries"].as_u64().unwrap(), count as u64, "{c}");
        }
    }
    let all = get(&s, &revenue, Some(&operator)).await;
    let eur = &all.body["currencies"][0];
    assert_eq!(eur["currency"], "EUR");
    assert_eq!(eur["charges_minor"], 1_250);
    assert_eq!(eur["refunds_minor"], -300);
    assert_eq!(eur["adjustments_minor"], 5 + 25 - 1_250 - 75 + 1);
    assert_eq!(eur["entries"], 7);
    assert_eq!(all.body["currencies"][1]["currency"], "JPY");
    assert_eq!(all.body["currencies"][2]["currency"], "USD");
    assert_eq!(all.body["currencies"][2]["charges_minor"], 900);

    // Bad input: the same precise answers from both routes.
    let p = |from: &str, to: &str| format!("from={from}&to={to}");
    let cases: Vec<(String, u16, &str)> = vec![
        (String::new(), 400, "invalid-parameter"),
        (
            format!("from={}", rfc3339(t(&s, 0))),
            400,
            "invalid-parameter",
        ),
        (
            format!("to={}", rfc3339(t(&s, 0))),
            400,
            "invalid-parameter",
        ),
        (p("yesterday", &rfc3339(t(&s, 0))), 400, "invalid-parameter"),
        (p("2027-01-01", "2027-02-01"), 400, "invalid-parameter"),
        // An unencoded + is a space by the time it arrives.
        (
            p("2027-01-01T00:00:00+01:00", "2027-02-01T00:00:00Z"),
            400,
            "invalid-parameter",
        ),
        (
            p("2027-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            400,
            "invalid-parameter",
        ),
        (
            p("2027-02-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            400,
            "invalid-parameter",
        ),
        (
            p("2020-01-01T00:00:00Z", "2026-01-01T00:00:01Z"),
            400,
            "invalid-parameter",
        ),
        (format!("{period}&format=xlsx"), 400, "invalid-parameter"),
        (
            format!("{period}&from={}", rfc3339(t(&s, 0))),
            400,
            "invalid-parameter",
        ),
        (format!("{period}&lot=nowhere"), 404, "unknown-lot"),
        (format!("{period}&lot="), 404, "unknown-lot"),
        (format!("{period}&lot=Not%20A%20Lot"), 404, "unknown-lot"),
    ];
    for route in ["/api/v1/ledger.csv", "/api/v1/revenue"] {
        for (q, status, kind) in &cases {
            let reply = get(&s, &format!("{route}?{q}"), Some(&operator)).await;
            assert_eq!(reply.status, *status, "{route}?{q}: {}", reply.text);
            assert!(
                reply
                    .headers
                    .contains("content-type: application/problem+json"),
                "{route}?{q}"
            );
            assert_eq!(
                reply.body["type"],
                format!("https://parkd.dev/problems/{kind}"),
                "{route}?{q}"
            );
        }
        // Six years exactly is allowed.
        let six = format!(
            "{route}?{}",
            p("2020-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
        );
        assert_eq!(get(&s, &six, Some(&operator)).await.status, 200, "{six}");
    }
    s.stop.cancel();
}

/// More entries than one page: all arrive, once each, in append order, and revenue counts
/// them all.
async fn exports_longer_than_a_page(s: Server) {
    let now = t(&s, 0);
    let model = demo_garage(lot("garage"), 1, 10);
    s.store.put_lot(&model).await.unwrap();
    s.engine.install_lot(model, now);
    let total = PAGE as i64 + 3;
    for i in 0..total {
        // Times out of append order: the export's order is append order, not time.
        let at = t(&s, (i * 7_919) % 3_600);
        s.store
            .record_adjustment(&adjustment(at, "garage", i + 1, "EUR", &format!("n{i}")))
            .await
            .unwrap();
    }
    let (operator, _) = account(&s, "olga@example.com", Role::Operator).await;
    let period = query(&s, 0, 3_600);
    let reply = get(&s, &format!("/api/v1/ledger.csv?{period}"), Some(&operator)).await;
    // Streamed: sent in chunks as the pages come, its length unknown up front.
    assert!(
        reply.headers.contains("transfer-encoding: chunked"),
        "{}",
        reply.headers
    );
    assert!(
        !reply.headers.contains("content-length"),
        "{}",
        reply.headers
    );
    let exported = rows(&reply);
    assert_eq!(exported.len(), total as usize);
    let seqs: Vec<i64> = exported.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "append order");
    let memos: Vec<String> = exported.iter().map(|r| r[12].clone()).collect();
    let expected: Vec<String> = (0..total).map(|i| format!("n{i}")).collect();
    assert_eq!(memos, expected, "each once, in order");
    let stored = s
        .store
        .ledger_between(t(&s, 0), t(&s, 3_600), None, None, 2 * PAGE)
        .await
        .unwrap();
    for (row, entry) in exported.iter().zip(&stored) {
        assert_row(row, entry);
    }

    let revenue = get(&s, &format!("/api/v1/revenue?{period}"), Some(&operator)).await;
    assert_eq!(revenue.status, 200, "{}", revenue.body);
    let eur = &revenue.body["currencies"][0];
    assert_eq!(eur["entries"], total);
    assert_eq!(eur["net_minor"], total * (total + 1) / 2);
    assert_eq!(
        s.store
            .revenue_between(t(&s, 0), t(&s, 3_600), None)
            .await
            .unwrap(),
        vec![(currency("EUR"), total * (total + 1) / 2)]
    );
    s.stop.cancel();
}

mod on_sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn export_and_revenue() {
        super::export_and_revenue(super::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exports_longer_than_a_page() {
        super::exports_longer_than_a_page(super::sqlite().await).await;
    }
}

mod on_postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn export_and_revenue() {
        super::export_and_revenue(super::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exports_longer_than_a_page() {
        super::exports_longer_than_a_page(super::postgres().await).await;
    }
}
