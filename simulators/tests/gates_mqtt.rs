//! Gate mode against a real Mosquitto and a stand-in platform written here: requests and
//! their repeats, commands, where cars park, and the sensors reporting them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveTime;
use common::Mosquitto;
use parkd_core::gate::{Action, Direction, GateCommand, GateRequest, Reason};
use parkd_core::ids::LotId;
use parkd_core::payload::SpotState;
use parkd_core::topic::{GateChannel, SpotChannel, Topic};
use parkd_core::vehicle::VehicleType;
use parkd_sim::{FleetConfig, GateSimConfig, run_garage};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

const SPOTS: u32 = 12;

/// What the stand-in platform saw.
#[derive(Debug, Default)]
struct Seen {
    /// Every request payload by (gate, request id), in arrival order.
    requests: HashMap<(String, String), Vec<Vec<u8>>>,
    /// Directions asked per gate.
    directions: HashMap<String, HashSet<&'static str>>,
    /// Ids whose first attempt was left unanswered on purpose.
    dropped: HashSet<String>,
    /// Spots the platform assigned.
    assigned: Vec<String>,
    /// Spots the sensors reported occupied (in order).
    parked: Vec<String>,
    /// Entry answers by reason.
    entries: HashMap<&'static str, u64>,
    /// Exit answers by reason.
    exits: HashMap<&'static str, u64>,
}

