"""The benchmark grid: a recipe of datasets x models x methods x seeds, run resumably in shards."""

from .grid import GridSummary, run_grid
from .recipe import Recipe, RunSpec, load_recipe, parse_shard, shard_runs

__all__ = ["GridSummary", "Recipe", "RunSpec", "load_recipe", "parse_shard", "run_grid", "shard_runs"]
