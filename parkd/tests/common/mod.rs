//! What the end-to-end tests of the `parkd` crate share: a configuration on port 0 in a
//! temporary directory, and a tiny HTTP/1.1 client.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;

use parkd::config::ParkdConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A configuration for a test: data in `dir`, HTTP and MQTT on free ports, no simulator,
/// fast ingest batches.
pub(crate) fn config(dir: &Path) -> ParkdConfig {
    let mut config = ParkdConfig {
        data_dir: dir.to_owned(),
        ..ParkdConfig::default()
    };
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.mqtt.listen = "127.0.0.1:0".parse().unwrap();
    config.demo.simulate = false;
    config.ingest.batch_interval_ms = 10;
    config
}

/// One request on a fresh connection; the status and the JSON body (`Null` if not JSON).
/// Sends an `Idempotency-Key` derived from the body, so a state-changing call is accepted.
pub(crate) async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let key = format!("{:016x}", fxhash(&body));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
         Idempotency-Key: e2e-{key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
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

/// Registers a driver, logs in and adds a vehicle; the token and the vehicle's id.
pub(crate) async fn driver_with_vehicle(
    addr: SocketAddr,
    email: &str,
    vehicle: Value,
) -> (String, String) {
    let creds = serde_json::json!({"email": email, "password": "violet tram under lantern"});
    let (status, _) = call(
        addr,
        "POST",
        "/api/v1/auth/register",
        None,
        Some(creds.clone()),
    )
    .await;
    assert_eq!(status, 202);
    let (status, login) = call(addr, "POST", "/api/v1/auth/login", None, Some(creds)).await;
    assert_eq!(status, 200, "{login}");
    let token = login["token"].as_str().unwrap().to_owned();
    let (status, added) = call(
        addr,
        "POST",
        "/api/v1/me/vehicles",
        Some(&token),
        Some(vehicle),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    (token, added["id"].as_str().unwrap().to_owned())
}

/// RFC 3339 for now + `minutes`.
pub(crate) fn minutes_from_now(minutes: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::minutes(minutes))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The raw text of `GET path`.
pub(crate) async fn get_text(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

fn fxhash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A running Mosquitto (a broker nobody here wrote); its config directory lives as long as it
/// does, and dropping it stops the broker.
pub(crate) struct Mosquitto(std::process::Child, tempfile::TempDir);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Mosquitto on a free loopback port, anonymous clients allowed; and the port.
pub(crate) async fn start_mosquitto() -> (Mosquitto, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (start_mosquitto_on(port).await, port)
}

/// Mosquitto on `port` (again: to test reconnects after a broker restart).
pub(crate) async fn start_mosquitto_on(port: u16) -> Mosquitto {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n"),
    )
    .unwrap();
    #[allow(clippy::zombie_processes)] // waited for in Mosquitto's Drop
    let child = std::process::Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto is installed (Debian package mosquitto)");
    let mosquitto = Mosquitto(child, dir);
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return mosquitto;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("mosquitto did not start on port {port}");
}
