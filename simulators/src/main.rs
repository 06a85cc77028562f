//! `parkd-sim`: run a simulated sensor fleet, a garage with barrier gates, or a load test
//! against an MQTT broker, or compare reservation allocation policies offline.
//!
//! The report goes to stdout as JSON (markdown for `allocation`), logs go to stderr (`RUST_LOG` filters them, default
//! `info`). Ctrl-C stops the run cleanly and still prints the report; a second Ctrl-C exits at
//! once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::NaiveTime;
use clap::{Args, Parser, Subcommand};
use parkd_core::ids::{GateId, LotId};
use parkd_sim::duration::parse_duration;
use parkd_sim::fleet::default_lot_ids;
use parkd_sim::{
    Credentials, FleetConfig, GateSimConfig, HttpEndpoint, LoadConfig, Login, MqttEndpoint, Qos,
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "parkd-sim",
    version,
    about = "Simulated parking sensors and MQTT load for parkd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate lots of occupancy sensors following the customer's daily demand.
    Fleet(FleetArgs),
    /// Simulate one garage: cars through barrier gates (walk-ins, and drivers who book through
    /// the REST API), parking where the platform says, and the spot sensors that see them.
    Garage(GarageArgs),
    /// Publish state messages as fast as asked and report exact counts.
    Load(LoadArgs),
    /// Compare reservation allocation policies on simulated days of requests (markdown
    /// report; no broker needed).
    Allocation(AllocationArgs),
}

#[derive(Debug, Args)]
struct Common {
    /// Broker address, host:port.
    #[arg(long, env = "PARKD_SIM_MQTT", default_value = "127.0.0.1:1883", value_parser = parse_endpoint)]
    mqtt: MqttEndpoint,
    /// Username for every connection (see also --credentials).
    #[arg(long, env = "PARKD_SIM_USERNAME")]
    username: Option<String>,
    /// Password for every connection.
    #[arg(long, env = "PARKD_SIM_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// JSON file mapping client ids to logins: {"client-id": {"username": "..", "password": ".."}}.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// MQTT keep alive (at least 5s).
    #[arg(long, default_value = "30s", value_parser = parse_dur)]
    keep_alive: Duration,
    /// Stop after this long (e.g. 10s, 5m). Without it a fleet runs until Ctrl-C, and a load
    /// run without --count lasts 10s.
    #[arg(long, value_parser = parse_dur)]
    duration: Option<Duration>,
    /// First seq of every device (default: the start time in microseconds).
    #[arg(long)]
    seq_base: Option<u64>,
}

#[derive(Debug, Args)]
struct FleetArgs {
    #[command(flatten)]
    common: Common,
    /// Number of lots (named lot-1, lot-2, ...).
    #[arg(long, default_value_t = 1)]
    lots: u32,
    /// Explicit lot ids, comma separated (overrides --lots).
    #[arg(long, value_delimiter = ',')]
    lot_ids: Vec<LotId>,
    /// Sensors per lot.
    #[arg(long, default_value_t = 300)]
    spots: u32,
    /// Spots per level in the spot ids (L1-001 ...).
    #[arg(long, default_value_t = 100)]
    spots_per_level: u32,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Simulated time of day at the start, HH:MM (default: the local time).
    #[arg(long, value_parser = parse_time)]
    start: Option<NaiveTime>,
    /// Real time between two demand decisions.
    #[arg(long, default_value = "250ms", value_parser = parse_dur)]
    tick: Duration,
    /// Real time between two heartbeats of a sensor.
    #[arg(long, default_value = "60s", value_parser = parse_dur)]
    heartbeat: Duration,
    /// One connection per sensor up to this many sensors; above, sensors share this many.
    #[arg(long, default_value_t = 500)]
    max_connections: usize,
    /// QoS of state messages (0 or 1).
    #[arg(long, default_value = "1", value_parser = parse_qos)]
    qos: Qos,
    /// Seed of the demand model.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Leave the retained status online at shutdown (only the will marks sensors offline).
    #[arg(long)]
    no_offline_on_shutdown: bool,
}

