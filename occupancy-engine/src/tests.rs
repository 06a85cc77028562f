use super::*;
use chrono::Duration;
use parkd_core::garage::demo_garage;
use proptest::prelude::*;
use std::collections::HashMap;

fn lot_id() -> LotId {
    LotId::parse("g").unwrap()
}

fn t(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
}

/// 2 levels x 8 spots, 4 zones, a mix of kinds.
fn small_lot() -> Lot {
    demo_garage(lot_id(), 2, 8)
}

fn engine(debounce_ms: i64, stale_ms: i64) -> OccupancyEngine {
    let engine = OccupancyEngine::new(EngineSettings {
        machine: MachineSettings {
            debounce: Duration::milliseconds(debounce_ms),
            stale_after: Duration::milliseconds(stale_ms),
        },
        feed_capacity: 1 << 16,
    });
    engine.install_lot(small_lot(), t(0));
    engine
}

fn spot(i: usize) -> SpotId {
    small_lot().spots[i % 16].id.clone()
}

#[test]
fn a_new_lot_is_all_unknown_and_readings_move_the_counts() {
    let engine = engine(0, 0);
    let counts = engine.counts(&lot_id()).unwrap();
    assert_eq!(counts.spots, 16);
    assert_eq!(counts.unknown, 16);
    assert_eq!(
        engine.apply(&lot_id(), &spot(0), true, t(1)),
        Applied::Changed(SpotState::Unknown, SpotState::Occupied)
    );
    assert_eq!(
        engine.apply(&lot_id(), &spot(1), false, t(1)),
        Applied::Changed(SpotState::Unknown, SpotState::Free)
    );
    assert_eq!(
        engine.apply(&lot_id(), &spot(1), false, t(2)),
        Applied::Unchanged
    );
    let counts = engine.counts(&lot_id()).unwrap();
    assert_eq!((counts.occupied, counts.free, counts.unknown), (1, 1, 14));
    let figures = engine.figures(&lot_id()).unwrap();
    assert_eq!(figures.updated_at, Some(t(2)));
    assert_eq!(figures.seq, 2);
}

#[test]
fn unknown_lots_and_spots_are_counted_not_applied() {
    let engine = engine(0, 0);
    let other = LotId::parse("nope").unwrap();
    assert_eq!(
        engine.apply(&other, &spot(0), true, t(1)),
        Applied::UnknownLot
    );
    let ghost = SpotId::parse("ghost").unwrap();
    assert_eq!(
        engine.apply(&lot_id(), &ghost, true, t(1)),
        Applied::UnknownSpot
    );
    assert_eq!(engine.rejected(), (1, 1));
    assert_eq!(engine.counts(&lot_id()).unwrap().unknown, 16);
}

#[test]
fn availability_follows_the_compatibility_table() {
    let engine = engine(0, 0);
    let lot = small_lot();
    for spot in &lot.spots {
        engine.apply(&lot_id(), &spot.id, false, t(1));
    }
    let availability = engine.availability(&lot_id(), t(2)).unwrap();
    assert_eq!(availability.total.free, 16);
    let kinds = lot.kind_counts();
    for vehicle in VehicleType::ALL {
        let expected: usize = vehicle.kinds().map(|kind| kinds[kind.index()]).sum();
        assert_eq!(
            availability.by_vehicle[&vehicle].free, expected as i64,
            "{vehicle}"
        );
    }
    let levels: i64 = availability.levels.iter().map(|l| l.total.free).sum();
    assert_eq!(levels, 16);
    let zones: i64 = availability.zones.iter().map(|z| z.total.spots).sum();
    assert_eq!(zones, 16);
    // Occupy one standard spot: car availability drops by one, motorcycle does not.
    let standard = lot
        .spots
        .iter()
        .find(|s| s.kind == SpotKind::Standard)
        .unwrap();
    engine.apply(&lot_id(), &standard.id, true, t(3));
    let after = engine.availability(&lot_id(), t(4)).unwrap();
    assert_eq!(
        after.by_vehicle[&VehicleType::Car].free,
        availability.by_vehicle[&VehicleType::Car].free - 1
    );
    assert_eq!(
        after.by_vehicle[&VehicleType::Motorcycle].free,
        availability.by_vehicle[&VehicleType::Motorcycle].free
    );
}

#[test]
fn reinstalling_a_lot_keeps_live_state_and_sequence() {
    let engine = engine(0, 0);
    engine.apply(&lot_id(), &spot(3), true, t(1));
    let seq = engine.seq(&lot_id()).unwrap();
    let mut lot = small_lot();
    lot.spots.retain(|s| s.id != spot(5));
    lot.spots[0].out_of_service = true;
    engine.install_lot(lot, t(2));
    assert_eq!(
        engine.spot(&lot_id(), &spot(3)).unwrap().state,
        SpotState::Occupied
    );
    assert_eq!(
        engine.spot(&lot_id(), &spot(0)).unwrap().state,
        SpotState::OutOfService
    );
    assert!(engine.spot(&lot_id(), &spot(5)).is_none());
    assert_eq!(engine.seq(&lot_id()), Some(seq));
    assert_eq!(engine.counts(&lot_id()).unwrap().spots, 15);
    assert_eq!(engine.counters(&lot_id()), engine.recount(&lot_id()));
}

