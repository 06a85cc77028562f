//! `parkd-bench reservations`: N concurrent drivers creating reservations through the HTTP
//! API, on PostgreSQL (the target) or SQLite, then a check over the whole table that no two
//! holding reservations of one spot overlap.
//!
//! One process: parkd ([`RunningApp`], serve mode, no simulator) on a runtime of
//! `--parkd-threads` (2) workers named `parkd`; the clients on another (`--load-threads`, 2,
//! `loadgen`). Before parkd starts, a demo garage of `--spots` (300) spots is imported into a
//! fresh store (parkd loads lots when it starts). Then, through the API, every client
//! registers a driver, logs in and adds one vehicle (a fixed mix of cars, compacts, EVs,
//! vans, motorcycles and permit holders). Then each client, on its own keep-alive HTTP/1.1
//! connection, posts `POST /api/v1/reservations` in a closed loop (the next request when the
//! answer is in) with a unique `Idempotency-Key`, its vehicle, an entry on a random quarter
//! hour between now and the booking horizon and a stay of 30 min to 4 h: `--warmup` (5 s),
//! then the measured window (`--duration`, 20 s). Latency = send → last byte of the answer.
//!
//! During the window, on PostgreSQL: `pg_stat_activity` of the bench database is sampled every
//! 100 ms (what parkd's pooled connections are doing: on CPU, waiting on a lock or the WAL,
//! idle in a transaction while parkd works, idle in the pool), and the CPU of every
//! PostgreSQL process is read from `/proc`. After the run: the double-booking check (an
//! explicit self-join over the whole table, with index scans off so the exclusion
//! constraint's index plays no part), and, in-process, what one allocation costs (the
//! bookings around the request from parkd's in-memory book, the timelines, `allocate`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use parkd::app::{Mode, RunningApp};
use parkd_core::allocation::{Candidate, Interval, Policy, Request, Timeline, allocate};
use parkd_core::garage::{Lot, Spot};
use parkd_core::vehicle::fits;
use parkd_store::Store;
use tokio_postgres::NoTls;

use crate::cpu::{CpuSnapshot, CpuUsage};
use crate::drivers::{self, Rng, StoreSetup, VehicleSpec};
use crate::hist::Histogram;
use crate::http1::Connection;
use crate::machine::RunHeader;
use crate::report::thousands;
use crate::report::verdict;
use crate::server::{self, label, metric_sum};
use crate::{Backend, ReservationsArgs};

/// The issue's targets.
const CREATED_TARGET: f64 = 2_000.0;
const P99_TARGET_MS: f64 = 20.0;
const TARGET_CLIENTS: usize = 64;
const ISSUE_TARGET: &str = "64 concurrent clients creating reservations on PostgreSQL: at \
     least 2,000 reservations/s with p99 under 20 ms, and zero double bookings (checked \
     afterwards by a query over the whole table).";
/// The states that hold a spot (docs/reservations.md).
const HOLDING: &str = "('requested', 'confirmed', 'checked_in')";
/// Bookings this far either side of a request are read by parkd's allocation (its
/// `CONTEXT_HOURS`); the in-process probe reads the same.
const CONTEXT_HOURS: i64 = 12;
/// A stay is 2 to 16 quarter hours (30 min to 4 h).
const QUARTER_S: i64 = 900;
const MIN_QUARTERS: i64 = 2;
const MAX_QUARTERS: i64 = 16;
/// The route label of parkd's HTTP metrics.
const ROUTE: &str = "/api/v1/reservations";

/// The vehicle of client `i`: per 64 clients, 40 cars, 10 compacts, 6 EVs, 3 vans,
/// 3 motorcycles and 2 permit holders, roughly the demo garage's bays.
fn vehicle_of(i: usize) -> VehicleSpec {
    let spec = |class, ev, accessible| VehicleSpec {
        class,
        ev,
        accessible,
    };
    match i % 64 {
        0..=39 => spec("car", false, false),
        40..=49 => spec("compact", false, false),
        50..=55 => spec("car", true, false),
        56..=58 => spec("van", false, false),
        59..=61 => spec("motorcycle", false, false),
        _ => spec("car", false, true),
    }
}

/// When and how the clients run.
#[derive(Debug)]
struct Plan {
    lot: String,
    tag: String,
    seed: u64,
    /// Latest entry, from now.
    horizon: chrono::Duration,
    start: Instant,
    warm_end: Instant,
    end: Instant,
    timeout: Duration,
    /// Open loop (`--rate`): each client sends one request every `interval`, client `i`
    /// offset by i/clients of it; latency counts from the intended send time. `None`: closed
    /// loop.
    interval: Option<Duration>,
    clients: usize,
}

impl Plan {
    /// Entry on a quarter hour from 15 to 30 min ahead up to the horizon; a stay of 30 min to
    /// 4 h in quarter hours.
    fn times(&self, rng: &mut Rng, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let first = now.timestamp().div_euclid(QUARTER_S) * QUARTER_S + 2 * QUARTER_S;
        let slots = (self.horizon.num_seconds() / QUARTER_S).max(1);
        let start = first + rng.below(slots.unsigned_abs()) as i64 * QUARTER_S;
        let quarters =
            MIN_QUARTERS + rng.below((MAX_QUARTERS - MIN_QUARTERS + 1).unsigned_abs()) as i64;
        let at = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or(now);
        (at(start), at(start + quarters * QUARTER_S))
    }
}

