//! parkd in this process, as `parkd serve` / `parkd demo` run it ([`parkd::app::RunningApp`]),
//! on a runtime of its own, with an SQLite store in a temporary directory; plus what the live
//! benchmarks share: seeding lots and sensors, reading the app's Prometheus registry, the
//! process's memory.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use chrono::Utc;
use parkd::config::ParkdConfig;
use parkd_core::garage::Lot;
use parkd_core::ids::LotId;
use parkd_store::{Device, DeviceBinding, Store};
use prometheus::Registry;

/// The runtime parkd runs on in these benchmarks: `threads` workers named `parkd` (their
/// blocking pool has the same name).
pub(crate) fn parkd_runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("parkd")
        .enable_all()
        .build()
        .context("starting the parkd runtime")
}

/// The runtime of the load side (WebSocket clients, MQTT publishers): `threads` workers named
/// `loadgen`.
pub(crate) fn load_runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("loadgen")
        .enable_all()
        .build()
        .context("starting the load runtime")
}

/// parkd's defaults, listening on 127.0.0.1 port 0 (HTTP and the embedded broker), data in
/// `dir` (the SQLite file).
pub(crate) fn base_config(dir: &Path) -> ParkdConfig {
    let mut config = ParkdConfig {
        data_dir: dir.to_owned(),
        ..ParkdConfig::default()
    };
    config.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.mqtt.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config
}

/// Imports `lot` into the store and registers one sensor (no secret) per spot, named as the
/// simulators name them (`{lot}-s-{spot}`). Returns how long the registration took.
pub(crate) async fn seed_lot(store: &Arc<dyn Store>, lot: &Lot) -> anyhow::Result<Duration> {
    store.put_lot(lot).await.context("importing the lot")?;
    let started = Instant::now();
    // A few writes in flight at once: the SQLite store serialises them anyway, but the
    // round trips overlap.
    let mut pending = tokio::task::JoinSet::new();
    for spot in &lot.spots {
        let device = Device {
            id: parkd_sim::fleet::sensor_device_id(&lot.id, &spot.id)
                .map_err(|e| anyhow!("sensor id for {}: {e}", spot.id))?,
            binding: DeviceBinding::Spot {
                lot: lot.id.clone(),
                spot: spot.id.clone(),
            },
            secret_sha256: None,
            disabled: false,
            created_at: Utc::now(),
        };
        let store = store.clone();
        pending.spawn(async move { store.upsert_device(&device).await });
        if pending.len() >= 16
            && let Some(done) = pending.join_next().await
        {
            done.context("registering a sensor")??;
        }
    }
    while let Some(done) = pending.join_next().await {
        done.context("registering a sensor")??;
    }
    Ok(started.elapsed())
}

/// The lot id from a literal.
pub(crate) fn lot_id(raw: &str) -> anyhow::Result<LotId> {
    LotId::parse(raw).map_err(|e| anyhow!("lot id {raw:?}: {e}"))
}

/// Sum of a counter or gauge family's values over the series whose labels pass `keep`.
pub(crate) fn metric_sum(
    registry: &Registry,
    name: &str,
    keep: impl Fn(&[(&str, &str)]) -> bool,
) -> f64 {
    let mut sum = 0.0;
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for metric in family.get_metric() {
            let labels: Vec<(&str, &str)> = metric
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if !keep(&labels) {
                continue;
            }
            sum += metric.get_counter().get_value() + metric.get_gauge().get_value();
        }
    }
    sum
}

/// The value of label `name` in `labels`.
pub(crate) fn label<'a>(labels: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    labels.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// `(count, sum in seconds)` of a histogram family's series with `route`.
pub(crate) fn histogram_route(registry: &Registry, name: &str, route: &str) -> (u64, f64) {
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for metric in family.get_metric() {
            let matches = metric
                .get_label()
                .iter()
                .any(|l| l.name() == "route" && l.value() == route);
            if matches {
                let h = metric.get_histogram();
                return (h.get_sample_count(), h.get_sample_sum());
            }
        }
    }
    (0, 0.0)
}

/// `VmRSS` and `VmHWM` (peak) of this process, KiB.
pub(crate) fn own_memory_kib() -> anyhow::Result<(u64, u64)> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let field = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("no {key} in /proc/self/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// KiB as MB (10^6 bytes).
pub(crate) fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// Reads `GET path` with a fresh connection (`Connection: close`); returns the status code,
/// the body's size and the time to the last byte.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, usize, Duration)> {
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(addr).context("connecting")?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let elapsed = started.elapsed();
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP head in the response to {path}"))?;
    let head = String::from_utf8_lossy(&response[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    Ok((status, response.len() - head_end - 4, elapsed))
}

/// How many spots of `lot` are not yet `unknown`.
pub(crate) fn known_spots(engine: &parkd_occupancy::OccupancyEngine, lot: &LotId) -> i64 {
    engine.counts(lot).map_or(0, |c| c.spots - c.unknown)
}
