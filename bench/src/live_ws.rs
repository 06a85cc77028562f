//! `parkd-bench live-ws`: sensor publish → WebSocket client receipt, with N clients on
//! `/api/v1/live` and R spot changes per second over real MQTT.
//!
//! One process: parkd ([`RunningApp`], `serve` mode, embedded broker with anonymous clients,
//! SQLite, `live.debounce_ms = 0`, no simulator) on a runtime of `--parkd-threads` (2) workers;
//! the WebSocket clients and the MQTT publishers on another (`--load-threads`, 2 workers,
//! named `loadgen`). Before parkd starts, a `demo_garage` of `--spots` (10,000) spots is
//! imported into the store and one sensor registered per spot.
//!
//! Each step of the ladder (`--steps 1000x1000,...`: clients x changes/s):
//!
//! 1. N clients connect (in waves of 50) and each reads its first snapshot;
//! 2. the publishers ([`crate::publish`]) send R changes/s for `--warmup` + `--duration`,
//!    alternating each spot between occupied and free so every message is a change;
//! 3. each client parses every delta's `seq`, spot and state (a string scan, not a JSON
//!    parser, to leave the CPU to parkd), looks up when that (spot, value) was published and
//!    records receipt − publish (both `Instant`s of this process) in its histogram, if the
//!    change was published inside the measured window (after the warm-up);
//! 4. after the last publish, the run waits until every client has the lot's last `seq` (or
//!    20 s), then closes the clients.
//!
//! Accounting per client: expected = last seq of the lot − seq of its first snapshot;
//! received deltas + deltas skipped by `lagged` snapshots + lost = expected. Deliveries/s =
//! deltas received by all clients during the measured window (by receipt time) / its length.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use parkd::app::{Mode, RunningApp};
use parkd_core::ids::{LotId, SpotId};
use parkd_occupancy::OccupancyEngine;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::LiveWsArgs;
use crate::cpu::{CpuSnapshot, CpuUsage};
use crate::hist::{Histogram, Summary};
use crate::machine::RunHeader;
use crate::publish::{PublishPlan, PublishReport, SendTimes, publish};
use crate::report::thousands;
use crate::report::verdict;
use crate::server::{self, label, metric_sum};

/// The issue's targets.
const P99_TARGET_MS: f64 = 50.0;
const TARGET_CLIENTS: usize = 1_000;
const TARGET_RATE: f64 = 1_000.0;
const CEILING_MS: f64 = 100.0;
/// Clients connecting at once.
const WAVE: usize = 50;

/// One step of the ladder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub(crate) clients: usize,
    pub(crate) rate: f64,
}

