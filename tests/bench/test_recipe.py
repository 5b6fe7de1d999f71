"""Recipes: parsing, exact validation messages, stable run ids, shards."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from semicompact.bench.recipe import load_recipe, parse_shard, shard_runs
from semicompact.errors import ConfigError

BASE = {
    "name": "t",
    "datasets": [{"name": "cells", "path": "data"}, "data2"],
    "models": [{"name": "resnet18", "small_input": True}, "MobileNet"],
    "methods": ["supervised", {"name": "fixmatch", "options": {"mu": 1}}],
    "seeds": [0, 1, 2],
    "image_size": 32,
    "epochs": 1,
    "train": {"batch_size": 8},
}


def write(tmp_path: Path, **changes) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data2").mkdir(exist_ok=True)
    recipe = {**BASE, **changes}
    recipe = {k: v for k, v in recipe.items() if v is not None}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_expands_the_grid_in_a_stable_order(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path))
    runs = recipe.runs()
    assert len(runs) == 2 * 2 * 2 * 3
    assert len({r.id for r in runs}) == len(runs)
    assert runs[0].id == "cells__resnet18__supervised__s0"
    assert runs[-1].id == "data2__mobilenetv2_100__fixmatch__s2"  # alias resolved to the registry name
    first = runs[0]
    assert first.train["data"] == str(tmp_path / "data")
    assert first.train["small_input"] is True and first.train["batch_size"] == 8
    assert first.train["image_size"] == 32 and first.train["epochs"] == 1 and first.train["seed"] == 0
    assert runs[-1].method_options == {"mu": 1} and runs[-1].family == "manual"
    again = load_recipe(write(tmp_path))
    assert [r.fingerprint() for r in again.runs()] == [r.fingerprint() for r in runs]
    changed = load_recipe(write(tmp_path, epochs=2))
    assert changed.runs()[0].fingerprint() != first.fingerprint()
    # the memory layout changes speed, not what is computed: finished runs stay reusable
    layout = load_recipe(write(tmp_path, train={"batch_size": 8, "channels_last": False}))
    assert layout.runs()[0].train["channels_last"] is False
    assert layout.runs()[0].fingerprint() == first.fingerprint()
    assert recipe.baseline == "supervised"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"methods": ["supervised", "nosuch"]},
            "methods[1]: unknown method 'nosuch'; available: ",
        ),
        (
            {"methods": [{"name": "fixmatch", "options": {"bogus": 1}}]},
            "methods[0]: --method fixmatch: unknown option(s) bogus; valid: ",
        ),
        ({"models": ["resnet18", "notanet"]}, "models[1]: unknown model 'notanet'"),
        ({"seeds": []}, "seeds: must be a non-empty list of distinct integers >= 0, got []"),
        ({"seeds": [0, 0]}, "seeds: must be a non-empty list of distinct integers >= 0, got [0, 0]"),
        ({"seeds": [-1]}, "seeds: must be a non-empty list of distinct integers >= 0, got [-1]"),
        ({"seeds": ["a"]}, "seeds: must be a non-empty list of distinct integers >= 0, got ['a']"),
        ({"seeds": 3}, "seeds: must be a non-empty list of distinct integers >= 0, got 3"),
        ({"datasets": ["missing"]}, "datasets[0].path: '{tmp}/missing' does not exist"),
        ({"bogus": 1}, "unknown key(s) bogus; valid keys: name, description"),
        (
            {"models": ["resnet18", "resnet18"]},
            "models: 'resnet18' appears twice; give each entry a distinct 'label'",
        ),
        ({"train": {"seed": 3}}, "train.options: seed are set by the grid; remove them"),
        ({"train": {"nosuch": 3}}, "unknown configuration key(s) nosuch"),
        ({"epochs": -1}, "--epochs must be at least 0, got -1"),
        ({"methods": []}, "methods: must be a non-empty list"),
        ({"baseline": "fixmatch2"}, "baseline: 'fixmatch2' is not one of the recipe's methods"),
        ({"compress": ["ptq", "zip"]}, "compress[1]: unknown compression 'zip'; available: "),
    ],
)
def test_validation_messages(tmp_path: Path, changes: dict, message: str) -> None:
    path = write(tmp_path, **changes)
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    text = str(info.value)
    assert text.startswith(f"recipe '{path}': ")
    assert message.replace("{tmp}", str(tmp_path)) in text


def test_shared_variable_and_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "elsewhere"
    (shared / "data").mkdir(parents=True)
    monkeypatch.setenv("SEMICOMPACT_SHARED", str(shared))
    recipe = load_recipe(write(tmp_path, datasets=[{"name": "s", "path": "${SHARED}/data"}]))
    assert recipe.datasets[0].path == str(shared / "data")
    with pytest.raises(ConfigError, match=r"environment variable \$\{NOPE_NOT_SET\} is not set"):
        load_recipe(write(tmp_path, datasets=["${NOPE_NOT_SET}/x"]))
    with pytest.raises(ConfigError, match=r"recipe '.*nothere\.yaml' not found"):
        load_recipe(tmp_path / "nothere.yaml")


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7])
def test_shards_are_disjoint_and_cover_the_grid(tmp_path: Path, count: int) -> None:
    runs = load_recipe(write(tmp_path)).runs()
    parts = [shard_runs(runs, (i, count)) for i in range(count)]
    ids = [r.id for part in parts for r in part]
    assert sorted(ids) == sorted(r.id for r in runs)
    assert len(ids) == len(set(ids))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_slurm_array_gives_the_shard() -> None:
    from semicompact.bench.recipe import slurm_shard

    assert slurm_shard({}) is None
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "1"}
    assert slurm_shard(env) == "4/8" and parse_shard(slurm_shard(env)) == (4, 8)
    assert slurm_shard({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}) == "0/4"


def test_parse_shard() -> None:
    assert parse_shard(None) == (0, 1)
    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "1", "a/b", "-1/2", "2/0"):
        with pytest.raises(ConfigError, match=r"--shard must look like I/N with 0 <= I < N \(e.g. 0/4\)"):
            parse_shard(bad)


def test_every_shipped_recipe_loads() -> None:
    """The README and result folders quote these files as the exact commands: each must still load."""
    root = Path(__file__).resolve().parents[2] / "bench" / "recipes"
    paths = sorted(root.glob("*.yaml"))
    assert len(paths) >= 10
    for path in paths:
        try:
            recipe = load_recipe(path)
        except ConfigError as err:
            if "does not exist" in str(err) and "shared" in str(err):
                pytest.skip(f"real data not available: {err}")
            raise AssertionError(f"{path.name}: {err}") from err
        assert recipe.runs(), path.name


def test_shipped_recipes_parse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2] / "bench" / "recipes"
    for name in ("tiny.yaml", "medmnist_study.yaml"):
        path = root / name
        try:
            recipe = load_recipe(path)
        except ConfigError as err:
            if "does not exist" in str(err) and "shared" in str(err):
                pytest.skip(f"real data not available: {err}")
            raise
        assert recipe.runs()
    study = load_recipe(root / "medmnist_study.yaml")
    assert {d.name for d in study.datasets} == {"bloodmnist", "breastmnist", "pneumoniamnist", "retinamnist"}
    assert len(study.seeds) == 3 and len(study.models) >= 4
    from semicompact.methods import list_methods, method_class

    shipped = {n for n in list_methods() if method_class(n).__module__.startswith("semicompact.")}
    paper = {"supervised", "plain_distillation", "data_distillation", "model_distillation"}
    paper |= {"model_data_distillation", "fixmatch", "mixmatch", "kd"}
    assert {m.name for m in study.methods} == paper  # the seed paper's rows (+ KD), as published
    extra = load_recipe(root / "ssl_medmnist_64_issue17.yaml")
    assert {m.name for m in extra.methods} | paper == shipped  # every other method is an added row
    assert {m.name for m in extra.methods} - paper  # ...and there are some
