//! Which spot a reservation gets when the driver does not name one: the allocation rule.
//!
//! Pure: no I/O, no clock (the time of the request, when it matters, comes in the
//! [`Request`]), deterministic. The caller hands in every spot of the lot with the busy time
//! already booked on it ([`Candidate`] = a [`Spot`] and its [`Timeline`]); [`allocate`]
//! answers with the chosen spot or a precise [`Refusal`].
//!
//! # The rule ([`Policy::BestFit`], the default)
//!
//! A spot is *feasible* when the vehicle fits its kind ([`fits`]), it is not out of service
//! and its timeline is free for the whole requested interval. Among the feasible spots the one
//! with the lowest [`Cost`] wins; equal costs go to the spot that comes first in the
//! candidates (model order), so the answer never depends on anything but the inputs. A
//! preferred spot ([`Request::preferred_spot`]) that is feasible is taken outright.
//!
//! The cost is compared in this order:
//!
//! 1. **Scarcity tier** ([`scarcity_rank`]), a rank and not a weight. Each vehicle uses the
//!    kinds it fits in the order "fewest other vehicles depend on it first": a kind that is
//!    some other vehicle's *only* option (large bays, the only bays a van fits) comes last; a
//!    kind few others may use comes first. From the compatibility table this gives:
//!
//!    | vehicle | order of kinds |
//!    |---|---|
//!    | motorcycle | motorcycle |
//!    | compact | compact, standard, large |
//!    | car | standard, large |
//!    | van | large |
//!    | ev | ev, standard, large |
//!    | accessible | accessible, standard, large |
//!
//!    So a permit holder gets an accessible bay and an EV a charger whenever one is free, a
//!    compact car fills the compact bays that only compact cars can use, and a car takes a
//!    van's bay only when no standard bay is free. It is a tier because no amount of packing
//!    or walking justifies taking a van's only option while a standard bay is free: a weight
//!    large enough to guarantee that would be a tier in disguise, and harder to check. A tier
//!    never refuses anyone: a car still gets a large bay when nothing else is free.
//! 2. **Preferred zone** ([`Request::preferred_zone`]): a spot outside it ranks after every
//!    spot inside it, within the same scarcity tier.
//! 3. **Timeline fit plus walk**, one number in seconds of spot time ([`Weights`]):
//!    - *fit*: booking `[start, end)` on a spot leaves an idle fragment before it (since the
//!      end of the previous booking) and after it (until the next one). Each fragment costs
//!      its length, capped at [`Weights::horizon_s`] (12 h: an open timeline, or a gap longer
//!      than any stay, is "a whole free stretch"); a fragment of 0 costs nothing (the booking
//!      touches its neighbour). A *sliver*, shorter than [`Weights::min_useful_s`] (30 min)
//!      but not empty, can never be sold, so it counts [`Weights::sliver_factor`] (2) times
//!      its length. The spot with the smallest total is the best fit: an exact fit into a gap
//!      beats carving a long free stretch, and long stretches stay whole for long stays. The
//!      part of a fragment before [`Request::now`] (the time of booking) is already gone and
//!      is not counted.
//!    - *walk*: [`Weights::walk_s_per_m`] (6 s of spot time per metre of
//!      [`Spot::walk_m`]: 100 m more walking is worth 10 minutes of idle spot time). A spot
//!      without `walk_m` counts [`UNKNOWN_WALK_M`]. Where the fit is the same (two empty
//!      spots, two spots touching a booking on both sides) the walk decides; it moves a
//!      booking away from a better fit only when the fits differ by less than the walks.
//!
//! [`Policy::FirstFit`] is the naive rule kept for comparison: the first feasible spot in
//! model order (still honouring a preferred spot, then a preferred zone).
//!
//! # Using it
//!
//! Pass every spot of the lot (so a refusal can say whether the vehicle fits anywhere at all)
//! with the bookings that matter for the request: since fragments are capped at the horizon,
//! only bookings overlapping `[start - horizon_s, end + horizon_s)` change the answer. The
//! timelines hold *busy time*; to keep a changeover margin between two bookings of a spot, pad
//! every interval (booked and requested) by it before calling.
//!
//! `docs/allocation.md` has the simulation behind these choices (`parkd-sim allocation`) and
//! its figures: the tiers carry most of the gain over first fit, best fit adds a little.

use std::cmp::Ordering;
use std::fmt;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};

use crate::garage::Spot;
use crate::ids::{SpotId, ZoneId};
use crate::vehicle::{SpotKind, VehicleType, fits};

/// The walking distance assumed for a spot without [`Spot::walk_m`], metres: far, so spots
/// with a known short walk go first.
pub const UNKNOWN_WALK_M: f64 = 500.0;

/// A half-open stretch of time `[start, end)`, in seconds since the Unix epoch, never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interval {
    start: i64,
    end: i64,
}

/// An interval that would end at or before its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an interval must end after it starts (start {start}, end {end})")]
pub struct EmptyInterval {
    /// The start asked for.
    pub start: i64,
    /// The end asked for.
    pub end: i64,
}

impl Interval {
    /// `[start, end)` in Unix seconds; `end` must be after `start`.
    pub fn new(start: i64, end: i64) -> Result<Self, EmptyInterval> {
        if end > start {
            Ok(Self { start, end })
        } else {
            Err(EmptyInterval { start, end })
        }
    }

