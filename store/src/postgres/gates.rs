//! Gate decisions and parking sessions on PostgreSQL. The partial unique indexes make a second
//! open session of one plate or reservation impossible whatever the concurrency; opening with a
//! reservation checks it in in the same transaction, closing completes it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parkd_core::ids::{GateId, LotId, SpotId};
use tokio_postgres::Row;

use super::{PostgresStore, col, pg_err};
use crate::common::{parse_id, parse_vehicle_type};
use crate::{GateStore, OperatorAction, ParkingSession, StoreError, StoreResult};

const COLUMNS: &str = "session_id, lot_id, plate_key, plate, vehicle_type, reservation_id, \
                       user_id, entry_gate, assigned_spot, sensed_spot, entered_at, exit_gate, \
                       exited_at, overstay_s";

fn row_from(row: &Row) -> StoreResult<ParkingSession> {
    const T: &str = "parking_sessions";
    let spot = |i: usize, name: &'static str| -> StoreResult<Option<SpotId>> {
        col::<Option<&str>>(row, i, T)?
            .map(|raw| parse_id(T, name, raw, SpotId::parse))
            .transpose()
    };
    let gate = |i: usize, name: &'static str| -> StoreResult<Option<GateId>> {
        col::<Option<&str>>(row, i, T)?
            .map(|raw| parse_id(T, name, raw, GateId::parse))
            .transpose()
    };
    Ok(ParkingSession {
        id: col(row, 0, T)?,
        lot: parse_id(T, "lot_id", col(row, 1, T)?, LotId::parse)?,
        plate_key: col(row, 2, T)?,
        plate: col(row, 3, T)?,
        vehicle_type: parse_vehicle_type(col(row, 4, T)?)?,
        reservation_id: col(row, 5, T)?,
        user_id: col(row, 6, T)?,
        entry_gate: gate(7, "entry_gate")?,
        assigned_spot: spot(8, "assigned_spot")?,
        sensed_spot: spot(9, "sensed_spot")?,
        entered_at: col(row, 10, T)?,
        exit_gate: gate(11, "exit_gate")?,
        exited_at: col(row, 12, T)?,
        overstay_s: col(row, 13, T)?,
    })
}