#[test]
fn snapshot_plus_deltas_equals_the_live_state() {
    let engine = engine(0, 0);
    let mut rx = engine.subscribe(&lot_id()).unwrap();
    engine.apply(&lot_id(), &spot(0), true, t(1));
    let snapshot = engine.snapshot(&lot_id(), t(1), None).unwrap();
    engine.apply(&lot_id(), &spot(0), false, t(2));
    engine.apply(&lot_id(), &spot(7), true, t(3));
    // The delta before the snapshot is in the channel too; the merge rule skips it.
    let mut state: HashMap<SpotId, SpotView> = snapshot
        .spots
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let mut last = snapshot.seq;
    while let Ok(delta) = rx.try_recv() {
        if delta.seq <= last {
            continue;
        }
        assert_eq!(delta.seq, last + 1, "gap-free");
        last = delta.seq;
        let json: serde_json::Value = serde_json::from_slice(&delta.json()).unwrap();
        assert_eq!(json["type"], "delta");
        assert_eq!(json["seq"], delta.seq);
        state.insert(delta.spot.id.clone(), delta.spot.clone());
    }
    let live = engine.snapshot(&lot_id(), t(4), None).unwrap();
    assert_eq!(last, live.seq);
    for spot in live.spots {
        assert_eq!(state[&spot.id], spot);
    }
}

#[test]
fn a_lagging_subscriber_loses_deltas_not_memory() {
    let engine = OccupancyEngine::new(EngineSettings {
        feed_capacity: 4,
        ..EngineSettings::default()
    });
    engine.install_lot(small_lot(), t(0));
    let mut rx = engine.subscribe(&lot_id()).unwrap();
    for i in 0..16 {
        engine.apply(&lot_id(), &spot(i), true, t(i as i64 + 1));
    }
    assert!(matches!(
        rx.try_recv(),
        Err(broadcast::error::TryRecvError::Lagged(12))
    ));
    assert_eq!(rx.try_recv().unwrap().seq, 13);
}

#[derive(Debug, Clone)]
enum Op {
    Reading(usize, bool, i64),
    Heartbeat(usize, i64),
    Tick(i64),
    Hold(usize, bool),
    OutOfService(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..20usize, any::<bool>(), 0..5_000i64).prop_map(|(s, o, at)| Op::Reading(s, o, at)),
        1 => (0..20usize, 0..5_000i64).prop_map(|(s, at)| Op::Heartbeat(s, at)),
        2 => (0..6_000i64).prop_map(Op::Tick),
        1 => (0..20usize, any::<bool>()).prop_map(|(s, h)| Op::Hold(s, h)),
        1 => (0..20usize, any::<bool>()).prop_map(|(s, o)| Op::OutOfService(s, o)),
    ]
}

fn ghost_or_spot(i: usize) -> SpotId {
    // Indexes past the lot's 16 spots are spots that do not exist.
    if i < 16 {
        spot(i)
    } else {
        SpotId::parse(&format!("ghost-{i}")).unwrap()
    }
}

