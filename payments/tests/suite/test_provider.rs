//! The test provider: documented tokens, Stripe-like idempotency, refunds that never exceed
//! the charge, and one charge per key under concurrency.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use parkd_core::clock::ManualClock;
use parkd_core::tariff::Currency;
use parkd_payments::test_provider::{TEST_TOKENS, TestBehaviour};
use parkd_payments::{
    CardBrand, ConfirmIntent, CreateIntent, DeclineReason, Disposition, IdempotencyKey, IntentId,
    IntentStatus, Metadata, NextAction, PaymentIntent, PaymentMethodToken, Provider, ProviderError,
    RefundRequest, RefundStatus, TestProvider,
};

fn provider() -> TestProvider {
    TestProvider::new(Arc::new(ManualClock::new(
        DateTime::from_timestamp(1_712_345_678, 0).unwrap(),
    )))
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::parse(text).unwrap()
}

fn token(text: &str) -> PaymentMethodToken {
    PaymentMethodToken::parse(text).unwrap()
}

fn create(amount: u64, method: Option<&str>, confirm: bool, idempotency_key: &str) -> CreateIntent {
    CreateIntent {
        amount_minor: amount,
        currency: Currency::parse("EUR").unwrap(),
        idempotency_key: key(idempotency_key),
        metadata: Metadata::new().with("reservation_id", "r-1").unwrap(),
        payment_method: method.map(token),
        confirm,
    }
}

fn confirm(method: &str, idempotency_key: &str) -> ConfirmIntent {
    ConfirmIntent {
        idempotency_key: key(idempotency_key),
        payment_method: Some(token(method)),
        return_url: None,
    }
}

async fn paid(provider: &TestProvider, amount: u64) -> PaymentIntent {
    let intent = provider
        .create_intent(&create(
            amount,
            Some("tok_test_ok"),
            true,
            &format!("pay-{amount}"),
        ))
        .await
        .unwrap();
    assert_eq!(intent.status, IntentStatus::Succeeded);
    intent
}

fn refund(intent: &IntentId, amount: Option<u64>, idempotency_key: &str) -> RefundRequest {
    RefundRequest {
        intent_id: intent.clone(),
        amount_minor: amount,
        idempotency_key: key(idempotency_key),
        reason: None,
        metadata: Metadata::new(),
    }
}

#[tokio::test]
async fn the_ok_token_pays_and_reports_only_token_brand_and_last4() {
    let provider = provider();
    let intent = paid(&provider, 1250).await;
    assert_eq!(intent.amount_received_minor, 1250);
    let card = intent.payment_method.unwrap();
    assert_eq!(card.token.as_str(), "tok_test_ok");
    assert_eq!(card.brand, CardBrand::Visa);
    assert_eq!(card.last4.as_str(), "4242");
    assert_eq!(intent.metadata.get("reservation_id"), Some("r-1"));
    assert_eq!(provider.charge_count(), 1);
    assert_eq!(provider.name(), "test");
}

#[tokio::test]
async fn the_same_key_and_parameters_replay_the_first_answer() {
    let provider = provider();
    let request = create(900, Some("tok_test_ok"), true, "k1");
    let first = provider.create_intent(&request).await.unwrap();
    let second = provider.create_intent(&request).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(provider.charge_count(), 1);

    let mut changed = request.clone();
    changed.amount_minor = 901;
    let error = provider.create_intent(&changed).await.unwrap_err();
    assert!(matches!(error, ProviderError::IdempotencyMismatch { .. }));
    assert_eq!(error.disposition(), Disposition::Final);
    assert_eq!(provider.charge_count(), 1);
}

#[tokio::test]
async fn a_key_used_for_one_operation_cannot_be_used_for_another() {
    let provider = provider();
    let intent = provider
        .create_intent(&create(500, None, false, "shared"))
        .await
        .unwrap();
    let error = provider
        .confirm_intent(&intent.id, &confirm("tok_test_ok", "shared"))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::IdempotencyMismatch { .. }));
}

#[tokio::test]
async fn create_then_confirm_and_a_replayed_confirm_charges_once() {
    let provider = provider();
    let intent = provider
        .create_intent(&create(700, None, false, "c1"))
        .await
        .unwrap();
    assert_eq!(intent.status, IntentStatus::Created);
    assert!(intent.client_secret.is_some());
    let confirmed = provider
        .confirm_intent(&intent.id, &confirm("tok_test_ok_mastercard", "c1-confirm"))
        .await
        .unwrap();
    assert_eq!(confirmed.status, IntentStatus::Succeeded);
    assert_eq!(
        confirmed.payment_method.as_ref().unwrap().brand,
        CardBrand::Mastercard
    );
    let replay = provider
        .confirm_intent(&intent.id, &confirm("tok_test_ok_mastercard", "c1-confirm"))
        .await
        .unwrap();
    assert_eq!(replay, confirmed);

    // A new key on a paid intent is refused, not charged again.
    let error = provider
        .confirm_intent(&intent.id, &confirm("tok_test_ok", "c1-confirm-again"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ProviderError::InvalidRequest { code: Some(code), .. } if code == "payment_intent_unexpected_state")
    );
    assert_eq!(provider.charge_count(), 1);
}

