-- Telemetry: three append-only time series keyed by the platform's receive time (device
-- clocks lie), and two current-state tables the live engine restores from at start.
-- No foreign keys to devices: telemetry outlives a deleted device, and ingest must never
-- fail a batch because the registry changed underneath it.
-- With TimescaleDB the time series become hypertables (see timescale/); on plain PostgreSQL
-- the indexes on received_at serve retention deletes.

CREATE TABLE spot_readings (
    received_at timestamptz NOT NULL,
    device_ts   timestamptz,
    lot_id      text COLLATE "C" NOT NULL,
    spot_id     text COLLATE "C" NOT NULL,
    device_id   text COLLATE "C" NOT NULL,
    occupied    boolean NOT NULL,
    seq         bigint,
    battery_mv  integer,
    rssi        smallint
);
CREATE INDEX spot_readings_spot_time ON spot_readings (lot_id, spot_id, received_at DESC);
CREATE INDEX spot_readings_time ON spot_readings (received_at);

CREATE TABLE device_heartbeats (
    received_at timestamptz NOT NULL,
    device_ts   timestamptz,
    device_id   text COLLATE "C" NOT NULL,
    battery_mv  integer,
    rssi        smallint,
    uptime_s    bigint,
    firmware    text
);
CREATE INDEX device_heartbeats_device_time ON device_heartbeats (device_id, received_at DESC);
CREATE INDEX device_heartbeats_time ON device_heartbeats (received_at);

CREATE TABLE device_status_changes (
    received_at timestamptz NOT NULL,
    device_id   text COLLATE "C" NOT NULL,
    online      boolean NOT NULL
);
CREATE INDEX device_status_changes_device_time ON device_status_changes (device_id, received_at DESC);
CREATE INDEX device_status_changes_time ON device_status_changes (received_at);

-- Current state: the newest reading per spot and the newest status per device.
CREATE TABLE spot_latest (
    lot_id      text COLLATE "C" NOT NULL,
    spot_id     text COLLATE "C" NOT NULL,
    occupied    boolean NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (lot_id, spot_id)
);

CREATE TABLE device_status (
    device_id  text COLLATE "C" PRIMARY KEY,
    online     boolean NOT NULL,
    changed_at timestamptz NOT NULL
);
