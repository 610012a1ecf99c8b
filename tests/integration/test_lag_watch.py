"""`p95 lag --watch` against the real broker: run in a pseudo-terminal (as a person would, so Rich
redraws the live table at every refresh), it shows the groups' topic and partition rows, samples again
at every refresh (messages produced meanwhile show up) and exits non-zero on Ctrl-C when a group is
not OK."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from phoenix95.connectors.kafka_admin import ensure_topics
from tests.integration.test_lag import commit, now_ms, produce

pytestmark = pytest.mark.integration

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
TITLE = "consumer lag — "


class Terminal:
    """A command in a pseudo-terminal, with everything it drew so far."""

    def __init__(self, command: list[str]):
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            command,
            stdin=slave,
            stdout=slave,
            stderr=subprocess.PIPE,
            env={**os.environ, "COLUMNS": "200", "LINES": "60", "TERM": "xterm"},
            start_new_session=True,
        )
        os.close(slave)
        self.output = b""

    def read(self, timeout: float = 0.2) -> None:
        while select.select([self.master], [], [], timeout)[0]:
            try:
                chunk = os.read(self.master, 1 << 16)
            except OSError:  # the other end closed
                return
            if not chunk:
                return
            self.output += chunk
            timeout = 0.0

    def frames(self) -> list[str]:
        """Each refresh of the live table, without terminal control sequences."""
        text = ANSI.sub(b"", self.output).decode(errors="replace")
        return [TITLE + frame for frame in text.split(TITLE)[1:]]

    def wait_for_frame(self, wanted: Callable[[str], bool], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read()
            matching = [frame for frame in self.frames() if wanted(frame)]
            if matching:
                return matching[-1]
            if self.process.poll() is not None:
                break
        stderr = self.process.stderr.read().decode() if self.process.poll() is not None and self.process.stderr else ""
        raise AssertionError(f"no such frame in {len(self.frames())} frames; last: {self.frames()[-1:]} {stderr}")

    def interrupt(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self.read(0.1)
        self.read(0.1)
        code = self.process.wait(timeout=5)
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def rows(frame: str) -> list[list[str]]:
    """The table's body rows as cells (Rich draws columns with │)."""
    return [[cell.strip() for cell in line.strip().strip("│").split("│")] for line in frame.splitlines() if "│" in line]


def table(frame: str, topic: str) -> dict[str, dict[str | int, list[str]]]:
    """Per group: its partitions' rows of `topic` ([committed, end, lag, lag (s), status] by partition
    number) and, under "summary", its group row ([partitions, lag, lag (s), status]). A group's
    partition rows come right before its group row."""
    found: dict[str, dict[str | int, list[str]]] = {}
    pending: dict[str | int, list[str]] = {}
    for cells in rows(frame):
        if len(cells) != 7:
            continue
        name, partition, committed, end, lag, seconds, status = cells
        if name == topic:
            pending[int(partition)] = [committed, end, lag, seconds, status]
        elif name:
            found[name] = {**pending, "summary": [partition, lag, seconds, status]}
            pending = {}
    return found


def test_lag_watch_redraws_group_and_topic_rows_at_each_refresh_and_exits_non_zero_when_behind(services, namespace):
    topic = f"{namespace.name}.watch.events"
    asyncio.run(ensure_topics(services.kafka, [topic], partitions=2))
    behind, caught_up = f"{namespace.name}.watch-behind", f"{namespace.name}.watch-caught-up"
    asyncio.run(produce(services.kafka, topic, {0: [now_ms() - 30_000] * 5, 1: [now_ms()] * 2}))
    asyncio.run(commit(services.kafka, behind, topic, {0: 2, 1: 2}))
    asyncio.run(commit(services.kafka, caught_up, topic, {0: 5, 1: 2}))
    command = [sys.executable, "-m", "phoenix95", "lag", "--watch", "--group", behind, "--group", caught_up]
    # window 1 s: offsets that do not move while there is lag turn STOP within a couple of refreshes
    terminal = Terminal([*command, "--topic", topic, "--interval", "0.5", "--window", "1"])
    try:
        first = table(terminal.wait_for_frame(lambda frame: caught_up in table(frame, topic)), topic)
        # while it watches: 3 more messages, which one group consumes and the other does not
        asyncio.run(produce(services.kafka, topic, {0: [now_ms()] * 3}))
        asyncio.run(commit(services.kafka, caught_up, topic, {0: 8}))

        def stopped_after_the_new_messages(frame: str) -> bool:
            groups = table(frame, topic)
            if behind not in groups or caught_up not in groups:
                return False
            _committed, end, _lag, _seconds, status = groups[behind][0]
            return end == "8" and status == "STOP" and groups[caught_up][0][0] == "8"

        later = table(terminal.wait_for_frame(stopped_after_the_new_messages), topic)
        code = terminal.interrupt()
    finally:
        terminal.kill()

    assert len(terminal.frames()) >= 2, "the table was redrawn"
    assert first[behind][0][:3] == ["2", "5", "3"]  # committed, end, lag
    assert float(first[behind][0][3]) == pytest.approx(30, abs=5)  # lag in seconds: the oldest unconsumed
    assert first[behind][1][:4] == ["2", "2", "0", "0.0"]
    assert first[behind]["summary"][:2] == ["2", "3"]  # partitions, lag
    assert first[caught_up][0][:3] == ["5", "5", "0"] and first[caught_up]["summary"][1:] == ["0", "0.0", "OK"]
    # a later refresh sampled again: the new messages and the new commit are there
    assert later[behind][0] == ["2", "8", "6", later[behind][0][3], "STOP"]
    assert float(later[behind][0][3]) >= float(first[behind][0][3])
    assert later[behind]["summary"][1] == "6" and later[behind]["summary"][3] == "ERR (STOP)"
    assert later[caught_up][0][:3] == ["8", "8", "0"] and later[caught_up]["summary"][3] == "OK"
    assert code == 1, "a group is not OK"
