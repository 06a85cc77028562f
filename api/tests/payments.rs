//! Payments over real HTTP on both stores, with the deterministic test provider: paying a
//! reservation in advance and a stay at exit, idempotency (serial and concurrent), shown
//! amounts and currencies that no longer match, card data refused, declines, receipts, and
//! the ledger.

#![allow(clippy::unwrap_used)]

mod common;

use chrono::Duration;
use common::Server;
use parkd_core::ids::LotId;
use parkd_store::PaymentStatus;
use serde_json::{Value, json};

const PASSWORD: &str = "violet tram under lantern";

/// 2.50 an hour by the quarter hour, 15 minutes free; cancelling up to 2 hours before the
/// entry refunds everything, later half; a no-show costs 3.00.
const TARIFF: &str = r#"{"currency": "EUR", "unit_minutes": 15, "grace_minutes": 15,
                         "rates": {"base": {"per_hour": 250}},
                         "cancellation": {"free_until_hours_before": 2, "late_refund_bp": 5000},
                         "no_show": {"flat": 300}}"#;

fn at(s: &Server, minutes: i64) -> String {
    (s.now() + Duration::minutes(minutes)).to_rfc3339()
}

/// The garage with its tariff, and a driver with a car; returns the driver's token and car.
async fn setup(s: &Server, email: &str) -> (String, String) {
    s.garage_with_tariff(TARIFF).await;
    s.register(email, PASSWORD).await;
    let token = s.token(email, PASSWORD).await;
    let vehicle = s
        .post(
            "/api/v1/me/vehicles",
            Some(&token),
            json!({"plate": format!("P-{}", email.len()), "class": "car"}),
        )
        .await;
    assert_eq!(vehicle.status, 201, "{}", vehicle.body);
    (token, vehicle.body["id"].as_str().unwrap().to_owned())
}

