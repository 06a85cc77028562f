//! Reservations over HTTP: create (idempotent, with allocation), list, get, modify or extend,
//! cancel. States and rules: `docs/reservations.md`.
//!
//! Creating: the body is validated (times by [`TimeRules`], the vehicle must be the caller's,
//! the lot must exist), the `Idempotency-Key` is claimed, a spot is chosen by
//! [`parkd_core::allocation`] from the lot's bookings around the requested time (and the live
//! state: a spot occupied now is not given to a reservation starting within
//! [`OCCUPIED_HORIZON_MIN`]), and the reservation is written. The store refuses an overlapping
//! booking atomically; losing such a race re-runs the allocation on fresh bookings.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use parkd_core::account::Role;
use parkd_core::allocation::{Candidate, Interval, Policy, Refusal, Request, Timeline, allocate};
use parkd_core::ids::{LotId, SpotId, ZoneId};
use parkd_core::reservation::{ReservationState, TimeError, TimeRules};
use parkd_core::vehicle::{VehicleType, fits};
use parkd_occupancy::SpotState;
use parkd_store::{HoldingSpan, IdempotencyBegin, IdempotentAnswer, ReservationRow, StoreError};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ApiState;
use crate::auth::{ApiJson, Caller};
use crate::problem::Problem;

/// A spot occupied now is not given to a reservation starting within this many minutes.
pub const OCCUPIED_HORIZON_MIN: i64 = 30;
/// Bookings this far either side of a request change the allocation's answer.
const CONTEXT_HOURS: i64 = 12;
/// Attempts when a concurrent booking takes the chosen spot first.
const ALLOCATION_ATTEMPTS: usize = 5;
/// Choices again when a concurrent request of this process holds the chosen spot first (each
/// costs an allocation, no store round trip; each lost race is another request's booking).
const LOCAL_RACES: usize = 64;
/// The idempotency scope of creation.
const CREATE_SCOPE: &str = "POST /api/v1/reservations";

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/reservations", get(list).post(create))
        .route("/api/v1/reservations/{id}", get(get_one).patch(modify))
        .route("/api/v1/reservations/{id}/cancel", post(cancel))
}

/// A reservation to make.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// The lot id.
    #[schema(value_type = String)]
    lot: LotId,
    /// One of the caller's vehicles (`GET /api/v1/me/vehicles`).
    vehicle_id: String,
    /// Expected entry.
    starts_at: DateTime<Utc>,
    /// Expected exit.
    ends_at: DateTime<Utc>,
    /// A spot to prefer, if free and fitting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    preferred_spot: Option<SpotId>,
    /// A zone to prefer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    preferred_zone: Option<ZoneId>,
}

/// A reservation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ReservationOut<'a> {
    /// Reservation id.
    id: &'a str,
    /// The code for the gate.
    code: &'a str,
    /// The lot id.
    #[schema(value_type = String)]
    lot: &'a LotId,
    /// The spot allocated.
    #[schema(value_type = String)]
    spot: &'a SpotId,
    /// The vehicle (none once the vehicle was removed).
    vehicle_id: Option<&'a str>,
    /// The vehicle type the spot was chosen for.
    vehicle_type: VehicleType,
    /// Expected entry.
    starts_at: DateTime<Utc>,
    /// Expected exit.
    ends_at: DateTime<Utc>,
    /// State (docs/reservations.md).
    state: ReservationState,
    /// While not checked in: when it becomes a no-show.
    no_show_at: Option<DateTime<Utc>>,
    /// On cancellation: refunded (or being refunded) by the lot's cancellation policy, in
    /// minor units of the payment's currency (docs/payments.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    refunded_minor: Option<i64>,
    /// When it was made.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

