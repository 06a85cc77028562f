//! Group commit of reservation creates: concurrent [`create_reservation`] calls of one process
//! share one statement and one transaction.
//!
//! On a busy lot PostgreSQL spends about as much on each single-row statement's fixed work
//! (the round trip, executor start, snapshot, commit record, WAL write, the socket calls) as
//! on the row itself. Here a call queues its row; while batches are being written (at most
//! [`BatchLimits::in_flight`] at once), later calls gather in the queue and go in the next
//! batch together, up to [`BatchLimits::rows`] rows. A lone call (a quiet lot) goes alone, at
//! once, through the single-row statement: batching adds no wait, it only takes what piles up
//! anyway.
//!
//! A batch is one statement: the spots' advisory locks in sorted order (so two batches never
//! wait on each other in a cycle), the rows, and the idempotency keys with their answers.
//! Plainly inserted first: the caller's book holds every spot it sends here, so within one
//! process the exclusion constraint has nothing to refuse. When it does refuse one (another
//! instance booked that spot meanwhile), the statement fails whole and the batch goes again
//! with `ON CONFLICT DO NOTHING`, which leaves out only the overlapping rows (they are
//! answered [`StoreError::Conflict`], as a lone insert would be); the next
//! [`CONTENDED_BATCHES`] batches then start that way. `ON CONFLICT` is not the default
//! because PostgreSQL then checks the exclusion constraint twice per row (before and after
//! the speculative insert), about 7 % of the throughput on the benchmark. Anything else that
//! fails a statement whole (a key already recorded, a missing user, a deadlock with another
//! process) is rare: the batch is then written again one row at a time, and each caller gets
//! its own row's answer. So each call sees exactly what a lone single-row write would give it.
//!
//! The batches are written by tasks of their own, not by the callers' futures: a caller that
//! is cancelled (its client went away) cannot abandon the other callers' rows halfway.
//!
//! [`create_reservation`]: crate::ReservationStore::create_reservation

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Client, Pool};
use tokio::sync::{Semaphore, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_util::task::TaskTracker;

use super::reservations::{COLUMNS, spot_lock_key};
use super::{pg_err, pool_err};
use crate::{IdempotentAnswer, ReservationRow, StoreError, StoreResult};

/// How much one batch may take and how many may be written at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BatchLimits {
    /// Rows in one statement at most.
    pub rows: usize,
    /// Batch statements in flight at once (each holds one pooled connection).
    pub in_flight: usize,
}

impl BatchLimits {
    /// For a pool of `pool_size` connections: half of them for batches (the rest for reads and
    /// other writes), 16 rows each. On 2 cores (pool 4; bench/results/reservations.md,
    /// "Tuning"): 8, 16 or 64 rows and 1 to 4 in flight all gave p99 13.5–17.3 ms; 16 rows and
    /// 2 in flight the most bookings/s at a p99 of 14.1–14.2 ms.
    pub(super) fn for_pool(pool_size: usize) -> Self {
        BatchLimits {
            rows: 16,
            in_flight: (pool_size / 2).max(1),
        }
    }
}

/// After the exclusion constraint refused a plain batch, this many batches start with
/// `ON CONFLICT DO NOTHING` (other instances are booking the same spots).
pub(super) const CONTENDED_BATCHES: u32 = 64;

/// An idempotency answer owned by the queue (the caller's borrowed one outlives no await).
#[derive(Debug, Clone)]
struct OwnedAnswer {
    user_id: String,
    key: String,
    scope: String,
    request_sha256: [u8; 32],
    status: u16,
    body: String,
    at: DateTime<Utc>,
}

impl OwnedAnswer {
    fn of(answer: &IdempotentAnswer<'_>) -> Self {
        OwnedAnswer {
            user_id: answer.user_id.to_owned(),
            key: answer.key.to_owned(),
            scope: answer.scope.to_owned(),
            request_sha256: *answer.request_sha256,
            status: answer.status,
            body: answer.body.to_owned(),
            at: answer.at,
        }
    }

