//! What both backends share: the migration record type, turning stored columns back into
//! domain values (refusing corrupt ones with [`StoreError::Corrupt`]), and the reduction of
//! a batch to the newest state per spot and per device.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use parkd_core::account::{Email, Plate, Role, VehicleClass};
use parkd_core::garage::{GeoPoint, Lot, Spot};
use parkd_core::ids::{DeviceId, GateId, IdError, LevelId, LotId, SpotId, ZoneId};
use parkd_core::reservation::ReservationState;
use parkd_core::tariff::Currency;
use parkd_core::vehicle::{SpotKind, VehicleType};

use crate::{
    Device, DeviceBinding, DeviceKind, SpotReading, StatusChange, StoreError, StoreResult,
};

/// One embedded migration: applied once, in version order, in its own transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Strictly increasing, recorded in `schema_migrations.version`.
    pub(crate) version: i64,
    /// A short name, recorded in `schema_migrations.name`.
    pub(crate) name: &'static str,
    /// The SQL, possibly several statements.
    pub(crate) sql: &'static str,
}

/// Parses an identifier read from `table`, or reports the row as corrupt.
pub(crate) fn parse_id<T>(
    table: &'static str,
    column: &str,
    raw: &str,
    parse: fn(&str) -> Result<T, IdError>,
) -> StoreResult<T> {
    parse(raw).map_err(|e| StoreError::Corrupt {
        table,
        message: format!("{column} {raw:?}: {e}"),
    })
}

/// The `(lot_id, spot_id, gate_id)` columns of a binding.
pub(crate) fn binding_columns(
    binding: &DeviceBinding,
) -> (Option<&str>, Option<&str>, Option<&str>) {
    match binding {
        DeviceBinding::Spot { lot, spot } => (Some(lot.as_str()), Some(spot.as_str()), None),
        DeviceBinding::Gate { lot, gate } => (Some(lot.as_str()), None, Some(gate.as_str())),
        DeviceBinding::Observer => (None, None, None),
    }
}

/// The columns of one `devices` row, as read.
#[derive(Debug)]
pub(crate) struct DeviceColumns {
    pub(crate) device_id: String,
    pub(crate) kind: String,
    pub(crate) lot_id: Option<String>,
    pub(crate) spot_id: Option<String>,
    pub(crate) gate_id: Option<String>,
    pub(crate) secret_sha256: Option<Vec<u8>>,
    pub(crate) disabled: bool,
    pub(crate) created_at: DateTime<Utc>,
}

impl DeviceColumns {
    /// Checks and converts the row.
    pub(crate) fn into_device(self) -> StoreResult<Device> {
        const T: &str = "devices";
        let corrupt = |message: String| StoreError::Corrupt { table: T, message };
        let id = parse_id(T, "device_id", &self.device_id, DeviceId::parse)?;
        let kind = DeviceKind::parse(&self.kind)
            .ok_or_else(|| corrupt(format!("device {id}: unknown kind {:?}", self.kind)))?;
        let binding = match (kind, self.lot_id, self.spot_id, self.gate_id) {
            (DeviceKind::Sensor, Some(lot), Some(spot), None) => DeviceBinding::Spot {
                lot: parse_id(T, "lot_id", &lot, LotId::parse)?,
                spot: parse_id(T, "spot_id", &spot, SpotId::parse)?,
            },
            (DeviceKind::Gate, Some(lot), None, Some(gate)) => DeviceBinding::Gate {
                lot: parse_id(T, "lot_id", &lot, LotId::parse)?,
                gate: parse_id(T, "gate_id", &gate, GateId::parse)?,
            },
            (DeviceKind::Observer, None, None, None) => DeviceBinding::Observer,
            (kind, ..) => {
                return Err(corrupt(format!(
                    "device {id}: binding columns do not match kind {}",
                    kind.as_str()
                )));
            }
        };
        let secret_sha256 = match self.secret_sha256 {
            None => None,
            Some(bytes) => Some(<[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                corrupt(format!(
                    "device {id}: secret_sha256 has {} bytes, not 32",
                    bytes.len()
                ))
            })?),
        };
        Ok(Device {
            id,
            binding,
            secret_sha256,
            disabled: self.disabled,
            created_at: self.created_at,
        })
    }
}

