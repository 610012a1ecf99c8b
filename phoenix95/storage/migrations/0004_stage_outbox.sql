-- A transactional outbox for the stages whose outputs cannot be derived again from what they wrote
-- (the positions stage: a re-delivered fill finds its position and opens nothing, so an "opened"
-- event lost with a worker killed between its writes and its produce would never be produced).
--
-- A stage writes the events it is about to produce here, in the transaction that writes its rows;
-- it deletes them once the broker confirmed them; a starting worker produces whatever is left
-- (again: consumers see an event id twice at worst, never lose one).

CREATE TABLE stage_outbox (
    outbox_id   UUID PRIMARY KEY,            -- derived from the stage and the ids of the events
    stage       TEXT NOT NULL,
    payload     BYTEA NOT NULL,              -- the encoded events, each length-prefixed
    created_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX idx_stage_outbox_stage ON stage_outbox (stage, created_at);
