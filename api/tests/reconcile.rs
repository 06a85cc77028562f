//! The payment reconciler on both stores, with the deterministic test provider: payments left
//! open (processing, waiting for the customer's action, an answer lost on the way back) are
//! resolved by asking the provider, settled into the ledger exactly once, never charged twice;
//! a payment abandoned at 3-D Secure is cancelled; provider errors leave them as they are.

#![allow(clippy::unwrap_used)]

mod common;

use chrono::Duration;
use common::Server;
use parkd_api::reconcile::{
    BATCH, ReconcileMetrics, ReconcileReport, reconcile_once, reconcile_refunds_once,
};
use parkd_core::ids::LotId;
use parkd_payments::{CreateIntent, IdempotencyKey, Metadata, PaymentMethodToken};
use parkd_store::{CardRef, PaymentPurpose, PaymentRow, PaymentStatus};
use serde_json::json;

const PASSWORD: &str = "violet tram under lantern";

/// 2.50 an hour by the quarter hour, 15 minutes free.
const TARIFF: &str = r#"{"currency": "EUR", "unit_minutes": 15, "grace_minutes": 15,
                         "rates": {"base": {"per_hour": 250}}}"#;

/// The garage with its tariff, and a driver with a car; returns the driver's token.
async fn setup(s: &Server, email: &str) -> String {
    s.garage_with_tariff(TARIFF).await;
    s.register(email, PASSWORD).await;
    s.token(email, PASSWORD).await
}

