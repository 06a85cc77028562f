//! Payments on PostgreSQL with the test provider, two measurements:
//!
//! 1. **Pay at exit**: a car at the exit gate is refused with the amount due; its driver pays
//!    at the pay station (`POST /api/v1/sessions/{id}/payments`, over HTTP); the gate asks
//!    again and opens. The time from the first exit request to the open answer, per car, with
//!    `--concurrency` cars at once. The gate side calls the gate service in-process (the MQTT
//!    hop is what `parkd-bench gates` measures, p99 7 ms); the payment goes through the HTTP
//!    API, the tariff, the provider and the ledger as in production.
//! 2. **Concurrent confirmations with retries**: `--reservations` reservations are each paid
//!    by `--retries` identical requests at once (same `Idempotency-Key`, as a retrying app or a
//!    double tap sends them) and once more afterwards; then every reservation must have exactly
//!    one succeeded payment, no other payment rows, and the ledger must hold exactly one charge
//!    per reservation summing to what was paid.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use chrono::{Duration as Span, Utc};
use parkd::app::{Mode, RunningApp};
use parkd_core::gate::{Action, Reason};
use parkd_core::ids::{GateId, LotId};
use parkd_store::{Device, DeviceBinding, PaymentStatus, Store};

use crate::drivers::{self, StoreSetup};
use crate::hist::Histogram;
use crate::http1::Connection;
use crate::machine::RunHeader;
use crate::report::verdict;
use crate::{Backend, PaymentsArgs, server};

/// 6.00 an hour by the minute, no grace: even a stay of seconds owes one minute (10 cents).
const TARIFF: &str = r#"{"currency": "EUR", "unit_minutes": 1, "grace_minutes": 0,
                         "rates": {"base": {"per_hour": 600}}}"#;

/// Runs both measurements; the Markdown report.
pub(crate) fn run(args: &PaymentsArgs) -> anyhow::Result<String> {
    if args.cars == 0
        || args.concurrency.is_empty()
        || args.concurrency.contains(&0)
        || args.reservations == 0
        || args.retries == 0
    {
        bail!("--cars, --concurrency, --reservations and --retries must be above zero");
    }
    let header = RunHeader::gather();
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let mut config = server::base_config(&dir.path().join("data"));
    config.demo.simulate = false;
    let runtime = server::parkd_runtime(args.parkd_threads)?;
    let setup = runtime.block_on(StoreSetup::fresh(
        &mut config,
        Backend::Postgres,
        args.database_url.clone(),
        None,
    ))?;
    let description = setup.description(&config);
    let lot_id = server::lot_id("pay-garage")?;
    let lot = parkd_core::garage::demo_garage(lot_id.clone(), 3, 100);
    let gates = [parse_gate("in-1")?, parse_gate("out-1")?];
    runtime.block_on(async {
        let store = parkd::app::open_store(&config).await?;
        store.put_lot(&lot).await.context("importing the lot")?;
        for gate in &gates {
            store
                .upsert_device(&Device {
                    id: parkd_sim::gates::gate_device_id(&lot_id, gate)
                        .map_err(|e| anyhow!("gate id: {e}"))?,
                    binding: DeviceBinding::Gate {
                        lot: lot_id.clone(),
                        gate: gate.clone(),
                    },
                    secret_sha256: None,
                    disabled: false,
                    created_at: Utc::now(),
                })
                .await
                .context("registering a gate")?;
        }
        store
            .put_tariff(&lot_id, TARIFF, Utc::now())
            .await
            .context("setting the tariff")?;
        anyhow::Ok(())
    })?;
    let app = runtime
        .block_on(RunningApp::start(config.clone(), Mode::Serve))
        .context("starting parkd")?;
    let outcome = runtime.block_on(measure(args, &app, &lot_id, &gates));
    runtime.block_on(app.shutdown()).context("stopping parkd")?;
    runtime.block_on(setup.dispose())?;
    let (exit, retries) = outcome?;
    Ok(report(args, &header, &description, &exit, &retries))
}

fn parse_gate(raw: &str) -> anyhow::Result<GateId> {
    GateId::parse(raw).map_err(|e| anyhow!("gate id {raw}: {e}"))
}

/// Cars of the unmeasured warm-up run.
const WARM_UP_CARS: usize = 100;

