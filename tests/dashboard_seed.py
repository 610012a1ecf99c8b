"""Seed a namespace's schema with a trading history for the API and dashboard tests (and the page-speed
measurement): signals with verdicts, orders, trades, open and closed positions, dead letters. One SQL
statement per table (generate_series), so 100,000 signals take seconds."""

from __future__ import annotations

from phoenix95.storage.postgres import Database

SYMBOLS = "(ARRAY['XRPUSDT','BTCUSDT','ETHUSDT'])[1 + i %% 3]"
PRICE = "(ARRAY[1.19, 60000, 4000])[1 + i %% 3]::numeric"


async def seed(db: Database, *, signals: int = 30, closed: int = 10, open_positions: int = 3, dead: int = 4) -> None:
    """Signals s1..sN (newest is s1), every third REJECTED (LOW_CONFIDENCE, and s3 also RSI_EXTREME);
    the first `closed + open_positions` approved ones have an order, a trade and a position (the newest
    `open_positions` of them still open)."""
    await db.execute(
        f"""INSERT INTO signals (signal_id, symbol, action, price, confidence, strategy, timeframe, source,
                                 received_at, phoenix95_score, final_confidence)
            SELECT 's' || i, {SYMBOLS}, CASE WHEN i %% 2 = 0 THEN 'buy' ELSE 'sell' END, {PRICE}, 0.8,
                   'strat-' || (i %% 5), '5m', 'custom', NOW() - make_interval(secs => i * 10), 0.7, 0.7
              FROM generate_series(1, %s) AS i""",
        (signals,),
    )
    await db.execute(
        f"""INSERT INTO risk_verdicts (verdict_id, signal_id, analysis_id, symbol, side, decision, reasons, details,
                                       trading_state, signal_time, decided_at, price, kelly, kelly_fraction,
                                       position_fraction, notional, initial_margin, leverage, equity, free_margin,
                                       var_1d_95, verdict)
            SELECT md5('v' || i)::uuid, 's' || i, md5('a' || i)::uuid, {SYMBOLS},
                   CASE WHEN i %% 2 = 0 THEN 'long' ELSE 'short' END,
                   CASE WHEN i %% 3 = 0 THEN 'REJECTED' ELSE 'APPROVED' END,
                   CASE WHEN i = 3 THEN ARRAY['LOW_CONFIDENCE', 'RSI_EXTREME']
                        WHEN i %% 3 = 0 THEN ARRAY['LOW_CONFIDENCE'] ELSE ARRAY[]::text[] END,
                   ARRAY[]::text[], 'ACTIVE', NOW() - make_interval(secs => i * 10),
                   NOW() - make_interval(secs => i * 10 - 1), {PRICE}, 0.12, 0.2, 0.024, 240, 12, 20, 10000, 9000,
                   35.5, '{{}}'::jsonb
              FROM generate_series(1, %s) AS i""",
        (signals,),
    )
    positions = closed + open_positions
    approved = "(SELECT i FROM generate_series(1, %s) AS i WHERE i %% 3 <> 0 ORDER BY i LIMIT %s) AS a"
    await db.execute(
        f"""INSERT INTO orders (order_id, client_order_id, verdict_id, signal_id, symbol, side, position_side, intent,
                                quantity, status, requested_price, leverage, margin_mode, exchange, fill_price,
                                fill_quantity, fee, submitted_at, filled_at, order_data)
            SELECT md5('o' || i)::uuid, md5('o' || i), md5('v' || i)::uuid, 's' || i, {SYMBOLS},
                   CASE WHEN i %% 2 = 0 THEN 'buy' ELSE 'sell' END, CASE WHEN i %% 2 = 0 THEN 'long' ELSE 'short' END,
                   'open', 10, 'filled', {PRICE}, 20, 'ISOLATED', 'paper', {PRICE}, 10, 0.01,
                   NOW() - make_interval(secs => i * 10 - 2), NOW() - make_interval(secs => i * 10 - 2), '{{}}'::jsonb
              FROM {approved}""",
        (signals, positions),
    )
    await db.execute(
        f"""INSERT INTO trades (trade_id, signal_id, order_id, symbol, side, base_position_size, actual_position_size,
                                quantity, margin_required, entry_price, status, fill_status)
            SELECT md5('o' || i)::uuid, 's' || i, md5('o' || i)::uuid, {SYMBOLS},
                   CASE WHEN i %% 2 = 0 THEN 'long' ELSE 'short' END, 12, 240, 10, 12, {PRICE}, 'filled', 'filled'
              FROM {approved}""",
        (signals, positions),
    )
    await db.execute(
        f"""INSERT INTO positions (position_id, trade_id, signal_id, symbol, side, leverage, margin_mode, quantity,
                                   base_size, leveraged_size, margin_used, entry_price, mark_price, stop_loss_price,
                                   take_profit_price, liquidation_price, initial_margin, maintenance_margin,
                                   unrealized_pnl, auto_close_at, opened_at, last_price_update, status, closed_at,
                                   exit_price, realized_pnl, close_reason, total_fees_paid, funding_paid)
            SELECT md5('p' || i)::uuid, md5('o' || i)::uuid, 's' || i, {SYMBOLS},
                   CASE WHEN i %% 2 = 0 THEN 'long' ELSE 'short' END, 20, 'ISOLATED', 10, 12, 240, 12, {PRICE},
                   {PRICE}, {PRICE} * 0.98, {PRICE} * 1.02, {PRICE} * 0.95, 12, 1.2,
                   CASE WHEN n <= %s THEN 1.5 ELSE 0 END, NOW() + INTERVAL '2 days',
                   NOW() - make_interval(secs => i * 10 - 3), NOW() - make_interval(secs => i * 10 - 4),
                   CASE WHEN n <= %s THEN 'open' ELSE 'closed' END,
                   CASE WHEN n <= %s THEN NULL ELSE NOW() - make_interval(secs => i * 10 - 5) END,
                   CASE WHEN n <= %s THEN NULL ELSE {PRICE} END,
                   CASE WHEN n <= %s THEN 0 WHEN i %% 2 = 0 THEN 2.5 ELSE -1.25 END,
                   CASE WHEN n <= %s THEN NULL WHEN i %% 2 = 0 THEN 'take_profit' ELSE 'stop_loss' END, 0.02, 0.001
              FROM (SELECT i, row_number() OVER (ORDER BY i) AS n FROM {approved}) AS b""",
        (open_positions,) * 6 + (signals, positions),
    )
    await db.execute(
        """INSERT INTO dead_letters (event_id, stage, reason, error, source_topic, source_partition, source_offset,
                                     original_value, dead_at)
           SELECT md5('d' || i)::uuid, CASE WHEN i %% 2 = 0 THEN 'analysis' ELSE 'risk' END, 'DECODE_ERROR',
                  'bad payload ' || i, 'p95.signals', 0, i, '\\x00'::bytea, NOW() - make_interval(mins => i * 20)
             FROM generate_series(1, %s) AS i""",
        (dead,),
    )
