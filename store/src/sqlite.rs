//! The embedded SQLite backend.
//!
//! Owns: the database file (WAL, `synchronous=NORMAL`, `busy_timeout`, foreign keys on), the
//! embedded migrations of `sql/sqlite/` and their bookkeeping in `schema_migrations`, and the
//! mapping of SQLite errors to [`StoreError`].
//!
//! Every call runs on a blocking thread (`spawn_blocking`), never on an async worker. Writes
//! go through one connection behind a mutex (SQLite has one writer anyway); reads use a small
//! pool of read-only connections, which WAL lets run beside the writer. Timestamps are stored
//! as integer Unix microseconds, booleans as 0/1.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parkd_core::ids::{DeviceId, LotId, SpotId};
use rusqlite::types::FromSql;
use rusqlite::{Connection, ErrorCode, OpenFlags, Row, TransactionBehavior, ffi, params};
use tracing::info;

use crate::common::{
    DeviceColumns, LotColumns, Migration, SpotColumns, SpotRead, assemble_lot, binding_columns,
    lot_columns, newest_per_device, newest_per_spot, parse_id,
};
use crate::{
    Device, DeviceStatusRow, DeviceStore, GarageStore, SpotLatest, SpotReading, Store, StoreError,
    StoreResult, TelemetryBatch, TelemetryStore,
};
use parkd_core::garage::Lot;

/// The SQLite migrations, in order.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "devices",
        sql: include_str!("../../sql/sqlite/0001_devices.sql"),
    },
    Migration {
        version: 2,
        name: "telemetry",
        sql: include_str!("../../sql/sqlite/0002_telemetry.sql"),
    },
    Migration {
        version: 3,
        name: "garage",
        sql: include_str!("../../sql/sqlite/0003_garage.sql"),
    },
    Migration {
        version: 4,
        name: "accounts",
        sql: include_str!("../../sql/sqlite/0004_accounts.sql"),
    },
    Migration {
        version: 5,
        name: "reservations",
        sql: include_str!("../../sql/sqlite/0005_reservations.sql"),
    },
    Migration {
        version: 6,
        name: "idempotency",
        sql: include_str!("../../sql/sqlite/0006_idempotency.sql"),
    },
    Migration {
        version: 7,
        name: "gates",
        sql: include_str!("../../sql/sqlite/0007_gates.sql"),
    },
    Migration {
        version: 8,
        name: "operator_actions",
        sql: include_str!("../../sql/sqlite/0008_operator_actions.sql"),
    },
    Migration {
        version: 9,
        name: "payments",
        sql: include_str!("../../sql/sqlite/0009_payments.sql"),
    },
    Migration {
        version: 10,
        name: "payments_in_flight",
        sql: include_str!("../../sql/sqlite/0010_payments_in_flight.sql"),
    },
];

mod accounts;
mod gates;
mod idempotency;
mod payments;
mod reservations;

const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
) STRICT";

/// How long a connection waits for another process' lock before reporting busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 4;

const DEVICE_COLUMNS: &str =
    "device_id, kind, lot_id, spot_id, gate_id, secret_sha256, disabled, created_at";

/// A store in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it and its parent directories if missing) the database at `path` and
    /// brings its schema up to date.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let path = path.to_path_buf();
        blocking(move || {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Unavailable(format!("creating {}: {e}", parent.display()))
                })?;
            }
            let mut writer = open_writer(&path)?;
            migrate(&mut writer, MIGRATIONS)?;
            Ok(SqliteStore {
                inner: Arc::new(Inner {
                    path,
                    writer: Mutex::new(writer),
                    readers: Mutex::new(Vec::new()),
                }),
            })
        })
        .await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the writer connection, on a blocking thread.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || f(&mut lock(&inner.writer))).await
    }

    /// Runs `f` on a read-only connection, on a blocking thread.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let idle = lock(&inner.readers).pop();
            let conn = match idle {
                Some(conn) => conn,
                None => open_reader(&inner.path)?,
            };
            let result = f(&conn);
            let mut idle = lock(&inner.readers);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await
    }
}