/// A two-hour reservation starting in an hour (500 due); returns its id.
async fn reserve(s: &Server, token: &str, key: &str) -> String {
    let vehicle = s
        .post(
            "/api/v1/me/vehicles",
            Some(token),
            json!({"plate": format!("P-{key}"), "class": "car"}),
        )
        .await;
    assert_eq!(vehicle.status, 201, "{}", vehicle.body);
    let body = json!({"lot": "garage", "vehicle_id": vehicle.body["id"],
                      "starts_at": (s.now() + Duration::minutes(60)).to_rfc3339(),
                      "ends_at": (s.now() + Duration::minutes(180)).to_rfc3339()});
    let made = s
        .call_with(
            "POST",
            "/api/v1/reservations",
            Some(token),
            &[("Idempotency-Key", key)],
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    made.body["id"].as_str().unwrap().to_owned()
}

/// Pays the reservation with `method`; returns the answer.
async fn pay(s: &Server, token: &str, reservation: &str, method: &str) -> common::Reply {
    s.call_with(
        "POST",
        &format!("/api/v1/reservations/{reservation}/payments"),
        Some(token),
        &[("Idempotency-Key", &format!("pay-{reservation}-{method}"))],
        Some(&json!({"payment_method": method}).to_string()),
    )
    .await
}

fn provider(s: &Server) -> &parkd_payments::TestProvider {
    s.provider.as_deref().unwrap()
}

async fn reconcile(s: &Server) -> ReconcileReport {
    reconcile_once(s.store.as_ref(), provider(s), s.now(), BATCH)
        .await
        .unwrap()
}

async fn reconcile_refunds(s: &Server) -> ReconcileReport {
    reconcile_refunds_once(s.store.as_ref(), provider(s), s.now(), BATCH)
        .await
        .unwrap()
}

/// Lets the quiet period pass.
fn later(s: &Server) {
    s.clock.advance(Duration::seconds(11));
}

/// Processing at the provider, then finished: the reconciler sees it through, once.
async fn processing_is_seen_through(s: Server) {
    let token = setup(&s, "ana@example.com").await;
    let reservation = reserve(&s, &token, "r-1").await;
    let paid = pay(&s, &token, &reservation, "tok_test_processing").await;
    assert_eq!(paid.status, 202, "{}", paid.body);
    assert_eq!(paid.body["status"], "processing");
    let id = paid.body["id"].as_str().unwrap().to_owned();

    // Within the quiet period nothing is touched (the request may still be running).
    assert_eq!(reconcile(&s).await, ReconcileReport::default());

    later(&s);
    let report = reconcile(&s).await;
    assert_eq!((report.examined, report.pending), (1, 1), "{report:?}");
    assert_eq!(s.payment_status(&id).await, PaymentStatus::Processing);

    provider(&s)
        .finish_processing(&s.intent_of(&id).await, true)
        .unwrap();
    later(&s);
    let report = reconcile(&s).await;
    assert_eq!((report.examined, report.succeeded), (1, 1), "{report:?}");
    assert_eq!(s.payment_status(&id).await, PaymentStatus::Succeeded);
    assert_eq!(s.ledger_of(&id).await, vec![500]);

    later(&s);
    assert_eq!(reconcile(&s).await, ReconcileReport::default());
    assert_eq!(s.ledger_of(&id).await, vec![500]);
    assert_eq!(provider(&s).charge_count(), 1);
    s.stop.cancel();
}

/// 3-D Secure completed by the customer, but the app never came back to confirm.
async fn a_completed_action_is_seen_through(s: Server) {
    let token = setup(&s, "bo@example.com").await;
    let reservation = reserve(&s, &token, "r-2").await;
    let paid = pay(&s, &token, &reservation, "tok_test_requires_action").await;
    assert_eq!(paid.status, 202, "{}", paid.body);
    assert_eq!(paid.body["status"], "requires_action");
    let id = paid.body["id"].as_str().unwrap().to_owned();

    later(&s);
    let report = reconcile(&s).await;
    assert_eq!(report.pending, 1, "{report:?}");

    provider(&s)
        .complete_action(&s.intent_of(&id).await, true)
        .unwrap();
    later(&s);
    let report = reconcile(&s).await;
    assert_eq!(report.succeeded, 1, "{report:?}");
    assert_eq!(s.ledger_of(&id).await, vec![500]);

    // The app's late confirmation finds it paid, and charges nothing more.
    let confirmed = s
        .call_with(
            "POST",
            &format!("/api/v1/payments/{id}/confirm"),
            Some(&token),
            &[("Idempotency-Key", "c-1")],
            None,
        )
        .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(confirmed.body["status"], "succeeded");
    assert_eq!(s.ledger_of(&id).await, vec![500]);
    assert_eq!(provider(&s).charge_count(), 1);

    // A failed action: the reconciler records the failure.
    let reservation = reserve(&s, &token, "r-3").await;
    let paid = pay(&s, &token, &reservation, "tok_test_requires_action").await;
    let id = paid.body["id"].as_str().unwrap().to_owned();
    provider(&s)
        .complete_action(&s.intent_of(&id).await, false)
        .unwrap();
    later(&s);
    let report = reconcile(&s).await;
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(s.payment_status(&id).await, PaymentStatus::Failed);
    assert!(s.ledger_of(&id).await.is_empty());
    s.stop.cancel();
}

/// The provider charged but the answer was lost before parkd learned the intent id. The row
/// kept the payment method the customer gave, so the reconciler sends the very same request
/// again (same key): the provider replays the charge, the payment settles, once.
async fn a_lost_answer_is_sent_again_with_the_method_given(s: Server) {
    let token = setup(&s, "cy@example.com").await;
    let reservation = reserve(&s, &token, "r-4").await;
    let lost = pay(&s, &token, &reservation, "tok_test_timeout").await;
    assert_eq!(lost.status, 202, "{}", lost.body);
    assert_eq!(lost.body["status"], "pending_unknown");
    let id = lost.body["id"].as_str().unwrap().to_owned();
    let row = s.store.payment(&id).await.unwrap().unwrap();
    assert_eq!((row.provider_intent_id, row.method), (None, None));
    assert_eq!(row.requested_method.as_deref(), Some("tok_test_timeout"));

    later(&s);
    let report = reconcile(&s).await;
    assert_eq!((report.examined, report.succeeded), (1, 1), "{report:?}");
    assert_eq!(s.payment_status(&id).await, PaymentStatus::Succeeded);
    assert_eq!(provider(&s).charge_count(), 1);
    assert_eq!(s.ledger_of(&id).await, vec![500]);
    s.stop.cancel();
}

/// A payment recorded before the process asked the provider, and the process stopped: the
/// reconciler makes the request (with the payment's own key, so a request that did arrive is
/// replayed, not repeated).
async fn a_payment_never_sent_is_sent(s: Server) {
    let token = setup(&s, "cyd@example.com").await;
    let reservation = reserve(&s, &token, "r-4b").await;
    let row = PaymentRow {
        id: "pay_never_sent".into(),
        status: PaymentStatus::Created,
        requested_method: Some("tok_test_ok".into()),
        ..legacy_row(&s, &token, &reservation).await
    };
    s.store.create_payment(&row).await.unwrap();
    later(&s);
    let report = reconcile(&s).await;
    assert_eq!((report.examined, report.succeeded), (1, 1), "{report:?}");
    assert_eq!(provider(&s).charge_count(), 1);
    assert_eq!(s.ledger_of(&row.id).await, vec![500]);
    s.stop.cancel();
}

/// A payment whose answer was lost and that knows no payment method (recorded by a parkd that
/// did not keep the requested method): nothing can be re-sent without risking a second
/// charge, so it is left pending_unknown, counted unresolvable, never failed.
async fn a_lost_answer_without_a_method_is_left_alone(s: Server) {
    let token = setup(&s, "cye@example.com").await;
    let reservation = reserve(&s, &token, "r-4c").await;
    let row = legacy_row(&s, &token, &reservation).await;
    s.store.create_payment(&row).await.unwrap();
    later(&s);
    let report = reconcile(&s).await;
    assert_eq!((report.examined, report.unresolvable), (1, 1), "{report:?}");
    assert_eq!(
        s.payment_status(&row.id).await,
        PaymentStatus::PendingUnknown
    );
    assert_eq!(provider(&s).charge_count(), 0);
    assert!(s.ledger_of(&row.id).await.is_empty());
    s.stop.cancel();
}

/// A customer who never came back from 3-D Secure: asked about every round while recent, the
/// payment is cancelled at the provider after an hour, and the bill can be paid again.
async fn an_abandoned_action_is_cancelled(s: Server) {
    let token = setup(&s, "cyf@example.com").await;
    let reservation = reserve(&s, &token, "r-4d").await;
    let waiting = pay(&s, &token, &reservation, "tok_test_requires_action").await;
    assert_eq!(waiting.status, 202, "{}", waiting.body);
    let id = waiting.body["id"].as_str().unwrap().to_owned();
    // Asked every round for an hour (each round touches the payment).
    for _ in 0..5 {
        s.clock.advance(Duration::minutes(11));
        let report = reconcile(&s).await;
        assert_eq!((report.examined, report.pending), (1, 1), "{report:?}");
    }
    s.clock.advance(Duration::minutes(5));
    let report = reconcile(&s).await;
    assert_eq!((report.examined, report.cancelled), (1, 1), "{report:?}");
    assert_eq!(s.payment_status(&id).await, PaymentStatus::Cancelled);
    assert!(
        provider(&s)
            .complete_action(&s.intent_of(&id).await, true)
            .is_err(),
        "cancelled at the provider too"
    );
    later(&s);
    assert_eq!(reconcile(&s).await, ReconcileReport::default());
    let paid = pay(&s, &token, &reservation, "tok_test_ok").await;
    assert_eq!(paid.status, 201, "{}", paid.body);
    s.stop.cancel();
}

/// A pending_unknown prepayment of 500 with neither intent id nor any method, as a parkd
/// before `requested_method` recorded it.
async fn legacy_row(s: &Server, token: &str, reservation: &str) -> PaymentRow {
    let user = s.call("GET", "/api/v1/me", Some(token), None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    PaymentRow {
        id: format!("pay_legacy_{reservation}"),
        user_id: Some(user),
        reservation_id: Some(reservation.to_owned()),
        session_id: None,
        lot: LotId::parse("garage").unwrap(),
        purpose: PaymentPurpose::Reservation,
        amount_minor: 500,
        currency: parkd_core::tariff::Currency::parse("EUR").unwrap(),
        provider: "test".into(),
        provider_intent_id: None,
        status: PaymentStatus::PendingUnknown,
        failure_reason: None,
        method: None,
        amount_refunded_minor: 0,
        quote_json: "{}".into(),
        created_at: s.now(),
        updated_at: s.now(),
        requested_method: None,
    }
}

/// The request parkd sends to create a payment's intent, built here independently of the API.
fn create_request(row: &PaymentRow, method: &str) -> CreateIntent {
    CreateIntent {
        amount_minor: row.amount_minor as u64,
        currency: parkd_core::tariff::Currency::parse("EUR").unwrap(),
        idempotency_key: IdempotencyKey::parse(format!("parkd-{}-create", row.id)).unwrap(),
        metadata: Metadata::new()
            .with("payment_id", row.id.clone())
            .unwrap()
            .with("reservation_id", row.reservation_id.clone().unwrap())
            .unwrap(),
        payment_method: Some(PaymentMethodToken::parse(method).unwrap()),
        confirm: true,
    }
}

/// A lost answer of a payment whose method is stored: the reconciler re-sends the same create
/// with the same key, the provider replays the original intent, the payment settles once.
async fn a_lost_answer_with_a_method_is_resent_with_its_key(s: Server) {
    let token = setup(&s, "di@example.com").await;
    let reservation = reserve(&s, &token, "r-5").await;
    let user = s.call("GET", "/api/v1/me", Some(&token), None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let row = PaymentRow {
        id: "pay_lost_with_method".into(),
        user_id: Some(user),
        reservation_id: Some(reservation),
        session_id: None,
        lot: LotId::parse("garage").unwrap(),
        purpose: PaymentPurpose::Reservation,
        amount_minor: 500,
        currency: parkd_core::tariff::Currency::parse("EUR").unwrap(),
        provider: "test".into(),
        provider_intent_id: None,
        status: PaymentStatus::PendingUnknown,
        failure_reason: None,
        method: Some(CardRef {
            token: "tok_test_timeout".into(),
            brand: "visa".into(),
            last4: "0341".into(),
        }),
        amount_refunded_minor: 0,
        quote_json: "{}".into(),
        created_at: s.now(),
        updated_at: s.now(),
        requested_method: None,
    };
    s.store.create_payment(&row).await.unwrap();
    // The first attempt: charged, answer lost.
    let first = parkd_payments::Provider::create_intent(
        provider(&s),
        &create_request(&row, "tok_test_timeout"),
    )
    .await;
    assert!(
        matches!(first, Err(parkd_payments::ProviderError::Timeout { .. })),
        "{first:?}"
    );
    assert_eq!(provider(&s).charge_count(), 1);

    later(&s);
    let report = reconcile(&s).await;
    assert_eq!((report.examined, report.succeeded), (1, 1), "{report:?}");
    let settled = s.store.payment(&row.id).await.unwrap().unwrap();
    assert_eq!(settled.status, PaymentStatus::Succeeded);
    assert_eq!(
        settled.provider_intent_id.as_deref(),
        Some(provider(&s).charges()[0].intent_id.as_str())
    );
    assert_eq!(provider(&s).charge_count(), 1);
    assert_eq!(s.ledger_of(&row.id).await, vec![500]);

    later(&s);
    assert_eq!(reconcile(&s).await, ReconcileReport::default());
    assert_eq!(s.ledger_of(&row.id).await, vec![500]);

    // Counted by outcome.
    let metrics = ReconcileMetrics::new(&s.state.registry).unwrap();
    metrics.record(&report);
    let families = s.state.registry.gather();
    let reconciled = families
        .iter()
        .find(|f| f.name() == "parkd_payments_reconciled_total")
        .unwrap();
    let count = |outcome: &str| {
        reconciled
            .get_metric()
            .iter()
            .find(|m| m.get_label().iter().any(|l| l.value() == outcome))
            .map(|m| m.get_counter().get_value())
    };
    assert_eq!(count("succeeded"), Some(1.0));
    assert_eq!(count("provider_error"), Some(0.0));
    s.stop.cancel();
}

/// The provider refuses (here: it does not know the intent): the payment stays as it is and
/// is asked again next round.
async fn provider_errors_leave_the_payment_alone(s: Server) {
    let token = setup(&s, "ev@example.com").await;
    let reservation = reserve(&s, &token, "r-6").await;
    let paid = pay(&s, &token, &reservation, "tok_test_processing").await;
    let id = paid.body["id"].as_str().unwrap().to_owned();
    // Another provider's payment cannot be asked about at all.
    let mut other: PaymentRow = s.store.payment(&id).await.unwrap().unwrap();
    other.reservation_id = Some(reserve(&s, &token, "r-6b").await);
    other.id = "pay_of_another_provider".into();
    other.provider = "stripe".into();
    other.provider_intent_id = Some("pi_elsewhere".into());
    other.status = PaymentStatus::Processing;
    s.store.create_payment(&other).await.unwrap();
    // An intent the provider has never heard of.
    let mut unknown = other.clone();
    unknown.id = "pay_unknown_intent".into();
    unknown.reservation_id = Some(reserve(&s, &token, "r-6c").await);
    unknown.provider = "test".into();
    unknown.provider_intent_id = Some("pi_test_999999".into());
    s.store.create_payment(&unknown).await.unwrap();

    later(&s);
    let report = reconcile(&s).await;
    assert_eq!(report.examined, 3, "{report:?}");
    assert_eq!(
        (report.pending, report.provider_errors, report.unresolvable),
        (1, 1, 1),
        "{report:?}"
    );
    for payment in [&id, &other.id, &unknown.id] {
        assert_eq!(s.payment_status(payment).await, PaymentStatus::Processing);
    }
    s.stop.cancel();
}

/// Refunds the provider leaves pending, or whose answer is lost, are finished by the
/// reconciler: retrieved by their provider id until they end, or re-sent under their own key
/// (the provider replays them: one refund, not two). A failed one gives its amount back.
async fn pending_refunds_are_reconciled(s: Server) {
    let token = setup(&s, "fi@example.com").await;
    let paid_and_cancelled = async |key: &str| {
        let reservation = reserve(&s, &token, key).await;
        let paid = pay(&s, &token, &reservation, "tok_test_ok").await;
        assert_eq!(paid.status, 201, "{}", paid.body);
        let cancelled = s
            .call(
                "POST",
                &format!("/api/v1/reservations/{reservation}/cancel"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(cancelled.status, 200, "{}", cancelled.body);
        assert_eq!(
            cancelled.body["refunded_minor"], 500,
            "being refunded counts"
        );
        let id = paid.body["id"].as_str().unwrap().to_owned();
        let refunds = s.store.refunds_of_payment(&id).await.unwrap();
        assert_eq!(refunds.len(), 1);
        assert_eq!(refunds[0].status, parkd_store::RefundStatus::Pending);
        (id, refunds[0].clone())
    };

    // The provider says pending: parkd keeps its id and asks until it ends.
    provider(&s).hold_refunds(true);
    let (held, refund) = paid_and_cancelled("r-7").await;
    let provider_id = refund.provider_refund_id.clone().expect("the id is kept");
    assert!(reconcile_refunds(&s).await.examined == 0, "quiet period");
    later(&s);
    let report = reconcile_refunds(&s).await;
    assert_eq!((report.examined, report.pending), (1, 1), "{report:?}");
    provider(&s)
        .finish_refund(&parkd_payments::RefundId::parse(provider_id).unwrap(), true)
        .unwrap();
    later(&s);
    let report = reconcile_refunds(&s).await;
    assert_eq!((report.examined, report.succeeded), (1, 1), "{report:?}");
    assert_eq!(s.ledger_of(&held).await, vec![500, -500]);

    // The answer is lost: re-sent under its key, the provider replays it.
    provider(&s).hold_refunds(false);
    provider(&s).lose_refund_answers(1);
    let (lost, refund) = paid_and_cancelled("r-8").await;
    assert_eq!(refund.provider_refund_id, None);
    later(&s);
    let report = reconcile_refunds(&s).await;
    assert_eq!((report.examined, report.succeeded), (1, 1), "{report:?}");
    assert_eq!(s.ledger_of(&lost).await, vec![500, -500]);
    assert_eq!(
        provider(&s).refunded_minor(&s.intent_of(&lost).await),
        Some(500),
        "refunded once"
    );

    // The provider fails it: the amount is refundable again.
    provider(&s).hold_refunds(true);
    let (failed, refund) = paid_and_cancelled("r-9").await;
    provider(&s)
        .finish_refund(
            &parkd_payments::RefundId::parse(refund.provider_refund_id.unwrap()).unwrap(),
            false,
        )
        .unwrap();
    later(&s);
    let report = reconcile_refunds(&s).await;
    assert_eq!((report.examined, report.failed), (1, 1), "{report:?}");
    let row = s.store.payment(&failed).await.unwrap().unwrap();
    assert_eq!(row.amount_refunded_minor, 0);
    assert_eq!(s.ledger_of(&failed).await, vec![500]);
    later(&s);
    assert_eq!(reconcile_refunds(&s).await, ReconcileReport::default());
    s.stop.cancel();
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            async fn server() -> super::Server {
                let (store, dir) = parkd_store::testing::sqlite_store().await;
                super::common::with_payments(std::sync::Arc::new(store), Some(dir)).await
            }
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(server().await).await;
                }
            )*
        }

        mod on_postgres {
            async fn server() -> super::Server {
                let store = parkd_store::testing::postgres_store().await;
                super::common::with_payments(std::sync::Arc::new(store), None).await
            }
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(server().await).await;
                }
            )*
        }
    };
}

on_both_stores!(
    processing_is_seen_through,
    a_completed_action_is_seen_through,
    a_lost_answer_is_sent_again_with_the_method_given,
    a_payment_never_sent_is_sent,
    a_lost_answer_without_a_method_is_left_alone,
    an_abandoned_action_is_cancelled,
    a_lost_answer_with_a_method_is_resent_with_its_key,
    provider_errors_leave_the_payment_alone,
    pending_refunds_are_reconciled,
);
