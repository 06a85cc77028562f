//! The PostgreSQL backend, with TimescaleDB features when the extension is there.
//!
//! Owns: the connection pool (deadpool, `NoTls`), the embedded migrations of
//! `sql/postgres/` and their bookkeeping in `schema_migrations`, the choice between the
//! TimescaleDB branch (`sql/postgres/timescale/`) and the plain one (`sql/postgres/plain/`),
//! telemetry writes with binary `COPY`, and the mapping of PostgreSQL errors to
//! [`StoreError`].
//!
//! Concurrent starts are safe: migrations and the extension setup run under a transaction-level
//! advisory lock.

use std::pin::pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{
    Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, Transaction,
};
use parkd_core::ids::{DeviceId, LotId, SpotId};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::{DbError, SqlState};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{NoTls, Row};
use tracing::{info, warn};

use crate::GarageStore;
use crate::common::{
    DeviceColumns, LotColumns, Migration, SpotColumns, SpotRead, assemble_lot, binding_columns,
    lot_columns, newest_per_device, newest_per_spot, parse_id,
};
use crate::{
    Device, DeviceStatusRow, DeviceStore, HeartbeatRow, SpotLatest, SpotReading, StatusChange,
    Store, StoreError, StoreResult, TelemetryBatch, TelemetryStore,
};
use parkd_core::garage::Lot;

/// The PostgreSQL migrations, in order.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "devices",
        sql: include_str!("../../sql/postgres/0001_devices.sql"),
    },
    Migration {
        version: 2,
        name: "telemetry",
        sql: include_str!("../../sql/postgres/0002_telemetry.sql"),
    },
    Migration {
        version: 3,
        name: "brin_time_indexes",
        sql: include_str!("../../sql/postgres/0003_brin_time_indexes.sql"),
    },
    Migration {
        version: 4,
        name: "garage",
        sql: include_str!("../../sql/postgres/0004_garage.sql"),
    },
    Migration {
        version: 5,
        name: "accounts",
        sql: include_str!("../../sql/postgres/0005_accounts.sql"),
    },
    Migration {
        version: 6,
        name: "reservations",
        sql: include_str!("../../sql/postgres/0006_reservations.sql"),
    },
    Migration {
        version: 7,
        name: "idempotency",
        sql: include_str!("../../sql/postgres/0007_idempotency.sql"),
    },
    Migration {
        version: 8,
        name: "gates",
        sql: include_str!("../../sql/postgres/0008_gates.sql"),
    },
    Migration {
        version: 9,
        name: "operator_actions",
        sql: include_str!("../../sql/postgres/0009_operator_actions.sql"),
    },
    Migration {
        version: 10,
        name: "payments",
        sql: include_str!("../../sql/postgres/0010_payments.sql"),
    },
    Migration {
        version: 11,
        name: "payments_in_flight",
        sql: include_str!("../../sql/postgres/0011_payments_in_flight.sql"),
    },
    Migration {
        version: 12,
        name: "cheaper_double_booking_check",
        sql: include_str!("../../sql/postgres/0012_cheaper_double_booking_check.sql"),
    },
];

mod accounts;
mod batch;
mod gates;
mod idempotency;
mod payments;
mod reservations;

/// Hypertables, compression, retention and the hourly continuous aggregate.
const TIMESCALE_SETUP: &str = include_str!("../../sql/postgres/timescale/0001_setup.sql");

/// The plain-PostgreSQL stand-in for the continuous aggregate.
const PLAIN_SETUP: &str = include_str!("../../sql/postgres/plain/hourly_occupancy.sql");

/// Advisory lock key serializing schema changes between processes ("parkd" + 1).
const SCHEMA_LOCK: i64 = 0x7061_726b_6400_0001;

const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    bigint PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

const COPY_READINGS: &str = "COPY spot_readings (received_at, device_ts, lot_id, spot_id, \
     device_id, occupied, seq, battery_mv, rssi) FROM STDIN (FORMAT binary)";