#[derive(Debug, Args)]
struct GarageArgs {
    #[command(flatten)]
    common: Common,
    /// The lot (registered on the server with its gates and sensors).
    #[arg(long, default_value = "demo-garage")]
    lot: LotId,
    /// Its spots (one sensor each).
    #[arg(long, default_value_t = 300)]
    spots: u32,
    /// Spots per level in the spot ids (L1-001 ...).
    #[arg(long, default_value_t = 100)]
    spots_per_level: u32,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Simulated time of day at the start, HH:MM (default: the local time).
    #[arg(long, value_parser = parse_time)]
    start: Option<NaiveTime>,
    /// Entry gates, comma separated (device ids `{lot}-g-{gate}`).
    #[arg(long, value_delimiter = ',', default_value = "in-1,in-2")]
    entry_gates: Vec<GateId>,
    /// Exit gates, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "out-1,out-2")]
    exit_gates: Vec<GateId>,
    /// parkd's HTTP API, e.g. http://127.0.0.1:8080: drivers book there and the spot kinds
    /// are read from it. Without it every car is a walk-in.
    #[arg(long, value_parser = parse_http)]
    api: Option<HttpEndpoint>,
    /// Share of cars whose driver books ahead (with --api).
    #[arg(long, default_value_t = 0.15)]
    booking_share: f64,
    /// The server's shortest reservation (reservations.min_duration_min).
    #[arg(long, default_value = "15m", value_parser = parse_dur)]
    min_booking: Duration,
    /// The pay station's operator account (with --api): walk-ins pay their stay there, and
    /// drivers pay (reservations in advance or at the exit). Without it nobody pays.
    #[arg(
        long,
        env = "PARKD_SIM_PAY_STATION_EMAIL",
        requires = "pay_station_password"
    )]
    pay_station_email: Option<String>,
    /// The pay station account's password.
    #[arg(long, env = "PARKD_SIM_PAY_STATION_PASSWORD", hide_env_values = true)]
    pay_station_password: Option<String>,
    /// Share of drivers on a reservation who pay it in advance (with a pay station).
    #[arg(long, default_value_t = 0.5)]
    advance_share: f64,
    /// Share of payments whose first card is declined (the driver then uses another).
    #[arg(long, default_value_t = 0.1)]
    decline_share: f64,
    /// Share of admitted cars that park elsewhere than assigned.
    #[arg(long, default_value_t = 0.05)]
    elsewhere: f64,
    /// How long a gate waits for its answer before asking again (same request id).
    #[arg(long, default_value = "2s", value_parser = parse_dur)]
    request_timeout: Duration,
    /// Real time between two heartbeats of a sensor.
    #[arg(long, default_value = "60s", value_parser = parse_dur)]
    heartbeat: Duration,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Args)]
struct LoadArgs {
    #[command(flatten)]
    common: Common,
    /// MQTT connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Distinct spots per connection.
    #[arg(long, default_value_t = 100)]
    spots_per_connection: usize,
    /// Lot id of the spots.
    #[arg(long, default_value = "load")]
    lot: LotId,
    /// Messages per second in total, or `unlimited`.
    #[arg(long, default_value = "10000", value_parser = parse_rate)]
    rate: Rate,
    /// QoS (0 or 1).
    #[arg(long, default_value = "0", value_parser = parse_qos)]
    qos: Qos,
    /// Stop after this many messages in total.
    #[arg(long)]
    count: Option<u64>,
    /// Unacknowledged QoS 1 messages per connection.
    #[arg(long, default_value_t = 1000)]
    inflight: u16,
    /// Request queue capacity per connection.
    #[arg(long, default_value_t = 1024)]
    channel_capacity: usize,
    /// Leave Nagle's algorithm on (fewer packets, worse latency).
    #[arg(long)]
    nagle: bool,
}

