//! The Markdown report of the ingest benchmark.

use std::fmt::Write as _;

use crate::Scenario;
use crate::ingest::{BackendResults, BenchSettings, RunResult};
use crate::machine::RunHeader;
use crate::timed_store::Percentiles;

/// Share of the target rate the `target` scenario must store per second (the tail between
/// the last publish and the last commit counts in the window).
const TARGET_KEPT_UP: f64 = 0.95;

/// Publish-to-commit p99 target at 10,000 messages/s, ms.
const P99_TARGET_MS: f64 = 250.0;
/// The rate the latency target is stated for.
const P99_TARGET_RATE: f64 = 10_000.0;

/// `1234567` → `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn signed_thousands(n: i64) -> String {
    if n < 0 {
        format!("-{}", thousands(n.unsigned_abs()))
    } else {
        thousands(n.unsigned_abs())
    }
}

fn rate(r: f64) -> String {
    thousands(r.max(0.0).round() as u64)
}

fn ms(us: i64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

fn percentiles_ms(p: Option<Percentiles>) -> String {
    match p {
        Some(p) => format!(
            "{} / {} / {} / {} / {}",
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.p999),
            ms(p.max)
        ),
        None => "no samples".to_owned(),
    }
}

/// The Result column of a target table.
pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**MISSED**" }
}

/// Losses anywhere between the publisher's socket and the table.
fn total_losses(run: &RunResult) -> i64 {
    run.broker_gap().max(0)
        + (run.lost_queue_full + run.lost_write_failed + run.lost_shutdown) as i64
}

