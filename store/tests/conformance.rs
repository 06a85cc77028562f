//! The conformance suite: every test is written once against `&dyn Store` and instantiated
//! for both backends by `conformance!` (modules `sqlite` and `postgres`). Each test gets its
//! own SQLite file or PostgreSQL database, so they run in parallel.
//!
//! PostgreSQL side: `pg_virtualenv -v 15 -- cargo nextest run -p parkd-store --features testing`.

// The whole file is test code; the helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use parkd_core::account::{Email, Plate, Role, VehicleClass, VehicleProfile};
use parkd_core::garage::{Lot, demo_garage};
use parkd_core::ids::{DeviceId, GateId, LotId, SpotId};
use parkd_core::reservation::ReservationState;
use parkd_core::vehicle::VehicleType;
use parkd_store::postgres::PostgresStore;
use parkd_store::{
    Device, DeviceBinding, DeviceStatusRow, HeartbeatRow, HoldingSpan, IdempotencyBegin,
    IdempotentAnswer, OperatorAction, ParkingSession, ReservationRow, SessionRow, SpotLatest,
    SpotReading, StatusChange, Store, StoreConfig, StoreError, TelemetryBatch, User, VehicleRow,
    testing,
};

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(&super::Harness::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(&super::Harness::postgres().await).await;
                }
            )*
        }
    };
}

conformance!(
    gate_decisions_are_recorded_once,
    parking_sessions_check_reservations_in_and_out,
    one_open_session_per_plate_and_reservation,
    operator_actions_are_an_audit_trail,
    identifies_itself_and_answers_ping,
    migrations_are_idempotent,
    device_registry_round_trip,
    device_upsert_replaces_binding_and_secret_only,
    unique_binding_per_spot_and_gate,
    schema_refuses_kind_binding_mismatch,
    corrupt_rows_are_reported,
    write_batch_round_trip,
    empty_batch_is_a_no_op,
    failed_batch_leaves_nothing,
    spot_latest_keeps_the_newest,
    device_statuses_keep_the_newest,
    spot_readings_newest_first_with_limit,
    count_readings_counts,
    telemetry_outlives_its_device,
    enforce_retention_deletes_old_rows,
    large_batch,
    hourly_occupancy_is_queryable,
    lot_round_trip_and_versions,
    lot_replacement_drops_removed_spots,
    large_lot,
    accounts_round_trip_and_unique_email,
    password_change_revokes_other_sessions,
    disabling_revokes_every_session,
    vehicles_per_driver,
    exactly_one_winner_when_fifty_race_for_a_spot,
    reservations_round_trip_and_transitions,
    no_shows_release_their_spot,
    idempotency_keys,
    holding_spans_are_where_and_when,
    a_reservation_and_its_answer_are_one_write,
);

// ---------------------------------------------------------------------------------------
// Harness: the store under test plus raw access to its database for what the traits don't
// expose (constraint checks, triggers, counts of tables without a read method).

struct Harness {
    store: Arc<dyn Store>,
    raw: Raw,
}

enum Raw {
    Sqlite {
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    Postgres {
        url: String,
    },
}

impl Harness {
    async fn sqlite() -> Self {
        let (store, dir) = testing::sqlite_store().await;
        let path = store.path().to_path_buf();
        Harness {
            store: Arc::new(store),
            raw: Raw::Sqlite { path, _dir: dir },
        }
    }

    async fn postgres() -> Self {
        let url = testing::fresh_postgres_url().await;
        let store = PostgresStore::open(&url, 4, 30).await.unwrap();
        Harness {
            store: Arc::new(store),
            raw: Raw::Postgres { url },
        }
    }

    fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Opens the same database again through the public entry point.
    async fn reopen(&self) -> Arc<dyn Store> {
        let config = match &self.raw {
            Raw::Sqlite { path, .. } => StoreConfig::Sqlite { path: path.clone() },
            Raw::Postgres { url } => StoreConfig::Postgres {
                url: url.clone(),
                pool_size: 2,
                retention_days: 30,
            },
        };
        parkd_store::open(&config).await.unwrap()
    }

    /// Runs SQL directly on the database (same text on both backends).
    async fn execute(&self, sql: &str) -> Result<(), String> {
        match &self.raw {
            Raw::Sqlite { path, .. } => {
                let (path, sql) = (path.clone(), sql.to_owned());
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
                    conn.busy_timeout(std::time::Duration::from_secs(5))
                        .map_err(|e| e.to_string())?;
                    conn.execute_batch(&sql).map_err(|e| e.to_string())
                })
                .await
                .unwrap()
            }
            Raw::Postgres { url } => {
                let client = pg_client(url).await;
                client
                    .batch_execute(sql)
                    .await
                    .map_err(|e| format!("{:?}", e.as_db_error()))
            }
        }
    }

    /// One integer from a query.
    async fn query_i64(&self, sql: &str) -> i64 {
        match &self.raw {
            Raw::Sqlite { path, .. } => {
                let (path, sql) = (path.clone(), sql.to_owned());
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(path).unwrap();
                    conn.query_row(&sql, [], |row| row.get(0)).unwrap()
                })
                .await
                .unwrap()
            }
            Raw::Postgres { url } => {
                let client = pg_client(url).await;
                client.query_one(sql, &[]).await.unwrap().get(0)
            }
        }
    }

    /// Makes any write of device `poison` into `device_status` (the last table a batch
    /// touches) fail, to test that a failed batch leaves nothing.
    async fn install_poison(&self) {
        let sql = match &self.raw {
            Raw::Sqlite { .. } => {
                "CREATE TRIGGER poison BEFORE INSERT ON device_status
                 WHEN NEW.device_id = 'poison'
                 BEGIN SELECT RAISE(ABORT, 'poisoned row'); END;"
            }
            Raw::Postgres { .. } => {
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                     IF NEW.device_id = 'poison' THEN RAISE EXCEPTION 'poisoned row'; END IF;
                     RETURN NEW;
                 END $$;
                 CREATE TRIGGER poison BEFORE INSERT ON device_status
                 FOR EACH ROW EXECUTE FUNCTION poison();"
            }
        };
        self.execute(sql).await.unwrap();
    }

    /// `hourly_occupancy` as (bucket start in Unix microseconds, lot, spot, readings, share).
    async fn hourly(&self) -> Vec<(i64, String, String, i64, f64)> {
        match &self.raw {
            Raw::Sqlite { path, .. } => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(path).unwrap();
                    let mut stmt = conn
                        .prepare(
                            "SELECT bucket, lot_id, spot_id, readings, occupied_share \
                             FROM hourly_occupancy ORDER BY bucket, lot_id, spot_id",
                        )
                        .unwrap();
                    stmt.query_map([], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap()
                })
                .await
                .unwrap()
            }
            Raw::Postgres { url } => {
                let client = pg_client(url).await;
                client
                    .query(
                        "SELECT (extract(epoch FROM bucket) * 1000000)::bigint, lot_id, \
                         spot_id, readings, occupied_share \
                         FROM hourly_occupancy ORDER BY bucket, lot_id, spot_id",
                        &[],
                    )
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                    .collect()
            }
        }
    }
}

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

// ---------------------------------------------------------------------------------------
// Fixtures.

/// A fixed origin, whole seconds (both backends keep microseconds).
fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + Duration::seconds(secs)
}