#[tokio::test]
async fn every_decline_token_declines_with_its_documented_reason() {
    let provider = provider();
    for (index, test_token) in TEST_TOKENS.iter().enumerate() {
        let TestBehaviour::Decline(reason) = test_token.behaviour else {
            continue;
        };
        let error = provider
            .create_intent(&create(
                1000,
                Some(test_token.token),
                true,
                &format!("d{index}"),
            ))
            .await
            .unwrap_err();
        match &error {
            ProviderError::Declined {
                reason: got,
                intent_id,
                ..
            } => {
                assert_eq!(*got, reason, "{}", test_token.token);
                let intent = provider
                    .retrieve_intent(intent_id.as_ref().unwrap())
                    .await
                    .unwrap();
                assert_eq!(intent.status, IntentStatus::Failed);
                assert_eq!(intent.failure.unwrap().reason, reason);
                assert_eq!(
                    intent.payment_method.unwrap().last4.as_str(),
                    test_token.last4
                );
            }
            other => panic!("{}: {other:?}", test_token.token),
        }
        assert_eq!(error.disposition(), Disposition::Final);
    }
    assert_eq!(provider.charge_count(), 0);
    assert!(
        provider
            .create_intent(&create(
                1,
                Some("tok_test_decline_insufficient_funds"),
                true,
                "x"
            ))
            .await
            .is_err_and(|e| matches!(
                e,
                ProviderError::Declined {
                    reason: DeclineReason::InsufficientFunds,
                    ..
                }
            ))
    );
}

#[tokio::test]
async fn a_failed_intent_can_be_paid_with_another_card() {
    let provider = provider();
    let error = provider
        .create_intent(&create(1000, Some("tok_test_decline"), true, "f1"))
        .await
        .unwrap_err();
    let ProviderError::Declined {
        intent_id: Some(id),
        ..
    } = error
    else {
        panic!("{error:?}");
    };
    let intent = provider
        .confirm_intent(&id, &confirm("tok_test_ok", "f1-retry"))
        .await
        .unwrap();
    assert_eq!(intent.status, IntentStatus::Succeeded);
    assert_eq!(intent.failure, None);
    assert_eq!(provider.charge_count(), 1);
}

#[tokio::test]
async fn requires_action_waits_for_the_customer() {
    let provider = provider();
    let intent = provider
        .create_intent(&create(1000, Some("tok_test_requires_action"), true, "a1"))
        .await
        .unwrap();
    assert_eq!(intent.status, IntentStatus::RequiresAction);
    assert!(matches!(
        intent.next_action,
        Some(NextAction::RedirectToUrl { .. })
    ));
    assert_eq!(provider.charge_count(), 0);

    let done = provider.complete_action(&intent.id, true).unwrap();
    assert_eq!(done.status, IntentStatus::Succeeded);
    assert_eq!(done.next_action, None);
    assert_eq!(provider.charge_count(), 1);
    assert_eq!(
        provider.charges()[0].idempotency_key.as_str(),
        "a1",
        "the charge belongs to the confirming request"
    );
    assert!(provider.complete_action(&intent.id, true).is_err());

    let other = provider
        .create_intent(&create(1000, Some("tok_test_requires_action"), true, "a2"))
        .await
        .unwrap();
    let failed = provider.complete_action(&other.id, false).unwrap();
    assert_eq!(failed.status, IntentStatus::Failed);
    assert_eq!(
        failed.failure.unwrap().reason,
        DeclineReason::AuthenticationRequired
    );
    assert_eq!(provider.charge_count(), 1);
}

#[tokio::test]
async fn processing_finishes_later() {
    let provider = provider();
    let intent = provider
        .create_intent(&create(1000, Some("tok_test_processing"), true, "p1"))
        .await
        .unwrap();
    assert_eq!(intent.status, IntentStatus::Processing);
    assert_eq!(
        provider.retrieve_intent(&intent.id).await.unwrap().status,
        IntentStatus::Processing
    );
    let done = provider.finish_processing(&intent.id, true).unwrap();
    assert_eq!(done.status, IntentStatus::Succeeded);
    assert_eq!(provider.charge_count(), 1);
}

