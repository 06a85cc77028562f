//! The device registry as the broker and the operator see it.
//!
//! - [`StoreCredentials`] answers the embedded broker's login checks from the store.
//! - [`new_secret`] makes a device secret: 256 random bits, shown once, stored as SHA-256.
//! - [`seed_demo_sensors`] and [`seed_demo_gates`] register the simulated garage's sensors
//!   and gates for `parkd demo`.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use parkd_broker::auth::{CredentialSource, DeviceCredential};
use parkd_core::ids::{DeviceId, GateId, LotId};
use parkd_core::topic::Grant;
use parkd_store::{Device, DeviceBinding, Store, StoreResult};
use rand::RngCore;

/// The broker's view of the registry.
#[derive(Debug, Clone)]
pub struct StoreCredentials(pub Arc<dyn Store>);

#[async_trait]
impl CredentialSource for StoreCredentials {
    async fn credential(&self, device: &DeviceId) -> Result<Option<DeviceCredential>, String> {
        let found = self
            .0
            .device(device)
            .await
            .map_err(|error| error.to_string())?;
        Ok(found.map(|device| DeviceCredential {
            grant: grant_of(&device.binding),
            secret_sha256: device.secret_sha256,
            disabled: device.disabled,
        }))
    }
}

/// What a device bound this way may do over MQTT.
pub fn grant_of(binding: &DeviceBinding) -> Grant {
    match binding {
        DeviceBinding::Spot { lot, spot } => Grant::Sensor {
            lot: lot.clone(),
            spot: spot.clone(),
        },
        DeviceBinding::Gate { lot, gate } => Grant::Gate {
            lot: lot.clone(),
            gate: gate.clone(),
        },
        DeviceBinding::Observer => Grant::Observer,
    }
}

/// A new device secret: 32 random bytes from the OS generator, hex-encoded.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Registers one sensor per simulated spot (no secret: the demo broker admits anonymous
/// clients, and ingest still checks that each spot has a registered sensor). Existing devices
/// are left as they are. Returns how many were added.
pub async fn seed_demo_sensors(store: &dyn Store, lot: &LotId, spots: u32) -> StoreResult<usize> {
    let existing = store.devices().await?;
    let mut added = 0;
    for index in 0..spots {
        let Ok(spot) = parkd_sim::fleet::spot_id(index, 100) else {
            continue;
        };
        let Ok(id) = parkd_sim::fleet::sensor_device_id(lot, &spot) else {
            continue;
        };
        if existing.iter().any(|device| device.id == id) {
            continue;
        }
        store
            .upsert_device(&Device {
                id,
                binding: DeviceBinding::Spot {
                    lot: lot.clone(),
                    spot,
                },
                secret_sha256: None,
                disabled: false,
                created_at: Utc::now(),
            })
            .await?;
        added += 1;
    }
    Ok(added)
}

/// Registers the simulated gates of `lot` (device ids `{lot}-g-{gate}`, no secret, as the demo
/// sensors: the platform answers only registered gates). Existing devices are left as they
/// are. Returns how many were added.
pub async fn seed_demo_gates(
    store: &dyn Store,
    lot: &LotId,
    gates: &[GateId],
) -> StoreResult<usize> {
    let existing = store.devices().await?;
    let mut added = 0;
    for gate in gates {
        let Ok(id) = parkd_sim::gates::gate_device_id(lot, gate) else {
            continue;
        };
        if existing.iter().any(|device| device.id == id) {
            continue;
        }
        store
            .upsert_device(&Device {
                id,
                binding: DeviceBinding::Gate {
                    lot: lot.clone(),
                    gate: gate.clone(),
                },
                secret_sha256: None,
                disabled: false,
                created_at: Utc::now(),
            })
            .await?;
        added += 1;
    }
    Ok(added)
}
