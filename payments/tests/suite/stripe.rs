//! The Stripe adapter against a local server that checks what it receives and replays
//! Stripe's documented answers.

use std::time::{Duration, Instant};

use axum::http::Method;
use parkd_core::tariff::Currency;
use parkd_payments::stripe::DEFAULT_API_VERSION;
use parkd_payments::{
    CardBrand, ConfirmIntent, CreateIntent, DeclineReason, Disposition, IdempotencyKey, IntentId,
    IntentStatus, Metadata, NextAction, PaymentMethodToken, Provider, ProviderError, RefundReason,
    RefundRequest, RefundStatus, StripeProvider, StripeSettings,
};
use serde_json::json;

use crate::mock_stripe::{API_KEY, MockStripe, Recorded, Reply, error_body, payment_intent};

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::parse(text).unwrap()
}

fn create_request(confirm: bool) -> CreateIntent {
    CreateIntent {
        amount_minor: 1250,
        currency: Currency::parse("EUR").unwrap(),
        idempotency_key: key("resv-r-1:create"),
        metadata: Metadata::new()
            .with("reservation_id", "r-1")
            .unwrap()
            .with("session_id", "s 7/8")
            .unwrap(),
        payment_method: Some(PaymentMethodToken::parse("pm_card_visa").unwrap()),
        confirm,
    }
}

fn confirm_request() -> ConfirmIntent {
    ConfirmIntent {
        idempotency_key: key("resv-r-1:confirm:1"),
        payment_method: Some(PaymentMethodToken::parse("pm_card_visa").unwrap()),
        return_url: Some("https://parkd.example/pay/return".to_owned()),
    }
}

fn pi(id: &str) -> IntentId {
    IntentId::parse(id).unwrap()
}

/// The headers every request must carry.
fn assert_stripe_headers(request: &Recorded, idempotency_key: Option<&str>) {
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(request.header("stripe-version"), Some(DEFAULT_API_VERSION));
    assert_eq!(request.header("idempotency-key"), idempotency_key);
    if request.method == Method::POST {
        assert_eq!(
            request.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
    }
}

#[tokio::test]
async fn create_and_confirm_sends_the_documented_form_and_reads_the_intent() {
    let mock = MockStripe::start(vec![Reply::json(
        200,
        payment_intent("pi_3Pcreate", "succeeded", json!({})),
    )])
    .await;
    let intent = mock
        .provider()
        .create_intent(&create_request(true))
        .await
        .unwrap();

    assert_eq!(intent.id.as_str(), "pi_3Pcreate");
    assert_eq!(intent.status, IntentStatus::Succeeded);
    assert_eq!(intent.amount_received_minor, 1250);
    // Stripe answers `eur`; parkd reads it as its one currency type, upper case.
    assert_eq!(intent.currency.as_str(), "EUR");
    assert_eq!(intent.metadata.get("reservation_id"), Some("r-1"));
    let card = intent.payment_method.unwrap();
    assert_eq!(card.token.as_str(), "pm_1PtestVisa");
    assert_eq!(card.brand, CardBrand::Visa);
    assert_eq!(card.last4.as_str(), "4242");
    assert_eq!((card.exp_month, card.exp_year), (Some(8), Some(2030)));
    assert!(!format!("{:?}", intent.client_secret).contains("secret_Xq3"));

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, "/v1/payment_intents");
    assert_stripe_headers(request, Some("resv-r-1:create"));
    assert_eq!(request.field("amount"), Some("1250"));
    // ... and sends it as Stripe spells it.
    assert_eq!(request.field("currency"), Some("eur"));
    assert_eq!(request.fields("payment_method_types[]"), ["card"]);
    assert_eq!(request.field("metadata[reservation_id]"), Some("r-1"));
    assert_eq!(request.field("metadata[session_id]"), Some("s 7/8"));
    assert_eq!(request.field("payment_method"), Some("pm_card_visa"));
    assert_eq!(request.field("confirm"), Some("true"));
    assert_eq!(request.fields("expand[]"), ["payment_method"]);
}

