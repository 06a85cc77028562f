//! Accounts and sessions over real HTTP, on both stores, with a manual clock: registration
//! and login answer alike for known and unknown accounts, every session-ending event ends the
//! session, failed logins are rate-limited without locking the real user out, and bad input
//! gets precise problems.

#![allow(clippy::unwrap_used)]

mod common;

use chrono::Duration;
use common::{Server, postgres, sqlite};
use parkd_core::account::{Email, Role};
use serde_json::json;

const PASSWORD: &str = "violet tram under lantern";

async fn known_and_unknown_accounts_answer_alike(s: Server) {
    let first = s.register("ana@example.com", PASSWORD).await;
    let again = s
        .register("Ana@Example.com", "another long phrase 42")
        .await;
    assert_eq!(first.status, 202);
    assert_eq!((first.status, &first.body), (again.status, &again.body));
    // The second registration changed nothing: the first password still works.
    s.token("ana@example.com", PASSWORD).await;
    let unknown = s.login("nobody@example.com", PASSWORD).await;
    let wrong = s.login("ana@example.com", "not the password at all").await;
    assert_eq!(unknown.status, 401);
    assert_eq!((unknown.status, &unknown.body), (wrong.status, &wrong.body));
    s.stop.cancel();
}

async fn every_session_ending_event_ends_the_session(s: Server) {
    s.register("ana@example.com", PASSWORD).await;
    // Logout.
    let token = s.token("ana@example.com", PASSWORD).await;
    assert_eq!(
        s.call("GET", "/api/v1/me", Some(&token), None).await.status,
        200
    );
    assert_eq!(
        s.post("/api/v1/auth/logout", Some(&token), json!({}))
            .await
            .status,
        204
    );
    let after = s.call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(after.status, 401);
    assert!(after.headers.contains("www-authenticate: bearer"));

    // Idle: 24 h without a request.
    let token = s.token("ana@example.com", PASSWORD).await;
    s.clock.advance(Duration::hours(23));
    assert_eq!(
        s.call("GET", "/api/v1/me", Some(&token), None).await.status,
        200,
        "used at 23 h"
    );
    s.clock.advance(Duration::hours(23));
    assert_eq!(
        s.call("GET", "/api/v1/me", Some(&token), None).await.status,
        200,
        "idle 23 h again"
    );
    s.clock.advance(Duration::hours(24));
    assert_eq!(
        s.call("GET", "/api/v1/me", Some(&token), None).await.status,
        401,
        "idle 24 h"
    );

    // Absolute: 30 days after login, however often it is used.
    let token = s.token("ana@example.com", PASSWORD).await;
    let mut hours = 0;
    loop {
        s.clock.advance(Duration::hours(23));
        hours += 23;
        let status = s.call("GET", "/api/v1/me", Some(&token), None).await.status;
        if hours < 30 * 24 {
            assert_eq!(status, 200, "used every 23 h, at {hours} h");
        } else {
            assert_eq!(status, 401, "past 30 days");
            break;
        }
    }

    // Password change: other sessions end, this one stays.
    let mine = s.token("ana@example.com", PASSWORD).await;
    let other = s.token("ana@example.com", PASSWORD).await;
    // Used just before, so that this instance holds it in its session cache.
    assert_eq!(
        s.call("GET", "/api/v1/me", Some(&other), None).await.status,
        200
    );
    let changed = s
        .post(
            "/api/v1/me/password",
            Some(&mine),
            json!({"current_password": PASSWORD, "new_password": "a brand new garden path"}),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.body["other_sessions_ended"], 1);
    assert_eq!(
        s.call("GET", "/api/v1/me", Some(&mine), None).await.status,
        200
    );
    assert_eq!(
        s.call("GET", "/api/v1/me", Some(&other), None).await.status,
        401
    );
    assert_eq!(
        s.login("ana@example.com", PASSWORD).await.status,
        401,
        "old password"
    );
    let wrong_current = s
        .post(
            "/api/v1/me/password",
            Some(&mine),
            json!({"current_password": "nope nope nope", "new_password": "another fine phrase"}),
        )
        .await;
    assert_eq!(wrong_current.status, 403);

    // Revoking one's own other session.
    let second = s.token("ana@example.com", "a brand new garden path").await;
    assert_eq!(
        s.call("GET", "/api/v1/me", Some(&second), None)
            .await
            .status,
        200
    );
    let list = s
        .call("GET", "/api/v1/me/sessions", Some(&mine), None)
        .await;
    let sessions = list.body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let other_id = sessions.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = s
        .call(
            "DELETE",
            &format!("/api/v1/me/sessions/{other_id}"),
            Some(&mine),
            None,
        )
        .await;
    assert_eq!(revoked.status, 204);
    assert_eq!(
        s.call("GET", "/api/v1/me", Some(&second), None)
            .await
            .status,
        401
    );

    // Disabling the account ends every session, and login answers as for a wrong password.
    let user = s
        .store
        .user_by_email(&Email::parse("ana@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    s.accounts
        .create_user(
            &Email::parse("root@example.com").unwrap(),
            "keys to the whole garage",
            Role::Admin,
            "",
        )
        .await
        .unwrap();
    let admin = s
        .token("root@example.com", "keys to the whole garage")
        .await;
    let disabled = s
        .post(
            &format!("/api/v1/admin/users/{}/disable", user.id),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(disabled.status, 204);
    assert_eq!(
        s.call("GET", "/api/v1/me", Some(&mine), None).await.status,
        401
    );
    let login = s.login("ana@example.com", "a brand new garden path").await;
    assert_eq!(login.status, 401);
    assert_eq!(
        login.body["type"],
        "https://parkd.dev/problems/invalid-credentials"
    );
    // Drivers are not admins.
    s.post(
        &format!("/api/v1/admin/users/{}/enable", user.id),
        Some(&admin),
        json!({}),
    )
    .await;
    let driver = s.token("ana@example.com", "a brand new garden path").await;
    assert_eq!(
        s.call("GET", "/api/v1/admin/users", Some(&driver), None)
            .await
            .status,
        403
    );
    s.stop.cancel();
}

/// A session ended behind this instance's back (by another instance, here straight in the
/// store) is refused once the session cache's 2 s have passed, not later.
async fn an_end_decided_elsewhere_arrives_within_the_cache_time(s: Server) {
    s.register("ana@example.com", PASSWORD).await;
    let token = s.token("ana@example.com", PASSWORD).await;
    let me = s.call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(me.status, 200);
    let sessions = s
        .call("GET", "/api/v1/me/sessions", Some(&token), None)
        .await;
    let id = sessions.body["sessions"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let user_id = me.body["id"].as_str().unwrap().to_owned();
    let now = parkd_core::clock::Clock::now(s.clock.as_ref());
    assert!(
        s.store
            .revoke_session(&user_id, &id, now, "revoked")
            .await
            .unwrap()
    );
    assert_eq!(
        s.call("GET", "/api/v1/me", Some(&token), None).await.status,
        200,
        "still trusted from the cache"
    );
    s.clock.advance(Duration::seconds(2));
    assert_eq!(
        s.call("GET", "/api/v1/me", Some(&token), None).await.status,
        401,
        "read again after 2 s"
    );
    s.stop.cancel();
}

async fn failed_logins_are_limited_without_locking_the_user_out(s: Server) {
    s.register("ana@example.com", PASSWORD).await;
    // Ana logs in from this address (the test's) once: it becomes known.
    s.token("ana@example.com", PASSWORD).await;
    for _ in 0..5 {
        assert_eq!(
            s.login("ana@example.com", "guess guess guess").await.status,
            401
        );
    }
    let limited = s.login("ana@example.com", PASSWORD).await;
    assert_eq!(limited.status, 429, "even the right password waits");
    assert!(
        limited.headers.contains("retry-after: "),
        "{}",
        limited.headers
    );
    assert_eq!(
        limited.body["type"],
        "https://parkd.dev/problems/too-many-attempts"
    );
    // Unknown accounts are limited alike (no enumeration through the limiter).
    for _ in 0..5 {
        s.login("ghost@example.com", "guess guess guess").await;
    }
    assert_eq!(
        s.login("ghost@example.com", "guess guess guess")
            .await
            .status,
        429
    );
    // The window passes.
    s.clock.advance(Duration::minutes(16));
    assert_eq!(s.login("ana@example.com", PASSWORD).await.status, 200);
    s.stop.cancel();
}

async fn bad_input_gets_precise_problems(s: Server) {
    for (body, status, kind) in [
        (
            r#"{"email":"ana@example.com","password":"short"}"#,
            422,
            "invalid-account-data",
        ),
        (
            r#"{"email":"not-an-address","password":"violet tram under lantern"}"#,
            422,
            "invalid-account-data",
        ),
        (
            r#"{"email":"ana@example.com","password":"password1234"}"#,
            422,
            "invalid-account-data",
        ),
        (
            r#"{"email":"ana@example.com","password":"violet tram under lantern","admin":true}"#,
            422,
            "invalid-body",
        ),
        (r#"{"email":"ana@example.com""#, 400, "malformed-json"),
    ] {
        let reply = s
            .call("POST", "/api/v1/auth/register", None, Some(body))
            .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert!(
            reply
                .headers
                .contains("content-type: application/problem+json")
        );
        assert!(
            reply.body["type"].as_str().unwrap().ends_with(kind),
            "{}",
            reply.body
        );
    }
    let huge = format!(
        r#"{{"email":"ana@example.com","password":"{}"}}"#,
        "x".repeat(20_000)
    );
    assert_eq!(
        s.call("POST", "/api/v1/auth/register", None, Some(&huge))
            .await
            .status,
        413
    );
    let forged = "A".repeat(43);
    let reply = s.call("GET", "/api/v1/me", Some(&forged), None).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.body["type"],
        "https://parkd.dev/problems/invalid-token"
    );
    assert_eq!(
        s.call("GET", "/api/v1/me", Some("short"), None)
            .await
            .status,
        401
    );
    assert_eq!(s.call("GET", "/api/v1/me", None, None).await.status, 401);

    // Vehicles.
    s.register("ana@example.com", PASSWORD).await;
    let token = s.token("ana@example.com", PASSWORD).await;
    let car = s
        .post(
            "/api/v1/me/vehicles",
            Some(&token),
            json!({"plate": "b-ab 123", "class": "car", "ev": true}),
        )
        .await;
    assert_eq!(car.status, 201, "{}", car.body);
    assert_eq!(car.body["plate"], "B-AB 123");
    assert_eq!(car.body["vehicle_type"], "ev");
    let same = s
        .post(
            "/api/v1/me/vehicles",
            Some(&token),
            json!({"plate": "BAB123", "class": "car"}),
        )
        .await;
    assert_eq!(same.status, 409);
    let ev_bike = s
        .post(
            "/api/v1/me/vehicles",
            Some(&token),
            json!({"plate": "M 1", "class": "motorcycle", "ev": true}),
        )
        .await;
    assert_eq!(ev_bike.status, 422);
    let bad_class = s
        .post(
            "/api/v1/me/vehicles",
            Some(&token),
            json!({"plate": "X 1", "class": "tank"}),
        )
        .await;
    assert_eq!(bad_class.status, 422);
    let list = s
        .call("GET", "/api/v1/me/vehicles", Some(&token), None)
        .await;
    assert_eq!(list.body["vehicles"].as_array().unwrap().len(), 1);
    let id = car.body["id"].as_str().unwrap();
    assert_eq!(
        s.call(
            "DELETE",
            &format!("/api/v1/me/vehicles/{id}"),
            Some(&token),
            None
        )
        .await
        .status,
        204
    );
    s.stop.cancel();
}

macro_rules! both_stores {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::sqlite().await).await;
                }
            )*
        }
        mod postgres {
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
    known_and_unknown_accounts_answer_alike,
    every_session_ending_event_ends_the_session,
    an_end_decided_elsewhere_arrives_within_the_cache_time,
    failed_logins_are_limited_without_locking_the_user_out,
    bad_input_gets_precise_problems,
);
