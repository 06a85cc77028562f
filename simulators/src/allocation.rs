//! Reservation allocation, simulated: how many advance bookings each allocation policy of
//! [`parkd_core::allocation`] accepts in the customer's garage. Pure, no I/O, deterministic.
//!
//! One *run* is a week (by default) of reservation requests against [`demo_garage`]`(_, 3,
//! 100)` for one seed, one demand level and one policy. Every policy of a seed and level sees
//! exactly the same requests, so their differences are paired; the report gives medians over
//! the seeds.
//!
//! How requests are made ([`generate_requests`]):
//!
//! - **When cars come and how long they stay** is the customer's demand model
//!   ([`crate::demand`]): 97 % occupancy at 07-09, 12-14 and 17-19, 50 % otherwise, Erlang-3
//!   stays of 2 h mean (standard deviation about 70 min). The model is run on a virtual garage
//!   with no kinds and no allocation (any car takes any free bay), scaled to the demand level:
//!   `300 x level / 2,450` bays. Every car it lets in, every car it turns away and every car
//!   parked at the start is one request, so the requests follow the curve; 2,450 a day
//!   ([`CURVE_PER_DAY`]) is the customer's curve on 300 bays, full at the peaks.
//! - **Times on a grid**: booking screens offer quarter hours, so start and end are rounded to
//!   [`AllocSimConfig::slot_s`] (15 min; a stay is at least one slot).
//! - **Vehicles** by [`VEHICLE_MIX`]; the vehicle does not change the stay.
//! - **Lead time** (how long before arrival the booking is made) by [`LeadTimes`]; requests are
//!   allocated online in booking order, each seeing only the bookings made before it.
//!
//! Not modelled: cancellations, no-shows, overstays, walk-in traffic next to reservations,
//! drivers who retry another time after a refusal.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use parkd_core::allocation::{Candidate, Interval, Policy, Request, Timeline, Weights, allocate};
use parkd_core::garage::{Lot, demo_garage};
use parkd_core::ids::LotId;
use parkd_core::vehicle::{SpotKind, VehicleType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::demand::{DAY_S, DemandConfig, DemandModel, OccupancyProfile, Spot as DemandSpot};
use crate::error::SimError;

/// Spots of the customer's garage.
pub const CUSTOMER_SPOTS: u32 = 300;
/// Requests a day the customer's curve makes on [`CUSTOMER_SPOTS`] bays: the demand model's
/// arrivals (about 2,380) plus the cars it turns away at the peaks (about 60). The customer
/// rounds the same curve to 2,250 cars a day.
pub const CURVE_PER_DAY: f64 = 2_450.0;

/// Share of requests per vehicle type (sums to 1). Assumptions, not measurements; see
/// `docs/allocation.md`. Deliberately close to the garage's own mix of bays, so that no kind
/// is structurally short and the policies, not the layout, make the difference.
pub const VEHICLE_MIX: [(VehicleType, f64); 6] = [
    (VehicleType::Motorcycle, 0.04),
    (VehicleType::Compact, 0.15),
    (VehicleType::Car, 0.635),
    (VehicleType::Van, 0.05),
    (VehicleType::Ev, 0.10),
    (VehicleType::Accessible, 0.025),
];

/// How far ahead drivers book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadTimes {
    /// The default mix: 35 % on the way (5 to 60 min ahead), 40 % the same day or the evening
    /// before (1 to 18 h), 25 % planned (18 h to 7 days); uniform within each.
    Mixed,
    /// Everybody books on arrival: booking order is arrival order.
    None,
    /// Everybody books 1 to 7 days ahead.
    Advance,
}

impl std::str::FromStr for LeadTimes {
    type Err = SimError;
    fn from_str(raw: &str) -> Result<Self, SimError> {
        match raw {
            "mixed" => Ok(LeadTimes::Mixed),
            "none" => Ok(LeadTimes::None),
            "advance" => Ok(LeadTimes::Advance),
            _ => Err(SimError::config(format!(
                "{raw:?} is not a lead-time model (mixed, none, advance)"
            ))),
        }
    }
}

