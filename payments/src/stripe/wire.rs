//! Stripe's JSON shapes (only the fields parkd reads) and their translation into this
//! crate's types and errors. Unknown fields are ignored: Stripe adds fields without a new
//! API version.
//!
//! Currencies: parkd has one [`Currency`] (`parkd_core::tariff`, ISO 4217 upper case, `EUR`);
//! Stripe spells codes in lower case (`eur`). The translation lives here and nowhere else:
//! [`stripe_currency`] on the way out, [`currency`] (any case) on the way in.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use parkd_core::tariff::Currency;

use crate::Secret;
use crate::error::ProviderError;
use crate::guard;
use crate::types::{
    CardBrand, DeclineReason, IntentId, IntentStatus, Last4, Metadata, NextAction, PaymentFailure,
    PaymentIntent, PaymentMethodRef, PaymentMethodToken, Refund, RefundId, RefundStatus,
};

/// A PaymentIntent object.
#[derive(Debug, Deserialize)]
pub(crate) struct WirePaymentIntent {
    pub(crate) id: String,
    pub(crate) amount: u64,
    #[serde(default)]
    pub(crate) amount_received: Option<u64>,
    pub(crate) currency: String,
    pub(crate) status: String,
    pub(crate) created: i64,
    #[serde(default)]
    pub(crate) metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub(crate) next_action: Option<WireNextAction>,
    #[serde(default)]
    pub(crate) last_payment_error: Option<WireError>,
    #[serde(default)]
    pub(crate) payment_method: Option<WirePaymentMethodField>,
    #[serde(default)]
    pub(crate) client_secret: Option<String>,
}

/// `payment_method`: the object when expanded, otherwise (an id) nothing we use.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum WirePaymentMethodField {
    Object(WirePaymentMethod),
    Id(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
pub(crate) struct WirePaymentMethod {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) card: Option<WireCard>,
}

/// The card details Stripe shows: never the number.
#[derive(Debug, Deserialize)]
pub(crate) struct WireCard {
    pub(crate) brand: String,
    pub(crate) last4: String,
    #[serde(default)]
    pub(crate) exp_month: Option<u8>,
    #[serde(default)]
    pub(crate) exp_year: Option<u16>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireNextAction {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) redirect_to_url: Option<WireRedirect>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireRedirect {
    #[serde(default)]
    pub(crate) url: Option<String>,
    #[serde(default)]
    pub(crate) return_url: Option<String>,
}

/// `{"error": {...}}`
#[derive(Debug, Deserialize)]
pub(crate) struct WireErrorBody {
    pub(crate) error: WireError,
}

/// Stripe's error object (also `last_payment_error`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireError {
    #[serde(rename = "type", default)]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) code: Option<String>,
    #[serde(default)]
    pub(crate) decline_code: Option<String>,
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default)]
    pub(crate) param: Option<String>,
    #[serde(default)]
    pub(crate) payment_intent: Option<Box<WirePaymentIntent>>,
}

/// A Refund object.
#[derive(Debug, Deserialize)]
pub(crate) struct WireRefund {
    pub(crate) id: String,
    pub(crate) amount: u64,
    pub(crate) currency: String,
    #[serde(default)]
    pub(crate) payment_intent: Option<String>,
    #[serde(default)]
    pub(crate) status: Option<String>,
    pub(crate) created: i64,
}

/// A Charge object (in `charge.refunded` events).
#[derive(Debug, Deserialize)]
pub(crate) struct WireCharge {
    pub(crate) id: String,
    pub(crate) amount: u64,
    #[serde(default)]
    pub(crate) amount_refunded: u64,
    pub(crate) currency: String,
    #[serde(default)]
    pub(crate) payment_intent: Option<String>,
    #[serde(default)]
    pub(crate) refunded: bool,
}

pub(crate) fn unexpected(message: impl Into<String>) -> ProviderError {
    ProviderError::UnexpectedResponse {
        message: message.into(),
    }
}

