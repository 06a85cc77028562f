//! `parkd-bench logins`: N concurrent clients logging in again and again with production
//! Argon2id parameters, on SQLite (or PostgreSQL).
//!
//! One process: parkd ([`RunningApp`], serve mode) on a runtime of `--parkd-threads` (2)
//! workers named `parkd` (its blocking pool, where the hashes run, has the same name); the
//! clients on another (`--load-threads`, `loadgen`). parkd's `[auth]` settings are its
//! defaults: Argon2id at OWASP's minimum (19 MiB, 2 passes, 1 lane; the configuration refuses
//! less) and `auth.hash_concurrency` = the number of cores unless `--hash-concurrency` says
//! otherwise (an experiment, marked in the report).
//!
//! Each client registers its own account through the API and keeps one keep-alive HTTP/1.1
//! connection. First a baseline: one client alone logs in for `--baseline` (5 s), which gives
//! the time of one login with nothing queued. Then all clients log in in a closed loop (the
//! next login as soon as the answer is in) with their own correct password: `--warmup` (3 s),
//! then the measured window (`--duration`, 20 s). Only correct passwords are sent, so the
//! failed-login limiter never counts anything; a 429 would show it interfering.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parkd::app::{Mode, RunningApp};

use crate::cpu::{CpuSnapshot, CpuUsage};
use crate::drivers::{self, StoreSetup};
use crate::hist::Histogram;
use crate::http1::Connection;
use crate::machine::RunHeader;
use crate::report::thousands;
use crate::report::verdict;
use crate::server::{self, label, metric_sum};
use crate::{Backend, LoginsArgs};

/// The issue's target.
const P99_TARGET_MS: f64 = 2_000.0;
const TARGET_CLIENTS: usize = 20;
const ISSUE_TARGET: &str = "Login: 20 concurrent logins keep p99 under 2 s on 2 cores.";
const ROUTE: &str = "/api/v1/auth/login";

/// A client: its connection and credentials.
struct Client {
    connection: Connection,
    email: String,
    password: String,
}

async fn enrol(addr: SocketAddr, tag: String, i: usize) -> anyhow::Result<Client> {
    let mut connection = Connection::open(addr).await?;
    let (email, password) = drivers::credentials(&tag, i);
    drivers::register(&mut connection, &email, &password).await?;
    Ok(Client {
        connection,
        email,
        password,
    })
}

/// What a phase's clients saw.
#[derive(Debug, Default)]
struct LoginStats {
    /// Answers completed in the measured window.
    all: Histogram,
    ok: Histogram,
    /// Answers by status in the window.
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    first_error: Option<String>,
    /// Over the whole phase (warm-up included): answers other than 200, errors.
    failures_all: u64,
}

