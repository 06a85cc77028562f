//! A reservation made through the running product shows its spot as held in live
//! availability within one sweep: accounts, the store, allocation, the sweeper and the
//! occupancy engine working together over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use parkd::app::{Mode, RunningApp};
use parkd::config::ParkdConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
         Idempotency-Key: e2e-{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len(),
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_holds_its_spot_in_live_availability() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ParkdConfig {
        data_dir: dir.path().to_owned(),
        ..ParkdConfig::default()
    };
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.mqtt.listen = "127.0.0.1:0".parse().unwrap();
    config.demo.simulate = false;
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

    let creds = json!({"email": "ana@example.com", "password": "violet tram under lantern"});
    assert_eq!(
        call(
            http,
            "POST",
            "/api/v1/auth/register",
            None,
            Some(creds.clone())
        )
        .await
        .0,
        202
    );
    let (status, login) = call(http, "POST", "/api/v1/auth/login", None, Some(creds)).await;
    assert_eq!(status, 200, "{login}");
    let token = login["token"].as_str().unwrap().to_owned();
    let (status, vehicle) = call(
        http,
        "POST",
        "/api/v1/me/vehicles",
        Some(&token),
        Some(json!({"plate": "B-E 2026", "class": "car", "ev": true})),
    )
    .await;
    assert_eq!(status, 201, "{vehicle}");
    let at = |minutes: i64| {
        (Utc::now() + chrono::Duration::minutes(minutes)).to_rfc3339_opts(SecondsFormat::Secs, true)
    };
    let (status, reservation) = call(
        http,
        "POST",
        "/api/v1/reservations",
        Some(&token),
        Some(json!({"lot": "demo-garage", "vehicle_id": vehicle["id"],
                    "starts_at": at(10), "ends_at": at(130)})),
    )
    .await;
    assert_eq!(status, 201, "{reservation}");
    let spot = reservation["spot"].as_str().unwrap().to_owned();
    let (_, spots) = call(
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
        let (_, availability) = call(
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
    let (_, state) = call(
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
    let (status, _) = call(
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
        let (_, availability) = call(
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
