//! Live occupancy over HTTP: the lots, their availability and spots (REST, no login), and the
//! WebSocket feed `/api/v1/live?lot=ID` (protocol in `docs/live.md`).
//!
//! Every read comes from the occupancy engine's counters and spot map; nothing here touches
//! the database. WebSocket clients are tasks owned by [`LiveHub`]: they close with 1001 when
//! the hub stops, and [`LiveHub::shutdown`] waits for them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use parkd_core::clock::Clock;
use parkd_core::garage::{GeoPoint, Level, Lot, OpeningPeriod, Zone};
use parkd_core::ids::{LevelId, LotId, ZoneId};
use parkd_core::vehicle::{SpotKind, VehicleType, fits};
use parkd_occupancy::{Availability, Counts, LotFigures, OccupancyEngine, SpotState};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ApiState;
use crate::problem::Problem;
use crate::rendered::{RenderCache, Rendered};

/// WebSocket tunables.
#[derive(Debug, Clone, Copy)]
pub struct LiveSettings {
    /// Time between heartbeats.
    pub heartbeat: Duration,
    /// Most clients at once.
    pub max_clients: usize,
    /// A client whose socket does not take a message within this time is dropped.
    pub send_timeout: Duration,
    /// Least time between two writes of deltas to one client: changes that come closer
    /// together wait and leave in one write (each still its own message). A quiet lot's
    /// changes leave at once; a busy one costs a socket write per client per interval, not
    /// per change. Zero writes every change at once.
    pub frame_interval: Duration,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(10),
            max_clients: 20_000,
            send_timeout: Duration::from_secs(10),
            frame_interval: Duration::from_millis(20),
        }
    }
}

/// The feed's metrics.
#[derive(Debug, Clone)]
struct LiveMetrics {
    clients: IntGauge,
    sent: IntCounterVec,
    /// `sent{type="delta"}`, resolved once: it moves for every delta to every client.
    sent_deltas: IntCounter,
    resyncs: IntCounterVec,
    refused: IntCounterVec,
}

