//! The payment reconciler: finds out what happened to payments whose outcome is still open,
//! so a lost answer, a customer who never came back from 3-D Secure, or a webhook that never
//! arrived does not leave a payment pending for ever.
//!
//! Every [`RECONCILE_EVERY`] (30 s) [`run`] takes the payments that are still open and have
//! not changed for [`QUIET_PERIOD`] (10 s, so a request still in flight is left alone),
//! at most [`BATCH`] of them, least recently changed first, and for each:
//!
//! - with a provider intent id: retrieves the intent and moves the payment to what the
//!   provider says ([`crate::payments::apply_intent`]: a success settles it into the ledger,
//!   once, in the same transaction);
//!   A payment waiting for the customer's 3-D Secure step for [`ABANDONED_AFTER`] (1 h) is
//!   cancelled at the provider instead (or settled, if the provider says it succeeded);
//! - `pending_unknown` or `created` without an intent id (the create call's answer was lost
//!   before the id was known, or the process stopped while asking): re-sends the very same
//!   create request with the payment method the customer gave (kept from the start), the
//!   same idempotency key (`parkd-{payment id}-create`) and parameters
//!   ([`crate::payments::create_intent_request`]), so the provider replays the original
//!   intent, or makes it if the first request never arrived: never a second charge;
//! - otherwise (a payment recorded before parkd kept the requested method): nothing can be
//!   asked without risking a second charge; it is counted as `unresolvable` and left for an
//!   operator (see docs/payments.md, "Reconciliation").
//!
//! A provider error leaves the payment as it is (it is retried the next round) and is
//! counted. Pending refunds are reconciled in the same round ([`reconcile_refunds_once`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parkd_core::clock::Clock;
use parkd_payments::{
    Disposition, IntentId, PaymentMethodToken, Provider, ProviderError, RefundId, RefundStatus,
};
use parkd_store::{PaymentRow, PaymentStatus, RefundRow, Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::payments::{
    apply_error, apply_intent, cancel_abandoned, create_intent_request, refund_request,
};

/// How often [`run`] reconciles.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// A payment is reconciled only once it has been unchanged this long: long enough for any
/// request that is still talking to the provider (budget: 1.5 s) to have finished.
pub const QUIET_PERIOD: Duration = Duration::from_secs(10);

/// A payment still waiting for the customer's action (3-D Secure) this long after it was
/// created is abandoned: the reconciler cancels it at the provider. Card issuers' challenge
/// pages time out within minutes; an hour leaves room for a slow customer.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(60 * 60);

/// Only what has not changed since this instant is examined (see [`QUIET_PERIOD`]).
fn quiet_since(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::from_std(QUIET_PERIOD).unwrap_or(chrono::Duration::MAX)
}

fn abandoned_after() -> chrono::Duration {
    chrono::Duration::from_std(ABANDONED_AFTER).unwrap_or(chrono::Duration::MAX)
}

/// At most this many payments per round.
pub const BATCH: u32 = 100;

/// What one round did, one count per payment examined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Payments looked at.
    pub examined: u32,
    /// Now succeeded (and in the ledger).
    pub succeeded: u32,
    /// Now failed (declined).
    pub failed: u32,
    /// Now cancelled.
    pub cancelled: u32,
    /// Still open after asking the provider (`requires_action`, `processing`...).
    pub pending: u32,
    /// The provider did not answer or refused; left as it was, retried next round.
    pub provider_errors: u32,
    /// Nothing can be asked without risking a second charge (no intent id and no stored
    /// payment method, another provider, a corrupt row); left for an operator.
    pub unresolvable: u32,
    /// The store failed while recording an answer; retried next round.
    pub store_errors: u32,
}

impl ReconcileReport {
    /// Whether any payment moved to a final status.
    pub fn resolved(&self) -> u32 {
        self.succeeded + self.failed + self.cancelled
    }

    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Succeeded => self.succeeded += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Cancelled => self.cancelled += 1,
            Outcome::Pending => self.pending += 1,
            Outcome::ProviderError => self.provider_errors += 1,
            Outcome::Unresolvable => self.unresolvable += 1,
            Outcome::StoreError => self.store_errors += 1,
        }
    }
}

/// Why a round could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The work list could not be read.
    #[error("reading the pending payments or refunds failed: {0}")]
    Store(#[from] StoreError),
}

