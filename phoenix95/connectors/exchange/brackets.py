"""Binance USDⓈ-M leverage brackets read from files: the snapshot bundled with Phoenix95, or a file
saved from `GET /fapi/v1/leverageBracket` (`risk.brackets_file`). The domain gets the table as data."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from phoenix95.domain.brackets import BracketTable

BUNDLED_FILE = "leverage_brackets_2024-10.json"


def bundled_brackets() -> BracketTable:
    """The snapshot shipped with Phoenix95 (October 2024)."""
    text = resources.files("phoenix95.data.binance").joinpath(BUNDLED_FILE).read_text()
    return BracketTable.from_binance(json.loads(text))


def brackets_from_file(path: str | Path) -> BracketTable:
    """A leverageBracket response saved as JSON."""
    with open(path, encoding="utf-8") as handle:
        return BracketTable.from_binance(json.load(handle))