/// One pay-at-exit run: its place in the sequence (each run has its own plates, request ids
/// and idempotency keys, derived from it), its cars and how many leave at once.
#[derive(Debug, Clone, Copy)]
struct RunShape {
    index: usize,
    cars: usize,
    concurrency: usize,
}

/// What the pay-at-exit measurement saw at one concurrency.
#[derive(Debug, Default)]
struct ExitRun {
    /// Cars at the exit at once.
    concurrency: usize,
    /// From the first exit request to the last answer, in seconds.
    elapsed_s: f64,
    /// First exit request → open, per car, in microseconds.
    latency: Histogram,
    /// The payment request alone.
    payment: Histogram,
    cars: usize,
    opened: usize,
    failures: Vec<String>,
    paid_minor: i64,
}

/// What the retry measurement saw.
#[derive(Debug, Default)]
struct RetryRun {
    reservations: usize,
    requests: usize,
    created: usize,
    replayed: usize,
    in_flight: usize,
    other: Vec<String>,
    payment_rows: usize,
    succeeded_rows: usize,
    reservations_with_one: usize,
    charges: usize,
    charged_minor: i64,
    expected_minor: i64,
    revenue_minor: i64,
    elapsed_s: f64,
}

async fn measure(
    args: &PaymentsArgs,
    app: &RunningApp,
    lot: &LotId,
    gates: &[GateId; 2],
) -> anyhow::Result<(Vec<ExitRun>, RetryRun)> {
    let addr = app.http_addr();
    let store = app.store();
    // The lot's model reaches the engine with the app's start (stored before it).
    let started = Instant::now();
    while app.engine().model(lot).is_none() {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            bail!("the lot never reached the occupancy engine");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // No sensors here: every spot is reported free once, as a quiet garage's sensors would.
    let engine = app.engine();
    if let Some(model) = engine.model(lot) {
        for spot in &model.spots {
            engine.apply(lot, &spot.id, false, Utc::now());
        }
    }
    let operator = account(addr, &store, "station", true).await?;
    // The first flows of a fresh process and database are not representative (statements
    // not yet prepared on the pooled connections, empty tables): a warm-up run is reported,
    // not judged. Each run has its own plates, request ids and keys: reusing them would
    // measure recorded answers being replayed.
    let shapes = std::iter::once((WARM_UP_CARS, 4))
        .chain(args.concurrency.iter().map(|&c| (args.cars, c)))
        .enumerate()
        .map(|(index, (cars, concurrency))| RunShape {
            index,
            cars,
            concurrency,
        });
    let mut exit = Vec::new();
    for shape in shapes {
        exit.push(pay_at_exit(shape, app, lot, gates, addr, &operator).await?);
    }
    let driver = account(addr, &store, "retry", false).await?;
    let retries = concurrent_retries(args, addr, &store, &driver, lot).await?;
    Ok((exit, retries))
}

/// A signed-in account (an operator for the pay station); its token.
async fn account(
    addr: SocketAddr,
    store: &Arc<dyn Store>,
    tag: &str,
    operator: bool,
) -> anyhow::Result<String> {
    let mut connection = Connection::open(addr).await?;
    let (email, password) = drivers::credentials(tag, 0);
    drivers::register(&mut connection, &email, &password).await?;
    if operator {
        let parsed = parkd_core::account::Email::parse(&email).map_err(|e| anyhow!("{e}"))?;
        let user = store
            .user_by_email(&parsed)
            .await?
            .context("the registered operator")?;
        store
            .set_role(&user.id, parkd_core::account::Role::Operator)
            .await?;
    }
    drivers::login(&mut connection, &email, &password).await
}

fn gate_request(id: &str, direction: &str, plate: &str) -> Vec<u8> {
    serde_json::json!({"request_id": id, "direction": direction, "plate": plate,
                       "plate_confidence": 0.99, "ts": Utc::now().timestamp_millis()})
    .to_string()
    .into_bytes()
}

async fn pay_at_exit(
    RunShape {
        index: level,
        cars,
        concurrency,
    }: RunShape,
    app: &RunningApp,
    lot: &LotId,
    gates: &[GateId; 2],
    addr: SocketAddr,
    operator: &str,
) -> anyhow::Result<ExitRun> {
    let service = app.gates();
    // Everyone in first.
    for car in 0..cars {
        let plate = format!("PAY{level}X{car:04}");
        let entry = service
            .handle_request(
                lot,
                &gates[0],
                &gate_request(&format!("in-{level}-{car}"), "entry", &plate),
                Utc::now(),
            )
            .await;
        if entry.action != Action::Open {
            bail!("car {car} was not let in: {:?}", entry.reason);
        }
    }
    // Stays are priced in whole seconds: one of none is free.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let bearer = format!("Bearer {operator}");
    let mut run = ExitRun {
        cars,
        concurrency,
        ..ExitRun::default()
    };
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (service, lot, gate) = (service.clone(), lot.clone(), gates[1].clone());
        let (next, bearer) = (next.clone(), bearer.clone());
        workers.spawn(async move {
            let mut part = ExitRun::default();
            let mut connection = Connection::open(addr).await?;
            loop {
                let car = next.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                if car >= cars {
                    return anyhow::Ok(part);
                }
                let plate = format!("PAY{level}X{car:04}");
                let t0 = Instant::now();
                let asked = service
                    .handle_request(
                        &lot,
                        &gate,
                        &gate_request(&format!("out-{level}-{car}-a"), "exit", &plate),
                        Utc::now(),
                    )
                    .await;
                let (Some(session), Some(due), Reason::PaymentRequired) =
                    (asked.session.clone(), asked.amount_due, asked.reason)
                else {
                    part.failures
                        .push(format!("car {car}: first exit answer {:?}", asked.reason));
                    continue;
                };
                let body = serde_json::json!({"payment_method": "tok_test_ok",
                                               "amount_minor": due, "currency": "EUR"})
                .to_string();
                let key = format!("exit-{level}-{car}");
                let p0 = Instant::now();
                let paid = connection
                    .send(
                        "POST",
                        &format!("/api/v1/sessions/{session}/payments"),
                        &[("Authorization", &bearer), ("Idempotency-Key", &key)],
                        body.as_bytes(),
                    )
                    .await?;
                part.payment.record(micros(p0));
                if paid.status != 201 {
                    part.failures.push(format!(
                        "car {car}: payment {} {}",
                        paid.status,
                        paid.problem_kind()
                    ));
                    continue;
                }
                let open = service
                    .handle_request(
                        &lot,
                        &gate,
                        &gate_request(&format!("out-{level}-{car}-b"), "exit", &plate),
                        Utc::now(),
                    )
                    .await;
                if open.action == Action::Open {
                    part.latency.record(micros(t0));
                    part.opened += 1;
                    part.paid_minor += due;
                } else {
                    part.failures
                        .push(format!("car {car}: after paying {:?}", open.reason));
                }
            }
        });
    }
    while let Some(part) = workers.join_next().await {
        let part = part.context("a pay-at-exit worker")??;
        run.latency.merge(&part.latency);
        run.payment.merge(&part.payment);
        run.opened += part.opened;
        run.paid_minor += part.paid_minor;
        run.failures.extend(part.failures);
    }
    run.elapsed_s = started.elapsed().as_secs_f64();
    Ok(run)
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

async fn concurrent_retries(
    args: &PaymentsArgs,
    addr: SocketAddr,
    store: &Arc<dyn Store>,
    token: &str,
    lot: &LotId,
) -> anyhow::Result<RetryRun> {
    let bearer = format!("Bearer {token}");
    let mut connection = Connection::open(addr).await?;
    let vehicle = drivers::add_vehicle(
        &mut connection,
        token,
        "B-RETRY 1",
        drivers::VehicleSpec {
            class: "car",
            ev: false,
            accessible: false,
        },
    )
    .await?;
    // One-hour bookings, spread over the days ahead so that they all fit.
    let mut reservations = Vec::with_capacity(args.reservations);
    let base = Utc::now() + Span::hours(2);
    for i in 0..args.reservations {
        let hours = i64::try_from(i).unwrap_or(0);
        let starts = base + Span::hours(hours);
        let body = serde_json::json!({"lot": lot, "vehicle_id": vehicle,
                                       "starts_at": starts, "ends_at": starts + Span::hours(1)})
        .to_string();
        let made = connection
            .send(
                "POST",
                "/api/v1/reservations",
                &[
                    ("Authorization", &bearer),
                    ("Idempotency-Key", &format!("book-{i}")),
                ],
                body.as_bytes(),
            )
            .await?;
        if made.status != 201 {
            bail!("booking {i}: {} {}", made.status, made.problem_kind());
        }
        let id = made.json()?["id"]
            .as_str()
            .context("the reservation's id")?
            .to_owned();
        reservations.push(id);
    }
    let mut run = RetryRun {
        reservations: reservations.len(),
        ..RetryRun::default()
    };
    let t0 = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for (i, id) in reservations.iter().enumerate() {
        for _ in 0..args.retries {
            let (bearer, id) = (bearer.clone(), id.clone());
            requests.spawn(async move {
                let mut connection = Connection::open(addr).await?;
                let body = br#"{"payment_method": "tok_test_ok"}"#;
                let answer = connection
                    .send(
                        "POST",
                        &format!("/api/v1/reservations/{id}/payments"),
                        &[
                            ("Authorization", &bearer),
                            ("Idempotency-Key", &format!("pay-{i}")),
                        ],
                        body,
                    )
                    .await?;
                anyhow::Ok((answer.status, answer.problem_kind()))
            });
        }
    }
    let tally = |status: u16, kind: String, run: &mut RetryRun| {
        run.requests += 1;
        match (status, kind.as_str()) {
            (201, _) => run.created += 1,
            (409, "request-in-flight") => run.in_flight += 1,
            _ => run.other.push(format!("{status} {kind}")),
        }
    };
    while let Some(answer) = requests.join_next().await {
        let (status, kind) = answer.context("a payment request")??;
        tally(status, kind, &mut run);
    }
    run.elapsed_s = t0.elapsed().as_secs_f64();
    // One more retry of each, after the fact: a replay.
    for (i, id) in reservations.iter().enumerate() {
        let answer = connection
            .send(
                "POST",
                &format!("/api/v1/reservations/{id}/payments"),
                &[
                    ("Authorization", &bearer),
                    ("Idempotency-Key", &format!("pay-{i}")),
                ],
                br#"{"payment_method": "tok_test_ok"}"#,
            )
            .await?;
        run.requests += 1;
        if answer.status == 201 {
            run.replayed += 1;
        } else {
            run.other.push(format!(
                "replay {} {}",
                answer.status,
                answer.problem_kind()
            ));
        }
    }
    // The books.
    for id in &reservations {
        let payments = store.payments_of_reservation(id).await?;
        let succeeded: Vec<_> = payments
            .iter()
            .filter(|p| p.status == PaymentStatus::Succeeded)
            .collect();
        run.payment_rows += payments.len();
        run.succeeded_rows += succeeded.len();
        if succeeded.len() == 1 && payments.len() == 1 {
            run.reservations_with_one += 1;
        }
        run.expected_minor += succeeded.iter().map(|p| p.amount_minor).sum::<i64>();
    }
    let (from, to) = (Utc::now() - Span::days(1), Utc::now() + Span::days(1));
    let mut after = None;
    loop {
        let page = store
            .ledger_between(from, to, Some(lot), after, 1000)
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.seq);
        for entry in &page {
            if entry.reservation_id.is_some() {
                run.charges += 1;
                run.charged_minor += entry.amount_minor;
            }
        }
    }
    run.revenue_minor = store
        .revenue_between(from, to, Some(lot))
        .await?
        .iter()
        .map(|(_, v)| *v)
        .sum();
    Ok(run)
}

