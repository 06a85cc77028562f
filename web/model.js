// The vocabulary of the live map: spot states, spot kinds, vehicle types, which vehicle may
// use which kind of spot (docs/live.md, "Which vehicle fits where"), and counting.
// No DOM here, so node's test runner can import it.

export const STATES = ['free', 'occupied', 'held', 'unknown', 'out_of_service'];

export const STATE_NAMES = {
  free: 'free',
  occupied: 'occupied',
  held: 'held',
  unknown: 'unknown',
  out_of_service: 'out of service',
};

export const KINDS = ['standard', 'compact', 'large', 'motorcycle', 'accessible', 'ev'];

export const KIND_NAMES = {
  standard: 'standard',
  compact: 'compact',
  large: 'large (vans)',
  motorcycle: 'motorcycle',
  accessible: 'accessible',
  ev: 'EV charging',
};

export const VEHICLES = ['motorcycle', 'compact', 'car', 'van', 'ev', 'accessible'];

export const VEHICLE_NAMES = {
  motorcycle: 'motorcycle',
  compact: 'compact car',
  car: 'car',
  van: 'van',
  ev: 'EV',
  accessible: 'accessible',
};

/** The end of "42 free for …" for each vehicle type. */
export const VEHICLE_FOR = {
  motorcycle: 'a motorcycle',
  compact: 'a compact car',
  car: 'a car',
  van: 'a van',
  ev: 'EV',
  accessible: 'accessible parking',
};

/** Spot kinds each vehicle type may use. Mirrors core/src/vehicle.rs. */
export const FITS = {
  motorcycle: ['motorcycle'],
  compact: ['compact', 'standard', 'large'],
  car: ['standard', 'large'],
  van: ['large'],
  ev: ['ev', 'standard', 'large'],
  accessible: ['accessible', 'standard', 'large'],
};

/** Whether `vehicle` may park in a spot of `kind`; every kind fits when no vehicle is chosen. */
export function fits(vehicle, kind) {
  if (!vehicle || vehicle === 'all') return true;
  const kinds = FITS[vehicle];
  return kinds ? kinds.includes(kind) : true;
}

export function isVehicle(value) {
  return Object.prototype.hasOwnProperty.call(FITS, value);
}

/** An all-zero Counts object. */
export function emptyCounts() {
  return { spots: 0, free: 0, occupied: 0, held: 0, unknown: 0, out_of_service: 0 };
}

/**
 * Counts of `spots` (an iterable of {level, kind, state}), optionally only those on `level`
 * and only those `vehicle` may use.
 */
export function countSpots(spots, { level = null, vehicle = null } = {}) {
  const counts = emptyCounts();
  for (const spot of spots) {
    if (level !== null && spot.level !== level) continue;
    if (!fits(vehicle, spot.kind)) continue;
    counts.spots += 1;
    if (Object.prototype.hasOwnProperty.call(counts, spot.state)) counts[spot.state] += 1;
    else counts.unknown += 1;
  }
  return counts;
}

/** Counts per level (Map level id -> Counts) of the spots `vehicle` may use, in one pass. */
export function countByLevel(spots, vehicle = null) {
  const byLevel = new Map();
  for (const spot of spots) {
    if (!fits(vehicle, spot.kind)) continue;
    let counts = byLevel.get(spot.level);
    if (!counts) byLevel.set(spot.level, (counts = emptyCounts()));
    counts.spots += 1;
    if (Object.prototype.hasOwnProperty.call(counts, spot.state)) counts[spot.state] += 1;
    else counts.unknown += 1;
  }
  return byLevel;
}

/** Levels in the order a driver expects them: by floor, lowest first. */
export function sortLevels(levels) {
  return [...levels].sort((a, b) => (a.floor ?? 0) - (b.floor ?? 0) || String(a.id).localeCompare(String(b.id)));
}

/** The level to show first: the street level (floor 0) if there is one, else the lowest. */
export function defaultLevel(levels) {
  const sorted = sortLevels(levels);
  return (sorted.find((l) => l.floor === 0) ?? sorted[0])?.id ?? null;
}
