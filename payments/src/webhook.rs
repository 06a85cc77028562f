//! Stripe webhooks: signature verification, event parsing, and the pure rule that makes
//! events delivered late, twice or out of order converge on the right payment state.
//!
//! A webhook handler does, in order:
//!
//! 1. [`verify_stripe_signature`] on the raw body bytes and the `Stripe-Signature` header,
//!    with every active signing secret (several during a rotation) and the clock's time.
//!    Refused: answer 400 and log the [`SignatureError`] code.
//! 2. [`parse_stripe_event`]. Events parkd does not use parse as [`EventKind::Ignored`]:
//!    acknowledge them (2xx) so that Stripe stops resending.
//! 3. De-duplicate on [`WebhookEvent::id`] in the store (insert-if-absent); a known id is
//!    acknowledged and nothing else.
//! 4. [`converge`] the stored [`PaymentState`] of [`WebhookEvent::intent_id`] with the event,
//!    store the result, acknowledge.
//!
//! Stripe's scheme: the header is `t=<unix seconds>,v1=<hex>[,v1=<hex>...]` (other schemes
//! such as `v0` are ignored); each `v1` is HMAC-SHA256, keyed with the endpoint's signing
//! secret, of `"{t}.{raw body}"`, in hex. The event is genuine if any `v1` matches under any
//! secret (compared in constant time) and `t` is within the tolerance (300 s by default) of
//! now, in either direction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use parkd_core::tariff::Currency;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::Secret;
use crate::stripe::wire;
use crate::types::{DeclineReason, EventId, IntentId, IntentStatus, PaymentIntent};

type HmacSha256 = Hmac<Sha256>;

/// Stripe's recommended tolerance between the signature's timestamp and now.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Why a webhook's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signing secret is configured, so nothing can be verified.
    #[error("no webhook signing secret is configured")]
    NoSecrets,
    /// The `Stripe-Signature` header is absent or empty.
    #[error("the Stripe-Signature header is missing")]
    MissingHeader,
    /// The header does not follow `t=...,v1=...`.
    #[error("the Stripe-Signature header is malformed: {0}")]
    MalformedHeader(&'static str),
    /// The header has a timestamp but no `v1` signature.
    #[error("the Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    /// No `v1` signature matches the body under any configured secret.
    #[error("no signature matches the payload")]
    SignatureMismatch,
    /// The signature is older than the tolerance (a replay, or a very late retry).
    #[error("the signature is {age_s} s old, more than the {tolerance_s} s tolerated")]
    TooOld {
        /// How old.
        age_s: i64,
        /// The tolerance.
        tolerance_s: u64,
    },
    /// The signature's timestamp is further in the future than the tolerance.
    #[error("the signature is dated {ahead_s} s ahead, more than the {tolerance_s} s tolerated")]
    InFuture {
        /// How far ahead.
        ahead_s: i64,
        /// The tolerance.
        tolerance_s: u64,
    },
}

impl SignatureError {
    /// A stable snake_case name for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoSecrets => "no_secrets",
            Self::MissingHeader => "missing_header",
            Self::MalformedHeader(_) => "malformed_header",
            Self::NoV1Signature => "no_v1_signature",
            Self::SignatureMismatch => "signature_mismatch",
            Self::TooOld { .. } => "too_old",
            Self::InFuture { .. } => "in_future",
        }
    }
}

struct SignatureHeader<'a> {
    timestamp_text: &'a str,
    timestamp: i64,
    signatures: Vec<[u8; 32]>,
}

fn parse_header(header: &str) -> Result<SignatureHeader<'_>, SignatureError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(SignatureError::MissingHeader);
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            return Err(SignatureError::MalformedHeader("an item is not key=value"));
        };
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::MalformedHeader("more than one timestamp"));
                }
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SignatureError::MalformedHeader(
                        "the timestamp is not a number",
                    ));
                }
                let seconds = value.parse::<i64>().map_err(|_| {
                    SignatureError::MalformedHeader("the timestamp is out of range")
                })?;
                timestamp = Some((value, seconds));
            }
            "v1" => {
                let mut signature = [0u8; 32];
                hex::decode_to_slice(value, &mut signature).map_err(|_| {
                    SignatureError::MalformedHeader("a v1 signature is not 64 hex digits")
                })?;
                signatures.push(signature);
            }
            // Other schemes (v0 for test-mode, future ones) are not ours to check.
            _ => {}
        }
    }
    let Some((timestamp_text, timestamp)) = timestamp else {
        return Err(SignatureError::MalformedHeader("no timestamp"));
    };
    if signatures.is_empty() {
        return Err(SignatureError::NoV1Signature);
    }
    Ok(SignatureHeader {
        timestamp_text,
        timestamp,
        signatures,
    })
}