#[async_trait]
impl DeviceStore for SqliteStore {
    async fn upsert_device(&self, device: &Device) -> StoreResult<()> {
        let device = device.clone();
        self.write(move |conn| {
            let (lot, spot, gate) = binding_columns(&device.binding);
            let mut statement = conn
                .prepare_cached(
                    "INSERT INTO devices (device_id, kind, lot_id, spot_id, gate_id, \
                     secret_sha256, disabled, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (device_id) DO UPDATE SET kind = excluded.kind,
                     lot_id = excluded.lot_id, spot_id = excluded.spot_id,
                     gate_id = excluded.gate_id, secret_sha256 = excluded.secret_sha256",
                )
                .map_err(sq_err)?;
            statement
                .execute(params![
                    device.id.as_str(),
                    device.binding.kind().as_str(),
                    lot,
                    spot,
                    gate,
                    device.secret_sha256.as_ref().map(|s| s.as_slice()),
                    device.disabled,
                    device.created_at.timestamp_micros(),
                ])
                .map_err(sq_err)?;
            Ok(())
        })
        .await
    }

    async fn device(&self, id: &DeviceId) -> StoreResult<Option<Device>> {
        let id = id.clone();
        self.read(move |conn| {
            let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = ?1");
            let mut statement = conn.prepare_cached(&sql).map_err(sq_err)?;
            let mut rows = statement.query([id.as_str()]).map_err(sq_err)?;
            match rows.next().map_err(sq_err)? {
                Some(row) => Ok(Some(device_from_row(row)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn devices(&self) -> StoreResult<Vec<Device>> {
        self.read(|conn| {
            let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY device_id");
            let mut statement = conn.prepare_cached(&sql).map_err(sq_err)?;
            let mut rows = statement.query([]).map_err(sq_err)?;
            let mut devices = Vec::new();
            while let Some(row) = rows.next().map_err(sq_err)? {
                devices.push(device_from_row(row)?);
            }
            Ok(devices)
        })
        .await
    }

    async fn set_device_disabled(&self, id: &DeviceId, disabled: bool) -> StoreResult<bool> {
        let id = id.clone();
        self.write(move |conn| {
            let changed = conn
                .prepare_cached("UPDATE devices SET disabled = ?2 WHERE device_id = ?1")
                .and_then(|mut s| s.execute(params![id.as_str(), disabled]))
                .map_err(sq_err)?;
            Ok(changed > 0)
        })
        .await
    }

    async fn delete_device(&self, id: &DeviceId) -> StoreResult<bool> {
        let id = id.clone();
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached("DELETE FROM devices WHERE device_id = ?1")
                .and_then(|mut s| s.execute([id.as_str()]))
                .map_err(sq_err)?;
            Ok(deleted > 0)
        })
        .await
    }
}

#[async_trait]
impl TelemetryStore for SqliteStore {
    async fn write_batch(&self, batch: &TelemetryBatch) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = batch.clone();
        self.write(move |conn| write_batch(conn, &batch)).await
    }

    async fn latest_spot_states(&self) -> StoreResult<Vec<SpotLatest>> {
        const T: &str = "spot_latest";
        self.read(|conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT lot_id, spot_id, occupied, received_at FROM spot_latest \
                     ORDER BY lot_id, spot_id",
                )
                .map_err(sq_err)?;
            let mut rows = statement.query([]).map_err(sq_err)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(sq_err)? {
                out.push(SpotLatest {
                    lot: parse_id(T, "lot_id", &col::<String>(row, 0, T)?, LotId::parse)?,
                    spot: parse_id(T, "spot_id", &col::<String>(row, 1, T)?, SpotId::parse)?,
                    occupied: col(row, 2, T)?,
                    received_at: from_micros(col(row, 3, T)?, T)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn device_statuses(&self) -> StoreResult<Vec<DeviceStatusRow>> {
        const T: &str = "device_status";
        self.read(|conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT device_id, online, changed_at FROM device_status ORDER BY device_id",
                )
                .map_err(sq_err)?;
            let mut rows = statement.query([]).map_err(sq_err)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(sq_err)? {
                out.push(DeviceStatusRow {
                    device: parse_id(T, "device_id", &col::<String>(row, 0, T)?, DeviceId::parse)?,
                    online: col(row, 1, T)?,
                    changed_at: from_micros(col(row, 2, T)?, T)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn spot_readings(
        &self,
        lot: &LotId,
        spot: &SpotId,
        limit: u32,
    ) -> StoreResult<Vec<SpotReading>> {
        const T: &str = "spot_readings";
        let (lot, spot) = (lot.clone(), spot.clone());
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT received_at, device_ts, lot_id, spot_id, device_id, occupied, seq, \
                     battery_mv, rssi FROM spot_readings WHERE lot_id = ?1 AND spot_id = ?2 \
                     ORDER BY received_at DESC LIMIT ?3",
                )
                .map_err(sq_err)?;
            let mut rows = statement
                .query(params![lot.as_str(), spot.as_str(), i64::from(limit)])
                .map_err(sq_err)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(sq_err)? {
                out.push(SpotReading {
                    received_at: from_micros(col(row, 0, T)?, T)?,
                    device_ts: col::<Option<i64>>(row, 1, T)?
                        .map(|v| from_micros(v, T))
                        .transpose()?,
                    lot: parse_id(T, "lot_id", &col::<String>(row, 2, T)?, LotId::parse)?,
                    spot: parse_id(T, "spot_id", &col::<String>(row, 3, T)?, SpotId::parse)?,
                    device: parse_id(T, "device_id", &col::<String>(row, 4, T)?, DeviceId::parse)?,
                    occupied: col(row, 5, T)?,
                    seq: col(row, 6, T)?,
                    battery_mv: col(row, 7, T)?,
                    rssi: col(row, 8, T)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn count_readings(&self) -> StoreResult<u64> {
        const T: &str = "spot_readings";
        self.read(|conn| {
            let count: i64 = conn
                .query_row("SELECT count(*) FROM spot_readings", [], |row| row.get(0))
                .map_err(sq_err)?;
            u64::try_from(count).map_err(|_| StoreError::Corrupt {
                table: T,
                message: format!("negative count {count}"),
            })
        })
        .await
    }

    async fn enforce_retention(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let before = before.timestamp_micros();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sq_err)?;
            let mut deleted = 0u64;
            for table in [
                "spot_readings",
                "device_heartbeats",
                "device_status_changes",
            ] {
                let n = tx
                    .execute(
                        &format!("DELETE FROM {table} WHERE received_at < ?1"),
                        [before],
                    )
                    .map_err(sq_err)?;
                deleted += n as u64;
            }
            tx.commit().map_err(sq_err)?;
            Ok(deleted)
        })
        .await
    }
}

#[async_trait]
impl GarageStore for SqliteStore {
    async fn put_lot(&self, lot: &Lot) -> StoreResult<i64> {
        let (columns, spots) = lot_columns(lot)?;
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sq_err)?;
            let now = Utc::now().timestamp_micros();
            let version: i64 = tx
                .query_row(
                    "INSERT INTO lots (lot_id, name, address, lat, lon, timezone, opening_hours,
                                       levels, zones, version, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10)
                     ON CONFLICT (lot_id) DO UPDATE SET
                        name = excluded.name, address = excluded.address, lat = excluded.lat,
                        lon = excluded.lon, timezone = excluded.timezone,
                        opening_hours = excluded.opening_hours, levels = excluded.levels,
                        zones = excluded.zones, version = lots.version + 1,
                        updated_at = excluded.updated_at
                     RETURNING version",
                    params![
                        columns.lot_id,
                        columns.name,
                        columns.address,
                        columns.lat,
                        columns.lon,
                        columns.timezone,
                        columns.opening_hours,
                        columns.levels,
                        columns.zones,
                        now
                    ],
                    |row| row.get(0),
                )
                .map_err(sq_err)?;
            // Spots no longer in the document go; the rest are upserted in document order.
            tx.execute(
                "CREATE TEMP TABLE IF NOT EXISTS kept_spots (spot_id TEXT PRIMARY KEY)",
                [],
            )
            .map_err(sq_err)?;
            tx.execute("DELETE FROM temp.kept_spots", [])
                .map_err(sq_err)?;
            {
                let mut keep = tx
                    .prepare_cached("INSERT INTO temp.kept_spots (spot_id) VALUES (?1)")
                    .map_err(sq_err)?;
                let mut upsert = tx
                    .prepare_cached(
                        "INSERT INTO spots (lot_id, spot_id, position, label, level_id, zone_id,
                                            kind, x, y, w, h, rotation, walk_m, out_of_service)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                         ON CONFLICT (lot_id, spot_id) DO UPDATE SET
                            position = excluded.position, label = excluded.label,
                            level_id = excluded.level_id, zone_id = excluded.zone_id,
                            kind = excluded.kind, x = excluded.x, y = excluded.y,
                            w = excluded.w, h = excluded.h, rotation = excluded.rotation,
                            walk_m = excluded.walk_m, out_of_service = excluded.out_of_service",
                    )
                    .map_err(sq_err)?;
                for (position, spot) in spots.iter().enumerate() {
                    keep.execute([&spot.spot_id]).map_err(sq_err)?;
                    upsert
                        .execute(params![
                            columns.lot_id,
                            spot.spot_id,
                            position as i64,
                            spot.label,
                            spot.level_id,
                            spot.zone_id,
                            spot.kind,
                            spot.x,
                            spot.y,
                            spot.w,
                            spot.h,
                            spot.rotation,
                            spot.walk_m,
                            spot.out_of_service
                        ])
                        .map_err(sq_err)?;
                }
            }
            tx.execute(
                "DELETE FROM spots WHERE lot_id = ?1
                   AND spot_id NOT IN (SELECT spot_id FROM temp.kept_spots)",
                [&columns.lot_id],
            )
            .map_err(sq_err)?;
            tx.execute("DELETE FROM temp.kept_spots", [])
                .map_err(sq_err)?;
            tx.commit().map_err(sq_err)?;
            Ok(version)
        })
        .await
    }

    async fn lot(&self, id: &LotId) -> StoreResult<Option<Lot>> {
        let id = id.clone();
        self.read(move |conn| {
            let mut lots = read_lots(conn, Some(id.as_str()))?;
            Ok(lots.pop())
        })
        .await
    }

    async fn lots(&self) -> StoreResult<Vec<Lot>> {
        self.read(|conn| read_lots(conn, None)).await
    }

    async fn lot_versions(&self) -> StoreResult<Vec<(LotId, i64)>> {
        self.read(|conn| {
            let mut statement = conn
                .prepare_cached("SELECT lot_id, version FROM lots ORDER BY lot_id")
                .map_err(sq_err)?;
            let mut rows = statement.query([]).map_err(sq_err)?;
            let mut versions = Vec::new();
            while let Some(row) = rows.next().map_err(sq_err)? {
                let raw: String = col(row, 0, "lots")?;
                versions.push((
                    parse_id("lots", "lot_id", &raw, LotId::parse)?,
                    col(row, 1, "lots")?,
                ));
            }
            Ok(versions)
        })
        .await
    }

    async fn delete_lot(&self, id: &LotId) -> StoreResult<bool> {
        let id = id.clone();
        self.write(move |conn| {
            let deleted = conn
                .execute("DELETE FROM lots WHERE lot_id = ?1", [id.as_str()])
                .map_err(sq_err)?;
            Ok(deleted > 0)
        })
        .await
    }
}

/// Reads one lot (`only`) or all of them, whole.
fn read_lots(conn: &Connection, only: Option<&str>) -> StoreResult<Vec<Lot>> {
    const T: &str = "lots";
    let mut statement = conn
        .prepare_cached(
            "SELECT lot_id, name, address, lat, lon, timezone, opening_hours, levels, zones
             FROM lots WHERE ?1 IS NULL OR lot_id = ?1 ORDER BY lot_id",
        )
        .map_err(sq_err)?;
    let mut rows = statement.query([only]).map_err(sq_err)?;
    let mut headers = Vec::new();
    while let Some(row) = rows.next().map_err(sq_err)? {
        headers.push(LotColumns {
            lot_id: col(row, 0, T)?,
            name: col(row, 1, T)?,
            address: col(row, 2, T)?,
            lat: col(row, 3, T)?,
            lon: col(row, 4, T)?,
            timezone: col(row, 5, T)?,
            opening_hours: col(row, 6, T)?,
            levels: col(row, 7, T)?,
            zones: col(row, 8, T)?,
        });
    }
    let mut spots_statement = conn
        .prepare_cached(
            "SELECT spot_id, label, level_id, zone_id, kind, x, y, w, h, rotation, walk_m,
                    out_of_service
             FROM spots WHERE lot_id = ?1 ORDER BY position",
        )
        .map_err(sq_err)?;
    let mut lots = Vec::with_capacity(headers.len());
    for header in headers {
        let mut rows = spots_statement.query([&header.lot_id]).map_err(sq_err)?;
        let mut spots = Vec::new();
        while let Some(row) = rows.next().map_err(sq_err)? {
            const S: &str = "spots";
            spots.push(SpotRead {
                kind: col(row, 4, S)?,
                columns: SpotColumns {
                    spot_id: col(row, 0, S)?,
                    label: col(row, 1, S)?,
                    level_id: col(row, 2, S)?,
                    zone_id: col(row, 3, S)?,
                    kind: "",
                    x: col(row, 5, S)?,
                    y: col(row, 6, S)?,
                    w: col(row, 7, S)?,
                    h: col(row, 8, S)?,
                    rotation: col(row, 9, S)?,
                    walk_m: col(row, 10, S)?,
                    out_of_service: col(row, 11, S)?,
                },
            });
        }
        lots.push(assemble_lot(header, spots)?);
    }
    Ok(lots)
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(sq_err))
            .await
    }
}

/// One batch in one `IMMEDIATE` transaction: every row or none.
fn write_batch(conn: &mut Connection, batch: &TelemetryBatch) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sq_err)?;
    if !batch.readings.is_empty() {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO spot_readings (received_at, device_ts, lot_id, spot_id, device_id, \
                 occupied, seq, battery_mv, rssi) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(sq_err)?;
        for r in &batch.readings {
            insert
                .execute(params![
                    r.received_at.timestamp_micros(),
                    r.device_ts.map(|t| t.timestamp_micros()),
                    r.lot.as_str(),
                    r.spot.as_str(),
                    r.device.as_str(),
                    r.occupied,
                    r.seq,
                    r.battery_mv,
                    r.rssi,
                ])
                .map_err(sq_err)?;
        }
    }
    if !batch.heartbeats.is_empty() {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO device_heartbeats (received_at, device_ts, device_id, battery_mv, \
                 rssi, uptime_s, firmware) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(sq_err)?;
        for h in &batch.heartbeats {
            insert
                .execute(params![
                    h.received_at.timestamp_micros(),
                    h.device_ts.map(|t| t.timestamp_micros()),
                    h.device.as_str(),
                    h.battery_mv,
                    h.rssi,
                    h.uptime_s,
                    h.firmware,
                ])
                .map_err(sq_err)?;
        }
    }
    if !batch.statuses.is_empty() {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO device_status_changes (received_at, device_id, online) \
                 VALUES (?1, ?2, ?3)",
            )
            .map_err(sq_err)?;
        for s in &batch.statuses {
            insert
                .execute(params![
                    s.received_at.timestamp_micros(),
                    s.device.as_str(),
                    s.online
                ])
                .map_err(sq_err)?;
        }
    }
    let newest_spots = newest_per_spot(&batch.readings);
    if !newest_spots.is_empty() {
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO spot_latest (lot_id, spot_id, occupied, received_at) \
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (lot_id, spot_id) DO UPDATE
                 SET occupied = excluded.occupied, received_at = excluded.received_at
                 WHERE excluded.received_at >= spot_latest.received_at",
            )
            .map_err(sq_err)?;
        for r in newest_spots {
            upsert
                .execute(params![
                    r.lot.as_str(),
                    r.spot.as_str(),
                    r.occupied,
                    r.received_at.timestamp_micros()
                ])
                .map_err(sq_err)?;
        }
    }
    let newest_devices = newest_per_device(&batch.statuses);
    if !newest_devices.is_empty() {
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO device_status (device_id, online, changed_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (device_id) DO UPDATE
                 SET online = excluded.online, changed_at = excluded.changed_at
                 WHERE excluded.changed_at >= device_status.changed_at",
            )
            .map_err(sq_err)?;
        for s in newest_devices {
            upsert
                .execute(params![
                    s.device.as_str(),
                    s.online,
                    s.received_at.timestamp_micros()
                ])
                .map_err(sq_err)?;
        }
    }
    tx.commit().map_err(sq_err)
}

