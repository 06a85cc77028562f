//! Which vehicle may use which spot: the compatibility table.
//!
//! Spots have one [`SpotKind`]; drivers ask for a [`VehicleType`]. Availability is reported per
//! vehicle type by summing the free spots of every kind that type may use, so the answer to
//! "is there room for my EV" counts the EV bays *and* the ordinary bays an EV may take.
//!
//! | vehicle \ spot | motorcycle | compact | standard | large | accessible | ev |
//! |----------------|:----------:|:-------:|:--------:|:-----:|:----------:|:--:|
//! | motorcycle     | yes        |         |          |       |            |    |
//! | compact        |            | yes     | yes      | yes   |            |    |
//! | car            |            |         | yes      | yes   |            |    |
//! | van            |            |         |          | yes   |            |    |
//! | ev             |            |         | yes      | yes   |            | yes|
//! | accessible     |            |         | yes      | yes   | yes        |    |
//!
//! The rules behind it:
//! - motorcycles use motorcycle bays only (operators keep bikes out of car bays, and a car
//!   cannot fit a motorcycle bay);
//! - a compact car fits compact, standard and large bays; a car standard and large; a van (or
//!   anything over the standard bay's size) only large bays;
//! - accessible bays are for holders of an accessible-parking permit, who may also use any
//!   standard or large bay; an accessible permit holder in an EV is `accessible`;
//! - EV bays (with a charger) are for electric cars while charging, which may also use any
//!   standard or large bay. A compact EV asks as `ev`.
//!
//! The table is data ([`fits`]), documented here and in `docs/live.md`; every count in the
//! product derives from it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kind of a parking spot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SpotKind {
    /// An ordinary car bay.
    Standard,
    /// A short or narrow bay for small cars.
    Compact,
    /// A long or high bay for vans and large vehicles.
    Large,
    /// A motorcycle bay.
    Motorcycle,
    /// A wide bay with an access aisle, for accessible-permit holders.
    Accessible,
    /// A bay with a charger, for electric vehicles.
    Ev,
}

impl SpotKind {
    /// Every kind, in [`SpotKind::index`] order.
    pub const ALL: [SpotKind; 6] = [
        SpotKind::Standard,
        SpotKind::Compact,
        SpotKind::Large,
        SpotKind::Motorcycle,
        SpotKind::Accessible,
        SpotKind::Ev,
    ];

    /// A dense index `0..6`, for per-kind arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            SpotKind::Standard => "standard",
            SpotKind::Compact => "compact",
            SpotKind::Large => "large",
            SpotKind::Motorcycle => "motorcycle",
            SpotKind::Accessible => "accessible",
            SpotKind::Ev => "ev",
        }
    }
}

impl fmt::Display for SpotKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a driver asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum VehicleType {
    /// A motorcycle or scooter.
    Motorcycle,
    /// A small car.
    Compact,
    /// An ordinary car.
    Car,
    /// A van or other large vehicle.
    Van,
    /// An electric car that wants to charge.
    Ev,
    /// A car whose driver holds an accessible-parking permit.
    Accessible,
}

/// A vehicle-type name that is not in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown vehicle type {0:?} (expected one of: motorcycle, compact, car, van, ev, accessible)"
)]
pub struct UnknownVehicleType(pub String);

/// A spot-kind name that is not in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown spot kind {0:?} (expected one of: standard, compact, large, motorcycle, accessible, ev)"
)]
pub struct UnknownSpotKind(pub String);

impl FromStr for SpotKind {
    type Err = UnknownSpotKind;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        SpotKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == raw)
            .ok_or_else(|| UnknownSpotKind(raw.chars().take(32).collect()))
    }
}

impl VehicleType {
    /// Every vehicle type, in [`VehicleType::index`] order.
    pub const ALL: [VehicleType; 6] = [
        VehicleType::Motorcycle,
        VehicleType::Compact,
        VehicleType::Car,
        VehicleType::Van,
        VehicleType::Ev,
        VehicleType::Accessible,
    ];

