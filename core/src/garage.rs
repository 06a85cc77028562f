//! The garage model: lots, levels, zones and spots, and its JSON import/export format.
//!
//! A [`Lot`] is the unit operators load (`parkd lot import lot.json`) and export. The format is
//! this module's serde shape, strict: unknown fields are refused, ids follow the id grammar,
//! and [`Lot::validate`] checks what serde cannot (unique ids, references, geometry), naming
//! the offending path (`spots[12].level`). Geometry is in metres in each level's own plane,
//! origin top-left, so the floor plan is drawn without a projection.
//!
//! [`demo_garage`] builds the customer's garage (300 spots on 3 levels) for `parkd demo`.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, NaiveTime, Timelike, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::ids::{LevelId, LotId, SpotId, ZoneId};
use crate::vehicle::SpotKind;

/// Most spots one lot may have.
pub const MAX_SPOTS_PER_LOT: usize = 200_000;
/// Longest name, address or label, in bytes.
pub const MAX_TEXT: usize = 200;

/// A point on the map (WGS 84).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoPoint {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
}

/// One opening period: on `day`, from `open` to `close` (local time of the lot). A `close` at
/// or before `open` runs past midnight into the next day.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningPeriod {
    /// The day the period starts (`Mon` ... `Sun`).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "Mon"))]
    pub day: Weekday,
    /// Opening time, `HH:MM[:SS]`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "07:00:00"))]
    pub open: NaiveTime,
    /// Closing time, `HH:MM[:SS]`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "22:00:00"))]
    pub close: NaiveTime,
}

/// A level (floor) of a lot, with the size of its floor plan.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// Id, unique in the lot.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: LevelId,
    /// Display name ("Level 2", "Roof").
    pub name: String,
    /// Floor number (0 = street level, negative below ground); orders the levels.
    pub floor: i32,
    /// Floor plan width, metres.
    pub width: f64,
    /// Floor plan height, metres.
    pub height: f64,
}

/// A zone: a named group of spots (a colour, a wing), usually on one level.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// Id, unique in the lot.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: ZoneId,
    /// Display name.
    pub name: String,
}

/// One parking spot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spot {
    /// Id, unique in the lot; the `{spot}` of its sensor's MQTT topic.
    pub id: SpotId,
    /// What is painted on the floor.
    pub label: String,
    /// The level it is on.
    pub level: LevelId,
    /// Its zone, if the lot has zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<ZoneId>,
    /// Its kind.
    pub kind: SpotKind,
    /// Top-left corner on the level's plan, metres.
    pub x: f64,
    /// Top-left corner on the level's plan, metres.
    pub y: f64,
    /// Width, metres.
    pub w: f64,
    /// Depth, metres.
    pub h: f64,
    /// Rotation around its centre, degrees clockwise.
    #[serde(default)]
    pub rotation: f64,
    /// Walking distance to the pedestrian exit, metres (allocation prefers short walks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walk_m: Option<f64>,
    /// Closed by the operator (works, damage): never free, never allocated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub out_of_service: bool,
}

/// A parking lot with everything in it: the import/export document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lot {
    /// Id: the `{lot}` of its MQTT topics.
    pub id: LotId,
    /// Display name.
    pub name: String,
    /// Street address.
    #[serde(default)]
    pub address: String,
    /// Where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<GeoPoint>,
    /// IANA time zone of its opening hours, e.g. `Europe/Berlin`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// When it is open; empty = always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opening_hours: Vec<OpeningPeriod>,
    /// Its levels, at least one.
    pub levels: Vec<Level>,
    /// Its zones (may be empty).
    #[serde(default)]
    pub zones: Vec<Zone>,
    /// Its spots.
    pub spots: Vec<Spot>,
}

impl Lot {
    /// The lot's time zone; `None` only for a lot that skipped validation (which refuses a
    /// zone that does not parse).
    pub fn zone(&self) -> Option<chrono_tz::Tz> {
        self.timezone.parse().ok()
    }

