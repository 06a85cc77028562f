//! `parkd demo` with its simulated gates, end to end: the demo registers the gates, cars (some
//! on reservations their drivers made through the REST API) ask at the entry gates over MQTT,
//! park where the platform sends them, and leave through the exit gates; the store records
//! their parking sessions and the live availability shows them parked. With the demo's tariff
//! the drivers pay (some reservations in advance, stays at the exit: walk-ins at the pay
//! station), the exit gates open after payment, the ledger shows the revenue, and no
//! card-number-like value is stored anywhere or written to the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use parkd::app::{Mode, RunningApp};
use parkd_core::account::{Email, Role};
use parkd_core::ids::LotId;
use parkd_store::{DeviceBinding, PaymentPurpose, PaymentStatus};
use serde_json::Value;

/// The value of a counter line of `/metrics` (0 if absent).
fn counter(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

/// Everything the process logs, kept to be scanned for card numbers afterwards.
#[derive(Clone, Default)]
struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_cars_enter_park_and_leave_through_the_gates() {
    // parkd's own crates at debug, everything else at info, as text: what an operator's log
    // file would hold, and more.
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,parkd=debug,parkd_api=debug,parkd_gates=debug,parkd_payments=debug,\
                 parkd_store=debug,parkd_sim=debug",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .expect("the only subscriber of this test binary");
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.demo.simulate = true;
    config.demo.gates = true;
    config.demo.spots = 40;
    // 20 simulated minutes per real second: stays of about two hours last six seconds.
    config.demo.speed = 1_200.0;
    config.demo.booking_share = 0.3;
    config.live.debounce_ms = 0;
    config.live.model_reload_s = 1;
    config.reservations.sweep_every_s = 1;
    let lot = LotId::parse(&config.demo.lot).unwrap();
    let started_at = chrono::Utc::now();
    let app = RunningApp::start(config, Mode::Demo).await.unwrap();
    let http = app.http_addr();
    let store = app.store();

    // The demo registered its gates.
    let gates: HashSet<String> = store
        .devices()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|device| match device.binding {
            DeviceBinding::Gate { lot: l, gate } if l == lot => Some(gate.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        gates,
        HashSet::from(["in-1", "in-2", "out-1", "out-2"].map(String::from))
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    loop {
        assert!(Instant::now() < deadline, "timed out; last seen: {last}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let sessions = store
            .parking_sessions_between(
                &lot,
                started_at - chrono::Duration::minutes(1),
                chrono::Utc::now() + chrono::Duration::minutes(1),
                10_000,
            )
            .await
            .unwrap();
        let closed = sessions.iter().filter(|s| s.exited_at.is_some()).count();
        let sensed = sessions.iter().filter(|s| s.sensed_spot.is_some()).count();
        let booked = sessions
            .iter()
            .filter(|s| s.reservation_id.is_some())
            .count();
        let open = store.open_parking_sessions(&lot).await.unwrap();
        // Where the platform knows open sessions' cars are parked...
        let parked: HashSet<String> = open
            .iter()
            .filter_map(|s| s.sensed_spot.as_ref().map(ToString::to_string))
            .collect();
        // ...and what the live map shows occupied.
        let (status, live) = common::call(
            http,
            "GET",
            "/api/v1/lots/demo-garage/spots?state=occupied",
            None,
            None,
        )
        .await;
        assert_eq!(status, 200, "{live}");
        let occupied: HashSet<String> = live["spots"]
            .as_array()
            .map(|spots| {
                spots
                    .iter()
                    .filter_map(|s| s["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let (_, availability) = common::call(
            http,
            "GET",
            "/api/v1/lots/demo-garage/availability",
            None,
            None,
        )
        .await;
        let shown = availability["total"]["occupied"].as_u64().unwrap_or(0);
        let metrics = common::get_text(http, "/metrics").await;
        let walk_ins = counter(
            &metrics,
            r#"parkd_gate_decisions_total{action="open",direction="entry",reason="walk_in"}"#,
        );
        let on_reservation = counter(
            &metrics,
            r#"parkd_gate_decisions_total{action="open",direction="entry",reason="reservation"}"#,
        );
        // Open exits: paid, or nothing was due.
        let exits = counter(
            &metrics,
            r#"parkd_gate_decisions_total{action="open",direction="exit",reason="nothing_due"}"#,
        ) + counter(
            &metrics,
            r#"parkd_gate_decisions_total{action="open",direction="exit",reason="paid"}"#,
        );
        let seen_parking = counter(&metrics, "parkd_gate_arrivals_total{");
        let payment_required = counter(
            &metrics,
            r#"parkd_gate_decisions_total{action="deny",direction="exit",reason="payment_required"}"#,
        );
        // The exposition sorts labels by name.
        let prepaid = counter(
            &metrics,
            r#"parkd_payments_total{outcome="succeeded",purpose="reservation"}"#,
        );
        let paid_at_exit = counter(
            &metrics,
            r#"parkd_payments_total{outcome="succeeded",purpose="exit"}"#,
        );
        let revenue: i64 = store
            .revenue_between(
                started_at - chrono::Duration::minutes(1),
                chrono::Utc::now() + chrono::Duration::minutes(1),
                Some(&lot),
            )
            .await
            .unwrap()
            .into_iter()
            .filter(|(currency, _)| currency.as_str() == "EUR")
            .map(|(_, amount)| amount)
            .sum();
        // Closed sessions that were paid at the exit: the gate opened after the payment.
        let mut left_after_paying = 0;
        for session in sessions.iter().filter(|s| s.exited_at.is_some()) {
            let payments = store.payments_of_session(&session.id).await.unwrap();
            if payments.iter().any(|p| {
                p.purpose == PaymentPurpose::Exit
                    && p.status == PaymentStatus::Succeeded
                    && session.exited_at.is_some_and(|exit| p.created_at <= exit)
            }) {
                left_after_paying += 1;
            }
        }
        last = format!(
            "sessions {} closed {closed} sensed {sensed} booked {booked} open {} \
             parked&occupied {} occupied {} shown {shown} walk_ins {walk_ins} \
             on_reservation {on_reservation} exits {exits} seen_parking {seen_parking} \
             payment_required {payment_required} prepaid {prepaid} paid_at_exit {paid_at_exit} \
             revenue {revenue} left_after_paying {left_after_paying}",
            sessions.len(),
            open.len(),
            parked.intersection(&occupied).count(),
            occupied.len(),
        );
        let done = sessions.len() >= 10
            && closed >= 3
            && sensed >= 5
            && booked >= 1
            && !open.is_empty()
            // The live map shows cars where their sessions say they are.
            && parked.intersection(&occupied).count() >= 3
            && shown == occupied.len() as u64
            && walk_ins >= 5
            && on_reservation >= 1
            && exits >= 3
            && seen_parking >= 5
            // The drivers pay: some in advance, stays at the exit, and then leave.
            && payment_required >= 1
            && prepaid >= 1
            && paid_at_exit >= 1
            && revenue > 0
            && left_after_paying >= 1;
        if done {
            break;
        }
    }

    // A reservation made by a simulated driver through the API was checked in at the gate.
    let sessions = store
        .parking_sessions_between(
            &lot,
            started_at - chrono::Duration::minutes(1),
            chrono::Utc::now() + chrono::Duration::minutes(1),
            10_000,
        )
        .await
        .unwrap();
    let with_reservation = sessions
        .iter()
        .find_map(|s| s.reservation_id.clone())
        .unwrap();
    let reservation = store.reservation(&with_reservation).await.unwrap().unwrap();
    assert_eq!(reservation.lot, lot);
    assert!(
        matches!(
            reservation.state,
            parkd_core::reservation::ReservationState::CheckedIn
                | parkd_core::reservation::ReservationState::Completed
        ),
        "{:?}",
        reservation.state
    );
    // Sessions name the gates they used.
    for session in &sessions {
        let entry = session.entry_gate.as_ref().map(ToString::to_string);
        assert!(
            matches!(entry.as_deref(), Some("in-1" | "in-2")),
            "{session:?}"
        );
        if session.exited_at.is_some() {
            let exit = session.exit_gate.as_ref().map(ToString::to_string);
            // Closed at an exit gate.
            assert!(
                matches!(exit.as_deref(), Some("out-1" | "out-2")),
                "{session:?}"
            );
        }
    }
    let lots: Value = common::call(http, "GET", "/api/v1/lots", None, None)
        .await
        .1;
    assert_eq!(lots["lots"][0]["spots"], 40);

    // The demo tariff is the lot's, and the pay station is an operator account.
    let tariff = store.tariff(&lot).await.unwrap().unwrap();
    assert_eq!(tariff.tariff_json, parkd::demo::DEMO_TARIFF);
    let station = store
        .user_by_email(&Email::parse(parkd::demo::PAY_STATION_EMAIL).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(station.role, Role::Operator);

    // The simulator stops with the rest, in order, promptly.
    tokio::time::timeout(Duration::from_secs(60), app.shutdown())
        .await
        .expect("shutdown in time")
        .unwrap();

    // No card number anywhere in the database: every text value of every table.
    let db = rusqlite::Connection::open_with_flags(
        dir.path().join("parkd.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        ["payments", "ledger_entries", "idempotency_keys"]
            .iter()
            .all(|table| tables.iter().any(|t| t == table)),
        "{tables:?}"
    );
    let mut scanned = 0;
    for table in &tables {
        let mut statement = db.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = statement.column_count();
        let mut rows = statement.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for column in 0..columns {
                if let rusqlite::types::ValueRef::Text(text) = row.get_ref(column).unwrap() {
                    let text = without_hex_ids(&String::from_utf8_lossy(text));
                    assert!(
                        !parkd_payments::guard::contains_card_number(&text),
                        "a card-number-like value in {table}, column {column}"
                    );
                    scanned += 1;
                }
            }
        }
    }
    assert!(scanned > 100, "{scanned} text values scanned");

    // Nor in the logs.
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let lines = logged.lines().count();
    assert!(
        lines > 50 && logged.contains("payment"),
        "{lines} log lines captured"
    );
    for line in logged.lines() {
        assert!(
            !parkd_payments::guard::contains_card_number(&without_hex_ids(line)),
            "a card-number-like value in the log: {line}"
        );
    }
}

/// `text` with random hex identifiers (32 hex digits and more, e.g. `pay_0a1b...`) blanked
/// out: their digit runs are random, and one in about a thousand passes for a card number.
/// A card number has no letters, so it stays.
fn without_hex_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let hex_id = word.len() >= 32
            && word.bytes().all(|b| b.is_ascii_hexdigit())
            && word.bytes().any(|b| b.is_ascii_alphabetic());
        out.push_str(if hex_id { "_" } else { word.as_str() });
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}
