//! [`StripeProvider`]: the [`Provider`] on Stripe's PaymentIntents API, written from Stripe's
//! public API reference.
//!
//! | operation | request |
//! |---|---|
//! | create | `POST /v1/payment_intents` (`amount`, `currency`, `payment_method_types[]=card`, `metadata[...]`, `payment_method`, `confirm`) |
//! | confirm | `POST /v1/payment_intents/{id}/confirm` (`payment_method`, `return_url`) |
//! | retrieve | `GET /v1/payment_intents/{id}` |
//! | cancel | `POST /v1/payment_intents/{id}/cancel` |
//! | refund | `POST /v1/refunds` (`payment_intent`, `amount`, `reason`, `metadata[...]`) |
//!
//! Bodies are form-encoded; every request carries `Authorization: Bearer <key>` and
//! `Stripe-Version`, every POST our `Idempotency-Key`, and each asks for
//! `expand[]=payment_method` so the answer names the card's brand and last four digits.
//! Errors map to [`ProviderError`] by HTTP status and Stripe's error object
//! (`{"error": {"type", "code", "decline_code", "message"}}`); retries and the time budget
//! are in `stripe/transport.rs`.

mod transport;
pub(crate) mod wire;

use std::time::Duration;

use async_trait::async_trait;
use hyper::Method;

use crate::Provider;
use crate::Secret;
use crate::config::ConfigError;
use crate::error::ProviderError;
use crate::types::{
    ConfirmIntent, CreateIntent, IdempotencyKey, IntentId, PaymentIntent, Refund, RefundId,
    RefundRequest,
};
use transport::{Call, Transport};

/// Stripe's API host.
pub const DEFAULT_BASE_URL: &str = "https://api.stripe.com";
/// The API version parkd was written against (sent as `Stripe-Version`).
pub const DEFAULT_API_VERSION: &str = "2024-06-20";
/// The default time budget of one call, retries included: well under the 2 s within which
/// a payment must at least be answered "pending".
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1500);
/// The default number of retries after the first attempt (within the budget).
pub const DEFAULT_MAX_RETRIES: u32 = 2;

/// How to reach Stripe.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// The secret (`sk_...`) or restricted (`rk_...`) key.
    pub api_key: Secret,
    /// [`DEFAULT_BASE_URL`], or a local server in tests (plain http only on loopback).
    pub base_url: String,
    /// `Stripe-Version`.
    pub api_version: String,
    /// The budget of one call, retries included.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
}

impl StripeSettings {
    /// Defaults for everything but the key.
    pub fn new(api_key: Secret) -> Self {
        Self {
            api_key,
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_version: DEFAULT_API_VERSION.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
        }
    }
}

/// The Stripe adapter (see the module doc).
#[derive(Debug)]
pub struct StripeProvider {
    transport: Transport,
}

impl StripeProvider {
    /// Checks the settings and builds the HTTP client (no request is made).
    pub fn new(settings: &StripeSettings) -> Result<Self, ConfigError> {
        if settings.api_key.is_empty() {
            return Err(ConfigError::new("payments.stripe.api_key is not set"));
        }
        Ok(Self {
            transport: Transport::new(
                &settings.base_url,
                &settings.api_key,
                &settings.api_version,
                settings.timeout,
                settings.max_retries,
            )?,
        })
    }

    async fn intent_call(&self, call: Call<'_>) -> Result<PaymentIntent, ProviderError> {
        let reply = self.transport.send(&call).await?;
        let wire: wire::WirePaymentIntent = serde_json::from_slice(&reply.body)
            .map_err(|_| wire::unexpected("the payment intent could not be read"))?;
        wire::intent(wire)
    }
}

fn pair(key: impl Into<String>, value: impl Into<String>) -> (String, String) {
    (key.into(), value.into())
}

fn expand() -> (String, String) {
    pair("expand[]", "payment_method")
}

#[async_trait]
impl Provider for StripeProvider {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create_intent(&self, request: &CreateIntent) -> Result<PaymentIntent, ProviderError> {
        let mut params = vec![
            pair("amount", request.amount_minor.to_string()),
            pair("currency", wire::stripe_currency(&request.currency)),
            pair("payment_method_types[]", "card"),
        ];
        for (key, value) in request.metadata.iter() {
            params.push(pair(format!("metadata[{key}]"), value));
        }
        if let Some(method) = &request.payment_method {
            params.push(pair("payment_method", method.as_str()));
        }
        if request.confirm {
            params.push(pair("confirm", "true"));
        }
        params.push(expand());
        self.intent_call(Call {
            operation: "create_intent",
            method: Method::POST,
            path: "/v1/payment_intents".to_owned(),
            params,
            idempotency_key: Some(&request.idempotency_key),
        })
        .await
    }

    async fn confirm_intent(
        &self,
        id: &IntentId,
        request: &ConfirmIntent,
    ) -> Result<PaymentIntent, ProviderError> {
        let mut params = Vec::new();
        if let Some(method) = &request.payment_method {
            params.push(pair("payment_method", method.as_str()));
        }
        if let Some(url) = &request.return_url {
            params.push(pair("return_url", url.as_str()));
        }
        params.push(expand());
        self.intent_call(Call {
            operation: "confirm_intent",
            method: Method::POST,
            path: format!("/v1/payment_intents/{id}/confirm"),
            params,
            idempotency_key: Some(&request.idempotency_key),
        })
        .await
    }

    async fn retrieve_intent(&self, id: &IntentId) -> Result<PaymentIntent, ProviderError> {
        self.intent_call(Call {
            operation: "retrieve_intent",
            method: Method::GET,
            path: format!("/v1/payment_intents/{id}"),
            params: vec![expand()],
            idempotency_key: None,
        })
        .await
    }

    async fn cancel_intent(
        &self,
        id: &IntentId,
        idempotency_key: &IdempotencyKey,
    ) -> Result<PaymentIntent, ProviderError> {
        self.intent_call(Call {
            operation: "cancel_intent",
            method: Method::POST,
            path: format!("/v1/payment_intents/{id}/cancel"),
            params: vec![expand()],
            idempotency_key: Some(idempotency_key),
        })
        .await
    }

    async fn refund(&self, request: &RefundRequest) -> Result<Refund, ProviderError> {
        let mut params = vec![pair("payment_intent", request.intent_id.as_str())];
        if let Some(amount) = request.amount_minor {
            params.push(pair("amount", amount.to_string()));
        }
        if let Some(reason) = request.reason {
            params.push(pair("reason", reason.as_str()));
        }
        for (key, value) in request.metadata.iter() {
            params.push(pair(format!("metadata[{key}]"), value));
        }
        let reply = self
            .transport
            .send(&Call {
                operation: "refund",
                method: Method::POST,
                path: "/v1/refunds".to_owned(),
                params,
                idempotency_key: Some(&request.idempotency_key),
            })
            .await?;
        let wire: wire::WireRefund = serde_json::from_slice(&reply.body)
            .map_err(|_| wire::unexpected("the refund could not be read"))?;
        wire::refund(wire, Some(&request.intent_id))
    }

    async fn retrieve_refund(&self, id: &RefundId) -> Result<Refund, ProviderError> {
        let reply = self
            .transport
            .send(&Call {
                operation: "retrieve_refund",
                method: Method::GET,
                path: format!("/v1/refunds/{id}"),
                params: Vec::new(),
                idempotency_key: None,
            })
            .await?;
        let wire: wire::WireRefund = serde_json::from_slice(&reply.body)
            .map_err(|_| wire::unexpected("the refund could not be read"))?;
        wire::refund(wire, None)
    }
}
