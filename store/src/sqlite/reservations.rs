//! Reservations on SQLite: the overlap check and the write share one IMMEDIATE transaction,
//! which SQLite's single writer serialises, so two racing bookings cannot both pass.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parkd_core::ids::{LotId, SpotId};
use parkd_core::reservation::ReservationState;
use rusqlite::{Row, TransactionBehavior, params};

use super::idempotency::OwnedAnswer;
use super::{SqliteStore, col, from_micros, query_rows, sq_err};
use crate::common::{parse_id, parse_reservation_state, parse_vehicle_type};
use crate::{
    HoldingSpan, IdempotentAnswer, ReservationRow, ReservationStore, StoreError, StoreResult,
};

const COLUMNS: &str = "reservation_id, code, user_id, vehicle_id, plate_key, vehicle_type, \
                       lot_id, spot_id, starts_at, ends_at, state, created_at, updated_at";
const HOLDING: &str = "('requested', 'confirmed', 'checked_in')";

fn row_from(row: &Row<'_>) -> StoreResult<ReservationRow> {
    const T: &str = "reservations";
    Ok(ReservationRow {
        id: col(row, 0, T)?,
        code: col(row, 1, T)?,
        user_id: col(row, 2, T)?,
        vehicle_id: col(row, 3, T)?,
        plate_key: col(row, 4, T)?,
        vehicle_type: parse_vehicle_type(&col::<String>(row, 5, T)?)?,
        lot: parse_id(T, "lot_id", &col::<String>(row, 6, T)?, LotId::parse)?,
        spot: parse_id(T, "spot_id", &col::<String>(row, 7, T)?, SpotId::parse)?,
        starts_at: from_micros(col(row, 8, T)?, T)?,
        ends_at: from_micros(col(row, 9, T)?, T)?,
        state: parse_reservation_state(&col::<String>(row, 10, T)?)?,
        created_at: from_micros(col(row, 11, T)?, T)?,
        updated_at: from_micros(col(row, 12, T)?, T)?,
    })
}

