-- The garage model: lots and their spots (the import/export document, normalised where later
-- features join on it: reservations and sessions refer to (lot_id, spot_id)).
-- Levels, zones and opening hours are small lists kept as JSON text in the lot row.

CREATE TABLE lots (
    lot_id        text COLLATE "C" PRIMARY KEY,
    name          text NOT NULL,
    address       text NOT NULL DEFAULT '',
    lat           double precision CHECK (lat BETWEEN -90 AND 90),
    lon           double precision CHECK (lon BETWEEN -180 AND 180),
    timezone      text NOT NULL,
    opening_hours text NOT NULL DEFAULT '[]',
    levels        text NOT NULL,
    zones         text NOT NULL DEFAULT '[]',
    version       bigint NOT NULL DEFAULT 1,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE spots (
    lot_id         text COLLATE "C" NOT NULL REFERENCES lots (lot_id) ON DELETE CASCADE,
    spot_id        text COLLATE "C" NOT NULL,
    position       integer NOT NULL,
    label          text NOT NULL,
    level_id       text NOT NULL,
    zone_id        text,
    kind           text NOT NULL
        CHECK (kind IN ('standard', 'compact', 'large', 'motorcycle', 'accessible', 'ev')),
    x              double precision NOT NULL,
    y              double precision NOT NULL,
    w              double precision NOT NULL CHECK (w > 0),
    h              double precision NOT NULL CHECK (h > 0),
    rotation       double precision NOT NULL DEFAULT 0,
    walk_m         double precision,
    out_of_service boolean NOT NULL DEFAULT false,
    PRIMARY KEY (lot_id, spot_id)
);
