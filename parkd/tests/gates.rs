//! Barrier gates end to end, over real MQTT with clients nobody here wrote: a gate controller
//! (mosquitto_pub / mosquitto_sub, logged in with its own secret) asks to let cars in and out;
//! sensors report where they park; a driver reserves through the REST API. Each step checks
//! the command the gate received and what the store recorded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use parkd::app::{Mode, RunningApp, open_store};
use parkd::config::MqttMode;
use parkd_broker::auth::hash_secret;
use parkd_core::gate::{Action, GateCommand, Reason};
use parkd_core::ids::{DeviceId, GateId, LotId, SpotId};
use parkd_core::reservation::ReservationState;
use parkd_core::vehicle::SpotKind;
use parkd_store::{Device, DeviceBinding, Store};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

const SECRET: &str = "gate-secret-0123456789";

fn lot() -> LotId {
    LotId::parse("g1").unwrap()
}

/// Four standard spots `1`..`4`.
fn small_lot() -> parkd_core::garage::Lot {
    let mut model = parkd_core::garage::demo_garage(lot(), 1, 4);
    for (i, spot) in model.spots.iter_mut().enumerate() {
        spot.id = SpotId::parse(&(i + 1).to_string()).unwrap();
        spot.kind = SpotKind::Standard;
    }
    model
}

async fn register_gate(store: &dyn Store, gate: &str) {
    store
        .upsert_device(&Device {
            id: DeviceId::parse(gate).unwrap(),
            binding: DeviceBinding::Gate {
                lot: lot(),
                gate: GateId::parse(gate).unwrap(),
            },
            secret_sha256: Some(hash_secret(SECRET)),
            disabled: false,
            created_at: Utc::now(),
        })
        .await
        .unwrap();
}

async fn register_sensor(store: &dyn Store, spot: &str) {
    store
        .upsert_device(&Device {
            id: DeviceId::parse(&format!("g1-s-{spot}")).unwrap(),
            binding: DeviceBinding::Spot {
                lot: lot(),
                spot: SpotId::parse(spot).unwrap(),
            },
            secret_sha256: None,
            disabled: false,
            created_at: Utc::now(),
        })
        .await
        .unwrap();
}

async fn mosquitto_pub(port: u16, args: &[&str]) {
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv311"])
        .args(args)
        .status()
        .await
        .expect("mosquitto_pub is installed (Debian package mosquitto-clients)")
        .success();
    assert!(ok, "mosquitto_pub {args:?}");
}