    fn borrow(&self) -> IdempotentAnswer<'_> {
        IdempotentAnswer {
            user_id: &self.user_id,
            key: &self.key,
            scope: &self.scope,
            request_sha256: &self.request_sha256,
            status: self.status,
            body: &self.body,
            at: self.at,
        }
    }
}

/// One queued create and where its answer goes.
struct Pending {
    row: ReservationRow,
    answer: Option<OwnedAnswer>,
    reply: oneshot::Sender<StoreResult<()>>,
}

/// The queue of reservation creates and the tasks writing them.
pub(super) struct ReservationWriter {
    pool: Pool,
    limits: BatchLimits,
    /// Creates not yet taken by a batch. Invariant: while it is not empty, exactly one
    /// dispatch task exists that has not taken from it yet.
    queue: Mutex<Vec<Pending>>,
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
    /// Batches left to start with `ON CONFLICT DO NOTHING`.
    contended: AtomicU32,
    counts: Counts,
}

/// What the writer did (`stats`, exported as metrics by parkd).
#[derive(Debug, Default)]
struct Counts {
    /// Multi-row statements run.
    statements: AtomicU64,
    /// Rows in them.
    rows: AtomicU64,
    /// Of those, how many the exclusion constraint refused whole (written again skipping the
    /// overlapping rows).
    refused_overlap: AtomicU64,
    /// Of those, how many failed whole otherwise, their rows written again one by one.
    rewritten: AtomicU64,
}