/// Applies the migrations not yet recorded, each in its own `IMMEDIATE` transaction, so that
/// two processes opening the same file do not both apply one.
fn migrate(conn: &mut Connection, migrations: &[Migration]) -> StoreResult<()> {
    conn.execute_batch(CREATE_SCHEMA_MIGRATIONS)
        .map_err(sq_err)?;
    for migration in migrations {
        let failed = |e: rusqlite::Error| StoreError::Migration {
            version: migration.version,
            message: e.to_string(),
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sq_err)?;
        let applied: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                [migration.version],
                |row| row.get(0),
            )
            .map_err(sq_err)?;
        if applied {
            continue;
        }
        // On any error the transaction is dropped, which rolls it back.
        tx.execute_batch(migration.sql).map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![
                migration.version,
                migration.name,
                Utc::now().timestamp_micros()
            ],
        )
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        info!(
            version = migration.version,
            name = migration.name,
            "applied SQLite migration"
        );
    }
    Ok(())
}

fn open_writer(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(|e| open_err(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sq_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(sq_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "{}: could not switch to WAL (journal_mode is {mode})",
            path.display()
        )));
    }
    // 64 MiB of page cache: every spot has its own insertion point in the readings index, and
    // a commit rewrites one hot leaf per spot; the 2 MB default holds fewer leaves than a
    // garage has spots (bench/results/FINDINGS.md).
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536;",
    )
    .map_err(sq_err)?;
    Ok(conn)
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| open_err(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sq_err)?;
    conn.execute_batch("PRAGMA foreign_keys = ON;")
        .map_err(sq_err)?;
    Ok(conn)
}

