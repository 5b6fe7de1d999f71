"""``semicompact report DIR``: tables, statistics, figures and one HTML page for a run or a benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    source: Annotated[
        Path, typer.Argument(help="A benchmark folder (from `semicompact bench`) or a run folder.")
    ],
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report folder (default: SOURCE/report).")
    ] = None,
    metric: Annotated[
        str, typer.Option(help="Score of the tables: f1 (the paper's), macro_f1 or accuracy.")
    ] = "f1",
) -> None:
    """Write the paper's tables (Markdown, CSV, LaTeX), the statistical tests, figures and report.html.

    Example: semicompact report runs/tiny --out runs/tiny/report
    """
    from rich.console import Console

    from ..errors import ConfigError
    from ..report import write_report
    from ..report.collect import METRICS

    if metric not in METRICS:
        raise ConfigError(f"--metric must be one of {', '.join(METRICS)}, got '{metric}'")
    result = write_report(source, out_dir, metric)
    console = Console()
    console.print(f"{len(result.tables)} table(s), {len(result.figures)} figure(s)")
    console.print(f"report: {result.html}")
    console.print(f"markdown: {result.markdown}")