/// The newest reading of each spot in `readings`, ordered by `(lot, spot)` so that concurrent
/// writers lock rows in the same order. Of two readings received at the same instant, the
/// later one in the batch wins.
pub(crate) fn newest_per_spot(readings: &[SpotReading]) -> Vec<&SpotReading> {
    let mut newest: BTreeMap<(&str, &str), &SpotReading> = BTreeMap::new();
    for reading in readings {
        let key = (reading.lot.as_str(), reading.spot.as_str());
        match newest.get(&key) {
            Some(kept) if kept.received_at > reading.received_at => {}
            _ => {
                newest.insert(key, reading);
            }
        }
    }
    newest.into_values().collect()
}

/// The newest status change of each device in `statuses`, ordered by device id. Of two
/// changes received at the same instant, the later one in the batch wins.
pub(crate) fn newest_per_device(statuses: &[StatusChange]) -> Vec<&StatusChange> {
    let mut newest: BTreeMap<&str, &StatusChange> = BTreeMap::new();
    for status in statuses {
        let key = status.device.as_str();
        match newest.get(key) {
            Some(kept) if kept.received_at > status.received_at => {}
            _ => {
                newest.insert(key, status);
            }
        }
    }
    newest.into_values().collect()
}

/// The scalar columns of one `lots` row; levels, zones and opening hours as JSON text.
#[derive(Debug, Clone)]
pub(crate) struct LotColumns {
    pub(crate) lot_id: String,
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) lat: Option<f64>,
    pub(crate) lon: Option<f64>,
    pub(crate) timezone: String,
    pub(crate) opening_hours: String,
    pub(crate) levels: String,
    pub(crate) zones: String,
}

/// The columns of one `spots` row (its `position` is its index in the lot).
#[derive(Debug, Clone)]
pub(crate) struct SpotColumns {
    pub(crate) spot_id: String,
    pub(crate) label: String,
    pub(crate) level_id: String,
    pub(crate) zone_id: Option<String>,
    pub(crate) kind: &'static str,
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) w: f64,
    pub(crate) h: f64,
    pub(crate) rotation: f64,
    pub(crate) walk_m: Option<f64>,
    pub(crate) out_of_service: bool,
}

/// A spot row as read (the kind still text).
#[derive(Debug, Clone)]
pub(crate) struct SpotRead {
    pub(crate) columns: SpotColumns,
    pub(crate) kind: String,
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(format!("encoding a lot: {e}")))
}

/// A lot's columns and its spots' rows, in document order.
pub(crate) fn lot_columns(lot: &Lot) -> StoreResult<(LotColumns, Vec<SpotColumns>)> {
    let columns = LotColumns {
        lot_id: lot.id.as_str().to_owned(),
        name: lot.name.clone(),
        address: lot.address.clone(),
        lat: lot.location.map(|p| p.lat),
        lon: lot.location.map(|p| p.lon),
        timezone: lot.timezone.clone(),
        opening_hours: to_json(&lot.opening_hours)?,
        levels: to_json(&lot.levels)?,
        zones: to_json(&lot.zones)?,
    };
    let spots = lot
        .spots
        .iter()
        .map(|spot| SpotColumns {
            spot_id: spot.id.as_str().to_owned(),
            label: spot.label.clone(),
            level_id: spot.level.as_str().to_owned(),
            zone_id: spot.zone.as_ref().map(|z| z.as_str().to_owned()),
            kind: spot.kind.as_str(),
            x: spot.x,
            y: spot.y,
            w: spot.w,
            h: spot.h,
            rotation: spot.rotation,
            walk_m: spot.walk_m,
            out_of_service: spot.out_of_service,
        })
        .collect();
    Ok((columns, spots))
}

