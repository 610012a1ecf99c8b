"""Faust app factory, topic registry and transport tuning."""
