//! Tariffs, payments, refunds and the ledger on PostgreSQL.
//!
//! Each money movement is one transaction with its ledger row: settling moves the payment to
//! succeeded with a conditional `UPDATE ... RETURNING` and appends the charge; a refund grows
//! the payment's refunded amount with a conditional `UPDATE` whose `WHERE` holds the check
//! (`amount_refunded_minor + x <= amount_minor`), so racing refunds serialize on the payment's
//! row lock and the loser sees the winner's amount. The ledger table itself refuses UPDATE,
//! DELETE and TRUNCATE (a trigger, `sql/postgres/0010_payments.sql`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parkd_core::ids::LotId;
use parkd_core::tariff::Currency;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{PostgresStore, col, pg_err};
use crate::common::{parse_currency, parse_id};
use crate::{
    CardRef, LedgerEntry, LedgerKind, NewAdjustment, PaymentPurpose, PaymentRow, PaymentStatus,
    PaymentStore, PaymentUpdate, RefundRow, RefundStatus, StoreError, StoreResult, TariffRow,
};

const PAYMENT_COLUMNS: &str = "payment_id, user_id, reservation_id, session_id, lot_id, purpose, \
     amount_minor, currency, provider, provider_intent_id, status, failure_reason, method_token, \
     method_brand, method_last4, amount_refunded_minor, quote, created_at, updated_at, \
     requested_method";

const REFUND_COLUMNS: &str = "refund_id, payment_id, amount_minor, currency, provider, \
     provider_refund_id, status, reason, created_at, updated_at";

const LEDGER_COLUMNS: &str = "seq, at, lot_id, kind, amount_minor, currency, payment_id, \
     refund_id, reservation_id, session_id, user_id, memo";

/// The statuses the reconciler looks at, as stored.
const PENDING: [&str; 4] = [
    "created",
    "requires_action",
    "processing",
    "pending_unknown",
];

fn corrupt(table: &'static str, message: String) -> StoreError {
    StoreError::Corrupt { table, message }
}

fn payment_from(row: &Row) -> StoreResult<PaymentRow> {
    const T: &str = "payments";
    let purpose: &str = col(row, 5, T)?;
    let status: &str = col(row, 10, T)?;
    let token: Option<String> = col(row, 12, T)?;
    let brand: Option<String> = col(row, 13, T)?;
    let last4: Option<String> = col(row, 14, T)?;
    let method = match (token, brand, last4) {
        (Some(token), Some(brand), Some(last4)) => Some(CardRef {
            token,
            brand,
            last4,
        }),
        (None, None, None) => None,
        _ => return Err(corrupt(T, "partial payment method".into())),
    };
    Ok(PaymentRow {
        id: col(row, 0, T)?,
        user_id: col(row, 1, T)?,
        reservation_id: col(row, 2, T)?,
        session_id: col(row, 3, T)?,
        lot: parse_id(T, "lot_id", col(row, 4, T)?, LotId::parse)?,
        purpose: PaymentPurpose::parse(purpose)
            .ok_or_else(|| corrupt(T, format!("bad purpose {purpose:?}")))?,
        amount_minor: col(row, 6, T)?,
        currency: parse_currency(T, col(row, 7, T)?)?,
        provider: col(row, 8, T)?,
        provider_intent_id: col(row, 9, T)?,
        status: PaymentStatus::parse(status)
            .ok_or_else(|| corrupt(T, format!("bad status {status:?}")))?,
        failure_reason: col(row, 11, T)?,
        method,
        amount_refunded_minor: col(row, 15, T)?,
        quote_json: col(row, 16, T)?,
        created_at: col(row, 17, T)?,
        updated_at: col(row, 18, T)?,
        requested_method: col(row, 19, T)?,
    })
}

fn refund_from(row: &Row) -> StoreResult<RefundRow> {
    const T: &str = "refunds";
    let status: &str = col(row, 6, T)?;
    Ok(RefundRow {
        id: col(row, 0, T)?,
        payment_id: col(row, 1, T)?,
        amount_minor: col(row, 2, T)?,
        currency: parse_currency(T, col(row, 3, T)?)?,
        provider: col(row, 4, T)?,
        provider_refund_id: col(row, 5, T)?,
        status: RefundStatus::parse(status)
            .ok_or_else(|| corrupt(T, format!("bad status {status:?}")))?,
        reason: col(row, 7, T)?,
        created_at: col(row, 8, T)?,
        updated_at: col(row, 9, T)?,
    })
}

