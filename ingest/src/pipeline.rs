//! The pipeline itself: the sink the broker calls, the batcher and the writer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parkd_broker::{InboundMessage, MessageSink};
use parkd_core::clock::Clock;
use parkd_core::dedup::{SeqVerdict, SeqWindow};
use parkd_core::ids::{DeviceId, LotId, SpotId};
use parkd_core::payload::{DeviceStatus, Heartbeat, PayloadError, SpotState, plausible_ts};
use parkd_core::throttle::LogThrottle;
use parkd_core::topic::{SpotChannel, Topic};
use parkd_store::{HeartbeatRow, SpotReading, StatusChange, Store, TelemetryBatch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::registry::{DeviceIndex, SpotOwners};
use crate::{IngestError, IngestMetrics};

/// Every reject reason, as counted.
pub(crate) const REJECT_REASONS: &[&str] = &[
    "oversized",
    "malformed",
    "wrong_type",
    "out_of_range",
    "unknown_topic",
    "unknown_device",
    "disabled_device",
];

/// How the pipeline batches and retries.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Flush when a batch holds this many rows.
    pub batch_size: usize,
    /// Flush at the latest this long after the first message of a batch.
    pub batch_interval: Duration,
    /// Messages the queue between broker and batcher holds before dropping.
    pub queue_capacity: usize,
    /// Attempts to write one batch before its rows are counted as lost.
    pub write_attempts: u32,
    /// Batches written concurrently. Readings are an append-only series and the latest-state
    /// upserts keep the newest row, so order between batches does not matter. 2 pays off on
    /// PostgreSQL; SQLite has one writer anyway.
    pub writers: usize,
    /// How often the device registry is reloaded from the store.
    pub registry_reload: Duration,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            batch_size: 20_000,
            batch_interval: Duration::from_millis(50),
            queue_capacity: 100_000,
            write_attempts: 10,
            writers: 1,
            registry_reload: Duration::from_secs(10),
        }
    }
}

impl IngestSettings {
    fn validate(&self) -> Result<(), IngestError> {
        if self.batch_size == 0
            || self.queue_capacity == 0
            || self.write_attempts == 0
            || self.writers == 0
        {
            return Err(IngestError::Settings(
                "batch_size, queue_capacity, write_attempts and writers must be above zero".into(),
            ));
        }
        if self.batch_interval.is_zero() {
            return Err(IngestError::Settings(
                "batch_interval must be above zero".into(),
            ));
        }
        Ok(())
    }
}

/// Told about every reading ingest accepts (validated, from a registered sensor, not a
/// duplicate), as soon as it is accepted and before it is committed. Must be quick: it runs on
/// the batcher.
pub trait ReadingObserver: Send + Sync + 'static {
    /// One accepted reading.
    fn observe(&self, reading: &SpotReading);

    /// An accepted heartbeat from the sensor of `lot`/`spot` (a sign of life, no state).
    fn heartbeat(&self, lot: &LotId, spot: &SpotId, received_at: DateTime<Utc>) {
        let _ = (lot, spot, received_at);
    }
}

/// The broker-facing end of the queue. Never blocks.
#[derive(Debug, Clone)]
pub struct IngestSink {
    tx: flume::Sender<InboundMessage>,
    metrics: IngestMetrics,
}

impl MessageSink for IngestSink {
    fn deliver(&self, message: InboundMessage) {
        match self.tx.try_send(message) {
            Ok(()) => {}
            Err(flume::TrySendError::Full(_)) => {
                self.metrics.lost.with_label_values(&["queue_full"]).inc();
            }
            Err(flume::TrySendError::Disconnected(_)) => {
                self.metrics.lost.with_label_values(&["shutdown"]).inc();
            }
        }
    }
}

/// A running pipeline.
#[derive(Debug)]
pub struct Ingest {
    sink: IngestSink,
    tasks: TaskTracker,
}

