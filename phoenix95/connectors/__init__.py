"""The outside world: publishers, the webhook, market-data feeds, exchange connectors and the
broker's topic administration (`kafka_admin`)."""