fn ledger_from(row: &Row) -> StoreResult<LedgerEntry> {
    const T: &str = "ledger_entries";
    let kind: &str = col(row, 3, T)?;
    Ok(LedgerEntry {
        seq: col(row, 0, T)?,
        at: col(row, 1, T)?,
        lot: parse_id(T, "lot_id", col(row, 2, T)?, LotId::parse)?,
        kind: LedgerKind::parse(kind).ok_or_else(|| corrupt(T, format!("bad kind {kind:?}")))?,
        amount_minor: col(row, 4, T)?,
        currency: parse_currency(T, col(row, 5, T)?)?,
        payment_id: col(row, 6, T)?,
        refund_id: col(row, 7, T)?,
        reservation_id: col(row, 8, T)?,
        session_id: col(row, 9, T)?,
        user_id: col(row, 10, T)?,
        memo: col(row, 11, T)?,
    })
}

impl PostgresStore {
    /// The open payment (see [`PENDING`]) for what `p` pays, other than `p` itself.
    async fn open_payment_for(&self, p: &PaymentRow) -> StoreResult<Option<PaymentRow>> {
        let open = if p.purpose == PaymentPurpose::Exit {
            self.payments_where(
                "session_id = $1 AND purpose = 'exit' AND status = ANY($2) \
                 AND payment_id <> $3",
                &[&p.session_id, &PENDING.as_slice(), &p.id],
            )
            .await?
        } else {
            self.payments_where(
                "reservation_id = $1 AND purpose = $2 AND status = ANY($3) \
                 AND payment_id <> $4",
                &[
                    &p.reservation_id,
                    &p.purpose.as_str(),
                    &PENDING.as_slice(),
                    &p.id,
                ],
            )
            .await?
        };
        Ok(open.into_iter().next())
    }
}

fn status_names(states: &[PaymentStatus]) -> Vec<&'static str> {
    states.iter().map(|s| s.as_str()).collect()
}

/// Appends the ledger entry of a refund that succeeded, inside `tx`.
async fn append_refund_entry(
    tx: &deadpool_postgres::Transaction<'_>,
    refund_id: &str,
    at: DateTime<Utc>,
    memo: &str,
) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO ledger_entries (at, lot_id, kind, amount_minor, currency, payment_id,
                                     refund_id, reservation_id, session_id, user_id, memo)
         SELECT $2, p.lot_id, 'refund', -r.amount_minor, r.currency, p.payment_id,
                r.refund_id, p.reservation_id, p.session_id, p.user_id, $3
         FROM refunds r JOIN payments p ON p.payment_id = r.payment_id
         WHERE r.refund_id = $1",
        &[&refund_id, &at, &memo],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

