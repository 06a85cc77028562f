//! A store decorator that times what the pipeline commits.
//!
//! After each successful [`TelemetryStore::write_batch`] it takes the commit time and records,
//! for every reading, `commit_time - device_ts` in microseconds (the device timestamp is what
//! the load generator put in the message: its send time, in whole milliseconds). It also keeps
//! the earliest device timestamp (the first publish) and the latest commit, and the duration
//! and size of every batch, so the report can say how busy the writer was.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parkd_core::account::{Email, Role};
use parkd_core::garage::Lot;
use parkd_core::ids::{DeviceId, LotId, SpotId};
use parkd_store::{
    AccountStore, Device, DeviceStatusRow, DeviceStore, GarageStore, SessionRow, SpotLatest,
    SpotReading, Store, StoreResult, TelemetryBatch, TelemetryStore, User, VehicleRow,
};

/// What the decorator saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct Timings {
    /// `commit - device_ts` of every committed reading that had a device timestamp, µs.
    pub(crate) latencies_us: Vec<i64>,
    /// Committed readings without a (plausible) device timestamp.
    pub(crate) readings_without_ts: u64,
    /// The earliest device timestamp committed, µs since the epoch.
    pub(crate) first_device_ts_us: Option<i64>,
    /// The latest commit, µs since the epoch.
    pub(crate) last_commit_us: Option<i64>,
    /// Duration of every successful `write_batch`, µs.
    pub(crate) batch_write_us: Vec<i64>,
    /// Rows of every successful batch.
    pub(crate) batch_rows: Vec<usize>,
    /// Failed `write_batch` calls (the pipeline retries them).
    pub(crate) failed_writes: u64,
}

/// The decorator.
#[derive(Debug)]
pub(crate) struct TimedStore {
    inner: Arc<dyn Store>,
    timings: Mutex<Timings>,
}

