//! Tariffs and quotes over real HTTP on both stores: operators set a lot's tariff (validated
//! whole, versioned), anyone reads it and asks for a quote, and bad input gets a precise 4xx.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, postgres, sqlite};
use parkd_core::account::{Email, Role};
use parkd_core::garage::demo_garage;
use parkd_core::ids::LotId;
use serde_json::{Value, json};

const PASSWORD: &str = "violet tram under lantern";

/// 2.50 an hour by the quarter hour, 15 minutes free, 20.00 a day at most, EV +10 %.
fn tariff() -> Value {
    json!({
        "currency": "EUR",
        "unit_minutes": 15,
        "grace_minutes": 15,
        "rates": {"base": {"per_hour": 250}, "daily_max": 2000},
        "ev": {"basis_points": 1000}
    })
}

async fn operator(s: &Server) -> String {
    s.register("olga@example.com", PASSWORD).await;
    let user = s
        .store
        .user_by_email(&Email::parse("olga@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    s.store.set_role(&user.id, Role::Operator).await.unwrap();
    s.token("olga@example.com", PASSWORD).await
}

async fn put(s: &Server, token: &str, body: &Value) -> common::Reply {
    s.call(
        "PUT",
        "/api/v1/lots/garage/tariff",
        Some(token),
        Some(&body.to_string()),
    )
    .await
}

async fn tariffs_and_quotes(s: Server) {
    let now = parkd_core::clock::Clock::now(s.clock.as_ref());
    let lot = demo_garage(LotId::parse("garage").unwrap(), 1, 20);
    s.store.put_lot(&lot).await.unwrap();
    s.engine.install_lot(lot, now);
    let none = s
        .call("GET", "/api/v1/lots/garage/tariff", None, None)
        .await;
    assert_eq!(none.status, 404);
    assert_eq!(none.body["type"], "https://parkd.dev/problems/no-tariff");

    // Drivers may not set prices.
    s.register("ana@example.com", PASSWORD).await;
    let driver = s.token("ana@example.com", PASSWORD).await;
    assert_eq!(put(&s, &driver, &tariff()).await.status, 403);

    let token = operator(&s).await;
    let first = put(&s, &token, &tariff()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["version"], 1);
    let again = put(&s, &token, &tariff()).await;
    assert_eq!(again.body["version"], 2);
    let read = s
        .call("GET", "/api/v1/lots/garage/tariff", None, None)
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["version"], 2);
    assert_eq!(read.body["tariff"]["currency"], "EUR");
    // Both are in the lot's audit trail, whole, by whom.
    let trail = s
        .call(
            "GET",
            "/api/v1/lots/garage/operator-actions",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(trail.status, 200, "{}", trail.body);
    let set: Vec<&Value> = trail.body["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "tariff_set")
        .collect();
    assert_eq!(set.len(), 2, "{}", trail.body);
    let newest = set[0]["reason"].as_str().unwrap();
    let (version, document) = newest.split_once(": ").unwrap();
    assert_eq!(version, "version 2");
    let document: Value = serde_json::from_str(document).unwrap();
    assert_eq!(document["currency"], "EUR");
    assert_eq!(set[0]["user_id"], set[1]["user_id"]);

    // Invalid rules are refused whole, naming the field; the stored tariff is untouched.
    let mut bad = tariff();
    bad["unit_minutes"] = json!(0);
    let refused = put(&s, &token, &bad).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused.body["type"] == "https://parkd.dev/problems/invalid-tariff"
            || refused.body["type"] == "https://parkd.dev/problems/invalid-body",
        "{}",
        refused.body
    );
    let mut unknown = tariff();
    unknown["surprise"] = json!(1);
    assert_eq!(put(&s, &token, &unknown).await.status, 422);
    let unknown_lot = s
        .call(
            "PUT",
            "/api/v1/lots/nowhere/tariff",
            Some(&token),
            Some(&tariff().to_string()),
        )
        .await;
    assert_eq!(unknown_lot.status, 404);
    let read = s
        .call("GET", "/api/v1/lots/garage/tariff", None, None)
        .await;
    assert_eq!(read.body["version"], 2);

    // 2 h 10 min: 9 started quarter hours at 62.5 cents = 562.5, rounded half up to 563.
    let quote = |query: String| {
        let s = &s;
        async move {
            s.call(
                "GET",
                &format!("/api/v1/lots/garage/quote?{query}"),
                None,
                None,
            )
            .await
        }
    };
    let span = "from=2027-03-01T10:00:00Z&to=2027-03-01T12:10:00Z";
    let car = quote(span.to_owned()).await;
    assert_eq!(car.status, 200, "{}", car.body);
    assert_eq!(car.body["currency"], "EUR");
    assert_eq!(car.body["total"], 563);
    let sum: i64 = car.body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, 563, "the lines add up");
    let ev = quote(format!("{span}&vehicle=ev")).await;
    assert_eq!(ev.status, 200, "{}", ev.body);
    assert!(ev.body["total"].as_i64().unwrap() > 563, "{}", ev.body);
    let grace = quote("from=2027-03-01T10:00:00Z&to=2027-03-01T10:15:00Z".into()).await;
    assert_eq!(grace.body["total"], 0);
    let week = quote("from=2027-03-01T10:00:00Z&to=2027-03-08T10:00:00Z".into()).await;
    assert_eq!(week.body["total"], 7 * 2000, "the daily maximum holds");

    // Bad input: precise answers.
    for (query, status, kind) in [
        ("to=2027-03-01T12:00:00Z", 400, "invalid-parameter"),
        (
            "from=yesterday&to=2027-03-01T12:00:00Z",
            400,
            "invalid-parameter",
        ),
        (
            "from=2027-03-01T12:00:00Z&to=2027-03-01T10:00:00Z",
            422,
            "invalid-quote",
        ),
        (&format!("{span}&vehicle=tank"), 400, "invalid-parameter"),
        (
            &format!("{span}&vehicle=van&kind=motorcycle"),
            422,
            "invalid-quote",
        ),
        (&format!("{span}&colour=red"), 400, "invalid-parameter"),
    ] {
        let reply = quote(query.to_owned()).await;
        assert_eq!(reply.status, status, "{query}: {}", reply.body);
        assert_eq!(
            reply.body["type"],
            format!("https://parkd.dev/problems/{kind}"),
            "{query}"
        );
    }
    let nowhere = s
        .call(
            "GET",
            &format!("/api/v1/lots/nowhere/quote?{span}"),
            None,
            None,
        )
        .await;
    assert_eq!(nowhere.status, 404);
    s.stop.cancel();
}

mod on_sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tariffs_and_quotes() {
        super::tariffs_and_quotes(super::sqlite().await).await;
    }
}

mod on_postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tariffs_and_quotes() {
        super::tariffs_and_quotes(super::postgres().await).await;
    }
}
