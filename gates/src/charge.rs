//! What leaving costs: the lot's tariff over the stay, less what was paid.
//!
//! A session's bill is priced by `parkd_core::tariff::quote_stay` from the entry to the moment
//! asked about, on the kind of spot the car is in (sensed, else assigned), with the
//! reservation's period if the session came from one (its price, plus overstay past its end).
//! What was paid counts every succeeded payment of the session and of its reservation, net of
//! refunds, in the tariff's currency.
//!
//! **Paying before walking to the car.** A driver who pays in the app or at a pay station
//! still has to reach the exit. A stay paid up to time P is priced up to P as long as the car
//! leaves within [`TariffCharge::exit_grace`] of it; later, the whole stay is priced again and
//! only the difference is due.
//!
//! A lot without a tariff is free.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use parkd_core::ids::LotId;
use parkd_core::tariff::{
    Currency, Money, Occupant, Quote, QuoteError, ReservedPeriod, Tariff, quote_stay,
};
use parkd_occupancy::OccupancyEngine;
use parkd_store::{ParkingSession, PaymentPurpose, PaymentRow, PaymentStatus, Store, StoreError};
use serde::Serialize;

/// A session's bill at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bill {
    /// The stay's price (up to `priced_until`).
    pub quote: Quote,
    /// Paid so far for this stay (its payments and its reservation's), net of refunds.
    pub paid_minor: i64,
    /// Still to pay; never negative.
    pub due_minor: i64,
    /// The tariff's currency.
    pub currency: Currency,
    /// The end of the priced stay: the moment asked about, or the end of a recent payment's
    /// stay when the car leaves within the exit grace.
    pub priced_until: DateTime<Utc>,
}

/// Why a bill could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChargeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The lot is not loaded (no model, so no time zone or spot kinds).
    #[error("lot {0} is not loaded")]
    UnknownLot(LotId),
    /// The stored tariff or the lot's time zone cannot be used (a server fault: both are
    /// validated when stored).
    #[error("lot {lot}: {reason}")]
    Broken {
        /// The lot.
        lot: LotId,
        /// What is wrong.
        reason: String,
    },
    /// The stay cannot be priced (longer than the tariff prices, exit before entry).
    #[error(transparent)]
    Quote(#[from] QuoteError),
}

/// What leaving costs. [`TariffCharge`] in the platform; [`NoCharge`] where nothing is ever
/// charged.
#[async_trait]
pub trait ExitCharge: Send + Sync + std::fmt::Debug {
    /// The bill of a session leaving at `at`; `None` when the lot is free.
    async fn bill(
        &self,
        session: &ParkingSession,
        at: DateTime<Utc>,
    ) -> Result<Option<Bill>, ChargeError>;
}

/// Nothing is ever due.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCharge;

#[async_trait]
impl ExitCharge for NoCharge {
    async fn bill(
        &self,
        _session: &ParkingSession,
        _at: DateTime<Utc>,
    ) -> Result<Option<Bill>, ChargeError> {
        Ok(None)
    }
}

/// The tariff and the ledger.
#[derive(Debug)]
pub struct TariffCharge {
    store: Arc<dyn Store>,
    engine: Arc<OccupancyEngine>,
    exit_grace: Duration,
}

impl TariffCharge {
    /// Default time to reach the exit after paying.
    pub const DEFAULT_EXIT_GRACE: Duration = Duration::minutes(15);

    /// Bills over the store's tariffs and payments and the engine's lot models.
    pub fn new(store: Arc<dyn Store>, engine: Arc<OccupancyEngine>, exit_grace: Duration) -> Self {
        Self {
            store,
            engine,
            exit_grace,
        }
    }

    /// How long after paying a car may leave without the stay being priced again.
    pub fn exit_grace(&self) -> Duration {
        self.exit_grace
    }

    /// The lot's tariff, or `None` (free).
    async fn tariff(&self, lot: &LotId) -> Result<Option<Tariff>, ChargeError> {
        let Some(row) = self.store.tariff(lot).await? else {
            return Ok(None);
        };
        Tariff::from_json(row.tariff_json.as_bytes())
            .map(Some)
            .map_err(|error| ChargeError::Broken {
                lot: lot.clone(),
                reason: format!("stored tariff: {error}"),
            })
    }
}

/// What a payment still counts for: its amount less refunds, if it succeeded in `currency`.
pub fn net_paid(payment: &PaymentRow, currency: &Currency) -> i64 {
    if payment.status == PaymentStatus::Succeeded && payment.currency == *currency {
        payment.amount_minor - payment.amount_refunded_minor
    } else {
        0
    }
}

#[async_trait]
impl ExitCharge for TariffCharge {
    async fn bill(
        &self,
        session: &ParkingSession,
        at: DateTime<Utc>,
    ) -> Result<Option<Bill>, ChargeError> {
        let lot = &session.lot;
        let Some(tariff) = self.tariff(lot).await? else {
            return Ok(None);
        };
        let model = self
            .engine
            .model(lot)
            .ok_or_else(|| ChargeError::UnknownLot(lot.clone()))?;
        let tz = model.zone().ok_or_else(|| ChargeError::Broken {
            lot: lot.clone(),
            reason: format!("unknown time zone {:?}", model.timezone),
        })?;
        let vehicle = session.vehicle_type;
        let spot_kind = session
            .sensed_spot
            .as_ref()
            .or(session.assigned_spot.as_ref())
            .and_then(|spot| model.spot(spot))
            .map_or(vehicle.usual_kind(), |spot| spot.kind);
        let currency = tariff.currency.clone();

        let mut paid = 0;
        let mut paid_until: Option<DateTime<Utc>> = None;
        for payment in self.store.payments_of_session(&session.id).await? {
            let counted = net_paid(&payment, &currency);
            if counted > 0 {
                paid += counted;
                // The stay this payment covered ends where its quote ends.
                if let Ok(quote) = serde_json::from_str::<Quote>(&payment.quote_json) {
                    paid_until = paid_until.max(Some(quote.to));
                }
            }
        }
        let reservation = match &session.reservation_id {
            Some(id) => {
                for payment in self.store.payments_of_reservation(id).await? {
                    if payment.purpose == PaymentPurpose::Reservation {
                        paid += net_paid(&payment, &currency);
                    }
                }
                self.store.reservation(id).await?.map(|r| ReservedPeriod {
                    starts_at: r.starts_at,
                    ends_at: r.ends_at,
                })
            }
            None => None,
        };
        let priced_until = match paid_until {
            Some(until) if at <= until + self.exit_grace => until.min(at).max(session.entered_at),
            _ => at,
        };
        let quote = quote_stay(
            &tariff,
            tz,
            session.entered_at,
            priced_until.max(session.entered_at),
            Occupant::new(spot_kind, vehicle),
            reservation,
        )?;
        let Money(total) = quote.total;
        Ok(Some(Bill {
            due_minor: (total - paid).max(0),
            paid_minor: paid,
            currency,
            priced_until,
            quote,
        }))
    }
}
