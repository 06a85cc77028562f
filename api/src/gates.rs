//! Operators and the gates (operator role): each lot's gates with their last contact, opening
//! a gate by hand, the emergency mode, the audit trail of those actions, and the parking
//! sessions. Rules and records: `docs/gates.md`.
//!
//! An emergency also reaches everyone watching the lot: the live WebSocket feed sends an
//! `alert` message to its clients when it starts and ends, and to every client that connects
//! while it is on ([`crate::live::LiveHub::set_alert`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use parkd_core::account::Role;
use parkd_core::gate::{BarrierEvent, GateCommand};
use parkd_core::ids::{GateId, LotId};
use parkd_gates::mqtt::GateStates;
use parkd_gates::{Emergency, GateService, OperatorError};
use parkd_store::{OperatorAction, ParkingSession};
use serde::{Deserialize, Serialize};

use crate::ApiState;
use crate::auth::{ApiJson, Caller};
use crate::problem::Problem;

/// The gate side of the API state.
#[derive(Debug, Clone)]
pub struct GatesApi {
    /// The gate rules.
    pub service: Arc<GateService>,
    /// What the gates last said.
    pub states: Arc<GateStates>,
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/lots/{lot}/gates", get(list_gates))
        .route("/api/v1/lots/{lot}/gates/{gate}/open", post(open_gate))
        .route(
            "/api/v1/lots/{lot}/emergency",
            get(get_emergency).post(start_emergency),
        )
        .route("/api/v1/lots/{lot}/emergency/end", post(end_emergency))
        .route("/api/v1/lots/{lot}/operator-actions", get(operator_actions))
        .route("/api/v1/lots/{lot}/sessions", get(sessions))
        .route("/api/v1/lots/{lot}/check-in", post(check_in))
        .route("/api/v1/parking/{session}/check-out", post(check_out))
}

fn gates_api(state: &ApiState) -> Result<&GatesApi, Problem> {
    state.gates.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "gates-unavailable",
            "Gates are not served by this instance",
        )
    })
}

fn lot_of(state: &ApiState, raw: &str) -> Result<LotId, Problem> {
    crate::live::lot_of(&state.live, raw).map(|(lot, _)| lot)
}

fn unknown_gate(detail: String) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "unknown-gate", "No such gate").with_detail(detail)
}

fn operator_problem(error: OperatorError) -> Problem {
    match error {
        OperatorError::UnknownGate { lot, gate } => {
            unknown_gate(format!("no registered gate {gate} in lot {lot}"))
        }
        OperatorError::UnknownLot(lot) => crate::live::unknown_lot(lot.as_str()),
        OperatorError::Store(error) => Problem::internal(error),
    }
}

/// Why an operator acts: written to the audit trail.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    /// 3 to 500 characters.
    #[schema(example = "ticket machine jammed")]
    reason: String,
}

impl ReasonBody {
    fn checked(&self) -> Result<&str, Problem> {
        let reason = self.reason.trim();
        let length = reason.chars().count();
        if (3..=500).contains(&length) {
            Ok(reason)
        } else {
            Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-reason",
                "A reason is needed",
            )
            .with_detail("reason: 3 to 500 characters, kept in the audit trail"))
        }
    }
}

/// A gate as operators see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct GateOut {
    /// Gate id.
    id: String,
    /// Online per its status message or will; `null` if it has not said since the start.
    online: Option<bool>,
    /// When it last said anything (request, event, status) since the start.
    last_contact: Option<DateTime<Utc>>,
    /// Its last barrier event.
    last_event: Option<BarrierEvent>,
    /// When that event happened (the gate's clock), if it said.
    last_event_ts: Option<i64>,
}

/// A lot's gates and its emergency state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct GateList {
    /// The lot.
    lot: String,
    /// The emergency, if one is on.
    #[schema(value_type = Option<EmergencyOut>)]
    emergency: Option<Emergency>,
    /// Its registered gates.
    gates: Vec<GateOut>,
}

/// An emergency.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EmergencyOut {
    /// When it started.
    started_at: DateTime<Utc>,
    /// Who started it (user id).
    started_by: String,
    /// Why.
    reason: String,
}

/// A lot's emergency state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EmergencyState {
    /// The lot.
    lot: String,
    /// Whether every barrier is held open.
    active: bool,
    /// The emergency, if on.
    #[schema(value_type = Option<EmergencyOut>)]
    emergency: Option<Emergency>,
}

