//! `parkd-bench`: the project's own benchmark harness.
//!
//! - Default command (the ingest benchmark): for each `--store`, MQTT load from real clients
//!   (QoS 0) → the embedded broker → the ingest pipeline → a fresh store, with every message
//!   accounted for; throughput from the first publish to the last commit; publish-to-commit
//!   latency from exact, sorted samples; on PostgreSQL the raw `COPY` rate of the same rows.
//! - `demo`: start-up time and idle memory of the release `parkd demo` binary.
//! - `availability`: `GET /api/v1/lots/{lot}/availability` (and the other live reads) with
//!   `wrk` against parkd on two worker threads, the demo simulator running.
//! - `live-ws`: sensor publish over MQTT → WebSocket client receipt, N clients x R changes/s,
//!   as a ladder of loads.
//! - `scale`: 100,000 spots in one process: memory, availability read time against a
//!   300-spot lot of the same shape, the engine's `tick`.
//! - `reservations`: N concurrent drivers creating reservations through the HTTP API
//!   (PostgreSQL or SQLite), then a check over the whole table for double bookings.
//! - `logins`: N concurrent clients logging in again and again with production Argon2id.
//! - `gates`: 50 barrier gates over MQTT at 1 request/s each (entries, exits, refusals) with the
//!   sensor fleet reporting where the cars park, on PostgreSQL: publish → command latency.
//!
//! Each prints a Markdown report and can write it to a file (`--out`). See `bench/README.md`.

mod availability;
mod cpu;
mod demo;
mod drivers;
mod gates;
mod hist;
mod http1;
mod ingest;
mod live_ws;
mod logins;
mod machine;
mod payments;
mod pg;
mod publish;
mod report;
mod reservations;
mod scale;
mod server;
mod timed_store;
mod wrk;

/// The allocator the `parkd` binary uses, so that parkd measured in this process behaves as
/// it does in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// The parkd benchmark harness (ingest throughput and latency; demo start-up; live occupancy;
/// reservations and logins; gate latency).
#[derive(Debug, Parser)]
#[command(name = "parkd-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    ingest: IngestArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start-up time to `/readyz` and idle RSS of the release `parkd demo` binary.
    Demo(DemoArgs),
    /// Live REST reads (`GET /api/v1/lots/{lot}/availability` and others) with wrk.
    Availability(AvailabilityArgs),
    /// Sensor publish → WebSocket client receipt latency, N clients x R changes/s.
    LiveWs(LiveWsArgs),
    /// 100,000 spots in one process: memory, availability read time, tick.
    Scale(ScaleArgs),
    /// Concurrent reservation creates over HTTP, then a whole-table double-booking check.
    Reservations(ReservationsArgs),
    /// Concurrent logins with production Argon2id parameters.
    Logins(LoginsArgs),
    /// Gate request publish → command receipt latency, 50 gates at 1 request/s, PostgreSQL.
    Gates(GatesArgs),
    /// Pay at exit (exit request → pay → open) and concurrent payment retries, PostgreSQL.
    Payments(PaymentsArgs),
    /// (Internal, used by `scale`) import a demo garage and register its sensors.
    #[command(hide = true)]
    SeedLot(SeedLotArgs),
    /// (Internal, used by `scale`) N WebSocket clients read their first message at once.
    #[command(hide = true)]
    WsSnapshots(WsSnapshotsArgs),
}

/// A store backend to benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Backend {
    /// An SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on a PostgreSQL server.
    Postgres,
}

impl Backend {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The end-to-end target, messages per second.
    pub(crate) fn throughput_target(self) -> f64 {
        match self {
            Backend::Postgres => 100_000.0,
            Backend::Sqlite => 50_000.0,
        }
    }
}

/// A load shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// As fast as the load generator can publish, a fixed number of messages.
    Max,
    /// The backend's throughput target as a fixed rate (100,000 msg/s on PostgreSQL, 50,000 on
    /// SQLite), as many messages as `max`: does the pipeline keep up with zero loss?
    Target,
    /// A fixed rate (`--rate`) for a fixed time (`--duration`).
    Paced,
}

impl Scenario {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Max => "max",
            Scenario::Target => "target",
            Scenario::Paced => "paced",
        }
    }
}

