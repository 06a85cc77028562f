//! The ingest benchmark: one run per backend and scenario, each on a fresh store, broker and
//! pipeline; then, per backend, the store's own figures for the same number of rows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use parkd_broker::auth::{CredentialSource, DeviceCredential};
use parkd_broker::embedded::{EmbeddedBroker, EmbeddedSettings};
use parkd_broker::metrics::BrokerMetrics;
use parkd_broker::{InboundMessage, MessageSink};
use parkd_core::clock::SystemClock;
use parkd_core::ids::{DeviceId, LotId};
use parkd_core::payload::SpotState;
use parkd_core::topic::{SPOT_FILTER, SpotChannel, Topic};
use parkd_ingest::{DeviceIndex, Ingest, IngestMetrics, IngestSettings};
use parkd_sim::load::load_spot_id;
use parkd_sim::{LoadConfig, LoadReport, MqttEndpoint, Qos, run_load};
use parkd_store::postgres::PostgresStore;
use parkd_store::sqlite::SqliteStore;
use parkd_store::{Device, DeviceBinding, SpotReading, Store, TelemetryBatch};
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use crate::cpu::{CpuSnapshot, CpuUsage};
use crate::machine::RunHeader;
use crate::pg::{FreshDb, PgServer};
use crate::report;
use crate::timed_store::{Percentiles, TimedStore};
use crate::{Backend, IngestArgs, Scenario};

/// The lot every load message goes to.
const LOT: &str = "load";
/// Default message count of the `max` scenario on PostgreSQL.
const MAX_COUNT_POSTGRES: u64 = 1_000_000;
/// Default message count of the `max` scenario on SQLite.
const MAX_COUNT_SQLITE: u64 = 500_000;
/// How long the broker's delivery count must stay still, when it is below what was published,
/// before the run concludes that the rest was dropped.
const QUIET_BEFORE_GIVING_UP: Duration = Duration::from_secs(1);

/// The settings every run shares, resolved from the command line.
#[derive(Debug, Clone)]
pub(crate) struct BenchSettings {
    pub(crate) ingest: IngestSettings,
    pub(crate) broker: EmbeddedSettings,
    pub(crate) connections: usize,
    pub(crate) spots_per_connection: usize,
    pub(crate) load_threads: usize,
    pub(crate) parkd_threads: usize,
    pub(crate) pool_size: usize,
    pub(crate) rate: f64,
    pub(crate) duration: Duration,
    pub(crate) count: Option<u64>,
    pub(crate) settle_timeout: Duration,
    /// Ingest pipelines sharded by topic (1 = parkd as it is).
    pub(crate) ingest_shards: usize,
    /// Writers per pipeline; `None` = parkd's choice for the backend.
    pub(crate) writers: Option<usize>,
}

impl BenchSettings {
    fn from_args(args: &IngestArgs) -> Self {
        let mut ingest = IngestSettings::default();
        if let Some(size) = args.batch_size {
            ingest.batch_size = size;
        }
        if let Some(ms) = args.batch_interval_ms {
            ingest.batch_interval = Duration::from_millis(ms);
        }
        if let Some(capacity) = args.queue_capacity {
            ingest.queue_capacity = capacity;
        }
        let mut broker = EmbeddedSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_anonymous: true,
            ..EmbeddedSettings::default()
        };
        if let Some(size) = args.segment_size {
            broker.segment_size = size;
        }
        if let Some(count) = args.segment_count {
            broker.segment_count = count;
        }
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            ingest,
            broker,
            connections: args.connections,
            spots_per_connection: args.spots_per_connection,
            load_threads: args.load_threads.max(1),
            parkd_threads: args.parkd_threads.unwrap_or(cpus).max(1),
            pool_size: args.pool_size,
            rate: args.rate,
            duration: args.duration,
            count: args.count,
            settle_timeout: args.settle_timeout,
            ingest_shards: args.ingest_shards.max(1),
            writers: args.writers,
        }
    }

    pub(crate) fn spots(&self) -> usize {
        self.connections * self.spots_per_connection
    }

    fn max_count(&self, backend: Backend) -> u64 {
        self.count.unwrap_or(match backend {
            Backend::Postgres => MAX_COUNT_POSTGRES,
            Backend::Sqlite => MAX_COUNT_SQLITE,
        })
    }
}

