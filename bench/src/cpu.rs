//! Where the CPU went during a run, from `/proc` (Linux): this process per thread name, and the
//! whole machine (which includes the PostgreSQL server and anything else running, such as
//! other people's builds: the report shows both so contention is visible).

use std::collections::BTreeMap;
use std::time::Instant;

/// Clock ticks per second of `/proc` CPU times (USER_HZ, 100 on every mainstream Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A snapshot of CPU counters.
#[derive(Debug, Clone)]
pub(crate) struct CpuSnapshot {
    at: Instant,
    /// Ticks by thread id: (thread name, user + system ticks).
    threads: BTreeMap<u64, (String, u64)>,
    /// Whole machine: (busy ticks, total ticks) over all CPUs.
    machine: Option<(u64, u64)>,
}

/// CPU used between two snapshots, in cores (CPU seconds per wall second).
#[derive(Debug, Clone, Default)]
pub(crate) struct CpuUsage {
    pub(crate) wall_s: f64,
    /// This process, all threads.
    pub(crate) process_cores: f64,
    /// This process, by thread name (summed over threads of the same name), largest first.
    pub(crate) by_thread: Vec<(String, f64)>,
    /// The whole machine, in cores busy (out of `cpus`).
    pub(crate) machine_cores: Option<f64>,
}

impl CpuUsage {
    /// Cores used by the threads whose name starts with `prefix` (runtimes name theirs).
    pub(crate) fn cores(&self, prefix: &str) -> f64 {
        self.by_thread
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, c)| c)
            .sum()
    }
}

impl CpuSnapshot {
    pub(crate) fn take() -> Self {
        Self {
            at: Instant::now(),
            threads: read_threads(),
            machine: read_machine(),
        }
    }

    /// Usage from `self` (earlier) to `later`.
    pub(crate) fn usage_until(&self, later: &CpuSnapshot) -> CpuUsage {
        let wall_s = later.at.duration_since(self.at).as_secs_f64();
        if wall_s <= 0.0 {
            return CpuUsage::default();
        }
        let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
        for (tid, (name, ticks)) in &later.threads {
            let before = self.threads.get(tid).map_or(0, |(_, t)| *t);
            *by_name.entry(name.clone()).or_default() += ticks.saturating_sub(before);
        }
        let cores = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / wall_s;
        let process_cores = cores(by_name.values().sum());
        let mut by_thread: Vec<(String, f64)> = by_name
            .into_iter()
            .map(|(name, ticks)| (name, cores(ticks)))
            .filter(|(_, c)| *c >= 0.005)
            .collect();
        by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
        let machine_cores = match (self.machine, later.machine) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
                Some((busy1 - busy0) as f64 / (total1 - total0) as f64 * cpus)
            }
            _ => None,
        };
        CpuUsage {
            wall_s,
            process_cores,
            by_thread,
            machine_cores,
        }
    }
}

/// Every thread of this process: tid → (name, utime + stime ticks).
fn read_threads() -> BTreeMap<u64, (String, u64)> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(parsed) = parse_stat(&stat) {
            out.insert(tid, parsed);
        }
    }
    out
}

/// `(comm, utime + stime)` from a `/proc/.../stat` line.
pub(crate) fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    // After the name: field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// `(busy, total)` ticks of all CPUs from `/proc/stat`; iowait counts as idle.
fn read_machine() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest times are inside user already).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

#[cfg(test)]
mod tests {
    use super::parse_stat;

    #[test]
    fn parses_a_thread_stat_line() {
        let line = "1234 (mqtt-link-ing) S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 1 0 100";
        assert_eq!(parse_stat(line), Some(("mqtt-link-ing".to_owned(), 290)));
        let odd = "1 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 3 4 0";
        assert_eq!(parse_stat(odd), Some(("a (b) c".to_owned(), 7)));
    }
}