const READING_TYPES: [Type; 9] = [
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BOOL,
    Type::INT8,
    Type::INT4,
    Type::INT2,
];

const COPY_HEARTBEATS: &str = "COPY device_heartbeats (received_at, device_ts, device_id, \
     battery_mv, rssi, uptime_s, firmware) FROM STDIN (FORMAT binary)";
const HEARTBEAT_TYPES: [Type; 7] = [
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::INT4,
    Type::INT2,
    Type::INT8,
    Type::TEXT,
];

const COPY_STATUSES: &str =
    "COPY device_status_changes (received_at, device_id, online) FROM STDIN (FORMAT binary)";
const STATUS_TYPES: [Type; 3] = [Type::TIMESTAMPTZ, Type::TEXT, Type::BOOL];

const UPSERT_SPOT_LATEST: &str = "INSERT INTO spot_latest (lot_id, spot_id, occupied, received_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], $4::timestamptz[])
    ON CONFLICT (lot_id, spot_id) DO UPDATE
    SET occupied = excluded.occupied, received_at = excluded.received_at
    WHERE excluded.received_at >= spot_latest.received_at";

const UPSERT_DEVICE_STATUS: &str = "INSERT INTO device_status (device_id, online, changed_at)
    SELECT * FROM unnest($1::text[], $2::bool[], $3::timestamptz[])
    ON CONFLICT (device_id) DO UPDATE
    SET online = excluded.online, changed_at = excluded.changed_at
    WHERE excluded.changed_at >= device_status.changed_at";

const DEVICE_COLUMNS: &str =
    "device_id, kind, lot_id, spot_id, gate_id, secret_sha256, disabled, created_at";