pub(crate) fn render(
    header: &RunHeader,
    settings: &BenchSettings,
    backends: &[BackendResults],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# parkd ingest benchmark\n");
    out.push_str(&header.markdown());
    let _ = writeln!(out);
    let _ = writeln!(out, "## Setup\n");
    let _ = writeln!(
        out,
        "- Load: `parkd_sim::run_load`, {} MQTT connections x {} spots = {} spots (one \
         registered sensor each, lot `load`), QoS 0, `state` messages; each message's `ts` is \
         its send time (Unix ms). The generator runs in this process on its own tokio runtime \
         ({} worker threads, named `loadgen`) and talks TCP to the broker on 127.0.0.1.",
        settings.connections,
        settings.spots_per_connection,
        settings.spots(),
        settings.load_threads
    );
    let _ = writeln!(
        out,
        "- parkd side: the embedded broker (rumqttd 0.20, anonymous, port 0), its local link \
         into `Ingest` (batch {} rows / {} ms, queue {}, {} write attempts, writers {}), the \
         store; one tokio runtime of {} worker threads (named `parkd`). Broker log: segment \
         {} B x {} segments = {} for ingest's wildcard filter (rumqttd keeps one log per \
         subscription filter, not per topic).",
        settings.ingest.batch_size,
        settings.ingest.batch_interval.as_millis(),
        thousands(settings.ingest.queue_capacity as u64),
        settings.ingest.write_attempts,
        settings.writers.map_or_else(
            || "2 on PostgreSQL, 1 on SQLite".to_owned(),
            |n| n.to_string()
        ),
        settings.parkd_threads,
        thousands(settings.broker.segment_size as u64),
        settings.broker.segment_count,
        bytes(settings.broker.segment_size * settings.broker.segment_count),
    );
    let _ = writeln!(
        out,
        "- Scenarios: `max` = as fast as the generator goes, a fixed count ({}); `target` = \
         the same count offered at the backend's target rate (100,000 msg/s on PostgreSQL, \
         50,000 on SQLite); `paced` = {} msg/s for {} s.",
        match settings.count {
            Some(count) => thousands(count),
            None => "1,000,000 on PostgreSQL, 500,000 on SQLite".to_owned(),
        },
        rate(settings.rate),
        settings.duration.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "- Throughput = stored rows / (first publish → last commit), the first publish being \
         the earliest device `ts` committed. Latency = commit time − device `ts` of every \
         committed reading, recorded by a store decorator after each successful \
         `write_batch`; exact percentiles of the sorted samples (`ts` has ms resolution)."
    );
    if settings.ingest_shards > 1 {
        let _ = writeln!(
            out,
            "- **EXPERIMENT, not parkd as shipped**: {} ingest pipelines sharded by topic \
             (`--ingest-shards`), standing in for {} concurrent writer tasks.",
            settings.ingest_shards, settings.ingest_shards
        );
    }
    for b in backends {
        let _ = writeln!(out, "- {}: {}", b.backend.name(), b.info.description);
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(
        out,
        "| Backend | Scenario | Published | Stored | Lost (broker gap + ingest) | Throughput (msg/s) | p99 publish→commit (ms) | Target | Result |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|---|");
    for b in backends {
        for run in &b.runs {
            let losses = total_losses(run);
            let p99 = run.latency.map_or("-".to_owned(), |p| ms(p.p99));
            let (target, met) = match run.scenario {
                Scenario::Target => {
                    let target = run.backend.throughput_target();
                    (
                        format!(
                            "{} msg/s offered: no loss, ≥ {:.0} % of it stored per s",
                            rate(target),
                            TARGET_KEPT_UP * 100.0
                        ),
                        run.throughput() >= TARGET_KEPT_UP * target && losses == 0 && run.settled,
                    )
                }
                Scenario::Max => {
                    let target = run.backend.throughput_target();
                    (
                        format!("≥ {} msg/s, no loss", rate(target)),
                        run.throughput() >= target && losses == 0 && run.settled,
                    )
                }
                Scenario::Paced => {
                    let p99_ok = run
                        .latency
                        .is_some_and(|p| (p.p99 as f64) / 1000.0 < P99_TARGET_MS);
                    let at_target_rate = (settings.rate - P99_TARGET_RATE).abs() < 0.5;
                    let target = if at_target_rate {
                        format!("p99 < {P99_TARGET_MS:.0} ms at 10,000 msg/s, no loss")
                    } else {
                        format!(
                            "p99 < {P99_TARGET_MS:.0} ms (stated at 10,000 msg/s; this run: {})",
                            rate(settings.rate)
                        )
                    };
                    (target, p99_ok && losses == 0 && run.settled)
                }
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                run.backend.name(),
                run.scenario.name(),
                thousands(run.load.sent),
                thousands(run.stored_rows),
                signed_thousands(losses),
                rate(run.throughput()),
                p99,
                target,
                verdict(met)
            );
        }
    }
    for b in backends {
        if let (Some(max), Some(raw)) = (
            b.runs.iter().find(|r| r.scenario == Scenario::Max),
            b.raw.iter().find(|f| f.is_raw_copy),
        ) {
            let _ = writeln!(
                out,
                "\n{}: end-to-end / raw COPY = {} / {} = **{:.2}** (raw COPY measured in this \
                 run, same row count, fresh database).",
                b.backend.name(),
                rate(max.throughput()),
                rate(raw.rate()),
                max.throughput() / raw.rate().max(1.0)
            );
        }
    }
    let _ = writeln!(out);

    for b in backends {
        for run in &b.runs {
            render_run(&mut out, run);
        }
        if !b.raw.is_empty() {
            let _ = writeln!(
                out,
                "### {}: store-level figures (same run)\n",
                b.backend.name()
            );
            let _ = writeln!(
                out,
                "Same number of rows as the `max` run, shaped like the load (same spots, \
                 growing `seq`), each on a fresh database or file.\n"
            );
            let _ = writeln!(out, "| Method | Rows | Seconds | Rows/s |");
            let _ = writeln!(out, "|---|---:|---:|---:|");
            for figure in &b.raw {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.2} | {} |",
                    figure.method,
                    thousands(figure.rows),
                    figure.seconds,
                    rate(figure.rate())
                );
            }
            if let Some(max) = b.runs.iter().find(|r| r.scenario == Scenario::Max) {
                let _ = writeln!(out);
                for figure in &b.raw {
                    let _ = writeln!(
                        out,
                        "- end-to-end `max` / {}: {:.2}",
                        figure.method,
                        max.throughput() / figure.rate().max(1.0)
                    );
                }
            }
            let _ = writeln!(out);
        }
    }
    out
}

fn bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.0} MiB", n as f64 / f64::from(1 << 20))
    } else if n >= 1 << 10 {
        format!("{:.0} KiB", n as f64 / f64::from(1 << 10))
    } else {
        format!("{n} B")
    }
}

