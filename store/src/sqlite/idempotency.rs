//! Idempotency keys on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{SqliteStore, sq_err};
use crate::common::idempotency_verdict;
use crate::{IdempotencyBegin, IdempotencyStore, StoreResult};

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn begin_idempotent(
        &self,
        user_id: &str,
        key: &str,
        scope: &str,
        request_sha256: &[u8; 32],
        at: DateTime<Utc>,
    ) -> StoreResult<IdempotencyBegin> {
        let (user_id, key, scope, hash) = (
            user_id.to_owned(),
            key.to_owned(),
            scope.to_owned(),
            *request_sha256,
        );
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sq_err)?;
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO idempotency_keys
                        (user_id, key, scope, request_sha256, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![user_id, key, scope, hash.as_slice(), at.timestamp_micros()],
                )
                .map_err(sq_err)?;
            let verdict = if inserted == 1 {
                IdempotencyBegin::Started
            } else {
                let found: Option<(String, Vec<u8>, Option<i64>, Option<String>)> = tx
                    .query_row(
                        "SELECT scope, request_sha256, status, response FROM idempotency_keys
                         WHERE user_id = ?1 AND key = ?2",
                        params![user_id, key],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                    )
                    .optional()
                    .map_err(sq_err)?;
                match found {
                    Some((stored_scope, stored_hash, status, response)) => idempotency_verdict(
                        &scope,
                        &hash,
                        &stored_scope,
                        &stored_hash,
                        status,
                        response,
                    ),
                    None => IdempotencyBegin::InFlight,
                }
            };
            tx.commit().map_err(sq_err)?;
            Ok(verdict)
        })
        .await
    }

    async fn finish_idempotent(
        &self,
        user_id: &str,
        key: &str,
        status: u16,
        body: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (user_id, key, body) = (user_id.to_owned(), key.to_owned(), body.to_owned());
        self.write(move |conn| {
            conn.execute(
                "UPDATE idempotency_keys SET status = ?3, response = ?4, completed_at = ?5
                 WHERE user_id = ?1 AND key = ?2",
                params![user_id, key, i64::from(status), body, at.timestamp_micros()],
            )
            .map_err(sq_err)?;
            Ok(())
        })
        .await
    }

    async fn abandon_idempotent(&self, user_id: &str, key: &str) -> StoreResult<()> {
        let (user_id, key) = (user_id.to_owned(), key.to_owned());
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM idempotency_keys
                 WHERE user_id = ?1 AND key = ?2 AND completed_at IS NULL",
                params![user_id, key],
            )
            .map_err(sq_err)?;
            Ok(())
        })
        .await
    }

    async fn purge_idempotent(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.write(move |conn| {
            let deleted = conn
                .execute(
                    "DELETE FROM idempotency_keys WHERE created_at < ?1",
                    [before.timestamp_micros()],
                )
                .map_err(sq_err)?;
            Ok(deleted as u64)
        })
        .await
    }
}
