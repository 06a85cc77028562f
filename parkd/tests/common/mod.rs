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
