//! Idempotency keys on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{SqliteStore, sq_err};
use crate::common::idempotency_verdict;
use crate::{IdempotencyBegin, IdempotencyStore, IdempotentAnswer, StoreResult};

/// What `user_id`'s `key` holds for a request of `scope` with this body hash.
fn lookup(
    conn: &rusqlite::Connection,
    user_id: &str,
    key: &str,
    scope: &str,
    request_sha256: &[u8; 32],
) -> StoreResult<Option<IdempotencyBegin>> {
    /// Scope, body hash, status and answer of a recorded key.
    type Stored = (String, Vec<u8>, Option<i64>, Option<String>);
    let found: Option<Stored> = conn
        .prepare_cached(
            "SELECT scope, request_sha256, status, response FROM idempotency_keys
             WHERE user_id = ?1 AND key = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![user_id, key], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()
        })
        .map_err(sq_err)?;
    Ok(found.map(|(stored_scope, stored_hash, status, response)| {
        idempotency_verdict(
            scope,
            request_sha256,
            &stored_scope,
            &stored_hash,
            status,
            response,
        )
    }))
}

/// An [`IdempotentAnswer`] that can move to the writer thread.
pub(super) struct OwnedAnswer {
    user_id: String,
    key: String,
    scope: String,
    request_sha256: [u8; 32],
    status: i64,
    body: String,
    at: i64,
}

impl OwnedAnswer {
    pub(super) fn of(answer: &IdempotentAnswer<'_>) -> Self {
        Self {
            user_id: answer.user_id.to_owned(),
            key: answer.key.to_owned(),
            scope: answer.scope.to_owned(),
            request_sha256: *answer.request_sha256,
            status: i64::from(answer.status),
            body: answer.body.to_owned(),
            at: answer.at.timestamp_micros(),
        }
    }

    /// Inside a write transaction: records the key with its answer, or, when the key is
    /// already there, writes nothing and tells what it holds.
    pub(super) fn record(
        &self,
        conn: &rusqlite::Connection,
    ) -> StoreResult<Option<IdempotencyBegin>> {
        let inserted = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO idempotency_keys
                    (user_id, key, scope, request_sha256, status, response, created_at,
                     completed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    self.user_id,
                    self.key,
                    self.scope,
                    self.request_sha256.as_slice(),
                    self.status,
                    self.body,
                    self.at,
                ])
            })
            .map_err(sq_err)?;
        if inserted == 1 {
            return Ok(None);
        }
        Ok(Some(
            lookup(
                conn,
                &self.user_id,
                &self.key,
                &self.scope,
                &self.request_sha256,
            )?
            .unwrap_or(IdempotencyBegin::InFlight),
        ))
    }
}

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
                // Deleted between the two statements by an abandoning request: in flight.
                lookup(&tx, &user_id, &key, &scope, &hash)?.unwrap_or(IdempotencyBegin::InFlight)
            };
            tx.commit().map_err(sq_err)?;
            Ok(verdict)
        })
        .await
    }

    async fn record_idempotent(
        &self,
        answer: IdempotentAnswer<'_>,
    ) -> StoreResult<Option<IdempotencyBegin>> {
        let answer = OwnedAnswer::of(&answer);
        self.write(move |conn| answer.record(conn)).await
    }

    async fn idempotent_lookup(
        &self,
        user_id: &str,
        key: &str,
        scope: &str,
        request_sha256: &[u8; 32],
    ) -> StoreResult<Option<IdempotencyBegin>> {
        let (user_id, key, scope, hash) = (
            user_id.to_owned(),
            key.to_owned(),
            scope.to_owned(),
            *request_sha256,
        );
        self.read(move |conn| lookup(conn, &user_id, &key, &scope, &hash))
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