impl LiveMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let clients = IntGauge::new("parkd_ws_clients", "WebSocket clients connected")?;
        let sent = IntCounterVec::new(
            Opts::new("parkd_ws_messages_sent_total", "WebSocket messages sent"),
            &["type"],
        )?;
        let resyncs = IntCounterVec::new(
            Opts::new(
                "parkd_ws_resyncs_total",
                "Snapshots sent after the first, by reason (lagged: the client fell behind)",
            ),
            &["reason"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "parkd_ws_refused_total",
                "WebSocket connections or client messages refused, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(clients.clone()))?;
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(resyncs.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        Ok(Self {
            clients,
            sent_deltas: sent.with_label_values(&["delta"]),
            sent,
            resyncs,
            refused,
        })
    }
}

/// The engine's HTTP face and the owner of the WebSocket clients.
#[derive(Debug)]
pub struct LiveHub {
    engine: Arc<OccupancyEngine>,
    clock: Arc<dyn Clock>,
    settings: LiveSettings,
    stop: CancellationToken,
    clients: TaskTracker,
    metrics: LiveMetrics,
    /// Availability answers by lot and vehicle filter.
    availability: RenderCache<(LotId, Option<VehicleType>)>,
    /// Snapshots by lot and reason: a crowd of live maps reconnecting at once (after a
    /// restart, a network blip) costs one rendering, not one per client.
    snapshots: RenderCache<(LotId, Option<&'static str>)>,
    /// The alert in force per lot (an emergency), sent to every client that connects.
    alerts: std::sync::Mutex<std::collections::HashMap<LotId, Utf8Bytes>>,
    /// Alerts as they start and end, for the connected clients.
    alert_feed: tokio::sync::broadcast::Sender<(LotId, Utf8Bytes)>,
}

/// The `alert` message of the live feed.
#[derive(Serialize)]
struct AlertMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    lot: &'a LotId,
    /// What: `emergency`.
    alert: &'static str,
    /// On or over.
    active: bool,
    /// For the screen.
    message: &'static str,
    /// Since when, if on.
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
}

impl LiveHub {
    /// A hub over `engine`, registering its metrics.
    pub fn new(
        engine: Arc<OccupancyEngine>,
        clock: Arc<dyn Clock>,
        settings: LiveSettings,
        registry: &Registry,
    ) -> prometheus::Result<Self> {
        Ok(Self {
            engine,
            clock,
            settings,
            stop: CancellationToken::new(),
            clients: TaskTracker::new(),
            metrics: LiveMetrics::new(registry)?,
            availability: RenderCache::default(),
            snapshots: RenderCache::default(),
            alerts: std::sync::Mutex::default(),
            alert_feed: tokio::sync::broadcast::channel(64).0,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<OccupancyEngine> {
        &self.engine
    }

    /// Puts a lot's emergency alert in force (`Some`) or withdraws it (`None`): every client
    /// of the lot gets an `alert` message now, and clients that connect while it is in force
    /// get it after their snapshot.
    pub fn set_alert(&self, lot: &LotId, emergency: Option<&parkd_gates::Emergency>) {
        let message = AlertMessage {
            kind: "alert",
            lot,
            alert: "emergency",
            active: emergency.is_some(),
            message: if emergency.is_some() {
                "Emergency: please leave the car park calmly; barriers are open."
            } else {
                "The emergency is over."
            },
            since: emergency.map(|e| e.started_at),
            at: self.clock.now(),
        };
        let text = Utf8Bytes::from(serde_json::to_string(&message).unwrap_or_default());
        {
            let mut alerts = self
                .alerts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if emergency.is_some() {
                alerts.insert(lot.clone(), text.clone());
            } else {
                alerts.remove(lot);
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.alert_feed.send((lot.clone(), text));
    }

    fn alert_in_force(&self, lot: &LotId) -> Option<Utf8Bytes> {
        self.alerts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(lot)
            .cloned()
    }

    /// Closes every WebSocket (1001 going away) and waits until their tasks have ended.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.clients.close();
        self.clients.wait().await;
    }
}

/// The live routes, merged into the API's router.
pub(crate) fn routes() -> Router<ApiState> {
    use axum::routing::get;
    Router::new()
        .route("/api/v1/lots", get(list_lots))
        .route("/api/v1/lots/{lot}", get(get_lot))
        .route("/api/v1/lots/{lot}/availability", get(availability))
        .route("/api/v1/lots/{lot}/spots", get(spots))
        .route("/api/v1/live", get(live))
}

pub(crate) fn bad_parameter(detail: String) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-parameter",
        "Invalid parameter",
    )
    .with_detail(detail)
}

pub(crate) fn unknown_lot(raw: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "unknown-lot", "Unknown lot")
        .with_detail(format!("no lot {:?}", truncate(raw)))
}

fn truncate(raw: &str) -> String {
    raw.chars().take(64).collect()
}

/// Refuses query parameters other than `allowed`, so a typo is an error, not a silent no-op.
fn only_params(query: &BTreeMap<String, String>, allowed: &[&str]) -> Result<(), Problem> {
    match query.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(bad_parameter(format!(
            "unknown query parameter {:?} (allowed: {})",
            truncate(key),
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn parse_param<T: std::str::FromStr>(
    query: &BTreeMap<String, String>,
    name: &str,
) -> Result<Option<T>, Problem>
where
    T::Err: std::fmt::Display,
{
    query
        .get(name)
        .map(|raw| {
            raw.parse::<T>()
                .map_err(|error| bad_parameter(format!("{name}: {error}")))
        })
        .transpose()
}

/// The lot `raw` names, with its model; 404 `unknown-lot` if there is none.
pub(crate) fn lot_of(hub: &LiveHub, raw: &str) -> Result<(LotId, Arc<Lot>), Problem> {
    let id = LotId::parse(raw).map_err(|_| unknown_lot(raw))?;
    let model = hub.engine.model(&id).ok_or_else(|| unknown_lot(raw))?;
    Ok((id, model))
}

/// A lot and its headline figures.
#[derive(Serialize, utoipa::ToSchema)]
struct LotSummary<'a> {
    /// The lot id.
    #[schema(value_type = String)]
    id: &'a LotId,
    /// Display name.
    name: &'a str,
    /// Street address.
    address: &'a str,
    /// Where it is.
    location: Option<GeoPoint>,
    /// IANA time zone of its opening hours.
    timezone: &'a str,
    /// Number of spots.
    spots: usize,
    /// Spots by state.
    total: Counts,
    /// Free spots per vehicle type.
    free_by_vehicle: BTreeMap<VehicleType, i64>,
    /// The lot's newest sensor message.
    updated_at: Option<DateTime<Utc>>,
}

fn summary<'a>(model: &'a Lot, figures: LotFigures) -> LotSummary<'a> {
    LotSummary {
        id: &model.id,
        name: &model.name,
        address: &model.address,
        location: model.location,
        timezone: &model.timezone,
        spots: model.spots.len(),
        total: figures.total,
        free_by_vehicle: figures.free_by_vehicle,
        updated_at: figures.updated_at,
    }
}

/// Every lot.
#[derive(Serialize, utoipa::ToSchema)]
struct LotList<'a> {
    /// The lots.
    lots: Vec<LotSummary<'a>>,
}

/// Lists the lots with their headline figures.
#[utoipa::path(
    get,
    path = "/api/v1/lots",
    tag = "live",
    responses(
        (status = 200, description = "The lots", body = LotList),
        (status = 400, description = "Unknown query parameter (`invalid-parameter`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_lots(
    State(state): State<ApiState>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    only_params(&query, &[])?;
    let hub = &state.live;
    let models: Vec<(Arc<Lot>, LotFigures)> = hub
        .engine
        .lot_ids()
        .into_iter()
        .filter_map(|id| Some((hub.engine.model(&id)?, hub.engine.figures(&id)?)))
        .collect();
    let lots = models
        .iter()
        .map(|(model, figures)| summary(model, figures.clone()))
        .collect();
    Ok(Json(LotList { lots }).into_response())
}

/// A lot with its opening hours, levels and zones.
#[derive(Serialize, utoipa::ToSchema)]
struct LotDetail<'a> {
    #[serde(flatten)]
    summary: LotSummary<'a>,
    /// When it is open; empty = always.
    opening_hours: &'a [OpeningPeriod],
    /// Its levels.
    levels: &'a [Level],
    /// Its zones.
    zones: &'a [Zone],
}

/// One lot, with its opening hours, levels and zones.
#[utoipa::path(
    get,
    path = "/api/v1/lots/{lot}",
    tag = "live",
    params(("lot" = String, Path, description = "The lot id")),
    responses(
        (status = 200, description = "The lot", body = LotDetail),
        (status = 400, description = "Unknown query parameter (`invalid-parameter`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lot (`unknown-lot`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_lot(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    only_params(&query, &[])?;
    let (id, model) = lot_of(&state.live, &raw)?;
    let figures = state
        .live
        .engine
        .figures(&id)
        .ok_or_else(|| unknown_lot(&raw))?;
    Ok(Json(LotDetail {
        summary: summary(&model, figures),
        opening_hours: &model.opening_hours,
        levels: &model.levels,
        zones: &model.zones,
    })
    .into_response())
}

/// A lot's availability from the live counters, optionally for one vehicle type.
#[utoipa::path(
    get,
    path = "/api/v1/lots/{lot}/availability",
    tag = "live",
    params(
        ("lot" = String, Path, description = "The lot id"),
        ("vehicle" = Option<VehicleType>, Query, description = "Only this vehicle type"),
    ),
    responses(
        (status = 200, description = "The availability", body = parkd_occupancy::Availability),
        (status = 400, description = "Unknown or invalid query parameter (`invalid-parameter`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lot (`unknown-lot`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn availability(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    only_params(&query, &["vehicle"])?;
    let vehicle: Option<VehicleType> = parse_param(&query, "vehicle")?;
    let hub = &state.live;
    let id = LotId::parse(&raw).map_err(|_| unknown_lot(&raw))?;
    let now = hub.clock.now();
    let Some(version) = hub.engine.version(&id) else {
        hub.availability.forget(|(lot, _)| *lot == id);
        return Err(unknown_lot(&raw));
    };
    let key = (id, vehicle);
    let rendered = match hub.availability.get(&key, version) {
        Some(rendered) => rendered,
        None => {
            let (version, availability) = hub
                .engine
                .versioned_availability(&key.0, now)
                .ok_or_else(|| unknown_lot(&raw))?;
            let availability = filtered(availability, vehicle);
            match Rendered::new(version, availability.seq, &availability, "as_of", now) {
                Some(rendered) => {
                    let rendered = Arc::new(rendered);
                    hub.availability.put(key, Arc::clone(&rendered));
                    rendered
                }
                // Not expected (the split is tested); answer without caching.
                None => return Ok(Json(availability).into_response()),
            }
        }
    };
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        rendered.at(now),
    )
        .into_response())
}

/// Keeps only `vehicle`'s figures, if one is asked for.
fn filtered(mut availability: Availability, vehicle: Option<VehicleType>) -> Availability {
    if let Some(vehicle) = vehicle {
        availability.by_vehicle.retain(|v, _| *v == vehicle);
        for area in &mut availability.levels {
            area.by_vehicle.retain(|v, _| *v == vehicle);
        }
        for area in &mut availability.zones {
            area.by_vehicle.retain(|v, _| *v == vehicle);
        }
    }
    availability
}

/// One spot, its place on the plan and its live state.
#[derive(Serialize, utoipa::ToSchema)]
struct SpotOut<'a> {
    /// Id, unique in the lot.
    id: &'a str,
    /// What is painted on the floor.
    label: &'a str,
    /// The level it is on.
    #[schema(value_type = String)]
    level: &'a LevelId,
    /// Its zone, if the lot has zones.
    #[schema(value_type = Option<String>)]
    zone: Option<&'a ZoneId>,
    /// Its kind.
    kind: SpotKind,
    /// Top-left corner on the level's plan, metres.
    x: f64,
    /// Top-left corner on the level's plan, metres.
    y: f64,
    /// Width, metres.
    w: f64,
    /// Depth, metres.
    h: f64,
    /// Rotation around its centre, degrees clockwise.
    rotation: f64,
    /// Walking distance to the pedestrian exit, metres.
    #[serde(skip_serializing_if = "Option::is_none")]
    walk_m: Option<f64>,
    /// Live state.
    state: SpotState,
    /// Since when it is in this state.
    since: DateTime<Utc>,
    /// Its newest sensor message.
    updated_at: Option<DateTime<Utc>>,
    /// The spot's version (grows with every change).
    v: u64,
}

/// A lot's spots, filtered.
#[derive(Serialize, utoipa::ToSchema)]
struct SpotList<'a> {
    /// The lot id.
    #[schema(value_type = String)]
    lot: &'a LotId,
    /// The lot's sequence number when this was read.
    seq: u64,
    /// The spots.
    spots: Vec<SpotOut<'a>>,
}

