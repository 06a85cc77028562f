//! Payments over HTTP: what a reservation or a running stay costs, paying it (in advance, or
//! at exit from the app), confirming a payment after the customer's action, and receipts.
//!
//! Every payment call carries an `Idempotency-Key`; a retry replays the first answer and never
//! reaches the provider twice. Below that, each payment has its own provider idempotency key
//! derived from its id, so even a replay that missed our record cannot charge twice.
//!
//! Bodies are scanned for card data before anything parses, logs or stores them
//! (`parkd_payments::guard`): a card number or a security code is refused with 422
//! `card-data-refused` and counted. parkd keeps the provider's token, brand and last four only.
//!
//! Outcomes (docs/payments.md): 201 paid; 202 pending (the customer must act, or the provider's
//! answer is unknown and the reconciler will find out, never charging twice); 402 declined.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use parkd_core::account::Role;
use parkd_core::reservation::ReservationState;
use parkd_core::tariff::{Currency, Money, Occupant, Quote, ReservedPeriod, quote_reservation};
use parkd_gates::{Bill, ChargeError, ExitCharge};
use parkd_payments::{
    CreateIntent, IdempotencyKey, IntentStatus, Metadata, NextAction, PaymentIntent,
    PaymentMethodToken, Provider, ProviderError,
};
use parkd_store::{
    CardRef, PaymentPurpose, PaymentRow, PaymentStatus, PaymentUpdate, RefundRow, Store,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ApiState;
use crate::auth::{ApiJson, Caller};
use crate::live::lot_of;
use crate::problem::Problem;
use crate::reservations::{Answer, claim, idempotency_key};

/// What the payment routes need.
#[derive(Debug, Clone)]
pub struct PaymentsApi {
    /// The payment provider.
    pub provider: Arc<dyn Provider>,
    /// Bills of running stays (the same the exit gates use).
    pub charge: Arc<dyn ExitCharge>,
    /// `parkd_payments_total{purpose,outcome}` and refused card data.
    pub metrics: PaymentMetrics,
    /// Stripe's webhook endpoint (`None`: `POST /api/v1/payments/webhooks/stripe` answers 404).
    pub webhook: Option<crate::webhooks::StripeWebhook>,
}

/// The payment counters.
#[derive(Debug, Clone)]
pub struct PaymentMetrics {
    outcomes: prometheus::IntCounterVec,
    card_data_refused: prometheus::IntCounter,
}

impl PaymentMetrics {
    /// Registers the counters.
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let outcomes = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "parkd_payments_total",
                "Payment attempts, by purpose and outcome",
            ),
            &["purpose", "outcome"],
        )?;
        let card_data_refused = prometheus::IntCounter::new(
            "parkd_payments_card_data_refused_total",
            "Request bodies refused because they carried a card number or security code",
        )?;
        registry.register(Box::new(outcomes.clone()))?;
        registry.register(Box::new(card_data_refused.clone()))?;
        Ok(Self {
            outcomes,
            card_data_refused,
        })
    }
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/reservations/{id}/quote", get(reservation_quote))
        .route("/api/v1/reservations/{id}/payments", post(pay_reservation))
        .route("/api/v1/sessions/{id}/bill", get(session_bill))
        .route("/api/v1/sessions/{id}/payments", post(pay_session))
        .route("/api/v1/payments/{id}", get(receipt))
        .route("/api/v1/payments/{id}/confirm", post(confirm))
}

/// Idempotency scope of a payment.
const PAY_SCOPE: &str = "payment";
/// Idempotency scope of a confirmation.
const CONFIRM_SCOPE: &str = "payment-confirm";

fn payments_of(state: &ApiState) -> Result<&PaymentsApi, Problem> {
    state.payments.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "payments-unavailable",
            "Payments unavailable",
        )
        .with_detail("this server takes no payments")
    })
}

/// Paying a reservation or a stay.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PayBody {
    /// The provider's payment-method token (never a card number: refused).
    payment_method: String,
    /// The amount the customer was shown, in minor units; refused if it is no longer what is
    /// due (`amount-mismatch`), so nobody pays a price they did not see.
    #[serde(default)]
    amount_minor: Option<i64>,
    /// The currency the customer was shown; refused if it is not the tariff's.
    #[serde(default)]
    currency: Option<String>,
    /// Where the provider sends the customer back after a redirect (3-D Secure).
    #[serde(default)]
    return_url: Option<String>,
}

/// A payment, as its receipt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PaymentOut {
    /// The payment id.
    id: String,
    /// `reservation`, `exit` or `no_show_fee`.
    purpose: String,
    /// `created`, `requires_action`, `processing`, `succeeded`, `failed`, `cancelled`,
    /// `pending_unknown`.
    status: String,
    /// The lot.
    lot: String,
    /// The reservation paid for.
    #[serde(skip_serializing_if = "Option::is_none")]
    reservation_id: Option<String>,
    /// The stay paid for.
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    /// The amount, in minor units.
    amount_minor: i64,
    /// Refunded or being refunded, in minor units.
    amount_refunded_minor: i64,
    /// The currency (ISO 4217, upper case).
    currency: Currency,
    /// The card's network, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    card_brand: Option<String>,
    /// The card's last four digits, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    card_last4: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<String>,
    /// What the customer must do next (status `requires_action`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    next_action: Option<NextAction>,
    /// The itemised price the amount came from.
    #[schema(value_type = Object)]
    quote: serde_json::Value,
    /// Its refunds.
    refunds: Vec<RefundOut>,
    /// Created.
    created_at: DateTime<Utc>,
    /// Last changed.
    updated_at: DateTime<Utc>,
}