/// A currency as it is sent to Stripe: the code in lower case (`eur`).
pub(crate) fn stripe_currency(currency: &Currency) -> String {
    currency.as_str().to_ascii_lowercase()
}

/// A currency as Stripe answers it (in an object or an event), as ours. Stripe writes lower
/// case; any case is taken, since the case of a code carries no meaning.
pub(crate) fn currency(raw: &str) -> Result<Currency, ProviderError> {
    Currency::parse(&raw.to_ascii_uppercase())
        .map_err(|_| unexpected("currency is not a three-letter ISO 4217 code"))
}

pub(crate) fn timestamp(seconds: i64) -> Result<DateTime<Utc>, ProviderError> {
    DateTime::from_timestamp(seconds, 0).ok_or_else(|| unexpected("timestamp out of range"))
}

fn intent_status(status: &str, failed_attempt: bool) -> Result<IntentStatus, ProviderError> {
    Ok(match status {
        "requires_payment_method" if failed_attempt => IntentStatus::Failed,
        "requires_payment_method" | "requires_confirmation" => IntentStatus::Created,
        "requires_action" => IntentStatus::RequiresAction,
        "processing" | "requires_capture" => IntentStatus::Processing,
        "succeeded" => IntentStatus::Succeeded,
        "canceled" => IntentStatus::Cancelled,
        _ => return Err(unexpected("unknown payment intent status")),
    })
}

fn next_action(wire: WireNextAction) -> NextAction {
    match (wire.kind.as_str(), wire.redirect_to_url) {
        (
            "redirect_to_url",
            Some(WireRedirect {
                url: Some(url),
                return_url,
            }),
        ) => NextAction::RedirectToUrl { url, return_url },
        ("use_stripe_sdk", _) => NextAction::UseProviderSdk,
        _ => NextAction::Other { kind: wire.kind },
    }
}

fn failure(wire: &WireError) -> PaymentFailure {
    PaymentFailure {
        reason: DeclineReason::from_provider(wire.decline_code.as_deref(), wire.code.as_deref()),
        message: wire
            .message
            .as_deref()
            .map(|m| guard::redact_text(m).into_owned())
            .unwrap_or_else(|| "the payment failed".to_owned()),
    }
}

fn card(method: WirePaymentMethod) -> Option<PaymentMethodRef> {
    let card = method.card?;
    let token = PaymentMethodToken::parse(method.id).ok()?;
    let last4 = Last4::parse(card.last4).ok()?;
    let expiry = card.exp_month.zip(card.exp_year);
    PaymentMethodRef::new(token, CardBrand::from_provider(&card.brand), last4, expiry).ok()
}

fn metadata(map: BTreeMap<String, String>) -> Metadata {
    // Ours, so it fits; a pair that does not (edited at Stripe) is left out, not fatal.
    let mut metadata = Metadata::new();
    for (key, value) in map {
        if metadata.insert(key, value).is_err() {
            tracing::debug!("payment intent metadata pair left out: does not fit our limits");
        }
    }
    metadata
}

/// A Stripe PaymentIntent as ours.
pub(crate) fn intent(wire: WirePaymentIntent) -> Result<PaymentIntent, ProviderError> {
    let id = IntentId::parse(wire.id).map_err(|e| unexpected(e.to_string()))?;
    let status = intent_status(&wire.status, wire.last_payment_error.is_some())?;
    let currency = currency(&wire.currency)?;
    let payment_method = match wire.payment_method {
        Some(WirePaymentMethodField::Object(method)) => card(method),
        Some(WirePaymentMethodField::Id(_)) | None => None,
    };
    let failure = match status {
        IntentStatus::Failed => wire.last_payment_error.as_ref().map(failure),
        _ => None,
    };
    Ok(PaymentIntent {
        id,
        status,
        amount_minor: wire.amount,
        amount_received_minor: wire.amount_received.unwrap_or(0),
        currency,
        metadata: metadata(wire.metadata.unwrap_or_default()),
        payment_method,
        next_action: match status {
            IntentStatus::RequiresAction => wire.next_action.map(next_action),
            _ => None,
        },
        failure,
        client_secret: wire.client_secret.map(Secret::new),
        created: timestamp(wire.created)?,
    })
}

