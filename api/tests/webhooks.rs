//! Stripe's webhook on both stores, played by the tests: events signed as Stripe documents
//! (`t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<body>">`, computed here) move payments, once;
//! redeliveries, late and out-of-order events change nothing; bad, stale and forged
//! signatures are refused; both secrets of a rotation are accepted.

#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, Duration, Utc};
use common::Server;
use hmac::{Hmac, Mac};
use parkd_api::reconcile::{BATCH, reconcile_once};
use parkd_store::PaymentStatus;
use serde_json::{Value, json};
use sha2::Sha256;

const PASSWORD: &str = "violet tram under lantern";
const PATH: &str = "/api/v1/payments/webhooks/stripe";
const NEW_SECRET: &str = "whsec_new_one";
const OLD_SECRET: &str = "whsec_old_one";

const TARIFF: &str = r#"{"currency": "EUR", "unit_minutes": 15, "grace_minutes": 15,
                         "rates": {"base": {"per_hour": 250}}}"#;

async fn setup(s: &Server, email: &str) -> String {
    s.garage_with_tariff(TARIFF).await;
    s.register(email, PASSWORD).await;
    s.token(email, PASSWORD).await
}

/// Reserves (500 due) and pays with `method`; returns the payment id.
async fn reserve_and_pay(s: &Server, token: &str, key: &str, method: &str) -> String {
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
    let reservation = made.body["id"].as_str().unwrap();
    let paid = s
        .call_with(
            "POST",
            &format!("/api/v1/reservations/{reservation}/payments"),
            Some(token),
            &[("Idempotency-Key", &format!("pay-{key}"))],
            Some(&json!({"payment_method": method}).to_string()),
        )
        .await;
    assert_eq!(paid.status, 202, "{}", paid.body);
    paid.body["id"].as_str().unwrap().to_owned()
}

/// A Stripe event about a payment intent, as Stripe sends it.
fn event(id: &str, kind: &str, created: DateTime<Utc>, intent: &str, status: &str) -> String {
    event_with(id, kind, created, intent, status, json!({}))
}

fn event_with(
    id: &str,
    kind: &str,
    created: DateTime<Utc>,
    intent: &str,
    status: &str,
    metadata: Value,
) -> String {
    let mut object = json!({
        "id": intent, "object": "payment_intent", "amount": 500, "currency": "eur",
        "status": status, "created": created.timestamp() - 5, "metadata": metadata,
        "payment_method": "pm_123",
        "amount_received": if status == "succeeded" { 500 } else { 0 },
    });
    if kind == "payment_intent.payment_failed" {
        object["last_payment_error"] = json!({"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
                   "message": "Your card has insufficient funds."});
    }
    json!({"id": id, "object": "event", "type": kind, "created": created.timestamp(),
           "livemode": false, "data": {"object": object}})
    .to_string()
}

/// Stripe's signature header, computed as Stripe documents it.
fn sign(body: &str, secret: &str, at: DateTime<Utc>) -> String {
    let t = at.timestamp();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(s: &Server, body: &str, signature: Option<&str>) -> common::Reply {
    let headers: Vec<(&str, &str)> = signature
        .map(|sig| vec![("Stripe-Signature", sig)])
        .unwrap_or_default();
    s.call_with("POST", PATH, None, &headers, Some(body)).await
}

async fn deliver_signed(s: &Server, body: &str) -> common::Reply {
    let signature = sign(body, NEW_SECRET, s.now());
    deliver(s, body, Some(&signature)).await
}

fn counter(s: &Server, outcome: &str) -> f64 {
    s.state
        .registry
        .gather()
        .iter()
        .find(|f| f.name() == "parkd_payments_webhooks_total")
        .and_then(|f| {
            f.get_metric()
                .iter()
                .find(|m| m.get_label().iter().any(|l| l.value() == outcome))
                .map(|m| m.get_counter().get_value())
        })
        .unwrap_or(-1.0)
}

/// A success event settles the payment once; its redelivery, and late or older events, do
/// nothing more.
async fn a_success_settles_once(s: Server) {
    let token = setup(&s, "ana@example.com").await;
    let id = reserve_and_pay(&s, &token, "r-1", "tok_test_processing").await;
    let intent = s.intent_of(&id).await.as_str().to_owned();
    let t0 = s.now();
    s.clock.advance(Duration::seconds(30));

    let succeeded = event(
        "evt_ok",
        "payment_intent.succeeded",
        s.now(),
        &intent,
        "succeeded",
    );
    let reply = deliver_signed(&s, &succeeded).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["outcome"], "applied");
    assert_eq!(s.payment_status(&id).await, PaymentStatus::Succeeded);
    assert_eq!(s.ledger_of(&id).await, vec![500]);

    // Stripe redelivers it.
    let reply = deliver_signed(&s, &succeeded).await;
    assert_eq!(
        (reply.status, reply.body["outcome"].as_str()),
        (200, Some("duplicate"))
    );
    assert_eq!(s.ledger_of(&id).await, vec![500]);

    // Late and out-of-order events: an older processing, an older and a newer failure.
    for (event_id, kind, at, status_name) in [
        (
            "evt_processing",
            "payment_intent.processing",
            t0,
            "processing",
        ),
        (
            "evt_failed_old",
            "payment_intent.payment_failed",
            t0,
            "requires_payment_method",
        ),
        (
            "evt_action_late",
            "payment_intent.requires_action",
            s.now(),
            "requires_action",
        ),
    ] {
        let body = event(event_id, kind, at, &intent, status_name);
        let reply = deliver_signed(&s, &body).await;
        assert_eq!(reply.status, 200, "{kind}: {}", reply.text);
        assert!(
            matches!(
                reply.body["outcome"].as_str(),
                Some("unchanged" | "ignored")
            ),
            "{kind}: {}",
            reply.body
        );
        assert_eq!(
            s.payment_status(&id).await,
            PaymentStatus::Succeeded,
            "{kind}"
        );
    }
    assert_eq!(s.ledger_of(&id).await, vec![500]);
    assert_eq!(counter(&s, "applied"), 1.0);
    assert_eq!(counter(&s, "duplicate"), 1.0);
    s.stop.cancel();
}

