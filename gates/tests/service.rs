//! The gate rules against a real store (both backends), a real occupancy engine and a
//! manual clock: what each request is answered, and what is stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, Utc};
use parkd_core::account::{Email, Role};
use parkd_core::clock::{Clock, ManualClock};
use parkd_core::garage::{Lot, demo_garage};
use parkd_core::gate::{Action, GateCommand, Reason};
use parkd_core::ids::{DeviceId, GateId, LotId, SpotId};
use parkd_core::reservation::ReservationState;
use parkd_core::vehicle::{SpotKind, VehicleType};
use parkd_gates::mqtt::CommandOut;
use parkd_gates::{GateMetrics, GateService, GateSettings, OperatorError, TariffCharge};
use parkd_occupancy::{OccupancyEngine, SpotState};
use parkd_store::{Device, DeviceBinding, ReservationRow, Store, User};

macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let (store, _dir) = parkd_store::testing::sqlite_store().await;
                    super::$test(&super::Garage::new(std::sync::Arc::new(store)).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let store = parkd_store::testing::postgres_store().await;
                    super::$test(&super::Garage::new(std::sync::Arc::new(store)).await).await;
                }
            )*
        }
    };
}

on_both_stores!(
    a_walk_in_gets_a_fitting_free_spot_held_for_it,
    a_reservation_admits_by_code_or_plate_and_exit_completes_it,
    refusals_say_why,
    a_repeated_request_gets_the_first_answer,
    answers_are_kept_for_the_retention_then_pruned,
    arrivals_confirm_or_reconcile_the_session,
    operators_open_by_hand_and_run_emergencies,
    the_exit_opens_once_the_stay_is_paid,
);

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn lot_id() -> LotId {
    LotId::parse("g1").unwrap()
}

/// Six spots: standard s0, s1; ev s2; accessible s3; large s4; standard s5 (out of service).
fn model() -> Lot {
    let mut lot = demo_garage(lot_id(), 1, 40);
    lot.spots.truncate(6);
    let kinds = [
        SpotKind::Standard,
        SpotKind::Standard,
        SpotKind::Ev,
        SpotKind::Accessible,
        SpotKind::Large,
        SpotKind::Standard,
    ];
    for (spot, kind) in lot.spots.iter_mut().zip(kinds) {
        spot.kind = kind;
    }
    lot.spots[5].out_of_service = true;
    lot
}

fn spot(i: usize) -> SpotId {
    model().spots[i].id.clone()
}

struct Garage {
    store: Arc<dyn Store>,
    engine: Arc<OccupancyEngine>,
    clock: Arc<ManualClock>,
    service: GateService,
    /// Commands the service sent on its own (the MQTT side is tested end to end in parkd).
    sent: Arc<Sent>,
}

/// Records the commands handed to the broker.
#[derive(Debug, Default)]
struct Sent(std::sync::Mutex<Vec<(String, GateCommand)>>);

impl CommandOut for Sent {
    fn send(&self, topic: String, payload: Vec<u8>) {
        let command = GateCommand::decode(&payload).unwrap();
        self.0.lock().unwrap().push((topic, command));
    }
}

impl Garage {
    /// Another service over the same store and engine, as after a restart.
    fn restarted(&self) -> GateService {
        GateService::new(
            self.store.clone(),
            self.engine.clone(),
            self.clock.clone(),
            GateSettings::default(),
            Arc::new(TariffCharge::new(
                self.store.clone(),
                self.engine.clone(),
                TariffCharge::DEFAULT_EXIT_GRACE,
            )),
            GateMetrics::new(&prometheus::Registry::new()).unwrap(),
            self.sent.clone(),
        )
    }
}

