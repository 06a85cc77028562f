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
use parkd_core::tariff::Currency;
use parkd_core::vehicle::VehicleType;
use parkd_store::CardRef;
use parkd_store::postgres::PostgresStore;
use parkd_store::{
    Device, DeviceBinding, DeviceStatusRow, HeartbeatRow, HoldingSpan, IdempotencyBegin,
    IdempotentAnswer, LedgerKind, NewAdjustment, OperatorAction, ParkingSession, PaymentPurpose,
    PaymentRow, PaymentStatus, PaymentUpdate, RefundRow, RefundStatus, ReservationRow, SessionRow,
    SpotLatest, SpotReading, StatusChange, Store, StoreConfig, StoreError, TelemetryBatch, User,
    VehicleRow, testing,
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
    gate_decisions_are_pruned_in_batches,
    parking_sessions_check_reservations_in_and_out,
    one_open_session_per_plate_and_reservation,
    operator_actions_are_an_audit_trail,
    an_emergency_is_found_quickly_behind_a_long_audit_trail,
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
    concurrent_creates_each_get_their_own_rows_answer,
    one_reservation_per_key_when_retries_race,
    tariffs_are_versioned_per_lot,
    payments_round_trip_and_compare_and_set,
    one_payment_in_flight_per_bill,
    settling_writes_exactly_one_ledger_row,
    concurrent_refunds_never_exceed_the_capture,
    pending_refunds_reserve_and_failed_ones_give_back,
    ledger_refuses_update_and_delete,
    webhook_events_are_recorded_once,
    revenue_per_currency_and_ledger_pages,
    retention_leaves_the_ledger_alone,
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

/// Creates arriving together (on PostgreSQL they share one statement: `postgres/batch.rs`)
/// each get the answer their own row would get alone: the free ones go in with their keys,
/// one of several overlapping ones wins, a taken key and a missing user refuse only their
/// own row.
async fn concurrent_creates_each_get_their_own_rows_answer(h: &Harness) {
    let scope = "POST /api/v1/reservations";
    let store = h.store();
    store
        .create_user(&user("u1", "ana@example.com"))
        .await
        .unwrap();
    let earlier = IdempotentAnswer {
        user_id: "u1",
        key: "k-taken",
        scope,
        request_sha256: &[9; 32],
        status: 201,
        body: "earlier",
        at: t(1),
    };
    store
        .create_reservation(&reservation("earlier", "e", 60, 120), Some(earlier))
        .await
        .unwrap();

    // (row, idempotency key)
    let mut creates: Vec<(ReservationRow, Option<String>)> = Vec::new();
    for i in 0..20 {
        let key = (i % 2 == 0).then(|| format!("k-free-{i}"));
        creates.push((
            reservation(&format!("free-{i}"), &format!("f{i}"), 60, 120),
            key,
        ));
    }
    for i in 0..5 {
        creates.push((
            reservation(&format!("same-{i}"), "x", 100 - i, 110 + i),
            None,
        ));
    }
    creates.push((reservation("dup", "d", 60, 120), Some("k-taken".to_owned())));
    let mut ghost = reservation("ghost", "g", 60, 120);
    ghost.user_id = "nobody".into();
    creates.push((ghost, None));

    let tasks: Vec<_> = creates
        .into_iter()
        .map(|(row, key)| {
            let store = h.store.clone();
            tokio::spawn(async move {
                let answer = key.as_deref().map(|key| IdempotentAnswer {
                    user_id: "u1",
                    key,
                    scope,
                    request_sha256: &[1; 32],
                    status: 201,
                    body: &row.id,
                    at: t(2),
                });
                let result = store.create_reservation(&row, answer).await;
                (row.id.clone(), result)
            })
        })
        .collect();
    let mut made = Vec::new();
    let mut refused = Vec::new();
    for task in tasks {
        let (id, result) = task.await.unwrap();
        match (id.as_str(), result) {
            (_, Ok(())) => made.push(id),
            ("dup", Err(StoreError::IdempotencyKeyTaken)) => refused.push(id),
            ("ghost", Err(StoreError::Conflict(_))) => refused.push(id),
            (same, Err(StoreError::Conflict(_))) if same.starts_with("same-") => refused.push(id),
            (other, result) => panic!("{other}: {result:?}"),
        }
    }
    assert_eq!(refused.len(), 4 + 2, "{refused:?}");
    assert_eq!(made.len(), 20 + 1, "{made:?}");
    for id in &made {
        assert!(store.reservation(id).await.unwrap().is_some(), "{id}");
    }
    for id in &refused {
        assert_eq!(store.reservation(id).await.unwrap(), None, "{id}");
    }
    for i in 0..20 {
        let found = store
            .idempotent_lookup("u1", &format!("k-free-{i}"), scope, &[1; 32])
            .await
            .unwrap();
        let expected = (i % 2 == 0).then(|| IdempotencyBegin::Replay {
            status: 201,
            body: format!("free-{i}"),
        });
        assert_eq!(found, expected, "key of free-{i}");
    }
    assert_eq!(
        store
            .idempotent_lookup("u1", "k-taken", scope, &[9; 32])
            .await
            .unwrap(),
        Some(IdempotencyBegin::Replay {
            status: 201,
            body: "earlier".into(),
        })
    );
}

async fn a_reservation_and_its_answer_are_one_write(h: &Harness) {
    let store = h.store();
    let scope = "POST /api/v1/reservations";
    store
        .create_user(&user("u1", "ana@example.com"))
        .await
        .unwrap();
    let answer = |key, hash| IdempotentAnswer {
        user_id: "u1",
        key,
        scope,
        request_sha256: hash,
        status: 201,
        body: "{\"id\":\"r1\"}",
        at: t(1),
    };
    let lookup = |key: &'static str, hash: &'static [u8; 32]| {
        let store = h.store();
        async move {
            store
                .idempotent_lookup("u1", key, scope, hash)
                .await
                .unwrap()
        }
    };
    store
        .create_reservation(
            &reservation("r1", "s1", 60, 120),
            Some(answer("k1", &[1; 32])),
        )
        .await
        .unwrap();
    let replay = IdempotencyBegin::Replay {
        status: 201,
        body: "{\"id\":\"r1\"}".into(),
    };
    assert_eq!(lookup("k1", &[1; 32]).await, Some(replay.clone()));
    assert_eq!(
        lookup("k1", &[2; 32]).await,
        Some(IdempotencyBegin::Mismatch)
    );
    assert_eq!(
        store
            .begin_idempotent("u1", "k1", scope, &[1; 32], t(2))
            .await
            .unwrap(),
        replay
    );
    // The same key again, on a free spot: refused, nothing written.
    assert!(matches!(
        store
            .create_reservation(
                &reservation("r1-again", "s2", 60, 120),
                Some(answer("k1", &[1; 32]))
            )
            .await,
        Err(StoreError::IdempotencyKeyTaken)
    ));
    assert_eq!(store.reservation("r1-again").await.unwrap(), None);
    // A conflict writes neither the row nor the key.
    assert!(matches!(
        store
            .create_reservation(
                &reservation("r2", "s1", 90, 150),
                Some(answer("k2", &[1; 32]))
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.reservation("r2").await.unwrap(), None);
    assert_eq!(lookup("k2", &[1; 32]).await, None);
    // A key claimed by a request still running refuses the write too.
    assert_eq!(
        store
            .begin_idempotent("u1", "k3", scope, &[1; 32], t(2))
            .await
            .unwrap(),
        IdempotencyBegin::Started
    );
    assert!(matches!(
        store
            .create_reservation(
                &reservation("r3", "s3", 60, 120),
                Some(answer("k3", &[1; 32]))
            )
            .await,
        Err(StoreError::IdempotencyKeyTaken)
    ));
    assert_eq!(
        lookup("k3", &[1; 32]).await,
        Some(IdempotencyBegin::InFlight)
    );
    // An answer without a write (a refusal) is recorded once; then the key holds it.
    let refusal = IdempotentAnswer {
        status: 422,
        body: "{\"type\":\"x\"}",
        ..answer("k4", &[4; 32])
    };
    assert_eq!(store.record_idempotent(refusal).await.unwrap(), None);
    assert_eq!(
        store.record_idempotent(refusal).await.unwrap(),
        Some(IdempotencyBegin::Replay {
            status: 422,
            body: "{\"type\":\"x\"}".into()
        })
    );
    assert_eq!(
        store
            .record_idempotent(IdempotentAnswer {
                scope: "POST /api/v1/payments",
                ..refusal
            })
            .await
            .unwrap(),
        Some(IdempotencyBegin::Mismatch)
    );
    assert!(matches!(
        store
            .create_reservation(
                &reservation("r4", "s4", 60, 120),
                Some(answer("k4", &[4; 32]))
            )
            .await,
        Err(StoreError::IdempotencyKeyTaken)
    ));
    assert_eq!(lookup("nothing", &[1; 32]).await, None);
}

async fn one_reservation_per_key_when_retries_race(h: &Harness) {
    let scope = "POST /api/v1/reservations";
    h.store()
        .create_user(&user("u1", "ana@example.com"))
        .await
        .unwrap();
    for round in 0..10 {
        let key = format!("k{round}");
        let mut tasks = Vec::new();
        // Ten retries of one request, each allocated to another spot (as a retry whose first
        // spot was taken would be): one reservation, nine refusals on the key.
        for racer in 0..10 {
            let (store, key) = (h.store.clone(), key.clone());
            let r = reservation(
                &format!("r{round}-{racer}"),
                &format!("s{racer}"),
                round * 100,
                round * 100 + 60,
            );
            tasks.push(tokio::spawn(async move {
                let answer = IdempotentAnswer {
                    user_id: "u1",
                    key: &key,
                    scope,
                    request_sha256: &[7; 32],
                    status: 201,
                    body: &r.id,
                    at: t(1),
                };
                match store.create_reservation(&r, Some(answer)).await {
                    Ok(()) => Some(r.id),
                    Err(StoreError::IdempotencyKeyTaken) => None,
                    Err(other) => panic!("{other:?}"),
                }
            }));
        }
        let mut made = Vec::new();
        for task in tasks {
            made.extend(task.await.unwrap());
        }
        assert_eq!(made.len(), 1, "round {round}: {made:?}");
        assert_eq!(
            h.store()
                .idempotent_lookup("u1", &key, scope, &[7; 32])
                .await
                .unwrap(),
            Some(IdempotencyBegin::Replay {
                status: 201,
                body: made[0].clone()
            })
        );
    }
    let holding = h
        .store()
        .holding_between(&lot("garage-a"), t(0), t(1_000_000))
        .await
        .unwrap();
    assert_eq!(holding.len(), 10);
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

async fn gate_decisions_are_pruned_in_batches(h: &Harness) {
    let store = h.store();
    let (l, g) = (lot("garage-a"), GateId::parse("in-1").unwrap());
    let record = |request_id: String, secs: i64| {
        let (store, l, g) = (h.store.clone(), l.clone(), g.clone());
        async move {
            store
                .record_gate_decision(&l, &g, &request_id, "{}", t(secs))
                .await
                .unwrap()
        }
    };
    for n in 0..25 {
        record(format!("old-{n}"), 100 + n).await;
    }
    record("at-the-limit".into(), 500).await;
    record("new".into(), 900).await;
    // Batches of 10: 10, 10, 5, then nothing left before the limit.
    let mut batches = Vec::new();
    loop {
        let deleted = store
            .delete_gate_decisions_before(t(500), 10)
            .await
            .unwrap();
        batches.push(deleted);
        if deleted < 10 {
            break;
        }
    }
    assert_eq!(batches, [10, 10, 5]);
    assert_eq!(store.gate_decision(&l, &g, "old-0").await.unwrap(), None);
    assert_eq!(store.gate_decision(&l, &g, "old-24").await.unwrap(), None);
    // Decided at or after the limit: kept.
    for kept in ["at-the-limit", "new"] {
        assert!(
            store.gate_decision(&l, &g, kept).await.unwrap().is_some(),
            "{kept}"
        );
    }
    // A pruned request id is decided afresh.
    assert_eq!(record("old-0".into(), 1000).await, None);
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
    // Each lot's newest emergency action, however many other actions follow it.
    for n in 0..25 {
        store
            .record_operator_action(&action(
                &format!("open-{n}"),
                50 + n,
                "garage-b",
                "gate_open",
            ))
            .await
            .unwrap();
    }
    store
        .record_operator_action(&action("only-opens", 90, "garage-c", "gate_open"))
        .await
        .unwrap();
    let mut latest: Vec<(String, String)> = store
        .latest_emergency_actions()
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.lot.to_string(), a.id))
        .collect();
    latest.sort();
    assert_eq!(
        latest,
        [
            ("garage-a".to_owned(), "d".to_owned()),
            ("garage-b".to_owned(), "c".to_owned())
        ]
    );
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

async fn an_emergency_is_found_quickly_behind_a_long_audit_trail(h: &Harness) {
    let store = h.store();
    store
        .record_operator_action(&OperatorAction {
            id: "start".into(),
            at: t(10),
            user_id: "op-1".into(),
            lot: lot("garage-a"),
            gate: None,
            action: "emergency_start".into(),
            reason: "fire alarm".into(),
        })
        .await
        .unwrap();
    // Years of manual opens after it, in the same lot and another, written in one statement.
    let bulk = if store.backend() == "sqlite" {
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO operator_actions (action_id, seq, at, user_id, lot_id, gate_id, action, reason)
         SELECT 'open-' || i, 1000 + i, 20000000 + i, 'op-1',
                CASE i % 2 WHEN 0 THEN 'garage-a' ELSE 'garage-b' END, 'in-1', 'gate_open', 'x'
         FROM n"
    } else {
        "INSERT INTO operator_actions (action_id, at, user_id, lot_id, gate_id, action, reason)
         SELECT 'open-' || i, now(), 'op-1',
                CASE i % 2 WHEN 0 THEN 'garage-a' ELSE 'garage-b' END, 'in-1', 'gate_open', 'x'
         FROM generate_series(1, 20000) AS i"
    };
    h.execute(bulk).await.unwrap();
    // Read at every start: it must not grow with the square of the trail.
    let started = std::time::Instant::now();
    let latest = store.latest_emergency_actions().await.unwrap();
    let took = started.elapsed();
    let ids: Vec<(&str, &str)> = latest
        .iter()
        .map(|a| (a.lot.as_str(), a.id.as_str()))
        .collect();
    assert_eq!(ids, [("garage-a", "start")]);
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
}

// ---------------------------------------------------------------------------------------
// Tariffs, payments, refunds and the ledger.

const TARIFF: &str = r#"{"currency": "EUR", "unit_minutes": 15, "grace_minutes": 15,
    "rates": {"base": {"per_hour": 250}, "daily_max": 2000}}"#;

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn card() -> CardRef {
    CardRef {
        token: "tok_test_ok".into(),
        brand: "visa".into(),
        last4: "4242".into(),
    }
}

/// A payment for reservation `r1` (made by [`payments_fixture`]) in garage-a.
fn payment(id: &str, amount_minor: i64, currency: &str) -> PaymentRow {
    PaymentRow {
        id: id.into(),
        user_id: Some("u1".into()),
        reservation_id: Some("r1".into()),
        session_id: None,
        lot: lot("garage-a"),
        purpose: PaymentPurpose::Reservation,
        amount_minor,
        currency: Currency::parse(currency).unwrap(),
        provider: "test".into(),
        provider_intent_id: None,
        status: PaymentStatus::Created,
        failure_reason: None,
        method: None,
        amount_refunded_minor: 0,
        quote_json: format!(r#"{{"currency":"{currency}","total":{amount_minor},"lines":[]}}"#),
        created_at: t(10),
        updated_at: t(10),
        requested_method: None,
    }
}

fn refund(id: &str, payment_id: &str, amount_minor: i64, status: RefundStatus) -> RefundRow {
    RefundRow {
        id: id.into(),
        payment_id: payment_id.into(),
        amount_minor,
        currency: eur(),
        provider: "test".into(),
        provider_refund_id: None,
        status,
        reason: "requested_by_customer".into(),
        created_at: t(100),
        updated_at: t(100),
    }
}

/// User `u1`, reservation `r1` and open parking session `p1` (garage-a).
async fn payments_fixture(h: &Harness) {
    let store = h.store();
    store
        .create_user(&user("u1", "ana@example.com"))
        .await
        .unwrap();
    store
        .create_reservation(&reservation("r1", "s1", 100, 200), None)
        .await
        .unwrap();
    store
        .open_parking_session(&parking("p1", Some("BAB123"), None, 50), t(50))
        .await
        .unwrap();
}

/// Creates a payment and settles it at `t(secs)`.
async fn settled(h: &Harness, p: PaymentRow, secs: i64) {
    let id = p.id.clone();
    h.store().create_payment(&p).await.unwrap();
    assert!(
        h.store()
            .settle_payment(
                &id,
                &[PaymentStatus::Created],
                &PaymentUpdate::default(),
                t(secs),
                "paid"
            )
            .await
            .unwrap()
    );
}

async fn ledger_sum(h: &Harness, payment_id: &str) -> i64 {
    h.query_i64(&format!(
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM ledger_entries \
         WHERE payment_id = '{payment_id}'"
    ))
    .await
}

async fn tariffs_are_versioned_per_lot(h: &Harness) {
    let store = h.store();
    assert_eq!(store.tariff(&lot("garage-a")).await.unwrap(), None);
    // A tariff belongs to a lot that exists.
    assert!(matches!(
        store.put_tariff(&lot("garage-a"), TARIFF, t(0)).await,
        Err(StoreError::Conflict(_))
    ));
    store.put_lot(&garage("garage-a")).await.unwrap();
    assert_eq!(
        store
            .put_tariff(&lot("garage-a"), TARIFF, t(1))
            .await
            .unwrap(),
        1
    );
    let other = TARIFF.replace("250", "300");
    assert_eq!(
        store
            .put_tariff(&lot("garage-a"), &other, t(2))
            .await
            .unwrap(),
        2
    );
    let row = store.tariff(&lot("garage-a")).await.unwrap().unwrap();
    assert_eq!(row.lot, lot("garage-a"));
    assert_eq!(row.tariff_json, other, "kept verbatim");
    assert_eq!((row.version, row.updated_at), (2, t(2)));
    // Not JSON: refused by the schema, the stored tariff unchanged.
    assert!(
        store
            .put_tariff(&lot("garage-a"), "{not json", t(3))
            .await
            .is_err()
    );
    assert_eq!(
        store
            .tariff(&lot("garage-a"))
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    // Deleting the lot deletes its tariff.
    assert!(store.delete_lot(&lot("garage-a")).await.unwrap());
    assert_eq!(store.tariff(&lot("garage-a")).await.unwrap(), None);
}

/// At most one open payment per session (exit) and per reservation (prepayment): a second
/// is refused naming the first, until the first has an outcome. Other bills are not held up.
async fn one_payment_in_flight_per_bill(h: &Harness) {
    payments_fixture(h).await;
    let store = h.store();
    let first = PaymentRow {
        requested_method: Some("pm_card_visa".into()),
        ..payment("pay-a", 600, "EUR")
    };
    store.create_payment(&first).await.unwrap();
    assert_eq!(store.payment("pay-a").await.unwrap(), Some(first.clone()));
    let refused = store.create_payment(&payment("pay-b", 600, "EUR")).await;
    assert!(
        matches!(
            &refused,
            Err(StoreError::PaymentInProgress { payment_id, status })
                if payment_id == "pay-a" && *status == PaymentStatus::Created
        ),
        "{refused:?}"
    );
    assert_eq!(
        store.payment("pay-b").await.unwrap(),
        None,
        "nothing written"
    );
    // The session's exit payment is another bill.
    let exit = |id: &str| PaymentRow {
        reservation_id: None,
        session_id: Some("p1".into()),
        purpose: PaymentPurpose::Exit,
        ..payment(id, 300, "EUR")
    };
    store.create_payment(&exit("pay-x1")).await.unwrap();
    assert!(matches!(
        store.create_payment(&exit("pay-x2")).await,
        Err(StoreError::PaymentInProgress { payment_id, .. }) if payment_id == "pay-x1"
    ));
    // Every open status holds the bill; an outcome frees it.
    for (from, to) in [
        (PaymentStatus::Created, PaymentStatus::RequiresAction),
        (PaymentStatus::RequiresAction, PaymentStatus::Processing),
        (PaymentStatus::Processing, PaymentStatus::PendingUnknown),
    ] {
        assert!(
            store
                .update_payment_status("pay-a", &[from], to, &PaymentUpdate::default(), t(20))
                .await
                .unwrap()
        );
        assert!(matches!(
            store.create_payment(&payment("pay-b", 600, "EUR")).await,
            Err(StoreError::PaymentInProgress { status, .. }) if status == to
        ));
    }
    assert!(
        store
            .update_payment_status(
                "pay-a",
                &[PaymentStatus::PendingUnknown],
                PaymentStatus::Failed,
                &PaymentUpdate::default(),
                t(21)
            )
            .await
            .unwrap()
    );
    store
        .create_payment(&payment("pay-b", 600, "EUR"))
        .await
        .unwrap();
    assert!(
        store
            .settle_payment(
                "pay-x1",
                &[PaymentStatus::Created],
                &PaymentUpdate::default(),
                t(22),
                "paid"
            )
            .await
            .unwrap()
    );
    store.create_payment(&exit("pay-x2")).await.unwrap();
    // The database holds the rule whatever the code does.
    let at = match h.raw {
        Raw::Sqlite { .. } => "0",
        Raw::Postgres { .. } => "'2026-03-01T12:00:00Z'",
    };
    let err = h
        .execute(&format!(
            "INSERT INTO payments (payment_id, lot_id, purpose, amount_minor, currency, provider,
                 status, quote, created_at, updated_at, session_id)
             VALUES ('pay-raw', 'garage-a', 'exit', 100, 'EUR', 'test', 'processing', '{{}}',
                 {at}, {at}, 'p1')"
        ))
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("unique"), "{err}");
    // A token that is a card number is refused as the requested method too.
    let err = h
        .execute(
            "UPDATE payments SET requested_method = 'tok_4242424242424242' \
             WHERE payment_id = 'pay-b'",
        )
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("check"), "{err}");
}

async fn payments_round_trip_and_compare_and_set(h: &Harness) {
    payments_fixture(h).await;
    let store = h.store();
    let p = payment("pay-1", 1_250, "EUR");
    store.create_payment(&p).await.unwrap();
    assert_eq!(store.payment("pay-1").await.unwrap(), Some(p.clone()));
    assert_eq!(store.payment("nope").await.unwrap(), None);
    assert!(matches!(
        store.create_payment(&p).await,
        Err(StoreError::Conflict(_))
    ));
    // An exit payment of the session, by a driver without an account.
    let exit = PaymentRow {
        id: "pay-exit".into(),
        user_id: None,
        reservation_id: None,
        session_id: Some("p1".into()),
        purpose: PaymentPurpose::Exit,
        ..payment("pay-exit", 500, "EUR")
    };
    store.create_payment(&exit).await.unwrap();
    assert_eq!(
        store.payments_of_session("p1").await.unwrap(),
        vec![exit.clone()]
    );
    assert_eq!(
        store.payments_of_reservation("r1").await.unwrap(),
        vec![p.clone()]
    );
    // Unknown reservation, missing link, may not start succeeded.
    let unknown = PaymentRow {
        reservation_id: Some("r-unknown".into()),
        ..payment("pay-2", 100, "EUR")
    };
    assert!(matches!(
        store.create_payment(&unknown).await,
        Err(StoreError::Conflict(_))
    ));
    let unlinked = PaymentRow {
        reservation_id: None,
        ..payment("pay-3", 100, "EUR")
    };
    assert!(store.create_payment(&unlinked).await.is_err());
    let born_paid = PaymentRow {
        status: PaymentStatus::Succeeded,
        ..payment("pay-4", 100, "EUR")
    };
    assert!(matches!(
        store.create_payment(&born_paid).await,
        Err(StoreError::Conflict(_))
    ));
    // The schema refuses a zero amount, a lower-case currency and a card number as token.
    assert!(
        store
            .create_payment(&payment("pay-5", 0, "EUR"))
            .await
            .is_err()
    );
    let mut lower = payment("pay-6", 100, "EUR");
    let at = match h.raw {
        Raw::Sqlite { .. } => "0",
        Raw::Postgres { .. } => "'2026-03-01T12:00:00Z'",
    };
    let insert = |currency: &str| {
        format!(
            "INSERT INTO payments (payment_id, lot_id, purpose, amount_minor, currency, provider,
                 status, quote, created_at, updated_at, reservation_id)
             VALUES ('pay-raw-{currency}', 'garage-a', 'reservation', 100, '{currency}', 'test',
                 'failed', '{{}}', {at}, {at}, 'r1')"
        )
    };
    // The raw insert works with an upper-case currency, and not with Stripe's lower case.
    h.execute(&insert("EUR")).await.unwrap();
    let err = h.execute(&insert("eur")).await.unwrap_err();
    assert!(err.to_lowercase().contains("check"), "{err}");
    assert!(
        store
            .update_payment_status(
                "pay-raw-EUR",
                &[PaymentStatus::Failed],
                PaymentStatus::Cancelled,
                &PaymentUpdate::default(),
                t(1)
            )
            .await
            .unwrap()
    );
    lower.method = Some(CardRef {
        token: "tok_4242424242424242".into(),
        ..card()
    });
    assert!(store.create_payment(&lower).await.is_err());
    assert_eq!(store.payment("pay-6").await.unwrap(), None);

    // Compare-and-set moves.
    let with_intent = PaymentUpdate {
        provider_intent_id: Some("pi_1".into()),
        failure_reason: None,
        method: Some(card()),
    };
    assert!(
        store
            .update_payment_status(
                "pay-1",
                &[PaymentStatus::Created],
                PaymentStatus::RequiresAction,
                &with_intent,
                t(20)
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .update_payment_status(
                "pay-1",
                &[PaymentStatus::Created],
                PaymentStatus::Failed,
                &PaymentUpdate::default(),
                t(21)
            )
            .await
            .unwrap(),
        "no longer created"
    );
    assert!(
        !store
            .update_payment_status(
                "nope",
                &[PaymentStatus::Created],
                PaymentStatus::Failed,
                &PaymentUpdate::default(),
                t(21)
            )
            .await
            .unwrap()
    );
    let declined = PaymentUpdate {
        failure_reason: Some("insufficient_funds".into()),
        ..PaymentUpdate::default()
    };
    assert!(
        store
            .update_payment_status(
                "pay-1",
                &[PaymentStatus::RequiresAction, PaymentStatus::Processing],
                PaymentStatus::Failed,
                &declined,
                t(22)
            )
            .await
            .unwrap()
    );
    let got = store
        .payment_by_intent("test", "pi_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, "pay-1");
    assert_eq!(got.status, PaymentStatus::Failed);
    assert_eq!(got.failure_reason.as_deref(), Some("insufficient_funds"));
    assert_eq!(got.method, Some(card()), "kept when an update names none");
    assert_eq!(got.updated_at, t(22));
    assert_eq!(
        store.payment_by_intent("stripe", "pi_1").await.unwrap(),
        None
    );
    // Succeeded only through settle_payment.
    assert!(matches!(
        store
            .update_payment_status(
                "pay-1",
                &[PaymentStatus::Failed],
                PaymentStatus::Succeeded,
                &PaymentUpdate::default(),
                t(23)
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    // The provider intent id is unique per provider.
    let mut twin = payment("pay-7", 100, "EUR");
    twin.provider_intent_id = Some("pi_1".into());
    assert!(matches!(
        store.create_payment(&twin).await,
        Err(StoreError::Conflict(_))
    ));
    // The reconciler's list: open outcomes not touched since the cut-off, oldest first.
    assert!(
        store
            .update_payment_status(
                "pay-exit",
                &[PaymentStatus::Created],
                PaymentStatus::PendingUnknown,
                &PaymentUpdate::default(),
                t(15)
            )
            .await
            .unwrap()
    );
    let pending = store.payments_pending(t(30), 10).await.unwrap();
    let ids: Vec<&str> = pending.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["pay-exit"], "failed is not pending");
    assert!(store.payments_pending(t(15), 10).await.unwrap().is_empty());
    // A failed payment may be retried (failure reason cleared).
    assert!(
        store
            .update_payment_status(
                "pay-1",
                &[PaymentStatus::Failed],
                PaymentStatus::Processing,
                &PaymentUpdate::default(),
                t(40)
            )
            .await
            .unwrap()
    );
    let got = store.payment("pay-1").await.unwrap().unwrap();
    assert_eq!(got.failure_reason, None);
    assert_eq!(got.provider_intent_id.as_deref(), Some("pi_1"));
    assert_eq!(store.payments_pending(t(50), 1).await.unwrap().len(), 1);
    assert_eq!(store.payments_pending(t(50), 10).await.unwrap().len(), 2);
}

async fn settling_writes_exactly_one_ledger_row(h: &Harness) {
    payments_fixture(h).await;
    let store = h.store();
    store
        .create_payment(&payment("pay-1", 1_250, "EUR"))
        .await
        .unwrap();
    let from = [
        PaymentStatus::Created,
        PaymentStatus::Processing,
        PaymentStatus::Succeeded,
    ];
    let update = PaymentUpdate {
        provider_intent_id: Some("pi_9".into()),
        failure_reason: None,
        method: Some(card()),
    };
    assert!(
        store
            .settle_payment("pay-1", &from, &update, t(30), "reservation r1")
            .await
            .unwrap()
    );
    // A second settle (a webhook after our own answer) writes nothing.
    assert!(
        !store
            .settle_payment("pay-1", &from, &update, t(31), "again")
            .await
            .unwrap()
    );
    let entries = store
        .ledger_between(t(0), t(1_000), None, None, 100)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.kind, LedgerKind::Charge);
    assert_eq!((e.amount_minor, &e.currency), (1_250, &eur()));
    assert_eq!(e.at, t(30));
    assert_eq!(e.lot, lot("garage-a"));
    assert_eq!(e.payment_id.as_deref(), Some("pay-1"));
    assert_eq!(e.reservation_id.as_deref(), Some("r1"));
    assert_eq!(e.user_id.as_deref(), Some("u1"));
    assert_eq!(
        (e.refund_id.as_deref(), e.session_id.as_deref()),
        (None, None)
    );
    assert_eq!(e.memo, "reservation r1");
    let paid = store.payment("pay-1").await.unwrap().unwrap();
    assert_eq!(paid.status, PaymentStatus::Succeeded);
    assert_eq!(paid.provider_intent_id.as_deref(), Some("pi_9"));
    assert_eq!(paid.method, Some(card()));
    // Succeeded is terminal: no status move, and the ledger agrees.
    assert!(
        !store
            .update_payment_status(
                "pay-1",
                &PaymentStatus::ALL,
                PaymentStatus::Cancelled,
                &PaymentUpdate::default(),
                t(32)
            )
            .await
            .unwrap()
    );
    // Settling from a status the payment is not in writes nothing either.
    store
        .create_payment(&payment("pay-2", 700, "EUR"))
        .await
        .unwrap();
    assert!(
        !store
            .settle_payment(
                "pay-2",
                &[PaymentStatus::Processing],
                &PaymentUpdate::default(),
                t(33),
                ""
            )
            .await
            .unwrap()
    );
    assert_eq!(h.query_i64("SELECT count(*) FROM ledger_entries").await, 1);
    // Many settles at once: one ledger row.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .settle_payment(
                    "pay-2",
                    &[PaymentStatus::Created],
                    &PaymentUpdate::default(),
                    t(40 + i),
                    "",
                )
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(ledger_sum(h, "pay-2").await, 700);
    assert_eq!(h.query_i64("SELECT count(*) FROM ledger_entries").await, 2);
    // A no-show fee payment lands as a no_show_fee entry.
    let fee = PaymentRow {
        purpose: PaymentPurpose::NoShowFee,
        ..payment("pay-fee", 300, "EUR")
    };
    settled(h, fee, 60).await;
    let entries = store
        .ledger_between(t(60), t(61), None, None, 10)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].kind, LedgerKind::NoShowFee);
}