impl LeadTimes {
    fn name(self) -> &'static str {
        match self {
            LeadTimes::Mixed => "mixed",
            LeadTimes::None => "none",
            LeadTimes::Advance => "advance",
        }
    }

    fn draw_s(self, rng: &mut StdRng) -> f64 {
        const H: f64 = 3600.0;
        match self {
            LeadTimes::None => 0.0,
            LeadTimes::Advance => rng.gen_range(DAY_S..7.0 * DAY_S),
            LeadTimes::Mixed => {
                let u: f64 = rng.r#gen();
                if u < 0.35 {
                    rng.gen_range(300.0..H)
                } else if u < 0.75 {
                    rng.gen_range(H..18.0 * H)
                } else {
                    rng.gen_range(18.0 * H..7.0 * DAY_S)
                }
            }
        }
    }
}

/// Everything a simulation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocSimConfig {
    /// Simulated days per run.
    pub days: u32,
    /// One run per seed and level; the report gives medians.
    pub seeds: Vec<u64>,
    /// Demand levels, nominal requests per day; the first is reported in full.
    pub levels: Vec<f64>,
    /// Booking grid, seconds (1 = none).
    pub slot_s: i64,
    /// How far ahead drivers book.
    pub leads: LeadTimes,
}

impl Default for AllocSimConfig {
    fn default() -> Self {
        Self {
            days: 7,
            seeds: (1..=11).collect(),
            levels: vec![CURVE_PER_DAY, 2_000.0, 3_000.0, 4_000.0],
            slot_s: 15 * 60,
            leads: LeadTimes::Mixed,
        }
    }
}

impl AllocSimConfig {
    fn validate(&self) -> Result<(), SimError> {
        if !(1..=365).contains(&self.days) {
            return Err(SimError::config("days must be within 1..=365"));
        }
        if self.seeds.is_empty() || self.seeds.len() > 1_000 {
            return Err(SimError::config("give 1 to 1,000 seeds"));
        }
        if self.levels.is_empty()
            || self
                .levels
                .iter()
                .any(|level| !(level.is_finite() && (1.0..=1_000_000.0).contains(level)))
        {
            return Err(SimError::config(
                "demand levels must be 1 to 1,000,000 requests a day",
            ));
        }
        if !(1..=86_400).contains(&self.slot_s) {
            return Err(SimError::config("the slot must be 1 s to 1 day"));
        }
        Ok(())
    }
}

/// One reservation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimRequest {
    /// When the driver books (simulated seconds; day 1 starts at 0).
    pub booked_at: i64,
    /// The vehicle.
    pub vehicle: VehicleType,
    /// The stay.
    pub interval: Interval,
}

/// A week (or `days`) of requests at `per_day` nominal requests a day, in booking order.
pub fn generate_requests(
    per_day: f64,
    days: u32,
    slot_s: i64,
    leads: LeadTimes,
    seed: u64,
) -> Result<Vec<SimRequest>, SimError> {
    const TICK_S: f64 = 60.0;
    let bays = (f64::from(CUSTOMER_SPOTS) * per_day / CURVE_PER_DAY)
        .round()
        .max(1.0) as usize;
    let mut model = DemandModel::new(DemandConfig::default(), seed)?;
    // A stream of its own, so that the arrivals are exactly the demand model's.
    let mut rng = StdRng::seed_from_u64(seed ^ 0xA110_CA7E_D5EE_D000);
    let mut stays: Vec<(f64, f64)> = Vec::new();
    let mut garage = model.initial_spots(bays, 0.0);
    for spot in &garage {
        if let DemandSpot::Occupied { until_s } = *spot {
            stays.push((0.0, until_s));
        }
    }
    let ticks = u64::from(days) * (DAY_S / TICK_S) as u64;
    for tick in 1..=ticks {
        let now = tick as f64 * TICK_S;
        let plan = model.plan(now, TICK_S, &garage);
        for arrival in &plan.arrivals {
            let start = now - rng.r#gen::<f64>() * TICK_S;
            stays.push((start, start + (arrival.until_s - now)));
        }
        for _ in 0..plan.turned_away {
            let start = now - rng.r#gen::<f64>() * TICK_S;
            stays.push((start, start + model.draw_stay_s()));
        }
        plan.apply(&mut garage);
    }
    let slot = slot_s.max(1);
    let on_grid = |t: f64| ((t / slot as f64).round() as i64) * slot;
    let mut requests = Vec::with_capacity(stays.len());
    for (start, end) in stays {
        let start_q = on_grid(start);
        let end_q = on_grid(end).max(start_q + slot);
        let interval = Interval::new(start_q, end_q)
            .map_err(|error| SimError::config(format!("generated an empty stay: {error}")))?;
        let vehicle = draw_vehicle(&mut rng);
        let lead = leads.draw_s(&mut rng).round() as i64;
        requests.push(SimRequest {
            booked_at: start_q - lead,
            vehicle,
            interval,
        });
    }
    // Booking order; equal times keep the order of arrival.
    requests.sort_by_key(|request| (request.booked_at, request.interval.start()));
    Ok(requests)
}

