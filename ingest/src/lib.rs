//! Telemetry ingest: broker → validate → de-duplicate → batch → store.
//!
//! ```text
//!  broker thread ──try_send──▶ bounded queue ──▶ batcher task ──(batches)──▶ writer task(s) ──▶ store
//!   (IngestSink)      full? count `queue_full`     decode, dedup, build          one transaction,
//!                                                  rows; flush on size or time   retried, then counted
//! ```
//!
//! - The broker side never waits: [`IngestSink::deliver`] is a `try_send`, and a full queue
//!   drops the message and counts it as lost (`parkd_ingest_lost_total{reason="queue_full"}`).
//! - The batcher owns all mutable state (the de-dup windows), so nothing is locked per message.
//!   While the writers commit the batcher builds the next batch; on PostgreSQL two writers
//!   commit concurrently (`ingest.writers`).
//! - Every message ends in exactly one place: a stored row, a counted reject, a counted
//!   duplicate or a counted loss. The tests and the benchmark check that sum.
//! - Shutdown drains: after the token fires, what is queued is batched and written before
//!   [`Ingest::join`] returns.
//!
//! This crate must not know how the store writes, nor how the broker runs.

mod metrics;
mod pipeline;
mod registry;

pub use metrics::IngestMetrics;
pub use pipeline::{Ingest, IngestSettings, IngestSink, ReadingObserver};
pub use registry::DeviceIndex;

/// Errors of the ingest pipeline.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The device registry could not be loaded.
    #[error("cannot load the device registry: {0}")]
    Registry(#[from] parkd_store::StoreError),
    /// Metrics could not be registered (a name clash: a bug).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Invalid settings.
    #[error("invalid ingest settings: {0}")]
    Settings(String),
}
