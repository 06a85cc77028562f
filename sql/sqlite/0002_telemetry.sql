-- Telemetry (SQLite twin of postgres/0002_telemetry.sql): three append-only time series
-- keyed by the receive time, and two current-state tables. No foreign keys to devices:
-- telemetry outlives a deleted device.
-- Timestamps are integer Unix microseconds; booleans are 0/1.

CREATE TABLE spot_readings (
    received_at INTEGER NOT NULL,
    device_ts   INTEGER,
    lot_id      TEXT NOT NULL,
    spot_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    occupied    INTEGER NOT NULL CHECK (occupied IN (0, 1)),
    seq         INTEGER,
    battery_mv  INTEGER,
    rssi        INTEGER
) STRICT;
CREATE INDEX spot_readings_spot_time ON spot_readings (lot_id, spot_id, received_at DESC);
CREATE INDEX spot_readings_time ON spot_readings (received_at);

CREATE TABLE device_heartbeats (
    received_at INTEGER NOT NULL,
    device_ts   INTEGER,
    device_id   TEXT NOT NULL,
    battery_mv  INTEGER,
    rssi        INTEGER,
    uptime_s    INTEGER,
    firmware    TEXT
) STRICT;
CREATE INDEX device_heartbeats_device_time ON device_heartbeats (device_id, received_at DESC);
CREATE INDEX device_heartbeats_time ON device_heartbeats (received_at);

CREATE TABLE device_status_changes (
    received_at INTEGER NOT NULL,
    device_id   TEXT NOT NULL,
    online      INTEGER NOT NULL CHECK (online IN (0, 1))
) STRICT;
CREATE INDEX device_status_changes_device_time ON device_status_changes (device_id, received_at DESC);
CREATE INDEX device_status_changes_time ON device_status_changes (received_at);

CREATE TABLE spot_latest (
    lot_id      TEXT NOT NULL,
    spot_id     TEXT NOT NULL,
    occupied    INTEGER NOT NULL CHECK (occupied IN (0, 1)),
    received_at INTEGER NOT NULL,
    PRIMARY KEY (lot_id, spot_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE device_status (
    device_id  TEXT PRIMARY KEY NOT NULL,
    online     INTEGER NOT NULL CHECK (online IN (0, 1)),
    changed_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Hourly occupancy computed on read, same columns as the PostgreSQL view (bucket in Unix
-- microseconds at the start of the UTC hour).
CREATE VIEW hourly_occupancy AS
SELECT
    (received_at / 3600000000) * 3600000000 AS bucket,
    lot_id,
    spot_id,
    count(*) AS readings,
    avg(occupied) AS occupied_share
FROM spot_readings
GROUP BY 1, 2, 3;
