//! Wiring of the live occupancy engine: the garage model loaded from the store (and reloaded
//! when `parkd lot import` changes it), readings and heartbeats fed by ingest, the last known
//! state restored at start, time passing (debounce, staleness), Prometheus gauges, and each
//! lot's counts published as retained MQTT messages for guidance signs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parkd_broker::embedded::LocalPublisher;
use parkd_core::clock::Clock;
use parkd_core::ids::{LotId, SpotId};
use parkd_core::topic::Topic;
use parkd_ingest::ReadingObserver;
use parkd_occupancy::{Applied, OccupancyEngine};
use parkd_store::{SpotReading, Store, StoreResult};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Feeds accepted readings and heartbeats to the engine, counting what it refuses.
#[derive(Debug, Clone)]
pub struct EngineFeed {
    engine: Arc<OccupancyEngine>,
    rejected: IntCounterVec,
}

impl EngineFeed {
    /// A feed into `engine`, registering `parkd_occupancy_rejected_total{reason}`.
    pub fn new(
        engine: Arc<OccupancyEngine>,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<Self> {
        let rejected = IntCounterVec::new(
            Opts::new(
                "parkd_occupancy_rejected_total",
                "Readings and heartbeats the occupancy engine did not apply: their lot or spot \
                 is not in the garage model (they are still stored)",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(rejected.clone()))?;
        Ok(Self { engine, rejected })
    }

    fn count(&self, applied: Applied) {
        match applied {
            Applied::UnknownLot => self.rejected.with_label_values(&["unknown_lot"]).inc(),
            Applied::UnknownSpot => self.rejected.with_label_values(&["unknown_spot"]).inc(),
            Applied::Changed(..) | Applied::Unchanged => {}
        }
    }
}

impl ReadingObserver for EngineFeed {
    fn observe(&self, reading: &SpotReading) {
        self.count(self.engine.apply(
            &reading.lot,
            &reading.spot,
            reading.occupied,
            reading.received_at,
        ));
    }

    fn heartbeat(&self, lot: &LotId, spot: &SpotId, received_at: DateTime<Utc>) {
        self.count(self.engine.heard(lot, spot, received_at));
    }
}

/// Installs every lot of the store into the engine; returns their versions.
pub async fn load_lots(
    engine: &OccupancyEngine,
    store: &dyn Store,
    now: DateTime<Utc>,
) -> StoreResult<HashMap<LotId, i64>> {
    let versions: HashMap<LotId, i64> = store.lot_versions().await?.into_iter().collect();
    for lot in store.lots().await? {
        engine.install_lot(lot, now);
    }
    Ok(versions)
}

/// Loads the last known state of every spot; returns how many spots were restored.
pub async fn restore(engine: &OccupancyEngine, store: &dyn Store) -> StoreResult<usize> {
    let latest = store.latest_spot_states().await?;
    for spot in &latest {
        engine.apply(&spot.lot, &spot.spot, spot.occupied, spot.received_at);
    }
    Ok(latest.len())
}

/// Moves the engine's time once a second (debounce, staleness) until `stop`.
pub async fn ticker(engine: Arc<OccupancyEngine>, clock: Arc<dyn Clock>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let engine = engine.clone();
        let now = clock.now();
        // O(spots): keep it off the async workers for large garages.
        match tokio::task::spawn_blocking(move || engine.tick(now)).await {
            Ok(changed) if changed > 0 => tracing::debug!(changed, "spots changed by time"),
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "occupancy tick failed"),
        }
    }
}

