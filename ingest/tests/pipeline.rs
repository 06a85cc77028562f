//! The ingest pipeline end to end: real MQTT clients → embedded broker → ingest → store, on
//! SQLite and on PostgreSQL. Every message published must be accounted for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parkd_broker::InboundMessage;
use parkd_broker::auth::{CredentialSource, DeviceCredential};
use parkd_broker::embedded::{EmbeddedBroker, EmbeddedSettings};
use parkd_broker::metrics::BrokerMetrics;
use parkd_core::clock::SystemClock;
use parkd_core::ids::{DeviceId, LotId, SpotId};
use parkd_core::topic::SPOT_FILTER;
use parkd_ingest::{DeviceIndex, Ingest, IngestMetrics, IngestSettings};
use parkd_store::{
    Device, DeviceBinding, DeviceStatusRow, DeviceStore, SpotLatest, SpotReading, Store,
    StoreError, StoreResult, TelemetryBatch, TelemetryStore,
};
use prometheus::Registry;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct NoLogins;

#[async_trait]
impl CredentialSource for NoLogins {
    async fn credential(&self, _: &DeviceId) -> Result<Option<DeviceCredential>, String> {
        Ok(None)
    }
}

async fn register(store: &dyn Store, lot: &str, spot: &str, disabled: bool) {
    store
        .upsert_device(&Device {
            id: DeviceId::parse(&format!("{lot}-{spot}")).unwrap(),
            binding: DeviceBinding::Spot {
                lot: LotId::parse(lot).unwrap(),
                spot: SpotId::parse(spot).unwrap(),
            },
            secret_sha256: None,
            disabled,
            created_at: Utc::now(),
        })
        .await
        .unwrap();
}

struct Pipeline {
    ingest: Ingest,
    metrics: IngestMetrics,
    shutdown: CancellationToken,
}

async fn pipeline(store: Arc<dyn Store>, settings: IngestSettings) -> Pipeline {
    let metrics = IngestMetrics::new(&Registry::new()).unwrap();
    let index = Arc::new(DeviceIndex::load(store.as_ref()).await.unwrap());
    let shutdown = CancellationToken::new();
    let ingest = Ingest::start(
        settings,
        store,
        index,
        metrics.clone(),
        Arc::new(SystemClock),
        shutdown.clone(),
    )
    .unwrap();
    Pipeline {
        ingest,
        metrics,
        shutdown,
    }
}