/// What happened to one payment (the `outcome` label of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
    Pending,
    ProviderError,
    Unresolvable,
    StoreError,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Cancelled,
        Outcome::Pending,
        Outcome::ProviderError,
        Outcome::Unresolvable,
        Outcome::StoreError,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Pending => "pending",
            Outcome::ProviderError => "provider_error",
            Outcome::Unresolvable => "unresolvable",
            Outcome::StoreError => "store_error",
        }
    }

    fn of(status: PaymentStatus) -> Outcome {
        match status {
            PaymentStatus::Succeeded => Outcome::Succeeded,
            PaymentStatus::Failed => Outcome::Failed,
            PaymentStatus::Cancelled => Outcome::Cancelled,
            PaymentStatus::Created
            | PaymentStatus::RequiresAction
            | PaymentStatus::Processing
            | PaymentStatus::PendingUnknown => Outcome::Pending,
        }
    }
}

/// `parkd_payments_reconciled_total{outcome}`: payments the reconciler examined, by what
/// became of them.
#[derive(Debug, Clone)]
pub struct ReconcileMetrics {
    outcomes: prometheus::IntCounterVec,
    refunds: prometheus::IntCounterVec,
}

impl ReconcileMetrics {
    /// Registers the counter (every outcome starts at zero).
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let outcomes = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "parkd_payments_reconciled_total",
                "Open payments the reconciler examined, by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(outcomes.clone()))?;
        let refunds = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "parkd_refunds_reconciled_total",
                "Pending refunds the reconciler examined, by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(refunds.clone()))?;
        for outcome in Outcome::ALL {
            outcomes.with_label_values(&[outcome.as_str()]);
            if outcome != Outcome::Cancelled {
                refunds.with_label_values(&[outcome.as_str()]);
            }
        }
        Ok(Self { outcomes, refunds })
    }

    /// Adds a round's counts of payments.
    pub fn record(&self, report: &ReconcileReport) {
        Self::add(&self.outcomes, report);
    }

    /// Adds a round's counts of refunds.
    pub fn record_refunds(&self, report: &ReconcileReport) {
        Self::add(&self.refunds, report);
    }

    fn add(counter: &prometheus::IntCounterVec, report: &ReconcileReport) {
        let counts = [
            (Outcome::Succeeded, report.succeeded),
            (Outcome::Failed, report.failed),
            (Outcome::Cancelled, report.cancelled),
            (Outcome::Pending, report.pending),
            (Outcome::ProviderError, report.provider_errors),
            (Outcome::Unresolvable, report.unresolvable),
            (Outcome::StoreError, report.store_errors),
        ];
        for (outcome, count) in counts {
            if count > 0 {
                counter
                    .with_label_values(&[outcome.as_str()])
                    .inc_by(u64::from(count));
            }
        }
    }
}

