-- Reservations. Double booking is impossible in the database itself: no two reservations
-- that hold a spot (requested, confirmed, checked_in) may overlap in time on that spot.
-- btree_gist lets the GiST exclusion constraint compare the text ids with `=`; it is a
-- trusted extension (PostgreSQL 13+), so a database owner may create it.

CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE reservations (
    reservation_id text COLLATE "C" PRIMARY KEY,
    code           text COLLATE "C" NOT NULL UNIQUE,
    user_id        text COLLATE "C" NOT NULL REFERENCES users (user_id),
    vehicle_id     text COLLATE "C",
    plate_key      text NOT NULL,
    vehicle_type   text NOT NULL
        CHECK (vehicle_type IN ('motorcycle', 'compact', 'car', 'van', 'ev', 'accessible')),
    lot_id         text COLLATE "C" NOT NULL,
    spot_id        text COLLATE "C" NOT NULL,
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL,
    state          text NOT NULL CHECK (state IN ('requested', 'confirmed', 'checked_in',
                                                  'completed', 'cancelled', 'no_show', 'expired')),
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    CONSTRAINT reservations_end_after_start CHECK (ends_at > starts_at),
    CONSTRAINT reservations_no_double_booking EXCLUDE USING gist (
        lot_id WITH =,
        spot_id WITH =,
        tstzrange(starts_at, ends_at, '[)') WITH &&
    ) WHERE (state IN ('requested', 'confirmed', 'checked_in'))
);
CREATE INDEX reservations_by_user ON reservations (user_id, starts_at DESC);
CREATE INDEX reservations_confirmed_by_start ON reservations (starts_at) WHERE state = 'confirmed';