/// What one backend/scenario run measured.
#[derive(Debug)]
pub(crate) struct RunResult {
    pub(crate) backend: Backend,
    pub(crate) scenario: Scenario,
    /// The load generator's own report (`sent` is what it published).
    pub(crate) load: LoadReport,
    /// Messages the broker handed to the ingest link.
    pub(crate) forwarded: u64,
    /// Rows in `spot_readings` at the end (`count_readings`).
    pub(crate) stored_rows: u64,
    /// Rows committed according to ingest's own counter.
    pub(crate) rows_written: u64,
    /// Rejects by reason (non-zero only).
    pub(crate) rejected: Vec<(&'static str, u64)>,
    pub(crate) duplicates: u64,
    pub(crate) lost_queue_full: u64,
    pub(crate) lost_write_failed: u64,
    pub(crate) lost_shutdown: u64,
    /// `IngestMetrics::accounted()` at the end.
    pub(crate) accounted: u64,
    /// Whether `accounted == forwarded` was reached before the settle timeout.
    pub(crate) settled: bool,
    /// First publish (earliest device ts) to last commit, seconds.
    pub(crate) window_s: f64,
    /// Publish-to-commit latency, µs, exact.
    pub(crate) latency: Option<Percentiles>,
    pub(crate) readings_without_ts: u64,
    /// Per-batch write time, µs.
    pub(crate) batch_write: Option<Percentiles>,
    pub(crate) batches: usize,
    /// Time spent inside `write_batch`, seconds.
    pub(crate) write_busy_s: f64,
    pub(crate) failed_writes: u64,
    pub(crate) cpu: CpuUsage,
}

impl RunResult {
    /// Stored rows per second from the first publish to the last commit.
    pub(crate) fn throughput(&self) -> f64 {
        if self.window_s > 0.0 {
            self.stored_rows as f64 / self.window_s
        } else {
            0.0
        }
    }