#[derive(Debug, Args)]
struct AllocationArgs {
    /// Runs per demand level, with seeds --first-seed, --first-seed + 1, ...
    #[arg(long, default_value_t = 11)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Simulated days per run.
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Demand levels in requests per day, comma separated; the first is reported in full, all
    /// in the sweep (2450 is the customer's curve on 300 bays, full at the peaks).
    #[arg(long, value_delimiter = ',', default_value = "2450,2000,3000,4000")]
    demand: Vec<f64>,
    /// Booking grid for start and end times (e.g. 15m; 1s for none).
    #[arg(long, default_value = "15m", value_parser = parse_dur)]
    slot: Duration,
    /// How far ahead drivers book: mixed, none (on arrival) or advance (1-7 days).
    #[arg(long, default_value = "mixed")]
    leads: parkd_sim::allocation::LeadTimes,
    /// Also write the markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
struct Rate(Option<f64>);

fn parse_endpoint(raw: &str) -> Result<MqttEndpoint, String> {
    raw.parse().map_err(|e: parkd_sim::SimError| e.to_string())
}

fn parse_http(raw: &str) -> Result<HttpEndpoint, String> {
    raw.parse().map_err(|e: parkd_sim::SimError| e.to_string())
}

fn parse_dur(raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map_err(|e| e.to_string())
}

fn parse_qos(raw: &str) -> Result<Qos, String> {
    raw.parse().map_err(|e: parkd_sim::SimError| e.to_string())
}

fn parse_time(raw: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(raw, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(raw, "%H:%M:%S"))
        .map_err(|_| format!("{raw:?} is not a time of day (HH:MM)"))
}

fn parse_rate(raw: &str) -> Result<Rate, String> {
    match raw.trim() {
        "unlimited" | "max" | "0" => Ok(Rate(None)),
        other => match other.parse::<f64>() {
            Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(Rate(Some(rate))),
            _ => Err(format!("{raw:?} is not a rate (messages/s or `unlimited`)")),
        },
    }
}

fn credentials(common: &Common) -> anyhow::Result<Option<Credentials>> {
    let shared = match (&common.username, &common.password) {
        (Some(user), password) => Some(Login::new(user, password.clone().unwrap_or_default())),
        (None, Some(_)) => anyhow::bail!("--password needs --username"),
        (None, None) => None,
    };
    let map = match &common.credentials {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let raw: HashMap<String, LoginFile> = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            Some(
                raw.into_iter()
                    .map(|(id, login)| (id, Login::new(login.username, login.password)))
                    .collect::<HashMap<_, _>>(),
            )
        }
        None => None,
    };
    Ok(match (map, shared) {
        (None, None) => None,
        (None, Some(login)) => Some(Credentials::same_for_all(login)),
        (Some(map), fallback) => Some(Credentials::from_fn(move |id| {
            map.get(id).cloned().or_else(|| fallback.clone())
        })),
    })
}

#[derive(Debug, serde::Deserialize)]
struct LoginFile {
    username: String,
    password: String,
}

