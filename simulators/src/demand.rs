//! The demand model: when cars arrive, how long they stay. Pure, no I/O, deterministic.
//!
//! The figures are the customer's (capacity section of the requirements):
//!
//! - a 300-spot garage, with peak hours 07-09, 12-14 and 17-19 when it is (nearly) full;
//! - 50 % use in the 18 off-peak hours;
//! - an average stay of about 2 hours;
//! - which the customer adds up to about 2,250 cars a day.
//!
//! [`OccupancyProfile`] turns the time of day into a target occupancy share: the peak share
//! (97 % by default) inside each peak window, the off-peak share (50 %) elsewhere, with a linear
//! ramp before each peak so that the garage is full when the peak starts. The off-peak share is
//! flat round the clock, nights included, because that is what the customer's figures say; a
//! real garage is emptier at night, and [`OccupancyProfile::night`] can model that.
//!
//! [`DemandModel::plan`] decides one tick: every car whose stay is over leaves, and new cars
//! arrive as a Poisson process whose rate holds the target by Little's law (occupied spots =
//! arrival rate x mean stay) plus a correction that pulls the occupancy towards the target
//! within [`DemandConfig::follow_s`]. Stays are Erlang distributed around the mean (shape
//! [`DemandConfig::stay_shape`]; 3 gives a standard deviation of about 70 minutes for a 2-hour
//! mean). The occupancy after a peak falls by cars leaving, not by a sudden exodus.
//!
//! Time is simulated seconds as `f64`; the time of day is that value modulo 86,400, so a
//! simulation can start at any time of day and run for several days. The random numbers come
//! from a seeded [`StdRng`]: the same seed and the same inputs give the same plans (for a given
//! version of the `rand` crate).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::error::SimError;

/// Seconds in a day.
pub const DAY_S: f64 = 86_400.0;

/// The target share of occupied spots by time of day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OccupancyProfile {
    /// Peak windows as `(start, end)` in hours since midnight, `start < end`.
    pub peaks: Vec<(f64, f64)>,
    /// Target share inside a peak window, in `0..=1`.
    pub peak_share: f64,
    /// Target share outside the peak windows, in `0..=1`.
    pub offpeak_share: f64,
    /// How long before each peak the target starts rising from the off-peak share, in seconds.
    pub ramp_s: f64,
    /// An optional quieter night: `(start hour, end hour, share)`, the window may wrap past
    /// midnight (e.g. `(22.0, 6.0, 0.1)`). `None` (the default) keeps the off-peak share.
    pub night: Option<(f64, f64, f64)>,
}

impl OccupancyProfile {
    /// The customer's profile: 97 % at 07-09, 12-14 and 17-19, 50 % otherwise, a 45-minute
    /// ramp before each peak, no separate night.
    pub fn customer() -> Self {
        Self {
            peaks: vec![(7.0, 9.0), (12.0, 14.0), (17.0, 19.0)],
            peak_share: 0.97,
            offpeak_share: 0.5,
            ramp_s: 45.0 * 60.0,
            night: None,
        }
    }

    /// Whether `sim_s` falls in a peak window.
    pub fn is_peak(&self, sim_s: f64) -> bool {
        let hour = hour_of_day(sim_s);
        self.peaks
            .iter()
            .any(|&(start, end)| hour >= start && hour < end)
    }

    /// The target occupancy share at simulated time `sim_s`, in `0..=1`.
    pub fn target_share(&self, sim_s: f64) -> f64 {
        let hour = hour_of_day(sim_s);
        let mut base = self.offpeak_share;
        if let Some((start, end, share)) = self.night {
            let inside = if start <= end {
                hour >= start && hour < end
            } else {
                hour >= start || hour < end
            };
            if inside {
                base = share;
            }
        }
        let ramp_h = self.ramp_s / 3600.0;
        let mut share = base;
        for &(start, end) in &self.peaks {
            let level = if hour >= start && hour < end {
                self.peak_share
            } else if ramp_h > 0.0 && hour >= start - ramp_h && hour < start {
                base + (self.peak_share - base) * (hour - (start - ramp_h)) / ramp_h
            } else {
                continue;
            };
            share = share.max(level);
        }
        share.clamp(0.0, 1.0)
    }