/// A refund on a receipt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RefundOut {
    /// The refund id.
    id: String,
    /// In minor units.
    amount_minor: i64,
    /// `pending`, `succeeded` or `failed`.
    status: String,
    /// When it was asked for.
    created_at: DateTime<Utc>,
}

fn payment_out(row: &PaymentRow, refunds: &[RefundRow], next: Option<NextAction>) -> PaymentOut {
    PaymentOut {
        id: row.id.clone(),
        purpose: row.purpose.as_str().to_owned(),
        status: row.status.as_str().to_owned(),
        lot: row.lot.to_string(),
        reservation_id: row.reservation_id.clone(),
        session_id: row.session_id.clone(),
        amount_minor: row.amount_minor,
        amount_refunded_minor: row.amount_refunded_minor,
        currency: row.currency.clone(),
        card_brand: row.method.as_ref().map(|m| m.brand.clone()),
        card_last4: row.method.as_ref().map(|m| m.last4.clone()),
        failure_reason: row.failure_reason.clone(),
        next_action: next,
        quote: serde_json::from_str(&row.quote_json).unwrap_or(serde_json::Value::Null),
        refunds: refunds
            .iter()
            .map(|r| RefundOut {
                id: r.id.clone(),
                amount_minor: r.amount_minor,
                status: r.status.as_str().to_owned(),
                created_at: r.created_at,
            })
            .collect(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

fn random_id() -> String {
    format!("pay_{}", crate::reservations::random_id())
}

fn quote_failed(error: &ChargeError) -> Problem {
    match error {
        ChargeError::Quote(e) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-quote",
            "Cannot price this stay",
        )
        .with_detail(e.to_string()),
        other => Problem::internal(other),
    }
}

fn nothing_due(detail: &str) -> Problem {
    Problem::new(StatusCode::CONFLICT, "nothing-due", "Nothing due").with_detail(detail)
}

/// What prices a reservation: its lot's time zone, its period, and who sits on which kind
/// of spot.
fn reservation_terms(
    model: &parkd_core::garage::Lot,
    reservation: &parkd_store::ReservationRow,
) -> Result<(chrono_tz::Tz, ReservedPeriod, Occupant), Problem> {
    let tz = model
        .zone()
        .ok_or_else(|| Problem::internal(format!("lot {} has an unknown time zone", model.id)))?;
    let kind = model
        .spot(&reservation.spot)
        .map_or(reservation.vehicle_type.usual_kind(), |s| s.kind);
    let period = ReservedPeriod {
        starts_at: reservation.starts_at,
        ends_at: reservation.ends_at,
    };
    Ok((tz, period, Occupant::new(kind, reservation.vehicle_type)))
}

/// The reservation's price, and what was already paid for it.
async fn price_reservation(
    state: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<(parkd_store::ReservationRow, Quote, i64), Problem> {
    let store = state.accounts.store();
    let reservation = store
        .reservation(id)
        .await
        .map_err(Problem::internal)?
        .ok_or_else(|| Problem::not_found("no such reservation"))?;
    if reservation.user_id != caller.user.id && !caller.user.role.includes(Role::Operator) {
        // Someone else's reservation is as good as absent.
        return Err(Problem::not_found("no such reservation"));
    }
    let (lot, model) = lot_of(&state.live, reservation.lot.as_str())?;
    let (tariff, _, _) = crate::tariffs::tariff_of(state, &lot)
        .await?
        .ok_or_else(|| nothing_due("the lot has no tariff: parking there is free"))?;
    let (tz, period, occupant) = reservation_terms(&model, &reservation)?;
    let quote = quote_reservation(&tariff, tz, period, occupant)
        .map_err(|e| quote_failed(&ChargeError::Quote(e)))?;
    let paid = store
        .payments_of_reservation(&reservation.id)
        .await
        .map_err(Problem::internal)?
        .iter()
        .filter(|p| p.purpose == PaymentPurpose::Reservation)
        .map(|p| parkd_gates::charge::net_paid(p, &quote.currency))
        .sum();
    Ok((reservation, quote, paid))
}

/// A reservation's price and what is left to pay.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ReservationQuoteOut {
    /// The itemised price of the reserved period.
    #[schema(value_type = Object)]
    quote: Quote,
    /// Paid so far, net of refunds.
    paid_minor: i64,
    /// Still to pay in advance.
    due_minor: i64,
}

/// What a reservation costs, and what is left to pay in advance.
#[utoipa::path(
    get,
    path = "/api/v1/reservations/{id}/quote",
    tag = "payments",
    params(("id" = String, Path, description = "Reservation id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The price", body = ReservationQuoteOut),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such reservation (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The lot is free (`nothing-due`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn reservation_quote(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ReservationQuoteOut>, Problem> {
    let (_, quote, paid) = price_reservation(&state, &caller, &id).await?;
    let Money(total) = quote.total;
    Ok(Json(ReservationQuoteOut {
        due_minor: (total - paid).max(0),
        paid_minor: paid,
        quote,
    }))
}

/// The stay's bill, or 404 for a stay that is not the caller's.
async fn bill_of(
    state: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<(parkd_store::ParkingSession, Bill), Problem> {
    let pay = payments_of(state)?;
    let store = state.accounts.store();
    let session = store
        .parking_session(id)
        .await
        .map_err(Problem::internal)?
        .ok_or_else(|| Problem::not_found("no such parking session"))?;
    if session.user_id.as_deref() != Some(caller.user.id.as_str())
        && !caller.user.role.includes(Role::Operator)
    {
        return Err(Problem::not_found("no such parking session"));
    }
    if session.exited_at.is_some() {
        return Err(nothing_due("the stay has ended"));
    }
    let bill = pay
        .charge
        .bill(&session, state.accounts.now())
        .await
        .map_err(|e| quote_failed(&e))?
        .ok_or_else(|| nothing_due("the lot has no tariff: parking there is free"))?;
    Ok((session, bill))
}

/// What a running stay costs if the car leaves now, and what is left to pay.
#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}/bill",
    tag = "payments",
    params(("id" = String, Path, description = "Parking session id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The bill", body = Object),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such stay (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The stay has ended, or the lot is free (`nothing-due`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This server takes no payments (`payments-unavailable`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn session_bill(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Bill>, Problem> {
    Ok(Json(bill_of(&state, &caller, &id).await?.1))
}

/// The body, checked for card data first, then read as a [`PayBody`].
fn pay_body(pay: &PaymentsApi, raw: serde_json::Value) -> Result<PayBody, Problem> {
    if let Err(found) = parkd_payments::guard::refuse_card_data(&raw) {
        pay.metrics.card_data_refused.inc();
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "card-data-refused",
            "Card data refused",
        )
        .with_detail(format!(
            "{found}: parkd never accepts card numbers or security codes; send the payment \
             provider's token"
        )));
    }
    serde_json::from_value(raw).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid body",
        )
        .with_detail(e.to_string())
    })
}

/// Runs `work` once per `Idempotency-Key`: a retry replays the first answer.
async fn idempotent<F>(
    state: &ApiState,
    caller: &Caller,
    headers: &HeaderMap,
    scope: &str,
    request: &impl Serialize,
    work: F,
) -> Result<Response, Problem>
where
    F: std::future::Future<Output = Result<Answer, Problem>>,
{
    let key = idempotency_key(headers)?;
    let store = state.accounts.store();
    let canonical = serde_json::to_vec(request).map_err(Problem::internal)?;
    let hash: [u8; 32] = Sha256::digest(&canonical).into();
    let claimed = claim(
        store.as_ref(),
        &caller.user.id,
        &key,
        scope,
        &hash,
        state.accounts.now(),
    )
    .await?;
    if let Some(replay) = claimed {
        return Ok(replay);
    }
    let answer = work
        .await
        .unwrap_or_else(|problem| Answer::problem(&problem));
    if answer.status.is_server_error() {
        let _ = store.abandon_idempotent(&caller.user.id, &key).await;
    } else {
        store
            .finish_idempotent(
                &caller.user.id,
                &key,
                answer.status.as_u16(),
                &answer.body,
                state.accounts.now(),
            )
            .await
            .map_err(Problem::internal)?;
    }
    Ok(answer.into_response(false))
}

/// The shown amount and currency must be what is due. The shown currency is the client's
/// text, taken in any case (`eur` is EUR), as it always was.
fn check_shown(body: &PayBody, due: i64, currency: &Currency) -> Result<(), Problem> {
    if let Some(shown) = &body.currency
        && !shown.eq_ignore_ascii_case(currency.as_str())
    {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "currency-mismatch",
            "Currency mismatch",
        )
        .with_detail(format!("the tariff charges {currency}, not {shown}")));
    }
    if let Some(shown) = body.amount_minor
        && shown != due
    {
        return Err(
            Problem::new(StatusCode::CONFLICT, "amount-mismatch", "Amount changed").with_detail(
                format!(
                    "{due} {currency} minor units are due, not {shown}: show the customer the new \
             amount and pay that"
                ),
            ),
        );
    }
    Ok(())
}

/// What a payment pays.
#[derive(Debug, Clone, Copy)]
enum BillOf<'a> {
    /// A reservation, in advance (its id).
    Reservation(&'a str),
    /// A running stay, at exit (the parking session's id).
    Stay(&'a str),
}

/// A payable reservation, its price and what is left to pay (more than zero).
async fn reservation_due(
    state: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<(parkd_store::ReservationRow, Quote, i64), Problem> {
    let (reservation, quote, paid) = price_reservation(state, caller, id).await?;
    if !matches!(
        reservation.state,
        ReservationState::Confirmed | ReservationState::CheckedIn
    ) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not-payable",
            "Not payable",
        )
        .with_detail(format!("the reservation is {}", reservation.state.as_str())));
    }
    let Money(total) = quote.total;
    if total - paid <= 0 {
        return Err(nothing_due("the reservation is paid"));
    }
    Ok((reservation, quote, total - paid))
}

/// A running stay and its bill, with something left to pay.
async fn session_due(
    state: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<(parkd_store::ParkingSession, Bill), Problem> {
    let (session, bill) = bill_of(state, caller, id).await?;
    if bill.due_minor <= 0 {
        return Err(nothing_due("the stay is paid"));
    }
    Ok((session, bill))
}

/// Pays a reservation in advance.
#[utoipa::path(
    post,
    path = "/api/v1/reservations/{id}/payments",
    tag = "payments",
    params(
        ("id" = String, Path, description = "Reservation id"),
        ("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters; a retry with the same key and body replays the first answer and never charges twice"),
    ),
    request_body = PayBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Paid", body = PaymentOut),
        (status = 202, description = "Pending: the customer must act (`next_action`), or the provider's answer is unknown and is being reconciled", body = PaymentOut),
        (status = 400, description = "Missing Idempotency-Key, malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Declined (`payment-declined`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such reservation (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing due, already paid, the amount changed, another payment of this reservation is still open, or a request with this key is running (`nothing-due`, `amount-mismatch`, `payment-in-progress`, `request-in-flight`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Card data in the body, another currency, a bad token, the reservation is over, the key was used for another body (`card-data-refused`, `currency-mismatch`, `invalid-payment-method`, `not-payable`, `idempotency-key-reused`, `invalid-body`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This server takes no payments (`payments-unavailable`), or an abandoned 3-D Secure attempt could not be cancelled (`provider-unavailable`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn pay_reservation(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(raw): ApiJson<serde_json::Value>,
) -> Result<Response, Problem> {
    let pay = payments_of(&state)?;
    let body = pay_body(pay, raw)?;
    let request = (&id, &body);
    idempotent(&state, &caller, &headers, PAY_SCOPE, &request, async {
        let (reservation, quote, due) = reservation_due(&state, &caller, &id).await?;
        check_shown(&body, due, &quote.currency)?;
        let row = new_payment(
            &caller,
            reservation.lot.clone(),
            PaymentPurpose::Reservation,
            due,
            &quote,
            (Some(reservation.id.clone()), None),
            pay.provider.name(),
            state.accounts.now(),
        )?;
        charge(&state, pay, row, &body, (&caller, BillOf::Reservation(&id))).await
    })
    .await
}

/// Pays a running stay (at exit, from the app): what is due now. The exit gate then opens
/// if the car leaves within the exit grace.
#[utoipa::path(
    post,
    path = "/api/v1/sessions/{id}/payments",
    tag = "payments",
    params(
        ("id" = String, Path, description = "Parking session id"),
        ("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters; a retry with the same key and body replays the first answer and never charges twice"),
    ),
    request_body = PayBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Paid", body = PaymentOut),
        (status = 202, description = "Pending (customer action, or an unknown answer being reconciled)", body = PaymentOut),
        (status = 400, description = "Missing Idempotency-Key, malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Declined (`payment-declined`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such stay (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing due, the amount changed, another payment of this stay is still open, a request with this key is running (`nothing-due`, `amount-mismatch`, `payment-in-progress`, `request-in-flight`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Card data, another currency, a bad token, key reused (`card-data-refused`, `currency-mismatch`, `invalid-payment-method`, `idempotency-key-reused`, `invalid-body`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This server takes no payments (`payments-unavailable`), or an abandoned 3-D Secure attempt could not be cancelled (`provider-unavailable`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn pay_session(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(raw): ApiJson<serde_json::Value>,
) -> Result<Response, Problem> {
    let pay = payments_of(&state)?;
    let body = pay_body(pay, raw)?;
    let request = (&id, &body);
    idempotent(&state, &caller, &headers, PAY_SCOPE, &request, async {
        let (session, bill) = session_due(&state, &caller, &id).await?;
        check_shown(&body, bill.due_minor, &bill.currency)?;
        let row = new_payment(
            &caller,
            session.lot.clone(),
            PaymentPurpose::Exit,
            bill.due_minor,
            &bill.quote,
            (session.reservation_id.clone(), Some(session.id.clone())),
            pay.provider.name(),
            state.accounts.now(),
        )?;
        charge(&state, pay, row, &body, (&caller, BillOf::Stay(&id))).await
    })
    .await
}

#[allow(clippy::too_many_arguments)]
fn new_payment(
    caller: &Caller,
    lot: parkd_core::ids::LotId,
    purpose: PaymentPurpose,
    amount_minor: i64,
    quote: &Quote,
    (reservation_id, session_id): (Option<String>, Option<String>),
    provider: &str,
    now: DateTime<Utc>,
) -> Result<PaymentRow, Problem> {
    Ok(PaymentRow {
        id: random_id(),
        user_id: Some(caller.user.id.clone()),
        // An exit payment names its session only (the reservation's own payment is separate).
        reservation_id: if purpose == PaymentPurpose::Exit {
            None
        } else {
            reservation_id
        },
        session_id,
        lot,
        purpose,
        amount_minor,
        currency: quote.currency.clone(),
        provider: provider.to_owned(),
        provider_intent_id: None,
        status: PaymentStatus::Created,
        failure_reason: None,
        method: None,
        amount_refunded_minor: 0,
        quote_json: serde_json::to_string(quote).map_err(Problem::internal)?,
        created_at: now,
        updated_at: now,
        requested_method: None,
    })
}

/// Every state a payment may be in before its outcome is known.
const OPEN: [PaymentStatus; 5] = [
    PaymentStatus::Created,
    PaymentStatus::RequiresAction,
    PaymentStatus::Processing,
    PaymentStatus::PendingUnknown,
    PaymentStatus::Failed,
];

/// A payment that cannot be turned into a provider request (its row was checked when it was
/// created, so this is a bug or a corrupt row).
#[derive(Debug, thiserror::Error)]
#[error("payment {payment}: cannot build the provider request: {reason}")]
pub(crate) struct IntentRequestError {
    payment: String,
    reason: String,
}

/// The provider request that creates and confirms a payment's intent: the one definition
/// shared by [`charge`] and the reconciler, which re-sends it (same idempotency key, same
/// parameters) when the first answer was lost, so the provider replays the original intent
/// instead of charging again.
pub(crate) fn create_intent_request(
    row: &PaymentRow,
    token: PaymentMethodToken,
) -> Result<CreateIntent, IntentRequestError> {
    let error = |reason: String| IntentRequestError {
        payment: row.id.clone(),
        reason,
    };
    let mut metadata = Metadata::new()
        .with("payment_id", row.id.clone())
        .map_err(|e| error(e.to_string()))?;
    if let Some(r) = &row.reservation_id {
        metadata = metadata
            .with("reservation_id", r.clone())
            .map_err(|e| error(e.to_string()))?;
    }
    if let Some(s) = &row.session_id {
        metadata = metadata
            .with("session_id", s.clone())
            .map_err(|e| error(e.to_string()))?;
    }
    Ok(CreateIntent {
        amount_minor: u64::try_from(row.amount_minor).map_err(|e| error(e.to_string()))?,
        currency: row.currency.clone(),
        idempotency_key: IdempotencyKey::parse(format!("parkd-{}-create", row.id))
            .map_err(|e| error(e.to_string()))?,
        metadata,
        payment_method: Some(token),
        confirm: true,
    })
}

/// Records the payment, asks the provider, records the outcome; the answer to send.
///
/// At most one payment of a bill is in flight (the store refuses a second while the first is
/// open: 409 `payment-in-progress`), except that an abandoned 3-D Secure attempt is cancelled
/// at the provider to make way. Once this payment holds the bill, `due_now` prices it again:
/// a payment that settled between the first pricing and the record would otherwise be paid
/// twice (`bill` says what is paid, as the caller sees it). If the amount moved, this payment is withdrawn before the provider hears of it.
async fn charge(
    state: &ApiState,
    pay: &PaymentsApi,
    mut row: PaymentRow,
    body: &PayBody,
    (caller, bill): (&Caller, BillOf<'_>),
) -> Result<Answer, Problem> {
    let token = PaymentMethodToken::parse(body.payment_method.clone()).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-payment-method",
            "Invalid payment method",
        )
        .with_detail(e.to_string())
    })?;
    row.requested_method = Some(token.as_str().to_owned());
    let store = state.accounts.store();
    record_exclusive(state, pay, &row).await?;
    let due_now = match bill {
        BillOf::Reservation(id) => reservation_due(state, caller, id).await.map(|(_, _, d)| d),
        BillOf::Stay(id) => session_due(state, caller, id)
            .await
            .map(|(_, b)| b.due_minor),
    };
    match due_now {
        Ok(due) if due == row.amount_minor => {}
        other => {
            withdraw(store.as_ref(), &row, state.accounts.now()).await?;
            return Err(match other {
                Ok(due) => Problem::new(StatusCode::CONFLICT, "amount-mismatch", "Amount changed")
                    .with_detail(format!(
                        "{due} {} minor units are due now, not {}: another payment settled \
                         meanwhile; show the customer the new amount",
                        row.currency.as_str(),
                        row.amount_minor
                    )),
                Err(problem) => problem,
            });
        }
    }
    let request = create_intent_request(&row, token).map_err(Problem::internal)?;
    let purpose = row.purpose.as_str();
    let answer = pay.provider.create_intent(&request).await;
    let now = state.accounts.now();
    let next = match &answer {
        Ok(intent) => intent.next_action.clone(),
        Err(ProviderError::RequiresAction { next_action, .. }) => next_action.clone(),
        Err(_) => None,
    };
    let stored = match answer {
        Ok(intent) => {
            apply_intent(store.as_ref(), pay.provider.as_ref(), &row.id, &intent, now).await?
        }
        Err(error) => apply_error(store.as_ref(), &row.id, &error, now).await?,
    };
    pay.metrics
        .outcomes
        .with_label_values(&[purpose, stored.status.as_str()])
        .inc();
    match stored.status {
        PaymentStatus::Failed => Err(declined(&stored)),
        status => {
            let code = if status == PaymentStatus::Succeeded {
                StatusCode::CREATED
            } else {
                StatusCode::ACCEPTED
            };
            Ok(Answer {
                status: code,
                body: serde_json::to_string(&payment_out(&stored, &[], next))
                    .map_err(Problem::internal)?,
            })
        }
    }
}

/// Records a new payment as the one in flight for its bill. An earlier attempt still waiting
/// for the customer's 3-D Secure step is cancelled at the provider first (the customer gave
/// up on it and is paying again); any other open payment answers 409 `payment-in-progress`.
async fn record_exclusive(
    state: &ApiState,
    pay: &PaymentsApi,
    row: &PaymentRow,
) -> Result<(), Problem> {
    let store = state.accounts.store();
    let mut cancelled_one = false;
    loop {
        match store.create_payment(row).await {
            Ok(()) => return Ok(()),
            Err(parkd_store::StoreError::PaymentInProgress { payment_id, status })
                if status == PaymentStatus::RequiresAction && !cancelled_one =>
            {
                cancel_abandoned(
                    store.as_ref(),
                    pay.provider.as_ref(),
                    &payment_id,
                    state.accounts.now(),
                )
                .await?;
                cancelled_one = true;
            }
            Err(parkd_store::StoreError::PaymentInProgress { payment_id, status }) => {
                return Err(in_progress(&payment_id, status));
            }
            Err(error) => return Err(Problem::internal(error)),
        }
    }
}

/// 409 for a bill with a payment still open.
fn in_progress(payment_id: &str, status: PaymentStatus) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "payment-in-progress",
        "Payment in progress",
    )
    .with_detail(format!(
        "payment {payment_id} for this bill is still {}: wait for its outcome \
         (GET /api/v1/payments/{payment_id}) before paying again",
        status.as_str()
    ))
}

/// Cancels, at the provider and here, a payment left waiting for the customer's action. If
/// the provider says it succeeded after all, it is settled instead (and the bill is priced
/// again by the caller). A provider that does not answer leaves it as it is: 503.
pub(crate) async fn cancel_abandoned(
    store: &dyn Store,
    provider: &dyn Provider,
    payment_id: &str,
    now: DateTime<Utc>,
) -> Result<PaymentRow, Problem> {
    let row = reread(store, payment_id).await?;
    let Some(intent_id) = row.provider_intent_id.as_deref() else {
        return Ok(row);
    };
    if row.status != PaymentStatus::RequiresAction {
        return Ok(row);
    }
    let intent_id = parkd_payments::IntentId::parse(intent_id).map_err(Problem::internal)?;
    let key =
        IdempotencyKey::parse(format!("parkd-{payment_id}-cancel")).map_err(Problem::internal)?;
    match provider.cancel_intent(&intent_id, &key).await {
        Ok(intent) => apply_intent(store, provider, payment_id, &intent, now).await,
        Err(error) => {
            tracing::warn!(payment = payment_id, %error, "could not cancel an abandoned payment");
            // What the provider says of it now (it may have succeeded meanwhile).
            match provider.retrieve_intent(&intent_id).await {
                Ok(intent) if intent.status != IntentStatus::RequiresAction => {
                    apply_intent(store, provider, payment_id, &intent, now).await
                }
                _ => Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "provider-unavailable",
                    "Provider unavailable",
                )
                .with_detail(format!(
                    "payment {payment_id} waits for the customer and could not be cancelled: {error}"
                ))),
            }
        }
    }
}

