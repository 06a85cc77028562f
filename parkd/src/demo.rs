//! What `parkd demo` sets up besides the garage and its devices: the demo lot's tariff and the
//! pay station's account the simulated walk-ins pay with (docs/tariffs.md, "The demo's
//! tariff").

use anyhow::Context;
use parkd_api::auth::Accounts;
use parkd_core::account::{Email, Role};
use parkd_core::clock::Clock;
use parkd_core::ids::LotId;
use parkd_core::tariff::Tariff;
use parkd_store::Store;

/// The demo lot's tariff: the customer's garage tariff (docs/tariffs.md) without the free
/// first 15 minutes. The platform bills real time while the demo compresses a day into
/// minutes, so with the grace every simulated stay would be free.
pub const DEMO_TARIFF: &str = r#"{
  "currency": "EUR",
  "unit_minutes": 15,
  "grace_minutes": 0,
  "rates": {
    "base": { "per_hour": 250 },
    "bands": [
      {
        "name": "evening",
        "days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
        "start": "20:00",
        "end": "07:00",
        "rate": { "per_hour": 100 }
      }
    ],
    "daily_max": 2000
  },
  "by_kind": [
    { "kinds": ["motorcycle"], "rates": { "base": { "per_hour": 100 }, "daily_max": 800 } },
    { "kinds": ["accessible"], "rates": { "base": { "per_hour": 0 } } }
  ],
  "ev": { "basis_points": 1000 },
  "overstay": { "grace_minutes": 10, "charge": { "rate_basis_points": 15000 } },
  "no_show": "reserved_price",
  "cancellation": { "free_until_hours_before": 24, "late_refund_bp": 5000 }
}"#;

/// The e-mail of the demo's pay-station account (an operator).
pub const PAY_STATION_EMAIL: &str = "pay-station@demo.parkd.example";

/// Stores [`DEMO_TARIFF`] for `lot` if it has no tariff; `true` if it did. A tariff set
/// earlier (by an operator, or a previous run) is left as it is.
pub async fn seed_demo_tariff(
    store: &dyn Store,
    lot: &LotId,
    clock: &dyn Clock,
) -> anyhow::Result<bool> {
    if store.tariff(lot).await?.is_some() {
        return Ok(false);
    }
    Tariff::from_json(DEMO_TARIFF.as_bytes())
        .map_err(|error| anyhow::anyhow!("the demo tariff is invalid: {error}"))?;
    store.put_tariff(lot, DEMO_TARIFF, clock.now()).await?;
    Ok(true)
}

/// The pay station's account for the simulator: an operator, created the first time and
/// given a fresh random password on every start (the password lives only in this process:
/// it is handed to the simulator and never printed). `None` if an operator disabled the
/// account: the simulated drivers then do not pay.
pub async fn pay_station(accounts: &Accounts) -> anyhow::Result<Option<parkd_sim::Login>> {
    let email = Email::parse(PAY_STATION_EMAIL).context("the pay station's e-mail")?;
    let password = random_password();
    let store = accounts.store();
    match store.user_by_email(&email).await? {
        Some(user) if user.disabled => {
            tracing::warn!(%email, "the demo pay station's account is disabled: the simulated drivers do not pay");
            return Ok(None);
        }
        Some(user) => {
            let hash = accounts
                .hash_password(&password)
                .await
                .map_err(|error| anyhow::anyhow!("hashing the pay station's password: {error}"))?;
            store
                .set_password(&user.id, &hash, accounts.now(), None)
                .await?;
            if user.role != Role::Operator {
                store.set_role(&user.id, Role::Operator).await?;
            }
        }
        None => {
            accounts
                .create_user(
                    &email,
                    &password,
                    Role::Operator,
                    "Demo pay station (simulator)",
                )
                .await
                .map_err(|problem| {
                    anyhow::anyhow!(
                        "creating the demo pay station's account: {}",
                        problem.detail.unwrap_or(problem.title)
                    )
                })?;
            tracing::info!(%email, "demo pay station account created");
        }
    }
    Ok(Some(parkd_sim::Login::new(email.to_string(), password)))
}

/// 144 random bits, hex (as `parkd admin create-user` makes them).
fn random_password() -> String {
    let mut bytes = [0u8; 18];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_tariff_is_valid() {
        let tariff = Tariff::from_json(DEMO_TARIFF.as_bytes()).unwrap();
        assert_eq!(tariff.currency.as_str(), "EUR");
        assert!(Email::parse(PAY_STATION_EMAIL).is_ok());
        let password = random_password();
        assert!(
            parkd_core::account::check_password(
                &password,
                Email::parse(PAY_STATION_EMAIL).ok().as_ref()
            )
            .is_ok()
        );
    }
}