fn draw_vehicle(rng: &mut StdRng) -> VehicleType {
    let mut u: f64 = rng.r#gen();
    for (vehicle, share) in VEHICLE_MIX {
        if u < share {
            return vehicle;
        }
        u -= share;
    }
    VehicleType::Car
}

/// What one run of one policy did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStats {
    /// Requests by [`VehicleType::index`].
    pub requested: [u64; 6],
    /// Accepted requests by [`VehicleType::index`].
    pub accepted: [u64; 6],
    /// EVs that got an EV bay (a charger).
    pub ev_on_charger: u64,
    /// Permit holders that got an accessible bay.
    pub accessible_on_accessible: u64,
    /// Sum of the walks of accepted requests, metres.
    pub walk_m: f64,
    /// Booked spot-seconds inside the simulated days.
    pub booked_s: i64,
    /// Spot-seconds in service inside the simulated days.
    pub available_s: i64,
    /// Booked spot-seconds inside the peak windows.
    pub peak_booked_s: i64,
    /// Spot-seconds in service inside the peak windows.
    pub peak_available_s: i64,
    /// Allocations that collided with a booking (a bug if ever above 0).
    pub double_bookings: u64,
}

impl RunStats {
    fn total(counts: &[u64; 6]) -> u64 {
        counts.iter().sum()
    }
}

/// Allocates `requests` (in booking order) on `lot` with `policy`, over `days` days from 0.
pub fn run_policy(lot: &Lot, requests: &[SimRequest], policy: &Policy, days: u32) -> RunStats {
    let mut timelines = vec![Timeline::new(); lot.spots.len()];
    let mut stats = RunStats::default();
    for sim in requests {
        let vehicle = sim.vehicle.index();
        stats.requested[vehicle] += 1;
        let mut request = Request::new(sim.vehicle, sim.interval);
        request.now = Some(sim.booked_at);
        let candidates = lot
            .spots
            .iter()
            .zip(&timelines)
            .map(|(spot, booked)| Candidate { spot, booked });
        let Ok(found) = allocate(candidates, &request, policy) else {
            continue;
        };
        let (index, kind, walk) = (found.index, found.spot.kind, found.spot.walk_m);
        let Some(timeline) = timelines.get_mut(index) else {
            stats.double_bookings += 1;
            continue;
        };
        if timeline.insert(sim.interval).is_err() {
            stats.double_bookings += 1;
            continue;
        }
        stats.accepted[vehicle] += 1;
        stats.walk_m += walk.unwrap_or(0.0);
        match (sim.vehicle, kind) {
            (VehicleType::Ev, SpotKind::Ev) => stats.ev_on_charger += 1,
            (VehicleType::Accessible, SpotKind::Accessible) => stats.accessible_on_accessible += 1,
            _ => {}
        }
    }
    let day_s = DAY_S as i64;
    let in_service = lot.spots.iter().filter(|spot| !spot.out_of_service).count() as i64;
    let peaks = OccupancyProfile::customer().peaks;
    for day in 0..i64::from(days) {
        let windows = std::iter::once((0.0, 24.0)).chain(peaks.iter().copied());
        for (n, (from_h, to_h)) in windows.enumerate() {
            let from = day * day_s + (from_h * 3600.0) as i64;
            let to = day * day_s + (to_h * 3600.0) as i64;
            let Ok(window) = Interval::new(from, to) else {
                continue;
            };
            let booked: i64 = lot
                .spots
                .iter()
                .zip(&timelines)
                .filter(|(spot, _)| !spot.out_of_service)
                .map(|(_, timeline)| timeline.busy_s_within(window))
                .sum();
            if n == 0 {
                stats.booked_s += booked;
                stats.available_s += in_service * window.len_s();
            } else {
                stats.peak_booked_s += booked;
                stats.peak_available_s += in_service * window.len_s();
            }
        }
    }
    stats
}

