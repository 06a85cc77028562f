-- One payment in flight per thing paid for, and every open payment can be asked again
-- (SQLite twin of postgres/0011_payments_in_flight.sql, which explains each change).

ALTER TABLE payments ADD COLUMN requested_method TEXT
    CHECK (requested_method IS NULL OR requested_method NOT GLOB '*[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]*');

CREATE UNIQUE INDEX payments_one_open_exit ON payments (session_id)
    WHERE purpose = 'exit'
      AND status IN ('created', 'requires_action', 'processing', 'pending_unknown');
CREATE UNIQUE INDEX payments_one_open_prepayment ON payments (reservation_id)
    WHERE purpose = 'reservation'
      AND status IN ('created', 'requires_action', 'processing', 'pending_unknown');

-- SQLite cannot change a CHECK in place: the audit trail is copied into a new table.
CREATE TABLE operator_actions_new (
    action_id TEXT PRIMARY KEY NOT NULL,
    seq       INTEGER NOT NULL UNIQUE,
    at        INTEGER NOT NULL,
    user_id   TEXT NOT NULL,
    lot_id    TEXT NOT NULL,
    gate_id   TEXT,
    action    TEXT NOT NULL
        CHECK (action IN ('gate_open', 'emergency_start', 'emergency_end', 'tariff_set')),
    reason    TEXT NOT NULL
) STRICT;
INSERT INTO operator_actions_new (action_id, seq, at, user_id, lot_id, gate_id, action, reason)
    SELECT action_id, seq, at, user_id, lot_id, gate_id, action, reason FROM operator_actions;
DROP TABLE operator_actions;
ALTER TABLE operator_actions_new RENAME TO operator_actions;
CREATE INDEX operator_actions_by_lot ON operator_actions (lot_id, seq);