/// Lists a lot's gates: registered gates with their last contact and barrier event.
#[utoipa::path(
    get,
    path = "/api/v1/lots/{lot}/gates",
    tag = "gates",
    params(("lot" = String, Path, description = "Lot id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The gates", body = GateList),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lot (`unknown-lot`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Gates are not served here (`gates-unavailable`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_gates(
    State(state): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let api = gates_api(&state)?;
    let lot = lot_of(&state, &raw)?;
    let heard: BTreeMap<GateId, _> = api.states.of_lot(&lot).into_iter().collect();
    let gates = api
        .service
        .gates_of(&lot)
        .await
        .map_err(Problem::internal)?
        .into_iter()
        .map(|gate| {
            let said = heard.get(&gate);
            GateOut {
                id: gate.to_string(),
                online: said.and_then(|s| s.online),
                last_contact: said.and_then(|s| s.last_contact),
                last_event: said.and_then(|s| s.last_event.as_ref().map(|e| e.event)),
                last_event_ts: said.and_then(|s| s.last_event.as_ref().and_then(|e| e.ts)),
            }
        })
        .collect();
    Ok(Json(GateList {
        lot: lot.to_string(),
        emergency: api.service.emergency(&lot),
        gates,
    })
    .into_response())
}

/// Opens a gate by hand for one vehicle; the reason goes to the audit trail.
#[utoipa::path(
    post,
    path = "/api/v1/lots/{lot}/gates/{gate}/open",
    tag = "gates",
    params(
        ("lot" = String, Path, description = "Lot id"),
        ("gate" = String, Path, description = "Gate id"),
    ),
    request_body = ReasonBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The command sent to the gate", body = Object),
        (status = 400, description = "Malformed JSON (`malformed-json`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lot or gate (`unknown-lot`, `unknown-gate`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason, or a wrong body (`invalid-reason`, `invalid-body`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Gates are not served here (`gates-unavailable`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn open_gate(
    State(state): State<ApiState>,
    caller: Caller,
    Path((raw_lot, raw_gate)): Path<(String, String)>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let api = gates_api(&state)?;
    let lot = lot_of(&state, &raw_lot)?;
    let reason = body.checked()?;
    let gate = GateId::parse(&raw_gate).map_err(|_| unknown_gate("not a gate id".into()))?;
    let command: GateCommand = api
        .service
        .open_by_hand(&lot, &gate, &caller.user.id, reason)
        .await
        .map_err(operator_problem)?;
    Ok(Json(command).into_response())
}

/// Whether the lot is in emergency mode.
#[utoipa::path(
    get,
    path = "/api/v1/lots/{lot}/emergency",
    tag = "gates",
    params(("lot" = String, Path, description = "Lot id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The emergency state", body = EmergencyState),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lot (`unknown-lot`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Gates are not served here (`gates-unavailable`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_emergency(
    State(state): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let api = gates_api(&state)?;
    let lot = lot_of(&state, &raw)?;
    let emergency = api.service.emergency(&lot);
    Ok(Json(EmergencyState {
        lot: lot.to_string(),
        active: emergency.is_some(),
        emergency,
    })
    .into_response())
}

/// Starts the lot's emergency: every barrier held open, nobody charged, everyone watching the
/// lot alerted. Starting it while on changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/lots/{lot}/emergency",
    tag = "gates",
    params(("lot" = String, Path, description = "Lot id")),
    request_body = ReasonBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The emergency state (on)", body = EmergencyState),
        (status = 400, description = "Malformed JSON (`malformed-json`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lot (`unknown-lot`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason, or a wrong body (`invalid-reason`, `invalid-body`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Gates are not served here (`gates-unavailable`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn start_emergency(
    State(state): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<Response, Problem> {
    switch_emergency(&state, &caller, &raw, &body, true).await
}

/// Starts (`on`) or ends a lot's emergency, and puts the live map's alert in force or
/// withdraws it.
async fn switch_emergency(
    state: &ApiState,
    caller: &Caller,
    raw: &str,
    body: &ReasonBody,
    on: bool,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let api = gates_api(state)?;
    let lot = lot_of(state, raw)?;
    let reason = body.checked()?;
    let emergency = if on {
        Some(
            api.service
                .start_emergency(&lot, &caller.user.id, reason)
                .await
                .map_err(operator_problem)?,
        )
    } else {
        let ended = api
            .service
            .end_emergency(&lot, &caller.user.id, reason)
            .await
            .map_err(operator_problem)?;
        if !ended {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "no-emergency",
                "No emergency is on",
            ));
        }
        None
    };
    state.live.set_alert(&lot, emergency.as_ref());
    Ok(Json(EmergencyState {
        lot: lot.to_string(),
        active: on,
        emergency,
    })
    .into_response())
}

/// Ends the lot's emergency: barriers back to normal, the alert withdrawn.
#[utoipa::path(
    post,
    path = "/api/v1/lots/{lot}/emergency/end",
    tag = "gates",
    params(("lot" = String, Path, description = "Lot id")),
    request_body = ReasonBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The emergency state (off)", body = EmergencyState),
        (status = 400, description = "Malformed JSON (`malformed-json`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lot (`unknown-lot`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No emergency is on (`no-emergency`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason, or a wrong body (`invalid-reason`, `invalid-body`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Gates are not served here (`gates-unavailable`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn end_emergency(
    State(state): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<Response, Problem> {
    switch_emergency(&state, &caller, &raw, &body, false).await
}

/// One operator action.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ActionOut {
    /// Id.
    id: String,
    /// When.
    at: DateTime<Utc>,
    /// Who (user id).
    user_id: String,
    /// The gate, for `gate_open`.
    gate: Option<String>,
    /// `gate_open`, `emergency_start`, `emergency_end`, `tariff_set` (the reason is
    /// `version N: <the tariff as set>`).
    action: String,
    /// Why.
    reason: String,
}

impl From<OperatorAction> for ActionOut {
    fn from(a: OperatorAction) -> Self {
        Self {
            id: a.id,
            at: a.at,
            user_id: a.user_id,
            gate: a.gate.map(|g| g.to_string()),
            action: a.action,
            reason: a.reason,
        }
    }
}

/// A lot's operator actions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ActionList {
    /// Last recorded first.
    actions: Vec<ActionOut>,
}

/// `?limit=` (1 to 1000, default 100).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    /// At most this many (1 to 1000, default 100).
    limit: Option<u32>,
    /// Sessions only: only those still inside (`true`).
    open: Option<bool>,
}

impl LimitQuery {
    fn limit(&self) -> Result<u32, Problem> {
        match self.limit {
            None => Ok(100),
            Some(n @ 1..=1000) => Ok(n),
            Some(_) => Err(crate::live::bad_parameter("limit: 1 to 1000".into())),
        }
    }
}

/// The audit trail of a lot's gate actions (manual opens, emergencies).
#[utoipa::path(
    get,
    path = "/api/v1/lots/{lot}/operator-actions",
    tag = "gates",
    params(("lot" = String, Path, description = "Lot id"), LimitQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The actions, last first", body = ActionList),
        (status = 400, description = "Invalid parameter (`invalid-parameter`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lot (`unknown-lot`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn operator_actions(
    State(state): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
    query: Result<Query<LimitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let lot = lot_of(&state, &raw)?;
    let limit = query_of(query)?.limit()?;
    let actions = state
        .accounts
        .store()
        .operator_actions(Some(&lot), limit)
        .await
        .map_err(Problem::internal)?;
    Ok(Json(ActionList {
        actions: actions.into_iter().map(ActionOut::from).collect(),
    })
    .into_response())
}

fn query_of(
    query: Result<Query<LimitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<LimitQuery, Problem> {
    query
        .map(|Query(q)| q)
        .map_err(|rejection| crate::live::bad_parameter(rejection.body_text()))
}

/// A parking session as operators see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SessionOut {
    /// Id.
    id: String,
    /// The plate as read.
    plate: Option<String>,
    /// Admitted as.
    vehicle_type: parkd_core::vehicle::VehicleType,
    /// The reservation it entered on.
    reservation_id: Option<String>,
    /// Entry gate.
    entry_gate: Option<String>,
    /// Assigned spot.
    assigned_spot: Option<String>,
    /// Where the sensors saw it park.
    sensed_spot: Option<String>,
    /// Entry time.
    entered_at: DateTime<Utc>,
    /// Exit gate.
    exit_gate: Option<String>,
    /// Exit time (absent while inside).
    exited_at: Option<DateTime<Utc>>,
    /// Seconds past the reservation's exit.
    overstay_s: Option<i64>,
}

impl From<ParkingSession> for SessionOut {
    fn from(s: ParkingSession) -> Self {
        Self {
            id: s.id,
            plate: s.plate,
            vehicle_type: s.vehicle_type,
            reservation_id: s.reservation_id,
            entry_gate: s.entry_gate.map(|g| g.to_string()),
            assigned_spot: s.assigned_spot.map(|g| g.to_string()),
            sensed_spot: s.sensed_spot.map(|g| g.to_string()),
            entered_at: s.entered_at,
            exit_gate: s.exit_gate.map(|g| g.to_string()),
            exited_at: s.exited_at,
            overstay_s: s.overstay_s,
        }
    }
}

/// A lot's parking sessions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SessionList {
    /// Newest entry first (`open=true`: oldest first).
    sessions: Vec<SessionOut>,
}

/// A lot's parking sessions: the cars inside (`open=true`) or the latest stays.
#[utoipa::path(
    get,
    path = "/api/v1/lots/{lot}/sessions",
    tag = "gates",
    params(("lot" = String, Path, description = "Lot id"), LimitQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The sessions", body = SessionList),
        (status = 400, description = "Invalid parameter (`invalid-parameter`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lot (`unknown-lot`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn sessions(
    State(state): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
    query: Result<Query<LimitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let lot = lot_of(&state, &raw)?;
    let query = query_of(query)?;
    let limit = query.limit()?;
    let store = state.accounts.store();
    let rows = if query.open == Some(true) {
        let mut open = store
            .open_parking_sessions(&lot)
            .await
            .map_err(Problem::internal)?;
        open.truncate(limit as usize);
        open
    } else {
        let now = state.accounts.now();
        store
            .parking_sessions_between(
                &lot,
                now - chrono::Duration::days(3650),
                now + chrono::Duration::days(1),
                limit,
            )
            .await
            .map_err(Problem::internal)?
    };
    Ok(Json(SessionList {
        sessions: rows.into_iter().map(SessionOut::from).collect(),
    })
    .into_response())
}

/// An app check-in.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CheckInBody {
    /// One of the caller's vehicles.
    vehicle_id: String,
    /// The reservation's code, to check in on it (otherwise the vehicle's reservation around
    /// now is found by its plate, or it is a walk-in).
    #[serde(default)]
    code: Option<String>,
}

/// The outcome of an app check-in or check-out: what a gate's display would say.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ParkingOut {
    /// The parking session.
    session: String,
    /// `reservation`, `walk_in`, `emergency` (check-in); `nothing_due` (check-out).
    reason: String,
    /// The spot to park in (check-in).
    spot: Option<String>,
    /// Text for the screen.
    display: String,
}

fn refused(command: &GateCommand) -> Problem {
    let status = match command.reason {
        parkd_core::gate::Reason::UnknownCode | parkd_core::gate::Reason::WrongLot => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => StatusCode::CONFLICT,
    };
    Problem::new(status, "parking-refused", "Refused").with_detail(format!(
        "{}: {}",
        command.reason.as_str(),
        command.display
    ))
}

/// Checks a vehicle in from the app, for lots without a plate reader: the same rules as an
/// entry gate (docs/gates.md).
#[utoipa::path(
    post,
    path = "/api/v1/lots/{lot}/check-in",
    tag = "gates",
    params(("lot" = String, Path, description = "Lot id")),
    request_body = CheckInBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Checked in: the session and the spot", body = ParkingOut),
        (status = 400, description = "Malformed JSON (`malformed-json`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such lot (`unknown-lot`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Refused by the entry rules: full, already inside, reservation not valid now... (`parking-refused`, detail `reason: text`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown vehicle or code, wrong body (`unknown-vehicle`, `parking-refused`, `invalid-body`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Gates are not served here (`gates-unavailable`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn check_in(
    State(state): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<CheckInBody>,
) -> Result<Response, Problem> {
    let api = gates_api(&state)?;
    let lot = lot_of(&state, &raw)?;
    let vehicles = state
        .accounts
        .store()
        .vehicles(&caller.user.id)
        .await
        .map_err(Problem::internal)?;
    let vehicle = vehicles
        .into_iter()
        .find(|v| v.id == body.vehicle_id)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown-vehicle",
                "Unknown vehicle",
            )
            .with_detail("vehicle_id is not one of your vehicles")
        })?;
    let command = api
        .service
        .check_in(
            &lot,
            &caller.user.id,
            &vehicle.plate,
            vehicle.profile.vehicle_type(),
            body.code.as_deref(),
        )
        .await
        .map_err(Problem::internal)?;
    if command.action != parkd_core::gate::Action::Open {
        return Err(refused(&command));
    }
    Ok((
        StatusCode::CREATED,
        Json(ParkingOut {
            session: command.session.clone().unwrap_or_default(),
            reason: command.reason.as_str().to_owned(),
            spot: command.spot.clone(),
            display: command.display,
        }),
    )
        .into_response())
}

/// Checks a vehicle out from the app (the driver's own session; operators any): the exit
/// rules of a gate.
#[utoipa::path(
    post,
    path = "/api/v1/parking/{session}/check-out",
    tag = "gates",
    params(("session" = String, Path, description = "Parking session id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Checked out", body = ParkingOut),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session visible to the caller (`not-found`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not inside any more, or something is due (`parking-refused`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Gates are not served here (`gates-unavailable`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn check_out(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let api = gates_api(&state)?;
    let session = state
        .accounts
        .store()
        .parking_session(&id)
        .await
        .map_err(Problem::internal)?
        .filter(|s| {
            s.user_id.as_deref() == Some(caller.user.id.as_str())
                || caller.user.role.includes(Role::Operator)
        })
        .ok_or_else(|| Problem::not_found("no such parking session"))?;
    let command = api
        .service
        .check_out(session)
        .await
        .map_err(Problem::internal)?;
    if command.action != parkd_core::gate::Action::Open {
        return Err(refused(&command));
    }
    Ok(Json(ParkingOut {
        session: id,
        reason: command.reason.as_str().to_owned(),
        spot: None,
        display: command.display,
    })
    .into_response())
}