impl Ingest {
    /// Starts the batcher, the writer and the registry reload. They stop, after draining the
    /// queue, when `shutdown` fires; stop the broker's delivery first.
    pub fn start(
        settings: IngestSettings,
        store: Arc<dyn Store>,
        index: Arc<DeviceIndex>,
        metrics: IngestMetrics,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Result<Ingest, IngestError> {
        Self::start_observed(settings, store, index, metrics, clock, shutdown, None)
    }

    /// [`Ingest::start`], also telling `observer` about every accepted reading (the live
    /// occupancy engine).
    pub fn start_observed(
        settings: IngestSettings,
        store: Arc<dyn Store>,
        index: Arc<DeviceIndex>,
        metrics: IngestMetrics,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
        observer: Option<Arc<dyn ReadingObserver>>,
    ) -> Result<Ingest, IngestError> {
        settings.validate()?;
        let (tx, rx) = flume::bounded(settings.queue_capacity);
        // One batch waiting per writer, plus the one being built.
        let (batch_tx, batch_rx) = flume::bounded::<PendingBatch>(settings.writers);
        let tasks = TaskTracker::new();
        let batcher = Batcher {
            settings: settings.clone(),
            metrics: metrics.clone(),
            index: index.clone(),
            observer,
            windows: HashMap::new(),
            throttle: LogThrottle::new(Duration::from_secs(5)),
        };
        tasks.spawn(batcher.run(rx, batch_tx, shutdown.clone()));
        for _ in 0..settings.writers {
            let writer = Writer {
                settings: settings.clone(),
                metrics: metrics.clone(),
                store: store.clone(),
                clock: clock.clone(),
            };
            tasks.spawn(writer.run(batch_rx.clone()));
        }
        drop(batch_rx);
        let reload_every = settings.registry_reload;
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(reload_every);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Err(error) = index.reload(store.as_ref()).await {
                    tracing::warn!(%error, "device registry reload failed; keeping the previous one");
                }
            }
        });
        tasks.close();
        Ok(Ingest {
            sink: IngestSink { tx, metrics },
            tasks,
        })
    }

    /// The sink to hand to the broker.
    pub fn sink(&self) -> Arc<dyn MessageSink> {
        Arc::new(self.sink.clone())
    }

    /// Waits until the pipeline has drained and stopped (after `shutdown` fired).
    pub async fn join(self) {
        self.tasks.wait().await;
    }
}

/// A batch plus what is needed to account for it after the commit.
#[derive(Debug, Default)]
struct PendingBatch {
    rows: TelemetryBatch,
    /// Device timestamps of the readings, for the publish-to-commit histogram.
    device_ts: Vec<DateTime<Utc>>,
}

struct Batcher {
    settings: IngestSettings,
    metrics: IngestMetrics,
    index: Arc<DeviceIndex>,
    observer: Option<Arc<dyn ReadingObserver>>,
    windows: HashMap<DeviceId, SeqWindow>,
    throttle: LogThrottle,
}