    /// One of its spots.
    pub fn spot(&self, id: &SpotId) -> Option<&Spot> {
        self.spots.iter().find(|s| &s.id == id)
    }

    /// Whether the lot is open at `at`: always when it has no opening hours; otherwise when
    /// `at`, in the lot's time zone, falls in one of its periods (a period whose `close` is at
    /// or before its `open` runs past midnight into the next day). A time zone that does not
    /// parse (validation refuses one) counts as open: a configuration mistake must never lock
    /// drivers out.
    pub fn is_open_at(&self, at: DateTime<Utc>) -> bool {
        if self.opening_hours.is_empty() {
            return true;
        }
        let Some(zone) = self.zone() else {
            return true;
        };
        let local = at.with_timezone(&zone);
        let day = local.weekday();
        let time = local.time().with_nanosecond(0).unwrap_or(local.time());
        self.opening_hours.iter().any(|p| {
            if p.close > p.open {
                p.day == day && p.open <= time && time < p.close
            } else {
                // Past midnight: the evening of `day` and the early hours of the next day.
                (p.day == day && p.open <= time) || (p.day.succ() == day && time < p.close)
            }
        })
    }
}

fn default_timezone() -> String {
    "UTC".into()
}

/// Why a lot document is not valid: the path of the first problem and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct LotError {
    /// Where, e.g. `spots[12].level`.
    pub path: String,
    /// What.
    pub problem: String,
}

fn err(path: impl Into<String>, problem: impl Into<String>) -> LotError {
    LotError {
        path: path.into(),
        problem: problem.into(),
    }
}

fn check_text(path: &str, text: &str, required: bool) -> Result<(), LotError> {
    if required && text.trim().is_empty() {
        return Err(err(path, "must not be empty"));
    }
    if text.len() > MAX_TEXT {
        return Err(err(path, format!("longer than {MAX_TEXT} bytes")));
    }
    if text.chars().any(char::is_control) {
        return Err(err(path, "contains control characters"));
    }
    Ok(())
}

fn check_length(path: &str, value: f64, max: f64) -> Result<(), LotError> {
    if !value.is_finite() || value < 0.0 || value > max {
        return Err(err(path, format!("must be a number in [0, {max}]")));
    }
    Ok(())
}

/// Largest floor plan side, metres.
const MAX_PLAN_M: f64 = 10_000.0;

impl Lot {
    /// Parses and validates a lot document.
    pub fn from_json(raw: &[u8]) -> Result<Lot, LotError> {
        let lot: Lot = serde_json::from_slice(raw).map_err(|error| {
            err(
                format!("line {} column {}", error.line(), error.column()),
                error.to_string(),
            )
        })?;
        lot.validate()?;
        Ok(lot)
    }