    /// A dense index `0..6`, for per-type arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            VehicleType::Motorcycle => "motorcycle",
            VehicleType::Compact => "compact",
            VehicleType::Car => "car",
            VehicleType::Van => "van",
            VehicleType::Ev => "ev",
            VehicleType::Accessible => "accessible",
        }
    }

    /// The kind of spot it is priced on when its spot is not known: standard if it fits
    /// one, else the first kind it fits.
    pub fn usual_kind(self) -> SpotKind {
        if fits(self, SpotKind::Standard) {
            SpotKind::Standard
        } else {
            self.kinds().next().unwrap_or(SpotKind::Standard)
        }
    }

    /// The spot kinds this vehicle may use.
    pub fn kinds(self) -> impl Iterator<Item = SpotKind> {
        SpotKind::ALL
            .into_iter()
            .filter(move |kind| fits(self, *kind))
    }
}

impl fmt::Display for VehicleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VehicleType {
    type Err = UnknownVehicleType;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        VehicleType::ALL
            .into_iter()
            .find(|vehicle| vehicle.as_str() == raw)
            .ok_or_else(|| UnknownVehicleType(raw.chars().take(32).collect()))
    }
}

/// Whether `vehicle` may use a spot of `kind`. The table in the module documentation.
pub const fn fits(vehicle: VehicleType, kind: SpotKind) -> bool {
    use SpotKind as K;
    use VehicleType as V;
    matches!(
        (vehicle, kind),
        (V::Motorcycle, K::Motorcycle)
            | (V::Compact, K::Compact | K::Standard | K::Large)
            | (V::Car, K::Standard | K::Large)
            | (V::Van, K::Large)
            | (V::Ev, K::Ev | K::Standard | K::Large)
            | (V::Accessible, K::Accessible | K::Standard | K::Large)
    )
}

/// The kinds reserved for one need: a vehicle of another type may never use them.
pub const fn is_dedicated(kind: SpotKind) -> bool {
    matches!(
        kind,
        SpotKind::Motorcycle | SpotKind::Accessible | SpotKind::Ev
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vehicle_fits_somewhere_and_every_kind_serves_someone() {
        for vehicle in VehicleType::ALL {
            assert!(vehicle.kinds().count() > 0, "{vehicle} fits nowhere");
        }
        for kind in SpotKind::ALL {
            assert!(
                VehicleType::ALL.into_iter().any(|v| fits(v, kind)),
                "{kind} serves nobody"
            );
        }
    }

    #[test]
    fn dedicated_kinds_serve_only_their_need() {
        assert!(!fits(VehicleType::Car, SpotKind::Accessible));
        assert!(!fits(VehicleType::Car, SpotKind::Ev));
        assert!(!fits(VehicleType::Car, SpotKind::Motorcycle));
        assert!(!fits(VehicleType::Van, SpotKind::Standard));
        assert!(fits(VehicleType::Accessible, SpotKind::Accessible));
        assert!(fits(VehicleType::Ev, SpotKind::Ev));
        for kind in SpotKind::ALL.into_iter().filter(|k| is_dedicated(*k)) {
            let users: Vec<_> = VehicleType::ALL
                .into_iter()
                .filter(|v| fits(*v, kind))
                .collect();
            assert_eq!(users.len(), 1, "{kind} is dedicated but serves {users:?}");
        }
    }

    #[test]
    fn indexes_are_dense_and_names_round_trip() {
        for (i, kind) in SpotKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
            assert_eq!(kind.as_str().parse::<SpotKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        for (i, vehicle) in VehicleType::ALL.into_iter().enumerate() {
            assert_eq!(vehicle.index(), i);
            assert_eq!(vehicle.as_str().parse::<VehicleType>(), Ok(vehicle));
        }
        assert!("truck".parse::<VehicleType>().is_err());
        assert!("EV".parse::<VehicleType>().is_err(), "names are exact");
    }
}