fn render_run(out: &mut String, run: &RunResult) {
    let _ = writeln!(
        out,
        "### {} / {}\n",
        run.backend.name(),
        run.scenario.name()
    );
    let _ = writeln!(out, "| Figure | Value |");
    let _ = writeln!(out, "|---|---:|");
    let mut row = |name: &str, value: String| {
        let _ = writeln!(out, "| {name} | {value} |");
    };
    let load = &run.load;
    row(
        "published (PUBLISH packets the generator wrote)",
        thousands(load.sent),
    );
    if load.queued != load.sent || load.publish_errors > 0 || load.drain_timed_out {
        row(
            "generator: queued / unsent / publish errors / drain timed out",
            format!(
                "{} / {} / {} / {}",
                thousands(load.queued),
                thousands(load.unsent),
                load.publish_errors,
                load.drain_timed_out
            ),
        );
    }
    row(
        "generator connection errors",
        thousands(load.connection_errors),
    );
    row(
        "generator rate (sent / its own elapsed time)",
        format!(
            "{} msg/s over {:.2} s",
            rate(load.achieved_rate),
            load.elapsed_s
        ),
    );
    row(
        "forwarded by the broker to ingest (`parkd_mqtt_link_messages_total`)",
        thousands(run.forwarded),
    );
    row(
        "**gap published − forwarded** (dropped inside rumqttd)",
        signed_thousands(run.broker_gap()),
    );
    row("stored rows (`count_readings`)", thousands(run.stored_rows));
    if run.rows_written != run.stored_rows {
        row(
            "rows committed per ingest's counter (differs from the table!)",
            thousands(run.rows_written),
        );
    }
    let rejects = if run.rejected.is_empty() {
        "0".to_owned()
    } else {
        let detail: Vec<String> = run
            .rejected
            .iter()
            .map(|(reason, n)| format!("{reason} {}", thousands(*n)))
            .collect();
        format!(
            "{} ({})",
            thousands(run.rejected_total()),
            detail.join(", ")
        )
    };
    row("rejects", rejects);
    row("duplicates", thousands(run.duplicates));
    row("lost: queue_full", thousands(run.lost_queue_full));
    row("lost: write_failed", thousands(run.lost_write_failed));
    if run.lost_shutdown > 0 {
        row("lost: shutdown", thousands(run.lost_shutdown));
    }
    row(
        "accounted (rows + rejects + duplicates + losses) = forwarded?",
        if run.settled && run.accounted == run.forwarded {
            format!("yes ({})", thousands(run.accounted))
        } else {
            format!(
                "**NO**: accounted {} vs forwarded {} (settle timed out)",
                thousands(run.accounted),
                thousands(run.forwarded)
            )
        },
    );
    row(
        "first publish → last commit",
        format!("{:.3} s", run.window_s),
    );
    row(
        "**end-to-end throughput** (stored rows / that time)",
        format!("**{} msg/s**", rate(run.throughput())),
    );
    row(
        "**publish→commit latency** p50 / p90 / p99 / p99.9 / max (ms)",
        percentiles_ms(run.latency),
    );
    if let Some(p) = run.latency {
        row("latency samples", thousands(p.count as u64));
    }
    if run.readings_without_ts > 0 {
        row(
            "readings without a device ts (not in the latency)",
            thousands(run.readings_without_ts),
        );
    }
    let mean_rows = if run.batches > 0 {
        run.stored_rows as f64 / run.batches as f64
    } else {
        0.0
    };
    row(
        "batches committed, mean rows per batch",
        format!("{}, {:.0}", thousands(run.batches as u64), mean_rows),
    );
    row(
        "batch `write_batch` time p50 / p90 / p99 / p99.9 / max (ms)",
        percentiles_ms(run.batch_write),
    );
    let busy = if run.window_s > 0.0 {
        100.0 * run.write_busy_s / run.window_s
    } else {
        0.0
    };
    row(
        "writer busy (time inside `write_batch` / first publish → last commit)",
        format!("{busy:.0} %"),
    );
    if run.failed_writes > 0 {
        row(
            "failed `write_batch` calls (retried)",
            thousands(run.failed_writes),
        );
    }
    let cpu = &run.cpu;
    let threads: Vec<String> = cpu
        .by_thread
        .iter()
        .take(6)
        .map(|(name, cores)| format!("{name} {cores:.2}"))
        .collect();
    row(
        "CPU of this process, cores (load start → all accounted)",
        format!(
            "{:.2} over {:.1} s: {}",
            cpu.process_cores,
            cpu.wall_s,
            threads.join(", ")
        ),
    );
    row(
        "CPU of the whole machine, cores busy (includes PostgreSQL and other users)",
        cpu.machine_cores
            .map_or("unknown".to_owned(), |c| format!("{c:.2}")),
    );
    let _ = writeln!(out);
}

/// How many spots of each kind a lot has, e.g. `30 EV, 7 accessible, 191 standard`.
pub(crate) fn kind_counts(lot: &parkd_core::garage::Lot) -> String {
    use parkd_core::vehicle::SpotKind;
    let mut counts: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for spot in &lot.spots {
        let name = match spot.kind {
            SpotKind::Ev => "EV",
            other => other.as_str(),
        };
        *counts.entry(name).or_default() += 1;
    }
    counts
        .iter()
        .map(|(name, n)| format!("{n} {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
