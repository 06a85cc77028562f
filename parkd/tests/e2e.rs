//! The whole product in one process (and once as the real binary), over real sockets, with
//! MQTT clients nobody here wrote: mosquitto_pub, mosquitto_sub and a real Mosquitto broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use parkd::app::{Mode, RunningApp, open_store};
use parkd::config::{MqttMode, ParkdConfig};
use parkd_broker::auth::hash_secret;
use parkd_core::ids::{DeviceId, LotId, SpotId};
use parkd_store::{Device, DeviceBinding, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

fn base_config(data_dir: &Path) -> ParkdConfig {
    common::config(data_dir)
}

async fn register(store: &dyn Store, id: &str, spot: &str, secret: Option<&str>) {
    store
        .upsert_device(&Device {
            id: DeviceId::parse(id).unwrap(),
            binding: DeviceBinding::Spot {
                lot: LotId::parse("g1").unwrap(),
                spot: SpotId::parse(spot).unwrap(),
            },
            secret_sha256: secret.map(hash_secret),
            disabled: false,
            created_at: Utc::now(),
        })
        .await
        .unwrap();
}

/// A lot of four spots `1`..`4` on one level.
fn small_lot(id: &str) -> parkd_core::garage::Lot {
    let mut lot = parkd_core::garage::demo_garage(LotId::parse(id).unwrap(), 1, 4);
    for (i, spot) in lot.spots.iter_mut().enumerate() {
        spot.id = SpotId::parse(&(i + 1).to_string()).unwrap();
    }
    lot
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn mosquitto_pub(port: u16, args: &[&str]) -> bool {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv311"])
        .args(args)
        .status()
        .await
        .expect("mosquitto_pub is installed (Debian package mosquitto-clients)")
        .success()
}

async fn wait_for_readings(store: &dyn Store, count: u64) -> u64 {
    for _ in 0..500 {
        let stored = store.count_readings().await.unwrap();
        if stored >= count {
            return stored;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.count_readings().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_on_sqlite_stores_what_mosquitto_pub_publishes_and_relays_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path());
    let store = open_store(&config).await.unwrap();
    register(store.as_ref(), "g1-s-1", "1", None).await;
    store.put_lot(&small_lot("g1")).await.unwrap();
    drop(store);
    let app = RunningApp::start(config.clone(), Mode::Demo).await.unwrap();
    let port = app.mqtt_addr().unwrap().port();

    let (status, body) = http_get(app.http_addr(), "/readyz").await;
    assert_eq!(status, 200, "{body}");

    let subscriber = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv311"])
        .args([
            "-t",
            "parking/v1/+/spots/+/state",
            "-C",
            "1",
            "-W",
            "10",
            "-v",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let payload = r#"{"occupied":true,"seq":7,"battery_mv":3500}"#;
    assert!(
        mosquitto_pub(
            port,
            &[
                "-q",
                "1",
                "-t",
                "parking/v1/g1/spots/1/state",
                "-m",
                payload
            ]
        )
        .await
    );
    let output = subscriber.wait_with_output().await.unwrap();
    let relayed = String::from_utf8_lossy(&output.stdout);
    assert!(relayed.contains(payload), "mosquitto_sub got {relayed:?}");

    let store = app.store();
    assert_eq!(wait_for_readings(store.as_ref(), 1).await, 1);
    let readings = store
        .spot_readings(
            &LotId::parse("g1").unwrap(),
            &SpotId::parse("1").unwrap(),
            5,
        )
        .await
        .unwrap();
    assert_eq!(readings[0].seq, Some(7));
    assert_eq!(readings[0].battery_mv, Some(3500));

    // Bad input is counted, the process goes on, and what was stored stays.
    assert!(mosquitto_pub(port, &["-t", "parking/v1/g1/spots/1/state", "-m", "{oops"]).await);
    assert!(
        mosquitto_pub(
            port,
            &[
                "-t",
                "parking/v1/g1/spots/404/state",
                "-m",
                r#"{"occupied":true}"#
            ]
        )
        .await
    );
    let (_, metrics) = http_get(app.http_addr(), "/metrics").await;
    for _ in 0..100 {
        if app.ingest_metrics().accounted() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, metrics_after) = http_get(app.http_addr(), "/metrics").await;
    assert!(
        metrics_after.contains(r#"parkd_ingest_rejected_total{reason="malformed"} 1"#),
        "{metrics_after}"
    );
    assert!(metrics_after.contains(r#"parkd_ingest_rejected_total{reason="unknown_device"} 1"#));
    assert!(metrics.contains("parkd_build_info"));
    assert_eq!(store.count_readings().await.unwrap(), 1);
    // The live engine saw it, and exports it.
    let g1 = LotId::parse("g1").unwrap();
    assert_eq!(app.engine().counts(&g1).map(|c| c.occupied), Some(1));
    assert!(
        metrics_after.contains(r#"parkd_lot_spots{lot="g1",state="occupied"} 1"#),
        "{metrics_after}"
    );
    app.shutdown().await.unwrap();

    // After a restart the engine is restored from the store before any message arrives.
    let app = RunningApp::start(config, Mode::Demo).await.unwrap();
    assert_eq!(app.engine().counts(&g1).map(|c| c.occupied), Some(1));
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_postgres_refuses_foreign_topics_and_stores_nothing_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path());
    let url = parkd_store::testing::fresh_postgres_url().await;
    config.database.url = Some(toml_url(&url));
    let store = open_store(&config).await.unwrap();
    assert_eq!(store.backend(), "postgres");
    register(store.as_ref(), "sensor-1", "1", Some("secret-1")).await;
    register(store.as_ref(), "sensor-2", "2", Some("secret-2")).await;
    let app = RunningApp::start(config, Mode::Serve).await.unwrap();
    let port = app.mqtt_addr().unwrap().port();
    let login = [
        "-i", "sensor-1", "-u", "sensor-1", "-P", "secret-1", "-q", "1",
    ];

    // Anonymous is refused in serve.
    assert!(
        !mosquitto_pub(
            port,
            &[
                "-t",
                "parking/v1/g1/spots/1/state",
                "-m",
                r#"{"occupied":true}"#
            ]
        )
        .await
    );
    // sensor-1 writing as spot 2: refused, nothing stored.
    let mut args = login.to_vec();
    args.extend([
        "-t",
        "parking/v1/g1/spots/2/state",
        "-m",
        r#"{"occupied":true}"#,
    ]);
    assert!(!mosquitto_pub(port, &args).await);
    // Its own spot: stored.
    let mut args = login.to_vec();
    args.extend([
        "-t",
        "parking/v1/g1/spots/1/state",
        "-m",
        r#"{"occupied":true,"seq":1}"#,
    ]);
    assert!(mosquitto_pub(port, &args).await);
    let store = app.store();
    assert_eq!(wait_for_readings(store.as_ref(), 1).await, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let spot2 = store
        .spot_readings(
            &LotId::parse("g1").unwrap(),
            &SpotId::parse("2").unwrap(),
            5,
        )
        .await
        .unwrap();
    assert!(spot2.is_empty());
    let (_, metrics) = http_get(app.http_addr(), "/metrics").await;
    assert!(
        metrics
            .contains(r#"parkd_mqtt_acl_denied_total{action="publish",reason="other_device"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"parkd_mqtt_connections_refused_total{reason="auth_failed"} 1"#),
        "{metrics}"
    );
    app.shutdown().await.unwrap();
}

fn toml_url(url: &str) -> parkd::config::DatabaseUrl {
    let mut config =
        ParkdConfig::load(None, [("PARKD__DATABASE__URL".to_owned(), url.to_owned())]).unwrap();
    config.database.url.take().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_broker_mode_ingests_from_a_real_mosquitto() {
    let (_mosquitto, port) = common::start_mosquitto().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path());
    config.mqtt.mode = MqttMode::External;
    config.mqtt.external.url = format!("mqtt://127.0.0.1:{port}");
    config.mqtt.external.shared_group = Some("parkd".into());
    register(
        open_store(&config).await.unwrap().as_ref(),
        "g1-s-1",
        "1",
        None,
    )
    .await;
    let app = RunningApp::start(config, Mode::Serve).await.unwrap();
    assert_eq!(app.mqtt_addr(), None);
    let store: Arc<dyn Store> = app.store();
    // The subscription is made once connected: publish until the first message lands.
    let mut seq = 0;
    while store.count_readings().await.unwrap() == 0 && seq < 100 {
        seq += 1;
        let payload = format!(r#"{{"occupied":true,"seq":{seq}}}"#);
        assert!(
            mosquitto_pub(
                port,
                &[
                    "-q",
                    "1",
                    "-t",
                    "parking/v1/g1/spots/1/state",
                    "-m",
                    &payload
                ]
            )
            .await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut before = wait_for_readings(store.as_ref(), 1).await;
    assert!(before >= 1);
    // Publishes of the loop may still be on their way (a loaded machine): count once the
    // figure stands still.
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = store.count_readings().await.unwrap();
        if now == before {
            break;
        }
        before = now;
    }
    for extra in 1..=5 {
        let payload = format!(r#"{{"occupied":false,"seq":{}}}"#, seq + extra);
        assert!(
            mosquitto_pub(
                port,
                &[
                    "-q",
                    "1",
                    "-t",
                    "parking/v1/g1/spots/1/state",
                    "-m",
                    &payload
                ]
            )
            .await
        );
    }
    assert_eq!(
        wait_for_readings(store.as_ref(), before + 5).await,
        before + 5
    );
    let (status, _) = http_get(app.http_addr(), "/readyz").await;
    assert_eq!(status, 200);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_runs_the_demo_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_parkd"))
        .args([
            "demo",
            "--http-addr",
            "127.0.0.1:0",
            "--mqtt-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("PARKD__DEMO__SPOTS", "20")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut printed = String::new();
    let mut buffer = [0u8; 1024];
    let addr: SocketAddr = loop {
        let read = tokio::time::timeout(Duration::from_secs(20), stdout.read(&mut buffer))
            .await
            .expect("demo printed nothing")
            .unwrap();
        assert!(read > 0, "demo exited: {printed}");
        printed.push_str(&String::from_utf8_lossy(&buffer[..read]));
        if let Some(rest) = printed.split("http://").nth(1)
            && let Some(addr) = rest.split('/').next().and_then(|a| a.parse().ok())
        {
            break addr;
        }
    };
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    // The simulated garage publishes; ingest stores it.
    let mut stored = false;
    for _ in 0..100 {
        let (_, metrics) = http_get(addr, "/metrics").await;
        if metrics.lines().any(|line| {
            line.starts_with(r#"parkd_ingest_rows_written_total{table="device_status_changes"}"#)
                && !line.ends_with(" 0")
        }) {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stored, "the demo simulator's messages were not stored");
    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("demo did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
