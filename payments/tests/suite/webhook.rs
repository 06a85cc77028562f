//! Webhook signatures (signed here with the hmac crate, independently of the code under
//! test), event parsing, and out-of-order events converging.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use parkd_payments::webhook::{
    DEFAULT_TOLERANCE, EventKind, PaymentState, SignatureError, converge, converge_retrieved,
    parse_stripe_event, verify_stripe_signature,
};
use parkd_payments::{DeclineReason, IntentId, IntentStatus, Secret};
use proptest::prelude::*;
use serde_json::json;
use sha2::Sha256;

const NOW: i64 = 1_712_345_678;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).unwrap()
}

fn hmac_hex(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"payment_intent.succeeded"}"#;
const SECRET: &str = "whsec_current0123456789";
const OLD_SECRET: &str = "whsec_previous0123456789";

fn secrets(values: &[&str]) -> Vec<Secret> {
    values.iter().map(|v| Secret::new(*v)).collect()
}

fn verify(header: &str, body: &[u8], with: &[&str]) -> Result<DateTime<Utc>, SignatureError> {
    verify_stripe_signature(body, header, &secrets(with), now(), DEFAULT_TOLERANCE)
}

#[test]
fn a_valid_signature_is_accepted() {
    let header = format!("t={NOW},v1={}", hmac_hex(SECRET, NOW, BODY));
    assert_eq!(verify(&header, BODY, &[SECRET]), Ok(now()));
}

#[test]
fn a_signature_under_the_previous_secret_is_accepted_during_rotation() {
    let header = format!("t={NOW},v1={}", hmac_hex(OLD_SECRET, NOW, BODY));
    assert!(verify(&header, BODY, &[SECRET, OLD_SECRET]).is_ok());
    assert_eq!(
        verify(&header, BODY, &[SECRET]),
        Err(SignatureError::SignatureMismatch),
        "once the old secret is retired, its signatures are refused"
    );
}

#[test]
fn any_of_several_v1_signatures_may_match() {
    let header = format!(
        "t={NOW},v1={},v1={},v0={}",
        hmac_hex("whsec_someone_else", NOW, BODY),
        hmac_hex(SECRET, NOW, BODY),
        "ff".repeat(32)
    );
    assert!(verify(&header, BODY, &[SECRET]).is_ok());
}

#[test]
fn a_tampered_body_is_refused() {
    let header = format!("t={NOW},v1={}", hmac_hex(SECRET, NOW, BODY));
    let tampered = br#"{"id":"evt_1","object":"event","type":"payment_intent.canceled"}"#;
    assert_eq!(
        verify(&header, tampered, &[SECRET]),
        Err(SignatureError::SignatureMismatch)
    );
}

#[test]
fn a_changed_timestamp_breaks_the_signature() {
    let header = format!("t={},v1={}", NOW + 1, hmac_hex(SECRET, NOW, BODY));
    assert_eq!(
        verify(&header, BODY, &[SECRET]),
        Err(SignatureError::SignatureMismatch)
    );
}

#[test]
fn stale_signatures_are_refused_beyond_the_tolerance() {
    let at_limit = NOW - 300;
    let header = format!("t={at_limit},v1={}", hmac_hex(SECRET, at_limit, BODY));
    assert!(verify(&header, BODY, &[SECRET]).is_ok());

    let stale = NOW - 301;
    let header = format!("t={stale},v1={}", hmac_hex(SECRET, stale, BODY));
    assert_eq!(
        verify(&header, BODY, &[SECRET]),
        Err(SignatureError::TooOld {
            age_s: 301,
            tolerance_s: 300
        })
    );
}

#[test]
fn future_signatures_are_refused_beyond_the_tolerance() {
    let ahead = NOW + 300;
    let header = format!("t={ahead},v1={}", hmac_hex(SECRET, ahead, BODY));
    assert!(verify(&header, BODY, &[SECRET]).is_ok());

    let future = NOW + 301;
    let header = format!("t={future},v1={}", hmac_hex(SECRET, future, BODY));
    assert_eq!(
        verify(&header, BODY, &[SECRET]),
        Err(SignatureError::InFuture {
            ahead_s: 301,
            tolerance_s: 300
        })
    );
}