fn out<'a>(r: &'a ReservationRow, rules: &TimeRules) -> ReservationOut<'a> {
    ReservationOut {
        id: &r.id,
        code: &r.code,
        lot: &r.lot,
        spot: &r.spot,
        vehicle_id: r.vehicle_id.as_deref(),
        vehicle_type: r.vehicle_type,
        starts_at: r.starts_at,
        ends_at: r.ends_at,
        state: r.state,
        no_show_at: matches!(
            r.state,
            ReservationState::Requested | ReservationState::Confirmed
        )
        .then(|| rules.no_show_at(r.starts_at)),
        refunded_minor: None,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

fn time_problem(error: TimeError) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-times",
        "Invalid times",
    )
    .with_detail(error.to_string())
}

fn refusal_problem(refusal: &Refusal) -> Problem {
    let (status, kind, title) = match refusal {
        Refusal::NoFittingSpot(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "no-fitting-spot",
            "No spot fits this vehicle",
        ),
        Refusal::OutOfService { .. } => (
            StatusCode::CONFLICT,
            "no-spot-available",
            "No spot available",
        ),
        Refusal::Full { .. } => (
            StatusCode::CONFLICT,
            "no-spot-available",
            "No spot available",
        ),
    };
    Problem::new(status, kind, title).with_detail(refusal.to_string())
}

/// A code for the gate: 8 characters without look-alikes (no 0/O, 1/I/L).
fn reservation_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// 128 random bits, hex: the ids of reservations and payments.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<String, Problem> {
    let bad = |detail: &str| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "idempotency-key-required",
            "Idempotency-Key required",
        )
        .with_detail(detail)
    };
    let value = headers
        .get("idempotency-key")
        .ok_or_else(|| bad("send an Idempotency-Key header (e.g. a UUID) with every create"))?;
    let key = value
        .to_str()
        .map_err(|_| bad("the Idempotency-Key must be visible ASCII"))?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "the Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(key.to_owned())
}

/// The answer of a create, as sent and as recorded for replays.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn problem(problem: &Problem) -> Answer {
        Answer {
            status: StatusCode::from_u16(problem.status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: serde_json::to_string(problem).unwrap_or_default(),
        }
    }

    pub(crate) fn into_response(self, replayed: bool) -> Response {
        let content_type = if self.status.is_success() {
            "application/json"
        } else {
            "application/problem+json"
        };
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, content_type)],
            self.body,
        )
            .into_response();
        if replayed {
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

/// Claims an `Idempotency-Key` for a request: `None` to go on, or the answer to send now (a
/// replay of the first answer); a key still running or used for another request is a problem.
pub(crate) async fn claim(
    store: &dyn parkd_store::Store,
    user_id: &str,
    key: &str,
    scope: &str,
    request_sha256: &[u8; 32],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Response>, Problem> {
    match store
        .begin_idempotent(user_id, key, scope, request_sha256, now)
        .await
        .map_err(Problem::internal)?
    {
        IdempotencyBegin::Started => Ok(None),
        found => verdict(found).map(Some),
    }
}

/// The answer to a request whose key is already recorded: a replay of the first answer, or a
/// problem for a key still running (`Started` included: someone else's claim) or used for
/// another request.
fn verdict(found: IdempotencyBegin) -> Result<Response, Problem> {
    match found {
        IdempotencyBegin::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            Ok(Answer { status, body }.into_response(true))
        }
        IdempotencyBegin::Started | IdempotencyBegin::InFlight => Err(Problem::new(
            StatusCode::CONFLICT,
            "request-in-flight",
            "Request in flight",
        )
        .with_detail("a request with this Idempotency-Key is still running; retry shortly")),
        IdempotencyBegin::Mismatch => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency-Key reused",
        )
        .with_detail("this Idempotency-Key was used for a different request")),
    }
}

/// One request's `Idempotency-Key` and what it must match on a retry.
struct Keyed<'a> {
    user_id: &'a str,
    key: &'a str,
    request_sha256: [u8; 32],
}

impl Keyed<'_> {
    fn answer<'b>(&'b self, answer: &'b Answer, at: DateTime<Utc>) -> IdempotentAnswer<'b> {
        IdempotentAnswer {
            user_id: self.user_id,
            key: self.key,
            scope: CREATE_SCOPE,
            request_sha256: &self.request_sha256,
            status: answer.status.as_u16(),
            body: &answer.body,
            at,
        }
    }
}