/// A failure event records the decline; a success of the customer's retry follows it.
async fn failure_then_action_events(s: Server) {
    let token = setup(&s, "bo@example.com").await;
    let id = reserve_and_pay(&s, &token, "r-2", "tok_test_requires_action").await;
    let intent = s.intent_of(&id).await.as_str().to_owned();
    s.clock.advance(Duration::seconds(5));
    let failed = event(
        "evt_failed",
        "payment_intent.payment_failed",
        s.now(),
        &intent,
        "requires_payment_method",
    );
    let reply = deliver_signed(&s, &failed).await;
    assert_eq!(reply.body["outcome"], "applied", "{}", reply.text);
    let row = s.store.payment(&id).await.unwrap().unwrap();
    assert_eq!(row.status, PaymentStatus::Failed);
    assert_eq!(row.failure_reason.as_deref(), Some("insufficient_funds"));
    assert!(s.ledger_of(&id).await.is_empty());

    // The new attempt is a bank debit: processing, settled later.
    s.clock.advance(Duration::seconds(5));
    let processing = event(
        "evt_processing_2",
        "payment_intent.processing",
        s.now(),
        &intent,
        "processing",
    );
    let reply = deliver_signed(&s, &processing).await;
    assert_eq!(reply.body["outcome"], "applied", "{}", reply.text);
    assert_eq!(s.payment_status(&id).await, PaymentStatus::Processing);

    // It clears; Stripe says so.
    s.clock.advance(Duration::seconds(5));
    let succeeded = event(
        "evt_ok_2",
        "payment_intent.succeeded",
        s.now(),
        &intent,
        "succeeded",
    );
    let reply = deliver_signed(&s, &succeeded).await;
    assert_eq!(reply.body["outcome"], "applied", "{}", reply.text);
    assert_eq!(s.payment_status(&id).await, PaymentStatus::Succeeded);
    assert_eq!(s.ledger_of(&id).await, vec![500]);
    s.stop.cancel();
}