    /// `[start, end)` from two instants, to the second (sub-second parts are dropped).
    pub fn from_datetimes(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, EmptyInterval> {
        Self::new(start.timestamp(), end.timestamp())
    }

    /// The first second.
    pub const fn start(self) -> i64 {
        self.start
    }

    /// The end, exclusive.
    pub const fn end(self) -> i64 {
        self.end
    }

    /// The length in seconds (at least 1).
    pub const fn len_s(self) -> i64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the two share at least one second.
    pub const fn overlaps(self, other: Interval) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// The seconds the two share.
    pub fn overlap_s(self, other: Interval) -> i64 {
        (self.end.min(other.end))
            .saturating_sub(self.start.max(other.start))
            .max(0)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// A booking that would overlap busy time already on the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{new} overlaps {existing}, already booked")]
pub struct Overlap {
    /// What was already there.
    pub existing: Interval,
    /// What was to be added.
    pub new: Interval,
}

/// The free time around a requested interval on one timeline: the end of the busy interval
/// before it and the start of the one after it (`None`: nothing booked on that side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// End of the previous busy interval, at or before the request's start.
    pub prev_end: Option<i64>,
    /// Start of the next busy interval, at or after the request's end.
    pub next_start: Option<i64>,
}

/// The busy time of one spot: intervals sorted by start, never overlapping (two may touch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    busy: Vec<Interval>,
}

impl Timeline {
    /// An empty timeline.
    pub const fn new() -> Self {
        Self { busy: Vec::new() }
    }

    /// A timeline from intervals in any order; overlapping ones are merged (their union is
    /// busy), so even inconsistent stored bookings never lead to a double booking.
    ///
    /// Given a `Vec`, merges in place: no allocation beyond the one the caller made.
    pub fn from_intervals(intervals: impl IntoIterator<Item = Interval>) -> Self {
        let mut busy: Vec<Interval> = intervals.into_iter().collect();
        busy.sort_unstable();
        // `dedup_by` hands each interval with the last one kept: fold it in if they overlap.
        busy.dedup_by(|next, kept| {
            let overlaps = next.start < kept.end;
            if overlaps {
                kept.end = kept.end.max(next.end);
            }
            overlaps
        });
        Self { busy }
    }

    /// The busy intervals, sorted.
    pub fn intervals(&self) -> &[Interval] {
        &self.busy
    }

    /// How many busy intervals.
    pub fn len(&self) -> usize {
        self.busy.len()
    }

    /// Whether nothing is booked.
    pub fn is_empty(&self) -> bool {
        self.busy.is_empty()
    }

    /// Index of the first busy interval that ends after `interval` starts.
    fn search(&self, interval: Interval) -> usize {
        // Sorted by start and disjoint, so the ends are sorted too.
        self.busy.partition_point(|busy| busy.end <= interval.start)
    }

    /// The free time around `interval`, or `None` if any of it is busy. One binary search.
    pub fn gap_around(&self, interval: Interval) -> Option<Gap> {
        let index = self.search(interval);
        let next = self.busy.get(index);
        if next.is_some_and(|busy| busy.start < interval.end) {
            return None;
        }
        let prev = index.checked_sub(1).and_then(|i| self.busy.get(i));
        Some(Gap {
            prev_end: prev.map(|busy| busy.end),
            next_start: next.map(|busy| busy.start),
        })
    }

    /// Whether the whole of `interval` is free.
    pub fn is_free(&self, interval: Interval) -> bool {
        self.gap_around(interval).is_some()
    }

    /// Books `interval`, which must be free.
    pub fn insert(&mut self, interval: Interval) -> Result<(), Overlap> {
        let index = self.search(interval);
        if let Some(&existing) = self.busy.get(index)
            && existing.start < interval.end
        {
            return Err(Overlap {
                existing,
                new: interval,
            });
        }
        self.busy.insert(index, interval);
        Ok(())
    }

    /// Removes a busy interval equal to `interval` (a cancelled booking); whether it was there.
    pub fn remove(&mut self, interval: Interval) -> bool {
        match self.busy.binary_search(&interval) {
            Ok(index) => {
                self.busy.remove(index);
                true
            }
            Err(_) => false,
        }
    }

    /// Busy seconds inside `window`.
    pub fn busy_s_within(&self, window: Interval) -> i64 {
        let from = self.search(window);
        self.busy[from..]
            .iter()
            .take_while(|busy| busy.start < window.end)
            .map(|busy| busy.overlap_s(window))
            .sum()
    }
}

/// A spot the rule may choose, with the busy time already booked on it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The spot (kind, zone, walk, out of service).
    pub spot: &'a Spot,
    /// Its bookings (at least those near the requested interval).
    pub booked: &'a Timeline,
}

/// What the driver asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The vehicle, which decides the kinds it may use.
    pub vehicle: VehicleType,
    /// When.
    pub interval: Interval,
    /// When the request is made (Unix seconds), if known: idle time before it costs nothing,
    /// it cannot be sold any more.
    pub now: Option<i64>,
    /// A zone to stay in if anything there is free (soft).
    pub preferred_zone: Option<ZoneId>,
    /// A spot to take if it is feasible (soft: otherwise the rule picks).
    pub preferred_spot: Option<SpotId>,
}

