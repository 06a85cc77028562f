//! Configuration: built-in defaults, then an optional TOML file, then `PARKD__...` environment
//! variables (`PARKD__MQTT__LISTEN=0.0.0.0:1883` sets `mqtt.listen`), then command-line flags.
//!
//! The file format is [`ParkdConfig`]; every section refuses unknown keys, so a typo is an
//! error that names the key instead of a silently ignored setting. Secrets ([`Secret`]) never
//! print: `parkd config print` and `Debug` show them redacted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use parkd_core::secret::{REDACTED, Secret};
use serde::{Deserialize, Serialize, Serializer};

/// The database URL: printed with its password redacted.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL itself, password included; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by [`REDACTED`], as a [`Secret`] prints. Handles
    /// both the URL form (`postgres://user:pass@host/db`) and the key/value form
    /// (`password=...`).
    pub fn redacted(&self) -> String {
        let url = &self.0;
        if let Some(scheme_end) = url.find("://") {
            let rest = &url[scheme_end + 3..];
            if let Some(at) = rest.rfind('@') {
                let userinfo = &rest[..at];
                if let Some(colon) = userinfo.find(':') {
                    return format!(
                        "{}{}:{REDACTED}{}",
                        &url[..scheme_end + 3],
                        &userinfo[..colon],
                        &rest[at..]
                    );
                }
            }
            return url.clone();
        }
        url.split_whitespace()
            .map(|pair| {
                if pair.to_ascii_lowercase().starts_with("password=") {
                    format!("password={REDACTED}")
                } else {
                    pair.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ParkdConfig {
    /// Where embedded data (the SQLite file) lives.
    pub data_dir: PathBuf,
    /// The HTTP server.
    pub http: HttpConfig,
    /// MQTT: embedded broker or external broker.
    pub mqtt: MqttConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// The ingest pipeline.
    pub ingest: IngestConfig,
    /// Live occupancy: the engine, its feed and the WebSocket.
    pub live: LiveConfig,
    /// Accounts and sessions.
    pub auth: AuthConfig,
    /// Reservations.
    pub reservations: ReservationsConfig,
    /// Barrier gates.
    pub gates: GatesConfig,
    /// Payments: the provider (`test` or `stripe`) and its settings (docs/payments.md).
    pub payments: parkd_payments::PaymentsConfig,
    /// Logging.
    pub log: LogConfig,
    /// The built-in simulator of `parkd demo`.
    pub demo: DemoConfig,
}

impl Default for ParkdConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            http: HttpConfig::default(),
            mqtt: MqttConfig::default(),
            database: DatabaseConfig::default(),
            ingest: IngestConfig::default(),
            live: LiveConfig::default(),
            auth: AuthConfig::default(),
            reservations: ReservationsConfig::default(),
            gates: GatesConfig::default(),
            payments: parkd_payments::PaymentsConfig::default(),
            log: LogConfig::default(),
            demo: DemoConfig::default(),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address; port 0 picks a free port.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

/// Which broker devices talk to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MqttMode {
    /// rumqttd inside this process.
    Embedded,
    /// Mosquitto, EMQX, HiveMQ...; ingest subscribes to it.
    External,
}

/// `[mqtt]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Embedded or external.
    pub mode: MqttMode,
    /// Listen address of the embedded broker; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Admit clients without credentials. Unset: allowed in `demo`, refused in `serve`.
    pub allow_anonymous: Option<bool>,
    /// Device connections at once; more are closed on accept and counted.
    pub max_connections: usize,
    /// Largest MQTT packet, in bytes.
    pub max_packet_size: usize,
    /// Bytes per segment of the in-memory log the embedded router keeps per subscription
    /// filter (ingest has one filter for every spot topic); memory is taken as it fills.
    pub segment_size: usize,
    /// Segments per log; segment_size x segment_count is the burst ingest can fall behind by.
    pub segment_count: usize,
    /// The external broker (mode = "external").
    pub external: ExternalMqttConfig,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            mode: MqttMode::Embedded,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            allow_anonymous: None,
            max_connections: 100_000,
            max_packet_size: 64 * 1024,
            segment_size: 8 * 1024 * 1024,
            segment_count: 8,
            external: ExternalMqttConfig::default(),
        }
    }
}

