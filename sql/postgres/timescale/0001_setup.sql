-- TimescaleDB features for the telemetry tables of 0002_telemetry.sql.
-- Run by the PostgreSQL backend at every start, in one transaction, only when the
-- timescaledb extension is available and could be created; every statement is idempotent.
-- The caller sets the transaction-local setting parkd.retention_days first (0 = keep forever).

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- Hypertables on the receive time, one-day chunks. Existing rows move into chunks; our own
-- indexes from 0002 stay, so Timescale's default time index is not added.
SELECT create_hypertable('spot_readings', 'received_at',
    chunk_time_interval => INTERVAL '1 day', create_default_indexes => false,
    if_not_exists => true, migrate_data => true);
SELECT create_hypertable('device_heartbeats', 'received_at',
    chunk_time_interval => INTERVAL '1 day', create_default_indexes => false,
    if_not_exists => true, migrate_data => true);
SELECT create_hypertable('device_status_changes', 'received_at',
    chunk_time_interval => INTERVAL '1 day', create_default_indexes => false,
    if_not_exists => true, migrate_data => true);

-- Compression: readings segmented by lot, the device series by device. Settings can only be
-- set while no chunk is compressed, so they are set once.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                   WHERE hypertable_schema = current_schema()
                     AND hypertable_name = 'spot_readings' AND compression_enabled) THEN
        ALTER TABLE spot_readings SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'lot_id',
            timescaledb.compress_orderby = 'spot_id, received_at DESC');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                   WHERE hypertable_schema = current_schema()
                     AND hypertable_name = 'device_heartbeats' AND compression_enabled) THEN
        ALTER TABLE device_heartbeats SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'device_id',
            timescaledb.compress_orderby = 'received_at DESC');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                   WHERE hypertable_schema = current_schema()
                     AND hypertable_name = 'device_status_changes' AND compression_enabled) THEN
        ALTER TABLE device_status_changes SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'device_id',
            timescaledb.compress_orderby = 'received_at DESC');
    END IF;
END
$$;

SELECT add_compression_policy('spot_readings', INTERVAL '7 days', if_not_exists => true);
SELECT add_compression_policy('device_heartbeats', INTERVAL '7 days', if_not_exists => true);
SELECT add_compression_policy('device_status_changes', INTERVAL '7 days', if_not_exists => true);

-- Retention: dropped and re-added so that a changed setting applies.
SELECT remove_retention_policy('spot_readings', if_exists => true);
SELECT remove_retention_policy('device_heartbeats', if_exists => true);
SELECT remove_retention_policy('device_status_changes', if_exists => true);
SELECT add_retention_policy('spot_readings',
        make_interval(days => current_setting('parkd.retention_days')::integer))
 WHERE current_setting('parkd.retention_days')::integer > 0;
SELECT add_retention_policy('device_heartbeats',
        make_interval(days => current_setting('parkd.retention_days')::integer))
 WHERE current_setting('parkd.retention_days')::integer > 0;
SELECT add_retention_policy('device_status_changes',
        make_interval(days => current_setting('parkd.retention_days')::integer))
 WHERE current_setting('parkd.retention_days')::integer > 0;

-- Hourly occupancy as a continuous aggregate. A plain view of that name (left by a start on
-- plain PostgreSQL) is replaced. Real-time aggregation adds the not yet materialized hours.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_views
               WHERE schemaname = current_schema() AND viewname = 'hourly_occupancy')
       AND NOT EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
                       WHERE view_schema = current_schema() AND view_name = 'hourly_occupancy') THEN
        DROP VIEW hourly_occupancy;
    END IF;
END
$$;

CREATE MATERIALIZED VIEW IF NOT EXISTS hourly_occupancy
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
    time_bucket(INTERVAL '1 hour', received_at) AS bucket,
    lot_id,
    spot_id,
    count(*) AS readings,
    avg(occupied::integer::double precision) AS occupied_share
FROM spot_readings
GROUP BY time_bucket(INTERVAL '1 hour', received_at), lot_id, spot_id
WITH NO DATA;

SELECT add_continuous_aggregate_policy('hourly_occupancy',
    start_offset => INTERVAL '3 days',
    end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes',
    if_not_exists => true);