/// Forged, missing and stale signatures are refused; both secrets of a rotation are accepted.
async fn signatures_are_checked(s: Server) {
    let body = event(
        "evt_unknown",
        "payment_intent.succeeded",
        s.now(),
        "pi_nobody",
        "succeeded",
    );
    let forged = sign(&body, "whsec_someone_else", s.now());
    let stale = sign(&body, NEW_SECRET, s.now() - Duration::seconds(301));
    let ahead = sign(&body, NEW_SECRET, s.now() + Duration::seconds(301));
    let tampered = sign(&body.replace("500", "1"), NEW_SECRET, s.now());
    for (name, signature) in [
        ("forged", Some(forged.as_str())),
        ("stale", Some(stale.as_str())),
        ("ahead", Some(ahead.as_str())),
        ("tampered", Some(tampered.as_str())),
        ("garbage", Some("t=1,v1=zz")),
        ("missing", None),
    ] {
        let reply = deliver(&s, &body, signature).await;
        assert_eq!(
            (reply.status, reply.problem_kind().as_str()),
            (400, "invalid-signature"),
            "{name}: {}",
            reply.text
        );
        assert!(reply.headers.contains("application/problem+json"), "{name}");
    }
    assert_eq!(counter(&s, "invalid_signature"), 6.0);

    // Within the tolerance, either secret of a rotation signs; an unknown intent is
    // acknowledged (or Stripe would retry for days) and counted.
    let recent = s.now() - Duration::seconds(299);
    for (secret, event_id) in [(NEW_SECRET, "evt_new"), (OLD_SECRET, "evt_old")] {
        let body = event(
            event_id,
            "payment_intent.succeeded",
            s.now(),
            "pi_nobody",
            "succeeded",
        );
        let reply = deliver(&s, &body, Some(&sign(&body, secret, recent))).await;
        assert_eq!(reply.status, 200, "{secret}: {}", reply.text);
        assert_eq!(reply.body["outcome"], "unknown_intent");
    }
    assert_eq!(counter(&s, "unknown_intent"), 2.0);

    // Signed but not an event: 400 invalid-event. A type parkd does not use: acknowledged.
    let reply = deliver_signed(&s, "{\"hello\": 1}").await;
    assert_eq!(
        (reply.status, reply.problem_kind().as_str()),
        (400, "invalid-event")
    );
    let other =
        json!({"id": "evt_customer", "type": "customer.created", "created": s.now().timestamp(),
                       "data": {"object": {"id": "cus_1"}}})
        .to_string();
    let reply = deliver_signed(&s, &other).await;
    assert_eq!(
        (reply.status, reply.body["outcome"].as_str()),
        (200, Some("ignored"))
    );
    s.stop.cancel();
}

/// The create answer was lost (no intent id stored): the success event finds the payment by
/// the `payment_id` in the intent's metadata and settles it; the reconciler then has nothing
/// to do.
async fn a_lost_answer_is_found_by_its_metadata(s: Server) {
    let token = setup(&s, "cy@example.com").await;
    let id = reserve_and_pay(&s, &token, "r-3", "tok_test_timeout").await;
    assert_eq!(s.payment_status(&id).await, PaymentStatus::PendingUnknown);
    let charged = s.provider.as_ref().unwrap().charges();
    assert_eq!(charged.len(), 1);
    let intent = charged[0].intent_id.as_str().to_owned();

    let body = event_with(
        "evt_lost",
        "payment_intent.succeeded",
        s.now(),
        &intent,
        "succeeded",
        json!({"payment_id": id}),
    );
    let reply = deliver_signed(&s, &body).await;
    assert_eq!(reply.body["outcome"], "applied", "{}", reply.text);
    let row = s.store.payment(&id).await.unwrap().unwrap();
    assert_eq!(row.status, PaymentStatus::Succeeded);
    assert_eq!(row.provider_intent_id.as_deref(), Some(intent.as_str()));
    assert_eq!(s.ledger_of(&id).await, vec![500]);

    s.clock.advance(Duration::seconds(60));
    let provider = s.provider.as_deref().unwrap();
    let report = reconcile_once(s.store.as_ref(), provider, s.now(), BATCH)
        .await
        .unwrap();
    assert_eq!(report.examined, 0, "{report:?}");
    assert_eq!(s.ledger_of(&id).await, vec![500]);
    assert_eq!(provider.charge_count(), 1);
    s.stop.cancel();
}

/// Without webhook settings (the test provider in production) the route does not exist.
async fn no_endpoint_without_settings(s: Server) {
    let body = event(
        "evt_x",
        "payment_intent.succeeded",
        s.now(),
        "pi_x",
        "succeeded",
    );
    let reply = deliver_signed(&s, &body).await;
    assert_eq!(
        (reply.status, reply.problem_kind().as_str()),
        (404, "not-found")
    );
    s.stop.cancel();
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            async fn server() -> super::Server {
                let (store, dir) = parkd_store::testing::sqlite_store().await;
                super::common::with_webhooks(
                    std::sync::Arc::new(store),
                    Some(dir),
                    &[super::NEW_SECRET, super::OLD_SECRET],
                )
                .await
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
                super::common::with_webhooks(
                    std::sync::Arc::new(store),
                    None,
                    &[super::NEW_SECRET, super::OLD_SECRET],
                )
                .await
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
    a_success_settles_once,
    failure_then_action_events,
    signatures_are_checked,
    a_lost_answer_is_found_by_its_metadata,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoint_without_webhook_settings() {
    let (store, dir) = parkd_store::testing::sqlite_store().await;
    let s = common::with_payments(std::sync::Arc::new(store), Some(dir)).await;
    no_endpoint_without_settings(s).await;
}
