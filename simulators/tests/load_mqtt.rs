//! Load mode against a real Mosquitto: exact counts, unique seq per spot, send timestamps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Mosquitto, Subscriber};
use parkd_core::payload::SpotState;
use parkd_core::topic::Topic;
use parkd_sim::{LoadConfig, Qos, run_load};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_load_sends_exactly_what_it_reports() {
    let broker = Mosquitto::start().await;
    let mut sub =
        Subscriber::start(broker.port, "test-load", "parking/v1/load/spots/+/state").await;
    let mut config = LoadConfig::new(broker.endpoint(), 3);
    config.spots_per_connection = 7;
    config.qos = Qos::AtLeastOnce;
    config.count = Some(2_000);
    config.rate = Some(4_000.0);
    config.seq_base = Some(1_000);
    let before_ms = chrono::Utc::now().timestamp_millis();
    let report = run_load(config, CancellationToken::new()).await.unwrap();
    let after_ms = chrono::Utc::now().timestamp_millis();

    assert_eq!(report.queued, 2_000);
    assert_eq!(report.sent, 2_000);
    assert_eq!(report.acked, 2_000);
    assert_eq!(report.unsent, 0);
    assert_eq!(report.connection_errors + report.publish_errors, 0);
    assert!(!report.drain_timed_out);
    let per: Vec<u64> = report.per_connection.iter().map(|c| c.sent).collect();
    assert_eq!(per, [667, 667, 666]);
    // Paced: 2,000 messages at 4,000/s take about half a second.
    assert!(report.elapsed_s > 0.4, "{report:?}");
    assert!(report.achieved_rate < 5_000.0, "{report:?}");

    let received = sub
        .collect_until_quiet(Duration::from_millis(500), usize::MAX)
        .await;
    assert_eq!(received.len() as u64, report.sent);
    let mut by_spot: HashMap<String, Vec<u64>> = HashMap::new();
    for message in &received {
        let Topic::Spot { spot, .. } = Topic::parse(&message.topic).unwrap() else {
            panic!("{}", message.topic);
        };
        let state = SpotState::decode(&message.payload).unwrap();
        let ts = state.ts.unwrap();
        assert!(ts >= before_ms && ts <= after_ms, "{ts}");
        by_spot
            .entry(spot.to_string())
            .or_default()
            .push(state.seq.unwrap());
    }
    assert_eq!(by_spot.len(), 21);
    for (spot, mut seqs) in by_spot {
        let n = seqs.len();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), n, "{spot}: a seq was repeated");
        assert_eq!(seqs[0], 1_000, "{spot}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_qos0_load_counts_exactly_and_honours_the_duration() {
    let broker = Mosquitto::start().await;
    let mut config = LoadConfig::new(broker.endpoint(), 2);
    config.qos = Qos::AtMostOnce;
    config.count = Some(20_000);
    let report = run_load(config, CancellationToken::new()).await.unwrap();
    assert_eq!(report.queued, 20_000);
    assert_eq!(report.sent, 20_000);
    assert_eq!(report.acked, 0);
    assert_eq!(
        report.per_connection.iter().map(|c| c.sent).sum::<u64>(),
        20_000
    );

    let mut config = LoadConfig::new(broker.endpoint(), 2);
    config.duration = Some(Duration::from_millis(500));
    config.rate = Some(2_000.0);
    let report = run_load(config, CancellationToken::new()).await.unwrap();
    assert!(report.elapsed_s < 1.5, "{report:?}");
    assert_eq!(report.sent, report.queued);
    assert!((700..=1_300).contains(&report.sent), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_a_connect_error() {
    let broker = Mosquitto::start().await;
    let endpoint = broker.endpoint();
    drop(broker);
    let mut config = LoadConfig::new(endpoint, 1);
    config.count = Some(1);
    config.connect_timeout = Duration::from_millis(500);
    let error = run_load(config, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(error, parkd_sim::SimError::Connect { connected: 0, .. }),
        "{error}"
    );
}
