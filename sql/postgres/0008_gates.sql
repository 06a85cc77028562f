-- Gates: parking sessions and the answers given to gate requests. Sessions are transaction
-- history: no retention policy touches them.

CREATE TABLE parking_sessions (
    session_id     text COLLATE "C" PRIMARY KEY,
    lot_id         text COLLATE "C" NOT NULL,
    plate_key      text,
    plate          text,
    vehicle_type   text NOT NULL
        CHECK (vehicle_type IN ('motorcycle', 'compact', 'car', 'van', 'ev', 'accessible')),
    reservation_id text COLLATE "C" REFERENCES reservations (reservation_id),
    user_id        text COLLATE "C",
    entry_gate     text COLLATE "C",
    assigned_spot  text COLLATE "C",
    sensed_spot    text COLLATE "C",
    entered_at     timestamptz NOT NULL,
    exit_gate      text COLLATE "C",
    exited_at      timestamptz,
    overstay_s     bigint CHECK (overstay_s IS NULL OR overstay_s >= 0),
    CONSTRAINT sessions_exit_after_entry CHECK (exited_at IS NULL OR exited_at >= entered_at)
);
-- Anti-passback in the database itself: one open session per plate per lot, and per
-- reservation.
CREATE UNIQUE INDEX sessions_one_open_per_plate ON parking_sessions (lot_id, plate_key)
    WHERE exited_at IS NULL AND plate_key IS NOT NULL;
CREATE UNIQUE INDEX sessions_one_open_per_reservation ON parking_sessions (reservation_id)
    WHERE exited_at IS NULL AND reservation_id IS NOT NULL;
CREATE INDEX sessions_by_lot_entry ON parking_sessions (lot_id, entered_at);

CREATE TABLE gate_decisions (
    lot_id     text COLLATE "C" NOT NULL,
    gate_id    text COLLATE "C" NOT NULL,
    request_id text COLLATE "C" NOT NULL,
    command    text NOT NULL,
    decided_at timestamptz NOT NULL,
    PRIMARY KEY (lot_id, gate_id, request_id)
);
CREATE INDEX gate_decisions_by_time ON gate_decisions USING brin (decided_at);