/// One round: the open payments unchanged since `now - QUIET_PERIOD`, at most `limit`,
/// each resolved as the module doc says. Only a failure to read the work list is an error;
/// what happened to each payment is in the report.
pub async fn reconcile_once(
    store: &dyn Store,
    provider: &dyn Provider,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<ReconcileReport, ReconcileError> {
    let pending = store.payments_pending(quiet_since(now), limit).await?;
    let mut report = ReconcileReport::default();
    for payment in &pending {
        report.examined += 1;
        report.count(reconcile_payment(store, provider, payment, now).await);
    }
    Ok(report)
}

async fn reconcile_payment(
    store: &dyn Store,
    provider: &dyn Provider,
    payment: &PaymentRow,
    now: DateTime<Utc>,
) -> Outcome {
    if payment.provider != provider.name() {
        tracing::warn!(
            payment = %payment.id,
            provider = %payment.provider,
            configured = provider.name(),
            "open payment of another provider: cannot reconcile it"
        );
        return Outcome::Unresolvable;
    }
    // The token to send again: the card the provider named, else the one the customer gave.
    let token = payment
        .method
        .as_ref()
        .map(|m| m.token.as_str())
        .or(payment.requested_method.as_deref());
    match (&payment.provider_intent_id, payment.status, token) {
        (Some(_), PaymentStatus::RequiresAction, _)
            if now - payment.created_at >= abandoned_after() =>
        {
            // The customer never finished 3-D Secure: cancel it, so the bill can be paid again
            // and the reconciler stops asking.
            applied(cancel_abandoned(store, provider, &payment.id, now).await)
        }
        (Some(intent_id), _, _) => {
            let intent_id = match IntentId::parse(intent_id.as_str()) {
                Ok(id) => id,
                Err(error) => {
                    tracing::error!(payment = %payment.id, %error, "stored intent id is invalid");
                    return Outcome::Unresolvable;
                }
            };
            match provider.retrieve_intent(&intent_id).await {
                Ok(intent) => {
                    applied(apply_intent(store, provider, &payment.id, &intent, now).await)
                }
                Err(error) => provider_failed(payment, &error),
            }
        }
        (None, PaymentStatus::PendingUnknown | PaymentStatus::Created, Some(token)) => {
            let request = PaymentMethodToken::parse(token)
                .map_err(|e| e.to_string())
                .and_then(|token| create_intent_request(payment, token).map_err(|e| e.to_string()));
            let request = match request {
                Ok(request) => request,
                Err(error) => {
                    tracing::error!(payment = %payment.id, %error, "cannot rebuild the create request");
                    return Outcome::Unresolvable;
                }
            };
            match provider.create_intent(&request).await {
                Ok(intent) => {
                    applied(apply_intent(store, provider, &payment.id, &intent, now).await)
                }
                // The provider's own answer about this very request: declined, or waiting for
                // the customer. Recorded as the API records it.
                Err(
                    error @ (ProviderError::Declined { .. } | ProviderError::RequiresAction { .. }),
                ) => applied(apply_error(store, &payment.id, &error, now).await),
                // Anything else says nothing about the original request (it may have charged):
                // the payment stays pending_unknown, never failed.
                Err(error) => provider_failed(payment, &error),
            }
        }
        _ => {
            tracing::warn!(
                payment = %payment.id,
                status = payment.status.as_str(),
                "open payment with no intent id and no stored payment method: nothing can be \
                 asked without risking a second charge; resolve it by hand"
            );
            Outcome::Unresolvable
        }
    }
}

/// Stripe keeps an idempotency key for 24 hours: a refund whose answer was lost is re-sent
/// under its key only while the provider still remembers it (with an hour's margin), so the
/// re-send replays the first attempt instead of refunding again.
const REFUND_KEY_LIFETIME: chrono::Duration = chrono::Duration::hours(23);

/// One round over refunds still pending (recorded before the provider was asked, and either
/// its answer was lost or the provider itself reported `pending`), unchanged since
/// `now - QUIET_PERIOD`, at most `limit`: with a provider refund id, the refund is retrieved;
/// without one, the very same refund request is sent again under its key (within
/// [`REFUND_KEY_LIFETIME`] of its creation; later it is left for an operator). A final answer
/// completes it: its ledger entry if it succeeded, its amount given back to the payment if it
/// failed. `cancelled` in the report is not used.
pub async fn reconcile_refunds_once(
    store: &dyn Store,
    provider: &dyn Provider,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<ReconcileReport, ReconcileError> {
    let pending = store.refunds_pending(quiet_since(now), limit).await?;
    let mut report = ReconcileReport::default();
    for refund in &pending {
        report.examined += 1;
        report.count(reconcile_refund(store, provider, refund, now).await);
    }
    Ok(report)
}

async fn reconcile_refund(
    store: &dyn Store,
    provider: &dyn Provider,
    refund: &RefundRow,
    now: DateTime<Utc>,
) -> Outcome {
    if refund.provider != provider.name() {
        tracing::warn!(refund = %refund.id, provider = %refund.provider, "pending refund of another provider: cannot reconcile it");
        return Outcome::Unresolvable;
    }
    let answer = match refund.provider_refund_id.as_deref() {
        Some(id) => match RefundId::parse(id) {
            Ok(id) => provider.retrieve_refund(&id).await,
            Err(error) => {
                tracing::error!(refund = %refund.id, %error, "stored provider refund id is invalid");
                return Outcome::Unresolvable;
            }
        },
        None if now - refund.created_at < REFUND_KEY_LIFETIME => {
            let payment = match store.payment(&refund.payment_id).await {
                Ok(Some(payment)) => payment,
                Ok(None) => return Outcome::Unresolvable,
                Err(_) => return Outcome::StoreError,
            };
            let Some(intent) = payment.provider_intent_id.as_deref() else {
                return Outcome::Unresolvable;
            };
            match refund_request(refund, intent) {
                Ok(request) => provider.refund(&request).await,
                Err(error) => {
                    tracing::error!(refund = %refund.id, ?error, "cannot rebuild the refund request");
                    return Outcome::Unresolvable;
                }
            }
        }
        None => {
            tracing::warn!(
                refund = %refund.id,
                "pending refund without a provider id, older than the provider keeps its key: \
                 resolve it by hand"
            );
            return Outcome::Unresolvable;
        }
    };
    let (succeeded, provider_id) = match answer {
        Ok(answer) => match answer.status {
            RefundStatus::Succeeded => (true, answer.id),
            RefundStatus::Failed | RefundStatus::Cancelled => (false, answer.id),
            RefundStatus::Pending | RefundStatus::RequiresAction => {
                if refund.provider_refund_id.is_none() {
                    // Learn its id, so later rounds retrieve it instead of re-sending.
                    if store
                        .set_refund_provider_id(&refund.id, answer.id.as_str(), now)
                        .await
                        .is_err()
                    {
                        return Outcome::StoreError;
                    }
                }
                return Outcome::Pending;
            }
        },
        // The provider's own final word on this very refund (a replayed refusal).
        Err(error)
            if refund.provider_refund_id.is_none() && error.disposition() == Disposition::Final =>
        {
            tracing::error!(refund = %refund.id, %error, "the provider refused the refund");
            return match store
                .complete_refund(&refund.id, false, None, now, &refund_memo(refund))
                .await
            {
                Ok(_) => Outcome::Failed,
                Err(_) => Outcome::StoreError,
            };
        }
        Err(error) => {
            tracing::warn!(refund = %refund.id, code = error.code(), %error, "the provider did not answer a refund reconciliation");
            return Outcome::ProviderError;
        }
    };
    match store
        .complete_refund(
            &refund.id,
            succeeded,
            Some(provider_id.as_str()),
            now,
            &refund_memo(refund),
        )
        .await
    {
        Ok(_) if succeeded => Outcome::Succeeded,
        Ok(_) => Outcome::Failed,
        Err(_) => Outcome::StoreError,
    }
}

fn refund_memo(refund: &RefundRow) -> String {
    format!(
        "refund {} ({}), confirmed by reconciliation",
        refund.id, refund.reason
    )
}

fn applied(result: Result<PaymentRow, crate::Problem>) -> Outcome {
    // A failure was logged with its cause by `Problem::internal`.
    result.map_or(Outcome::StoreError, |row| Outcome::of(row.status))
}

fn provider_failed(payment: &PaymentRow, error: &ProviderError) -> Outcome {
    match error.disposition() {
        Disposition::Final => tracing::error!(
            payment = %payment.id,
            code = error.code(),
            %error,
            "the provider refused a reconciliation request; left as it is"
        ),
        _ => tracing::warn!(
            payment = %payment.id,
            code = error.code(),
            %error,
            "the provider did not answer a reconciliation request; retrying next round"
        ),
    }
    Outcome::ProviderError
}

/// Reconciles every `every` (the first round at once) until `stop`, with `clock`'s time;
/// counts into `metrics`.
pub async fn run(
    store: Arc<dyn Store>,
    provider: Arc<dyn Provider>,
    clock: Arc<dyn Clock>,
    metrics: ReconcileMetrics,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let round = async {
            let payments =
                reconcile_once(store.as_ref(), provider.as_ref(), clock.now(), BATCH).await;
            let refunds =
                reconcile_refunds_once(store.as_ref(), provider.as_ref(), clock.now(), BATCH).await;
            (payments, refunds)
        };
        // A round never outlives the stop: an unfinished payment is simply examined again
        // next time (every step is idempotent).
        let (report, refunds) = tokio::select! {
            () = stop.cancelled() => return,
            reports = round => reports,
        };
        log_round("payments", &report);
        log_round("refunds", &refunds);
        if let Ok(report) = &report {
            metrics.record(report);
        }
        if let Ok(refunds) = &refunds {
            metrics.record_refunds(refunds);
        }
    }
}

/// Logs a round that examined anything, or that could not run.
fn log_round(what: &'static str, round: &Result<ReconcileReport, ReconcileError>) {
    match round {
        Ok(report) if report.examined > 0 => tracing::info!(
            what,
            examined = report.examined,
            succeeded = report.succeeded,
            failed = report.failed,
            cancelled = report.cancelled,
            pending = report.pending,
            provider_errors = report.provider_errors,
            unresolvable = report.unresolvable,
            store_errors = report.store_errors,
            "reconciled"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(what, %error, "reconciliation failed"),
    }
}
