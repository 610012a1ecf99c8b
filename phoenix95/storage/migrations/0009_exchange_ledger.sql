-- Live exchange (issue #20, items 2 and 5): the symbols' filters from exchangeInfo, which risk sizes and
-- rounds with, and the exchange's funding payments applied to positions (once each).

-- Written by the connector whenever it loads exchangeInfo (the execution stage's start, `p95 exchange
-- check`); read by the risk stage (PgExchangeLedger.symbol_rules).
CREATE TABLE exchange_symbol_filters (
    exchange     TEXT NOT NULL,
    symbol       TEXT NOT NULL,
    tick_size    NUMERIC(28, 12) NOT NULL,
    step_size    NUMERIC(28, 12) NOT NULL,
    min_qty      NUMERIC(28, 12) NOT NULL,
    min_notional NUMERIC(20, 8) NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (exchange, symbol)
);

-- A funding payment (exchange_income, FUNDING_FEE) applied to a position by the positions stage, in
-- the transaction that writes the position's new funding_paid: a payment is applied once.
CREATE TABLE position_exchange_funding (
    position_id  UUID NOT NULL,
    exchange     TEXT NOT NULL,
    tran_id      BIGINT NOT NULL,
    amount       NUMERIC(20, 8) NOT NULL,   -- the position's share, as the exchange signs it (< 0 paid)
    at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (position_id, exchange, tran_id)
);
CREATE INDEX idx_position_exchange_funding_tran ON position_exchange_funding (exchange, tran_id);

-- The exchange's trade ids of an order's fills (carried by the Order event's fill, order.v2).
ALTER TABLE exchange_intents ADD COLUMN trade_ids TEXT[];
