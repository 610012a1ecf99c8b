"""The capacity model of docs/scaling.md: instances and partitions for a load, and where the first
bottleneck appears as the load grows.

    python benchmarks/stage_cpu.py > measured.json      # CPU per message, measured here
    python benchmarks/capacity_model.py measured.json   # the tables (markdown)

Inputs: the CPU per price and per signal of each stage's own work and of its PostgreSQL backend,
from `stage_cpu.py`; plus, per message a worker consumes, Faust's and aiokafka's cost
(`FAUST_US_PER_CONSUMED`) and per message produced aiokafka's (`PRODUCE_US`), and the broker's
cost per message (`BROKER_US_*`), from the figures NOTES.md measured on this kind of machine. Model:
* each stage consumes every price (risk, execution, positions) and one message per signal; its CPU
  is `prices/s x cpu_per_price + signals/s x cpu_per_signal`; an instance is one Python process, so
  at most one core: plan each at `UTILISATION` of a core;
* the risk stage decides a book on one instance: a book's signals/s x risk's cpu_per_signal must fit
  in one instance, whatever the number of instances;
* PostgreSQL and the broker are given fixed resources (`PG_CORES`, `BROKER_CORES`); their CPU per
  message is what the workers' load cost them here;
* partitions: at least the instances of the busiest stage, doubled for headroom (a partition is the
  unit that moves in a rebalance and the ceiling of the instances).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

STAGES = ("analysis", "risk", "execution", "positions")
#: Stages that consume every price.
PRICE_STAGES = ("risk", "execution", "positions")
UTILISATION = 0.7
#: Faust with raw bytes and batches: 11,600 msg/s for one stage (NOTES.md) = ~86 us a message, an
#: upper bound (the broker ran on the same two cores).
FAUST_US_PER_CONSUMED = 86.0
#: aiokafka: ~80,000 produced msg/s (NOTES.md).
PRODUCE_US = 12.5
#: The broker, per message written and per message read by one consumer group: bounded by the same
#: client figures (80,000 produced and 377,000 consumed msg/s with client and broker on 2 cores).
BROKER_US_WRITE = 12.5
BROKER_US_READ = 2.7
#: Messages a signal puts on the topics (signal, analysis, verdict, order, opened, closed, ~2
#: marks) and reads (each by one group); a price is written once and read by three groups.
SIGNAL_WRITES = 7
SIGNAL_READS = 5
PG_CORES = 4.0
BROKER_CORES = 1.0  # one Tansu process here; a Kafka cluster spreads it over its brokers
MAX_INSTANCES = 8  # with 8 partitions


@dataclass(frozen=True)
class Load:
    symbols: int = 100
    prices_per_symbol_s: float = 10.0
    signals_per_min: float = 1000.0
    accounts: int = 10

    @property
    def prices_s(self) -> float:
        return self.symbols * self.prices_per_symbol_s

    @property
    def open_per_symbol(self) -> float:
        """Open positions per symbol when every account holds its maximum (10, the default)."""
        return self.accounts * 10 / self.symbols

    @property
    def signals_s(self) -> float:
        return self.signals_per_min / 60

    def times(self, factor: float) -> Load:
        """`factor` times the prices (per symbol), the signals and the accounts."""
        return Load(
            self.symbols,
            self.prices_per_symbol_s * factor,
            self.signals_per_min * factor,
            round(self.accounts * factor),
        )


def per_message_us(measured: dict, key: str, open_per_symbol: float = 1.0) -> tuple[float, float]:
    """CPU (us) per price and per signal of a stage (its own work plus Faust's), of PostgreSQL or
    of the broker. A price costs the positions stage and PostgreSQL more with positions open on its
    symbol (marked, their state written per batch): measured with many open, scaled per position."""
    if key == "broker":
        return BROKER_US_WRITE + 3 * BROKER_US_READ, SIGNAL_WRITES * BROKER_US_WRITE + SIGNAL_READS * BROKER_US_READ
    figures = measured[key]
    price = max(0.0, figures.get("cpu_us_per_price", 0.0))
    signal = max(0.0, figures.get("cpu_us_per_signal", 0.0))
    if "cpu_us_per_price_with_open" in figures and measured.get("open_positions_per_symbol"):
        per_position = (figures["cpu_us_per_price_with_open"] - price) / measured["open_positions_per_symbol"]
        price += max(0.0, per_position) * open_per_symbol
    if key in STAGES:
        if key in PRICE_STAGES:
            price += FAUST_US_PER_CONSUMED
        outputs = 2 if key == "positions" else 1
        signal += FAUST_US_PER_CONSUMED + outputs * PRODUCE_US
    return price, signal


def cores(measured: dict, key: str, load: Load) -> float:
    per_price, per_signal = per_message_us(measured, key, load.open_per_symbol)
    return (load.prices_s * per_price + load.signals_s * per_signal) / 1e6


def plan(measured: dict, load: Load) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        need = cores(measured, stage, load)
        rows[stage] = {"cores": need, "instances": max(1, math.ceil(need / UTILISATION))}
    book = per_message_us(measured, "risk")[1] / 1e6 * load.signals_s / load.accounts
    rows["risk_one_book"] = {"cores": book, "instances": 1}
    rows["postgres"] = {"cores": cores(measured, "postgres", load), "instances": PG_CORES}
    rows["broker"] = {"cores": cores(measured, "broker", load), "instances": BROKER_CORES}
    return rows


def utilisation(measured: dict, load: Load) -> dict[str, float]:
    rows = plan(measured, load)
    shares = {stage: rows[stage]["cores"] / (MAX_INSTANCES * UTILISATION) for stage in STAGES}
    shares["risk (one book)"] = rows["risk_one_book"]["cores"] / UTILISATION
    shares["postgres"] = rows["postgres"]["cores"] / PG_CORES
    shares["broker"] = rows["broker"]["cores"] / BROKER_CORES
    return shares


def main() -> None:
    measured = json.loads(Path(sys.argv[1]).read_text() if len(sys.argv) > 1 else sys.stdin.read())
    load = Load()
    rows = plan(measured, load)
    print(
        f"Target: {load.symbols} symbols x {load.prices_per_symbol_s:g} prices/s = {load.prices_s:g} prices/s, "
        f"{load.signals_per_min:g} signals/min = {load.signals_s:.1f}/s, {load.accounts} accounts\n"
    )
    print("| component | CPU per price (us) | CPU per signal (us) | CPU needed (cores) | instances at 70 % of a core |")
    print("|---|---|---|---|---|")
    for stage in STAGES:
        price, signal = per_message_us(measured, stage, load.open_per_symbol)
        print(
            f"| {stage} | {price:.0f} | {signal:.0f} | {rows[stage]['cores']:.2f} | {int(rows[stage]['instances'])} |"
        )
    book = f"risk, one book ({load.signals_s / load.accounts:.1f} signals/s)"
    risk_signal = per_message_us(measured, "risk")[1]
    print(f"| {book} | - | {risk_signal:.0f} | {rows['risk_one_book']['cores']:.3f} | 1 (by design) |")
    for key, label, given in (("postgres", "PostgreSQL", PG_CORES), ("broker", "broker", BROKER_CORES)):
        price, signal = per_message_us(measured, key, load.open_per_symbol)
        print(f"| {label} | {price:.0f} | {signal:.0f} | {rows[key]['cores']:.2f} | ({given:g} cores given) |")
    print(
        f"\nOne risk instance carries about {UTILISATION / (risk_signal / 1e6):.0f} signals/s of one book (70 % of a core)."
    )
    busiest = max(int(rows[s]["instances"]) for s in STAGES)
    print(f"\nPartitions: {max(4, 2 * busiest)} (twice the busiest stage's {busiest} instances).\n")
    print(
        f"Load growing (x the target; {MAX_INSTANCES} instances per stage, PostgreSQL {PG_CORES:g} cores, broker {BROKER_CORES:g} core): share of capacity used\n"
    )
    factors = (1, 2, 3, 4, 5, 10)
    names = list(utilisation(measured, load))
    print(
        "| load | prices/s | signals/min | accounts | open per symbol | " + " | ".join(names) + " | first over 100 % |"
    )
    print("|---|---|---|---|---|" + "---|" * (len(names) + 1))
    for factor in factors:
        shares = utilisation(measured, load.times(factor))
        over = [name for name, share in sorted(shares.items(), key=lambda item: -item[1]) if share > 1]
        cells = " | ".join(f"{shares[name]:.0%}" for name in names)
        grown = load.times(factor)
        volume = f"{grown.prices_s:,.0f} | {grown.signals_per_min:,.0f} | {grown.accounts} | {grown.open_per_symbol:g}"
        print(f"| x{factor} | {volume} | {cells} | {over[0] if over else '-'} |")


if __name__ == "__main__":
    main()
