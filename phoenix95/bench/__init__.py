"""`p95 bench`: every figure measured next to its baseline, in the same run, on the same machine."""
