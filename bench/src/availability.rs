//! `parkd-bench availability`: how many `GET /api/v1/lots/{lot}/availability` a parkd on two
//! worker threads answers per second, and how fast, with `wrk` on the same machine.
//!
//! parkd runs in this process as `parkd demo` runs it ([`RunningApp`] in [`Mode::Demo`]: the
//! 300-spot demo garage, its simulator on at the demo's speed, so counters change during the
//! run; SQLite in a temporary directory), on a tokio runtime of `--parkd-threads` (2) workers.
//! For each endpoint and run: a `--warmup` wrk run (discarded), then the measured wrk run
//! (`--connections` 64, `--wrk-threads` 2, `--duration` 20 s). The availability endpoint is
//! measured `--repeats` times (the summary gives the median); `/api/v1/lots`,
//! `/api/v1/lots/{lot}/spots`, `/static/model.js` (an embedded file about the size of the
//! availability answer, served from memory: a stand-in for a cached answer) and `/healthz`
//! (the HTTP floor: same stack and middleware, a trivial handler) once each as secondary
//! lines.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use parkd::app::{Mode, RunningApp};

use crate::AvailabilityArgs;
use crate::machine::RunHeader;
use crate::report::thousands;
use crate::report::verdict;
use crate::server::{self, label, metric_sum};
use crate::wrk::{self, WrkResult, WrkSettings};

/// The targets.
const RPS_TARGET: f64 = 50_000.0;
const P99_TARGET_MS: f64 = 5.0;

struct Endpoint {
    name: &'static str,
    path: String,
    route: &'static str,
    repeats: usize,
}

/// One measured wrk run and what parkd saw meanwhile.
struct Run {
    endpoint: &'static str,
    path: String,
    n: usize,
    wrk: WrkResult,
    /// Answers counted by parkd for the route: (2xx, other).
    server_ok: u64,
    server_other: u64,
    /// Mean time in the handler (parkd_http_request_duration_seconds sum / count), µs.
    server_mean_us: f64,
    /// Spot changes in the lot during the run (its sequence number moved by this much).
    changes: u64,
}

fn status_counts(registry: &prometheus::Registry, route: &str) -> (u64, u64) {
    let ok = metric_sum(registry, "parkd_http_requests_total", |l| {
        label(l, "route") == Some(route) && label(l, "status").is_some_and(|s| s.starts_with('2'))
    });
    let other = metric_sum(registry, "parkd_http_requests_total", |l| {
        label(l, "route") == Some(route) && label(l, "status").is_some_and(|s| !s.starts_with('2'))
    });
    (ok as u64, other as u64)
}

