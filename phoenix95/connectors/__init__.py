"""The outside world: publishers, the webhook, market-data feeds and exchange connectors."""