fn lot(raw: &str) -> LotId {
    LotId::parse(raw).unwrap()
}

fn spot(raw: &str) -> SpotId {
    SpotId::parse(raw).unwrap()
}

fn dev(raw: &str) -> DeviceId {
    DeviceId::parse(raw).unwrap()
}

fn sensor(id: &str, lot_id: &str, spot_id: &str) -> Device {
    Device {
        id: dev(id),
        binding: DeviceBinding::Spot {
            lot: lot(lot_id),
            spot: spot(spot_id),
        },
        secret_sha256: Some([7; 32]),
        disabled: false,
        created_at: t(0),
    }
}

fn gate(id: &str, lot_id: &str, gate_id: &str) -> Device {
    Device {
        id: dev(id),
        binding: DeviceBinding::Gate {
            lot: lot(lot_id),
            gate: GateId::parse(gate_id).unwrap(),
        },
        secret_sha256: None,
        disabled: false,
        created_at: t(1),
    }
}

fn observer(id: &str) -> Device {
    Device {
        id: dev(id),
        binding: DeviceBinding::Observer,
        secret_sha256: Some([0xab; 32]),
        disabled: true,
        created_at: t(2),
    }
}

fn reading(spot_id: &str, secs: i64, occupied: bool) -> SpotReading {
    SpotReading {
        received_at: t(secs),
        device_ts: Some(t(secs) - Duration::milliseconds(250)),
        lot: lot("garage-1"),
        spot: spot(spot_id),
        device: dev(&format!("sensor.{spot_id}")),
        occupied,
        seq: Some(secs),
        battery_mv: Some(3_000),
        rssi: Some(-71),
    }
}

fn heartbeat(device: &str, secs: i64) -> HeartbeatRow {
    HeartbeatRow {
        received_at: t(secs),
        device_ts: None,
        device: dev(device),
        battery_mv: Some(2_950),
        rssi: Some(-80),
        uptime_s: Some(86_400),
        firmware: Some("1.2.3".to_owned()),
    }
}

fn status(device: &str, secs: i64, online: bool) -> StatusChange {
    StatusChange {
        received_at: t(secs),
        device: dev(device),
        online,
    }
}

fn readings_only(readings: Vec<SpotReading>) -> TelemetryBatch {
    TelemetryBatch {
        readings,
        ..TelemetryBatch::default()
    }
}

// ---------------------------------------------------------------------------------------
// The tests, each once, against `&dyn Store`.

async fn identifies_itself_and_answers_ping(h: &Harness) {
    let store = h.store();
    store.ping().await.unwrap();
    match &h.raw {
        Raw::Sqlite { .. } => {
            assert_eq!(store.backend(), "sqlite");
            assert!(!store.timescale());
        }
        Raw::Postgres { .. } => assert_eq!(store.backend(), "postgres"),
    }
    assert!(format!("{store:?}").contains("Store"));
}

async fn migrations_are_idempotent(h: &Harness) {
    h.store()
        .upsert_device(&sensor("s1", "lot", "a1"))
        .await
        .unwrap();
    let versions = h.query_i64("SELECT count(*) FROM schema_migrations").await;
    assert!(versions >= 2, "{versions} migrations recorded");
    for _ in 0..2 {
        let again = h.reopen().await;
        again.ping().await.unwrap();
        assert_eq!(
            again.devices().await.unwrap(),
            vec![sensor("s1", "lot", "a1")]
        );
    }
    assert_eq!(
        h.query_i64("SELECT count(*) FROM schema_migrations").await,
        versions,
        "re-running migrations recorded nothing new"
    );
}

async fn device_registry_round_trip(h: &Harness) {
    let store = h.store();
    let devices = [
        sensor("s1", "lot", "a1"),
        gate("g1", "lot", "north"),
        observer("grafana"),
    ];
    for device in &devices {
        store.upsert_device(device).await.unwrap();
    }
    for device in &devices {
        assert_eq!(
            store.device(&device.id).await.unwrap().as_ref(),
            Some(device)
        );
    }
    assert_eq!(store.device(&dev("nobody")).await.unwrap(), None);

    // Ordered by id, bytewise.
    let ids: Vec<String> = store
        .devices()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id.to_string())
        .collect();
    assert_eq!(ids, ["g1", "grafana", "s1"]);

    assert!(store.set_device_disabled(&dev("s1"), true).await.unwrap());
    assert!(store.device(&dev("s1")).await.unwrap().unwrap().disabled);
    assert!(store.set_device_disabled(&dev("s1"), false).await.unwrap());
    assert!(!store.device(&dev("s1")).await.unwrap().unwrap().disabled);
    assert!(
        !store
            .set_device_disabled(&dev("nobody"), true)
            .await
            .unwrap()
    );

    assert!(store.delete_device(&dev("g1")).await.unwrap());
    assert_eq!(store.device(&dev("g1")).await.unwrap(), None);
    assert!(!store.delete_device(&dev("g1")).await.unwrap());
    assert_eq!(store.devices().await.unwrap().len(), 2);
}

async fn device_upsert_replaces_binding_and_secret_only(h: &Harness) {
    let store = h.store();
    store
        .upsert_device(&sensor("s1", "lot", "a1"))
        .await
        .unwrap();
    store.set_device_disabled(&dev("s1"), true).await.unwrap();

    let mut moved = sensor("s1", "lot", "a2");
    moved.secret_sha256 = Some([9; 32]);
    moved.disabled = false;
    moved.created_at = t(999);
    store.upsert_device(&moved).await.unwrap();

    let stored = store.device(&dev("s1")).await.unwrap().unwrap();
    assert_eq!(stored.binding, moved.binding);
    assert_eq!(stored.secret_sha256, Some([9; 32]));
    assert!(stored.disabled, "disabled is kept on update");
    assert_eq!(stored.created_at, t(0), "created_at is kept on update");

    // A device may change kind.
    let mut now_gate = gate("s1", "lot", "south");
    now_gate.secret_sha256 = None;
    store.upsert_device(&now_gate).await.unwrap();
    let stored = store.device(&dev("s1")).await.unwrap().unwrap();
    assert_eq!(stored.binding, now_gate.binding);
    assert_eq!(stored.secret_sha256, None);
}