impl std::fmt::Debug for ReservationWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReservationWriter")
            .field("limits", &self.limits)
            .field("batches_running", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl ReservationWriter {
    pub(super) fn new(pool: Pool, limits: BatchLimits) -> Arc<Self> {
        let limits = BatchLimits {
            rows: limits.rows.max(1),
            in_flight: limits.in_flight.max(1),
        };
        Arc::new(ReservationWriter {
            pool,
            limits,
            queue: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(limits.in_flight)),
            tasks: TaskTracker::new(),
            contended: AtomicU32::new(0),
            counts: Counts::default(),
        })
    }

    /// Queues one create and waits for its answer.
    pub(super) async fn create(
        self: &Arc<Self>,
        row: &ReservationRow,
        answer: Option<IdempotentAnswer<'_>>,
    ) -> StoreResult<()> {
        let (reply, answered) = oneshot::channel();
        let pending = Pending {
            row: row.clone(),
            answer: answer.as_ref().map(OwnedAnswer::of),
            reply,
        };
        let first = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.push(pending);
            queue.len() == 1
        };
        if first {
            self.spawn_dispatch();
        }
        answered.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the reservation write was abandoned (shutting down)".to_owned(),
            ))
        })
    }

    /// What it did since start.
    pub(super) fn stats(&self) -> crate::ReservationBatches {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        crate::ReservationBatches {
            statements: read(&self.counts.statements),
            rows: read(&self.counts.rows),
            refused_overlap: read(&self.counts.refused_overlap),
            rewritten: read(&self.counts.rewritten),
        }
    }

    /// Waits until every batch taken so far is written and answered.
    pub(super) async fn settle(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }

    fn spawn_dispatch(self: &Arc<Self>) {
        let this = Arc::clone(self);
        self.tasks.spawn(async move { this.dispatch().await });
    }

    /// Waits for a free slot, takes what the queue holds (up to the batch size) and writes it.
    async fn dispatch(self: Arc<Self>) {
        // Dropped before taking (the runtime shutting down): the queue is emptied, its
        // callers told, so that the next create starts a dispatcher of its own again.
        let mut untaken = Untaken(Some(&self.queue));
        // The semaphore is never closed.
        let Ok(_slot) = Arc::clone(&self.slots).acquire_owned().await else {
            return;
        };
        untaken.0 = None;
        let (mut batch, more) = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.len() > self.limits.rows {
                let rest = queue.split_off(self.limits.rows);
                (std::mem::replace(&mut *queue, rest), true)
            } else {
                (std::mem::take(&mut *queue), false)
            }
        };
        if more {
            // What is left keeps its own dispatcher (the invariant on `queue`).
            self.spawn_dispatch();
        }
        // A caller that went away while queued (its client left) writes nothing, as before
        // batching. Once taken, a row is written whether its caller stays or not.
        batch.retain(|pending| !pending.reply.is_closed());
        if !batch.is_empty() {
            self.write(batch).await;
        }
    }

    /// Writes a batch and answers each caller.
    async fn write(&self, batch: Vec<Pending>) {
        let client = match self.pool.get().await {
            Ok(client) => client,
            Err(error) => return answer_all(batch, pool_err(error)),
        };
        if let [one] = batch.as_slice() {
            let answer = one.answer.as_ref().map(OwnedAnswer::borrow);
            let result = insert_one(&client, &one.row, answer).await;
            return answer_each(batch, [result]);
        }
        self.counts.statements.fetch_add(1, Ordering::Relaxed);
        self.counts
            .rows
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let skip_overlaps = self
            .contended
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        let mut written = insert_many(&client, &batch, skip_overlaps).await;
        if !skip_overlaps
            && let Err(error) = &written
            && error.code() == Some(&SqlState::EXCLUSION_VIOLATION)
        {
            self.counts.refused_overlap.fetch_add(1, Ordering::Relaxed);
            self.contended.store(CONTENDED_BATCHES, Ordering::Relaxed);
            written = insert_many(&client, &batch, true).await;
        }
        match written {
            Ok(made) => {
                let results = made.into_iter().map(|went_in| {
                    if went_in {
                        Ok(())
                    } else {
                        Err(StoreError::Conflict(
                            "the spot is booked at an overlapping time".to_owned(),
                        ))
                    }
                });
                answer_each(batch, results);
            }
            // Something failed the whole statement (a recorded key, a missing user, a
            // deadlock with another process): nothing of it was written. Each row again
            // alone, each caller answered as soon as its row is.
            Err(error) if error.as_db_error().is_some() => {
                self.counts.rewritten.fetch_add(1, Ordering::Relaxed);
                let expected = error.code().is_some_and(|code| {
                    *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::FOREIGN_KEY_VIOLATION
                });
                let error = pg_err(error);
                if expected {
                    tracing::debug!(rows = batch.len(), %error, "batch refused whole; writing its rows one by one");
                } else {
                    tracing::warn!(rows = batch.len(), %error, "batch refused whole; writing its rows one by one");
                }
                for pending in batch {
                    let answer = pending.answer.as_ref().map(OwnedAnswer::borrow);
                    let result = insert_one(&client, &pending.row, answer).await;
                    let _ = pending.reply.send(result);
                }
            }
            Err(error) => answer_all(batch, pg_err(error)),
        }
    }
}

/// Empties the queue when a dispatcher is dropped before it took from it.
struct Untaken<'a>(Option<&'a Mutex<Vec<Pending>>>);

impl Drop for Untaken<'_> {
    fn drop(&mut self) {
        if let Some(queue) = self.0 {
            // Dropping the senders answers their callers (see `create`).
            drop(std::mem::take(
                &mut *queue.lock().unwrap_or_else(PoisonError::into_inner),
            ));
        }
    }
}

/// Sends each caller its row's result, in order. A caller that went away does not take its
/// answer; its row stands.
fn answer_each(batch: Vec<Pending>, results: impl IntoIterator<Item = StoreResult<()>>) {
    for (pending, result) in batch.into_iter().zip(results) {
        let _ = pending.reply.send(result);
    }
}

/// Sends every caller the same error (the batch never reached the database, or the
/// connection broke): the kind a lone write would have got.
fn answer_all(batch: Vec<Pending>, error: StoreError) {
    let message = match &error {
        StoreError::Unavailable(message) | StoreError::Database(message) => message.clone(),
        other => other.to_string(),
    };
    let unavailable = matches!(error, StoreError::Unavailable(_));
    for pending in batch {
        let error = if unavailable {
            StoreError::Unavailable(message.clone())
        } else {
            StoreError::Database(message.clone())
        };
        let _ = pending.reply.send(Err(error));
    }
}