/// Reinstalls lots whose stored version changed, adds new ones and removes deleted ones.
pub async fn reload_models(
    engine: Arc<OccupancyEngine>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    mut known: HashMap<LotId, i64>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let versions: HashMap<LotId, i64> = match store.lot_versions().await {
            Ok(versions) => versions.into_iter().collect(),
            Err(error) => {
                tracing::warn!(%error, "checking the garage model failed");
                continue;
            }
        };
        for (lot, version) in &versions {
            if known.get(lot) == Some(version) {
                continue;
            }
            match store.lot(lot).await {
                Ok(Some(model)) => {
                    tracing::info!(%lot, version, spots = model.spots.len(), "lot (re)loaded");
                    engine.install_lot(model, clock.now());
                    known.insert(lot.clone(), *version);
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%lot, %error, "loading a lot failed"),
            }
        }
        known.retain(|lot, _| {
            let keep = versions.contains_key(lot);
            if !keep {
                tracing::info!(%lot, "lot removed");
                engine.remove_lot(lot);
            }
            keep
        });
    }
}

/// The retained availability message of one lot (`parking/v1/{lot}/availability`).
#[derive(Debug, Serialize)]
struct RetainedAvailability<'a> {
    lot: &'a LotId,
    at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
    seq: u64,
    total: parkd_occupancy::Counts,
    free_by_vehicle: std::collections::BTreeMap<parkd_core::vehicle::VehicleType, i64>,
}

/// Publishes each lot's counts, retained, whenever they changed since the last round, at most
/// once per `every`.
pub async fn publish_availability(
    engine: Arc<OccupancyEngine>,
    publisher: LocalPublisher,
    clock: Arc<dyn Clock>,
    every: Duration,
    stop: CancellationToken,
) {
    let publisher = Arc::new(std::sync::Mutex::new(publisher));
    let mut published: HashMap<LotId, u64> = HashMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut messages = Vec::new();
        for lot in engine.lot_ids() {
            let Some(figures) = engine.figures(&lot) else {
                continue;
            };
            if published.get(&lot) == Some(&figures.seq) {
                continue;
            }
            let body = RetainedAvailability {
                lot: &lot,
                at: clock.now(),
                updated_at: figures.updated_at,
                seq: figures.seq,
                total: figures.total,
                free_by_vehicle: figures.free_by_vehicle,
            };
            let Ok(payload) = serde_json::to_vec(&body) else {
                continue;
            };
            let topic = Topic::LotAvailability { lot: lot.clone() }.to_string();
            published.insert(lot, figures.seq);
            messages.push((topic, payload));
        }
        if messages.is_empty() {
            continue;
        }
        let publisher = publisher.clone();
        let sent = tokio::task::spawn_blocking(move || {
            let mut publisher = publisher
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (topic, payload) in messages {
                publisher.publish_retained(&topic, payload)?;
            }
            Ok::<_, parkd_broker::BrokerError>(())
        })
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "publishing availability failed"),
            Err(error) => tracing::error!(%error, "publishing availability panicked"),
        }
    }
}

/// `parkd_lot_spots{lot, state}`, read from the engine's counters at scrape time (O(lots)).
#[derive(Debug)]
pub struct EngineCollector {
    engine: Arc<OccupancyEngine>,
    gauge: IntGaugeVec,
    free: IntGaugeVec,
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
        let free = IntGaugeVec::new(
            Opts::new(
                "parkd_lot_free_by_vehicle",
                "Free spots a vehicle type may use, per lot (compatibility table)",
            ),
            &["lot", "vehicle"],
        )?;
        Ok(Self {
            engine,
            gauge,
            free,
        })
    }
}

impl Collector for EngineCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.gauge.desc();
        descs.extend(self.free.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauge.reset();
        self.free.reset();
        for lot in self.engine.lot_ids() {
            let Some(figures) = self.engine.figures(&lot) else {
                continue;
            };
            let total = figures.total;
            for (state, value) in [
                ("free", total.free),
                ("occupied", total.occupied),
                ("held", total.held),
                ("unknown", total.unknown),
                ("out_of_service", total.out_of_service),
            ] {
                self.gauge
                    .with_label_values(&[lot.as_str(), state])
                    .set(value);
            }
            for (vehicle, free) in figures.free_by_vehicle {
                self.free
                    .with_label_values(&[lot.as_str(), vehicle.as_str()])
                    .set(free);
            }
        }
        let mut families = self.gauge.collect();
        families.extend(self.free.collect());
        families
    }
}
