//! What the account and reservation benchmarks share: a fresh store for parkd's configuration
//! (SQLite in the run's temporary directory, or a fresh PostgreSQL database), driver accounts
//! made through the HTTP API, and a small deterministic random number generator.

use anyhow::{Context, anyhow, bail};
use parkd::config::{DatabaseUrl, ParkdConfig};
use tokio_postgres::NoTls;

use crate::Backend;
use crate::http1::Connection;
use crate::pg::{FreshDb, PgServer};

/// The store a run uses, and what must be cleaned up after it.
#[derive(Debug)]
pub(crate) struct StoreSetup {
    pub(crate) backend: Backend,
    /// The fresh PostgreSQL database (PostgreSQL only).
    pub(crate) pg: Option<(PgServer, FreshDb)>,
    /// `SHOW server_version` (PostgreSQL only).
    pub(crate) pg_version: Option<String>,
    /// The server's settings that matter for writes (PostgreSQL only): name, value.
    pub(crate) pg_settings: Vec<(String, String)>,
}

impl StoreSetup {
    /// Points `config` at a fresh store of `backend`: the SQLite file under
    /// `config.data_dir`, or a new database on the PostgreSQL server of `database_url` (or of
    /// libpq's environment, as `pg_virtualenv` sets it). The URL is never printed.
    pub(crate) async fn fresh(
        config: &mut ParkdConfig,
        backend: Backend,
        database_url: Option<String>,
        pool_size: Option<usize>,
    ) -> anyhow::Result<StoreSetup> {
        if let Some(size) = pool_size {
            config.database.pool_size = size;
        }
        match backend {
            Backend::Sqlite => {
                config.database.url = None;
                Ok(StoreSetup {
                    backend,
                    pg: None,
                    pg_version: None,
                    pg_settings: Vec::new(),
                })
            }
            Backend::Postgres => {
                let server = PgServer::new(database_url);
                server.check()?;
                let db = server.fresh().await?;
                let url: DatabaseUrl =
                    serde_json::from_value(serde_json::Value::String(db.url.clone()))
                        .context("the database URL")?;
                config.database.url = Some(url);
                let version = crate::pg::server_version(&db.url)
                    .await
                    .unwrap_or_else(|e| format!("unknown ({e})"));
                let settings = pg_settings(&db.url).await.unwrap_or_default();
                Ok(StoreSetup {
                    backend,
                    pg: Some((server, db)),
                    pg_version: Some(version),
                    pg_settings: settings,
                })
            }
        }
    }

    /// The connection string of the fresh PostgreSQL database (never print it).
    pub(crate) fn pg_url(&self) -> Option<&str> {
        self.pg.as_ref().map(|(_, db)| db.url.as_str())
    }

    /// One line for the report's setup.
    pub(crate) fn description(&self, config: &ParkdConfig) -> String {
        match self.backend {
            Backend::Sqlite => format!(
                "SQLite {} (bundled), the store's file in a temporary directory (WAL, \
                 synchronous=NORMAL)",
                rusqlite::version()
            ),
            Backend::Postgres => {
                let settings: Vec<String> = self
                    .pg_settings
                    .iter()
                    .filter(|(name, _)| name != AUTOGROUP)
                    .map(|(name, value)| format!("`{name}={value}`"))
                    .collect();
                let scheduling = match self.pg_settings.iter().find(|(name, _)| name == AUTOGROUP) {
                    Some((_, nice)) => {
                        format!("its postmaster runs in scheduler autogroup nice {nice}")
                    }
                    None => "its scheduling is unknown (not on this machine?)".to_owned(),
                };
                format!(
                    "PostgreSQL {} on this machine, a fresh database; server settings: {}; \
                     {scheduling}; parkd's pool `database.pool_size` = {}",
                    self.pg_version.as_deref().unwrap_or("unknown"),
                    if settings.is_empty() {
                        "unknown".to_owned()
                    } else {
                        settings.join(", ")
                    },
                    config.database.pool_size
                )
            }
        }
    }

    /// Drops the database when this harness owns it.
    pub(crate) async fn dispose(self) -> anyhow::Result<()> {
        if let Some((server, db)) = self.pg {
            server.dispose(db).await?;
        }
        Ok(())
    }
}

/// The pseudo-setting under which [`pg_settings`] returns the server's autogroup nice value.
const AUTOGROUP: &str = "autogroup";

/// The server settings that decide the cost of a commit and how many clients it takes.
async fn pg_settings(url: &str) -> anyhow::Result<Vec<(String, String)>> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to read the server settings")?;
    let task = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT name, setting || coalesce(' ' || unit, '') FROM pg_settings
             WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method', 'shared_buffers',
                            'max_connections', 'full_page_writes', 'commit_delay')
             ORDER BY name",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for row in rows {
        out.push((row.try_get(0)?, row.try_get(1)?));
    }
    // Where the server runs on this machine: the postmaster's scheduler autogroup (the
    // parent of the checkpointer).
    if let Ok(row) = client
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'",
            &[],
        )
        .await
    {
        let pid: i32 = row.try_get(0)?;
        let postmaster = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after = stat.get(stat.rfind(')')? + 1..)?.to_owned();
                after.split_whitespace().nth(1)?.parse::<i32>().ok()
            });
        if let Some(nice) = postmaster.and_then(autogroup_nice) {
            out.push((AUTOGROUP.to_owned(), nice.to_string()));
        }
    }
    drop(client);
    let _ = task.await;
    Ok(out)
}