/// The most requests any policy could accept, even knowing every request in advance and
/// ignoring kinds except motorcycles (every other vehicle may use every other bay): an upper
/// bound for the table, not a policy.
///
/// Per group of interchangeable bays this is the maximum number of intervals schedulable on
/// `k` identical machines, which the greedy by end time computes exactly: take the requests
/// by end, give each the bay that became free last before it starts, refuse it if none is
/// free (Carlisle and Lloyd, 1995).
pub fn upper_bound(lot: &Lot, requests: &[SimRequest]) -> u64 {
    let in_service = |moto: bool| {
        lot.spots
            .iter()
            .filter(|spot| !spot.out_of_service && (spot.kind == SpotKind::Motorcycle) == moto)
            .count()
    };
    [true, false]
        .into_iter()
        .map(|moto| {
            let intervals = requests
                .iter()
                .filter(|request| (request.vehicle == VehicleType::Motorcycle) == moto)
                .map(|request| request.interval);
            max_schedulable(intervals, in_service(moto))
        })
        .sum()
}

/// The most of `intervals` that fit on `machines` identical machines.
pub fn max_schedulable(intervals: impl IntoIterator<Item = Interval>, machines: usize) -> u64 {
    let mut by_end: Vec<Interval> = intervals.into_iter().collect();
    by_end.sort_unstable_by_key(|interval| (interval.end(), interval.start()));
    // When each machine became free, as a multiset.
    let mut free_at: BTreeMap<i64, usize> = BTreeMap::new();
    if machines > 0 {
        free_at.insert(i64::MIN, machines);
    }
    let mut scheduled = 0;
    for interval in by_end {
        let Some((&at, _)) = free_at.range(..=interval.start()).next_back() else {
            continue;
        };
        if let Some(count) = free_at.get_mut(&at) {
            *count -= 1;
            if *count == 0 {
                free_at.remove(&at);
            }
        }
        *free_at.entry(interval.end()).or_insert(0) += 1;
        scheduled += 1;
    }
    scheduled
}

/// A policy with its name in the report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NamedPolicy {
    /// Short name.
    pub name: &'static str,
    /// The policy.
    pub policy: Policy,
}

/// The policies compared: the naive baseline, each half of ours alone, and ours.
pub fn policies() -> Vec<NamedPolicy> {
    let ours = Weights::default();
    vec![
        NamedPolicy {
            name: "first fit",
            policy: Policy::FirstFit,
        },
        NamedPolicy {
            name: "tiers only",
            policy: Policy::BestFit(Weights {
                fit: 0.0,
                walk_s_per_m: 0.0,
                ..ours
            }),
        },
        NamedPolicy {
            name: "best fit only",
            policy: Policy::BestFit(Weights {
                scarcity: false,
                ..ours
            }),
        },
        NamedPolicy {
            name: "ours, no walk",
            policy: Policy::BestFit(Weights {
                walk_s_per_m: 0.0,
                ..ours
            }),
        },
        NamedPolicy {
            name: "**ours**",
            policy: Policy::default(),
        },
    ]
}

