-- Live exchange (issue #20): a fill's commission in USDT. Binance charges it in BNB when the account
-- pays fees with BNB; the connector converts it at BNB's price read from the exchange when it records
-- the fill (NULL while that price could not be read; filled in when the fill is recorded again).
ALTER TABLE exchange_fills ADD COLUMN commission_usdt NUMERIC(20, 8);
UPDATE exchange_fills SET commission_usdt = commission WHERE commission_asset = 'USDT';
