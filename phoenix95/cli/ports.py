"""Checking a component's port before it starts, so a taken port is one clear line, not a traceback."""

from __future__ import annotations

import contextlib
import socket

from phoenix95.cli.console import UserError


def port_free(host: str, port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(host: str, port: int, *, what: str, setting: str) -> None:
    """Raise UserError when `port` is taken (0 = any free port: nothing to check)."""
    if port and not port_free(host, port):
        raise UserError(
            f"port {port} for {what} is in use on {host}: stop what uses it (`p95 status`) or set {setting}"
        )