/// A store on a PostgreSQL server (TimescaleDB when available).
pub struct PostgresStore {
    pool: Pool,
    timescale: bool,
    writer: Arc<batch::ReservationWriter>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("timescale", &self.timescale)
            .field("pool_size", &status.max_size)
            .field("pool_available", &status.available)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` (a libpq-style URL or key/value string), migrates the schema and
    /// sets up TimescaleDB when the extension is available. `retention_days` is the
    /// TimescaleDB retention policy for raw telemetry; 0 keeps it forever.
    pub async fn open(url: &str, pool_size: usize, retention_days: u32) -> StoreResult<Self> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Database(format!("invalid database url: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("parkd");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Database(format!("building the connection pool: {e}")))?;
        let mut store = PostgresStore {
            writer: batch::ReservationWriter::new(
                pool.clone(),
                batch::BatchLimits::for_pool(pool_size),
            ),
            pool,
            timescale: false,
        };
        store.migrate(MIGRATIONS).await?;
        store.timescale = store.setup_time_series(retention_days).await?;
        Ok(store)
    }

    /// Writes readings with binary `COPY` in one transaction and nothing else (no latest-state
    /// upsert): the benchmark's measure of what PostgreSQL itself sustains.
    pub async fn copy_readings_raw(&self, rows: &[SpotReading]) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        copy_readings(&tx, rows).await?;
        tx.commit().await.map_err(pg_err)
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Client> {
        self.pool.get().await.map_err(pool_err)
    }

    /// Applies the migrations not yet recorded, each in its own transaction.
    async fn migrate(&self, migrations: &[Migration]) -> StoreResult<()> {
        let mut client = self.client().await?;
        {
            let tx = client.transaction().await.map_err(pg_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .await
                .map_err(pg_err)?;
            tx.batch_execute(CREATE_SCHEMA_MIGRATIONS)
                .await
                .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)?;
        }
        for migration in migrations {
            let failed = |e: tokio_postgres::Error| StoreError::Migration {
                version: migration.version,
                message: describe(&e),
            };
            let tx = client.transaction().await.map_err(pg_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .await
                .map_err(pg_err)?;
            let applied = tx
                .query_opt(
                    "SELECT 1 FROM schema_migrations WHERE version = $1",
                    &[&migration.version],
                )
                .await
                .map_err(pg_err)?
                .is_some();
            if applied {
                tx.commit().await.map_err(pg_err)?;
                continue;
            }
            // On any error the transaction is dropped, which rolls it back.
            tx.batch_execute(migration.sql).await.map_err(failed)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .await
            .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
            info!(
                version = migration.version,
                name = migration.name,
                "applied PostgreSQL migration"
            );
        }
        Ok(())
    }

    /// Runs the TimescaleDB setup when the extension is available and can be created, the
    /// plain setup otherwise. Returns whether TimescaleDB is active.
    async fn setup_time_series(&self, retention_days: u32) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let available = client
            .query_opt(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'",
                &[],
            )
            .await
            .map_err(pg_err)?
            .is_some();
        let mut tx = client.transaction().await.map_err(pg_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(pg_err)?;
        let mut timescale = false;
        if available {
            // Listed is not loadable: the library must be in shared_preload_libraries and we
            // need the privilege to create it. Try, and fall back to plain PostgreSQL.
            let savepoint = tx.savepoint("parkd_timescaledb").await.map_err(pg_err)?;
            match savepoint
                .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                .await
            {
                Ok(()) => {
                    savepoint.commit().await.map_err(pg_err)?;
                    timescale = true;
                }
                Err(e) => {
                    savepoint.rollback().await.map_err(pg_err)?;
                    warn!(
                        error = %describe(&e),
                        "timescaledb is available but could not be created; using plain PostgreSQL"
                    );
                }
            }
        }
        let setup_failed = |e: tokio_postgres::Error| {
            StoreError::Database(format!(
                "{} setup failed: {}",
                if timescale {
                    "TimescaleDB"
                } else {
                    "plain PostgreSQL"
                },
                describe(&e)
            ))
        };
        if timescale {
            tx.execute(
                "SELECT set_config('parkd.retention_days', $1, true)",
                &[&retention_days.to_string()],
            )
            .await
            .map_err(pg_err)?;
            tx.batch_execute(TIMESCALE_SETUP)
                .await
                .map_err(setup_failed)?;
        } else {
            tx.batch_execute(PLAIN_SETUP).await.map_err(setup_failed)?;
        }
        tx.commit().await.map_err(setup_failed)?;
        if timescale {
            info!(
                retention_days,
                "TimescaleDB branch: hypertables, compression after 7 days, retention policy \
                 and hourly_occupancy continuous aggregate"
            );
        } else {
            info!(
                "plain PostgreSQL branch: ordinary indexes, hourly_occupancy view, retention by \
                 enforce_retention"
            );
        }
        Ok(timescale)
    }
}

#[async_trait]
impl DeviceStore for PostgresStore {
    async fn upsert_device(&self, device: &Device) -> StoreResult<()> {
        let (lot, spot, gate) = binding_columns(&device.binding);
        let secret = device.secret_sha256.as_ref().map(|s| s.as_slice());
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO devices (device_id, kind, lot_id, spot_id, gate_id, secret_sha256, \
                 disabled, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (device_id) DO UPDATE SET kind = excluded.kind,
                 lot_id = excluded.lot_id, spot_id = excluded.spot_id,
                 gate_id = excluded.gate_id, secret_sha256 = excluded.secret_sha256",
            )
            .await
            .map_err(pg_err)?;
        client
            .execute(
                &statement,
                &[
                    &device.id.as_str(),
                    &device.binding.kind().as_str(),
                    &lot,
                    &spot,
                    &gate,
                    &secret,
                    &device.disabled,
                    &device.created_at,
                ],
            )
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn device(&self, id: &DeviceId) -> StoreResult<Option<Device>> {
        let client = self.client().await?;
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = $1");
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let row = client
            .query_opt(&statement, &[&id.as_str()])
            .await
            .map_err(pg_err)?;
        row.as_ref().map(device_from_row).transpose()
    }

    async fn devices(&self) -> StoreResult<Vec<Device>> {
        let client = self.client().await?;
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY device_id");
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let rows = client.query(&statement, &[]).await.map_err(pg_err)?;
        rows.iter().map(device_from_row).collect()
    }

    async fn set_device_disabled(&self, id: &DeviceId, disabled: bool) -> StoreResult<bool> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("UPDATE devices SET disabled = $2 WHERE device_id = $1")
            .await
            .map_err(pg_err)?;
        let changed = client
            .execute(&statement, &[&id.as_str(), &disabled])
            .await
            .map_err(pg_err)?;
        Ok(changed > 0)
    }

    async fn delete_device(&self, id: &DeviceId) -> StoreResult<bool> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("DELETE FROM devices WHERE device_id = $1")
            .await
            .map_err(pg_err)?;
        let deleted = client
            .execute(&statement, &[&id.as_str()])
            .await
            .map_err(pg_err)?;
        Ok(deleted > 0)
    }
}

#[async_trait]
impl TelemetryStore for PostgresStore {
    async fn write_batch(&self, batch: &TelemetryBatch) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        copy_readings(&tx, &batch.readings).await?;
        copy_heartbeats(&tx, &batch.heartbeats).await?;
        copy_statuses(&tx, &batch.statuses).await?;
        upsert_spot_latest(&tx, &batch.readings).await?;
        upsert_device_status(&tx, &batch.statuses).await?;
        tx.commit().await.map_err(pg_err)
    }

    async fn latest_spot_states(&self) -> StoreResult<Vec<SpotLatest>> {
        const T: &str = "spot_latest";
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT lot_id, spot_id, occupied, received_at FROM spot_latest \
                 ORDER BY lot_id, spot_id",
                &[],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|row| {
                Ok(SpotLatest {
                    lot: parse_id(T, "lot_id", col(row, 0, T)?, LotId::parse)?,
                    spot: parse_id(T, "spot_id", col(row, 1, T)?, SpotId::parse)?,
                    occupied: col(row, 2, T)?,
                    received_at: col(row, 3, T)?,
                })
            })
            .collect()
    }

    async fn device_statuses(&self) -> StoreResult<Vec<DeviceStatusRow>> {
        const T: &str = "device_status";
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT device_id, online, changed_at FROM device_status ORDER BY device_id",
                &[],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|row| {
                Ok(DeviceStatusRow {
                    device: parse_id(T, "device_id", col(row, 0, T)?, DeviceId::parse)?,
                    online: col(row, 1, T)?,
                    changed_at: col(row, 2, T)?,
                })
            })
            .collect()
    }

    async fn spot_readings(
        &self,
        lot: &LotId,
        spot: &SpotId,
        limit: u32,
    ) -> StoreResult<Vec<SpotReading>> {
        const T: &str = "spot_readings";
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT received_at, device_ts, lot_id, spot_id, device_id, occupied, seq, \
                 battery_mv, rssi FROM spot_readings WHERE lot_id = $1 AND spot_id = $2 \
                 ORDER BY received_at DESC LIMIT $3",
            )
            .await
            .map_err(pg_err)?;
        let rows = client
            .query(
                &statement,
                &[&lot.as_str(), &spot.as_str(), &i64::from(limit)],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|row| {
                Ok(SpotReading {
                    received_at: col(row, 0, T)?,
                    device_ts: col(row, 1, T)?,
                    lot: parse_id(T, "lot_id", col(row, 2, T)?, LotId::parse)?,
                    spot: parse_id(T, "spot_id", col(row, 3, T)?, SpotId::parse)?,
                    device: parse_id(T, "device_id", col(row, 4, T)?, DeviceId::parse)?,
                    occupied: col(row, 5, T)?,
                    seq: col(row, 6, T)?,
                    battery_mv: col(row, 7, T)?,
                    rssi: col(row, 8, T)?,
                })
            })
            .collect()
    }

    async fn count_readings(&self) -> StoreResult<u64> {
        const T: &str = "spot_readings";
        let client = self.client().await?;
        let row = client
            .query_one("SELECT count(*) FROM spot_readings", &[])
            .await
            .map_err(pg_err)?;
        let count: i64 = col(&row, 0, T)?;
        u64::try_from(count).map_err(|_| StoreError::Corrupt {
            table: T,
            message: format!("negative count {count}"),
        })
    }

    async fn enforce_retention(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        if self.timescale {
            return Ok(0);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let mut deleted = 0;
        for table in [
            "spot_readings",
            "device_heartbeats",
            "device_status_changes",
        ] {
            deleted += tx
                .execute(
                    &format!("DELETE FROM {table} WHERE received_at < $1"),
                    &[&before],
                )
                .await
                .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(deleted)
    }
}

/// Spots upserted per statement by [`PostgresStore::put_lot`] (as arrays, through `UNNEST`).
const SPOT_CHUNK: usize = 5_000;

#[async_trait]
impl GarageStore for PostgresStore {
    async fn put_lot(&self, lot: &Lot) -> StoreResult<i64> {
        let (columns, spots) = lot_columns(lot)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let version: i64 = tx
            .query_one(
                "INSERT INTO lots (lot_id, name, address, lat, lon, timezone, opening_hours,
                                   levels, zones, version, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, now())
                 ON CONFLICT (lot_id) DO UPDATE SET
                    name = excluded.name, address = excluded.address, lat = excluded.lat,
                    lon = excluded.lon, timezone = excluded.timezone,
                    opening_hours = excluded.opening_hours, levels = excluded.levels,
                    zones = excluded.zones, version = lots.version + 1, updated_at = now()
                 RETURNING version",
                &[
                    &columns.lot_id,
                    &columns.name,
                    &columns.address,
                    &columns.lat,
                    &columns.lon,
                    &columns.timezone,
                    &columns.opening_hours,
                    &columns.levels,
                    &columns.zones,
                ],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        let ids: Vec<&str> = spots.iter().map(|s| s.spot_id.as_str()).collect();
        tx.execute(
            "DELETE FROM spots WHERE lot_id = $1 AND NOT (spot_id = ANY($2))",
            &[&columns.lot_id, &ids],
        )
        .await
        .map_err(pg_err)?;
        let upsert = tx
            .prepare(
                "INSERT INTO spots (lot_id, spot_id, position, label, level_id, zone_id, kind,
                                    x, y, w, h, rotation, walk_m, out_of_service)
                 SELECT $1, * FROM UNNEST($2::text[], $3::int4[], $4::text[], $5::text[],
                                          $6::text[], $7::text[], $8::float8[], $9::float8[],
                                          $10::float8[], $11::float8[], $12::float8[],
                                          $13::float8[], $14::bool[])
                 ON CONFLICT (lot_id, spot_id) DO UPDATE SET
                    position = excluded.position, label = excluded.label,
                    level_id = excluded.level_id, zone_id = excluded.zone_id,
                    kind = excluded.kind, x = excluded.x, y = excluded.y, w = excluded.w,
                    h = excluded.h, rotation = excluded.rotation, walk_m = excluded.walk_m,
                    out_of_service = excluded.out_of_service",
            )
            .await
            .map_err(pg_err)?;
        for (chunk_index, chunk) in spots.chunks(SPOT_CHUNK).enumerate() {
            let base = chunk_index * SPOT_CHUNK;
            let position: Vec<i32> = (0..chunk.len())
                .map(|i| i32::try_from(base + i).unwrap_or(i32::MAX))
                .collect();
            let spot_id: Vec<&str> = chunk.iter().map(|s| s.spot_id.as_str()).collect();
            let label: Vec<&str> = chunk.iter().map(|s| s.label.as_str()).collect();
            let level: Vec<&str> = chunk.iter().map(|s| s.level_id.as_str()).collect();
            let zone: Vec<Option<&str>> = chunk.iter().map(|s| s.zone_id.as_deref()).collect();
            let kind: Vec<&str> = chunk.iter().map(|s| s.kind).collect();
            let x: Vec<f64> = chunk.iter().map(|s| s.x).collect();
            let y: Vec<f64> = chunk.iter().map(|s| s.y).collect();
            let w: Vec<f64> = chunk.iter().map(|s| s.w).collect();
            let h: Vec<f64> = chunk.iter().map(|s| s.h).collect();
            let rotation: Vec<f64> = chunk.iter().map(|s| s.rotation).collect();
            let walk: Vec<Option<f64>> = chunk.iter().map(|s| s.walk_m).collect();
            let oos: Vec<bool> = chunk.iter().map(|s| s.out_of_service).collect();
            tx.execute(
                &upsert,
                &[
                    &columns.lot_id,
                    &spot_id,
                    &position,
                    &label,
                    &level,
                    &zone,
                    &kind,
                    &x,
                    &y,
                    &w,
                    &h,
                    &rotation,
                    &walk,
                    &oos,
                ],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(version)
    }

    async fn lot(&self, id: &LotId) -> StoreResult<Option<Lot>> {
        Ok(self.read_lots(Some(id.as_str())).await?.pop())
    }

    async fn lots(&self) -> StoreResult<Vec<Lot>> {
        self.read_lots(None).await
    }

    async fn lot_versions(&self) -> StoreResult<Vec<(LotId, i64)>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT lot_id, version FROM lots ORDER BY lot_id", &[])
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|row| {
                let raw: String = col(row, 0, "lots")?;
                Ok((
                    parse_id("lots", "lot_id", &raw, LotId::parse)?,
                    col(row, 1, "lots")?,
                ))
            })
            .collect()
    }

    async fn delete_lot(&self, id: &LotId) -> StoreResult<bool> {
        let client = self.client().await?;
        let deleted = client
            .execute("DELETE FROM lots WHERE lot_id = $1", &[&id.as_str()])
            .await
            .map_err(pg_err)?;
        Ok(deleted > 0)
    }
}

impl PostgresStore {
    /// One lot (`only`) or all of them, whole, read in one repeatable-read snapshot.
    async fn read_lots(&self, only: Option<&str>) -> StoreResult<Vec<Lot>> {
        const T: &str = "lots";
        const S: &str = "spots";
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_err)?;
        let headers = tx
            .query(
                "SELECT lot_id, name, address, lat, lon, timezone, opening_hours, levels, zones
                 FROM lots WHERE $1::text IS NULL OR lot_id = $1 ORDER BY lot_id",
                &[&only],
            )
            .await
            .map_err(pg_err)?;
        let mut lots = Vec::with_capacity(headers.len());
        for row in headers {
            let header = LotColumns {
                lot_id: col(&row, 0, T)?,
                name: col(&row, 1, T)?,
                address: col(&row, 2, T)?,
                lat: col(&row, 3, T)?,
                lon: col(&row, 4, T)?,
                timezone: col(&row, 5, T)?,
                opening_hours: col(&row, 6, T)?,
                levels: col(&row, 7, T)?,
                zones: col(&row, 8, T)?,
            };
            let rows = tx
                .query(
                    "SELECT spot_id, label, level_id, zone_id, kind, x, y, w, h, rotation,
                            walk_m, out_of_service
                     FROM spots WHERE lot_id = $1 ORDER BY position",
                    &[&header.lot_id],
                )
                .await
                .map_err(pg_err)?;
            let mut spots = Vec::with_capacity(rows.len());
            for row in rows {
                spots.push(SpotRead {
                    kind: col(&row, 4, S)?,
                    columns: SpotColumns {
                        spot_id: col(&row, 0, S)?,
                        label: col(&row, 1, S)?,
                        level_id: col(&row, 2, S)?,
                        zone_id: col(&row, 3, S)?,
                        kind: "",
                        x: col(&row, 5, S)?,
                        y: col(&row, 6, S)?,
                        w: col(&row, 7, S)?,
                        h: col(&row, 8, S)?,
                        rotation: col(&row, 9, S)?,
                        walk_m: col(&row, 10, S)?,
                        out_of_service: col(&row, 11, S)?,
                    },
                });
            }
            lots.push(assemble_lot(header, spots)?);
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(lots)
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(pg_err)?;
        Ok(())
    }

    async fn settle(&self) {
        self.writer.settle().await;
    }

    fn reservation_batches(&self) -> Option<crate::ReservationBatches> {
        Some(self.writer.stats())
    }

    fn timescale(&self) -> bool {
        self.timescale
    }
}

async fn copy_readings(tx: &Transaction<'_>, rows: &[SpotReading]) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let sink = tx.copy_in(COPY_READINGS).await.map_err(pg_err)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &READING_TYPES));
    for r in rows {
        writer
            .as_mut()
            .write(&[
                &r.received_at,
                &r.device_ts,
                &r.lot.as_str(),
                &r.spot.as_str(),
                &r.device.as_str(),
                &r.occupied,
                &r.seq,
                &r.battery_mv,
                &r.rssi,
            ])
            .await
            .map_err(pg_err)?;
    }
    writer.finish().await.map_err(pg_err)?;
    Ok(())
}

async fn copy_heartbeats(tx: &Transaction<'_>, rows: &[HeartbeatRow]) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let sink = tx.copy_in(COPY_HEARTBEATS).await.map_err(pg_err)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &HEARTBEAT_TYPES));
    for h in rows {
        writer
            .as_mut()
            .write(&[
                &h.received_at,
                &h.device_ts,
                &h.device.as_str(),
                &h.battery_mv,
                &h.rssi,
                &h.uptime_s,
                &h.firmware,
            ])
            .await
            .map_err(pg_err)?;
    }
    writer.finish().await.map_err(pg_err)?;
    Ok(())
}

async fn copy_statuses(tx: &Transaction<'_>, rows: &[StatusChange]) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let sink = tx.copy_in(COPY_STATUSES).await.map_err(pg_err)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &STATUS_TYPES));
    for s in rows {
        writer
            .as_mut()
            .write(&[&s.received_at, &s.device.as_str(), &s.online])
            .await
            .map_err(pg_err)?;
    }
    writer.finish().await.map_err(pg_err)?;
    Ok(())
}

async fn upsert_spot_latest(tx: &Transaction<'_>, readings: &[SpotReading]) -> StoreResult<()> {
    let newest = newest_per_spot(readings);
    if newest.is_empty() {
        return Ok(());
    }
    let lots: Vec<&str> = newest.iter().map(|r| r.lot.as_str()).collect();
    let spots: Vec<&str> = newest.iter().map(|r| r.spot.as_str()).collect();
    let occupied: Vec<bool> = newest.iter().map(|r| r.occupied).collect();
    let at: Vec<DateTime<Utc>> = newest.iter().map(|r| r.received_at).collect();
    let statement = tx
        .prepare_cached(UPSERT_SPOT_LATEST)
        .await
        .map_err(pg_err)?;
    tx.execute(&statement, &[&lots, &spots, &occupied, &at])
        .await
        .map_err(pg_err)?;
    Ok(())
}

async fn upsert_device_status(tx: &Transaction<'_>, statuses: &[StatusChange]) -> StoreResult<()> {
    let newest = newest_per_device(statuses);
    if newest.is_empty() {
        return Ok(());
    }
    let devices: Vec<&str> = newest.iter().map(|s| s.device.as_str()).collect();
    let online: Vec<bool> = newest.iter().map(|s| s.online).collect();
    let at: Vec<DateTime<Utc>> = newest.iter().map(|s| s.received_at).collect();
    let statement = tx
        .prepare_cached(UPSERT_DEVICE_STATUS)
        .await
        .map_err(pg_err)?;
    tx.execute(&statement, &[&devices, &online, &at])
        .await
        .map_err(pg_err)?;
    Ok(())
}

fn device_from_row(row: &Row) -> StoreResult<Device> {
    const T: &str = "devices";
    DeviceColumns {
        device_id: col(row, 0, T)?,
        kind: col(row, 1, T)?,
        lot_id: col(row, 2, T)?,
        spot_id: col(row, 3, T)?,
        gate_id: col(row, 4, T)?,
        secret_sha256: col(row, 5, T)?,
        disabled: col(row, 6, T)?,
        created_at: col(row, 7, T)?,
    }
    .into_device()
}

/// Reads column `idx`, reporting a type mismatch or unexpected NULL as corruption.
fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize, table: &'static str) -> StoreResult<T> {
    row.try_get(idx).map_err(|e| StoreError::Corrupt {
        table,
        message: format!("column {idx}: {}", describe(&e)),
    })
}

/// Maps a pool error: failing to get a connection means the database is unavailable.
fn pool_err(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => StoreError::Unavailable(describe(&e)),
        PoolError::Timeout(kind) => {
            StoreError::Unavailable(format!("timed out waiting for a connection ({kind:?})"))
        }
        PoolError::Closed => StoreError::Unavailable("connection pool closed".to_owned()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Maps a PostgreSQL error to a [`StoreError`].
pub(crate) fn pg_err(e: tokio_postgres::Error) -> StoreError {
    let message = describe(&e);
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION
            || *code == SqlState::FOREIGN_KEY_VIOLATION
            || *code == SqlState::EXCLUSION_VIOLATION
        {
            return StoreError::Conflict(message);
        }
        let class = &code.code()[..2.min(code.code().len())];
        // 08 connection exception, 28 authorization, 53 insufficient resources,
        // 57 operator intervention (shutdown), 3D database does not exist.
        if matches!(class, "08" | "28" | "53" | "57" | "3D") {
            return StoreError::Unavailable(message);
        }
        return StoreError::Database(message);
    }
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        StoreError::Unavailable(message)
    } else {
        StoreError::Database(message)
    }
}

/// A readable message: tokio-postgres' own `Display` hides the server's message.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => describe_db(db),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

fn describe_db(db: &DbError) -> String {
    let mut message = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    if let Some(detail) = db.detail() {
        message.push_str(" (");
        message.push_str(detail);
        message.push(')');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unreachable_server_is_unavailable() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let err = PostgresStore::open("host=127.0.0.1 port=1 user=parkd dbname=parkd", 1, 30)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn bad_url_is_refused_without_echoing_it() {
        let err = PostgresStore::open("postgres://u:s3cret@host:notaport/db", 1, 30)
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    /// A failing migration reports its version and leaves the database at the previous one,
    /// with nothing of the failed migration applied.
    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn failed_migration_leaves_previous_version() {
        let url = crate::testing::fresh_postgres_url().await;
        let store = PostgresStore::open(&url, 2, 30).await.unwrap();
        let last = MIGRATIONS.last().map_or(0, |migration| migration.version);
        let mut broken = MIGRATIONS.to_vec();
        broken.push(Migration {
            version: last + 1,
            name: "broken",
            sql: "CREATE TABLE half_done (x int); SELECT no_such_function();",
        });
        let err = store.migrate(&broken).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { version, .. } if version == last + 1),
            "{err:?}"
        );
        let client = store.client().await.unwrap();
        let max: i64 = client
            .query_one("SELECT max(version) FROM schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(max, last);
        let half_done: Option<String> = client
            .query_one("SELECT to_regclass('half_done')::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(half_done, None);
        // Still usable, and re-running the good migrations is a no-op.
        store.migrate(MIGRATIONS).await.unwrap();
        store.ping().await.unwrap();
    }
}
