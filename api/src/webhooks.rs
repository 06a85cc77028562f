//! Stripe's webhook: `POST /api/v1/payments/webhooks/stripe`.
//!
//! No bearer token: the `Stripe-Signature` header is the authentication. In order:
//!
//! 1. the raw body (at most [`MAX_WEBHOOK_BODY`]) is verified against every configured
//!    signing secret (several during a rotation) with the configured tolerance
//!    ([`parkd_payments::webhook::verify_stripe_signature`]); refused: 400
//!    `invalid-signature`, counted;
//! 2. the event is parsed; unreadable: 400 `invalid-event`;
//! 3. its id is recorded (insert-if-absent): a redelivery is acknowledged and nothing else;
//! 4. a payment-intent event is matched to its payment (by intent id, else by the
//!    `payment_id` parkd put in the intent's metadata, which is how a payment whose create
//!    answer was lost learns its intent) and applied with the rules of
//!    [`crate::payments::apply_intent`], but only if
//!    [`parkd_payments::webhook::converge`] says the event outranks what is stored: a late
//!    `payment_failed` or `requires_action` never undoes `succeeded`, an older report never
//!    undoes a newer one.
//!
//! Every verified event is answered 200 (`{"outcome": ...}`), also when it names an unknown
//! intent or is of a type parkd does not use, or Stripe would resend it for days. Nothing
//! here calls the provider, so the answer is quick. `charge.refunded` is acknowledged but
//! changes nothing (refunds are recorded when parkd makes them; a refund made elsewhere is
//! logged for an operator).

use std::time::Duration;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use parkd_payments::webhook::{
    EventKind, PaymentState, WebhookEvent, converge, parse_stripe_event, verify_stripe_signature,
};
use parkd_payments::{IntentStatus, PaymentIntent, Provider, Secret};
use parkd_store::{PaymentRow, PaymentStatus, Store};
use serde::Serialize;

use crate::ApiState;
use crate::payments::apply_intent;
use crate::problem::Problem;

/// Largest webhook body accepted (Stripe's events are a few KiB).
pub const MAX_WEBHOOK_BODY: usize = 256 * 1024;

/// The Stripe webhook endpoint's settings and counters (`None` in
/// [`crate::payments::PaymentsApi::webhook`]: the route answers 404).
#[derive(Debug, Clone)]
pub struct StripeWebhook {
    /// Every active signing secret (`whsec_...`): the new and the old one during a rotation.
    pub secrets: Vec<Secret>,
    /// Largest accepted distance between a signature's time and now.
    pub tolerance: Duration,
    outcomes: prometheus::IntCounterVec,
}

impl StripeWebhook {
    /// The endpoint with these secrets and tolerance; registers
    /// `parkd_payments_webhooks_total{outcome}`.
    pub fn new(
        secrets: Vec<Secret>,
        tolerance: Duration,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<Self> {
        let outcomes = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "parkd_payments_webhooks_total",
                "Stripe webhook deliveries, by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(outcomes.clone()))?;
        for outcome in Outcome::ALL {
            outcomes.with_label_values(&[outcome.as_str()]);
        }
        Ok(Self {
            secrets,
            tolerance,
            outcomes,
        })
    }

    fn count(&self, outcome: Outcome) {
        self.outcomes.with_label_values(&[outcome.as_str()]).inc();
    }
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The payment moved to what the event says.
    Applied,
    /// The payment already stood where the event says, or somewhere that outranks it.
    Unchanged,
    /// The event id was seen before.
    Duplicate,
    /// A type parkd does not act on (or a refund, see the module doc).
    Ignored,
    /// No payment of ours has this intent.
    UnknownIntent,
    /// The signature was missing, wrong or stale.
    InvalidSignature,
    /// Signed, but not a readable event.
    InvalidEvent,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Applied,
        Outcome::Unchanged,
        Outcome::Duplicate,
        Outcome::Ignored,
        Outcome::UnknownIntent,
        Outcome::InvalidSignature,
        Outcome::InvalidEvent,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::UnknownIntent => "unknown_intent",
            Outcome::InvalidSignature => "invalid_signature",
            Outcome::InvalidEvent => "invalid_event",
        }
    }
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/payments/webhooks/stripe", post(stripe_webhook))
}

/// The acknowledgement of a verified event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WebhookAck {
    /// `applied`, `unchanged`, `duplicate`, `ignored` or `unknown_intent`.
    outcome: &'static str,
}

fn ack(webhook: &StripeWebhook, outcome: Outcome) -> Json<WebhookAck> {
    webhook.count(outcome);
    Json(WebhookAck {
        outcome: outcome.as_str(),
    })
}