proptest! {
    /// Whatever the inputs (duplicates, reordering, unknown spots, holds, closures, time),
    /// every counter equals a recount, every spot is counted once per grid, nothing is
    /// negative, and the feed is gap-free.
    #[test]
    fn counters_always_equal_a_recount(
        ops in proptest::collection::vec(op(), 1..300),
        debounce in prop_oneof![Just(0i64), 1..500i64],
        stale in prop_oneof![Just(0i64), 100..3_000i64],
    ) {
        let engine = engine(debounce, stale);
        let mut rx = engine.subscribe(&lot_id()).unwrap();
        let kinds = small_lot().kind_counts();
        let mut now = 0;
        for op in &ops {
            match op.clone() {
                Op::Reading(s, occupied, at) => {
                    engine.apply(&lot_id(), &ghost_or_spot(s), occupied, t(at));
                }
                Op::Heartbeat(s, at) => {
                    engine.heard(&lot_id(), &ghost_or_spot(s), t(at));
                }
                Op::Tick(at) => {
                    now = now.max(at);
                    engine.tick(t(now));
                }
                Op::Hold(s, held) => {
                    engine.set_held(&lot_id(), &ghost_or_spot(s), held, t(now));
                }
                Op::OutOfService(s, oos) => {
                    engine.set_out_of_service(&lot_id(), &ghost_or_spot(s), oos, t(now));
                }
            }
            let counters = engine.counters(&lot_id()).unwrap();
            prop_assert_eq!(&counters, &engine.recount(&lot_id()).unwrap());
            for kind in SpotKind::ALL {
                let c = counters.total[kind.index()];
                prop_assert_eq!(c.spots, kinds[kind.index()] as i64);
                prop_assert!(c.free >= 0 && c.occupied >= 0 && c.held >= 0);
                prop_assert!(c.unknown >= 0 && c.out_of_service >= 0);
                prop_assert!(c.free <= c.spots);
            }
            let levels: i64 = counters.levels.iter().flatten().map(|c| c.spots).sum();
            prop_assert_eq!(levels, 16);
        }
        let mut last = 0;
        while let Ok(delta) = rx.try_recv() {
            prop_assert_eq!(delta.seq, last + 1);
            last = delta.seq;
        }
        prop_assert_eq!(last, engine.seq(&lot_id()).unwrap());
    }

    /// Whatever order readings arrive in, and however often, each spot ends in its newest
    /// reading's state (without debounce) and the counts match a clean in-order run.
    #[test]
    fn reordering_and_duplicates_converge(
        arrivals in proptest::collection::hash_map((0..16usize, 0..1_000i64), any::<bool>(), 1..200)
            .prop_flat_map(|readings| {
                let list: Vec<((usize, i64), bool)> = readings.into_iter().collect();
                let doubled: Vec<_> = list.iter().chain(list.iter()).cloned().collect();
                (Just(list), Just(doubled).prop_shuffle())
            }),
    ) {
        let (readings, shuffled_arrivals) = arrivals;
        let in_order = engine(0, 0);
        let shuffled = engine(0, 0);
        let mut sorted = readings.clone();
        sorted.sort_by_key(|((_, at), _)| *at);
        let mut newest: HashMap<usize, bool> = HashMap::new();
        for ((s, at), occupied) in &sorted {
            in_order.apply(&lot_id(), &spot(*s), *occupied, t(*at));
            newest.insert(*s, *occupied);
        }
        for ((s, at), occupied) in &shuffled_arrivals {
            shuffled.apply(&lot_id(), &spot(*s), *occupied, t(*at));
        }
        for (s, occupied) in newest {
            let expected = if occupied { SpotState::Occupied } else { SpotState::Free };
            prop_assert_eq!(in_order.spot(&lot_id(), &spot(s)).unwrap().state, expected);
            prop_assert_eq!(shuffled.spot(&lot_id(), &spot(s)).unwrap().state, expected);
        }
        prop_assert_eq!(in_order.counts(&lot_id()), shuffled.counts(&lot_id()));
        prop_assert_eq!(shuffled.counters(&lot_id()), shuffled.recount(&lot_id()));
    }
}

#[test]
fn heartbeats_keep_the_lot_fresh_without_touching_the_spot() {
    let engine = engine(0, 0);
    engine.apply(&lot_id(), &spot(0), true, t(1_000));
    assert_eq!(
        engine.heard(&lot_id(), &spot(1), t(9_000)),
        Applied::Unchanged
    );
    assert_eq!(
        engine.figures(&lot_id()).unwrap().updated_at,
        Some(t(9_000))
    );
    assert_eq!(
        engine.spot(&lot_id(), &spot(0)).unwrap().updated_at,
        Some(t(1_000))
    );
    assert_eq!(engine.spot(&lot_id(), &spot(1)).unwrap().updated_at, None);
}

#[test]
fn the_version_moves_with_everything_availability_reports_but_the_time_of_reading() {
    let engine = engine(0, 0);
    let lot = lot_id();
    let first = engine.version(&lot).unwrap();
    let (at_read, availability) = engine.versioned_availability(&lot, t(5)).unwrap();
    assert_eq!(at_read, first);
    assert_eq!(availability.seq, 0);
    // Reading again later, with nothing heard: same version, only `as_of` differs.
    assert_eq!(engine.version(&lot), Some(first));

    // A change.
    engine.apply(&lot, &spot(0), true, t(10));
    let changed = engine.version(&lot).unwrap();
    assert_ne!(changed, first);
    // A reading that changes nothing still moves `updated_at`, so the version.
    engine.apply(&lot, &spot(0), true, t(20));
    let heard = engine.version(&lot).unwrap();
    assert_ne!(heard, changed);
    assert_eq!(engine.availability(&lot, t(21)).unwrap().seq, 1);
    // An older reading changes neither.
    engine.apply(&lot, &spot(0), true, t(15));
    assert_eq!(engine.version(&lot), Some(heard));
    // Holds move it; so does re-installing the same model (new counters, new feed), though
    // the sequence number carries over.
    engine.set_held(&lot, &spot(1), true, t(30));
    let held = engine.version(&lot).unwrap();
    assert_ne!(held, heard);
    engine.install_lot(small_lot(), t(40));
    let reloaded = engine.version(&lot).unwrap();
    assert_ne!(reloaded, held);
    assert_eq!(reloaded.seq, held.seq);
    assert_eq!(engine.version(&LotId::parse("nope").unwrap()), None);
}
