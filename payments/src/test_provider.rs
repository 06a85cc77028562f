//! [`TestProvider`]: an in-process, deterministic provider, so that the demo and the tests
//! take payments with no account anywhere.
//!
//! The payment method token decides what happens ([`TEST_TOKENS`], also in the crate docs):
//! `tok_test_ok` pays, `tok_test_decline_*` declines with that reason, `tok_test_requires_action`
//! waits for [`TestProvider::complete_action`], `tok_test_timeout` charges but loses the answer.
//! Idempotency works as Stripe's does: a key's first executed answer is saved and replayed
//! to every later request with the same key and parameters; the same key with other
//! parameters is [`ProviderError::IdempotencyMismatch`]; answers refused before execution
//! (validation, rate limiting) are not saved. One mutex guards all state and is never held
//! across an `.await`, so concurrent confirmations of one key charge once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parkd_core::clock::{Clock, SystemClock};
use parkd_core::tariff::Currency;

use crate::Provider;
use crate::Secret;
use crate::error::ProviderError;
use crate::types::{
    CardBrand, ConfirmIntent, CreateIntent, DeclineReason, IdempotencyKey, IntentId, IntentStatus,
    Last4, NextAction, PaymentFailure, PaymentIntent, PaymentMethodRef, PaymentMethodToken, Refund,
    RefundId, RefundRequest, RefundStatus,
};

/// What a test token makes the provider do on confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBehaviour {
    /// The payment succeeds at once.
    Succeed,
    /// The card is declined with this reason; the intent becomes `failed`.
    Decline(DeclineReason),
    /// The intent waits in `requires_action` until [`TestProvider::complete_action`].
    RequireAction,
    /// The intent waits in `processing` until [`TestProvider::finish_processing`].
    Processing,
    /// The payment succeeds but the answer is lost: the call fails with
    /// [`ProviderError::Timeout`]; a retry with the same key, or a retrieval, shows the charge.
    LoseAnswer,
    /// The provider fails with HTTP 500 before charging; a retry with the same key replays
    /// the 500 (as Stripe does); a retrieval shows the intent unchanged.
    ServerError,
    /// Refused by rate limiting before anything happens; not saved under the key.
    RateLimited,
}

/// One documented test token.
#[derive(Debug, Clone, Copy)]
pub struct TestToken {
    /// The token to send as the payment method.
    pub token: &'static str,
    /// The brand reported for it.
    pub brand: CardBrand,
    /// The last four digits reported for it.
    pub last4: &'static str,
    /// What confirming with it does.
    pub behaviour: TestBehaviour,
}

const fn token(
    token: &'static str,
    brand: CardBrand,
    last4: &'static str,
    behaviour: TestBehaviour,
) -> TestToken {
    TestToken {
        token,
        brand,
        last4,
        behaviour,
    }
}

