//! Reservations on PostgreSQL: the exclusion constraint `reservations_no_double_booking`
//! (over a hash of the spot's name and the time range; migration 0012 says why) refuses an
//! overlapping holding reservation whatever the concurrency; its violation comes
//! back as [`crate::StoreError::Conflict`]. Writers of one spot queue on an advisory lock
//! first ([`lock_spot`]) so that the constraint's checks never deadlock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parkd_core::ids::{LotId, SpotId};
use parkd_core::reservation::ReservationState;
use tokio_postgres::Row;

use super::{PostgresStore, col, pg_err};
use crate::common::{parse_id, parse_reservation_state, parse_vehicle_type};
use crate::{HoldingSpan, IdempotentAnswer, ReservationRow, ReservationStore, StoreResult};

pub(super) const COLUMNS: &str = "reservation_id, code, user_id, vehicle_id, plate_key, vehicle_type, \
                       lot_id, spot_id, starts_at, ends_at, state, created_at, updated_at";

fn row_from(row: &Row) -> StoreResult<ReservationRow> {
    const T: &str = "reservations";
    Ok(ReservationRow {
        id: col(row, 0, T)?,
        code: col(row, 1, T)?,
        user_id: col(row, 2, T)?,
        vehicle_id: col(row, 3, T)?,
        plate_key: col(row, 4, T)?,
        vehicle_type: parse_vehicle_type(col(row, 5, T)?)?,
        lot: parse_id(T, "lot_id", col(row, 6, T)?, LotId::parse)?,
        spot: parse_id(T, "spot_id", col(row, 7, T)?, SpotId::parse)?,
        starts_at: col(row, 8, T)?,
        ends_at: col(row, 9, T)?,
        state: parse_reservation_state(col(row, 10, T)?)?,
        created_at: col(row, 11, T)?,
        updated_at: col(row, 12, T)?,
    })
}

/// Takes the transaction-scoped advisory lock of one spot.
///
/// The exclusion constraint alone is the guarantee against double booking, but concurrent
/// inserts that it checks wait on each other's uncommitted rows and can wait in a cycle:
/// PostgreSQL then aborts one as a deadlock (40P01), found by the 50-client race test in
/// about one run in three. Queueing the writers of one spot on this lock first removes the
/// cycle; writers of different spots do not wait for each other.
async fn lock_spot(
    tx: &deadpool_postgres::Transaction<'_>,
    lot: &LotId,
    spot: &SpotId,
) -> StoreResult<()> {
    let statement = tx
        .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .await
        .map_err(pg_err)?;
    tx.execute(&statement, &[&spot_lock_key(lot, spot)])
        .await
        .map_err(pg_err)?;
    Ok(())
}

/// The advisory lock's key of one spot (hashed by the server).
pub(super) fn spot_lock_key(lot: &LotId, spot: &SpotId) -> String {
    format!("reservation-spot/{lot}/{spot}")
}

#[async_trait]
impl ReservationStore for PostgresStore {
    async fn create_reservation(
        &self,
        r: &ReservationRow,
        answer: Option<IdempotentAnswer<'_>>,
    ) -> StoreResult<()> {
        // Concurrent creates share a statement (group commit; `batch.rs`).
        self.writer.create(r, answer).await
    }

    async fn reservation(&self, id: &str) -> StoreResult<Option<ReservationRow>> {
        let client = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM reservations WHERE reservation_id = $1");
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let row = client.query_opt(&statement, &[&id]).await.map_err(pg_err)?;
        row.as_ref().map(row_from).transpose()
    }

    async fn reservation_by_code(&self, code: &str) -> StoreResult<Option<ReservationRow>> {
        let client = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM reservations WHERE code = $1");
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let row = client
            .query_opt(&statement, &[&code])
            .await
            .map_err(pg_err)?;
        row.as_ref().map(row_from).transpose()
    }