/// The scheduler autogroup nice value of process `pid` (`/proc/PID/autogroup`).
pub(crate) fn autogroup_nice(pid: i32) -> Option<i32> {
    let path = if pid == 0 {
        "/proc/self/autogroup".to_owned()
    } else {
        format!("/proc/{pid}/autogroup")
    };
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// A small deterministic generator (SplitMix64): the same seed gives the same requests.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is negligible for the small n used here).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A short tag for this run, part of every e-mail address, plate and idempotency key.
pub(crate) fn run_tag() -> String {
    format!(
        "{:06x}",
        chrono::Utc::now().timestamp_micros().unsigned_abs() & 0xff_ffff
    )
}

/// The e-mail address and password of driver `i` of run `tag`. The password passes parkd's
/// rules (long, not common, not a run, without the e-mail's name).
pub(crate) fn credentials(tag: &str, i: usize) -> (String, String) {
    (
        format!("driver{i:03}.{tag}@bench.parkd.test"),
        format!("amber kestrel {tag} lantern {i:03}"),
    )
}

/// `POST /api/v1/auth/register` (202 expected).
pub(crate) async fn register(
    connection: &mut Connection,
    email: &str,
    password: &str,
) -> anyhow::Result<()> {
    let body = serde_json::json!({ "email": email, "password": password }).to_string();
    let answer = connection
        .send("POST", "/api/v1/auth/register", &[], body.as_bytes())
        .await
        .context("register")?;
    if answer.status != 202 {
        bail!(
            "register {email}: status {}: {}",
            answer.status,
            answer.text()
        );
    }
    Ok(())
}

/// The JSON body of a login.
pub(crate) fn login_body(email: &str, password: &str) -> String {
    serde_json::json!({ "email": email, "password": password }).to_string()
}

/// `POST /api/v1/auth/login`; returns the bearer token.
pub(crate) async fn login(
    connection: &mut Connection,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let body = login_body(email, password);
    let answer = connection
        .send("POST", "/api/v1/auth/login", &[], body.as_bytes())
        .await
        .context("login")?;
    if answer.status != 200 {
        bail!("login {email}: status {}: {}", answer.status, answer.text());
    }
    answer
        .json()?
        .get("token")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("login {email}: no token in the answer"))
}

/// A driver's vehicle: `class`, `ev`, `accessible_permit` as the API takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VehicleSpec {
    pub(crate) class: &'static str,
    pub(crate) ev: bool,
    pub(crate) accessible: bool,
}

impl VehicleSpec {
    /// The vehicle type allocation uses (docs/accounts.md: a permit wins over EV).
    pub(crate) fn vehicle_type(self) -> parkd_core::vehicle::VehicleType {
        use parkd_core::vehicle::VehicleType;
        match self.class {
            "motorcycle" => VehicleType::Motorcycle,
            "compact" => VehicleType::Compact,
            "van" => VehicleType::Van,
            _ if self.accessible => VehicleType::Accessible,
            _ if self.ev => VehicleType::Ev,
            _ => VehicleType::Car,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match (self.class, self.ev, self.accessible) {
            ("car", _, true) => "car with an accessible permit",
            ("car", true, false) => "EV",
            (class, _, _) => class,
        }
    }
}

/// `POST /api/v1/me/vehicles`; returns the vehicle's id.
pub(crate) async fn add_vehicle(
    connection: &mut Connection,
    token: &str,
    plate: &str,
    spec: VehicleSpec,
) -> anyhow::Result<String> {
    let body = serde_json::json!({
        "plate": plate,
        "class": spec.class,
        "ev": spec.ev,
        "accessible_permit": spec.accessible,
    })
    .to_string();
    let bearer = format!("Bearer {token}");
    let answer = connection
        .send(
            "POST",
            "/api/v1/me/vehicles",
            &[("Authorization", &bearer)],
            body.as_bytes(),
        )
        .await
        .context("add vehicle")?;
    if answer.status != 201 {
        bail!(
            "add vehicle {plate}: status {}: {}",
            answer.status,
            answer.text()
        );
    }
    answer
        .json()?
        .get("id")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("add vehicle {plate}: no id in the answer"))
}

#[cfg(test)]
mod tests {
    use super::{Rng, credentials};

    #[test]
    fn the_generator_is_deterministic_and_spread() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..100).map(|_| a.below(10)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(10)).collect();
        assert_eq!(xs, ys);
        for digit in 0..10 {
            assert!(xs.contains(&digit), "{digit} never drawn");
        }
    }

    #[test]
    fn passwords_pass_the_policy() {
        for i in [0, 7, 63, 999] {
            let (email, password) = credentials("a1b2c3", i);
            let email = parkd_core::account::Email::parse(&email).expect("valid e-mail");
            parkd_core::account::check_password(&password, Some(&email)).expect("strong enough");
        }
    }
}
