//! [`ProviderError`]: every way a provider call can fail, and [`Disposition`]: what the
//! caller must do about each.
//!
//! The rule that keeps the ledger whole: an error whose disposition is
//! [`Disposition::Unknown`] may hide a charge that happened. The caller records the payment
//! as *pending* (and answers the client so, within its 2 s budget), then reconciles: it
//! retrieves the intent, or sends the same request again with the same idempotency key,
//! which the provider answers with the first request's outcome. It never records such a
//! payment as failed, and never retries it under a new key.

use std::time::Duration;

use crate::types::{DeclineReason, IntentId, NextAction};

/// What a caller must do after a provider answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Settled: nothing was charged by this request, and sending it again will not change
    /// that. Record the failure (a new attempt needs a new idempotency key).
    Final,
    /// The customer must act (3-D Secure): record the payment as pending and hand the next
    /// action to the client; the outcome arrives by webhook or retrieval.
    CustomerAction,
    /// Nothing happened (refused before execution): send the same request again later, with
    /// the same idempotency key.
    RetryLater,
    /// The provider may or may not have acted. Record *pending*; reconcile by retrieving the
    /// intent or re-sending with the same idempotency key.
    Unknown,
}

/// A failed provider call.
///
/// Messages come from the provider with card numbers blanked; they never contain secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The card was declined. Stripe: HTTP 402, `card_error`.
    #[error("payment declined ({reason})")]
    Declined {
        /// The stable reason.
        reason: DeclineReason,
        /// The provider's message, fit for the customer.
        message: String,
        /// The intent the attempt belonged to, when the provider says.
        intent_id: Option<IntentId>,
    },
    /// The payment needs the customer (3-D Secure) before it can go on. Stripe: a 402 with
    /// `authentication_required` whose intent asks for an action.
    #[error("payment requires customer action")]
    RequiresAction {
        /// The intent waiting for the action.
        intent_id: Option<IntentId>,
        /// What the customer must do, when the provider says.
        next_action: Option<NextAction>,
    },
    /// The request was wrong (missing or bad parameter, an intent in the wrong state...).
    /// Stripe: HTTP 400 `invalid_request_error`.
    #[error("invalid request to the payment provider: {message}")]
    InvalidRequest {
        /// The provider's code (`parameter_missing`, `payment_intent_unexpected_state`,
        /// `amount_too_large`...).
        code: Option<String>,
        /// The parameter at fault, if named.
        param: Option<String>,
        /// The provider's message.
        message: String,
    },
    /// No such object. Stripe: HTTP 404 (`resource_missing`).
    #[error("not found at the payment provider: {message}")]
    NotFound {
        /// The provider's message.
        message: String,
    },
    /// The idempotency key was used before with other parameters (a bug on our side: each
    /// key names one request). Stripe: `idempotency_error`.
    #[error("idempotency key reused with different parameters")]
    IdempotencyMismatch {
        /// The provider's message.
        message: String,
    },
    /// Our credentials or configuration were refused (HTTP 401/403, a missing key).
    #[error("payment provider refused our credentials: {message}")]
    Authentication {
        /// The provider's message (never the key).
        message: String,
    },
    /// Too many requests; nothing was executed (the provider's rate limiter runs before its
    /// idempotency layer). Stripe: HTTP 429.
    #[error("rate limited by the payment provider")]
    RateLimited {
        /// How long the provider asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// No answer within the time budget; the request may have been executed.
    #[error("no answer from the payment provider within {after:?}")]
    Timeout {
        /// The budget that ran out.
        after: Duration,
    },
    /// The connection failed or broke; the request may have been executed.
    #[error("network error talking to the payment provider: {message}")]
    Network {
        /// What failed.
        message: String,
    },
    /// Another request with the same idempotency key is still being executed. Stripe: HTTP
    /// 409 (`idempotency_key_in_use`).
    #[error("a request with the same idempotency key is still in progress")]
    InProgress {
        /// The provider's message.
        message: String,
    },
    /// The provider failed (HTTP 5xx); the request may have been executed.
    #[error("payment provider error (HTTP {status})")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The provider's message, if any.
        message: String,
    },
    /// An answer we could not understand; the request may have been executed.
    #[error("unexpected answer from the payment provider: {message}")]
    UnexpectedResponse {
        /// What was wrong with it.
        message: String,
    },
}

impl ProviderError {
    /// What the caller must do (see [`Disposition`]).
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Declined { .. }
            | Self::InvalidRequest { .. }
            | Self::NotFound { .. }
            | Self::IdempotencyMismatch { .. }
            | Self::Authentication { .. } => Disposition::Final,
            Self::RequiresAction { .. } => Disposition::CustomerAction,
            Self::RateLimited { .. } => Disposition::RetryLater,
            Self::Timeout { .. }
            | Self::Network { .. }
            | Self::InProgress { .. }
            | Self::Server { .. }
            | Self::UnexpectedResponse { .. } => Disposition::Unknown,
        }
    }

    /// Whether the provider may have acted: record pending and reconcile.
    pub fn is_outcome_unknown(&self) -> bool {
        self.disposition() == Disposition::Unknown
    }

    /// A stable snake_case name for logs, metrics and problem details.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Declined { .. } => "declined",
            Self::RequiresAction { .. } => "requires_action",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::NotFound { .. } => "not_found",
            Self::IdempotencyMismatch { .. } => "idempotency_mismatch",
            Self::Authentication { .. } => "authentication",
            Self::RateLimited { .. } => "rate_limited",
            Self::Timeout { .. } => "timeout",
            Self::Network { .. } => "network",
            Self::InProgress { .. } => "in_progress",
            Self::Server { .. } => "server_error",
            Self::UnexpectedResponse { .. } => "unexpected_response",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_defined_disposition() {
        let cases = [
            (
                ProviderError::Declined {
                    reason: DeclineReason::InsufficientFunds,
                    message: String::new(),
                    intent_id: None,
                },
                Disposition::Final,
            ),
            (
                ProviderError::RequiresAction {
                    intent_id: None,
                    next_action: None,
                },
                Disposition::CustomerAction,
            ),
            (
                ProviderError::RateLimited { retry_after: None },
                Disposition::RetryLater,
            ),
            (
                ProviderError::Timeout {
                    after: Duration::from_secs(1),
                },
                Disposition::Unknown,
            ),
            (
                ProviderError::Server {
                    status: 500,
                    message: String::new(),
                },
                Disposition::Unknown,
            ),
            (
                ProviderError::InProgress {
                    message: String::new(),
                },
                Disposition::Unknown,
            ),
            (
                ProviderError::Authentication {
                    message: String::new(),
                },
                Disposition::Final,
            ),
        ];
        for (error, disposition) in cases {
            assert_eq!(error.disposition(), disposition, "{error}");
        }
    }
}