/// The ingest benchmark.
#[derive(Debug, Clone, Args)]
pub(crate) struct IngestArgs {
    /// Backend to benchmark; repeat for both (`--store sqlite --store postgres`).
    #[arg(long = "store", value_enum)]
    pub(crate) stores: Vec<Backend>,
    /// PostgreSQL server to create the fresh benchmark databases on (they are dropped after).
    /// Without it, a fresh database is made from libpq's PG* environment, as set by
    /// `pg_virtualenv` (not dropped: the throwaway cluster goes with pg_virtualenv).
    #[arg(long, env = "PARKD_BENCH_DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// Scenario to run; repeat for several. Default: max, target and paced.
    #[arg(long = "scenario", value_enum)]
    pub(crate) scenarios: Vec<Scenario>,
    /// Messages of the `max` and `target` scenarios [default: 1000000 on PostgreSQL, 500000 on
    /// SQLite].
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Messages per second of the `paced` scenario.
    #[arg(long, default_value_t = 10_000.0)]
    pub(crate) rate: f64,
    /// Length of the `paced` scenario (e.g. 20s, 1m).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// MQTT client connections of the load generator.
    #[arg(long, default_value_t = 8)]
    pub(crate) connections: usize,
    /// Distinct spots (one registered sensor each) per connection.
    #[arg(long, default_value_t = 100)]
    pub(crate) spots_per_connection: usize,
    /// Worker threads of the load generator's own runtime.
    #[arg(long, default_value_t = 2)]
    pub(crate) load_threads: usize,
    /// Worker threads of the runtime running broker, ingest and store [default: CPUs].
    #[arg(long)]
    pub(crate) parkd_threads: Option<usize>,
    /// Ingest: rows per batch [default: IngestSettings' 20000, as parkd].
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    /// Ingest: longest wait before a partial batch is flushed, in ms [default: 50].
    #[arg(long)]
    pub(crate) batch_interval_ms: Option<u64>,
    /// Ingest: capacity of the queue between broker and batcher [default: 100000].
    #[arg(long)]
    pub(crate) queue_capacity: Option<usize>,
    /// Broker: bytes per segment of a subscription filter's log. rumqttd keeps one log per
    /// filter, so ingest's single wildcard filter gets segment_size x segment_count in all
    /// [default: parkd's, 8 MiB x 8; pass 1048576 and 4 to see the old 4 MiB overflow].
    #[arg(long)]
    pub(crate) segment_size: Option<usize>,
    /// Broker: segments per filter log [default: parkd's].
    #[arg(long)]
    pub(crate) segment_count: Option<usize>,
    /// Ingest: batches written concurrently [default: as parkd, 2 on PostgreSQL, 1 on SQLite].
    #[arg(long)]
    pub(crate) writers: Option<usize>,
    /// Experiment: N ingest pipelines sharded by topic, so N batches are written at once
    /// (stands in for N writer tasks in ingest). 1 = parkd as it is.
    #[arg(long, default_value_t = 1)]
    pub(crate) ingest_shards: usize,
    /// PostgreSQL connection pool size (parkd's default is 8).
    #[arg(long, default_value_t = 8)]
    pub(crate) pool_size: usize,
    /// Skip the raw store figures (raw COPY and store-only writes).
    #[arg(long)]
    pub(crate) skip_raw: bool,
    /// How long to wait, after the load ends, for every delivered message to be accounted for.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub(crate) settle_timeout: Duration,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Run even in a debug build (the figures are then meaningless, and the report says so).
    #[arg(long)]
    pub(crate) allow_debug: bool,
}

/// The demo start-up benchmark.
#[derive(Debug, Clone, Args)]
pub(crate) struct DemoArgs {
    /// The parkd binary [default: target/release/parkd of this workspace].
    #[arg(long)]
    pub(crate) parkd: Option<PathBuf>,
    /// Runs; the report gives each and the median.
    #[arg(long, default_value_t = 5)]
    pub(crate) runs: usize,
    /// How long the demo runs before its RSS is read.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) idle: Duration,
    /// Give up on a run that is not ready after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) ready_timeout: Duration,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Run even in a debug build of parkd-bench.
    #[arg(long)]
    pub(crate) allow_debug: bool,
}

