"""The p95 command."""
