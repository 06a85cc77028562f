//! Fresh PostgreSQL databases for each run.
//!
//! - With `--database-url`: that server (and that role, which needs CREATEDB) gets a database
//!   `parkd_bench_<n>` per run, dropped at the end of the run.
//! - Without: `parkd_store::testing::fresh_postgres_url`, which reads libpq's `PG*` variables
//!   as `pg_virtualenv` sets them; those databases live as long as the throwaway cluster.

use std::str::FromStr;

use anyhow::{Context, anyhow, bail};
use tokio_postgres::NoTls;

/// Where the fresh databases come from.
#[derive(Debug, Clone)]
pub(crate) enum PgServer {
    /// libpq's environment (pg_virtualenv).
    Env,
    /// A URL or key/value connection string given on the command line.
    Url(String),
}

/// A database made for one run.
#[derive(Debug)]
pub(crate) struct FreshDb {
    /// Connection string of the new database (may hold a password: never print it).
    pub(crate) url: String,
    /// Its name, when this harness must drop it.
    drop_name: Option<String>,
}

impl PgServer {
    pub(crate) fn new(url: Option<String>) -> Self {
        match url {
            Some(url) if !url.trim().is_empty() => PgServer::Url(url),
            _ => PgServer::Env,
        }
    }

    /// Fails early, with a useful message, when no server is configured.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        if let PgServer::Env = self {
            let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
            if !(set("PGHOST") || set("PGPORT") || set("PARKD_TEST_DATABASE_URL")) {
                bail!(
                    "--store postgres needs a server: pass --database-url, or run under \
                     pg_virtualenv (`pg_virtualenv -v 15 -- cargo run --release -p parkd-bench \
                     -- --store postgres`), which sets PGHOST/PGPORT/PGUSER/PGPASSWORD"
                );
            }
        }
        Ok(())
    }

    /// Creates an empty database.
    pub(crate) async fn fresh(&self) -> anyhow::Result<FreshDb> {
        match self {
            PgServer::Env => {
                // It panics with a clear message when the server is unreachable: keep that
                // message and turn it into an error.
                let url = tokio::spawn(parkd_store::testing::fresh_postgres_url())
                    .await
                    .map_err(|e| anyhow!("creating a fresh PostgreSQL database failed: {e}"))?;
                Ok(FreshDb {
                    url,
                    drop_name: None,
                })
            }
            PgServer::Url(url) => {
                let name = format!(
                    "parkd_bench_{}_{}",
                    std::process::id(),
                    chrono::Utc::now().timestamp_micros()
                );
                let client = admin_client(url).await?;
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .with_context(|| format!("CREATE DATABASE {name} (the role needs CREATEDB)"))?;
                Ok(FreshDb {
                    url: with_dbname(url, &name),
                    drop_name: Some(name),
                })
            }
        }
    }

    /// Drops a database made by [`PgServer::fresh`], if this harness owns it.
    pub(crate) async fn dispose(&self, db: FreshDb) -> anyhow::Result<()> {
        if let (PgServer::Url(url), Some(name)) = (self, db.drop_name) {
            let client = admin_client(url).await?;
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .with_context(|| format!("DROP DATABASE {name}"))?;
        }
        Ok(())
    }
}

/// A connection to the server's database named in `url` (or `postgres`).
async fn admin_client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| anyhow!("--database-url does not parse: {e}"))?;
    if config.get_dbname().is_none() {
        config.dbname("postgres");
    }
    if config.get_application_name().is_none() {
        config.application_name("parkd-bench");
    }
    let (client, connection) = config
        .connect(NoTls)
        .await
        .context("connecting to the PostgreSQL server of --database-url")?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "admin connection ended");
        }
    });
    Ok(client)
}

/// `url` pointing at database `name`: a later `dbname` overrides an earlier one in both the
/// URL form (query parameters are applied after the path) and the key/value form.
fn with_dbname(url: &str, name: &str) -> String {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}dbname={name}")
    } else {
        format!("{url} dbname={name}")
    }
}

/// `SHOW server_version` of the database at `url`.
pub(crate) async fn server_version(url: &str) -> anyhow::Result<String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to read the server version")?;
    let task = tokio::spawn(connection);
    let row = client.query_one("SHOW server_version", &[]).await?;
    let version: String = row.try_get(0)?;
    drop(client);
    let _ = task.await;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::with_dbname;

    #[test]
    fn the_fresh_name_wins_in_both_forms() {
        for (base, expected) in [
            ("postgres://u:p@h:5432/app", "parkd_bench_1"),
            ("postgresql://u@h/app?sslmode=disable", "parkd_bench_1"),
            ("postgres://u@h", "parkd_bench_1"),
            ("host=h user=u dbname=app", "parkd_bench_1"),
            ("host=h user=u", "parkd_bench_1"),
        ] {
            let url = with_dbname(base, "parkd_bench_1");
            let config = tokio_postgres::Config::from_str(&url).expect("parses");
            assert_eq!(config.get_dbname(), Some(expected), "{base}");
        }
    }
}