pub(crate) fn run(args: &AvailabilityArgs) -> anyhow::Result<String> {
    let header = RunHeader::gather();
    let wrk_version = wrk::version()?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let script = wrk::write_script(dir.path())?;
    let config = server::base_config(&dir.path().join("data"));
    let lot = server::lot_id(&config.demo.lot)?;
    let (spots, speed) = (config.demo.spots, config.demo.speed);

    let runtime = server::parkd_runtime(args.parkd_threads)?;
    let app = runtime
        .block_on(RunningApp::start(config, Mode::Demo))
        .context("starting parkd")?;
    let addr = app.http_addr();
    let engine = app.engine();
    // Let the simulator connect and report every spot.
    for _ in 0..100 {
        if server::known_spots(&engine, &lot) >= i64::from(spots) {
            break;
        }
        crate::demo::pause(Duration::from_millis(100));
    }
    let known = server::known_spots(&engine, &lot);
    eprintln!("parkd up on {addr}; {known} of {spots} spots reported by the simulator");

    let endpoints = [
        Endpoint {
            name: "availability",
            path: format!("/api/v1/lots/{lot}/availability"),
            route: "/api/v1/lots/{lot}/availability",
            repeats: args.repeats.max(1),
        },
        Endpoint {
            name: "lots",
            path: "/api/v1/lots".to_owned(),
            route: "/api/v1/lots",
            repeats: 1,
        },
        Endpoint {
            name: "spots",
            path: format!("/api/v1/lots/{lot}/spots"),
            route: "/api/v1/lots/{lot}/spots",
            repeats: 1,
        },
        // A body of the availability answer's size served from memory through the same stack:
        // what availability would cost with its JSON cached per change (an experiment).
        Endpoint {
            name: "static",
            path: "/static/model.js".to_owned(),
            route: "/static/{file}",
            repeats: 1,
        },
        // The floor: the same HTTP stack and middleware with a trivial handler.
        Endpoint {
            name: "healthz",
            path: "/healthz".to_owned(),
            route: "/healthz",
            repeats: 1,
        },
    ];
    let measured = WrkSettings {
        connections: args.connections,
        threads: args.wrk_threads,
        duration: args.duration,
        timeout: Duration::from_secs(2),
    };
    let warmup = WrkSettings {
        duration: args.warmup,
        ..measured.clone()
    };
    let mut runs = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for endpoint in &endpoints {
            if args.skip_secondary && endpoint.name != "availability" {
                continue;
            }
            let url = format!("http://{addr}{}", endpoint.path);
            for n in 1..=endpoint.repeats {
                if !args.warmup.is_zero() {
                    wrk::run(&url, &warmup, &script).context("wrk warm-up")?;
                }
                let registry = app.registry();
                let (ok0, other0) = status_counts(registry, endpoint.route);
                let (count0, sum0) = server::histogram_route(
                    registry,
                    "parkd_http_request_duration_seconds",
                    endpoint.route,
                );
                let seq0 = engine.seq(&lot).unwrap_or(0);
                let result = wrk::run(&url, &measured, &script)?;
                let seq1 = engine.seq(&lot).unwrap_or(0);
                let (ok1, other1) = status_counts(registry, endpoint.route);
                let (count1, sum1) = server::histogram_route(
                    registry,
                    "parkd_http_request_duration_seconds",
                    endpoint.route,
                );
                let served = count1.saturating_sub(count0);
                let run = Run {
                    endpoint: endpoint.name,
                    path: endpoint.path.clone(),
                    n,
                    server_ok: ok1.saturating_sub(ok0),
                    server_other: other1.saturating_sub(other0),
                    server_mean_us: if served > 0 {
                        (sum1 - sum0) / served as f64 * 1e6
                    } else {
                        0.0
                    },
                    changes: seq1.saturating_sub(seq0),
                    wrk: result,
                };
                eprintln!(
                    "{} run {n}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {} socket / {} \
                     status, parkd CPU {:.2} cores, wrk {:.2}",
                    endpoint.name,
                    run.wrk.rps(),
                    run.wrk.p50_us / 1000.0,
                    run.wrk.p99_us / 1000.0,
                    run.wrk.socket_errors(),
                    run.wrk.status_errors,
                    run.wrk.cpu.process_cores,
                    run.wrk.wrk_cores
                );
                runs.push(run);
            }
        }
        Ok(())
    })();
    // What one answer costs inside the handler, without HTTP: building the figures from the
    // counters, and serialising them (parkd otherwise idle; this thread, not a parkd worker).
    let handler = handler_cost(&engine, &lot);
    runtime.block_on(app.shutdown()).context("stopping parkd")?;
    runtime.shutdown_timeout(Duration::from_secs(5));
    result?;
    Ok(render(
        &header,
        args,
        &wrk_version,
        lot.as_str(),
        spots,
        speed,
        &runs,
        handler,
    ))
}

/// In-process cost of one availability answer: (build µs, serialise µs, bytes).
#[derive(Debug, Clone, Copy)]
struct HandlerCost {
    build_us: f64,
    serialize_us: f64,
    bytes: usize,
}