async fn run(command: Command, token: CancellationToken) -> anyhow::Result<String> {
    let report = match command {
        Command::Fleet(args) => {
            let mut config = FleetConfig::new(args.common.mqtt.clone(), args.lots, args.spots);
            if !args.lot_ids.is_empty() {
                config.lots = args.lot_ids.clone();
            } else {
                config.lots = default_lot_ids(args.lots);
            }
            config.spots_per_level = args.spots_per_level;
            config.speed = args.speed;
            config.start = args.start;
            config.tick = args.tick;
            config.heartbeat_every = args.heartbeat;
            config.max_connections = args.max_connections;
            config.credentials = credentials(&args.common)?;
            config.keep_alive = args.common.keep_alive;
            config.state_qos = args.qos;
            config.seed = args.seed;
            config.seq_base = args.common.seq_base;
            config.duration = args.common.duration;
            config.offline_on_shutdown = !args.no_offline_on_shutdown;
            let report = parkd_sim::run_fleet(config, token).await?;
            serde_json::to_string_pretty(&report)?
        }
        Command::Garage(args) => {
            let credentials = credentials(&args.common)?;
            let mut fleet = FleetConfig::new(args.common.mqtt.clone(), 1, args.spots);
            fleet.lots = vec![args.lot.clone()];
            fleet.spots_per_level = args.spots_per_level;
            fleet.speed = args.speed;
            fleet.start = args.start;
            fleet.heartbeat_every = args.heartbeat;
            fleet.credentials = credentials.clone();
            fleet.keep_alive = args.common.keep_alive;
            fleet.seed = args.seed;
            fleet.seq_base = args.common.seq_base;
            let mut gates = GateSimConfig::new(args.common.mqtt.clone(), args.lot, args.spots);
            gates.spots_per_level = args.spots_per_level;
            gates.speed = args.speed;
            gates.start = args.start;
            gates.entry_gates = args.entry_gates;
            gates.exit_gates = args.exit_gates;
            gates.credentials = credentials;
            gates.keep_alive = args.common.keep_alive;
            gates.seed = args.seed;
            gates.api = args.api;
            gates.bookings.share = args.booking_share;
            gates.bookings.min_booking = args.min_booking;
            gates.payments.pay_station = match (args.pay_station_email, args.pay_station_password) {
                (Some(email), Some(password)) => Some(Login::new(email, password)),
                (None, None) => None,
                _ => anyhow::bail!("--pay-station-email and --pay-station-password go together"),
            };
            gates.payments.advance_share = args.advance_share;
            gates.payments.decline_share = args.decline_share;
            gates.elsewhere_share = args.elsewhere;
            gates.request_timeout = args.request_timeout;
            gates.duration = args.common.duration;
            let report = parkd_sim::run_garage(fleet, gates, token).await?;
            serde_json::to_string_pretty(&report)?
        }
        Command::Load(args) => {
            let mut config = LoadConfig::new(args.common.mqtt.clone(), args.connections);
            config.spots_per_connection = args.spots_per_connection;
            config.lot = args.lot.clone();
            config.rate = args.rate.0;
            config.qos = args.qos;
            config.count = args.count;
            config.duration = args.common.duration;
            if config.count.is_none() && config.duration.is_none() {
                config.duration = Some(Duration::from_secs(10));
            }
            config.inflight = args.inflight;
            config.channel_capacity = args.channel_capacity;
            config.tcp_nodelay = !args.nagle;
            config.credentials = credentials(&args.common)?;
            config.keep_alive = args.common.keep_alive;
            config.seq_base = args.common.seq_base;
            let report = parkd_sim::run_load(config, token).await?;
            serde_json::to_string_pretty(&report)?
        }
        Command::Allocation(args) => {
            let config = parkd_sim::allocation::AllocSimConfig {
                days: args.days,
                seeds: (0..args.seeds)
                    .map(|i| args.first_seed.saturating_add(i))
                    .collect(),
                levels: args.demand.clone(),
                slot_s: i64::try_from(args.slot.as_secs()).unwrap_or(i64::MAX),
                leads: args.leads,
            };
            let report = tokio::task::spawn_blocking(move || {
                parkd_sim::allocation::simulate(&config, |level| {
                    tracing::info!(level, "simulating demand level");
                })
            })
            .await??;
            let markdown = report.to_markdown();
            if let Some(path) = &args.out {
                std::fs::write(path, &markdown)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            markdown
        }
    };
    Ok(report)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let token = CancellationToken::new();
    let watcher = tokio::spawn({
        let token = token.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("Ctrl-C: stopping (again to exit at once)");
                token.cancel();
            }
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let result = run(cli.command, token).await;
    watcher.abort();
    let report = result?;
    println!("{report}");
    Ok(())
}
