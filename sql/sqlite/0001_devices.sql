-- The device registry (SQLite twin of postgres/0001_devices.sql).
-- Timestamps are integer Unix microseconds; booleans are 0/1. STRICT tables enforce types.

CREATE TABLE devices (
    device_id     TEXT PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('sensor', 'gate', 'observer')),
    lot_id        TEXT,
    spot_id       TEXT,
    gate_id       TEXT,
    secret_sha256 BLOB CHECK (secret_sha256 IS NULL OR length(secret_sha256) = 32),
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER)),
    CONSTRAINT devices_binding_matches_kind CHECK (
        (kind = 'sensor' AND lot_id IS NOT NULL AND spot_id IS NOT NULL AND gate_id IS NULL)
        OR (kind = 'gate' AND lot_id IS NOT NULL AND gate_id IS NOT NULL AND spot_id IS NULL)
        OR (kind = 'observer' AND lot_id IS NULL AND spot_id IS NULL AND gate_id IS NULL)
    )
) STRICT;

-- One sensor per spot, one controller per gate.
CREATE UNIQUE INDEX devices_one_sensor_per_spot ON devices (lot_id, spot_id) WHERE kind = 'sensor';
CREATE UNIQUE INDEX devices_one_controller_per_gate ON devices (lot_id, gate_id) WHERE kind = 'gate';
