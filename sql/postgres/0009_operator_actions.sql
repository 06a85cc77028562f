-- Operators' actions on gates (manual open, emergency start and end): an append-only audit
-- trail, never deleted by retention.
CREATE TABLE operator_actions (
    action_id text COLLATE "C" PRIMARY KEY,
    -- Append order (the trail's order, whatever the clocks said).
    seq       bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    at        timestamptz NOT NULL,
    user_id   text COLLATE "C" NOT NULL,
    lot_id    text COLLATE "C" NOT NULL,
    gate_id   text COLLATE "C",
    action    text NOT NULL CHECK (action IN ('gate_open', 'emergency_start', 'emergency_end')),
    reason    text NOT NULL
);
CREATE INDEX operator_actions_by_lot ON operator_actions (lot_id, seq);