fn handler_cost(
    engine: &parkd_occupancy::OccupancyEngine,
    lot: &parkd_core::ids::LotId,
) -> HandlerCost {
    const CALLS: usize = 50_000;
    let mut build = Vec::new();
    let mut serialize = Vec::new();
    let mut bytes = 0;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let mut keep = 0u64;
        for _ in 0..CALLS {
            if let Some(a) = engine.availability(lot, chrono::Utc::now()) {
                keep = keep.wrapping_add(a.seq);
            }
        }
        std::hint::black_box(keep);
        build.push(started.elapsed().as_secs_f64() * 1e6 / CALLS as f64);
        let Some(a) = engine.availability(lot, chrono::Utc::now()) else {
            break;
        };
        let started = std::time::Instant::now();
        for _ in 0..CALLS {
            let body = serde_json::to_vec(&a).unwrap_or_default();
            bytes = body.len();
            std::hint::black_box(body);
        }
        serialize.push(started.elapsed().as_secs_f64() * 1e6 / CALLS as f64);
    }
    HandlerCost {
        build_us: median(&mut build),
        serialize_us: median(&mut serialize),
        bytes,
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[allow(clippy::too_many_arguments)]
fn render(
    header: &RunHeader,
    args: &AvailabilityArgs,
    wrk_version: &str,
    lot: &str,
    spots: u32,
    speed: f64,
    runs: &[Run],
    handler: HandlerCost,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# parkd availability benchmark (REST reads)\n");
    out.push_str(&header.markdown());
    let _ = writeln!(out, "\n## Setup\n");
    let _ = writeln!(
        out,
        "- parkd in this process as `parkd demo` runs it (`RunningApp`, demo mode): the demo \
         garage `{lot}` ({spots} spots), its simulator on at the demo's speed ({speed} simulated \
         s per s) so the counters change during the runs, embedded broker, SQLite in a \
         temporary directory; one tokio runtime of {} worker threads (named `parkd`).",
        args.parkd_threads
    );
    let _ = writeln!(
        out,
        "- Load: `{wrk_version}` on the same machine, `-t{} -c{} -d{}s --timeout=2s`, keep-alive \
         connections, after a {} s warm-up run per measured run (discarded). A Lua `done()` \
         prints wrk's own figures (`latency:percentile(50/90/99/99.9)`, exact µs).",
        args.wrk_threads,
        args.connections,
        args.duration.as_secs(),
        args.warmup.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "- Errors: wrk's socket errors (connect, read, write, timeout) and its status errors \
         (status ≥ 400); parkd's own `parkd_http_requests_total` for the route counts every \
         non-2xx answer. Server time = mean of `parkd_http_request_duration_seconds` (handler \
         and middleware, not the socket). CPU in cores (of {} CPUs): this process (= parkd; \
         the harness thread only sleeps) and wrk.\n",
        header.cpus
    );

    let avail: Vec<&Run> = runs
        .iter()
        .filter(|r| r.endpoint == "availability")
        .collect();
    let rps = median(&mut avail.iter().map(|r| r.wrk.rps()).collect::<Vec<_>>());
    let p99_ms = median(
        &mut avail
            .iter()
            .map(|r| r.wrk.p99_us / 1000.0)
            .collect::<Vec<_>>(),
    );
    let errors: u64 = avail
        .iter()
        .map(|r| r.wrk.socket_errors() + r.wrk.status_errors + r.server_other)
        .sum();
    let each =
        |f: &dyn Fn(&Run) -> String| avail.iter().map(|r| f(r)).collect::<Vec<_>>().join(", ");
    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(
        out,
        "`GET /api/v1/lots/{lot}/availability`, {} connections, median of {} runs.\n",
        args.connections,
        avail.len()
    );
    let _ = writeln!(out, "| Target | Measured (median; each run) | Result |");
    let _ = writeln!(out, "|---|---|---|");
    let _ = writeln!(
        out,
        "| ≥ {} requests/s | **{}** req/s ({}) | {} |",
        thousands(RPS_TARGET as u64),
        thousands(rps.round() as u64),
        each(&|r| thousands(r.wrk.rps().round() as u64)),
        verdict(rps >= RPS_TARGET)
    );
    let _ = writeln!(
        out,
        "| p99 < {P99_TARGET_MS:.0} ms | **{p99_ms:.2}** ms ({}) | {} |",
        each(&|r| format!("{:.2}", r.wrk.p99_us / 1000.0)),
        verdict(p99_ms < P99_TARGET_MS)
    );
    let _ = writeln!(
        out,
        "| no errors | {} (socket + status ≥ 400 + non-2xx counted by parkd, all runs) | {} |",
        thousands(errors),
        verdict(errors == 0)
    );
    let _ = writeln!(out, "\n## Runs\n");
    let _ = writeln!(
        out,
        "| Endpoint | Run | Requests/s | p50 / p90 / p99 / p99.9 / max (ms) | Socket errors | Status ≥ 400 (wrk) | Non-2xx (parkd) | Bytes/response | Server time (µs) | parkd CPU (cores) | wrk CPU | Machine busy | Spot changes |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in runs {
        let w = &r.wrk;
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {:.2} / {:.2} / {:.2} / {:.2} / {:.2} | {} | {} | {} | {:.0} | {:.1} | {:.2} | {:.2} | {} | {} |",
            r.path,
            r.n,
            thousands(w.rps().round() as u64),
            w.p50_us / 1000.0,
            w.p90_us / 1000.0,
            w.p99_us / 1000.0,
            w.p999_us / 1000.0,
            w.max_us / 1000.0,
            w.socket_errors(),
            w.status_errors,
            r.server_other,
            w.bytes_per_request(),
            r.server_mean_us,
            w.cpu.process_cores,
            w.wrk_cores,
            w.cpu
                .machine_cores
                .map_or("?".to_owned(), |c| format!("{c:.2}")),
            r.changes
        );
    }
    let _ = writeln!(out, "\n## Where a request's CPU goes\n");
    let per_request: Vec<f64> = avail
        .iter()
        .map(|r| r.wrk.cpu.process_cores * 1e6 / r.wrk.rps().max(1.0))
        .collect();
    let cpu_us = median(&mut per_request.clone());
    let handler_us = handler.build_us + handler.serialize_us;
    let _ = writeln!(
        out,
        "- parkd CPU per availability request (parkd cores / req/s, median): **{cpu_us:.1} µs** \
         ({}).",
        per_request
            .iter()
            .map(|v| format!("{v:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "- parkd renders a lot's answer once per change of the lot (`LotVersion`: sequence \
         number, newest sensor message, model) and serves the rendered bytes with a fresh \
         `as_of` until the next change, so the figures are gathered and serialised a few times \
         a minute, not per request. What a render costs, measured in-process on one thread \
         after the runs (median of 3 x 50,000 calls): `OccupancyEngine::availability` (the \
         figures from the counters) **{:.2} µs**, `serde_json::to_vec` of the answer ({} \
         bytes) **{:.2} µs**: {:.2} µs, which would be {:.0} % of the request's CPU if paid \
         on every request. A request's CPU is HTTP (hyper, routing, the metrics middleware), \
         the cache lookup and copy, and the kernel's socket work.",
        handler.build_us,
        thousands(handler.bytes as u64),
        handler.serialize_us,
        handler_us,
        100.0 * handler_us / cpu_us.max(1e-9)
    );
    let wrk_us = median(
        &mut avail
            .iter()
            .map(|r| r.wrk.wrk_cores * 1e6 / r.wrk.rps().max(1.0))
            .collect::<Vec<_>>(),
    );
    let _ = writeln!(
        out,
        "- wrk's own CPU per request: {wrk_us:.1} µs. On {} CPUs shared by parkd and wrk, \
         {:.1} µs of CPU per request in all bounds the rate at {} req/s.",
        header.cpus,
        cpu_us + wrk_us,
        thousands((header.cpus as f64 * 1e6 / (cpu_us + wrk_us).max(1e-9)) as u64)
    );
    if let Some(cached) = runs.iter().find(|r| r.endpoint == "static") {
        let us = cached.wrk.cpu.process_cores * 1e6 / cached.wrk.rps().max(1.0);
        let _ = writeln!(
            out,
            "- Experiment, `GET /static/model.js`: an embedded file of {:.0} bytes (the \
             availability answer is {:.0}) served from memory through the same stack and \
             middleware, the cost of an answer that needs no lookup and no copy at all: \
             **{} req/s, p99 {:.2} ms**, parkd {us:.1} µs of CPU per request.",
            cached.wrk.bytes_per_request(),
            avail.first().map_or(0.0, |r| r.wrk.bytes_per_request()),
            thousands(cached.wrk.rps().round() as u64),
            cached.wrk.p99_us / 1000.0
        );
    }
    if let Some(floor) = runs.iter().find(|r| r.endpoint == "healthz") {
        let floor_us = floor.wrk.cpu.process_cores * 1e6 / floor.wrk.rps().max(1.0);
        let floor_wrk_us = floor.wrk.wrk_cores * 1e6 / floor.wrk.rps().max(1.0);
        let _ = writeln!(
            out,
            "- The floor, `GET /healthz` (same HTTP stack and middleware, trivial handler): \
             {} req/s, parkd {floor_us:.1} µs + wrk {floor_wrk_us:.1} µs of CPU per request: \
             even a free handler tops out near {} req/s here with wrk on the same CPUs.",
            thousands(floor.wrk.rps().round() as u64),
            thousands((header.cpus as f64 * 1e6 / (floor_us + floor_wrk_us).max(1e-9)) as u64)
        );
    }
    let _ = writeln!(out, "\nparkd threads (cores, each run):\n");
    for r in runs {
        let threads: Vec<String> = r
            .wrk
            .cpu
            .by_thread
            .iter()
            .take(5)
            .map(|(name, cores)| format!("{name} {cores:.2}"))
            .collect();
        let _ = writeln!(
            out,
            "- {} run {}: {} (2xx counted by parkd: {} = wrk requests {})",
            r.endpoint,
            r.n,
            threads.join(", "),
            thousands(r.server_ok),
            thousands(r.wrk.requests)
        );
    }
    out
}