    pub(crate) fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    /// Published minus forwarded: messages the broker did not deliver.
    pub(crate) fn broker_gap(&self) -> i64 {
        self.load.sent as i64 - self.forwarded as i64
    }
}

/// One store-level figure (no MQTT, or no ingest at all).
#[derive(Debug, Clone)]
pub(crate) struct RawFigure {
    pub(crate) method: String,
    pub(crate) rows: u64,
    pub(crate) seconds: f64,
    /// Whether the figure is the "raw COPY" the end-to-end rate is compared with.
    pub(crate) is_raw_copy: bool,
}

impl RawFigure {
    pub(crate) fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.rows as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// What is known about a backend's engine.
#[derive(Debug, Clone, Default)]
pub(crate) struct BackendInfo {
    pub(crate) description: String,
}

/// Everything for one backend.
#[derive(Debug)]
pub(crate) struct BackendResults {
    pub(crate) backend: Backend,
    pub(crate) info: BackendInfo,
    pub(crate) runs: Vec<RunResult>,
    pub(crate) raw: Vec<RawFigure>,
}

/// Runs every requested backend and scenario and renders the report.
pub(crate) async fn run_all(
    args: &IngestArgs,
    load_runtime: &tokio::runtime::Handle,
) -> anyhow::Result<String> {
    let header = RunHeader::gather();
    let settings = BenchSettings::from_args(args);
    let pg = PgServer::new(args.database_url.clone());
    let mut backends = args.stores.clone();
    backends.dedup();
    if backends.contains(&Backend::Postgres) {
        pg.check()?;
    }
    let mut scenarios = args.scenarios.clone();
    if scenarios.is_empty() {
        scenarios = vec![Scenario::Max, Scenario::Target, Scenario::Paced];
    }
    scenarios.dedup();

    let mut all = Vec::new();
    for &backend in &backends {
        let mut results = BackendResults {
            backend,
            info: BackendInfo::default(),
            runs: Vec::new(),
            raw: Vec::new(),
        };
        for &scenario in &scenarios {
            eprintln!("== {} / {}: running", backend.name(), scenario.name());
            let (run, info) = run_one(&settings, backend, scenario, &pg, load_runtime).await?;
            eprintln!(
                "== {} / {}: published {}, forwarded {}, stored {}, {:.0} msg/s, p99 {} ms",
                backend.name(),
                scenario.name(),
                run.load.sent,
                run.forwarded,
                run.stored_rows,
                run.throughput(),
                run.latency
                    .map_or("-".to_owned(), |l| format!("{:.1}", l.p99 as f64 / 1000.0)),
            );
            results.info = info;
            results.runs.push(run);
        }
        if !args.skip_raw {
            let rows = results
                .runs
                .iter()
                .find(|r| r.scenario == Scenario::Max)
                .map_or(settings.max_count(backend), |r| r.load.sent.max(1));
            eprintln!("== {}: store-level figures for {rows} rows", backend.name());
            results.raw = raw_figures(&settings, backend, rows, &pg).await?;
        }
        all.push(results);
    }
    Ok(report::render(&header, &settings, &all))
}

#[derive(Debug)]
struct NoLogins;

#[async_trait]
impl CredentialSource for NoLogins {
    async fn credential(&self, _: &DeviceId) -> Result<Option<DeviceCredential>, String> {
        Ok(None)
    }
}

/// A fresh store plus what must outlive it.
enum StoreHold {
    Sqlite(tempfile::TempDir),
    Postgres(FreshDb),
}

async fn open_store(
    backend: Backend,
    settings: &BenchSettings,
    pg: &PgServer,
) -> anyhow::Result<(Arc<dyn Store>, StoreHold, BackendInfo)> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().context("creating a temporary directory")?;
            let store = SqliteStore::open(&dir.path().join("bench.sqlite3"))
                .await
                .context("opening the SQLite store")?;
            let info = BackendInfo {
                description: format!(
                    "SQLite {} (bundled), a file in {} (WAL, synchronous=NORMAL)",
                    rusqlite::version(),
                    std::env::temp_dir().display()
                ),
            };
            Ok((Arc::new(store), StoreHold::Sqlite(dir), info))
        }
        Backend::Postgres => {
            let db = pg.fresh().await?;
            let store = PostgresStore::open(&db.url, settings.pool_size, 0)
                .await
                .context("opening the PostgreSQL store")?;
            let version = crate::pg::server_version(&db.url)
                .await
                .unwrap_or_else(|e| format!("unknown ({e})"));
            let flavour = if store.timescale() {
                "TimescaleDB hypertables"
            } else {
                "plain PostgreSQL (no TimescaleDB), indexed tables"
            };
            let info = BackendInfo {
                description: format!(
                    "PostgreSQL {version}, {flavour}, pool of {}",
                    settings.pool_size
                ),
            };
            Ok((Arc::new(store), StoreHold::Postgres(db), info))
        }
    }
}

async fn release(hold: StoreHold, pg: &PgServer) -> anyhow::Result<()> {
    match hold {
        StoreHold::Sqlite(dir) => {
            dir.close()
                .context("removing the temporary SQLite directory")?;
        }
        StoreHold::Postgres(db) => pg.dispose(db).await?,
    }
    Ok(())
}

/// Registers one sensor (no secret) for every spot the load generator publishes to.
async fn register_sensors(store: &dyn Store, settings: &BenchSettings) -> anyhow::Result<()> {
    let lot = LotId::parse(LOT)?;
    for conn in 0..settings.connections {
        for k in 0..settings.spots_per_connection {
            let spot = load_spot_id(conn, k)?;
            store
                .upsert_device(&Device {
                    id: DeviceId::parse(&format!("{lot}-{spot}"))?,
                    binding: DeviceBinding::Spot {
                        lot: lot.clone(),
                        spot,
                    },
                    secret_sha256: None,
                    disabled: false,
                    created_at: Utc::now(),
                })
                .await
                .context("registering a sensor")?;
        }
    }
    Ok(())
}