    /// Checks everything serde does not: texts, unique ids, references, geometry.
    pub fn validate(&self) -> Result<(), LotError> {
        check_text("name", &self.name, true)?;
        check_text("address", &self.address, false)?;
        check_text("timezone", &self.timezone, true)?;
        if self.timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(err(
                "timezone",
                "not an IANA time zone name (e.g. Europe/Berlin, America/New_York, UTC)",
            ));
        }
        if let Some(point) = self.location {
            if !(point.lat.is_finite() && (-90.0..=90.0).contains(&point.lat)) {
                return Err(err("location.lat", "must be in [-90, 90]"));
            }
            if !(point.lon.is_finite() && (-180.0..=180.0).contains(&point.lon)) {
                return Err(err("location.lon", "must be in [-180, 180]"));
            }
        }
        if self.levels.is_empty() {
            return Err(err("levels", "a lot needs at least one level"));
        }
        let mut levels = HashSet::new();
        for (i, level) in self.levels.iter().enumerate() {
            if !levels.insert(&level.id) {
                return Err(err(
                    format!("levels[{i}].id"),
                    format!("duplicate level {:?}", level.id.as_str()),
                ));
            }
            check_text(&format!("levels[{i}].name"), &level.name, true)?;
            check_length(&format!("levels[{i}].width"), level.width, MAX_PLAN_M)?;
            check_length(&format!("levels[{i}].height"), level.height, MAX_PLAN_M)?;
            if level.width == 0.0 || level.height == 0.0 {
                return Err(err(format!("levels[{i}]"), "width and height must be > 0"));
            }
        }
        let mut zones = HashSet::new();
        for (i, zone) in self.zones.iter().enumerate() {
            if !zones.insert(&zone.id) {
                return Err(err(
                    format!("zones[{i}].id"),
                    format!("duplicate zone {:?}", zone.id.as_str()),
                ));
            }
            check_text(&format!("zones[{i}].name"), &zone.name, true)?;
        }
        if self.spots.len() > MAX_SPOTS_PER_LOT {
            return Err(err("spots", format!("more than {MAX_SPOTS_PER_LOT} spots")));
        }
        let mut spots = HashSet::with_capacity(self.spots.len());
        for (i, spot) in self.spots.iter().enumerate() {
            let path = |field: &str| format!("spots[{i}].{field}");
            if !spots.insert(&spot.id) {
                return Err(err(
                    path("id"),
                    format!("duplicate spot {:?}", spot.id.as_str()),
                ));
            }
            check_text(&path("label"), &spot.label, true)?;
            let Some(level) = self.levels.iter().find(|level| level.id == spot.level) else {
                return Err(err(
                    path("level"),
                    format!("unknown level {:?}", spot.level.as_str()),
                ));
            };
            if let Some(zone) = &spot.zone
                && !zones.contains(zone)
            {
                return Err(err(
                    path("zone"),
                    format!("unknown zone {:?}", zone.as_str()),
                ));
            }
            check_length(&path("x"), spot.x, level.width)?;
            check_length(&path("y"), spot.y, level.height)?;
            check_length(&path("w"), spot.w, 100.0)?;
            check_length(&path("h"), spot.h, 100.0)?;
            if spot.w == 0.0 || spot.h == 0.0 {
                return Err(err(path("w"), "width and depth must be > 0"));
            }
            if spot.x + spot.w > level.width + 0.01 || spot.y + spot.h > level.height + 0.01 {
                return Err(err(
                    path("x"),
                    format!("the spot extends past level {:?}'s plan", level.id.as_str()),
                ));
            }
            if !spot.rotation.is_finite() || spot.rotation.abs() > 360.0 {
                return Err(err(path("rotation"), "must be in [-360, 360]"));
            }
            if let Some(walk) = spot.walk_m {
                check_length(&path("walk_m"), walk, 100_000.0)?;
            }
        }
        Ok(())
    }

    /// The level with this id.
    pub fn level(&self, id: &LevelId) -> Option<&Level> {
        self.levels.iter().find(|level| &level.id == id)
    }

    /// How many spots of each kind, by [`SpotKind::index`].
    pub fn kind_counts(&self) -> [usize; 6] {
        let mut counts = [0; 6];
        for spot in &self.spots {
            counts[spot.kind.index()] += 1;
        }
        counts
    }
}

/// Spots per level of [`demo_garage`]; the demo simulator numbers its sensors the same way
/// (`L1-001` .. `L1-100`, `L2-001` ..).
pub const DEMO_SPOTS_PER_LEVEL: u32 = 100;

