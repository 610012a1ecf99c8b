-- The REST API and the dashboard (issue #19): API keys, dashboard users, stored replay reports, and
-- the indexes their pages read through (newest first, keyset-paginated on (time, id)).
--
-- API keys are stored as the SHA-256 of the key (a key is 32 random bytes: a fast hash is enough, no
-- salt or stretching is needed against a guess of 256 bits). Passwords are argon2id hashes
-- (argon2-cffi's encoded form, salt and parameters included). Sessions live in Redis (they expire).

CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY,                 -- public id, shown in lists and audit entries
    key_hash    TEXT NOT NULL UNIQUE,             -- hex SHA-256 of the secret key
    role        VARCHAR(10) NOT NULL CHECK (role IN ('viewer', 'operator')),
    label       TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    created_by  TEXT NOT NULL,
    revoked_at  TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);

CREATE TABLE dashboard_users (
    name          TEXT PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    password_hash TEXT NOT NULL,
    role          VARCHAR(10) NOT NULL CHECK (role IN ('viewer', 'operator')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    disabled_at   TIMESTAMPTZ
);

-- Replays started from the dashboard or the API (and their reports).
CREATE TABLE replay_reports (
    report_id   UUID PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    finished_at TIMESTAMPTZ,
    actor       TEXT NOT NULL,
    status      VARCHAR(10) NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    request     JSONB NOT NULL,
    summary     JSONB,
    error       TEXT,
    html        TEXT
);
CREATE INDEX idx_replay_reports_created ON replay_reports (created_at DESC, report_id DESC);

-- Keyset pagination, newest first.
CREATE INDEX idx_signals_received_id ON signals (received_at DESC, signal_id DESC);
CREATE INDEX idx_risk_verdicts_decided_id ON risk_verdicts (decided_at DESC, verdict_id DESC);
CREATE INDEX idx_risk_verdicts_rejected ON risk_verdicts (decided_at DESC) WHERE decision = 'REJECTED';
CREATE INDEX idx_orders_submitted_id ON orders (submitted_at DESC, order_id DESC);
CREATE INDEX idx_trades_created_id ON trades (created_at DESC, trade_id DESC);
CREATE INDEX idx_positions_opened_id ON positions (opened_at DESC, position_id DESC);
CREATE INDEX idx_positions_closed_id ON positions (closed_at DESC, position_id DESC) WHERE status <> 'open';
CREATE INDEX idx_dead_letters_dead_id ON dead_letters (dead_at DESC, event_id DESC);