#[tokio::test]
async fn a_lost_answer_is_unknown_and_reconciles_to_the_charge() {
    let provider = provider();
    let intent = provider
        .create_intent(&create(1000, None, false, "t1"))
        .await
        .unwrap();
    let request = confirm("tok_test_timeout", "t1-confirm");
    let error = provider
        .confirm_intent(&intent.id, &request)
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Timeout { .. }));
    assert_eq!(error.disposition(), Disposition::Unknown);

    // Reconcile by retrieving...
    let seen = provider.retrieve_intent(&intent.id).await.unwrap();
    assert_eq!(seen.status, IntentStatus::Succeeded);
    // ...or by re-sending with the same key: the saved success, no second charge.
    let replay = provider.confirm_intent(&intent.id, &request).await.unwrap();
    assert_eq!(replay.status, IntentStatus::Succeeded);
    assert_eq!(provider.charge_count(), 1);
}

#[tokio::test]
async fn a_provider_error_is_unknown_replays_and_charges_nothing() {
    let provider = provider();
    let intent = provider
        .create_intent(&create(1000, None, false, "e1"))
        .await
        .unwrap();
    let request = confirm("tok_test_provider_error", "e1-confirm");
    for _ in 0..2 {
        let error = provider
            .confirm_intent(&intent.id, &request)
            .await
            .unwrap_err();
        assert!(matches!(error, ProviderError::Server { status: 500, .. }));
        assert_eq!(error.disposition(), Disposition::Unknown);
    }
    let seen = provider.retrieve_intent(&intent.id).await.unwrap();
    assert_eq!(
        seen.status,
        IntentStatus::Created,
        "reconciled: not charged"
    );
    assert_eq!(provider.charge_count(), 0);
    let paid = provider
        .confirm_intent(&intent.id, &confirm("tok_test_ok", "e1-confirm-2"))
        .await
        .unwrap();
    assert_eq!(paid.status, IntentStatus::Succeeded);
}

#[tokio::test]
async fn rate_limiting_runs_nothing_and_saves_nothing() {
    let provider = provider();
    let error = provider
        .create_intent(&create(1000, Some("tok_test_rate_limited"), true, "rl"))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::RateLimited { .. }));
    assert_eq!(error.disposition(), Disposition::RetryLater);
    // Nothing was saved under the key: it can still be used for the real request.
    let intent = provider
        .create_intent(&create(1000, Some("tok_test_ok"), true, "rl"))
        .await
        .unwrap();
    assert_eq!(intent.id.as_str(), "pi_test_000001");
}

#[tokio::test]
async fn unknown_tokens_and_bad_amounts_are_invalid_requests() {
    let provider = provider();
    let error = provider
        .create_intent(&create(1000, Some("pm_card_visa"), true, "u1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ProviderError::InvalidRequest { code: Some(code), .. } if code == "resource_missing")
    );
    let error = provider
        .create_intent(&create(0, Some("tok_test_ok"), true, "u2"))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::InvalidRequest { .. }));
    let error = provider
        .create_intent(&create(10, None, true, "u3"))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::InvalidRequest { .. }));
    let error = provider
        .retrieve_intent(&IntentId::parse("pi_missing").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::NotFound { .. }));
}

#[tokio::test]
async fn cancel_works_until_the_payment_succeeds() {
    let provider = provider();
    let open = provider
        .create_intent(&create(1000, None, false, "x1"))
        .await
        .unwrap();
    let cancelled = provider
        .cancel_intent(&open.id, &key("x1-cancel"))
        .await
        .unwrap();
    assert_eq!(cancelled.status, IntentStatus::Cancelled);
    let error = provider
        .confirm_intent(&open.id, &confirm("tok_test_ok", "x1-confirm"))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::InvalidRequest { .. }));

    let done = paid(&provider, 1000).await;
    let error = provider
        .cancel_intent(&done.id, &key("x2-cancel"))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::InvalidRequest { .. }));
    assert_eq!(provider.charge_count(), 1);
}

