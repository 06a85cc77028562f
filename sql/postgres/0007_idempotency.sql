-- Idempotency keys of state-changing requests (reservations now, payments later): the first
-- request with a key records its body's hash and, when done, its answer; a retry with the
-- same key and body gets that answer again, with another body a 422, while the first is
-- still running a 409. Keys are kept 24 hours.

CREATE TABLE idempotency_keys (
    user_id        text COLLATE "C" NOT NULL,
    key            text COLLATE "C" NOT NULL,
    scope          text NOT NULL,
    request_sha256 bytea NOT NULL CHECK (length(request_sha256) = 32),
    status         integer,
    response       text,
    created_at     timestamptz NOT NULL,
    completed_at   timestamptz,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