#[tokio::test]
async fn create_without_confirm_leaves_confirm_out() {
    let mock = MockStripe::start(vec![Reply::json(
        200,
        payment_intent("pi_3Pnew", "requires_payment_method", json!({})),
    )])
    .await;
    let intent = mock
        .provider()
        .create_intent(&create_request(false))
        .await
        .unwrap();
    assert_eq!(intent.status, IntentStatus::Created);
    assert_eq!(mock.requests()[0].field("confirm"), None);
}

#[tokio::test]
async fn a_declined_card_is_a_final_decline_with_a_stable_reason_and_no_retry() {
    let declined_intent = payment_intent(
        "pi_3Pdecl",
        "requires_payment_method",
        json!({"last_payment_error": {"type": "card_error", "code": "card_declined",
               "decline_code": "insufficient_funds",
               "message": "Your card has insufficient funds."}}),
    );
    let body = error_body(
        "card_error",
        "card_declined",
        "Your card has insufficient funds.",
        json!({
            "decline_code": "insufficient_funds",
            "charge": "ch_3Pdecl",
            "payment_intent": serde_json::from_str::<serde_json::Value>(&declined_intent).unwrap(),
        }),
    );
    let mock = MockStripe::start(vec![Reply::json(402, body)]).await;
    let error = mock
        .provider()
        .confirm_intent(&pi("pi_3Pdecl"), &confirm_request())
        .await
        .unwrap_err();
    match &error {
        ProviderError::Declined {
            reason,
            message,
            intent_id,
        } => {
            assert_eq!(*reason, DeclineReason::InsufficientFunds);
            assert_eq!(message, "Your card has insufficient funds.");
            assert_eq!(intent_id.as_ref().unwrap().as_str(), "pi_3Pdecl");
        }
        other => panic!("expected a decline, got {other:?}"),
    }
    assert_eq!(error.disposition(), Disposition::Final);

    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "a decline is not retried");
    let request = &requests[0];
    assert_eq!(request.path, "/v1/payment_intents/pi_3Pdecl/confirm");
    assert_stripe_headers(request, Some("resv-r-1:confirm:1"));
    assert_eq!(request.field("payment_method"), Some("pm_card_visa"));
    assert_eq!(
        request.field("return_url"),
        Some("https://parkd.example/pay/return")
    );
}

#[tokio::test]
async fn requires_action_carries_the_next_action() {
    let mock = MockStripe::start(vec![Reply::json(
        200,
        payment_intent(
            "pi_3P3ds",
            "requires_action",
            json!({"next_action": {"type": "redirect_to_url", "redirect_to_url": {
                "url": "https://hooks.stripe.com/3d_secure_2/hosted?merchant=acct_1&payment_intent=pi_3P3ds",
                "return_url": "https://parkd.example/pay/return"}}}),
        ),
    )])
    .await;
    let intent = mock
        .provider()
        .confirm_intent(&pi("pi_3P3ds"), &confirm_request())
        .await
        .unwrap();
    assert_eq!(intent.status, IntentStatus::RequiresAction);
    match intent.next_action {
        Some(NextAction::RedirectToUrl { url, return_url }) => {
            assert!(url.starts_with("https://hooks.stripe.com/3d_secure_2/"));
            assert_eq!(
                return_url.as_deref(),
                Some("https://parkd.example/pay/return")
            );
        }
        other => panic!("expected a redirect, got {other:?}"),
    }
}

#[tokio::test]
async fn rate_limited_then_retried_with_the_same_key() {
    let mock = MockStripe::start(vec![
        Reply::json(
            429,
            error_body(
                "invalid_request_error",
                "rate_limit",
                "Too many requests hit the API too quickly.",
                json!({}),
            ),
        ),
        Reply::json(200, payment_intent("pi_3Prl", "succeeded", json!({}))),
    ])
    .await;
    let intent = mock
        .provider()
        .confirm_intent(&pi("pi_3Prl"), &confirm_request())
        .await
        .unwrap();
    assert_eq!(intent.status, IntentStatus::Succeeded);
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_stripe_headers(request, Some("resv-r-1:confirm:1"));
        assert_eq!(
            request.form, requests[0].form,
            "a retry sends the same body"
        );
    }
}