/// Why a create wrote nothing.
enum NotMade {
    /// An answer to send (and to record for the key unless it is a 5xx).
    Problem(Problem),
    /// The key was already recorded when the reservation was written.
    KeyTaken,
}

impl From<Problem> for NotMade {
    fn from(problem: Problem) -> Self {
        NotMade::Problem(problem)
    }
}

/// Makes a reservation and allocates a spot; idempotent by `Idempotency-Key`.
#[utoipa::path(
    post,
    path = "/api/v1/reservations",
    tag = "reservations",
    params(("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters (e.g. a UUID); a retry with the same key and body replays the first answer")),
    request_body = CreateBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Made (or replayed: header `Idempotent-Replayed: true`)", body = ReservationOut, headers(("Idempotent-Replayed" = String, description = "`true` when this answer is a replay"))),
        (status = 400, description = "Missing or invalid Idempotency-Key, or malformed JSON (`idempotency-key-required`, `malformed-json`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 409, description = "No spot available, or a request with this key is still running (`no-spot-available`, `request-in-flight`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large (`body-too-large`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON (`json-required`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid times, unknown vehicle, lot, zone or spot, no fitting spot, key reused for another body, wrong body shape (`invalid-times`, `unknown-vehicle`, `unknown-lot`, `unknown-zone`, `unknown-spot`, `no-fitting-spot`, `idempotency-key-reused`, `invalid-body`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let accounts = &state.accounts;
    let store = accounts.store();
    let now = accounts.now();
    let canonical = serde_json::to_vec(&body).map_err(Problem::internal)?;
    let keyed = Keyed {
        user_id: &caller.user.id,
        key: &key,
        request_sha256: Sha256::digest(&canonical).into(),
    };
    // No claim before the work: the key is written with the reservation and its answer, in
    // one statement. A retry of an answered request, or one racing it, fails on the key (after
    // waiting for the first to commit) and replays; so does one refused for what the first
    // did (its spot is gone, its entry time has passed).
    let problem = match create_reservation(&state, &caller, &keyed, body, now).await {
        Ok(made) => return Ok(made.into_response(false)),
        Err(NotMade::KeyTaken) => {
            let found = store
                .idempotent_lookup(
                    keyed.user_id,
                    keyed.key,
                    CREATE_SCOPE,
                    &keyed.request_sha256,
                )
                .await
                .map_err(Problem::internal)?;
            // Gone again since (a key older than a day, purged): let the client retry.
            return verdict(found.unwrap_or(IdempotencyBegin::InFlight));
        }
        Err(NotMade::Problem(problem)) => problem,
    };
    if problem.status >= 500 {
        // Not worth replaying: a retry runs again.
        return Err(problem);
    }
    let answer = Answer::problem(&problem);
    match store
        .record_idempotent(keyed.answer(&answer, accounts.now()))
        .await
        .map_err(Problem::internal)?
    {
        None => Ok(answer.into_response(false)),
        Some(found) => verdict(found),
    }
}

/// Chooses a spot and writes the reservation with its key and answer (one transaction). `Ok`
/// is the 201 answer, already recorded for the key; a problem is not recorded yet.
async fn create_reservation(
    state: &ApiState,
    caller: &Caller,
    keyed: &Keyed<'_>,
    body: CreateBody,
    now: DateTime<Utc>,
) -> Result<Answer, NotMade> {
    let rules = state.reservation_rules;
    rules
        .check(body.starts_at, body.ends_at, now)
        .map_err(time_problem)?;
    let store = state.accounts.store();
    let vehicles = state
        .accounts
        .vehicles_of(&caller.user.id)
        .await
        .map_err(Problem::internal)?;
    let vehicle = vehicles
        .iter()
        .find(|v| v.id == body.vehicle_id)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown-vehicle",
                "Unknown vehicle",
            )
            .with_detail("vehicle_id is not one of your vehicles (GET /api/v1/me/vehicles)")
        })?;
    let engine = state.live.engine();
    let model = engine.model(&body.lot).ok_or_else(|| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown-lot",
            "Unknown lot",
        )
        .with_detail(format!("no lot {}", body.lot))
    })?;
    if let Some(zone) = &body.preferred_zone
        && !model.zones.iter().any(|z| &z.id == zone)
    {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown-zone",
            "Unknown zone",
        )
        .with_detail(format!("lot {} has no zone {zone}", body.lot))
        .into());
    }
    if let Some(spot) = &body.preferred_spot
        && !model.spots.iter().any(|s| &s.id == spot)
    {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown-spot",
            "Unknown spot",
        )
        .with_detail(format!("lot {} has no spot {spot}", body.lot))
        .into());
    }
    let interval = Interval::from_datetimes(body.starts_at, body.ends_at)
        .map_err(|_| time_problem(TimeError::ExitBeforeEntry))?;
    let vehicle_type = vehicle.profile.vehicle_type();
    let mut request = Request::new(vehicle_type, interval);
    request.now = Some(now.timestamp());
    request.preferred_spot = body.preferred_spot.clone();
    request.preferred_zone = body.preferred_zone.clone();
    let occupied_until = now + Duration::minutes(OCCUPIED_HORIZON_MIN);
    let context_from = body.starts_at - Duration::hours(CONTEXT_HOURS);
    let context_to = body.ends_at + Duration::hours(CONTEXT_HOURS);
    let context = Interval::from_datetimes(context_from, context_to)
        .map_err(|_| time_problem(TimeError::ExitBeforeEntry))?;
    let book = &state.book;
    // Whether the lot's bookings around the request were re-read during this request: a
    // refusal is only answered on those (the book may hold bookings that ended elsewhere).
    let mut fresh = false;
    let mut attempts = 0;
    let mut local_races = 0;
    while attempts < ALLOCATION_ATTEMPTS {
        let mut busy = book
            .around(
                store.as_ref(),
                &model,
                |spot| fits(vehicle_type, spot.kind) && !spot.out_of_service,
                interval,
                context,
                now,
            )
            .await
            .map_err(Problem::internal)?;
        // A car standing in a spot now keeps it busy for the near future.
        if body.starts_at < occupied_until
            && let Ok(iv) = Interval::from_datetimes(now, occupied_until)
        {
            for (spot, intervals) in model.spots.iter().zip(&mut busy) {
                if engine
                    .spot(&body.lot, &spot.id)
                    .is_some_and(|live| live.state == SpotState::Occupied)
                {
                    intervals.push(iv);
                }
            }
        }
        let timelines: Vec<Timeline> = busy.into_iter().map(Timeline::from_intervals).collect();
        let candidates = model
            .spots
            .iter()
            .zip(&timelines)
            .map(|(spot, booked)| Candidate { spot, booked });
        let chosen = match allocate(candidates, &request, &Policy::default()) {
            Ok(chosen) => chosen,
            Err(_) if !fresh => {
                fresh = true;
                // Only the bookings overlapping the request decide a refusal: re-read those
                // (a few hundred rows on a full lot, not the thousands within the context).
                book.refresh(
                    store.as_ref(),
                    &body.lot,
                    None,
                    body.starts_at,
                    body.ends_at,
                )
                .await
                .map_err(Problem::internal)?;
                state
                    .reservation_metrics
                    .with_label_values(&["book_reread"])
                    .inc();
                continue;
            }
            Err(refusal) => return Err(refusal_problem(&refusal).into()),
        };
        let row = ReservationRow {
            id: random_id(),
            code: reservation_code(),
            user_id: caller.user.id.clone(),
            vehicle_id: Some(vehicle.id.clone()),
            plate_key: vehicle.plate.key(),
            vehicle_type,
            lot: body.lot.clone(),
            spot: chosen.spot.id.clone(),
            starts_at: body.starts_at,
            ends_at: body.ends_at,
            state: ReservationState::Confirmed,
            created_at: now,
            updated_at: now,
        };
        let answer = Answer {
            status: StatusCode::CREATED,
            body: serde_json::to_string(&out(&row, &rules)).map_err(Problem::internal)?,
        };
        // Concurrent requests of this process see the spot taken from here on; if one of
        // them held it since our read, choose again (no store round trip).
        let Some(hold) = book.hold(&row.lot, &HoldingSpan::of(&row)) else {
            local_races += 1;
            state
                .reservation_metrics
                .with_label_values(&["local_race"])
                .inc();
            if local_races > LOCAL_RACES {
                break;
            }
            continue;
        };
        attempts += 1;
        match store
            .create_reservation(&row, Some(keyed.answer(&answer, now)))
            .await
        {
            Ok(()) => {
                hold.confirm();
                state
                    .reservation_metrics
                    .with_label_values(&["created"])
                    .inc();
                return Ok(answer);
            }
            // Another process (or a path that does not hold) booked that spot between our
            // read and our write: re-read it, choose again.
            Err(StoreError::Conflict(_)) => {
                drop(hold);
                state
                    .reservation_metrics
                    .with_label_values(&["allocation_retry"])
                    .inc();
                book.refresh(
                    store.as_ref(),
                    &row.lot,
                    Some(&row.spot),
                    context_from,
                    context_to,
                )
                .await
                .map_err(Problem::internal)?;
            }
            Err(StoreError::IdempotencyKeyTaken) => return Err(NotMade::KeyTaken),
            Err(error) => return Err(Problem::internal(error).into()),
        }
    }
    Err(Problem::new(
        StatusCode::CONFLICT,
        "no-spot-available",
        "No spot available",
    )
    .with_detail("the lot is being booked very fast right now; retry")
    .into())
}