fn open_err(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("opening {}: {e}", path.display()))
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> StoreResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Database(format!("SQLite task failed: {e}")))?
}

/// Locks a mutex; a panic while it was held left no open transaction (rusqlite rolls back on
/// drop), so the connection is still good.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn device_from_row(row: &Row<'_>) -> StoreResult<Device> {
    const T: &str = "devices";
    DeviceColumns {
        device_id: col(row, 0, T)?,
        kind: col(row, 1, T)?,
        lot_id: col(row, 2, T)?,
        spot_id: col(row, 3, T)?,
        gate_id: col(row, 4, T)?,
        secret_sha256: col(row, 5, T)?,
        disabled: col(row, 6, T)?,
        created_at: from_micros(col(row, 7, T)?, T)?,
    }
    .into_device()
}

/// Reads column `idx`, reporting a type mismatch or unexpected NULL as corruption.
fn col<T: FromSql>(row: &Row<'_>, idx: usize, table: &'static str) -> StoreResult<T> {
    row.get(idx).map_err(|e| StoreError::Corrupt {
        table,
        message: format!("column {idx}: {e}"),
    })
}

fn from_micros(micros: i64, table: &'static str) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| StoreError::Corrupt {
        table,
        message: format!("timestamp {micros} out of range"),
    })
}

