-- Tariffs, payments, refunds, the money ledger and webhook de-duplication.
--
-- Amounts are integers in the currency's minor unit (cents). Currencies are stored upper
-- case (ISO 4217 as parkd_core::tariff::Currency spells it; the payments crate's lower-case
-- Stripe spelling is converted before storing). No card data: a provider token, the brand
-- and the last four digits only.
--
-- None of these tables is touched by retention. ledger_entries is append-only in the
-- database itself: a trigger refuses UPDATE, DELETE and TRUNCATE.

-- One tariff per lot, validated by the caller (parkd_core::tariff::Tariff), kept as the JSON
-- text it was given. A payment keeps the quote it came from, so replacing a tariff never
-- changes what an old payment meant.
CREATE TABLE tariffs (
    lot_id     text COLLATE "C" PRIMARY KEY REFERENCES lots (lot_id) ON DELETE CASCADE,
    tariff     text NOT NULL CHECK (tariff::jsonb IS NOT NULL),
    version    bigint NOT NULL CHECK (version > 0),
    updated_at timestamptz NOT NULL
);

CREATE TABLE payments (
    payment_id            text COLLATE "C" PRIMARY KEY,
    user_id               text COLLATE "C" REFERENCES users (user_id),
    reservation_id        text COLLATE "C" REFERENCES reservations (reservation_id),
    session_id            text COLLATE "C" REFERENCES parking_sessions (session_id),
    -- No foreign key: a lot may be deleted, its money history may not.
    lot_id                text COLLATE "C" NOT NULL,
    purpose               text NOT NULL CHECK (purpose IN ('reservation', 'exit', 'no_show_fee')),
    amount_minor          bigint NOT NULL CHECK (amount_minor > 0),
    currency              text COLLATE "C" NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    provider              text COLLATE "C" NOT NULL,
    provider_intent_id    text COLLATE "C",
    status                text NOT NULL CHECK (status IN ('created', 'requires_action',
                              'processing', 'succeeded', 'failed', 'cancelled',
                              'pending_unknown')),
    failure_reason        text,
    -- The provider's token for the card, its brand and last four digits; never a card
    -- number (a run of 13 digits is refused).
    method_token          text CHECK (method_token IS NULL OR method_token !~ '[0-9]{13}'),
    method_brand          text CHECK (method_brand IS NULL OR method_brand ~ '^[a-z_]{1,32}$'),
    method_last4          text CHECK (method_last4 IS NULL OR method_last4 ~ '^[0-9]{4}$'),
    -- Refunded or being refunded (pending refunds count, so that racing refunds cannot
    -- together exceed the charge; a failed refund gives its amount back).
    amount_refunded_minor bigint NOT NULL DEFAULT 0,
    quote                 text NOT NULL CHECK (quote::jsonb IS NOT NULL),
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    CONSTRAINT payments_refund_within_amount
        CHECK (amount_refunded_minor BETWEEN 0 AND amount_minor),
    CONSTRAINT payments_refund_only_succeeded
        CHECK (amount_refunded_minor = 0 OR status = 'succeeded'),
    CONSTRAINT payments_purpose_links CHECK (
        (purpose = 'exit' AND session_id IS NOT NULL)
        OR (purpose IN ('reservation', 'no_show_fee') AND reservation_id IS NOT NULL)
    ),
    CONSTRAINT payments_method_whole CHECK (
        (method_token IS NULL) = (method_brand IS NULL)
        AND (method_token IS NULL) = (method_last4 IS NULL)
    ),
    CONSTRAINT payments_provider_intent_unique UNIQUE (provider, provider_intent_id)
);
CREATE INDEX payments_by_reservation ON payments (reservation_id, created_at)
    WHERE reservation_id IS NOT NULL;
CREATE INDEX payments_by_session ON payments (session_id, created_at)
    WHERE session_id IS NOT NULL;
CREATE INDEX payments_by_user ON payments (user_id, created_at) WHERE user_id IS NOT NULL;
-- The reconciler's work list: what is not settled one way or the other.
CREATE INDEX payments_pending ON payments (updated_at)
    WHERE status IN ('created', 'requires_action', 'processing', 'pending_unknown');

CREATE TABLE refunds (
    refund_id          text COLLATE "C" PRIMARY KEY,
    payment_id         text COLLATE "C" NOT NULL REFERENCES payments (payment_id),
    amount_minor       bigint NOT NULL CHECK (amount_minor > 0),
    currency           text COLLATE "C" NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    provider           text COLLATE "C" NOT NULL,
    provider_refund_id text COLLATE "C",
    status             text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    reason             text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    CONSTRAINT refunds_provider_refund_unique UNIQUE (provider, provider_refund_id)
);
CREATE INDEX refunds_by_payment ON refunds (payment_id, created_at);
CREATE INDEX refunds_pending ON refunds (updated_at) WHERE status = 'pending';

-- Every money movement, append-only: a charge (positive), a refund (negative), a no-show
-- fee, an adjustment (either sign). Revenue is the sum of these rows.
CREATE TABLE ledger_entries (
    -- Append order; the export's and the reader's order within one instant.
    seq            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL,
    lot_id         text COLLATE "C" NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('charge', 'refund', 'no_show_fee',
                                                 'adjustment')),
    amount_minor   bigint NOT NULL,
    currency       text COLLATE "C" NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    payment_id     text COLLATE "C" REFERENCES payments (payment_id),
    refund_id      text COLLATE "C" REFERENCES refunds (refund_id),
    reservation_id text COLLATE "C" REFERENCES reservations (reservation_id),
    session_id     text COLLATE "C" REFERENCES parking_sessions (session_id),
    user_id        text COLLATE "C" REFERENCES users (user_id),
    memo           text NOT NULL DEFAULT '',
    CONSTRAINT ledger_sign CHECK (
        (kind IN ('charge', 'no_show_fee') AND amount_minor > 0)
        OR (kind = 'refund' AND amount_minor < 0)
        OR (kind = 'adjustment' AND amount_minor <> 0)
    ),
    CONSTRAINT ledger_links CHECK (
        (kind IN ('charge', 'no_show_fee') AND payment_id IS NOT NULL AND refund_id IS NULL)
        OR (kind = 'refund' AND payment_id IS NOT NULL AND refund_id IS NOT NULL)
        OR (kind = 'adjustment' AND refund_id IS NULL)
    )
);
-- At most one charge per payment and one entry per refund, whatever the callers do.
CREATE UNIQUE INDEX ledger_one_charge_per_payment ON ledger_entries (payment_id)
    WHERE kind IN ('charge', 'no_show_fee');
CREATE UNIQUE INDEX ledger_one_entry_per_refund ON ledger_entries (refund_id)
    WHERE refund_id IS NOT NULL;
-- Period reads and exports, per lot or all lots.
CREATE INDEX ledger_by_time ON ledger_entries (at, seq);
CREATE INDEX ledger_by_lot_time ON ledger_entries (lot_id, at, seq);

CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER ledger_entries_no_update_delete BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_append_only();

-- Provider webhook events already handled: insert-if-absent de-duplicates redeliveries.
CREATE TABLE webhook_events (
    provider    text COLLATE "C" NOT NULL,
    event_id    text COLLATE "C" NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (provider, event_id)
);
CREATE INDEX webhook_events_by_time ON webhook_events USING brin (received_at);
