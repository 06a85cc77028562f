-- Accounts, sessions and drivers' vehicles. Only hashes of secrets are stored: Argon2id PHC
-- strings for passwords, SHA-256 for session tokens (the token itself is 256 random bits).

CREATE TABLE users (
    user_id             text COLLATE "C" PRIMARY KEY,
    email               text COLLATE "C" NOT NULL UNIQUE,
    password_hash       text NOT NULL,
    role                text NOT NULL CHECK (role IN ('driver', 'operator', 'admin')),
    display_name        text NOT NULL DEFAULT '',
    disabled            boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL,
    password_changed_at timestamptz NOT NULL
);

CREATE TABLE sessions (
    session_id     text COLLATE "C" PRIMARY KEY,
    user_id        text COLLATE "C" NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    token_sha256   bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    created_at     timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    user_agent     text NOT NULL DEFAULT '',
    ip             text NOT NULL DEFAULT '',
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX sessions_active_by_user ON sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE vehicles (
    vehicle_id        text COLLATE "C" PRIMARY KEY,
    user_id           text COLLATE "C" NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    plate             text NOT NULL,
    plate_key         text NOT NULL,
    class             text NOT NULL CHECK (class IN ('motorcycle', 'compact', 'car', 'van')),
    ev                boolean NOT NULL DEFAULT false,
    accessible_permit boolean NOT NULL DEFAULT false,
    label             text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL,
    UNIQUE (user_id, plate_key)
);
CREATE INDEX vehicles_by_plate ON vehicles (plate_key);
