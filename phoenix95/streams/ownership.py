"""Scale-out: which keys go to which partition, and which symbols this worker instance owns now.

Several instances of a stage share one consumer group; Kafka gives each instance some partitions
of the stage's inputs (Faust assigns the same partition numbers of co-partitioned inputs, e.g.
`p95.orders` and `p95.market.prices`, to the same instance). Keys are symbols, so an instance owns
the symbols whose key hashes to its partitions (the producer's murmur2 partitioner). A stage that
keeps per-symbol state (the positions stage's open positions) keeps only the state of the symbols
it owns: loaded for the partitions assigned to it, dropped for the ones revoked (see
`streams/app.py`'s rebalance hooks and docs/scaling.md).

The risk stage's input is keyed by *account* (`BOOK_KEY`), not by symbol: every analysis of one
book lands on one partition, so exactly one risk instance decides for a book at any time and its
portfolio limits (open positions, exposure per symbol and in total) stay exact across instances.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka.partitioner import murmur2

#: Key of the risk stage's input (`p95.analysis`): the book (account) the signal trades on. There is
#: one paper account today; more books would be more keys, and more risk instances doing work.
BOOK_KEY = b"book:paper"


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the producer's default partitioner (Kafka's murmur2) puts `key` on."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class SymbolOwnership:
    """The symbols a stage instance owns: those whose partition of `topic` is assigned to it.
    `assigned is None` (the default: no assignment seen yet, or a stage run outside a consumer
    group, as in the in-process replay) owns every symbol."""

    topic: str
    partitions: int
    assigned: frozenset[int] | None = None
    _cache: dict[str, bool] = field(default_factory=dict, repr=False)

    def owns(self, symbol: str) -> bool:
        if self.assigned is None:
            return True
        owned = self._cache.get(symbol)
        if owned is None:
            owned = self._cache[symbol] = partition_of(symbol.encode(), self.partitions) in self.assigned
        return owned

    def assign(self, topic_partitions: Iterable[tuple[str, int]]) -> None:
        """The instance's whole assignment after a rebalance, as (topic, partition) pairs."""
        self.assigned = frozenset(partition for topic, partition in topic_partitions if topic == self.topic)
        self._cache.clear()

    def revoke(self) -> None:
        """Partitions were revoked (eager rebalance: all of them): own nothing until the next assignment."""
        self.assigned = frozenset()
        self._cache.clear()