/// The counters of a pipeline, read once.
#[derive(Default)]
struct Counts {
    rows_written: u64,
    rejected: Vec<(&'static str, u64)>,
    duplicates: u64,
    lost_queue_full: u64,
    lost_write_failed: u64,
    lost_shutdown: u64,
}

/// Every reject reason ingest counts (`parkd_ingest_rejected_total{reason}`).
const REJECT_REASONS: &[&str] = &[
    "oversized",
    "malformed",
    "wrong_type",
    "out_of_range",
    "unknown_topic",
    "unknown_device",
    "disabled_device",
];

fn read_counts(metrics: &IngestMetrics) -> Counts {
    let rows = |table: &str| metrics.rows_written.with_label_values(&[table]).get();
    let lost = |reason: &str| metrics.lost.with_label_values(&[reason]).get();
    Counts {
        rows_written: rows("spot_readings")
            + rows("device_heartbeats")
            + rows("device_status_changes"),
        rejected: REJECT_REASONS
            .iter()
            .map(|&reason| (reason, metrics.rejected.with_label_values(&[reason]).get()))
            .filter(|(_, n)| *n > 0)
            .collect(),
        duplicates: ["duplicate", "stale"]
            .iter()
            .map(|kind| metrics.duplicates.with_label_values(&[kind]).get())
            .sum(),
        lost_queue_full: lost("queue_full"),
        lost_write_failed: lost("write_failed"),
        lost_shutdown: lost("shutdown"),
    }
}

/// One ingest pipeline, or several sharded by topic (`--ingest-shards`, an experiment that
/// stands in for concurrent writers: each shard has its own batcher and writer, so up to N
/// batches are written at once; a spot always goes to the same shard, so de-duplication is
/// unchanged).
struct Pipelines {
    ingests: Vec<Ingest>,
    metrics: Vec<IngestMetrics>,
    stop: CancellationToken,
}

impl Pipelines {
    async fn start(
        settings: &BenchSettings,
        store: Arc<dyn Store>,
        registry_source: &dyn Store,
    ) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let mut ingests = Vec::new();
        let mut metrics = Vec::new();
        for _ in 0..settings.ingest_shards {
            let shard_metrics = IngestMetrics::new(&Registry::new())?;
            let index = Arc::new(DeviceIndex::load(registry_source).await?);
            let mut ingest_settings = settings.ingest.clone();
            // The same choice parkd makes (parkd/src/app.rs).
            ingest_settings.writers = settings
                .writers
                .unwrap_or(if store.backend() == "postgres" { 2 } else { 1 });
            ingests.push(Ingest::start(
                ingest_settings,
                store.clone(),
                index,
                shard_metrics.clone(),
                Arc::new(SystemClock),
                stop.clone(),
            )?);
            metrics.push(shard_metrics);
        }
        Ok(Self {
            ingests,
            metrics,
            stop,
        })
    }

    /// The sink for the broker: the pipeline's own, or a topic-sharding one.
    fn sink(&self) -> Arc<dyn MessageSink> {
        if self.ingests.len() == 1 {
            return self.ingests[0].sink();
        }
        Arc::new(ShardedSink {
            sinks: self.ingests.iter().map(Ingest::sink).collect(),
        })
    }

    fn accounted(&self) -> u64 {
        self.metrics.iter().map(IngestMetrics::accounted).sum()
    }

    fn counts(&self) -> Counts {
        let mut total = Counts::default();
        for metrics in &self.metrics {
            let shard = read_counts(metrics);
            total.rows_written += shard.rows_written;
            total.duplicates += shard.duplicates;
            total.lost_queue_full += shard.lost_queue_full;
            total.lost_write_failed += shard.lost_write_failed;
            total.lost_shutdown += shard.lost_shutdown;
            for (reason, n) in shard.rejected {
                match total.rejected.iter_mut().find(|(r, _)| *r == reason) {
                    Some((_, sum)) => *sum += n,
                    None => total.rejected.push((reason, n)),
                }
            }
        }
        total
    }

    /// Stops and drains every pipeline (stop the broker's delivery first).
    async fn join(self) {
        self.stop.cancel();
        for ingest in self.ingests {
            ingest.join().await;
        }
    }
}

/// Hands each message to one of several sinks by a hash of its topic.
struct ShardedSink {
    sinks: Vec<Arc<dyn MessageSink>>,
}

impl MessageSink for ShardedSink {
    fn deliver(&self, message: InboundMessage) {
        // FNV-1a over the topic: cheap, and a spot's topic always lands on the same shard.
        let hash = message
            .topic
            .iter()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
        let shard = (hash % self.sinks.len() as u64) as usize;
        self.sinks[shard].deliver(message);
    }
}