/// The single-row statement without and with an idempotency key ([`insert_one`]). The spot's
/// lock is taken while producing the row, so before the constraint's check; the key goes in
/// after the row (so after the lock): a concurrent request with the same key waits for this
/// transaction, then fails on the primary key and replays this answer.
static INSERT_ONE_SQL: LazyLock<[String; 2]> = LazyLock::new(|| {
    let row = format!(
        "INSERT INTO reservations ({COLUMNS}) \
         SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, \
                $8::text, $9::timestamptz, $10::timestamptz, $11::text, $12::timestamptz, \
                $13::timestamptz \
         FROM (SELECT pg_advisory_xact_lock(hashtextextended($14, 0))) AS spot_lock"
    );
    let keyed = format!(
        "WITH made AS ({row} RETURNING reservation_id) \
         INSERT INTO idempotency_keys (user_id, key, scope, request_sha256, status, response, \
                                       created_at, completed_at) \
         SELECT $15, $16, $17, $18, $19, $20, $21, $21 FROM made"
    );
    [row, keyed]
});

/// One reservation in one statement: the spot's advisory lock, the row, and its idempotency
/// key with the answer (only if the row went in; on a conflict or a taken key the statement
/// fails whole).
pub(super) async fn insert_one(
    client: &Client,
    r: &ReservationRow,
    answer: Option<IdempotentAnswer<'_>>,
) -> StoreResult<()> {
    let key = spot_lock_key(&r.lot, &r.spot);
    let vehicle_type = r.vehicle_type.as_str();
    let (lot, spot, state) = (r.lot.as_str(), r.spot.as_str(), r.state.as_str());
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &r.id,
        &r.code,
        &r.user_id,
        &r.vehicle_id,
        &r.plate_key,
        &vehicle_type,
        &lot,
        &spot,
        &r.starts_at,
        &r.ends_at,
        &state,
        &r.created_at,
        &r.updated_at,
        &key,
    ];
    let (status, hash);
    let sql = match &answer {
        None => &INSERT_ONE_SQL[0],
        Some(answer) => {
            status = i32::from(answer.status);
            hash = answer.request_sha256.as_slice();
            params.extend_from_slice(&[
                &answer.user_id,
                &answer.key,
                &answer.scope,
                &hash,
                &status,
                &answer.body,
                &answer.at,
            ]);
            &INSERT_ONE_SQL[1]
        }
    };
    let statement = client.prepare_cached(sql).await.map_err(pg_err)?;
    client
        .execute(&statement, &params)
        .await
        .map_err(|error| match error.as_db_error() {
            Some(db) if db.constraint() == Some("idempotency_keys_pkey") => {
                StoreError::IdempotencyKeyTaken
            }
            _ => pg_err(error),
        })?;
    Ok(())
}

/// The batch statement, `{columns}` standing for [`COLUMNS`] and `{skip}` for its conflict
/// clause. Its rows come in as one array per column (`unnest`), so one prepared statement
/// serves every batch size.
const INSERT_MANY: &str = "\
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::text[], $9::timestamptz[],
                         $10::timestamptz[], $11::text[], $12::timestamptz[],
                         $13::timestamptz[], $14::text[])
        AS i(reservation_id, code, user_id, vehicle_id, plate_key, vehicle_type, lot_id,
             spot_id, starts_at, ends_at, state, created_at, updated_at, lock_key)
), locked AS (
    SELECT s.*, pg_advisory_xact_lock(hashtextextended(s.lock_key, 0)) AS locked
    FROM (SELECT * FROM input ORDER BY lock_key OFFSET 0) AS s
), made AS (
    INSERT INTO reservations ({columns})
    SELECT {columns}
    FROM locked
    {skip}
    RETURNING reservation_id
), keyed AS (
    INSERT INTO idempotency_keys (user_id, key, scope, request_sha256, status, response,
                                  created_at, completed_at)
    SELECT k.user_id, k.key, k.scope, k.request_sha256, k.status, k.response, k.at, k.at
    FROM unnest($15::text[], $16::text[], $17::text[], $18::bytea[], $19::int4[],
                $20::text[], $21::timestamptz[], $22::text[])
            AS k(user_id, key, scope, request_sha256, status, response, at, reservation_id)
        JOIN made USING (reservation_id)
    ORDER BY k.user_id, k.key
)
SELECT reservation_id FROM made";

