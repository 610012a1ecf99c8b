"""Scale-out keying and ownership: the risk stage's input is keyed by book (one instance decides for a
whole book), and a positions instance holds only the open positions of the symbols whose partitions
are assigned to it, rebuilt on an assignment and dropped on a revocation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal

from aiokafka.partitioner import DefaultPartitioner

from phoenix95.agents.positions import PositionStage
from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.domain.config import DEFAULT_SYMBOLS, TradingConfig
from phoenix95.domain.positions import Position
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.messages import Analysis, Order
from phoenix95.streams.ownership import BOOK_KEY, SymbolOwnership, partition_of
from phoenix95.streams.producer import key_of
from phoenix95.streams.supervisor import instance_names, stage_of
from tests import factories
from tests.unit.samples import samples


class StoredPositions:
    def __init__(self, positions: list[Position], realized: Decimal = Decimal(0)):
        self.stored = positions
        self.realized = realized

    async def open_positions(self) -> list[Position]:
        return list(self.stored)

    async def positions(self, position_ids: Sequence[str]) -> dict[str, Position]:
        return {p.position_id: p for p in self.stored if p.position_id in position_ids}

    async def realized_pnl(self) -> Decimal:
        return self.realized


def test_partition_of_is_the_producers_partitioner():
    for symbol in DEFAULT_SYMBOLS:
        key = symbol.encode()
        assert partition_of(key, 4) == DefaultPartitioner()(key, [0, 1, 2, 3], [0, 1, 2, 3])


def test_analyses_are_keyed_by_book_and_every_other_event_by_symbol():
    events = samples()
    analysis = next(e for e in events if isinstance(e, Analysis))
    order = next(e for e in events if isinstance(e, Order))
    assert key_of(analysis) == BOOK_KEY
    assert key_of(order) == order.symbol.encode()


def test_two_instances_own_every_symbol_exactly_once():
    first = SymbolOwnership("p95.orders", 4)
    second = SymbolOwnership("p95.orders", 4)
    first.assign([("p95.orders", 0), ("p95.orders", 1), ("p95.market.prices", 0), ("p95.market.prices", 1)])
    second.assign([("p95.orders", 2), ("p95.orders", 3), ("p95.market.prices", 2), ("p95.market.prices", 3)])
    for symbol in DEFAULT_SYMBOLS:
        assert first.owns(symbol) != second.owns(symbol), symbol
    first.revoke()
    assert not any(first.owns(symbol) for symbol in DEFAULT_SYMBOLS)
    assert all(SymbolOwnership("p95.orders", 4).owns(symbol) for symbol in DEFAULT_SYMBOLS)  # no group: all


def test_positions_instance_rebuilds_owned_positions_on_assignment_and_drops_them_on_revocation():
    config = TradingConfig()
    stored = [factories.position(symbol=s, price="1", quantity="100", config=config) for s in DEFAULT_SYMBOLS]
    ownership = SymbolOwnership("p95.orders", 4)
    stage = PositionStage(
        Codec(), config, bundled_brackets(), StoredPositions(stored), clock="wall", ownership=ownership
    )
    asyncio.run(stage.start())
    assert len(stage.open) == len(DEFAULT_SYMBOLS)  # before any assignment: a lone instance owns all
    ownership.assign([("p95.orders", 1), ("p95.orders", 3)])
    asyncio.run(stage.recover())  # what the app's on_partitions_assigned hook does (runner.reload)
    owned = {p.symbol for p in stage.open.values()}
    expected = {s for s in DEFAULT_SYMBOLS if partition_of(s.encode(), 4) in {1, 3}}
    assert owned == expected and 0 < len(owned) < len(DEFAULT_SYMBOLS)
    ownership.revoke()
    stage.reset()  # on_partitions_revoked: runner.forget_held
    assert stage.open == {}
    ownership.assign([("p95.orders", 0), ("p95.orders", 2)])
    asyncio.run(stage.recover())
    assert {p.symbol for p in stage.open.values()} == set(DEFAULT_SYMBOLS) - expected


def test_positions_instance_sharing_the_symbols_takes_the_accounts_realized_pnl_from_the_store():
    config = TradingConfig()
    store = StoredPositions([], realized=Decimal("12.5"))
    ownership = SymbolOwnership("p95.orders", 4)
    stage = PositionStage(Codec(), config, bundled_brackets(), store, clock="wall", ownership=ownership)
    asyncio.run(stage.start())
    ownership.assign([("p95.orders", 0), ("p95.orders", 1)])
    store.realized = Decimal("20")  # another instance closed a position meanwhile
    asyncio.run(stage.process([]))
    assert stage.equity == config.starting_equity + Decimal("20")


def test_instance_names_map_back_to_their_stage():
    assert instance_names(["risk"], 1) == ["risk"]
    names = instance_names(["analysis", "risk"], 2)
    assert names == ["analysis-1", "analysis-2", "risk-1", "risk-2"]
    assert [stage_of(n) for n in names] == ["analysis", "analysis", "risk", "risk"]
    assert stage_of("positions") == "positions"


def test_worker_refuses_zero_instances_with_a_user_error():
    from typer.testing import CliRunner

    from phoenix95.cli.console import UserError
    from phoenix95.cli.main import app

    result = CliRunner().invoke(app, ["worker", "--instances", "0"])
    assert isinstance(result.exception, UserError)  # `p95` prints it on one line and exits 2
    assert str(result.exception) == "--instances 0: give 1 or more"