async fn unique_binding_per_spot_and_gate(h: &Harness) {
    let store = h.store();
    store
        .upsert_device(&sensor("s1", "lot", "a1"))
        .await
        .unwrap();
    store
        .upsert_device(&gate("g1", "lot", "north"))
        .await
        .unwrap();

    let err = store
        .upsert_device(&sensor("s2", "lot", "a1"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let err = store
        .upsert_device(&gate("g2", "lot", "north"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.device(&dev("s2")).await.unwrap(), None);

    // Same names in another lot, or a spot and a gate of the same name, are fine.
    store
        .upsert_device(&sensor("s3", "lot-2", "a1"))
        .await
        .unwrap();
    store
        .upsert_device(&gate("g3", "lot-2", "north"))
        .await
        .unwrap();
    store
        .upsert_device(&sensor("s4", "lot", "north"))
        .await
        .unwrap();
    // Re-registering the same binding is not a conflict.
    store
        .upsert_device(&sensor("s1", "lot", "a1"))
        .await
        .unwrap();

    // Moving the sensor away frees its spot.
    store
        .upsert_device(&sensor("s1", "lot", "a9"))
        .await
        .unwrap();
    store
        .upsert_device(&sensor("s2", "lot", "a1"))
        .await
        .unwrap();
    // Deleting frees a gate.
    store.delete_device(&dev("g1")).await.unwrap();
    store
        .upsert_device(&gate("g2", "lot", "north"))
        .await
        .unwrap();
}

async fn schema_refuses_kind_binding_mismatch(h: &Harness) {
    // The API cannot express a mismatch (the kind follows from the binding), so check the
    // database's own rule with raw inserts.
    for bad in [
        "INSERT INTO devices (device_id, kind, lot_id, spot_id) VALUES ('x', 'gate', 'l', 's')",
        "INSERT INTO devices (device_id, kind, lot_id, spot_id, gate_id) \
         VALUES ('x', 'sensor', 'l', 's', 'g')",
        "INSERT INTO devices (device_id, kind, lot_id) VALUES ('x', 'sensor', 'l')",
        "INSERT INTO devices (device_id, kind, lot_id) VALUES ('x', 'observer', 'l')",
        "INSERT INTO devices (device_id, kind, lot_id, gate_id) \
         VALUES ('x', 'toaster', 'l', 'g')",
    ] {
        assert!(h.execute(bad).await.is_err(), "accepted: {bad}");
    }
    // Well-formed raw rows are accepted, with defaults for disabled and created_at.
    h.execute(
        "INSERT INTO devices (device_id, kind, lot_id, gate_id) VALUES ('x', 'gate', 'l', 'g')",
    )
    .await
    .unwrap();
    let x = h.store().device(&dev("x")).await.unwrap().unwrap();
    assert!(!x.disabled);
    assert!(x.created_at > t(0));
}

async fn corrupt_rows_are_reported(h: &Harness) {
    h.execute("INSERT INTO devices (device_id, kind) VALUES ('bad/id', 'observer')")
        .await
        .unwrap();
    let err = h.store().devices().await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                table: "devices",
                ..
            }
        ),
        "{err:?}"
    );
}

async fn write_batch_round_trip(h: &Harness) {
    let store = h.store();
    let mut bare = reading("a2", 5, false);
    bare.device_ts = None;
    bare.seq = None;
    bare.battery_mv = None;
    bare.rssi = None;
    let batch = TelemetryBatch {
        readings: vec![
            reading("a1", 1, true),
            reading("a1", 2, false),
            bare.clone(),
        ],
        heartbeats: vec![heartbeat("sensor.a1", 3), heartbeat("gate.north", 4)],
        statuses: vec![status("sensor.a1", 1, true), status("gate.north", 2, false)],
    };
    assert_eq!(batch.len(), 7);
    store.write_batch(&batch).await.unwrap();

    assert_eq!(
        store
            .spot_readings(&lot("garage-1"), &spot("a1"), 10)
            .await
            .unwrap(),
        vec![reading("a1", 2, false), reading("a1", 1, true)]
    );
    assert_eq!(
        store
            .spot_readings(&lot("garage-1"), &spot("a2"), 10)
            .await
            .unwrap(),
        vec![bare]
    );
    assert_eq!(store.count_readings().await.unwrap(), 3);
    assert_eq!(
        h.query_i64("SELECT count(*) FROM device_heartbeats").await,
        2
    );
    assert_eq!(
        h.query_i64("SELECT uptime_s FROM device_heartbeats WHERE firmware = '1.2.3' AND device_id = 'gate.north'")
            .await,
        86_400
    );
    assert_eq!(
        h.query_i64("SELECT count(*) FROM device_status_changes")
            .await,
        2
    );
    assert_eq!(
        store.latest_spot_states().await.unwrap(),
        vec![
            SpotLatest {
                lot: lot("garage-1"),
                spot: spot("a1"),
                occupied: false,
                received_at: t(2),
            },
            SpotLatest {
                lot: lot("garage-1"),
                spot: spot("a2"),
                occupied: false,
                received_at: t(5),
            },
        ]
    );
    assert_eq!(
        store.device_statuses().await.unwrap(),
        vec![
            DeviceStatusRow {
                device: dev("gate.north"),
                online: false,
                changed_at: t(2),
            },
            DeviceStatusRow {
                device: dev("sensor.a1"),
                online: true,
                changed_at: t(1),
            },
        ]
    );
}

async fn empty_batch_is_a_no_op(h: &Harness) {
    let store = h.store();
    assert!(TelemetryBatch::default().is_empty());
    store.write_batch(&TelemetryBatch::default()).await.unwrap();
    assert_eq!(store.count_readings().await.unwrap(), 0);
    assert!(store.latest_spot_states().await.unwrap().is_empty());
    assert!(store.device_statuses().await.unwrap().is_empty());
}

async fn failed_batch_leaves_nothing(h: &Harness) {
    let store = h.store();
    h.install_poison().await;
    let batch = TelemetryBatch {
        readings: (0..50).map(|i| reading("a1", i, i % 2 == 0)).collect(),
        heartbeats: vec![heartbeat("sensor.a1", 3)],
        statuses: vec![status("sensor.a1", 1, true), status("poison", 2, true)],
    };
    let err = store.write_batch(&batch).await.unwrap_err();
    assert!(err.to_string().contains("poisoned row"), "{err}");
    assert_eq!(store.count_readings().await.unwrap(), 0);
    assert_eq!(
        h.query_i64("SELECT count(*) FROM device_heartbeats").await,
        0
    );
    assert_eq!(
        h.query_i64("SELECT count(*) FROM device_status_changes")
            .await,
        0
    );
    assert!(store.latest_spot_states().await.unwrap().is_empty());
    assert!(store.device_statuses().await.unwrap().is_empty());

    // The store is still usable: a clean batch goes through, on whatever connection.
    for _ in 0..3 {
        let mut clean = batch.clone();
        clean.statuses.pop();
        store.write_batch(&clean).await.unwrap();
    }
    assert_eq!(store.count_readings().await.unwrap(), 150);
    assert_eq!(store.device_statuses().await.unwrap().len(), 1);
}

async fn spot_latest_keeps_the_newest(h: &Harness) {
    let store = h.store();
    let latest = |occupied: bool, secs: i64| {
        vec![SpotLatest {
            lot: lot("garage-1"),
            spot: spot("a1"),
            occupied,
            received_at: t(secs),
        }]
    };
    store
        .write_batch(&readings_only(vec![reading("a1", 10, true)]))
        .await
        .unwrap();
    assert_eq!(store.latest_spot_states().await.unwrap(), latest(true, 10));

    // An older batch arriving late is stored but does not win.
    store
        .write_batch(&readings_only(vec![reading("a1", 5, false)]))
        .await
        .unwrap();
    assert_eq!(store.latest_spot_states().await.unwrap(), latest(true, 10));
    assert_eq!(store.count_readings().await.unwrap(), 2);

    // Within one batch the newest wins whatever the order.
    store
        .write_batch(&readings_only(vec![
            reading("a1", 30, false),
            reading("a1", 20, true),
        ]))
        .await
        .unwrap();
    assert_eq!(store.latest_spot_states().await.unwrap(), latest(false, 30));

    // At the same instant, the later write wins.
    store
        .write_batch(&readings_only(vec![reading("a1", 30, true)]))
        .await
        .unwrap();
    assert_eq!(store.latest_spot_states().await.unwrap(), latest(true, 30));
}

