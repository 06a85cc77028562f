-- Reservations (SQLite twin of postgres/0006_reservations.sql). SQLite has no exclusion
-- constraints: the store inserts and moves reservations in an IMMEDIATE transaction that first
-- checks for an overlapping holding reservation of the spot; SQLite's single writer makes that
-- check-and-write atomic.

CREATE TABLE reservations (
    reservation_id TEXT PRIMARY KEY NOT NULL,
    code           TEXT NOT NULL UNIQUE,
    user_id        TEXT NOT NULL REFERENCES users (user_id),
    vehicle_id     TEXT,
    plate_key      TEXT NOT NULL,
    vehicle_type   TEXT NOT NULL
        CHECK (vehicle_type IN ('motorcycle', 'compact', 'car', 'van', 'ev', 'accessible')),
    lot_id         TEXT NOT NULL,
    spot_id        TEXT NOT NULL,
    starts_at      INTEGER NOT NULL,
    ends_at        INTEGER NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('requested', 'confirmed', 'checked_in',
                                                  'completed', 'cancelled', 'no_show', 'expired')),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    CHECK (ends_at > starts_at)
) STRICT;
CREATE INDEX reservations_by_user ON reservations (user_id, starts_at DESC);
CREATE INDEX reservations_by_spot ON reservations (lot_id, spot_id, starts_at)
    WHERE state IN ('requested', 'confirmed', 'checked_in');
CREATE INDEX reservations_confirmed_by_start ON reservations (starts_at) WHERE state = 'confirmed';