fn signature(secret: &Secret, timestamp: &str, payload: &[u8]) -> Option<[u8; 32]> {
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes()).ok()?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(payload);
    Some(mac.finalize().into_bytes().into())
}

/// Verifies a Stripe webhook (see the module doc). `payload` is the raw body exactly as
/// received; `secrets` every active signing secret (`whsec_...`); `now` from the clock.
/// Returns the signature's time.
pub fn verify_stripe_signature(
    payload: &[u8],
    header: &str,
    secrets: &[Secret],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<DateTime<Utc>, SignatureError> {
    let secrets: Vec<&Secret> = secrets.iter().filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return Err(SignatureError::NoSecrets);
    }
    let header = parse_header(header)?;
    let mut matched = subtle::Choice::from(0);
    for secret in &secrets {
        let Some(expected) = signature(secret, header.timestamp_text, payload) else {
            continue;
        };
        for candidate in &header.signatures {
            matched |= expected.ct_eq(candidate);
        }
    }
    if !bool::from(matched) {
        return Err(SignatureError::SignatureMismatch);
    }
    let tolerance_s = tolerance.as_secs();
    let tolerance_i = i64::try_from(tolerance_s).unwrap_or(i64::MAX);
    let age_s = now.timestamp().saturating_sub(header.timestamp);
    if age_s > tolerance_i {
        return Err(SignatureError::TooOld { age_s, tolerance_s });
    }
    if age_s < -tolerance_i {
        return Err(SignatureError::InFuture {
            ahead_s: -age_s,
            tolerance_s,
        });
    }
    DateTime::from_timestamp(header.timestamp, 0).ok_or(SignatureError::MalformedHeader(
        "the timestamp is out of range",
    ))
}

/// The `Stripe-Signature` header Stripe would send for `payload` at `timestamp` (unix
/// seconds): for local tools and integration tests that play Stripe.
pub fn sign_stripe_payload(payload: &[u8], secret: &Secret, timestamp: i64) -> String {
    let text = timestamp.to_string();
    let signature = signature(secret, &text, payload)
        .map(hex::encode)
        .unwrap_or_default();
    format!("t={text},v1={signature}")
}

/// Why an event body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable webhook event: {0}")]
pub struct EventError(String);

/// A refund seen on a charge (`charge.refunded`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRefunded {
    /// Stripe's charge id (`ch_...`).
    pub charge_id: String,
    /// The payment intent the charge belongs to.
    pub intent_id: Option<IntentId>,
    /// The amount charged, in minor units.
    pub amount_minor: u64,
    /// Everything refunded so far (cumulative), in minor units.
    pub amount_refunded_minor: u64,
    /// The currency.
    pub currency: Currency,
    /// Whether it is refunded in full.
    pub fully_refunded: bool,
}

/// What an event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// `payment_intent.succeeded`
    PaymentIntentSucceeded(PaymentIntent),
    /// `payment_intent.payment_failed`
    PaymentIntentFailed(PaymentIntent),
    /// `payment_intent.requires_action`
    PaymentIntentRequiresAction(PaymentIntent),
    /// `payment_intent.processing` (a payment method that settles later, such as a bank
    /// debit)
    PaymentIntentProcessing(PaymentIntent),
    /// `payment_intent.canceled`
    PaymentIntentCanceled(PaymentIntent),
    /// `charge.refunded`
    ChargeRefunded(ChargeRefunded),
    /// Any other type: acknowledge and drop.
    Ignored,
}

/// A parsed Stripe event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// Stripe's event id.
    pub id: EventId,
    /// Stripe's type name (`payment_intent.succeeded`...).
    pub event_type: String,
    /// When Stripe created the event (what orders events of one intent).
    pub created: DateTime<Utc>,
    /// Live or test mode.
    pub livemode: bool,
    /// What it says.
    pub kind: EventKind,
}

impl WebhookEvent {
    /// The id to de-duplicate on.
    pub fn id(&self) -> &EventId {
        &self.id
    }

    /// The payment intent the event is about, if any.
    pub fn intent_id(&self) -> Option<&IntentId> {
        match &self.kind {
            EventKind::PaymentIntentSucceeded(intent)
            | EventKind::PaymentIntentFailed(intent)
            | EventKind::PaymentIntentRequiresAction(intent)
            | EventKind::PaymentIntentProcessing(intent)
            | EventKind::PaymentIntentCanceled(intent) => Some(&intent.id),
            EventKind::ChargeRefunded(charge) => charge.intent_id.as_ref(),
            EventKind::Ignored => None,
        }
    }

    /// Whether parkd does nothing with it (but acknowledges it).
    pub fn is_ignored(&self) -> bool {
        self.kind == EventKind::Ignored
    }
}

