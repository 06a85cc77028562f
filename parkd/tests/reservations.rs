//! A reservation made through the running product shows its spot as held in live
//! availability within one sweep: accounts, the store, allocation, the sweeper and the
//! occupancy engine working together over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use parkd::app::{Mode, RunningApp};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_holds_its_spot_in_live_availability() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.reservations.sweep_every_s = 1;
    let store = parkd::app::open_store(&config).await.unwrap();
    let lot = parkd_core::ids::LotId::parse("demo-garage").unwrap();
    store
        .put_lot(&parkd::app::demo_lot(&lot, 300))
        .await
        .unwrap();
    drop(store);
    let app = RunningApp::start(config, Mode::Serve).await.unwrap();
    let http = app.http_addr();

    let (token, vehicle) = common::driver_with_vehicle(
        http,
        "ana@example.com",
        json!({"plate": "B-E 2026", "class": "car", "ev": true}),
    )
    .await;
    let at = common::minutes_from_now;
    let (status, reservation) = common::call(
        http,
        "POST",
        "/api/v1/reservations",
        Some(&token),
        Some(json!({"lot": "demo-garage", "vehicle_id": vehicle,
                    "starts_at": at(10), "ends_at": at(130)})),
    )
    .await;
    assert_eq!(status, 201, "{reservation}");
    let spot = reservation["spot"].as_str().unwrap().to_owned();
    let (_, spots) = common::call(
        http,
        "GET",
        "/api/v1/lots/demo-garage/spots?kind=ev",
        None,
        None,
    )
    .await;
    assert!(
        spots["spots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == spot.as_str()),
        "an EV driver gets a charging bay: {spot}"
    );

    let mut held = false;
    for _ in 0..100 {
        let (_, availability) = common::call(
            http,
            "GET",
            "/api/v1/lots/demo-garage/availability",
            None,
            None,
        )
        .await;
        if availability["total"]["held"] == 1 {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(held, "the reserved spot shows held within one sweep");
    let (_, state) = common::call(
        http,
        "GET",
        "/api/v1/lots/demo-garage/spots?state=held",
        None,
        None,
    )
    .await;
    assert_eq!(state["spots"][0]["id"], spot.as_str());

    // Cancelling releases it at the next sweep.
    let id = reservation["id"].as_str().unwrap();
    let (status, _) = common::call(
        http,
        "POST",
        &format!("/api/v1/reservations/{id}/cancel"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let mut released = false;
    for _ in 0..100 {
        let (_, availability) = common::call(
            http,
            "GET",
            "/api/v1/lots/demo-garage/availability",
            None,
            None,
        )
        .await;
        if availability["total"]["held"] == 0 {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(released);
    app.shutdown().await.unwrap();
}