impl Request {
    /// A request with no preferences and no time of booking.
    pub const fn new(vehicle: VehicleType, interval: Interval) -> Self {
        Self {
            vehicle,
            interval,
            now: None,
            preferred_zone: None,
            preferred_spot: None,
        }
    }
}

/// The numbers of [`Policy::BestFit`]; see the module documentation for why these defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// Rank spots by [`scarcity_rank`] first (default `true`; `false` only for comparisons).
    pub scarcity: bool,
    /// Multiplier of the fit cost (default 1; 0 turns best fit off).
    pub fit: f64,
    /// A fragment shorter than this, in seconds, is a sliver nobody can book (default 1,800).
    pub min_useful_s: i64,
    /// How many times its length a sliver costs (default 2).
    pub sliver_factor: f64,
    /// Longest fragment counted, in seconds; a longer one or an open side costs this (default
    /// 43,200 = 12 h).
    pub horizon_s: i64,
    /// Seconds of spot time one metre of walking is worth (default 6).
    pub walk_s_per_m: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            scarcity: true,
            fit: 1.0,
            min_useful_s: 30 * 60,
            sliver_factor: 2.0,
            horizon_s: 12 * 3600,
            walk_s_per_m: 6.0,
        }
    }
}

/// How to choose among the feasible spots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// The first feasible spot in model order; the naive baseline.
    FirstFit,
    /// The lowest [`Cost`]: scarcity tier, preferred zone, then best fit plus walk.
    BestFit(Weights),
}

impl Default for Policy {
    fn default() -> Self {
        Policy::BestFit(Weights::default())
    }
}

/// The cost of putting a request on one feasible spot; lower is better. Compared as
/// `(scarcity, zone_miss, fit_s + walk_s)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// The spot kind's [`scarcity_rank`] for the vehicle (0 when scarcity is off).
    pub scarcity: u8,
    /// The request prefers a zone and the spot is not in it.
    pub zone_miss: bool,
    /// Weighted idle fragments left before and after the booking, seconds.
    pub fit_s: f64,
    /// Weighted walk, seconds.
    pub walk_s: f64,
}

impl Cost {
    /// Fit plus walk, seconds.
    pub fn total_s(&self) -> f64 {
        self.fit_s + self.walk_s
    }

    /// The order of costs: scarcity tier, zone, then fit plus walk.
    pub fn compare(&self, other: &Cost) -> Ordering {
        self.scarcity
            .cmp(&other.scarcity)
            .then(self.zone_miss.cmp(&other.zone_miss))
            .then(self.total_s().total_cmp(&other.total_s()))
    }
}

/// The spot chosen.
#[derive(Debug, Clone, Copy)]
pub struct Allocation<'a> {
    /// Its position among the candidates.
    pub index: usize,
    /// The spot.
    pub spot: &'a Spot,
    /// Why it won ([`Policy::BestFit`] only).
    pub cost: Option<Cost>,
}

/// Why no spot was allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No candidate is of a kind this vehicle may use.
    #[error("the lot has no spot a {0} may use")]
    NoFittingSpot(VehicleType),
    /// Spots of a fitting kind exist, but every one is out of service.
    #[error("all {fitting} spots a {vehicle} may use are out of service")]
    OutOfService {
        /// The vehicle asked for.
        vehicle: VehicleType,
        /// Spots of a fitting kind.
        fitting: usize,
    },
    /// Every fitting spot in service is booked during (part of) the interval.
    #[error("all {in_service} spots a {vehicle} may use are booked then")]
    Full {
        /// The vehicle asked for.
        vehicle: VehicleType,
        /// Fitting spots in service.
        in_service: usize,
    },
}

impl Refusal {
    /// A stable name for APIs and metrics: `no-fitting-spot`, `out-of-service` or `full`.
    pub const fn kind(&self) -> &'static str {
        match self {
            Refusal::NoFittingSpot(_) => "no-fitting-spot",
            Refusal::OutOfService { .. } => "out-of-service",
            Refusal::Full { .. } => "full",
        }
    }
}

/// The rank of `kind` among the kinds `vehicle` may use, 0 first; `None` if it does not fit.
///
/// Derived from the compatibility table, so it follows any change to it: the kinds `vehicle`
/// fits are ordered by (how many *other* vehicle types have this kind as their only option,
/// how many other vehicle types may use it), and equal keys share a rank. The resulting order
/// is in the module documentation.
pub fn scarcity_rank(vehicle: VehicleType, kind: SpotKind) -> Option<u8> {
    // Asked for every candidate spot of every request: worked out once from the table.
    const KINDS: usize = SpotKind::ALL.len();
    const VEHICLES: usize = VehicleType::ALL.len();
    static RANKS: LazyLock<[[Option<u8>; KINDS]; VEHICLES]> = LazyLock::new(|| {
        let mut ranks = [[None; KINDS]; VEHICLES];
        for vehicle in VehicleType::ALL {
            for kind in SpotKind::ALL {
                ranks[vehicle.index()][kind.index()] = rank_of(vehicle, kind);
            }
        }
        ranks
    });
    RANKS[vehicle.index()][kind.index()]
}

