"""The REST API (`p95 api`) and what the dashboard shares with it: API keys and users, the audit call,
and the reads behind every page (issue #19)."""
