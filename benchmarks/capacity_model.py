"""The capacity model of docs/scaling.md: instances and partitions for a load, and where the first
bottleneck appears as the load grows.

    python benchmarks/scale_capacity.py > measured.json      # CPU per message, measured here
    python benchmarks/capacity_model.py measured.json        # the tables (markdown)

Inputs: the CPU per price and per signal of each stage, of the PostgreSQL backends and of the
broker, from `scale_capacity.py`. Model:
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
    def signals_s(self) -> float:
        return self.signals_per_min / 60

    def times(self, factor: float) -> Load:
        return Load(self.symbols, self.prices_per_symbol_s * factor, self.signals_per_min * factor, self.accounts)


def cores(measured: dict, key: str, load: Load) -> float:
    figures = measured[key]
    per_price = max(0, figures["cpu_us_per_price"]) / 1e6
    per_signal = max(0, figures["cpu_us_per_signal"]) / 1e6
    prices = load.prices_s if key in (*PRICE_STAGES, "broker", "postgres") else 0.0
    return prices * per_price + load.signals_s * per_signal


def plan(measured: dict, load: Load) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        need = cores(measured, stage, load)
        rows[stage] = {"cores": need, "instances": max(1, math.ceil(need / UTILISATION))}
    book = max(0, measured["risk"]["cpu_us_per_signal"]) / 1e6 * load.signals_s / load.accounts
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
    print("| component | CPU needed (cores) | instances at 70 % of a core |")
    print("|---|---|---|")
    for stage in STAGES:
        print(f"| {stage} | {rows[stage]['cores']:.2f} | {int(rows[stage]['instances'])} |")
    print(
        f"| risk, one book ({load.signals_s / load.accounts:.1f} signals/s) | {rows['risk_one_book']['cores']:.3f} | 1 (by design) |"
    )
    print(f"| PostgreSQL | {rows['postgres']['cores']:.2f} | ({PG_CORES:g} cores given) |")
    print(f"| broker | {rows['broker']['cores']:.2f} | ({BROKER_CORES:g} core given) |")
    busiest = max(int(rows[s]["instances"]) for s in STAGES)
    print(f"\nPartitions: {max(4, 2 * busiest)} (twice the busiest stage's {busiest} instances).\n")
    print(
        f"Load growing (x the target; {MAX_INSTANCES} instances per stage, PostgreSQL {PG_CORES:g} cores, broker {BROKER_CORES:g} core): share of capacity used\n"
    )
    factors = (1, 2, 5, 10, 20, 50)
    names = list(utilisation(measured, load))
    print("| load | " + " | ".join(names) + " | first over 100 % |")
    print("|---|" + "---|" * (len(names) + 1))
    for factor in factors:
        shares = utilisation(measured, load.times(factor))
        over = [name for name, share in sorted(shares.items(), key=lambda item: -item[1]) if share > 1]
        cells = " | ".join(f"{shares[name]:.0%}" for name in names)
        print(f"| x{factor} | {cells} | {over[0] if over else '-'} |")


if __name__ == "__main__":
    main()