/// The caller's reservations.
#[derive(Serialize, utoipa::ToSchema)]
struct ReservationList<'a> {
    /// Newest first, at most 200.
    reservations: Vec<ReservationOut<'a>>,
}

/// The caller's reservations, newest first (at most 200).
#[utoipa::path(
    get,
    path = "/api/v1/reservations",
    tag = "reservations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The reservations", body = ReservationList),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
    )
)]
async fn list(State(state): State<ApiState>, caller: Caller) -> Result<Response, Problem> {
    let rows = state
        .accounts
        .store()
        .reservations_of(&caller.user.id, 200)
        .await
        .map_err(Problem::internal)?;
    let rules = state.reservation_rules;
    Ok(Json(ReservationList {
        reservations: rows.iter().map(|r| out(r, &rules)).collect(),
    })
    .into_response())
}

/// The reservation if the caller may see it (its owner, or an operator); otherwise 404, so
/// ids of other people's reservations cannot be probed.
async fn visible(state: &ApiState, caller: &Caller, id: &str) -> Result<ReservationRow, Problem> {
    let found = state
        .accounts
        .store()
        .reservation(id)
        .await
        .map_err(Problem::internal)?;
    match found {
        Some(r) if r.user_id == caller.user.id || caller.user.role.includes(Role::Operator) => {
            Ok(r)
        }
        _ => Err(Problem::not_found("no such reservation of yours")),
    }
}

