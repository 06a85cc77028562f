//! The test harness of the API's integration tests: the whole router over a real socket,
//! a store of either backend, a manual clock, and a tiny HTTP/1.1 client.

#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parkd_api::auth::{Accounts, Argon2Cost, AuthSettings};
use parkd_api::live::{LiveHub, LiveSettings};
use parkd_api::{ApiState, HttpMetrics};
use parkd_core::clock::ManualClock;
use parkd_occupancy::OccupancyEngine;
use parkd_store::Store;
use prometheus::Registry;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub mod money;

pub struct Server {
    pub addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    pub accounts: Arc<Accounts>,
    pub store: Arc<dyn Store>,
    pub stop: CancellationToken,
    pub state: ApiState,
    pub engine: Arc<OccupancyEngine>,
    /// The test provider, when the server takes payments (to play the customer and Stripe).
    pub provider: Option<Arc<parkd_payments::TestProvider>>,
    _dir: Option<tempfile::TempDir>,
}

pub fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

pub async fn server(store: Arc<dyn Store>, dir: Option<tempfile::TempDir>) -> Server {
    build(store, dir, false, None).await
}

/// A server that takes payments through the deterministic test provider.
pub async fn with_payments(store: Arc<dyn Store>, dir: Option<tempfile::TempDir>) -> Server {
    build(store, dir, true, None).await
}

/// A server that takes payments through the test provider and accepts Stripe webhooks signed
/// with any of `secrets` (with the default 300 s tolerance).
pub async fn with_webhooks(
    store: Arc<dyn Store>,
    dir: Option<tempfile::TempDir>,
    secrets: &[&str],
) -> Server {
    let secrets = secrets
        .iter()
        .map(|s| parkd_payments::Secret::new(*s))
        .collect();
    build(store, dir, true, Some(secrets)).await
}

async fn build(
    store: Arc<dyn Store>,
    dir: Option<tempfile::TempDir>,
    payments: bool,
    webhook_secrets: Option<Vec<parkd_payments::Secret>>,
) -> Server {
    let registry = Registry::new();
    let clock = Arc::new(ManualClock::new(start()));
    let settings = AuthSettings {
        // Cheap hashes keep the suite fast; the production floor is tested in the unit tests
        // and enforced by the configuration.
        argon2: Argon2Cost {
            memory_kib: 256,
            iterations: 1,
            parallelism: 1,
        },
        ..AuthSettings::default()
    };
    let accounts =
        Arc::new(Accounts::new(store.clone(), clock.clone(), settings, &registry).unwrap());
    let engine = Arc::new(OccupancyEngine::default());
    let live = LiveHub::new(
        engine.clone(),
        clock.clone(),
        LiveSettings::default(),
        &registry,
    )
    .unwrap();
    let provider = payments.then(|| Arc::new(parkd_payments::TestProvider::new(clock.clone())));
    let webhook = webhook_secrets.map(|secrets| {
        parkd_api::webhooks::StripeWebhook::new(
            secrets,
            parkd_payments::webhook::DEFAULT_TOLERANCE,
            &registry,
        )
        .unwrap()
    });
    let state = ApiState {
        http_metrics: HttpMetrics::new(&registry).unwrap(),
        gates: None,
        payments: provider
            .clone()
            .map(|provider| parkd_api::payments::PaymentsApi {
                provider,
                charge: Arc::new(parkd_gates::TariffCharge::new(
                    store.clone(),
                    engine.clone(),
                    parkd_gates::TariffCharge::DEFAULT_EXIT_GRACE,
                )),
                metrics: parkd_api::payments::PaymentMetrics::new(&registry).unwrap(),
                webhook,
            }),
        reservation_rules: parkd_core::reservation::TimeRules::default(),
        reservation_metrics: parkd_api::reservations::metrics(&registry).unwrap(),
        book: Default::default(),
        registry,
        readiness: Arc::new(Vec::new()),
        live: Arc::new(live),
        accounts: accounts.clone(),
    };
    let app = parkd_api::router(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(parkd_api::serve(
        listener,
        app,
        stop.clone().cancelled_owned(),
    ));
    Server {
        addr,
        clock,
        accounts,
        store,
        stop,
        state,
        engine,
        provider,
        _dir: dir,
    }
}

pub async fn sqlite() -> Server {
    let (store, dir) = parkd_store::testing::sqlite_store().await;
    server(Arc::new(store), Some(dir)).await
}

pub async fn postgres() -> Server {
    server(Arc::new(parkd_store::testing::postgres_store().await), None).await
}

pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: Value,
    /// The body as received (de-chunked), for answers that are not JSON.
    pub text: String,
}

impl Server {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        call_at(self.addr, method, path, token, &[], body).await
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        call_at(self.addr, method, path, token, headers, body).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call("POST", path, token, Some(&body.to_string()))
            .await
    }

    pub async fn register(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/api/v1/auth/register",
            None,
            json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn token(&self, email: &str, password: &str) -> String {
        let reply = self.login(email, password).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["token"].as_str().unwrap().to_owned()
    }
}

pub fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    out
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn call_at(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let mut extra = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    for (name, value) in headers {
        extra.push_str(&format!("{name}: {value}\r\n"));
    }
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let body = if head.to_lowercase().contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Reply {
        status: head[9..12].parse().unwrap(),
        headers: head.to_lowercase(),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        text: body,
    }
}