#[derive(Deserialize)]
struct WireEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    #[serde(default)]
    livemode: bool,
    data: WireEventData,
}

#[derive(Deserialize)]
struct WireEventData {
    object: serde_json::Value,
}

/// Parses a Stripe event body (after [`verify_stripe_signature`]).
pub fn parse_stripe_event(payload: &[u8]) -> Result<WebhookEvent, EventError> {
    let wire: WireEvent = serde_json::from_slice(payload)
        .map_err(|e| EventError(format!("not a Stripe event: {e}")))?;
    let id = EventId::parse(wire.id).map_err(|e| EventError(e.to_string()))?;
    let created = wire::timestamp(wire.created).map_err(|e| EventError(e.to_string()))?;
    let intent = |object: serde_json::Value| -> Result<PaymentIntent, EventError> {
        let wire: wire::WirePaymentIntent = serde_json::from_value(object)
            .map_err(|e| EventError(format!("not a payment intent: {e}")))?;
        wire::intent(wire).map_err(|e| EventError(e.to_string()))
    };
    let kind = match wire.event_type.as_str() {
        "payment_intent.succeeded" => EventKind::PaymentIntentSucceeded(intent(wire.data.object)?),
        "payment_intent.payment_failed" => {
            EventKind::PaymentIntentFailed(intent(wire.data.object)?)
        }
        "payment_intent.requires_action" => {
            EventKind::PaymentIntentRequiresAction(intent(wire.data.object)?)
        }
        "payment_intent.processing" => {
            EventKind::PaymentIntentProcessing(intent(wire.data.object)?)
        }
        "payment_intent.canceled" => EventKind::PaymentIntentCanceled(intent(wire.data.object)?),
        "charge.refunded" => {
            let charge: wire::WireCharge = serde_json::from_value(wire.data.object)
                .map_err(|e| EventError(format!("not a charge: {e}")))?;
            EventKind::ChargeRefunded(ChargeRefunded {
                intent_id: charge
                    .payment_intent
                    .map(IntentId::parse)
                    .transpose()
                    .map_err(|e| EventError(e.to_string()))?,
                charge_id: charge.id,
                amount_minor: charge.amount,
                amount_refunded_minor: charge.amount_refunded,
                currency: wire::currency(&charge.currency)
                    .map_err(|e| EventError(e.to_string()))?,
                fully_refunded: charge.refunded,
            })
        }
        _ => EventKind::Ignored,
    };
    Ok(WebhookEvent {
        id,
        event_type: wire.event_type,
        created,
        livemode: wire.livemode,
        kind,
    })
}

/// What parkd knows of one payment intent, merged from our own calls, retrievals and
/// webhook events by [`converge`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentState {
    /// The intent.
    pub intent_id: IntentId,
    /// Where it stands.
    pub status: IntentStatus,
    /// When the provider said so (the event's `created`, or the time of a retrieval).
    pub status_at: DateTime<Utc>,
    /// The event that said so, if it was an event.
    pub status_event: Option<EventId>,
    /// Why it failed, in `failed`.
    pub failure: Option<DeclineReason>,
    /// Everything refunded so far, in minor units.
    pub amount_refunded_minor: u64,
}

impl PaymentState {
    /// The state after our own call or a retrieval that saw `intent` at `observed_at`.
    pub fn from_intent(intent: &PaymentIntent, observed_at: DateTime<Utc>) -> Self {
        Self {
            intent_id: intent.id.clone(),
            status: intent.status,
            status_at: observed_at,
            status_event: None,
            failure: intent.failure.as_ref().map(|f| f.reason),
            amount_refunded_minor: 0,
        }
    }
}

/// One report of a status, from an event or a retrieval.
struct Observation<'a> {
    status: IntentStatus,
    at: DateTime<Utc>,
    event: Option<&'a EventId>,
    failure: Option<DeclineReason>,
}

/// Terminal statuses outrank everything (a payment never leaves them); between the others
/// the newer report wins. Succeeded outranks cancelled: if both were ever reported, money
/// moved.
fn class(status: IntentStatus) -> u8 {
    match status {
        IntentStatus::Succeeded => 2,
        IntentStatus::Cancelled => 1,
        _ => 0,
    }
}

/// Breaks a tie between two reports of the same second.
fn rank(status: IntentStatus) -> u8 {
    match status {
        IntentStatus::Created => 0,
        IntentStatus::RequiresAction => 1,
        IntentStatus::Failed => 2,
        IntentStatus::Processing => 3,
        IntentStatus::Cancelled => 4,
        IntentStatus::Succeeded => 5,
    }
}

type Precedence<'a> = (u8, DateTime<Utc>, u8, Option<&'a EventId>);