impl PostgresStore {
    async fn sessions_where(
        &self,
        condition: &str,
        args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<Vec<ParkingSession>> {
        let client = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM parking_sessions WHERE {condition}");
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let rows = client.query(&statement, args).await.map_err(pg_err)?;
        rows.iter().map(row_from).collect()
    }
}

#[async_trait]
impl GateStore for PostgresStore {
    async fn gate_decision(
        &self,
        lot: &LotId,
        gate: &GateId,
        request_id: &str,
    ) -> StoreResult<Option<String>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT command FROM gate_decisions
                 WHERE lot_id = $1 AND gate_id = $2 AND request_id = $3",
            )
            .await
            .map_err(pg_err)?;
        let row = client
            .query_opt(&statement, &[&lot.as_str(), &gate.as_str(), &request_id])
            .await
            .map_err(pg_err)?;
        row.map(|row| col(&row, 0, "gate_decisions")).transpose()
    }

    async fn record_gate_decision(
        &self,
        lot: &LotId,
        gate: &GateId,
        request_id: &str,
        command: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<String>> {
        let client = self.client().await?;
        // Insert, or on a racing duplicate read the one that won: a single round trip.
        // Committed without waiting for the WAL flush (`synchronous_commit` off for this
        // statement's transaction only): the row is visible to racing duplicates at once, and
        // a crash that loses it only means a repeated request is decided again, from the
        // parking session, which is committed durably before. Saves the second disk flush of
        // every admission (bench/results/gates.md).
        let statement = client
            .prepare_cached(
                "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
                 inserted AS (
                     INSERT INTO gate_decisions (lot_id, gate_id, request_id, command, decided_at)
                     SELECT $1::text, $2::text, $3::text, $4::text, $5::timestamptz FROM relaxed
                     ON CONFLICT (lot_id, gate_id, request_id) DO NOTHING
                     RETURNING 1
                 )
                 SELECT command FROM gate_decisions
                 WHERE lot_id = $1 AND gate_id = $2 AND request_id = $3
                   AND NOT EXISTS (SELECT 1 FROM inserted)",
            )
            .await
            .map_err(pg_err)?;
        let row = client
            .query_opt(
                &statement,
                &[&lot.as_str(), &gate.as_str(), &request_id, &command, &at],
            )
            .await
            .map_err(pg_err)?;
        row.map(|row| col(&row, 0, "gate_decisions")).transpose()
    }

    async fn delete_gate_decisions_before(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64> {
        let client = self.client().await?;
        // The batch is found through the BRIN index on decided_at (rows arrive in time
        // order) and deleted by row address; the table is an ordinary one on TimescaleDB too.
        let statement = client
            .prepare_cached(
                "DELETE FROM gate_decisions
                 WHERE ctid = ANY (ARRAY(
                     SELECT ctid FROM gate_decisions WHERE decided_at < $1 LIMIT $2
                 ))",
            )
            .await
            .map_err(pg_err)?;
        client
            .execute(&statement, &[&before, &i64::from(limit)])
            .await
            .map_err(pg_err)
    }

    async fn open_parking_session(&self, s: &ParkingSession, at: DateTime<Utc>) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        if let Some(reservation) = &s.reservation_id {
            let moved = tx
                .execute(
                    "UPDATE reservations SET state = 'checked_in', updated_at = $2
                     WHERE reservation_id = $1 AND state = 'confirmed'",
                    &[reservation, &at],
                )
                .await
                .map_err(pg_err)?;
            if moved != 1 {
                return Err(StoreError::Conflict(format!(
                    "reservation {reservation} is not confirmed"
                )));
            }
        }
        let sql = format!(
            "INSERT INTO parking_sessions ({COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        );
        tx.execute(
            &sql,
            &[
                &s.id,
                &s.lot.as_str(),
                &s.plate_key,
                &s.plate,
                &s.vehicle_type.as_str(),
                &s.reservation_id,
                &s.user_id,
                &s.entry_gate.as_ref().map(GateId::as_str),
                &s.assigned_spot.as_ref().map(SpotId::as_str),
                &s.sensed_spot.as_ref().map(SpotId::as_str),
                &s.entered_at,
                &s.exit_gate.as_ref().map(GateId::as_str),
                &s.exited_at,
                &s.overstay_s,
            ],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn parking_session(&self, id: &str) -> StoreResult<Option<ParkingSession>> {
        Ok(self.sessions_where("session_id = $1", &[&id]).await?.pop())
    }

    async fn open_parking_session_of_plate(
        &self,
        lot: &LotId,
        plate_key: &str,
    ) -> StoreResult<Option<ParkingSession>> {
        Ok(self
            .sessions_where(
                "lot_id = $1 AND plate_key = $2 AND exited_at IS NULL",
                &[&lot.as_str(), &plate_key],
            )
            .await?
            .pop())
    }

    async fn open_parking_session_of_reservation(
        &self,
        reservation_id: &str,
    ) -> StoreResult<Option<ParkingSession>> {
        Ok(self
            .sessions_where(
                "reservation_id = $1 AND exited_at IS NULL",
                &[&reservation_id],
            )
            .await?
            .pop())
    }

    async fn open_parking_sessions(&self, lot: &LotId) -> StoreResult<Vec<ParkingSession>> {
        self.sessions_where(
            "lot_id = $1 AND exited_at IS NULL ORDER BY entered_at, session_id",
            &[&lot.as_str()],
        )
        .await
    }

    async fn set_sensed_spot(&self, id: &str, spot: &SpotId) -> StoreResult<bool> {
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE parking_sessions SET sensed_spot = $2
                 WHERE session_id = $1 AND exited_at IS NULL",
                &[&id, &spot.as_str()],
            )
            .await
            .map_err(pg_err)?;
        Ok(changed == 1)
    }

    async fn close_parking_session(
        &self,
        id: &str,
        exited_at: DateTime<Utc>,
        exit_gate: Option<&GateId>,
        overstay_s: Option<i64>,
    ) -> StoreResult<bool> {
        // One statement (one round trip, on every exit): the session closes and its
        // reservation completes together; data-modifying CTEs always run to completion.
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "WITH closed AS (
                     UPDATE parking_sessions SET exited_at = $2, exit_gate = $3, overstay_s = $4
                     WHERE session_id = $1 AND exited_at IS NULL
                     RETURNING reservation_id),
                 completed AS (
                     UPDATE reservations SET state = 'completed', updated_at = $2
                     WHERE reservation_id = (SELECT reservation_id FROM closed)
                       AND state = 'checked_in')
                 SELECT 1 FROM closed",
            )
            .await
            .map_err(pg_err)?;
        let closed = client
            .query_opt(
                &statement,
                &[&id, &exited_at, &exit_gate.map(GateId::as_str), &overstay_s],
            )
            .await
            .map_err(pg_err)?;
        Ok(closed.is_some())
    }

    async fn record_operator_action(&self, a: &OperatorAction) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO operator_actions (action_id, at, user_id, lot_id, gate_id, action, reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &a.id,
                    &a.at,
                    &a.user_id,
                    &a.lot.as_str(),
                    &a.gate.as_ref().map(GateId::as_str),
                    &a.action,
                    &a.reason,
                ],
            )
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn operator_actions(
        &self,
        lot: Option<&LotId>,
        limit: u32,
    ) -> StoreResult<Vec<OperatorAction>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT action_id, at, user_id, lot_id, gate_id, action, reason
                 FROM operator_actions WHERE ($1::text IS NULL OR lot_id = $1)
                 ORDER BY seq DESC LIMIT $2",
                &[&lot.map(LotId::as_str), &i64::from(limit)],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(action_from).collect()
    }

    async fn latest_emergency_actions(&self) -> StoreResult<Vec<OperatorAction>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT DISTINCT ON (lot_id) action_id, at, user_id, lot_id, gate_id, action, reason
                 FROM operator_actions
                 WHERE action IN ('emergency_start', 'emergency_end')
                 ORDER BY lot_id, seq DESC",
                &[],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(action_from).collect()
    }

    async fn parking_sessions_between(
        &self,
        lot: &LotId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<ParkingSession>> {
        self.sessions_where(
            "lot_id = $1 AND entered_at >= $2 AND entered_at < $3
             ORDER BY entered_at DESC, session_id LIMIT $4",
            &[&lot.as_str(), &from, &to, &i64::from(limit)],
        )
        .await
    }
}

/// One row of `operator_actions` (action_id, at, user_id, lot_id, gate_id, action, reason).
fn action_from(row: &tokio_postgres::Row) -> StoreResult<OperatorAction> {
    const T: &str = "operator_actions";
    Ok(OperatorAction {
        id: col(row, 0, T)?,
        at: col(row, 1, T)?,
        user_id: col(row, 2, T)?,
        lot: parse_id(T, "lot_id", col(row, 3, T)?, LotId::parse)?,
        gate: col::<Option<&str>>(row, 4, T)?
            .map(|raw| parse_id(T, "gate_id", raw, GateId::parse))
            .transpose()?,
        action: col(row, 5, T)?,
        reason: col(row, 6, T)?,
    })
}
