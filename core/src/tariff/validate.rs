//! [`Tariff::validate`]: everything serde cannot check, each failure naming its field.

use chrono::Weekday;

use super::engine::{DEN, overlap, unit_numerator};
use super::{
    CancellationPolicy, EvAdjustment, FULL_BP, MAX_AMOUNT, MAX_BANDS, MAX_CANCEL_HOURS,
    MAX_GRACE_MINUTES, MAX_NAME, Money, NoShowFee, OverstayCharge, Rate, RateTable, Tariff,
    TariffError, TimeOfDay,
};
use crate::vehicle::SpotKind;

/// Largest EV surcharge, basis points (+1000 %).
const MAX_EV_BP: i64 = 100_000;
/// Largest overstay multiplier, basis points (10 times).
const MAX_OVERSTAY_BP: i64 = 100_000;

impl Tariff {
    /// Checks a tariff: amounts, units, bands, kinds, policies. The first problem found is
    /// returned, naming its field.
    pub fn validate(&self) -> Result<(), TariffError> {
        let unit = self.unit_minutes;
        if unit == 0 || unit > 1_440 || 1_440 % unit != 0 {
            return Err(TariffError::UnitMinutes(unit));
        }
        max_minutes("grace_minutes", self.grace_minutes, MAX_GRACE_MINUTES)?;
        table("rates", &self.rates, unit)?;
        let mut seen: Vec<(SpotKind, String)> = Vec::new();
        for (i, entry) in self.by_kind.iter().enumerate() {
            let path = format!("by_kind[{i}]");
            if entry.kinds.is_empty() {
                return Err(TariffError::Empty {
                    path: format!("{path}.kinds"),
                });
            }
            for (j, kind) in entry.kinds.iter().enumerate() {
                let here = format!("{path}.kinds[{j}]");
                if let Some((_, first)) = seen.iter().find(|(known, _)| known == kind) {
                    return Err(TariffError::DuplicateKind {
                        path: here,
                        kind: *kind,
                        first: first.clone(),
                    });
                }
                seen.push((*kind, here));
            }
            table(&format!("{path}.rates"), &entry.rates, unit)?;
        }
        match self.ev {
            None => {}
            Some(EvAdjustment::BasisPoints(bp)) => range(
                "ev.basis_points",
                i64::from(bp),
                -i64::from(FULL_BP),
                MAX_EV_BP,
            )?,
            Some(EvAdjustment::PerUnit(amount)) => {
                range("ev.per_unit", amount.0, -MAX_AMOUNT, MAX_AMOUNT)?
            }
        }
        if let Some(rule) = &self.overstay {
            max_minutes(
                "overstay.grace_minutes",
                rule.grace_minutes,
                MAX_GRACE_MINUTES,
            )?;
            // The price of one overstay unit at the default base rate, over DEN.
            let one_unit = match rule.charge {
                OverstayCharge::RateBasisPoints(bp) => {
                    range(
                        "overstay.charge.rate_basis_points",
                        i64::from(bp),
                        0,
                        MAX_OVERSTAY_BP,
                    )?;
                    unit_numerator(self.rates.base, unit)
                        .map(|price| price / i128::from(FULL_BP) * i128::from(bp))
                }
                OverstayCharge::Rate(rate) => {
                    rate_ok("overstay.charge.rate", rate)?;
                    unit_numerator(rate, unit)
                }
            };
            if let Some(cap) = rule.daily_max {
                cap_ok("overstay.daily_max", cap, one_unit.unwrap_or(0), unit)?;
            }
        }
        match self.no_show {
            NoShowFee::None | NoShowFee::ReservedPrice => {}
            NoShowFee::Flat(amount) => amount_ok("no_show.flat", amount)?,
            NoShowFee::BasisPoints(bp) => {
                range("no_show.basis_points", i64::from(bp), 0, i64::from(FULL_BP))?
            }
        }
        let CancellationPolicy {
            free_until_hours_before,
            late_refund_bp,
        } = self.cancellation;
        if free_until_hours_before > MAX_CANCEL_HOURS {
            return Err(TariffError::TooLarge {
                path: "cancellation.free_until_hours_before".into(),
                value: i64::from(free_until_hours_before),
                max: i64::from(MAX_CANCEL_HOURS),
            });
        }
        range(
            "cancellation.late_refund_bp",
            i64::from(late_refund_bp),
            0,
            i64::from(FULL_BP),
        )
    }
}

fn max_minutes(path: &str, minutes: u32, max: u32) -> Result<(), TariffError> {
    if minutes > max {
        return Err(TariffError::TooLarge {
            path: path.into(),
            value: i64::from(minutes),
            max: i64::from(max),
        });
    }
    Ok(())
}

