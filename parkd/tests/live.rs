//! Live occupancy end to end, over real sockets: a sensor message published with
//! `mosquitto_pub` reaches a WebSocket client as a delta and the REST availability, the lot's
//! counts are retained on MQTT for guidance signs (read with `mosquitto_sub`), a lot imported
//! while the server runs appears without a restart, and readings for spots outside the model
//! are counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use parkd::app::{Mode, RunningApp};
use parkd::config::ParkdConfig;
use parkd_core::garage::demo_garage;
use parkd_core::ids::LotId;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

fn config(dir: &std::path::Path) -> ParkdConfig {
    let mut config = ParkdConfig {
        data_dir: dir.to_owned(),
        ..ParkdConfig::default()
    };
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.mqtt.listen = "127.0.0.1:0".parse().unwrap();
    config.demo.simulate = true;
    config.demo.speed = 1.0;
    config.ingest.batch_interval_ms = 10;
    config.live.model_reload_s = 1;
    config.live.retained_availability_ms = 100;
    config
}

/// Every step is bounded, so a hang fails with the step's name instead of the suite's timeout.
async fn step<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 30 s"))
}

async fn http_json(addr: SocketAddr, path: &str) -> Value {
    step(&format!("GET {path}"), http_json_unbounded(addr, path)).await
}

async fn http_json_unbounded(addr: SocketAddr, path: &str) -> Value {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// A fresh client id per publish: rumqttd 0.20 panics on a CONNECT whose client id left a
/// stale will handler behind (`server/broker.rs`, `try_send(..).unwrap()`), which this test
/// is not about.
fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn mosquitto_pub(port: u16, topic: &str, payload: &str) {
    let publish = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args([
            "-i",
            &format!("live-e2e-{}", rand_suffix()),
            "-t",
            topic,
            "-m",
            payload,
        ])
        .status();
    let ok = tokio::time::timeout(Duration::from_secs(20), publish)
        .await
        .expect("mosquitto_pub finished within 20 s")
        .expect("mosquitto_pub is installed (Debian package mosquitto-clients)")
        .success();
    assert!(ok, "mosquitto_pub failed");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a message within 10 s")
        .unwrap()
        .unwrap();
    match message {
        Message::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_message_reaches_websocket_clients_rest_and_guidance_signs() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    // The demo seeds the garage (300 spots) and its sensors; one sensor more, for a spot the
    // model does not have, is registered first.
    config.demo.simulate = true;
    // The spot driven below was reported free moments before: without this, the change
    // would wait out the default 5 s debounce (the engine's own tests cover debouncing).
    config.live.debounce_ms = 0;
    let store = parkd::app::open_store(&config).await.unwrap();
    parkd::devices::seed_demo_sensors(store.as_ref(), &LotId::parse("demo-garage").unwrap(), 301)
        .await
        .unwrap();
    drop(store);
    let app = step("start", RunningApp::start(config, Mode::Demo))
        .await
        .unwrap();
    let http = app.http_addr();
    let mqtt = app.mqtt_addr().unwrap().port();

    let lots = http_json(http, "/api/v1/lots").await;
    assert_eq!(lots["lots"][0]["id"], "demo-garage");
    assert_eq!(lots["lots"][0]["spots"], 300);

    // The demo's simulated sensors announce their states as they connect, and its cars park
    // too: drive a spot already reported free, so that this reading is a change (an occupied
    // one would send no delta) and no later first announcement ("free") overwrites it (a spot
    // picked while still unreported did, about one run in ten under a loaded machine).
    let mut free = Vec::new();
    for _ in 0..200 {
        let listed = http_json(http, "/api/v1/lots/demo-garage/spots?level=L3&state=free").await;
        free = listed["spots"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect();
        if !free.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spot = free.pop().expect("a spot on L3 reported free");
    let url = format!("ws://{http}/api/v1/live?lot=demo-garage");
    let (mut ws, _) = step("websocket connect", tokio_tungstenite::connect_async(url))
        .await
        .unwrap();
    let snapshot = next_json(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot");

    let topic = format!("parking/v1/demo-garage/spots/{spot}/state");
    let mut seen_occupied = false;
    mosquitto_pub(mqtt, &topic, r#"{"occupied":true}"#).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let message = next_json(&mut ws).await;
        if message["type"] == "delta"
            && message["spot"]["id"] == spot.as_str()
            && message["spot"]["state"] == "occupied"
        {
            seen_occupied = true;
            break;
        }
    }
    assert!(seen_occupied, "the delta for {spot} arrived");
    let spots = http_json(
        http,
        "/api/v1/lots/demo-garage/spots?level=L3&state=occupied",
    )
    .await;
    assert!(
        spots["spots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == spot),
        "{spots}"
    );

    // Guidance signs: the retained counts, delivered to a subscriber that comes later.
    let output = step(
        "mosquitto_sub",
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &mqtt.to_string()])
            .args(["-t", "parking/v1/demo-garage/availability", "-C", "1"])
            .args(["-W", "10"])
            .output(),
    )
    .await
    .unwrap();
    let retained: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    assert_eq!(retained["lot"], "demo-garage", "{retained}");
    assert_eq!(retained["total"]["spots"], 300);
    assert!(retained["free_by_vehicle"]["car"].is_number());

    // A reading for a spot outside the model is stored but counted as refused by the engine.
    let store = app.store();
    mosquitto_pub(
        mqtt,
        "parking/v1/demo-garage/spots/L4-001/state",
        r#"{"occupied":true}"#,
    )
    .await;
    let mut counted = false;
    for _ in 0..200 {
        let metrics = step("GET /metrics", async {
            let mut metrics = String::new();
            let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            stream.read_to_string(&mut metrics).await.unwrap();
            metrics
        })
        .await;
        if metrics.contains(r#"parkd_occupancy_rejected_total{reason="unknown_spot"} 1"#) {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(counted, "the unknown spot was counted");

    // A lot imported while the server runs is served within the reload period.
    step(
        "put_lot",
        store.put_lot(&demo_garage(LotId::parse("annex").unwrap(), 1, 20)),
    )
    .await
    .unwrap();
    let mut found = false;
    for _ in 0..100 {
        let lot = http_json(http, "/api/v1/lots/annex/availability").await;
        if lot["total"]["spots"] == 20 {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(found, "the imported lot is served");
    step("shutdown", app.shutdown()).await.unwrap();
}
