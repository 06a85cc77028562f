-- Telemetry arrives in receive-time order, so a BRIN index (a few pages per table) answers the
-- time-range scans that need it (retention deletes, hourly rollups) at a fraction of a B-tree's
-- cost on every insert. The per-spot and per-device B-trees stay: they serve "latest readings of
-- this spot". Measured with parkd-bench (bench/results/FINDINGS.md).
DROP INDEX IF EXISTS spot_readings_time;
CREATE INDEX spot_readings_time_brin ON spot_readings USING brin (received_at);
DROP INDEX IF EXISTS device_heartbeats_time;
CREATE INDEX device_heartbeats_time_brin ON device_heartbeats USING brin (received_at);
DROP INDEX IF EXISTS device_status_changes_time;
CREATE INDEX device_status_changes_time_brin ON device_status_changes USING brin (received_at);