/// Takes back a payment recorded but never sent to the provider (its bill changed).
async fn withdraw(store: &dyn Store, row: &PaymentRow, now: DateTime<Utc>) -> Result<(), Problem> {
    let update = PaymentUpdate {
        failure_reason: Some("withdrawn".into()),
        ..PaymentUpdate::default()
    };
    store
        .update_payment_status(
            &row.id,
            &[PaymentStatus::Created],
            PaymentStatus::Cancelled,
            &update,
            now,
        )
        .await
        .map_err(Problem::internal)?;
    Ok(())
}

fn card_of(intent: &PaymentIntent) -> Option<CardRef> {
    intent.payment_method.as_ref().map(|m| CardRef {
        token: m.token.as_str().to_owned(),
        brand: m.brand.as_str().to_owned(),
        last4: m.last4.as_str().to_owned(),
    })
}

/// Moves a payment to what the provider says of its intent; returns it as it now stands.
/// The call that settles a prepayment whose reservation has ended meanwhile refunds it
/// ([`refund_if_orphaned`]).
pub(crate) async fn apply_intent(
    store: &dyn Store,
    provider: &dyn Provider,
    id: &str,
    intent: &PaymentIntent,
    now: DateTime<Utc>,
) -> Result<PaymentRow, Problem> {
    let update = PaymentUpdate {
        provider_intent_id: Some(intent.id.as_str().to_owned()),
        failure_reason: intent
            .failure
            .as_ref()
            .map(|f| f.reason.as_str().to_owned()),
        method: card_of(intent),
    };
    let to = match intent.status {
        IntentStatus::Succeeded => {
            let settled = store
                .settle_payment(id, &OPEN, &update, now, "paid")
                .await
                .map_err(Problem::internal)?;
            let row = reread(store, id).await?;
            if !settled {
                return Ok(row);
            }
            return match refund_if_orphaned(store, provider, &row, now).await {
                Ok(0) => Ok(row),
                Ok(_) => reread(store, id).await,
                // Settled and in the ledger; the refund is for an operator to finish.
                Err(problem) => {
                    tracing::error!(payment = id, ?problem, "could not refund a late prepayment");
                    Ok(row)
                }
            };
        }
        IntentStatus::RequiresAction => PaymentStatus::RequiresAction,
        IntentStatus::Processing => PaymentStatus::Processing,
        IntentStatus::Created => PaymentStatus::Created,
        IntentStatus::Failed => PaymentStatus::Failed,
        IntentStatus::Cancelled => PaymentStatus::Cancelled,
    };
    store
        .update_payment_status(id, &OPEN, to, &update, now)
        .await
        .map_err(Problem::internal)?;
    reread(store, id).await
}

