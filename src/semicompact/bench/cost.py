"""How the grid's cost grows: estimate a recipe's time from the runs of a benchmark already done.

Each run of the recipe costs the mean wall time measured for the same (model, method) pair, else
the same method, else all measured runs, scaled by its number of epochs against the measured runs'.
The total is the sum: linear in datasets, seeds and cells, weighted by each model and method.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .recipe import Recipe, shard_runs


@dataclass
class CostEstimate:
    runs: int
    total_s: float
    per_shard_s: list[float]
    basis: dict[str, int]  # how many runs were estimated from each level of the fallback


def measured_times(bench_dir: Path) -> list[dict]:
    """(model, method, epochs, elapsed) of every finished run of a benchmark folder."""
    rows = []
    for folder in sorted((bench_dir / "runs").glob("*")):
        try:
            spec = json.loads((folder / "bench_spec.json").read_text(encoding="utf-8"))
            result = json.loads((folder / "bench_result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if result.get("status") == "done" and result.get("elapsed_s"):
            epochs = spec["train"].get("epochs", 50) + spec["train"].get("head_epochs", 2)
            rows.append(
                {
                    "model": spec["model_name"],
                    "method": spec["method_name"],
                    "epochs": max(1, epochs),
                    "elapsed_s": float(result["elapsed_s"]),
                }
            )
    if not rows:
        raise ConfigError(f"--estimate-from: '{bench_dir}' holds no finished benchmark run to measure")
    return rows


def estimate(recipe: Recipe, bench_dir: Path, shards: int = 1) -> CostEstimate:
    rows = measured_times(bench_dir)
    per_epoch: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for r in rows:
        value = r["elapsed_s"] / r["epochs"]
        per_epoch[(r["model"], r["method"])].append(value)
        per_epoch[(r["method"],)].append(value)
        per_epoch[()].append(value)
    basis = {"model+method": 0, "method": 0, "all": 0}
    costs = []
    for spec in recipe.runs():
        epochs = max(1, spec.train.get("epochs", 50) + spec.train.get("head_epochs", 2))
        levels = (((spec.model_name, spec.method_name), "model+method"), ((spec.method_name,), "method"))
        for key, level in (*levels, ((), "all")):
            if key in per_epoch:
                values = per_epoch[key]
                basis[level] += 1
                costs.append(epochs * sum(values) / len(values))
                break
    all_runs = recipe.runs()
    index = {spec.id: cost for spec, cost in zip(all_runs, costs, strict=True)}
    per_shard = [sum(index[s.id] for s in shard_runs(all_runs, (i, shards))) for i in range(shards)]
    return CostEstimate(runs=len(all_runs), total_s=sum(costs), per_shard_s=per_shard, basis=basis)