/// The payments benchmark.
#[derive(Debug, Clone, Args)]
pub(crate) struct PaymentsArgs {
    /// PostgreSQL server to create the fresh benchmark database on (dropped after). Without
    /// it, libpq's PG* environment as `pg_virtualenv` sets it. Never printed.
    #[arg(long, env = "PARKD_BENCH_DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// Cars that pay at the exit (the 300-spot garage takes about 200 walk-in cars: the
    /// accessible, EV and large bays are kept for those who need them).
    #[arg(long, default_value_t = 200)]
    pub(crate) cars: usize,
    /// Cars at the exit at once, one run of `--cars` cars per value (comma-separated): a
    /// 300-spot garage has one or two exit lanes, so 1 and 4 are its load; 20 is a stress
    /// level far beyond it.
    #[arg(long, value_delimiter = ',', default_value = "1,4,20")]
    pub(crate) concurrency: Vec<usize>,
    /// Reservations paid by concurrent retries.
    #[arg(long, default_value_t = 200)]
    pub(crate) reservations: usize,
    /// Identical requests at once per reservation.
    #[arg(long, default_value_t = 3)]
    pub(crate) retries: usize,
    /// Worker threads of parkd's tokio runtime.
    #[arg(long, default_value_t = 2)]
    pub(crate) parkd_threads: usize,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Run even in a debug build of parkd-bench.
    #[arg(long)]
    pub(crate) allow_debug: bool,
}

/// The availability (REST read) benchmark.
#[derive(Debug, Clone, Args)]
pub(crate) struct AvailabilityArgs {
    /// Worker threads of parkd's tokio runtime.
    #[arg(long, default_value_t = 2)]
    pub(crate) parkd_threads: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    pub(crate) connections: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    pub(crate) wrk_threads: usize,
    /// Length of each measured wrk run (whole seconds).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Length of the discarded wrk run before each measured one (0s: none).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Measured runs of the availability endpoint (the summary gives the median).
    #[arg(long, default_value_t = 3)]
    pub(crate) repeats: usize,
    /// Only the availability endpoint (not `/api/v1/lots`, `.../spots` and `/healthz`).
    #[arg(long)]
    pub(crate) skip_secondary: bool,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Run even in a debug build.
    #[arg(long)]
    pub(crate) allow_debug: bool,
}

/// The WebSocket fan-out benchmark.
#[derive(Debug, Clone, Args)]
pub(crate) struct LiveWsArgs {
    /// Steps of the ladder, CLIENTSxCHANGES_PER_S, comma-separated or repeated.
    #[arg(
        long = "steps",
        value_delimiter = ',',
        value_parser = live_ws::parse_step,
        default_value = "1000x20,1000x50,1000x100,1000x200,1000x500,1000x1000,100x1000,100x2000,100x5000,100x10000"
    )]
    pub(crate) steps: Vec<live_ws::Step>,
    /// Runs of each step.
    #[arg(long, default_value_t = 1)]
    pub(crate) repeats: usize,
    /// Spots in the lot (one registered sensor each).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) spots: u32,
    /// Measured time of each step, after the warm-up.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Publishing before the measured window.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// MQTT connections of the publisher.
    #[arg(long, default_value_t = 4)]
    pub(crate) publishers: usize,
    /// parkd's `live.frame_interval_ms` (least time between two writes of deltas to one
    /// client); the product's default if not given. 0 = a write per change.
    #[arg(long)]
    pub(crate) frame_interval_ms: Option<u64>,
    /// Worker threads of parkd's tokio runtime.
    #[arg(long, default_value_t = 2)]
    pub(crate) parkd_threads: usize,
    /// Worker threads of the load runtime (clients and publishers).
    #[arg(long, default_value_t = 2)]
    pub(crate) load_threads: usize,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Run even in a debug build.
    #[arg(long)]
    pub(crate) allow_debug: bool,
}