/// `[mqtt.external]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExternalMqttConfig {
    /// `mqtt://host:port`.
    pub url: String,
    /// This instance's client id (distinct per instance).
    pub client_id: String,
    /// Username, if needed.
    pub username: Option<String>,
    /// Password, if needed.
    pub password: Option<Secret>,
    /// Shared-subscription group, so several instances split the stream.
    pub shared_group: Option<String>,
}

impl Default for ExternalMqttConfig {
    fn default() -> Self {
        Self {
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: "parkd-ingest".into(),
            username: None,
            password: None,
            shared_group: None,
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// PostgreSQL URL; unset means the embedded SQLite file under `data_dir`.
    pub url: Option<DatabaseUrl>,
    /// PostgreSQL connections [default: [`default_pool_size`]].
    pub pool_size: usize,
    /// Days of raw telemetry kept (0 keeps everything).
    pub retention_days: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            pool_size: default_pool_size(),
            retention_days: 90,
        }
    }
}

/// Two connections per CPU core of this machine, 4 to 16. Statements wait in the pool's queue
/// (first come, first served) rather than in the operating system's run queue: on 2 cores with
/// PostgreSQL on the same machine, 4 connections kept the reservations benchmark's p99 at
/// 18.4–19.7 ms (max 41–45 ms) where 8 gave 21.3–23.2 ms (max 157–233 ms), at the same
/// throughput, 3 runs each alternating, before creates were batched
/// (bench/results/reservations.md, "Earlier").
pub fn default_pool_size() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |cores| cores.get() * 2)
        .clamp(4, 16)
}

/// `[ingest]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Rows per batch at most.
    pub batch_size: usize,
    /// Longest wait before a partial batch is written, in milliseconds.
    pub batch_interval_ms: u64,
    /// Messages held between broker and batcher before dropping (counted).
    pub queue_capacity: usize,
    /// Attempts to write a batch before counting it lost.
    pub write_attempts: u32,
    /// Batches committed concurrently; unset: 2 on PostgreSQL, 1 on SQLite.
    pub writers: Option<usize>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            batch_size: 20_000,
            batch_interval_ms: 50,
            queue_capacity: 100_000,
            write_attempts: 10,
            writers: None,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Text or JSON lines.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info,parkd_ingest=debug`. `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info,rumqttd=warn".into(),
        }
    }
}

/// `[live]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Minimum time a spot's sensor value stands before another replaces it (flapping
    /// sensors); a change after a longer stable period shows at once. 0 turns it off.
    pub debounce_ms: u64,
    /// Silence (no reading, no heartbeat) after which a spot shows `unknown`; 0 = never.
    pub stale_after_s: u64,
    /// Changes buffered per lot for WebSocket clients; a client further behind resyncs.
    pub feed_capacity: usize,
    /// Seconds between WebSocket heartbeats.
    pub heartbeat_s: u64,
    /// Most WebSocket clients at once (each costs a task and a socket).
    pub max_clients: usize,
    /// Least time between two writes of deltas to one WebSocket client, in ms: changes
    /// closer together leave in one write. Bounds the cost of a busy lot at clients x
    /// 1000 / frame_interval_ms writes/s; 0 = a write per change.
    pub frame_interval_ms: u64,
    /// Seconds between checks of the store for lots imported or changed by `parkd lot`.
    pub model_reload_s: u64,
    /// Publish each lot's counts as a retained MQTT message (`parking/v1/{lot}/availability`)
    /// at most this often, in ms, when they change; 0 = never.
    pub retained_availability_ms: u64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            debounce_ms: 5_000,
            stale_after_s: 900,
            feed_capacity: 4_096,
            heartbeat_s: 10,
            max_clients: 20_000,
            frame_interval_ms: 20,
            model_reload_s: 10,
            retained_availability_ms: 1_000,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Argon2id memory per hash, KiB (at least 19456, OWASP's minimum).
    pub argon2_memory_kib: u32,
    /// Argon2id passes (at least 2).
    pub argon2_iterations: u32,
    /// Argon2id lanes.
    pub argon2_parallelism: u32,
    /// Hashes computed at once; unset: the number of cores.
    pub hash_concurrency: Option<usize>,
    /// A session unused this long ends, seconds.
    pub session_idle_s: u64,
    /// A session ends this long after login, seconds.
    pub session_absolute_s: u64,
    /// Failed logins are counted over this window, seconds.
    pub failure_window_s: u64,
    /// Failed logins per client address per window.
    pub max_failures_per_ip: usize,
    /// Failed logins per (account, address) per window.
    pub max_failures_per_account_ip: usize,
    /// Failed logins per account per window from addresses that never logged into it.
    pub max_failures_per_account: usize,
    /// A session read from the database is trusted this long before it is read again,
    /// seconds (0: read at every request). Another instance's logout or revoke reaches this
    /// one within it; this instance's own act at once.
    pub session_cache_s: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            hash_concurrency: None,
            session_idle_s: 24 * 3600,
            session_absolute_s: 30 * 24 * 3600,
            failure_window_s: 900,
            max_failures_per_ip: 30,
            max_failures_per_account_ip: 5,
            max_failures_per_account: 50,
            session_cache_s: 2,
        }
    }
}