/// The figures of one run, as reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Metrics {
    /// Requests per day.
    pub requests_per_day: f64,
    /// Accepted requests per day.
    pub accepted_per_day: f64,
    /// Accepted share of requests, percent.
    pub accepted_pct: f64,
    /// Refused requests per day.
    pub refused_per_day: f64,
    /// Refused per day by [`VehicleType::index`].
    pub refused_per_day_by_type: [f64; 6],
    /// Refused share of each vehicle type's requests, percent, by [`VehicleType::index`].
    pub refused_pct_by_type: [f64; 6],
    /// Share of EV requests that got a charger, percent.
    pub ev_charger_pct: f64,
    /// Share of accessible requests that got an accessible bay, percent.
    pub accessible_bay_pct: f64,
    /// Booked share of spot time, percent.
    pub utilisation_pct: f64,
    /// Booked share of spot time in the peak windows, percent.
    pub peak_utilisation_pct: f64,
    /// Mean walk of accepted requests, metres.
    pub walk_m: f64,
}

fn pct(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

impl Metrics {
    /// The figures of `stats` over `days` days.
    pub fn from_stats(stats: &RunStats, days: u32) -> Self {
        let days = f64::from(days.max(1));
        let requested = RunStats::total(&stats.requested) as f64;
        let accepted = RunStats::total(&stats.accepted) as f64;
        let mut refused_per_day_by_type = [0.0; 6];
        let mut refused_pct_by_type = [0.0; 6];
        for vehicle in VehicleType::ALL {
            let i = vehicle.index();
            let refused = (stats.requested[i] - stats.accepted[i]) as f64;
            refused_per_day_by_type[i] = refused / days;
            refused_pct_by_type[i] = pct(refused, stats.requested[i] as f64);
        }
        Self {
            requests_per_day: requested / days,
            accepted_per_day: accepted / days,
            accepted_pct: pct(accepted, requested),
            refused_per_day: (requested - accepted) / days,
            refused_per_day_by_type,
            refused_pct_by_type,
            ev_charger_pct: pct(
                stats.ev_on_charger as f64,
                stats.requested[VehicleType::Ev.index()] as f64,
            ),
            accessible_bay_pct: pct(
                stats.accessible_on_accessible as f64,
                stats.requested[VehicleType::Accessible.index()] as f64,
            ),
            utilisation_pct: pct(stats.booked_s as f64, stats.available_s as f64),
            peak_utilisation_pct: pct(stats.peak_booked_s as f64, stats.peak_available_s as f64),
            walk_m: if accepted > 0.0 {
                stats.walk_m / accepted
            } else {
                0.0
            },
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count); 0 if empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// One policy at one demand level: its figures on every seed.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyResult {
    /// The policy's name.
    pub name: &'static str,
    /// Figures per seed, in seed order.
    pub runs: Vec<Metrics>,
    /// Accepted per day minus the first fit's on the same requests, per seed.
    pub gain_per_day: Vec<f64>,
    /// Accepted per day minus "tiers only" on the same requests, per seed: what best fit adds.
    pub gain_over_tiers_per_day: Vec<f64>,
    /// Allocations that collided with a booking, over all seeds (must be 0).
    pub double_bookings: u64,
}

impl PolicyResult {
    /// The median of one figure over the seeds.
    pub fn median(&self, figure: impl Fn(&Metrics) -> f64) -> f64 {
        median(&self.runs.iter().map(figure).collect::<Vec<_>>())
    }
}

/// All policies at one demand level.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelResult {
    /// Nominal requests per day.
    pub level: f64,
    /// One entry per policy, in [`policies`] order.
    pub policies: Vec<PolicyResult>,
    /// Accepted per day of [`upper_bound`], per seed.
    pub bound_per_day: Vec<f64>,
    /// [`upper_bound`] as a share of the requests, percent, per seed.
    pub bound_pct: Vec<f64>,
    /// Accepted per day of [`upper_bound`] minus the first fit's, per seed.
    pub bound_gain_per_day: Vec<f64>,
}

/// A whole simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocReport {
    /// What was simulated.
    pub config: AllocSimConfig,
    /// One entry per demand level, in the configured order.
    pub levels: Vec<LevelResult>,
}