/// A sensor reading, anonymous (the demo allows anonymous sensors).
async fn sensor(port: u16, spot: &str, occupied: bool) {
    let topic = format!("parking/v1/g1/spots/{spot}/state");
    let payload = format!(r#"{{"occupied":{occupied}}}"#);
    mosquitto_pub(port, &["-q", "1", "-t", &topic, "-m", &payload]).await;
}

/// The gate publishes `request` (logged in as itself, so the broker's ACL applies) and
/// returns the command published on its command topic.
async fn gate_asks(port: u16, gate: &str, request: &Value) -> GateCommand {
    let topic = format!("parking/v1/g1/gates/{gate}/request");
    let publish = async {
        mosquitto_pub(
            port,
            &[
                "-u",
                gate,
                "-P",
                SECRET,
                "-i",
                gate,
                "-q",
                "1",
                "-t",
                &topic,
                "-m",
                &request.to_string(),
            ],
        )
        .await;
    };
    let ((), mut commands) = commands_during(port, 1, publish).await;
    let (on, command) = commands.pop().expect("an answer");
    assert_eq!(on, format!("parking/v1/g1/gates/{gate}/command"));
    command
}

async fn free_spots(addr: SocketAddr) -> i64 {
    let (_, availability) =
        common::call(addr, "GET", "/api/v1/lots/g1/availability", None, None).await;
    availability["total"]["free"].as_i64().unwrap_or(-1)
}

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// The four-spot lot with two gates (`in-1`, `out-1`) and a sensor per spot, every spot
/// reported free, on the embedded broker.
async fn garage() -> (RunningApp, tempfile::TempDir) {
    let (app, dir, _) = garage_on(None).await;
    (app, dir)
}

/// The same garage; with `external` (a Mosquitto's port) parkd is a client of that broker.
/// Also returns the port devices publish to.
async fn garage_on(external: Option<u16>) -> (RunningApp, tempfile::TempDir, u16) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.live.debounce_ms = 0;
    config.live.model_reload_s = 1;
    config.reservations.sweep_every_s = 1;
    let mode = match external {
        Some(port) => {
            config.mqtt.mode = MqttMode::External;
            config.mqtt.external.url = format!("mqtt://127.0.0.1:{port}");
            config.mqtt.external.shared_group = Some("parkd".into());
            Mode::Serve
        }
        None => Mode::Demo,
    };
    let store = open_store(&config).await.unwrap();
    store.put_lot(&small_lot()).await.unwrap();
    for spot in ["1", "2", "3", "4"] {
        register_sensor(store.as_ref(), spot).await;
    }
    for gate in ["in-1", "out-1"] {
        register_gate(store.as_ref(), gate).await;
    }
    drop(store);
    let app = RunningApp::start(config, mode).await.unwrap();
    let port = external.unwrap_or_else(|| app.mqtt_addr().unwrap().port());
    let http = app.http_addr();
    // An external broker gets parkd's subscriptions once connected: report until they count.
    until("all four spots are free", || async {
        for spot in ["1", "2", "3", "4"] {
            sensor(port, spot, false).await;
        }
        free_spots(http).await == 4
    })
    .await;
    (app, dir, port)
}

