-- Plain PostgreSQL (no TimescaleDB): hourly occupancy as an ordinary view, computed on read.
-- Same name and columns as the continuous aggregate in timescale/0001_setup.sql, so queries
-- and dashboards work on both. Buckets are whole UTC hours, like time_bucket's.
-- Run by the PostgreSQL backend at every start, in one transaction; idempotent.

CREATE OR REPLACE VIEW hourly_occupancy AS
SELECT
    date_trunc('hour', received_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket,
    lot_id,
    spot_id,
    count(*) AS readings,
    avg(occupied::integer::double precision) AS occupied_share
FROM spot_readings
GROUP BY 1, 2, 3;