async fn concurrent_refunds_never_exceed_the_capture(h: &Harness) {
    payments_fixture(h).await;
    let store = h.store();
    // Nothing captured yet: nothing to refund.
    store
        .create_payment(&payment("pay-1", 1_000, "EUR"))
        .await
        .unwrap();
    match store
        .record_refund(
            &refund("rf-early", "pay-1", 10, RefundStatus::Succeeded),
            "",
        )
        .await
    {
        Err(StoreError::RefundExceedsCapture {
            refundable_minor, ..
        }) => assert_eq!(refundable_minor, 0),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store
            .record_refund(&refund("rf-x", "nope", 10, RefundStatus::Pending), "")
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        store
            .settle_payment(
                "pay-1",
                &[PaymentStatus::Created],
                &PaymentUpdate::default(),
                t(50),
                ""
            )
            .await
            .unwrap()
    );
    // Another currency is refused.
    let mut usd = refund("rf-usd", "pay-1", 10, RefundStatus::Succeeded);
    usd.currency = Currency::parse("USD").unwrap();
    assert!(matches!(
        store.record_refund(&usd, "").await,
        Err(StoreError::Conflict(_))
    ));
    // 50 partial refunds of 30 race: 33 fit (990), 17 are refused.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move {
            let r = refund(&format!("rf-{i}"), "pay-1", 30, RefundStatus::Succeeded);
            match store.record_refund(&r, "partial").await {
                Ok(()) => true,
                Err(StoreError::RefundExceedsCapture {
                    refundable_minor, ..
                }) => {
                    assert!(refundable_minor < 30, "{refundable_minor}");
                    false
                }
                Err(other) => panic!("{other:?}"),
            }
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += usize::from(task.await.unwrap());
    }
    assert_eq!(accepted, 33);
    let paid = store.payment("pay-1").await.unwrap().unwrap();
    assert_eq!(paid.amount_refunded_minor, 990);
    assert_eq!(paid.refundable_minor(), 10);
    assert_eq!(store.refunds_of_payment("pay-1").await.unwrap().len(), 33);
    // The ledger: the charge minus the refunds, one entry per refund.
    assert_eq!(ledger_sum(h, "pay-1").await, 10);
    assert_eq!(
        h.query_i64("SELECT count(*) FROM ledger_entries WHERE kind = 'refund'")
            .await,
        33
    );
    // The rest, exactly, is still refundable; then nothing is.
    store
        .record_refund(&refund("rf-last", "pay-1", 10, RefundStatus::Succeeded), "")
        .await
        .unwrap();
    assert!(
        store
            .payment("pay-1")
            .await
            .unwrap()
            .unwrap()
            .fully_refunded()
    );
    assert!(matches!(
        store
            .record_refund(&refund("rf-more", "pay-1", 1, RefundStatus::Pending), "")
            .await,
        Err(StoreError::RefundExceedsCapture { .. })
    ));
    assert_eq!(ledger_sum(h, "pay-1").await, 0);
    let entries = store
        .ledger_between(t(0), t(1_000), None, None, 100)
        .await
        .unwrap();
    let refund_entry = entries
        .iter()
        .find(|e| e.refund_id.as_deref() == Some("rf-last"))
        .unwrap();
    assert_eq!(refund_entry.kind, LedgerKind::Refund);
    assert_eq!(refund_entry.amount_minor, -10);
    assert_eq!(refund_entry.reservation_id.as_deref(), Some("r1"));
}