/// [`scarcity_rank`] worked out from the compatibility table.
fn rank_of(vehicle: VehicleType, kind: SpotKind) -> Option<u8> {
    if !fits(vehicle, kind) {
        return None;
    }
    let key = |kind: SpotKind| {
        let others = VehicleType::ALL
            .into_iter()
            .filter(|&other| other != vehicle);
        let captive = others
            .clone()
            .filter(|&other| other.kinds().eq(std::iter::once(kind)))
            .count();
        let users = others.filter(|&other| fits(other, kind)).count();
        (captive, users)
    };
    let mine = key(kind);
    let mut lower: Vec<(usize, usize)> = vehicle
        .kinds()
        .map(key)
        .filter(|other| *other < mine)
        .collect();
    lower.sort_unstable();
    lower.dedup();
    u8::try_from(lower.len()).ok()
}

/// A weight that is finite and not negative, else 0.
fn sane(weight: f64) -> f64 {
    if weight.is_finite() && weight > 0.0 {
        weight
    } else {
        0.0
    }
}

/// The weighted idle fragments left by booking `interval` into `gap`, seconds.
fn fit_s(gap: Gap, interval: Interval, now: Option<i64>, weights: &Weights) -> f64 {
    let factor = sane(weights.fit);
    if factor == 0.0 {
        return 0.0;
    }
    let horizon = weights.horizon_s.max(0);
    // Idle time before `now` is past: it cannot be sold whatever we do.
    let idle_from = gap
        .prev_end
        .unwrap_or(i64::MIN)
        .max(now.unwrap_or(i64::MIN));
    let before = interval.start.saturating_sub(idle_from).clamp(0, horizon);
    let after = gap
        .next_start
        .map_or(i64::MAX, |next| next.saturating_sub(interval.end))
        .clamp(0, horizon);
    let side = |fragment: i64| {
        let length = fragment as f64;
        if fragment > 0 && fragment < weights.min_useful_s {
            length * sane(weights.sliver_factor)
        } else {
            length
        }
    };
    factor * (side(before) + side(after))
}

/// The cost of `request` on a spot with free `gap` around it; see the module documentation.
pub fn cost(spot: &Spot, gap: Gap, request: &Request, weights: &Weights) -> Option<Cost> {
    let rank = scarcity_rank(request.vehicle, spot.kind)?;
    Some(Cost {
        scarcity: if weights.scarcity { rank } else { 0 },
        zone_miss: zone_miss(spot, request),
        fit_s: fit_s(gap, request.interval, request.now, weights),
        walk_s: sane(weights.walk_s_per_m) * spot.walk_m.unwrap_or(UNKNOWN_WALK_M),
    })
}

fn zone_miss(spot: &Spot, request: &Request) -> bool {
    request
        .preferred_zone
        .as_ref()
        .is_some_and(|zone| spot.zone.as_ref() != Some(zone))
}