fn parse_state(raw: &str) -> Result<SpotState, String> {
    SpotState::ALL
        .into_iter()
        .find(|state| state.as_str() == raw)
        .ok_or_else(|| {
            format!(
                "unknown state {:?} (expected one of: free, occupied, held, unknown, out_of_service)",
                truncate(raw)
            )
        })
}

/// A lot's spots with their live state, filtered by level, zone, kind, state or vehicle.
#[utoipa::path(
    get,
    path = "/api/v1/lots/{lot}/spots",
    tag = "live",
    params(
        ("lot" = String, Path, description = "The lot id"),
        ("level" = Option<String>, Query, description = "Only spots on this level"),
        ("zone" = Option<String>, Query, description = "Only spots in this zone"),
        ("kind" = Option<SpotKind>, Query, description = "Only spots of this kind"),
        ("state" = Option<SpotState>, Query, description = "Only spots in this state"),
        ("vehicle" = Option<VehicleType>, Query, description = "Only spots this vehicle type may use"),
    ),
    responses(
        (status = 200, description = "The spots", body = SpotList),
        (status = 400, description = "Unknown or invalid query parameter, unknown level or zone (`invalid-parameter`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lot (`unknown-lot`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn spots(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    only_params(&query, &["level", "zone", "kind", "state", "vehicle"])?;
    let vehicle: Option<VehicleType> = parse_param(&query, "vehicle")?;
    let kind: Option<SpotKind> = parse_param(&query, "kind")?;
    let wanted_state = query
        .get("state")
        .map(|raw| parse_state(raw).map_err(bad_parameter))
        .transpose()?;
    let (id, model) = lot_of(&state.live, &raw)?;
    let level = query.get("level");
    if let Some(level) = level
        && !model.levels.iter().any(|l| l.id.as_str() == level)
    {
        return Err(bad_parameter(format!(
            "level: lot {id} has no level {:?}",
            truncate(level)
        )));
    }
    let zone = query.get("zone");
    if let Some(zone) = zone
        && !model.zones.iter().any(|z| z.id.as_str() == zone)
    {
        return Err(bad_parameter(format!(
            "zone: lot {id} has no zone {:?}",
            truncate(zone)
        )));
    }
    let engine = &state.live.engine;
    let seq = engine.seq(&id).unwrap_or(0);
    let mut out = Vec::with_capacity(model.spots.len());
    for spot in &model.spots {
        if level.is_some_and(|level| spot.level.as_str() != level)
            || zone.is_some_and(|zone| spot.zone.as_ref().map(ZoneId::as_str) != Some(zone))
            || kind.is_some_and(|kind| spot.kind != kind)
            || vehicle.is_some_and(|vehicle| !fits(vehicle, spot.kind))
        {
            continue;
        }
        let Some(live) = engine.spot(&id, &spot.id) else {
            continue;
        };
        if wanted_state.is_some_and(|wanted| live.state != wanted) {
            continue;
        }
        out.push(SpotOut {
            id: spot.id.as_str(),
            label: &spot.label,
            level: &spot.level,
            zone: spot.zone.as_ref(),
            kind: spot.kind,
            x: spot.x,
            y: spot.y,
            w: spot.w,
            h: spot.h,
            rotation: spot.rotation,
            walk_m: spot.walk_m,
            state: live.state,
            since: live.since,
            updated_at: live.updated_at,
            v: live.v,
        });
    }
    Ok(Json(SpotList {
        lot: &id,
        seq,
        spots: out,
    })
    .into_response())
}

/// Close code when the lot no longer exists (an application code: 4000-4999).
const LOT_REMOVED: u16 = 4404;

/// Largest message a client may send (it only ever sends `{"type":"resync"}`).
const MAX_CLIENT_MESSAGE: usize = 4 * 1024;

/// The live feed of one lot over WebSocket: a snapshot, then deltas and heartbeats. The
/// protocol (messages, resync, close codes) is in docs/live.md.
#[utoipa::path(
    get,
    path = "/api/v1/live",
    tag = "live",
    params(("lot" = String, Query, description = "The lot to follow")),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket is open; messages as in docs/live.md"),
        (status = 400, description = "Missing `lot` or unknown query parameter (`invalid-parameter`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lot (`unknown-lot`)", body = Problem, content_type = "application/problem+json"),
        (status = 426, description = "Not a WebSocket upgrade request (`websocket-required`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Shutting down or too many clients (`shutting-down`, `too-many-clients`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn live(
    State(state): State<ApiState>,
    Query(query): Query<BTreeMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, Problem> {
    let hub = state.live.clone();
    only_params(&query, &["lot"])?;
    let raw = query
        .get("lot")
        .ok_or_else(|| bad_parameter("lot: required".into()))?;
    let (id, _) = lot_of(&hub, raw)?;
    let upgrade = upgrade.map_err(|rejection| {
        hub.metrics
            .refused
            .with_label_values(&["not_websocket"])
            .inc();
        Problem::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket-required",
            "WebSocket upgrade required",
        )
        .with_detail(rejection.body_text())
    })?;
    if hub.stop.is_cancelled() {
        hub.metrics
            .refused
            .with_label_values(&["shutting_down"])
            .inc();
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting-down",
            "Shutting down",
        ));
    }
    if hub.metrics.clients.get() >= i64::try_from(hub.settings.max_clients).unwrap_or(i64::MAX) {
        hub.metrics.refused.with_label_values(&["too_many"]).inc();
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-clients",
            "Too many live clients",
        )
        .with_detail("try again later"));
    }
    let token = hub.clients.token();
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            let _token = token;
            hub.metrics.clients.inc();
            Client::new(hub.clone(), id).run(socket).await;
            hub.metrics.clients.dec();
        }))
}

