//! `parkd-bench demo`: how fast the release `parkd demo` is ready, and how much memory it
//! holds once running.
//!
//! Each run starts `parkd demo --http-addr 127.0.0.1:0 --mqtt-addr 127.0.0.1:0 --data-dir
//! <fresh tmp dir>`, reads the `http://ADDR/` line it prints, polls `GET /readyz` every 5 ms
//! until it answers 200 (ready time = spawn → first 200), lets the demo run for `--idle`
//! (10 s), reads `VmRSS` from `/proc/<pid>/status`, then stops it with SIGTERM (SIGKILL after
//! 10 s).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use crate::DemoArgs;
use crate::machine::RunHeader;

/// Targets: ready within 2 s, idle RSS under 100 MB.
const READY_TARGET: Duration = Duration::from_secs(2);
const RSS_TARGET_MB: f64 = 100.0;

#[derive(Debug, Clone, Copy)]
struct DemoRun {
    ready: Duration,
    rss_kib: u64,
}

pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<String> {
    let header = RunHeader::gather();
    let parkd = args.parkd.clone().unwrap_or_else(default_parkd);
    if !parkd.is_file() {
        bail!(
            "{} not found: build it first with `cargo build --release -p parkd` (or pass --parkd)",
            parkd.display()
        );
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let mut runs = Vec::with_capacity(args.runs);
    for n in 1..=args.runs {
        let run = one_run(&parkd, args).with_context(|| format!("demo run {n}"))?;
        eprintln!(
            "demo run {n}: ready in {} ms, RSS after {} s: {:.1} MB",
            run.ready.as_millis(),
            args.idle.as_secs(),
            mb(run.rss_kib)
        );
        runs.push(run);
    }
    Ok(render(&header, &parkd, args, &runs))
}

/// `target/release/parkd` of this workspace.
fn default_parkd() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/parkd");
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// RSS as MB (10^6 bytes), as the target is stated.
fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn one_run(parkd: &Path, args: &DemoArgs) -> anyhow::Result<DemoRun> {
    let data_dir = tempfile::tempdir().context("creating a data directory")?;
    let log_path = data_dir.path().join("parkd.log");
    let log = std::fs::File::create(&log_path).context("creating the log file")?;
    let started = Instant::now();
    let mut child = Command::new(parkd)
        .arg("demo")
        .args(["--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("starting {}", parkd.display()))?;
    let result = measure(&mut child, started, args);
    stop(&mut child);
    if result.is_err() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!(
            "parkd log (last lines):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    result
}

fn measure(child: &mut Child, started: Instant, args: &DemoArgs) -> anyhow::Result<DemoRun> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    // Read stdout on a thread (it must keep being drained), handing over the HTTP address.
    let (tx, rx) = mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(addr) = http_addr(&line) {
                sent = tx.send(addr).is_ok();
            }
        }
    });
    let deadline = started + args.ready_timeout;
    let addr = rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .map_err(|_| {
            anyhow!(
                "parkd printed no http:// address in {:?}",
                args.ready_timeout
            )
        })?;
    let ready = loop {
        if readyz_ok(addr) {
            break started.elapsed();
        }
        if let Some(status) = child.try_wait()? {
            bail!("parkd exited before it was ready ({status})");
        }
        if Instant::now() >= deadline {
            bail!("/readyz did not answer 200 within {:?}", args.ready_timeout);
        }
        pause(Duration::from_millis(5));
    };
    pause(args.idle);
    if let Some(status) = child.try_wait()? {
        bail!("parkd exited while idling ({status})");
    }
    let rss_kib = vm_rss_kib(child.id())?;
    Ok(DemoRun { ready, rss_kib })
}

/// The address in `  http:    http://127.0.0.1:PORT/  (...)`.
fn http_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("http://")? + "http://".len()..];
    let end = rest.find('/')?;
    rest[..end].parse().ok()
}

/// Whether `GET /readyz` answers 200.
fn readyz_ok(addr: SocketAddr) -> bool {
    let timeout = Duration::from_millis(500);
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    if stream.read_exact(&mut head).is_err() {
        return false;
    }
    head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200")
}

pub(crate) fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// SIGTERM (through `kill`, no libc here), then SIGKILL after 10 s.
fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        pause(Duration::from_millis(20));
    }
    eprintln!("parkd did not stop within 10 s of SIGTERM; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// Sleeps this (plain, non-async) thread: the demo benchmark runs no async runtime.
#[allow(
    clippy::disallowed_methods,
    reason = "the demo benchmark is synchronous; no async worker to block"
)]
pub(crate) fn pause(duration: Duration) {
    std::thread::sleep(duration);
}

fn median<T: Copy + Ord>(values: &[T]) -> Option<T> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}

fn render(
    header: &RunHeader,
    parkd: &std::path::Path,
    args: &DemoArgs,
    runs: &[DemoRun],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# parkd demo start-up benchmark\n");
    out.push_str(&header.markdown());
    let modified = std::fs::metadata(parkd)
        .and_then(|m| m.modified())
        .ok()
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let _ = writeln!(out, "- Binary: `{}` (built {modified})", parkd.display());
    let _ = writeln!(
        out,
        "- Each run: `parkd demo --http-addr 127.0.0.1:0 --mqtt-addr 127.0.0.1:0 --data-dir \
         <fresh tmp dir>` (SQLite, seeded garage, simulator on); ready = spawn → first \
         `GET /readyz` 200 (polled every 5 ms); RSS = `VmRSS` of `/proc/<pid>/status` after \
         {} s of running demo. MB = 10^6 bytes.\n",
        args.idle.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| Run | Ready (ms) | RSS after {} s (MB) |",
        args.idle.as_secs_f64()
    );
    let _ = writeln!(out, "|---:|---:|---:|");
    for (n, run) in runs.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} |",
            n + 1,
            run.ready.as_millis(),
            mb(run.rss_kib)
        );
    }
    let ready = median(&runs.iter().map(|r| r.ready).collect::<Vec<_>>()).unwrap_or_default();
    let rss = median(&runs.iter().map(|r| r.rss_kib).collect::<Vec<_>>()).unwrap_or_default();
    let _ = writeln!(
        out,
        "| **median** | **{}** | **{:.1}** |\n",
        ready.as_millis(),
        mb(rss)
    );
    let _ = writeln!(out, "| Target | Median | Result |");
    let _ = writeln!(out, "|---|---:|---|");
    let _ = writeln!(
        out,
        "| ready within {} ms | {} ms | {} |",
        READY_TARGET.as_millis(),
        ready.as_millis(),
        if ready <= READY_TARGET {
            "met"
        } else {
            "**MISSED**"
        }
    );
    let _ = writeln!(
        out,
        "| idle RSS under {RSS_TARGET_MB:.0} MB | {:.1} MB | {} |",
        mb(rss),
        if mb(rss) < RSS_TARGET_MB {
            "met"
        } else {
            "**MISSED**"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::{http_addr, median};

    #[test]
    fn finds_the_http_address() {
        let line = "  http:    http://127.0.0.1:41234/  (health: /healthz, /readyz, /metrics)";
        assert_eq!(
            http_addr(line),
            Some("127.0.0.1:41234".parse().expect("addr"))
        );
        assert_eq!(http_addr("  mqtt:    mqtt://127.0.0.1:1883"), None);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[5, 1, 3]), Some(3));
        assert_eq!(median(&[4, 1, 3, 2]), Some(3));
        assert_eq!(median::<u32>(&[]), None);
    }
}
