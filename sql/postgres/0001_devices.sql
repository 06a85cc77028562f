-- The device registry: sensors bound to a spot, gate controllers bound to a gate, observers
-- bound to nothing. Identifiers use the "C" collation so that ordering is bytewise, the same
-- as in the SQLite backend, whatever the database's locale.

CREATE TABLE devices (
    device_id     text COLLATE "C" PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('sensor', 'gate', 'observer')),
    lot_id        text COLLATE "C",
    spot_id       text COLLATE "C",
    gate_id       text COLLATE "C",
    secret_sha256 bytea CHECK (secret_sha256 IS NULL OR octet_length(secret_sha256) = 32),
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT devices_binding_matches_kind CHECK (
        (kind = 'sensor' AND lot_id IS NOT NULL AND spot_id IS NOT NULL AND gate_id IS NULL)
        OR (kind = 'gate' AND lot_id IS NOT NULL AND gate_id IS NOT NULL AND spot_id IS NULL)
        OR (kind = 'observer' AND lot_id IS NULL AND spot_id IS NULL AND gate_id IS NULL)
    )
);

-- One sensor per spot, one controller per gate.
CREATE UNIQUE INDEX devices_one_sensor_per_spot ON devices (lot_id, spot_id) WHERE kind = 'sensor';
CREATE UNIQUE INDEX devices_one_controller_per_gate ON devices (lot_id, gate_id) WHERE kind = 'gate';