/// [`INSERT_MANY`] inserting plainly, and leaving out rows the constraints refuse.
static INSERT_MANY_SQL: LazyLock<[String; 2]> = LazyLock::new(|| {
    let sql = INSERT_MANY.replace("{columns}", COLUMNS);
    [
        sql.replace("{skip}", ""),
        sql.replace("{skip}", "ON CONFLICT DO NOTHING"),
    ]
});

/// Several reservations in one statement (see the module's doc); for each row, whether it
/// went in (all of them, unless `skip_overlaps`). An `Err` means nothing was written.
async fn insert_many(
    client: &Client,
    batch: &[Pending],
    skip_overlaps: bool,
) -> Result<Vec<bool>, tokio_postgres::Error> {
    let rows = || batch.iter().map(|p| &p.row);
    let ids: Vec<&str> = rows().map(|r| r.id.as_str()).collect();
    let codes: Vec<&str> = rows().map(|r| r.code.as_str()).collect();
    let users: Vec<&str> = rows().map(|r| r.user_id.as_str()).collect();
    let vehicles: Vec<Option<&str>> = rows().map(|r| r.vehicle_id.as_deref()).collect();
    let plates: Vec<&str> = rows().map(|r| r.plate_key.as_str()).collect();
    let types: Vec<&str> = rows().map(|r| r.vehicle_type.as_str()).collect();
    let lots: Vec<&str> = rows().map(|r| r.lot.as_str()).collect();
    let spots: Vec<&str> = rows().map(|r| r.spot.as_str()).collect();
    let starts: Vec<DateTime<Utc>> = rows().map(|r| r.starts_at).collect();
    let ends: Vec<DateTime<Utc>> = rows().map(|r| r.ends_at).collect();
    let states: Vec<&str> = rows().map(|r| r.state.as_str()).collect();
    let created: Vec<DateTime<Utc>> = rows().map(|r| r.created_at).collect();
    let updated: Vec<DateTime<Utc>> = rows().map(|r| r.updated_at).collect();
    let locks: Vec<String> = rows().map(|r| spot_lock_key(&r.lot, &r.spot)).collect();
    let keyed = || {
        batch
            .iter()
            .filter_map(|p| Some((p.answer.as_ref()?, &p.row)))
    };
    let key_users: Vec<&str> = keyed().map(|(a, _)| a.user_id.as_str()).collect();
    let keys: Vec<&str> = keyed().map(|(a, _)| a.key.as_str()).collect();
    let scopes: Vec<&str> = keyed().map(|(a, _)| a.scope.as_str()).collect();
    let hashes: Vec<&[u8]> = keyed().map(|(a, _)| a.request_sha256.as_slice()).collect();
    let statuses: Vec<i32> = keyed().map(|(a, _)| i32::from(a.status)).collect();
    let bodies: Vec<&str> = keyed().map(|(a, _)| a.body.as_str()).collect();
    let ats: Vec<DateTime<Utc>> = keyed().map(|(a, _)| a.at).collect();
    let key_rows: Vec<&str> = keyed().map(|(_, r)| r.id.as_str()).collect();
    let params: [&(dyn ToSql + Sync); 22] = [
        &ids, &codes, &users, &vehicles, &plates, &types, &lots, &spots, &starts, &ends, &states,
        &created, &updated, &locks, &key_users, &keys, &scopes, &hashes, &statuses, &bodies, &ats,
        &key_rows,
    ];
    let sql = &INSERT_MANY_SQL[usize::from(skip_overlaps)];
    let statement = client.prepare_cached(sql).await?;
    let made = client.query(&statement, &params).await?;
    let mut went_in = std::collections::HashSet::with_capacity(made.len());
    for row in &made {
        went_in.insert(row.try_get::<_, String>(0)?);
    }
    Ok(batch.iter().map(|p| went_in.contains(&p.row.id)).collect())
}