/// Picks the spot for `request` among `candidates` (every spot of the lot, in model order,
/// each with its busy time) by `policy`; see the module documentation.
///
/// Never returns a spot the vehicle does not fit, one out of service, or one busy during any
/// part of the interval; refuses only when no such spot is left. O(n log b) for n candidates
/// with up to b bookings each, no allocation.
pub fn allocate<'a>(
    candidates: impl IntoIterator<Item = Candidate<'a>>,
    request: &Request,
    policy: &Policy,
) -> Result<Allocation<'a>, Refusal> {
    let vehicle = request.vehicle;
    let mut fitting = 0usize;
    let mut in_service = 0usize;
    let mut best: Option<(Allocation<'a>, Cost)> = None;
    // First fit: the first feasible spot in the preferred zone, else the first at all.
    let mut first: Option<Allocation<'a>> = None;
    for (index, candidate) in candidates.into_iter().enumerate() {
        let spot = candidate.spot;
        if !fits(vehicle, spot.kind) {
            continue;
        }
        fitting += 1;
        if spot.out_of_service {
            continue;
        }
        in_service += 1;
        let Some(gap) = candidate.booked.gap_around(request.interval) else {
            continue;
        };
        let preferred = request.preferred_spot.as_ref() == Some(&spot.id);
        match policy {
            Policy::FirstFit => {
                let found = Allocation {
                    index,
                    spot,
                    cost: None,
                };
                if preferred || (request.preferred_spot.is_none() && !zone_miss(spot, request)) {
                    return Ok(found);
                }
                let better = match &first {
                    None => true,
                    Some(first) => zone_miss(first.spot, request) && !zone_miss(spot, request),
                };
                if better {
                    first = Some(found);
                }
            }
            Policy::BestFit(weights) => {
                let Some(cost) = cost(spot, gap, request, weights) else {
                    continue;
                };
                let found = Allocation {
                    index,
                    spot,
                    cost: Some(cost),
                };
                if preferred {
                    return Ok(found);
                }
                if best
                    .as_ref()
                    .is_none_or(|(_, best)| cost.compare(best) == Ordering::Less)
                {
                    best = Some((found, cost));
                }
            }
        }
    }
    if let Some(found) = first.or(best.map(|(found, _)| found)) {
        return Ok(found);
    }
    Err(if fitting == 0 {
        Refusal::NoFittingSpot(vehicle)
    } else if in_service == 0 {
        Refusal::OutOfService { vehicle, fitting }
    } else {
        Refusal::Full {
            vehicle,
            in_service,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::garage::demo_garage;
    use crate::ids::{LevelId, LotId};
    use proptest::prelude::*;

    const H: i64 = 3600;

    fn iv(start: i64, end: i64) -> Interval {
        Interval::new(start, end).unwrap()
    }

    fn spot(n: usize, kind: SpotKind, walk: f64) -> Spot {
        Spot {
            id: SpotId::parse(&format!("S{n}")).unwrap(),
            label: format!("{n}"),
            level: LevelId::parse("L1").unwrap(),
            zone: Some(ZoneId::parse(if n.is_multiple_of(2) { "even" } else { "odd" }).unwrap()),
            kind,
            x: 0.0,
            y: 0.0,
            w: 3.0,
            h: 6.0,
            rotation: 0.0,
            walk_m: Some(walk),
            out_of_service: false,
        }
    }

    fn pick(
        spots: &[Spot],
        timelines: &[Timeline],
        request: &Request,
        policy: &Policy,
    ) -> Result<usize, Refusal> {
        let candidates = spots
            .iter()
            .zip(timelines)
            .map(|(spot, booked)| Candidate { spot, booked });
        allocate(candidates, request, policy).map(|found| found.index)
    }

    #[test]
    fn intervals_are_never_empty() {
        assert!(Interval::new(5, 5).is_err());
        assert!(Interval::new(6, 5).is_err());
        assert_eq!(iv(5, 8).len_s(), 3);
        assert!(iv(0, 10).overlaps(iv(9, 20)));
        assert!(
            !iv(0, 10).overlaps(iv(10, 20)),
            "half-open: touching is fine"
        );
        assert_eq!(iv(0, 10).overlap_s(iv(5, 20)), 5);
        let a = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let b = DateTime::from_timestamp(1_700_003_600, 0).unwrap();
        assert_eq!(Interval::from_datetimes(a, b).unwrap().len_s(), 3600);
        assert!(Interval::from_datetimes(b, a).is_err());
    }

    #[test]
    fn timelines_keep_busy_time_sorted_and_disjoint() {
        let mut timeline = Timeline::from_intervals([iv(50, 60), iv(0, 10), iv(5, 20), iv(20, 30)]);
        assert_eq!(timeline.intervals(), &[iv(0, 20), iv(20, 30), iv(50, 60)]);
        assert!(timeline.is_free(iv(30, 50)));
        assert!(!timeline.is_free(iv(29, 31)));
        assert_eq!(
            timeline.gap_around(iv(35, 40)),
            Some(Gap {
                prev_end: Some(30),
                next_start: Some(50)
            })
        );
        assert_eq!(
            timeline.gap_around(iv(70, 80)),
            Some(Gap {
                prev_end: Some(60),
                next_start: None
            })
        );
        assert_eq!(
            timeline.insert(iv(55, 70)).unwrap_err().existing,
            iv(50, 60)
        );
        timeline.insert(iv(30, 50)).unwrap();
        assert_eq!(timeline.len(), 4);
        assert_eq!(timeline.busy_s_within(iv(10, 55)), 45);
        assert!(timeline.remove(iv(30, 50)));
        assert!(!timeline.remove(iv(30, 50)));
        assert_eq!(timeline.busy_s_within(iv(10, 55)), 25);
    }

    #[test]
    fn the_rank_table_is_the_rule_worked_out() {
        for vehicle in VehicleType::ALL {
            for kind in SpotKind::ALL {
                assert_eq!(scarcity_rank(vehicle, kind), rank_of(vehicle, kind));
            }
        }
    }

    #[test]
    fn scarcity_follows_the_documented_order() {
        use SpotKind as K;
        use VehicleType as V;
        let order = |vehicle: VehicleType| {
            let mut kinds: Vec<_> = vehicle
                .kinds()
                .map(|kind| (scarcity_rank(vehicle, kind).unwrap(), kind))
                .collect();
            kinds.sort();
            kinds
        };
        assert_eq!(order(V::Motorcycle), [(0, K::Motorcycle)]);
        assert_eq!(
            order(V::Compact),
            [(0, K::Compact), (1, K::Standard), (2, K::Large)]
        );
        assert_eq!(order(V::Car), [(0, K::Standard), (1, K::Large)]);
        assert_eq!(order(V::Van), [(0, K::Large)]);
        assert_eq!(order(V::Ev), [(0, K::Ev), (1, K::Standard), (2, K::Large)]);
        assert_eq!(
            order(V::Accessible),
            [(0, K::Accessible), (1, K::Standard), (2, K::Large)]
        );
        assert_eq!(scarcity_rank(V::Car, K::Ev), None);
    }

    #[test]
    fn dedicated_and_scarce_kinds_go_to_those_who_need_them() {
        // In model order: large, standard, ev, accessible, compact.
        let kinds = [
            SpotKind::Large,
            SpotKind::Standard,
            SpotKind::Ev,
            SpotKind::Accessible,
            SpotKind::Compact,
        ];
        let spots: Vec<Spot> = kinds
            .iter()
            .enumerate()
            .map(|(i, &k)| spot(i, k, 10.0))
            .collect();
        let empty = vec![Timeline::new(); spots.len()];
        let best = Policy::default();
        let at = |vehicle| Request::new(vehicle, iv(8 * H, 10 * H));
        assert_eq!(pick(&spots, &empty, &at(VehicleType::Car), &best), Ok(1));
        assert_eq!(pick(&spots, &empty, &at(VehicleType::Van), &best), Ok(0));
        assert_eq!(pick(&spots, &empty, &at(VehicleType::Ev), &best), Ok(2));
        assert_eq!(
            pick(&spots, &empty, &at(VehicleType::Accessible), &best),
            Ok(3)
        );
        assert_eq!(
            pick(&spots, &empty, &at(VehicleType::Compact), &best),
            Ok(4)
        );
        // First fit takes the van's bay for everyone but motorcycles.
        for vehicle in [
            VehicleType::Car,
            VehicleType::Ev,
            VehicleType::Compact,
            VehicleType::Accessible,
        ] {
            assert_eq!(pick(&spots, &empty, &at(vehicle), &Policy::FirstFit), Ok(0));
        }
        // With the standard bay booked, the car still gets the large one.
        let mut busy = empty.clone();
        busy[1].insert(iv(9 * H, 11 * H)).unwrap();
        assert_eq!(pick(&spots, &busy, &at(VehicleType::Car), &best), Ok(0));
        assert_eq!(
            pick(&spots, &busy, &at(VehicleType::Motorcycle), &best),
            Err(Refusal::NoFittingSpot(VehicleType::Motorcycle))
        );
    }

    #[test]
    fn best_fit_fills_the_tightest_gap() {
        let spots: Vec<Spot> = (0..4).map(|i| spot(i, SpotKind::Standard, 10.0)).collect();
        let timelines = vec![
            Timeline::new(),                                              // all free
            Timeline::from_intervals([iv(0, 8 * H)]),                     // free from 08:00
            Timeline::from_intervals([iv(0, 8 * H), iv(10 * H, 20 * H)]), // 08-10 exactly
            Timeline::from_intervals([iv(0, 7 * H), iv(11 * H, 20 * H)]), // 07-11
        ];
        let request = Request::new(VehicleType::Car, iv(8 * H, 10 * H));
        assert_eq!(
            pick(&spots, &timelines, &request, &Policy::default()),
            Ok(2)
        );
        assert_eq!(pick(&spots, &timelines, &request, &Policy::FirstFit), Ok(0));
        // Without the exact gap: a 1 h + 1 h gap beats touching one side and opening the other.
        assert_eq!(
            pick(&spots[..2], &timelines[..2], &request, &Policy::default()),
            Ok(1)
        );
        let three = [spots[0].clone(), spots[1].clone(), spots[3].clone()];
        let three_t = [
            timelines[0].clone(),
            timelines[1].clone(),
            timelines[3].clone(),
        ];
        assert_eq!(pick(&three, &three_t, &request, &Policy::default()), Ok(2));
        // A sliver costs double: 20 min lost before beats nothing only if the other is worse.
        let slivers = [
            Timeline::from_intervals([iv(0, 8 * H - 20 * 60), iv(10 * H + 50 * 60, 20 * H)]), // 20 min + 50 min
            Timeline::from_intervals([iv(0, 8 * H - 35 * 60), iv(10 * H + 35 * 60, 20 * H)]), // 35 + 35
        ];
        // 40 + 50 = 90 min against 70 min: the sliver loses.
        assert_eq!(
            pick(&spots[..2], &slivers, &request, &Policy::default()),
            Ok(1)
        );
    }

    #[test]
    fn idle_time_before_the_booking_is_made_is_free() {
        let spots: Vec<Spot> = (0..2).map(|i| spot(i, SpotKind::Standard, 10.0)).collect();
        // Spot 0 is idle from 02:00 and booked from 10:00 (6 h before, 0 after); spot 1 is
        // booked until 08:00 and from 13:00 (0 before, 3 h after).
        let timelines = vec![
            Timeline::from_intervals([iv(0, 2 * H), iv(10 * H, 20 * H)]),
            Timeline::from_intervals([iv(0, 8 * H), iv(13 * H, 20 * H)]),
        ];
        let mut request = Request::new(VehicleType::Car, iv(8 * H, 10 * H));
        assert_eq!(
            pick(&spots, &timelines, &request, &Policy::default()),
            Ok(1)
        );
        // Booked at 08:00 for now: the idle hours before are gone either way; spot 0 fits.
        request.now = Some(8 * H);
        assert_eq!(
            pick(&spots, &timelines, &request, &Policy::default()),
            Ok(0)
        );
    }

    #[test]
    fn walk_breaks_ties_and_preferences_are_honoured() {
        let spots = vec![
            spot(0, SpotKind::Standard, 80.0),
            spot(1, SpotKind::Standard, 20.0),
            spot(2, SpotKind::Standard, 20.0),
            spot(3, SpotKind::Large, 5.0),
        ];
        let empty = vec![Timeline::new(); spots.len()];
        let mut request = Request::new(VehicleType::Car, iv(8 * H, 10 * H));
        // Equal fit, equal walk: model order.
        assert_eq!(pick(&spots, &empty, &request, &Policy::default()), Ok(1));
        request.preferred_zone = Some(ZoneId::parse("even").unwrap());
        assert_eq!(pick(&spots, &empty, &request, &Policy::default()), Ok(2));
        assert_eq!(pick(&spots, &empty, &request, &Policy::FirstFit), Ok(0));
        request.preferred_spot = Some(SpotId::parse("S3").unwrap());
        assert_eq!(pick(&spots, &empty, &request, &Policy::default()), Ok(3));
        assert_eq!(pick(&spots, &empty, &request, &Policy::FirstFit), Ok(3));
        // A preferred spot that is busy is ignored.
        let mut busy = empty.clone();
        busy[3].insert(iv(9 * H, 9 * H + 1)).unwrap();
        assert_eq!(pick(&spots, &busy, &request, &Policy::default()), Ok(2));
    }

    #[test]
    fn refusals_say_why() {
        let mut spots: Vec<Spot> = (0..3).map(|i| spot(i, SpotKind::Standard, 10.0)).collect();
        let mut timelines = vec![Timeline::new(); 3];
        let request = |vehicle| Request::new(vehicle, iv(0, H));
        for policy in [Policy::FirstFit, Policy::default()] {
            assert_eq!(
                pick(&spots, &timelines, &request(VehicleType::Van), &policy),
                Err(Refusal::NoFittingSpot(VehicleType::Van))
            );
        }
        spots[0].out_of_service = true;
        spots[1].out_of_service = true;
        timelines[2].insert(iv(0, 2 * H)).unwrap();
        let full = pick(
            &spots,
            &timelines,
            &request(VehicleType::Car),
            &Policy::default(),
        );
        assert_eq!(
            full,
            Err(Refusal::Full {
                vehicle: VehicleType::Car,
                in_service: 1
            })
        );
        assert_eq!(full.unwrap_err().kind(), "full");
        spots[2].out_of_service = true;
        let closed = pick(
            &spots,
            &timelines,
            &request(VehicleType::Car),
            &Policy::default(),
        )
        .unwrap_err();
        assert_eq!(
            closed,
            Refusal::OutOfService {
                vehicle: VehicleType::Car,
                fitting: 3
            }
        );
        assert_eq!(
            closed.to_string(),
            "all 3 spots a car may use are out of service"
        );
    }

    #[test]
    fn the_demo_garage_gives_each_need_its_bay() {
        let lot = demo_garage(LotId::parse("demo").unwrap(), 3, 100);
        let empty = vec![Timeline::new(); lot.spots.len()];
        let pick_kind = |vehicle| {
            let candidates = lot
                .spots
                .iter()
                .zip(&empty)
                .map(|(spot, booked)| Candidate { spot, booked });
            allocate(
                candidates,
                &Request::new(vehicle, iv(0, H)),
                &Policy::default(),
            )
            .unwrap()
            .spot
            .kind
        };
        assert_eq!(pick_kind(VehicleType::Accessible), SpotKind::Accessible);
        assert_eq!(pick_kind(VehicleType::Ev), SpotKind::Ev);
        assert_eq!(pick_kind(VehicleType::Van), SpotKind::Large);
        assert_eq!(pick_kind(VehicleType::Compact), SpotKind::Compact);
        assert_eq!(pick_kind(VehicleType::Car), SpotKind::Standard);
        assert_eq!(pick_kind(VehicleType::Motorcycle), SpotKind::Motorcycle);
    }

    fn kind_strategy() -> impl Strategy<Value = SpotKind> {
        proptest::sample::select(SpotKind::ALL.to_vec())
    }

    fn vehicle_strategy() -> impl Strategy<Value = VehicleType> {
        proptest::sample::select(VehicleType::ALL.to_vec())
    }

    fn interval_strategy() -> impl Strategy<Value = Interval> {
        (0i64..48, 1i64..12).prop_map(|(start, len)| iv(start * 900, (start + len) * 900))
    }

    /// A small lot: kinds, out-of-service flags, walks, and bookings on a quarter-hour grid.
    fn lot_strategy() -> impl Strategy<Value = (Vec<Spot>, Vec<Timeline>)> {
        proptest::collection::vec(
            (
                kind_strategy(),
                proptest::bool::weighted(0.15),
                0.0f64..200.0,
                proptest::collection::vec(interval_strategy(), 0..5),
            ),
            0..12,
        )
        .prop_map(|spots| {
            spots
                .into_iter()
                .enumerate()
                .map(|(i, (kind, out_of_service, walk, booked))| {
                    let mut spot = spot(i, kind, walk.round());
                    spot.out_of_service = out_of_service;
                    (spot, Timeline::from_intervals(booked))
                })
                .unzip()
        })
    }

    fn policy_strategy() -> impl Strategy<Value = Policy> {
        prop_oneof![
            Just(Policy::FirstFit),
            Just(Policy::default()),
            (
                any::<bool>(),
                0.0f64..3.0,
                0i64..7200,
                0.0f64..4.0,
                0i64..90_000,
                0.0f64..20.0
            )
                .prop_map(
                    |(scarcity, fit, min_useful_s, sliver_factor, horizon_s, walk_s_per_m)| {
                        Policy::BestFit(Weights {
                            scarcity,
                            fit,
                            min_useful_s,
                            sliver_factor,
                            horizon_s,
                            walk_s_per_m,
                        })
                    }
                ),
        ]
    }

    proptest! {
        #[test]
        fn allocations_are_feasible_and_refusals_justified(
            (spots, timelines) in lot_strategy(),
            vehicle in vehicle_strategy(),
            interval in interval_strategy(),
            now in proptest::option::of(0i64..50_000),
            zone in proptest::option::of(proptest::sample::select(vec!["even", "odd", "none"])),
            preferred in proptest::option::of(0usize..14),
            policy in policy_strategy(),
        ) {
            let request = Request {
                vehicle,
                interval,
                now,
                preferred_zone: zone.map(|zone| ZoneId::parse(zone).unwrap()),
                preferred_spot: preferred.map(|n| SpotId::parse(&format!("S{n}")).unwrap()),
            };
            let feasible: Vec<bool> = spots
                .iter()
                .zip(&timelines)
                .map(|(spot, booked)| fits(vehicle, spot.kind) && !spot.out_of_service && booked.is_free(interval))
                .collect();
            let answer = pick(&spots, &timelines, &request, &policy);
            // Deterministic.
            prop_assert_eq!(answer, pick(&spots, &timelines, &request, &policy));
            match answer {
                Ok(index) => {
                    prop_assert!(feasible[index], "picked infeasible spot {index}");
                    let spot = &spots[index];
                    prop_assert!(fits(vehicle, spot.kind));
                    prop_assert!(!spot.out_of_service);
                    prop_assert!(timelines[index].intervals().iter().all(|busy| !busy.overlaps(interval)));
                    // A feasible preferred spot is always taken.
                    if let Some(wanted) = preferred.filter(|&n| n < spots.len() && feasible[n]) {
                        prop_assert_eq!(index, wanted);
                    } else if let Policy::BestFit(weights) = policy {
                        // Optimal, and the first among equals.
                        let mine = cost(spot, timelines[index].gap_around(interval).unwrap(), &request, &weights).unwrap();
                        for (other, ok) in feasible.iter().enumerate() {
                            if !ok { continue; }
                            let theirs = cost(&spots[other], timelines[other].gap_around(interval).unwrap(), &request, &weights).unwrap();
                            let order = mine.compare(&theirs);
                            prop_assert!(order != Ordering::Greater, "spot {other} is cheaper than {index}");
                            if order == Ordering::Equal {
                                prop_assert!(index <= other);
                            }
                        }
                    } else {
                        // First fit: the first feasible in the preferred zone, else the first.
                        let in_zone = |n: usize| request.preferred_zone.is_none() || spots[n].zone == request.preferred_zone;
                        let first = (0..spots.len())
                            .find(|&n| feasible[n] && in_zone(n))
                            .or_else(|| feasible.iter().position(|&ok| ok));
                        prop_assert_eq!(Some(index), first);
                    }
                }
                Err(refusal) => {
                    prop_assert!(feasible.iter().all(|ok| !ok), "refused with a feasible spot: {refusal}");
                    let fitting = spots.iter().filter(|spot| fits(vehicle, spot.kind)).count();
                    let in_service = spots.iter().filter(|spot| fits(vehicle, spot.kind) && !spot.out_of_service).count();
                    let expected = if fitting == 0 {
                        Refusal::NoFittingSpot(vehicle)
                    } else if in_service == 0 {
                        Refusal::OutOfService { vehicle, fitting }
                    } else {
                        Refusal::Full { vehicle, in_service }
                    };
                    prop_assert_eq!(refusal, expected);
                }
            }
        }

        #[test]
        fn scarce_kinds_wait_for_their_own(
            (spots, timelines) in lot_strategy(),
            vehicle in vehicle_strategy(),
            interval in interval_strategy(),
        ) {
            // With scarcity on, the chosen kind has the lowest rank among the feasible spots.
            let request = Request::new(vehicle, interval);
            if let Ok(index) = pick(&spots, &timelines, &request, &Policy::default()) {
                let chosen = scarcity_rank(vehicle, spots[index].kind).unwrap();
                for (spot, booked) in spots.iter().zip(&timelines) {
                    if let Some(rank) = scarcity_rank(vehicle, spot.kind)
                        && !spot.out_of_service
                        && booked.is_free(interval)
                    {
                        prop_assert!(chosen <= rank);
                    }
                }
            }
        }

        #[test]
        fn timelines_stay_sorted_and_disjoint(
            intervals in proptest::collection::vec(interval_strategy(), 0..20),
            more in proptest::collection::vec(interval_strategy(), 0..20),
            probe in interval_strategy(),
        ) {
            let mut timeline = Timeline::from_intervals(intervals.clone());
            for interval in more {
                let free = timeline.is_free(interval);
                prop_assert_eq!(free, timeline.intervals().iter().all(|busy| !busy.overlaps(interval)));
                prop_assert_eq!(timeline.insert(interval).is_ok(), free);
            }
            for pair in timeline.intervals().windows(2) {
                prop_assert!(pair[0].end() <= pair[1].start());
            }
            // Every original second is still busy.
            for interval in &intervals {
                prop_assert!(!timeline.is_free(*interval));
            }
            let naive: i64 = timeline.intervals().iter().map(|busy| busy.overlap_s(probe)).sum();
            prop_assert_eq!(timeline.busy_s_within(probe), naive);
            if let Some(gap) = timeline.gap_around(probe) {
                prop_assert_eq!(naive, 0);
                prop_assert!(gap.prev_end.is_none_or(|end| end <= probe.start()));
                prop_assert!(gap.next_start.is_none_or(|start| start >= probe.end()));
                // The neighbours are the closest busy intervals.
                for busy in timeline.intervals() {
                    if busy.end() <= probe.start() {
                        prop_assert!(gap.prev_end.is_some_and(|end| busy.end() <= end));
                    } else {
                        prop_assert!(gap.next_start.is_some_and(|start| busy.start() >= start));
                    }
                }
            } else {
                prop_assert!(naive > 0);
            }
        }
    }
}
