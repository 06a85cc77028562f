//! Tariffs, payments, refunds and the ledger on SQLite.
//!
//! Every write runs in one `IMMEDIATE` transaction on the single writer connection, so the
//! refund check (read the payment, grow its refunded amount) and the ledger row that goes with
//! a settlement or a refund cannot interleave with another writer. The ledger table refuses
//! UPDATE and DELETE itself (triggers, `sql/sqlite/0009_payments.sql`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parkd_core::ids::LotId;
use parkd_core::tariff::Currency;
use rusqlite::{OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::{SqliteStore, col, from_micros, query_rows, sq_err};
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

/// The reconciler's work list (the statuses of [`PaymentStatus::is_pending`]).
const PENDING_CONDITION: &str = "status IN ('created', 'requires_action', 'processing', \
     'pending_unknown') AND updated_at < ?1 ORDER BY updated_at, payment_id LIMIT ?2";

fn corrupt(table: &'static str, message: String) -> StoreError {
    StoreError::Corrupt { table, message }
}

fn payment_from(row: &Row<'_>) -> StoreResult<PaymentRow> {
    const T: &str = "payments";
    let purpose: String = col(row, 5, T)?;
    let status: String = col(row, 10, T)?;
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
        lot: parse_id(T, "lot_id", &col::<String>(row, 4, T)?, LotId::parse)?,
        purpose: PaymentPurpose::parse(&purpose)
            .ok_or_else(|| corrupt(T, format!("bad purpose {purpose:?}")))?,
        amount_minor: col(row, 6, T)?,
        currency: parse_currency(T, &col::<String>(row, 7, T)?)?,
        provider: col(row, 8, T)?,
        provider_intent_id: col(row, 9, T)?,
        status: PaymentStatus::parse(&status)
            .ok_or_else(|| corrupt(T, format!("bad status {status:?}")))?,
        failure_reason: col(row, 11, T)?,
        method,
        amount_refunded_minor: col(row, 15, T)?,
        quote_json: col(row, 16, T)?,
        created_at: from_micros(col(row, 17, T)?, T)?,
        updated_at: from_micros(col(row, 18, T)?, T)?,
        requested_method: col(row, 19, T)?,
    })
}

fn refund_from(row: &Row<'_>) -> StoreResult<RefundRow> {
    const T: &str = "refunds";
    let status: String = col(row, 6, T)?;
    Ok(RefundRow {
        id: col(row, 0, T)?,
        payment_id: col(row, 1, T)?,
        amount_minor: col(row, 2, T)?,
        currency: parse_currency(T, &col::<String>(row, 3, T)?)?,
        provider: col(row, 4, T)?,
        provider_refund_id: col(row, 5, T)?,
        status: RefundStatus::parse(&status)
            .ok_or_else(|| corrupt(T, format!("bad status {status:?}")))?,
        reason: col(row, 7, T)?,
        created_at: from_micros(col(row, 8, T)?, T)?,
        updated_at: from_micros(col(row, 9, T)?, T)?,
    })
}

fn ledger_from(row: &Row<'_>) -> StoreResult<LedgerEntry> {
    const T: &str = "ledger_entries";
    let kind: String = col(row, 3, T)?;
    Ok(LedgerEntry {
        seq: col(row, 0, T)?,
        at: from_micros(col(row, 1, T)?, T)?,
        lot: parse_id(T, "lot_id", &col::<String>(row, 2, T)?, LotId::parse)?,
        kind: LedgerKind::parse(&kind).ok_or_else(|| corrupt(T, format!("bad kind {kind:?}")))?,
        amount_minor: col(row, 4, T)?,
        currency: parse_currency(T, &col::<String>(row, 5, T)?)?,
        payment_id: col(row, 6, T)?,
        refund_id: col(row, 7, T)?,
        reservation_id: col(row, 8, T)?,
        session_id: col(row, 9, T)?,
        user_id: col(row, 10, T)?,
        memo: col(row, 11, T)?,
    })
}

/// Owned copy of a [`PaymentUpdate`]'s columns, for the blocking closure.
struct UpdateColumns {
    intent: Option<String>,
    failure: Option<String>,
    token: Option<String>,
    brand: Option<String>,
    last4: Option<String>,
}

impl UpdateColumns {
    fn of(update: &PaymentUpdate) -> Self {
        let method = update.method.as_ref();
        UpdateColumns {
            intent: update.provider_intent_id.clone(),
            failure: update.failure_reason.clone(),
            token: method.map(|m| m.token.clone()),
            brand: method.map(|m| m.brand.clone()),
            last4: method.map(|m| m.last4.clone()),
        }
    }
}

