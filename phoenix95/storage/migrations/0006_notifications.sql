-- The notification hub's outbox (issue #22). The notifications stage writes one row per (event,
-- channel) in the transaction that acknowledges the event's record; a re-delivered event makes the
-- same rows (ON CONFLICT DO NOTHING on the unique key), so it is never sent twice. The sender takes
-- pending rows that are due, sends them (alone, or as lines of a digest when the channel's rate
-- limit is exceeded) and marks them sent, or retries them with capped backoff, or marks them failed
-- after the configured number of attempts (`p95 notify retry` makes failed rows pending again).

CREATE TABLE IF NOT EXISTS notifications (
    notification_id UUID PRIMARY KEY,            -- derived from (event id, channel)
    event_id        TEXT NOT NULL,
    channel         TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    severity        TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    silent          BOOLEAN NOT NULL DEFAULT FALSE,
    position_id     TEXT,
    signal_id       TEXT,
    subject         TEXT,
    payload         JSONB NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    parts_sent      INTEGER NOT NULL DEFAULT 0,   -- of a message split for the channel's limit
    last_error      TEXT,
    digest_id       UUID,                         -- set when it went out as a line of a digest
    event_time      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    lease_until     TIMESTAMPTZ,                  -- a sender is sending it until then
    sent_at         TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT notifications_event_channel UNIQUE (event_id, channel)
);

CREATE INDEX IF NOT EXISTS idx_notifications_due ON notifications (channel, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS idx_notifications_status ON notifications (status, created_at);
CREATE INDEX IF NOT EXISTS idx_notifications_position ON notifications (position_id);

-- What the notifications stage remembers between events (risk-level hysteresis per position,
-- pipeline health per check), written in the same transactions as the rows it causes.
CREATE TABLE IF NOT EXISTS notification_state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