/// Records a provider error by its disposition: never "failed" on an unknown outcome.
pub(crate) async fn apply_error(
    store: &dyn Store,
    id: &str,
    error: &ProviderError,
    now: DateTime<Utc>,
) -> Result<PaymentRow, Problem> {
    use parkd_payments::Disposition;
    let (to, reason, intent_id) = match (error.disposition(), error) {
        (
            _,
            ProviderError::Declined {
                reason, intent_id, ..
            },
        ) => (
            PaymentStatus::Failed,
            Some(reason.as_str().to_owned()),
            intent_id.clone(),
        ),
        (_, ProviderError::RequiresAction { intent_id, .. }) => {
            (PaymentStatus::RequiresAction, None, intent_id.clone())
        }
        (Disposition::Final, other) => {
            tracing::error!(payment = id, error = %other, "payment provider refused the request");
            (PaymentStatus::Failed, Some(other.code().to_owned()), None)
        }
        (_, other) => {
            tracing::warn!(payment = id, error = %other, "payment outcome unknown; reconciling");
            (PaymentStatus::PendingUnknown, None, None)
        }
    };
    let update = PaymentUpdate {
        provider_intent_id: intent_id.map(|i| i.as_str().to_owned()),
        failure_reason: reason,
        method: None,
    };
    store
        .update_payment_status(id, &OPEN, to, &update, now)
        .await
        .map_err(Problem::internal)?;
    reread(store, id).await
}