    fn validate(&self) -> Result<(), SimError> {
        let share_ok = |share: f64| share.is_finite() && (0.0..=1.0).contains(&share);
        if !share_ok(self.peak_share) || !share_ok(self.offpeak_share) {
            return Err(SimError::config("occupancy shares must be within 0..=1"));
        }
        if !self.ramp_s.is_finite() || self.ramp_s < 0.0 {
            return Err(SimError::config(
                "the ramp must be a non-negative number of seconds",
            ));
        }
        for &(start, end) in &self.peaks {
            if !(start.is_finite() && end.is_finite() && 0.0 <= start && start < end && end <= 24.0)
            {
                return Err(SimError::config(format!(
                    "peak window {start}-{end} is not within 0..=24 hours"
                )));
            }
        }
        if let Some((start, end, share)) = self.night {
            let hour_ok = |hour: f64| hour.is_finite() && (0.0..=24.0).contains(&hour);
            if !hour_ok(start) || !hour_ok(end) || !share_ok(share) {
                return Err(SimError::config("the night window is out of range"));
            }
        }
        Ok(())
    }
}

impl Default for OccupancyProfile {
    fn default() -> Self {
        Self::customer()
    }
}

/// The hour of day (`0.0..24.0`) of a simulated time.
pub fn hour_of_day(sim_s: f64) -> f64 {
    sim_s.rem_euclid(DAY_S) / 3600.0
}

/// Everything the demand model needs besides its seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemandConfig {
    /// Target occupancy by time of day.
    pub profile: OccupancyProfile,
    /// Mean stay of a car, in seconds (customer: 2 hours).
    pub mean_stay_s: f64,
    /// Shape of the Erlang distribution of stays (1 = exponential; higher = tighter round the
    /// mean).
    pub stay_shape: u32,
    /// How quickly arrivals pull the occupancy towards the target, in seconds: a deficit of
    /// `d` spots adds `d / follow_s` arrivals per second.
    pub follow_s: f64,
}

impl Default for DemandConfig {
    fn default() -> Self {
        Self {
            profile: OccupancyProfile::customer(),
            mean_stay_s: 2.0 * 3600.0,
            stay_shape: 3,
            follow_s: 15.0 * 60.0,
        }
    }
}

impl DemandConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), SimError> {
        self.profile.validate()?;
        if !(self.mean_stay_s.is_finite() && self.mean_stay_s >= 1.0) {
            return Err(SimError::config(
                "the mean stay must be at least one second",
            ));
        }
        if self.stay_shape == 0 || self.stay_shape > 100 {
            return Err(SimError::config("the stay shape must be within 1..=100"));
        }
        if !(self.follow_s.is_finite() && self.follow_s >= 1.0) {
            return Err(SimError::config("follow_s must be at least one second"));
        }
        Ok(())
    }
}

/// One spot as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spot {
    /// Nobody there.
    Free,
    /// A car that leaves at the given simulated time.
    Occupied {
        /// Simulated second at which the car leaves.
        until_s: f64,
    },
}

impl Spot {
    /// Whether a car is there.
    pub fn is_occupied(&self) -> bool {
        matches!(self, Spot::Occupied { .. })
    }
}

/// A car that arrives in this tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Index of the spot it takes (free before the tick).
    pub spot: usize,
    /// Simulated second at which it will leave.
    pub until_s: f64,
}

/// What happens in one tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickPlan {
    /// Indices of the spots whose car leaves (occupied before the tick).
    pub departures: Vec<usize>,
    /// Cars that arrive, each on a distinct spot that was free before the tick.
    pub arrivals: Vec<Arrival>,
    /// Cars that wanted to arrive but found the lot full.
    pub turned_away: u32,
}

impl TickPlan {
    /// Applies the plan to the spots it was made for.
    pub fn apply(&self, spots: &mut [Spot]) {
        for &index in &self.departures {
            if let Some(spot) = spots.get_mut(index) {
                *spot = Spot::Free;
            }
        }
        for arrival in &self.arrivals {
            if let Some(spot) = spots.get_mut(arrival.spot) {
                *spot = Spot::Occupied {
                    until_s: arrival.until_s,
                };
            }
        }
    }
}

/// Seeded demand for one lot.
#[derive(Debug, Clone)]
pub struct DemandModel {
    config: DemandConfig,
    rng: StdRng,
}

