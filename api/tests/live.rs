//! The live occupancy API over real HTTP and WebSocket connections: REST shapes and errors,
//! and the WebSocket protocol (snapshot, deltas, resync, lagging clients, heartbeats, close on
//! shutdown). The engine is real; readings are applied to it directly.

#![allow(clippy::unwrap_used)]

mod common;

use common::dechunk;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use parkd_api::live::{LiveHub, LiveSettings};
use parkd_api::{ApiState, HttpMetrics};
use parkd_core::clock::SystemClock;
use parkd_core::garage::{Lot, demo_garage};
use parkd_core::ids::{LotId, SpotId};
use parkd_occupancy::{EngineSettings, OccupancyEngine};
use prometheus::Registry;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Server {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    engine: Arc<OccupancyEngine>,
    hub: Arc<LiveHub>,
    registry: Registry,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn lot_id() -> LotId {
    LotId::parse("garage").unwrap()
}

fn model() -> Lot {
    demo_garage(lot_id(), 3, 100)
}

fn spot(i: usize) -> SpotId {
    model().spots[i].id.clone()
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

async fn server(feed_capacity: usize, heartbeat: Duration) -> Server {
    server_with(
        feed_capacity,
        LiveSettings {
            heartbeat,
            ..LiveSettings::default()
        },
    )
    .await
}

async fn server_with(feed_capacity: usize, settings: LiveSettings) -> Server {
    let engine = Arc::new(OccupancyEngine::new(EngineSettings {
        feed_capacity,
        ..EngineSettings::default()
    }));
    engine.install_lot(model(), now());
    let registry = Registry::new();
    let hub =
        Arc::new(LiveHub::new(engine.clone(), Arc::new(SystemClock), settings, &registry).unwrap());
    let (store, dir) = parkd_store::testing::sqlite_store().await;
    let accounts = parkd_api::auth::Accounts::new(
        Arc::new(store),
        Arc::new(SystemClock),
        parkd_api::auth::AuthSettings::default(),
        &registry,
    )
    .unwrap();
    let app = parkd_api::router(ApiState {
        http_metrics: HttpMetrics::new(&registry).unwrap(),
        gates: None,
        payments: None,
        reservation_rules: parkd_core::reservation::TimeRules::default(),
        reservation_metrics: parkd_api::reservations::metrics(&registry).unwrap(),
        book: Default::default(),
        registry: registry.clone(),
        readiness: Arc::new(Vec::new()),
        live: hub.clone(),
        accounts: Arc::new(accounts),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(parkd_api::serve(
        listener,
        app,
        stop.clone().cancelled_owned(),
    ));
    Server {
        _dir: dir,
        addr,
        engine,
        hub,
        registry,
        stop,
        task,
    }
}

impl Server {
    async fn get(&self, path: &str) -> (u16, String, Value) {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .unwrap();
        let mut raw = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut raw)
            .await
            .unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status: u16 = head[9..12].parse().unwrap();
        let content_type = head
            .lines()
            .find_map(|line| line.strip_prefix("content-type: "))
            .unwrap_or_default()
            .to_owned();
        let body = if head.contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (
            status,
            content_type,
            serde_json::from_str(&body).unwrap_or(Value::Null),
        )
    }

    async fn ws(&self, lot: &str) -> Ws {
        let url = format!("ws://{}/api/v1/live?lot={lot}", self.addr);
        tokio_tungstenite::connect_async(url).await.unwrap().0
    }

    async fn stop(self) {
        self.hub.shutdown().await;
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("the stream is open")
            .unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn rest_shapes_and_counts() {
    let server = server(1024, Duration::from_secs(10)).await;
    for i in 0..10 {
        server.engine.apply(&lot_id(), &spot(i), i % 2 == 0, now());
    }
    let (status, content_type, body) = server.get("/api/v1/lots").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/json"));
    let lot = &body["lots"][0];
    assert_eq!(lot["id"], "garage");
    assert_eq!(lot["spots"], 300);
    assert_eq!(lot["total"]["occupied"], 5);
    assert_eq!(lot["total"]["free"], 5);
    assert_eq!(lot["total"]["unknown"], 290);
    assert!(lot["updated_at"].is_string());

    let (status, _, detail) = server.get("/api/v1/lots/garage").await;
    assert_eq!(status, 200);
    assert_eq!(detail["levels"].as_array().unwrap().len(), 3);
    assert_eq!(detail["zones"].as_array().unwrap().len(), 6);

    let (status, _, availability) = server.get("/api/v1/lots/garage/availability").await;
    assert_eq!(status, 200);
    assert_eq!(availability["total"]["spots"], 300);
    assert_eq!(availability["by_kind"]["accessible"]["spots"], 7);
    assert_eq!(availability["by_vehicle"]["car"]["free"], 5);
    assert_eq!(availability["levels"][0]["id"], "L1");
    let (_, _, filtered) = server
        .get("/api/v1/lots/garage/availability?vehicle=ev")
        .await;
    let vehicles: Vec<&String> = filtered["by_vehicle"].as_object().unwrap().keys().collect();
    assert_eq!(vehicles, ["ev"]);
    assert_eq!(filtered["by_vehicle"]["ev"]["spots"], 30 + 191 + 15);

    let (status, _, spots) = server
        .get("/api/v1/lots/garage/spots?level=L1&state=occupied")
        .await;
    assert_eq!(status, 200);
    let spots = spots["spots"].as_array().unwrap();
    assert_eq!(spots.len(), 5);
    assert!(
        spots
            .iter()
            .all(|s| s["state"] == "occupied" && s["level"] == "L1")
    );
    assert!(spots[0]["x"].is_number() && spots[0]["kind"].is_string());
    let (_, _, ev) = server.get("/api/v1/lots/garage/spots?kind=ev").await;
    assert_eq!(ev["spots"].as_array().unwrap().len(), 30);
    server.stop().await;
}

/// Availability answers are rendered once per lot version and reused: a reused answer still
/// carries the time of its own reading, and any change, sensor message or filter gives the
/// right figures.
#[tokio::test]
async fn availability_answers_are_reused_only_while_nothing_changed() {
    let server = server(1024, Duration::from_secs(10)).await;
    let without = |mut value: Value| {
        let as_of = value["as_of"].as_str().unwrap().to_owned();
        value.as_object_mut().unwrap().remove("as_of");
        (as_of, value)
    };
    let path = "/api/v1/lots/garage/availability";
    let (as_of_1, first) = without(server.get(path).await.2);
    tokio::time::sleep(Duration::from_millis(2)).await;
    let (as_of_2, second) = without(server.get(path).await.2);
    assert_eq!(first, second);
    assert!(
        as_of_2.parse::<DateTime<Utc>>().unwrap() > as_of_1.parse::<DateTime<Utc>>().unwrap(),
        "{as_of_1} then {as_of_2}"
    );

    // A change moves the figures and the sequence number.
    server.engine.apply(&lot_id(), &spot(0), false, now());
    let (_, changed) = without(server.get(path).await.2);
    assert_eq!(
        changed["total"]["free"],
        first["total"]["free"].as_i64().unwrap() + 1
    );
    assert_eq!(changed["seq"], first["seq"].as_u64().unwrap() + 1);
    // A reading that changes no spot still moves `updated_at`.
    let later = now() + chrono::Duration::seconds(5);
    server.engine.apply(&lot_id(), &spot(0), false, later);
    let (_, heard) = without(server.get(path).await.2);
    assert_eq!(heard["seq"], changed["seq"]);
    // (kept to the millisecond)
    assert_eq!(
        heard["updated_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap()
            .timestamp_millis(),
        later.timestamp_millis()
    );
    // Filters are answered and kept apart.
    let (_, ev) = without(server.get(&format!("{path}?vehicle=ev")).await.2);
    assert_eq!(ev["by_vehicle"].as_object().unwrap().len(), 1);
    let (_, all) = without(server.get(path).await.2);
    assert_eq!(all, heard);
    assert_eq!(ev["total"], all["total"]);
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_are_precise_problems() {
    let server = server(1024, Duration::from_secs(10)).await;
    for (path, status, kind, needle) in [
        ("/api/v1/lots/nope", 404, "unknown-lot", "nope"),
        ("/api/v1/lots/a%2Fb/availability", 404, "unknown-lot", ""),
        (
            "/api/v1/lots/garage/availability?vehicle=truck",
            400,
            "invalid-parameter",
            "truck",
        ),
        (
            "/api/v1/lots/garage/availability?vehicel=ev",
            400,
            "invalid-parameter",
            "vehicel",
        ),
        (
            "/api/v1/lots/garage/spots?state=parked",
            400,
            "invalid-parameter",
            "parked",
        ),
        (
            "/api/v1/lots/garage/spots?level=L9",
            400,
            "invalid-parameter",
            "L9",
        ),
        ("/api/v1/live?lot=garage", 426, "websocket-required", ""),
        ("/api/v1/live", 400, "invalid-parameter", "lot"),
        ("/api/v1/live?lot=ghost", 404, "unknown-lot", "ghost"),
    ] {
        let (got, content_type, body) = server.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(content_type, "application/problem+json", "{path}");
        assert!(
            body["type"].as_str().unwrap().ends_with(kind),
            "{path}: {body}"
        );
        assert!(
            body["detail"].as_str().unwrap_or_default().contains(needle),
            "{path}: {body}"
        );
    }
    let metrics = server
        .registry
        .gather()
        .into_iter()
        .find(|family| family.name() == "parkd_http_requests_total")
        .unwrap();
    let bad: u64 = metrics
        .get_metric()
        .iter()
        .filter(|m| m.get_label().iter().any(|l| l.value().starts_with('4')))
        .map(|m| m.get_counter().get_value() as u64)
        .sum();
    assert_eq!(bad, 9, "every refusal is counted");
    server.stop().await;
}

#[tokio::test]
async fn snapshot_then_consecutive_deltas_then_resync() {
    let server = server(1024, Duration::from_secs(10)).await;
    server.engine.apply(&lot_id(), &spot(0), true, now());
    let mut ws = server.ws("garage").await;
    let snapshot = next_json(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert!(snapshot.get("reason").is_none());
    assert_eq!(snapshot["spots"].as_array().unwrap().len(), 300);
    assert_eq!(snapshot["spots"][0]["state"], "occupied");
    let mut seq = snapshot["seq"].as_u64().unwrap();
    for i in 1..=20 {
        server.engine.apply(&lot_id(), &spot(i), i % 3 == 0, now());
    }
    for i in 1..=20 {
        let delta = next_json(&mut ws).await;
        assert_eq!(delta["type"], "delta");
        assert_eq!(delta["seq"].as_u64().unwrap(), seq + 1, "gap-free");
        seq += 1;
        assert_eq!(delta["spot"]["id"], spot(i).as_str());
        assert_eq!(delta["spot"]["v"], delta["seq"]);
        assert!(delta["total"]["spots"] == 300);
    }
    ws.send(Message::text(r#"{"type":"resync"}"#))
        .await
        .unwrap();
    let again = next_json(&mut ws).await;
    assert_eq!(again["type"], "snapshot");
    assert_eq!(again["reason"], "resync");
    assert_eq!(again["seq"].as_u64().unwrap(), seq);
    ws.send(Message::text("{\"type\":\"dance\"}"))
        .await
        .unwrap();
    let error = next_json(&mut ws).await;
    assert_eq!(error["type"], "error");
    server.stop().await;
}

/// Changes closer together than `frame_interval` wait for the interval and then all leave,
/// in order; the first of a quiet spell leaves at once.
#[tokio::test]
async fn deltas_closer_than_the_frame_interval_wait_and_all_arrive() {
    let interval = Duration::from_millis(400);
    let server = server_with(
        1024,
        LiveSettings {
            frame_interval: interval,
            ..LiveSettings::default()
        },
    )
    .await;
    let mut ws = server.ws("garage").await;
    let snapshot = next_json(&mut ws).await;
    let mut seq = snapshot["seq"].as_u64().unwrap();
    let first_change = tokio::time::Instant::now();
    server.engine.apply(&lot_id(), &spot(1), true, now());
    let delta = next_json(&mut ws).await;
    assert_eq!(delta["seq"].as_u64().unwrap(), seq + 1);
    seq += 1;
    for i in 2..=6 {
        server.engine.apply(&lot_id(), &spot(i), true, now());
    }
    for i in 2..=6 {
        let delta = next_json(&mut ws).await;
        // The write of the first delta came after the first change, and the next write no
        // sooner than an interval after that.
        assert!(first_change.elapsed() >= interval);
        assert_eq!(delta["seq"].as_u64().unwrap(), seq + 1, "gap-free");
        assert_eq!(delta["spot"]["id"], spot(i).as_str());
        seq += 1;
    }
    server.stop().await;
}

/// A client that does not read while the garage changes fast is never queued without bound:
/// it gets a `lagged` snapshot, and snapshot + later deltas equal the engine's state.
#[tokio::test]
async fn a_slow_client_gets_conflated_state() {
    let server = server(8, Duration::from_secs(10)).await;
    let mut ws = server.ws("garage").await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["type"], "snapshot");
    // 30,000 changes while the client reads nothing.
    let ids: Vec<SpotId> = model().spots.into_iter().map(|s| s.id).collect();
    for round in 0..100 {
        for (i, id) in ids.iter().enumerate() {
            server
                .engine
                .apply(&lot_id(), id, (i + round) % 2 == 0, now());
        }
    }
    let final_seq = server.engine.seq(&lot_id()).unwrap();
    let mut state: HashMap<String, (String, u64)> = HashMap::new();
    let mut seq = 0;
    let mut lagged = 0;
    let mut messages = 0;
    while seq < final_seq {
        let message = next_json(&mut ws).await;
        messages += 1;
        match message["type"].as_str().unwrap() {
            "snapshot" => {
                lagged += usize::from(message["reason"] == "lagged");
                seq = message["seq"].as_u64().unwrap();
                for spot in message["spots"].as_array().unwrap() {
                    state.insert(
                        spot["id"].as_str().unwrap().to_owned(),
                        (
                            spot["state"].as_str().unwrap().to_owned(),
                            spot["v"].as_u64().unwrap(),
                        ),
                    );
                }
            }
            "delta" => {
                let delta_seq = message["seq"].as_u64().unwrap();
                assert!(
                    delta_seq > seq,
                    "the server skips deltas a snapshot covered"
                );
                seq = delta_seq;
                let id = message["spot"]["id"].as_str().unwrap().to_owned();
                if state.get(&id).is_none_or(|(_, v)| *v < delta_seq) {
                    state.insert(
                        id,
                        (
                            message["spot"]["state"].as_str().unwrap().to_owned(),
                            delta_seq,
                        ),
                    );
                }
            }
            "heartbeat" => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(lagged >= 1, "the client fell behind and was resynced");
    assert!(
        messages < 30_000,
        "conflated, not replayed ({messages} messages)"
    );
    let live = server.engine.snapshot(&lot_id(), now(), None).unwrap();
    for spot in live.spots {
        assert_eq!(state[spot.id.as_str()].0, spot.state.as_str());
    }
    let resyncs = server
        .registry
        .gather()
        .into_iter()
        .find(|family| family.name() == "parkd_ws_resyncs_total")
        .unwrap();
    assert!(resyncs.get_metric()[0].get_counter().get_value() >= 1.0);
    server.stop().await;
}

#[tokio::test]
async fn heartbeats_carry_the_last_sequence_and_shutdown_closes_with_1001() {
    let server = server(1024, Duration::from_millis(100)).await;
    let mut ws = server.ws("garage").await;
    let snapshot = next_json(&mut ws).await;
    server.engine.apply(&lot_id(), &spot(5), true, now());
    let delta = next_json(&mut ws).await;
    assert_eq!(delta["type"], "delta");
    let beat = next_json(&mut ws).await;
    assert_eq!(beat["type"], "heartbeat");
    assert_eq!(beat["seq"], delta["seq"]);
    assert!(snapshot["seq"].as_u64() < beat["seq"].as_u64());
    let hub = server.hub.clone();
    let stopping = tokio::spawn(async move { hub.shutdown().await });
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.unwrap().code), 1001);
    stopping.await.unwrap();
    server.stop().await;
}