/// Every token the test provider knows. Any other token is refused as
/// `InvalidRequest { code: "resource_missing" }`.
pub const TEST_TOKENS: &[TestToken] = &[
    token(
        "tok_test_ok",
        CardBrand::Visa,
        "4242",
        TestBehaviour::Succeed,
    ),
    token(
        "tok_test_ok_mastercard",
        CardBrand::Mastercard,
        "4444",
        TestBehaviour::Succeed,
    ),
    token(
        "tok_test_decline",
        CardBrand::Visa,
        "0002",
        TestBehaviour::Decline(DeclineReason::GenericDecline),
    ),
    token(
        "tok_test_decline_insufficient_funds",
        CardBrand::Visa,
        "9995",
        TestBehaviour::Decline(DeclineReason::InsufficientFunds),
    ),
    token(
        "tok_test_decline_lost_card",
        CardBrand::Visa,
        "9987",
        TestBehaviour::Decline(DeclineReason::LostCard),
    ),
    token(
        "tok_test_decline_stolen_card",
        CardBrand::Visa,
        "9979",
        TestBehaviour::Decline(DeclineReason::StolenCard),
    ),
    token(
        "tok_test_decline_expired_card",
        CardBrand::Visa,
        "0069",
        TestBehaviour::Decline(DeclineReason::ExpiredCard),
    ),
    token(
        "tok_test_decline_incorrect_cvc",
        CardBrand::Visa,
        "0127",
        TestBehaviour::Decline(DeclineReason::IncorrectCvc),
    ),
    token(
        "tok_test_decline_processing_error",
        CardBrand::Visa,
        "0119",
        TestBehaviour::Decline(DeclineReason::ProcessingError),
    ),
    token(
        "tok_test_decline_fraudulent",
        CardBrand::Visa,
        "0019",
        TestBehaviour::Decline(DeclineReason::Fraudulent),
    ),
    token(
        "tok_test_requires_action",
        CardBrand::Visa,
        "3184",
        TestBehaviour::RequireAction,
    ),
    token(
        "tok_test_processing",
        CardBrand::Visa,
        "1881",
        TestBehaviour::Processing,
    ),
    token(
        "tok_test_timeout",
        CardBrand::Visa,
        "0341",
        TestBehaviour::LoseAnswer,
    ),
    token(
        "tok_test_provider_error",
        CardBrand::Visa,
        "0259",
        TestBehaviour::ServerError,
    ),
    token(
        "tok_test_rate_limited",
        CardBrand::Visa,
        "1629",
        TestBehaviour::RateLimited,
    ),
];

/// The test token named `name`, if there is one.
pub fn test_token(name: &str) -> Option<&'static TestToken> {
    TEST_TOKENS.iter().find(|token| token.token == name)
}

/// The budget a lost answer reports in [`ProviderError::Timeout`].
pub const SIMULATED_TIMEOUT: Duration = Duration::from_millis(1500);

/// A charge the test provider made: what the tests count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCharge {
    /// The intent charged.
    pub intent_id: IntentId,
    /// The amount, in minor units.
    pub amount_minor: u64,
    /// The currency.
    pub currency: Currency,
    /// The idempotency key of the request that charged.
    pub idempotency_key: IdempotencyKey,
}

/// The in-process test provider (see the module doc).
#[derive(Debug)]
pub struct TestProvider {
    state: Mutex<State>,
    delay: Duration,
    clock: Arc<dyn Clock>,
}

