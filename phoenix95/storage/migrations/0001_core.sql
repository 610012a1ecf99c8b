-- Phoenix95 core schema: the seed's signals, trades and positions (../shared/seed, "PostgreSQL DDL
-- Scripts"), their indexes, updated_at triggers, the position-metrics trigger and the statistics
-- views, plus what the pipeline needs: risk verdicts, orders/fills, the paper exchange's order book,
-- dead letters, trading state and an audit log.
--
-- Defects of the seed fixed here:
--  1. signals is "partitioned" (it creates signals_y2025m01.. as PARTITION OF signals) but the
--     CREATE TABLE has no PARTITION BY clause, and its PRIMARY KEY (signal_id) lacks the partition
--     key, which PostgreSQL rejects for a partitioned table. signals is PARTITION BY RANGE
--     (received_at) with PRIMARY KEY (signal_id, received_at). received_at is the envelope's
--     ts_ingest, so a re-delivered signal hits the same key.
--  2. Partitions were three hard-coded months of 2025 with no default partition: every other month
--     failed to insert. p95_ensure_signal_partitions() creates them rolling (2 months back to 3
--     ahead; run by every `p95 db migrate` and worker start) and signals_default catches the rest.
--  3. update_s4_position_metrics() was quoted with `$` instead of `$$` (a syntax error).
--  4. Two conflicting versions of the positions table (and of its view: s4_active_positions and
--     active_positions). We keep the fuller second one and the view active_positions.
--  5. positions.margin_ratio was margin_used / initial_margin (always 1). It is Binance's margin
--     ratio, maintenance margin / margin balance in %, computed by the domain code.
--  6. The position-metrics trigger used NOW() for the position's age and overwrote the values the
--     writer computed; with replayed (event-time) data that is wrong. It now fills derived columns
--     only when the writer left them NULL, and measures age up to last_price_update (event time).
--  7. trades.signal_id and positions.signal_id cannot REFERENCE signals(signal_id): unique keys of
--     a partitioned table must include the partition key. They are indexed instead. signal ids are
--     TEXT, not UUID: a TradingView alert may carry its own id.
--  8. signals.volume was BIGINT (crypto volumes are fractional) and macd DECIMAL(12,8) (too narrow
--     for BTC); both NUMERIC. The source list gains file, replay, demo and api.
--  9. The seed needed the uuid-ossp and pg_trgm extensions only for defaults it never relied on;
--     ids are derived by the application (deterministic uuid5), so no extension is required.

-- updated_at, shared by every table (seed, unchanged)
CREATE OR REPLACE FUNCTION update_updated_at_column()
RETURNS TRIGGER AS $$
BEGIN
    NEW.updated_at = NOW();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

-- signals ------------------------------------------------------------------------------------------
CREATE TABLE signals (
    signal_id TEXT NOT NULL,
    symbol VARCHAR(20) NOT NULL,
    action VARCHAR(10) NOT NULL CHECK (action IN ('buy', 'sell', 'long', 'short')),
    price NUMERIC(20, 8) NOT NULL CHECK (price > 0),
    confidence NUMERIC(5, 4) DEFAULT 0.8000 CHECK (confidence >= 0 AND confidence <= 1),
    strategy VARCHAR(50) DEFAULT 'unknown',
    timeframe VARCHAR(10) DEFAULT '1h',
    rsi NUMERIC(5, 2),
    macd NUMERIC,
    volume NUMERIC,
    source VARCHAR(50) DEFAULT 'tradingview',
    source_timestamp TIMESTAMPTZ,
    received_at TIMESTAMPTZ NOT NULL,
    processed_at TIMESTAMPTZ,
    validation_status VARCHAR(20) DEFAULT 'pending'
        CHECK (validation_status IN ('pending', 'valid', 'invalid', 'expired')),
    analysis_status VARCHAR(20) DEFAULT 'pending'
        CHECK (analysis_status IN ('pending', 'analyzing', 'completed', 'failed')),
    execution_status VARCHAR(20) DEFAULT 'pending'
        CHECK (execution_status IN ('pending', 'executed', 'rejected', 'cancelled')),
    phoenix95_score NUMERIC(5, 4),
    final_confidence NUMERIC(5, 4),
    quality_score NUMERIC(5, 4),
    analysis_type VARCHAR(50),
    raw_data JSONB,
    analysis_data JSONB,
    execution_data JSONB,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW(),
    created_by VARCHAR(100) DEFAULT 'phoenix95',
    PRIMARY KEY (signal_id, received_at),
    CONSTRAINT valid_timeframe CHECK (timeframe IN ('1m', '5m', '15m', '1h', '4h', '1d')),
    CONSTRAINT valid_source CHECK (source IN ('tradingview', 'mt5', 'telegram', 'discord', 'custom',
                                              'file', 'replay', 'demo', 'api')),
    CONSTRAINT valid_phoenix_score CHECK (phoenix95_score IS NULL OR (phoenix95_score >= 0 AND phoenix95_score <= 1))
) PARTITION BY RANGE (received_at);