impl Sent {
    fn take(&self) -> Vec<(String, GateCommand)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Garage {
    async fn new(store: Arc<dyn Store>) -> Self {
        let clock = Arc::new(ManualClock::new(t0()));
        store.put_lot(&model()).await.unwrap();
        for gate in ["in-1", "out-1"] {
            store
                .upsert_device(&Device {
                    id: DeviceId::parse(gate).unwrap(),
                    binding: DeviceBinding::Gate {
                        lot: lot_id(),
                        gate: GateId::parse(gate).unwrap(),
                    },
                    secret_sha256: None,
                    disabled: false,
                    created_at: t0(),
                })
                .await
                .unwrap();
        }
        let sent = Arc::new(Sent::default());
        let engine = Arc::new(OccupancyEngine::default());
        engine.install_lot(model(), t0());
        // Every spot free except the closed one.
        for i in 0..5 {
            engine.apply(&lot_id(), &spot(i), false, t0());
        }
        let service = GateService::new(
            store.clone(),
            engine.clone(),
            clock.clone(),
            GateSettings::default(),
            // Without a stored tariff a lot is free: the tests that set none see no charge.
            Arc::new(TariffCharge::new(
                store.clone(),
                engine.clone(),
                TariffCharge::DEFAULT_EXIT_GRACE,
            )),
            GateMetrics::new(&prometheus::Registry::new()).unwrap(),
            sent.clone(),
        );
        Self {
            store,
            engine,
            clock,
            service,
            sent,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn request(&self, gate: &str, body: serde_json::Value) -> GateCommand {
        let payload = serde_json::to_vec(&body).unwrap();
        self.service
            .handle_request(
                &lot_id(),
                &GateId::parse(gate).unwrap(),
                &payload,
                self.now(),
            )
            .await
    }

    async fn entry(&self, id: &str, plate: &str, vehicle: Option<&str>) -> GateCommand {
        let mut body = serde_json::json!({"request_id": id, "direction": "entry", "plate": plate});
        if let Some(vehicle) = vehicle {
            body["vehicle"] = vehicle.into();
        }
        self.request("in-1", body).await
    }

    async fn exit(&self, id: &str, plate: &str) -> GateCommand {
        self.request(
            "out-1",
            serde_json::json!({"request_id": id, "direction": "exit", "plate": plate}),
        )
        .await
    }

    fn state(&self, i: usize) -> SpotState {
        self.engine.spot(&lot_id(), &spot(i)).unwrap().state
    }

    async fn reservation(&self, id: &str, spot_i: usize, from_min: i64, to_min: i64) {
        if self.store.user("u1").await.unwrap().is_none() {
            self.store
                .create_user(&User {
                    id: "u1".into(),
                    email: Email::parse("ana@example.com").unwrap(),
                    password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                    role: Role::Driver,
                    display_name: String::new(),
                    disabled: false,
                    created_at: t0(),
                    password_changed_at: t0(),
                })
                .await
                .unwrap();
        }
        self.store
            .create_reservation(
                &ReservationRow {
                    id: id.into(),
                    code: format!("CODE{id}"),
                    user_id: "u1".into(),
                    vehicle_id: None,
                    plate_key: "RES1".into(),
                    vehicle_type: VehicleType::Car,
                    lot: lot_id(),
                    spot: spot(spot_i),
                    starts_at: t0() + Duration::minutes(from_min),
                    ends_at: t0() + Duration::minutes(to_min),
                    state: ReservationState::Confirmed,
                    created_at: t0(),
                    updated_at: t0(),
                },
                None,
            )
            .await
            .unwrap();
    }
}

async fn a_walk_in_gets_a_fitting_free_spot_held_for_it(g: &Garage) {
    let open = g.entry("r1", "AB 123", Some("ev")).await;
    assert_eq!((open.action, open.reason), (Action::Open, Reason::WalkIn));
    assert_eq!(open.request_id.as_deref(), Some("r1"));
    // An EV gets the charging bay: it is the scarce kind it may use.
    let assigned = open.spot.clone().unwrap();
    assert_eq!(assigned, spot(2).to_string());
    assert!(open.display.contains("spot"), "{}", open.display);
    assert_eq!(g.state(2), SpotState::Held);
    let session = g
        .store
        .open_parking_session_of_plate(&lot_id(), "AB123")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(session.id.clone()), open.session);
    assert_eq!(session.assigned_spot, Some(spot(2)));
    assert_eq!(session.vehicle_type, VehicleType::Ev);

    // A car without a type is a car: standard first, never the accessible or EV bay.
    let car = g.entry("r2", "CD-456", None).await;
    assert_eq!(car.reason, Reason::WalkIn);
    assert!(
        [spot(0), spot(1)]
            .map(|s| s.to_string())
            .contains(car.spot.as_ref().unwrap())
    );

    // Leaving: nothing due, the session closes, the hold of a spot never sensed is released.
    g.clock.advance(Duration::minutes(90));
    let out = g.exit("x1", "AB123").await;
    assert_eq!((out.action, out.reason), (Action::Open, Reason::NothingDue));
    assert_eq!(out.session, Some(session.id.clone()));
    let closed = g.store.parking_session(&session.id).await.unwrap().unwrap();
    assert_eq!(closed.exited_at, Some(g.now()));
    assert_eq!(closed.exit_gate, Some(GateId::parse("out-1").unwrap()));
    assert_eq!(closed.overstay_s, None);
    assert_eq!(g.state(2), SpotState::Free);
}

async fn a_reservation_admits_by_code_or_plate_and_exit_completes_it(g: &Garage) {
    // Reserved s4 from minute 60 to 120; another on s0 from minute 10 to 70.
    g.reservation("a", 4, 60, 120).await;
    // Too early by code: the display says from when.
    let early = g
        .request(
            "in-1",
            serde_json::json!({"request_id": "e1", "direction": "entry", "code": "CODEa"}),
        )
        .await;
    assert_eq!(early.reason, Reason::ReservationNotYetValid);
    assert!(early.display.contains("Valid from"), "{}", early.display);

    g.clock.advance(Duration::minutes(45));
    let by_code = g
        .request(
            "in-1",
            serde_json::json!({"request_id": "e2", "direction": "entry", "code": "CODEa", "plate": "RES 1"}),
        )
        .await;
    assert_eq!(
        (by_code.action, by_code.reason),
        (Action::Open, Reason::Reservation)
    );
    assert_eq!(by_code.spot, Some(spot(4).to_string()));
    let r = g.store.reservation("a").await.unwrap().unwrap();
    assert_eq!(r.state, ReservationState::CheckedIn);
    // The same plate again: already inside.
    let again = g.entry("e3", "RES1", None).await;
    assert_eq!(again.reason, Reason::AlreadyInside);

    // Leaves 10 minutes after the reservation's end: measured.
    g.clock.set(t0() + Duration::minutes(130));
    let out = g.exit("x1", "RES-1").await;
    assert_eq!(out.reason, Reason::NothingDue);
    let session = g
        .store
        .parking_session(out.session.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.overstay_s, Some(600));
    assert_eq!(session.reservation_id.as_deref(), Some("a"));
    assert_eq!(
        g.store.reservation("a").await.unwrap().unwrap().state,
        ReservationState::Completed
    );

    // By plate alone, within the early window.
    g.reservation("b", 0, 150, 200).await;
    g.clock.set(t0() + Duration::minutes(125));
    let by_plate = g.entry("e4", "RES1", None).await;
    assert_eq!(by_plate.reason, Reason::Reservation);
    assert_eq!(by_plate.spot, Some(spot(0).to_string()));
    // The used code is no longer valid.
    let used = g
        .request(
            "in-1",
            serde_json::json!({"request_id": "e5", "direction": "entry", "code": "CODEa"}),
        )
        .await;
    assert_eq!(used.reason, Reason::ReservationNotValid);
}

async fn refusals_say_why(g: &Garage) {
    let deny = |c: &GateCommand, reason: Reason| {
        assert_eq!((c.action, c.reason), (Action::Deny, reason), "{c:?}");
    };
    // Nothing a motorcycle may use exists in this lot.
    deny(
        &g.entry("m", "MOTO1", Some("motorcycle")).await,
        Reason::NoFittingSpot,
    );
    // Garbage plates, no code.
    deny(&g.entry("p", "??", None).await, Reason::PlateUnreadable);
    let unsure = g
        .request(
            "in-1",
            serde_json::json!({"request_id": "c", "direction": "entry", "plate": "AB1", "plate_confidence": 0.3}),
        )
        .await;
    deny(&unsure, Reason::PlateUnreadable);
    // Unknown code; a gate that is not registered; a stale request.
    let code = g
        .request(
            "in-1",
            serde_json::json!({"request_id": "k", "direction": "entry", "code": "NOPE"}),
        )
        .await;
    deny(&code, Reason::UnknownCode);
    deny(
        &g.request(
            "in-9",
            serde_json::json!({"request_id": "u", "direction": "entry", "plate": "AB1"}),
        )
        .await,
        Reason::UnknownGate,
    );
    let old = (g.now() - Duration::minutes(5)).timestamp_millis();
    deny(
        &g.request(
            "in-1",
            serde_json::json!({"request_id": "s", "direction": "entry", "plate": "AB1", "ts": old}),
        )
        .await,
        Reason::StaleRequest,
    );
    // Malformed: answered to the id it carries, or to none.
    let bad = g
        .service
        .handle_request(
            &lot_id(),
            &GateId::parse("in-1").unwrap(),
            br#"{"request_id":"b1","direction":"sideways"}"#,
            g.now(),
        )
        .await;
    deny(&bad, Reason::BadRequest);
    assert_eq!(bad.request_id.as_deref(), Some("b1"));
    let garbage = g
        .service
        .handle_request(
            &lot_id(),
            &GateId::parse("in-1").unwrap(),
            b"\x00\x01",
            g.now(),
        )
        .await;
    deny(&garbage, Reason::BadRequest);
    assert_eq!(garbage.request_id, None);
    // Exit without a session.
    deny(&g.exit("x", "NOBODY1").await, Reason::NoSession);
    // Outside opening hours nobody comes in.
    let mut closed = model();
    closed.opening_hours = vec![parkd_core::garage::OpeningPeriod {
        day: (g.now() + Duration::days(1)).weekday(),
        open: chrono::NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
        close: chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
    }];
    g.engine.install_lot(closed, g.now());
    deny(&g.entry("h", "EARLY1", None).await, Reason::LotClosed);
    g.engine.install_lot(model(), g.now());
    for i in 0..5 {
        g.engine.apply(&lot_id(), &spot(i), false, g.now());
    }
    // Full for vans: the one large bay is taken.
    g.engine.apply(&lot_id(), &spot(4), true, g.now());
    deny(&g.entry("v", "VAN1", Some("van")).await, Reason::Full);
    // Cars take the two standard bays, then the large one is occupied: full for cars too,
    // though the accessible and EV bays are free (they are not a car's).
    assert_eq!(g.entry("c1", "CAR1", None).await.reason, Reason::WalkIn);
    assert_eq!(g.entry("c2", "CAR2", None).await.reason, Reason::WalkIn);
    deny(&g.entry("c3", "CAR3", None).await, Reason::Full);
    assert_eq!(
        g.entry("c4", "PERMIT1", Some("accessible")).await.reason,
        Reason::WalkIn
    );
    // Nothing half-written by the refusals: only the three admitted cars are inside.
    let open = g.store.open_parking_sessions(&lot_id()).await.unwrap();
    assert_eq!(open.len(), 3);
}

async fn a_repeated_request_gets_the_first_answer(g: &Garage) {
    let first = g.entry("same", "AB1", None).await;
    assert_eq!(first.reason, Reason::WalkIn);
    // The gate did not hear the answer and asks again, even after the car took the spot.
    g.clock.advance(Duration::seconds(5));
    let second = g.entry("same", "AB1", None).await;
    assert_eq!(second, first);
    // Only one session.
    assert_eq!(
        g.store
            .open_parking_sessions(&lot_id())
            .await
            .unwrap()
            .len(),
        1
    );
    // Duplicates at once: all get the first answer.
    let (x, y, z) = tokio::join!(
        g.entry("same", "AB1", None),
        g.entry("same", "AB1", None),
        g.entry("same", "AB1", None)
    );
    assert_eq!([x, y, z], [first.clone(), first.clone(), first]);
}

async fn answers_are_kept_for_the_retention_then_pruned(g: &Garage) {
    let stop = tokio_util::sync::CancellationToken::new();
    let first = g.entry("old", "AB1", None).await;
    g.clock.advance(Duration::hours(48));
    let second = g.entry("new", "AB2", None).await;
    // Both within the default 72 hours: kept, and a repeat still gets its answer.
    assert_eq!(g.service.prune_decisions(&stop).await.unwrap(), 0);
    g.clock.advance(Duration::hours(1));
    assert_eq!(g.entry("old", "AB1", None).await, first);
    // 73 hours after the first: only that one goes.
    g.clock.advance(Duration::hours(24));
    assert_eq!(g.service.prune_decisions(&stop).await.unwrap(), 1);
    let (lot, gate) = (lot_id(), GateId::parse("in-1").unwrap());
    assert_eq!(
        g.store.gate_decision(&lot, &gate, "old").await.unwrap(),
        None
    );
    assert!(
        g.store
            .gate_decision(&lot, &gate, "new")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(g.entry("new", "AB2", None).await, second);
    // A repeat of the pruned request is decided again: the car is inside already.
    let again = g.entry("old", "AB1", None).await;
    assert_eq!(
        (again.action, again.reason),
        (Action::Deny, Reason::AlreadyInside)
    );
}

async fn arrivals_confirm_or_reconcile_the_session(g: &Garage) {
    // A car parking while nobody entered: nothing to match (and later entries still match).
    g.engine.apply(&lot_id(), &spot(3), true, g.now());
    g.service
        .car_parked(&lot_id(), &spot(3), SpotState::Free, g.now())
        .await
        .unwrap();
    let a = g.entry("a", "CAR1", None).await;
    let b = g.entry("b", "CAR2", None).await;
    let spot_a: SpotId = SpotId::parse(a.spot.as_deref().unwrap()).unwrap();
    let spot_b: SpotId = SpotId::parse(b.spot.as_deref().unwrap()).unwrap();
    assert_ne!(spot_a, spot_b);
    assert_eq!(
        g.service.awaiting_arrival(&lot_id()).await.unwrap().len(),
        2
    );

    // The first car parks where it was sent.
    g.engine.apply(&lot_id(), &spot_a, true, g.now());
    g.service
        .car_parked(&lot_id(), &spot_a, SpotState::Held, g.now())
        .await
        .unwrap();
    let session_a = g
        .store
        .parking_session(a.session.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session_a.sensed_spot, Some(spot_a.clone()));
    assert_eq!(g.state_of(&spot_a), SpotState::Occupied);
    // When it leaves, the spot is free at once (its hold ended when the car was seen).
    g.engine.apply(&lot_id(), &spot_a, false, g.now());
    assert_eq!(g.state_of(&spot_a), SpotState::Free);
    g.engine.apply(&lot_id(), &spot_a, true, g.now());

    // The second parks in the large bay instead: reconciled, its assigned spot released.
    g.engine.apply(&lot_id(), &spot(4), true, g.now());
    g.service
        .car_parked(&lot_id(), &spot(4), SpotState::Free, g.now())
        .await
        .unwrap();
    let session_b = g
        .store
        .parking_session(b.session.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session_b.sensed_spot, Some(spot(4)));
    assert_eq!(g.state_of(&spot_b), SpotState::Free);
    assert!(
        g.service
            .awaiting_arrival(&lot_id())
            .await
            .unwrap()
            .is_empty()
    );
}

impl Garage {
    fn state_of(&self, spot: &SpotId) -> SpotState {
        self.engine.spot(&lot_id(), spot).unwrap().state
    }
}

async fn operators_open_by_hand_and_run_emergencies(g: &Garage) {
    let in_1 = GateId::parse("in-1").unwrap();
    // By hand: recorded, then sent to that gate only.
    let command = g
        .service
        .open_by_hand(&lot_id(), &in_1, "op-1", "ticket machine jammed")
        .await
        .unwrap();
    assert_eq!(
        (command.action, command.reason),
        (Action::Open, Reason::Manual)
    );
    let sent = g.sent.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "parking/v1/g1/gates/in-1/command");
    assert!(matches!(
        g.service
            .open_by_hand(&lot_id(), &GateId::parse("nope").unwrap(), "op-1", "x")
            .await,
        Err(OperatorError::UnknownGate { .. })
    ));

    // Emergency: every gate held open; requests are answered open; nobody is charged.
    let inside = g.entry("a", "CAR1", None).await;
    let emergency = g
        .service
        .start_emergency(&lot_id(), "op-1", "fire alarm level 1")
        .await
        .unwrap();
    assert_eq!(emergency.started_by, "op-1");
    let held: Vec<_> = g.sent.take();
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(
        held.iter()
            .all(|(_, c)| c.action == Action::HoldOpen && c.reason == Reason::Emergency)
    );
    let out = g.exit("x", "CAR1").await;
    assert_eq!((out.action, out.reason), (Action::Open, Reason::Emergency));
    assert_eq!(out.session, inside.session);
    let walk = g.entry("b", "CAR2", None).await;
    assert_eq!(walk.reason, Reason::Emergency);
    // Starting again changes nothing; a restarted service finds it on again.
    assert_eq!(
        g.service
            .start_emergency(&lot_id(), "op-2", "again")
            .await
            .unwrap(),
        emergency
    );
    let restarted = g.restarted();
    let restored = restarted.restore().await.unwrap();
    assert_eq!(restored, vec![(lot_id(), emergency.clone())]);

    // Over: recorded, every gate released, normal rules again.
    assert!(
        g.service
            .end_emergency(&lot_id(), "op-1", "all clear")
            .await
            .unwrap()
    );
    assert!(
        !g.service
            .end_emergency(&lot_id(), "op-1", "twice")
            .await
            .unwrap()
    );
    let released = g.sent.take();
    assert_eq!(released.len(), 2);
    assert!(released.iter().all(|(_, c)| c.action == Action::Release));
    assert_eq!(g.entry("c", "CAR3", None).await.reason, Reason::WalkIn);
    let audit = g.store.operator_actions(Some(&lot_id()), 10).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["emergency_end", "emergency_start", "gate_open"]);
    // After the end, a restarted service finds no emergency.
    assert!(g.restarted().restore().await.unwrap().is_empty());
}

/// Records a succeeded payment of `amount` for a stay, priced up to `to`, as the API does.
async fn paid(
    g: &Garage,
    id: &str,
    purpose: parkd_store::PaymentPurpose,
    (reservation, session): (Option<&str>, Option<&str>),
    amount: i64,
    to: DateTime<Utc>,
) {
    let quote = serde_json::json!({"currency": "EUR", "from": t0(), "to": to,
                                   "total": amount, "lines": []});
    let row = parkd_store::PaymentRow {
        id: id.into(),
        user_id: None,
        reservation_id: reservation.map(Into::into),
        session_id: session.map(Into::into),
        lot: lot_id(),
        purpose,
        amount_minor: amount,
        currency: parkd_core::tariff::Currency::parse("EUR").unwrap(),
        provider: "test".into(),
        provider_intent_id: Some(format!("pi_{id}")),
        status: parkd_store::PaymentStatus::Created,
        failure_reason: None,
        method: None,
        amount_refunded_minor: 0,
        quote_json: quote.to_string(),
        created_at: g.now(),
        updated_at: g.now(),
        requested_method: None,
    };
    g.store.create_payment(&row).await.unwrap();
    assert!(
        g.store
            .settle_payment(
                id,
                &[parkd_store::PaymentStatus::Created],
                &parkd_store::PaymentUpdate::default(),
                g.now(),
                "paid",
            )
            .await
            .unwrap()
    );
}

async fn the_exit_opens_once_the_stay_is_paid(g: &Garage) {
    // 2.50 an hour by the quarter hour, the first 15 minutes free.
    let tariff = r#"{"currency": "EUR", "unit_minutes": 15, "grace_minutes": 15,
                     "rates": {"base": {"per_hour": 250}}}"#;
    g.store.put_tariff(&lot_id(), tariff, t0()).await.unwrap();

