//! Payment providers behind one trait, and the rules that keep card data out and the ledger
//! whole.
//!
//! - [`Provider`]: create, confirm, retrieve and cancel a payment intent; refund it, fully or
//!   partly. Every call that changes something carries our [`IdempotencyKey`].
//! - [`TestProvider`] ([`test_provider`]): deterministic and in-process, driven by the test
//!   tokens below, so the demo takes payments with no account anywhere.
//! - [`StripeProvider`] ([`stripe`]): Stripe's PaymentIntents API over HTTPS, with a time
//!   budget per call and retries only where Stripe documents them as safe.
//! - [`webhook`]: Stripe's `Stripe-Signature` verification (several secrets during a
//!   rotation), event parsing, and [`webhook::converge`], which makes late, repeated and
//!   out-of-order events agree.
//! - [`guard`]: finds card numbers and security codes in a request body, so the HTTP layer
//!   can refuse it, and blanks them out of text to be logged.
//! - [`config`]: `[payments]`, with [`Secret`]s (`parkd_core::secret`) that print as
//!   `<redacted>`.
//!
//! This crate does no storage and serves no HTTP: the ledger (payments, refunds, seen event
//! ids) and the routes are the API's and the store's.
//!
//! # Card data
//!
//! parkd never holds a card number (PAN) or a security code (CVV/CVC). The customer's card
//! goes from their browser to the provider, which returns a token; parkd keeps the token,
//! the brand, the last four digits and the expiry ([`PaymentMethodRef`]), and nothing else.
//! No type here can carry a PAN or a CVV; [`PaymentMethodToken`] refuses a value that looks
//! like a card number, [`Metadata`] refuses card data, and [`guard::refuse_card_data`] is
//! what the HTTP layer runs on every payment-related body before anything logs or stores it.
//!
//! # Outcome rules
//!
//! A provider call ends in one of these; [`ProviderError::disposition`] says which for an
//! error, the intent's [`IntentStatus`] for a success.
//!
//! | answer | disposition | what the caller does |
//! |---|---|---|
//! | `Ok`, status `succeeded` | paid | record the payment |
//! | `Ok`, status `processing` | pending | record pending; the outcome comes by webhook or retrieval |
//! | `Ok`, status `requires_action`, or `Err(RequiresAction)` | [`Disposition::CustomerAction`] | record pending; give the client the next action |
//! | `Err(Declined)` (and status `failed`) | [`Disposition::Final`] | record the failure with its stable [`DeclineReason`]; the customer may try another card (new key) |
//! | `Err(InvalidRequest / NotFound / IdempotencyMismatch)` | [`Disposition::Final`] | nothing was charged; a bug or a wrong state on our side: log it, fail the attempt |
//! | `Err(Authentication)` | [`Disposition::Final`] | nothing was charged; our key is wrong: alert the operator |
//! | `Err(RateLimited)` | [`Disposition::RetryLater`] | nothing ran; record pending and send the same request (same key) later |
//! | `Err(Timeout / Network / InProgress / Server / UnexpectedResponse)` | [`Disposition::Unknown`] | the provider may have charged: record **pending**, then reconcile by retrieving the intent or re-sending the same request with the same key |
//!
//! The Stripe adapter's default budget is 1.5 s per call, retries included, so the API can
//! always answer at least "pending" within 2 s. A payment is never recorded as failed on an
//! unknown outcome, and an unknown outcome is never retried under a new key: that is how a
//! provider error never leaves a payment half-recorded or charged twice.
//!
//! # Test tokens
//!
//! Send these as the payment method to the test provider ([`test_provider::TEST_TOKENS`]):
//!
//! | token | card | what confirming does |
//! |---|---|---|
//! | `tok_test_ok` | visa 4242 | succeeds |
//! | `tok_test_ok_mastercard` | mastercard 4444 | succeeds |
//! | `tok_test_decline` | visa 0002 | declined, `generic_decline` |
//! | `tok_test_decline_insufficient_funds` | visa 9995 | declined, `insufficient_funds` |
//! | `tok_test_decline_lost_card` | visa 9987 | declined, `lost_card` |
//! | `tok_test_decline_stolen_card` | visa 9979 | declined, `stolen_card` |
//! | `tok_test_decline_expired_card` | visa 0069 | declined, `expired_card` |
//! | `tok_test_decline_incorrect_cvc` | visa 0127 | declined, `incorrect_cvc` |
//! | `tok_test_decline_processing_error` | visa 0119 | declined, `processing_error` |
//! | `tok_test_decline_fraudulent` | visa 0019 | declined, `fraudulent` |
//! | `tok_test_requires_action` | visa 3184 | `requires_action` (a redirect); [`TestProvider::complete_action`] plays the customer |
//! | `tok_test_processing` | visa 1881 | `processing`; [`TestProvider::finish_processing`] ends it |
//! | `tok_test_timeout` | visa 0341 | charges, but the answer is lost: `Err(Timeout)`; a retry with the same key or a retrieval shows the success |
//! | `tok_test_provider_error` | visa 0259 | `Err(Server { status: 500 })` before charging; the same key replays the 500; retrieval shows the intent unchanged |
//! | `tok_test_rate_limited` | visa 1629 | `Err(RateLimited)`; nothing runs or is saved |
//!
//! Any other token is `InvalidRequest { code: "resource_missing" }`. All tokens expire 12/2034.

use async_trait::async_trait;

pub mod config;
pub mod error;
pub mod guard;
pub mod stripe;
pub mod test_provider;
pub mod types;
pub mod webhook;

pub use config::{ConfigError, PaymentsConfig, ProviderKind, StripeConfig, TestProviderConfig};
pub use error::{Disposition, ProviderError};
pub use parkd_core::secret::Secret;
pub use stripe::{StripeProvider, StripeSettings};
pub use test_provider::TestProvider;
pub use types::{
    CardBrand, ConfirmIntent, CreateIntent, DeclineReason, EventId, IdempotencyKey, IntentId,
    IntentStatus, InvalidValue, Last4, Metadata, NextAction, PaymentFailure, PaymentIntent,
    PaymentMethodRef, PaymentMethodToken, Refund, RefundId, RefundReason, RefundRequest,
    RefundStatus,
};

/// A payment provider. Implementations are safe to share between tasks; every method
/// answers within the provider's time budget (see the crate docs for what each answer means
/// to the caller).
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// A short name for logs and metrics (`test`, `stripe`).
    fn name(&self) -> &'static str;

    /// Creates a payment intent for an amount, optionally confirming it at once.
    async fn create_intent(&self, request: &CreateIntent) -> Result<PaymentIntent, ProviderError>;

    /// Confirms an intent: the attempt to charge its (or the given) payment method.
    async fn confirm_intent(
        &self,
        id: &IntentId,
        request: &ConfirmIntent,
    ) -> Result<PaymentIntent, ProviderError>;

    /// The intent as the provider sees it now: how an unknown outcome is reconciled.
    async fn retrieve_intent(&self, id: &IntentId) -> Result<PaymentIntent, ProviderError>;

    /// Cancels an intent that has not succeeded.
    async fn cancel_intent(
        &self,
        id: &IntentId,
        idempotency_key: &IdempotencyKey,
    ) -> Result<PaymentIntent, ProviderError>;

    /// Refunds a succeeded payment in full or in part; never more than was received.
    async fn refund(&self, request: &RefundRequest) -> Result<Refund, ProviderError>;

    /// The refund as the provider sees it now: how a pending refund is reconciled.
    async fn retrieve_refund(&self, id: &RefundId) -> Result<Refund, ProviderError>;
}
