//! Which device owns which spot, in memory, for the per-message "unknown device" check.
//!
//! Loaded from the store at start and reloaded periodically (devices added with
//! `parkd device add` in another process appear within the reload period). The batcher takes
//! one snapshot per batch, so a message costs a hash lookup and no lock.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use parkd_core::ids::{DeviceId, LotId, SpotId};
use parkd_store::{DeviceBinding, DeviceStore, StoreResult};

/// The owner of a spot topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpotOwner {
    /// The sensor bound to the spot.
    pub(crate) device: DeviceId,
    /// Whether it is disabled.
    pub(crate) disabled: bool,
}

/// An immutable view of the registry.
pub(crate) type SpotOwners = HashMap<(LotId, SpotId), SpotOwner>;

/// The registry snapshot shared by the batcher and the reload task.
#[derive(Debug, Default)]
pub struct DeviceIndex {
    current: RwLock<Arc<SpotOwners>>,
}

impl DeviceIndex {
    /// An index loaded from `store`.
    pub async fn load(store: &dyn DeviceStore) -> StoreResult<Self> {
        let index = Self::default();
        index.reload(store).await?;
        Ok(index)
    }

    /// Reloads from `store`; returns the number of spot sensors.
    pub async fn reload(&self, store: &dyn DeviceStore) -> StoreResult<usize> {
        let mut owners = SpotOwners::new();
        for device in store.devices().await? {
            if let DeviceBinding::Spot { lot, spot } = device.binding {
                owners.insert(
                    (lot, spot),
                    SpotOwner {
                        device: device.id,
                        disabled: device.disabled,
                    },
                );
            }
        }
        let count = owners.len();
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(owners);
        Ok(count)
    }

    /// The current snapshot.
    pub(crate) fn snapshot(&self) -> Arc<SpotOwners> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
