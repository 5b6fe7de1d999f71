"""``semicompact bench RECIPE``: the whole study, resumable, in shards for a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def default_out(name: str) -> Path:
    """Where a recipe without `out` writes when --out is not given: under runs/, never the checkout."""
    return Path("runs") / "bench" / name


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def bench(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML: datasets, models, methods, seeds, epochs.")],
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Benchmark folder (default: the recipe's `out`, else runs/bench/<name>)."
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(help="Run only slice I of N (0 <= I < N); default: the SLURM array task, if any."),
    ] = None,
    retry_failed: Annotated[bool, typer.Option(help="Run failed runs again (default).")] = True,
    dry_run: Annotated[
        bool, typer.Option(help="List the runs of this shard and their state; run nothing.")
    ] = False,
    report: Annotated[bool, typer.Option(help="Write the report when the whole grid is finished.")] = True,
    threads: Annotated[
        int | None,
        typer.Option(
            help="Torch threads per run (default: this machine's cores divided by the bench "
            "processes running on it, or by --jobs).",
            min=1,
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            help="Bench processes you run on this machine at once (default: counted before each run).",
            min=1,
        ),
    ] = None,
    estimate_from: Annotated[
        Path | None,
        typer.Option(help="With --dry-run: estimate RECIPE's time from the runs of this benchmark folder."),
    ] = None,
) -> None:
    """Run every dataset x model x method x seed of RECIPE; finished runs are skipped, unfinished resumed.

    Each run uses this machine's cores divided by the bench processes running on it (counted before
    every run; --jobs or --threads to set it), so that two shards on one machine do not oversubscribe it.

    Examples:

      semicompact bench bench/recipes/tiny.yaml --out runs/tiny

      sbatch --array=0-7 --wrap 'semicompact bench s.yaml --out /nfs/s --shard $SLURM_ARRAY_TASK_ID/8'
    """
    from rich.console import Console

    from ..bench.grid import is_finished, read_result, run_dir, run_grid
    from ..bench.recipe import load_recipe, parse_shard, shard_runs, slurm_shard

    console = Console(stderr=True)
    parsed = load_recipe(recipe)
    part = parse_shard(shard or slurm_shard())
    out = out_dir or parsed.out or default_out(parsed.name)
    if dry_run:
        runs = shard_runs(parsed.runs(), part)
        for spec in runs:
            folder = run_dir(out, spec)
            state = (
                "done" if is_finished(folder, spec) else (read_result(folder) or {}).get("status", "to run")
            )
            typer.echo(f"{spec.id}\t{state}")
        typer.echo(f"{len(runs)} run(s) in shard {part[0]}/{part[1]} of {len(parsed.runs())}")
        if estimate_from:
            from ..bench.cost import estimate

            cost = estimate(parsed, estimate_from, part[1])
            typer.echo(
                f"estimated time: {cost.total_s / 3600:.2f} h for {cost.runs} runs on one machine; "
                f"longest shard {max(cost.per_shard_s) / 3600:.2f} h of {part[1]} "
                f"(from {estimate_from}: {cost.basis['model+method']} runs by model+method, "
                f"{cost.basis['method']} by method, {cost.basis['all']} by the overall mean)"
            )
        return
    summary = run_grid(
        parsed, out, part, console=console, retry_failed=retry_failed, threads=threads, jobs=jobs
    )
    console.print(
        f"{summary.done} run(s) done, {summary.skipped} skipped (finished earlier), "
        f"{len(summary.failed)} failed, in {summary.elapsed_s:.0f} s; results in {out}"
        + (
            f" ({len(summary.elsewhere)} left to other bench processes running them)"
            if summary.elsewhere
            else ""
        )
    )
    for run_id in summary.failed:
        console.print(f"[red]failed:[/] {run_id} (see {out / 'runs' / run_id / 'bench_result.json'})")
    all_done = all(is_finished(run_dir(out, s), s) for s in parsed.runs())
    if report and all_done:
        from ..report import write_report

        result = write_report(out)
        console.print(f"report: {result.html}")
    elif report:
        console.print(f"the grid is not complete yet; `semicompact report {out}` reports what is there")
    if summary.failed:
        raise typer.Exit(1)