/// One reservation (its owner, or an operator).
#[utoipa::path(
    get,
    path = "/api/v1/reservations/{id}",
    tag = "reservations",
    params(("id" = String, Path, description = "Reservation id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The reservation", body = ReservationOut),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 404, description = "No such reservation visible to the caller (`not-found`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_one(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let row = visible(&state, &caller, &id).await?;
    Ok(Json(out(&row, &state.reservation_rules)).into_response())
}

/// Cancels a requested or confirmed reservation.
#[utoipa::path(
    post,
    path = "/api/v1/reservations/{id}/cancel",
    tag = "reservations",
    params(("id" = String, Path, description = "Reservation id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled", body = ReservationOut),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 404, description = "No such reservation visible to the caller (`not-found`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not cancellable in its state (`not-cancellable`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn cancel(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let row = visible(&state, &caller, &id).await?;
    let store = state.accounts.store();
    let moved = store
        .transition_reservation(
            &row.id,
            &[ReservationState::Requested, ReservationState::Confirmed],
            ReservationState::Cancelled,
            state.accounts.now(),
        )
        .await
        .map_err(Problem::internal)?;
    if !moved {
        return Err(
            Problem::new(StatusCode::CONFLICT, "not-cancellable", "Not cancellable")
                .with_detail(format!("a {} reservation cannot be cancelled", row.state)),
        );
    }
    state.book.remove(&row.lot, &row.id);
    state
        .reservation_metrics
        .with_label_values(&["cancelled"])
        .inc();
    let row = store
        .reservation(&row.id)
        .await
        .map_err(Problem::internal)?
        .ok_or_else(|| Problem::internal("a cancelled reservation vanished"))?;
    // The cancellation stands whatever the refund does; a refund that failed to start is
    // logged (its payment stays refundable, and an operator can refund it).
    let refunded = match crate::payments::refund_reservation(
        &state,
        &row,
        crate::payments::RefundCause::Cancelled,
    )
    .await
    {
        Ok(amount) => amount,
        Err(problem) => {
            tracing::error!(reservation = %row.id, ?problem, "refund on cancellation failed");
            0
        }
    };
    let mut answer = out(&row, &state.reservation_rules);
    answer.refunded_minor = (refunded > 0).then_some(refunded);
    Ok(Json(answer).into_response())
}