#[test]
fn malformed_and_missing_headers_are_refused_with_their_own_error() {
    let good = hmac_hex(SECRET, NOW, BODY);
    assert_eq!(
        verify("", BODY, &[SECRET]),
        Err(SignatureError::MissingHeader)
    );
    assert_eq!(
        verify(&format!("t={NOW}"), BODY, &[SECRET]),
        Err(SignatureError::NoV1Signature)
    );
    assert_eq!(
        verify(&format!("t={NOW},v0={good}"), BODY, &[SECRET]),
        Err(SignatureError::NoV1Signature),
        "only v1 counts"
    );
    for header in [
        format!("v1={good}"),
        format!("t=soon,v1={good}"),
        format!("t={NOW},v1=not-hex"),
        format!("t={NOW},v1={}", &good[..20]),
        format!("t={NOW};v1={good}"),
        "definitely not a signature".to_owned(),
    ] {
        assert!(
            matches!(
                verify(&header, BODY, &[SECRET]),
                Err(SignatureError::MalformedHeader(_))
            ),
            "{header}"
        );
    }
}

#[test]
fn no_configured_secret_verifies_nothing() {
    let header = format!("t={NOW},v1={}", hmac_hex(SECRET, NOW, BODY));
    assert_eq!(verify(&header, BODY, &[]), Err(SignatureError::NoSecrets));
    assert_eq!(verify(&header, BODY, &[""]), Err(SignatureError::NoSecrets));
}

fn intent_object(id: &str, status: &str, failure: Option<&str>) -> serde_json::Value {
    let mut object = json!({
        "id": id, "object": "payment_intent", "amount": 1250, "amount_received": 0,
        "currency": "eur", "created": NOW - 3600, "livemode": false,
        "metadata": {"reservation_id": "r-1"}, "payment_method": "pm_1PtestVisa",
        "status": status, "last_payment_error": null, "next_action": null
    });
    if status == "succeeded" {
        object["amount_received"] = json!(1250);
    }
    if let Some(code) = failure {
        object["last_payment_error"] = json!({"type": "card_error", "code": "card_declined",
            "decline_code": code, "message": "Your card was declined."});
    }
    if status == "requires_action" {
        object["next_action"] = json!({"type": "use_stripe_sdk", "use_stripe_sdk": {}});
    }
    object
}

fn event(id: &str, event_type: &str, created: i64, object: serde_json::Value) -> Vec<u8> {
    json!({
        "id": id, "object": "event", "api_version": "2024-06-20", "created": created,
        "data": {"object": object}, "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null}, "type": event_type
    })
    .to_string()
    .into_bytes()
}

fn charge_object(intent: &str, refunded: u64) -> serde_json::Value {
    json!({
        "id": "ch_3Pcharge", "object": "charge", "amount": 1250, "amount_captured": 1250,
        "amount_refunded": refunded, "captured": true, "currency": "eur",
        "payment_intent": intent, "refunded": refunded == 1250, "status": "succeeded",
        "created": NOW - 3600
    })
}

#[test]
fn parses_the_events_parkd_uses_and_acknowledges_the_rest() {
    let succeeded = parse_stripe_event(&event(
        "evt_1",
        "payment_intent.succeeded",
        NOW,
        intent_object("pi_1", "succeeded", None),
    ))
    .unwrap();
    assert_eq!(succeeded.id().as_str(), "evt_1");
    assert_eq!(succeeded.intent_id().unwrap().as_str(), "pi_1");
    assert_eq!(succeeded.created, now());
    match &succeeded.kind {
        EventKind::PaymentIntentSucceeded(intent) => {
            assert_eq!(intent.status, IntentStatus::Succeeded);
            assert_eq!(intent.amount_received_minor, 1250);
            // Stripe's `eur` is parkd's one currency type, upper case.
            assert_eq!(intent.currency.as_str(), "EUR");
            assert_eq!(intent.metadata.get("reservation_id"), Some("r-1"));
        }
        other => panic!("{other:?}"),
    }

    let failed = parse_stripe_event(&event(
        "evt_2",
        "payment_intent.payment_failed",
        NOW,
        intent_object("pi_1", "requires_payment_method", Some("expired_card")),
    ))
    .unwrap();
    match &failed.kind {
        EventKind::PaymentIntentFailed(intent) => {
            assert_eq!(intent.status, IntentStatus::Failed);
            assert_eq!(
                intent.failure.as_ref().unwrap().reason,
                DeclineReason::ExpiredCard
            );
        }
        other => panic!("{other:?}"),
    }

    for (event_type, status) in [
        ("payment_intent.requires_action", "requires_action"),
        ("payment_intent.processing", "processing"),
        ("payment_intent.canceled", "canceled"),
    ] {
        let parsed = parse_stripe_event(&event(
            "evt_3",
            event_type,
            NOW,
            intent_object("pi_1", status, None),
        ))
        .unwrap();
        assert!(!parsed.is_ignored());
        assert_eq!(parsed.intent_id().unwrap().as_str(), "pi_1");
    }

    let refunded = parse_stripe_event(&event(
        "evt_4",
        "charge.refunded",
        NOW,
        charge_object("pi_1", 500),
    ))
    .unwrap();
    match &refunded.kind {
        EventKind::ChargeRefunded(charge) => {
            assert_eq!(charge.amount_refunded_minor, 500);
            assert_eq!(charge.currency.as_str(), "EUR");
            assert!(!charge.fully_refunded);
            assert_eq!(charge.intent_id.as_ref().unwrap().as_str(), "pi_1");
        }
        other => panic!("{other:?}"),
    }

    let other = parse_stripe_event(&event(
        "evt_5",
        "customer.created",
        NOW,
        json!({"id": "cus_1", "object": "customer"}),
    ))
    .unwrap();
    assert!(other.is_ignored());
    assert_eq!(other.intent_id(), None);

    assert!(parse_stripe_event(b"{}").is_err());
    assert!(parse_stripe_event(b"not json").is_err());
    assert!(
        parse_stripe_event(&event(
            "evt_6",
            "payment_intent.succeeded",
            NOW,
            json!({"id": "cus_1"})
        ))
        .is_err()
    );
}