/// Moves payment `id` to `to` if its status is in `from` (never from succeeded), applying
/// `u`, inside `tx`; whether it moved.
fn move_payment(
    tx: &Transaction<'_>,
    id: &str,
    from: &[PaymentStatus],
    to: PaymentStatus,
    u: &UpdateColumns,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    let current: Option<String> = tx
        .query_row(
            "SELECT status FROM payments WHERE payment_id = ?1",
            [id],
            |row| row.get(0),
        )
        .optional()
        .map_err(sq_err)?;
    let Some(current) = current else {
        return Ok(false);
    };
    let allowed =
        current != PaymentStatus::Succeeded.as_str() && from.iter().any(|s| s.as_str() == current);
    if !allowed {
        return Ok(false);
    }
    tx.execute(
        "UPDATE payments SET status = ?2, updated_at = ?3,
             provider_intent_id = COALESCE(provider_intent_id, ?4),
             failure_reason = ?5,
             method_token = COALESCE(?6, method_token),
             method_brand = COALESCE(?7, method_brand),
             method_last4 = COALESCE(?8, method_last4)
         WHERE payment_id = ?1",
        params![
            id,
            to.as_str(),
            at.timestamp_micros(),
            u.intent,
            u.failure,
            u.token,
            u.brand,
            u.last4
        ],
    )
    .map_err(sq_err)?;
    Ok(true)
}

/// Appends the ledger entry of a refund that succeeded, inside `tx`.
fn append_refund_entry(
    tx: &Transaction<'_>,
    refund_id: &str,
    at: DateTime<Utc>,
    memo: &str,
) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO ledger_entries (at, lot_id, kind, amount_minor, currency, payment_id,
                                     refund_id, reservation_id, session_id, user_id, memo)
         SELECT ?2, p.lot_id, 'refund', -r.amount_minor, r.currency, p.payment_id,
                r.refund_id, p.reservation_id, p.session_id, p.user_id, ?3
         FROM refunds r JOIN payments p ON p.payment_id = r.payment_id
         WHERE r.refund_id = ?1",
        params![refund_id, at.timestamp_micros(), memo],
    )
    .map_err(sq_err)?;
    Ok(())
}

impl SqliteStore {
    async fn payments_where(
        &self,
        condition: &'static str,
        args: Vec<rusqlite::types::Value>,
    ) -> StoreResult<Vec<PaymentRow>> {
        self.read(move |conn| {
            let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE {condition}");
            query_rows(
                conn,
                &sql,
                rusqlite::params_from_iter(args.iter()),
                payment_from,
            )
        })
        .await
    }

    async fn refunds_where(
        &self,
        condition: &'static str,
        args: Vec<rusqlite::types::Value>,
    ) -> StoreResult<Vec<RefundRow>> {
        self.read(move |conn| {
            let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE {condition}");
            query_rows(
                conn,
                &sql,
                rusqlite::params_from_iter(args.iter()),
                refund_from,
            )
        })
        .await
    }
}

fn text(value: &str) -> rusqlite::types::Value {
    rusqlite::types::Value::Text(value.to_owned())
}

fn int(value: i64) -> rusqlite::types::Value {
    rusqlite::types::Value::Integer(value)
}