/// A platform in miniature: walk-ins get a spot that is neither reported occupied nor
/// assigned in the last second, vans are refused (`no_fitting_spot`), a plate inside is
/// refused (`already_inside`), exits open for plates inside (`no_session` otherwise). The
/// first attempt of every fourth request is not answered, to make the gate ask again.
async fn platform(port: u16, seen: Arc<Mutex<Seen>>, stop: CancellationToken) {
    let mut options = MqttOptions::new("platform", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_request_channel_capacity(10_000);
    let (client, mut eventloop) = AsyncClient::new(options, 10_000);
    client
        .subscribe("parking/v1/+/gates/+/request", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .subscribe("parking/v1/+/spots/+/state", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut occupied: HashSet<String> = HashSet::new();
    let mut assigned_at: HashMap<String, Instant> = HashMap::new();
    let mut inside: HashMap<String, String> = HashMap::new();
    let mut distinct = 0u64;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = eventloop.poll() => event,
        };
        let publish = match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => publish,
            Ok(_) => continue,
            Err(error) => {
                eprintln!("platform: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(topic) = Topic::parse(&publish.topic) else {
            continue;
        };
        match topic {
            Topic::Spot {
                spot,
                channel: SpotChannel::State,
                ..
            } => {
                let state = SpotState::decode(&publish.payload).unwrap();
                let mut seen = seen.lock().unwrap();
                if state.occupied && occupied.insert(spot.to_string()) {
                    seen.parked.push(spot.to_string());
                } else if !state.occupied {
                    occupied.remove(spot.as_str());
                }
            }
            Topic::Gate {
                lot,
                gate,
                channel: GateChannel::Request,
            } => {
                let request = GateRequest::decode(&publish.payload).unwrap();
                let key = (gate.to_string(), request.request_id.clone());
                let mut seen = seen.lock().unwrap();
                seen.directions
                    .entry(gate.to_string())
                    .or_default()
                    .insert(request.direction.as_str());
                let attempts = seen.requests.entry(key).or_default();
                attempts.push(publish.payload.to_vec());
                if attempts.len() == 1 {
                    distinct += 1;
                    if distinct.is_multiple_of(4) {
                        seen.dropped.insert(request.request_id.clone());
                        continue;
                    }
                }
                let now = chrono::Utc::now();
                let id = Some(request.request_id.clone());
                let plate = request.plate.clone().unwrap();
                let command = match request.direction {
                    Direction::Entry if request.vehicle == Some(VehicleType::Van) => {
                        GateCommand::deny(id, Reason::NoFittingSpot, now)
                    }
                    Direction::Entry if inside.contains_key(&plate) => {
                        GateCommand::deny(id, Reason::AlreadyInside, now)
                    }
                    Direction::Entry => {
                        let free = (1..=SPOTS).map(|n| format!("L1-{n:03}")).find(|spot| {
                            !occupied.contains(spot)
                                && assigned_at
                                    .get(spot)
                                    .is_none_or(|at| at.elapsed() > Duration::from_secs(1))
                        });
                        match free {
                            Some(spot) => {
                                assigned_at.insert(spot.clone(), Instant::now());
                                inside.insert(plate, spot.clone());
                                seen.assigned.push(spot.clone());
                                let mut command =
                                    GateCommand::new(id, Action::Open, Reason::WalkIn, now);
                                command.spot = Some(spot);
                                command
                            }
                            None => GateCommand::deny(id, Reason::Full, now),
                        }
                    }
                    Direction::Exit => match inside.remove(&plate) {
                        Some(_) => GateCommand::new(id, Action::Open, Reason::NothingDue, now),
                        None => GateCommand::deny(id, Reason::NoSession, now),
                    },
                };
                let answers = match request.direction {
                    Direction::Entry => &mut seen.entries,
                    Direction::Exit => &mut seen.exits,
                };
                *answers.entry(command.reason.as_str()).or_default() += 1;
                let topic = Topic::Gate {
                    lot,
                    gate,
                    channel: GateChannel::Command,
                };
                client
                    .try_publish(topic.to_string(), QoS::AtMostOnce, false, command.encode())
                    .unwrap();
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cars_ask_at_the_gates_repeat_unanswered_requests_and_park_where_told() {
    let broker = Mosquitto::start().await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = CancellationToken::new();
    let platform = tokio::spawn(platform(broker.port, seen.clone(), stop.clone()));
    // Let the stand-in subscribe before the first car.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let lot = LotId::parse("lot-1").unwrap();
    let mut fleet = FleetConfig::new(broker.endpoint(), 1, SPOTS);
    fleet.heartbeat_every = Duration::from_secs(1);
    fleet.tick = Duration::from_millis(50);
    let mut gates = GateSimConfig::new(broker.endpoint(), lot, SPOTS);
    gates.speed = 3_600.0;
    gates.start = NaiveTime::from_hms_opt(8, 0, 0); // the morning peak: the lot fills
    gates.tick = Duration::from_millis(50);
    gates.demand.mean_stay_s = 3_600.0; // stays of about an hour: a real second
    gates.request_timeout = Duration::from_millis(500);
    gates.elsewhere_share = 0.25;
    gates.vehicles = vec![(VehicleType::Car, 0.7), (VehicleType::Van, 0.3)];
    gates.duration = Some(Duration::from_secs(4));
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        run_garage(fleet, gates, CancellationToken::new()),
    )
    .await
    .expect("the garage stops by itself")
    .expect("the garage ran");
    // Late sensor messages.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    platform.await.unwrap();
    let seen = seen.lock().unwrap();
    let gates = &report.gates;
    eprintln!("{gates:#?}");

    // Every gate asked in its own direction only.
    assert_eq!(gates.gates, 4);
    for (gate, direction) in [
        ("in-1", "entry"),
        ("in-2", "entry"),
        ("out-1", "exit"),
        ("out-2", "exit"),
    ] {
        if let Some(directions) = seen.directions.get(gate) {
            assert_eq!(directions, &HashSet::from([direction]), "{gate}");
        }
    }
    assert!(seen.directions.contains_key("in-1") && seen.directions.contains_key("out-1"));

    // Unanswered requests were repeated, byte for byte (same id, same `ts`): all of them but
    // those still waiting for their timeout when the run ended, one per gate at most.
    assert!(!seen.dropped.is_empty());
    let mut repeats = 0;
    let mut dropped_not_repeated = 0;
    for ((gate, id), attempts) in &seen.requests {
        assert!(attempts.iter().all(|a| a == &attempts[0]), "{gate} {id}");
        repeats += attempts.len() as u64 - 1;
        if seen.dropped.contains(id) && attempts.len() < 2 {
            dropped_not_repeated += 1;
        }
    }
    assert!(dropped_not_repeated <= 4, "{dropped_not_repeated}");
    assert!(repeats > 0);
    assert_eq!(gates.retries, repeats);
    assert!(gates.timeouts >= gates.retries && gates.timeouts <= gates.retries + 4);
    assert_eq!(gates.unanswered, 0);
    assert_eq!(gates.bad_commands, 0);
    assert_eq!(gates.requests, seen.requests.len() as u64);

    // The answers the cars got are the ones the platform gave.
    let count = |answers: &HashMap<&str, u64>, reason: &str| answers.get(reason).copied();
    assert!(
        gates.admitted.get("walk_in").copied().unwrap_or(0) > 0,
        "{gates:?}"
    );
    assert!(gates.denied.get("no_fitting_spot").copied().unwrap_or(0) > 0);
    assert!(gates.exits.get("nothing_due").copied().unwrap_or(0) > 0);
    for (reason, got) in &gates.admitted {
        assert!(
            count(&seen.entries, reason).is_some_and(|n| n >= *got),
            "{reason}"
        );
    }
    for (reason, got) in gates.denied.iter().chain(&gates.exit_denied) {
        let given =
            count(&seen.entries, reason).unwrap_or(0) + count(&seen.exits, reason).unwrap_or(0);
        assert!(given >= *got, "{reason}");
    }
    assert_eq!(gates.vehicles.len(), 2);
    assert_eq!(
        gates.vehicles.values().sum::<u64>(),
        gates.arrivals,
        "{gates:?}"
    );

    // Cars parked: each one reported by its spot's sensor, some elsewhere than assigned.
    assert!(gates.parked > 0);
    assert!(gates.parked_elsewhere > 0);
    assert_eq!(report.fleet.arrivals, gates.parked, "{:?}", report.fleet);
    assert!(report.fleet.driven);
    assert_eq!(report.fleet.unknown_spots, 0);
    assert_eq!(seen.parked.len() as u64, gates.parked, "{:?}", seen.parked);
    let assigned: HashSet<&String> = seen.assigned.iter().collect();
    assert!(seen.parked.iter().any(|spot| assigned.contains(spot)));
    assert!(report.fleet.departures <= report.fleet.arrivals);
    assert!(report.fleet.departures > 0);

    // A clean stop.
    assert_eq!(gates.connection_errors, 0);
    assert_eq!(gates.aborted_connections, 0);
    assert_eq!(report.fleet.aborted_connections, 0);
    assert_eq!(report.fleet.queue_full, 0);
}