#[tokio::test]
async fn rate_limited_past_the_budget_is_retry_later() {
    let mock = MockStripe::start(vec![
        Reply::json(
            429,
            error_body(
                "invalid_request_error",
                "rate_limit",
                "Too many requests.",
                json!({}),
            ),
        )
        .header("retry-after", "5"),
    ])
    .await;
    let error = mock
        .provider()
        .confirm_intent(&pi("pi_3Prl"), &confirm_request())
        .await
        .unwrap_err();
    assert_eq!(
        error,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(5))
        }
    );
    assert_eq!(error.disposition(), Disposition::RetryLater);
    assert_eq!(
        mock.requests().len(),
        1,
        "a 5 s Retry-After does not fit a 1.5 s budget"
    );
}

#[tokio::test]
async fn a_server_error_is_retried_then_reported_as_an_unknown_outcome() {
    let body = error_body(
        "api_error",
        "api_error",
        "An unknown error occurred.",
        json!({}),
    );
    let mock = MockStripe::start(vec![Reply::json(500, body)]).await;
    let error = mock
        .provider_with(Duration::from_secs(2), 2)
        .confirm_intent(&pi("pi_3P500"), &confirm_request())
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Server { status: 500, .. }));
    assert_eq!(error.disposition(), Disposition::Unknown);
    let requests = mock.requests();
    assert_eq!(requests.len(), 3, "one attempt and two retries");
    assert!(
        requests
            .iter()
            .all(|r| r.header("idempotency-key") == Some("resv-r-1:confirm:1"))
    );
}

#[tokio::test]
async fn stripe_should_retry_false_stops_retries() {
    let mock = MockStripe::start(vec![
        Reply::json(
            500,
            error_body(
                "api_error",
                "api_error",
                "An unknown error occurred.",
                json!({}),
            ),
        )
        .header("stripe-should-retry", "false"),
    ])
    .await;
    let error = mock
        .provider()
        .confirm_intent(&pi("pi_3P500"), &confirm_request())
        .await
        .unwrap_err();
    assert!(error.is_outcome_unknown());
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn a_slow_server_times_out_within_the_budget_as_an_unknown_outcome() {
    let mock = MockStripe::start(vec![
        Reply::json(200, payment_intent("pi_3Pslow", "succeeded", json!({})))
            .delayed(Duration::from_secs(5)),
    ])
    .await;
    let budget = Duration::from_millis(300);
    let started = Instant::now();
    let error = mock
        .provider_with(budget, 2)
        .confirm_intent(&pi("pi_3Pslow"), &confirm_request())
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(error, ProviderError::Timeout { after: budget });
    assert_eq!(error.disposition(), Disposition::Unknown);
    assert!(elapsed >= budget, "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
}

#[tokio::test]
async fn the_default_budget_answers_well_within_two_seconds() {
    let mock = MockStripe::start(vec![
        Reply::json(200, payment_intent("pi_3Pslow", "succeeded", json!({})))
            .delayed(Duration::from_secs(10)),
    ])
    .await;
    let started = Instant::now();
    let error = mock
        .provider()
        .retrieve_intent(&pi("pi_3Pslow"))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Timeout { .. }));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn idempotency_key_in_use_is_retried_and_then_unknown() {
    let in_use = error_body(
        "idempotency_error",
        "idempotency_key_in_use",
        "There is currently another in-progress request using this Idempotency Key.",
        json!({}),
    );
    // Once in use, then the first request's answer.
    let mock = MockStripe::start(vec![
        Reply::json(409, in_use.clone()),
        Reply::json(200, payment_intent("pi_3P409", "succeeded", json!({}))),
    ])
    .await;
    let intent = mock
        .provider()
        .confirm_intent(&pi("pi_3P409"), &confirm_request())
        .await
        .unwrap();
    assert_eq!(intent.status, IntentStatus::Succeeded);
    assert_eq!(mock.requests().len(), 2);

    // Still in use after every retry: the other request's outcome is unknown.
    let mock = MockStripe::start(vec![Reply::json(409, in_use)]).await;
    let error = mock
        .provider()
        .confirm_intent(&pi("pi_3P409"), &confirm_request())
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::InProgress { .. }));
    assert_eq!(error.disposition(), Disposition::Unknown);
}

