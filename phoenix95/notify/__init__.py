"""The notification hub: tells the trader what happened, once, on the channels they use.

`events` classifies pipeline events into notification types, `templates` renders them, `channels`
speaks Apprise with a token bucket per channel, `store` is the `notifications` outbox table, `stage`
is the pipeline stage that writes the outbox, and `sender` delivers it.
"""