/// `[reservations]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReservationsConfig {
    /// Minutes after the expected entry within which a reservation must check in, after
    /// which it is a no-show and its spot is released.
    pub grace_min: u32,
    /// Minutes before the expected entry from which live availability shows the spot held.
    pub hold_window_min: u32,
    /// Shortest reservation, minutes.
    pub min_duration_min: u32,
    /// Longest reservation, hours.
    pub max_duration_h: u32,
    /// Furthest start ahead, days.
    pub max_advance_days: u32,
    /// Seconds between two runs of the no-show and hold sweeper.
    pub sweep_every_s: u64,
}

impl Default for ReservationsConfig {
    fn default() -> Self {
        Self {
            grace_min: 30,
            hold_window_min: 30,
            min_duration_min: 15,
            max_duration_h: 168,
            max_advance_days: 90,
            sweep_every_s: 30,
        }
    }
}

/// `[gates]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GatesConfig {
    /// A plate read with less confidence (0 to 1) counts as unread.
    pub min_plate_confidence: f64,
    /// A request whose timestamp is older than this many seconds is denied as stale.
    pub max_request_age_s: u64,
    /// Minutes before its expected entry from which a reservation admits its vehicle.
    pub early_entry_min: u32,
    /// Hours a walk-in is assumed to stay when its spot is chosen.
    pub walk_in_stay_h: u32,
    /// Minutes an assigned spot stays held for a car that entered and was not seen parking.
    pub arrival_timeout_min: u32,
    /// Requests that may wait for a decision; beyond, they are dropped (gates repeat them).
    pub queue_capacity: usize,
    /// Hours the answer to each request is kept for the gate's repeats; older answers are
    /// deleted hourly.
    pub decision_retention_h: u32,
}

impl Default for GatesConfig {
    fn default() -> Self {
        Self {
            min_plate_confidence: 0.8,
            max_request_age_s: 60,
            early_entry_min: 30,
            walk_in_stay_h: 3,
            arrival_timeout_min: 20,
            queue_capacity: 1024,
            decision_retention_h: 72,
        }
    }
}

/// The longest `gates.decision_retention_h`: a year (idempotency needs days; the sessions
/// are the lasting record).
const MAX_DECISION_RETENTION_H: u32 = 8760;

/// `[demo]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// The simulated garage's lot id.
    pub lot: String,
    /// Its number of spots.
    pub spots: u32,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Whether `parkd demo` runs the simulator at all.
    pub simulate: bool,
    /// Whether cars come through simulated barrier gates (`in-1`, `in-2`, `out-1`, `out-2`,
    /// registered by the demo) and park where the platform sends them; without, the sensors
    /// follow the demand curve on their own and the gates stay idle.
    pub gates: bool,
    /// Share of the simulated cars (with `gates`) whose driver booked ahead through the REST
    /// API, 0 to 1; 0 = walk-ins only.
    pub booking_share: f64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            lot: "demo-garage".into(),
            spots: 300,
            speed: 60.0,
            simulate: true,
            gates: true,
            booking_share: 0.15,
        }
    }
}