async fn run_one(
    settings: &BenchSettings,
    backend: Backend,
    scenario: Scenario,
    pg: &PgServer,
    load_runtime: &tokio::runtime::Handle,
) -> anyhow::Result<(RunResult, BackendInfo)> {
    let (store, hold, info) = open_store(backend, settings, pg).await?;
    register_sensors(store.as_ref(), settings).await?;
    let timed = Arc::new(TimedStore::new(store.clone()));

    let pipelines = Pipelines::start(settings, timed.clone(), store.as_ref()).await?;

    let broker_metrics = BrokerMetrics::new(&Registry::new())?;
    let broker = EmbeddedBroker::start(
        settings.broker.clone(),
        Arc::new(NoLogins),
        broker_metrics.clone(),
    )
    .await
    .context("starting the embedded broker")?;
    let link_stop = CancellationToken::new();
    let link = broker
        .subscribe(
            "ingest",
            &[SPOT_FILTER],
            pipelines.sink(),
            Arc::new(SystemClock),
            link_stop.clone(),
        )
        .await
        .context("subscribing ingest to the broker")?;
    let forwarded = broker_metrics.forwarded.with_label_values(&["ingest"]);

    let mut load = LoadConfig::new(
        MqttEndpoint::new("127.0.0.1", broker.local_addr().port()),
        settings.connections,
    );
    load.spots_per_connection = settings.spots_per_connection;
    load.lot = LotId::parse(LOT)?;
    load.qos = Qos::AtMostOnce;
    load.client_prefix = format!("bench-{}-{}", backend.name(), scenario.name());
    match scenario {
        Scenario::Max => load.count = Some(settings.max_count(backend)),
        Scenario::Target => {
            load.count = Some(settings.max_count(backend));
            load.rate = Some(backend.throughput_target());
        }
        Scenario::Paced => {
            load.rate = Some(settings.rate);
            load.duration = Some(settings.duration);
        }
    }

    let cpu_before = CpuSnapshot::take();
    let report = load_runtime
        .spawn(run_load(load, CancellationToken::new()))
        .await
        .context("the load generator task failed")?
        .context("the load generator failed")?;

    // Wait until everything the broker delivered is accounted for. When the broker delivered
    // less than was published, wait for its count to stay still before concluding it dropped
    // the rest.
    let deadline = Instant::now() + settings.settle_timeout;
    let mut last_forwarded = forwarded.get();
    let mut last_change = Instant::now();
    let mut cpu_after: Option<(u64, CpuSnapshot)> = None;
    let settled = loop {
        let now_forwarded = forwarded.get();
        if now_forwarded != last_forwarded {
            last_forwarded = now_forwarded;
            last_change = Instant::now();
        }
        let accounted = pipelines.accounted();
        if accounted == now_forwarded {
            if cpu_after.as_ref().is_none_or(|(f, _)| *f != now_forwarded) {
                cpu_after = Some((now_forwarded, CpuSnapshot::take()));
            }
            if now_forwarded >= report.sent || last_change.elapsed() >= QUIET_BEFORE_GIVING_UP {
                break true;
            }
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let cpu_after = cpu_after.map_or_else(CpuSnapshot::take, |(_, snapshot)| snapshot);
    let cpu = cpu_before.usage_until(&cpu_after);

    // Ordered shutdown: the broker's delivery first, then ingest drains.
    link_stop.cancel();
    tokio::task::spawn_blocking(move || link.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the broker link thread panicked"))?;
    let accounted = pipelines.accounted();
    let counts = pipelines.counts();
    pipelines.join().await;
    broker.shutdown();

    let forwarded = forwarded.get();
    let stored_rows = store.count_readings().await?;
    let mut timings = timed.take();
    let window_s = match (timings.first_device_ts_us, timings.last_commit_us) {
        (Some(first), Some(last)) if last > first => (last - first) as f64 / 1e6,
        _ => 0.0,
    };
    let write_busy_s = timings.batch_write_us.iter().sum::<i64>() as f64 / 1e6;
    let result = RunResult {
        backend,
        scenario,
        load: report,
        forwarded,
        stored_rows,
        rows_written: counts.rows_written,
        rejected: counts.rejected,
        duplicates: counts.duplicates,
        lost_queue_full: counts.lost_queue_full,
        lost_write_failed: counts.lost_write_failed,
        lost_shutdown: counts.lost_shutdown,
        accounted,
        settled,
        window_s,
        latency: Percentiles::of(&mut timings.latencies_us),
        readings_without_ts: timings.readings_without_ts,
        batch_write: Percentiles::of(&mut timings.batch_write_us),
        batches: timings.batch_rows.len(),
        write_busy_s,
        failed_writes: timings.failed_writes,
        cpu,
    };
    drop(timed);
    drop(store);
    release(hold, pg).await?;
    Ok((result, info))
}

/// `rows` readings shaped like the load generator's: every spot in turn, `seq` growing per
/// round, timestamps a microsecond apart.
fn synthetic_readings(settings: &BenchSettings, rows: u64) -> anyhow::Result<Vec<SpotReading>> {
    let lot = LotId::parse(LOT)?;
    let mut spots = Vec::with_capacity(settings.spots());
    for conn in 0..settings.connections {
        for k in 0..settings.spots_per_connection {
            let spot = load_spot_id(conn, k)?;
            let device = DeviceId::parse(&format!("{lot}-{spot}"))?;
            spots.push((spot, device));
        }
    }
    let start = Utc::now();
    let n_spots = spots.len() as u64;
    let mut out = Vec::with_capacity(usize::try_from(rows)?);
    for i in 0..rows {
        let (spot, device) = &spots[(i % n_spots) as usize];
        let round = i / n_spots;
        let at = start + chrono::Duration::microseconds(i64::try_from(i)?);
        out.push(SpotReading {
            received_at: at,
            device_ts: Some(at - chrono::Duration::milliseconds(2)),
            lot: lot.clone(),
            spot: spot.clone(),
            device: device.clone(),
            occupied: round.is_multiple_of(2),
            seq: Some(1_000 + i64::try_from(round)?),
            battery_mv: Some(3_600),
            rssi: Some(-60),
        });
    }
    Ok(out)
}

/// The store's own figures for `rows` rows: raw COPY (PostgreSQL), `write_batch` per ingest
/// batch, and the ingest pipeline fed in-process (no MQTT).
async fn raw_figures(
    settings: &BenchSettings,
    backend: Backend,
    rows: u64,
    pg: &PgServer,
) -> anyhow::Result<Vec<RawFigure>> {
    let readings = synthetic_readings(settings, rows)?;
    let batch_size = settings.ingest.batch_size;
    let mut figures = Vec::new();

    if backend == Backend::Postgres {
        // 1. One COPY of every row, one transaction.
        let db = pg.fresh().await?;
        let store = PostgresStore::open(&db.url, 1, 0).await?;
        let started = Instant::now();
        store.copy_readings_raw(&readings).await?;
        figures.push(RawFigure {
            method: "raw `COPY ... FROM STDIN BINARY` (`copy_readings_raw`), all rows in one \
                     transaction"
                .to_owned(),
            rows,
            seconds: started.elapsed().as_secs_f64(),
            is_raw_copy: true,
        });
        check_count(&store, rows).await?;
        drop(store);
        pg.dispose(db).await?;

        // 2. The same COPY, one transaction per ingest batch.
        let db = pg.fresh().await?;
        let store = PostgresStore::open(&db.url, 1, 0).await?;
        let started = Instant::now();
        for chunk in readings.chunks(batch_size) {
            store.copy_readings_raw(chunk).await?;
        }
        figures.push(RawFigure {
            method: format!(
                "raw COPY (`copy_readings_raw`), one transaction per {batch_size} rows"
            ),
            rows,
            seconds: started.elapsed().as_secs_f64(),
            is_raw_copy: false,
        });
        check_count(&store, rows).await?;
        drop(store);
        pg.dispose(db).await?;
    }

    // 3. The store's whole write path, batch by batch, no broker and no ingest.
    let (store, hold, _) = open_store(backend, settings, pg).await?;
    let batches: Vec<TelemetryBatch> = readings
        .chunks(batch_size)
        .map(|chunk| TelemetryBatch {
            readings: chunk.to_vec(),
            ..TelemetryBatch::default()
        })
        .collect();
    let started = Instant::now();
    for batch in &batches {
        store.write_batch(batch).await?;
    }
    let what = match backend {
        Backend::Postgres => "COPY + `spot_latest` upsert",
        Backend::Sqlite => "prepared INSERTs + `spot_latest` upsert",
    };
    figures.push(RawFigure {
        method: format!("store `write_batch` ({what}), {batch_size} rows per call, sequential"),
        rows,
        seconds: started.elapsed().as_secs_f64(),
        is_raw_copy: false,
    });
    check_count(store.as_ref(), rows).await?;
    drop(store);
    release(hold, pg).await?;

    if backend == Backend::Postgres {
        // 3b. The same with two callers at once (two pool connections): what a second writer
        // task in ingest would get.
        let (store, hold, _) = open_store(backend, settings, pg).await?;
        let batches = Arc::new(batches);
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..2 {
            let (store, batches, next) = (store.clone(), batches.clone(), next.clone());
            writers.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(batch) = batches.get(i) else {
                        return Ok::<(), parkd_store::StoreError>(());
                    };
                    store.write_batch(batch).await?;
                }
            });
        }
        while let Some(joined) = writers.join_next().await {
            joined??;
        }
        figures.push(RawFigure {
            method: format!(
                "store `write_batch` ({what}), {batch_size} rows per call, 2 concurrent callers"
            ),
            rows,
            seconds: started.elapsed().as_secs_f64(),
            is_raw_copy: false,
        });
        check_count(store.as_ref(), rows).await?;
        drop(store);
        release(hold, pg).await?;
    }

    // 4. The ingest pipeline fed in-process (decode, validate, dedup, batch, write).
    figures.push(ingest_in_process(settings, backend, rows, pg).await?);
    Ok(figures)
}