/// Rebuilds a lot from its stored rows, refusing anything that no longer validates.
pub(crate) fn assemble_lot(columns: LotColumns, spots: Vec<SpotRead>) -> StoreResult<Lot> {
    const T: &str = "lots";
    let corrupt = |message: String| StoreError::Corrupt { table: T, message };
    let json = |column: &str, raw: &str| -> StoreResult<serde_json::Value> {
        serde_json::from_str(raw).map_err(|e| corrupt(format!("{column}: {e}")))
    };
    let location = match (columns.lat, columns.lon) {
        (Some(lat), Some(lon)) => Some(GeoPoint { lat, lon }),
        _ => None,
    };
    let mut spot_values = Vec::with_capacity(spots.len());
    for spot in spots {
        let kind: SpotKind = spot
            .kind
            .parse()
            .map_err(|e| corrupt(format!("spot {}: {e}", spot.columns.spot_id)))?;
        let c = spot.columns;
        spot_values.push(Spot {
            id: parse_id("spots", "spot_id", &c.spot_id, SpotId::parse)?,
            label: c.label,
            level: parse_id("spots", "level_id", &c.level_id, LevelId::parse)?,
            zone: c
                .zone_id
                .as_deref()
                .map(|z| parse_id("spots", "zone_id", z, ZoneId::parse))
                .transpose()?,
            kind,
            x: c.x,
            y: c.y,
            w: c.w,
            h: c.h,
            rotation: c.rotation,
            walk_m: c.walk_m,
            out_of_service: c.out_of_service,
        });
    }
    let lot = Lot {
        id: parse_id(T, "lot_id", &columns.lot_id, LotId::parse)?,
        name: columns.name,
        address: columns.address,
        location,
        timezone: columns.timezone,
        opening_hours: serde_json::from_value(json("opening_hours", &columns.opening_hours)?)
            .map_err(|e| corrupt(format!("opening_hours: {e}")))?,
        levels: serde_json::from_value(json("levels", &columns.levels)?)
            .map_err(|e| corrupt(format!("levels: {e}")))?,
        zones: serde_json::from_value(json("zones", &columns.zones)?)
            .map_err(|e| corrupt(format!("zones: {e}")))?,
        spots: spot_values,
    };
    lot.validate()
        .map_err(|e| corrupt(format!("lot {}: {e}", lot.id)))?;
    Ok(lot)
}

/// The stored name of a vehicle class.
pub(crate) fn class_str(class: VehicleClass) -> &'static str {
    match class {
        VehicleClass::Motorcycle => "motorcycle",
        VehicleClass::Compact => "compact",
        VehicleClass::Car => "car",
        VehicleClass::Van => "van",
    }
}

/// Parses a stored vehicle class.
pub(crate) fn parse_class(raw: &str) -> StoreResult<VehicleClass> {
    match raw {
        "motorcycle" => Ok(VehicleClass::Motorcycle),
        "compact" => Ok(VehicleClass::Compact),
        "car" => Ok(VehicleClass::Car),
        "van" => Ok(VehicleClass::Van),
        other => Err(StoreError::Corrupt {
            table: "vehicles",
            message: format!("class {other:?}"),
        }),
    }
}

/// Parses a stored currency (the `currency` column of payments, refunds and the ledger).
///
/// Strict on purpose: these columns have been upper case (`EUR`) since the tables were
/// created. Both schemas hold a CHECK that refuses anything but three upper-case letters
/// (postgres/0010_payments.sql, sqlite/0009_payments.sql; store/tests/conformance.rs shows a
/// lower-case insert refused), and parkd has always converted Stripe's lower case before
/// storing. So no written database holds a lower-case code: no migration and no
/// case-insensitive read are needed, and a code that does not parse is corruption.
pub(crate) fn parse_currency(table: &'static str, raw: &str) -> StoreResult<Currency> {
    Currency::parse(raw).map_err(|_| StoreError::Corrupt {
        table,
        message: format!("bad currency {raw:?}"),
    })
}

/// Parses a stored role.
pub(crate) fn parse_role(raw: &str) -> StoreResult<Role> {
    raw.parse().map_err(|e| StoreError::Corrupt {
        table: "users",
        message: format!("role: {e}"),
    })
}