#[async_trait]
impl PaymentStore for SqliteStore {
    async fn put_tariff(
        &self,
        lot: &LotId,
        tariff_json: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<i64> {
        let (lot, tariff) = (lot.to_string(), tariff_json.to_owned());
        self.write(move |conn| {
            conn.query_row(
                "INSERT INTO tariffs (lot_id, tariff, version, updated_at) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (lot_id) DO UPDATE SET tariff = excluded.tariff,
                     version = tariffs.version + 1, updated_at = excluded.updated_at
                 RETURNING version",
                params![lot, tariff, at.timestamp_micros()],
                |row| row.get(0),
            )
            .map_err(sq_err)
        })
        .await
    }

    async fn tariff(&self, lot: &LotId) -> StoreResult<Option<TariffRow>> {
        const T: &str = "tariffs";
        let lot = lot.to_string();
        self.read(move |conn| {
            let mut rows = query_rows(
                conn,
                "SELECT lot_id, tariff, version, updated_at FROM tariffs WHERE lot_id = ?1",
                [lot],
                |row| {
                    Ok(TariffRow {
                        lot: parse_id(T, "lot_id", &col::<String>(row, 0, T)?, LotId::parse)?,
                        tariff_json: col(row, 1, T)?,
                        version: col(row, 2, T)?,
                        updated_at: from_micros(col(row, 3, T)?, T)?,
                    })
                },
            )?;
            Ok(rows.pop())
        })
        .await
    }

    async fn create_payment(&self, payment: &PaymentRow) -> StoreResult<()> {
        if payment.status == PaymentStatus::Succeeded || payment.amount_refunded_minor != 0 {
            return Err(StoreError::Conflict(format!(
                "payment {} may not start succeeded or refunded",
                payment.id
            )));
        }
        let p = payment.clone();
        self.write(move |conn| {
            // The one-open-payment rule (the unique indexes of 0010_payments_in_flight.sql
            // hold it too): writes are serialized, so this check and the insert are atomic.
            let target = match p.purpose {
                PaymentPurpose::Exit => Some(("session_id", &p.session_id)),
                PaymentPurpose::Reservation => Some(("reservation_id", &p.reservation_id)),
                PaymentPurpose::NoShowFee => None,
            };
            if let Some((column, id)) = target
                && let Some(open) = query_rows(
                    conn,
                    &format!(
                        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE {column} = ?1 \
                         AND purpose = ?2 AND status IN ('created', 'requires_action', \
                         'processing', 'pending_unknown') AND payment_id <> ?3 LIMIT 1"
                    ),
                    params![id, p.purpose.as_str(), p.id],
                    payment_from,
                )?
                .into_iter()
                .next()
            {
                return Err(StoreError::PaymentInProgress {
                    payment_id: open.id,
                    status: open.status,
                });
            }
            let sql = format!(
                "INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, \
                 ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"
            );
            let method = p.method.as_ref();
            conn.prepare_cached(&sql)
                .and_then(|mut s| {
                    s.execute(params![
                        p.id,
                        p.user_id,
                        p.reservation_id,
                        p.session_id,
                        p.lot.as_str(),
                        p.purpose.as_str(),
                        p.amount_minor,
                        p.currency.as_str(),
                        p.provider,
                        p.provider_intent_id,
                        p.status.as_str(),
                        p.failure_reason,
                        method.map(|m| m.token.as_str()),
                        method.map(|m| m.brand.as_str()),
                        method.map(|m| m.last4.as_str()),
                        p.amount_refunded_minor,
                        p.quote_json,
                        p.created_at.timestamp_micros(),
                        p.updated_at.timestamp_micros(),
                        p.requested_method,
                    ])
                })
                .map_err(sq_err)?;
            Ok(())
        })
        .await
    }

    async fn payment(&self, id: &str) -> StoreResult<Option<PaymentRow>> {
        Ok(self
            .payments_where("payment_id = ?1", vec![text(id)])
            .await?
            .pop())
    }

    async fn payment_by_intent(
        &self,
        provider: &str,
        intent_id: &str,
    ) -> StoreResult<Option<PaymentRow>> {
        Ok(self
            .payments_where(
                "provider = ?1 AND provider_intent_id = ?2",
                vec![text(provider), text(intent_id)],
            )
            .await?
            .pop())
    }

    async fn payments_of_reservation(&self, reservation_id: &str) -> StoreResult<Vec<PaymentRow>> {
        self.payments_where(
            "reservation_id = ?1 ORDER BY created_at, payment_id",
            vec![text(reservation_id)],
        )
        .await
    }

    async fn payments_of_session(&self, session_id: &str) -> StoreResult<Vec<PaymentRow>> {
        self.payments_where(
            "session_id = ?1 ORDER BY created_at, payment_id",
            vec![text(session_id)],
        )
        .await
    }

    async fn payments_pending(
        &self,
        older_than: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<PaymentRow>> {
        self.payments_where(
            PENDING_CONDITION,
            vec![int(older_than.timestamp_micros()), int(i64::from(limit))],
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
        let (id, from, u) = (id.to_owned(), from.to_vec(), UpdateColumns::of(update));
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sq_err)?;
            let moved = move_payment(&tx, &id, &from, to, &u, at)?;
            tx.commit().map_err(sq_err)?;
            Ok(moved)
        })
        .await
    }

