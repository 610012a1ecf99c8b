-- The notification hub (issue #22): a row's primary key is derived from (event id, channel)
-- (`notify/store.notification_id`), so it is the outbox's unique key; the second unique index on
-- (event_id, channel) only cost a write on every insert and every status change.
ALTER TABLE notifications DROP CONSTRAINT IF EXISTS notifications_event_channel;