/// A two-hour reservation starting in an hour: 8 quarter hours at 62.5 = 500.
async fn reserve(s: &Server, token: &str, vehicle: &str, key: &str) -> String {
    let body = json!({"lot": "garage", "vehicle_id": vehicle,
                      "starts_at": at(s, 60), "ends_at": at(s, 180)});
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

/// A new reservation paid with `method` under the key `key`, left pending (202) in `status`;
/// the reservation, its payments path and the payment's id.
async fn pending_prepayment(
    s: &Server,
    (token, car): (&str, &str),
    key: &str,
    method: &str,
    status: &str,
) -> (String, String, String) {
    let reservation = reserve(s, token, car, &format!("r-{key}")).await;
    let path = format!("/api/v1/reservations/{reservation}/payments");
    let pending = pay(s, token, &path, key, &json!({"payment_method": method})).await;
    assert_eq!(pending.status, 202, "{}", pending.body);
    assert_eq!(pending.body["status"], status);
    let id = pending.body["id"].as_str().unwrap().to_owned();
    (reservation, path, id)
}

async fn pay(s: &Server, token: &str, path: &str, key: &str, body: &Value) -> common::Reply {
    s.call_with(
        "POST",
        path,
        Some(token),
        &[("Idempotency-Key", key)],
        Some(&body.to_string()),
    )
    .await
}

async fn revenue(s: &Server) -> Vec<(String, i64)> {
    s.store
        .revenue_between(
            s.now() - Duration::days(1),
            s.now() + Duration::days(1),
            None,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|(c, v)| (c.as_str().to_owned(), v))
        .collect()
}

async fn paying_a_reservation_in_advance(s: Server) {
    let (token, car) = setup(&s, "ana@example.com").await;
    let reservation = reserve(&s, &token, &car, "r-1").await;
    let path = format!("/api/v1/reservations/{reservation}/payments");

    let quote = s
        .call(
            "GET",
            &format!("/api/v1/reservations/{reservation}/quote"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(quote.status, 200, "{}", quote.body);
    assert_eq!(quote.body["due_minor"], 500);
    assert_eq!(quote.body["quote"]["currency"], "EUR");

    // What the customer was shown must still be what is due.
    let stale = pay(
        &s,
        &token,
        &path,
        "p-1",
        &json!({"payment_method": "tok_test_ok", "amount_minor": 450}),
    )
    .await;
    assert_eq!(
        (stale.status, stale.problem_kind().as_str()),
        (409, "amount-mismatch")
    );
    let dollars = pay(
        &s,
        &token,
        &path,
        "p-2",
        &json!({"payment_method": "tok_test_ok", "currency": "USD"}),
    )
    .await;
    assert_eq!(
        (dollars.status, dollars.problem_kind().as_str()),
        (422, "currency-mismatch")
    );

    // Card data is refused before anything reads it, and counted.
    for (key, body) in [
        (
            "p-3",
            json!({"payment_method": "tok_test_ok", "card_number": "4242 4242 4242 4242"}),
        ),
        ("p-4", json!({"payment_method": "4242424242424242"})),
        (
            "p-5",
            json!({"payment_method": "tok_test_ok", "cvc": "123"}),
        ),
    ] {
        let refused = pay(&s, &token, &path, key, &body).await;
        assert_eq!(
            (refused.status, refused.problem_kind().as_str()),
            (422, "card-data-refused"),
            "{body}"
        );
        assert!(!refused.body.to_string().contains("4242424242424242"));
    }
    let refused = s
        .state
        .registry
        .gather()
        .iter()
        .find(|f| f.name() == "parkd_payments_card_data_refused_total")
        .map(|f| f.get_metric()[0].get_counter().get_value());
    assert_eq!(refused, Some(3.0));

    // A declined card: 402, recorded as failed, nothing in the ledger.
    let declined = pay(
        &s,
        &token,
        &path,
        "p-6",
        &json!({"payment_method": "tok_test_decline_insufficient_funds", "amount_minor": 500}),
    )
    .await;
    assert_eq!(
        (declined.status, declined.problem_kind().as_str()),
        (402, "payment-declined")
    );
    assert!(revenue(&s).await.is_empty());

    // Paid; the retry replays the answer and charges nothing more.
    let body = json!({"payment_method": "tok_test_ok", "amount_minor": 500, "currency": "eur"});
    let paid = pay(&s, &token, &path, "p-7", &body).await;
    assert_eq!(paid.status, 201, "{}", paid.body);
    assert_eq!(paid.body["status"], "succeeded");
    assert_eq!(paid.body["amount_minor"], 500);
    assert_eq!(paid.body["card_brand"], "visa");
    assert_eq!(paid.body["card_last4"], "4242");
    let replay = pay(&s, &token, &path, "p-7", &body).await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.body, paid.body);
    assert!(replay.headers.contains("idempotent-replayed: true"));
    let again = pay(&s, &token, &path, "p-8", &body).await;
    assert_eq!(
        (again.status, again.problem_kind().as_str()),
        (409, "nothing-due")
    );
    assert_eq!(revenue(&s).await, vec![("EUR".to_owned(), 500)]);

    // The receipt: the owner sees it, another driver does not.
    let id = paid.body["id"].as_str().unwrap();
    let receipt = s
        .call("GET", &format!("/api/v1/payments/{id}"), Some(&token), None)
        .await;
    assert_eq!(receipt.status, 200);
    assert_eq!(receipt.body["quote"]["total"], 500);
    let (other, _) = setup(&s, "bo@example.com").await;
    let hidden = s
        .call("GET", &format!("/api/v1/payments/{id}"), Some(&other), None)
        .await;
    assert_eq!(hidden.status, 404);
    let not_theirs = pay(&s, &other, &path, "o-1", &body).await;
    assert_eq!(not_theirs.status, 404);

    // The stored row keeps the card's brand and last four, never more.
    let row = s.store.payment(id).await.unwrap().unwrap();
    let method = row.method.unwrap();
    assert_eq!(
        (method.brand.as_str(), method.last4.as_str()),
        ("visa", "4242")
    );
    assert_eq!(method.token, "tok_test_ok");

    // Cancelled an hour before the entry: half back, by the policy; once.
    let cancelled = s
        .call(
            "POST",
            &format!("/api/v1/reservations/{reservation}/cancel"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["state"], "cancelled");
    assert_eq!(cancelled.body["refunded_minor"], 250);
    let receipt = s
        .call("GET", &format!("/api/v1/payments/{id}"), Some(&token), None)
        .await;
    assert_eq!(receipt.body["amount_refunded_minor"], 250);
    assert_eq!(receipt.body["refunds"][0]["status"], "succeeded");
    assert_eq!(revenue(&s).await, vec![("EUR".to_owned(), 250)]);
    let twice = s
        .call(
            "POST",
            &format!("/api/v1/reservations/{reservation}/cancel"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(twice.status, 409);
    assert_eq!(revenue(&s).await, vec![("EUR".to_owned(), 250)]);
    s.stop.cancel();
}

/// Many clients send the same payment at once (a retrying app, a double tap): one charge.
async fn concurrent_retries_charge_once(s: Server) {
    let (token, car) = setup(&s, "cy@example.com").await;
    let reservation = reserve(&s, &token, &car, "r-c").await;
    let path = format!("/api/v1/reservations/{reservation}/payments");
    let body = json!({"payment_method": "tok_test_ok"});
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let addr = s.addr;
        let (token, path, body) = (token.clone(), path.clone(), body.to_string());
        tasks.spawn(async move {
            common::call_at(
                addr,
                "POST",
                &path,
                Some(&token),
                &[("Idempotency-Key", "same-key")],
                Some(&body),
            )
            .await
            .status
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    assert!(statuses.contains(&201));
    let payments = s.store.payments_of_reservation(&reservation).await.unwrap();
    let succeeded = payments
        .iter()
        .filter(|p| p.status == PaymentStatus::Succeeded)
        .count();
    assert_eq!((payments.len(), succeeded), (1, 1), "{payments:?}");
    assert_eq!(revenue(&s).await, vec![("EUR".to_owned(), 500)]);
    s.stop.cancel();
}

/// A stay paid from the app before walking to the car: the bill, the payment, the grace.
async fn paying_a_stay_at_exit(s: Server) {
    let (token, _) = setup(&s, "di@example.com").await;
    let user = s
        .store
        .user_by_email(&parkd_core::account::Email::parse("di@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    let session = parkd_store::ParkingSession {
        id: "stay-1".into(),
        lot: LotId::parse("garage").unwrap(),
        plate_key: Some("DI1".into()),
        plate: Some("DI 1".into()),
        vehicle_type: parkd_core::vehicle::VehicleType::Car,
        reservation_id: None,
        user_id: Some(user.id.clone()),
        entry_gate: None,
        assigned_spot: None,
        sensed_spot: None,
        entered_at: s.now(),
        exit_gate: None,
        exited_at: None,
        overstay_s: None,
    };
    s.store
        .open_parking_session(&session, s.now())
        .await
        .unwrap();
    s.clock.advance(Duration::minutes(90));
    let bill = s
        .call("GET", "/api/v1/sessions/stay-1/bill", Some(&token), None)
        .await;
    assert_eq!(bill.status, 200, "{}", bill.body);
    // 90 minutes: 6 quarter hours at 62.5 = 375.
    assert_eq!(bill.body["due_minor"], 375);
    let paid = pay(
        &s,
        &token,
        "/api/v1/sessions/stay-1/payments",
        "s-1",
        &json!({"payment_method": "tok_test_ok_mastercard", "amount_minor": 375}),
    )
    .await;
    assert_eq!(paid.status, 201, "{}", paid.body);
    assert_eq!(paid.body["card_brand"], "mastercard");
    s.clock.advance(Duration::minutes(10));
    let within = s
        .call("GET", "/api/v1/sessions/stay-1/bill", Some(&token), None)
        .await;
    assert_eq!(
        within.body["due_minor"], 0,
        "the exit grace: {}",
        within.body
    );
    s.clock.advance(Duration::minutes(20));
    let later = s
        .call("GET", "/api/v1/sessions/stay-1/bill", Some(&token), None)
        .await;
    // 2 hours in all: 500, 375 paid.
    assert_eq!(later.body["due_minor"], 125, "{}", later.body);
    assert_eq!(later.body["paid_minor"], 375);
    let nothing = pay(
        &s,
        &token,
        "/api/v1/sessions/stay-1/payments",
        "s-2",
        &json!({"payment_method": "tok_test_ok", "amount_minor": 375}),
    )
    .await;
    assert_eq!(
        (nothing.status, nothing.problem_kind().as_str()),
        (409, "amount-mismatch")
    );
    s.stop.cancel();
}

/// A provider that charges but whose answer is lost: pending, never failed, never twice.
async fn an_unknown_outcome_is_pending_not_failed(s: Server) {
    let (token, car) = setup(&s, "ed@example.com").await;
    let (_, _, id) = pending_prepayment(
        &s,
        (&token, &car),
        "t-1",
        "tok_test_timeout",
        "pending_unknown",
    )
    .await;
    let row = s.store.payment(&id).await.unwrap().unwrap();
    assert_eq!(row.status, PaymentStatus::PendingUnknown);
    assert!(revenue(&s).await.is_empty());
    s.stop.cancel();
}

/// One payment of a bill in flight at a time: a second attempt under another key while the
/// first's outcome is unknown is refused naming it; an attempt abandoned at 3-D Secure is
/// cancelled at the provider to make way for another card; racing attempts charge once.
async fn one_payment_of_a_bill_at_a_time(s: Server) {
    let (token, car) = setup(&s, "fay@example.com").await;
    // The outcome of the first is unknown: the second waits for it.
    let (_, path, lost_id) = pending_prepayment(
        &s,
        (&token, &car),
        "f-1",
        "tok_test_timeout",
        "pending_unknown",
    )
    .await;
    let second = pay(
        &s,
        &token,
        &path,
        "f-2",
        &json!({"payment_method": "tok_test_ok"}),
    )
    .await;
    assert_eq!(
        (second.status, second.problem_kind().as_str()),
        (409, "payment-in-progress"),
        "{}",
        second.body
    );
    assert!(second.body["detail"].as_str().unwrap().contains(&lost_id));
    let provider = s.provider.as_deref().unwrap();
    assert_eq!(
        provider.charge_count(),
        1,
        "only the first reached the provider"
    );
    // The row keeps the method the customer gave, so the reconciler can ask again.
    let row = s.store.payment(&lost_id).await.unwrap().unwrap();
    assert_eq!(row.requested_method.as_deref(), Some("tok_test_timeout"));

    // Abandoned at 3-D Secure, then paid with another card: the first is cancelled.
    let (_, path, waiting_id) = pending_prepayment(
        &s,
        (&token, &car),
        "f-3",
        "tok_test_requires_action",
        "requires_action",
    )
    .await;
    let paid = pay(
        &s,
        &token,
        &path,
        "f-4",
        &json!({"payment_method": "tok_test_ok"}),
    )
    .await;
    assert_eq!(paid.status, 201, "{}", paid.body);
    let abandoned = s.store.payment(&waiting_id).await.unwrap().unwrap();
    assert_eq!(abandoned.status, PaymentStatus::Cancelled);
    // Finishing the abandoned step now cannot charge: the provider cancelled it.
    let intent = parkd_payments::IntentId::parse(abandoned.provider_intent_id.unwrap()).unwrap();
    assert!(provider.complete_action(&intent, true).is_err());
    assert_eq!(revenue(&s).await, vec![("EUR".to_owned(), 500)]);

    // Ten attempts at once under ten keys: one charge.
    let reservation = reserve(&s, &token, &car, "r-f3").await;
    let path = format!("/api/v1/reservations/{reservation}/payments");
    let before = provider.charge_count();
    let attempts = (0..10).map(|i| {
        let (s, token, path) = (&s, &token, &path);
        async move {
            pay(
                s,
                token,
                path,
                &format!("race-{i}"),
                &json!({"payment_method": "tok_test_ok"}),
            )
            .await
        }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let created = answers.iter().filter(|a| a.status == 201).count();
    let refused: Vec<String> = answers
        .iter()
        .filter(|a| a.status != 201)
        .map(|a| format!("{} {}", a.status, a.problem_kind()))
        .collect();
    assert_eq!(created, 1, "{refused:?}");
    assert!(
        refused.iter().all(|r| [
            "409 payment-in-progress",
            "409 nothing-due",
            "409 amount-mismatch",
            "409 request-in-flight"
        ]
        .contains(&r.as_str())),
        "{refused:?}"
    );
    assert_eq!(provider.charge_count(), before + 1);
    assert_eq!(revenue(&s).await, vec![("EUR".to_owned(), 1000)]);
    s.stop.cancel();
}

/// Cancelling a reservation with payments still open: one waiting for the customer's 3-D
/// Secure step is cancelled at the provider; one the provider is still processing cannot be
/// stopped, and when it succeeds the money, for a reservation that no longer exists, goes
/// back in full.
async fn a_prepayment_settling_after_a_cancel_goes_back(s: Server) {
    let (token, car) = setup(&s, "gil@example.com").await;
    let provider = s.provider.as_deref().unwrap();
    let intent_of = async |id: &str| {
        let row = s.store.payment(id).await.unwrap().unwrap();
        parkd_payments::IntentId::parse(row.provider_intent_id.unwrap()).unwrap()
    };
    let cancel = async |reservation: &str| {
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
            cancelled.body["refunded_minor"].as_i64().unwrap_or(0),
            0,
            "nothing had arrived yet"
        );
    };

    let (reservation, _, waiting_id) = pending_prepayment(
        &s,
        (&token, &car),
        "g-1",
        "tok_test_requires_action",
        "requires_action",
    )
    .await;
    cancel(&reservation).await;
    let row = s.store.payment(&waiting_id).await.unwrap().unwrap();
    assert_eq!(row.status, PaymentStatus::Cancelled);
    assert!(
        provider
            .complete_action(&intent_of(&waiting_id).await, true)
            .is_err()
    );

    let (reservation, _, id) = pending_prepayment(
        &s,
        (&token, &car),
        "g-2",
        "tok_test_processing",
        "processing",
    )
    .await;
    cancel(&reservation).await;
    provider
        .finish_processing(&intent_of(&id).await, true)
        .unwrap();
    // The app asks for the outcome.
    let confirmed = s
        .call_with(
            "POST",
            &format!("/api/v1/payments/{id}/confirm"),
            Some(&token),
            &[("Idempotency-Key", "g-3")],
            None,
        )
        .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(confirmed.body["status"], "succeeded");
    assert_eq!(
        confirmed.body["amount_refunded_minor"], 500,
        "{}",
        confirmed.body
    );
    assert_eq!(confirmed.body["refunds"][0]["status"], "succeeded");
    assert_eq!(provider.refunded_minor(&intent_of(&id).await), Some(500));
    assert_eq!(revenue(&s).await, vec![("EUR".to_owned(), 0)]);
    s.stop.cancel();
}

/// A prepaid reservation nobody used: the prepayment comes back less the no-show fee.
async fn a_prepaid_no_show_keeps_only_the_fee(s: Server) {
    let (token, car) = setup(&s, "fi@example.com").await;
    let reservation = reserve(&s, &token, &car, "r-n").await;
    let paid = pay(
        &s,
        &token,
        &format!("/api/v1/reservations/{reservation}/payments"),
        "n-1",
        &json!({"payment_method": "tok_test_ok"}),
    )
    .await;
    assert_eq!(paid.status, 201, "{}", paid.body);
    // Past the entry and its grace: the sweep marks it a no-show.
    s.clock.advance(Duration::hours(2));
    let no_shows =
        parkd_api::reservations::sweep(&s.state, Duration::minutes(15), &Default::default())
            .await
            .unwrap();
    assert_eq!(no_shows.len(), 1);
    let id = paid.body["id"].as_str().unwrap();
    let row = s.store.payment(id).await.unwrap().unwrap();
    assert_eq!(row.amount_refunded_minor, 200, "500 paid, 300 kept");
    assert_eq!(revenue(&s).await, vec![("EUR".to_owned(), 300)]);
    // A second sweep finds nothing more to do.
    parkd_api::reservations::sweep(&s.state, Duration::minutes(15), &Default::default())
        .await
        .unwrap();
    assert_eq!(revenue(&s).await, vec![("EUR".to_owned(), 300)]);
    s.stop.cancel();
}

mod on_sqlite {
    async fn server() -> super::Server {
        let (store, dir) = parkd_store::testing::sqlite_store().await;
        super::common::with_payments(std::sync::Arc::new(store), Some(dir)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_payment_of_a_bill_at_a_time() {
        super::one_payment_of_a_bill_at_a_time(server().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prepayment_settling_after_a_cancel_goes_back() {
        super::a_prepayment_settling_after_a_cancel_goes_back(server().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prepaid_no_show_keeps_only_the_fee() {
        super::a_prepaid_no_show_keeps_only_the_fee(server().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paying_a_reservation_in_advance() {
        super::paying_a_reservation_in_advance(server().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_retries_charge_once() {
        super::concurrent_retries_charge_once(server().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paying_a_stay_at_exit() {
        super::paying_a_stay_at_exit(server().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_outcome_is_pending_not_failed() {
        super::an_unknown_outcome_is_pending_not_failed(server().await).await;
    }
}

mod on_postgres {
    async fn server() -> super::Server {
        let store = parkd_store::testing::postgres_store().await;
        super::common::with_payments(std::sync::Arc::new(store), None).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_payment_of_a_bill_at_a_time() {
        super::one_payment_of_a_bill_at_a_time(server().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prepayment_settling_after_a_cancel_goes_back() {
        super::a_prepayment_settling_after_a_cancel_goes_back(server().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prepaid_no_show_keeps_only_the_fee() {
        super::a_prepaid_no_show_keeps_only_the_fee(server().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paying_a_reservation_in_advance() {
        super::paying_a_reservation_in_advance(server().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_retries_charge_once() {
        super::concurrent_retries_charge_once(server().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paying_a_stay_at_exit() {
        super::paying_a_stay_at_exit(server().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_outcome_is_pending_not_failed() {
        super::an_unknown_outcome_is_pending_not_failed(server().await).await;
    }
}