fn report(
    args: &PaymentsArgs,
    header: &RunHeader,
    store: &str,
    exit: &[ExitRun],
    retries: &RetryRun,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Payments: pay at exit, and concurrent retries\n");
    let _ = writeln!(
        out,
        "Command: `parkd-bench payments --cars {} --concurrency {} --reservations {} --retries {}`\n",
        args.cars,
        args.concurrency
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.reservations,
        args.retries
    );
    out.push_str(&header.markdown());
    let _ = writeln!(out, "- Store: {store}");
    let _ = writeln!(
        out,
        "- Provider: the built-in test provider (in-process, no delay); tariff 6.00/h by the \
         minute, no grace\n"
    );
    let _ = writeln!(out, "## Pay at exit\n");
    let _ = writeln!(
        out,
        "Per run, {} cars enter, then leave {{concurrency}} at a time in a closed loop (the \
         next car as soon as one has left): exit request → `payment_required` → \
         `POST /api/v1/sessions/{{id}}/payments` (HTTP, pay-station operator) → exit request → \
         `open`. The customer's garage (~2,250 cars a day, one or two exit lanes) has at most a \
         few cars paying at the same moment; 20 at once in a closed loop is a stress level, \
         hundreds of times its peak, where the figure is the machine's capacity more than one \
         driver's wait. The runs follow one another on the same database, each with its own cars, \
         request ids and keys, after a warm-up run of {WARM_UP_CARS} cars 4 at a time (the \
         first flows of a fresh process and database prepare statements and grow new tables; \
         shown, not judged).\n",
        args.cars
    );
    let _ = writeln!(
        out,
        "| cars at once | n | flows/s | exit request → open p50 / p90 / p99 / max (ms) | the payment request alone p50 / p99 (ms) | opened | target p99 < 100 ms |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---|");
    for (i, run) in exit.iter().enumerate() {
        let latency = run.latency.summary();
        let payment = run.payment.summary();
        let judged = if i == 0 {
            "warm-up, not judged".to_owned()
        } else {
            verdict(latency.p99 < 100_000.0 && run.opened == run.cars).to_owned()
        };
        let _ = writeln!(
            out,
            "| {}{} | {} | {:.0} | {:.2} / {:.2} / {:.2} / {:.2} | {:.2} / {:.2} | {} of {} | {} |",
            run.concurrency,
            if i == 0 { " (warm-up)" } else { "" },
            latency.count,
            run.opened as f64 / run.elapsed_s.max(f64::EPSILON),
            latency.p50 / 1000.0,
            latency.p90 / 1000.0,
            latency.p99 / 1000.0,
            latency.max / 1000.0,
            payment.p50 / 1000.0,
            payment.p99 / 1000.0,
            run.opened,
            run.cars,
            judged
        );
    }
    let failures: Vec<String> = exit
        .iter()
        .flat_map(|run| {
            run.failures
                .iter()
                .map(|f| format!("({} at once) {f}", run.concurrency))
        })
        .collect();
    let _ = writeln!(
        out,
        "\nFailures: {}.\n",
        if failures.is_empty() {
            "none".to_owned()
        } else {
            failures.join("; ")
        }
    );
    let exit_paid: i64 = exit.iter().map(|run| run.paid_minor).sum();
    let _ = writeln!(out, "## Concurrent confirmations with retries\n");
    let _ = writeln!(
        out,
        "{} reservations, each paid by {} identical requests at once (same Idempotency-Key), \
         then once more afterwards; {} requests in {:.2} s.\n",
        retries.reservations, args.retries, retries.requests, retries.elapsed_s
    );
    let _ = writeln!(out, "| check | value |");
    let _ = writeln!(out, "|---|---:|");
    let _ = writeln!(
        out,
        "| 201 answers (first or replayed) | {} |",
        retries.created
    );
    let _ = writeln!(out, "| 409 request-in-flight | {} |", retries.in_flight);
    let _ = writeln!(out, "| later replays answered 201 | {} |", retries.replayed);
    let _ = writeln!(out, "| other answers | {} |", retries.other.len());
    let _ = writeln!(out, "| payment rows | {} |", retries.payment_rows);
    let _ = writeln!(out, "| succeeded payments | {} |", retries.succeeded_rows);
    let _ = writeln!(
        out,
        "| reservations with exactly one payment, succeeded | {} |",
        retries.reservations_with_one
    );
    let _ = writeln!(out, "| ledger charge entries | {} |", retries.charges);
    let _ = writeln!(
        out,
        "| ledger sum / sum of succeeded payments / revenue | {} / {} / {} |",
        retries.charged_minor,
        retries.expected_minor,
        retries.revenue_minor - exit_paid
    );
    if !retries.other.is_empty() {
        let _ = writeln!(out, "\nOther answers: {}", retries.other.join("; "));
    }
    let balanced = retries.reservations_with_one == retries.reservations
        && retries.succeeded_rows == retries.reservations
        && retries.charges == retries.reservations
        && retries.charged_minor == retries.expected_minor
        && retries.revenue_minor - exit_paid == retries.expected_minor;
    let _ = writeln!(
        out,
        "\nTarget zero double charges, ledger balanced: **{}**.",
        verdict(balanced && retries.other.is_empty())
    );
    out
}