impl DemandModel {
    /// A model with its own random stream.
    pub fn new(config: DemandConfig, seed: u64) -> Result<Self, SimError> {
        config.validate()?;
        Ok(Self {
            config,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DemandConfig {
        &self.config
    }

    /// The target occupancy share at `sim_s`.
    pub fn target_share(&self, sim_s: f64) -> f64 {
        self.config.profile.target_share(sim_s)
    }

    /// Draws one stay, in seconds (Erlang with the configured shape and mean).
    pub fn draw_stay_s(&mut self) -> f64 {
        let shape = self.config.stay_shape;
        let scale = self.config.mean_stay_s / f64::from(shape);
        let mut total = 0.0;
        for _ in 0..shape {
            // 1 - U lies in (0, 1], so the logarithm is finite.
            let u: f64 = self.rng.r#gen();
            total += -(1.0 - u).ln() * scale;
        }
        total
    }

    /// `n` spots as they could be at `sim_s`: the target share of them occupied (chosen at
    /// random), each car with a fresh stay ahead of it.
    pub fn initial_spots(&mut self, n: usize, sim_s: f64) -> Vec<Spot> {
        let mut spots = vec![Spot::Free; n];
        let occupied = (self.target_share(sim_s) * n as f64).round() as usize;
        let chosen = self.choose(&(0..n).collect::<Vec<_>>(), occupied.min(n));
        for index in chosen {
            // Cars already parked have been there a while: give them part of a stay.
            let u: f64 = self.rng.r#gen();
            let remaining = self.draw_stay_s() * u.max(0.05);
            spots[index] = Spot::Occupied {
                until_s: sim_s + remaining,
            };
        }
        spots
    }

    /// Decides the tick that ends at simulated time `now_s` and lasted `dt_s` seconds: which
    /// cars leave (those whose stay ends at or before `now_s`) and which arrive (on spots that
    /// were free before the tick; a spot freed in this tick is taken again at the next one at
    /// the earliest). `spots` is left untouched; see [`TickPlan::apply`].
    pub fn plan(&mut self, now_s: f64, dt_s: f64, spots: &[Spot]) -> TickPlan {
        let mut plan = TickPlan::default();
        let mut free = Vec::new();
        for (index, spot) in spots.iter().enumerate() {
            match *spot {
                Spot::Occupied { until_s } if until_s <= now_s => plan.departures.push(index),
                Spot::Occupied { .. } => {}
                Spot::Free => free.push(index),
            }
        }
        let dt_s = if dt_s.is_finite() { dt_s.max(0.0) } else { 0.0 };
        if spots.is_empty() || dt_s == 0.0 {
            return plan;
        }
        let remaining = spots.len() - free.len() - plan.departures.len();
        let wanted = self.arrivals(now_s, dt_s, spots.len(), remaining);
        let taken = wanted.min(free.len() as u64) as usize;
        plan.turned_away = u32::try_from(wanted - taken as u64).unwrap_or(u32::MAX);
        for spot in self.choose(&free, taken) {
            let until_s = now_s + self.draw_stay_s();
            plan.arrivals.push(Arrival { spot, until_s });
        }
        plan
    }

    /// How many cars want to arrive in the tick that ends at `now_s` and lasted `dt_s`
    /// seconds, at a lot of `capacity` spots of which `present` are taken (or promised to cars
    /// on their way in): a Poisson draw at the rate that holds the target occupancy by
    /// Little's law, plus the pull towards it. [`plan`](Self::plan) draws its arrivals the
    /// same way; the gate simulator, where the platform chooses the spots, uses this alone.
    pub fn arrivals(&mut self, now_s: f64, dt_s: f64, capacity: usize, present: usize) -> u64 {
        if capacity == 0 || !dt_s.is_finite() || dt_s <= 0.0 {
            return 0;
        }
        let target = self.target_share(now_s) * capacity as f64;
        let rate = (target / self.config.mean_stay_s
            + (target - present as f64) / self.config.follow_s)
            .max(0.0);
        self.poisson(rate * dt_s)
    }

    /// `count` distinct elements of `from`, in random order (partial Fisher-Yates).
    fn choose(&mut self, from: &[usize], count: usize) -> Vec<usize> {
        let mut pool = from.to_vec();
        let count = count.min(pool.len());
        for i in 0..count {
            let j = self.rng.gen_range(i..pool.len());
            pool.swap(i, j);
        }
        pool.truncate(count);
        pool
    }

    /// A Poisson draw: Knuth's product method for small means, a rounded normal above.
    fn poisson(&mut self, mean: f64) -> u64 {
        if !mean.is_finite() || mean <= 0.0 {
            return 0;
        }
        if mean < 30.0 {
            let limit = (-mean).exp();
            let mut product: f64 = self.rng.r#gen();
            let mut count = 0;
            while product > limit {
                count += 1;
                product *= self.rng.r#gen::<f64>();
            }
            return count;
        }
        // Box-Muller.
        let u1: f64 = self.rng.r#gen();
        let u2: f64 = self.rng.r#gen();
        let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (mean + mean.sqrt() * z).round().max(0.0) as u64
    }
}

/// Totals of a simulated stretch of time for one lot; see [`simulate`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DaySummary {
    /// Cars that arrived.
    pub arrivals: u64,
    /// Cars that left.
    pub departures: u64,
    /// Cars that found the lot full.
    pub turned_away: u64,
    /// Mean occupancy share over the ticks inside peak windows.
    pub peak_occupancy: f64,
    /// Mean occupancy share over the other ticks.
    pub offpeak_occupancy: f64,
    /// The highest occupancy share seen.
    pub max_occupancy: f64,
}

/// Runs the model without any I/O over `duration_s` simulated seconds from `start_s`, in ticks
/// of `tick_s`, for a lot of `spots` spots; used by the tests and for quick what-ifs.
pub fn simulate(
    model: &mut DemandModel,
    spots: usize,
    start_s: f64,
    duration_s: f64,
    tick_s: f64,
) -> DaySummary {
    let mut summary = DaySummary::default();
    let positive = |value: f64| value.is_finite() && value > 0.0;
    if spots == 0 || !positive(tick_s) || !positive(duration_s) {
        return summary;
    }
    let mut lot = model.initial_spots(spots, start_s);
    let ticks = (duration_s / tick_s).ceil() as u64;
    let (mut peak_sum, mut peak_n, mut off_sum, mut off_n) = (0.0, 0u64, 0.0, 0u64);
    for tick in 1..=ticks {
        let now = start_s + tick as f64 * tick_s;
        let plan = model.plan(now, tick_s, &lot);
        plan.apply(&mut lot);
        summary.arrivals += plan.arrivals.len() as u64;
        summary.departures += plan.departures.len() as u64;
        summary.turned_away += u64::from(plan.turned_away);
        let share = lot.iter().filter(|spot| spot.is_occupied()).count() as f64 / spots as f64;
        summary.max_occupancy = summary.max_occupancy.max(share);
        if model.config().profile.is_peak(now) {
            peak_sum += share;
            peak_n += 1;
        } else {
            off_sum += share;
            off_n += 1;
        }
    }
    summary.peak_occupancy = if peak_n > 0 {
        peak_sum / peak_n as f64
    } else {
        0.0
    };
    summary.offpeak_occupancy = if off_n > 0 {
        off_sum / off_n as f64
    } else {
        0.0
    };
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model(seed: u64) -> DemandModel {
        DemandModel::new(DemandConfig::default(), seed).unwrap()
    }

    #[test]
    fn the_profile_follows_the_customer_hours() {
        let profile = OccupancyProfile::customer();
        let at = |hour: f64| profile.target_share(hour * 3600.0);
        for hour in [7.0, 8.5, 12.0, 13.9, 17.0, 18.99] {
            assert_eq!(at(hour), 0.97, "{hour}");
            assert!(profile.is_peak(hour * 3600.0));
        }
        for hour in [0.0, 3.0, 5.0, 9.0, 10.5, 14.0, 15.0, 19.0, 23.9] {
            assert_eq!(at(hour), 0.5, "{hour}");
            assert!(!profile.is_peak(hour * 3600.0));
        }
        // Rising before the morning peak, and again on the next day.
        assert!(at(6.5) > 0.5 && at(6.5) < 0.97);
        assert_eq!(at(24.0 + 8.0), 0.97);
        assert_eq!(at(-16.0), 0.97);
    }

    #[test]
    fn an_optional_night_wraps_past_midnight() {
        let profile = OccupancyProfile {
            night: Some((22.0, 6.0, 0.1)),
            ..OccupancyProfile::customer()
        };
        assert_eq!(profile.target_share(23.0 * 3600.0), 0.1);
        assert_eq!(profile.target_share(2.0 * 3600.0), 0.1);
        assert_eq!(profile.target_share(10.0 * 3600.0), 0.5);
        assert_eq!(profile.target_share(8.0 * 3600.0), 0.97);
    }

    #[test]
    fn stays_average_two_hours() {
        let mut model = model(7);
        let n = 20_000;
        let mean = (0..n).map(|_| model.draw_stay_s()).sum::<f64>() / f64::from(n);
        assert!((mean - 7200.0).abs() < 150.0, "mean stay {mean}");
    }

    #[test]
    fn a_day_of_300_spots_matches_the_customer_figures() {
        for seed in 0..5 {
            let mut model = model(seed);
            let day = simulate(&mut model, 300, 0.0, DAY_S, 60.0);
            assert!(
                (1_500..=3_000).contains(&day.arrivals),
                "seed {seed}: {} arrivals",
                day.arrivals
            );
            assert!(
                day.peak_occupancy > day.offpeak_occupancy + 0.25,
                "seed {seed}: {day:?}"
            );
            assert!(day.peak_occupancy > 0.85, "seed {seed}: {day:?}");
            assert!(
                (0.4..0.7).contains(&day.offpeak_occupancy),
                "seed {seed}: {day:?}"
            );
            assert!(day.max_occupancy <= 1.0);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_day() {
        let a = simulate(&mut model(42), 300, 5.0 * 3600.0, DAY_S, 30.0);
        let b = simulate(&mut model(42), 300, 5.0 * 3600.0, DAY_S, 30.0);
        let c = simulate(&mut model(43), 300, 5.0 * 3600.0, DAY_S, 30.0);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_full_lot_turns_cars_away() {
        let mut model = model(1);
        let spots = vec![Spot::Occupied { until_s: 1e9 }; 10];
        // A long tick at the peak wants cars that cannot park.
        let plan = model.plan(8.0 * 3600.0, 3600.0, &spots);
        assert!(plan.arrivals.is_empty());
        assert!(plan.departures.is_empty());
        let empty = vec![Spot::Free; 10];
        let plan = model.plan(8.0 * 3600.0, 6.0 * 3600.0, &empty);
        assert_eq!(plan.arrivals.len(), 10);
        assert!(plan.turned_away > 0);
    }

    #[test]
    fn bad_configurations_are_refused() {
        let bad = [
            DemandConfig {
                mean_stay_s: 0.0,
                ..DemandConfig::default()
            },
            DemandConfig {
                stay_shape: 0,
                ..DemandConfig::default()
            },
            DemandConfig {
                profile: OccupancyProfile {
                    peak_share: 1.5,
                    ..OccupancyProfile::customer()
                },
                ..DemandConfig::default()
            },
            DemandConfig {
                profile: OccupancyProfile {
                    peaks: vec![(9.0, 7.0)],
                    ..OccupancyProfile::customer()
                },
                ..DemandConfig::default()
            },
        ];
        for config in bad {
            assert!(DemandModel::new(config, 0).is_err());
        }
    }

    fn spots_strategy() -> impl Strategy<Value = Vec<Spot>> {
        proptest::collection::vec(
            prop_oneof![
                Just(Spot::Free),
                (0.0f64..200_000.0).prop_map(|until_s| Spot::Occupied { until_s }),
            ],
            0..400,
        )
    }

    proptest! {
        #[test]
        fn plans_are_consistent(
            seed: u64,
            spots in spots_strategy(),
            now_s in 0.0f64..200_000.0,
            dt_s in 0.0f64..7_200.0,
        ) {
            let mut model = model(seed);
            let plan = model.plan(now_s, dt_s, &spots);
            let mut seen = std::collections::HashSet::new();
            for &index in &plan.departures {
                prop_assert!(seen.insert(index));
                match spots[index] {
                    Spot::Occupied { until_s } => prop_assert!(until_s <= now_s),
                    Spot::Free => prop_assert!(false, "departure from a free spot"),
                }
            }
            for arrival in &plan.arrivals {
                prop_assert!(seen.insert(arrival.spot), "spot used twice");
                prop_assert_eq!(spots[arrival.spot], Spot::Free);
                prop_assert!(arrival.until_s > now_s);
            }
            // Every car whose time is up leaves.
            let due = spots
                .iter()
                .filter(|spot| matches!(spot, Spot::Occupied { until_s } if *until_s <= now_s))
                .count();
            prop_assert_eq!(plan.departures.len(), due);
            let mut after = spots.clone();
            plan.apply(&mut after);
            let occupied = after.iter().filter(|spot| spot.is_occupied()).count();
            prop_assert_eq!(
                occupied,
                spots.iter().filter(|spot| spot.is_occupied()).count() - due
                    + plan.arrivals.len()
            );
        }

        #[test]
        fn plans_are_deterministic(seed: u64, spots in spots_strategy(), now_s in 0.0f64..1e6) {
            let a = model(seed).plan(now_s, 60.0, &spots);
            let b = model(seed).plan(now_s, 60.0, &spots);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn the_target_stays_between_the_levels(sim_s in -1e7f64..1e7) {
            let profile = OccupancyProfile::customer();
            let share = profile.target_share(sim_s);
            prop_assert!((profile.offpeak_share..=profile.peak_share).contains(&share));
        }
    }
}