fn start(intent: &str) -> PaymentState {
    PaymentState {
        intent_id: IntentId::parse(intent).unwrap(),
        status: IntentStatus::Created,
        status_at: DateTime::from_timestamp(NOW - 3600, 0).unwrap(),
        status_event: None,
        failure: None,
        amount_refunded_minor: 0,
    }
}

fn parsed(
    id: &str,
    event_type: &str,
    created: i64,
    object: serde_json::Value,
) -> parkd_payments::webhook::WebhookEvent {
    parse_stripe_event(&event(id, event_type, created, object)).unwrap()
}

#[test]
fn a_late_requires_action_after_success_does_not_regress() {
    let action = parsed(
        "evt_a",
        "payment_intent.requires_action",
        NOW,
        intent_object("pi_1", "requires_action", None),
    );
    let success = parsed(
        "evt_b",
        "payment_intent.succeeded",
        NOW + 20,
        intent_object("pi_1", "succeeded", None),
    );
    let state = converge(&converge(&start("pi_1"), &success), &action);
    assert_eq!(state.status, IntentStatus::Succeeded);
    assert_eq!(state.status_event.unwrap().as_str(), "evt_b");
}

#[test]
fn a_newer_failure_replaces_an_older_action_but_not_the_reverse() {
    let action = parsed(
        "evt_a",
        "payment_intent.requires_action",
        NOW,
        intent_object("pi_1", "requires_action", None),
    );
    let failed = parsed(
        "evt_b",
        "payment_intent.payment_failed",
        NOW + 30,
        intent_object(
            "pi_1",
            "requires_payment_method",
            Some("authentication_required"),
        ),
    );
    for order in [[&action, &failed], [&failed, &action]] {
        let state = order.iter().fold(start("pi_1"), |s, e| converge(&s, e));
        assert_eq!(state.status, IntentStatus::Failed);
        assert_eq!(state.failure, Some(DeclineReason::AuthenticationRequired));
    }
}

#[test]
fn a_refund_before_the_success_event_still_ends_succeeded_and_refunded() {
    let refund = parsed(
        "evt_r",
        "charge.refunded",
        NOW + 60,
        charge_object("pi_1", 1250),
    );
    let success = parsed(
        "evt_s",
        "payment_intent.succeeded",
        NOW,
        intent_object("pi_1", "succeeded", None),
    );
    let state = converge(&converge(&start("pi_1"), &refund), &success);
    assert_eq!(state.status, IntentStatus::Succeeded);
    assert_eq!(state.amount_refunded_minor, 1250);
}

#[test]
fn events_of_other_intents_and_ignored_events_change_nothing() {
    let state = start("pi_1");
    let other = parsed(
        "evt_o",
        "payment_intent.succeeded",
        NOW,
        intent_object("pi_2", "succeeded", None),
    );
    assert_eq!(converge(&state, &other), state);
    let ignored = parsed("evt_i", "invoice.paid", NOW, json!({"id": "in_1"}));
    assert_eq!(converge(&state, &ignored), state);
}

#[test]
fn a_retrieval_reconciles_like_an_event() {
    let mut intent = parkd_payments::PaymentIntent {
        id: IntentId::parse("pi_1").unwrap(),
        status: IntentStatus::Succeeded,
        amount_minor: 1250,
        amount_received_minor: 1250,
        currency: parkd_core::tariff::Currency::parse("EUR").unwrap(),
        metadata: parkd_payments::Metadata::new(),
        payment_method: None,
        next_action: None,
        failure: None,
        client_secret: None,
        created: now(),
    };
    let state = converge_retrieved(&start("pi_1"), &intent, now());
    assert_eq!(state.status, IntentStatus::Succeeded);
    intent.status = IntentStatus::Processing;
    assert_eq!(
        converge_retrieved(&state, &intent, now()).status,
        IntentStatus::Succeeded
    );
}

