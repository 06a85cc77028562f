//! HTTP load with `wrk` (Debian package `wrk`, 4.1): closed loop, keep-alive connections,
//! latency percentiles from wrk's own histogram, printed by a Lua `done()` callback so the
//! figures are exact numbers rather than wrk's rounded summary.
//!
//! wrk's `errors.status` counts responses with a status of 400 or more; connect, read, write
//! and timeout errors are socket-level. The bench also reads parkd's own request counter by
//! route and status, which counts every non-2xx answer.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use crate::cpu::{CpuSnapshot, CpuUsage};
use crate::demo::pause;

/// The Lua script: prints one machine-readable line at the end of the run.
const SCRIPT: &str = r#"-- parkd-bench: report wrk's exact figures in one line (latency in microseconds).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "PARKD_BENCH_WRK requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d mean_us=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"#;

/// A wrk run's settings.
#[derive(Debug, Clone)]
pub(crate) struct WrkSettings {
    pub(crate) connections: usize,
    pub(crate) threads: usize,
    pub(crate) duration: Duration,
    /// Socket timeout (wrk's `--timeout`).
    pub(crate) timeout: Duration,
}

/// What wrk measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct WrkResult {
    pub(crate) requests: u64,
    pub(crate) duration_s: f64,
    pub(crate) bytes: u64,
    pub(crate) connect_errors: u64,
    pub(crate) read_errors: u64,
    pub(crate) write_errors: u64,
    /// Responses with a status >= 400.
    pub(crate) status_errors: u64,
    pub(crate) timeouts: u64,
    pub(crate) mean_us: f64,
    pub(crate) p50_us: f64,
    pub(crate) p90_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
    /// CPU of the wrk process, cores (sampled every 100 ms, so slightly low).
    pub(crate) wrk_cores: f64,
    /// CPU of this process and the machine over the wrk run.
    pub(crate) cpu: CpuUsage,
}

impl WrkResult {
    pub(crate) fn rps(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.requests as f64 / self.duration_s
        } else {
            0.0
        }
    }

    pub(crate) fn socket_errors(&self) -> u64 {
        self.connect_errors + self.read_errors + self.write_errors + self.timeouts
    }

    pub(crate) fn bytes_per_request(&self) -> f64 {
        if self.requests > 0 {
            self.bytes as f64 / self.requests as f64
        } else {
            0.0
        }
    }
}

/// The wrk binary's version line, or an error saying how to install it.
pub(crate) fn version() -> anyhow::Result<String> {
    let output = Command::new("wrk")
        .arg("--version")
        .output()
        .map_err(|e| anyhow!("wrk is not installed ({e}): apt-get install -y wrk"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    Ok(text
        .lines()
        .next()
        .unwrap_or("wrk (unknown version)")
        .trim()
        .to_owned())
}

/// The Lua script, written once per benchmark into `dir`.
pub(crate) fn write_script(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("parkd-bench-wrk.lua");
    std::fs::write(&path, SCRIPT).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Runs wrk against `url` and parses its report. Blocks this (non-async) thread.
pub(crate) fn run(url: &str, settings: &WrkSettings, script: &Path) -> anyhow::Result<WrkResult> {
    let before = CpuSnapshot::take();
    let started = Instant::now();
    let mut child = Command::new("wrk")
        .arg(format!("-t{}", settings.threads))
        .arg(format!("-c{}", settings.connections))
        .arg(format!("-d{}s", settings.duration.as_secs().max(1)))
        .arg(format!("--timeout={}s", settings.timeout.as_secs().max(1)))
        .arg("-s")
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting wrk")?;
    let pid = child.id();
    let mut wrk_ticks = 0u64;
    let mut after = None;
    loop {
        if let Some(ticks) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| crate::cpu::parse_stat(&s))
            .map(|(_, t)| t)
        {
            wrk_ticks = wrk_ticks.max(ticks);
        }
        if child.try_wait()?.is_some() {
            after.get_or_insert_with(CpuSnapshot::take);
            break;
        }
        if started.elapsed() > settings.duration + Duration::from_secs(60) {
            let _ = child.kill();
            bail!("wrk did not finish in time");
        }
        pause(Duration::from_millis(100));
    }
    let output = child.wait_with_output().context("reading wrk's output")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("PARKD_BENCH_WRK "))
        .ok_or_else(|| anyhow!("no result line in wrk's output:\n{stdout}"))?;
    let mut result = parse_line(line)?;
    let cpu = before.usage_until(&after.unwrap_or_else(CpuSnapshot::take));
    result.wrk_cores = wrk_ticks as f64 / 100.0 / cpu.wall_s.max(1e-9);
    result.cpu = cpu;
    Ok(result)
}

fn parse_line(line: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    for pair in line.split_whitespace().skip(1) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("bad wrk field {pair:?}"))?;
        let number: f64 = value
            .parse()
            .map_err(|_| anyhow!("bad wrk value {pair:?}"))?;
        let int = number as u64;
        match key {
            "requests" => r.requests = int,
            "duration_us" => r.duration_s = number / 1e6,
            "bytes" => r.bytes = int,
            "connect" => r.connect_errors = int,
            "read" => r.read_errors = int,
            "write" => r.write_errors = int,
            "status" => r.status_errors = int,
            "timeout" => r.timeouts = int,
            "mean_us" => r.mean_us = number,
            "p50_us" => r.p50_us = number,
            "p90_us" => r.p90_us = number,
            "p99_us" => r.p99_us = number,
            "p999_us" => r.p999_us = number,
            "max_us" => r.max_us = number,
            _ => {}
        }
    }
    if r.duration_s <= 0.0 {
        bail!("wrk reported no duration: {line}");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::parse_line;

    #[test]
    fn parses_the_script_line() {
        let r = parse_line(
            "PARKD_BENCH_WRK requests=1000 duration_us=2000000 bytes=5000 connect=0 read=1 \
             write=0 status=2 timeout=3 mean_us=812.5 p50_us=700 p90_us=1200 p99_us=3000 \
             p999_us=9000 max_us=12000",
        )
        .expect("parses");
        assert_eq!(r.requests, 1000);
        assert!((r.rps() - 500.0).abs() < 1e-9);
        assert_eq!(r.socket_errors(), 4);
        assert_eq!(r.status_errors, 2);
        assert!((r.p99_us - 3000.0).abs() < f64::EPSILON);
    }
}