fn query(
    conn: &rusqlite::Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> StoreResult<Vec<ReservationRow>> {
    query_rows(conn, sql, args, row_from)
}

/// [`StoreError::Conflict`] if a holding reservation of the spot (other than `except`)
/// overlaps `[starts_at, ends_at)`. Call inside the writing transaction.
fn refuse_overlap(
    tx: &rusqlite::Transaction<'_>,
    lot: &LotId,
    spot: &SpotId,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    except: Option<&str>,
) -> StoreResult<()> {
    let sql = format!(
        "SELECT reservation_id FROM reservations
         WHERE lot_id = ?1 AND spot_id = ?2 AND state IN {HOLDING}
           AND (?5 IS NULL OR reservation_id <> ?5)
           AND starts_at < ?4 AND ?3 < ends_at LIMIT 1"
    );
    let taken: Option<String> = tx
        .prepare_cached(&sql)
        .and_then(|mut s| {
            let mut rows = s.query(params![
                lot.as_str(),
                spot.as_str(),
                starts_at.timestamp_micros(),
                ends_at.timestamp_micros(),
                except
            ])?;
            rows.next()?.map(|row| row.get(0)).transpose()
        })
        .map_err(sq_err)?;
    match taken {
        Some(other) => Err(StoreError::Conflict(format!(
            "spot {spot} of lot {lot} is reserved then (reservation {other})"
        ))),
        None => Ok(()),
    }
}

#[async_trait]
impl ReservationStore for SqliteStore {
    async fn create_reservation(
        &self,
        reservation: &ReservationRow,
        answer: Option<IdempotentAnswer<'_>>,
    ) -> StoreResult<()> {
        let r = reservation.clone();
        let answer = answer.as_ref().map(OwnedAnswer::of);
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sq_err)?;
            // The key first: a taken key writes nothing, whatever the spot (the transaction
            // rolls back when dropped).
            if let Some(answer) = &answer
                && answer.record(&tx)?.is_some()
            {
                return Err(StoreError::IdempotencyKeyTaken);
            }
            if r.state.holds_spot() {
                refuse_overlap(&tx, &r.lot, &r.spot, r.starts_at, r.ends_at, None)?;
            }
            let sql = format!(
                "INSERT INTO reservations ({COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            );
            tx.prepare_cached(&sql)
                .and_then(|mut s| {
                    s.execute(params![
                        r.id,
                        r.code,
                        r.user_id,
                        r.vehicle_id,
                        r.plate_key,
                        r.vehicle_type.as_str(),
                        r.lot.as_str(),
                        r.spot.as_str(),
                        r.starts_at.timestamp_micros(),
                        r.ends_at.timestamp_micros(),
                        r.state.as_str(),
                        r.created_at.timestamp_micros(),
                        r.updated_at.timestamp_micros(),
                    ])
                })
                .map_err(sq_err)?;
            tx.commit().map_err(sq_err)
        })
        .await
    }

    async fn reservation(&self, id: &str) -> StoreResult<Option<ReservationRow>> {
        let id = id.to_owned();
        self.read(move |conn| {
            let sql = format!("SELECT {COLUMNS} FROM reservations WHERE reservation_id = ?1");
            Ok(query(conn, &sql, [id])?.pop())
        })
        .await
    }

    async fn reservation_by_code(&self, code: &str) -> StoreResult<Option<ReservationRow>> {
        let code = code.to_owned();
        self.read(move |conn| {
            let sql = format!("SELECT {COLUMNS} FROM reservations WHERE code = ?1");
            Ok(query(conn, &sql, [code])?.pop())
        })
        .await
    }

    async fn reservations_of(&self, user_id: &str, limit: u32) -> StoreResult<Vec<ReservationRow>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM reservations WHERE user_id = ?1
                 ORDER BY starts_at DESC, reservation_id LIMIT ?2"
            );
            query(conn, &sql, params![user_id, limit])
        })
        .await
    }

    async fn holding_between(
        &self,
        lot: &LotId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<ReservationRow>> {
        let lot = lot.clone();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM reservations
                 WHERE lot_id = ?1 AND state IN {HOLDING} AND starts_at < ?3 AND ?2 < ends_at
                 ORDER BY spot_id, starts_at"
            );
            query(
                conn,
                &sql,
                params![lot.as_str(), from.timestamp_micros(), to.timestamp_micros()],
            )
        })
        .await
    }

    async fn holding_spans(
        &self,
        lot: &LotId,
        spot: Option<&SpotId>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<HoldingSpan>> {
        const T: &str = "reservations";
        let lot = lot.clone();
        let spot = spot.cloned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT reservation_id, spot_id, starts_at, ends_at FROM reservations
                 WHERE lot_id = ?1 AND (?2 IS NULL OR spot_id = ?2) AND state IN {HOLDING}
                   AND starts_at < ?4 AND ?3 < ends_at"
            );
            query_rows(
                conn,
                &sql,
                params![
                    lot.as_str(),
                    spot.as_ref().map(SpotId::as_str),
                    from.timestamp_micros(),
                    to.timestamp_micros()
                ],
                |row| {
                    Ok(HoldingSpan {
                        id: col(row, 0, T)?,
                        spot: parse_id(T, "spot_id", &col::<String>(row, 1, T)?, SpotId::parse)?,
                        starts_at: from_micros(col(row, 2, T)?, T)?,
                        ends_at: from_micros(col(row, 3, T)?, T)?,
                    })
                },
            )
        })
        .await
    }

    async fn transition_reservation(
        &self,
        id: &str,
        from: &[ReservationState],
        to: ReservationState,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let id = id.to_owned();
        let from: Vec<&'static str> = from.iter().map(|s| s.as_str()).collect();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sq_err)?;
            let current: Option<String> = tx
                .query_row(
                    "SELECT state FROM reservations WHERE reservation_id = ?1",
                    [&id],
                    |row| row.get(0),
                )
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    other => Err(other),
                })
                .map_err(sq_err)?;
            let Some(current) = current else {
                return Ok(false);
            };
            if !from.contains(&current.as_str()) {
                return Ok(false);
            }
            tx.execute(
                "UPDATE reservations SET state = ?2, updated_at = ?3 WHERE reservation_id = ?1",
                params![id, to.as_str(), at.timestamp_micros()],
            )
            .map_err(sq_err)?;
            tx.commit().map_err(sq_err)?;
            Ok(true)
        })
        .await
    }

    async fn move_reservation(
        &self,
        id: &str,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sq_err)?;
            let sql = format!(
                "SELECT {COLUMNS} FROM reservations
                 WHERE reservation_id = ?1 AND state IN {HOLDING}"
            );
            let Some(current) = query(&tx, &sql, [&id])?.pop() else {
                return Ok(false);
            };
            refuse_overlap(
                &tx,
                &current.lot,
                &current.spot,
                starts_at,
                ends_at,
                Some(&id),
            )?;
            tx.execute(
                "UPDATE reservations SET starts_at = ?2, ends_at = ?3, updated_at = ?4
                 WHERE reservation_id = ?1",
                params![
                    id,
                    starts_at.timestamp_micros(),
                    ends_at.timestamp_micros(),
                    at.timestamp_micros()
                ],
            )
            .map_err(sq_err)?;
            tx.commit().map_err(sq_err)?;
            Ok(true)
        })
        .await
    }

    async fn mark_no_shows(
        &self,
        started_before: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<ReservationRow>> {
        self.write(move |conn| {
            let sql = format!(
                "UPDATE reservations SET state = 'no_show', updated_at = ?2
                 WHERE state = 'confirmed' AND starts_at <= ?1
                 RETURNING {COLUMNS}"
            );
            query(
                conn,
                &sql,
                params![started_before.timestamp_micros(), at.timestamp_micros()],
            )
        })
        .await
    }
}
