"""`p95 bench`: every scenario's figure with its baseline, measured in the same run."""

from __future__ import annotations

from typing import Any

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        quick: bool = typer.Option(False, "--quick", help="Smaller sizes: a smoke check in about two minutes."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        only: str = typer.Option(None, "--only", help="Comma-separated scenario names."),
        profile: bool = typer.Option(
            False,
            "--profile",
            help="Run the e2e scenario with py-spy on each stage worker: a flame graph per stage "
            "(in $P95_PROFILE_DIR or .p95/profile/<time>) and where the time goes per consumed message.",
        ),
        soak: str = typer.Option(
            None,
            "--soak",
            help="Run the soak harness for this long (e.g. 20m, 2h): stack + workers at live rates, a sample "
            "a minute to soak.csv/soak.html ($P95_SOAK_DIR or .p95/soak/<time>).",
        ),
        soak_speed: float = typer.Option(1.0, "--soak-speed", help="Multiply the soak's rates (and sample rate)."),
    ) -> None:
        """Measure throughput and latency next to their baselines (brings up the embedded stack if needed)."""
        from phoenix95.bench.runner import run
        from phoenix95.cli.console import UserError, print_json, stderr

        names = [n.strip() for n in only.split(",") if n.strip()] if only else None
        if profile:
            names = ["e2e_profile"]
        if soak:
            import os

            os.environ["P95_SOAK_DURATION"] = soak
            os.environ["P95_SOAK_SPEED"] = str(soak_speed)
            names = ["soak"]
        try:
            results = run(
                quick=quick,
                only=names,
                on_start=lambda name: stderr.print(f"[dim]bench: {name} ...[/dim]"),
                on_done=lambda name, figure: stderr.print(f"bench: {name}: {_line(figure)}"),
            )
        except ValueError as error:
            raise UserError(str(error)) from None
        if as_json:
            for figure in results["scenarios"].values():
                figure.pop("trace", None)
            print_json(results)
        if any(figure.get("error") for figure in results["scenarios"].values()):
            raise typer.Exit(1)


def _line(figure: dict[str, Any]) -> str:
    if figure.get("error"):
        return f"[red]{figure['error']}[/red]"
    ratio = f" ({figure['ratio']}x baseline)" if figure.get("ratio") else ""
    return f"{figure.get('value')} {figure.get('unit', '')}{ratio} in {figure.get('took_s')}s"