    async fn settle_payment(
        &self,
        id: &str,
        from: &[PaymentStatus],
        update: &PaymentUpdate,
        at: DateTime<Utc>,
        memo: &str,
    ) -> StoreResult<bool> {
        let (id, from, u) = (id.to_owned(), from.to_vec(), UpdateColumns::of(update));
        let memo = memo.to_owned();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sq_err)?;
            if !move_payment(&tx, &id, &from, PaymentStatus::Succeeded, &u, at)? {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO ledger_entries (at, lot_id, kind, amount_minor, currency, payment_id,
                                             reservation_id, session_id, user_id, memo)
                 SELECT ?2, lot_id,
                        CASE purpose WHEN 'no_show_fee' THEN 'no_show_fee' ELSE 'charge' END,
                        amount_minor, currency, payment_id, reservation_id, session_id,
                        user_id, ?3
                 FROM payments WHERE payment_id = ?1",
                params![id, at.timestamp_micros(), memo],
            )
            .map_err(sq_err)?;
            tx.commit().map_err(sq_err)?;
            Ok(true)
        })
        .await
    }

    async fn record_refund(&self, refund: &RefundRow, memo: &str) -> StoreResult<()> {
        if refund.status == RefundStatus::Failed {
            return Err(StoreError::Conflict(format!(
                "refund {}: record it pending before asking the provider",
                refund.id
            )));
        }
        let (r, memo) = (refund.clone(), memo.to_owned());
        self.write(move |conn| {
            // IMMEDIATE: the write lock is held from the read of the refundable amount to the
            // commit, so no other refund can slip in between.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sq_err)?;
            let payment: Option<(String, String, i64, i64)> = tx
                .query_row(
                    "SELECT status, currency, amount_minor, amount_refunded_minor
                     FROM payments WHERE payment_id = ?1",
                    [&r.payment_id],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                )
                .optional()
                .map_err(sq_err)?;
            let Some((status, paid_in, amount, refunded)) = payment else {
                return Err(StoreError::Conflict(format!(
                    "refund {}: no payment {}",
                    r.id, r.payment_id
                )));
            };
            if paid_in != r.currency.as_str() {
                return Err(StoreError::Conflict(format!(
                    "refund {} in {} of a payment in {paid_in}",
                    r.id, r.currency
                )));
            }
            let refundable = if status == PaymentStatus::Succeeded.as_str() {
                amount - refunded
            } else {
                0
            };
            if r.amount_minor > refundable {
                return Err(StoreError::RefundExceedsCapture {
                    payment_id: r.payment_id.clone(),
                    requested_minor: r.amount_minor,
                    refundable_minor: refundable,
                });
            }
            tx.execute(
                "UPDATE payments SET amount_refunded_minor = amount_refunded_minor + ?2
                 WHERE payment_id = ?1",
                params![r.payment_id, r.amount_minor],
            )
            .map_err(sq_err)?;
            let sql = format!(
                "INSERT INTO refunds ({REFUND_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            );
            tx.execute(
                &sql,
                params![
                    r.id,
                    r.payment_id,
                    r.amount_minor,
                    r.currency.as_str(),
                    r.provider,
                    r.provider_refund_id,
                    r.status.as_str(),
                    r.reason,
                    r.created_at.timestamp_micros(),
                    r.updated_at.timestamp_micros(),
                ],
            )
            .map_err(sq_err)?;
            if r.status == RefundStatus::Succeeded {
                append_refund_entry(&tx, &r.id, r.updated_at, &memo)?;
            }
            tx.commit().map_err(sq_err)
        })
        .await
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
        let (id, provider_refund_id) = (id.to_owned(), provider_refund_id.map(str::to_owned));
        let memo = memo.to_owned();
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sq_err)?;
            let pending: Option<(String, i64)> = tx
                .query_row(
                    "SELECT payment_id, amount_minor FROM refunds
                     WHERE refund_id = ?1 AND status = 'pending'",
                    [&id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(sq_err)?;
            let Some((payment, amount)) = pending else {
                return Ok(false);
            };
            tx.execute(
                "UPDATE refunds SET status = ?2, updated_at = ?3,
                     provider_refund_id = COALESCE(provider_refund_id, ?4)
                 WHERE refund_id = ?1",
                params![
                    id,
                    status.as_str(),
                    at.timestamp_micros(),
                    provider_refund_id
                ],
            )
            .map_err(sq_err)?;
            if succeeded {
                append_refund_entry(&tx, &id, at, &memo)?;
            } else {
                tx.execute(
                    "UPDATE payments SET amount_refunded_minor = amount_refunded_minor - ?2
                     WHERE payment_id = ?1",
                    params![payment, amount],
                )
                .map_err(sq_err)?;
            }
            tx.commit().map_err(sq_err)?;
            Ok(true)
        })
        .await
    }

    async fn set_refund_provider_id(
        &self,
        id: &str,
        provider_refund_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (id, provider_refund_id) = (id.to_owned(), provider_refund_id.to_owned());
        self.write(move |conn| {
            let moved = conn
                .execute(
                    "UPDATE refunds SET provider_refund_id = ?2, updated_at = ?3
                     WHERE refund_id = ?1 AND status = 'pending' AND provider_refund_id IS NULL",
                    params![id, provider_refund_id, at.timestamp_micros()],
                )
                .map_err(sq_err)?;
            Ok(moved == 1)
        })
        .await
    }

    async fn refund(&self, id: &str) -> StoreResult<Option<RefundRow>> {
        Ok(self
            .refunds_where("refund_id = ?1", vec![text(id)])
            .await?
            .pop())
    }

    async fn refunds_of_payment(&self, payment_id: &str) -> StoreResult<Vec<RefundRow>> {
        self.refunds_where(
            "payment_id = ?1 ORDER BY created_at, refund_id",
            vec![text(payment_id)],
        )
        .await
    }

    async fn refunds_pending(
        &self,
        older_than: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<RefundRow>> {
        self.refunds_where(
            "status = 'pending' AND updated_at < ?1 ORDER BY updated_at, refund_id LIMIT ?2",
            vec![int(older_than.timestamp_micros()), int(i64::from(limit))],
        )
        .await
    }

    async fn record_adjustment(&self, adjustment: &NewAdjustment) -> StoreResult<i64> {
        let a = adjustment.clone();
        self.write(move |conn| {
            conn.query_row(
                "INSERT INTO ledger_entries (at, lot_id, kind, amount_minor, currency, payment_id,
                                             reservation_id, session_id, user_id, memo)
                 VALUES (?1, ?2, 'adjustment', ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 RETURNING seq",
                params![
                    a.at.timestamp_micros(),
                    a.lot.as_str(),
                    a.amount_minor,
                    a.currency.as_str(),
                    a.payment_id,
                    a.reservation_id,
                    a.session_id,
                    a.user_id,
                    a.memo,
                ],
                |row| row.get(0),
            )
            .map_err(sq_err)
        })
        .await
    }

    async fn ledger_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        lot: Option<&LotId>,
        after_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<LedgerEntry>> {
        let lot = lot.map(ToString::to_string);
        self.read(move |conn| {
            let sql = format!(
                "SELECT {LEDGER_COLUMNS} FROM ledger_entries
                 WHERE at >= ?1 AND at < ?2 AND (?3 IS NULL OR lot_id = ?3)
                   AND (?4 IS NULL OR seq > ?4)
                 ORDER BY seq LIMIT ?5"
            );
            query_rows(
                conn,
                &sql,
                params![
                    from.timestamp_micros(),
                    to.timestamp_micros(),
                    lot,
                    after_seq,
                    i64::from(limit)
                ],
                ledger_from,
            )
        })
        .await
    }

    async fn revenue_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        lot: Option<&LotId>,
    ) -> StoreResult<Vec<(Currency, i64)>> {
        const T: &str = "ledger_entries";
        let lot = lot.map(ToString::to_string);
        self.read(move |conn| {
            query_rows(
                conn,
                "SELECT currency, sum(amount_minor) FROM ledger_entries
                 WHERE at >= ?1 AND at < ?2 AND (?3 IS NULL OR lot_id = ?3)
                 GROUP BY currency ORDER BY currency",
                params![from.timestamp_micros(), to.timestamp_micros(), lot],
                |row| {
                    Ok((
                        parse_currency(T, &col::<String>(row, 0, T)?)?,
                        col(row, 1, T)?,
                    ))
                },
            )
        })
        .await
    }

    async fn record_webhook_event(
        &self,
        provider: &str,
        event_id: &str,
        received_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (provider, event_id) = (provider.to_owned(), event_id.to_owned());
        self.write(move |conn| {
            let inserted = conn
                .execute(
                    "INSERT INTO webhook_events (provider, event_id, received_at)
                     VALUES (?1, ?2, ?3) ON CONFLICT (provider, event_id) DO NOTHING",
                    params![provider, event_id, received_at.timestamp_micros()],
                )
                .map_err(sq_err)?;
            Ok(inserted == 1)
        })
        .await
    }
}
