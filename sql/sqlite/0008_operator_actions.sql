-- Operators' actions on gates (manual open, emergency start and end): an append-only audit
-- trail, never deleted by retention. Twin of postgres/0009_operator_actions.sql.
CREATE TABLE operator_actions (
    action_id TEXT PRIMARY KEY NOT NULL,
    -- Append order (the trail's order, whatever the clocks said).
    seq       INTEGER NOT NULL UNIQUE,
    at        INTEGER NOT NULL,
    user_id   TEXT NOT NULL,
    lot_id    TEXT NOT NULL,
    gate_id   TEXT,
    action    TEXT NOT NULL CHECK (action IN ('gate_open', 'emergency_start', 'emergency_end')),
    reason    TEXT NOT NULL
) STRICT;
CREATE INDEX operator_actions_by_lot ON operator_actions (lot_id, seq);
