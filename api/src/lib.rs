//! The HTTP face of parkd.
//!
//! [`router`] builds the axum application from its dependencies (no globals), so tests drive
//! it with `oneshot` and the binary serves it with [`serve`], which takes its shutdown as a
//! future. Every error leaves through [`problem::Problem`] (RFC 9457 `application/problem+json`),
//! the one place that maps errors to HTTP.
//!
//! Routes: `/healthz` (the process answers), `/readyz` (every dependency is ready),
//! `/metrics` (Prometheus text format), the live occupancy API under `/api/v1` ([`live`]),
//! the operators' ledger export and revenue ([`ledger`]), payments ([`payments`]) and Stripe's
//! webhook ([`webhooks`]), and the drivers' live map at `/`
//! ([`web`]). Every response is counted and timed by route
//! template and status (`parkd_http_requests_total`, `parkd_http_request_duration_seconds`).

pub mod auth;
pub mod book;
pub mod gates;
pub mod ledger;
pub mod live;
pub mod openapi;
pub mod payments;
pub mod problem;
pub mod reconcile;
mod rendered;
pub mod reservations;
mod session_cache;
pub mod tariffs;
pub mod web;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};
use serde::Serialize;

pub use problem::Problem;

/// One thing readiness depends on (the database, the broker listener, ...).
#[async_trait]
pub trait ReadinessCheck: Send + Sync {
    /// A short stable name, shown in `/readyz`.
    fn name(&self) -> &'static str;
    /// `Ok` when ready, else why not.
    async fn check(&self) -> Result<(), String>;
}

/// What the HTTP handlers need.
#[derive(Clone)]
pub struct ApiState {
    /// The metrics registry rendered at `/metrics`.
    pub registry: Registry,
    /// Checks behind `/readyz`.
    pub readiness: Arc<Vec<Box<dyn ReadinessCheck>>>,
    /// The live occupancy engine's HTTP face and WebSocket clients.
    pub live: Arc<live::LiveHub>,
    /// Accounts and sessions.
    pub accounts: Arc<auth::Accounts>,
    /// The rules on reservation times.
    pub reservation_rules: parkd_core::reservation::TimeRules,
    /// `parkd_reservations_total{event}` (see [`reservations::metrics`]).
    pub reservation_metrics: prometheus::IntCounterVec,
    /// Each lot's holding reservations in memory (allocation reads no database).
    pub book: Arc<book::Book>,
    /// Request counters and timings.
    pub http_metrics: HttpMetrics,
    /// The gates (operators' routes answer 503 without).
    pub gates: Option<gates::GatesApi>,
    /// Payments (their routes answer 503 without).
    pub payments: Option<payments::PaymentsApi>,
}

/// `parkd_http_requests_total{route,method,status}` and the duration histogram.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: prometheus::IntCounterVec,
    duration: prometheus::HistogramVec,
}

impl HttpMetrics {
    /// Registers the HTTP metrics.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "parkd_http_requests_total",
                "HTTP requests answered, by route template, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let duration = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "parkd_http_request_duration_seconds",
                "Time to produce the response head, by route template",
            )
            .buckets(vec![
                0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.0, 5.0,
            ]),
            &["route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }
}

async fn count_requests(
    State(metrics): State<HttpMetrics>,
    matched: Option<axum::extract::MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = matched.as_ref().map_or("unmatched", |m| m.as_str());
    metrics
        .requests
        .with_label_values(&[route, method.as_str(), response.status().as_str()])
        .inc();
    metrics
        .duration
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    response
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.readiness.iter().map(|check| check.name()).collect();
        f.debug_struct("ApiState")
            .field("readiness", &names)
            .finish()
    }
}

/// The whole HTTP application.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(openapi::OPENAPI_PATH, get(openapi::openapi_json))
        .merge(live::routes())
        .merge(auth::routes().layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)))
        .merge(reservations::routes().layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)))
        .merge(gates::routes().layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)))
        .merge(tariffs::routes().layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)))
        .merge(payments::routes().layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)))
        .merge(
            webhooks::routes().layer(axum::extract::DefaultBodyLimit::max(
                webhooks::MAX_WEBHOOK_BODY,
            )),
        )
        .merge(ledger::routes().layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)))
        .merge(web::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.http_metrics.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Largest request body the JSON routes accept.
pub const MAX_BODY: usize = 16 * 1024;

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "http listening");
    use axum::serve::ListenerExt;
    // Without TCP_NODELAY a small write (a live delta, a short JSON answer) that follows an
    // unacknowledged one waits for the peer's delayed ACK: up to 40 ms on Linux.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The process answers.