/// A Stripe Refund as ours; `intent_id` is the one asked for when Stripe leaves it out (a
/// retrieval asks for none: then Stripe must name it).
pub(crate) fn refund(
    wire: WireRefund,
    intent_id: Option<&IntentId>,
) -> Result<Refund, ProviderError> {
    let status = match wire.status.as_deref() {
        None | Some("pending") => RefundStatus::Pending,
        Some("requires_action") => RefundStatus::RequiresAction,
        Some("succeeded") => RefundStatus::Succeeded,
        Some("failed") => RefundStatus::Failed,
        Some("canceled") => RefundStatus::Cancelled,
        Some(_) => return Err(unexpected("unknown refund status")),
    };
    let intent_id = match (wire.payment_intent, intent_id) {
        (Some(id), _) => IntentId::parse(id).map_err(|e| unexpected(e.to_string()))?,
        (None, Some(asked)) => asked.clone(),
        (None, None) => return Err(unexpected("the refund names no payment intent")),
    };
    Ok(Refund {
        id: RefundId::parse(wire.id).map_err(|e| unexpected(e.to_string()))?,
        intent_id,
        amount_minor: wire.amount,
        currency: currency(&wire.currency)?,
        status,
        created: timestamp(wire.created)?,
    })
}

/// A non-2xx answer as a [`ProviderError`].
pub(crate) fn error(status: u16, retry_after: Option<Duration>, body: &[u8]) -> ProviderError {
    let wire = serde_json::from_slice::<WireErrorBody>(body)
        .map(|body| body.error)
        .unwrap_or_default();
    let message = wire
        .message
        .as_deref()
        .map(|m| guard::redact_text(m).into_owned())
        .unwrap_or_else(|| format!("HTTP {status}"));
    let kind = wire.kind.as_deref();
    let code = wire.code.as_deref();
    match status {
        402 => card_error(wire, message),
        400 if kind == Some("idempotency_error") => ProviderError::IdempotencyMismatch { message },
        400 if kind == Some("card_error") => card_error(wire, message),
        401 | 403 => ProviderError::Authentication { message },
        404 => ProviderError::NotFound { message },
        409 => ProviderError::InProgress { message },
        429 => ProviderError::RateLimited { retry_after },
        424 | 500..=599 => ProviderError::Server { status, message },
        400..=499 => ProviderError::InvalidRequest {
            code: code.map(str::to_owned),
            param: wire.param,
            message,
        },
        _ => unexpected(format!("unexpected HTTP status {status}")),
    }
}