/// New times; an absent one is kept.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ModifyBody {
    /// New expected entry (not once checked in).
    #[serde(default)]
    starts_at: Option<DateTime<Utc>>,
    /// New expected exit.
    #[serde(default)]
    ends_at: Option<DateTime<Utc>>,
}

/// Moves or extends a reservation on its spot.
#[utoipa::path(
    patch,
    path = "/api/v1/reservations/{id}",
    tag = "reservations",
    params(("id" = String, Path, description = "Reservation id")),
    request_body = ModifyBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Modified", body = ReservationOut),
        (status = 400, description = "Malformed JSON (`malformed-json`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 404, description = "No such reservation visible to the caller (`not-found`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not modifiable in its state, or the spot is taken for part of the new time (`not-modifiable`, `spot-taken`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large (`body-too-large`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON (`json-required`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid times or wrong body shape (`invalid-times`, `invalid-body`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn modify(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ModifyBody>,
) -> Result<Response, Problem> {
    let row = visible(&state, &caller, &id).await?;
    let rules = state.reservation_rules;
    let now = state.accounts.now();
    let starts_at = body.starts_at.unwrap_or(row.starts_at);
    let ends_at = body.ends_at.unwrap_or(row.ends_at);
    match row.state {
        ReservationState::Requested | ReservationState::Confirmed => {
            if body.starts_at.is_some() || starts_at >= now - rules.start_slack {
                rules.check(starts_at, ends_at, now).map_err(time_problem)?;
            } else {
                // The start already passed and is kept: only the exit moves.
                check_exit(&rules, starts_at, ends_at, now)?;
            }
        }
        ReservationState::CheckedIn => {
            if starts_at != row.starts_at {
                return Err(time_problem(TimeError::StartInPast)
                    .with_detail("the car is in: only the expected exit can change"));
            }
            check_exit(&rules, starts_at, ends_at, now)?;
        }
        other => {
            return Err(
                Problem::new(StatusCode::CONFLICT, "not-modifiable", "Not modifiable")
                    .with_detail(format!("a {other} reservation cannot change")),
            );
        }
    }
    let store = state.accounts.store();
    match store
        .move_reservation(&row.id, starts_at, ends_at, now)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return Err(
                Problem::new(StatusCode::CONFLICT, "not-modifiable", "Not modifiable")
                    .with_detail("the reservation ended meanwhile"),
            );
        }
        Err(StoreError::Conflict(_)) => {
            return Err(
                Problem::new(StatusCode::CONFLICT, "spot-taken", "Spot taken then").with_detail(
                    "the spot is reserved by someone else for part of the new time; \
                 cancel and book again to get another spot",
                ),
            );
        }
        Err(error) => return Err(Problem::internal(error)),
    }
    state
        .reservation_metrics
        .with_label_values(&["modified"])
        .inc();
    let row = store
        .reservation(&row.id)
        .await
        .map_err(Problem::internal)?
        .ok_or_else(|| Problem::internal("a modified reservation vanished"))?;
    if row.state.holds_spot() {
        state.book.add(&row.lot, &HoldingSpan::of(&row));
    } else {
        state.book.remove(&row.lot, &row.id);
    }
    Ok(Json(out(&row, &rules)).into_response())
}

fn check_exit(
    rules: &TimeRules,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), Problem> {
    if ends_at <= now || ends_at <= starts_at {
        return Err(time_problem(TimeError::ExitBeforeEntry)
            .with_detail("the expected exit must be in the future"));
    }
    if ends_at - starts_at > rules.max_duration {
        return Err(time_problem(TimeError::TooLong(
            rules.max_duration.num_hours(),
        )));
    }
    Ok(())
}

/// Marks overdue reservations as no-shows and makes live availability show the spots of
/// reservations starting within `hold_window` as held (and releases the others). Returns the
/// no-shows. Run about every 30 s by the binary; tests call it with a manual clock.
///
/// `also_held` are further spots to keep held per lot (cars that entered through a gate and
/// have not been seen parking in their assigned spot yet).
pub async fn sweep(
    state: &ApiState,
    hold_window: Duration,
    also_held: &HashMap<LotId, Vec<SpotId>>,
) -> Result<Vec<ReservationRow>, StoreError> {
    let store = state.accounts.store();
    let now = state.accounts.now();
    let rules = state.reservation_rules;
    let no_shows = store.mark_no_shows(now - rules.grace, now).await?;
    for row in &no_shows {
        state.book.remove(&row.lot, &row.id);
        tracing::info!(reservation = %row.id, lot = %row.lot, spot = %row.spot, "no-show: spot released");
        // A prepaid no-show gets back its prepayment less the lot's no-show fee.
        if let Err(problem) =
            crate::payments::refund_reservation(state, row, crate::payments::RefundCause::NoShow)
                .await
        {
            tracing::error!(reservation = %row.id, ?problem, "no-show refund failed");
        }
    }
    // Pick up what other paths (gates) and other instances changed; the holds below do not
    // depend on it.
    if let Err(error) = state.book.refresh_loaded(store.as_ref(), now).await {
        tracing::warn!(%error, "re-reading the reservation book failed");
    }
    state
        .reservation_metrics
        .with_label_values(&["no_show"])
        .inc_by(no_shows.len() as u64);
    let engine = state.live.engine();
    for lot in engine.lot_ids() {
        let Some(model) = engine.model(&lot) else {
            continue;
        };
        let upcoming = store
            .holding_between(&lot, now, now + hold_window + Duration::seconds(1))
            .await?;
        let held: std::collections::HashSet<&SpotId> = upcoming
            .iter()
            .filter(|r| {
                matches!(
                    r.state,
                    ReservationState::Requested | ReservationState::Confirmed
                ) && r.starts_at - hold_window <= now
            })
            .map(|r| &r.spot)
            .chain(also_held.get(&lot).into_iter().flatten())
            .collect();
        for spot in &model.spots {
            engine.set_held(&lot, &spot.id, held.contains(&spot.id), now);
        }
    }
    Ok(no_shows)
}

/// The metrics of reservations: `parkd_reservations_total{event}`.
pub fn metrics(registry: &prometheus::Registry) -> prometheus::Result<prometheus::IntCounterVec> {
    let counter = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "parkd_reservations_total",
            "Reservation events: created, cancelled, modified, no_show, local_race (a \
             concurrent request of this instance held the chosen spot first; chosen again), \
             allocation_retry (the store refused the chosen spot: booked meanwhile elsewhere), \
             book_reread (a refusal re-read the lot's bookings first)",
        ),
        &["event"],
    )?;
    registry.register(Box::new(counter.clone()))?;
    Ok(counter)
}
