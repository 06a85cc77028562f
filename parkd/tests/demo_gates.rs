//! `parkd demo` with its simulated gates, end to end: the demo registers the gates, cars (some
//! on reservations their drivers made through the REST API) ask at the entry gates over MQTT,
//! park where the platform sends them, and leave through the exit gates; the store records
//! their parking sessions and the live availability shows them parked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use parkd::app::{Mode, RunningApp};
use parkd_core::ids::LotId;
use parkd_store::DeviceBinding;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_cars_enter_park_and_leave_through_the_gates() {
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
        let exits = counter(
            &metrics,
            r#"parkd_gate_decisions_total{action="open",direction="exit",reason="nothing_due"}"#,
        );
        let seen_parking = counter(&metrics, "parkd_gate_arrivals_total{");
        last = format!(
            "sessions {} closed {closed} sensed {sensed} booked {booked} open {} \
             parked&occupied {} occupied {} shown {shown} walk_ins {walk_ins} \
             on_reservation {on_reservation} exits {exits} seen_parking {seen_parking}",
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
            && seen_parking >= 5;
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

    // The simulator stops with the rest, in order, promptly.
    tokio::time::timeout(Duration::from_secs(60), app.shutdown())
        .await
        .expect("shutdown in time")
        .unwrap();
}