/// Stripe's webhook: payment-intent events move the payments they name (no bearer token: the
/// `Stripe-Signature` header authenticates; see docs/payments.md, "Webhooks").
#[utoipa::path(
    post,
    path = "/api/v1/payments/webhooks/stripe",
    tag = "payments",
    params(
        ("Stripe-Signature" = String, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\">`, signed with one of the endpoint's secrets"),
    ),
    request_body(content = Object, description = "A Stripe event, verified on its raw bytes", content_type = "application/json"),
    responses(
        (status = 200, description = "Acknowledged: applied, unchanged, a redelivery, ignored, or about an unknown intent", body = WebhookAck),
        (status = 400, description = "Missing, wrong or stale signature, or not a Stripe event (`invalid-signature`, `invalid-event`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "This server has no Stripe webhook endpoint (`not-found`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large (`payload-too-large`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn stripe_webhook(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WebhookAck>, Problem> {
    let Some((pay, webhook)) = state
        .payments
        .as_ref()
        .and_then(|pay| pay.webhook.as_ref().map(|webhook| (pay, webhook)))
    else {
        return Err(Problem::not_found(
            "this server has no Stripe webhook endpoint (payments.provider is not stripe)",
        ));
    };
    let body = body.map_err(|rejection| {
        Problem::new(
            rejection.status(),
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "payload-too-large"
            } else {
                "invalid-body"
            },
            "Unreadable body",
        )
        .with_detail(rejection.body_text())
    })?;
    let now = state.accounts.now();
    let header = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if let Err(error) =
        verify_stripe_signature(&body, header, &webhook.secrets, now, webhook.tolerance)
    {
        webhook.count(Outcome::InvalidSignature);
        tracing::warn!(code = error.code(), %error, "stripe webhook refused");
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-signature",
            "Invalid signature",
        )
        .with_detail(error.to_string()));
    }
    let event = parse_stripe_event(&body).map_err(|error| {
        webhook.count(Outcome::InvalidEvent);
        tracing::warn!(%error, "signed stripe webhook is not a readable event");
        Problem::new(StatusCode::BAD_REQUEST, "invalid-event", "Invalid event")
            .with_detail(error.to_string())
    })?;
    let provider = pay.provider.name();
    let store = state.accounts.store();
    let first = store
        .record_webhook_event(provider, event.id().as_str(), now)
        .await
        .map_err(Problem::internal)?;
    if !first {
        return Ok(ack(webhook, Outcome::Duplicate));
    }
    let outcome = match &event.kind {
        EventKind::PaymentIntentSucceeded(intent)
        | EventKind::PaymentIntentFailed(intent)
        | EventKind::PaymentIntentRequiresAction(intent)
        | EventKind::PaymentIntentProcessing(intent)
        | EventKind::PaymentIntentCanceled(intent) => {
            apply_event(store.as_ref(), pay.provider.as_ref(), &event, intent, now).await?
        }
        EventKind::ChargeRefunded(charge) => {
            if let Some(intent_id) = &charge.intent_id
                && let Some(row) = store
                    .payment_by_intent(provider, intent_id.as_str())
                    .await
                    .map_err(Problem::internal)?
                && i64::try_from(charge.amount_refunded_minor)
                    .is_ok_and(|refunded| refunded > row.amount_refunded_minor)
            {
                tracing::warn!(
                    payment = %row.id,
                    refunded_at_provider = charge.amount_refunded_minor,
                    refunded_in_parkd = row.amount_refunded_minor,
                    "the provider reports more refunded than parkd recorded: a refund made \
                     outside parkd needs a ledger adjustment"
                );
            }
            Outcome::Ignored
        }
        EventKind::Ignored => Outcome::Ignored,
    };
    tracing::info!(
        event = %event.id().as_str(),
        kind = %event.event_type,
        outcome = outcome.as_str(),
        "stripe webhook"
    );
    Ok(ack(webhook, outcome))
}

/// The payment an intent event is about: by intent id, else by the `payment_id` parkd put in
/// the metadata (a payment whose create answer was lost has no intent id yet), if that
/// payment has no other intent and asked for the same amount and currency.
async fn payment_of(
    store: &dyn Store,
    provider: &str,
    intent: &PaymentIntent,
) -> Result<Option<PaymentRow>, Problem> {
    if let Some(row) = store
        .payment_by_intent(provider, intent.id.as_str())
        .await
        .map_err(Problem::internal)?
    {
        return Ok(Some(row));
    }
    let Some(id) = intent.metadata.get("payment_id") else {
        return Ok(None);
    };
    let row = store.payment(id).await.map_err(Problem::internal)?;
    Ok(row.filter(|row| {
        row.provider == provider
            && row.provider_intent_id.is_none()
            && u64::try_from(row.amount_minor).is_ok_and(|amount| amount == intent.amount_minor)
            && row.currency == intent.currency
    }))
}

/// What the stored payment says, as [`converge`] reads it. A payment whose outcome is unknown
/// (or not yet asked) knows nothing newer than any event.
fn stored_state(row: &PaymentRow, intent: &PaymentIntent) -> PaymentState {
    let (status, at) = match row.status {
        PaymentStatus::Created | PaymentStatus::PendingUnknown => {
            (IntentStatus::Created, DateTime::<Utc>::MIN_UTC)
        }
        PaymentStatus::RequiresAction => (IntentStatus::RequiresAction, row.updated_at),
        PaymentStatus::Processing => (IntentStatus::Processing, row.updated_at),
        PaymentStatus::Succeeded => (IntentStatus::Succeeded, row.updated_at),
        PaymentStatus::Failed => (IntentStatus::Failed, row.updated_at),
        PaymentStatus::Cancelled => (IntentStatus::Cancelled, row.updated_at),
    };
    PaymentState {
        intent_id: intent.id.clone(),
        status,
        status_at: at,
        status_event: None,
        failure: None,
        amount_refunded_minor: u64::try_from(row.amount_refunded_minor).unwrap_or(0),
    }
}

async fn apply_event(
    store: &dyn Store,
    provider: &dyn Provider,
    event: &WebhookEvent,
    intent: &PaymentIntent,
    now: DateTime<Utc>,
) -> Result<Outcome, Problem> {
    let Some(row) = payment_of(store, provider.name(), intent).await? else {
        tracing::info!(intent = %intent.id, "stripe webhook about an intent parkd does not know");
        return Ok(Outcome::UnknownIntent);
    };
    let current = stored_state(&row, intent);
    let next = converge(&current, event);
    if next.status_event.as_ref() != Some(event.id()) {
        // What is stored outranks the event (a terminal status, or a newer report).
        return Ok(Outcome::Unchanged);
    }
    let status = apply_intent(store, provider, &row.id, intent, now)
        .await?
        .status;
    Ok(if status == row.status {
        Outcome::Unchanged
    } else {
        Outcome::Applied
    })
}
