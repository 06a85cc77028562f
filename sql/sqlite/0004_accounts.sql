-- Accounts, sessions and vehicles (SQLite twin of postgres/0005_accounts.sql).

CREATE TABLE users (
    user_id             TEXT PRIMARY KEY NOT NULL,
    email               TEXT NOT NULL UNIQUE,
    password_hash       TEXT NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('driver', 'operator', 'admin')),
    display_name        TEXT NOT NULL DEFAULT '',
    disabled            INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at          INTEGER NOT NULL,
    password_changed_at INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    session_id     TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    token_sha256   BLOB NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    created_at     INTEGER NOT NULL,
    last_seen_at   INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    user_agent     TEXT NOT NULL DEFAULT '',
    ip             TEXT NOT NULL DEFAULT '',
    revoked_at     INTEGER,
    revoked_reason TEXT
) STRICT;
CREATE INDEX sessions_active_by_user ON sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE vehicles (
    vehicle_id        TEXT PRIMARY KEY NOT NULL,
    user_id           TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    plate             TEXT NOT NULL,
    plate_key         TEXT NOT NULL,
    class             TEXT NOT NULL CHECK (class IN ('motorcycle', 'compact', 'car', 'van')),
    ev                INTEGER NOT NULL DEFAULT 0 CHECK (ev IN (0, 1)),
    accessible_permit INTEGER NOT NULL DEFAULT 0 CHECK (accessible_permit IN (0, 1)),
    label             TEXT NOT NULL DEFAULT '',
    created_at        INTEGER NOT NULL,
    UNIQUE (user_id, plate_key)
) STRICT;
CREATE INDEX vehicles_by_plate ON vehicles (plate_key);