    async fn reservations_of(&self, user_id: &str, limit: u32) -> StoreResult<Vec<ReservationRow>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM reservations WHERE user_id = $1
             ORDER BY starts_at DESC, reservation_id LIMIT $2"
        );
        let rows = client
            .query(&sql, &[&user_id, &i64::from(limit)])
            .await
            .map_err(pg_err)?;
        rows.iter().map(row_from).collect()
    }

    async fn holding_between(
        &self,
        lot: &LotId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<ReservationRow>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM reservations
             WHERE lot_id = $1 AND state IN ('requested', 'confirmed', 'checked_in')
               AND tstzrange(starts_at, ends_at, '[)') && tstzrange($2, $3, '[)')
             ORDER BY spot_id, starts_at"
        );
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let rows = client
            .query(&statement, &[&lot.as_str(), &from, &to])
            .await
            .map_err(pg_err)?;
        rows.iter().map(row_from).collect()
    }

    async fn holding_spans(
        &self,
        lot: &LotId,
        spot: Option<&SpotId>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<HoldingSpan>> {
        const T: &str = "reservations";
        let client = self.client().await?;
        // One spot: the exclusion constraint's index (the spot's hash, range); the whole lot:
        // `reservations_holding_by_time` (range), the lot a filter.
        let rows = match spot {
            Some(spot) => {
                let statement = client
                    .prepare_cached(
                        "SELECT reservation_id, spot_id, starts_at, ends_at FROM reservations
                         WHERE hashtextextended(lot_id || '/' || spot_id, 0)
                               = hashtextextended($1 || '/' || $2, 0)
                           AND lot_id = $1 AND spot_id = $2
                           AND state IN ('requested', 'confirmed', 'checked_in')
                           AND tstzrange(starts_at, ends_at, '[)') && tstzrange($3, $4, '[)')",
                    )
                    .await
                    .map_err(pg_err)?;
                client
                    .query(&statement, &[&lot.as_str(), &spot.as_str(), &from, &to])
                    .await
            }
            None => {
                let statement = client
                    .prepare_cached(
                        "SELECT reservation_id, spot_id, starts_at, ends_at FROM reservations
                         WHERE lot_id = $1
                           AND state IN ('requested', 'confirmed', 'checked_in')
                           AND tstzrange(starts_at, ends_at, '[)') && tstzrange($2, $3, '[)')",
                    )
                    .await
                    .map_err(pg_err)?;
                client.query(&statement, &[&lot.as_str(), &from, &to]).await
            }
        }
        .map_err(pg_err)?;
        rows.iter()
            .map(|row| {
                Ok(HoldingSpan {
                    id: col(row, 0, T)?,
                    spot: parse_id(T, "spot_id", col(row, 1, T)?, SpotId::parse)?,
                    starts_at: col(row, 2, T)?,
                    ends_at: col(row, 3, T)?,
                })
            })
            .collect()
    }

    async fn transition_reservation(
        &self,
        id: &str,
        from: &[ReservationState],
        to: ReservationState,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let updated = client
            .execute(
                "UPDATE reservations SET state = $3, updated_at = $4
                 WHERE reservation_id = $1 AND state = ANY($2)",
                &[&id, &from, &to.as_str(), &at],
            )
            .await
            .map_err(pg_err)?;
        Ok(updated > 0)
    }

    async fn move_reservation(
        &self,
        id: &str,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let Some(current) = tx
            .query_opt(
                "SELECT lot_id, spot_id FROM reservations WHERE reservation_id = $1",
                &[&id],
            )
            .await
            .map_err(pg_err)?
        else {
            return Ok(false);
        };
        const T: &str = "reservations";
        let lot = parse_id(T, "lot_id", col(&current, 0, T)?, LotId::parse)?;
        let spot = parse_id(T, "spot_id", col(&current, 1, T)?, SpotId::parse)?;
        lock_spot(&tx, &lot, &spot).await?;
        let updated = tx
            .execute(
                "UPDATE reservations SET starts_at = $2, ends_at = $3, updated_at = $4
                 WHERE reservation_id = $1
                   AND state IN ('requested', 'confirmed', 'checked_in')",
                &[&id, &starts_at, &ends_at, &at],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(updated > 0)
    }

    async fn mark_no_shows(
        &self,
        started_before: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<ReservationRow>> {
        let client = self.client().await?;
        let sql = format!(
            "UPDATE reservations SET state = 'no_show', updated_at = $2
             WHERE state = 'confirmed' AND starts_at <= $1
             RETURNING {COLUMNS}"
        );
        let rows = client
            .query(&sql, &[&started_before, &at])
            .await
            .map_err(pg_err)?;
        rows.iter().map(row_from).collect()
    }
}
