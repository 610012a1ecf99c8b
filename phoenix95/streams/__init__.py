"""The Faust pipeline runtime: the stage registry (`stages`), the composition root (`wiring`), the
app factory, the producer, transport tuning, the worker supervisor and the metrics."""