/// The payment as stored now (after a move).
async fn reread(store: &dyn Store, id: &str) -> Result<PaymentRow, Problem> {
    store
        .payment(id)
        .await
        .map_err(Problem::internal)?
        .ok_or_else(|| Problem::internal("payment vanished"))
}

/// 402 for a declined payment: the customer tries another card under a new key.
fn declined(row: &PaymentRow) -> Problem {
    Problem::new(
        StatusCode::PAYMENT_REQUIRED,
        "payment-declined",
        "Payment declined",
    )
    .with_detail(format!(
        "payment {} was declined ({}); try another payment method with a new Idempotency-Key",
        row.id,
        row.failure_reason.as_deref().unwrap_or("declined")
    ))
}

/// The payment, if the caller may see it.
async fn visible_payment(
    state: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<PaymentRow, Problem> {
    let row = state
        .accounts
        .store()
        .payment(id)
        .await
        .map_err(Problem::internal)?
        .ok_or_else(|| Problem::not_found("no such payment"))?;
    if row.user_id.as_deref() != Some(caller.user.id.as_str())
        && !caller.user.role.includes(Role::Operator)
    {
        return Err(Problem::not_found("no such payment"));
    }
    Ok(row)
}

/// A payment's receipt: amount, card brand and last four, the itemised quote, refunds.
#[utoipa::path(
    get,
    path = "/api/v1/payments/{id}",
    tag = "payments",
    params(("id" = String, Path, description = "Payment id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The receipt", body = PaymentOut),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payment (or not yours)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn receipt(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PaymentOut>, Problem> {
    let row = visible_payment(&state, &caller, &id).await?;
    let refunds = state
        .accounts
        .store()
        .refunds_of_payment(&row.id)
        .await
        .map_err(Problem::internal)?;
    Ok(Json(payment_out(&row, &refunds, None)))
}

/// After the customer's action (3-D Secure) or while pending: asks the provider where the
/// payment stands and records it.
#[utoipa::path(
    post,
    path = "/api/v1/payments/{id}/confirm",
    tag = "payments",
    params(
        ("id" = String, Path, description = "Payment id"),
        ("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Where it stands now", body = PaymentOut),
        (status = 402, description = "Declined (`payment-declined`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payment (or not yours)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider did not answer; try again (`provider-unavailable`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn confirm(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let pay = payments_of(&state)?;
    idempotent(&state, &caller, &headers, CONFIRM_SCOPE, &id, async {
        let row = visible_payment(&state, &caller, &id).await?;
        let store = state.accounts.store();
        let now_row = if let Some(intent_id) = row.provider_intent_id.as_deref()
            && row.status.is_pending()
        {
            let intent_id =
                parkd_payments::IntentId::parse(intent_id).map_err(Problem::internal)?;
            let intent = pay
                .provider
                .retrieve_intent(&intent_id)
                .await
                .map_err(|e| {
                    Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "provider-unavailable",
                        "Provider unavailable",
                    )
                    .with_detail(e.to_string())
                })?;
            apply_intent(
                store.as_ref(),
                pay.provider.as_ref(),
                &row.id,
                &intent,
                state.accounts.now(),
            )
            .await?
        } else {
            row
        };
        if now_row.status == PaymentStatus::Failed {
            return Err(declined(&now_row));
        }
        let refunds = store
            .refunds_of_payment(&id)
            .await
            .map_err(Problem::internal)?;
        Ok(Answer {
            status: StatusCode::OK,
            body: serde_json::to_string(&payment_out(&now_row, &refunds, None))
                .map_err(Problem::internal)?,
        })
    })
    .await
}

/// Why a reservation's prepayment goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefundCause {
    /// The driver cancelled: the lot's cancellation policy
    /// (`parkd_core::tariff::refund_on_cancel`): everything up to `free_until_hours_before`
    /// the entry, then the policy's share, nothing from the entry on.
    Cancelled,
    /// The driver never came: the prepayment less the lot's no-show fee
    /// (`parkd_core::tariff::no_show_fee`; none, flat, the reserved price or a share of it).
    NoShow,
}

/// Refunds what a reservation's prepayments are owed for `cause`. Each refund is recorded
/// pending (its amount reserved against the payment in the database, so no two refunds can
/// pass the captured amount) before the provider is asked, under a key derived from the
/// refund's id; an unknown answer leaves it pending. Returns the amount refunded or being
/// refunded.
pub(crate) async fn refund_reservation(
    state: &ApiState,
    reservation: &parkd_store::ReservationRow,
    cause: RefundCause,
) -> Result<i64, Problem> {
    let Some(pay) = state.payments.as_ref() else {
        return Ok(0);
    };
    let store = state.accounts.store();
    let Some((tariff, _, _)) = crate::tariffs::tariff_of(state, &reservation.lot).await? else {
        return Ok(0);
    };
    let now = state.accounts.now();
    // What the no-show keeps, taken from the prepayments in order.
    let mut fee_left = match cause {
        RefundCause::Cancelled => 0,
        RefundCause::NoShow => {
            let Some(model) = state.live.engine().model(&reservation.lot) else {
                return Ok(0);
            };
            let (tz, period, occupant) = reservation_terms(&model, reservation)?;
            parkd_core::tariff::no_show_fee(&tariff, tz, period, occupant)
                .map_err(Problem::internal)?
                .total
                .0
        }
    };
    let (reason, memo) = match cause {
        RefundCause::Cancelled => (
            "cancelled",
            format!("reservation {} cancelled", reservation.id),
        ),
        RefundCause::NoShow => (
            "no_show",
            format!(
                "reservation {} not used: prepayment less the no-show fee",
                reservation.id
            ),
        ),
    };
    let mut refunded = 0;
    for payment in store
        .payments_of_reservation(&reservation.id)
        .await
        .map_err(Problem::internal)?
    {
        if payment.purpose != PaymentPurpose::Reservation {
            continue;
        }
        // A prepayment still waiting for the customer's 3-D Secure step is stopped at the
        // provider: the reservation it was for is over. (One the provider is already
        // processing cannot be stopped; if it succeeds, or had succeeded after all, the
        // settlement sends it back: `refund_if_orphaned`.)
        if payment.status == PaymentStatus::RequiresAction {
            if let Err(problem) =
                cancel_abandoned(store.as_ref(), pay.provider.as_ref(), &payment.id, now).await
            {
                tracing::warn!(payment = %payment.id, ?problem, "could not cancel a waiting prepayment");
            }
            continue;
        }
        if payment.refundable_minor() <= 0 {
            continue;
        }
        let amount = match cause {
            RefundCause::Cancelled => {
                parkd_core::tariff::refund_on_cancel(
                    Money(payment.refundable_minor()),
                    &tariff.cancellation,
                    now,
                    reservation.starts_at,
                )
                .map_err(Problem::internal)?
                .0
            }
            RefundCause::NoShow => {
                let kept = fee_left.min(payment.refundable_minor());
                fee_left -= kept;
                payment.refundable_minor() - kept
            }
        };
        if amount <= 0 {
            continue;
        }
        if !refund_payment(
            store.as_ref(),
            pay.provider.as_ref(),
            &payment,
            amount,
            reason,
            &memo,
            now,
        )
        .await?
        {
            continue;
        }
        refunded += amount;
    }
    Ok(refunded)
}

/// Refunds `amount` of a succeeded payment: recorded pending first (its amount reserved
/// against the payment in the database, so no two refunds can pass the captured amount),
/// then asked of the provider under a key derived from the refund's id; an unknown answer
/// leaves it pending. `true` if the refund succeeded or is still pending, `false` if there
/// was nothing (left) to refund or the provider refused it.
pub(crate) async fn refund_payment(
    store: &dyn Store,
    provider: &dyn Provider,
    payment: &PaymentRow,
    amount: i64,
    reason: &str,
    memo: &str,
    now: DateTime<Utc>,
) -> Result<bool, Problem> {
    let Some(intent) = payment.provider_intent_id.as_deref() else {
        return Ok(false);
    };
    let refund = RefundRow {
        id: format!("re_{}", crate::reservations::random_id()),
        payment_id: payment.id.clone(),
        amount_minor: amount,
        currency: payment.currency.clone(),
        provider: payment.provider.clone(),
        provider_refund_id: None,
        status: parkd_store::RefundStatus::Pending,
        reason: reason.into(),
        created_at: now,
        updated_at: now,
    };
    match store.record_refund(&refund, memo).await {
        Ok(()) => {}
        // Another refund took the rest meanwhile.
        Err(parkd_store::StoreError::RefundExceedsCapture { .. }) => return Ok(false),
        Err(error) => return Err(Problem::internal(error)),
    }
    let request = refund_request(&refund, intent)?;
    let done = match provider.refund(&request).await {
        Ok(answer) => match answer.status {
            parkd_payments::RefundStatus::Succeeded => Some((true, Some(answer.id))),
            parkd_payments::RefundStatus::Failed | parkd_payments::RefundStatus::Cancelled => {
                Some((false, Some(answer.id)))
            }
            parkd_payments::RefundStatus::Pending
            | parkd_payments::RefundStatus::RequiresAction => {
                // The reconciler retrieves it by this id.
                store
                    .set_refund_provider_id(&refund.id, answer.id.as_str(), now)
                    .await
                    .map_err(Problem::internal)?;
                None
            }
        },
        Err(error) if error.disposition() == parkd_payments::Disposition::Final => {
            tracing::error!(refund = %refund.id, %error, "refund refused by the provider");
            Some((false, None))
        }
        Err(error) => {
            tracing::warn!(refund = %refund.id, %error, "refund outcome unknown; left pending");
            None
        }
    };
    let Some((succeeded, provider_id)) = done else {
        return Ok(true);
    };
    store
        .complete_refund(
            &refund.id,
            succeeded,
            provider_id.as_ref().map(|id| id.as_str()),
            now,
            memo,
        )
        .await
        .map_err(Problem::internal)?;
    Ok(succeeded)
}

/// The provider request of a refund: the one definition shared by [`refund_payment`] and the
/// reconciler, which re-sends it (same key, same parameters) when the first answer was lost.
pub(crate) fn refund_request(
    refund: &RefundRow,
    intent: &str,
) -> Result<parkd_payments::RefundRequest, Problem> {
    Ok(parkd_payments::RefundRequest {
        intent_id: parkd_payments::IntentId::parse(intent).map_err(Problem::internal)?,
        amount_minor: Some(u64::try_from(refund.amount_minor).map_err(Problem::internal)?),
        idempotency_key: IdempotencyKey::parse(format!("parkd-{}", refund.id))
            .map_err(Problem::internal)?,
        reason: Some(parkd_payments::RefundReason::RequestedByCustomer),
        metadata: Metadata::new()
            .with("refund_id", refund.id.clone())
            .map_err(Problem::internal)?,
    })
}

/// A prepayment that succeeded after its reservation stopped being payable (cancelled, a
/// no-show, over: the money arrived late, from the reconciler, a webhook, a 3-D Secure step
/// finished late, or a cancel that raced the payment) goes back in full: the reservation it
/// paid for no longer exists. Call it once, when the payment has just moved to succeeded.
/// Returns the amount refunded or being refunded.
pub(crate) async fn refund_if_orphaned(
    store: &dyn Store,
    provider: &dyn Provider,
    payment: &PaymentRow,
    now: DateTime<Utc>,
) -> Result<i64, Problem> {
    if payment.purpose != PaymentPurpose::Reservation || payment.refundable_minor() <= 0 {
        return Ok(0);
    }
    let Some(reservation_id) = payment.reservation_id.as_deref() else {
        return Ok(0);
    };
    let Some(reservation) = store
        .reservation(reservation_id)
        .await
        .map_err(Problem::internal)?
    else {
        return Ok(0);
    };
    if matches!(
        reservation.state,
        ReservationState::Requested | ReservationState::Confirmed | ReservationState::CheckedIn
    ) {
        return Ok(0);
    }
    let amount = payment.refundable_minor();
    let memo = format!(
        "reservation {reservation_id} was {} when its payment succeeded",
        reservation.state.as_str()
    );
    tracing::warn!(payment = %payment.id, reservation = reservation_id, state = reservation.state.as_str(), "a prepayment settled after its reservation ended; refunding it");
    let refunded = refund_payment(
        store,
        provider,
        payment,
        amount,
        "reservation_ended",
        &memo,
        now,
    )
    .await?;
    Ok(if refunded { amount } else { 0 })
}