CREATE TABLE signals_default PARTITION OF signals DEFAULT;

CREATE INDEX idx_signals_signal_id ON signals(signal_id);
CREATE INDEX idx_signals_symbol_created ON signals(symbol, created_at DESC);
CREATE INDEX idx_signals_status_composite ON signals(validation_status, analysis_status, execution_status);
CREATE INDEX idx_signals_confidence ON signals(final_confidence DESC) WHERE final_confidence >= 0.45;
CREATE INDEX idx_signals_phoenix95 ON signals(phoenix95_score DESC) WHERE phoenix95_score IS NOT NULL;
CREATE INDEX idx_signals_received_at ON signals(received_at DESC);
CREATE INDEX idx_signals_source_timestamp ON signals(source, source_timestamp DESC);
CREATE INDEX idx_signals_raw_data_gin ON signals USING gin(raw_data);
CREATE INDEX idx_signals_analysis_data_gin ON signals USING gin(analysis_data);

CREATE TRIGGER update_signals_updated_at
    BEFORE UPDATE ON signals
    FOR EACH ROW
    EXECUTE FUNCTION update_updated_at_column();

-- Rolling monthly partitions. Serialized by an advisory lock, so two workers starting at once do
-- not both try to create the same partition. A month whose rows already sit in the default
-- partition is skipped with a notice (PostgreSQL refuses to create it over them).
CREATE OR REPLACE FUNCTION p95_ensure_signal_partitions(months_back INT DEFAULT 2, months_ahead INT DEFAULT 3)
RETURNS INT AS $$
DECLARE
    month_start DATE;
    partition_name TEXT;
    created INT := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.p95_signal_partitions'));
    FOR i IN -months_back..months_ahead LOOP
        month_start := (date_trunc('month', NOW()) + make_interval(months => i))::DATE;
        partition_name := format('signals_y%sm%s', to_char(month_start, 'YYYY'), to_char(month_start, 'MM'));
        IF to_regclass(quote_ident(current_schema()) || '.' || partition_name) IS NULL THEN
            IF EXISTS (SELECT 1 FROM signals_default
                       WHERE received_at >= month_start AND received_at < month_start + INTERVAL '1 month') THEN
                RAISE NOTICE 'signals_default holds rows of %, partition % not created', month_start, partition_name;
                CONTINUE;
            END IF;
            EXECUTE format('CREATE TABLE %I PARTITION OF signals FOR VALUES FROM (%L) TO (%L)',
                           partition_name, month_start, (month_start + INTERVAL '1 month')::DATE);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$ LANGUAGE plpgsql;