async fn pending_refunds_reserve_and_failed_ones_give_back(h: &Harness) {
    payments_fixture(h).await;
    let store = h.store();
    settled(h, payment("pay-1", 1_000, "EUR"), 50).await;
    store
        .record_refund(&refund("rf-1", "pay-1", 600, RefundStatus::Pending), "")
        .await
        .unwrap();
    // Pending counts: 600 of 1000 are reserved, no ledger entry yet.
    assert!(matches!(
        store
            .record_refund(&refund("rf-2", "pay-1", 500, RefundStatus::Pending), "")
            .await,
        Err(StoreError::RefundExceedsCapture {
            refundable_minor: 400,
            ..
        })
    ));
    assert_eq!(ledger_sum(h, "pay-1").await, 1_000);
    assert_eq!(
        store.refunds_pending(t(101), 10).await.unwrap(),
        vec![refund("rf-1", "pay-1", 600, RefundStatus::Pending)]
    );
    // The provider said pending and named it: the id is kept, once.
    assert!(
        store
            .set_refund_provider_id("rf-1", "re_1", t(150))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_refund_provider_id("rf-1", "re_other", t(151))
            .await
            .unwrap(),
        "already named"
    );
    assert!(
        !store
            .set_refund_provider_id("rf-nope", "re_2", t(151))
            .await
            .unwrap()
    );
    // The provider failed it: the 600 come back, nothing in the ledger.
    assert!(
        store
            .complete_refund("rf-1", false, None, t(200), "")
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_refund("rf-1", true, None, t(201), "")
            .await
            .unwrap(),
        "no longer pending"
    );
    let r1 = store.refund("rf-1").await.unwrap().unwrap();
    assert_eq!(r1.status, RefundStatus::Failed);
    assert_eq!(r1.provider_refund_id.as_deref(), Some("re_1"));
    assert_eq!(
        store
            .payment("pay-1")
            .await
            .unwrap()
            .unwrap()
            .amount_refunded_minor,
        0
    );
    assert_eq!(ledger_sum(h, "pay-1").await, 1_000);
    // A pending refund that succeeds writes its entry then.
    store
        .record_refund(&refund("rf-2", "pay-1", 500, RefundStatus::Pending), "")
        .await
        .unwrap();
    assert!(
        store
            .complete_refund("rf-2", true, Some("re_2"), t(300), "cancelled early")
            .await
            .unwrap()
    );
    assert_eq!(ledger_sum(h, "pay-1").await, 500);
    assert!(
        store
            .refunds_pending(t(1_000), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let entry = store
        .ledger_between(t(300), t(301), None, None, 10)
        .await
        .unwrap();
    assert_eq!(entry.len(), 1);
    assert_eq!(
        (entry[0].amount_minor, entry[0].memo.as_str()),
        (-500, "cancelled early")
    );
    // A refund may not be recorded as failed from the start.
    assert!(matches!(
        store
            .record_refund(&refund("rf-3", "pay-1", 1, RefundStatus::Failed), "")
            .await,
        Err(StoreError::Conflict(_))
    ));
}

async fn ledger_refuses_update_and_delete(h: &Harness) {
    payments_fixture(h).await;
    settled(h, payment("pay-1", 1_000, "EUR"), 50).await;
    let count = "SELECT count(*) FROM ledger_entries";
    assert_eq!(h.query_i64(count).await, 1);
    let err = h
        .execute("UPDATE ledger_entries SET amount_minor = 1")
        .await
        .unwrap_err();
    assert!(err.contains("append-only"), "{err}");
    let err = h.execute("DELETE FROM ledger_entries").await.unwrap_err();
    assert!(err.contains("append-only"), "{err}");
    if let Raw::Postgres { .. } = h.raw {
        let err = h.execute("TRUNCATE ledger_entries").await.unwrap_err();
        assert!(err.contains("append-only"), "{err}");
    }
    assert_eq!(h.query_i64(count).await, 1);
    assert_eq!(
        h.query_i64("SELECT amount_minor FROM ledger_entries").await,
        1_000
    );
    // Nor can a payment with ledger entries be deleted from under them.
    assert!(
        h.execute("DELETE FROM payments WHERE payment_id = 'pay-1'")
            .await
            .is_err()
    );
    // Appending still works.
    let seq = h
        .store()
        .record_adjustment(&NewAdjustment {
            at: t(60),
            lot: lot("garage-a"),
            amount_minor: -50,
            currency: eur(),
            payment_id: Some("pay-1".into()),
            reservation_id: None,
            session_id: None,
            user_id: None,
            memo: "goodwill, op-1".into(),
        })
        .await
        .unwrap();
    assert!(seq > 0);
    assert_eq!(h.query_i64(count).await, 2);
}

async fn webhook_events_are_recorded_once(h: &Harness) {
    let store = h.store();
    assert!(
        store
            .record_webhook_event("stripe", "evt_1", t(0))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_webhook_event("stripe", "evt_1", t(5))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_webhook_event("test", "evt_1", t(5))
            .await
            .unwrap(),
        "per provider"
    );
    // Redeliveries racing each other: exactly one first time.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .record_webhook_event("stripe", "evt_2", t(9))
                .await
                .unwrap()
        }));
    }
    let mut first = 0;
    for task in tasks {
        first += usize::from(task.await.unwrap());
    }
    assert_eq!(first, 1);
    assert_eq!(h.query_i64("SELECT count(*) FROM webhook_events").await, 3);
}