/// Errors while loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer could not be read or does not fit the format (names the key).
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is out of range.
    #[error("configuration: {0}")]
    Invalid(String),
}

impl ParkdConfig {
    /// Loads defaults, then `file` (which must exist when given), then the environment.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ParkdConfig, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::Config::try_from(&ParkdConfig::default())?);
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(key, _)| key.starts_with("PARKD__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("PARKD")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let config: ParkdConfig = builder.build()?.try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        if self.ingest.batch_size == 0 || self.ingest.queue_capacity == 0 {
            return invalid("ingest.batch_size and ingest.queue_capacity must be above zero");
        }
        if self.ingest.writers == Some(0) {
            return invalid("ingest.writers must be above zero");
        }
        if self.ingest.batch_interval_ms == 0 || self.ingest.write_attempts == 0 {
            return invalid(
                "ingest.batch_interval_ms and ingest.write_attempts must be above zero",
            );
        }
        if self.mqtt.segment_size < 1024 || self.mqtt.segment_count == 0 {
            return invalid("mqtt.segment_size must be >= 1024 and mqtt.segment_count >= 1");
        }
        if self.database.pool_size == 0 {
            return invalid("database.pool_size must be above zero");
        }
        if self.live.feed_capacity == 0 || self.live.max_clients == 0 {
            return invalid("live.feed_capacity and live.max_clients must be above zero");
        }
        if self.live.heartbeat_s == 0 || self.live.model_reload_s == 0 {
            return invalid("live.heartbeat_s and live.model_reload_s must be above zero");
        }
        if let Err(error) = self.payments.validate() {
            return Err(ConfigError::Invalid(format!("payments: {error}")));
        }
        if self.live.debounce_ms > 3_600_000 {
            return invalid("live.debounce_ms must be at most one hour (3600000)");
        }
        let argon2 = parkd_api::auth::Argon2Cost {
            memory_kib: self.auth.argon2_memory_kib,
            iterations: self.auth.argon2_iterations,
            parallelism: self.auth.argon2_parallelism,
        };
        if !argon2.meets_owasp() || argon2.parallelism > 16 || argon2.memory_kib > 4_194_304 {
            return invalid(
                "auth.argon2_*: at least OWASP's minimum (memory 19456 KiB, 2 iterations, \
                 parallelism 1), at most 4 GiB and 16 lanes",
            );
        }
        if self.auth.session_idle_s == 0
            || self.auth.session_absolute_s < self.auth.session_idle_s
            || self.auth.failure_window_s == 0
            || self.auth.hash_concurrency == Some(0)
        {
            return invalid(
                "auth: session_idle_s > 0, session_absolute_s >= session_idle_s, \
                 failure_window_s > 0 and hash_concurrency > 0",
            );
        }
        if self.auth.session_cache_s > 60 {
            return invalid(
                "auth.session_cache_s must be at most 60: another instance's logout takes \
                 that long to reach this one",
            );
        }
        if self.auth.max_failures_per_ip == 0
            || self.auth.max_failures_per_account_ip == 0
            || self.auth.max_failures_per_account == 0
        {
            return invalid("auth.max_failures_*: above zero");
        }
        let r = &self.reservations;
        if r.min_duration_min == 0
            || r.max_duration_h == 0
            || u64::from(r.min_duration_min) > u64::from(r.max_duration_h) * 60
            || r.max_advance_days == 0
            || r.sweep_every_s == 0
        {
            return invalid(
                "reservations: min_duration_min, max_duration_h, max_advance_days and \
                 sweep_every_s above zero, min_duration_min <= max_duration_h * 60",
            );
        }
        let g = &self.gates;
        if !(0.0..=1.0).contains(&g.min_plate_confidence)
            || g.max_request_age_s == 0
            || g.walk_in_stay_h == 0
            || g.arrival_timeout_min == 0
            || g.queue_capacity == 0
        {
            return invalid(
                "gates: min_plate_confidence in [0, 1]; max_request_age_s, walk_in_stay_h, \
                 arrival_timeout_min and queue_capacity above zero",
            );
        }
        if g.decision_retention_h == 0
            || g.decision_retention_h > MAX_DECISION_RETENTION_H
            || u64::from(g.decision_retention_h) * 3600 <= g.max_request_age_s
        {
            return Err(ConfigError::Invalid(format!(
                "gates.decision_retention_h is {}: it must be from 1 to {MAX_DECISION_RETENTION_H} \
                 hours and longer than gates.max_request_age_s ({} s), so that a gate's repeated \
                 request finds its answer as long as it is not stale",
                g.decision_retention_h, g.max_request_age_s
            )));
        }
        if self.demo.spots == 0 || self.demo.spots > 100_000 {
            return invalid("demo.spots must be in [1, 100000]");
        }
        if !(self.demo.speed > 0.0 && self.demo.speed <= 86_400.0) {
            return invalid("demo.speed must be in (0, 86400]");
        }
        Ok(())
    }

    /// The configuration as TOML, secrets redacted.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|error| format!("# cannot render: {error}"))
    }

    /// The batch interval.
    pub fn batch_interval(&self) -> Duration {
        Duration::from_millis(self.ingest.batch_interval_ms)
    }

    /// The rules on reservation times.
    pub fn reservation_rules(&self) -> parkd_core::reservation::TimeRules {
        let r = &self.reservations;
        parkd_core::reservation::TimeRules {
            start_slack: chrono::Duration::minutes(5),
            min_duration: chrono::Duration::minutes(i64::from(r.min_duration_min)),
            max_duration: chrono::Duration::hours(i64::from(r.max_duration_h)),
            max_advance: chrono::Duration::days(i64::from(r.max_advance_days)),
            grace: chrono::Duration::minutes(i64::from(r.grace_min)),
        }
    }

    /// The gate rules' settings.
    pub fn gate_settings(&self) -> parkd_gates::GateSettings {
        let g = &self.gates;
        parkd_gates::GateSettings {
            min_plate_confidence: g.min_plate_confidence,
            max_request_age: chrono::Duration::seconds(
                i64::try_from(g.max_request_age_s).unwrap_or(i64::MAX / 1000),
            ),
            early_entry: chrono::Duration::minutes(i64::from(g.early_entry_min)),
            walk_in_stay: chrono::Duration::hours(i64::from(g.walk_in_stay_h)),
            arrival_timeout: chrono::Duration::minutes(i64::from(g.arrival_timeout_min)),
            decision_retention: chrono::Duration::hours(i64::from(g.decision_retention_h)),
            ..parkd_gates::GateSettings::default()
        }
    }

    /// The account settings.
    pub fn auth_settings(&self) -> parkd_api::auth::AuthSettings {
        let secs = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
        let defaults = parkd_api::auth::AuthSettings::default();
        parkd_api::auth::AuthSettings {
            argon2: parkd_api::auth::Argon2Cost {
                memory_kib: self.auth.argon2_memory_kib,
                iterations: self.auth.argon2_iterations,
                parallelism: self.auth.argon2_parallelism,
            },
            hash_concurrency: self
                .auth
                .hash_concurrency
                .unwrap_or(defaults.hash_concurrency),
            session_idle: secs(self.auth.session_idle_s),
            session_absolute: secs(self.auth.session_absolute_s),
            failure_window: secs(self.auth.failure_window_s),
            max_failures_per_ip: self.auth.max_failures_per_ip,
            max_failures_per_account_ip: self.auth.max_failures_per_account_ip,
            max_failures_per_account: self.auth.max_failures_per_account,
            session_cache: secs(self.auth.session_cache_s),
        }
    }

    /// The occupancy engine's settings.
    pub fn engine_settings(&self) -> parkd_occupancy::EngineSettings {
        parkd_occupancy::EngineSettings {
            machine: parkd_occupancy::MachineSettings {
                debounce: chrono::Duration::milliseconds(
                    i64::try_from(self.live.debounce_ms).unwrap_or(i64::MAX),
                ),
                stale_after: chrono::Duration::seconds(
                    i64::try_from(self.live.stale_after_s).unwrap_or(i64::MAX / 1000),
                ),
            },
            feed_capacity: self.live.feed_capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_then_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("parkd.toml");
        std::fs::write(
            &file,
            "[http]\nlisten = \"0.0.0.0:9000\"\n[ingest]\nbatch_size = 10\n",
        )
        .unwrap();
        let config = ParkdConfig::load(
            Some(&file),
            env(&[
                ("PARKD__INGEST__BATCH_SIZE", "20"),
                ("PARKD__MQTT__ALLOW_ANONYMOUS", "true"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.http.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.ingest.batch_size, 20);
        assert_eq!(config.mqtt.allow_anonymous, Some(true));
        assert_eq!(config.ingest.queue_capacity, 100_000);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("parkd.toml");
        std::fs::write(&file, "[ingest]\nbatch_sise = 10\n").unwrap();
        let error = ParkdConfig::load(Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("batch_sise"), "{error}");
        let error = ParkdConfig::load(None, env(&[("PARKD__HTTP__LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("listn"), "{error}");
        let error = ParkdConfig::load(None, env(&[("PARKD__HTTP__LISTEN", "nope")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("listen"), "{error}");
        assert!(ParkdConfig::load(Some(Path::new("/nonexistent.toml")), env(&[])).is_err());
        assert!(ParkdConfig::load(None, env(&[("PARKD__INGEST__BATCH_SIZE", "0")])).is_err());
    }

    #[test]
    fn gate_decision_retention_is_checked() {
        let retention = |hours: &str, max_age: &str| {
            ParkdConfig::load(
                None,
                env(&[
                    ("PARKD__GATES__DECISION_RETENTION_H", hours),
                    ("PARKD__GATES__MAX_REQUEST_AGE_S", max_age),
                ]),
            )
        };
        assert_eq!(
            retention("1", "60")
                .unwrap()
                .gate_settings()
                .decision_retention,
            chrono::Duration::hours(1)
        );
        assert_eq!(
            ParkdConfig::default().gate_settings().decision_retention,
            chrono::Duration::hours(72)
        );
        for (hours, max_age) in [("0", "60"), ("8761", "60"), ("1", "3600")] {
            let error = retention(hours, max_age).unwrap_err().to_string();
            assert!(
                error.contains("gates.decision_retention_h") && error.contains(hours),
                "{error}"
            );
        }
        let error = retention("-3", "60").unwrap_err().to_string();
        assert!(error.contains("decision_retention_h"), "{error}");
    }

    #[test]
    fn secrets_never_print() {
        let config = ParkdConfig::load(
            None,
            env(&[
                (
                    "PARKD__DATABASE__URL",
                    "postgres://parkd:hunter2@db:5432/parkd",
                ),
                ("PARKD__MQTT__EXTERNAL__PASSWORD", "s3cret"),
            ]),
        )
        .unwrap();
        let printed = format!("{}\n{:?}", config.to_toml(), config);
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            printed.contains("postgres://parkd:<redacted>@db:5432/parkd"),
            "{printed}"
        );
        // The MQTT password (a Secret) redacts with the same text as the URL's password.
        assert!(printed.contains("password = \"<redacted>\""), "{printed}");
        assert_eq!(
            config.mqtt.external.password.as_ref().map(Secret::expose),
            Some("s3cret")
        );
        assert_eq!(
            config.database.url.unwrap().expose(),
            "postgres://parkd:hunter2@db:5432/parkd"
        );
        let kv = DatabaseUrl("host=db user=parkd password=hunter2".into());
        assert_eq!(kv.redacted(), "host=db user=parkd password=<redacted>");
    }

    #[test]
    fn the_default_pool_follows_the_cores_within_bounds() {
        let size = DatabaseConfig::default().pool_size;
        assert!((4..=16).contains(&size), "{size}");
        assert_eq!(size % 2, 0, "two per core");
    }

    #[test]
    fn the_example_file_is_valid() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../parkd.example.toml");
        ParkdConfig::load(Some(&example), env(&[])).unwrap();
    }
}