#[tokio::test]
async fn refunds_are_partial_or_full_and_never_exceed_the_charge() {
    let provider = provider();
    let intent = paid(&provider, 1000).await;

    let first = provider
        .refund(&refund(&intent.id, Some(300), "r1"))
        .await
        .unwrap();
    assert_eq!(first.amount_minor, 300);
    assert_eq!(first.status, RefundStatus::Succeeded);
    assert_eq!(first.intent_id, intent.id);
    // A replay returns the same refund and refunds nothing more.
    assert_eq!(
        provider
            .refund(&refund(&intent.id, Some(300), "r1"))
            .await
            .unwrap(),
        first
    );
    assert_eq!(provider.refunded_minor(&intent.id), Some(300));

    let error = provider
        .refund(&refund(&intent.id, Some(701), "r2"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ProviderError::InvalidRequest { code: Some(code), .. } if code == "amount_too_large")
    );
    let rest = provider
        .refund(&refund(&intent.id, None, "r3"))
        .await
        .unwrap();
    assert_eq!(rest.amount_minor, 700);
    let error = provider
        .refund(&refund(&intent.id, Some(1), "r4"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ProviderError::InvalidRequest { code: Some(code), .. } if code == "charge_already_refunded")
    );
    assert_eq!(provider.refunded_minor(&intent.id), Some(1000));

    let unpaid = provider
        .create_intent(&create(1000, None, false, "r-unpaid"))
        .await
        .unwrap();
    assert!(
        provider
            .refund(&refund(&unpaid.id, None, "r5"))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refunds_never_exceed_the_charge() {
    let provider = Arc::new(provider());
    let intent = paid(&provider, 1000).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let provider = provider.clone();
        let id = intent.id.clone();
        tasks.push(tokio::spawn(async move {
            provider
                .refund(&refund(&id, Some(100), &format!("cr{i}")))
                .await
        }));
    }
    let mut refunded = 0;
    for task in tasks {
        if let Ok(refund) = task.await.unwrap() {
            refunded += refund.amount_minor;
        }
    }
    assert_eq!(refunded, 1000);
    assert_eq!(provider.refunded_minor(&intent.id), Some(1000));
}

#[tokio::test(start_paused = true)]
async fn an_injected_delay_slows_every_answer() {
    let provider = provider().with_delay(Duration::from_millis(750));
    let started = tokio::time::Instant::now();
    let intent = provider
        .create_intent(&create(100, Some("tok_test_ok"), true, "slow"))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(750));
    // The work is done before the delay: a caller that gave up sees it on retrieval.
    let timed_out = tokio::time::timeout(
        Duration::from_millis(100),
        provider.refund(&refund(&intent.id, None, "slow-refund")),
    )
    .await;
    assert!(timed_out.is_err());
    assert_eq!(provider.refunded_minor(&intent.id), Some(100));
}

/// 200 concurrent confirmations of 20 intents (10 racing per key), each retried on an
/// unknown outcome with the same key: exactly one charge per key, and every caller ends up
/// with the same answer for its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_confirmations_charge_once_per_key() {
    let provider = Arc::new(provider().with_delay(Duration::from_millis(1)));
    let mut intents = Vec::new();
    for i in 0..20 {
        let intent = provider
            .create_intent(&create(100 + i, None, false, &format!("create-{i}")))
            .await
            .unwrap();
        intents.push(intent.id);
    }
    let mut tasks = Vec::new();
    for task in 0..200usize {
        let provider = provider.clone();
        let slot = task % 20;
        let id = intents[slot].clone();
        // Half the keys lose their first answer, as a network would.
        let method = if slot % 2 == 0 {
            "tok_test_timeout"
        } else {
            "tok_test_ok"
        };
        let request = confirm(method, &format!("confirm-{slot}"));
        tasks.push(tokio::spawn(async move {
            let mut attempts = 0;
            loop {
                attempts += 1;
                match provider.confirm_intent(&id, &request).await {
                    Ok(intent) => return (slot, intent),
                    Err(error) if error.is_outcome_unknown() && attempts < 5 => {
                        tokio::task::yield_now().await;
                    }
                    Err(error) => panic!("confirmation {task} failed: {error:?}"),
                }
            }
        }));
    }
    let mut answers: HashMap<usize, PaymentIntent> = HashMap::new();
    for task in tasks {
        let (slot, intent) = task.await.unwrap();
        assert_eq!(intent.status, IntentStatus::Succeeded);
        match answers.get(&slot) {
            Some(first) => assert_eq!(first, &intent, "same key, same answer"),
            None => {
                answers.insert(slot, intent);
            }
        }
    }
    assert_eq!(answers.len(), 20);
    let charges = provider.charges();
    assert_eq!(charges.len(), 20, "exactly one charge per key");
    let keys: HashSet<_> = charges
        .iter()
        .map(|c| c.idempotency_key.as_str().to_owned())
        .collect();
    assert_eq!(keys.len(), 20);
    let charged: HashSet<_> = charges.iter().map(|c| c.intent_id.clone()).collect();
    assert_eq!(charged, intents.into_iter().collect::<HashSet<_>>());
}
