-- Idempotency keys (SQLite twin of postgres/0007_idempotency.sql).

CREATE TABLE idempotency_keys (
    user_id        TEXT NOT NULL,
    key            TEXT NOT NULL,
    scope          TEXT NOT NULL,
    request_sha256 BLOB NOT NULL CHECK (length(request_sha256) = 32),
    status         INTEGER,
    response       TEXT,
    created_at     INTEGER NOT NULL,
    completed_at   INTEGER,
    PRIMARY KEY (user_id, key)
) STRICT;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
