//! Live occupancy: the current state of every spot and per-lot counters, in memory.
//!
//! Fed by ingest with every accepted reading (after validation and de-duplication), restored
//! at start from the store's last state per spot. Reads never touch the database: a lot's
//! counts are two atomics, updated incrementally on every change, so an availability read is
//! O(1) whatever the size of the lot.
//!
//! Ordering: a reading older than the spot's current state (by receive time) is ignored, so
//! replays and reordering cannot move a spot backwards. Counters always equal a recount
//! ([`OccupancyEngine::recount`]); the property tests check it.
//!
//! This is the start of the engine: debouncing, stale detection, holds for reservations and
//! the change feed for WebSockets come with the live-occupancy issue.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use parkd_core::ids::{LotId, SpotId};

/// What the engine knows of one spot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpotLive {
    /// Occupied or free.
    pub occupied: bool,
    /// When the platform received the reading this comes from.
    pub updated_at: DateTime<Utc>,
}

/// A lot's counts at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LotCounts {
    /// Spots reported free.
    pub free: i64,
    /// Spots reported occupied.
    pub occupied: i64,
}

#[derive(Debug, Default)]
struct Counters {
    free: AtomicI64,
    occupied: AtomicI64,
}

impl Counters {
    fn add(&self, occupied: bool, delta: i64) {
        let counter = if occupied { &self.occupied } else { &self.free };
        counter.fetch_add(delta, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LotCounts {
        LotCounts {
            free: self.free.load(Ordering::Relaxed),
            occupied: self.occupied.load(Ordering::Relaxed),
        }
    }
}

/// A state change the engine applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The lot.
    pub lot: LotId,
    /// The spot.
    pub spot: SpotId,
    /// The previous state, `None` for a spot seen for the first time.
    pub before: Option<bool>,
    /// The new state.
    pub occupied: bool,
}

/// The live state of every spot.
#[derive(Debug, Default)]
pub struct OccupancyEngine {
    spots: DashMap<(LotId, SpotId), SpotLive>,
    lots: DashMap<LotId, Counters>,
}

impl OccupancyEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a reading; returns the change when the spot's state changed.
    pub fn apply(
        &self,
        lot: &LotId,
        spot: &SpotId,
        occupied: bool,
        at: DateTime<Utc>,
    ) -> Option<Change> {
        let key = (lot.clone(), spot.clone());
        // The spot's entry lock is held while the counters move, so two readings of one spot
        // cannot interleave; different spots update the lot's atomics independently.
        let mut entry = self.spots.entry(key).or_insert(SpotLive {
            occupied,
            updated_at: DateTime::<Utc>::MIN_UTC,
        });
        let live = entry.value_mut();
        let first = live.updated_at == DateTime::<Utc>::MIN_UTC;
        if !first && at < live.updated_at {
            return None;
        }
        let before = (!first).then_some(live.occupied);
        live.updated_at = at;
        live.occupied = occupied;
        if before == Some(occupied) {
            return None;
        }
        let counters = self.lots.entry(lot.clone()).or_default();
        if let Some(before) = before {
            counters.add(before, -1);
        }
        counters.add(occupied, 1);
        Some(Change {
            lot: lot.clone(),
            spot: spot.clone(),
            before,
            occupied,
        })
    }

    /// A lot's counts, `None` for a lot never seen. O(1).
    pub fn counts(&self, lot: &LotId) -> Option<LotCounts> {
        self.lots.get(lot).map(|counters| counters.snapshot())
    }

    /// Every lot with its counts.
    pub fn all_counts(&self) -> Vec<(LotId, LotCounts)> {
        self.lots
            .iter()
            .map(|entry| (entry.key().clone(), entry.value().snapshot()))
            .collect()
    }

    /// One spot's state.
    pub fn spot(&self, lot: &LotId, spot: &SpotId) -> Option<SpotLive> {
        self.spots
            .get(&(lot.clone(), spot.clone()))
            .map(|entry| *entry.value())
    }

    /// Counts a lot from the spots, ignoring the counters (tests and self-checks). O(spots).
    pub fn recount(&self, lot: &LotId) -> LotCounts {
        let mut counts = LotCounts::default();
        for entry in self.spots.iter().filter(|entry| &entry.key().0 == lot) {
            if entry.value().occupied {
                counts.occupied += 1;
            } else {
                counts.free += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lot() -> LotId {
        LotId::parse("g").unwrap()
    }

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + second, 0).unwrap()
    }

    #[test]
    fn counts_follow_changes_and_ignore_the_past() {
        let engine = OccupancyEngine::new();
        let a = SpotId::parse("a").unwrap();
        let b = SpotId::parse("b").unwrap();
        assert!(engine.apply(&lot(), &a, true, at(1)).is_some());
        assert!(engine.apply(&lot(), &b, false, at(1)).is_some());
        assert_eq!(
            engine.counts(&lot()),
            Some(LotCounts {
                free: 1,
                occupied: 1
            })
        );
        assert!(engine.apply(&lot(), &a, true, at(2)).is_none(), "no change");
        assert!(
            engine.apply(&lot(), &a, false, at(0)).is_none(),
            "older than current"
        );
        let change = engine.apply(&lot(), &a, false, at(3)).unwrap();
        assert_eq!(change.before, Some(true));
        assert_eq!(
            engine.counts(&lot()),
            Some(LotCounts {
                free: 2,
                occupied: 0
            })
        );
        assert_eq!(engine.counts(&LotId::parse("other").unwrap()), None);
    }

    proptest! {
        /// Whatever the order, duplicates or timestamps of the readings, the counters equal a
        /// recount, every spot is counted once, and each spot ends in its newest state.
        #[test]
        fn counters_always_equal_a_recount(
            readings in proptest::collection::vec((0u8..20, any::<bool>(), 0i64..50), 1..400)
        ) {
            let engine = OccupancyEngine::new();
            let mut newest: std::collections::HashMap<u8, (i64, bool)> = Default::default();
            for (spot, occupied, second) in &readings {
                let id = SpotId::parse(&format!("s{spot}")).unwrap();
                engine.apply(&lot(), &id, *occupied, at(*second));
                // Same rule as apply: not older than the current state wins.
                let slot = newest.entry(*spot).or_insert((*second, *occupied));
                if *second >= slot.0 {
                    *slot = (*second, *occupied);
                }
                prop_assert_eq!(engine.counts(&lot()).unwrap(), engine.recount(&lot()));
            }
            let counts = engine.counts(&lot()).unwrap();
            prop_assert_eq!(counts.free + counts.occupied, newest.len() as i64);
            prop_assert!(counts.free >= 0 && counts.occupied >= 0);
            for (spot, (_, occupied)) in newest {
                let id = SpotId::parse(&format!("s{spot}")).unwrap();
                prop_assert_eq!(engine.spot(&lot(), &id).unwrap().occupied, occupied);
            }
        }
    }
}
