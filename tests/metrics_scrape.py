"""Reading a Prometheus /metrics endpoint in tests: every sample by (name, labels)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(where: int | str) -> Series:
    """The samples served at a port on 127.0.0.1 (its /metrics) or at a full URL."""
    url = f"http://127.0.0.1:{where}/metrics" if isinstance(where, int) else where
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(series: Series, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include these."""
    wanted = set(labels.items())
    return sum(value for (metric, found), value in series.items() if metric == name and wanted <= found)
