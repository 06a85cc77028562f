//! Reservations over real HTTP on both stores, with a manual clock: idempotent creation
//! (replay, mismatch, missing key), exactly one winner when 50 clients race for the last
//! spot, holds in live availability and the no-show release, cancel and modify, and precise
//! refusals of bad input.

#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use common::{Server, postgres, sqlite};
use parkd_core::garage::demo_garage;
use parkd_core::ids::{LotId, SpotId};
use parkd_core::reservation::ReservationState;
use parkd_occupancy::SpotState;
use parkd_store::ReservationRow;
use serde_json::{Value, json};

const PASSWORD: &str = "violet tram under lantern";

fn at(s: &Server, minutes: i64) -> String {
    (s.clock_now() + Duration::minutes(minutes)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

trait ClockNow {
    fn clock_now(&self) -> DateTime<Utc>;
}

impl ClockNow for Server {
    fn clock_now(&self) -> DateTime<Utc> {
        parkd_core::clock::Clock::now(self.clock.as_ref())
    }
}

/// A driver with one vehicle of `class`; the demo garage and a one-spot lot installed.
async fn setup(s: &Server, class: &str) -> (String, String) {
    s.engine.install_lot(
        demo_garage(LotId::parse("garage").unwrap(), 3, 100),
        s.clock_now(),
    );
    s.engine.install_lot(
        demo_garage(LotId::parse("tiny").unwrap(), 1, 1),
        s.clock_now(),
    );
    s.register("ana@example.com", PASSWORD).await;
    let token = s.token("ana@example.com", PASSWORD).await;
    let vehicle = s
        .post(
            "/api/v1/me/vehicles",
            Some(&token),
            json!({"plate": format!("B-{class} 1"), "class": class}),
        )
        .await;
    assert_eq!(vehicle.status, 201, "{}", vehicle.body);
    (token, vehicle.body["id"].as_str().unwrap().to_owned())
}

async fn reserve(s: &Server, token: &str, key: &str, body: &Value) -> common::Reply {
    s.call_with(
        "POST",
        "/api/v1/reservations",
        Some(token),
        &[("Idempotency-Key", key)],
        Some(&body.to_string()),
    )
    .await
}

/// One create per key, all sent at once; the replies in the keys' order.
async fn all_at_once(
    s: &Server,
    token: &str,
    body: &Value,
    keys: Vec<String>,
) -> Vec<common::Reply> {
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|key| {
            let (addr, token, body) = (s.addr, token.to_owned(), body.to_string());
            tokio::spawn(async move {
                common::call_at(
                    addr,
                    "POST",
                    "/api/v1/reservations",
                    Some(&token),
                    &[("Idempotency-Key", &key)],
                    Some(&body),
                )
                .await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    replies
}

async fn idempotent_creation(s: Server) {
    let (token, vehicle) = setup(&s, "car").await;
    let body = json!({"lot": "garage", "vehicle_id": vehicle,
                      "starts_at": at(&s, 60), "ends_at": at(&s, 180)});
    let first = reserve(&s, &token, "key-1", &body).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["state"], "confirmed");
    assert_eq!(first.body["vehicle_type"], "car");
    assert_eq!(first.body["code"].as_str().unwrap().len(), 8);
    let spot = first.body["spot"].as_str().unwrap();
    assert!(
        spot.starts_with("L1-"),
        "a car gets a standard bay near the exit: {spot}"
    );
    let replay = reserve(&s, &token, "key-1", &body).await;
    assert_eq!(replay.status, 201);
    assert_eq!(
        replay.body, first.body,
        "the same answer, not a second booking"
    );
    assert!(replay.headers.contains("idempotent-replayed: true"));
    let mine = s
        .call("GET", "/api/v1/reservations", Some(&token), None)
        .await;
    assert_eq!(mine.body["reservations"].as_array().unwrap().len(), 1);
    let other = json!({"lot": "garage", "vehicle_id": vehicle,
                       "starts_at": at(&s, 60), "ends_at": at(&s, 240)});
    let reused = reserve(&s, &token, "key-1", &other).await;
    assert_eq!(reused.status, 422);
    assert_eq!(
        reused.body["type"],
        "https://parkd.dev/problems/idempotency-key-reused"
    );
    let missing = s
        .call(
            "POST",
            "/api/v1/reservations",
            Some(&token),
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        missing.body["type"],
        "https://parkd.dev/problems/idempotency-key-required"
    );
    // A refusal is replayed too (the same key never books later by surprise).
    let tiny_van = json!({"lot": "tiny", "vehicle_id": vehicle,
                          "starts_at": at(&s, 60), "ends_at": at(&s, 120)});
    let booked = reserve(&s, &token, "key-2", &tiny_van).await;
    assert_eq!(booked.status, 201);
    let full = reserve(&s, &token, "key-3", &tiny_van).await;
    assert_eq!(full.status, 409);
    assert_eq!(
        full.body["type"],
        "https://parkd.dev/problems/no-spot-available"
    );
    let id = booked.body["id"].as_str().unwrap();
    s.post(
        &format!("/api/v1/reservations/{id}/cancel"),
        Some(&token),
        json!({}),
    )
    .await;
    let again = reserve(&s, &token, "key-3", &tiny_van).await;
    assert_eq!(
        (again.status, &again.body),
        (409, &full.body),
        "replayed, not retried"
    );
    s.stop.cancel();
}

/// Retries of one request racing each other (a client that times out and resends): one
/// booking, and every retry gets its answer; a retry after the entry time still replays.
async fn retries_racing_with_one_key_book_once(s: Server) {
    let (token, vehicle) = setup(&s, "car").await;
    for round in 0..5 {
        let body = json!({"lot": "garage", "vehicle_id": vehicle,
                          "starts_at": at(&s, 60 + round * 300),
                          "ends_at": at(&s, 120 + round * 300)});
        let keys = vec![format!("retry-{round}"); 10];
        let mut ids = Vec::new();
        for reply in all_at_once(&s, &token, &body, keys).await {
            assert_eq!(reply.status, 201, "round {round}: {}", reply.body);
            ids.push(reply.body["id"].as_str().unwrap().to_owned());
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "round {round}: one booking for every retry");
    }
    let mine = s
        .call("GET", "/api/v1/reservations", Some(&token), None)
        .await;
    assert_eq!(mine.body["reservations"].as_array().unwrap().len(), 5);
    // Hours later, the first round's entry time has passed: the retry replays, not refuses.
    let first = json!({"lot": "garage", "vehicle_id": vehicle,
                       "starts_at": at(&s, 60), "ends_at": at(&s, 120)});
    s.clock.advance(Duration::minutes(90));
    let late = reserve(&s, &token, "retry-0", &first).await;
    assert_eq!(late.status, 201, "{}", late.body);
    assert!(late.headers.contains("idempotent-replayed: true"));
    s.stop.cancel();
}

/// The vehicles a booking checks come from the session cache; this instance's own changes
/// reach it at once.
async fn a_vehicle_added_or_removed_is_seen_at_once(s: Server) {
    let (token, car) = setup(&s, "car").await;
    let body = |vehicle: &str, minutes: i64| {
        json!({"lot": "garage", "vehicle_id": vehicle,
               "starts_at": at(&s, minutes), "ends_at": at(&s, minutes + 60)})
    };
    assert_eq!(
        reserve(&s, &token, "v-1", &body(&car, 60)).await.status,
        201
    );
    let van = s
        .post(
            "/api/v1/me/vehicles",
            Some(&token),
            json!({"plate": "B-VAN 2", "class": "van"}),
        )
        .await;
    assert_eq!(van.status, 201, "{}", van.body);
    let van = van.body["id"].as_str().unwrap().to_owned();
    let booked = reserve(&s, &token, "v-2", &body(&van, 60)).await;
    assert_eq!(booked.status, 201, "a new vehicle at once: {}", booked.body);
    assert_eq!(booked.body["vehicle_type"], "van");
    let removed = s
        .call(
            "DELETE",
            &format!("/api/v1/me/vehicles/{van}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(removed.status, 204);
    let refused = reserve(&s, &token, "v-3", &body(&van, 180)).await;
    assert_eq!(refused.status, 422, "a removed vehicle at once");
    assert_eq!(
        refused.body["type"],
        "https://parkd.dev/problems/unknown-vehicle"
    );
    s.stop.cancel();
}

async fn exactly_one_winner_for_the_last_spot(s: Server) {
    let (token, vehicle) = setup(&s, "car").await;
    for round in 0..5 {
        let body = json!({"lot": "tiny", "vehicle_id": vehicle,
                          "starts_at": at(&s, 60 + round * 300),
                          "ends_at": at(&s, 120 + round * 300)});
        let keys = (0..50).map(|racer| format!("race-{round}-{racer}"));
        let mut created = 0;
        for reply in all_at_once(&s, &token, &body, keys.collect()).await {
            match reply.status {
                201 => created += 1,
                409 => assert_eq!(
                    reply.body["type"],
                    "https://parkd.dev/problems/no-spot-available"
                ),
                other => panic!("round {round}: {other} {}", reply.body),
            }
        }
        assert_eq!(created, 1, "round {round}");
    }
    // One server: the racers were settled by the book's holds, never by the store refusing a
    // write (each refusal would have been a rolled-back insert and a re-read).
    let refused_by_store = s
        .state
        .reservation_metrics
        .with_label_values(&["allocation_retry"])
        .get();
    assert_eq!(refused_by_store, 0);
    s.stop.cancel();
}

async fn holds_and_no_shows(s: Server) {
    let (token, vehicle) = setup(&s, "car").await;
    let lot = LotId::parse("tiny").unwrap();
    let spot = parkd_core::ids::SpotId::parse("L1-001").unwrap();
    s.engine.apply(&lot, &spot, false, s.clock_now());
    let made = reserve(
        &s,
        &token,
        "k",
        &json!({"lot": "tiny", "vehicle_id": vehicle, "starts_at": at(&s, 60), "ends_at": at(&s, 120)}),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let hold = Duration::minutes(30);
    parkd_api::reservations::sweep(&s.state, hold, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        s.engine.spot(&lot, &spot).unwrap().state,
        SpotState::Free,
        "too early"
    );
    s.clock.advance(Duration::minutes(31));
    parkd_api::reservations::sweep(&s.state, hold, &Default::default())
        .await
        .unwrap();
    assert_eq!(s.engine.spot(&lot, &spot).unwrap().state, SpotState::Held);
    let availability = s
        .call("GET", "/api/v1/lots/tiny/availability", None, None)
        .await;
    assert_eq!(availability.body["total"]["held"], 1);
    assert_eq!(availability.body["by_vehicle"]["car"]["free"], 0);
    // Start (60 min) plus grace (30 min) passes without a check-in.
    s.clock.advance(Duration::minutes(60));
    let no_shows = parkd_api::reservations::sweep(&s.state, hold, &Default::default())
        .await
        .unwrap();
    assert_eq!(no_shows.len(), 1);
    assert_eq!(
        s.engine.spot(&lot, &spot).unwrap().state,
        SpotState::Free,
        "released"
    );
    let id = made.body["id"].as_str().unwrap();
    let row = s
        .call(
            "GET",
            &format!("/api/v1/reservations/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(row.body["state"], "no_show");
    // The rest of its time can be booked again.
    let again = reserve(
        &s,
        &token,
        "k2",
        &json!({"lot": "tiny", "vehicle_id": vehicle, "starts_at": at(&s, 0), "ends_at": at(&s, 30)}),
    )
    .await;
    assert_eq!(again.status, 201, "{}", again.body);
    s.stop.cancel();
}

async fn cancel_and_modify(s: Server) {
    let (token, vehicle) = setup(&s, "car").await;
    let book = |key: &'static str, from: i64, to: i64| {
        let body = json!({"lot": "tiny", "vehicle_id": vehicle, "starts_at": at(&s, from), "ends_at": at(&s, to)});
        let token = token.clone();
        let s = &s;
        async move { reserve(s, &token, key, &body).await }
    };
    let first = book("a", 60, 120).await;
    let second = book("b", 180, 240).await;
    assert_eq!((first.status, second.status), (201, 201));
    let first_id = first.body["id"].as_str().unwrap().to_owned();
    let extend = s
        .call(
            "PATCH",
            &format!("/api/v1/reservations/{first_id}"),
            Some(&token),
            Some(&json!({"ends_at": at(&s, 150)}).to_string()),
        )
        .await;
    assert_eq!(extend.status, 200, "{}", extend.body);
    assert_eq!(extend.body["ends_at"], at(&s, 150));
    let overlap = s
        .call(
            "PATCH",
            &format!("/api/v1/reservations/{first_id}"),
            Some(&token),
            Some(&json!({"ends_at": at(&s, 200)}).to_string()),
        )
        .await;
    assert_eq!(overlap.status, 409);
    assert_eq!(
        overlap.body["type"],
        "https://parkd.dev/problems/spot-taken"
    );
    let cancel = s
        .post(
            &format!("/api/v1/reservations/{first_id}/cancel"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, 200);
    assert_eq!(cancel.body["state"], "cancelled");
    let twice = s
        .post(
            &format!("/api/v1/reservations/{first_id}/cancel"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(twice.status, 409);
    // Someone else's reservation is invisible.
    s.register("bo@example.com", PASSWORD).await;
    let bo = s.token("bo@example.com", PASSWORD).await;
    let peek = s
        .call(
            "GET",
            &format!("/api/v1/reservations/{first_id}"),
            Some(&bo),
            None,
        )
        .await;
    assert_eq!(peek.status, 404);
    s.stop.cancel();
}

async fn bad_input_is_refused_precisely(s: Server) {
    let (token, vehicle) = setup(&s, "car").await;
    let (bike_token, bike) = {
        s.register("moto@example.com", PASSWORD).await;
        let t = s.token("moto@example.com", PASSWORD).await;
        let v = s
            .post(
                "/api/v1/me/vehicles",
                Some(&t),
                json!({"plate": "M 1", "class": "motorcycle"}),
            )
            .await;
        (t, v.body["id"].as_str().unwrap().to_owned())
    };
    let cases = [
        (
            json!({"lot": "garage", "vehicle_id": vehicle, "starts_at": at(&s, -60), "ends_at": at(&s, 60)}),
            422,
            "invalid-times",
        ),
        (
            json!({"lot": "garage", "vehicle_id": vehicle, "starts_at": at(&s, 120), "ends_at": at(&s, 60)}),
            422,
            "invalid-times",
        ),
        (
            json!({"lot": "garage", "vehicle_id": vehicle, "starts_at": at(&s, 60), "ends_at": at(&s, 60 * 24 * 30)}),
            422,
            "invalid-times",
        ),
        (
            json!({"lot": "nowhere", "vehicle_id": vehicle, "starts_at": at(&s, 60), "ends_at": at(&s, 120)}),
            422,
            "unknown-lot",
        ),
        (
            json!({"lot": "garage", "vehicle_id": "not-mine", "starts_at": at(&s, 60), "ends_at": at(&s, 120)}),
            422,
            "unknown-vehicle",
        ),
        (
            json!({"lot": "garage", "vehicle_id": vehicle, "starts_at": at(&s, 60), "ends_at": at(&s, 120), "preferred_zone": "moon"}),
            422,
            "unknown-zone",
        ),
        (
            json!({"lot": "garage", "vehicle_id": vehicle, "starts_at": "tomorrow", "ends_at": at(&s, 120)}),
            422,
            "invalid-body",
        ),
        (
            json!({"lot": "garage", "vehicle_id": vehicle, "starts_at": at(&s, 60), "ends_at": at(&s, 120), "price": 0}),
            422,
            "invalid-body",
        ),
    ];
    for (i, (body, status, kind)) in cases.iter().enumerate() {
        let reply = reserve(&s, &token, &format!("bad-{i}"), body).await;
        assert_eq!(reply.status, *status, "{body}: {}", reply.body);
        assert!(
            reply.body["type"].as_str().unwrap().ends_with(kind),
            "{body}: {}",
            reply.body
        );
    }
    let no_fit = reserve(
        &s,
        &bike_token,
        "bike",
        &json!({"lot": "tiny", "vehicle_id": bike, "starts_at": at(&s, 60), "ends_at": at(&s, 120)}),
    )
    .await;
    assert_eq!(no_fit.status, 422);
    assert_eq!(
        no_fit.body["type"],
        "https://parkd.dev/problems/no-fitting-spot"
    );
    let malformed = s
        .call_with(
            "POST",
            "/api/v1/reservations",
            Some(&token),
            &[("Idempotency-Key", "m")],
            Some("{"),
        )
        .await;
    assert_eq!(malformed.status, 400);
    let anonymous = s
        .call_with(
            "POST",
            "/api/v1/reservations",
            None,
            &[("Idempotency-Key", "a")],
            Some("{}"),
        )
        .await;
    assert_eq!(anonymous.status, 401);
    // Nothing of the refused requests was written.
    let mine = s
        .call("GET", "/api/v1/reservations", Some(&token), None)
        .await;
    assert!(mine.body["reservations"].as_array().unwrap().is_empty());
    s.stop.cancel();
}

/// What another instance writes (straight to the database) is not in this process's book:
/// a booking it cancelled does not make this one refuse, and a spot it booked is not given
/// twice.
async fn the_book_is_a_hint_not_the_truth(s: Server) {
    let (token, vehicle) = setup(&s, "car").await;
    let tiny = |from: i64, to: i64| {
        json!({"lot": "tiny", "vehicle_id": vehicle,
               "starts_at": at(&s, from), "ends_at": at(&s, to)})
    };
    let first = reserve(&s, &token, "b-1", &tiny(60, 120)).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let id = first.body["id"].as_str().unwrap();
    let template = s.store.reservation(id).await.unwrap().unwrap();
    // Another instance cancels it: the book still has it, the database does not.
    assert!(
        s.store
            .transition_reservation(
                id,
                &[ReservationState::Confirmed],
                ReservationState::Cancelled,
                s.clock_now(),
            )
            .await
            .unwrap()
    );
    let again = reserve(&s, &token, "b-2", &tiny(60, 120)).await;
    assert_eq!(
        again.status, 201,
        "a refusal re-reads first: {}",
        again.body
    );
    // Another instance books the spot later on: the book does not know, the database refuses
    // the overlap, and the answer is a refusal on fresh bookings, not a second booking.
    let elsewhere = ReservationRow {
        id: "elsewhere".into(),
        code: "ELSEWHR1".into(),
        starts_at: s.clock_now() + Duration::minutes(300),
        ends_at: s.clock_now() + Duration::minutes(360),
        ..template.clone()
    };
    s.store.create_reservation(&elsewhere, None).await.unwrap();
    let late = reserve(&s, &token, "b-3", &tiny(300, 360)).await;
    assert_eq!(late.status, 409, "{}", late.body);
    assert_eq!(
        late.body["type"],
        "https://parkd.dev/problems/no-spot-available"
    );
    // In a big lot, the spot another instance took is skipped for the next best one.
    let garage = |key: &str| {
        let body = json!({"lot": "garage", "vehicle_id": vehicle,
                          "starts_at": at(&s, 600), "ends_at": at(&s, 660)});
        let key = key.to_owned();
        let s = &s;
        let token = token.clone();
        async move { reserve(s, &token, &key, &body).await }
    };
    let probe = garage("b-4").await;
    assert_eq!(probe.status, 201);
    let best = probe.body["spot"].as_str().unwrap().to_owned();
    let probe_id = probe.body["id"].as_str().unwrap();
    // This instance cancels (the book forgets it), then another instance takes that spot.
    let cancelled = s
        .post(
            &format!("/api/v1/reservations/{probe_id}/cancel"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(cancelled.status, 200);
    let taken = ReservationRow {
        id: "taken-elsewhere".into(),
        code: "ELSEWHR2".into(),
        lot: LotId::parse("garage").unwrap(),
        spot: SpotId::parse(&best).unwrap(),
        starts_at: s.clock_now() + Duration::minutes(600),
        ends_at: s.clock_now() + Duration::minutes(660),
        ..template
    };
    s.store.create_reservation(&taken, None).await.unwrap();
    let next = garage("b-5").await;
    assert_eq!(next.status, 201, "{}", next.body);
    assert_ne!(next.body["spot"].as_str().unwrap(), best);
    let retries = s
        .state
        .reservation_metrics
        .with_label_values(&["allocation_retry"])
        .get();
    assert!(retries >= 2, "both conflicts were seen: {retries}");
    s.stop.cancel();
}

macro_rules! both_stores {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::sqlite().await).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::postgres().await).await;
                }
            )*
        }
    };
}

both_stores!(
    idempotent_creation,
    retries_racing_with_one_key_book_once,
    a_vehicle_added_or_removed_is_seen_at_once,
    exactly_one_winner_for_the_last_spot,
    holds_and_no_shows,
    cancel_and_modify,
    bad_input_is_refused_precisely,
    the_book_is_a_hint_not_the_truth,
);
