//! Tariffs over HTTP: a lot's tariff (anyone may read it, operators set it) and price quotes
//! for a stay before it is paid. The pricing rules are `parkd_core::tariff`'s; the operator's
//! guide is `docs/tariffs.md`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use parkd_core::account::Role;
use parkd_core::ids::LotId;
use parkd_core::tariff::{Occupant, Quote, QuoteError, Tariff, quote_stay};
use parkd_core::vehicle::{SpotKind, VehicleType, fits};
use parkd_store::StoreError;
use serde::Serialize;

use crate::ApiState;
use crate::auth::{ApiJson, Caller};
use crate::live::{bad_parameter, lot_of, unknown_lot};
use crate::problem::Problem;

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/lots/{lot}/tariff", get(get_tariff).put(put_tariff))
        .route("/api/v1/lots/{lot}/quote", get(quote))
}

/// A lot's tariff as stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TariffOut {
    /// The lot.
    #[schema(value_type = String)]
    lot: LotId,
    /// 1 for the lot's first tariff, then one more per replacement.
    version: i64,
    /// When it was last set.
    updated_at: DateTime<Utc>,
    /// The tariff (docs/tariffs.md).
    tariff: Tariff,
}

fn no_tariff(lot: &LotId) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no-tariff", "No tariff")
        .with_detail(format!("lot {lot} has no tariff: parking there is free"))
}

/// The lot's tariff, or `None` when it has none (parking is free).
pub(crate) async fn tariff_of(
    state: &ApiState,
    lot: &LotId,
) -> Result<Option<(Tariff, i64, DateTime<Utc>)>, Problem> {
    let Some(row) = state
        .accounts
        .store()
        .tariff(lot)
        .await
        .map_err(Problem::internal)?
    else {
        return Ok(None);
    };
    // Stored only after validation: a document that no longer parses is a server fault.
    let tariff = Tariff::from_json(row.tariff_json.as_bytes())
        .map_err(|e| Problem::internal(format!("stored tariff of {lot}: {e}")))?;
    Ok(Some((tariff, row.version, row.updated_at)))
}