/// One outcome's count and latencies.
#[derive(Debug, Clone, Default)]
struct Outcome {
    count: u64,
    hist: Histogram,
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientStats {
    /// Every answer completed in the measured window.
    all: Histogram,
    /// By (status, problem kind or `created`), measured window.
    outcomes: BTreeMap<(u16, String), Outcome>,
    /// Transport errors and timeouts in the measured window.
    errors: u64,
    /// The same over the whole run, and requests and 201s over the whole run (warm-up and
    /// requests finishing after the window included): every 201 must be a row.
    errors_all: u64,
    requests_all: u64,
    created_all: u64,
    first_error: Option<String>,
    connects: u64,
    /// 201 answers by the second (since the start of the load) they completed in.
    created_by_second: Vec<u64>,
}

impl ClientStats {
    fn merge(&mut self, other: ClientStats) {
        self.all.merge(&other.all);
        for (key, outcome) in other.outcomes {
            let entry = self.outcomes.entry(key).or_default();
            entry.count += outcome.count;
            entry.hist.merge(&outcome.hist);
        }
        self.errors += other.errors;
        self.errors_all += other.errors_all;
        self.requests_all += other.requests_all;
        self.created_all += other.created_all;
        self.connects += other.connects;
        if self.created_by_second.len() < other.created_by_second.len() {
            self.created_by_second
                .resize(other.created_by_second.len(), 0);
        }
        for (sum, n) in self
            .created_by_second
            .iter_mut()
            .zip(&other.created_by_second)
        {
            *sum += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn count(&self, status: u16) -> u64 {
        self.outcomes
            .iter()
            .filter(|((s, _), _)| *s == status)
            .map(|(_, o)| o.count)
            .sum()
    }

    fn count_where(&self, keep: impl Fn(u16) -> bool) -> u64 {
        self.outcomes
            .iter()
            .filter(|((s, _), _)| keep(*s))
            .map(|(_, o)| o.count)
            .sum()
    }
}

/// A driver ready to book: its connection, token and vehicle.
struct Driver {
    connection: Connection,
    token: String,
    vehicle_id: String,
}

async fn enrol(addr: SocketAddr, tag: String, i: usize) -> anyhow::Result<Driver> {
    let mut connection = Connection::open(addr).await?;
    let (email, password) = drivers::credentials(&tag, i);
    drivers::register(&mut connection, &email, &password).await?;
    let token = drivers::login(&mut connection, &email, &password).await?;
    let plate = format!("B-{tag}-{i}");
    let vehicle_id = drivers::add_vehicle(&mut connection, &token, &plate, vehicle_of(i)).await?;
    Ok(Driver {
        connection,
        token,
        vehicle_id,
    })
}

async fn book(mut driver: Driver, i: usize, plan: Arc<Plan>) -> ClientStats {
    let mut stats = ClientStats::default();
    let mut rng = Rng::new(plan.seed ^ (i as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let bearer = format!("Bearer {}", driver.token);
    tokio::time::sleep_until(plan.start.into()).await;
    let mut due = plan
        .interval
        .map(|interval| plan.start + interval.mul_f64(i as f64 / plan.clients.max(1) as f64));
    let mut n = 0u64;
    loop {
        // The intended send time: now (closed loop) or the schedule's (open loop, so that a
        // slow answer delays the next request's clock too: no coordinated omission).
        let intended = match due {
            Some(at) => {
                if at >= plan.end {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => {
                let now = Instant::now();
                if now >= plan.end {
                    break;
                }
                now
            }
        };
        if let (Some(at), Some(interval)) = (due.as_mut(), plan.interval) {
            *at += interval;
        }
        n += 1;
        let key = format!("bench-{}-{i}-{n}", plan.tag);
        let (starts_at, ends_at) = plan.times(&mut rng, Utc::now());
        let body = format!(
            r#"{{"lot":"{}","vehicle_id":"{}","starts_at":"{}","ends_at":"{}"}}"#,
            plan.lot,
            driver.vehicle_id,
            starts_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            ends_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        let sent = intended;
        let result = tokio::time::timeout(
            plan.timeout,
            driver.connection.send(
                "POST",
                ROUTE,
                &[("Authorization", &bearer), ("Idempotency-Key", &key)],
                body.as_bytes(),
            ),
        )
        .await;
        let done = Instant::now();
        let measured = done >= plan.warm_end && done < plan.end;
        let micros = (done - sent).as_micros() as u64;
        stats.requests_all += 1;
        match result {
            Ok(Ok(answer)) => {
                if answer.status == 201 {
                    stats.created_all += 1;
                    let second = done.saturating_duration_since(plan.start).as_secs() as usize;
                    if stats.created_by_second.len() <= second {
                        stats.created_by_second.resize(second + 1, 0);
                    }
                    stats.created_by_second[second] += 1;
                }
                if measured {
                    let kind = if answer.status == 201 {
                        "created".to_owned()
                    } else {
                        answer.problem_kind()
                    };
                    let outcome = stats.outcomes.entry((answer.status, kind)).or_default();
                    outcome.count += 1;
                    outcome.hist.record(micros);
                    stats.all.record(micros);
                }
            }
            failed => {
                let error = match failed {
                    Ok(Err(error)) => format!("{error:#}"),
                    _ => format!("no answer within {} s", plan.timeout.as_secs()),
                };
                driver.connection.reset();
                stats.errors_all += 1;
                if measured {
                    stats.errors += 1;
                }
                if stats.first_error.is_none() {
                    stats.first_error = Some(error);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    stats.connects = driver.connection.connects;
    stats
}

/// Counters of the bench database and the server at one instant.
#[derive(Debug, Clone, Default)]
struct PgCounters {
    commits: i64,
    rollbacks: i64,
    deadlocks: i64,
    inserted: i64,
    /// `pg_stat_wal`: records, bytes, writes, syncs (PostgreSQL 14+).
    wal: Option<[i64; 4]>,
    /// CPU ticks of every PostgreSQL process, by pid; `None` if one could not be read (a
    /// server on another machine).
    ticks: Option<BTreeMap<i32, ProcTicks>>,
}

/// One server process: what it is, its user and system CPU ticks.
#[derive(Debug, Clone, Default)]
struct ProcTicks {
    kind: String,
    user: u64,
    system: u64,
}

/// `(utime, stime)` from `/proc/PID/stat`, for a process named `postgres`.
fn postgres_ticks(pid: i32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (name, _) = crate::cpu::parse_stat(&stat)?;
    if !name.starts_with("postgres") {
        return None;
    }
    // After the `(comm)`: field 3 (state) is index 0, utime (14) is 11, stime (15) is 12.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// A statement as `pg_stat_statements` counted it in the window.
#[derive(Debug, Clone)]
struct Statement {
    calls: i64,
    total_ms: f64,
    rows: i64,
    query: String,
}

/// What PostgreSQL did during the measured window.
#[derive(Debug)]
struct PgWindow {
    before: PgCounters,
    after: PgCounters,
    samples: u64,
    /// Sampled states of parkd's connections to the bench database: class → occurrences.
    classes: BTreeMap<String, u64>,
    /// Connections of the bench database seen per sample, summed.
    connections: u64,
    error: Option<String>,
    /// The autogroup nice value given to PostgreSQL's processes (the benchmark's own), and
    /// how many were changed / could not be.
    lift: Option<i32>,
    lifted: u64,
    lift_failed: u64,
    /// PostgreSQL's processes by autogroup nice value when the window started.
    nice_at_start: BTreeMap<i32, u64>,
    /// The window's statements of the bench database, when the server has
    /// `pg_stat_statements` loaded; otherwise why not.
    statements: Result<Vec<Statement>, String>,
}

impl Default for PgWindow {
    fn default() -> Self {
        PgWindow {
            before: PgCounters::default(),
            after: PgCounters::default(),
            samples: 0,
            classes: BTreeMap::new(),
            connections: 0,
            error: None,
            lift: None,
            lifted: 0,
            lift_failed: 0,
            nice_at_start: BTreeMap::new(),
            statements: Err("not read".to_owned()),
        }
    }
}

impl PgWindow {
    /// CPU of the server's processes in the window, in cores, by kind: (kind, user, system).
    fn cpu_by_kind(&self, wall_s: f64) -> Option<Vec<(String, f64, f64)>> {
        let (Some(before), Some(after)) = (&self.before.ticks, &self.after.ticks) else {
            return None;
        };
        if wall_s <= 0.0 {
            return None;
        }
        let mut by_kind: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (pid, t) in after {
            let (user0, system0) = before.get(pid).map_or((0, 0), |b| (b.user, b.system));
            let entry = by_kind.entry(t.kind.as_str()).or_default();
            entry.0 += t.user.saturating_sub(user0);
            entry.1 += t.system.saturating_sub(system0);
        }
        let cores = |ticks: u64| ticks as f64 / 100.0 / wall_s;
        let mut out: Vec<(String, f64, f64)> = by_kind
            .into_iter()
            .map(|(kind, (user, system))| (kind.to_owned(), cores(user), cores(system)))
            .collect();
        out.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)));
        Some(out)
    }

    fn cpu_cores(&self, wall_s: f64) -> Option<f64> {
        self.cpu_by_kind(wall_s)
            .map(|kinds| kinds.iter().map(|(_, u, s)| u + s).fold(0.0, |a, b| a + b))
    }
}

async fn pg_counters(client: &tokio_postgres::Client) -> anyhow::Result<PgCounters> {
    let row = client
        .query_one(
            "SELECT xact_commit, xact_rollback, deadlocks, tup_inserted FROM pg_stat_database
             WHERE datname = current_database()",
            &[],
        )
        .await?;
    let mut counters = PgCounters {
        commits: row.try_get(0)?,
        rollbacks: row.try_get(1)?,
        deadlocks: row.try_get(2)?,
        inserted: row.try_get(3)?,
        ..PgCounters::default()
    };
    if let Ok(row) = client
        .query_one(
            "SELECT wal_records, wal_bytes::bigint, wal_write, wal_sync FROM pg_stat_wal",
            &[],
        )
        .await
    {
        counters.wal = Some([
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        ]);
    }
    let pids = client
        .query(
            "SELECT pid, CASE
                 WHEN pid = pg_backend_pid() THEN 'the benchmark''s monitor'
                 WHEN backend_type <> 'client backend' THEN backend_type
                 WHEN datname = current_database() THEN 'parkd''s connections'
                 ELSE 'other connections' END
             FROM pg_stat_activity",
            &[],
        )
        .await?;
    let mut ticks = BTreeMap::new();
    let mut readable = true;
    for row in pids {
        let pid: i32 = row.try_get(0)?;
        let kind: String = row.try_get(1)?;
        match postgres_ticks(pid) {
            Some((user, system)) => {
                ticks.insert(pid, ProcTicks { kind, user, system });
            }
            None => readable = false,
        }
    }
    counters.ticks = readable.then_some(ticks);
    Ok(counters)
}

fn classify(state: &str, wait_type: &str, wait: &str) -> String {
    match (state, wait_type) {
        ("active", "") => "active, on CPU (no wait event)".to_owned(),
        ("active", _) => format!("active, waiting on {wait_type}: {wait}"),
        ("idle in transaction", _) => {
            "idle in transaction (waiting for parkd between two statements of a transaction)"
                .to_owned()
        }
        ("idle", _) => "idle (between requests, in parkd's pool)".to_owned(),
        (other, _) => format!("{other} ({wait_type}: {wait})"),
    }
}

/// Gives every process of the server (by `pg_stat_activity`, on this machine) the scheduler
/// autogroup nice value `nice`: PostgreSQL makes each backend a session, and so an autogroup,
/// of its own at nice 0, which a benchmark under `bench/prio.sh` (autogroup nice -10) would
/// otherwise outweigh about nine to one whenever both want the CPU. Returns (changed, failed).
async fn lift_postgres(client: &tokio_postgres::Client, nice: i32) -> anyhow::Result<(u64, u64)> {
    let (mut changed, mut failed) = (0, 0);
    for row in client
        .query("SELECT pid FROM pg_stat_activity", &[])
        .await?
    {
        let pid: i32 = row.try_get(0)?;
        let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim() == "postgres");
        if !is_postgres || drivers::autogroup_nice(pid) == Some(nice) {
            continue;
        }
        match std::fs::write(format!("/proc/{pid}/autogroup"), nice.to_string()) {
            Ok(()) => changed += 1,
            Err(_) => failed += 1,
        }
    }
    Ok((changed, failed))
}

/// PostgreSQL's processes by autogroup nice value.
async fn postgres_nice(client: &tokio_postgres::Client) -> anyhow::Result<BTreeMap<i32, u64>> {
    let mut out = BTreeMap::new();
    for row in client
        .query("SELECT pid FROM pg_stat_activity", &[])
        .await?
    {
        let pid: i32 = row.try_get(0)?;
        if let Some(nice) = drivers::autogroup_nice(pid) {
            *out.entry(nice).or_default() += 1;
        }
    }
    Ok(out)
}

/// Whether the server has `pg_stat_statements` loaded (`pg_virtualenv -o
/// shared_preload_libraries=pg_stat_statements`); creates the extension in the bench
/// database if so.
async fn statements_available(client: &tokio_postgres::Client) -> Result<(), String> {
    let loaded: String = client
        .query_one("SHOW shared_preload_libraries", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| e.to_string())?;
    if !loaded.contains("pg_stat_statements") {
        return Err(
            "the server does not load pg_stat_statements (`pg_virtualenv -o \
                    shared_preload_libraries=pg_stat_statements` does)"
                .to_owned(),
        );
    }
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .map_err(|e| format!("CREATE EXTENSION pg_stat_statements: {e}"))
}

/// The window's statements of the bench database (not the monitor's own).
async fn read_statements(client: &tokio_postgres::Client) -> anyhow::Result<Vec<Statement>> {
    let rows = client
        .query(
            "SELECT calls, total_exec_time, rows, query FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND query NOT ILIKE '%pg_stat%' AND query NOT ILIKE '%pg_backend_pid%'
             ORDER BY total_exec_time DESC",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for row in rows {
        let query: String = row.try_get(3)?;
        out.push(Statement {
            calls: row.try_get(0)?,
            total_ms: row.try_get(1)?,
            rows: row.try_get(2)?,
            query: query.split_whitespace().collect::<Vec<_>>().join(" "),
        });
    }
    Ok(out)
}

/// On a thread of its own (so the clients' and parkd's workers do not delay it): when `lift`
/// is given, PostgreSQL's processes get that autogroup nice value at `start` and again at
/// `from` (for connections opened meanwhile); counters at `from`, `pg_stat_activity` every
/// 100 ms until `to`, counters again.
fn pg_monitor(
    url: String,
    start: Instant,
    from: Instant,
    to: Instant,
    lift: Option<i32>,
) -> std::thread::JoinHandle<PgWindow> {
    let run = move || {
        let mut window = PgWindow::default();
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                window.error = Some(error.to_string());
                return window;
            }
        };
        let outcome = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
            tokio::spawn(connection);
            client
                .batch_execute("SET application_name = 'parkd-bench-monitor'")
                .await?;
            window.lift = lift;
            if let Some(nice) = lift {
                tokio::time::sleep_until(start.into()).await;
                let (changed, failed) = lift_postgres(&client, nice).await?;
                tokio::time::sleep_until(from.into()).await;
                let (changed_late, failed_late) = lift_postgres(&client, nice).await?;
                window.lifted = changed + changed_late;
                window.lift_failed = failed + failed_late;
            }
            let statements = statements_available(&client).await;
            tokio::time::sleep_until(from.into()).await;
            window.nice_at_start = postgres_nice(&client).await?;
            if statements.is_ok() {
                client
                    .batch_execute("SELECT pg_stat_statements_reset()")
                    .await?;
            }
            window.before = pg_counters(&client).await?;
            let sample = client
                .prepare(
                    "SELECT coalesce(state, ''), coalesce(wait_event_type, ''),
                            coalesce(wait_event, '')
                     FROM pg_stat_activity
                     WHERE datname = current_database() AND backend_type = 'client backend'
                       AND pid <> pg_backend_pid()
                       AND application_name <> 'parkd-bench-monitor'",
                )
                .await?;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < to {
                tick.tick().await;
                let rows = client.query(&sample, &[]).await?;
                window.samples += 1;
                window.connections += rows.len() as u64;
                for row in rows {
                    let state: String = row.try_get(0)?;
                    let wait_type: String = row.try_get(1)?;
                    let wait: String = row.try_get(2)?;
                    *window
                        .classes
                        .entry(classify(&state, &wait_type, &wait))
                        .or_default() += 1;
                }
            }
            window.after = pg_counters(&client).await?;
            window.statements = match statements {
                Ok(()) => read_statements(&client).await.map_err(|e| format!("{e:#}")),
                Err(why) => Err(why),
            };
            Ok::<_, anyhow::Error>(())
        });
        if let Err(error) = outcome {
            window.error = Some(format!("{error:#}"));
        }
        window
    };
    std::thread::Builder::new()
        .name("pgmon".to_owned())
        .spawn(run)
        .unwrap_or_else(|_| std::thread::spawn(PgWindow::default))
}

/// The double-booking check and the table's figures.
#[derive(Debug, Default)]
struct Check {
    query: String,
    /// Pairs of holding reservations of one spot whose ranges overlap.
    overlaps: i64,
    examples: Vec<String>,
    elapsed: Duration,
    plan: Vec<String>,
    rows: i64,
    by_state: Vec<(String, i64)>,
    spots_used: i64,
    /// The spots with the most reservations: (spot, rows).
    top_spots: Vec<(String, i64)>,
}

/// The spots with the most reservations.
const TOP_SPOTS: &str = "SELECT spot_id, count(*) FROM reservations GROUP BY spot_id \
                         ORDER BY count(*) DESC, spot_id LIMIT 5";

fn overlap_sql(select: &str, limit: &str) -> String {
    format!(
        "SELECT {select}
FROM reservations a
JOIN reservations b
  ON b.lot_id = a.lot_id
 AND b.spot_id = a.spot_id
 AND b.reservation_id > a.reservation_id
 AND a.starts_at < b.ends_at
 AND b.starts_at < a.ends_at
WHERE a.state IN {HOLDING}
  AND b.state IN {HOLDING}{limit}"
    )
}

async fn check_postgres(url: &str) -> anyhow::Result<Check> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting for the double-booking check")?;
    let task = tokio::spawn(connection);
    // Read the heap, not the exclusion constraint's GiST index.
    client
        .batch_execute(
            "SET enable_indexscan = off; SET enable_bitmapscan = off; \
             SET enable_indexonlyscan = off",
        )
        .await?;
    let query = overlap_sql("count(*)", "");
    let mut check = Check {
        query: query.clone(),
        ..Check::default()
    };
    for row in client.query(&format!("EXPLAIN {query}"), &[]).await? {
        check.plan.push(row.try_get(0)?);
    }
    let started = Instant::now();
    let row = client.query_one(&query, &[]).await?;
    check.elapsed = started.elapsed();
    check.overlaps = row.try_get(0)?;
    if check.overlaps > 0 {
        let sql = overlap_sql(
            "a.lot_id || '/' || a.spot_id || ': ' || a.reservation_id || ' ' || \
             a.starts_at::text || '..' || a.ends_at::text || ' and ' || b.reservation_id || ' ' \
             || b.starts_at::text || '..' || b.ends_at::text",
            "\nLIMIT 5",
        );
        for row in client.query(&sql, &[]).await? {
            check.examples.push(row.try_get(0)?);
        }
    }
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT (lot_id, spot_id)) FROM reservations",
            &[],
        )
        .await?;
    check.rows = row.try_get(0)?;
    check.spots_used = row.try_get(1)?;
    for row in client
        .query(
            "SELECT state, count(*) FROM reservations GROUP BY state ORDER BY state",
            &[],
        )
        .await?
    {
        check.by_state.push((row.try_get(0)?, row.try_get(1)?));
    }
    for row in client.query(TOP_SPOTS, &[]).await? {
        check.top_spots.push((row.try_get(0)?, row.try_get(1)?));
    }
    drop(client);
    let _ = task.await;
    Ok(check)
}

/// The plans PostgreSQL gives the query shape of the store's `holding_between` (re-typed from
/// `store/src/postgres/reservations.rs`) on the full table, for one request of the run's shape:
/// generic (what a prepared statement gets once PostgreSQL settles on one) and custom.
async fn holding_plans(url: &str, lot: &str, plan: &Plan) -> anyhow::Result<Vec<String>> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to explain holding_between")?;
    let task = tokio::spawn(connection);
    let mut rng = Rng::new(plan.seed ^ 0x0E_E9_1A_17);
    let (starts_at, ends_at) = plan.times(&mut rng, Utc::now());
    let context = chrono::Duration::hours(CONTEXT_HOURS);
    let (from, to) = (
        (starts_at - context).to_rfc3339(),
        (ends_at + context).to_rfc3339(),
    );
    client
        .batch_execute(&format!(
            "PREPARE holding(text, timestamptz, timestamptz) AS
             SELECT reservation_id, code, user_id, vehicle_id, plate_key, vehicle_type, lot_id,
                    spot_id, starts_at, ends_at, state, created_at, updated_at
             FROM reservations
             WHERE lot_id = $1 AND state IN {HOLDING}
               AND tstzrange(starts_at, ends_at, '[)') && tstzrange($2, $3, '[)')
             ORDER BY spot_id, starts_at"
        ))
        .await?;
    let execute = format!(
        "EXECUTE holding('{}', '{from}', '{to}')",
        lot.replace('\'', "''")
    );
    let mut out = Vec::new();
    // Each plan is shown from its third execution in this session, so that loading the
    // operator classes and warming the caches is not in its time.
    let explain = |out: &mut Vec<String>, title: String| {
        out.push(title);
        format!("EXPLAIN (ANALYZE, BUFFERS) {execute}")
    };
    for mode in ["force_generic_plan", "force_custom_plan"] {
        client
            .batch_execute(&format!(
                "SET plan_cache_mode = {mode}; {execute}; {execute}"
            ))
            .await?;
        let sql = explain(
            &mut out,
            format!("-- shipped schema, plan_cache_mode = {mode}"),
        );
        for row in client.query(&sql, &[]).await? {
            out.push(row.try_get(0)?);
        }
    }
    drop(client);
    let _ = task.await;
    Ok(out)
}

/// SQLite's plans for the query shapes of the store's `holding_between` and of the overlap
/// check in `create_reservation` (re-typed from `store/src/sqlite/reservations.rs`).
fn sqlite_plans(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    use rusqlite::types::Value;
    let text = |t: &str| Value::Text(t.to_owned());
    let holding = format!(
        "SELECT * FROM reservations WHERE lot_id = ?1 AND state IN {HOLDING} \
         AND starts_at < ?3 AND ?2 < ends_at ORDER BY spot_id, starts_at"
    );
    let overlap = format!(
        "SELECT reservation_id FROM reservations WHERE lot_id = ?1 AND spot_id = ?2 \
         AND state IN {HOLDING} AND (?5 IS NULL OR reservation_id <> ?5) \
         AND starts_at < ?4 AND ?3 < ends_at LIMIT 1"
    );
    for (title, sql, values) in [
        (
            "-- holding_between",
            holding,
            vec![text("bench-garage"), Value::Integer(0), Value::Integer(0)],
        ),
        (
            "-- the overlap check of create_reservation",
            overlap,
            vec![
                text("bench-garage"),
                text("L1-001"),
                Value::Integer(0),
                Value::Integer(0),
                Value::Null,
            ],
        ),
    ] {
        out.push(title.to_owned());
        let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let lines = explain.query_map(rusqlite::params_from_iter(values), |row| {
            row.get::<_, String>(3)
        })?;
        for line in lines {
            out.push(line?);
        }
    }
    Ok(out)
}

fn check_sqlite(path: &std::path::Path) -> anyhow::Result<Check> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {}", path.display()))?;
    let query = overlap_sql("count(*)", "");
    let mut check = Check {
        query: query.clone(),
        ..Check::default()
    };
    let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {query}"))?;
    let lines = explain.query_map([], |row| row.get::<_, String>(3))?;
    for line in lines {
        check.plan.push(line?);
    }
    let started = Instant::now();
    check.overlaps = conn.query_row(&query, [], |row| row.get(0))?;
    check.elapsed = started.elapsed();
    if check.overlaps > 0 {
        let sql = overlap_sql(
            "a.lot_id || '/' || a.spot_id || ': ' || a.reservation_id || ' ' || a.starts_at || \
             '..' || a.ends_at || ' and ' || b.reservation_id || ' ' || b.starts_at || '..' || \
             b.ends_at",
            "\nLIMIT 5",
        );
        let mut examples = conn.prepare(&sql)?;
        let rows = examples.query_map([], |row| row.get::<_, String>(0))?;
        for row in rows {
            check.examples.push(row?);
        }
    }
    (check.rows, check.spots_used) = conn.query_row(
        "SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT lot_id, spot_id FROM reservations))
         FROM reservations",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let mut states =
        conn.prepare("SELECT state, count(*) FROM reservations GROUP BY state ORDER BY state")?;
    let rows = states.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    for row in rows {
        check.by_state.push(row?);
    }
    let mut top = conn.prepare(TOP_SPOTS)?;
    let rows = top.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    for row in rows {
        check.top_spots.push(row?);
    }
    Ok(check)
}

/// What one allocation attempt costs parkd, timed in-process after the run with nothing else
/// running: the lot's holding bookings within 12 h of the request from a reservation book
/// (`parkd_api::book`, loaded once from the full table first, as parkd does on a lot's first
/// booking), building every spot's timeline, and `allocate`.
#[derive(Debug, Default)]
struct AllocationProbe {
    /// The book's first load of the lot (one store read of every current and future booking).
    load_us: f64,
    samples: usize,
    bookings: u64,
    read_us: Vec<f64>,
    timelines_us: Vec<f64>,
    allocate_us: Vec<f64>,
    refused: usize,
}

async fn allocation_probe(
    store: Arc<dyn Store>,
    lot: &Lot,
    plan: &Plan,
    samples: usize,
) -> anyhow::Result<AllocationProbe> {
    let mut probe = AllocationProbe::default();
    let mut rng = Rng::new(plan.seed ^ 0x0A11_0CA7);
    let policy = Policy::default();
    let book = parkd_api::book::Book::new();
    let model = Arc::new(lot.clone());
    let loading = Instant::now();
    let now = Utc::now();
    let instant = Interval::new(now.timestamp(), now.timestamp() + 1)
        .map_err(|_| anyhow!("empty interval at {now}"))?;
    book.around(store.as_ref(), &model, |_| true, instant, instant, now)
        .await
        .context("loading the reservation book")?;
    probe.load_us = loading.elapsed().as_secs_f64() * 1e6;
    for n in 0..samples {
        let now = Utc::now();
        let (starts_at, ends_at) = plan.times(&mut rng, now);
        let context = chrono::Duration::hours(CONTEXT_HOURS);
        let interval = Interval::from_datetimes(starts_at, ends_at)
            .map_err(|_| anyhow!("empty interval {starts_at}..{ends_at}"))?;
        let around = Interval::from_datetimes(starts_at - context, ends_at + context)
            .map_err(|_| anyhow!("empty context around {starts_at}..{ends_at}"))?;
        let vehicle = vehicle_of(n).vehicle_type();
        let wanted = |spot: &Spot| fits(vehicle, spot.kind) && !spot.out_of_service;
        let t0 = Instant::now();
        let busy = book
            .around(store.as_ref(), &model, wanted, interval, around, now)
            .await
            .context("reading the reservation book")?;
        let t1 = Instant::now();
        let bookings: usize = busy.iter().map(Vec::len).sum();
        let timelines: Vec<Timeline> = busy.into_iter().map(Timeline::from_intervals).collect();
        let t2 = Instant::now();
        let mut request = Request::new(vehicle, interval);
        request.now = Some(now.timestamp());
        let chosen = allocate(
            lot.spots
                .iter()
                .zip(&timelines)
                .map(|(spot, booked)| Candidate { spot, booked }),
            &request,
            &policy,
        );
        let t3 = Instant::now();
        if chosen.is_err() {
            probe.refused += 1;
        }
        probe.samples += 1;
        probe.bookings += bookings as u64;
        probe.read_us.push((t1 - t0).as_secs_f64() * 1e6);
        probe.timelines_us.push((t2 - t1).as_secs_f64() * 1e6);
        probe.allocate_us.push((t3 - t2).as_secs_f64() * 1e6);
    }
    Ok(probe)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// parkd's own counters at one instant.
#[derive(Debug, Clone, Copy, Default)]
struct ServerCounters {
    /// `parkd_http_request_duration_seconds` of the route: count, sum (s).
    handled: (u64, f64),
    created: f64,
    retries: f64,
    local_races: f64,
}

fn server_counters(registry: &prometheus::Registry) -> ServerCounters {
    let event = |name: &str| {
        metric_sum(registry, "parkd_reservations_total", |l| {
            label(l, "event") == Some(name)
        })
    };
    ServerCounters {
        handled: server::histogram_route(registry, "parkd_http_request_duration_seconds", ROUTE),
        created: event("created"),
        retries: event("allocation_retry"),
        local_races: event("local_race"),
    }
}

/// Everything the report needs.
struct Results {
    setup_s: f64,
    clients: ClientStats,
    window_s: f64,
    cpu: CpuUsage,
    server: (ServerCounters, ServerCounters),
    pg: Option<PgWindow>,
    check: Check,
    probe: AllocationProbe,
    /// PostgreSQL's plans of `holding_between` on the full table.
    holding_plans: Vec<String>,
}

pub(crate) fn run(args: &ReservationsArgs) -> anyhow::Result<String> {
    if args.clients == 0 {
        bail!("--clients must be above zero");
    }
    let header = RunHeader::gather();
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let mut config = server::base_config(&dir.path().join("data"));
    config.demo.simulate = false;
    let horizon_days = args
        .horizon_days
        .unwrap_or(config.reservations.max_advance_days.saturating_sub(1))
        .clamp(1, config.reservations.max_advance_days.max(1));
    let lot_id = server::lot_id("bench-garage")?;
    let per_level = parkd_core::garage::DEMO_SPOTS_PER_LEVEL;
    let mut lot = parkd_core::garage::demo_garage(
        lot_id.clone(),
        args.spots.div_ceil(per_level).max(1),
        per_level,
    );
    lot.spots.truncate(args.spots as usize);

    let runtime = server::parkd_runtime(args.parkd_threads)?;
    let load = server::load_runtime(args.load_threads)?;
    let setup = runtime.block_on(StoreSetup::fresh(
        &mut config,
        args.backend,
        args.database_url.clone(),
        args.pool_size,
    ))?;
    let outcome = measure(args, &config, &setup, &lot, horizon_days, &runtime, &load);
    let disposed = runtime.block_on(setup_dispose(setup));
    load.shutdown_timeout(Duration::from_secs(5));
    runtime.shutdown_timeout(Duration::from_secs(5));
    let (results, description) = outcome?;
    disposed?;
    Ok(render(
        &header,
        args,
        &config,
        &description,
        &lot,
        horizon_days,
        &results,
    ))
}

async fn setup_dispose(setup: StoreSetup) -> anyhow::Result<()> {
    setup.dispose().await
}

fn measure(
    args: &ReservationsArgs,
    config: &parkd::config::ParkdConfig,
    setup: &StoreSetup,
    lot: &Lot,
    horizon_days: u32,
    runtime: &tokio::runtime::Runtime,
    load: &tokio::runtime::Runtime,
) -> anyhow::Result<(Results, String)> {
    let description = setup.description(config);
    runtime.block_on(async {
        let store = parkd::app::open_store(config).await?;
        store.put_lot(lot).await.context("importing the lot")?;
        Ok::<_, anyhow::Error>(())
    })?;
    let app = runtime
        .block_on(RunningApp::start(config.clone(), Mode::Serve))
        .context("starting parkd")?;
    let addr = app.http_addr();
    let registry = app.registry().clone();
    eprintln!(
        "parkd up on {addr} ({}); enrolling {} drivers",
        setup.backend.name(),
        args.clients
    );
    let tag = drivers::run_tag();
    let result = (|| -> anyhow::Result<Results> {
        let enrolling = Instant::now();
        let drivers = load.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..args.clients {
                let tag = tag.clone();
                tasks.spawn(async move { (i, enrol(addr, tag, i).await) });
            }
            let mut drivers: Vec<Option<Driver>> = (0..args.clients).map(|_| None).collect();
            while let Some(joined) = tasks.join_next().await {
                let (i, driver) = joined.context("an enrolling task failed")?;
                drivers[i] = Some(driver.with_context(|| format!("enrolling driver {i}"))?);
            }
            Ok::<_, anyhow::Error>(drivers.into_iter().flatten().collect::<Vec<_>>())
        })?;
        let setup_s = enrolling.elapsed().as_secs_f64();
        eprintln!(
            "{} drivers with a session and a vehicle in {setup_s:.1} s; booking for {} s + {} s",
            drivers.len(),
            args.warmup.as_secs_f64(),
            args.duration.as_secs_f64()
        );
        let start = Instant::now() + Duration::from_millis(200);
        let plan = Arc::new(Plan {
            lot: lot.id.to_string(),
            tag: tag.clone(),
            seed: args.seed,
            horizon: chrono::Duration::days(i64::from(horizon_days)),
            start,
            warm_end: start + args.warmup,
            end: start + args.warmup + args.duration,
            timeout: Duration::from_secs(30),
            interval: args
                .rate
                .filter(|rate| *rate > 0.0)
                .map(|rate| Duration::from_secs_f64(args.clients as f64 / rate)),
            clients: args.clients,
        });
        // Under bench/prio.sh (autogroup nice below 0), PostgreSQL gets the same priority.
        let lift =
            drivers::autogroup_nice(0).filter(|nice| *nice < 0 && !args.leave_postgres_priority);
        let monitor = setup
            .pg_url()
            .map(|url| pg_monitor(url.to_owned(), plan.start, plan.warm_end, plan.end, lift));
        let (clients, cpu, server_counters) = load.block_on(async {
            let tasks: Vec<_> = drivers
                .into_iter()
                .enumerate()
                .map(|(i, driver)| tokio::spawn(book(driver, i, plan.clone())))
                .collect();
            tokio::time::sleep_until(plan.warm_end.into()).await;
            let cpu0 = CpuSnapshot::take();
            let server0 = server_counters(&registry);
            tokio::time::sleep_until(plan.end.into()).await;
            let cpu1 = CpuSnapshot::take();
            let server1 = server_counters(&registry);
            let mut all = ClientStats::default();
            for task in tasks {
                all.merge(task.await.context("a client task failed")?);
            }
            Ok::<_, anyhow::Error>((all, cpu0.usage_until(&cpu1), (server0, server1)))
        })?;
        let pg = monitor.map(|m| m.join().unwrap_or_default());
        let window_s = args.duration.as_secs_f64();
        eprintln!(
            "measured: {} created ({:.0}/s), {} answers, p99 {:.1} ms, {} errors",
            clients.count(201),
            clients.count(201) as f64 / window_s,
            clients.all.summary().count,
            clients.all.summary().p99 / 1000.0,
            clients.errors
        );
        eprintln!("checking the whole table for double bookings");
        let check = match setup.pg_url() {
            Some(url) => runtime.block_on(check_postgres(url))?,
            None => check_sqlite(&config.data_dir.join("parkd.sqlite3"))?,
        };
        eprintln!(
            "{} rows, {} overlapping pairs, check took {:.0} ms",
            check.rows,
            check.overlaps,
            check.elapsed.as_secs_f64() * 1000.0
        );
        let probe = runtime.block_on(allocation_probe(app.store(), lot, &plan, args.probes))?;
        let holding_plans = match setup.pg_url() {
            Some(url) => runtime
                .block_on(holding_plans(url, lot.id.as_str(), &plan))
                .unwrap_or_else(|e| vec![format!("EXPLAIN failed: {e:#}")]),
            None => sqlite_plans(&config.data_dir.join("parkd.sqlite3"))
                .unwrap_or_else(|e| vec![format!("EXPLAIN failed: {e:#}")]),
        };
        Ok(Results {
            setup_s,
            clients,
            window_s,
            cpu,
            server: server_counters,
            pg,
            check,
            probe,
            holding_plans,
        })
    })();
    runtime.block_on(app.shutdown()).context("stopping parkd")?;
    Ok((result?, description))
}