impl LoginStats {
    fn merge(&mut self, other: LoginStats) {
        self.all.merge(&other.all);
        self.ok.merge(&other.ok);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.errors += other.errors;
        self.failures_all += other.failures_all;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
}

/// One client's closed loop: logins from `start` until `end`, measured from `from`.
async fn log_in_loop(
    mut client: Client,
    start: Instant,
    from: Instant,
    end: Instant,
) -> (Client, LoginStats) {
    let mut stats = LoginStats::default();
    let body = drivers::login_body(&client.email, &client.password);
    tokio::time::sleep_until(start.into()).await;
    while Instant::now() < end {
        let sent = Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(60),
            client.connection.send("POST", ROUTE, &[], body.as_bytes()),
        )
        .await;
        let done = Instant::now();
        let measured = done >= from && done < end;
        let micros = (done - sent).as_micros() as u64;
        match result {
            Ok(Ok(answer)) => {
                if answer.status != 200 {
                    stats.failures_all += 1;
                    if stats.first_error.is_none() {
                        stats.first_error = Some(format!(
                            "status {}: {}",
                            answer.status,
                            answer.problem_kind()
                        ));
                    }
                }
                if measured {
                    *stats.statuses.entry(answer.status).or_default() += 1;
                    stats.all.record(micros);
                    if answer.status == 200 {
                        stats.ok.record(micros);
                    }
                }
            }
            failed => {
                client.connection.reset();
                stats.failures_all += 1;
                if measured {
                    stats.errors += 1;
                }
                if stats.first_error.is_none() {
                    stats.first_error = Some(match failed {
                        Ok(Err(error)) => format!("{error:#}"),
                        _ => "no answer within 60 s".to_owned(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    (client, stats)
}

/// One phase: `clients` in a closed loop for `warmup` + `duration`.
struct Phase {
    clients: usize,
    window_s: f64,
    stats: LoginStats,
    cpu: CpuUsage,
    /// parkd's `parkd_auth_logins_total` by outcome, during the window.
    outcomes: BTreeMap<String, u64>,
    /// Mean time in parkd per login (`parkd_http_request_duration_seconds`), µs.
    server_mean_us: f64,
}

fn login_outcomes(registry: &prometheus::Registry) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for outcome in [
        "ok",
        "wrong_password",
        "unknown_account",
        "disabled",
        "rate_limited",
    ] {
        let n = metric_sum(registry, "parkd_auth_logins_total", |l| {
            label(l, "outcome") == Some(outcome)
        });
        out.insert(outcome.to_owned(), n as u64);
    }
    out
}

async fn phase(
    clients: Vec<Client>,
    warmup: Duration,
    duration: Duration,
    registry: &prometheus::Registry,
) -> anyhow::Result<(Vec<Client>, Phase)> {
    let n = clients.len();
    let start = Instant::now() + Duration::from_millis(100);
    let from = start + warmup;
    let end = from + duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(log_in_loop(client, start, from, end)))
        .collect();
    tokio::time::sleep_until(from.into()).await;
    let cpu0 = CpuSnapshot::take();
    let outcomes0 = login_outcomes(registry);
    let handled0 = server::histogram_route(registry, "parkd_http_request_duration_seconds", ROUTE);
    tokio::time::sleep_until(end.into()).await;
    let cpu1 = CpuSnapshot::take();
    let outcomes1 = login_outcomes(registry);
    let handled1 = server::histogram_route(registry, "parkd_http_request_duration_seconds", ROUTE);
    let mut stats = LoginStats::default();
    let mut back = Vec::with_capacity(n);
    for task in tasks {
        let (client, s) = task.await.context("a login client failed")?;
        stats.merge(s);
        back.push(client);
    }
    let handled = handled1.0.saturating_sub(handled0.0);
    let outcomes = outcomes1
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(outcomes0.get(k).copied().unwrap_or(0)),
            )
        })
        .collect();
    Ok((
        back,
        Phase {
            clients: n,
            window_s: duration.as_secs_f64(),
            stats,
            cpu: cpu0.usage_until(&cpu1),
            outcomes,
            server_mean_us: if handled > 0 {
                (handled1.1 - handled0.1) / handled as f64 * 1e6
            } else {
                0.0
            },
        },
    ))
}

pub(crate) fn run(args: &LoginsArgs) -> anyhow::Result<String> {
    if args.clients == 0 {
        bail!("--clients must be above zero");
    }
    let header = RunHeader::gather();
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let mut config = server::base_config(&dir.path().join("data"));
    config.demo.simulate = false;
    if let Some(n) = args.hash_concurrency {
        config.auth.hash_concurrency = Some(n);
    }
    let runtime = server::parkd_runtime(args.parkd_threads)?;
    let load = server::load_runtime(args.load_threads)?;
    let setup = runtime.block_on(StoreSetup::fresh(
        &mut config,
        args.backend,
        args.database_url.clone(),
        None,
    ))?;
    let description = setup.description(&config);
    let outcome = measure(args, &config, &runtime, &load);
    let disposed = runtime.block_on(setup.dispose());
    load.shutdown_timeout(Duration::from_secs(5));
    runtime.shutdown_timeout(Duration::from_secs(5));
    let (setup_s, baseline, main) = outcome?;
    disposed?;
    Ok(render(
        &header,
        args,
        &config,
        &description,
        setup_s,
        baseline.as_ref(),
        &main,
    ))
}

type Measured = (f64, Option<Phase>, Phase);

fn measure(
    args: &LoginsArgs,
    config: &parkd::config::ParkdConfig,
    runtime: &tokio::runtime::Runtime,
    load: &tokio::runtime::Runtime,
) -> anyhow::Result<Measured> {
    let app = runtime
        .block_on(RunningApp::start(config.clone(), Mode::Serve))
        .context("starting parkd")?;
    let addr = app.http_addr();
    let registry = app.registry().clone();
    let tag = drivers::run_tag();
    eprintln!("parkd up on {addr}; registering {} accounts", args.clients);
    let result = load.block_on(async {
        let enrolling = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..args.clients {
            let tag = tag.clone();
            tasks.spawn(async move { (i, enrol(addr, tag, i).await) });
        }
        let mut slots: Vec<Option<Client>> = (0..args.clients).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            let (i, client) = joined.context("an enrolling task failed")?;
            slots[i] = Some(client.with_context(|| format!("registering account {i}"))?);
        }
        let mut clients: Vec<Client> = slots.into_iter().flatten().collect();
        let setup_s = enrolling.elapsed().as_secs_f64();
        eprintln!("{} accounts in {setup_s:.1} s", clients.len());
        let baseline = if args.baseline.is_zero() || clients.is_empty() {
            None
        } else {
            let rest = clients.split_off(1);
            let (one, phase) = phase(
                clients,
                Duration::from_millis(500),
                args.baseline,
                &registry,
            )
            .await?;
            eprintln!(
                "baseline, 1 client: {} logins, p50 {:.0} ms",
                phase.stats.all.summary().count,
                phase.stats.all.summary().p50 / 1000.0
            );
            clients = one;
            clients.extend(rest);
            Some(phase)
        };
        let (_, main) = phase(clients, args.warmup, args.duration, &registry).await?;
        let s = main.stats.all.summary();
        eprintln!(
            "{} clients: {} logins ({:.1}/s), p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            main.clients,
            s.count,
            s.count as f64 / main.window_s,
            s.p50 / 1000.0,
            s.p99 / 1000.0,
            s.max / 1000.0
        );
        Ok::<_, anyhow::Error>((setup_s, baseline, main))
    });
    runtime.block_on(app.shutdown()).context("stopping parkd")?;
    result
}

fn ms(us: f64) -> String {
    format!("{:.0}", us / 1000.0)
}

fn phase_row(out: &mut String, name: &str, p: &Phase) {
    let s = p.stats.all.summary();
    let per_s = s.count as f64 / p.window_s;
    let parkd = p.cpu.cores("parkd");
    let _ = writeln!(
        out,
        "| {name} | {} | {} | {per_s:.1} | {} | {:.0} | {parkd:.2} | {:.2} | {} | {:.0} |",
        p.clients,
        thousands(s.count),
        s.ms_row(0),
        p.server_mean_us / 1000.0,
        p.cpu.cores("loadgen"),
        p.cpu
            .machine_cores
            .map_or("?".to_owned(), |m| format!("{m:.2}")),
        if per_s > 0.0 {
            parkd * 1000.0 / per_s
        } else {
            0.0
        }
    );
}

fn render(
    header: &RunHeader,
    args: &LoginsArgs,
    config: &parkd::config::ParkdConfig,
    store: &str,
    setup_s: f64,
    baseline: Option<&Phase>,
    main: &Phase,
) -> String {
    let auth = config.auth_settings();
    let s = main.stats.all.summary();
    let per_s = s.count as f64 / main.window_s;
    let ok = main.stats.count(200);
    let not_ok = s.count - ok + main.stats.errors;
    let on_shape = args.clients == TARGET_CLIENTS && header.cpus == 2;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# parkd login benchmark ({} concurrent logins, {})\n",
        args.clients,
        args.backend.name()
    );
    out.push_str(&header.markdown());
    let _ = writeln!(out, "\nIssue target: \"{ISSUE_TARGET}\"");
    let _ = writeln!(out, "\n## Setup\n");
    let _ = writeln!(
        out,
        "- parkd in this process (`RunningApp`, serve mode) on a tokio runtime of {} worker \
         threads (`parkd`; the Argon2 hashes run on its blocking pool, same name). Store: \
         {store}.",
        args.parkd_threads
    );
    let _ = writeln!(
        out,
        "- Argon2id, parkd's production defaults: **memory {} KiB, {} passes, {} lane(s)** \
         (OWASP's minimum; parkd refuses less). **`auth.hash_concurrency` = {}**{}: at most \
         that many hashes run at once, the others queue (fairly, in arrival order) on a \
         semaphore.",
        auth.argon2.memory_kib,
        auth.argon2.iterations,
        auth.argon2.parallelism,
        auth.hash_concurrency,
        if args.hash_concurrency.is_some() {
            " (**EXPERIMENT**: set by `--hash-concurrency`, not parkd's default)"
        } else {
            " (parkd's default: the number of cores)"
        }
    );
    let _ = writeln!(
        out,
        "- {} accounts registered through `POST /api/v1/auth/register` in {setup_s:.1} s. \
         Each client (runtime of {} workers, `loadgen`) has its own account and keep-alive \
         HTTP/1.1 connection and posts `POST /api/v1/auth/login` with its correct password \
         in a closed loop: the next login as soon as the answer is in. Every client comes from \
         127.0.0.1, and only correct passwords are sent, so the failed-login limiter counts \
         nothing (a 429 would show otherwise; a successful login also clears its count).",
        args.clients, args.load_threads
    );
    let _ = writeln!(
        out,
        "- Baseline: one client alone for {} s (the time of one login with nothing queued). \
         Then {} clients: {} s warm-up, {} s measured. Latency = send → last byte of the \
         answer, answers completed in the window.\n",
        args.baseline.as_secs_f64(),
        args.clients,
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64()
    );

    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(out, "| Target | Measured | Result |");
    let _ = writeln!(out, "|---|---|---|");
    let shape = if on_shape {
        String::new()
    } else {
        format!(
            " (this run: {} clients on {} CPUs; the target is stated for 20 on 2)",
            args.clients, header.cpus
        )
    };
    let _ = writeln!(
        out,
        "| p99 < 2 s with 20 concurrent logins on 2 cores{shape} | **p99 {} ms** (p50 {} ms, \
         max {} ms; {} logins, {per_s:.1}/s) | {} |",
        ms(s.p99),
        ms(s.p50),
        ms(s.max),
        thousands(s.count),
        verdict(s.p99 / 1000.0 < P99_TARGET_MS && s.count > 0 && on_shape)
    );
    let _ = writeln!(
        out,
        "| every login succeeds (no 429 from the limiter, no error) | {} of {} answers 200; \
         {} not 200 or failed in the window, {} over the whole run{} | {} |",
        thousands(ok),
        thousands(s.count),
        not_ok,
        main.stats.failures_all,
        main.stats
            .first_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (first: {e})")),
        verdict(not_ok == 0 && main.stats.failures_all == 0)
    );