/// Runs every policy on every seed and level of `config`; `progress` hears of each level.
pub fn simulate(
    config: &AllocSimConfig,
    mut progress: impl FnMut(f64),
) -> Result<AllocReport, SimError> {
    config.validate()?;
    let lot_id = LotId::parse("sim").map_err(|source| SimError::InvalidId {
        value: "sim".into(),
        source,
    })?;
    let lot = demo_garage(lot_id, 3, CUSTOMER_SPOTS / 3);
    let named = policies();
    let mut levels = Vec::with_capacity(config.levels.len());
    for &level in &config.levels {
        progress(level);
        let mut results: Vec<PolicyResult> = named
            .iter()
            .map(|named| PolicyResult {
                name: named.name,
                runs: Vec::new(),
                gain_per_day: Vec::new(),
                gain_over_tiers_per_day: Vec::new(),
                double_bookings: 0,
            })
            .collect();
        let (mut bound_per_day, mut bound_pct, mut bound_gain_per_day) =
            (Vec::new(), Vec::new(), Vec::new());
        for &seed in &config.seeds {
            let requests =
                generate_requests(level, config.days, config.slot_s, config.leads, seed)?;
            let runs: Vec<(Metrics, u64)> = named
                .iter()
                .map(|named| {
                    let stats = run_policy(&lot, &requests, &named.policy, config.days);
                    (
                        Metrics::from_stats(&stats, config.days),
                        stats.double_bookings,
                    )
                })
                .collect();
            // policies() starts with first fit, then "tiers only".
            let first = runs.first().map_or(0.0, |(m, _)| m.accepted_per_day);
            let tiers = runs.get(1).map_or(0.0, |(m, _)| m.accepted_per_day);
            for ((metrics, doubles), result) in runs.into_iter().zip(&mut results) {
                result.double_bookings += doubles;
                result.gain_per_day.push(metrics.accepted_per_day - first);
                result
                    .gain_over_tiers_per_day
                    .push(metrics.accepted_per_day - tiers);
                result.runs.push(metrics);
            }
            let bound = upper_bound(&lot, &requests) as f64 / f64::from(config.days);
            bound_per_day.push(bound);
            bound_pct.push(pct(bound * f64::from(config.days), requests.len() as f64));
            bound_gain_per_day.push(bound - first);
        }
        levels.push(LevelResult {
            level,
            policies: results,
            bound_per_day,
            bound_pct,
            bound_gain_per_day,
        });
    }
    Ok(AllocReport {
        config: config.clone(),
        levels,
    })
}

fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// `median (min .. max)` of paired differences, `-` when all are 0 (the reference itself).
fn spread(values: &[f64]) -> String {
    let (lo, hi) = range(values);
    if lo == 0.0 && hi == 0.0 {
        "-".into()
    } else {
        format!("{:+.1} ({:+.1} .. {:+.1})", median(values), lo, hi)
    }
}

const BOUND: &str = "*upper bound* (offline, kinds relaxed)";

