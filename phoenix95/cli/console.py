"""Console helpers every `p95` command uses: the user-error type, stderr, and JSON on stdout.

A leaf module (imports nothing of ours), so command modules never import `cli/main.py`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

stderr = Console(stderr=True)


class UserError(Exception):
    """An error the user can fix; printed as one line without a traceback (exit status 2)."""


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()
