//! Test helpers for this and other crates (feature `testing`): a fresh, empty database per
//! test, so tests run in parallel without seeing each other's rows.
//!
//! PostgreSQL comes from the environment: `PARKD_TEST_DATABASE_URL` if set, else libpq's
//! `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD` and `PGDATABASE`, which `pg_virtualenv` sets
//! (`pg_virtualenv -v 15 -- cargo nextest run ...`, or `scripts/test`). Each call creates a
//! database `parkd_test_<random>` on that server; they are not dropped (the throwaway cluster
//! goes away with `pg_virtualenv`).

use std::fmt::Write as _;
use std::str::FromStr;

use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

use crate::postgres::PostgresStore;
use crate::sqlite::SqliteStore;

const NO_SERVER: &str = "no PostgreSQL server configured for tests: set PARKD_TEST_DATABASE_URL, \
     or run the tests under pg_virtualenv (`pg_virtualenv -v 15 -- cargo nextest run ...`, \
     which scripts/test does), which sets PGHOST/PGPORT/PGUSER/PGPASSWORD";

/// The server to create test databases on, as a libpq URL or key/value string.
fn admin_connection_string() -> String {
    if let Ok(url) = std::env::var("PARKD_TEST_DATABASE_URL")
        && !url.trim().is_empty()
    {
        return url;
    }
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if env("PGHOST").is_none() && env("PGPORT").is_none() {
        panic!("{NO_SERVER}");
    }
    let mut out = String::new();
    for (key, var) in [
        ("host", "PGHOST"),
        ("port", "PGPORT"),
        ("user", "PGUSER"),
        ("password", "PGPASSWORD"),
        ("dbname", "PGDATABASE"),
    ] {
        if let Some(value) = env(var) {
            push_pair(&mut out, key, &value);
        }
    }
    if env("PGHOST").is_none() {
        push_pair(&mut out, "host", "localhost");
    }
    if env("PGUSER").is_none()
        && let Some(user) = env("USER")
    {
        push_pair(&mut out, "user", &user);
    }
    out
}

/// Appends `key='value'` with libpq quoting.
fn push_pair(out: &mut String, key: &str, value: &str) {
    let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
    if !out.is_empty() {
        out.push(' ');
    }
    let _ = write!(out, "{key}='{escaped}'");
}

/// Creates an empty database on the configured server and returns a connection string for
/// it. Panics with a clear message when no server is configured or reachable.
pub async fn fresh_postgres_url() -> String {
    let admin = admin_connection_string();
    let mut config = tokio_postgres::Config::from_str(&admin)
        .unwrap_or_else(|e| panic!("test database connection string does not parse: {e}"));
    if config.get_dbname().is_none() {
        config.dbname("postgres");
    }
    let (client, connection) = config.connect(NoTls).await.unwrap_or_else(|e| {
        panic!("cannot connect to the test PostgreSQL server ({e}); {NO_SERVER}")
    });
    let connection = tokio::spawn(connection);
    let name = format!("parkd_test_{:016x}", rand::random::<u64>());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e:?}"));
    drop(client);
    let _ = connection.await;

    let mut out = String::new();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        push_pair(&mut out, "host", &hosts.join(","));
    }
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    if !ports.is_empty() {
        push_pair(&mut out, "port", &ports.join(","));
    }
    if let Some(user) = config.get_user() {
        push_pair(&mut out, "user", user);
    }
    if let Some(password) = config.get_password() {
        let password = std::str::from_utf8(password).expect("test database password is not UTF-8");
        push_pair(&mut out, "password", password);
    }
    push_pair(&mut out, "dbname", &name);
    out
}

/// A migrated [`PostgresStore`] on a fresh database (pool of 4, 30 days retention).
pub async fn postgres_store() -> PostgresStore {
    let url = fresh_postgres_url().await;
    PostgresStore::open(&url, 4, 30)
        .await
        .unwrap_or_else(|e| panic!("opening the test PostgreSQL store failed: {e}"))
}

/// A migrated [`SqliteStore`] in a fresh temporary directory; keep the directory alive as
/// long as the store.
pub async fn sqlite_store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let store = SqliteStore::open(&dir.path().join("parkd.sqlite3"))
        .await
        .unwrap_or_else(|e| panic!("opening the test SQLite store failed: {e}"));
    (store, dir)
}

/// A driver account `id` with a placeholder password hash, created at `at`.
pub fn driver(id: &str, at: chrono::DateTime<chrono::Utc>) -> crate::User {
    crate::User {
        id: id.into(),
        email: parkd_core::account::Email::parse(&format!("{id}@example.com"))
            .expect("a valid test e-mail address"),
        password_hash: "x".into(),
        role: parkd_core::account::Role::Driver,
        display_name: String::new(),
        disabled: false,
        created_at: at,
        password_changed_at: at,
    }
}

/// A confirmed car reservation `id` of user `u1` on `spot` of lot `garage-a`, code `C-{id}`.
pub fn car_reservation(
    id: &str,
    spot: &str,
    starts_at: chrono::DateTime<chrono::Utc>,
    ends_at: chrono::DateTime<chrono::Utc>,
) -> crate::ReservationRow {
    crate::ReservationRow {
        id: id.into(),
        code: format!("C-{id}"),
        user_id: "u1".into(),
        vehicle_id: None,
        plate_key: "AB123".into(),
        vehicle_type: parkd_core::vehicle::VehicleType::Car,
        lot: parkd_core::ids::LotId::parse("garage-a").expect("a valid lot id"),
        spot: parkd_core::ids::SpotId::parse(spot).expect("a valid test spot id"),
        starts_at,
        ends_at,
        state: parkd_core::reservation::ReservationState::Confirmed,
        created_at: starts_at,
        updated_at: starts_at,
    }
}