/// The 100,000-spot benchmark.
#[derive(Debug, Clone, Args)]
pub(crate) struct ScaleArgs {
    /// Spots of the big lot (10 levels).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) spots: u32,
    /// Readings per second offered when every spot gets its reading.
    #[arg(long, default_value_t = 20_000.0)]
    pub(crate) feed_rate: f64,
    /// Worker threads of parkd's tokio runtime.
    #[arg(long, default_value_t = 2)]
    pub(crate) parkd_threads: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    pub(crate) connections: usize,
    /// Length of each measured wrk run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Discarded wrk run before each measured one.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Rounds of reads (small lot, then big lot, each round).
    #[arg(long, default_value_t = 3)]
    pub(crate) repeats: usize,
    /// In-process `availability()` calls per round.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) calls: usize,
    /// Timed `tick` calls with every spot fresh.
    #[arg(long, default_value_t = 20)]
    pub(crate) ticks: usize,
    /// WebSocket clients of the big lot connecting at once (each gets a snapshot).
    #[arg(long, default_value_t = 10)]
    pub(crate) ws_clients: usize,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Run even in a debug build.
    #[arg(long)]
    pub(crate) allow_debug: bool,
}

/// The reservations benchmark.
#[derive(Debug, Clone, Args)]
pub(crate) struct ReservationsArgs {
    /// Store backend (PostgreSQL is the target; SQLite for comparison).
    #[arg(long, value_enum, default_value = "postgres")]
    pub(crate) backend: Backend,
    /// PostgreSQL server to create the fresh benchmark database on (dropped after). Without
    /// it, libpq's PG* environment as `pg_virtualenv` sets it. Never printed.
    #[arg(long, env = "PARKD_BENCH_DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// Concurrent clients (drivers), each on its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    pub(crate) clients: usize,
    /// Measured time, after the warm-up.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Booking before the measured window.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Open loop: requests per second offered by all clients together, on a fixed schedule
    /// (latency from the scheduled send time). Default: closed loop, each client sends its
    /// next request as soon as the answer is in.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Spots of the lot (the demo garage's layout, 100 per level).
    #[arg(long, default_value_t = 300)]
    pub(crate) spots: u32,
    /// Latest entry, days ahead [default: reservations.max_advance_days - 1, i.e. 89].
    #[arg(long)]
    pub(crate) horizon_days: Option<u32>,
    /// parkd's PostgreSQL pool size, `database.pool_size` [default: parkd's, 2 per core, 4 to 16].
    #[arg(long)]
    pub(crate) pool_size: Option<usize>,
    /// Worker threads of parkd's tokio runtime.
    #[arg(long, default_value_t = 2)]
    pub(crate) parkd_threads: usize,
    /// Worker threads of the clients' runtime.
    #[arg(long, default_value_t = 2)]
    pub(crate) load_threads: usize,
    /// Seed of the requested times.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Allocation attempts timed in-process after the run.
    #[arg(long, default_value_t = 500)]
    pub(crate) probes: usize,
    /// Under `bench/prio.sh`, leave a local PostgreSQL's processes at their own scheduler
    /// priority instead of giving them the benchmark's (each backend is an autogroup of its
    /// own at nice 0).
    #[arg(long)]
    pub(crate) leave_postgres_priority: bool,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Run even in a debug build.
    #[arg(long)]
    pub(crate) allow_debug: bool,
}

/// The login benchmark.
#[derive(Debug, Clone, Args)]
pub(crate) struct LoginsArgs {
    /// Store backend.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub(crate) backend: Backend,
    /// PostgreSQL server for `--backend postgres` (see `reservations --help`). Never printed.
    #[arg(long, env = "PARKD_BENCH_DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// Concurrent clients, each with its own account and keep-alive connection.
    #[arg(long, default_value_t = 20)]
    pub(crate) clients: usize,
    /// Measured time, after the warm-up.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Logging in before the measured window.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// One client alone first, for this long (0s: skip).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) baseline: Duration,
    /// Experiment: `auth.hash_concurrency` [default: parkd's, the number of cores].
    #[arg(long)]
    pub(crate) hash_concurrency: Option<usize>,
    /// Worker threads of parkd's tokio runtime.
    #[arg(long, default_value_t = 2)]
    pub(crate) parkd_threads: usize,
    /// Worker threads of the clients' runtime.
    #[arg(long, default_value_t = 1)]
    pub(crate) load_threads: usize,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Run even in a debug build.
    #[arg(long)]
    pub(crate) allow_debug: bool,
}

