"""Phoenix95: an event-driven trading-signal pipeline on Kafka with Faust agents."""

__version__ = "0.1.0"