/// The customer's garage: 300 spots (about 200 sq ft each: 3.0 m x 6.0 m bays) on three
/// levels of 100, four rows per level either side of two aisles, with the pedestrian exit
/// (lifts) at the right end of the lower aisle of every level.
///
/// The mix follows common practice for a 300-space public garage: 7 accessible bays (the
/// ADA table's figure for 201-300 spaces) next to the lifts on the street level, 15 large
/// bays for vans on the street level (height clearance), 12 motorcycle bays in 6 car-bay
/// widths by the ramp, 30 EV bays (10 %) along the walls of levels 1 and 2, 45 compact
/// bays on the top level, and 191 standard bays.
///
/// `levels` and `per_level` scale it for benchmarks; the demo uses 3 x 100.
pub fn demo_garage(id: LotId, levels: u32, per_level: u32) -> Lot {
    const BAY_W: f64 = 3.0;
    const BAY_D: f64 = 6.0;
    const AISLE: f64 = 7.0;
    const MARGIN: f64 = 4.0;
    let levels = levels.max(1);
    let per_level = per_level.max(1);
    let per_row = per_level.div_ceil(4).max(1);
    // Rows: A (wall, facing down), aisle, B and C back to back, aisle, D (wall, facing up).
    let row_y = [
        MARGIN,
        MARGIN + BAY_D + AISLE,
        MARGIN + 2.0 * BAY_D + AISLE,
        MARGIN + 3.0 * BAY_D + 2.0 * AISLE,
    ];
    let width = 2.0 * MARGIN + f64::from(per_row) * BAY_W + 4.0 * BAY_W;
    let height = row_y[3] + BAY_D + MARGIN;
    // The lift lobby: in row D's line, right of its last bay.
    let exit = (width - MARGIN - BAY_W / 2.0, row_y[3] + BAY_D / 2.0);
    let level_penalty_m = 25.0;

    let mut lot = Lot {
        id,
        name: "Central Station Garage".into(),
        address: "1 Station Square".into(),
        location: Some(GeoPoint {
            lat: 52.5251,
            lon: 13.3694,
        }),
        timezone: "Europe/Berlin".into(),
        opening_hours: Vec::new(),
        levels: Vec::new(),
        zones: Vec::new(),
        spots: Vec::new(),
    };
    for level_index in 0..levels {
        let level_no = level_index + 1;
        let level_id = parse_id::<LevelId>(&format!("L{level_no}"));
        lot.levels.push(Level {
            id: level_id.clone(),
            name: if level_index == 0 {
                "Level 1 (street)".into()
            } else {
                format!("Level {level_no}")
            },
            floor: level_index as i32,
            width,
            height,
        });
        let zone_west = parse_id::<ZoneId>(&format!("L{level_no}-west"));
        let zone_east = parse_id::<ZoneId>(&format!("L{level_no}-east"));
        lot.zones.push(Zone {
            id: zone_west.clone(),
            name: format!("Level {level_no} west"),
        });
        lot.zones.push(Zone {
            id: zone_east.clone(),
            name: format!("Level {level_no} east"),
        });
        let mut placed = 0u32;
        for (row, y) in row_y.iter().enumerate() {
            let mut bay = 0u32;
            while bay < per_row && placed < per_level {
                let x = MARGIN + f64::from(bay) * BAY_W;
                let Some(kind) = demo_kind(level_index, levels, row, bay, per_row) else {
                    bay += 1;
                    continue;
                };
                let zone = if bay < per_row / 2 {
                    zone_west.clone()
                } else {
                    zone_east.clone()
                };
                let mut push = |x: f64, w: f64, kind: SpotKind, placed: &mut u32| {
                    *placed += 1;
                    let spot = format!("L{level_no}-{:03}", *placed);
                    let centre = (x + w / 2.0, y + BAY_D / 2.0);
                    let walk = (centre.0 - exit.0).abs()
                        + (centre.1 - exit.1).abs()
                        + level_penalty_m * f64::from(level_index);
                    lot.spots.push(Spot {
                        id: parse_id::<SpotId>(&spot),
                        label: format!("{level_no}.{:03}", *placed),
                        level: level_id.clone(),
                        zone: Some(zone.clone()),
                        kind,
                        x,
                        y: *y,
                        w,
                        h: BAY_D,
                        rotation: if row == 0 || row == 2 { 0.0 } else { 180.0 },
                        walk_m: Some((walk * 10.0).round() / 10.0),
                        out_of_service: false,
                    });
                };
                if kind == SpotKind::Motorcycle {
                    // Two motorcycle bays in one car bay's width.
                    push(x, BAY_W / 2.0, kind, &mut placed);
                    if placed < per_level {
                        push(x + BAY_W / 2.0, BAY_W / 2.0, kind, &mut placed);
                    }
                } else {
                    push(x, BAY_W, kind, &mut placed);
                }
                bay += 1;
            }
        }
    }
    lot
}