/// The gate latency benchmark.
#[derive(Debug, Clone, Args)]
pub(crate) struct GatesArgs {
    /// PostgreSQL server to create the fresh benchmark database on (dropped after). Without
    /// it, libpq's PG* environment as `pg_virtualenv` sets it. Never printed.
    #[arg(long, env = "PARKD_BENCH_DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// Gates in all (MQTT clients, each a registered gate with its own secret).
    #[arg(long, default_value_t = 50)]
    pub(crate) gates: usize,
    /// Of those, entry gates; the others are exit gates [default: half].
    #[arg(long)]
    pub(crate) entry_gates: Option<usize>,
    /// Requests per second of each gate (on average: the gap between two requests is drawn
    /// uniformly within ±`--jitter` of its mean).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) rate: f64,
    /// Relative jitter of the gap between two requests of a gate (0.5: 0.5 to 1.5 mean gaps).
    #[arg(long, default_value_t = 0.5)]
    pub(crate) jitter: f64,
    /// Spots of the lot (the demo garage's layout, 100 per level; one sensor each).
    #[arg(long, default_value_t = 300)]
    pub(crate) spots: u32,
    /// Measured time, after the warm-up.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Gates running before the measured window.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Share of entry requests by a driver who booked through the REST API.
    #[arg(long, default_value_t = 0.12)]
    pub(crate) reserved_share: f64,
    /// Share of those drivers who show the reservation's code (the others are recognised by
    /// their plate).
    #[arg(long, default_value_t = 0.5)]
    pub(crate) code_share: f64,
    /// Share of entry requests showing a code no reservation has.
    #[arg(long, default_value_t = 0.04)]
    pub(crate) unknown_code_share: f64,
    /// Share of admitted cars that park elsewhere than assigned (the platform reconciles).
    #[arg(long, default_value_t = 0.05)]
    pub(crate) elsewhere_share: f64,
    /// Shortest stay of a car in its spot (real time).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) stay_min: Duration,
    /// Longest stay of a car in its spot (real time; uniform between the two).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) stay_max: Duration,
    /// Driver accounts made through the API for the reservations.
    #[arg(long, default_value_t = 4)]
    pub(crate) drivers: usize,
    /// Vehicles per driver account (parkd allows 20).
    #[arg(long, default_value_t = 20)]
    pub(crate) vehicles_per_driver: usize,
    /// Reservations kept booked ahead of the cars that come on them.
    #[arg(long, default_value_t = 6)]
    pub(crate) booked_ahead: usize,
    /// A gate asks again (same request id) after this long without an answer.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) request_timeout: Duration,
    /// Requests per car and gate (the first and the repeats), as a real gate.
    #[arg(long, default_value_t = 5)]
    pub(crate) attempts: u32,
    /// No probe gate (one more gate, 1 request/s of an invalid payload, answered `bad_request`
    /// without the database: the broker and queue share of the latency).
    #[arg(long)]
    pub(crate) no_probe: bool,
    /// parkd's PostgreSQL pool size, `database.pool_size` [default: parkd's, 2 per core, 4 to 16].
    #[arg(long)]
    pub(crate) pool_size: Option<usize>,
    /// Worker threads of parkd's tokio runtime.
    #[arg(long, default_value_t = 2)]
    pub(crate) parkd_threads: usize,
    /// Worker threads of the load runtime (gates, sensors, cars, drivers).
    #[arg(long, default_value_t = 2)]
    pub(crate) load_threads: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Under `bench/prio.sh`, leave a local PostgreSQL's processes at their own scheduler
    /// priority instead of giving them the benchmark's.
    #[arg(long)]
    pub(crate) leave_postgres_priority: bool,
    /// Experiment: `synchronous_commit = off` for the bench database (a commit returns before
    /// its WAL is flushed): the gate path without waiting for the disk. Not parkd as shipped;
    /// the report says so.
    #[arg(long)]
    pub(crate) experiment_async_commit: bool,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Run even in a debug build.
    #[arg(long)]
    pub(crate) allow_debug: bool,
}

