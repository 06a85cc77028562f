//! The store's own counters as Prometheus metrics, read at scrape time.

use std::sync::Arc;

use parkd_store::Store;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, Opts};

/// `parkd_reservation_batch_*`: the PostgreSQL store's group commit of reservation creates
/// (statements, rows, and statements written again, by cause). Nothing on SQLite.
#[derive(Debug)]
pub struct StoreCollector {
    store: Arc<dyn Store>,
    statements: IntCounter,
    rows: IntCounter,
    retried: IntCounterVec,
}

impl StoreCollector {
    /// A collector over `store`.
    pub fn new(store: Arc<dyn Store>) -> prometheus::Result<Self> {
        Ok(Self {
            store,
            statements: IntCounter::new(
                "parkd_reservation_batch_statements_total",
                "Multi-row statements that wrote concurrent reservation creates together \
                 (a create written alone is not counted)",
            )?,
            rows: IntCounter::new(
                "parkd_reservation_batch_rows_total",
                "Reservation creates written by multi-row statements",
            )?,
            retried: IntCounterVec::new(
                Opts::new(
                    "parkd_reservation_batch_retried_total",
                    "Multi-row statements refused whole and written again: cause=overlap \
                     (another instance booked a spot; the overlapping rows left out), \
                     cause=other (a taken key, a missing user, a deadlock; row by row)",
                ),
                &["cause"],
            )?,
        })
    }
}

impl Collector for StoreCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.statements.desc();
        descs.extend(self.rows.desc());
        descs.extend(self.retried.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(batches) = self.store.reservation_batches() else {
            return Vec::new();
        };
        self.statements.reset();
        self.statements.inc_by(batches.statements);
        self.rows.reset();
        self.rows.inc_by(batches.rows);
        for (cause, value) in [
            ("overlap", batches.refused_overlap),
            ("other", batches.rewritten),
        ] {
            let counter = self.retried.with_label_values(&[cause]);
            counter.reset();
            counter.inc_by(value);
        }
        let mut families = self.statements.collect();
        families.extend(self.rows.collect());
        families.extend(self.retried.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use prometheus::{Encoder, Registry, TextEncoder};

    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Three creates at once on PostgreSQL are one statement of three rows, and the scrape says
    /// so; SQLite exports nothing.
    #[tokio::test]
    async fn batched_writes_are_counted_at_scrape_time() {
        let url = parkd_store::testing::fresh_postgres_url().await;
        let store: Arc<dyn Store> = Arc::new(
            parkd_store::postgres::PostgresStore::open(&url, 4, 30)
                .await
                .unwrap(),
        );
        let registry = Registry::new();
        registry
            .register(Box::new(StoreCollector::new(store.clone()).unwrap()))
            .unwrap();
        assert!(scrape(&registry).contains("parkd_reservation_batch_statements_total 0"));
        let at = Utc.timestamp_opt(1_900_000_000, 0).unwrap();
        store
            .create_user(&parkd_store::testing::driver("u1", at))
            .await
            .unwrap();
        // On this single-threaded runtime all three queue before the store's writer runs.
        let calls: Vec<_> = (0..3)
            .map(|i| {
                let store = store.clone();
                let row = parkd_store::testing::car_reservation(
                    &format!("r{i}"),
                    &format!("s{i}"),
                    at + chrono::Duration::hours(1),
                    at + chrono::Duration::hours(2),
                );
                tokio::spawn(async move { store.create_reservation(&row, None).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        let text = scrape(&registry);
        assert!(
            text.contains("parkd_reservation_batch_statements_total 1"),
            "{text}"
        );
        assert!(
            text.contains("parkd_reservation_batch_rows_total 3"),
            "{text}"
        );
        assert!(
            text.contains(r#"parkd_reservation_batch_retried_total{cause="overlap"} 0"#),
            "{text}"
        );

        let (sqlite, _dir) = parkd_store::testing::sqlite_store().await;
        let registry = Registry::new();
        registry
            .register(Box::new(StoreCollector::new(Arc::new(sqlite)).unwrap()))
            .unwrap();
        assert!(!scrape(&registry).contains("parkd_reservation_batch"));
    }
}