/// Checks that `command` admitted the first walk-in of the garage at `in-1` (request
/// `request_id`, plate key `plate_key`): a stored session on the spot the command names, held
/// (three spots free). The session.
async fn admitted_walk_in(
    store: &dyn Store,
    http: SocketAddr,
    command: &GateCommand,
    request_id: &str,
    plate_key: &str,
) -> parkd_store::ParkingSession {
    assert_eq!(
        (command.action, command.reason),
        (Action::Open, Reason::WalkIn)
    );
    assert_eq!(command.request_id.as_deref(), Some(request_id));
    let session = store
        .parking_session(command.session.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.plate_key.as_deref(), Some(plate_key));
    assert_eq!(session.entry_gate, Some(GateId::parse("in-1").unwrap()));
    assert!(command.spot.is_some());
    assert_eq!(
        session.assigned_spot.as_ref().map(SpotId::as_str),
        command.spot.as_deref()
    );
    assert_eq!(free_spots(http).await, 3);
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cars_enter_and_leave_through_gates_over_mqtt() {
    let (app, _dir) = garage().await;
    let port = app.mqtt_addr().unwrap().port();
    let http = app.http_addr();
    let store = app.store();

    // 1. A walk-in: admitted with a spot, which is held for it.
    let walk_in = gate_asks(
        port,
        "in-1",
        &json!({"request_id": "w1", "direction": "entry", "plate": "WALK 1", "plate_confidence": 0.97}),
    )
    .await;
    let assigned = walk_in.spot.clone().unwrap_or_default();
    let session = admitted_walk_in(store.as_ref(), http, &walk_in, "w1", "WALK1").await;

    // 2. It parks elsewhere: the sensor of another spot reports it, and the session follows.
    let elsewhere = ["1", "2", "3", "4"]
        .into_iter()
        .find(|s| *s != assigned)
        .unwrap();
    sensor(port, elsewhere, true).await;
    let session_id = session.id.clone();
    let store_ = store.clone();
    until("the session learns where the car parked", || {
        let store = store_.clone();
        let session_id = session_id.clone();
        async move {
            store
                .parking_session(&session_id)
                .await
                .unwrap()
                .unwrap()
                .sensed_spot
                .is_some_and(|s| s.as_str() == elsewhere)
        }
    })
    .await;
    // Its assigned spot is free again for others: 4 - the one it took.
    until("the assigned spot is released", || async {
        free_spots(http).await == 3
    })
    .await;

    // 3. A driver reserves through the API; the gate admits the plate and checks it in.
    let (token, vehicle) = common::driver_with_vehicle(
        http,
        "ana@example.com",
        json!({"plate": "RES 42", "class": "car", "ev": false}),
    )
    .await;
    let at = common::minutes_from_now;
    let (status, reservation) = common::call(
        http,
        "POST",
        "/api/v1/reservations",
        Some(&token),
        Some(json!({"lot": "g1", "vehicle_id": vehicle, "starts_at": at(5), "ends_at": at(65)})),
    )
    .await;
    assert_eq!(status, 201, "{reservation}");
    let reserved = gate_asks(
        port,
        "in-1",
        &json!({"request_id": "r1", "direction": "entry", "plate": "RES-42"}),
    )
    .await;
    assert_eq!(
        (reserved.action, reserved.reason),
        (Action::Open, Reason::Reservation)
    );
    assert_eq!(reserved.spot.as_deref(), reservation["spot"].as_str());
    let id = reservation["id"].as_str().unwrap();
    assert_eq!(
        store.reservation(id).await.unwrap().unwrap().state,
        ReservationState::CheckedIn
    );

    // 4. Full: every remaining spot is taken; a walk-in is refused with the reason.
    for spot in ["1", "2", "3", "4"] {
        sensor(port, spot, true).await;
    }
    until("the lot is full", || async { free_spots(http).await == 0 }).await;
    let full = gate_asks(
        port,
        "in-1",
        &json!({"request_id": "w2", "direction": "entry", "plate": "LATE 7"}),
    )
    .await;
    assert_eq!((full.action, full.reason), (Action::Deny, Reason::Full));
    assert!(
        store
            .open_parking_session_of_plate(&lot(), "LATE7")
            .await
            .unwrap()
            .is_none()
    );

    // 5. A repeated request (the gate missed the answer) gets the same answer.
    let again = gate_asks(
        port,
        "in-1",
        &json!({"request_id": "w1", "direction": "entry", "plate": "WALK 1"}),
    )
    .await;
    assert_eq!(again, walk_in);

    // 6. Exit with nothing due: the barrier opens and the session closes.
    let out = gate_asks(
        port,
        "out-1",
        &json!({"request_id": "x1", "direction": "exit", "plate": "WALK1"}),
    )
    .await;
    assert_eq!((out.action, out.reason), (Action::Open, Reason::NothingDue));
    assert_eq!(out.session.as_deref(), Some(session.id.as_str()));
    let closed = store.parking_session(&session.id).await.unwrap().unwrap();
    assert!(closed.exited_at.is_some());
    assert_eq!(closed.exit_gate, Some(GateId::parse("out-1").unwrap()));
    let reserved_out = gate_asks(
        port,
        "out-1",
        &json!({"request_id": "x2", "direction": "exit", "plate": "RES 42"}),
    )
    .await;
    assert_eq!(reserved_out.reason, Reason::NothingDue);
    assert_eq!(
        store.reservation(id).await.unwrap().unwrap().state,
        ReservationState::Completed
    );

    // 7. Garbage is answered (to the id it carries) and counted; the gate never waits.
    let garbage = gate_asks(
        port,
        "in-1",
        &json!({"request_id": "g1", "direction": "upwards"}),
    )
    .await;
    assert_eq!(
        (garbage.action, garbage.reason),
        (Action::Deny, Reason::BadRequest)
    );
    let metrics = common::get_text(http, "/metrics").await;
    assert!(
        metrics.contains("parkd_gate_rejected_total{reason=\"wrong_type\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("parkd_gate"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    app.shutdown().await.unwrap();
}

/// Commands published on any gate of the lot while `during` runs. A gate has one connection
/// for both its requests and its commands; mosquitto's tools need two and a client id is one
/// connection, so the listening side is an anonymous observer (demo mode).
async fn commands_during<F: std::future::Future<Output = T>, T>(
    port: u16,
    count: usize,
    during: F,
) -> (T, Vec<(String, GateCommand)>) {
    let subscriber = command_subscriber(port, "+", count, 10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let result = during.await;
    (result, received_commands(subscriber).await)
}

/// mosquitto_sub on the command topic of `gate` (`+`: every gate of the lot), until `count`
/// commands came or `wait_s` passed.
fn command_subscriber(port: u16, gate: &str, count: usize, wait_s: u32) -> tokio::process::Child {
    Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            "mqttv311",
            "-v",
        ])
        .args(["-t", &format!("parking/v1/g1/gates/{gate}/command")])
        .args(["-C", &count.to_string(), "-W", &wait_s.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed")
}

/// What `subscriber` received: topic and command.
async fn received_commands(mut subscriber: tokio::process::Child) -> Vec<(String, GateCommand)> {
    let mut out = String::new();
    subscriber
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    let _ = subscriber.wait().await;
    out.lines()
        .map(|line| {
            let (topic, payload) = line.split_once(' ').unwrap();
            (
                topic.to_owned(),
                GateCommand::decode(payload.as_bytes()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_open_gates_by_hand_and_run_an_emergency() {
    use futures_util::StreamExt;
    let (app, _dir) = garage().await;
    let port = app.mqtt_addr().unwrap().port();
    let http = app.http_addr();
    let store = app.store();
    let (driver, _) = common::driver_with_vehicle(
        http,
        "dan@example.com",
        json!({"plate": "DR 1", "class": "car"}),
    )
    .await;
    common::driver_with_vehicle(
        http,
        "ola@example.com",
        json!({"plate": "OP 1", "class": "car"}),
    )
    .await;
    let ola = store
        .user_by_email(&parkd_core::account::Email::parse("ola@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    store
        .set_role(&ola.id, parkd_core::account::Role::Operator)
        .await
        .unwrap();
    // Promoted behind the server's back (as `parkd admin` does, from another process): a new
    // login sees the role at once; a token already in use would within auth.session_cache_s.
    let creds = json!({"email": "ola@example.com", "password": "violet tram under lantern"});
    let (status, login) = common::call(http, "POST", "/api/v1/auth/login", None, Some(creds)).await;
    assert_eq!(status, 200, "{login}");
    let operator = login["token"].as_str().unwrap().to_owned();

    // Drivers may not; a reason is required.
    let reason = json!({"reason": "ticket machine jammed"});
    let path = "/api/v1/lots/g1/gates/in-1/open";
    assert_eq!(
        common::call(http, "POST", path, Some(&driver), Some(reason.clone()))
            .await
            .0,
        403
    );
    assert_eq!(
        common::call(
            http,
            "POST",
            path,
            Some(&operator),
            Some(json!({"reason": ""}))
        )
        .await
        .0,
        422
    );
    // The gate's list, with its last contact once it spoke.
    gate_asks(
        port,
        "in-1",
        &json!({"request_id": "hello", "direction": "entry", "plate": "AB 12"}),
    )
    .await;
    let (status, list) =
        common::call(http, "GET", "/api/v1/lots/g1/gates", Some(&operator), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["gates"].as_array().unwrap().len(), 2);
    assert!(list["gates"][0]["last_contact"].is_string(), "{list}");
    assert!(list["emergency"].is_null());

    // By hand: the gate gets open / manual.
    let ((status, _), commands) = commands_during(
        port,
        1,
        common::call(http, "POST", path, Some(&operator), Some(reason)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(commands[0].0, "parking/v1/g1/gates/in-1/command");
    assert_eq!(
        (commands[0].1.action, commands[0].1.reason),
        (Action::Open, Reason::Manual)
    );

    // Emergency: a driver watching the live map is alerted, every barrier is held open.
    let url = format!("ws://{http}/api/v1/live?lot=g1");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let _snapshot = ws.next().await.unwrap().unwrap();
    let ((status, state), commands) = commands_during(
        port,
        2,
        common::call(
            http,
            "POST",
            "/api/v1/lots/g1/emergency",
            Some(&operator),
            Some(json!({"reason": "fire alarm, level 1"})),
        ),
    )
    .await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["active"], true);
    assert_eq!(commands.len(), 2);
    assert!(commands.iter().all(|(_, c)| c.action == Action::HoldOpen));
    let alert = next_alert(&mut ws).await;
    assert_eq!(
        (alert["alert"].as_str(), alert["active"].as_bool()),
        (Some("emergency"), Some(true))
    );
    // Someone opening the map now is alerted too.
    let (mut late, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert_eq!(next_alert(&mut late).await["active"], true);
    // Requests are answered open.
    let out = gate_asks(
        port,
        "out-1",
        &json!({"request_id": "e1", "direction": "exit", "plate": "ANY 1"}),
    )
    .await;
    assert_eq!((out.action, out.reason), (Action::Open, Reason::Emergency));

    // Over.
    let ((status, _), commands) = commands_during(
        port,
        2,
        common::call(
            http,
            "POST",
            "/api/v1/lots/g1/emergency/end",
            Some(&operator),
            Some(json!({"reason": "all clear from the fire service"})),
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert!(commands.iter().all(|(_, c)| c.action == Action::Release));
    assert_eq!(next_alert(&mut ws).await["active"], false);
    let (_, audit) = common::call(
        http,
        "GET",
        "/api/v1/lots/g1/operator-actions",
        Some(&operator),
        None,
    )
    .await;
    let actions: Vec<&str> = audit["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["emergency_end", "emergency_start", "gate_open"]);
    assert_eq!(audit["actions"][0]["user_id"], ola.id.as_str());
    app.shutdown().await.unwrap();
}

async fn next_alert(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an alert within 10 s")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == "alert" {
                return value;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_check_in_and_out_from_the_app() {
    let (app, _dir) = garage().await;
    let http = app.http_addr();
    let store = app.store();
    let (token, vehicle) = common::driver_with_vehicle(
        http,
        "eve@example.com",
        json!({"plate": "APP 7", "class": "car"}),
    )
    .await;
    // A reservation starting in 10 minutes: the app checks in on its code.
    let (status, reservation) = common::call(
        http,
        "POST",
        "/api/v1/reservations",
        Some(&token),
        Some(
            json!({"lot": "g1", "vehicle_id": vehicle, "starts_at": common::minutes_from_now(10),
                    "ends_at": common::minutes_from_now(70)}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{reservation}");
    let check_in = json!({"vehicle_id": vehicle, "code": reservation["code"]});
    let (status, parked) = common::call(
        http,
        "POST",
        "/api/v1/lots/g1/check-in",
        Some(&token),
        Some(check_in.clone()),
    )
    .await;
    assert_eq!(status, 201, "{parked}");
    assert_eq!(parked["reason"], "reservation");
    assert_eq!(parked["spot"], reservation["spot"]);
    let session = parked["session"].as_str().unwrap().to_owned();
    let stored = store.parking_session(&session).await.unwrap().unwrap();
    assert_eq!(stored.entry_gate, None);
    assert!(stored.user_id.is_some());
    // Twice: already inside.
    let (status, again) = common::call(
        http,
        "POST",
        "/api/v1/lots/g1/check-in",
        Some(&token),
        Some(json!({"vehicle_id": vehicle})),
    )
    .await;
    assert_eq!(status, 409, "{again}");
    assert!(
        again["detail"]
            .as_str()
            .unwrap()
            .starts_with("already_inside"),
        "{again}"
    );
    // Someone else's session is not visible; the driver's own checks out.
    let (other, other_vehicle) = common::driver_with_vehicle(
        http,
        "max@example.com",
        json!({"plate": "OTHER 1", "class": "car"}),
    )
    .await;
    let path = format!("/api/v1/parking/{session}/check-out");
    assert_eq!(
        common::call(http, "POST", &path, Some(&other), None)
            .await
            .0,
        404
    );
    let (status, out) = common::call(http, "POST", &path, Some(&token), None).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["reason"], "nothing_due");
    assert_eq!(
        store
            .reservation(reservation["id"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap()
            .state,
        ReservationState::Completed
    );
    assert_eq!(
        common::call(http, "POST", &path, Some(&token), None)
            .await
            .0,
        409
    );
    // A walk-in from the app gets a spot.
    let (status, walk) = common::call(
        http,
        "POST",
        "/api/v1/lots/g1/check-in",
        Some(&other),
        Some(json!({"vehicle_id": other_vehicle})),
    )
    .await;
    assert_eq!(status, 201, "{walk}");
    assert_eq!(walk["reason"], "walk_in");
    app.shutdown().await.unwrap();
}

/// A request with a plate read with confidence.
fn plate_read(request_id: &str, direction: &str, plate: &str) -> Value {
    json!({"request_id": request_id, "direction": direction, "plate": plate, "plate_confidence": 0.97})
}

/// The gate publishes `request` every 300 ms, as a real gate repeats an unanswered request,
/// until the first command arrives (within 20 s); that command.
async fn gate_insists(port: u16, gate: &str, request: &Value) -> GateCommand {
    let mut subscriber = command_subscriber(port, gate, 1, 20);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let topic = format!("parking/v1/g1/gates/{gate}/request");
    while subscriber.try_wait().unwrap().is_none() {
        mosquitto_pub(port, &["-q", "1", "-t", &topic, "-m", &request.to_string()]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, command) = received_commands(subscriber)
        .await
        .pop()
        .expect("a command within 20 s");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_broker_mode_answers_gates_through_a_real_mosquitto() {
    let (mosquitto, port) = common::start_mosquitto().await;
    let (app, _dir, _) = garage_on(Some(port)).await;
    let store = app.store();
    let http = app.http_addr();

    // A walk-in through Mosquitto: admitted with a spot, its session stored.
    let entry = plate_read("x1", "entry", "EXT 1");
    let walk_in = gate_asks(port, "in-1", &entry).await;
    let session = admitted_walk_in(store.as_ref(), http, &walk_in, "x1", "EXT1").await;

    // The gate missed the answer and repeats the request: the same answer, no second car.
    let again = gate_asks(port, "in-1", &entry).await;
    assert_eq!(
        (again.action, again.session),
        (Action::Open, walk_in.session.clone())
    );
    assert_eq!(store.open_parking_sessions(&lot()).await.unwrap().len(), 1);

    // A plate already inside is denied.
    let twice = gate_asks(port, "in-1", &plate_read("x2", "entry", "EXT-1")).await;
    assert_eq!(
        (twice.action, twice.reason),
        (Action::Deny, Reason::AlreadyInside)
    );

    // The broker restarts on the same port: parkd reconnects and subscribes again, and the
    // exit gate's repeated request is answered; the lot has no tariff, so nothing is due.
    drop(mosquitto);
    let _mosquitto = common::start_mosquitto_on(port).await;
    let exit = gate_insists(port, "out-1", &plate_read("x3", "exit", "EXT 1")).await;
    assert_eq!(
        (exit.action, exit.reason),
        (Action::Open, Reason::NothingDue)
    );
    assert_eq!(exit.session, walk_in.session);
    let closed = store.parking_session(&session.id).await.unwrap().unwrap();
    assert_eq!(closed.exit_gate, Some(GateId::parse("out-1").unwrap()));
    assert!(closed.exited_at.is_some());

    let metrics = common::get_text(http, "/metrics").await;
    assert!(
        metrics.contains(r#"parkd_gate_dropped_total{stage="command"} 0"#),
        "{metrics}"
    );
    let started = std::time::Instant::now();
    app.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
}