    let _ = writeln!(out, "\n## Phases\n");
    let _ = writeln!(
        out,
        "| Phase | Clients | Logins | Logins/s | p50 / p90 / p99 / p99.9 / max (ms) | parkd time per login (ms, mean) | parkd CPU (cores) | clients CPU | Machine busy | parkd CPU per login (ms) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|");
    if let Some(b) = baseline {
        phase_row(&mut out, "baseline", b);
    }
    phase_row(&mut out, "measured", main);
    let statuses: Vec<String> = main
        .stats
        .statuses
        .iter()
        .map(|(status, n)| format!("{status}: {}", thousands(*n)))
        .collect();
    let outcomes: Vec<String> = main
        .outcomes
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(o, n)| format!("{o} {}", thousands(*n)))
        .collect();
    let _ = writeln!(
        out,
        "\nMeasured window: answers by status {}; parkd's `parkd_auth_logins_total` by outcome: \
         {}.",
        statuses.join(", "),
        if outcomes.is_empty() {
            "none".to_owned()
        } else {
            outcomes.join(", ")
        }
    );

    let _ = writeln!(out, "\n## Where the time goes\n");
    if let Some(b) = baseline {
        let single = b.stats.all.summary();
        let service_ms = single.p50 / 1000.0;
        let hashes = auth.hash_concurrency.max(1) as f64;
        let capacity = hashes / (service_ms / 1000.0).max(1e-9);
        let predicted_ms = main.clients as f64 / hashes * service_ms;
        let _ = writeln!(
            out,
            "- One login alone takes **{service_ms:.0} ms** (baseline p50), almost all of it \
             one Argon2id verification on one core. With `hash_concurrency` = {} and \
             {} CPUs, at most {:.0} verifications run at once, so parkd can answer about \
             {capacity:.1} logins/s if nothing else needs the CPU; measured: **{per_s:.1}/s**.",
            auth.hash_concurrency,
            header.cpus,
            hashes.min(header.cpus as f64),
        );
        let _ = writeln!(
            out,
            "- In a closed loop of {} clients, each login waits its turn behind the other {} \
             clients' hashes: latency ≈ clients / hash_concurrency × one login = {} / {} × \
             {service_ms:.0} ms \
             ≈ **{predicted_ms:.0} ms** if parkd had both cores to itself; measured p50 {} ms, \
             p99 {} ms. The queue is fair \
             (tokio's semaphore is FIFO), so the tail stays close to the median: p99 / p50 = \
             {:.2}.",
            main.clients,
            main.clients.saturating_sub(1),
            main.clients,
            auth.hash_concurrency,
            ms(s.p50),
            ms(s.p99),
            s.p99 / s.p50.max(1.0)
        );
        let parkd_cores = main.cpu.cores("parkd");
        let cpu_ms = if per_s > 0.0 {
            parkd_cores * 1000.0 / per_s
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "- Measured the other way round (Little's law: latency = clients / throughput, and \
             throughput = parkd's cores / CPU per login): parkd got **{parkd_cores:.2} cores** \
             in the window (the machine is shared; {} CPUs, busy {}), at {cpu_ms:.0} ms of CPU \
             per login that is {:.1} logins/s, so {} / {:.1} = **{:.0} ms** per login, against \
             a measured mean of {:.0} ms.",
            header.cpus,
            main.cpu
                .machine_cores
                .map_or("?".to_owned(), |m| format!("{m:.2}")),
            parkd_cores * 1000.0 / cpu_ms.max(1e-9),
            main.clients,
            parkd_cores * 1000.0 / cpu_ms.max(1e-9),
            main.clients as f64 / (parkd_cores * 1000.0 / cpu_ms.max(1e-9)).max(1e-9) * 1000.0,
            main.stats.all.mean() / 1000.0
        );
        let budget = P99_TARGET_MS / service_ms.max(1e-9) * hashes;
        let _ = writeln!(
            out,
            "- At this cost per hash the 2 s budget holds up to about **{budget:.0} \
             concurrent logins** (2 s / {service_ms:.0} ms × {}), before any other load on \
             the CPUs.",
            auth.hash_concurrency
        );
    }
    let threads: Vec<String> = main
        .cpu
        .by_thread
        .iter()
        .take(6)
        .map(|(name, cores)| format!("{name} {cores:.2}"))
        .collect();
    let _ = writeln!(
        out,
        "- CPU in the measured window: this process {:.2} cores ({}); the whole machine {} \
         (of {}).",
        main.cpu.process_cores,
        threads.join(", "),
        main.cpu
            .machine_cores
            .map_or("?".to_owned(), |m| format!("{m:.2}")),
        header.cpus
    );
    if args.backend == Backend::Postgres {
        let _ = writeln!(
            out,
            "- PostgreSQL: a login reads the account and inserts a session (two statements); \
             against 2 verifications at a time they are noise."
        );
    }
    out
}