/// Parses a stored e-mail.
pub(crate) fn parse_email(raw: &str) -> StoreResult<Email> {
    Email::parse(raw).map_err(|e| StoreError::Corrupt {
        table: "users",
        message: format!("email {raw:?}: {e}"),
    })
}

/// Parses a stored plate.
pub(crate) fn parse_plate(raw: &str) -> StoreResult<Plate> {
    Plate::parse(raw).map_err(|e| StoreError::Corrupt {
        table: "vehicles",
        message: format!("plate {raw:?}: {e}"),
    })
}

/// A stored token hash, which must be 32 bytes.
pub(crate) fn token_hash(raw: &[u8], table: &'static str) -> StoreResult<[u8; 32]> {
    raw.try_into().map_err(|_| StoreError::Corrupt {
        table,
        message: format!("token_sha256 of {} bytes", raw.len()),
    })
}

/// Parses a stored reservation state.
pub(crate) fn parse_reservation_state(raw: &str) -> StoreResult<ReservationState> {
    raw.parse().map_err(|message| StoreError::Corrupt {
        table: "reservations",
        message,
    })
}

/// Parses a stored vehicle type.
pub(crate) fn parse_vehicle_type(raw: &str) -> StoreResult<VehicleType> {
    raw.parse().map_err(
        |e: parkd_core::vehicle::UnknownVehicleType| StoreError::Corrupt {
            table: "reservations",
            message: e.to_string(),
        },
    )
}

/// What a reused idempotency key means, from its stored row.
pub(crate) fn idempotency_verdict(
    scope: &str,
    request_sha256: &[u8; 32],
    stored_scope: &str,
    stored_sha256: &[u8],
    status: Option<i64>,
    response: Option<String>,
) -> crate::IdempotencyBegin {
    use crate::IdempotencyBegin;
    if stored_scope != scope || stored_sha256 != request_sha256.as_slice() {
        return IdempotencyBegin::Mismatch;
    }
    match (status.and_then(|s| u16::try_from(s).ok()), response) {
        (Some(status), Some(body)) => IdempotencyBegin::Replay { status, body },
        _ => IdempotencyBegin::InFlight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn reading(spot: &str, secs: i64, occupied: bool) -> SpotReading {
        SpotReading {
            received_at: Utc.timestamp_opt(secs, 0).unwrap(),
            device_ts: None,
            lot: LotId::parse("lot").unwrap(),
            spot: SpotId::parse(spot).unwrap(),
            device: DeviceId::parse("dev").unwrap(),
            occupied,
            seq: None,
            battery_mv: None,
            rssi: None,
        }
    }

    #[test]
    fn newest_per_spot_keeps_newest_and_last_of_ties() {
        let rows = vec![
            reading("b", 10, true),
            reading("a", 5, true),
            reading("b", 3, false),
            reading("a", 5, false),
        ];
        let newest = newest_per_spot(&rows);
        assert_eq!(newest.len(), 2);
        assert_eq!(newest[0].spot.as_str(), "a");
        assert!(
            !newest[0].occupied,
            "the later of two equal timestamps wins"
        );
        assert_eq!(newest[1].spot.as_str(), "b");
        assert!(newest[1].occupied);
    }

    #[test]
    fn device_columns_refuse_mismatch_and_short_secret() {
        let base = DeviceColumns {
            device_id: "d1".into(),
            kind: "gate".into(),
            lot_id: Some("lot".into()),
            spot_id: Some("s1".into()),
            gate_id: None,
            secret_sha256: None,
            disabled: false,
            created_at: Utc.timestamp_opt(0, 0).unwrap(),
        };
        assert!(matches!(
            base.into_device(),
            Err(StoreError::Corrupt { .. })
        ));
        let short = DeviceColumns {
            device_id: "d2".into(),
            kind: "observer".into(),
            lot_id: None,
            spot_id: None,
            gate_id: None,
            secret_sha256: Some(vec![1, 2, 3]),
            disabled: false,
            created_at: Utc.timestamp_opt(0, 0).unwrap(),
        };
        assert!(matches!(
            short.into_device(),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
