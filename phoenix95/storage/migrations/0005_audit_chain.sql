-- 0005: the tamper-evident audit log (issue #18).
-- Every entry is chained to the one before it: hash = sha256(prev_hash || canonical JSON of the entry)
-- (see phoenix95/domain/audit.py). Writers take an advisory lock on the chain inside their own
-- transaction and read the last hash under it, so the chain never forks (phoenix95/storage/audit.py).
-- The unchained log of 0001 is kept as audit_log_v1 (its rows predate the chain).

ALTER TABLE audit_log RENAME TO audit_log_v1;
ALTER INDEX idx_audit_log_at RENAME TO idx_audit_log_v1_at;

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY CHECK (seq > 0),
    -- idempotency: one entry per (event id, action); a re-delivered event writes nothing
    entry_key TEXT NOT NULL UNIQUE,
    at TIMESTAMPTZ NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT,
    -- canonical JSON (RFC 8785), exactly the text that was hashed
    payload TEXT NOT NULL,
    prev_hash BYTEA NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash BYTEA NOT NULL CHECK (octet_length(hash) = 32)
);
CREATE INDEX idx_audit_log_at ON audit_log(at);
CREATE INDEX idx_audit_log_action_at ON audit_log(action, at);

-- Append-only: UPDATE, DELETE and TRUNCATE are refused (a superuser can still disable the trigger;
-- the external anchor, `p95 audit anchor`, is what detects a rewrite then).
CREATE FUNCTION p95_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION p95_audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION p95_audit_log_append_only();

-- The compliance monitor's locks (STOPLOSS_GUARD, COOLDOWN, manual): one row per symbol ('*': every
-- symbol), the latest lock wins; the risk stage rejects a locked symbol until `until`.
CREATE TABLE protection_locks (
    symbol TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    until TIMESTAMPTZ NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    locked_by TEXT NOT NULL,
    locked_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    trip_id TEXT NOT NULL
);

-- The protections that tripped (one row per trip; the audit log holds the same with its figures).
CREATE TABLE protection_trips (
    trip_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    subject TEXT,
    message TEXT NOT NULL,
    figures JSONB NOT NULL
);
CREATE INDEX idx_protection_trips_at ON protection_trips(at);
