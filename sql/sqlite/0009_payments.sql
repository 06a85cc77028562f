-- Tariffs, payments, refunds, the money ledger and webhook de-duplication (SQLite twin of
-- postgres/0010_payments.sql; times are Unix microseconds).
--
-- Amounts are integers in the currency's minor unit. Currencies are stored upper case. No
-- card data: a provider token, the brand and the last four digits only. None of these tables
-- is touched by retention; ledger_entries is append-only (triggers refuse UPDATE and DELETE).

CREATE TABLE tariffs (
    lot_id     TEXT PRIMARY KEY NOT NULL REFERENCES lots (lot_id) ON DELETE CASCADE,
    tariff     TEXT NOT NULL CHECK (json_valid(tariff)),
    version    INTEGER NOT NULL CHECK (version > 0),
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE payments (
    payment_id            TEXT PRIMARY KEY NOT NULL,
    user_id               TEXT REFERENCES users (user_id),
    reservation_id        TEXT REFERENCES reservations (reservation_id),
    session_id            TEXT REFERENCES parking_sessions (session_id),
    lot_id                TEXT NOT NULL,
    purpose               TEXT NOT NULL CHECK (purpose IN ('reservation', 'exit', 'no_show_fee')),
    amount_minor          INTEGER NOT NULL CHECK (amount_minor > 0),
    currency              TEXT NOT NULL
        CHECK (length(currency) = 3 AND currency GLOB '[A-Z][A-Z][A-Z]'),
    provider              TEXT NOT NULL,
    provider_intent_id    TEXT,
    status                TEXT NOT NULL CHECK (status IN ('created', 'requires_action',
                              'processing', 'succeeded', 'failed', 'cancelled',
                              'pending_unknown')),
    failure_reason        TEXT,
    method_token          TEXT
        CHECK (method_token IS NULL OR method_token NOT GLOB '*[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]*'),
    method_brand          TEXT
        CHECK (method_brand IS NULL OR (length(method_brand) BETWEEN 1 AND 32
                                        AND method_brand NOT GLOB '*[^a-z_]*')),
    method_last4          TEXT
        CHECK (method_last4 IS NULL OR (length(method_last4) = 4
                                        AND method_last4 GLOB '[0-9][0-9][0-9][0-9]')),
    amount_refunded_minor INTEGER NOT NULL DEFAULT 0,
    quote                 TEXT NOT NULL CHECK (json_valid(quote)),
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    CHECK (amount_refunded_minor BETWEEN 0 AND amount_minor),
    CHECK (amount_refunded_minor = 0 OR status = 'succeeded'),
    CHECK ((purpose = 'exit' AND session_id IS NOT NULL)
           OR (purpose IN ('reservation', 'no_show_fee') AND reservation_id IS NOT NULL)),
    CHECK ((method_token IS NULL) = (method_brand IS NULL)
           AND (method_token IS NULL) = (method_last4 IS NULL)),
    UNIQUE (provider, provider_intent_id)
) STRICT;
CREATE INDEX payments_by_reservation ON payments (reservation_id, created_at)
    WHERE reservation_id IS NOT NULL;
CREATE INDEX payments_by_session ON payments (session_id, created_at)
    WHERE session_id IS NOT NULL;
CREATE INDEX payments_by_user ON payments (user_id, created_at) WHERE user_id IS NOT NULL;
CREATE INDEX payments_pending ON payments (updated_at)
    WHERE status IN ('created', 'requires_action', 'processing', 'pending_unknown');

CREATE TABLE refunds (
    refund_id          TEXT PRIMARY KEY NOT NULL,
    payment_id         TEXT NOT NULL REFERENCES payments (payment_id),
    amount_minor       INTEGER NOT NULL CHECK (amount_minor > 0),
    currency           TEXT NOT NULL
        CHECK (length(currency) = 3 AND currency GLOB '[A-Z][A-Z][A-Z]'),
    provider           TEXT NOT NULL,
    provider_refund_id TEXT,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    reason             TEXT NOT NULL DEFAULT '',
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    UNIQUE (provider, provider_refund_id)
) STRICT;
CREATE INDEX refunds_by_payment ON refunds (payment_id, created_at);
CREATE INDEX refunds_pending ON refunds (updated_at) WHERE status = 'pending';

CREATE TABLE ledger_entries (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    lot_id         TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('charge', 'refund', 'no_show_fee',
                                                 'adjustment')),
    amount_minor   INTEGER NOT NULL,
    currency       TEXT NOT NULL
        CHECK (length(currency) = 3 AND currency GLOB '[A-Z][A-Z][A-Z]'),
    payment_id     TEXT REFERENCES payments (payment_id),
    refund_id      TEXT REFERENCES refunds (refund_id),
    reservation_id TEXT REFERENCES reservations (reservation_id),
    session_id     TEXT REFERENCES parking_sessions (session_id),
    user_id        TEXT REFERENCES users (user_id),
    memo           TEXT NOT NULL DEFAULT '',
    CHECK ((kind IN ('charge', 'no_show_fee') AND amount_minor > 0)
           OR (kind = 'refund' AND amount_minor < 0)
           OR (kind = 'adjustment' AND amount_minor <> 0)),
    CHECK ((kind IN ('charge', 'no_show_fee') AND payment_id IS NOT NULL AND refund_id IS NULL)
           OR (kind = 'refund' AND payment_id IS NOT NULL AND refund_id IS NOT NULL)
           OR (kind = 'adjustment' AND refund_id IS NULL))
) STRICT;
CREATE UNIQUE INDEX ledger_one_charge_per_payment ON ledger_entries (payment_id)
    WHERE kind IN ('charge', 'no_show_fee');
CREATE UNIQUE INDEX ledger_one_entry_per_refund ON ledger_entries (refund_id)
    WHERE refund_id IS NOT NULL;
CREATE INDEX ledger_by_time ON ledger_entries (at, seq);
CREATE INDEX ledger_by_lot_time ON ledger_entries (lot_id, at, seq);

CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger_entries is append-only: UPDATE refused');
END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger_entries is append-only: DELETE refused');
END;

CREATE TABLE webhook_events (
    provider    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (provider, event_id)
) STRICT;
CREATE INDEX webhook_events_by_time ON webhook_events (received_at);