fn range(path: &str, value: i64, min: i64, max: i64) -> Result<(), TariffError> {
    if value < min || value > max {
        return Err(TariffError::OutOfRange {
            path: path.into(),
            value,
            min,
            max,
        });
    }
    Ok(())
}

fn amount_ok(path: &str, amount: Money) -> Result<(), TariffError> {
    if amount.0 < 0 {
        return Err(TariffError::Negative {
            path: path.into(),
            value: amount.0,
        });
    }
    if amount.0 > MAX_AMOUNT {
        return Err(TariffError::TooLarge {
            path: path.into(),
            value: amount.0,
            max: MAX_AMOUNT,
        });
    }
    Ok(())
}

fn rate_ok(path: &str, rate: Rate) -> Result<(), TariffError> {
    match rate {
        Rate::PerHour(amount) => amount_ok(&format!("{path}.per_hour"), amount),
        Rate::PerUnit(amount) => amount_ok(&format!("{path}.per_unit"), amount),
    }
}

/// A maximum is positive and at least one unit (`one_unit`, over DEN) at the base rate.
fn cap_ok(path: &str, cap: Money, one_unit: i128, unit_minutes: u32) -> Result<(), TariffError> {
    amount_ok(path, cap)?;
    if cap.0 == 0 {
        return Err(TariffError::Zero { path: path.into() });
    }
    if i128::from(cap.0) * DEN < one_unit {
        let rounded_up = one_unit.div_euclid(DEN) + i128::from(one_unit.rem_euclid(DEN) != 0);
        return Err(TariffError::CapBelowOneUnit {
            path: path.into(),
            cap: cap.0,
            unit_minutes,
            unit_price: i64::try_from(rounded_up).unwrap_or(i64::MAX),
        });
    }
    Ok(())
}

fn table(path: &str, table: &RateTable, unit: u32) -> Result<(), TariffError> {
    rate_ok(&format!("{path}.base"), table.base)?;
    if table.bands.len() > MAX_BANDS {
        return Err(TariffError::TooMany {
            path: format!("{path}.bands"),
            max: MAX_BANDS,
        });
    }
    for (i, band) in table.bands.iter().enumerate() {
        let here = format!("{path}.bands[{i}]");
        if band.name.len() > MAX_NAME {
            return Err(TariffError::Text {
                path: format!("{here}.name"),
                problem: "longer than 64 bytes",
            });
        }
        if band.name.chars().any(char::is_control) {
            return Err(TariffError::Text {
                path: format!("{here}.name"),
                problem: "contains control characters",
            });
        }
        if band.days.is_empty() {
            return Err(TariffError::NoDays {
                path: format!("{here}.days"),
            });
        }
        for (j, day) in band.days.iter().enumerate() {
            if band.days[..j].contains(day) {
                return Err(TariffError::DuplicateDay {
                    path: format!("{here}.days[{j}]"),
                    day: *day,
                });
            }
        }
        rate_ok(&format!("{here}.rate"), band.rate)?;
        for (k, earlier) in table.bands[..i].iter().enumerate() {
            if let Some(week_second) = overlap(earlier, band) {
                let day = Weekday::try_from((week_second / 86_400) as u8).unwrap_or(Weekday::Mon);
                let minute = (week_second % 86_400 / 60) as u32;
                return Err(TariffError::OverlappingBands {
                    first: format!("{path}.bands[{k}]"),
                    second: here,
                    day,
                    at: TimeOfDay::new(minute / 60, minute % 60).unwrap_or(TimeOfDay::MIDNIGHT),
                });
            }
        }
    }
    if let Some(first) = table.first_period {
        let here = format!("{path}.first_period");
        if first.minutes == 0 {
            return Err(TariffError::Zero {
                path: format!("{here}.minutes"),
            });
        }
        max_minutes(&format!("{here}.minutes"), first.minutes, 1_440)?;
        if first.minutes % unit != 0 {
            return Err(TariffError::NotWholeUnits {
                path: format!("{here}.minutes"),
                minutes: first.minutes,
                unit_minutes: unit,
            });
        }
        amount_ok(&format!("{here}.amount"), first.amount)?;
    }
    if let Some(cap) = table.daily_max {
        let here = format!("{path}.daily_max");
        cap_ok(
            &here,
            cap,
            unit_numerator(table.base, unit).unwrap_or(0),
            unit,
        )?;
        if let Some(first) = table.first_period
            && first.amount > cap
        {
            return Err(TariffError::FirstPeriodAboveCap {
                path: format!("{path}.first_period.amount"),
                amount: first.amount.0,
                cap: cap.0,
            });
        }
    }
    Ok(())
}