#[cfg(test)]
#[cfg(feature = "testing")]
mod tests {
    use chrono::TimeZone;
    use parkd_core::ids::LotId;

    use super::*;
    use crate::{AccountStore, ReservationStore};

    fn t(minute: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_900_000_000 + minute * 60, 0).unwrap()
    }

    fn row(id: &str, spot: &str, from: i64, to: i64) -> ReservationRow {
        let mut row = crate::testing::car_reservation(id, spot, t(from), t(to));
        row.created_at = t(0);
        row.updated_at = t(0);
        row
    }

    async fn store_with_user() -> Arc<super::super::PostgresStore> {
        let store = crate::testing::postgres_store().await;
        store
            .create_user(&crate::testing::driver("u1", t(0)))
            .await
            .unwrap();
        Arc::new(store)
    }

    /// Spawns one create per row at once; whether each went in, in order. These tests run on
    /// `#[tokio::test]`'s single-threaded runtime, where every spawned caller queues its row
    /// before the dispatcher it spawns first gets to run: the batches they form are exact.
    async fn create_all(
        store: &Arc<super::super::PostgresStore>,
        rows: Vec<ReservationRow>,
    ) -> Vec<StoreResult<()>> {
        let calls: Vec<_> = rows
            .into_iter()
            .map(|r| {
                let store = Arc::clone(store);
                tokio::spawn(async move { store.create_reservation(&r, None).await })
            })
            .collect();
        let mut results = Vec::new();
        for call in calls {
            results.push(call.await.unwrap());
        }
        results
    }

    /// Creates that arrive while nothing is being written yet all go in one statement (on this
    /// single-threaded runtime the dispatch task runs only after every caller queued).
    #[tokio::test]
    async fn creates_that_arrive_together_share_one_statement() {
        let store = store_with_user().await;
        // Spots s0..s9, three bookings each, none overlapping.
        let rows = (0..16)
            .map(|i| {
                row(
                    &format!("b-{i}"),
                    &format!("s{}", i % 10),
                    i * 100,
                    i * 100 + 60,
                )
            })
            .collect();
        let results = create_all(&store, rows).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let counts = &store.writer.counts;
        assert_eq!(counts.statements.load(Ordering::Relaxed), 1);
        assert_eq!(counts.rows.load(Ordering::Relaxed), 16);
        assert_eq!(counts.refused_overlap.load(Ordering::Relaxed), 0);
        assert_eq!(counts.rewritten.load(Ordering::Relaxed), 0);
        assert_eq!(store.writer.contended.load(Ordering::Relaxed), 0);
    }

    /// An overlap the constraint refuses fails the plain statement; the batch goes again
    /// leaving out only the overlapping rows, and the next batches skip overlaps from the
    /// start (no second refusal).
    #[tokio::test]
    async fn overlapping_rows_lose_alone_and_later_batches_expect_them() {
        let store = store_with_user().await;
        store
            .create_reservation(&row("first", "s0", 60, 120), None)
            .await
            .unwrap();
        for round in 0..2 {
            let rows = (0..8)
                .map(|i| {
                    let id = format!("r{round}-{i}");
                    // Even rows overlap `first` on s0; odd ones have spots of their own.
                    if i % 2 == 0 {
                        row(&id, "s0", 90 + i, 100 + i)
                    } else {
                        row(&id, &format!("s{round}{i}"), 60, 120)
                    }
                })
                .collect();
            let results = create_all(&store, rows).await;
            for (i, result) in results.iter().enumerate() {
                match (i % 2, result) {
                    (0, Err(StoreError::Conflict(_))) | (1, Ok(())) => {}
                    _ => panic!("round {round}, row {i}: {result:?}"),
                }
            }
        }
        let counts = &store.writer.counts;
        assert_eq!(counts.statements.load(Ordering::Relaxed), 2);
        assert_eq!(counts.refused_overlap.load(Ordering::Relaxed), 1);
        assert_eq!(counts.rewritten.load(Ordering::Relaxed), 0);
        assert_eq!(
            store.writer.contended.load(Ordering::Relaxed),
            CONTENDED_BATCHES - 1
        );
        let holding = store
            .holding_between(&LotId::parse("garage-a").unwrap(), t(0), t(10_000))
            .await
            .unwrap();
        assert_eq!(holding.len(), 1 + 2 * 4);
    }

    /// A batch that fails whole (one row's user does not exist) is written again row by row:
    /// only that row is refused.
    #[tokio::test]
    async fn a_batch_refused_whole_is_written_row_by_row() {
        let store = store_with_user().await;
        let mut calls = Vec::new();
        for i in 0..5 {
            let store = Arc::clone(&store);
            let mut r = row(&format!("r-{i}"), &format!("s{i}"), 60, 120);
            if i == 3 {
                r.user_id = "nobody".into();
            }
            calls.push(tokio::spawn(async move {
                store.create_reservation(&r, None).await
            }));
        }
        let mut results = Vec::new();
        for call in calls {
            results.push(call.await.unwrap());
        }
        for (i, result) in results.iter().enumerate() {
            match (i, result) {
                (3, Err(StoreError::Conflict(_))) | (0 | 1 | 2 | 4, Ok(())) => {}
                _ => panic!("{i}: {result:?}"),
            }
        }
        let counts = &store.writer.counts;
        assert_eq!(counts.statements.load(Ordering::Relaxed), 1);
        assert_eq!(counts.rewritten.load(Ordering::Relaxed), 1);
        assert_eq!(store.reservation("r-3").await.unwrap(), None);
        assert!(store.reservation("r-4").await.unwrap().is_some());
    }

    /// More callers than a batch takes: the rest go in the next batches, every caller is
    /// answered, and `settle` returns once all of it is written.
    #[tokio::test]
    async fn a_long_queue_is_split_into_batches() {
        let store = store_with_user().await;
        let writer = ReservationWriter::new(
            store.pool.clone(),
            BatchLimits {
                rows: 8,
                in_flight: 1,
            },
        );
        let mut calls = Vec::new();
        for i in 0..20 {
            let writer = Arc::clone(&writer);
            let r = row(&format!("q-{i}"), &format!("s{i}"), 60, 120);
            calls.push(tokio::spawn(async move { writer.create(&r, None).await }));
        }
        for call in calls {
            call.await.unwrap().unwrap();
        }
        writer.settle().await;
        assert_eq!(writer.counts.statements.load(Ordering::Relaxed), 3);
        assert_eq!(writer.counts.rows.load(Ordering::Relaxed), 20);
    }

    /// A caller that goes away while its row is queued writes nothing (as before batching),
    /// and the queue serves the next caller.
    #[tokio::test]
    async fn a_caller_gone_while_queued_writes_nothing() {
        let store = store_with_user().await;
        for i in 0..5 {
            // Polled once (queued, a dispatcher spawned), then dropped at once: the
            // dispatcher runs only when this task next waits.
            let r = row(&format!("gone-{i}"), &format!("s{i}"), 60, 120);
            let mut call = std::pin::pin!(store.create_reservation(&r, None));
            let polled =
                std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await;
            assert!(polled.is_pending(), "{polled:?}");
        }
        store.writer.settle().await;
        assert_eq!(store.writer.counts.statements.load(Ordering::Relaxed), 0);
        for i in 0..5 {
            assert_eq!(store.reservation(&format!("gone-{i}")).await.unwrap(), None);
        }
        store
            .create_reservation(&row("after", "s0", 60, 120), None)
            .await
            .unwrap();
        assert!(store.reservation("after").await.unwrap().is_some());
    }
}