async fn check_count(store: &dyn Store, rows: u64) -> anyhow::Result<()> {
    let stored = store.count_readings().await?;
    if stored != rows {
        bail!("store-level figure: {stored} rows stored, {rows} written");
    }
    Ok(())
}

/// Feeds `rows` pre-built MQTT messages straight into the ingest sink, keeping the queue
/// below its capacity (so nothing is dropped), and times first delivery to last commit.
async fn ingest_in_process(
    settings: &BenchSettings,
    backend: Backend,
    rows: u64,
    pg: &PgServer,
) -> anyhow::Result<RawFigure> {
    let (store, hold, _) = open_store(backend, settings, pg).await?;
    register_sensors(store.as_ref(), settings).await?;
    let pipelines = Pipelines::start(settings, store.clone(), store.as_ref()).await?;
    let sink = pipelines.sink();

    let lot = LotId::parse(LOT)?;
    let mut topics = Vec::with_capacity(settings.spots());
    for conn in 0..settings.connections {
        for k in 0..settings.spots_per_connection {
            let spot = load_spot_id(conn, k)?;
            topics.push(Bytes::from(
                Topic::spot(&lot, &spot, SpotChannel::State).to_string(),
            ));
        }
    }
    let n_spots = topics.len() as u64;
    let now_ms = Utc::now().timestamp_millis();
    let messages: Vec<InboundMessage> = (0..rows)
        .map(|i| {
            let round = i / n_spots;
            InboundMessage {
                topic: topics[(i % n_spots) as usize].clone(),
                payload: Bytes::from(
                    SpotState {
                        occupied: round.is_multiple_of(2),
                        seq: Some(1_000 + round),
                        ts: Some(now_ms),
                        battery_mv: Some(3_600),
                        rssi: Some(-60),
                    }
                    .encode(),
                ),
                received_at: Utc::now(),
            }
        })
        .collect();

    // Never more than half the queue outstanding: nothing may be dropped here.
    let window = (settings.ingest.queue_capacity / 2).max(1) as u64;
    let started = Instant::now();
    let mut delivered = 0u64;
    for message in messages {
        while delivered - pipelines.accounted() >= window {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sink.deliver(message);
        delivered += 1;
    }
    let deadline = Instant::now() + settings.settle_timeout;
    while pipelines.accounted() < delivered {
        if Instant::now() >= deadline {
            bail!("in-process ingest did not account for every message in time");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let counts = pipelines.counts();
    pipelines.join().await;
    if counts.rows_written != rows {
        bail!(
            "in-process ingest stored {} of {rows} messages (queue_full {}, write_failed {})",
            counts.rows_written,
            counts.lost_queue_full,
            counts.lost_write_failed
        );
    }
    drop(sink);
    drop(store);
    release(hold, pg).await?;
    Ok(RawFigure {
        method: format!(
            "ingest pipeline fed in-process (no MQTT): `IngestSink::deliver` → batcher → \
             `write_batch`, {} rows per batch",
            settings.ingest.batch_size
        ),
        rows,
        seconds,
        is_raw_copy: false,
    })
}