/// `seed-lot`: `demo_garage(lot, levels, per_level)` into the SQLite store of `data_dir`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SeedLotArgs {
    #[arg(long)]
    pub(crate) data_dir: PathBuf,
    #[arg(long)]
    pub(crate) lot: String,
    #[arg(long)]
    pub(crate) levels: u32,
    #[arg(long)]
    pub(crate) per_level: u32,
}

/// `ws-snapshots`: `clients` WebSocket clients of `url` connect at once and read their
/// first message; prints `clients bytes elapsed_ms`.
#[derive(Debug, Clone, Args)]
pub(crate) struct WsSnapshotsArgs {
    #[arg(long)]
    pub(crate) url: String,
    #[arg(long)]
    pub(crate) clients: usize,
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    parkd_sim::duration::parse_duration(raw).map_err(|e| e.to_string())
}

/// Whether this binary is an optimized build; a debug build refuses unless told otherwise.
fn check_profile(allow_debug: bool) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        if !allow_debug {
            bail!(
                "parkd-bench is a debug build: its figures would be meaningless. \
                 Run `cargo run --release -p parkd-bench -- ...` (or pass --allow-debug)"
            );
        }
        eprintln!("WARNING: DEBUG BUILD: these figures are NOT representative (--allow-debug)");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttd=off")),
        )
        .init();
    match cli.command {
        Some(Command::Demo(args)) => {
            check_profile(args.allow_debug)?;
            let markdown = demo::run(&args)?;
            emit(&markdown, args.out.as_ref())
        }
        Some(Command::Availability(args)) => {
            check_profile(args.allow_debug)?;
            let markdown = availability::run(&args)?;
            emit(&markdown, args.out.as_ref())
        }
        Some(Command::LiveWs(args)) => {
            check_profile(args.allow_debug)?;
            let markdown = live_ws::run(&args)?;
            emit(&markdown, args.out.as_ref())
        }
        Some(Command::Reservations(args)) => {
            check_profile(args.allow_debug)?;
            let markdown = reservations::run(&args)?;
            emit(&markdown, args.out.as_ref())
        }
        Some(Command::Logins(args)) => {
            check_profile(args.allow_debug)?;
            let markdown = logins::run(&args)?;
            emit(&markdown, args.out.as_ref())
        }
        Some(Command::Gates(args)) => {
            check_profile(args.allow_debug)?;
            let markdown = gates::run(&args)?;
            emit(&markdown, args.out.as_ref())
        }
        Some(Command::Payments(args)) => {
            check_profile(args.allow_debug)?;
            let markdown = payments::run(&args)?;
            emit(&markdown, args.out.as_ref())
        }
        Some(Command::SeedLot(args)) => scale::seed_lot(&args),
        Some(Command::WsSnapshots(args)) => scale::ws_snapshots_child(&args),
        Some(Command::Scale(args)) => {
            check_profile(args.allow_debug)?;
            let markdown = scale::run(&args)?;
            emit(&markdown, args.out.as_ref())
        }
        None => {
            let args = cli.ingest;
            check_profile(args.allow_debug)?;
            if args.stores.is_empty() {
                bail!("give --store sqlite and/or --store postgres");
            }
            let cpus = std::thread::available_parallelism().map_or(2, usize::from);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.parkd_threads.unwrap_or(cpus).max(1))
                .thread_name("parkd")
                .enable_all()
                .build()
                .context("starting the parkd runtime")?;
            let load_runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.load_threads.max(1))
                .thread_name("loadgen")
                .enable_all()
                .build()
                .context("starting the load generator runtime")?;
            let markdown = runtime.block_on(ingest::run_all(&args, load_runtime.handle()))?;
            // Shut down outside any async context; rumqttd's router threads have no shutdown
            // and end with the process.
            load_runtime.shutdown_timeout(Duration::from_secs(5));
            runtime.shutdown_timeout(Duration::from_secs(5));
            emit(&markdown, args.out.as_ref())
        }
    }
}

/// Prints the report and writes it to `out` when given.
fn emit(markdown: &str, out: Option<&PathBuf>) -> anyhow::Result<()> {
    println!("{markdown}");
    if let Some(path) = out {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(path, markdown).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}