impl Default for TestProvider {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

#[derive(Debug, Default)]
struct State {
    next_intent: u64,
    next_refund: u64,
    intents: HashMap<IntentId, TestIntent>,
    refunds: HashMap<RefundId, Refund>,
    /// New refunds start `pending` (as a bank may leave them) until [`TestProvider::finish_refund`].
    hold_refunds: bool,
    /// The next refunds' answers are lost on the way back (made, but the caller hears a
    /// timeout).
    lose_refund_answers: u32,
    keys: HashMap<IdempotencyKey, Saved>,
    charges: Vec<TestCharge>,
}

#[derive(Debug)]
struct TestIntent {
    intent: PaymentIntent,
    refunded_minor: u64,
    /// The key of the confirmation waiting for an action or for processing to finish.
    pending_key: Option<IdempotencyKey>,
}

#[derive(Debug, Clone)]
enum Answer {
    Intent(Result<PaymentIntent, ProviderError>),
    Refund(Result<Refund, ProviderError>),
}

#[derive(Debug)]
struct Saved {
    fingerprint: String,
    answer: Answer,
}

/// How an executed (or refused) request is answered and remembered.
enum Run {
    /// Executed: save the answer under the key and return it.
    Save(Answer),
    /// Executed: save `saved` under the key but answer this one call with `lost` (the
    /// answer lost on its way back).
    SaveButAnswer {
        saved: Box<Answer>,
        lost: ProviderError,
    },
    /// Refused before execution: answer, save nothing.
    DontSave(Answer),
}

fn invalid(code: &str, param: Option<&str>, message: &str) -> ProviderError {
    ProviderError::InvalidRequest {
        code: Some(code.to_owned()),
        param: param.map(str::to_owned),
        message: message.to_owned(),
    }
}

fn unexpected_state(intent: &PaymentIntent, action: &str) -> ProviderError {
    invalid(
        "payment_intent_unexpected_state",
        None,
        &format!(
            "cannot {action} a payment intent whose status is {}",
            intent.status
        ),
    )
}

fn not_found(id: &IntentId) -> ProviderError {
    ProviderError::NotFound {
        message: format!("no such payment intent: {id}"),
    }
}

fn card_of(token: &TestToken) -> Result<PaymentMethodRef, ProviderError> {
    let built = PaymentMethodToken::parse(token.token).and_then(|method| {
        Last4::parse(token.last4)
            .and_then(|last4| PaymentMethodRef::new(method, token.brand, last4, Some((12, 2034))))
    });
    built.map_err(|error| ProviderError::UnexpectedResponse {
        message: error.to_string(),
    })
}

impl TestProvider {
    /// A provider with no delay, taking `created` times from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            delay: Duration::ZERO,
            clock,
        }
    }

    /// Every answer is delayed by `delay` (after the work is done, as a slow network would),
    /// to test the callers' time budgets.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn pause(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }

    /// Completes the customer action of an intent in `requires_action`: `succeed` pays it,
    /// otherwise it fails with `authentication_required`. What the customer's 3-D Secure page
    /// would do.
    pub fn complete_action(
        &self,
        id: &IntentId,
        succeed: bool,
    ) -> Result<PaymentIntent, ProviderError> {
        self.finish(
            id,
            IntentStatus::RequiresAction,
            succeed,
            "complete the action of",
        )
    }

    /// Ends the processing of an intent in `processing`: `succeed` pays it, otherwise it fails
    /// with `processing_error`.
    pub fn finish_processing(
        &self,
        id: &IntentId,
        succeed: bool,
    ) -> Result<PaymentIntent, ProviderError> {
        self.finish(id, IntentStatus::Processing, succeed, "finish processing")
    }

    fn finish(
        &self,
        id: &IntentId,
        from: IntentStatus,
        succeed: bool,
        action: &str,
    ) -> Result<PaymentIntent, ProviderError> {
        let mut state = self.lock();
        let State {
            intents, charges, ..
        } = &mut *state;
        let entry = intents.get_mut(id).ok_or_else(|| not_found(id))?;
        if entry.intent.status != from {
            return Err(unexpected_state(&entry.intent, action));
        }
        entry.intent.next_action = None;
        let key = entry.pending_key.take();
        if succeed {
            if let Some(key) = key {
                charge(&mut entry.intent, key, charges);
            } else {
                return Err(ProviderError::UnexpectedResponse {
                    message: "no confirmation is waiting".to_owned(),
                });
            }
        } else {
            let reason = if from == IntentStatus::RequiresAction {
                DeclineReason::AuthenticationRequired
            } else {
                DeclineReason::ProcessingError
            };
            entry.intent.status = IntentStatus::Failed;
            entry.intent.failure = Some(PaymentFailure {
                reason,
                message: format!("the payment failed ({reason})"),
            });
        }
        Ok(entry.intent.clone())
    }

    /// Every charge made so far, in order.
    pub fn charges(&self) -> Vec<TestCharge> {
        self.lock().charges.clone()
    }

    /// How many charges were made.
    pub fn charge_count(&self) -> usize {
        self.lock().charges.len()
    }

    /// From now on, new refunds start `pending` (`true`) or succeed at once (`false`, the
    /// default).
    pub fn hold_refunds(&self, hold: bool) {
        self.lock().hold_refunds = hold;
    }

    /// The next `count` refunds are made but their answers are lost (the caller sees a
    /// timeout); a retry with the same idempotency key replays the refund.
    pub fn lose_refund_answers(&self, count: u32) {
        self.lock().lose_refund_answers = count;
    }

    /// Ends a pending refund: `succeed` or fail. Its amount goes back to the intent's
    /// refundable amount if it failed.
    pub fn finish_refund(&self, id: &RefundId, succeed: bool) -> Result<Refund, ProviderError> {
        let mut state = self.lock();
        let refund = state
            .refunds
            .get_mut(id)
            .ok_or_else(|| ProviderError::NotFound {
                message: format!("no such refund: {id}"),
            })?;
        if refund.status != RefundStatus::Pending {
            return Err(invalid(
                "refund_not_pending",
                None,
                &format!("refund {id} is {:?}", refund.status),
            ));
        }
        refund.status = if succeed {
            RefundStatus::Succeeded
        } else {
            RefundStatus::Failed
        };
        let refund = refund.clone();
        if !succeed && let Some(entry) = state.intents.get_mut(&refund.intent_id) {
            entry.refunded_minor = entry.refunded_minor.saturating_sub(refund.amount_minor);
        }
        Ok(refund)
    }

    /// How much of an intent has been refunded, in minor units.
    pub fn refunded_minor(&self, id: &IntentId) -> Option<u64> {
        self.lock()
            .intents
            .get(id)
            .map(|entry| entry.refunded_minor)
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

fn charge(intent: &mut PaymentIntent, key: IdempotencyKey, charges: &mut Vec<TestCharge>) {
    intent.status = IntentStatus::Succeeded;
    intent.amount_received_minor = intent.amount_minor;
    intent.failure = None;
    intent.next_action = None;
    charges.push(TestCharge {
        intent_id: intent.id.clone(),
        amount_minor: intent.amount_minor,
        currency: intent.currency.clone(),
        idempotency_key: key,
    });
}

impl State {
    /// Runs `run` under `key` unless the key already has a saved answer.
    fn idempotent(
        &mut self,
        key: &IdempotencyKey,
        fingerprint: String,
        run: impl FnOnce(&mut Self) -> Run,
    ) -> Answer {
        if let Some(saved) = self.keys.get(key) {
            if saved.fingerprint == fingerprint {
                return saved.answer.clone();
            }
            let mismatch = ProviderError::IdempotencyMismatch {
                message: format!(
                    "idempotency key {key} was used with different parameters; \
                     use a new key for a new request"
                ),
            };
            return match saved.answer {
                Answer::Intent(_) => Answer::Intent(Err(mismatch)),
                Answer::Refund(_) => Answer::Refund(Err(mismatch)),
            };
        }
        match run(self) {
            Run::Save(answer) => {
                self.keys.insert(
                    key.clone(),
                    Saved {
                        fingerprint,
                        answer: answer.clone(),
                    },
                );
                answer
            }
            Run::SaveButAnswer { saved, lost } => {
                let answer = match *saved {
                    Answer::Intent(_) => Answer::Intent(Err(lost)),
                    Answer::Refund(_) => Answer::Refund(Err(lost)),
                };
                self.keys.insert(
                    key.clone(),
                    Saved {
                        fingerprint,
                        answer: *saved,
                    },
                );
                answer
            }
            Run::DontSave(answer) => answer,
        }
    }

    fn create(&mut self, request: &CreateIntent, now: DateTime<Utc>) -> Run {
        if request.amount_minor == 0 || request.amount_minor > 99_999_999 {
            return Run::DontSave(Answer::Intent(Err(invalid(
                "amount_too_small",
                Some("amount"),
                "the amount must be between 1 and 99999999 minor units",
            ))));
        }
        let card = match &request.payment_method {
            Some(method) => match test_token(method.as_str()) {
                Some(token) => Some(token),
                None => return Run::DontSave(Answer::Intent(Err(unknown_token()))),
            },
            None => None,
        };
        if request.confirm && card.is_none() {
            return Run::DontSave(Answer::Intent(Err(invalid(
                "parameter_missing",
                Some("payment_method"),
                "confirming needs a payment method",
            ))));
        }
        if request.confirm && card.is_some_and(|t| t.behaviour == TestBehaviour::RateLimited) {
            return Run::DontSave(Answer::Intent(Err(rate_limited())));
        }
        self.next_intent += 1;
        let id = match IntentId::parse(format!("pi_test_{:06}", self.next_intent)) {
            Ok(id) => id,
            Err(error) => {
                return Run::DontSave(Answer::Intent(Err(ProviderError::UnexpectedResponse {
                    message: error.to_string(),
                })));
            }
        };
        let payment_method = match card.map(card_of).transpose() {
            Ok(method) => method,
            Err(error) => return Run::DontSave(Answer::Intent(Err(error))),
        };
        let intent = PaymentIntent {
            client_secret: Some(Secret::new(format!("{id}_secret_test"))),
            id: id.clone(),
            status: IntentStatus::Created,
            amount_minor: request.amount_minor,
            amount_received_minor: 0,
            currency: request.currency.clone(),
            metadata: request.metadata.clone(),
            payment_method,
            next_action: None,
            failure: None,
            created: now,
        };
        self.intents.insert(
            id.clone(),
            TestIntent {
                intent: intent.clone(),
                refunded_minor: 0,
                pending_key: None,
            },
        );
        if !request.confirm {
            return Run::Save(Answer::Intent(Ok(intent)));
        }
        let confirm = ConfirmIntent {
            idempotency_key: request.idempotency_key.clone(),
            payment_method: request.payment_method.clone(),
            return_url: None,
        };
        match self.confirm(&id, &confirm) {
            // Whatever the confirmation did, the intent now exists: save it.
            Run::DontSave(answer) | Run::Save(answer) => Run::Save(answer),
            lost @ Run::SaveButAnswer { .. } => lost,
        }
    }

    fn confirm(&mut self, id: &IntentId, request: &ConfirmIntent) -> Run {
        let State {
            intents, charges, ..
        } = self;
        let Some(entry) = intents.get_mut(id) else {
            return Run::DontSave(Answer::Intent(Err(not_found(id))));
        };
        let method = request.payment_method.clone().or_else(|| {
            entry
                .intent
                .payment_method
                .as_ref()
                .map(|m| m.token.clone())
        });
        let Some(method) = method else {
            return Run::DontSave(Answer::Intent(Err(invalid(
                "parameter_missing",
                Some("payment_method"),
                "confirming needs a payment method",
            ))));
        };
        let Some(token) = test_token(method.as_str()) else {
            return Run::DontSave(Answer::Intent(Err(unknown_token())));
        };
        if token.behaviour == TestBehaviour::RateLimited {
            return Run::DontSave(Answer::Intent(Err(rate_limited())));
        }
        if !matches!(
            entry.intent.status,
            IntentStatus::Created | IntentStatus::Failed | IntentStatus::RequiresAction
        ) {
            return Run::Save(Answer::Intent(Err(unexpected_state(
                &entry.intent,
                "confirm",
            ))));
        }
        if token.behaviour == TestBehaviour::ServerError {
            return Run::Save(Answer::Intent(Err(ProviderError::Server {
                status: 500,
                message: "simulated provider failure (tok_test_provider_error)".to_owned(),
            })));
        }
        let card = match card_of(token) {
            Ok(card) => card,
            Err(error) => return Run::DontSave(Answer::Intent(Err(error))),
        };
        let intent = &mut entry.intent;
        intent.payment_method = Some(card);
        intent.failure = None;
        intent.next_action = None;
        let key = request.idempotency_key.clone();
        match token.behaviour {
            TestBehaviour::Succeed => {
                charge(intent, key, charges);
                Run::Save(Answer::Intent(Ok(intent.clone())))
            }
            TestBehaviour::LoseAnswer => {
                charge(intent, key, charges);
                Run::SaveButAnswer {
                    saved: Box::new(Answer::Intent(Ok(intent.clone()))),
                    lost: ProviderError::Timeout {
                        after: SIMULATED_TIMEOUT,
                    },
                }
            }
            TestBehaviour::Decline(reason) => {
                intent.status = IntentStatus::Failed;
                let message = format!("Your card was declined ({reason}).");
                intent.failure = Some(PaymentFailure {
                    reason,
                    message: message.clone(),
                });
                Run::Save(Answer::Intent(Err(ProviderError::Declined {
                    reason,
                    message,
                    intent_id: Some(intent.id.clone()),
                })))
            }
            TestBehaviour::RequireAction => {
                intent.status = IntentStatus::RequiresAction;
                intent.next_action = Some(NextAction::RedirectToUrl {
                    url: format!("https://payments.parkd.test/3ds/{}", intent.id),
                    return_url: request.return_url.clone(),
                });
                entry.pending_key = Some(key);
                Run::Save(Answer::Intent(Ok(intent.clone())))
            }
            TestBehaviour::Processing => {
                intent.status = IntentStatus::Processing;
                entry.pending_key = Some(key);
                Run::Save(Answer::Intent(Ok(intent.clone())))
            }
            // Both were answered above, before the intent changed.
            TestBehaviour::ServerError | TestBehaviour::RateLimited => {
                Run::DontSave(Answer::Intent(Err(ProviderError::UnexpectedResponse {
                    message: "test token handled out of order".to_owned(),
                })))
            }
        }
    }

    fn cancel(&mut self, id: &IntentId) -> Run {
        let Some(entry) = self.intents.get_mut(id) else {
            return Run::DontSave(Answer::Intent(Err(not_found(id))));
        };
        if entry.intent.status.is_terminal() {
            return Run::Save(Answer::Intent(Err(unexpected_state(
                &entry.intent,
                "cancel",
            ))));
        }
        entry.intent.status = IntentStatus::Cancelled;
        entry.intent.next_action = None;
        entry.pending_key = None;
        Run::Save(Answer::Intent(Ok(entry.intent.clone())))
    }

    fn refund(&mut self, request: &RefundRequest, now: DateTime<Utc>) -> Run {
        if request.amount_minor == Some(0) {
            return Run::DontSave(Answer::Refund(Err(invalid(
                "amount_too_small",
                Some("amount"),
                "a refund must be at least 1 minor unit",
            ))));
        }
        let Some(entry) = self.intents.get_mut(&request.intent_id) else {
            return Run::DontSave(Answer::Refund(Err(not_found(&request.intent_id))));
        };
        if entry.intent.status != IntentStatus::Succeeded {
            return Run::Save(Answer::Refund(Err(unexpected_state(
                &entry.intent,
                "refund",
            ))));
        }
        let remaining = entry
            .intent
            .amount_received_minor
            .saturating_sub(entry.refunded_minor);
        if remaining == 0 {
            return Run::Save(Answer::Refund(Err(invalid(
                "charge_already_refunded",
                None,
                "the payment has already been refunded in full",
            ))));
        }
        let amount = request.amount_minor.unwrap_or(remaining);
        if amount > remaining {
            return Run::Save(Answer::Refund(Err(invalid(
                "amount_too_large",
                Some("amount"),
                &format!("the refund ({amount}) exceeds what is left to refund ({remaining})"),
            ))));
        }
        entry.refunded_minor += amount;
        let intent_id = entry.intent.id.clone();
        let currency = entry.intent.currency.clone();
        self.next_refund += 1;
        let id = match RefundId::parse(format!("re_test_{:06}", self.next_refund)) {
            Ok(id) => id,
            Err(error) => {
                return Run::DontSave(Answer::Refund(Err(ProviderError::UnexpectedResponse {
                    message: error.to_string(),
                })));
            }
        };
        let refund = Refund {
            id: id.clone(),
            intent_id,
            amount_minor: amount,
            currency,
            status: if self.hold_refunds {
                RefundStatus::Pending
            } else {
                RefundStatus::Succeeded
            },
            created: now,
        };
        self.refunds.insert(id, refund.clone());
        if self.lose_refund_answers > 0 {
            self.lose_refund_answers -= 1;
            return Run::SaveButAnswer {
                saved: Box::new(Answer::Refund(Ok(refund))),
                lost: ProviderError::Timeout {
                    after: SIMULATED_TIMEOUT,
                },
            };
        }
        Run::Save(Answer::Refund(Ok(refund)))
    }
}

fn unknown_token() -> ProviderError {
    invalid(
        "resource_missing",
        Some("payment_method"),
        "unknown test payment method; see the test tokens in the payments docs",
    )
}

fn rate_limited() -> ProviderError {
    ProviderError::RateLimited {
        retry_after: Some(Duration::from_secs(1)),
    }
}

fn intent_answer(answer: Answer) -> Result<PaymentIntent, ProviderError> {
    match answer {
        Answer::Intent(result) => result,
        Answer::Refund(_) => Err(ProviderError::IdempotencyMismatch {
            message: "idempotency key was used for a refund".to_owned(),
        }),
    }
}

fn refund_answer(answer: Answer) -> Result<Refund, ProviderError> {
    match answer {
        Answer::Refund(result) => result,
        Answer::Intent(_) => Err(ProviderError::IdempotencyMismatch {
            message: "idempotency key was used for a payment intent".to_owned(),
        }),
    }
}

#[async_trait]
impl Provider for TestProvider {
    fn name(&self) -> &'static str {
        "test"
    }

    async fn create_intent(&self, request: &CreateIntent) -> Result<PaymentIntent, ProviderError> {
        let now = self.now();
        let fingerprint = format!(
            "create|{}|{}|{:?}|{:?}|{}",
            request.amount_minor,
            request.currency,
            request.metadata,
            request.payment_method,
            request.confirm
        );
        let answer = self
            .lock()
            .idempotent(&request.idempotency_key, fingerprint, |state| {
                state.create(request, now)
            });
        self.pause().await;
        intent_answer(answer)
    }

    async fn confirm_intent(
        &self,
        id: &IntentId,
        request: &ConfirmIntent,
    ) -> Result<PaymentIntent, ProviderError> {
        let fingerprint = format!(
            "confirm|{id}|{:?}|{:?}",
            request.payment_method, request.return_url
        );
        let answer = self
            .lock()
            .idempotent(&request.idempotency_key, fingerprint, |state| {
                state.confirm(id, request)
            });
        self.pause().await;
        intent_answer(answer)
    }

    async fn retrieve_intent(&self, id: &IntentId) -> Result<PaymentIntent, ProviderError> {
        let result = self
            .lock()
            .intents
            .get(id)
            .map(|entry| entry.intent.clone())
            .ok_or_else(|| not_found(id));
        self.pause().await;
        result
    }

    async fn cancel_intent(
        &self,
        id: &IntentId,
        idempotency_key: &IdempotencyKey,
    ) -> Result<PaymentIntent, ProviderError> {
        let fingerprint = format!("cancel|{id}");
        let answer = self
            .lock()
            .idempotent(idempotency_key, fingerprint, |state| state.cancel(id));
        self.pause().await;
        intent_answer(answer)
    }

    async fn refund(&self, request: &RefundRequest) -> Result<Refund, ProviderError> {
        let now = self.now();
        let fingerprint = format!(
            "refund|{}|{:?}|{:?}|{:?}",
            request.intent_id, request.amount_minor, request.reason, request.metadata
        );
        let answer = self
            .lock()
            .idempotent(&request.idempotency_key, fingerprint, |state| {
                state.refund(request, now)
            });
        self.pause().await;
        refund_answer(answer)
    }

    async fn retrieve_refund(&self, id: &RefundId) -> Result<Refund, ProviderError> {
        let result = self
            .lock()
            .refunds
            .get(id)
            .cloned()
            .ok_or_else(|| ProviderError::NotFound {
                message: format!("no such refund: {id}"),
            });
        self.pause().await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_token_is_a_valid_card_reference() {
        for token in TEST_TOKENS {
            let card = card_of(token).unwrap();
            assert_eq!(card.token.as_str(), token.token);
            assert_eq!(test_token(token.token).unwrap().token, token.token);
        }
        let mut names: Vec<_> = TEST_TOKENS.iter().map(|t| t.token).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TEST_TOKENS.len());
    }
}
