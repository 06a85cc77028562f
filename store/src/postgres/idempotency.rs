//! Idempotency keys on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{PostgresStore, pg_err};
use crate::common::idempotency_verdict;
use crate::{IdempotencyBegin, IdempotencyStore, IdempotentAnswer, StoreResult};

/// What `user_id`'s `key` holds for a request of `scope` with this body hash.
async fn lookup(
    client: &deadpool_postgres::Client,
    user_id: &str,
    key: &str,
    scope: &str,
    request_sha256: &[u8; 32],
) -> StoreResult<Option<IdempotencyBegin>> {
    let statement = client
        .prepare_cached(
            "SELECT scope, request_sha256, status, response FROM idempotency_keys
             WHERE user_id = $1 AND key = $2",
        )
        .await
        .map_err(pg_err)?;
    let Some(row) = client
        .query_opt(&statement, &[&user_id, &key])
        .await
        .map_err(pg_err)?
    else {
        return Ok(None);
    };
    let stored_scope: String = row.try_get(0).map_err(pg_err)?;
    let stored_hash: Vec<u8> = row.try_get(1).map_err(pg_err)?;
    let status: Option<i32> = row.try_get(2).map_err(pg_err)?;
    let response: Option<String> = row.try_get(3).map_err(pg_err)?;
    Ok(Some(idempotency_verdict(
        scope,
        request_sha256,
        &stored_scope,
        &stored_hash,
        status.map(i64::from),
        response,
    )))
}

#[async_trait]
impl IdempotencyStore for PostgresStore {
    async fn begin_idempotent(
        &self,
        user_id: &str,
        key: &str,
        scope: &str,
        request_sha256: &[u8; 32],
        at: DateTime<Utc>,
    ) -> StoreResult<IdempotencyBegin> {
        let client = self.client().await?;
        let claim = client
            .prepare_cached(
                "INSERT INTO idempotency_keys (user_id, key, scope, request_sha256, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(pg_err)?;
        let inserted = client
            .execute(
                &claim,
                &[&user_id, &key, &scope, &request_sha256.as_slice(), &at],
            )
            .await
            .map_err(pg_err)?;
        if inserted == 1 {
            return Ok(IdempotencyBegin::Started);
        }
        // Deleted between the two statements by an abandoning request: still in flight.
        Ok(lookup(&client, user_id, key, scope, request_sha256)
            .await?
            .unwrap_or(IdempotencyBegin::InFlight))
    }

    async fn record_idempotent(
        &self,
        answer: IdempotentAnswer<'_>,
    ) -> StoreResult<Option<IdempotencyBegin>> {
        let client = self.client().await?;
        let record = client
            .prepare_cached(
                "INSERT INTO idempotency_keys (user_id, key, scope, request_sha256, status,
                                               response, created_at, completed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(pg_err)?;
        let inserted = client
            .execute(
                &record,
                &[
                    &answer.user_id,
                    &answer.key,
                    &answer.scope,
                    &answer.request_sha256.as_slice(),
                    &i32::from(answer.status),
                    &answer.body,
                    &answer.at,
                ],
            )
            .await
            .map_err(pg_err)?;
        if inserted == 1 {
            return Ok(None);
        }
        let (user_id, key, scope, hash) = (
            answer.user_id,
            answer.key,
            answer.scope,
            answer.request_sha256,
        );
        // Purged between the two statements (a day-old key): treat as still taken.
        Ok(Some(
            lookup(&client, user_id, key, scope, hash)
                .await?
                .unwrap_or(IdempotencyBegin::InFlight),
        ))
    }

    async fn idempotent_lookup(
        &self,
        user_id: &str,
        key: &str,
        scope: &str,
        request_sha256: &[u8; 32],
    ) -> StoreResult<Option<IdempotencyBegin>> {
        let client = self.client().await?;
        lookup(&client, user_id, key, scope, request_sha256).await
    }

    async fn finish_idempotent(
        &self,
        user_id: &str,
        key: &str,
        status: u16,
        body: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE idempotency_keys SET status = $3, response = $4, completed_at = $5
                 WHERE user_id = $1 AND key = $2",
            )
            .await
            .map_err(pg_err)?;
        client
            .execute(
                &statement,
                &[&user_id, &key, &i32::from(status), &body, &at],
            )
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn abandon_idempotent(&self, user_id: &str, key: &str) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM idempotency_keys
                 WHERE user_id = $1 AND key = $2 AND completed_at IS NULL",
                &[&user_id, &key],
            )
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn purge_idempotent(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM idempotency_keys WHERE created_at < $1",
                &[&before],
            )
            .await
            .map_err(pg_err)
    }
}