#[tokio::test]
async fn reusing_a_key_with_other_parameters_is_a_final_mismatch() {
    let mock = MockStripe::start(vec![Reply::json(
        400,
        error_body(
            "idempotency_error",
            "idempotency_error",
            "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            json!({}),
        ),
    )])
    .await;
    let error = mock
        .provider()
        .create_intent(&create_request(true))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::IdempotencyMismatch { .. }));
    assert_eq!(error.disposition(), Disposition::Final);
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn a_refused_key_is_an_authentication_error_that_never_shows_the_key() {
    let mock = MockStripe::start(vec![Reply::json(
        401,
        error_body(
            "invalid_request_error",
            "api_key_invalid",
            "Invalid API Key provided: sk_test_****************rint",
            json!({}),
        ),
    )])
    .await;
    let provider = mock.provider();
    let error = provider.retrieve_intent(&pi("pi_3P401")).await.unwrap_err();
    assert!(matches!(error, ProviderError::Authentication { .. }));
    assert_eq!(error.disposition(), Disposition::Final);
    assert!(!format!("{error} {error:?}").contains(API_KEY));
    assert!(!format!("{provider:?}").contains(API_KEY));
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn a_missing_intent_is_not_found() {
    let mock = MockStripe::start(vec![Reply::json(
        404,
        error_body(
            "invalid_request_error",
            "resource_missing",
            "No such payment_intent: 'pi_nope'",
            json!({"param": "intent"}),
        ),
    )])
    .await;
    let error = mock
        .provider()
        .retrieve_intent(&pi("pi_nope"))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::NotFound { .. }));
}

#[tokio::test]
async fn retrieve_is_a_get_without_idempotency_key_or_body() {
    let mock = MockStripe::start(vec![Reply::json(
        200,
        payment_intent("pi_3Pget", "processing", json!({})),
    )])
    .await;
    let intent = mock
        .provider()
        .retrieve_intent(&pi("pi_3Pget"))
        .await
        .unwrap();
    assert_eq!(intent.status, IntentStatus::Processing);
    let request = &mock.requests()[0];
    assert_eq!(request.method, Method::GET);
    assert_eq!(request.path, "/v1/payment_intents/pi_3Pget");
    assert_stripe_headers(request, None);
    assert!(request.form.is_empty());
    assert_eq!(
        request.query,
        [("expand[]".to_owned(), "payment_method".to_owned())]
    );
}

#[tokio::test]
async fn cancel_posts_to_the_cancel_endpoint() {
    let mock = MockStripe::start(vec![Reply::json(
        200,
        payment_intent(
            "pi_3Pcan",
            "canceled",
            json!({"cancellation_reason": "requested_by_customer"}),
        ),
    )])
    .await;
    let intent = mock
        .provider()
        .cancel_intent(&pi("pi_3Pcan"), &key("resv-r-1:cancel"))
        .await
        .unwrap();
    assert_eq!(intent.status, IntentStatus::Cancelled);
    let request = &mock.requests()[0];
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, "/v1/payment_intents/pi_3Pcan/cancel");
    assert_stripe_headers(request, Some("resv-r-1:cancel"));
}