impl TimedStore {
    pub(crate) fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            timings: Mutex::new(Timings::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Timings> {
        self.timings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes what was recorded so far.
    pub(crate) fn take(&self) -> Timings {
        std::mem::take(&mut *self.lock())
    }
}

#[async_trait]
impl DeviceStore for TimedStore {
    async fn upsert_device(&self, device: &Device) -> StoreResult<()> {
        self.inner.upsert_device(device).await
    }
    async fn device(&self, id: &DeviceId) -> StoreResult<Option<Device>> {
        self.inner.device(id).await
    }
    async fn devices(&self) -> StoreResult<Vec<Device>> {
        self.inner.devices().await
    }
    async fn set_device_disabled(&self, id: &DeviceId, disabled: bool) -> StoreResult<bool> {
        self.inner.set_device_disabled(id, disabled).await
    }
    async fn delete_device(&self, id: &DeviceId) -> StoreResult<bool> {
        self.inner.delete_device(id).await
    }
}

#[async_trait]
impl TelemetryStore for TimedStore {
    async fn write_batch(&self, batch: &TelemetryBatch) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.write_batch(batch).await;
        let commit_us = Utc::now().timestamp_micros();
        let took_us = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
        let mut timings = self.lock();
        if result.is_err() {
            timings.failed_writes += 1;
            return result;
        }
        timings.batch_write_us.push(took_us);
        timings.batch_rows.push(batch.len());
        timings.last_commit_us = Some(
            timings
                .last_commit_us
                .map_or(commit_us, |t| t.max(commit_us)),
        );
        timings.latencies_us.reserve(batch.readings.len());
        for reading in &batch.readings {
            match reading.device_ts {
                Some(ts) => {
                    let ts_us = ts.timestamp_micros();
                    timings.latencies_us.push(commit_us - ts_us);
                    timings.first_device_ts_us =
                        Some(timings.first_device_ts_us.map_or(ts_us, |t| t.min(ts_us)));
                }
                None => timings.readings_without_ts += 1,
            }
        }
        result
    }
    async fn latest_spot_states(&self) -> StoreResult<Vec<SpotLatest>> {
        self.inner.latest_spot_states().await
    }
    async fn device_statuses(&self) -> StoreResult<Vec<DeviceStatusRow>> {
        self.inner.device_statuses().await
    }
    async fn spot_readings(
        &self,
        lot: &LotId,
        spot: &SpotId,
        limit: u32,
    ) -> StoreResult<Vec<SpotReading>> {
        self.inner.spot_readings(lot, spot, limit).await
    }
    async fn count_readings(&self) -> StoreResult<u64> {
        self.inner.count_readings().await
    }
    async fn enforce_retention(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.inner.enforce_retention(before).await
    }
}

#[async_trait]
impl GarageStore for TimedStore {
    async fn put_lot(&self, lot: &Lot) -> StoreResult<i64> {
        self.inner.put_lot(lot).await
    }
    async fn lot(&self, id: &LotId) -> StoreResult<Option<Lot>> {
        self.inner.lot(id).await
    }
    async fn lots(&self) -> StoreResult<Vec<Lot>> {
        self.inner.lots().await
    }
    async fn lot_versions(&self) -> StoreResult<Vec<(LotId, i64)>> {
        self.inner.lot_versions().await
    }
    async fn delete_lot(&self, id: &LotId) -> StoreResult<bool> {
        self.inner.delete_lot(id).await
    }
}

/// Accounts pass straight through (the ingest benchmark never uses them).
#[async_trait]
impl AccountStore for TimedStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        self.inner.create_user(user).await
    }
    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        self.inner.user(id).await
    }
    async fn user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        self.inner.user_by_email(email).await
    }
    async fn users(&self) -> StoreResult<Vec<User>> {
        self.inner.users().await
    }
    async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        at: DateTime<Utc>,
        keep: Option<&str>,
    ) -> StoreResult<u64> {
        self.inner
            .set_password(user_id, password_hash, at, keep)
            .await
    }
    async fn set_user_disabled(
        &self,
        user_id: &str,
        disabled: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.inner.set_user_disabled(user_id, disabled, at).await
    }
    async fn set_role(&self, user_id: &str, role: Role) -> StoreResult<bool> {
        self.inner.set_role(user_id, role).await
    }
    async fn create_session(&self, session: &SessionRow) -> StoreResult<()> {
        self.inner.create_session(session).await
    }
    async fn session_by_token(
        &self,
        token_sha256: &[u8; 32],
    ) -> StoreResult<Option<(SessionRow, User)>> {
        self.inner.session_by_token(token_sha256).await
    }
    async fn touch_session(&self, session_id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        self.inner.touch_session(session_id, at).await
    }
    async fn revoke_session(
        &self,
        user_id: &str,
        session_id: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<bool> {
        self.inner
            .revoke_session(user_id, session_id, at, reason)
            .await
    }
    async fn active_sessions(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionRow>> {
        self.inner.active_sessions(user_id, now).await
    }
    async fn add_vehicle(&self, vehicle: &VehicleRow) -> StoreResult<()> {
        self.inner.add_vehicle(vehicle).await
    }
    async fn vehicles(&self, user_id: &str) -> StoreResult<Vec<VehicleRow>> {
        self.inner.vehicles(user_id).await
    }
    async fn delete_vehicle(&self, user_id: &str, vehicle_id: &str) -> StoreResult<bool> {
        self.inner.delete_vehicle(user_id, vehicle_id).await
    }
}

parkd_store::forward_reservation_store!(impl[] for TimedStore, inner);

parkd_store::forward_idempotency_store!(impl[] for TimedStore, inner);

parkd_store::forward_gate_store!(impl[] for TimedStore, inner);
parkd_store::forward_payment_store!(impl[] for TimedStore, inner);

#[async_trait]
impl Store for TimedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    fn timescale(&self) -> bool {
        self.inner.timescale()
    }
}

/// Exact percentiles of sorted samples (nearest rank).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Percentiles {
    pub(crate) count: usize,
    pub(crate) p50: i64,
    pub(crate) p90: i64,
    pub(crate) p99: i64,
    pub(crate) p999: i64,
    pub(crate) max: i64,
}

impl Percentiles {
    /// Sorts `samples` and takes the nearest-rank percentiles; `None` when empty.
    pub(crate) fn of(samples: &mut [i64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |q: f64| {
            let index = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            samples[index]
        };
        Some(Self {
            count: n,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            p999: rank(0.999),
            max: samples[n - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Percentiles;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<i64> = (1..=1000).rev().collect();
        let p = Percentiles::of(&mut samples).expect("samples");
        assert_eq!(
            (p.count, p.p50, p.p90, p.p99, p.p999, p.max),
            (1000, 500, 900, 990, 999, 1000)
        );
        let mut one = vec![7];
        let p = Percentiles::of(&mut one).expect("one sample");
        assert_eq!((p.p50, p.p999, p.max), (7, 7, 7));
        assert!(Percentiles::of(&mut []).is_none());
    }
}
