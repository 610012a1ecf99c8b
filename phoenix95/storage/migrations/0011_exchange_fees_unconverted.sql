-- Live exchange (issue #20): fills whose commission (paid in BNB) is not known in USDT yet. Every
-- reconciliation retries their conversion (BNB's 1-minute kline of the trade's time, else its current
-- price) and lists those still unknown; this keeps that lookup off the whole table.
CREATE INDEX idx_exchange_fills_unconverted ON exchange_fills (exchange, traded_at) WHERE commission_usdt IS NULL;
