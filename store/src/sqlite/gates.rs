//! Gate decisions and parking sessions on SQLite. Opening a session with a reservation checks
//! the reservation in within the same IMMEDIATE transaction; closing one completes it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parkd_core::ids::{GateId, LotId, SpotId};
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};

use super::{SqliteStore, col, from_micros, query_rows, sq_err};
use crate::common::{parse_id, parse_vehicle_type};
use crate::{GateStore, OperatorAction, ParkingSession, StoreError, StoreResult};

const COLUMNS: &str = "session_id, lot_id, plate_key, plate, vehicle_type, reservation_id, \
                       user_id, entry_gate, assigned_spot, sensed_spot, entered_at, exit_gate, \
                       exited_at, overstay_s";

fn row_from(row: &Row<'_>) -> StoreResult<ParkingSession> {
    const T: &str = "parking_sessions";
    let spot = |i: usize, name: &'static str| -> StoreResult<Option<SpotId>> {
        col::<Option<String>>(row, i, T)?
            .map(|raw| parse_id(T, name, &raw, SpotId::parse))
            .transpose()
    };
    let gate = |i: usize, name: &'static str| -> StoreResult<Option<GateId>> {
        col::<Option<String>>(row, i, T)?
            .map(|raw| parse_id(T, name, &raw, GateId::parse))
            .transpose()
    };
    Ok(ParkingSession {
        id: col(row, 0, T)?,
        lot: parse_id(T, "lot_id", &col::<String>(row, 1, T)?, LotId::parse)?,
        plate_key: col(row, 2, T)?,
        plate: col(row, 3, T)?,
        vehicle_type: parse_vehicle_type(&col::<String>(row, 4, T)?)?,
        reservation_id: col(row, 5, T)?,
        user_id: col(row, 6, T)?,
        entry_gate: gate(7, "entry_gate")?,
        assigned_spot: spot(8, "assigned_spot")?,
        sensed_spot: spot(9, "sensed_spot")?,
        entered_at: from_micros(col(row, 10, T)?, T)?,
        exit_gate: gate(11, "exit_gate")?,
        exited_at: col::<Option<i64>>(row, 12, T)?
            .map(|micros| from_micros(micros, T))
            .transpose()?,
        overstay_s: col(row, 13, T)?,
    })
}