impl PostgresStore {
    async fn payments_where(
        &self,
        condition: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Vec<PaymentRow>> {
        let client = self.client().await?;
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE {condition}");
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let rows = client.query(&statement, args).await.map_err(pg_err)?;
        rows.iter().map(payment_from).collect()
    }

    async fn refunds_where(
        &self,
        condition: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Vec<RefundRow>> {
        let client = self.client().await?;
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE {condition}");
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let rows = client.query(&statement, args).await.map_err(pg_err)?;
        rows.iter().map(refund_from).collect()
    }
}

/// The SQL that applies a [`PaymentUpdate`] (parameters `$4` to `$8` after id, from, to).
const APPLY_UPDATE: &str = "provider_intent_id = COALESCE(provider_intent_id, $4),
     failure_reason = $5,
     method_token = COALESCE($6, method_token),
     method_brand = COALESCE($7, method_brand),
     method_last4 = COALESCE($8, method_last4)";

#[async_trait]
impl PaymentStore for PostgresStore {
    async fn put_tariff(
        &self,
        lot: &LotId,
        tariff_json: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<i64> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO tariffs (lot_id, tariff, version, updated_at) VALUES ($1, $2, 1, $3)
                 ON CONFLICT (lot_id) DO UPDATE SET tariff = excluded.tariff,
                     version = tariffs.version + 1, updated_at = excluded.updated_at
                 RETURNING version",
                &[&lot.as_str(), &tariff_json, &at],
            )
            .await
            .map_err(pg_err)?;
        col(&row, 0, "tariffs")
    }

    async fn tariff(&self, lot: &LotId) -> StoreResult<Option<TariffRow>> {
        const T: &str = "tariffs";
        let client = self.client().await?;
        // Read on every bill (each exit request and payment): prepared once per connection.
        let statement = client
            .prepare_cached(
                "SELECT lot_id, tariff, version, updated_at FROM tariffs WHERE lot_id = $1",
            )
            .await
            .map_err(pg_err)?;
        let row = client
            .query_opt(&statement, &[&lot.as_str()])
            .await
            .map_err(pg_err)?;
        row.map(|row| {
            Ok(TariffRow {
                lot: parse_id(T, "lot_id", col(&row, 0, T)?, LotId::parse)?,
                tariff_json: col(&row, 1, T)?,
                version: col(&row, 2, T)?,
                updated_at: col(&row, 3, T)?,
            })
        })
        .transpose()
    }

    async fn create_payment(&self, p: &PaymentRow) -> StoreResult<()> {
        if p.status == PaymentStatus::Succeeded || p.amount_refunded_minor != 0 {
            return Err(StoreError::Conflict(format!(
                "payment {} may not start succeeded or refunded",
                p.id
            )));
        }
        let sql = format!(
            "INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
             $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
        );
        let method = p.method.as_ref();
        // A refusal by the one-open-payment rule names the payment in the way; if that one
        // got its outcome between the refusal and the look-up, the insert is tried again.
        for _ in 0..3 {
            let client = self.client().await?;
            let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
            let inserted = client
                .execute(
                    &statement,
                    &[
                        &p.id,
                        &p.user_id,
                        &p.reservation_id,
                        &p.session_id,
                        &p.lot.as_str(),
                        &p.purpose.as_str(),
                        &p.amount_minor,
                        &p.currency.as_str(),
                        &p.provider,
                        &p.provider_intent_id,
                        &p.status.as_str(),
                        &p.failure_reason,
                        &method.map(|m| m.token.as_str()),
                        &method.map(|m| m.brand.as_str()),
                        &method.map(|m| m.last4.as_str()),
                        &p.amount_refunded_minor,
                        &p.quote_json,
                        &p.created_at,
                        &p.updated_at,
                        &p.requested_method,
                    ],
                )
                .await;
            // Never wait for a second connection while holding one.
            drop(client);
            let error = match inserted {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            let one_open = error
                .as_db_error()
                .and_then(|db| db.constraint())
                .is_some_and(|c| c.starts_with("payments_one_open_"));
            if !one_open {
                return Err(pg_err(error));
            }
            if let Some(open) = self.open_payment_for(p).await? {
                return Err(StoreError::PaymentInProgress {
                    payment_id: open.id,
                    status: open.status,
                });
            }
        }
        Err(StoreError::Conflict(format!(
            "payment {}: the open payment of its bill kept changing",
            p.id
        )))
    }

    async fn payment(&self, id: &str) -> StoreResult<Option<PaymentRow>> {
        Ok(self.payments_where("payment_id = $1", &[&id]).await?.pop())
    }

    async fn payment_by_intent(
        &self,
        provider: &str,
        intent_id: &str,
    ) -> StoreResult<Option<PaymentRow>> {
        Ok(self
            .payments_where(
                "provider = $1 AND provider_intent_id = $2",
                &[&provider, &intent_id],
            )
            .await?
            .pop())
    }

    async fn payments_of_reservation(&self, reservation_id: &str) -> StoreResult<Vec<PaymentRow>> {
        self.payments_where(
            "reservation_id = $1 ORDER BY created_at, payment_id",
            &[&reservation_id],
        )
        .await
    }

    async fn payments_of_session(&self, session_id: &str) -> StoreResult<Vec<PaymentRow>> {
        self.payments_where(
            "session_id = $1 ORDER BY created_at, payment_id",
            &[&session_id],
        )
        .await
    }

    async fn payments_pending(
        &self,
        older_than: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<PaymentRow>> {
        let pending: &[&str] = &PENDING;
        self.payments_where(
            "status = ANY($1) AND updated_at < $2 ORDER BY updated_at, payment_id LIMIT $3",
            &[&pending, &older_than, &i64::from(limit)],
        )
        .await
    }

    async fn update_payment_status(
        &self,
        id: &str,
        from: &[PaymentStatus],
        to: PaymentStatus,
        update: &PaymentUpdate,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        if to == PaymentStatus::Succeeded {
            return Err(StoreError::Conflict(format!(
                "payment {id}: succeeded is reached only through settle_payment"
            )));
        }
        let client = self.client().await?;
        let sql = format!(
            "UPDATE payments SET status = $3, updated_at = $9, {APPLY_UPDATE}
             WHERE payment_id = $1 AND status = ANY($2) AND status <> 'succeeded'"
        );
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let method = update.method.as_ref();
        let moved = client
            .execute(
                &statement,
                &[
                    &id,
                    &status_names(from),
                    &to.as_str(),
                    &update.provider_intent_id,
                    &update.failure_reason,
                    &method.map(|m| m.token.as_str()),
                    &method.map(|m| m.brand.as_str()),
                    &method.map(|m| m.last4.as_str()),
                    &at,
                ],
            )
            .await
            .map_err(pg_err)?;
        Ok(moved == 1)
    }

    async fn settle_payment(
        &self,
        id: &str,
        from: &[PaymentStatus],
        update: &PaymentUpdate,
        at: DateTime<Utc>,
        memo: &str,
    ) -> StoreResult<bool> {
        // One statement: the move and its ledger row commit together or not at all, in one
        // round trip (this is on the pay-at-exit path).
        let client = self.client().await?;
        let sql = format!(
            "WITH moved AS (
                 UPDATE payments SET status = $3, updated_at = $9, {APPLY_UPDATE}
                 WHERE payment_id = $1 AND status = ANY($2) AND status <> 'succeeded'
                 RETURNING lot_id, purpose, amount_minor, currency, payment_id, reservation_id,
                           session_id, user_id)
             INSERT INTO ledger_entries (at, lot_id, kind, amount_minor, currency, payment_id,
                                         reservation_id, session_id, user_id, memo)
             SELECT $9, lot_id,
                    CASE purpose WHEN 'no_show_fee' THEN 'no_show_fee' ELSE 'charge' END,
                    amount_minor, currency, payment_id, reservation_id, session_id, user_id, $10
             FROM moved
             RETURNING seq"
        );
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let method = update.method.as_ref();
        let written = client
            .query(
                &statement,
                &[
                    &id,
                    &status_names(from),
                    &PaymentStatus::Succeeded.as_str(),
                    &update.provider_intent_id,
                    &update.failure_reason,
                    &method.map(|m| m.token.as_str()),
                    &method.map(|m| m.brand.as_str()),
                    &method.map(|m| m.last4.as_str()),
                    &at,
                    &memo,
                ],
            )
            .await
            .map_err(pg_err)?;
        Ok(!written.is_empty())
    }

    async fn record_refund(&self, r: &RefundRow, memo: &str) -> StoreResult<()> {
        if r.status == RefundStatus::Failed {
            return Err(StoreError::Conflict(format!(
                "refund {}: record it pending before asking the provider",
                r.id
            )));
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // The check is in the WHERE clause: a racing refund waits for this row's lock and
        // then re-evaluates against the amount the winner left.
        let grown = tx
            .execute(
                "UPDATE payments SET amount_refunded_minor = amount_refunded_minor + $2
                 WHERE payment_id = $1 AND status = 'succeeded' AND currency = $3
                   AND amount_refunded_minor + $2 <= amount_minor",
                &[&r.payment_id, &r.amount_minor, &r.currency.as_str()],
            )
            .await
            .map_err(pg_err)?;
        if grown != 1 {
            let row = tx
                .query_opt(
                    "SELECT status, currency, amount_minor - amount_refunded_minor
                     FROM payments WHERE payment_id = $1",
                    &[&r.payment_id],
                )
                .await
                .map_err(pg_err)?;
            let Some(row) = row else {
                return Err(StoreError::Conflict(format!(
                    "refund {}: no payment {}",
                    r.id, r.payment_id
                )));
            };
            let status: &str = col(&row, 0, "payments")?;
            let paid_in: &str = col(&row, 1, "payments")?;
            if paid_in != r.currency.as_str() {
                return Err(StoreError::Conflict(format!(
                    "refund {} in {} of a payment in {paid_in}",
                    r.id, r.currency
                )));
            }
            let left: i64 = col(&row, 2, "payments")?;
            return Err(StoreError::RefundExceedsCapture {
                payment_id: r.payment_id.clone(),
                requested_minor: r.amount_minor,
                refundable_minor: if status == "succeeded" { left } else { 0 },
            });
        }
        let sql = format!(
            "INSERT INTO refunds ({REFUND_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        tx.execute(
            &sql,
            &[
                &r.id,
                &r.payment_id,
                &r.amount_minor,
                &r.currency.as_str(),
                &r.provider,
                &r.provider_refund_id,
                &r.status.as_str(),
                &r.reason,
                &r.created_at,
                &r.updated_at,
            ],
        )
        .await
        .map_err(pg_err)?;
        if r.status == RefundStatus::Succeeded {
            append_refund_entry(&tx, &r.id, r.updated_at, memo).await?;
        }
        tx.commit().await.map_err(pg_err)
    }

    async fn complete_refund(
        &self,
        id: &str,
        succeeded: bool,
        provider_refund_id: Option<&str>,
        at: DateTime<Utc>,
        memo: &str,
    ) -> StoreResult<bool> {
        let status = if succeeded {
            RefundStatus::Succeeded
        } else {
            RefundStatus::Failed
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let row = tx
            .query_opt(
                "UPDATE refunds SET status = $2, updated_at = $3,
                     provider_refund_id = COALESCE(provider_refund_id, $4)
                 WHERE refund_id = $1 AND status = 'pending'
                 RETURNING payment_id, amount_minor",
                &[&id, &status.as_str(), &at, &provider_refund_id],
            )
            .await
            .map_err(pg_err)?;
        let Some(row) = row else {
            return Ok(false);
        };
        if succeeded {
            append_refund_entry(&tx, id, at, memo).await?;
        } else {
            let payment: &str = col(&row, 0, "refunds")?;
            let amount: i64 = col(&row, 1, "refunds")?;
            tx.execute(
                "UPDATE payments SET amount_refunded_minor = amount_refunded_minor - $2
                 WHERE payment_id = $1",
                &[&payment, &amount],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(true)
    }

    async fn set_refund_provider_id(
        &self,
        id: &str,
        provider_refund_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let moved = client
            .execute(
                "UPDATE refunds SET provider_refund_id = $2, updated_at = $3
                 WHERE refund_id = $1 AND status = 'pending' AND provider_refund_id IS NULL",
                &[&id, &provider_refund_id, &at],
            )
            .await
            .map_err(pg_err)?;
        Ok(moved == 1)
    }

    async fn refund(&self, id: &str) -> StoreResult<Option<RefundRow>> {
        Ok(self.refunds_where("refund_id = $1", &[&id]).await?.pop())
    }

    async fn refunds_of_payment(&self, payment_id: &str) -> StoreResult<Vec<RefundRow>> {
        self.refunds_where(
            "payment_id = $1 ORDER BY created_at, refund_id",
            &[&payment_id],
        )
        .await
    }

    async fn refunds_pending(
        &self,
        older_than: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<RefundRow>> {
        self.refunds_where(
            "status = 'pending' AND updated_at < $1 ORDER BY updated_at, refund_id LIMIT $2",
            &[&older_than, &i64::from(limit)],
        )
        .await
    }

    async fn record_adjustment(&self, a: &NewAdjustment) -> StoreResult<i64> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO ledger_entries (at, lot_id, kind, amount_minor, currency, payment_id,
                                             reservation_id, session_id, user_id, memo)
                 VALUES ($1, $2, 'adjustment', $3, $4, $5, $6, $7, $8, $9)
                 RETURNING seq",
                &[
                    &a.at,
                    &a.lot.as_str(),
                    &a.amount_minor,
                    &a.currency.as_str(),
                    &a.payment_id,
                    &a.reservation_id,
                    &a.session_id,
                    &a.user_id,
                    &a.memo,
                ],
            )
            .await
            .map_err(pg_err)?;
        col(&row, 0, "ledger_entries")
    }

    async fn ledger_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        lot: Option<&LotId>,
        after_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<LedgerEntry>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {LEDGER_COLUMNS} FROM ledger_entries
             WHERE at >= $1 AND at < $2 AND ($3::text IS NULL OR lot_id = $3)
               AND ($4::bigint IS NULL OR seq > $4)
             ORDER BY seq LIMIT $5"
        );
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let rows = client
            .query(
                &statement,
                &[
                    &from,
                    &to,
                    &lot.map(LotId::as_str),
                    &after_seq,
                    &i64::from(limit),
                ],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(ledger_from).collect()
    }

    async fn revenue_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        lot: Option<&LotId>,
    ) -> StoreResult<Vec<(Currency, i64)>> {
        const T: &str = "ledger_entries";
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT currency, sum(amount_minor)::bigint FROM ledger_entries
                 WHERE at >= $1 AND at < $2 AND ($3::text IS NULL OR lot_id = $3)
                 GROUP BY currency ORDER BY currency",
                &[&from, &to, &lot.map(LotId::as_str)],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|row| Ok((parse_currency(T, col(row, 0, T)?)?, col(row, 1, T)?)))
            .collect()
    }

    async fn record_webhook_event(
        &self,
        provider: &str,
        event_id: &str,
        received_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let inserted = client
            .execute(
                "INSERT INTO webhook_events (provider, event_id, received_at) VALUES ($1, $2, $3)
                 ON CONFLICT (provider, event_id) DO NOTHING",
                &[&provider, &event_id, &received_at],
            )
            .await
            .map_err(pg_err)?;
        Ok(inserted == 1)
    }
}
