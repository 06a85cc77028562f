//! What the payment tests (payments, reconcile, webhooks) share: the garage with a tariff, and
//! what the store says of a payment.

use chrono::{DateTime, Duration, Utc};
use parkd_core::garage::demo_garage;
use parkd_core::ids::LotId;
use parkd_payments::IntentId;
use parkd_store::PaymentStatus;

use super::{Reply, Server};

impl Server {
    /// The manual clock's time.
    pub fn now(&self) -> DateTime<Utc> {
        parkd_core::clock::Clock::now(self.clock.as_ref())
    }

    /// Lot `garage` (one level of 40 spots) with `tariff`, installed once per server.
    pub async fn garage_with_tariff(&self, tariff: &str) {
        let lot_id = LotId::parse("garage").unwrap();
        if self.engine.model(&lot_id).is_some() {
            return;
        }
        let lot = demo_garage(lot_id.clone(), 1, 40);
        self.store.put_lot(&lot).await.unwrap();
        self.engine.install_lot(lot, self.now());
        self.store
            .put_tariff(&lot_id, tariff, self.now())
            .await
            .unwrap();
    }

    /// The amounts of a payment's ledger entries (its charge, then its refunds), within a day
    /// of now.
    pub async fn ledger_of(&self, payment: &str) -> Vec<i64> {
        self.store
            .ledger_between(
                self.now() - Duration::days(1),
                self.now() + Duration::days(1),
                None,
                None,
                1000,
            )
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.payment_id.as_deref() == Some(payment))
            .map(|e| e.amount_minor)
            .collect()
    }

    /// A payment's status as stored.
    pub async fn payment_status(&self, id: &str) -> PaymentStatus {
        self.store.payment(id).await.unwrap().unwrap().status
    }

    /// A payment's provider intent id.
    pub async fn intent_of(&self, id: &str) -> IntentId {
        let row = self.store.payment(id).await.unwrap().unwrap();
        IntentId::parse(row.provider_intent_id.unwrap()).unwrap()
    }
}

impl Reply {
    /// The problem's `type` without its URL prefix (`payment-declined`), or "".
    pub fn problem_kind(&self) -> String {
        self.body["type"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("https://parkd.dev/problems/")
            .to_owned()
    }
}