async fn device_statuses_keep_the_newest(h: &Harness) {
    let store = h.store();
    let only_statuses = |statuses| TelemetryBatch {
        statuses,
        ..TelemetryBatch::default()
    };
    store
        .write_batch(&only_statuses(vec![
            status("b", 10, false),
            status("b", 5, true),
            status("a", 1, true),
        ]))
        .await
        .unwrap();
    store
        .write_batch(&only_statuses(vec![status("b", 7, true)]))
        .await
        .unwrap();
    assert_eq!(
        store.device_statuses().await.unwrap(),
        vec![
            DeviceStatusRow {
                device: dev("a"),
                online: true,
                changed_at: t(1),
            },
            DeviceStatusRow {
                device: dev("b"),
                online: false,
                changed_at: t(10),
            },
        ]
    );
    store
        .write_batch(&only_statuses(vec![status("a", 2, false)]))
        .await
        .unwrap();
    let statuses = store.device_statuses().await.unwrap();
    assert!(!statuses[0].online);
    assert_eq!(statuses[0].changed_at, t(2));
    assert_eq!(
        h.query_i64("SELECT count(*) FROM device_status_changes")
            .await,
        5,
        "every change is kept in the time series"
    );
}

async fn spot_readings_newest_first_with_limit(h: &Harness) {
    let store = h.store();
    // Two batches, out of order, interleaved with another spot.
    store
        .write_batch(&readings_only(
            (5..10)
                .flat_map(|i| {
                    [
                        reading("a1", i * 10, i % 2 == 0),
                        reading("b7", i * 10 + 1, true),
                    ]
                })
                .collect(),
        ))
        .await
        .unwrap();
    store
        .write_batch(&readings_only(
            (0..5).map(|i| reading("a1", i * 10, false)).collect(),
        ))
        .await
        .unwrap();

    let (garage, a1) = (lot("garage-1"), spot("a1"));
    let top3 = store.spot_readings(&garage, &a1, 3).await.unwrap();
    assert_eq!(
        top3.iter().map(|r| r.received_at).collect::<Vec<_>>(),
        vec![t(90), t(80), t(70)]
    );
    let all = store.spot_readings(&garage, &a1, 100).await.unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].received_at > w[1].received_at));
    assert!(all.iter().all(|r| r.spot == a1));
    assert!(
        store
            .spot_readings(&garage, &a1, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .spot_readings(&lot("elsewhere"), &a1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .spot_readings(&garage, &spot("b7"), 100)
            .await
            .unwrap()
            .len(),
        5
    );
}

async fn count_readings_counts(h: &Harness) {
    let store = h.store();
    assert_eq!(store.count_readings().await.unwrap(), 0);
    for n in [1, 10, 100] {
        store
            .write_batch(&readings_only(
                (0..n).map(|i| reading("a1", i, true)).collect(),
            ))
            .await
            .unwrap();
    }
    // Heartbeats and statuses are not readings.
    store
        .write_batch(&TelemetryBatch {
            heartbeats: vec![heartbeat("x", 1)],
            statuses: vec![status("x", 1, true)],
            ..TelemetryBatch::default()
        })
        .await
        .unwrap();
    assert_eq!(store.count_readings().await.unwrap(), 111);
}

async fn telemetry_outlives_its_device(h: &Harness) {
    let store = h.store();
    store
        .upsert_device(&sensor("sensor.a1", "garage-1", "a1"))
        .await
        .unwrap();
    store
        .write_batch(&TelemetryBatch {
            readings: vec![reading("a1", 1, true)],
            heartbeats: vec![heartbeat("sensor.a1", 2)],
            statuses: vec![status("sensor.a1", 1, true)],
        })
        .await
        .unwrap();
    assert!(store.delete_device(&dev("sensor.a1")).await.unwrap());
    assert_eq!(store.count_readings().await.unwrap(), 1);
    assert_eq!(store.latest_spot_states().await.unwrap().len(), 1);
    assert_eq!(store.device_statuses().await.unwrap().len(), 1);
    // Telemetry of a device never registered is stored too.
    store
        .write_batch(&readings_only(vec![reading("zz", 1, true)]))
        .await
        .unwrap();
    assert_eq!(store.count_readings().await.unwrap(), 2);
}

async fn enforce_retention_deletes_old_rows(h: &Harness) {
    let store = h.store();
    let day = 86_400;
    store
        .write_batch(&TelemetryBatch {
            readings: vec![
                reading("a1", -40 * day, true),
                reading("a2", -31 * day, true),
                reading("a1", -day, false),
            ],
            heartbeats: vec![heartbeat("x", -35 * day), heartbeat("x", 0)],
            statuses: vec![status("x", -35 * day, true), status("x", 0, false)],
        })
        .await
        .unwrap();
    let cutoff = t(-30 * day);
    let deleted = store.enforce_retention(cutoff).await.unwrap();
    if store.timescale() {
        assert_eq!(deleted, 0, "TimescaleDB's policy does it");
        return;
    }
    assert_eq!(deleted, 4);
    assert_eq!(store.count_readings().await.unwrap(), 1);
    assert_eq!(
        h.query_i64("SELECT count(*) FROM device_heartbeats").await,
        1
    );
    assert_eq!(
        h.query_i64("SELECT count(*) FROM device_status_changes")
            .await,
        1
    );
    // Current state is not telemetry history: a2's last state survives.
    assert_eq!(store.latest_spot_states().await.unwrap().len(), 2);
    assert_eq!(store.device_statuses().await.unwrap().len(), 1);
    assert_eq!(store.enforce_retention(cutoff).await.unwrap(), 0);
}

async fn large_batch(h: &Harness) {
    let store = h.store();
    let spots = 300;
    let readings: Vec<SpotReading> = (0..20_000)
        .map(|i| reading(&format!("s{}", i % spots), i, i % 3 == 0))
        .collect();
    store.write_batch(&readings_only(readings)).await.unwrap();
    assert_eq!(store.count_readings().await.unwrap(), 20_000);
    let latest = store.latest_spot_states().await.unwrap();
    assert_eq!(latest.len(), spots as usize);
    let s0 = latest.iter().find(|l| l.spot.as_str() == "s0").unwrap();
    assert_eq!(s0.received_at, t(19_800));
    assert_eq!(
        store
            .spot_readings(&lot("garage-1"), &spot("s0"), 1_000)
            .await
            .unwrap()
            .len(),
        67
    );
}

async fn hourly_occupancy_is_queryable(h: &Harness) {
    let store = h.store();
    // t(0) is 12:00:00 UTC: three readings in the 12:00 hour, one in the 13:00 hour.
    store
        .write_batch(&readings_only(vec![
            reading("a1", 0, true),
            reading("a1", 600, true),
            reading("a1", 3_599, false),
            reading("a1", 3_600, false),
            reading("b1", 60, true),
        ]))
        .await
        .unwrap();
    let rows = h.hourly().await;
    let noon = t(0).timestamp_micros();
    let one = t(3_600).timestamp_micros();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!((rows[0].0, rows[0].2.as_str(), rows[0].3), (noon, "a1", 3));
    assert!((rows[0].4 - 2.0 / 3.0).abs() < 1e-9, "{rows:?}");
    assert_eq!((rows[1].0, rows[1].2.as_str(), rows[1].3), (noon, "b1", 1));
    assert!((rows[1].4 - 1.0).abs() < 1e-9);
    assert_eq!(
        (rows[2].0, rows[2].1.as_str(), rows[2].3),
        (one, "garage-1", 1)
    );
    assert!(rows[2].4.abs() < 1e-9);
}

fn garage(id: &str) -> Lot {
    demo_garage(lot(id), 3, 100)
}

async fn lot_round_trip_and_versions(h: &Harness) {
    let store = h.store();
    assert!(store.lots().await.unwrap().is_empty());
    let mut lot_a = garage("garage-a");
    lot_a.opening_hours =
        serde_json::from_str(r#"[{"day":"Mon","open":"06:00:00","close":"23:30:00"}]"#).unwrap();
    lot_a.spots[4].out_of_service = true;
    lot_a.spots[5].walk_m = None;
    assert_eq!(store.put_lot(&lot_a).await.unwrap(), 1);
    let lot_b = garage("garage-b");
    assert_eq!(store.put_lot(&lot_b).await.unwrap(), 1);
    assert_eq!(
        store.lot(&lot("garage-a")).await.unwrap(),
        Some(lot_a.clone())
    );
    assert_eq!(store.lots().await.unwrap(), vec![lot_a.clone(), lot_b]);
    assert_eq!(store.put_lot(&lot_a).await.unwrap(), 2);
    assert_eq!(
        store.lot_versions().await.unwrap(),
        vec![(lot("garage-a"), 2), (lot("garage-b"), 1)]
    );
    assert!(store.delete_lot(&lot("garage-b")).await.unwrap());
    assert!(!store.delete_lot(&lot("garage-b")).await.unwrap());
    assert_eq!(store.lot(&lot("garage-b")).await.unwrap(), None);
    assert_eq!(store.lots().await.unwrap().len(), 1);
}

async fn lot_replacement_drops_removed_spots(h: &Harness) {
    let store = h.store();
    let mut lot_a = garage("garage-a");
    store.put_lot(&lot_a).await.unwrap();
    // Remove ten spots, move one, reorder two.
    lot_a.spots.drain(10..20);
    lot_a.spots[0].x += 1.0;
    lot_a.spots.swap(1, 2);
    store.put_lot(&lot_a).await.unwrap();
    let stored = store.lot(&lot("garage-a")).await.unwrap().unwrap();
    assert_eq!(stored.spots.len(), 290);
    assert_eq!(stored, lot_a);
}

async fn large_lot(h: &Harness) {
    let store = h.store();
    let big = demo_garage(lot("big"), 4, 5_000);
    assert_eq!(big.spots.len(), 20_000);
    store.put_lot(&big).await.unwrap();
    assert_eq!(store.lot(&lot("big")).await.unwrap(), Some(big));
}

fn user(id: &str, email: &str) -> User {
    User {
        id: id.into(),
        email: Email::parse(email).unwrap(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        role: Role::Driver,
        display_name: String::new(),
        disabled: false,
        created_at: t(0),
        password_changed_at: t(0),
    }
}

fn session(id: &str, user_id: &str, token: u8) -> SessionRow {
    SessionRow {
        id: id.into(),
        user_id: user_id.into(),
        token_sha256: [token; 32],
        created_at: t(10),
        last_seen_at: t(10),
        expires_at: t(100_000),
        user_agent: "test".into(),
        ip: "127.0.0.1".into(),
        revoked_at: None,
        revoked_reason: None,
    }
}

async fn accounts_round_trip_and_unique_email(h: &Harness) {
    let store = h.store();
    let ana = user("u1", "ana@example.com");
    store.create_user(&ana).await.unwrap();
    assert_eq!(store.user("u1").await.unwrap(), Some(ana.clone()));
    assert_eq!(
        store
            .user_by_email(&Email::parse("ANA@example.com").unwrap())
            .await
            .unwrap(),
        Some(ana.clone())
    );
    assert!(store.user("nobody").await.unwrap().is_none());
    let err = store
        .create_user(&user("u2", "ana@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(store.set_role("u1", Role::Operator).await.unwrap());
    assert!(!store.set_role("nobody", Role::Admin).await.unwrap());
    assert_eq!(store.users().await.unwrap()[0].role, Role::Operator);

    store.create_session(&session("s1", "u1", 1)).await.unwrap();
    let (found, owner) = store.session_by_token(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(found, session("s1", "u1", 1));
    assert_eq!(owner.id, "u1");
    assert!(store.session_by_token(&[9; 32]).await.unwrap().is_none());
    store.touch_session("s1", t(50)).await.unwrap();
    let (found, _) = store.session_by_token(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(found.last_seen_at, t(50));
    assert_eq!(store.active_sessions("u1", t(60)).await.unwrap().len(), 1);
    assert!(
        store
            .active_sessions("u1", t(100_001))
            .await
            .unwrap()
            .is_empty(),
        "expired"
    );
    assert!(
        !store
            .revoke_session("u2", "s1", t(70), "logout")
            .await
            .unwrap(),
        "not theirs"
    );
    assert!(
        store
            .revoke_session("u1", "s1", t(70), "logout")
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_session("u1", "s1", t(71), "logout")
            .await
            .unwrap(),
        "once"
    );
    let (found, _) = store.session_by_token(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(found.revoked_at, Some(t(70)));
    assert_eq!(found.revoked_reason.as_deref(), Some("logout"));
    assert!(store.active_sessions("u1", t(80)).await.unwrap().is_empty());
}

async fn password_change_revokes_other_sessions(h: &Harness) {
    let store = h.store();
    store
        .create_user(&user("u1", "ana@example.com"))
        .await
        .unwrap();
    for (id, token) in [("a", 1), ("b", 2), ("c", 3)] {
        store
            .create_session(&session(id, "u1", token))
            .await
            .unwrap();
    }
    let revoked = store
        .set_password("u1", "$argon2id$new", t(20), Some("b"))
        .await
        .unwrap();
    assert_eq!(revoked, 2);
    let active = store.active_sessions("u1", t(30)).await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, "b");
    let changed = store.user("u1").await.unwrap().unwrap();
    assert_eq!(changed.password_hash, "$argon2id$new");
    assert_eq!(changed.password_changed_at, t(20));
    let (a, _) = store.session_by_token(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(a.revoked_reason.as_deref(), Some("password_changed"));
    assert_eq!(
        store.set_password("u1", "x", t(40), None).await.unwrap(),
        1,
        "without keep, every session"
    );
    assert!(matches!(
        store.set_password("nobody", "x", t(40), None).await,
        Err(StoreError::Conflict(_))
    ));
}

async fn disabling_revokes_every_session(h: &Harness) {
    let store = h.store();
    store
        .create_user(&user("u1", "ana@example.com"))
        .await
        .unwrap();
    store
        .create_user(&user("u2", "bo@example.com"))
        .await
        .unwrap();
    store.create_session(&session("a", "u1", 1)).await.unwrap();
    store.create_session(&session("b", "u2", 2)).await.unwrap();
    assert!(store.set_user_disabled("u1", true, t(20)).await.unwrap());
    assert!(store.active_sessions("u1", t(30)).await.unwrap().is_empty());
    assert_eq!(store.active_sessions("u2", t(30)).await.unwrap().len(), 1);
    let (a, owner) = store.session_by_token(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(a.revoked_reason.as_deref(), Some("disabled"));
    assert!(owner.disabled);
    assert!(store.set_user_disabled("u1", false, t(40)).await.unwrap());
    assert!(!store.user("u1").await.unwrap().unwrap().disabled);
    assert!(
        !store
            .set_user_disabled("nobody", true, t(40))
            .await
            .unwrap()
    );
}

async fn vehicles_per_driver(h: &Harness) {
    let store = h.store();
    store
        .create_user(&user("u1", "ana@example.com"))
        .await
        .unwrap();
    store
        .create_user(&user("u2", "bo@example.com"))
        .await
        .unwrap();
    let vehicle = |id: &str, user_id: &str, plate: &str| VehicleRow {
        id: id.into(),
        user_id: user_id.into(),
        plate: Plate::parse(plate).unwrap(),
        profile: VehicleProfile {
            class: VehicleClass::Car,
            ev: true,
            accessible_permit: false,
        },
        label: "blue".into(),
        created_at: t(5),
    };
    store
        .add_vehicle(&vehicle("v1", "u1", "B-AB 123"))
        .await
        .unwrap();
    let err = store
        .add_vehicle(&vehicle("v2", "u1", "bab123"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(_)),
        "same plate key: {err:?}"
    );
    store
        .add_vehicle(&vehicle("v3", "u2", "B-AB 123"))
        .await
        .unwrap();
    assert_eq!(
        store.vehicles("u1").await.unwrap(),
        vec![vehicle("v1", "u1", "B-AB 123")]
    );
    assert!(
        !store.delete_vehicle("u2", "v1").await.unwrap(),
        "not theirs"
    );
    assert!(store.delete_vehicle("u1", "v1").await.unwrap());
    assert!(store.vehicles("u1").await.unwrap().is_empty());
}

fn reservation(id: &str, spot_id: &str, from_min: i64, to_min: i64) -> ReservationRow {
    ReservationRow {
        id: id.into(),
        code: format!("C{id}"),
        user_id: "u1".into(),
        vehicle_id: None,
        plate_key: "BAB123".into(),
        vehicle_type: VehicleType::Car,
        lot: lot("garage-a"),
        spot: spot(spot_id),
        starts_at: t(from_min * 60),
        ends_at: t(to_min * 60),
        state: ReservationState::Confirmed,
        created_at: t(0),
        updated_at: t(0),
    }
}

async fn exactly_one_winner_when_fifty_race_for_a_spot(h: &Harness) {
    h.store()
        .create_user(&user("u1", "ana@example.com"))
        .await
        .unwrap();
    let mut all_winners = Vec::new();
    for round in 0..10 {
        let spot_id = format!("s{round}");
        let mut tasks = Vec::new();
        for racer in 0..50i64 {
            let store = h.store.clone();
            // Every interval covers minute 100..110; starts and ends vary.
            let r = reservation(
                &format!("r{round}-{racer}"),
                &spot_id,
                100 - racer % 7,
                110 + racer % 5,
            );
            tasks.push(tokio::spawn(async move {
                match store.create_reservation(&r, None).await {
                    Ok(()) => Some(r.id),
                    Err(StoreError::Conflict(_)) => None,
                    Err(other) => panic!("{other:?}"),
                }
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            if let Some(id) = task.await.unwrap() {
                winners.push(id);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        all_winners.extend(winners);
    }
    // Afterwards, over the whole table: no two holding reservations of a spot overlap.
    let holding = h
        .store()
        .holding_between(&lot("garage-a"), t(0), t(1_000_000))
        .await
        .unwrap();
    assert_eq!(holding.len(), 10);
    for a in &holding {
        for b in &holding {
            if a.id != b.id && a.spot == b.spot {
                assert!(
                    a.ends_at <= b.starts_at || b.ends_at <= a.starts_at,
                    "{a:?} {b:?}"
                );
            }
        }
    }
}

async fn reservations_round_trip_and_transitions(h: &Harness) {
    let store = h.store();
    store
        .create_user(&user("u1", "ana@example.com"))
        .await
        .unwrap();
    let first = reservation("r1", "s1", 60, 120);
    store.create_reservation(&first, None).await.unwrap();
    assert_eq!(store.reservation("r1").await.unwrap(), Some(first.clone()));
    // Back to back is fine; an overlap is not; another spot is fine.
    store
        .create_reservation(&reservation("r2", "s1", 120, 180), None)
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_reservation(&reservation("r3", "s1", 100, 130), None)
            .await,
        Err(StoreError::Conflict(_))
    ));
    store
        .create_reservation(&reservation("r4", "s2", 100, 130), None)
        .await
        .unwrap();
    // A cancelled reservation frees its time.
    assert!(
        store
            .transition_reservation(
                "r1",
                &[ReservationState::Confirmed],
                ReservationState::Cancelled,
                t(10)
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .transition_reservation(
                "r1",
                &[ReservationState::Confirmed],
                ReservationState::CheckedIn,
                t(11)
            )
            .await
            .unwrap(),
        "not confirmed any more"
    );
    assert!(
        !store
            .transition_reservation(
                "nope",
                &[ReservationState::Confirmed],
                ReservationState::Cancelled,
                t(11)
            )
            .await
            .unwrap()
    );
    store
        .create_reservation(&reservation("r5", "s1", 60, 110), None)
        .await
        .unwrap();
    let mine = store.reservations_of("u1", 10).await.unwrap();
    assert_eq!(mine.len(), 4);
    assert_eq!(mine[0].id, "r2", "newest start first");
    // Moving: into a free time is fine, onto another booking is not, a cancelled one never.
    assert!(
        store
            .move_reservation("r4", t(100 * 60), t(200 * 60), t(12))
            .await
            .unwrap()
    );
    assert!(matches!(
        store
            .move_reservation("r5", t(60 * 60), t(130 * 60), t(12))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        !store
            .move_reservation("r1", t(0), t(30 * 60), t(12))
            .await
            .unwrap()
    );
    let moved = store.reservation("r4").await.unwrap().unwrap();
    assert_eq!((moved.ends_at, moved.updated_at), (t(200 * 60), t(12)));
    assert_eq!(
        store.reservation("r5").await.unwrap().unwrap().ends_at,
        t(110 * 60)
    );
    let cancelled = store.reservation("r1").await.unwrap().unwrap();
    assert_eq!(cancelled.state, ReservationState::Cancelled);
    assert_eq!(cancelled.updated_at, t(10));
    let holding = store
        .holding_between(&lot("garage-a"), t(105 * 60), t(125 * 60))
        .await
        .unwrap();
    let ids: Vec<&str> = holding.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["r5", "r2", "r4"]);
}

async fn no_shows_release_their_spot(h: &Harness) {
    let store = h.store();
    store
        .create_user(&user("u1", "ana@example.com"))
        .await
        .unwrap();
    store
        .create_reservation(&reservation("early", "s1", 60, 120), None)
        .await
        .unwrap();
    store
        .create_reservation(&reservation("late", "s2", 200, 260), None)
        .await
        .unwrap();
    let mut checked_in = reservation("in", "s3", 60, 120);
    checked_in.state = ReservationState::CheckedIn;
    store.create_reservation(&checked_in, None).await.unwrap();
    // At minute 90 with a 30-minute grace, reservations that started by minute 60 are due.
    let marked = store.mark_no_shows(t(60 * 60), t(90 * 60)).await.unwrap();
    let ids: Vec<&str> = marked.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["early"]);
    assert_eq!(marked[0].state, ReservationState::NoShow);
    assert!(
        store
            .mark_no_shows(t(60 * 60), t(91 * 60))
            .await
            .unwrap()
            .is_empty(),
        "once"
    );
    // Its spot can be booked again for the rest of its time.
    store
        .create_reservation(&reservation("walk-in", "s1", 90, 120), None)
        .await
        .unwrap();
    assert_eq!(
        store.reservation("late").await.unwrap().unwrap().state,
        ReservationState::Confirmed
    );
}

async fn idempotency_keys(h: &Harness) {
    let store = h.store();
    let scope = "POST /api/v1/reservations";
    let begin = |key: &'static str, hash: u8| {
        let store = h.store.clone();
        async move {
            store
                .begin_idempotent("u1", key, scope, &[hash; 32], t(0))
                .await
                .unwrap()
        }
    };
    // Twenty concurrent first uses of one key: exactly one starts.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .begin_idempotent("u1", "k1", scope, &[1; 32], t(0))
                .await
                .unwrap()
        }));
    }
    let mut started = 0;
    for task in tasks {
        match task.await.unwrap() {
            IdempotencyBegin::Started => started += 1,
            IdempotencyBegin::InFlight => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(started, 1);
    assert_eq!(
        begin("k1", 2).await,
        IdempotencyBegin::Mismatch,
        "another body"
    );
    store
        .finish_idempotent("u1", "k1", 201, "{\"id\":\"r1\"}", t(1))
        .await
        .unwrap();
    assert_eq!(
        begin("k1", 1).await,
        IdempotencyBegin::Replay {
            status: 201,
            body: "{\"id\":\"r1\"}".into()
        }
    );
    assert_eq!(
        store
            .begin_idempotent("u1", "k1", "POST /other", &[1; 32], t(2))
            .await
            .unwrap(),
        IdempotencyBegin::Mismatch,
        "another route"
    );
    assert_eq!(
        store
            .begin_idempotent("u2", "k1", scope, &[1; 32], t(2))
            .await
            .unwrap(),
        IdempotencyBegin::Started,
        "keys are per user"
    );
    // An abandoned request can be retried; a finished one is not abandoned.
    assert_eq!(begin("k2", 1).await, IdempotencyBegin::Started);
    store.abandon_idempotent("u1", "k2").await.unwrap();
    assert_eq!(begin("k2", 1).await, IdempotencyBegin::Started);
    store.abandon_idempotent("u1", "k1").await.unwrap();
    assert!(matches!(
        begin("k1", 1).await,
        IdempotencyBegin::Replay { .. }
    ));
    assert_eq!(store.purge_idempotent(t(3)).await.unwrap(), 3);
    assert_eq!(begin("k1", 9).await, IdempotencyBegin::Started, "forgotten");
}

async fn holding_spans_are_where_and_when(h: &Harness) {
    let store = h.store();
    store
        .create_user(&user("u1", "ana@example.com"))
        .await
        .unwrap();
    for (id, spot_id, from, to) in [
        ("a", "s1", 60, 120),
        ("b", "s1", 120, 180),
        ("c", "s2", 100, 400),
        ("gone", "s3", 100, 200),
    ] {
        store
            .create_reservation(&reservation(id, spot_id, from, to), None)
            .await
            .unwrap();
    }
    store
        .transition_reservation(
            "gone",
            &[ReservationState::Confirmed],
            ReservationState::Cancelled,
            t(1),
        )
        .await
        .unwrap();
    let mut spans = store
        .holding_spans(&lot("garage-a"), None, t(110 * 60), t(130 * 60))
        .await
        .unwrap();
    spans.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(
        spans,
        vec![
            HoldingSpan {
                id: "a".into(),
                spot: spot("s1"),
                starts_at: t(60 * 60),
                ends_at: t(120 * 60)
            },
            HoldingSpan {
                id: "b".into(),
                spot: spot("s1"),
                starts_at: t(120 * 60),
                ends_at: t(180 * 60)
            },
            HoldingSpan {
                id: "c".into(),
                spot: spot("s2"),
                starts_at: t(100 * 60),
                ends_at: t(400 * 60)
            },
        ]
    );
    // One spot; the window's ends are exclusive like the bookings'.
    let one: Vec<String> = store
        .holding_spans(&lot("garage-a"), Some(&spot("s1")), t(0), t(120 * 60))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(one, ["a"]);
    assert!(
        store
            .holding_spans(&lot("garage-b"), None, t(0), t(1_000 * 60))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_reservation_and_its_answer_are_one_write(h: &Harness) {
    let store = h.store();
    let scope = "POST /api/v1/reservations";
    store
        .create_user(&user("u1", "ana@example.com"))
        .await
        .unwrap();
    for key in ["k1", "k2"] {
        assert_eq!(
            store
                .begin_idempotent("u1", key, scope, &[1; 32], t(0))
                .await
                .unwrap(),
            IdempotencyBegin::Started
        );
    }
    let answer = |key| IdempotentAnswer {
        user_id: "u1",
        key,
        status: 201,
        body: "{\"id\":\"r1\"}",
        at: t(1),
    };
    store
        .create_reservation(&reservation("r1", "s1", 60, 120), Some(answer("k1")))
        .await
        .unwrap();
    assert_eq!(
        store
            .begin_idempotent("u1", "k1", scope, &[1; 32], t(2))
            .await
            .unwrap(),
        IdempotencyBegin::Replay {
            status: 201,
            body: "{\"id\":\"r1\"}".into()
        }
    );
    // A conflict writes neither the row nor the answer.
    assert!(matches!(
        store
            .create_reservation(&reservation("r2", "s1", 90, 150), Some(answer("k2")))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.reservation("r2").await.unwrap(), None);
    assert_eq!(
        store
            .begin_idempotent("u1", "k2", scope, &[1; 32], t(2))
            .await
            .unwrap(),
        IdempotencyBegin::InFlight
    );
}

fn parking(
    id: &str,
    plate_key: Option<&str>,
    reservation_id: Option<&str>,
    secs: i64,
) -> ParkingSession {
    ParkingSession {
        id: id.into(),
        lot: lot("garage-a"),
        plate_key: plate_key.map(Into::into),
        plate: plate_key.map(Into::into),
        vehicle_type: VehicleType::Car,
        reservation_id: reservation_id.map(Into::into),
        user_id: None,
        entry_gate: Some(GateId::parse("in-1").unwrap()),
        assigned_spot: Some(spot("s1")),
        sensed_spot: None,
        entered_at: t(secs),
        exit_gate: None,
        exited_at: None,
        overstay_s: None,
    }
}

async fn gate_decisions_are_recorded_once(h: &Harness) {
    let store = h.store();
    let (l, g) = (lot("garage-a"), GateId::parse("in-1").unwrap());
    assert_eq!(store.gate_decision(&l, &g, "r-1").await.unwrap(), None);
    assert_eq!(
        store
            .record_gate_decision(&l, &g, "r-1", r#"{"action":"open"}"#, t(1))
            .await
            .unwrap(),
        None
    );
    // A second decision of the same request gets the first one back, and changes nothing.
    assert_eq!(
        store
            .record_gate_decision(&l, &g, "r-1", r#"{"action":"deny"}"#, t(2))
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"action":"open"}"#)
    );
    assert_eq!(
        store.gate_decision(&l, &g, "r-1").await.unwrap().as_deref(),
        Some(r#"{"action":"open"}"#)
    );
    // Request ids are per gate.
    let other = GateId::parse("in-2").unwrap();
    assert_eq!(store.gate_decision(&l, &other, "r-1").await.unwrap(), None);
    // Racing duplicates: exactly one wins, all see the winner.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = h.store.clone();
        let (l, g) = (l.clone(), g.clone());
        tasks.push(tokio::spawn(async move {
            let mine = format!("{{\"n\":{i}}}");
            let earlier = store
                .record_gate_decision(&l, &g, "race", &mine, t(3))
                .await
                .unwrap();
            earlier.unwrap_or(mine)
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers.dedup();
    assert_eq!(answers.len(), 1, "{answers:?}");
}

async fn parking_sessions_check_reservations_in_and_out(h: &Harness) {
    let store = h.store();
    store
        .create_user(&user("u1", "ana@example.com"))
        .await
        .unwrap();
    store
        .create_reservation(&reservation("res-1", "s1", 10, 70), None)
        .await
        .unwrap();
    assert_eq!(
        store
            .reservation_by_code("Cres-1")
            .await
            .unwrap()
            .unwrap()
            .id,
        "res-1"
    );
    assert!(store.reservation_by_code("nope").await.unwrap().is_none());

    let session = parking("p-1", Some("BAB123"), Some("res-1"), 600);
    store.open_parking_session(&session, t(600)).await.unwrap();
    let checked_in = store.reservation("res-1").await.unwrap().unwrap();
    assert_eq!(checked_in.state, ReservationState::CheckedIn);
    assert_eq!(
        store.parking_session("p-1").await.unwrap().unwrap(),
        session
    );
    assert_eq!(
        store
            .open_parking_session_of_plate(&lot("garage-a"), "BAB123")
            .await
            .unwrap()
            .unwrap()
            .id,
        "p-1"
    );
    assert_eq!(
        store
            .open_parking_session_of_reservation("res-1")
            .await
            .unwrap()
            .unwrap()
            .id,
        "p-1"
    );
    assert!(store.set_sensed_spot("p-1", &spot("s2")).await.unwrap());
    assert_eq!(
        store.open_parking_sessions(&lot("garage-a")).await.unwrap()[0].sensed_spot,
        Some(spot("s2"))
    );

    let exit_gate = GateId::parse("out-1").unwrap();
    assert!(
        store
            .close_parking_session("p-1", t(4500), Some(&exit_gate), Some(300))
            .await
            .unwrap()
    );
    // Closing twice does nothing; a closed session takes no sensed spot.
    assert!(
        !store
            .close_parking_session("p-1", t(4600), None, None)
            .await
            .unwrap()
    );
    assert!(!store.set_sensed_spot("p-1", &spot("s3")).await.unwrap());
    let closed = store.parking_session("p-1").await.unwrap().unwrap();
    assert_eq!(closed.exited_at, Some(t(4500)));
    assert_eq!(closed.exit_gate, Some(exit_gate));
    assert_eq!(closed.overstay_s, Some(300));
    assert_eq!(
        store.reservation("res-1").await.unwrap().unwrap().state,
        ReservationState::Completed
    );
    assert!(
        store
            .open_parking_sessions(&lot("garage-a"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .open_parking_session_of_plate(&lot("garage-a"), "BAB123")
            .await
            .unwrap()
            .is_none()
    );

    // A completed reservation cannot be checked in again, and nothing is half-written.
    let again = parking("p-2", Some("OTHER1"), Some("res-1"), 5000);
    assert!(matches!(
        store.open_parking_session(&again, t(5000)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.parking_session("p-2").await.unwrap().is_none());

    // History, newest first.
    store
        .open_parking_session(&parking("p-3", Some("WALK1"), None, 6000), t(6000))
        .await
        .unwrap();
    let history = store
        .parking_sessions_between(&lot("garage-a"), t(0), t(10_000), 10)
        .await
        .unwrap();
    let ids: Vec<&str> = history.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["p-3", "p-1"]);
}

async fn one_open_session_per_plate_and_reservation(h: &Harness) {
    let store = h.store();
    store
        .open_parking_session(&parking("a", Some("XY1"), None, 10), t(10))
        .await
        .unwrap();
    // The same plate again while inside: refused (anti-passback), also when racing.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .open_parking_session(&parking(&format!("b{i}"), Some("XY1"), None, 20), t(20))
                .await
        }));
    }
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Err(StoreError::Conflict(_))));
    }
    // Sessions without a plate (app check-in) do not collide; after exit the plate may enter.
    store
        .open_parking_session(&parking("c", None, None, 30), t(30))
        .await
        .unwrap();
    store
        .open_parking_session(&parking("d", None, None, 31), t(31))
        .await
        .unwrap();
    assert!(
        store
            .close_parking_session("a", t(40), None, None)
            .await
            .unwrap()
    );
    store
        .open_parking_session(&parking("e", Some("XY1"), None, 50), t(50))
        .await
        .unwrap();
    // A reservation that is not confirmed is never checked in.
    store
        .create_user(&user("u1", "ana@example.com"))
        .await
        .unwrap();
    let mut cancelled = reservation("res-c", "s9", 0, 60);
    cancelled.state = ReservationState::Cancelled;
    store.create_reservation(&cancelled, None).await.unwrap();
    assert!(matches!(
        store
            .open_parking_session(&parking("f", Some("ZZ9"), Some("res-c"), 60), t(60))
            .await,
        Err(StoreError::Conflict(_))
    ));
}

async fn operator_actions_are_an_audit_trail(h: &Harness) {
    let store = h.store();
    let action = |id: &str, secs: i64, lot_id: &str, what: &str| OperatorAction {
        id: id.into(),
        at: t(secs),
        user_id: "op-1".into(),
        lot: lot(lot_id),
        gate: (what == "gate_open").then(|| GateId::parse("in-1").unwrap()),
        action: what.into(),
        reason: format!("{what} because"),
    };
    store
        .record_operator_action(&action("a", 10, "garage-a", "emergency_start"))
        .await
        .unwrap();
    store
        .record_operator_action(&action("b", 20, "garage-a", "gate_open"))
        .await
        .unwrap();
    store
        .record_operator_action(&action("c", 30, "garage-b", "emergency_start"))
        .await
        .unwrap();
    store
        .record_operator_action(&action("d", 40, "garage-a", "emergency_end"))
        .await
        .unwrap();
    let of_a = store
        .operator_actions(Some(&lot("garage-a")), 10)
        .await
        .unwrap();
    let ids: Vec<&str> = of_a.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["d", "b", "a"]);
    assert_eq!(of_a[1], action("b", 20, "garage-a", "gate_open"));
    assert_eq!(store.operator_actions(None, 2).await.unwrap().len(), 2);
    // Only the three actions are allowed.
    assert!(
        store
            .record_operator_action(&action("e", 50, "garage-a", "delete_everything"))
            .await
            .is_err()
    );
}
