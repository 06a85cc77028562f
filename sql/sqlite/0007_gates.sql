-- Gates (SQLite twin of postgres/0008_gates.sql): parking sessions and the answers given to
-- gate requests. Sessions are transaction history: no retention policy touches them.

CREATE TABLE parking_sessions (
    session_id     TEXT PRIMARY KEY NOT NULL,
    lot_id         TEXT NOT NULL,
    plate_key      TEXT,
    plate          TEXT,
    vehicle_type   TEXT NOT NULL
        CHECK (vehicle_type IN ('motorcycle', 'compact', 'car', 'van', 'ev', 'accessible')),
    reservation_id TEXT REFERENCES reservations (reservation_id),
    user_id        TEXT,
    entry_gate     TEXT,
    assigned_spot  TEXT,
    sensed_spot    TEXT,
    entered_at     INTEGER NOT NULL,
    exit_gate      TEXT,
    exited_at      INTEGER,
    overstay_s     INTEGER CHECK (overstay_s IS NULL OR overstay_s >= 0),
    CHECK (exited_at IS NULL OR exited_at >= entered_at)
) STRICT;
-- Anti-passback in the database itself: one open session per plate per lot, and per
-- reservation.
CREATE UNIQUE INDEX sessions_one_open_per_plate ON parking_sessions (lot_id, plate_key)
    WHERE exited_at IS NULL AND plate_key IS NOT NULL;
CREATE UNIQUE INDEX sessions_one_open_per_reservation ON parking_sessions (reservation_id)
    WHERE exited_at IS NULL AND reservation_id IS NOT NULL;
CREATE INDEX sessions_by_lot_entry ON parking_sessions (lot_id, entered_at);

CREATE TABLE gate_decisions (
    lot_id     TEXT NOT NULL,
    gate_id    TEXT NOT NULL,
    request_id TEXT NOT NULL,
    command    TEXT NOT NULL,
    decided_at INTEGER NOT NULL,
    PRIMARY KEY (lot_id, gate_id, request_id)
) STRICT;
CREATE INDEX gate_decisions_by_time ON gate_decisions (decided_at);
