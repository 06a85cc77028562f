-- The garage model (SQLite twin of postgres/0004_garage.sql).

CREATE TABLE lots (
    lot_id        TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    address       TEXT NOT NULL DEFAULT '',
    lat           REAL CHECK (lat BETWEEN -90 AND 90),
    lon           REAL CHECK (lon BETWEEN -180 AND 180),
    timezone      TEXT NOT NULL,
    opening_hours TEXT NOT NULL DEFAULT '[]',
    levels        TEXT NOT NULL,
    zones         TEXT NOT NULL DEFAULT '[]',
    version       INTEGER NOT NULL DEFAULT 1,
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE spots (
    lot_id         TEXT NOT NULL REFERENCES lots (lot_id) ON DELETE CASCADE,
    spot_id        TEXT NOT NULL,
    position       INTEGER NOT NULL,
    label          TEXT NOT NULL,
    level_id       TEXT NOT NULL,
    zone_id        TEXT,
    kind           TEXT NOT NULL
        CHECK (kind IN ('standard', 'compact', 'large', 'motorcycle', 'accessible', 'ev')),
    x              REAL NOT NULL,
    y              REAL NOT NULL,
    w              REAL NOT NULL CHECK (w > 0),
    h              REAL NOT NULL CHECK (h > 0),
    rotation       REAL NOT NULL DEFAULT 0,
    walk_m         REAL,
    out_of_service INTEGER NOT NULL DEFAULT 0 CHECK (out_of_service IN (0, 1)),
    PRIMARY KEY (lot_id, spot_id)
) STRICT;