CREATE VIEW signals_stats AS
SELECT
    DATE_TRUNC('hour', received_at) AS hour,
    COUNT(*) AS total_signals,
    COUNT(*) FILTER (WHERE validation_status = 'valid') AS valid_signals,
    COUNT(*) FILTER (WHERE execution_status = 'executed') AS executed_signals,
    AVG(confidence) AS avg_confidence,
    AVG(phoenix95_score) AS avg_phoenix95_score,
    COUNT(DISTINCT symbol) AS unique_symbols
FROM signals
WHERE received_at >= NOW() - INTERVAL '24 hours'
GROUP BY DATE_TRUNC('hour', received_at)
ORDER BY hour DESC;

COMMENT ON TABLE signals IS 'Phoenix95 signals, one row per signal, with its Phoenix-95 analysis';
COMMENT ON COLUMN signals.phoenix95_score IS 'Phoenix-95 score (0.0-1.0)';
COMMENT ON COLUMN signals.final_confidence IS 'final confidence after technical adjustments';

-- risk verdicts --------------------------------------------------------------------------------------
CREATE TABLE risk_verdicts (
    verdict_id UUID PRIMARY KEY,
    signal_id TEXT NOT NULL,
    analysis_id UUID NOT NULL,
    symbol VARCHAR(20) NOT NULL,
    side VARCHAR(10) NOT NULL CHECK (side IN ('long', 'short')),
    decision VARCHAR(10) NOT NULL CHECK (decision IN ('APPROVED', 'REJECTED')),
    intent VARCHAR(10) NOT NULL DEFAULT 'open' CHECK (intent IN ('open', 'close')),
    close_position_id UUID,
    reasons TEXT[] NOT NULL DEFAULT '{}',
    details TEXT[] NOT NULL DEFAULT '{}',
    trading_state VARCHAR(10) NOT NULL,
    signal_time TIMESTAMPTZ NOT NULL,
    decided_at TIMESTAMPTZ NOT NULL,
    price NUMERIC(20, 8) NOT NULL,
    confidence NUMERIC(5, 4),
    phoenix95_score NUMERIC(5, 4),
    final_confidence NUMERIC(5, 4),
    entry_price NUMERIC(20, 8),
    stop_loss_price NUMERIC(20, 8),
    take_profit_price NUMERIC(20, 8),
    liquidation_price NUMERIC(20, 8),
    quantity NUMERIC(28, 8),
    notional NUMERIC(20, 8),
    initial_margin NUMERIC(20, 8),
    maintenance_margin NUMERIC(20, 8),
    leverage INTEGER,
    margin_mode VARCHAR(20),
    bracket INTEGER,
    maint_margin_ratio NUMERIC(10, 6),
    kelly NUMERIC(12, 6),
    kelly_fraction NUMERIC(6, 4),
    position_fraction NUMERIC(10, 6),
    win_probability NUMERIC(6, 4),
    payoff_ratio NUMERIC(12, 6),
    equity NUMERIC(20, 8),
    free_margin NUMERIC(20, 8),
    var_1d_95 NUMERIC(20, 8),
    verdict JSONB NOT NULL,
    created_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX idx_risk_verdicts_signal ON risk_verdicts(signal_id);
CREATE INDEX idx_risk_verdicts_symbol_time ON risk_verdicts(symbol, decided_at DESC);
CREATE INDEX idx_risk_verdicts_reasons ON risk_verdicts USING gin(reasons);
CREATE INDEX idx_risk_verdicts_approved ON risk_verdicts(decided_at) WHERE decision = 'APPROVED';

-- orders (one per verdict at most, enforced) ---------------------------------------------------------
CREATE TABLE orders (
    order_id UUID PRIMARY KEY,
    client_order_id VARCHAR(36) NOT NULL UNIQUE,
    verdict_id UUID NOT NULL UNIQUE,
    signal_id TEXT NOT NULL,
    symbol VARCHAR(20) NOT NULL,
    side VARCHAR(4) NOT NULL CHECK (side IN ('buy', 'sell')),
    position_side VARCHAR(5) NOT NULL CHECK (position_side IN ('long', 'short')),
    intent VARCHAR(5) NOT NULL CHECK (intent IN ('open', 'close')),
    close_position_id UUID,
    order_type VARCHAR(20) NOT NULL DEFAULT 'market',
    quantity NUMERIC(28, 8) NOT NULL,
    status VARCHAR(20) NOT NULL CHECK (status IN ('filled', 'rejected')),
    reject_reason TEXT,
    requested_price NUMERIC(20, 8) NOT NULL,
    leverage INTEGER NOT NULL,
    margin_mode VARCHAR(20) NOT NULL,
    exchange VARCHAR(20) NOT NULL,
    exchange_order_id VARCHAR(100),
    fill_price NUMERIC(20, 8),
    fill_quantity NUMERIC(28, 8),
    fill_notional NUMERIC(20, 8),
    fee NUMERIC(20, 8),
    slippage_rate NUMERIC(10, 8),
    reference_price NUMERIC(20, 8),
    filled_at TIMESTAMPTZ,
    price_event_id TEXT,
    submitted_at TIMESTAMPTZ NOT NULL,
    order_data JSONB NOT NULL,
    created_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX idx_orders_signal ON orders(signal_id);
CREATE INDEX idx_orders_symbol_time ON orders(symbol, submitted_at DESC);

-- The paper exchange's own order book: what "the exchange" has accepted, keyed by client order id.
-- The execution stage queries it before submitting (query-before-retry).
CREATE TABLE paper_exchange_orders (
    client_order_id VARCHAR(36) PRIMARY KEY,
    exchange_order_id VARCHAR(100) NOT NULL UNIQUE,
    symbol VARCHAR(20) NOT NULL,
    side VARCHAR(4) NOT NULL,
    quantity NUMERIC(28, 8) NOT NULL,
    status VARCHAR(20) NOT NULL,
    fill_price NUMERIC(20, 8),
    fee NUMERIC(20, 8),
    slippage_rate NUMERIC(10, 8),
    reference_price NUMERIC(20, 8),
    filled_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ DEFAULT NOW()
);

-- trades (seed 02_create_trades_table.sql): one row per filled opening order -------------------------
CREATE TABLE trades (
    trade_id UUID PRIMARY KEY,
    signal_id TEXT NOT NULL,
    order_id UUID NOT NULL UNIQUE REFERENCES orders(order_id),
    symbol VARCHAR(20) NOT NULL,
    side VARCHAR(10) NOT NULL CHECK (side IN ('buy', 'sell', 'long', 'short')),
    order_type VARCHAR(20) DEFAULT 'market'
        CHECK (order_type IN ('market', 'limit', 'stop', 'stop_limit', 'oco')),
    leverage INTEGER DEFAULT 20 CHECK (leverage >= 1 AND leverage <= 125),
    margin_mode VARCHAR(20) DEFAULT 'ISOLATED' CHECK (margin_mode IN ('ISOLATED', 'CROSSED')),
    base_position_size NUMERIC(20, 8) NOT NULL,      -- margin committed
    actual_position_size NUMERIC(20, 8) NOT NULL,    -- base_position_size * leverage (notional)
    quantity NUMERIC(28, 8) NOT NULL,
    margin_required NUMERIC(20, 8) NOT NULL,
    entry_price NUMERIC(20, 8) NOT NULL,
    entry_price_requested NUMERIC(20, 8),
    exit_price NUMERIC(20, 8),
    stop_loss_price NUMERIC(20, 8),
    take_profit_price NUMERIC(20, 8),
    stop_loss_percent NUMERIC(5, 4) DEFAULT 0.0200,
    take_profit_percent NUMERIC(5, 4) DEFAULT 0.0200,
    liquidation_price NUMERIC(20, 8),
    trading_fee_percent NUMERIC(6, 5) DEFAULT 0.00040,
    funding_fee_percent NUMERIC(6, 5) DEFAULT 0.00010,
    trading_fee_amount NUMERIC(20, 8),
    funding_fee_amount NUMERIC(20, 8),
    exchange VARCHAR(20) DEFAULT 'paper',
    exchange_order_id VARCHAR(100),
    execution_algorithm VARCHAR(50) DEFAULT 'market',
    slippage_tolerance NUMERIC(5, 4) DEFAULT 0.0010,
    actual_slippage NUMERIC(10, 8),
    status VARCHAR(20) DEFAULT 'pending'
        CHECK (status IN ('pending', 'submitted', 'filled', 'partial', 'cancelled', 'rejected', 'expired')),
    fill_status VARCHAR(20) DEFAULT 'unfilled' CHECK (fill_status IN ('unfilled', 'partial', 'filled')),
    risk_score NUMERIC(5, 4),
    var_estimate NUMERIC(20, 8),
    kelly_fraction NUMERIC(5, 4),
    position_correlation NUMERIC(5, 4),
    order_submitted_at TIMESTAMPTZ,
    order_filled_at TIMESTAMPTZ,
    position_closed_at TIMESTAMPTZ,
    close_reason VARCHAR(30),
    unrealized_pnl NUMERIC(20, 8) DEFAULT 0,
    realized_pnl NUMERIC(20, 8) DEFAULT 0,
    total_pnl NUMERIC(20, 8) DEFAULT 0,
    roe_percent NUMERIC(12, 4),
    execution_venue VARCHAR(50),
    execution_context JSONB,
    risk_metadata JSONB,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW(),
    created_by VARCHAR(100) DEFAULT 'phoenix95-execution'
);
CREATE INDEX idx_trades_signal_id ON trades(signal_id);
CREATE INDEX idx_trades_symbol_created ON trades(symbol, created_at DESC);
CREATE INDEX idx_trades_status_composite ON trades(status, fill_status, created_at DESC);
CREATE INDEX idx_trades_leverage_mode ON trades(leverage, margin_mode);
CREATE INDEX idx_trades_pnl ON trades(total_pnl DESC);
CREATE INDEX idx_trades_active_positions ON trades(status, position_closed_at) WHERE position_closed_at IS NULL;
CREATE INDEX idx_trades_active ON trades(symbol, status, created_at) WHERE status IN ('submitted', 'filled', 'partial');

CREATE TRIGGER update_trades_updated_at
    BEFORE UPDATE ON trades
    FOR EACH ROW
    EXECUTE FUNCTION update_updated_at_column();

CREATE VIEW leverage_statistics AS
SELECT
    symbol,
    leverage,
    margin_mode,
    COUNT(*) AS trade_count,
    AVG(actual_position_size) AS avg_position_size,
    AVG(total_pnl) AS avg_pnl,
    SUM(CASE WHEN total_pnl > 0 THEN 1 ELSE 0 END)::NUMERIC / COUNT(*) AS win_rate,
    MAX(total_pnl) AS max_profit,
    MIN(total_pnl) AS max_loss,
    AVG(roe_percent) AS avg_roe
FROM trades
WHERE status = 'filled' AND position_closed_at IS NOT NULL
GROUP BY symbol, leverage, margin_mode
ORDER BY trade_count DESC;

-- positions (seed's second, fuller 03_create_positions_table.sql) ------------------------------------
CREATE TABLE positions (
    position_id UUID PRIMARY KEY,
    trade_id UUID NOT NULL UNIQUE REFERENCES trades(trade_id) ON DELETE CASCADE,
    signal_id TEXT NOT NULL,
    symbol VARCHAR(20) NOT NULL,
    side VARCHAR(10) NOT NULL CHECK (side IN ('long', 'short')),
    leverage INTEGER NOT NULL,
    margin_mode VARCHAR(20) NOT NULL,
    quantity NUMERIC(28, 8) NOT NULL,
    base_size NUMERIC(20, 8) NOT NULL,        -- margin
    leveraged_size NUMERIC(20, 8) NOT NULL,   -- notional at entry
    margin_used NUMERIC(20, 8) NOT NULL,
    entry_price NUMERIC(20, 8) NOT NULL,
    current_price NUMERIC(20, 8),
    mark_price NUMERIC(20, 8),
    stop_loss_price NUMERIC(20, 8) NOT NULL,
    take_profit_price NUMERIC(20, 8) NOT NULL,
    liquidation_price NUMERIC(20, 8) NOT NULL,
    initial_margin NUMERIC(20, 8) NOT NULL,
    maintenance_margin NUMERIC(20, 8) NOT NULL,
    margin_ratio NUMERIC(12, 4),
    liquidation_buffer NUMERIC(5, 4) DEFAULT 0.1000,
    unrealized_pnl NUMERIC(20, 8) DEFAULT 0,
    unrealized_pnl_percent NUMERIC(12, 4) DEFAULT 0,
    roe NUMERIC(12, 4) DEFAULT 0,
    realized_pnl NUMERIC(20, 8) DEFAULT 0,
    total_fees_paid NUMERIC(20, 8) DEFAULT 0,
    funding_paid NUMERIC(20, 8) DEFAULT 0,
    exit_price NUMERIC(20, 8),
    status VARCHAR(20) DEFAULT 'open'
        CHECK (status IN ('open', 'closing', 'closed', 'liquidated', 'expired')),
    close_reason VARCHAR(30),
    last_monitored_at TIMESTAMPTZ,
    monitoring_interval_seconds INTEGER DEFAULT 5,
    alert_triggered BOOLEAN DEFAULT FALSE,
    distance_to_liquidation NUMERIC(12, 4),
    risk_level VARCHAR(10),
    position_age_hours NUMERIC(10, 2),
    max_drawdown NUMERIC(12, 4),
    max_profit NUMERIC(12, 4),
    auto_close_at TIMESTAMPTZ NOT NULL,
    forced_close_reason VARCHAR(100),
    opened_at TIMESTAMPTZ NOT NULL,
    closed_at TIMESTAMPTZ,
    last_price_update TIMESTAMPTZ NOT NULL,
    exchange VARCHAR(20) DEFAULT 'paper',
    position_metadata JSONB,
    monitoring_log JSONB[],
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX idx_positions_active ON positions(status, last_monitored_at) WHERE status = 'open';
CREATE INDEX idx_positions_symbol_open ON positions(symbol, status, opened_at DESC);
CREATE INDEX idx_positions_liquidation_risk ON positions(distance_to_liquidation ASC)
    WHERE status = 'open' AND distance_to_liquidation < 10;
CREATE INDEX idx_positions_auto_close ON positions(auto_close_at) WHERE status = 'open';
CREATE INDEX idx_positions_monitoring ON positions(last_monitored_at) WHERE status = 'open';
CREATE INDEX idx_positions_signal ON positions(signal_id);

CREATE TRIGGER update_positions_updated_at
    BEFORE UPDATE ON positions
    FOR EACH ROW
    EXECUTE FUNCTION update_updated_at_column();

-- Position metrics (seed's update_position_metrics, fixed: see 3 and 6 above).
CREATE OR REPLACE FUNCTION update_position_metrics()
RETURNS TRIGGER AS $$
DECLARE
    reference NUMERIC;
BEGIN
    NEW.position_age_hours = EXTRACT(EPOCH FROM (NEW.last_price_update - NEW.opened_at)) / 3600;
    reference := COALESCE(NEW.mark_price, NEW.current_price);
    IF NEW.distance_to_liquidation IS NULL AND reference IS NOT NULL AND reference > 0 THEN
        IF NEW.side = 'long' THEN
            NEW.distance_to_liquidation = ((reference - NEW.liquidation_price) / reference) * 100;
        ELSE
            NEW.distance_to_liquidation = ((NEW.liquidation_price - reference) / reference) * 100;
        END IF;
    END IF;
    IF NEW.roe IS NULL AND NEW.margin_used > 0 THEN
        NEW.roe = (NEW.unrealized_pnl / NEW.margin_used) * 100;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER calculate_position_metrics
    BEFORE INSERT OR UPDATE ON positions
    FOR EACH ROW
    EXECUTE FUNCTION update_position_metrics();

CREATE VIEW active_positions AS
SELECT
    p.*,
    t.order_id,
    s.phoenix95_score,
    s.confidence AS signal_confidence,
    CASE
        WHEN p.distance_to_liquidation < 5 THEN 'CRITICAL'
        WHEN p.distance_to_liquidation < 10 THEN 'HIGH'
        WHEN p.distance_to_liquidation < 20 THEN 'MEDIUM'
        ELSE 'LOW'
    END AS liquidation_risk_level,
    CASE WHEN p.position_age_hours > 48 THEN TRUE ELSE FALSE END AS should_auto_close
FROM positions p
JOIN trades t ON p.trade_id = t.trade_id
LEFT JOIN signals s ON p.signal_id = s.signal_id
WHERE p.status = 'open'
ORDER BY p.distance_to_liquidation ASC;

COMMENT ON TABLE positions IS 'Phoenix95 positions (isolated margin, one per filled opening order)';
COMMENT ON COLUMN positions.monitoring_interval_seconds IS 'monitoring interval (5 s)';
COMMENT ON COLUMN positions.auto_close_at IS 'auto-close time (48 h after opening, event time)';

-- dead letters ---------------------------------------------------------------------------------------
CREATE TABLE dead_letters (
    event_id UUID PRIMARY KEY,
    correlation_id TEXT,
    stage VARCHAR(30) NOT NULL,
    reason VARCHAR(40) NOT NULL,
    error TEXT NOT NULL,
    source_topic TEXT NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset BIGINT NOT NULL,
    source_timestamp TIMESTAMPTZ,
    original_key BYTEA,
    original_value BYTEA NOT NULL,
    original_headers JSONB NOT NULL DEFAULT '[]',
    dead_at TIMESTAMPTZ NOT NULL,
    replay_count INTEGER NOT NULL DEFAULT 0,
    replayed_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    UNIQUE (stage, source_topic, source_partition, source_offset)
);
CREATE INDEX idx_dead_letters_stage_reason ON dead_letters(stage, reason, dead_at DESC);
CREATE INDEX idx_dead_letters_dead_at ON dead_letters(dead_at DESC);

-- trading state (one row) and audit log ---------------------------------------------------------------
CREATE TABLE trading_state (
    id SMALLINT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    state VARCHAR(10) NOT NULL CHECK (state IN ('ACTIVE', 'REDUCING', 'HALTED')),
    reason TEXT,
    updated_by VARCHAR(100),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
INSERT INTO trading_state (id, state, reason, updated_by) VALUES (1, 'ACTIVE', 'initial state', 'migration');

CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    actor VARCHAR(100) NOT NULL,
    action VARCHAR(100) NOT NULL,
    subject TEXT,
    details JSONB
);
CREATE INDEX idx_audit_log_at ON audit_log(at DESC);

-- The paper account: equity = starting equity (configuration) + realized PnL of closed positions.
CREATE VIEW paper_account_realized AS
SELECT
    COALESCE(SUM(realized_pnl) FILTER (WHERE status <> 'open'), 0) AS realized_pnl,
    COUNT(*) FILTER (WHERE status <> 'open') AS closed_positions,
    COUNT(*) FILTER (WHERE status = 'open') AS open_positions,
    COALESCE(SUM(total_fees_paid), 0) AS fees_paid,
    COALESCE(SUM(funding_paid), 0) AS funding_paid
FROM positions;