#[derive(Serialize)]
struct Heartbeat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    lot: &'a LotId,
    seq: u64,
    at: DateTime<Utc>,
}

#[derive(Serialize)]
struct ErrorMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: &'a str,
}

enum Outcome {
    Continue,
    Stop,
}

/// One WebSocket client.
struct Client {
    hub: Arc<LiveHub>,
    lot: LotId,
    /// The sequence number of the last delta or snapshot sent.
    sent: u64,
    /// When deltas were last written (for `frame_interval`).
    written: Option<tokio::time::Instant>,
    /// The last write stopped at its size limit with more queued: write again at once.
    backlog: bool,
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

impl Client {
    fn new(hub: Arc<LiveHub>, lot: LotId) -> Self {
        Self {
            hub,
            lot,
            sent: 0,
            written: None,
            backlog: false,
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let (mut sink, mut stream) = socket.split();
        // Subscribe before the snapshot, so nothing falls between them.
        let Some(mut rx) = self.hub.engine.subscribe(&self.lot) else {
            self.close(&mut sink, LOT_REMOVED, "lot removed").await;
            return;
        };
        let mut alerts = self.hub.alert_feed.subscribe();
        if let Outcome::Stop = self.snapshot(&mut sink, None).await {
            return;
        }
        if let Some(alert) = self.hub.alert_in_force(&self.lot)
            && let Outcome::Stop = self.send(&mut sink, alert, "alert").await
        {
            return;
        }
        let mut heartbeat = tokio::time::interval(self.hub.settings.heartbeat);
        heartbeat.tick().await;
        loop {
            let outcome = tokio::select! {
                () = self.hub.stop.cancelled() => {
                    self.close(&mut sink, 1001, "server shutting down").await;
                    Outcome::Stop
                }
                received = rx.recv() => match received {
                    Ok(delta) => self.deltas(&mut sink, &mut rx, delta).await,
                    Err(RecvError::Lagged(_)) => self.snapshot(&mut sink, Some("lagged")).await,
                    Err(RecvError::Closed) => match self.hub.engine.subscribe(&self.lot) {
                        // The lot's model was reloaded: new channel, fresh state.
                        Some(next) => {
                            rx = next;
                            self.snapshot(&mut sink, Some("reloaded")).await
                        }
                        None => {
                            self.close(&mut sink, LOT_REMOVED, "lot removed").await;
                            Outcome::Stop
                        }
                    },
                },
                alert = alerts.recv() => match alert {
                    Ok((lot, text)) if lot == self.lot => self.send(&mut sink, text, "alert").await,
                    Ok(_) => Outcome::Continue,
                    // Missed some: the one in force (if any) is what matters.
                    Err(RecvError::Lagged(_)) => match self.hub.alert_in_force(&self.lot) {
                        Some(text) => self.send(&mut sink, text, "alert").await,
                        None => Outcome::Continue,
                    },
                    Err(RecvError::Closed) => Outcome::Continue,
                },
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Text(text))) => self.client_message(&mut sink, &text).await,
                    Some(Ok(Message::Binary(_))) => {
                        self.hub.metrics.refused.with_label_values(&["binary_message"]).inc();
                        self.error(&mut sink, "binary messages are not part of the protocol").await
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Outcome::Continue,
                    Some(Ok(Message::Close(_))) | None => Outcome::Stop,
                    Some(Err(error)) => {
                        tracing::debug!(%error, "websocket read failed");
                        self.hub.metrics.refused.with_label_values(&["protocol_error"]).inc();
                        Outcome::Stop
                    }
                },
                _ = heartbeat.tick() => {
                    let beat = Heartbeat {
                        kind: "heartbeat",
                        lot: &self.lot,
                        seq: self.sent,
                        at: self.hub.clock.now(),
                    };
                    let text = serde_json::to_string(&beat).unwrap_or_default();
                    self.send(&mut sink, text.into(), "heartbeat").await
                }
            };
            if let Outcome::Stop = outcome {
                return;
            }
        }
    }