fn ms2(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

fn vehicle_mix(clients: usize) -> String {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for i in 0..clients {
        let name = vehicle_of(i).name();
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
        .iter()
        .map(|(name, n)| format!("{n} {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[allow(clippy::too_many_lines)]
fn render(
    header: &RunHeader,
    args: &ReservationsArgs,
    config: &parkd::config::ParkdConfig,
    store: &str,
    lot: &Lot,
    horizon_days: u32,
    r: &Results,
) -> String {
    let c = &r.clients;
    let all = c.all.summary();
    let created = c.count(201);
    let created_per_s = created as f64 / r.window_s;
    let answers_per_s = all.count as f64 / r.window_s;
    let server_errors = c.count_where(|s| s >= 500);
    let unexpected = c.count_where(|s| s != 201 && s != 409 && s < 500);
    let in_flight = c
        .outcomes
        .iter()
        .filter(|((s, kind), _)| *s == 409 && kind == "request-in-flight")
        .map(|(_, o)| o.count)
        .sum::<u64>();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# parkd reservations benchmark (concurrent creates, {})\n",
        args.backend.name()
    );
    out.push_str(&header.markdown());
    let _ = writeln!(out, "\nIssue target: \"{ISSUE_TARGET}\"");
    let _ = writeln!(out, "\n## Setup\n");
    let _ = writeln!(
        out,
        "- parkd in this process (`RunningApp`, serve mode, no simulator, no sensors) on a \
         tokio runtime of {} worker threads (`parkd`; its blocking pool has the same name). \
         Store: {store}.",
        args.parkd_threads
    );
    let _ = writeln!(
        out,
        "- Lot `{}`: `demo_garage` cut to {} spots on {} levels ({}), imported with the \
         store's `put_lot` before parkd starts. Reservation rules: parkd's defaults \
         (`max_advance_days` {}, `min_duration_min` {}, `max_duration_h` {}).",
        lot.id,
        lot.spots.len(),
        lot.levels.len(),
        crate::report::kind_counts(lot),
        config.reservations.max_advance_days,
        config.reservations.min_duration_min,
        config.reservations.max_duration_h
    );
    let _ = writeln!(
        out,
        "- {} drivers made through the API (`POST /api/v1/auth/register`, `.../login`, \
         `POST /api/v1/me/vehicles`) in {:.1} s, one vehicle each: {}.",
        args.clients,
        r.setup_s,
        vehicle_mix(args.clients)
    );
    let pacing = match args.rate {
        Some(rate) if rate > 0.0 => format!(
            "**open loop at {} requests/s offered in all** (each client one request every \
             {:.1} ms on a fixed schedule, the clients evenly offset; latency counts from the \
             scheduled send time, so a late answer delays the next one's clock too)",
            thousands(rate.round() as u64),
            args.clients as f64 / rate * 1000.0
        ),
        _ => "in a closed loop (the next request as soon as the answer is in)".to_owned(),
    };
    let _ = writeln!(
        out,
        "- Load: {} clients in this process (runtime of {} workers, `loadgen`), each on its \
         own keep-alive HTTP/1.1 connection (a minimal client, `TCP_NODELAY`), {pacing}: \
         `POST /api/v1/reservations` with a unique `Idempotency-Key`, its vehicle, an entry \
         on a random quarter hour from 15–30 min ahead to {horizon_days} days ahead and a \
         stay of 30 min to 4 h (quarter hours, uniform; seed {}). {} s warm-up, then {} s \
         measured.",
        args.clients,
        args.load_threads,
        args.seed,
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "- Latency = send → last byte of the answer, every answer completed in the measured \
         window (histogram, < 0.8 % bucket error; max exact). Created/s = 201 answers in the \
         window / its length. 409 `no-spot-available` is a refusal (every fitting spot is \
         booked then), not an error; any 5xx, transport error or timeout (30 s) is an error."
    );
    let _ = writeln!(
        out,
        "- After the run, the double-booking check runs directly on the database: the \
         self-join below over the whole `reservations` table{}.\n",
        if args.backend == Backend::Postgres {
            ", with index scans switched off for its session so that the exclusion \
             constraint's GiST index plays no part (the heap is read)"
        } else {
            ""
        }
    );

    let _ = writeln!(out, "## Summary\n");
    // An open loop below the target rate measures the latency at that rate, not the target.
    let on_target_shape = args.clients == TARGET_CLIENTS
        && args.backend == Backend::Postgres
        && args.rate.is_none_or(|rate| rate >= CREATED_TARGET);
    let shape_note = if on_target_shape {
        String::new()
    } else {
        format!(
            " (this run: {} clients on {}{}; the target is stated for 64 on PostgreSQL at \
             2,000/s)",
            args.clients,
            args.backend.name(),
            args.rate.map_or(String::new(), |rate| format!(
                ", {} requests/s offered",
                thousands(rate.round() as u64)
            ))
        )
    };
    let _ = writeln!(out, "| Target | Measured | Result |");
    let _ = writeln!(out, "|---|---|---|");
    let _ = writeln!(
        out,
        "| ≥ {} reservations created/s, 64 clients{shape_note} | **{}/s** ({} created in {} s; \
         {} answers/s in all) | {} |",
        thousands(CREATED_TARGET as u64),
        thousands(created_per_s.round() as u64),
        thousands(created),
        r.window_s,
        thousands(answers_per_s.round() as u64),
        verdict(created_per_s >= CREATED_TARGET && on_target_shape)
    );
    let _ = writeln!(
        out,
        "| p99 < {P99_TARGET_MS:.0} ms{shape_note} | **{} ms** (p50 {} ms, p90 {} ms, max {} \
         ms; every answer) | {} |",
        ms2(all.p99),
        ms2(all.p50),
        ms2(all.p90),
        ms2(all.max),
        verdict(all.p99 / 1000.0 < P99_TARGET_MS && all.count > 0 && on_target_shape)
    );
    let _ = writeln!(
        out,
        "| zero double bookings (a query over the whole table) | **{}** overlapping pairs of \
         holding reservations of one spot among {} rows ({} ms) | {} |",
        r.check.overlaps,
        thousands(r.check.rows.unsigned_abs()),
        thousands(r.check.elapsed.as_millis() as u64),
        verdict(r.check.overlaps == 0)
    );
    let _ = writeln!(
        out,
        "| no server errors | {} 5xx, {} transport errors/timeouts, {} other unexpected \
         answers in the window ({} 5xx/errors over the whole run) | {} |",
        server_errors,
        c.errors,
        unexpected,
        c.errors_all + c.count_where(|s| s >= 500),
        verdict(server_errors == 0 && c.errors == 0 && c.errors_all == 0)
    );
    if args.rate.is_none() {
        let _ = writeln!(
            out,
            "\nIn a closed loop, Little's law ties the two figures: mean latency = clients / \
             throughput. With {} clients, {} answers/s means a mean of {:.1} ms; at 2,000/s it \
             would be 32 ms, so p99 < 20 ms with 64 clients in this shape needs more than \
             3,200 answers/s (`--rate` measures the latency at a given offered rate instead).",
            args.clients,
            thousands(answers_per_s.round() as u64),
            args.clients as f64 / answers_per_s.max(1e-9) * 1000.0
        );
    }
    let rows_match = r.check.rows.unsigned_abs() == c.created_all;
    let _ = writeln!(
        out,
        "\nEvery 201 is a row and every row a 201: {} answers 201 over the whole run \
         (warm-up included), {} rows in the table: **{}**. Idempotency: {} answers \
         `request-in-flight` (keys are never reused, so 0 expected).",
        thousands(c.created_all),
        thousands(r.check.rows.unsigned_abs()),
        if rows_match { "yes" } else { "NO" },
        in_flight
    );

    let _ = writeln!(out, "\n## Answers in the measured window\n");
    let _ = writeln!(
        out,
        "| Status | Kind | Count | Per s | p50 / p90 / p99 / p99.9 / max (ms) |"
    );
    let _ = writeln!(out, "|---:|---|---:|---:|---|");
    let _ = writeln!(
        out,
        "| all | | {} | {} | {} |",
        thousands(all.count),
        thousands(answers_per_s.round() as u64),
        all.ms_row(2)
    );
    for ((status, kind), outcome) in &c.outcomes {
        let _ = writeln!(
            out,
            "| {status} | {kind} | {} | {} | {} |",
            thousands(outcome.count),
            thousands((outcome.count as f64 / r.window_s).round() as u64),
            outcome.hist.summary().ms_row(2)
        );
    }
    if c.errors > 0 || c.errors_all > 0 {
        let _ = writeln!(
            out,
            "| - | transport error / timeout | {} | | first: {} |",
            c.errors,
            c.first_error.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(
        out,
        "\nConnections opened by the clients: {} for {} clients (1 each = keep-alive held).",
        c.connects, args.clients
    );
    let seconds: Vec<String> = c.created_by_second.iter().map(|n| thousands(*n)).collect();
    let _ = writeln!(
        out,
        "\nReservations created in each second of the run (warm-up of {} s first; the table \
         grows by as many rows; the last figure is the requests in flight when the load \
         stopped): {}.",
        args.warmup.as_secs_f64(),
        seconds.join(", ")
    );

    let _ = writeln!(out, "\n## The double-booking check\n");
    let _ = writeln!(out, "```sql\n{}\n```\n", r.check.query);
    let _ = writeln!(
        out,
        "- Result: **{}** overlapping pairs, in {} ms.",
        r.check.overlaps,
        thousands(r.check.elapsed.as_millis() as u64)
    );
    let states: Vec<String> = r
        .check
        .by_state
        .iter()
        .map(|(s, n)| format!("{s} {}", thousands(n.unsigned_abs())))
        .collect();
    let _ = writeln!(
        out,
        "- Table: {} rows ({}) on {} distinct spots.",
        thousands(r.check.rows.unsigned_abs()),
        states.join(", "),
        r.check.spots_used
    );
    let top: Vec<String> = r
        .check
        .top_spots
        .iter()
        .map(|(spot, n)| format!("{spot} {}", thousands(n.unsigned_abs())))
        .collect();
    let top_rows: i64 = r.check.top_spots.iter().map(|(_, n)| n).sum();
    let _ = writeln!(
        out,
        "- The busiest spots: {} ({:.0} % of all rows on these {}): the allocation packs \
         bookings onto the best spots (best fit, then the shortest walk), so concurrent \
         requests often pick the same spot, whatever their dates.",
        top.join(", "),
        100.0 * top_rows as f64 / r.check.rows.max(1) as f64,
        r.check.top_spots.len()
    );
    for example in &r.check.examples {
        let _ = writeln!(out, "- Overlap: {example}");
    }
    let _ = writeln!(out, "- Plan:\n\n```text\n{}\n```", r.check.plan.join("\n"));

    let _ = writeln!(out, "\n## Where the time goes\n");
    let (s0, s1) = r.server;
    let handled = s1.handled.0.saturating_sub(s0.handled.0);
    let server_mean_us = if handled > 0 {
        (s1.handled.1 - s0.handled.1) / handled as f64 * 1e6
    } else {
        0.0
    };
    let retries = (s1.retries - s0.retries).max(0.0);
    let local_races = (s1.local_races - s0.local_races).max(0.0);
    let created_server = (s1.created - s0.created).max(0.0);
    let client_mean_us = c.all.mean();
    let parkd = r.cpu.cores("parkd");
    let loadgen = r.cpu.cores("loadgen");
    let other = (r.cpu.process_cores - parkd - loadgen).max(0.0);
    let pg_cores = r.pg.as_ref().and_then(|pg| pg.cpu_cores(r.window_s));
    let per_answer = |cores: f64| cores * 1e6 / answers_per_s.max(1e-9);
    let _ = writeln!(
        out,
        "CPU during the measured window, in cores (of {} CPUs), and per answer:\n",
        header.cpus
    );
    let _ = writeln!(out, "| Who | Cores | µs of CPU per answer |");
    let _ = writeln!(out, "|---|---:|---:|");
    let _ = writeln!(
        out,
        "| parkd (`parkd` threads: HTTP, handlers, allocation, the store's client side) | \
         {parkd:.2} | {:.0} |",
        per_answer(parkd)
    );
    if let Some(pg) = pg_cores {
        let _ = writeln!(
            out,
            "| PostgreSQL (every server process, from /proc) | {pg:.2} | {:.0} |",
            per_answer(pg)
        );
    }
    let _ = writeln!(
        out,
        "| the clients (`loadgen`) | {loadgen:.2} | {:.0} |",
        per_answer(loadgen)
    );
    let _ = writeln!(
        out,
        "| other threads of this process (broker, monitor) | {other:.2} | {:.0} |",
        per_answer(other)
    );
    let _ = writeln!(
        out,
        "| whole machine (includes other users of this shared machine) | {} | |",
        r.cpu
            .machine_cores
            .map_or("?".to_owned(), |m| format!("{m:.2}"))
    );
    let threads: Vec<String> = r
        .cpu
        .by_thread
        .iter()
        .take(6)
        .map(|(name, cores)| format!("{name} {cores:.2}"))
        .collect();
    let _ = writeln!(out, "\nThreads of this process: {}.", threads.join(", "));
    let _ = writeln!(
        out,
        "\n- parkd's own time per request (`parkd_http_request_duration_seconds`, handler and \
         middleware, to the response head): mean **{} ms** over {} requests, against a mean \
         of {} ms seen by the clients (the difference is the socket, the runtime's queues \
         and the client).",
        ms2(server_mean_us),
        thousands(handled),
        ms2(client_mean_us)
    );
    let _ = writeln!(
        out,
        "- Allocation retries (the database refused the chosen spot: booked meanwhile by a \
         path that does not hold spots in parkd's book; the handler chooses again, up to 5 \
         times): {} in the window, {:.2} % of the {} reservations parkd counted as created. \
         Local races (a concurrent request of parkd held the chosen spot first; chosen again \
         in memory, no database work): {} ({:.2} %).",
        thousands(retries as u64),
        100.0 * retries / created_server.max(1.0),
        thousands(created_server as u64),
        thousands(local_races as u64),
        100.0 * local_races / created_server.max(1.0)
    );
    if let Some(pg) = &r.pg {
        render_pg(&mut out, pg, r.window_s, created, answers_per_s, config);
    }
    let p = &r.probe;
    if p.samples > 0 {
        let _ = writeln!(
            out,
            "\nOne allocation attempt, timed in-process after the run on the full table \
             (nothing else running; {} random requests of the same shape; medians, means in \
             brackets):\n",
            p.samples
        );
        let _ = writeln!(out, "| Step | µs |");
        let _ = writeln!(out, "|---|---:|");
        let _ = writeln!(
            out,
            "| the bookings that decide the request on each spot the vehicle may use (those overlapping it and its \
             neighbours within {CONTEXT_HOURS} h), from parkd's in-memory book (`Book::around`: \
             {:.0} bookings on average) | {:.0} ({:.0}) |",
            p.bookings as f64 / p.samples as f64,
            median(&p.read_us),
            mean(&p.read_us)
        );
        let _ = writeln!(
            out,
            "| every spot's timeline ({} spots) | {:.0} ({:.0}) |",
            lot.spots.len(),
            median(&p.timelines_us),
            mean(&p.timelines_us)
        );
        let _ = writeln!(
            out,
            "| `allocate` (best fit) | {:.0} ({:.0}) |",
            median(&p.allocate_us),
            mean(&p.allocate_us)
        );
        let _ = writeln!(
            out,
            "\nThe book's first load of the lot (every current and future holding booking, one \
             store read; once per lot and process, then at each sweep): {:.0} ms.",
            p.load_us / 1000.0
        );
        if p.refused > 0 {
            let _ = writeln!(
                out,
                "\n{} of the probe's requests were refused (full).",
                p.refused
            );
        }
    }
    if !r.holding_plans.is_empty() && args.backend == Backend::Sqlite {
        let _ = writeln!(
            out,
            "\nSQLite's plans for the query shapes of the store's `holding_between` and of the \
             overlap check in `create_reservation` (re-typed from \
             `store/src/sqlite/reservations.rs`), on the full table:\n"
        );
    } else if !r.holding_plans.is_empty() {
        let _ = writeln!(
            out,
            "\nPostgreSQL's plans for the query of `holding_between` (its text as in \
             `store/src/postgres/reservations.rs`, prepared by hand here; creates no longer run \
             it, gates' walk-ins and the hold sweep still do) on the full table, \
             for one request of the run's shape, each from its third execution in the \
             session. parkd runs it as a prepared statement, which PostgreSQL plans custom for \
             the first 5 executions on a connection, then generic if that is not estimated \
             dearer. The index it uses is `reservations_holding_by_time` (the holding rows' \
             time range; migration 0012):\n"
        );
    }
    if !r.holding_plans.is_empty() {
        let _ = writeln!(out, "```text\n{}\n```", r.holding_plans.join("\n"));
    }
    out
}

fn render_pg(
    out: &mut String,
    pg: &PgWindow,
    window_s: f64,
    created: u64,
    answers_per_s: f64,
    config: &parkd::config::ParkdConfig,
) {
    let _ = writeln!(out, "\n### PostgreSQL during the window\n");
    if let Some(error) = &pg.error {
        let _ = writeln!(out, "The monitor failed: {error}\n");
    }
    let nice: Vec<String> = pg
        .nice_at_start
        .iter()
        .map(|(nice, n)| format!("{n} at nice {nice}"))
        .collect();
    let _ = writeln!(
        out,
        "- Scheduling: PostgreSQL's processes in the window, by scheduler autogroup: {}{}.",
        if nice.is_empty() {
            "unknown".to_owned()
        } else {
            nice.join(", ")
        },
        match pg.lift {
            Some(lift) => format!(
                " (the harness gave them the benchmark's own autogroup nice, {lift}, before \
                 the load and again at the start of the window: {} changed, {} refused; \
                 PostgreSQL makes each backend an autogroup of its own at 0, which \
                 `bench/prio.sh`'s -10 would outweigh about nine to one)",
                pg.lifted, pg.lift_failed
            ),
            None => " (left as they were)".to_owned(),
        }
    );
    let (b, a) = (&pg.before, &pg.after);
    let answers = (answers_per_s * window_s).max(1.0);
    let commits = (a.commits - b.commits).max(0) as f64;
    let _ = writeln!(
        out,
        "- Transactions committed in the bench database: {} ({}/s, {:.1} per answer; every \
         statement outside `BEGIN` counts as one); rolled back {}; deadlocks {}; rows inserted \
         {} ({:.1} per answer; a created reservation inserts its row and its idempotency \
         key). `pg_stat_database` is flushed by each backend at most once a second, so these \
         are ±1 s.",
        thousands(commits as u64),
        thousands((commits / window_s).round() as u64),
        commits / answers,
        a.rollbacks - b.rollbacks,
        a.deadlocks - b.deadlocks,
        thousands((a.inserted - b.inserted).max(0).unsigned_abs()),
        (a.inserted - b.inserted).max(0) as f64 / answers
    );
    if let (Some(wb), Some(wa)) = (b.wal, a.wal) {
        let syncs = (wa[3] - wb[3]).max(0) as f64;
        let _ = writeln!(
            out,
            "- WAL: {} records, {:.1} MB, {} writes, **{} syncs ({}/s)** (server-wide).",
            thousands((wa[0] - wb[0]).max(0).unsigned_abs()),
            (wa[1] - wb[1]) as f64 / 1e6,
            thousands((wa[2] - wb[2]).max(0).unsigned_abs()),
            thousands(syncs as u64),
            thousands((syncs / window_s).round() as u64)
        );
    }
    if let Some(kinds) = pg.cpu_by_kind(window_s) {
        let total: f64 = kinds.iter().map(|(_, u, s)| u + s).fold(0.0, |a, b| a + b);
        let parts: Vec<String> = kinds
            .iter()
            .filter(|(_, u, s)| u + s >= 0.005)
            .map(|(kind, u, s)| format!("{kind} {:.2} (user {u:.2}, system {s:.2})", u + s))
            .collect();
        let (user, system) = kinds
            .iter()
            .fold((0.0, 0.0), |(a, b), (_, u, s)| (a + u, b + s));
        let _ = writeln!(
            out,
            "- CPU of the server's processes: **{total:.2} cores** (user {user:.2}, system \
             {system:.2}; {:.0} µs per answer): {}.",
            total * 1e6 / answers_per_s.max(1e-9),
            parts.join("; ")
        );
    }
    if pg.samples > 0 {
        let _ = writeln!(
            out,
            "- parkd's connections to the bench database, sampled every 100 ms from \
             `pg_stat_activity` ({} samples; pool size {}): on average **{:.2}** open. What \
             they were doing, in connections on average:\n",
            pg.samples,
            config.database.pool_size,
            pg.connections as f64 / pg.samples as f64
        );
        let _ = writeln!(out, "| State | Connections (mean) | Share |");
        let _ = writeln!(out, "|---|---:|---:|");
        let mut classes: Vec<(&String, &u64)> = pg.classes.iter().collect();
        classes.sort_by(|x, y| y.1.cmp(x.1));
        for (class, n) in classes {
            let _ = writeln!(
                out,
                "| {class} | {:.2} | {:.0} % |",
                *n as f64 / pg.samples as f64,
                100.0 * *n as f64 / pg.connections.max(1) as f64
            );
        }
    }
    match &pg.statements {
        Ok(statements) if !statements.is_empty() => {
            let total_ms: f64 = statements.iter().map(|s| s.total_ms).sum();
            let calls: i64 = statements.iter().map(|s| s.calls).sum();
            let _ = writeln!(
                out,
                "\nStatements of the bench database in the window (`pg_stat_statements`; \
                 execution only: parse, bind and the round trips are not in `total`), per \
                 answer ({} answers, {} created): **{:.1} statements** and {:.0} µs of \
                 execution per answer.\n",
                thousands(answers as u64),
                thousands(created),
                calls as f64 / answers,
                total_ms * 1000.0 / answers
            );
            let _ = writeln!(
                out,
                "| Calls | Per answer | Mean (µs) | Total (ms) | Rows per call | Statement |"
            );
            let _ = writeln!(out, "|---:|---:|---:|---:|---:|---|");
            for s in statements.iter().take(15) {
                let mut query: String = s.query.chars().take(160).collect();
                if query.len() < s.query.len() {
                    query.push_str(" …");
                }
                let _ = writeln!(
                    out,
                    "| {} | {:.2} | {:.0} | {:.0} | {:.1} | `{}` |",
                    thousands(s.calls.unsigned_abs()),
                    s.calls as f64 / answers,
                    s.total_ms * 1000.0 / (s.calls.max(1) as f64),
                    s.total_ms,
                    s.rows as f64 / (s.calls.max(1) as f64),
                    query.replace('|', "\\|").replace('`', "'")
                );
            }
        }
        Ok(_) => {}
        Err(why) => {
            let _ = writeln!(out, "\nPer-statement figures: none ({why}).");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use chrono::{TimeZone, Utc};

    use super::{MAX_QUARTERS, MIN_QUARTERS, Plan, QUARTER_S, overlap_sql, vehicle_of};
    use crate::drivers::Rng;

    #[test]
    fn times_are_within_the_rules() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 26, 10, 7, 13)
            .single()
            .expect("date");
        let plan = Plan {
            lot: "x".into(),
            tag: "t".into(),
            seed: 1,
            horizon: chrono::Duration::days(89),
            start: Instant::now(),
            warm_end: Instant::now(),
            end: Instant::now(),
            timeout: Duration::from_secs(1),
            interval: None,
            clients: 1,
        };
        let mut rng = Rng::new(3);
        for _ in 0..10_000 {
            let (s, e) = plan.times(&mut rng, now);
            assert!(s > now + chrono::Duration::minutes(15), "{s}");
            assert!(s <= now + chrono::Duration::days(90), "{s}");
            assert_eq!(s.timestamp() % QUARTER_S, 0);
            let stay = (e - s).num_seconds();
            assert!((MIN_QUARTERS * QUARTER_S..=MAX_QUARTERS * QUARTER_S).contains(&stay));
        }
    }

    #[test]
    fn the_mix_has_every_kind_of_driver() {
        let names: std::collections::BTreeSet<&str> =
            (0..64).map(|i| vehicle_of(i).name()).collect();
        assert_eq!(names.len(), 6, "{names:?}");
        assert!(overlap_sql("count(*)", "").contains("b.reservation_id > a.reservation_id"));
    }
}