/// The lot's tariff (public: prices are shown before anyone books).
#[utoipa::path(
    get,
    path = "/api/v1/lots/{lot}/tariff",
    tag = "tariffs",
    params(("lot" = String, Path, description = "Lot id")),
    responses(
        (status = 200, description = "The tariff", body = TariffOut),
        (status = 404, description = "Unknown lot, or the lot has no tariff and is free (`unknown-lot`, `no-tariff`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_tariff(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, Problem> {
    let (lot, _) = lot_of(&state.live, &raw)?;
    let (tariff, version, updated_at) = tariff_of(&state, &lot)
        .await?
        .ok_or_else(|| no_tariff(&lot))?;
    Ok(Json(TariffOut {
        lot,
        version,
        updated_at,
        tariff,
    })
    .into_response())
}

/// Sets the lot's tariff (operator role). The document is checked whole (docs/tariffs.md); a
/// refused one changes nothing. Each tariff set is in the lot's operator actions
/// (`tariff_set`, with its version and the whole document).
#[utoipa::path(
    put,
    path = "/api/v1/lots/{lot}/tariff",
    tag = "tariffs",
    params(("lot" = String, Path, description = "Lot id")),
    request_body = Tariff,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Set; the new version", body = TariffOut),
        (status = 400, description = "Malformed JSON (`malformed-json`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 403, description = "Not an operator (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown lot (`unknown-lot`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large (`body-too-large`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON (`json-required`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong shape or an invalid rule, with the field named (`invalid-body`, `invalid-tariff`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn put_tariff(
    State(state): State<ApiState>,
    caller: Caller,
    Path(raw): Path<String>,
    ApiJson(tariff): ApiJson<Tariff>,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let (lot, _) = lot_of(&state.live, &raw)?;
    tariff.validate().map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-tariff",
            "Invalid tariff",
        )
        .with_detail(e.to_string())
    })?;
    let json = serde_json::to_string(&tariff).map_err(Problem::internal)?;
    let now = state.accounts.now();
    let version = state
        .accounts
        .store()
        .put_tariff(&lot, &json, now)
        .await
        .map_err(|error| match error {
            // Live but not (or no longer) in the database: removed meanwhile.
            StoreError::Conflict(_) => unknown_lot(lot.as_str()),
            other => Problem::internal(other),
        })?;
    // The audit trail keeps every tariff ever set, whole: the tariffs table keeps only the
    // one in force (each payment keeps the quote it came from).
    state
        .accounts
        .store()
        .record_operator_action(&parkd_store::OperatorAction {
            id: crate::reservations::random_id(),
            at: now,
            user_id: caller.user.id.clone(),
            lot: lot.clone(),
            gate: None,
            action: "tariff_set".into(),
            reason: format!("version {version}: {json}"),
        })
        .await
        .map_err(Problem::internal)?;
    tracing::info!(%lot, version, user = %caller.user.id, "tariff set");
    Ok(Json(TariffOut {
        lot,
        version,
        updated_at: now,
        tariff,
    })
    .into_response())
}

fn quote_problem(error: &QuoteError) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-quote",
        "Cannot price this stay",
    )
    .with_detail(error.to_string())
}

/// The price of a stay from `from` to `to` by the lot's tariff, itemised (public).
#[utoipa::path(
    get,
    path = "/api/v1/lots/{lot}/quote",
    tag = "tariffs",
    params(
        ("lot" = String, Path, description = "Lot id"),
        ("from" = String, Query, description = "Entry (RFC 3339)"),
        ("to" = String, Query, description = "Exit (RFC 3339)"),
        ("vehicle" = Option<String>, Query, description = "Vehicle type (default `car`)"),
        ("kind" = Option<String>, Query, description = "Spot kind (default `standard` if the vehicle fits one, else the first kind it fits)"),
    ),
    responses(
        (status = 200, description = "The quote; its lines add up to `total`", body = Quote),
        (status = 400, description = "A missing or malformed parameter (`invalid-parameter`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown lot, or no tariff: parking there is free (`unknown-lot`, `no-tariff`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Exit before entry, a stay too long to price, a kind the vehicle does not fit (`invalid-quote`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn quote(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    if let Some(unknown) = query
        .keys()
        .find(|k| !["from", "to", "vehicle", "kind"].contains(&k.as_str()))
    {
        return Err(bad_parameter(format!(
            "unknown parameter {unknown:?} (from, to, vehicle, kind)"
        )));
    }
    let time = |name: &str| -> Result<DateTime<Utc>, Problem> {
        let value = query
            .get(name)
            .ok_or_else(|| bad_parameter(format!("{name} is required (RFC 3339)")))?;
        DateTime::parse_from_rfc3339(value)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| bad_parameter(format!("{name} must be an RFC 3339 time")))
    };
    let (from, to) = (time("from")?, time("to")?);
    let vehicle = match query.get("vehicle") {
        None => VehicleType::Car,
        Some(raw) => serde_json::from_value(serde_json::Value::String(raw.clone()))
            .map_err(|_| bad_parameter(format!("unknown vehicle type {raw:?}")))?,
    };
    let requested_kind: Option<SpotKind> = match query.get("kind") {
        None => None,
        Some(raw) => Some(
            serde_json::from_value(serde_json::Value::String(raw.clone()))
                .map_err(|_| bad_parameter(format!("unknown spot kind {raw:?}")))?,
        ),
    };
    let (lot, model) = lot_of(&state.live, &raw)?;
    let (tariff, _, _) = tariff_of(&state, &lot)
        .await?
        .ok_or_else(|| no_tariff(&lot))?;
    let kind = match requested_kind {
        Some(kind) if fits(vehicle, kind) => kind,
        Some(kind) => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-quote",
                "Cannot price this stay",
            )
            .with_detail(format!("a {vehicle} does not fit a {kind} spot")));
        }
        None => vehicle.usual_kind(),
    };
    let tz = model
        .zone()
        .ok_or_else(|| Problem::internal(format!("lot {lot} has an unknown time zone")))?;
    let priced = quote_stay(&tariff, tz, from, to, Occupant::new(kind, vehicle), None)
        .map_err(|e| quote_problem(&e))?;
    Ok(Json(priced).into_response())
}