    // Within the grace: nothing due.
    let entry = g.entry("p-in-1", "PAY 1", None).await;
    assert_eq!(entry.action, Action::Open);
    g.clock.advance(Duration::minutes(10));
    let free = g.exit("p-out-1", "PAY1").await;
    assert_eq!(free.reason, Reason::NothingDue);

    // Two hours: 8 quarter hours at 62.5 = 500 due; the barrier stays shut and says so.
    let entry = g.entry("p-in-2", "PAY 2", None).await;
    assert_eq!(entry.action, Action::Open);
    g.clock.advance(Duration::hours(2));
    let due = g.exit("p-out-2", "PAY2").await;
    assert_eq!(
        (due.action, due.reason),
        (Action::Deny, Reason::PaymentRequired)
    );
    assert_eq!(due.amount_due, Some(500));
    assert_eq!(due.currency.as_deref(), Some("EUR"));
    let session = due.session.clone().unwrap();

    // Paid in the app now; the car reaches the barrier 10 minutes later: it opens (the
    // exit grace), and the session closes.
    paid(
        g,
        "pay-s",
        parkd_store::PaymentPurpose::Exit,
        (None, Some(&session)),
        500,
        g.now(),
    )
    .await;
    g.clock.advance(Duration::minutes(10));
    let open = g.exit("p-out-3", "PAY2").await;
    assert_eq!((open.action, open.reason), (Action::Open, Reason::Paid));
    assert!(
        g.store
            .parking_session(&session)
            .await
            .unwrap()
            .unwrap()
            .exited_at
            .is_some()
    );