/// `1000x2000` → 1,000 clients, 2,000 changes/s.
pub(crate) fn parse_step(raw: &str) -> Result<Step, String> {
    let (clients, rate) = raw
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{raw:?}: expected CLIENTSxRATE, e.g. 1000x2000"))?;
    let clients: usize = clients
        .trim()
        .parse()
        .map_err(|_| format!("{raw:?}: bad client count"))?;
    let rate: f64 = rate
        .trim()
        .parse()
        .map_err(|_| format!("{raw:?}: bad rate"))?;
    if clients == 0 || !rate.is_finite() || rate <= 0.0 {
        return Err(format!("{raw:?}: clients and rate must be above zero"));
    }
    Ok(Step { clients, rate })
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientStats {
    first_seq: Option<u64>,
    last_seq: u64,
    deltas: u64,
    /// Deltas at or below the last seq (never expected; counted to be sure).
    old: u64,
    /// Deltas missing between two received ones, without a snapshot in between.
    gaps: u64,
    lagged: u64,
    /// Deltas a `lagged` snapshot stood in for.
    lagged_skipped: u64,
    other_snapshots: u64,
    heartbeats: u64,
    /// Deltas whose (spot, state) has no publish time (e.g. a spot turned `unknown`).
    unmatched: u64,
    /// Deltas received during the measured window.
    window_received: u64,
    hist: Histogram,
    error: Option<String>,
    closed_by_server: bool,
}

/// What every client of a step shares.
#[derive(Debug)]
struct Shared {
    times: Arc<SendTimes>,
    /// Measured window, ns since `times.base()`: [start, end).
    window: [AtomicU64; 2],
    /// Each client's last seq, for the settle check.
    progress: Vec<AtomicU64>,
    ready: AtomicUsize,
    done: AtomicUsize,
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits: &str = &text[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

fn string_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    let rest = &text[start..];
    Some(&rest[..rest.find('"')?])
}

/// A delta's (seq, spot id, state), by scanning the JSON parkd writes (`type` first, the lot's
/// `seq` before the spot, `spot.id` then `spot.state`).
fn scan_delta(text: &str) -> Option<(u64, &str, &str)> {
    let seq = number_after(text, "\"seq\":")?;
    let spot_at = text.find("\"spot\":{")?;
    let spot = &text[spot_at..];
    let id = string_after(spot, "\"id\":\"")?;
    let state = string_after(spot, "\"state\":\"")?;
    Some((seq, id, state))
}

impl ClientStats {
    fn on_text(&mut self, text: &str, shared: &Shared, me: usize) {
        let now = shared.times.ns(Instant::now());
        if text.starts_with("{\"type\":\"delta\"") {
            let Some((seq, id, state)) = scan_delta(text) else {
                self.unmatched += 1;
                return;
            };
            if seq <= self.last_seq {
                self.old += 1;
                return;
            }
            if self.first_seq.is_some() && seq > self.last_seq + 1 {
                self.gaps += seq - self.last_seq - 1;
            }
            self.last_seq = seq;
            self.deltas += 1;
            shared.progress[me].store(seq, Ordering::Relaxed);
            let [start, end] = [
                shared.window[0].load(Ordering::Relaxed),
                shared.window[1].load(Ordering::Relaxed),
            ];
            if (start..end).contains(&now) {
                self.window_received += 1;
            }
            let occupied = match state {
                "occupied" => true,
                "free" => false,
                _ => {
                    self.unmatched += 1;
                    return;
                }
            };
            match shared.times.sent_ns(id, occupied) {
                Some(sent) if (start..end).contains(&sent) => {
                    self.hist.record(now.saturating_sub(sent) / 1_000);
                }
                Some(_) => {}
                None => self.unmatched += 1,
            }
        } else if text.starts_with("{\"type\":\"snapshot\"") {
            let head = &text[..text.len().min(200)];
            let seq = number_after(head, "\"seq\":").unwrap_or(0);
            let reason = string_after(head, "\"reason\":\"");
            match (self.first_seq, reason) {
                (None, _) => {
                    self.first_seq = Some(seq);
                    self.last_seq = seq;
                    shared.ready.fetch_add(1, Ordering::AcqRel);
                }
                (Some(_), Some("lagged")) => {
                    self.lagged += 1;
                    self.lagged_skipped += seq.saturating_sub(self.last_seq);
                    self.last_seq = self.last_seq.max(seq);
                }
                (Some(_), _) => {
                    self.other_snapshots += 1;
                    self.lagged_skipped += seq.saturating_sub(self.last_seq);
                    self.last_seq = self.last_seq.max(seq);
                }
            }
            shared.progress[me].store(self.last_seq, Ordering::Relaxed);
        } else if text.starts_with("{\"type\":\"heartbeat\"") {
            self.heartbeats += 1;
        }
    }
}

/// What the in-process probe saw: publish → the engine's delta, no WebSocket.
#[derive(Debug, Default)]
struct ProbeStats {
    hist: Histogram,
    lagged: u64,
}

/// Subscribes to the lot's feed inside the process, on a thread of its own with a
/// single-threaded runtime (so that neither parkd's nor the clients' workers delay it), and
/// records publish → delta for changes published in the measured window.
fn engine_probe(
    engine: Arc<OccupancyEngine>,
    lot: LotId,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> std::thread::JoinHandle<ProbeStats> {
    let run = move || {
        let mut stats = ProbeStats::default();
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return stats;
        };
        let Some(mut rx) = engine.subscribe(&lot) else {
            return stats;
        };
        runtime.block_on(async {
            loop {
                let delta = tokio::select! {
                    () = stop.cancelled() => break,
                    delta = rx.recv() => delta,
                };
                match delta {
                    Ok(delta) => {
                        let now = shared.times.ns(Instant::now());
                        let occupied = match delta.spot.state {
                            parkd_occupancy::SpotState::Occupied => true,
                            parkd_occupancy::SpotState::Free => false,
                            _ => continue,
                        };
                        let [start, end] = [
                            shared.window[0].load(Ordering::Relaxed),
                            shared.window[1].load(Ordering::Relaxed),
                        ];
                        if let Some(sent) = shared.times.sent_ns(delta.spot.id.as_str(), occupied)
                            && (start..end).contains(&sent)
                        {
                            stats.hist.record(now.saturating_sub(sent) / 1_000);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        stats.lagged += 1;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        stats
    };
    std::thread::Builder::new()
        .name("probe".to_owned())
        .spawn(run)
        .unwrap_or_else(|_| std::thread::spawn(ProbeStats::default))
}

async fn client(
    url: String,
    shared: Arc<Shared>,
    me: usize,
    stop: CancellationToken,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let connected = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true).await;
    let mut ws = match connected {
        Ok((ws, _)) => ws,
        Err(error) => {
            stats.error = Some(format!("connect: {error}"));
            shared.done.fetch_add(1, Ordering::AcqRel);
            return stats;
        }
    };
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => break,
            next = ws.next() => next,
        };
        match next {
            Some(Ok(Message::Text(text))) => {
                stats.on_text(text.as_str(), &shared, me);
            }
            Some(Ok(Message::Close(_))) | None => {
                stats.closed_by_server = true;
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                stats.error = Some(error.to_string());
                break;
            }
        }
    }
    if !stats.closed_by_server && stats.error.is_none() {
        let _ =
            tokio::time::timeout(Duration::from_millis(500), ws.send(Message::Close(None))).await;
    }
    shared.done.fetch_add(1, Ordering::AcqRel);
    stats
}

/// One step's results.
#[derive(Debug)]
struct StepResult {
    step: Step,
    connected: usize,
    connect_time: Duration,
    errors: Vec<String>,
    closed_by_server: usize,
    publish: PublishReport,
    /// The lot's seq moved by this much while publishing (engine changes).
    changes: u64,
    /// Messages the broker handed to ingest meanwhile.
    forwarded: u64,
    /// The lot's seq moved by this much once the clients had gone (late changes included).
    eventual_changes: u64,
    /// Ingest: state messages received, messages lost (any reason), queue depth at the settle.
    ingest_state: u64,
    ingest_lost: u64,
    queue_at_settle: u64,
    expected: u64,
    delivered: u64,
    lagged: u64,
    lagged_skipped: u64,
    gaps: u64,
    old: u64,
    unmatched: u64,
    lost: i64,
    window_s: f64,
    window_received: u64,
    latency: Summary,
    settle: Duration,
    settled: bool,
    cpu: CpuUsage,
    /// parkd's own counters over the step.
    server_lagged: u64,
    server_send_timeouts: u64,
    server_deltas_sent: u64,
    /// Publish → the engine's delta, seen in-process (broker, ingest, engine; no WebSocket).
    engine_latency: Summary,
    probe_lagged: u64,
}

impl StepResult {
    fn deliveries_per_s(&self) -> f64 {
        if self.window_s > 0.0 {
            self.window_received as f64 / self.window_s
        } else {
            0.0
        }
    }
}

struct Ctx<'a> {
    args: &'a LiveWsArgs,
    engine: Arc<OccupancyEngine>,
    registry: prometheus::Registry,
    lot: LotId,
    spots: Vec<SpotId>,
    http: std::net::SocketAddr,
    mqtt: std::net::SocketAddr,
    /// Send times and last values, kept across steps so every message stays a change.
    times: Arc<SendTimes>,
    /// The publishers' runtime.
    publisher: tokio::runtime::Handle,
}

fn counter(registry: &prometheus::Registry, name: &str, key: &str, value: &str) -> u64 {
    metric_sum(registry, name, |l| label(l, key) == Some(value)) as u64
}

async fn run_step(ctx: &Ctx<'_>, step: Step) -> anyhow::Result<StepResult> {
    let args = ctx.args;
    let times = ctx.times.clone();
    let shared = Arc::new(Shared {
        times: times.clone(),
        window: [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)],
        progress: (0..step.clients).map(|_| AtomicU64::new(0)).collect(),
        ready: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
    });
    let stop = CancellationToken::new();
    let url = format!("ws://{}/api/v1/live?lot={}", ctx.http, ctx.lot);
    let connecting = Instant::now();
    let mut tasks = Vec::with_capacity(step.clients);
    for me in 0..step.clients {
        tasks.push(tokio::spawn(client(
            url.clone(),
            shared.clone(),
            me,
            stop.clone(),
        )));
        if (me + 1) % WAVE == 0 || me + 1 == step.clients {
            let deadline = Instant::now() + Duration::from_secs(60);
            while shared.ready.load(Ordering::Acquire) + shared.done.load(Ordering::Acquire)
                < me + 1
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    let connect_time = connecting.elapsed();
    let connected = shared.ready.load(Ordering::Acquire);
    eprintln!(
        "  {connected} of {} clients have their snapshot after {:.1} s",
        step.clients,
        connect_time.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let probe_stop = CancellationToken::new();
    let probe = engine_probe(
        ctx.engine.clone(),
        ctx.lot.clone(),
        shared.clone(),
        probe_stop.clone(),
    );
    let lagged0 = counter(&ctx.registry, "parkd_ws_resyncs_total", "reason", "lagged");
    let timeouts0 = counter(
        &ctx.registry,
        "parkd_ws_refused_total",
        "reason",
        "send_timeout",
    );
    let sent0 = counter(
        &ctx.registry,
        "parkd_ws_messages_sent_total",
        "type",
        "delta",
    );
    let seq0 = ctx.engine.seq(&ctx.lot).unwrap_or(0);
    let forwarded0 = metric_sum(&ctx.registry, "parkd_mqtt_link_messages_total", |_| true);
    let ingest0 = ingest_counts(&ctx.registry);
    let total = args.warmup + args.duration;
    let plan = PublishPlan {
        broker: ctx.mqtt,
        lot: ctx.lot.clone(),
        spots: ctx.spots.clone(),
        rate: step.rate,
        count: (step.rate * total.as_secs_f64()).round() as u64,
        connections: args.publishers,
        client_prefix: "bench-ws-pub".to_owned(),
    };
    let cpu0 = CpuSnapshot::take();
    let window = {
        let (shared, times, warmup) = (shared.clone(), times.clone(), args.warmup);
        move |started: Instant| {
            shared.window[0].store(times.ns(started + warmup), Ordering::Relaxed);
            shared.window[1].store(times.ns(started + total), Ordering::Relaxed);
        }
    };
    // The publishers get a runtime of their own, so that busy clients cannot delay them.
    let publishing = {
        let times = times.clone();
        ctx.publisher
            .spawn(async move { publish(&plan, times, window).await })
    };
    let report = publishing.await.context("the publisher task failed")??;
    let cpu1 = CpuSnapshot::take();
    let started = report.started.unwrap_or_else(Instant::now);
    // The window ends with the last publish if the publishers ran late.
    let window_end = started + report.elapsed.max(total);
    shared.window[1].store(times.ns(window_end), Ordering::Relaxed);
    let window_s = (window_end - (started + args.warmup)).as_secs_f64();

    // Settle: ingest has applied every published change (or the lot's seq has stood still for
    // 2 s), then every client reaches the lot's last seq.
    let settling = Instant::now();
    let mut last = ctx.engine.seq(&ctx.lot).unwrap_or(0);
    let mut still_since = Instant::now();
    while settling.elapsed() < Duration::from_secs(30) {
        if last.saturating_sub(seq0) >= report.sent
            && still_since.elapsed() >= Duration::from_millis(200)
        {
            break;
        }
        if still_since.elapsed() >= Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = ctx.engine.seq(&ctx.lot).unwrap_or(0);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    let final_seq = last;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut settled = false;
    while Instant::now() < deadline {
        let behind = shared
            .progress
            .iter()
            .filter(|p| p.load(Ordering::Relaxed) < final_seq)
            .count();
        let gone = shared.done.load(Ordering::Acquire);
        if behind <= gone {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settle = settling.elapsed();
    stop.cancel();
    probe_stop.cancel();
    let probe = probe.join().unwrap_or_default();
    let forwarded =
        (metric_sum(&ctx.registry, "parkd_mqtt_link_messages_total", |_| true) - forwarded0) as u64;
    let queue_at_settle = metric_sum(&ctx.registry, "parkd_ingest_queue_depth", |_| true) as u64;

    let mut result = StepResult {
        step,
        connected,
        connect_time,
        errors: Vec::new(),
        closed_by_server: 0,
        publish: report,
        changes: final_seq.saturating_sub(seq0),
        forwarded,
        eventual_changes: 0,
        ingest_state: 0,
        ingest_lost: 0,
        queue_at_settle: 0,
        expected: 0,
        delivered: 0,
        lagged: 0,
        lagged_skipped: 0,
        gaps: 0,
        old: 0,
        unmatched: 0,
        lost: 0,
        window_s,
        window_received: 0,
        latency: Summary::default(),
        settle,
        settled,
        cpu: cpu0.usage_until(&cpu1),
        server_lagged: counter(&ctx.registry, "parkd_ws_resyncs_total", "reason", "lagged")
            .saturating_sub(lagged0),
        server_send_timeouts: counter(
            &ctx.registry,
            "parkd_ws_refused_total",
            "reason",
            "send_timeout",
        )
        .saturating_sub(timeouts0),
        engine_latency: probe.hist.summary(),
        probe_lagged: probe.lagged,
        server_deltas_sent: counter(
            &ctx.registry,
            "parkd_ws_messages_sent_total",
            "type",
            "delta",
        )
        .saturating_sub(sent0),
    };
    let mut hist = Histogram::new();
    for task in tasks {
        let stats = task.await.context("a WebSocket client task failed")?;
        if let Some(error) = stats.error {
            if result.errors.len() < 5 {
                result.errors.push(error);
            } else {
                result.errors.push(String::new());
            }
        }
        if stats.closed_by_server {
            result.closed_by_server += 1;
        }
        let Some(first) = stats.first_seq else {
            continue;
        };
        // Seq is gap-free: a client at seq L has had (or skipped) every change up to L.
        let expected = final_seq.max(stats.last_seq).saturating_sub(first);
        result.expected += expected;
        result.delivered += stats.deltas;
        result.lagged += stats.lagged;
        result.lagged_skipped += stats.lagged_skipped;
        result.gaps += stats.gaps;
        result.old += stats.old;
        result.unmatched += stats.unmatched;
        result.window_received += stats.window_received;
        result.lost += expected as i64 - (stats.deltas + stats.lagged_skipped) as i64;
        hist.merge(&stats.hist);
    }
    result.latency = hist.summary();
    // Let the server drop the closed clients, then see whether ingest was only late: how far
    // the lot's seq gets once the clients are gone (it stops at published if nothing was lost).
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric_sum(&ctx.registry, "parkd_ws_clients", |_| true) > 0.0 && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = ctx.engine.seq(&ctx.lot).unwrap_or(0);
    let mut still_since = Instant::now();
    while Instant::now() < deadline
        && last.saturating_sub(seq0) < result.publish.sent
        && still_since.elapsed() < Duration::from_secs(3)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = ctx.engine.seq(&ctx.lot).unwrap_or(0);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    result.eventual_changes = last.saturating_sub(seq0);
    let ingest1 = ingest_counts(&ctx.registry);
    result.ingest_state = ingest1.0 - ingest0.0;
    result.ingest_lost = ingest1.1 - ingest0.1;
    result.queue_at_settle = queue_at_settle;
    Ok(result)
}

/// Ingest's (state messages received, messages lost for any reason) so far.
fn ingest_counts(registry: &prometheus::Registry) -> (u64, u64) {
    (
        counter(registry, "parkd_ingest_received_total", "channel", "state"),
        metric_sum(registry, "parkd_ingest_lost_total", |_| true) as u64,
    )
}

pub(crate) fn run(args: &LiveWsArgs) -> anyhow::Result<String> {
    if args.steps.is_empty() {
        bail!("give at least one --steps CLIENTSxRATE");
    }
    let header = RunHeader::gather();
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let mut config = server::base_config(&dir.path().join("data"));
    config.mqtt.allow_anonymous = Some(true);
    config.live.debounce_ms = 0;
    if let Some(interval) = args.frame_interval_ms {
        config.live.frame_interval_ms = interval;
    }
    config.demo.simulate = false;
    let lot = server::lot_id("live-bench")?;
    let per_level = 1_000u32;
    let levels = args.spots.div_ceil(per_level).max(1);
    let mut model = parkd_core::garage::demo_garage(lot.clone(), levels, per_level);
    model.spots.truncate(args.spots as usize);
    let spots: Vec<SpotId> = model.spots.iter().map(|s| s.id.clone()).collect();

    let runtime = server::parkd_runtime(args.parkd_threads)?;
    let load = server::load_runtime(args.load_threads)?;
    let publisher = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("mqttpub")
        .enable_all()
        .build()
        .context("starting the publisher runtime")?;
    let seeding = runtime.block_on(async {
        let store = parkd::app::open_store(&config).await?;
        server::seed_lot(&store, &model).await
    })?;
    eprintln!(
        "{} spots and sensors registered in {:.1} s",
        spots.len(),
        seeding.as_secs_f64()
    );
    let app = runtime
        .block_on(RunningApp::start(config.clone(), Mode::Serve))
        .context("starting parkd")?;
    let ctx = Ctx {
        args,
        engine: app.engine(),
        registry: app.registry().clone(),
        lot: lot.clone(),
        times: Arc::new(SendTimes::new(&spots)),
        publisher: publisher.handle().clone(),
        spots,
        http: app.http_addr(),
        mqtt: app
            .mqtt_addr()
            .ok_or_else(|| anyhow!("no embedded broker"))?,
    };
    let mut results = Vec::new();
    let outcome = load.block_on(async {
        for &step in &args.steps {
            for n in 1..=args.repeats.max(1) {
                eprintln!(
                    "== {} clients x {} changes/s (run {n})",
                    step.clients, step.rate
                );
                let result = run_step(&ctx, step).await?;
                eprintln!(
                    "   deliveries {:.0}/s (expected {:.0}/s), p50 {:.1} ms, p99 {:.1} ms, max \
                     {:.1} ms, lagged {}, lost {}, parkd CPU {:.2}",
                    result.deliveries_per_s(),
                    step.rate * result.connected as f64,
                    result.latency.p50 / 1000.0,
                    result.latency.p99 / 1000.0,
                    result.latency.max / 1000.0,
                    result.lagged,
                    result.lost,
                    result.cpu.cores("parkd"),
                );
                results.push(result);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Ok::<_, anyhow::Error>(())
    });
    runtime.block_on(app.shutdown()).context("stopping parkd")?;
    load.shutdown_timeout(Duration::from_secs(5));
    publisher.shutdown_timeout(Duration::from_secs(5));
    runtime.shutdown_timeout(Duration::from_secs(5));
    outcome?;
    Ok(render(
        &header, args, &lot, levels, per_level, seeding, &results,
    ))
}

fn ms(us: f64) -> String {
    format!("{:.1}", us / 1000.0)
}

fn median_by<'a>(
    runs: &[&'a StepResult],
    key: impl Fn(&StepResult) -> f64,
) -> Option<&'a StepResult> {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted.get(sorted.len() / 2).copied()
}

fn clean(r: &StepResult) -> bool {
    r.lost == 0 && r.lagged == 0 && r.errors.is_empty() && r.connected == r.step.clients
}

fn render(
    header: &RunHeader,
    args: &LiveWsArgs,
    lot: &LotId,
    levels: u32,
    per_level: u32,
    seeding: Duration,
    results: &[StepResult],
) -> String {
    let frame_interval_ms = args
        .frame_interval_ms
        .unwrap_or_else(|| parkd::config::LiveConfig::default().frame_interval_ms);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# parkd live WebSocket benchmark (sensor publish → client receipt)\n"
    );
    out.push_str(&header.markdown());
    let _ = writeln!(out, "\n## Setup\n");
    let _ = writeln!(
        out,
        "- parkd in this process (`RunningApp`, serve mode): embedded broker (anonymous), \
         ingest, SQLite in a temporary directory, `live.debounce_ms = 0`, \
         `live.frame_interval_ms = {frame_interval_ms}` (a client gets at most one write of \
         deltas per interval), other settings default (`feed_capacity` 4,096, heartbeat \
         10 s); no simulator. Lot `{lot}`: \
         `demo_garage({lot}, {levels}, {per_level})` cut to {} spots, imported into the store \
         with one registered sensor per spot ({:.1} s) before parkd starts. parkd runs on a \
         tokio runtime of {} workers (`parkd`).",
        thousands(u64::from(args.spots)),
        seeding.as_secs_f64(),
        args.parkd_threads
    );
    let _ = writeln!(
        out,
        "- Load, same process: N WebSocket clients (tokio-tungstenite, TCP_NODELAY) on a runtime \
         of {} workers (`loadgen`) on `/api/v1/live?lot={lot}`, connecting {WAVE} at a time, \
         each reading its first snapshot; then {} MQTT connections (rumqttc, QoS 0) on a \
         runtime of their own (1 worker, `mqttpub`, so busy clients do not delay them) \
         publish R state changes/s for {} s warm-up + {} s measured, each spot alternating \
         occupied/free so that every message is a change.",
        args.load_threads,
        args.publishers,
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "- Latency = receipt of the delta by a client's task − the `Instant` just before the \
         message was handed to the MQTT client (per spot and value; exact while it is below \
         2 × spots / R). Only changes published in the measured window count. Histogram with \
         < 0.8 % bucket error; max exact. It includes the broker, ingest's accept path, the \
         engine, the feed, the server's WebSocket tasks, the kernel, and the client task's own \
         scheduling: clients and parkd share the {} CPUs.",
        header.cpus
    );
    let _ = writeln!(
        out,
        "- In-process probe: one more subscriber to the lot's feed inside the process (a thread of \
         its own), timing publish → the engine's delta: MQTT, broker, ingest's accept path and \
         the engine without the WebSocket part. The client latency minus this is the fan-out.",
    );
    let _ = writeln!(
        out,
        "- Deliveries/s = deltas received by all clients during the measured window (by \
         receipt time) / window length; expected = clients × the publish rate. Loss = \
         expected − received − deltas stood in for by `lagged` snapshots (per client: the \
         lot's last seq − the seq of its first snapshot).\n"
    );

    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(out, "| Target | Measured | Result |");
    let _ = writeln!(out, "|---|---|---|");
    let at_target: Vec<&StepResult> = results
        .iter()
        .filter(|r| r.step.clients == TARGET_CLIENTS && (r.step.rate - TARGET_RATE).abs() < 0.5)
        .collect();
    match median_by(&at_target, |r| r.latency.p99) {
        Some(r) => {
            let runs = if at_target.len() > 1 {
                format!(
                    " (median of {} runs: {} ms)",
                    at_target.len(),
                    at_target
                        .iter()
                        .map(|r| ms(r.latency.p99))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| p99 < {P99_TARGET_MS:.0} ms with 1,000 clients and 1,000 changes/s | p99 \
                 **{} ms**{runs}; p50 {} ms, max {} ms; {} deliveries/s of {} expected; \
                 lagged {}, lost {} | {} |",
                ms(r.latency.p99),
                ms(r.latency.p50),
                ms(r.latency.max),
                thousands(r.deliveries_per_s().round() as u64),
                thousands((r.step.rate * r.step.clients as f64).round() as u64),
                r.lagged,
                r.lost,
                verdict(r.latency.p99 / 1000.0 < P99_TARGET_MS && clean(r))
            );
        }
        None => {
            let _ = writeln!(
                out,
                "| p99 < {P99_TARGET_MS:.0} ms with 1,000 clients and 1,000 changes/s | not \
                 run (add `--steps 1000x1000`) | - |"
            );
        }
    }
    let ok =
        |r: &StepResult| r.latency.count > 0 && r.latency.p99 / 1000.0 < CEILING_MS && clean(r);
    let offered = |r: &StepResult| r.step.rate * r.step.clients as f64;
    let mut counts: Vec<usize> = results.iter().map(|r| r.step.clients).collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    counts.dedup();
    for clients in counts {
        let of_count: Vec<&StepResult> = results
            .iter()
            .filter(|r| r.step.clients == clients)
            .collect();
        let best = of_count
            .iter()
            .filter(|r| ok(r))
            .max_by(|a, b| a.deliveries_per_s().total_cmp(&b.deliveries_per_s()));
        let over = of_count
            .iter()
            .filter(|r| !ok(r))
            .min_by(|a, b| offered(a).total_cmp(&offered(b)));
        let above = match over {
            Some(o) => format!(
                "; lowest step above: {} changes/s ({} deliveries/s expected): p99 {} ms, \
                 lagged {}, lost {}",
                thousands(o.step.rate as u64),
                thousands(offered(o) as u64),
                ms(o.latency.p99),
                o.lagged,
                o.lost
            ),
            None => "; no step above in the ladder (the ceiling is higher)".to_owned(),
        };
        let _ = writeln!(
            out,
            "| highest load with p99 < {CEILING_MS:.0} ms (no loss, no lagged clients), \
             {} clients | {}{above} | {} |",
            thousands(clients as u64),
            match best {
                Some(r) => format!(
                    "**{} changes/s: {} deliveries/s**, p99 {} ms",
                    thousands(r.step.rate as u64),
                    thousands(r.deliveries_per_s().round() as u64),
                    ms(r.latency.p99)
                ),
                None => "none of the steps run".to_owned(),
            },
            if best.is_some() { "found" } else { "**none**" }
        );
    }
    if let Some(r) = results
        .iter()
        .filter(|r| ok(r))
        .max_by(|a, b| a.deliveries_per_s().total_cmp(&b.deliveries_per_s()))
    {
        let _ = writeln!(
            out,
            "| highest deliveries/s with p99 < {CEILING_MS:.0} ms, any step | **{} deliveries/s** \
             ({} clients × {} changes/s, p99 {} ms) | found |",
            thousands(r.deliveries_per_s().round() as u64),
            thousands(r.step.clients as u64),
            thousands(r.step.rate as u64),
            ms(r.latency.p99)
        );
    }

    let _ = writeln!(out, "\n## Ladder\n");
    let _ = writeln!(
        out,
        "| Clients | Changes/s offered | Published (achieved/s) | Engine changes at the settle / once the clients had gone | Deliveries/s (expected) | p50 / p90 / p99 / p99.9 / max (ms) | Samples | In-process publish → engine delta p50 / p99 / max (ms) | Lagged snapshots | Deltas skipped by them | Lost | Connect (s) | Settle (s) | CPU parkd / clients / publisher / broker+link / machine |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---|"
    );
    for r in results {
        let l = &r.latency;
        let others: f64 = r.cpu.process_cores
            - r.cpu.cores("parkd")
            - r.cpu.cores("loadgen")
            - r.cpu.cores("mqttpub");
        let _ = writeln!(
            out,
            "| {} | {} | {} ({}) | {} / {} | **{}** ({}) | {} / {} / **{}** / {} / {} | {} | {} / {} / {}{} | {} | {} | {} | {:.1} | {:.1}{} | {:.2} / {:.2} / {:.2} / {:.2} / {} |",
            thousands(r.step.clients as u64),
            thousands(r.step.rate as u64),
            thousands(r.publish.queued),
            thousands(r.publish.rate().round() as u64),
            thousands(r.changes),
            thousands(r.eventual_changes),
            thousands(r.deliveries_per_s().round() as u64),
            thousands((r.step.rate * r.connected as f64).round() as u64),
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            thousands(l.count),
            ms(r.engine_latency.p50),
            ms(r.engine_latency.p99),
            ms(r.engine_latency.max),
            if r.probe_lagged > 0 {
                format!(" (probe lagged {}x)", r.probe_lagged)
            } else {
                String::new()
            },
            r.lagged,
            thousands(r.lagged_skipped),
            r.lost,
            r.connect_time.as_secs_f64(),
            r.settle.as_secs_f64(),
            if r.settled { "" } else { " (timed out)" },
            r.cpu.cores("parkd"),
            r.cpu.cores("loadgen"),
            r.cpu.cores("mqttpub"),
            others,
            r.cpu
                .machine_cores
                .map_or("?".to_owned(), |c| format!("{c:.2}")),
        );
    }
    let _ = writeln!(out, "\n## Details\n");
    for r in results {
        let threads: Vec<String> = r
            .cpu
            .by_thread
            .iter()
            .take(6)
            .map(|(name, c)| format!("{name} {c:.2}"))
            .collect();
        let _ = writeln!(
            out,
            "- {} × {}: clients connected {} of {}; deltas received {} of {} expected (gaps \
             without snapshot {}, old {}, unmatched {}); publisher: sent {}, backpressure {}, \
             connection errors {}; broker → ingest {}, ingest received {} state messages and lost {}, \
             its queue held {} at the settle; engine changes {} at the settle, {} once the \
             clients had gone; parkd counted {} lagged resyncs, {} send timeouts, {} \
             deltas sent; closed by the server {}; threads (cores): {}{}",
            thousands(r.step.clients as u64),
            thousands(r.step.rate as u64),
            r.connected,
            r.step.clients,
            thousands(r.delivered),
            thousands(r.expected),
            r.gaps,
            r.old,
            r.unmatched,
            thousands(r.publish.sent),
            r.publish.backpressure,
            r.publish.errors,
            thousands(r.forwarded),
            thousands(r.ingest_state),
            thousands(r.ingest_lost),
            thousands(r.queue_at_settle),
            thousands(r.changes),
            thousands(r.eventual_changes),
            r.server_lagged,
            r.server_send_timeouts,
            thousands(r.server_deltas_sent),
            r.closed_by_server,
            threads.join(", "),
            if r.errors.is_empty() {
                String::new()
            } else {
                format!(
                    "; client errors {}: {}",
                    r.errors.len(),
                    r.errors
                        .iter()
                        .filter(|e| !e.is_empty())
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{number_after, parse_step, scan_delta, string_after};

    #[test]
    fn scans_a_delta() {
        let text = r#"{"type":"delta","lot":"live-bench","seq":4711,"at":"2026-11-25T20:00:01Z","updated_at":"2026-11-25T20:00:01Z","spot":{"id":"L3-017","state":"occupied","since":"2026-11-25T20:00:01Z","updated_at":"2026-11-25T20:00:01Z","v":4711},"total":{"spots":300,"free":1},"free_by_vehicle":{"car":1}}"#;
        assert_eq!(scan_delta(text), Some((4711, "L3-017", "occupied")));
        let snapshot = r#"{"type":"snapshot","reason":"lagged","lot":"x","seq":12,"spots":[]}"#;
        assert_eq!(number_after(snapshot, "\"seq\":"), Some(12));
        assert_eq!(string_after(snapshot, "\"reason\":\""), Some("lagged"));
    }

    #[test]
    fn parses_steps() {
        let step = parse_step("1000x2000").expect("parses");
        assert_eq!(step.clients, 1000);
        assert!((step.rate - 2000.0).abs() < f64::EPSILON);
        assert!(parse_step("1000").is_err());
        assert!(parse_step("0x5").is_err());
    }
}
