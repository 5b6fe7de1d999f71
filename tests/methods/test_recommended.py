"""The method `semicompact ssl` recommends (and runs without --method) is the one the committed
equal-budget results show at or above the converged supervised base on every set with every seed."""

from __future__ import annotations

import json
from pathlib import Path

from _shared import run_cli

from semicompact.cli.ssl import RECOMMENDED_METHOD
from semicompact.methods import get_method
from semicompact.methods.kd import RECOMMENDED_TEACHERS

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "ssl_medmnist_64_budget" / "runs"
DATASETS = ("bloodmnist", "breastmnist", "pneumoniamnist", "retinamnist")
SEEDS = (0, 1, 2)


def _run(dataset: str, method: str, seed: int) -> Path:
    return RESULTS / f"{dataset}__mobilenetv2_100__{method}__s{seed}"


def _metrics(run: Path, name: str = "metrics.json") -> dict:
    return json.loads((run / name).read_text())


def _f1(run: Path) -> float:
    return float(_metrics(run)["test"]["macro_f1"])


def test_the_recommended_method_is_kd_with_the_measured_teachers_on_the_pool() -> None:
    assert RECOMMENDED_METHOD == "kd"
    options = get_method("kd").config
    assert options["teachers"] == list(RECOMMENDED_TEACHERS) == ["tf_efficientnet_lite0", "mobilenetv2_100"]
    assert options["unlabelled"] is True
    assert (options["temperature"], options["alpha"], options["mu"]) == (4.0, 0.7, 1)


def test_the_committed_results_support_the_recommendation() -> None:
    """Every (dataset, seed) cell: the KD run is at or above supervised with the same 600 steps, and
    it ran with the options the defaults now hold. Fails when a re-run breaks the claim."""
    for dataset in DATASETS:
        for seed in SEEDS:
            kd, base = _run(dataset, "kd", seed), _run(dataset, "supervised", seed)
            assert _f1(kd) >= _f1(base), f"{kd.name}: {_f1(kd):.4f} < supervised {_f1(base):.4f}"
            for run in (kd, base):
                assert _metrics(run)["cost"]["optimizer_steps"] == 600, run.name
            used = _metrics(kd, "method.json")["options"]
            assert used["teachers"] == list(RECOMMENDED_TEACHERS) and used["unlabelled"] is True, kd.name
            assert (used["temperature"], used["alpha"], used["mu"]) == (4.0, 0.7, 1), kd.name


def test_the_default_configuration_itself_was_measured() -> None:
    """``semicompact ssl`` distils on the whole unlabelled pool (KD's ``max_unlabelled`` default is
    no cap); the grid's kd row capped it at 2000. The kd_pool rows are that default: at or above
    supervised in every (dataset, seed) cell with the same 600 steps."""
    assert get_method("kd").config["max_unlabelled"] is None
    for dataset in DATASETS:
        for seed in SEEDS:
            run, base = _run(dataset, "kd_pool", seed), _run(dataset, "supervised", seed)
            assert _f1(run) >= _f1(base), f"{run.name}: {_f1(run):.4f} < supervised {_f1(base):.4f}"
            assert _metrics(run)["cost"]["optimizer_steps"] == 600, run.name
            used = _metrics(run, "method.json")["options"]
            assert used["max_unlabelled"] is None and used["unlabelled"] is True, run.name
            assert used["teachers"] == list(RECOMMENDED_TEACHERS), run.name


def test_the_same_run_twice_gives_the_same_scores() -> None:
    """Where the cap did not bind (pools under 2000 images) and both runs used the same code
    (channels-last), kd and kd_pool are the same run: their scores must be equal to the last bit."""
    for dataset, seed in (("breastmnist", 2), ("retinamnist", 1), ("retinamnist", 2)):
        kd, pool = _run(dataset, "kd", seed), _run(dataset, "kd_pool", seed)
        assert _metrics(kd, "config.json")["channels_last"] and _metrics(pool, "config.json")["channels_last"]
        assert _metrics(kd)["test"] == _metrics(pool)["test"], f"{dataset} seed {seed}"


def test_ssl_help_names_the_recommended_default(capsys) -> None:
    code, out, _ = run_cli(capsys, "ssl", "--help")
    text = " ".join(out.replace("│", " ").split())  # rich's panel borders and line breaks
    assert code == 0
    assert "Recommended, and the default: kd" in text
    assert "[default: kd]" in text


def test_ssl_without_method_runs_kd_with_both_teachers_on_the_pool(
    cells_dir: Path, tmp_path: Path, capsys
) -> None:
    """The default end to end on the cell data: both default teachers trained (offline weights), the
    soft targets on the unlabelled pool (unlabelled images seen), the run recorded as kd."""
    out = tmp_path / "default"
    args = [
        "ssl", str(cells_dir), "--out", str(out), "--model", "mobilenetv2_100", "--small-input",
        "--pretrained", "--image-size", "32", "--n-labelled", "8", "--max-steps", "6", "--head-steps", "2",
        "--no-early-stopping", "--batch-size", "8", "--no-progress", "--no-tensorboard",
        "--option", "max_unlabelled=16",
    ]  # fmt: skip
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    metrics = _metrics(out)
    assert _metrics(out, "method.json")["method"] == "kd"
    assert [Path(t).name.rsplit("-", 1)[0] for t in metrics["teachers"]] == list(RECOMMENDED_TEACHERS)
    cost = metrics["cost"]
    assert cost["optimizer_steps"] == 6 and cost["teacher_runs"] == 2 and cost["teacher_steps"] == 12
    assert cost["unlabelled_images_seen"] == 6 * 8  # mu 1: one unlabelled batch per step


def test_the_gain_comes_from_the_unlabelled_images() -> None:
    """The kd_labelled rows are the same KD runs without the unlabelled images (same teachers and
    steps): kd beats them by at least 1 point on average over the sets, and in most cells."""
    gains = []
    for dataset in DATASETS:
        for seed in SEEDS:
            kd, control = _run(dataset, "kd", seed), _run(dataset, "kd_labelled", seed)
            assert _metrics(control, "method.json")["options"]["unlabelled"] is False, control.name
            assert _metrics(control)["cost"]["unlabelled_images_seen"] == 0, control.name
            assert _metrics(control)["cost"]["optimizer_steps"] == 600, control.name
            gains.append(100 * (_f1(kd) - _f1(control)))
    assert sum(gains) / len(gains) >= 1.0, gains
    assert sum(g > 0 for g in gains) >= 9, gains