/// Publishes a mix of good and bad messages over MQTT and checks that every one is accounted
/// for and exactly the good ones are stored.
async fn mixed_traffic_is_fully_accounted(store: Arc<dyn Store>, writers: usize) {
    register(store.as_ref(), "g1", "1", false).await;
    register(store.as_ref(), "g1", "2", false).await;
    register(store.as_ref(), "g1", "3", true).await;
    let settings = IngestSettings {
        writers,
        ..IngestSettings::default()
    };
    let p = pipeline(store.clone(), settings).await;

    let broker_metrics = BrokerMetrics::new(&Registry::new()).unwrap();
    let broker = EmbeddedBroker::start(
        EmbeddedSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            allow_anonymous: true,
            ..EmbeddedSettings::default()
        },
        Arc::new(NoLogins),
        broker_metrics,
    )
    .await
    .unwrap();
    let link_stop = CancellationToken::new();
    let link = broker
        .subscribe(
            "ingest",
            &[SPOT_FILTER],
            p.ingest.sink(),
            Arc::new(SystemClock),
            link_stop.clone(),
        )
        .await
        .unwrap();

    let mut options = MqttOptions::new("tester", "127.0.0.1", broker.local_addr().port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });

    let now_ms = Utc::now().timestamp_millis();
    let messages: Vec<(&str, String)> = vec![
        // 4 good readings on spot 1, one of them a duplicate seq.
        (
            "parking/v1/g1/spots/1/state",
            format!(r#"{{"occupied":true,"seq":1,"ts":{now_ms}}}"#),
        ),
        (
            "parking/v1/g1/spots/1/state",
            r#"{"occupied":false,"seq":2}"#.into(),
        ),
        (
            "parking/v1/g1/spots/1/state",
            r#"{"occupied":false,"seq":2}"#.into(),
        ),
        (
            "parking/v1/g1/spots/1/state",
            r#"{"occupied":true,"seq":3,"battery_mv":3300,"rssi":-80}"#.into(),
        ),
        (
            "parking/v1/g1/spots/1/heartbeat",
            r#"{"seq":4,"uptime_s":100,"fw":"1.2.3"}"#.into(),
        ),
        ("parking/v1/g1/spots/1/status", r#"{"online":true}"#.into()),
        // Bad ones, each of a different kind.
        ("parking/v1/g1/spots/2/state", "not json".into()),
        (
            "parking/v1/g1/spots/2/state",
            r#"{"occupied":"yes"}"#.into(),
        ),
        (
            "parking/v1/g1/spots/2/state",
            r#"{"occupied":true,"rssi":900}"#.into(),
        ),
        (
            "parking/v1/g1/spots/2/state",
            format!(r#"{{"occupied":true,"pad":"{}"}}"#, "x".repeat(2000)),
        ),
        (
            "parking/v1/g1/spots/99/state",
            r#"{"occupied":true}"#.into(),
        ),
        ("parking/v1/g1/spots/3/state", r#"{"occupied":true}"#.into()),
        // And the same device still gets through after its bad messages.
        ("parking/v1/g1/spots/2/state", r#"{"occupied":true}"#.into()),
    ];
    for (topic, payload) in &messages {
        client
            .publish(*topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    let published = messages.len() as u64;
    for _ in 0..300 {
        if p.metrics.accounted() >= published {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.metrics.accounted(), published);
    let m = &p.metrics;
    assert_eq!(
        m.rows_written.with_label_values(&["spot_readings"]).get(),
        4
    );
    assert_eq!(
        m.rows_written
            .with_label_values(&["device_heartbeats"])
            .get(),
        1
    );
    assert_eq!(
        m.rows_written
            .with_label_values(&["device_status_changes"])
            .get(),
        1
    );
    assert_eq!(m.duplicates.with_label_values(&["duplicate"]).get(), 1);
    for reason in [
        "malformed",
        "wrong_type",
        "out_of_range",
        "oversized",
        "unknown_device",
        "disabled_device",
    ] {
        assert_eq!(m.rejected.with_label_values(&[reason]).get(), 1, "{reason}");
    }
    assert_eq!(m.lost.with_label_values(&["queue_full"]).get(), 0);
    assert_eq!(store.count_readings().await.unwrap(), 4);
    let spot1 = store
        .spot_readings(
            &LotId::parse("g1").unwrap(),
            &SpotId::parse("1").unwrap(),
            10,
        )
        .await
        .unwrap();
    assert_eq!(spot1.len(), 3);
    assert_eq!(spot1.iter().filter_map(|r| r.seq).max(), Some(3));
    let latest = store.latest_spot_states().await.unwrap();
    assert_eq!(latest.len(), 2);
    assert_eq!(m.publish_to_commit_seconds.get_sample_count(), 1);

    // Ordered shutdown: stop the broker's delivery, then drain ingest.
    client.disconnect().await.ok();
    poller.abort();
    link_stop.cancel();
    link.join().unwrap();
    p.shutdown.cancel();
    p.ingest.join().await;
    broker.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_mixed_traffic_is_fully_accounted() {
    let (store, _dir) = parkd_store::testing::sqlite_store().await;
    mixed_traffic_is_fully_accounted(Arc::new(store), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_mixed_traffic_is_fully_accounted() {
    let store = parkd_store::testing::postgres_store().await;
    // Two writers, as parkd runs on PostgreSQL.
    mixed_traffic_is_fully_accounted(Arc::new(store), 2).await;
}

/// A store whose first writes fail: the pipeline retries and nothing is lost.
#[derive(Debug)]
struct Flaky<S> {
    inner: S,
    failures_left: AtomicU32,
}

#[async_trait]
impl<S: Store> DeviceStore for Flaky<S> {
    async fn upsert_device(&self, device: &Device) -> StoreResult<()> {
        self.inner.upsert_device(device).await
    }
    async fn device(&self, id: &DeviceId) -> StoreResult<Option<Device>> {
        self.inner.device(id).await
    }
    async fn devices(&self) -> StoreResult<Vec<Device>> {
        self.inner.devices().await
    }
    async fn set_device_disabled(&self, id: &DeviceId, disabled: bool) -> StoreResult<bool> {
        self.inner.set_device_disabled(id, disabled).await
    }
    async fn delete_device(&self, id: &DeviceId) -> StoreResult<bool> {
        self.inner.delete_device(id).await
    }
}

#[async_trait]
impl<S: Store> TelemetryStore for Flaky<S> {
    async fn write_batch(&self, batch: &TelemetryBatch) -> StoreResult<()> {
        let left = self.failures_left.load(Ordering::SeqCst);
        if left > 0 {
            self.failures_left.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::Unavailable("injected failure".into()));
        }
        self.inner.write_batch(batch).await
    }
    async fn latest_spot_states(&self) -> StoreResult<Vec<SpotLatest>> {
        self.inner.latest_spot_states().await
    }
    async fn device_statuses(&self) -> StoreResult<Vec<DeviceStatusRow>> {
        self.inner.device_statuses().await
    }
    async fn spot_readings(
        &self,
        lot: &LotId,
        spot: &SpotId,
        limit: u32,
    ) -> StoreResult<Vec<SpotReading>> {
        self.inner.spot_readings(lot, spot, limit).await
    }
    async fn count_readings(&self) -> StoreResult<u64> {
        self.inner.count_readings().await
    }
    async fn enforce_retention(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.inner.enforce_retention(before).await
    }
}

#[async_trait]
impl<S: Store> parkd_store::GarageStore for Flaky<S> {
    async fn put_lot(&self, lot: &parkd_core::garage::Lot) -> StoreResult<i64> {
        self.inner.put_lot(lot).await
    }
    async fn lot(&self, id: &LotId) -> StoreResult<Option<parkd_core::garage::Lot>> {
        self.inner.lot(id).await
    }
    async fn lots(&self) -> StoreResult<Vec<parkd_core::garage::Lot>> {
        self.inner.lots().await
    }
    async fn lot_versions(&self) -> StoreResult<Vec<(LotId, i64)>> {
        self.inner.lot_versions().await
    }
    async fn delete_lot(&self, id: &LotId) -> StoreResult<bool> {
        self.inner.delete_lot(id).await
    }
}

#[async_trait]
impl<S: Store> parkd_store::AccountStore for Flaky<S> {
    async fn create_user(&self, user: &parkd_store::User) -> StoreResult<()> {
        self.inner.create_user(user).await
    }
    async fn user(&self, id: &str) -> StoreResult<Option<parkd_store::User>> {
        self.inner.user(id).await
    }
    async fn user_by_email(
        &self,
        email: &parkd_core::account::Email,
    ) -> StoreResult<Option<parkd_store::User>> {
        self.inner.user_by_email(email).await
    }
    async fn users(&self) -> StoreResult<Vec<parkd_store::User>> {
        self.inner.users().await
    }
    async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        at: DateTime<Utc>,
        keep: Option<&str>,
    ) -> StoreResult<u64> {
        self.inner
            .set_password(user_id, password_hash, at, keep)
            .await
    }
    async fn set_user_disabled(
        &self,
        user_id: &str,
        disabled: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.inner.set_user_disabled(user_id, disabled, at).await
    }
    async fn set_role(&self, user_id: &str, role: parkd_core::account::Role) -> StoreResult<bool> {
        self.inner.set_role(user_id, role).await
    }
    async fn create_session(&self, session: &parkd_store::SessionRow) -> StoreResult<()> {
        self.inner.create_session(session).await
    }
    async fn session_by_token(
        &self,
        token_sha256: &[u8; 32],
    ) -> StoreResult<Option<(parkd_store::SessionRow, parkd_store::User)>> {
        self.inner.session_by_token(token_sha256).await
    }
    async fn touch_session(&self, session_id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        self.inner.touch_session(session_id, at).await
    }
    async fn revoke_session(
        &self,
        user_id: &str,
        session_id: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<bool> {
        self.inner
            .revoke_session(user_id, session_id, at, reason)
            .await
    }
    async fn active_sessions(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<parkd_store::SessionRow>> {
        self.inner.active_sessions(user_id, now).await
    }
    async fn add_vehicle(&self, vehicle: &parkd_store::VehicleRow) -> StoreResult<()> {
        self.inner.add_vehicle(vehicle).await
    }
    async fn vehicles(&self, user_id: &str) -> StoreResult<Vec<parkd_store::VehicleRow>> {
        self.inner.vehicles(user_id).await
    }
    async fn delete_vehicle(&self, user_id: &str, vehicle_id: &str) -> StoreResult<bool> {
        self.inner.delete_vehicle(user_id, vehicle_id).await
    }
}

parkd_store::forward_reservation_store!(impl[S: Store] for Flaky<S>, inner);

parkd_store::forward_idempotency_store!(impl[S: Store] for Flaky<S>, inner);

parkd_store::forward_gate_store!(impl[S: Store] for Flaky<S>, inner);
parkd_store::forward_payment_store!(impl[S: Store] for Flaky<S>, inner);

#[async_trait]
impl<S: Store> Store for Flaky<S> {
    fn backend(&self) -> &'static str {
        "flaky"
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}

fn state(spot: &str, seq: u64) -> InboundMessage {
    InboundMessage {
        topic: bytes::Bytes::from(format!("parking/v1/g1/spots/{spot}/state")),
        payload: bytes::Bytes::from(format!(r#"{{"occupied":true,"seq":{seq}}}"#)),
        received_at: Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_are_retried_then_counted_and_a_full_queue_drops_and_counts() {
    let (inner, _dir) = parkd_store::testing::sqlite_store().await;
    register(&inner, "g1", "1", false).await;
    let store = Arc::new(Flaky {
        inner,
        failures_left: AtomicU32::new(2),
    });
    let settings = IngestSettings {
        batch_size: 10,
        batch_interval: Duration::from_millis(5),
        write_attempts: 3,
        ..IngestSettings::default()
    };
    let p = pipeline(store.clone(), settings.clone()).await;
    let sink = p.ingest.sink();
    for seq in 1..=25 {
        sink.deliver(state("1", seq));
    }
    p.shutdown.cancel();
    p.ingest.join().await;
    assert_eq!(
        store.count_readings().await.unwrap(),
        25,
        "retried writes lose nothing"
    );
    assert_eq!(p.metrics.write_errors.get(), 2);
    assert_eq!(p.metrics.accounted(), 25);

    // A store that never recovers: rows are counted as lost, the process goes on.
    store.failures_left.store(u32::MAX, Ordering::SeqCst);
    let p = pipeline(store.clone(), settings).await;
    p.ingest.sink().deliver(state("1", 100));
    p.shutdown.cancel();
    p.ingest.join().await;
    assert_eq!(p.metrics.lost.with_label_values(&["write_failed"]).get(), 1);
    assert_eq!(store.count_readings().await.unwrap(), 25);

    // A queue of 4 with nobody draining it yet: the rest is dropped and counted, never blocks.
    store.failures_left.store(0, Ordering::SeqCst);
    let p = pipeline(
        store.clone(),
        IngestSettings {
            queue_capacity: 4,
            ..IngestSettings::default()
        },
    )
    .await;
    let sink = p.ingest.sink();
    let started = std::time::Instant::now();
    for seq in 200..10_200 {
        sink.deliver(state("1", seq));
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    p.shutdown.cancel();
    p.ingest.join().await;
    let lost = p.metrics.lost.with_label_values(&["queue_full"]).get();
    assert!(lost > 0);
    assert_eq!(p.metrics.accounted(), 10_000);
    assert_eq!(store.count_readings().await.unwrap(), 25 + (10_000 - lost));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_store_everything_and_keep_the_newest_state() {
    let store: Arc<dyn Store> = Arc::new(parkd_store::testing::postgres_store().await);
    for spot in 0..50 {
        register(store.as_ref(), "g1", &spot.to_string(), false).await;
    }
    let settings = IngestSettings {
        batch_size: 7,
        batch_interval: Duration::from_millis(1),
        writers: 3,
        ..IngestSettings::default()
    };
    let p = pipeline(store.clone(), settings).await;
    let sink = p.ingest.sink();
    let start = Utc::now();
    for round in 0..40u64 {
        for spot in 0..50 {
            let mut message = state(&spot.to_string(), round + 1);
            message.received_at =
                start + chrono::Duration::milliseconds(i64::try_from(round).unwrap());
            // The last round says free, every earlier one occupied.
            if round == 39 {
                message.payload =
                    bytes::Bytes::from(format!(r#"{{"occupied":false,"seq":{}}}"#, round + 1));
            }
            sink.deliver(message);
        }
    }
    p.shutdown.cancel();
    p.ingest.join().await;
    assert_eq!(store.count_readings().await.unwrap(), 2_000);
    assert_eq!(p.metrics.accounted(), 2_000);
    let latest = store.latest_spot_states().await.unwrap();
    assert_eq!(latest.len(), 50);
    assert!(
        latest.iter().all(|spot| !spot.occupied),
        "a late batch overwrote a newer state"
    );
}