/// Runs a cached query and maps every row with `map`.
fn query_rows<T>(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    mut map: impl FnMut(&rusqlite::Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut statement = conn.prepare_cached(sql).map_err(sq_err)?;
    let mut rows = statement.query(args).map_err(sq_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sq_err)? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// Maps an SQLite error to a [`StoreError`].
fn sq_err(e: rusqlite::Error) -> StoreError {
    let message = e.to_string();
    let rusqlite::Error::SqliteFailure(failure, _) = &e else {
        return StoreError::Database(message);
    };
    match failure.code {
        ErrorCode::ConstraintViolation => match failure.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE
            | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            | ffi::SQLITE_CONSTRAINT_FOREIGNKEY => StoreError::Conflict(message),
            _ => StoreError::Database(message),
        },
        ErrorCode::DatabaseBusy
        | ErrorCode::DatabaseLocked
        | ErrorCode::CannotOpen
        | ErrorCode::SystemIoFailure
        | ErrorCode::DiskFull
        | ErrorCode::ReadOnly => StoreError::Unavailable(message),
        _ => StoreError::Database(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pragmas_are_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("a/b/parkd.db"))
            .await
            .unwrap();
        let (mode, sync, fk) = store
            .write(|conn| {
                let get = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, String>(0));
                Ok((
                    get("PRAGMA journal_mode").map_err(sq_err)?,
                    conn.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))
                        .map_err(sq_err)?,
                    conn.query_row("PRAGMA foreign_keys", [], |r| r.get::<_, i64>(0))
                        .map_err(sq_err)?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 1, "synchronous=NORMAL");
        assert_eq!(fk, 1);
    }

    #[tokio::test]
    async fn unusable_path_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"not a directory").unwrap();
        let err = SqliteStore::open(&file.join("parkd.db")).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }

    /// A failing migration reports its version and leaves the file at the previous one, with
    /// nothing of the failed migration applied.
    #[tokio::test]
    async fn failed_migration_leaves_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("parkd.db"))
            .await
            .unwrap();
        let last = MIGRATIONS.last().map_or(0, |migration| migration.version);
        let mut broken = MIGRATIONS.to_vec();
        broken.push(Migration {
            version: last + 1,
            name: "broken",
            sql: "CREATE TABLE half_done (x INTEGER); SELECT no_such_function();",
        });
        let err = store
            .write(move |conn| migrate(conn, &broken))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { version, .. } if version == last + 1),
            "{err:?}"
        );
        let (max, half_done) = store
            .read(|conn| {
                let max: i64 = conn
                    .query_row("SELECT max(version) FROM schema_migrations", [], |r| {
                        r.get(0)
                    })
                    .map_err(sq_err)?;
                let half_done: i64 = conn
                    .query_row(
                        "SELECT count(*) FROM sqlite_schema WHERE name = 'half_done'",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(sq_err)?;
                Ok((max, half_done))
            })
            .await
            .unwrap();
        assert_eq!(max, last);
        assert_eq!(half_done, 0);
        store.write(|conn| migrate(conn, MIGRATIONS)).await.unwrap();
        store.ping().await.unwrap();
    }
}
