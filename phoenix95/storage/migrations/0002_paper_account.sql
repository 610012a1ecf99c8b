-- The paper account's realized PnL, kept in one row by a trigger on positions, so that a risk
-- decision reads it in O(1) instead of summing every closed position (the view
-- paper_account_realized does that; it stays for reports).
--
-- A position closes exactly once: the positions upsert only updates rows still 'open', so the
-- transition fires once however often a batch is re-delivered. A position inserted already closed
-- (opened and closed within one batch) counts on insert; a deleted closed position is taken back.

CREATE TABLE paper_account (
    id SMALLINT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    realized_pnl NUMERIC NOT NULL DEFAULT 0,
    closed_positions BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

INSERT INTO paper_account (id, realized_pnl, closed_positions)
SELECT 1,
       COALESCE(SUM(realized_pnl) FILTER (WHERE status <> 'open'), 0),
       COUNT(*) FILTER (WHERE status <> 'open')
  FROM positions;

CREATE FUNCTION p95_paper_account_on_positions() RETURNS TRIGGER
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status <> 'open' THEN
        UPDATE paper_account
           SET realized_pnl = realized_pnl - COALESCE(OLD.realized_pnl, 0),
               closed_positions = closed_positions - 1, updated_at = NOW();
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status <> 'open' THEN
        UPDATE paper_account
           SET realized_pnl = realized_pnl + COALESCE(NEW.realized_pnl, 0),
               closed_positions = closed_positions + 1, updated_at = NOW();
    END IF;
    RETURN NULL;
END;
$$;

-- WHEN clauses keep the function from running for the marks of open positions (most writes).
CREATE TRIGGER trg_paper_account_insert
AFTER INSERT ON positions
FOR EACH ROW WHEN (NEW.status <> 'open') EXECUTE FUNCTION p95_paper_account_on_positions();

CREATE TRIGGER trg_paper_account_update
AFTER UPDATE ON positions
FOR EACH ROW WHEN (OLD.status <> 'open' OR NEW.status <> 'open') EXECUTE FUNCTION p95_paper_account_on_positions();

CREATE TRIGGER trg_paper_account_delete
AFTER DELETE ON positions
FOR EACH ROW WHEN (OLD.status <> 'open') EXECUTE FUNCTION p95_paper_account_on_positions();
