//! The header every report starts with: when, which commit, which machine, which command.

use std::fmt::Write as _;
use std::process::Command;

/// Facts about the run, gathered once.
#[derive(Debug, Clone)]
pub(crate) struct RunHeader {
    pub(crate) date: String,
    pub(crate) commit: String,
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) memory: String,
    pub(crate) kernel: String,
    pub(crate) load_average: String,
    pub(crate) command: String,
    pub(crate) build: &'static str,
    /// Set when the run was given a scheduling priority (see `bench/prio.sh`).
    pub(crate) scheduling: Option<String>,
}

impl RunHeader {
    pub(crate) fn gather() -> Self {
        Self {
            date: chrono::Utc::now()
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string(),
            commit: git_commit(),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: cpu_model(),
            memory: memory(),
            kernel: read_trimmed("/proc/sys/kernel/osrelease")
                .map(|release| format!("Linux {release}"))
                .unwrap_or_else(|| std::env::consts::OS.to_owned()),
            load_average: read_trimmed("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|| "unknown".to_owned()),
            command: command_line(),
            build: if cfg!(debug_assertions) {
                "**DEBUG (figures not representative)**"
            } else {
                "release"
            },
            scheduling: scheduling(),
        }
    }

    /// The Markdown bullet list.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "- Date: {}", self.date);
        let _ = writeln!(out, "- Commit: {}", self.commit);
        let _ = writeln!(
            out,
            "- Machine: {} CPUs ({}), {} memory, {}",
            self.cpus, self.cpu_model, self.memory, self.kernel
        );
        let _ = writeln!(
            out,
            "- Load average when the run started: {} (other work may share the machine)",
            self.load_average
        );
        let _ = writeln!(out, "- Build: {}", self.build);
        if let Some(scheduling) = &self.scheduling {
            let _ = writeln!(out, "- Scheduling: {scheduling}");
        }
        let _ = writeln!(out, "- Command: `{}`", self.command);
        out
    }
}

/// The process's nice value and its autogroup's, when either is not 0 (a run started through
/// `bench/prio.sh` to get a dedicated machine's CPU share on a shared one).
fn scheduling() -> Option<String> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 19 (nice) is the 17th after the `(comm)`.
    let nice: i64 = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .nth(16)?
        .parse()
        .ok()?;
    let autogroup = read_trimmed("/proc/self/autogroup").and_then(|line| {
        line.split_whitespace()
            .last()
            .and_then(|n| n.parse::<i64>().ok())
    });
    if nice == 0 && autogroup.unwrap_or(0) == 0 {
        return None;
    }
    Some(format!(
        "nice {nice}, scheduler autogroup nice {} (`bench/prio.sh`: a session of its own, \
         ahead of other users' builds on this shared machine)",
        autogroup.map_or("n/a".to_owned(), |n| n.to_string())
    ))
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn git_commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) if !commit.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{commit} (plus uncommitted changes in the work tree)")
            } else {
                commit
            }
        }
        _ => "unknown (not a git work tree)".to_owned(),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn memory() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The command line as typed, shell-quoted, with any database URL (it may hold a password)
/// replaced by `<redacted>`.
fn command_line() -> String {
    let mut out = Vec::new();
    let mut redact_next = false;
    for arg in std::env::args() {
        if redact_next {
            out.push("<redacted>".to_owned());
            redact_next = false;
            continue;
        }
        if arg == "--database-url" {
            redact_next = true;
            out.push(arg);
        } else if arg.starts_with("--database-url=") {
            out.push("--database-url=<redacted>".to_owned());
        } else {
            out.push(quote(&arg));
        }
    }
    out.join(" ")
}

fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(quote("--store"), "--store");
        assert_eq!(quote("bench/results/x.md"), "bench/results/x.md");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
