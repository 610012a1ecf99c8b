"""Each table's parameter builder (compiled once from its `{column: value}` row function) gives
exactly the row's values in the statement's column order, and a row function whose mapping does
not list the columns in order is refused at import, naming the function."""

from __future__ import annotations

from operator import itemgetter
from typing import Any, TypedDict, cast

import pytest

from phoenix95.agents.ports import DeadLettered, OrderPlaced, PositionChanged, SignalAnalyzed, VerdictMade
from phoenix95.storage.tables import dead_letters, orders, positions, risk_verdicts, signals, trades
from phoenix95.storage.tables.common import row_params, table_upsert
from tests import factories
from tests.unit.samples import samples


def _facts() -> dict[str, Any]:
    signal, analysis, verdict, order, tick, _price, dead = cast(list[Any], samples())
    return {
        "signal": SignalAnalyzed(signal, analysis),
        "verdict": VerdictMade(verdict),
        "order": OrderPlaced(order, verdict),
        "position": PositionChanged(tick, factories.position(symbol=tick.symbol)),
        "dead_letter": DeadLettered(dead),
    }


CASES = [
    (signals.SIGNAL, signals.signal_row, signals.signal_params, "signal"),
    (risk_verdicts.VERDICT, risk_verdicts.verdict_row, risk_verdicts.verdict_params, "verdict"),
    (orders.ORDER, orders.order_row, orders.order_params, "order"),
    (trades.TRADE, trades.trade_row, trades.trade_params, "order"),
    (positions.POSITION, positions.position_row, positions.position_params, "position"),
    (dead_letters.DEAD_LETTER, dead_letters.dead_letter_row, dead_letters.dead_letter_params, "dead_letter"),
]


@pytest.mark.parametrize(("statement", "row", "compiled", "fact"), CASES, ids=[c[0].name for c in CASES])
def test_the_compiled_parameters_are_the_row_mapping_in_column_order(statement, row, compiled, fact) -> None:
    fact_value = _facts()[fact]
    mapping = row(fact_value)
    assert tuple(mapping) == statement.columns
    assert compiled(fact_value) == itemgetter(*statement.columns)(mapping)
    assert compiled.__name__ == f"{row.__name__}_params"


class _PairRow(TypedDict):
    a: int
    b: int


PAIR = table_upsert("pair", "pairs", _PairRow, order=1)


def _swapped(value: int) -> _PairRow:
    return {"b": value, "a": value + 1}


def _missing(value: int) -> Any:
    return {"a": value}


def _pair(value: int) -> _PairRow:
    if value < 0:
        return {"a": 0, "b": 0}
    return {"a": value, "b": value * 2}


def test_a_row_mapping_out_of_column_order_is_refused_naming_the_function() -> None:
    with pytest.raises(ValueError, match=r"_swapped: every return must be .* pair .*: a, b"):
        row_params(PAIR, _swapped)
    with pytest.raises(ValueError, match="_missing"):
        row_params(PAIR, _missing)


def test_every_return_of_a_row_function_becomes_a_tuple() -> None:
    compiled = row_params(PAIR, _pair)
    assert compiled(3) == (3, 6)
    assert compiled(-1) == (0, 0)
