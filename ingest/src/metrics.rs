//! Ingest metrics: every message is counted once, wherever it ends.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Counters, gauges and histograms of the pipeline.
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    /// Messages taken from the broker, by channel (`state`, `heartbeat`, `status`, `other`).
    pub received: IntCounterVec,
    /// Messages rejected, by reason.
    pub rejected: IntCounterVec,
    /// Duplicates dropped, by kind (`duplicate`, `stale`).
    pub duplicates: IntCounterVec,
    /// Messages lost, by reason (`queue_full`, `write_failed`).
    pub lost: IntCounterVec,
    /// Messages waiting in the queue.
    pub queue_depth: IntGauge,
    /// Batches committed.
    pub batches: IntCounter,
    /// Rows committed, by table.
    pub rows_written: IntCounterVec,
    /// Time to commit one batch.
    pub batch_write_seconds: Histogram,
    /// From the device's `ts` to the commit of its row.
    pub publish_to_commit_seconds: Histogram,
    /// Failed write attempts (each retried until the limit).
    pub write_errors: IntCounter,
}

impl IngestMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let received = IntCounterVec::new(
            Opts::new(
                "parkd_ingest_received_total",
                "Device messages taken from the broker",
            ),
            &["channel"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "parkd_ingest_rejected_total",
                "Device messages rejected, by reason",
            ),
            &["reason"],
        )?;
        let duplicates = IntCounterVec::new(
            Opts::new(
                "parkd_ingest_duplicates_total",
                "Device messages dropped as already seen (seq window)",
            ),
            &["kind"],
        )?;
        let lost = IntCounterVec::new(
            Opts::new(
                "parkd_ingest_lost_total",
                "Valid device messages lost before storage, by reason",
            ),
            &["reason"],
        )?;
        let queue_depth = IntGauge::new(
            "parkd_ingest_queue_depth",
            "Device messages waiting between the broker and the batcher",
        )?;
        let batches = IntCounter::new("parkd_ingest_batches_total", "Batches committed")?;
        let rows_written = IntCounterVec::new(
            Opts::new(
                "parkd_ingest_rows_written_total",
                "Rows committed, by table",
            ),
            &["table"],
        )?;
        let batch_write_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "parkd_ingest_batch_write_seconds",
                "Time to commit one batch",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )?;
        let publish_to_commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "parkd_ingest_publish_to_commit_seconds",
                "From the device timestamp to the commit of its row",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let write_errors = IntCounter::new(
            "parkd_ingest_write_errors_total",
            "Failed batch write attempts (retried)",
        )?;
        for collector in [
            Box::new(received.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rejected.clone()),
            Box::new(duplicates.clone()),
            Box::new(lost.clone()),
            Box::new(queue_depth.clone()),
            Box::new(batches.clone()),
            Box::new(rows_written.clone()),
            Box::new(batch_write_seconds.clone()),
            Box::new(publish_to_commit_seconds.clone()),
            Box::new(write_errors.clone()),
        ] {
            registry.register(collector)?;
        }
        Ok(Self {
            received,
            rejected,
            duplicates,
            lost,
            queue_depth,
            batches,
            rows_written,
            batch_write_seconds,
            publish_to_commit_seconds,
            write_errors,
        })
    }

    /// Messages accounted for so far: rows stored + rejects + duplicates + losses. Equals the
    /// messages published once the pipeline is idle.
    pub fn accounted(&self) -> u64 {
        let sum = |vec: &IntCounterVec, labels: &[&str]| -> u64 {
            labels
                .iter()
                .map(|label| vec.with_label_values(&[label]).get())
                .sum()
        };
        sum(
            &self.rows_written,
            &[
                "spot_readings",
                "device_heartbeats",
                "device_status_changes",
            ],
        ) + sum(&self.rejected, crate::pipeline::REJECT_REASONS)
            + sum(&self.duplicates, &["duplicate", "stale"])
            + sum(&self.lost, &["queue_full", "write_failed", "shutdown"])
    }
}