enum Rejection {
    Reject(&'static str, String),
    Duplicate(&'static str),
}

impl From<PayloadError> for Rejection {
    fn from(error: PayloadError) -> Self {
        Rejection::Reject(error.reason(), error.to_string())
    }
}

impl Batcher {
    async fn run(
        mut self,
        rx: flume::Receiver<InboundMessage>,
        batch_tx: flume::Sender<PendingBatch>,
        shutdown: CancellationToken,
    ) {
        loop {
            let first = tokio::select! {
                biased;
                message = rx.recv_async() => match message {
                    Ok(message) => message,
                    Err(_) => break,
                },
                () = shutdown.cancelled() => break,
            };
            let owners = self.index.snapshot();
            let mut batch = PendingBatch::default();
            self.push(&mut batch, first, &owners);
            let deadline = tokio::time::Instant::now() + self.settings.batch_interval;
            while batch.rows.len() < self.settings.batch_size {
                match rx.try_recv() {
                    Ok(message) => self.push(&mut batch, message, &owners),
                    Err(flume::TryRecvError::Disconnected) => break,
                    Err(flume::TryRecvError::Empty) => {
                        tokio::select! {
                            message = rx.recv_async() => match message {
                                Ok(message) => self.push(&mut batch, message, &owners),
                                Err(_) => break,
                            },
                            () = tokio::time::sleep_until(deadline) => break,
                            () = shutdown.cancelled() => break,
                        }
                    }
                }
            }
            self.metrics
                .queue_depth
                .set(i64::try_from(rx.len()).unwrap_or(i64::MAX));
            if !batch.rows.is_empty() && batch_tx.send_async(batch).await.is_err() {
                break;
            }
        }
        // Drain what is queued: the broker's delivery is stopped before ingest's.
        let owners = self.index.snapshot();
        let mut batch = PendingBatch::default();
        while let Ok(message) = rx.try_recv() {
            self.push(&mut batch, message, &owners);
            if batch.rows.len() >= self.settings.batch_size {
                let full = std::mem::take(&mut batch);
                if batch_tx.send_async(full).await.is_err() {
                    return;
                }
            }
        }
        if !batch.rows.is_empty() {
            let _ = batch_tx.send_async(batch).await;
        }
        self.metrics.queue_depth.set(0);
    }

    fn push(&mut self, batch: &mut PendingBatch, message: InboundMessage, owners: &SpotOwners) {
        if let Err(rejection) = self.accept(batch, &message, owners) {
            match rejection {
                Rejection::Reject(reason, detail) => {
                    self.metrics.rejected.with_label_values(&[reason]).inc();
                    if let Some(suppressed) = self.throttle.allow(Instant::now()) {
                        tracing::warn!(
                            topic = %String::from_utf8_lossy(&message.topic),
                            reason,
                            detail,
                            suppressed,
                            "device message rejected"
                        );
                    }
                }
                Rejection::Duplicate(kind) => {
                    self.metrics.duplicates.with_label_values(&[kind]).inc();
                }
            }
        }
    }

    fn check_seq(&mut self, device: &DeviceId, seq: Option<u64>) -> Result<(), Rejection> {
        let Some(seq) = seq else { return Ok(()) };
        let verdict = match self.windows.get_mut(device) {
            Some(window) => window.check(seq),
            None => {
                self.windows
                    .insert(device.clone(), SeqWindow::starting_at(seq));
                SeqVerdict::Fresh
            }
        };
        match verdict {
            SeqVerdict::Fresh | SeqVerdict::Restarted => Ok(()),
            SeqVerdict::Duplicate => Err(Rejection::Duplicate("duplicate")),
            SeqVerdict::Stale => Err(Rejection::Duplicate("stale")),
        }
    }

    fn accept(
        &mut self,
        batch: &mut PendingBatch,
        message: &InboundMessage,
        owners: &SpotOwners,
    ) -> Result<(), Rejection> {
        let parsed = std::str::from_utf8(&message.topic)
            .ok()
            .and_then(|topic| Topic::parse(topic).ok());
        let Some(Topic::Spot { lot, spot, channel }) = parsed else {
            self.metrics.received.with_label_values(&["other"]).inc();
            return Err(Rejection::Reject(
                "unknown_topic",
                "not a spot topic of parking/v1".into(),
            ));
        };
        let channel_label = match channel {
            SpotChannel::State => "state",
            SpotChannel::Heartbeat => "heartbeat",
            SpotChannel::Status => "status",
        };
        self.metrics
            .received
            .with_label_values(&[channel_label])
            .inc();
        let Some(owner) = owners.get(&(lot.clone(), spot.clone())) else {
            return Err(Rejection::Reject(
                "unknown_device",
                format!("no sensor registered for {lot}/{spot}"),
            ));
        };
        if owner.disabled {
            return Err(Rejection::Reject(
                "disabled_device",
                format!("device {} is disabled", owner.device),
            ));
        }
        let received_at = message.received_at;
        let now_ms = received_at.timestamp_millis();
        let to_time = |ts: Option<i64>| {
            plausible_ts(ts, now_ms).and_then(DateTime::<Utc>::from_timestamp_millis)
        };
        match channel {
            SpotChannel::State => {
                let state = SpotState::decode(&message.payload)?;
                self.check_seq(&owner.device, state.seq)?;
                let device_ts = to_time(state.ts);
                if let Some(ts) = device_ts {
                    batch.device_ts.push(ts);
                }
                let reading = SpotReading {
                    received_at,
                    device_ts,
                    lot,
                    spot,
                    device: owner.device.clone(),
                    occupied: state.occupied,
                    seq: state.seq.and_then(|seq| i64::try_from(seq).ok()),
                    battery_mv: state.battery_mv.map(i32::from),
                    rssi: state.rssi,
                };
                if let Some(observer) = &self.observer {
                    observer.observe(&reading);
                }
                batch.rows.readings.push(reading);
            }
            SpotChannel::Heartbeat => {
                let heartbeat = Heartbeat::decode(&message.payload)?;
                self.check_seq(&owner.device, heartbeat.seq)?;
                if let Some(observer) = &self.observer {
                    observer.heartbeat(&lot, &spot, received_at);
                }
                batch.rows.heartbeats.push(HeartbeatRow {
                    received_at,
                    device_ts: to_time(heartbeat.ts),
                    device: owner.device.clone(),
                    battery_mv: heartbeat.battery_mv.map(i32::from),
                    rssi: heartbeat.rssi,
                    uptime_s: heartbeat.uptime_s.and_then(|s| i64::try_from(s).ok()),
                    firmware: heartbeat.fw,
                });
            }
            SpotChannel::Status => {
                let status = DeviceStatus::decode(&message.payload)?;
                if status.online {
                    // A device that (re)connects may have rebooted and restarted its counter.
                    self.windows.remove(&owner.device);
                }
                batch.rows.statuses.push(StatusChange {
                    received_at,
                    device: owner.device.clone(),
                    online: status.online,
                });
            }
        }
        Ok(())
    }
}

struct Writer {
    settings: IngestSettings,
    metrics: IngestMetrics,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Writer {
    async fn run(self, batch_rx: flume::Receiver<PendingBatch>) {
        while let Ok(batch) = batch_rx.recv_async().await {
            self.write(batch).await;
        }
    }

    async fn write(&self, batch: PendingBatch) {
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=self.settings.write_attempts {
            let started = Instant::now();
            match self.store.write_batch(&batch.rows).await {
                Ok(()) => {
                    self.metrics
                        .batch_write_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.batches.inc();
                    let rows = &batch.rows;
                    for (table, count) in [
                        ("spot_readings", rows.readings.len()),
                        ("device_heartbeats", rows.heartbeats.len()),
                        ("device_status_changes", rows.statuses.len()),
                    ] {
                        self.metrics
                            .rows_written
                            .with_label_values(&[table])
                            .inc_by(count as u64);
                    }
                    let committed = self.clock.now();
                    for ts in &batch.device_ts {
                        let latency = (committed - *ts).num_microseconds().unwrap_or(0);
                        self.metrics
                            .publish_to_commit_seconds
                            .observe(latency.max(0) as f64 / 1e6);
                    }
                    return;
                }
                Err(error) => {
                    self.metrics.write_errors.inc();
                    tracing::warn!(%error, attempt, rows = batch.rows.len(), "batch write failed");
                    if attempt < self.settings.write_attempts {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        tracing::error!(
            rows = batch.rows.len(),
            "batch dropped after {} attempts",
            self.settings.write_attempts
        );
        self.metrics
            .lost
            .with_label_values(&["write_failed"])
            .inc_by(batch.rows.len() as u64);
    }
}