async fn revenue_per_currency_and_ledger_pages(h: &Harness) {
    payments_fixture(h).await;
    let store = h.store();
    settled(h, payment("eur-1", 1_000, "EUR"), 100).await;
    settled(h, payment("eur-2", 250, "EUR"), 200).await;
    let usd = PaymentRow {
        lot: lot("garage-b"),
        ..payment("usd-1", 900, "USD")
    };
    settled(h, usd, 300).await;
    store
        .record_refund(&refund("rf-1", "eur-1", 400, RefundStatus::Succeeded), "")
        .await
        .unwrap();
    let mut usd_refund = refund("rf-2", "usd-1", 100, RefundStatus::Succeeded);
    usd_refund.currency = Currency::parse("USD").unwrap();
    usd_refund.updated_at = t(400);
    store.record_refund(&usd_refund, "").await.unwrap();
    store
        .record_adjustment(&NewAdjustment {
            at: t(500),
            lot: lot("garage-a"),
            amount_minor: 25,
            currency: eur(),
            payment_id: None,
            reservation_id: None,
            session_id: None,
            user_id: None,
            memo: "cash difference".into(),
        })
        .await
        .unwrap();
    // A zero adjustment is refused by the schema.
    assert!(
        store
            .record_adjustment(&NewAdjustment {
                at: t(500),
                lot: lot("garage-a"),
                amount_minor: 0,
                currency: eur(),
                payment_id: None,
                reservation_id: None,
                session_id: None,
                user_id: None,
                memo: String::new(),
            })
            .await
            .is_err()
    );
    let usd = Currency::parse("USD").unwrap();
    assert_eq!(
        store.revenue_between(t(0), t(1_000), None).await.unwrap(),
        vec![(eur(), 1_000 + 250 - 400 + 25), (usd.clone(), 800)]
    );
    assert_eq!(
        store
            .revenue_between(t(0), t(1_000), Some(&lot("garage-b")))
            .await
            .unwrap(),
        vec![(usd.clone(), 800)]
    );
    // Half-open periods: [100, 300) holds both EUR charges and the EUR refund (at t(100)).
    assert_eq!(
        store.revenue_between(t(100), t(300), None).await.unwrap(),
        vec![(eur(), 850)]
    );
    assert!(
        store
            .revenue_between(t(2_000), t(3_000), None)
            .await
            .unwrap()
            .is_empty()
    );
    // Paging through a period in append order.
    let all = store
        .ledger_between(t(0), t(1_000), None, None, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let first = store
        .ledger_between(t(0), t(1_000), None, None, 4)
        .await
        .unwrap();
    let rest = store
        .ledger_between(t(0), t(1_000), None, Some(first[3].seq), 4)
        .await
        .unwrap();
    assert_eq!([first, rest].concat(), all);
    let of_b = store
        .ledger_between(t(0), t(1_000), Some(&lot("garage-b")), None, 100)
        .await
        .unwrap();
    let kinds: Vec<(LedgerKind, i64)> = of_b.iter().map(|e| (e.kind, e.amount_minor)).collect();
    assert_eq!(
        kinds,
        [(LedgerKind::Charge, 900), (LedgerKind::Refund, -100)]
    );
}

async fn retention_leaves_the_ledger_alone(h: &Harness) {
    payments_fixture(h).await;
    let store = h.store();
    let day = 86_400;
    // A payment six years ago, and old telemetry.
    let mut old = payment("pay-old", 800, "EUR");
    old.created_at = t(-6 * 365 * day);
    old.updated_at = old.created_at;
    settled(h, old, -6 * 365 * day).await;
    store
        .record_webhook_event("stripe", "evt_old", t(-6 * 365 * day))
        .await
        .unwrap();
    store
        .write_batch(&readings_only(vec![reading("a1", -40 * day, true)]))
        .await
        .unwrap();
    let deleted = store.enforce_retention(t(0)).await.unwrap();
    if !store.timescale() {
        assert_eq!(deleted, 1, "the telemetry went");
    }
    assert_eq!(h.query_i64("SELECT count(*) FROM ledger_entries").await, 1);
    assert_eq!(h.query_i64("SELECT count(*) FROM payments").await, 1);
    assert_eq!(h.query_i64("SELECT count(*) FROM webhook_events").await, 1);
    assert_eq!(
        store
            .revenue_between(t(-7 * 365 * day), t(0), None)
            .await
            .unwrap(),
        vec![(eur(), 800)]
    );
}