#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process is alive", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Whether every dependency is ready.
#[derive(Serialize, utoipa::ToSchema)]
struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(example = "ready")]
    status: &'static str,
    /// One per dependency.
    checks: Vec<CheckResult>,
}

/// One dependency's readiness.
#[derive(Serialize, utoipa::ToSchema)]
struct CheckResult {
    /// The dependency (`database`, `mqtt`, ...).
    name: &'static str,
    /// Whether it is ready.
    ready: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Readiness: every dependency is ready.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Every dependency is ready", body = Readiness),
        (status = 503, description = "Some dependency is not ready", body = Readiness),
    )
)]
async fn readyz(State(state): State<ApiState>) -> Response {
    let mut checks = Vec::with_capacity(state.readiness.len());
    for check in state.readiness.iter() {
        let result = check.check().await;
        checks.push(CheckResult {
            name: check.name(),
            ready: result.is_ok(),
            error: result.err(),
        });
    }
    let ready = checks.iter().all(|check| check.ready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        checks,
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "Prometheus text exposition format",
         body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 500, description = "The metrics could not be encoded",
         body = Problem, content_type = "application/problem+json"),
    )
)]
async fn metrics(State(state): State<ApiState>) -> Response {
    let families = state.registry.gather();
    let mut buffer = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&families, &mut buffer) {
        return Problem::internal(&error).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        buffer,
    )
        .into_response()
}

async fn not_found() -> Problem {
    Problem::not_found("no such route")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    struct Fixed(&'static str, Result<(), String>);

    #[async_trait]
    impl ReadinessCheck for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        async fn check(&self) -> Result<(), String> {
            self.1.clone()
        }
    }

    async fn app(checks: Vec<Box<dyn ReadinessCheck>>) -> (Router, tempfile::TempDir) {
        let registry = Registry::new();
        let counter = prometheus::IntCounter::new("parkd_test_total", "a test counter").unwrap();
        counter.inc();
        registry.register(Box::new(counter)).unwrap();
        let engine = Arc::new(parkd_occupancy::OccupancyEngine::default());
        let clock: Arc<dyn parkd_core::clock::Clock> = Arc::new(parkd_core::clock::SystemClock);
        let live = live::LiveHub::new(
            engine,
            clock.clone(),
            live::LiveSettings::default(),
            &registry,
        )
        .unwrap();
        let (store, dir) = parkd_store::testing::sqlite_store().await;
        let accounts = auth::Accounts::new(
            Arc::new(store),
            clock,
            auth::AuthSettings {
                argon2: auth::Argon2Cost {
                    memory_kib: 64,
                    iterations: 1,
                    parallelism: 1,
                },
                ..auth::AuthSettings::default()
            },
            &registry,
        )
        .unwrap();
        let router = router(ApiState {
            http_metrics: HttpMetrics::new(&registry).unwrap(),
            reservation_rules: parkd_core::reservation::TimeRules::default(),
            reservation_metrics: reservations::metrics(&registry).unwrap(),
            book: Arc::default(),
            registry,
            readiness: Arc::new(checks),
            live: Arc::new(live),
            accounts: Arc::new(accounts),
            gates: None,
            payments: None,
        });
        (router, dir)
    }

    async fn get(app: Router, path: &str) -> (StatusCode, String, String) {
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn health_ready_and_metrics() {
        let (ok, _dir) = app(vec![Box::new(Fixed("database", Ok(())))]).await;
        assert_eq!(get(ok.clone(), "/healthz").await.0, StatusCode::OK);
        let (status, _, body) = get(ok.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(r#""status":"ready""#), "{body}");
        let (status, content_type, body) = get(ok, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/plain"));
        assert!(body.contains("parkd_test_total 1"), "{body}");
    }

    #[tokio::test]
    async fn readiness_names_what_is_not_ready() {
        let (app, _dir) = app(vec![
            Box::new(Fixed("database", Err("connection refused".into()))),
            Box::new(Fixed("mqtt", Ok(()))),
        ])
        .await;
        let (status, _, body) = get(app, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["checks"][0]["name"], "database");
        assert_eq!(json["checks"][0]["error"], "connection refused");
        assert_eq!(json["checks"][1]["ready"], true);
    }

    #[tokio::test]
    async fn unknown_routes_are_problem_json() {
        let (status, content_type, body) = get(app(vec![]).await.0, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(content_type, "application/problem+json");
        assert!(body.contains(r#""status":404"#), "{body}");
    }
}