impl AllocReport {
    /// The report as markdown tables.
    pub fn to_markdown(&self) -> String {
        let config = &self.config;
        let mut out = String::new();
        let seeds = match (config.seeds.first(), config.seeds.last()) {
            (Some(first), Some(last)) if config.seeds.len() > 1 => format!("{first}..={last}"),
            (Some(first), _) => first.to_string(),
            _ => String::new(),
        };
        let grid = if config.slot_s == 1 {
            "no booking grid".to_string()
        } else {
            format!("{} min booking grid", config.slot_s as f64 / 60.0)
        };
        let _ = writeln!(
            out,
            "Demo garage (300 spots), {} simulated day(s) per run, seeds {seeds} ({} runs per \
             row, figures are medians over the seeds), {grid}, lead times `{}`. \"gain\" is \
             accepted requests per day minus the reference's on the same requests: median \
             (min .. max over the seeds).\n",
            config.days,
            config.seeds.len(),
            config.leads.name(),
        );
        let doubles: u64 = self
            .levels
            .iter()
            .flat_map(|level| &level.policies)
            .map(|policy| policy.double_bookings)
            .sum();
        if doubles > 0 {
            let _ = writeln!(out, "**{doubles} double bookings: the rule has a bug.**\n");
        }
        if let Some(first) = self.levels.first() {
            let title = if (first.level - CURVE_PER_DAY).abs() < 0.5 {
                format!("The customer's curve ({CURVE_PER_DAY:.0} requests/day nominal)")
            } else {
                format!("{:.0} requests/day (nominal)", first.level)
            };
            let _ = writeln!(
                out,
                "### {title}\n\n\
                 | policy | requests/day | accepted | gain/day vs first fit | gain/day vs tiers \
                 only | refused/day | refused/day: moto · compact · car · van · EV · \
                 accessible |\n|---|--:|--:|--:|--:|--:|--:|"
            );
            for result in &first.policies {
                let by_type: Vec<String> = VehicleType::ALL
                    .into_iter()
                    .map(|v| {
                        format!(
                            "{:.1}",
                            result.median(|m| m.refused_per_day_by_type[v.index()])
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.2} % | {} | {} | {:.1} | {} |",
                    result.name,
                    result.median(|m| m.requests_per_day),
                    result.median(|m| m.accepted_pct),
                    spread(&result.gain_per_day),
                    spread(&result.gain_over_tiers_per_day),
                    result.median(|m| m.refused_per_day),
                    by_type.join(" · "),
                );
            }
            let _ = writeln!(
                out,
                "| {BOUND} | | {:.2} % | {} | | | |",
                median(&first.bound_pct),
                spread(&first.bound_gain_per_day),
            );
            let _ = writeln!(
                out,
                "\n| policy | van refused | EV refused | EV got a charger | accessible refused | \
                 accessible got an accessible bay | utilisation (24 h) | utilisation (peaks) | \
                 mean walk |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|"
            );
            for result in &first.policies {
                let refused = |v: VehicleType| result.median(|m| m.refused_pct_by_type[v.index()]);
                let _ = writeln!(
                    out,
                    "| {} | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {:.1} % \
                     | {:.0} m |",
                    result.name,
                    refused(VehicleType::Van),
                    refused(VehicleType::Ev),
                    result.median(|m| m.ev_charger_pct),
                    refused(VehicleType::Accessible),
                    result.median(|m| m.accessible_bay_pct),
                    result.median(|m| m.utilisation_pct),
                    result.median(|m| m.peak_utilisation_pct),
                    result.median(|m| m.walk_m),
                );
            }
        }
        let mut sweep: Vec<&LevelResult> = self.levels.iter().collect();
        sweep.sort_by(|a, b| a.level.total_cmp(&b.level));
        let _ = writeln!(
            out,
            "\n### Demand sweep\n\n\
             | nominal/day | policy | requests/day | accepted | gain/day vs first fit | \
             gain/day vs tiers only | van refused | EV got a charger | accessible got an \
             accessible bay | utilisation (peaks) |\n|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for level in sweep {
            for result in &level.policies {
                let _ = writeln!(
                    out,
                    "| {:.0} | {} | {:.0} | {:.2} % | {} | {} | {:.1} % | {:.1} % | {:.1} % | \
                     {:.1} % |",
                    level.level,
                    result.name,
                    result.median(|m| m.requests_per_day),
                    result.median(|m| m.accepted_pct),
                    spread(&result.gain_per_day),
                    spread(&result.gain_over_tiers_per_day),
                    result.median(|m| m.refused_pct_by_type[VehicleType::Van.index()]),
                    result.median(|m| m.ev_charger_pct),
                    result.median(|m| m.accessible_bay_pct),
                    result.median(|m| m.peak_utilisation_pct),
                );
            }
            let _ = writeln!(
                out,
                "| {:.0} | {BOUND} | | {:.2} % | {} | | | | | |",
                level.level,
                median(&level.bound_pct),
                spread(&level.bound_gain_per_day),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_adds_up() {
        let total: f64 = VEHICLE_MIX.iter().map(|(_, share)| share).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }

    #[test]
    fn requests_follow_the_customer_figures() {
        let days = 3;
        let requests = generate_requests(CURVE_PER_DAY, days, 900, LeadTimes::Mixed, 5).unwrap();
        let per_day = requests.len() as f64 / f64::from(days);
        // The curve's requests plus the cars parked at the start, spread over the days.
        assert!(
            (CURVE_PER_DAY * 0.96..CURVE_PER_DAY * 1.06).contains(&per_day),
            "{per_day} a day"
        );
        let mean_h = requests
            .iter()
            .map(|r| r.interval.len_s() as f64 / 3600.0)
            .sum::<f64>()
            / requests.len() as f64;
        assert!((1.7..2.3).contains(&mean_h), "mean stay {mean_h} h");
        assert!(
            requests
                .windows(2)
                .all(|w| w[0].booked_at <= w[1].booked_at)
        );
        assert!(requests.iter().all(|r| r.booked_at <= r.interval.start()));
        assert!(
            requests
                .iter()
                .all(|r| r.interval.start() % 900 == 0 && r.interval.end() % 900 == 0)
        );
        let vans = requests
            .iter()
            .filter(|r| r.vehicle == VehicleType::Van)
            .count() as f64;
        assert!((0.03..0.07).contains(&(vans / requests.len() as f64)));
        // Same seed, same requests.
        assert_eq!(
            requests,
            generate_requests(CURVE_PER_DAY, days, 900, LeadTimes::Mixed, 5).unwrap()
        );
    }

    #[test]
    fn no_policy_double_books_and_ours_keeps_bays_for_their_needs() {
        let config = AllocSimConfig {
            days: 1,
            seeds: vec![3],
            levels: vec![3_000.0],
            ..AllocSimConfig::default()
        };
        let report = simulate(&config, |_| {}).unwrap();
        let level = &report.levels[0];
        for result in &level.policies {
            assert_eq!(result.double_bookings, 0, "{}", result.name);
            let m = result.runs[0];
            assert!(
                m.accepted_pct > 50.0 && m.accepted_pct <= 100.0,
                "{}: {m:?}",
                result.name
            );
            assert!(m.utilisation_pct > 0.0 && m.utilisation_pct <= 100.0);
        }
        let first = level.policies[0].runs[0];
        let ours = level.policies.last().unwrap().runs[0];
        assert!(ours.ev_charger_pct > first.ev_charger_pct);
        assert!(ours.accessible_bay_pct > first.accessible_bay_pct);
        assert!(
            ours.refused_pct_by_type[VehicleType::Van.index()]
                < first.refused_pct_by_type[VehicleType::Van.index()]
        );
        let markdown = report.to_markdown();
        assert!(markdown.contains("| first fit |"), "{markdown}");
        assert!(markdown.contains("### Demand sweep"));
    }

    proptest::proptest! {
        #[test]
        fn the_bound_is_the_true_maximum(
            raw in proptest::collection::vec((0i64..20, 1i64..6), 0..9),
            machines in 0usize..4,
        ) {
            let intervals: Vec<Interval> = raw
                .iter()
                .map(|&(start, len)| Interval::new(start, start + len).unwrap())
                .collect();
            // Brute force: a set of intervals fits on k machines iff no instant is covered
            // more than k times (interval graphs are perfect).
            let depth_ok = |set: &[Interval]| {
                (0..30).all(|t| set.iter().filter(|iv| iv.start() <= t && t < iv.end()).count() <= machines)
            };
            let best = (0u32..1 << intervals.len())
                .filter_map(|mask| {
                    let set: Vec<Interval> = intervals
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << i) != 0)
                        .map(|(_, iv)| *iv)
                        .collect();
                    depth_ok(&set).then_some(set.len() as u64)
                })
                .max()
                .unwrap_or(0);
            proptest::prop_assert_eq!(max_schedulable(intervals, machines), best);
        }
    }

    #[test]
    fn no_policy_beats_the_bound() {
        let lot = demo_garage(LotId::parse("t").unwrap(), 3, 100);
        let requests = generate_requests(3_000.0, 1, 900, LeadTimes::Mixed, 9).unwrap();
        let bound = upper_bound(&lot, &requests);
        assert!(
            bound < requests.len() as u64,
            "demand above capacity must be refused"
        );
        for named in [policies()[0], policies()[4]] {
            let stats = run_policy(&lot, &requests, &named.policy, 1);
            assert!(RunStats::total(&stats.accepted) <= bound, "{}", named.name);
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
