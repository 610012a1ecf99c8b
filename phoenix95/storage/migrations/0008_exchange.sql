-- Live exchange (issue #20): the order intents written before anything is sent to the exchange, the
-- fills and income (fees, funding) taken from the exchange, and the reconciliation reports.
--
-- An intent row exists before its order is sent (status SENT), so a worker that crashes before the
-- answer finds it on restart and asks the exchange (by client order id) instead of sending again:
-- a second order for one verdict can never be created.

CREATE TABLE exchange_intents (
    client_order_id  TEXT PRIMARY KEY,            -- p95-<order uuid hex> (entries, exits) or p95-sl-/p95-tp- (protection)
    kind             TEXT NOT NULL CHECK (kind IN ('entry', 'exit', 'stop_loss', 'take_profit')),
    parent_client_order_id TEXT,                 -- protection orders: the entry they protect
    exchange         TEXT NOT NULL,
    symbol           TEXT NOT NULL,
    side             TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity         NUMERIC(28, 8) NOT NULL,
    reduce_only      BOOLEAN NOT NULL,
    trigger_price    NUMERIC(20, 8),
    reference_price  NUMERIC(20, 8),
    -- entries: the planned protection (re-anchored on the fill when placed), so any path that finds the
    -- entry FILLED (a lookup after a crash, reconciliation) can place it
    stop_loss        NUMERIC(20, 8),
    take_profit      NUMERIC(20, 8),
    planned_entry    NUMERIC(20, 8),
    -- SENT (written, sent, no answer yet) | UNKNOWN (ambiguous answer: resolve by query) | NEW (resting at
    -- the exchange: protection) | FILLED | REJECTED | NOT_PLACED (the exchange never had it) |
    -- CANCELED | TRIGGERED (a protection order fired)
    status           TEXT NOT NULL,
    exchange_order_id TEXT,
    fill_price       NUMERIC(20, 8),
    executed_qty     NUMERIC(28, 8),
    fee              NUMERIC(20, 8),
    filled_at        TIMESTAMPTZ,
    reject_code      INTEGER,
    reject_reason    TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX idx_exchange_intents_open ON exchange_intents (status) WHERE status IN ('SENT', 'UNKNOWN', 'NEW');
CREATE INDEX idx_exchange_intents_parent ON exchange_intents (parent_client_order_id);

CREATE TABLE exchange_fills (
    exchange         TEXT NOT NULL,
    symbol           TEXT NOT NULL,
    trade_id         BIGINT NOT NULL,
    exchange_order_id TEXT NOT NULL,
    client_order_id  TEXT,
    side             TEXT NOT NULL,
    price            NUMERIC(20, 8) NOT NULL,
    quantity         NUMERIC(28, 8) NOT NULL,
    commission       NUMERIC(20, 8) NOT NULL,
    commission_asset TEXT NOT NULL,
    realized_pnl     NUMERIC(20, 8) NOT NULL,
    traded_at        TIMESTAMPTZ NOT NULL,
    adopted          BOOLEAN NOT NULL DEFAULT FALSE,  -- found by reconciliation, not by the order's own answer
    PRIMARY KEY (exchange, symbol, trade_id)
);

CREATE TABLE exchange_income (
    exchange     TEXT NOT NULL,
    tran_id      BIGINT NOT NULL,
    symbol       TEXT,
    income_type  TEXT NOT NULL,
    amount       NUMERIC(20, 8) NOT NULL,
    asset        TEXT NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (exchange, tran_id)
);

CREATE TABLE exchange_reconciliations (
    id           BIGSERIAL PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    exchange     TEXT NOT NULL,
    trigger      TEXT NOT NULL,            -- start | periodic | manual
    ok           BOOLEAN NOT NULL,
    halted       BOOLEAN NOT NULL,
    error_free   BOOLEAN NOT NULL,         -- the exchange answered every question (its time bounds the next fill scan)
    differences  JSONB NOT NULL,
    actions      JSONB NOT NULL
);