/// The kind of bay `bay` of `row` on a demo level (see [`demo_garage`]); `None` where the
/// street level's ramp takes the place of bays.
fn demo_kind(level: u32, levels: u32, row: usize, bay: u32, per_row: u32) -> Option<SpotKind> {
    let from_exit = per_row - 1 - bay;
    Some(match (level, row) {
        // Street level: accessible bays by the lifts, then the ramp, motorcycles and vans by
        // the entrance, EV on the far wall.
        (0, 3) if from_exit < 7 => SpotKind::Accessible,
        (0, 3) if from_exit < 13 && per_row >= 25 => return None,
        (0, 3) if bay < 6 => SpotKind::Motorcycle,
        (0, 0) if bay < 15 => SpotKind::Large,
        (0, 0) if bay >= per_row.saturating_sub(10) => SpotKind::Ev,
        // Level 2: a wall of chargers.
        (1, 0) if bay < 20 => SpotKind::Ev,
        // Top level: compact bays on the back wall and along the middle row.
        (l, 3) if l == levels - 1 && l > 1 => SpotKind::Compact,
        (l, 2) if l == levels - 1 && l > 1 && bay < 20 => SpotKind::Compact,
        _ => SpotKind::Standard,
    })
}

fn parse_id<T: for<'de> Deserialize<'de>>(raw: &str) -> T {
    // The demo's ids are built from digits and fixed ASCII words, always in the grammar.
    serde_json::from_value(serde_json::Value::String(raw.to_owned()))
        .unwrap_or_else(|error| panic!("demo id {raw:?} outside the id grammar: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_hours_in_the_lots_time_zone_including_past_midnight() {
        let mut lot = demo_garage(LotId::parse("g").unwrap(), 1, 4);
        assert!(lot.is_open_at(Utc::now()), "no hours: always open");
        lot.timezone = "Europe/Berlin".into();
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        lot.opening_hours = vec![
            OpeningPeriod {
                day: Weekday::Mon,
                open: t(7, 0),
                close: t(22, 0),
            },
            // Friday night until 02:00 on Saturday.
            OpeningPeriod {
                day: Weekday::Fri,
                open: t(18, 0),
                close: t(2, 0),
            },
        ];
        // 2026-11-23 is a Monday; Berlin is UTC+1 in November.
        let utc = |d: u32, h: u32, m: u32| {
            DateTime::parse_from_rfc3339(&format!("2026-11-{d:02}T{h:02}:{m:02}:00Z"))
                .unwrap()
                .with_timezone(&Utc)
        };
        assert!(!lot.is_open_at(utc(23, 5, 59)), "06:59 local");
        assert!(lot.is_open_at(utc(23, 6, 0)), "07:00 local");
        assert!(lot.is_open_at(utc(23, 20, 59)), "21:59 local");
        assert!(!lot.is_open_at(utc(23, 21, 0)), "22:00 local");
        assert!(!lot.is_open_at(utc(24, 12, 0)), "Tuesday");
        assert!(
            lot.is_open_at(utc(27, 23, 30)),
            "Saturday 00:30 local, in Friday's night period"
        );
        assert!(!lot.is_open_at(utc(28, 1, 0)), "Saturday 02:00 local");
        assert!(!lot.is_open_at(utc(27, 16, 59)), "Friday 17:59 local");
        lot.timezone = "Mars/Olympus".into();
        assert!(lot.validate().is_err());
        assert!(
            lot.is_open_at(utc(24, 12, 0)),
            "an unknown zone never locks drivers out"
        );
    }

    fn demo() -> Lot {
        demo_garage(LotId::parse("demo-garage").unwrap(), 3, 100)
    }

    #[test]
    fn the_demo_garage_is_the_customers() {
        let lot = demo();
        lot.validate().unwrap();
        assert_eq!(lot.spots.len(), 300);
        assert_eq!(lot.levels.len(), 3);
        let counts = lot.kind_counts();
        assert_eq!(counts[SpotKind::Accessible.index()], 7);
        assert_eq!(counts[SpotKind::Ev.index()], 30);
        assert_eq!(counts[SpotKind::Large.index()], 15);
        assert_eq!(counts[SpotKind::Motorcycle.index()], 12);
        assert_eq!(counts[SpotKind::Compact.index()], 45);
        assert_eq!(counts[SpotKind::Standard.index()], 191);
        for level in 1..=3 {
            let on_level = lot
                .spots
                .iter()
                .filter(|s| s.level.as_str() == format!("L{level}"))
                .count();
            assert_eq!(on_level, 100);
        }
        assert_eq!(lot.spots[0].id.as_str(), "L1-001");
        assert_eq!(lot.spots[299].id.as_str(), "L3-100");
        // The accessible bays are the closest to the exit on the street level.
        let nearest = lot
            .spots
            .iter()
            .filter(|s| s.level.as_str() == "L1" && s.kind != SpotKind::Motorcycle)
            .min_by(|a, b| a.walk_m.partial_cmp(&b.walk_m).unwrap())
            .unwrap();
        assert_eq!(nearest.kind, SpotKind::Accessible);
    }

    #[test]
    fn scales_for_benchmarks() {
        let lot = demo_garage(LotId::parse("big").unwrap(), 10, 10_000);
        lot.validate().unwrap();
        assert_eq!(lot.spots.len(), 100_000);
    }

    #[test]
    fn round_trips_through_json() {
        let lot = demo();
        let json = serde_json::to_vec(&lot).unwrap();
        assert_eq!(Lot::from_json(&json).unwrap(), lot);
    }

    #[test]
    fn bad_documents_name_the_problem() {
        let mut lot = demo();
        lot.spots[12].level = LevelId::parse("L9").unwrap();
        assert_eq!(lot.validate().unwrap_err().path, "spots[12].level");

        let mut lot = demo();
        lot.spots[5].id = lot.spots[4].id.clone();
        assert_eq!(lot.validate().unwrap_err().path, "spots[5].id");

        let mut lot = demo();
        lot.spots[0].x = f64::NAN;
        assert_eq!(lot.validate().unwrap_err().path, "spots[0].x");

        let mut lot = demo();
        lot.spots[0].x = lot.levels[0].width - 0.5;
        assert!(lot.validate().unwrap_err().problem.contains("extends past"));

        let mut lot = demo();
        lot.levels.clear();
        assert_eq!(lot.validate().unwrap_err().path, "levels");

        let mut value = serde_json::to_value(demo()).unwrap();
        value["spots"][3]["colour"] = serde_json::json!("red");
        let error = Lot::from_json(value.to_string().as_bytes()).unwrap_err();
        assert!(error.problem.contains("unknown field `colour`"), "{error}");

        let mut value = serde_json::to_value(demo()).unwrap();
        value["spots"][3]["kind"] = serde_json::json!("helipad");
        let error = Lot::from_json(value.to_string().as_bytes()).unwrap_err();
        assert!(error.problem.contains("helipad"), "{error}");

        let error = Lot::from_json(b"{not json").unwrap_err();
        assert!(error.path.starts_with("line 1"), "{error}");
    }
}