    /// Sends `first` and whatever else is queued, as one write, at most once per
    /// `frame_interval`.
    async fn deltas(
        &mut self,
        sink: &mut Sink,
        rx: &mut tokio::sync::broadcast::Receiver<Arc<parkd_occupancy::Delta>>,
        first: Arc<parkd_occupancy::Delta>,
    ) -> Outcome {
        if let Some(written) = self.written.filter(|_| !self.backlog) {
            let due = written + self.hub.settings.frame_interval;
            if due > tokio::time::Instant::now() {
                tokio::select! {
                    // The main loop sees the stop and closes.
                    () = self.hub.stop.cancelled() => return Outcome::Continue,
                    () = tokio::time::sleep_until(due) => {}
                }
            }
        }
        const MOST_PER_WRITE: usize = 1024;
        let mut next = Some(first);
        let mut queued: u64 = 0;
        self.backlog = false;
        while let Some(delta) = next.take() {
            // Deltas the snapshot already covered are skipped.
            if delta.seq > self.sent {
                self.sent = delta.seq;
                // The engine serialises with serde_json: always UTF-8.
                if let Ok(text) = Utf8Bytes::try_from(delta.json()) {
                    if let Outcome::Stop = self.feed(sink, text).await {
                        return Outcome::Stop;
                    }
                    queued += 1;
                }
            }
            if queued as usize >= MOST_PER_WRITE {
                self.backlog = true;
                break;
            }
            next = match rx.try_recv() {
                Ok(delta) => Some(delta),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                    self.hub.metrics.sent_deltas.inc_by(queued);
                    return self.snapshot(sink, Some("lagged")).await;
                }
                Err(_) => None,
            };
        }
        self.hub.metrics.sent_deltas.inc_by(queued);
        let outcome = self.flush(sink).await;
        self.written = Some(tokio::time::Instant::now());
        outcome
    }

    /// Queues a delta in the socket's write buffer (written by [`flush`](Self::flush), or
    /// earlier when the buffer is full).
    async fn feed(&mut self, sink: &mut Sink, text: Utf8Bytes) -> Outcome {
        self.timed(sink.feed(Message::Text(text))).await
    }

    async fn client_message(&mut self, sink: &mut Sink, text: &str) -> Outcome {
        #[derive(serde::Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
        enum ClientMessage {
            Resync,
        }
        match serde_json::from_str::<ClientMessage>(text) {
            Ok(ClientMessage::Resync) => self.snapshot(sink, Some("resync")).await,
            Err(error) => {
                self.hub
                    .metrics
                    .refused
                    .with_label_values(&["bad_message"])
                    .inc();
                let detail = format!("unreadable message: {error}");
                self.error(sink, &detail).await
            }
        }
    }

    async fn snapshot(&mut self, sink: &mut Sink, reason: Option<&'static str>) -> Outcome {
        let hub = Arc::clone(&self.hub);
        let now = hub.clock.now();
        let rendered = hub.engine.version(&self.lot).and_then(|version| {
            let key = (self.lot.clone(), reason);
            if let Some(rendered) = hub.snapshots.get(&key, version) {
                return Some(Ok(rendered));
            }
            let snapshot = hub.engine.snapshot(&self.lot, now, reason)?;
            Some(
                match Rendered::new(version, snapshot.seq, &snapshot, "at", now) {
                    Some(rendered) => {
                        let rendered = Arc::new(rendered);
                        hub.snapshots.put(key, Arc::clone(&rendered));
                        Ok(rendered)
                    }
                    // Not expected (the split is tested): send this one without keeping it.
                    None => Err((
                        snapshot.seq,
                        serde_json::to_vec(&snapshot).unwrap_or_default(),
                    )),
                },
            )
        });
        let (seq, json) = match rendered {
            Some(Ok(rendered)) => (rendered.seq, rendered.at(now)),
            Some(Err(plain)) => plain,
            None => {
                let lot = self.lot.clone();
                hub.snapshots.forget(|(id, _)| *id == lot);
                self.close(sink, LOT_REMOVED, "lot removed").await;
                return Outcome::Stop;
            }
        };
        if let Some(reason) = reason {
            hub.metrics.resyncs.with_label_values(&[reason]).inc();
        }
        self.sent = seq;
        // serde_json writes UTF-8.
        let text = Utf8Bytes::try_from(bytes::Bytes::from(json)).unwrap_or_default();
        self.send(sink, text, "snapshot").await
    }

    async fn error(&mut self, sink: &mut Sink, error: &str) -> Outcome {
        let text = serde_json::to_string(&ErrorMessage {
            kind: "error",
            error,
        })
        .unwrap_or_default();
        self.send(sink, text.into(), "error").await
    }

    async fn send(&mut self, sink: &mut Sink, text: Utf8Bytes, kind: &'static str) -> Outcome {
        let outcome = self.timed(sink.send(Message::Text(text))).await;
        if let Outcome::Continue = outcome {
            self.hub.metrics.sent.with_label_values(&[kind]).inc();
        }
        outcome
    }

    /// Runs a socket operation under `send_timeout`; a client that does not take what it is
    /// sent in time is dropped (and counted).
    async fn timed<E>(&self, operation: impl Future<Output = Result<(), E>>) -> Outcome {
        match tokio::time::timeout(self.hub.settings.send_timeout, operation).await {
            Ok(Ok(())) => Outcome::Continue,
            Ok(Err(_)) => Outcome::Stop,
            Err(_) => {
                self.hub
                    .metrics
                    .refused
                    .with_label_values(&["send_timeout"])
                    .inc();
                Outcome::Stop
            }
        }
    }

    async fn flush(&mut self, sink: &mut Sink) -> Outcome {
        self.timed(sink.flush()).await
    }

    async fn close(&mut self, sink: &mut Sink, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            sink.send(Message::Close(Some(frame))),
        )
        .await;
    }
}