fn card_error(wire: WireError, message: String) -> ProviderError {
    let intent = wire.payment_intent.and_then(|pi| intent(*pi).ok());
    let intent_id = intent.as_ref().map(|pi| pi.id.clone());
    let needs_action = wire.code.as_deref() == Some("authentication_required")
        || intent
            .as_ref()
            .is_some_and(|pi| pi.status == IntentStatus::RequiresAction);
    if needs_action {
        return ProviderError::RequiresAction {
            intent_id,
            next_action: intent.and_then(|pi| pi.next_action),
        };
    }
    ProviderError::Declined {
        reason: DeclineReason::from_provider(wire.decline_code.as_deref(), wire.code.as_deref()),
        message,
        intent_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_documented_error_statuses() {
        let declined = br#"{"error":{"type":"card_error","code":"card_declined",
            "decline_code":"insufficient_funds","message":"Your card has insufficient funds.",
            "payment_intent":{"id":"pi_1","amount":500,"currency":"eur",
            "status":"requires_payment_method","created":1700000000,
            "last_payment_error":{"code":"card_declined","decline_code":"insufficient_funds"}}}}"#;
        match error(402, None, declined) {
            ProviderError::Declined {
                reason, intent_id, ..
            } => {
                assert_eq!(reason, DeclineReason::InsufficientFunds);
                assert_eq!(intent_id.unwrap().as_str(), "pi_1");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            error(401, None, br#"{"error":{"type":"invalid_request_error","message":"Invalid API Key provided: sk_test_****"}}"#),
            ProviderError::Authentication { .. }
        ));
        assert!(matches!(
            error(400, None, br#"{"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters they were first used with."}}"#),
            ProviderError::IdempotencyMismatch { .. }
        ));
        assert!(matches!(
            error(
                409,
                None,
                br#"{"error":{"type":"idempotency_error","code":"idempotency_key_in_use"}}"#
            ),
            ProviderError::InProgress { .. }
        ));
        assert!(matches!(
            error(404, None, b"not json"),
            ProviderError::NotFound { .. }
        ));
        assert_eq!(
            error(429, Some(Duration::from_secs(2)), b"{}"),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert!(matches!(
            error(503, None, b""),
            ProviderError::Server { status: 503, .. }
        ));
        match error(
            400,
            None,
            br#"{"error":{"type":"invalid_request_error","code":"parameter_missing","param":"amount","message":"Missing required param: amount."}}"#,
        ) {
            ProviderError::InvalidRequest { code, param, .. } => {
                assert_eq!(code.as_deref(), Some("parameter_missing"));
                assert_eq!(param.as_deref(), Some("amount"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn authentication_required_is_a_customer_action() {
        let body = br#"{"error":{"type":"card_error","code":"authentication_required",
            "payment_intent":{"id":"pi_2","amount":500,"currency":"eur","status":"requires_action",
            "created":1700000000,"next_action":{"type":"use_stripe_sdk","use_stripe_sdk":{}}}}}"#;
        assert_eq!(
            error(402, None, body),
            ProviderError::RequiresAction {
                intent_id: Some(IntentId::parse("pi_2").unwrap()),
                next_action: Some(NextAction::UseProviderSdk),
            }
        );
    }

    #[test]
    fn currencies_go_out_lower_case_and_come_back_in_any_case() {
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(stripe_currency(&eur), "eur");
        for raw in ["eur", "EUR", "Eur"] {
            assert_eq!(currency(raw).unwrap(), eur, "{raw}");
        }
        for bad in ["", "eu", "euro", "€ur", "e1r"] {
            assert!(currency(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn maps_intent_statuses() {
        let json = |status: &str, failed: bool| {
            let error = if failed {
                r#","last_payment_error":{"code":"card_declined","decline_code":"lost_card","message":"lost"}"#
            } else {
                ""
            };
            format!(
                r#"{{"id":"pi_1","amount":500,"currency":"usd","status":"{status}","created":1700000000{error}}}"#
            )
        };
        for (status, failed, expected) in [
            ("requires_payment_method", false, IntentStatus::Created),
            ("requires_payment_method", true, IntentStatus::Failed),
            ("requires_confirmation", false, IntentStatus::Created),
            ("requires_action", false, IntentStatus::RequiresAction),
            ("processing", false, IntentStatus::Processing),
            ("requires_capture", false, IntentStatus::Processing),
            ("succeeded", false, IntentStatus::Succeeded),
            ("canceled", false, IntentStatus::Cancelled),
        ] {
            let wire: WirePaymentIntent = serde_json::from_str(&json(status, failed)).unwrap();
            let mapped = intent(wire).unwrap();
            assert_eq!(mapped.status, expected, "{status}");
            if failed {
                assert_eq!(mapped.failure.unwrap().reason, DeclineReason::LostCard);
            }
        }
        let wire: WirePaymentIntent = serde_json::from_str(&json("exploded", false)).unwrap();
        assert!(intent(wire).is_err());
    }
}
