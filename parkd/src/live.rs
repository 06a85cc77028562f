//! Wiring of the live occupancy engine: fed by ingest, restored from the store, exported as
//! metrics. (Its REST and WebSocket faces come with the live-occupancy issue.)

use std::sync::Arc;

use parkd_ingest::ReadingObserver;
use parkd_occupancy::OccupancyEngine;
use parkd_store::{SpotReading, Store, StoreResult};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

/// Feeds accepted readings to the engine.
#[derive(Debug, Clone)]
pub struct EngineFeed(pub Arc<OccupancyEngine>);

impl ReadingObserver for EngineFeed {
    fn observe(&self, reading: &SpotReading) {
        self.0.apply(
            &reading.lot,
            &reading.spot,
            reading.occupied,
            reading.received_at,
        );
    }
}

/// Loads the last known state of every spot; returns how many spots were restored.
pub async fn restore(engine: &OccupancyEngine, store: &dyn Store) -> StoreResult<usize> {
    let latest = store.latest_spot_states().await?;
    for spot in &latest {
        engine.apply(&spot.lot, &spot.spot, spot.occupied, spot.received_at);
    }
    Ok(latest.len())
}

/// `parkd_lot_spots{lot, state}`, read from the engine's counters at scrape time (O(lots)).
#[derive(Debug)]
pub struct EngineCollector {
    engine: Arc<OccupancyEngine>,
    gauge: IntGaugeVec,
}

impl EngineCollector {
    /// A collector over `engine`.
    pub fn new(engine: Arc<OccupancyEngine>) -> prometheus::Result<Self> {
        let gauge = IntGaugeVec::new(
            Opts::new(
                "parkd_lot_spots",
                "Spots per lot by live state, from the occupancy engine",
            ),
            &["lot", "state"],
        )?;
        Ok(Self { engine, gauge })
    }
}

impl Collector for EngineCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for (lot, counts) in self.engine.all_counts() {
            self.gauge
                .with_label_values(&[lot.as_str(), "free"])
                .set(counts.free);
            self.gauge
                .with_label_values(&[lot.as_str(), "occupied"])
                .set(counts.occupied);
        }
        self.gauge.collect()
    }
}