#[tokio::test]
async fn a_partial_refund_posts_the_documented_form() {
    let mock = MockStripe::start(vec![Reply::json(
        200,
        json!({
            "id": "re_3Pref", "object": "refund", "amount": 500,
            "balance_transaction": "txn_1", "charge": "ch_3Pref", "created": 1712345999,
            "currency": "eur", "metadata": {"reason_detail": "left early"},
            "payment_intent": "pi_3Pref", "reason": "requested_by_customer",
            "receipt_number": null, "source_transfer_reversal": null,
            "status": "succeeded", "transfer_reversal": null
        })
        .to_string(),
    )])
    .await;
    let refund = mock
        .provider()
        .refund(&RefundRequest {
            intent_id: pi("pi_3Pref"),
            amount_minor: Some(500),
            idempotency_key: key("resv-r-1:refund:1"),
            reason: Some(RefundReason::RequestedByCustomer),
            metadata: Metadata::new().with("reason_detail", "left early").unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(refund.id.as_str(), "re_3Pref");
    assert_eq!(refund.intent_id.as_str(), "pi_3Pref");
    assert_eq!(refund.amount_minor, 500);
    assert_eq!(refund.status, RefundStatus::Succeeded);

    let request = &mock.requests()[0];
    assert_eq!(request.path, "/v1/refunds");
    assert_stripe_headers(request, Some("resv-r-1:refund:1"));
    assert_eq!(request.field("payment_intent"), Some("pi_3Pref"));
    assert_eq!(request.field("amount"), Some("500"));
    assert_eq!(request.field("reason"), Some("requested_by_customer"));
    assert_eq!(request.field("metadata[reason_detail]"), Some("left early"));
}

#[tokio::test]
async fn retrieving_a_refund_is_a_get_and_needs_its_intent() {
    let mock = MockStripe::start(vec![
        Reply::json(
            200,
            json!({"id": "re_3Pget", "object": "refund", "amount": 700, "created": 1712345999,
                   "currency": "eur", "payment_intent": "pi_3Pget", "status": "succeeded"})
            .to_string(),
        ),
        // A refund of a bare charge names no intent: nothing parkd made.
        Reply::json(
            200,
            json!({"id": "re_3Pbare", "object": "refund", "amount": 700, "created": 1712345999,
                   "currency": "eur", "payment_intent": null, "status": "succeeded"})
            .to_string(),
        ),
    ])
    .await;
    let id = parkd_payments::RefundId::parse("re_3Pget").unwrap();
    let refund = mock.provider().retrieve_refund(&id).await.unwrap();
    assert_eq!(refund.status, RefundStatus::Succeeded);
    assert_eq!(refund.intent_id.as_str(), "pi_3Pget");
    assert_eq!(refund.amount_minor, 700);
    let request = &mock.requests()[0];
    assert_eq!(request.method, Method::GET);
    assert_eq!(request.path, "/v1/refunds/re_3Pget");
    assert_stripe_headers(request, None);
    assert!(request.form.is_empty());

    let bare = parkd_payments::RefundId::parse("re_3Pbare").unwrap();
    let error = mock.provider().retrieve_refund(&bare).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::UnexpectedResponse { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_full_refund_sends_no_amount() {
    let mock = MockStripe::start(vec![Reply::json(
        200,
        json!({"id": "re_3Pfull", "object": "refund", "amount": 1250, "created": 1712345999,
               "currency": "eur", "payment_intent": "pi_3Pfull", "status": "pending"})
        .to_string(),
    )])
    .await;
    let refund = mock
        .provider()
        .refund(&RefundRequest {
            intent_id: pi("pi_3Pfull"),
            amount_minor: None,
            idempotency_key: key("resv-r-1:refund:full"),
            reason: None,
            metadata: Metadata::new(),
        })
        .await
        .unwrap();
    assert_eq!(refund.status, RefundStatus::Pending);
    assert_eq!(mock.requests()[0].field("amount"), None);
}

#[tokio::test]
async fn an_unreadable_success_is_an_unknown_outcome() {
    let mock = MockStripe::start(vec![Reply::json(200, "<html>proxy error</html>")]).await;
    let error = mock
        .provider()
        .confirm_intent(&pi("pi_3Pjunk"), &confirm_request())
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::UnexpectedResponse { .. }));
    assert_eq!(error.disposition(), Disposition::Unknown);
}

#[tokio::test]
async fn nobody_listening_is_a_network_error_with_an_unknown_outcome() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let provider = StripeProvider::new(&StripeSettings {
        base_url: format!("http://{address}"),
        timeout: Duration::from_millis(800),
        ..StripeSettings::new(parkd_payments::Secret::new(API_KEY))
    })
    .unwrap();
    let started = Instant::now();
    let error = provider
        .confirm_intent(&pi("pi_3Pnet"), &confirm_request())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ProviderError::Network { .. } | ProviderError::Timeout { .. }
        ),
        "{error:?}"
    );
    assert_eq!(error.disposition(), Disposition::Unknown);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let error = StripeProvider::new(&StripeSettings {
        base_url: "http://api.stripe.com".to_owned(),
        ..StripeSettings::new(parkd_payments::Secret::new(API_KEY))
    })
    .unwrap_err();
    assert!(error.to_string().contains("loopback"));
    assert!(!error.to_string().contains(API_KEY));
}

#[cfg(feature = "tls")]
#[test]
fn the_real_api_address_builds_an_https_client() {
    // Builds the rustls connector with the system roots; sends nothing.
    let provider = StripeProvider::new(&StripeSettings::new(parkd_payments::Secret::new(API_KEY)));
    assert!(provider.is_ok(), "{provider:?}");
}