/// One realistic history of an intent: attempts (each maybe with an action first) that fail
/// until one succeeds, or a cancellation; refunds after a success.
#[derive(Debug, Clone)]
struct History {
    events: Vec<Vec<u8>>,
    final_status: IntentStatus,
    final_refunded: u64,
}

fn history() -> impl Strategy<Value = History> {
    (
        prop::collection::vec((any::<bool>(), any::<bool>()), 1..5),
        any::<bool>(),
        prop::collection::vec(1u64..=400, 0..3),
        prop::collection::vec(1i64..=30, 12),
    )
        .prop_map(|(attempts, cancel, refunds, gaps)| {
            let mut events = Vec::new();
            let mut time = NOW;
            let mut gaps = gaps.into_iter().cycle();
            let mut next = |events: &mut Vec<Vec<u8>>, event_type: &str, object| {
                time += gaps.next().unwrap_or(1);
                let id = format!("evt_{}", events.len());
                events.push(event(&id, event_type, time, object));
            };
            let mut status = IntentStatus::Created;
            for (action, succeeds) in attempts {
                if action {
                    next(
                        &mut events,
                        "payment_intent.requires_action",
                        intent_object("pi_h", "requires_action", None),
                    );
                }
                if succeeds {
                    next(
                        &mut events,
                        "payment_intent.succeeded",
                        intent_object("pi_h", "succeeded", None),
                    );
                    status = IntentStatus::Succeeded;
                    break;
                }
                next(
                    &mut events,
                    "payment_intent.payment_failed",
                    intent_object("pi_h", "requires_payment_method", Some("generic_decline")),
                );
                status = IntentStatus::Failed;
            }
            let mut refunded = 0;
            if status == IntentStatus::Succeeded {
                for amount in refunds {
                    refunded = (refunded + amount).min(1250);
                    next(
                        &mut events,
                        "charge.refunded",
                        charge_object("pi_h", refunded),
                    );
                }
            } else if cancel {
                next(
                    &mut events,
                    "payment_intent.canceled",
                    intent_object("pi_h", "canceled", None),
                );
                status = IntentStatus::Cancelled;
            }
            History {
                events,
                final_status: status,
                final_refunded: refunded,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any delivery order, with repeats, ends where the history ended.
    #[test]
    fn out_of_order_and_repeated_events_converge_on_the_truth(
        (history, delivery) in history().prop_flat_map(|history| {
            let n = history.events.len();
            let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
            let repeats = prop::collection::vec(0..n, 0..4);
            (Just(history), (order, repeats))
        })
    ) {
        let (order, repeats) = delivery;
        let events: Vec<_> = history
            .events
            .iter()
            .map(|body| parse_stripe_event(body).unwrap())
            .collect();
        let in_order = events.iter().fold(start("pi_h"), |s, e| converge(&s, e));
        let shuffled = order
            .iter()
            .chain(repeats.iter())
            .fold(start("pi_h"), |s, &i| converge(&s, &events[i]));
        prop_assert_eq!(&shuffled, &in_order);
        prop_assert_eq!(shuffled.status, history.final_status);
        prop_assert_eq!(shuffled.amount_refunded_minor, history.final_refunded);
    }

    /// Even with reports in the same second, the order of delivery does not matter.
    #[test]
    fn converge_is_order_independent_for_any_reports(
        reports in prop::collection::vec((0usize..6, 0i64..3), 1..8).prop_shuffle(),
        seed in any::<u64>(),
    ) {
        let kinds = [
            ("payment_intent.requires_action", "requires_action", None),
            ("payment_intent.processing", "processing", None),
            ("payment_intent.payment_failed", "requires_payment_method", Some("lost_card")),
            ("payment_intent.succeeded", "succeeded", None),
            ("payment_intent.canceled", "canceled", None),
            ("payment_intent.payment_failed", "requires_payment_method", Some("expired_card")),
        ];
        let events: Vec<_> = reports
            .iter()
            .enumerate()
            .map(|(i, &(kind, offset))| {
                let (event_type, status, failure) = kinds[kind];
                parsed(&format!("evt_{i}"), event_type, NOW + offset, intent_object("pi_x", status, failure))
            })
            .collect();
        let forward = events.iter().fold(start("pi_x"), |s, e| converge(&s, e));
        let mut order: Vec<usize> = (0..events.len()).collect();
        // A second, different order from the seed.
        order.sort_by_key(|&i| (i as u64).wrapping_mul(seed | 1).rotate_left(17));
        let other = order.iter().fold(start("pi_x"), |s, &i| converge(&s, &events[i]));
        prop_assert_eq!(forward, other);
    }
}