    // Paid, then lingered past the exit grace: the difference is due.
    let entry = g.entry("p-in-3", "PAY 3", None).await;
    assert_eq!(entry.action, Action::Open);
    g.clock.advance(Duration::hours(1));
    let due = g.exit("p-out-4", "PAY3").await;
    assert_eq!(due.amount_due, Some(250));
    let session = due.session.clone().unwrap();
    paid(
        g,
        "pay-t",
        parkd_store::PaymentPurpose::Exit,
        (None, Some(&session)),
        250,
        g.now(),
    )
    .await;
    g.clock.advance(Duration::minutes(40));
    let more = g.exit("p-out-5", "PAY3").await;
    assert_eq!(more.reason, Reason::PaymentRequired);
    // 1 h 40 min = 7 started quarter hours = 437.5, rounded half up to 438; 250 paid.
    assert_eq!(more.amount_due, Some(188));

    // A reservation paid in advance leaves free within its period; past it, the overstay is due.
    g.reservation("pre", 1, 300, 360).await;
    g.clock.set(t0() + Duration::minutes(295));
    let entry = g
        .request(
            "in-1",
            serde_json::json!({"request_id": "p-in-4", "direction": "entry", "code": "CODEpre", "plate": "RES 9"}),
        )
        .await;
    assert_eq!(entry.reason, Reason::Reservation);
    paid(
        g,
        "pay-r",
        parkd_store::PaymentPurpose::Reservation,
        (Some("pre"), None),
        250,
        g.now(),
    )
    .await;
    g.clock.set(t0() + Duration::minutes(350));
    let within = g.exit("p-out-6", "RES9").await;
    assert_eq!((within.action, within.reason), (Action::Open, Reason::Paid));
}
