"""`p95 bench --profile`: py-spy's folded stacks become a flame graph and a share of time per area."""

from __future__ import annotations

from collections import Counter

from phoenix95.bench.profile import area_of, areas, flame_svg, idle_share, read_folded

FOLDED = (
    "run (asyncio/runners.py:118);process (phoenix95/agents/positions.py:80);decode (phoenix95/schemas/codec.py:90);"
    "schemaless_reader (fastavro/_read_py.py:10) 3\n"
    "run (asyncio/runners.py:118);persist (phoenix95/storage/sink.py:40);execute (psycopg/cursor_async.py:100) 5\n"
    "run (asyncio/runners.py:118);_run_once (asyncio/base_events.py:1900) 2\n"
    "run (asyncio/runners.py:118);_run_once (asyncio/base_events.py:1900);EpollSelector.select (selectors.py:468) 10\n"
)


def test_samples_are_attributed_to_the_innermost_known_area(tmp_path):
    path = tmp_path / "positions.folded"
    path.write_text(FOLDED)
    stacks = read_folded(path)
    assert sum(stacks.values()) == 20
    # shares of the busy samples: a thread waiting in epoll is idle, counted apart
    assert areas(stacks) == {"postgres client (psycopg)": 0.5, "avro codec": 0.3, "asyncio loop": 0.2}
    assert idle_share(stacks) == 0.5
    assert area_of(["main (app.py:1)"]) == "other"


def test_the_flame_graph_is_an_svg_with_a_box_per_frame_and_its_share():
    svg = flame_svg(Counter({"a (x.py:1);b (y.py:2)": 3, "a (x.py:1);c (z.py:3)": 1}), "stage")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "a (x.py:1) (4 samples, 100.0%)" in svg
    assert "b (y.py:2) (3 samples, 75.0%)" in svg and "c (z.py:3) (1 samples, 25.0%)" in svg