fn precedence<'a>(
    status: IntentStatus,
    at: DateTime<Utc>,
    event: Option<&'a EventId>,
) -> Precedence<'a> {
    (class(status), at, rank(status), event)
}

fn merge(current: &PaymentState, observation: Observation<'_>) -> PaymentState {
    let mut next = current.clone();
    let ours = precedence(
        current.status,
        current.status_at,
        current.status_event.as_ref(),
    );
    let theirs = precedence(observation.status, observation.at, observation.event);
    if theirs > ours {
        next.status = observation.status;
        next.status_at = observation.at;
        next.status_event = observation.event.cloned();
        next.failure = match observation.status {
            IntentStatus::Failed => observation.failure,
            _ => None,
        };
    }
    next
}

/// The state after `event`, whatever order events arrive in.
///
/// The status is the highest-ranked report seen: terminal statuses (succeeded, then
/// cancelled) outrank everything, so a late `requires_action` or `payment_failed` after
/// `succeeded` changes nothing; otherwise the report with the later `created` wins, ties
/// broken by a fixed order of statuses and then the event id. The refunded amount only grows
/// (Stripe reports it cumulatively), and a refund proves the payment succeeded. Because this
/// is a maximum over a total order, any permutation of the same events, with duplicates,
/// gives the same state. An event about another intent, or an ignored one, changes nothing.
pub fn converge(current: &PaymentState, event: &WebhookEvent) -> PaymentState {
    if event.intent_id() != Some(&current.intent_id) {
        return current.clone();
    }
    match &event.kind {
        EventKind::PaymentIntentSucceeded(intent)
        | EventKind::PaymentIntentFailed(intent)
        | EventKind::PaymentIntentRequiresAction(intent)
        | EventKind::PaymentIntentProcessing(intent)
        | EventKind::PaymentIntentCanceled(intent) => merge(
            current,
            Observation {
                status: intent.status,
                at: event.created,
                event: Some(&event.id),
                failure: intent.failure.as_ref().map(|f| f.reason),
            },
        ),
        EventKind::ChargeRefunded(charge) => {
            let mut next = merge(
                current,
                Observation {
                    status: IntentStatus::Succeeded,
                    at: event.created,
                    event: Some(&event.id),
                    failure: None,
                },
            );
            next.amount_refunded_minor =
                next.amount_refunded_minor.max(charge.amount_refunded_minor);
            next
        }
        EventKind::Ignored => current.clone(),
    }
}

/// The state after a retrieval (or our own call) that saw `intent` at `observed_at`, by the
/// same rule as [`converge`].
pub fn converge_retrieved(
    current: &PaymentState,
    intent: &PaymentIntent,
    observed_at: DateTime<Utc>,
) -> PaymentState {
    if intent.id != current.intent_id {
        return current.clone();
    }
    merge(
        current,
        Observation {
            status: intent.status,
            at: observed_at,
            event: None,
            failure: intent.failure.as_ref().map(|f| f.reason),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parsing_is_strict_about_what_it_uses() {
        let sig = "a".repeat(64);
        assert!(parse_header(&format!("t=1,v1={sig}")).is_ok());
        assert!(parse_header(&format!("t=1, v1={sig}, v0=zzz, x=y")).is_ok());
        assert_eq!(
            parse_header("  ").err(),
            Some(SignatureError::MissingHeader)
        );
        assert_eq!(
            parse_header("t=1").err(),
            Some(SignatureError::NoV1Signature)
        );
        assert!(matches!(
            parse_header(&format!("v1={sig}")),
            Err(SignatureError::MalformedHeader(_))
        ));
        assert!(matches!(
            parse_header(&format!("t=-1,v1={sig}")),
            Err(SignatureError::MalformedHeader(_))
        ));
        assert!(matches!(
            parse_header("t=1,v1=nothex"),
            Err(SignatureError::MalformedHeader(_))
        ));
        assert!(matches!(
            parse_header(&format!("t=1,t=2,v1={sig}")),
            Err(SignatureError::MalformedHeader(_))
        ));
        assert!(matches!(
            parse_header("garbage"),
            Err(SignatureError::MalformedHeader(_))
        ));
    }

    #[test]
    fn signing_and_verifying_agree() {
        let secret = Secret::new("whsec_test");
        let body = br#"{"id":"evt_1"}"#;
        let header = sign_stripe_payload(body, &secret, 1_700_000_000);
        let now = DateTime::from_timestamp(1_700_000_010, 0).unwrap();
        assert!(verify_stripe_signature(body, &header, &[secret], now, DEFAULT_TOLERANCE).is_ok());
        assert_eq!(
            verify_stripe_signature(body, &header, &[], now, DEFAULT_TOLERANCE),
            Err(SignatureError::NoSecrets)
        );
    }
}