fn sessions(
    conn: &rusqlite::Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> StoreResult<Vec<ParkingSession>> {
    query_rows(conn, sql, args, row_from)
}

/// Moves a reservation between states inside `tx`; `false` if it was not in `from`.
fn move_reservation_state(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    from: &str,
    to: &str,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    let changed = tx
        .execute(
            "UPDATE reservations SET state = ?3, updated_at = ?4
             WHERE reservation_id = ?1 AND state = ?2",
            params![id, from, to, at.timestamp_micros()],
        )
        .map_err(sq_err)?;
    Ok(changed == 1)
}

#[async_trait]
impl GateStore for SqliteStore {
    async fn gate_decision(
        &self,
        lot: &LotId,
        gate: &GateId,
        request_id: &str,
    ) -> StoreResult<Option<String>> {
        let key = (lot.to_string(), gate.to_string(), request_id.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT command FROM gate_decisions
                 WHERE lot_id = ?1 AND gate_id = ?2 AND request_id = ?3",
            )
            .and_then(|mut s| s.query_row(params![key.0, key.1, key.2], |row| row.get(0)))
            .optional()
            .map_err(sq_err)
        })
        .await
    }

    async fn record_gate_decision(
        &self,
        lot: &LotId,
        gate: &GateId,
        request_id: &str,
        command: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<String>> {
        let key = (lot.to_string(), gate.to_string(), request_id.to_owned());
        let command = command.to_owned();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sq_err)?;
            let earlier: Option<String> = tx
                .query_row(
                    "SELECT command FROM gate_decisions
                     WHERE lot_id = ?1 AND gate_id = ?2 AND request_id = ?3",
                    params![key.0, key.1, key.2],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sq_err)?;
            if earlier.is_none() {
                tx.execute(
                    "INSERT INTO gate_decisions (lot_id, gate_id, request_id, command, decided_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![key.0, key.1, key.2, command, at.timestamp_micros()],
                )
                .map_err(sq_err)?;
            }
            tx.commit().map_err(sq_err)?;
            Ok(earlier)
        })
        .await
    }

    async fn delete_gate_decisions_before(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64> {
        let before = before.timestamp_micros();
        self.write(move |conn| {
            // One statement is one transaction; the batch comes from the decided_at index.
            let deleted = conn
                .prepare_cached(
                    "DELETE FROM gate_decisions WHERE rowid IN (
                         SELECT rowid FROM gate_decisions WHERE decided_at < ?1 LIMIT ?2
                     )",
                )
                .and_then(|mut s| s.execute(params![before, limit]))
                .map_err(sq_err)?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn open_parking_session(
        &self,
        session: &ParkingSession,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let s = session.clone();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sq_err)?;
            if let Some(reservation) = &s.reservation_id
                && !move_reservation_state(&tx, reservation, "confirmed", "checked_in", at)?
            {
                return Err(StoreError::Conflict(format!(
                    "reservation {reservation} is not confirmed"
                )));
            }
            let sql = format!(
                "INSERT INTO parking_sessions ({COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            );
            tx.execute(
                &sql,
                params![
                    s.id,
                    s.lot.as_str(),
                    s.plate_key,
                    s.plate,
                    s.vehicle_type.as_str(),
                    s.reservation_id,
                    s.user_id,
                    s.entry_gate.as_ref().map(GateId::as_str),
                    s.assigned_spot.as_ref().map(SpotId::as_str),
                    s.sensed_spot.as_ref().map(SpotId::as_str),
                    s.entered_at.timestamp_micros(),
                    s.exit_gate.as_ref().map(GateId::as_str),
                    s.exited_at.map(|t| t.timestamp_micros()),
                    s.overstay_s,
                ],
            )
            .map_err(sq_err)?;
            tx.commit().map_err(sq_err)
        })
        .await
    }

    async fn parking_session(&self, id: &str) -> StoreResult<Option<ParkingSession>> {
        let id = id.to_owned();
        self.read(move |conn| {
            let sql = format!("SELECT {COLUMNS} FROM parking_sessions WHERE session_id = ?1");
            Ok(sessions(conn, &sql, [id])?.pop())
        })
        .await
    }

    async fn open_parking_session_of_plate(
        &self,
        lot: &LotId,
        plate_key: &str,
    ) -> StoreResult<Option<ParkingSession>> {
        let (lot, plate_key) = (lot.to_string(), plate_key.to_owned());
        self.read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM parking_sessions
                 WHERE lot_id = ?1 AND plate_key = ?2 AND exited_at IS NULL"
            );
            Ok(sessions(conn, &sql, [lot, plate_key])?.pop())
        })
        .await
    }

    async fn open_parking_session_of_reservation(
        &self,
        reservation_id: &str,
    ) -> StoreResult<Option<ParkingSession>> {
        let id = reservation_id.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM parking_sessions
                 WHERE reservation_id = ?1 AND exited_at IS NULL"
            );
            Ok(sessions(conn, &sql, [id])?.pop())
        })
        .await
    }

    async fn open_parking_sessions(&self, lot: &LotId) -> StoreResult<Vec<ParkingSession>> {
        let lot = lot.to_string();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM parking_sessions
                 WHERE lot_id = ?1 AND exited_at IS NULL ORDER BY entered_at, session_id"
            );
            sessions(conn, &sql, [lot])
        })
        .await
    }

    async fn set_sensed_spot(&self, id: &str, spot: &SpotId) -> StoreResult<bool> {
        let (id, spot) = (id.to_owned(), spot.to_string());
        self.write(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE parking_sessions SET sensed_spot = ?2
                     WHERE session_id = ?1 AND exited_at IS NULL",
                    params![id, spot],
                )
                .map_err(sq_err)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn close_parking_session(
        &self,
        id: &str,
        exited_at: DateTime<Utc>,
        exit_gate: Option<&GateId>,
        overstay_s: Option<i64>,
    ) -> StoreResult<bool> {
        let id = id.to_owned();
        let exit_gate = exit_gate.map(ToString::to_string);
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sq_err)?;
            let reservation: Option<Option<String>> = tx
                .query_row(
                    "SELECT reservation_id FROM parking_sessions
                     WHERE session_id = ?1 AND exited_at IS NULL",
                    [&id],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sq_err)?;
            let Some(reservation) = reservation else {
                return Ok(false);
            };
            tx.execute(
                "UPDATE parking_sessions SET exited_at = ?2, exit_gate = ?3, overstay_s = ?4
                 WHERE session_id = ?1",
                params![id, exited_at.timestamp_micros(), exit_gate, overstay_s],
            )
            .map_err(sq_err)?;
            if let Some(reservation) = reservation {
                move_reservation_state(&tx, &reservation, "checked_in", "completed", exited_at)?;
            }
            tx.commit().map_err(sq_err)?;
            Ok(true)
        })
        .await
    }

    async fn record_operator_action(&self, a: &OperatorAction) -> StoreResult<()> {
        let a = a.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO operator_actions
                     (action_id, seq, at, user_id, lot_id, gate_id, action, reason)
                 VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM operator_actions),
                         ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    a.id,
                    a.at.timestamp_micros(),
                    a.user_id,
                    a.lot.as_str(),
                    a.gate.as_ref().map(GateId::as_str),
                    a.action,
                    a.reason
                ],
            )
            .map_err(sq_err)?;
            Ok(())
        })
        .await
    }

    async fn operator_actions(
        &self,
        lot: Option<&LotId>,
        limit: u32,
    ) -> StoreResult<Vec<OperatorAction>> {
        let lot = lot.map(ToString::to_string);
        self.read(move |conn| {
            query_rows(
                conn,
                "SELECT action_id, at, user_id, lot_id, gate_id, action, reason
                 FROM operator_actions WHERE (?1 IS NULL OR lot_id = ?1)
                 ORDER BY seq DESC LIMIT ?2",
                params![lot, i64::from(limit)],
                action_from,
            )
        })
        .await
    }

    async fn latest_emergency_actions(&self) -> StoreResult<Vec<OperatorAction>> {
        self.read(move |conn| {
            query_rows(
                conn,
                // One pass over the trail for each lot's newest emergency action, then one
                // lookup per lot. (A subquery correlated with every row of the trail was
                // quadratic: minutes at start behind 20,000 manual opens.)
                "SELECT a.action_id, a.at, a.user_id, a.lot_id, a.gate_id, a.action, a.reason
                 FROM (SELECT max(seq) AS seq FROM operator_actions
                       WHERE action IN ('emergency_start', 'emergency_end')
                       GROUP BY lot_id) AS latest
                 JOIN operator_actions AS a ON a.seq = latest.seq",
                [],
                action_from,
            )
        })
        .await
    }

    async fn parking_sessions_between(
        &self,
        lot: &LotId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<ParkingSession>> {
        let lot = lot.to_string();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM parking_sessions
                 WHERE lot_id = ?1 AND entered_at >= ?2 AND entered_at < ?3
                 ORDER BY entered_at DESC, session_id LIMIT ?4"
            );
            sessions(
                conn,
                &sql,
                params![
                    lot,
                    from.timestamp_micros(),
                    to.timestamp_micros(),
                    i64::from(limit)
                ],
            )
        })
        .await
    }
}

/// One row of `operator_actions` (action_id, at, user_id, lot_id, gate_id, action, reason).
fn action_from(row: &rusqlite::Row<'_>) -> StoreResult<OperatorAction> {
    const T: &str = "operator_actions";
    Ok(OperatorAction {
        id: col(row, 0, T)?,
        at: from_micros(col(row, 1, T)?, T)?,
        user_id: col(row, 2, T)?,
        lot: parse_id(T, "lot_id", &col::<String>(row, 3, T)?, LotId::parse)?,
        gate: col::<Option<String>>(row, 4, T)?
            .map(|raw| parse_id(T, "gate_id", &raw, GateId::parse))
            .transpose()?,
        action: col(row, 5, T)?,
        reason: col(row, 6, T)?,
    })
}
