"""Consumer-lag monitoring: offsets and message ages read from the broker (`offsets`), a Burrow-style
status over a sliding window (`status`), sampling and snapshots (`monitor`), the Prometheus exporter
(`exporter`) and the risk stage's lag probe (`probe`)."""
