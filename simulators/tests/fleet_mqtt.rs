//! Fleet mode against a real Mosquitto: topics, payloads, seq order, retained status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::NaiveTime;
use common::{Mosquitto, Subscriber};
use parkd_core::payload::{DeviceStatus, Heartbeat, SpotState};
use parkd_core::topic::{SPOT_FILTER, SpotChannel, Topic};
use parkd_sim::fleet::default_lot_ids;
use parkd_sim::{FleetConfig, Qos, run_fleet};
use tokio_util::sync::CancellationToken;

fn small_fleet(broker: &Mosquitto, lots: u32, spots: u32) -> FleetConfig {
    let mut config = FleetConfig::new(broker.endpoint(), lots, spots);
    config.speed = 3_600.0; // one simulated hour per real second
    config.start = NaiveTime::from_hms_opt(9, 0, 0); // peak just ended: cars leave
    config.tick = Duration::from_millis(50);
    config.heartbeat_every = Duration::from_millis(500);
    config.state_qos = Qos::AtLeastOnce;
    config.seq_base = Some(0);
    config.seed = 7;
    config
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_publishes_valid_ordered_messages_and_retained_status() {
    let broker = Mosquitto::start().await;
    let mut live = Subscriber::start(broker.port, "test-live", SPOT_FILTER).await;
    let started_ms = now_ms();

    let mut config = small_fleet(&broker, 2, 10);
    config.duration = Some(Duration::from_millis(2_500));
    let token = CancellationToken::new();
    let fleet = tokio::spawn(run_fleet(config, token.clone()));

    // While the fleet runs, a newcomer gets every sensor's retained online status.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut late = Subscriber::start(broker.port, "test-late", "parking/v1/+/spots/+/status").await;
    let retained = late
        .collect_until_quiet(Duration::from_millis(500), 20)
        .await;
    assert_eq!(retained.len(), 20, "{retained:?}");
    for message in &retained {
        assert!(message.retain, "{message:?}");
        let status = DeviceStatus::decode(&message.payload).unwrap();
        assert!(status.online, "{message:?}");
    }
    drop(late);

    let report = tokio::time::timeout(Duration::from_secs(10), fleet)
        .await
        .expect("the fleet stops by itself")
        .expect("no panic")
        .expect("the fleet ran");
    assert_eq!(report.sensors, 20);
    assert_eq!(report.connections, 20);
    assert!(!report.shared_connections);
    assert_eq!(report.connacks, 20);
    assert_eq!(report.connection_errors, 0);
    assert_eq!(report.aborted_connections, 0);
    assert_eq!(report.queue_full, 0);
    assert!(report.departures + report.arrivals > 0, "{report:?}");
    let ended_ms = now_ms();

    let messages = live
        .collect_until_quiet(Duration::from_millis(300), usize::MAX)
        .await;
    let lots: HashSet<String> = default_lot_ids(2).iter().map(|l| l.to_string()).collect();
    // Per device: the seq and payloads seen on each channel, in arrival order.
    let mut states: BTreeMap<String, Vec<SpotState>> = BTreeMap::new();
    let mut heartbeats: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut statuses: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    for message in &messages {
        let Topic::Spot { lot, spot, channel } = Topic::parse(&message.topic).unwrap() else {
            panic!("not a spot topic: {}", message.topic);
        };
        assert!(lots.contains(lot.as_str()), "{lot}");
        assert!(spot.as_str().starts_with("L1-"), "{spot}");
        let device = format!("{lot}-s-{spot}");
        match channel {
            SpotChannel::State => {
                let state = SpotState::decode(&message.payload).unwrap();
                let ts = state.ts.expect("ts");
                assert!(ts >= started_ms - 1_000 && ts <= ended_ms + 1_000, "{ts}");
                assert!(state.battery_mv.is_some() && state.rssi.is_some());
                states.entry(device).or_default().push(state);
            }
            SpotChannel::Heartbeat => {
                let heartbeat = Heartbeat::decode(&message.payload).unwrap();
                assert!(heartbeat.uptime_s.is_some() && heartbeat.fw.is_some());
                heartbeats
                    .entry(device)
                    .or_default()
                    .push(heartbeat.seq.expect("seq"));
            }
            SpotChannel::Status => {
                let status = DeviceStatus::decode(&message.payload).unwrap();
                statuses.entry(device).or_default().push(status.online);
            }
        }
    }
    assert_eq!(states.len(), 20, "every sensor announced its state");
    assert_eq!(
        states.values().map(Vec::len).sum::<usize>() as u64,
        report.state_messages,
        "QoS 1 state messages all arrive"
    );
    assert!(heartbeats.len() >= 18, "heartbeats from most sensors");
    for (device, seen) in &states {
        let seqs: Vec<u64> = seen.iter().map(|s| s.seq.expect("seq")).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{device}: {seqs:?}");
        // After the announcement, a state message is sent only on a change.
        for pair in seen[1..].windows(2) {
            assert_ne!(pair[0].occupied, pair[1].occupied, "{device}: {seen:?}");
        }
    }
    for (device, seqs) in &heartbeats {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{device}: {seqs:?}");
    }
    // Online when connecting, offline at the clean shutdown.
    for (device, seen) in &statuses {
        assert_eq!(seen.first(), Some(&true), "{device}");
        assert_eq!(seen.last(), Some(&false), "{device}");
    }
    assert_eq!(statuses.len(), 20);

    // What stays retained after the run: offline.
    let mut after =
        Subscriber::start(broker.port, "test-after", "parking/v1/+/spots/+/status").await;
    let retained = after
        .collect_until_quiet(Duration::from_millis(500), 20)
        .await;
    assert_eq!(retained.len(), 20);
    assert!(
        retained
            .iter()
            .all(|m| m.retain && !DeviceStatus::decode(&m.payload).unwrap().online)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_share_connections_above_the_cap_and_stop_on_the_token() {
    let broker = Mosquitto::start().await;
    let mut live =
        Subscriber::start(broker.port, "test-shared", "parking/v1/+/spots/+/status").await;
    let mut config = small_fleet(&broker, 1, 10);
    config.max_connections = 3;
    let token = CancellationToken::new();
    let fleet = tokio::spawn(run_fleet(config, token.clone()));
    let online = live.collect_until_quiet(Duration::from_secs(3), 10).await;
    assert_eq!(online.len(), 10);
    token.cancel();
    let report = tokio::time::timeout(Duration::from_secs(10), fleet)
        .await
        .expect("the token stops the fleet")
        .unwrap()
        .unwrap();
    assert_eq!(report.connections, 3);
    assert!(report.shared_connections);
    assert_eq!(report.connacks, 3);
    assert_eq!(report.aborted_connections, 0);
    let offline = live.collect_until_quiet(Duration::from_secs(2), 10).await;
    assert_eq!(offline.len(), 10);
    assert!(
        offline
            .iter()
            .all(|m| !DeviceStatus::decode(&m.payload).unwrap().online)
    );
}
