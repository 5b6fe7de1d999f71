"""Reports: tables with the right numbers in three formats, figures, HTML checked in Chromium."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from semicompact.evaluate.stats import compare
from semicompact.io import write_json
from semicompact.report import write_report
from semicompact.report.collect import collect
from semicompact.report.figures import pareto_front
from semicompact.report.tables import Study, build_tables, to_latex

DATASETS = ("alpha", "beta", "gamma", "delta")
MODELS = {
    "resnet18": "manual",
    "mobilenetv2_100": "manual",
    "mnasnet_100": "automatic",
    "resnet50": "standard",
}
METHODS = ("supervised", "fixmatch", "plain_distillation")
SEEDS = (0, 1)


def score(d: int, m: int, k: int, s: int) -> float:
    """Deterministic, distinct scores: datasets differ in difficulty, methods add a little."""
    gain = 0.015 * k * (1 + (d + m) % 2)
    return 0.55 + 0.08 * d + 0.02 * m + gain + 0.003 * s + 0.001 * ((d * 7 + m * 3) % 5)


def make_bench(root: Path, failed: bool = True) -> Path:
    """A benchmark folder as `semicompact bench` leaves it (no training needed)."""
    runs = []
    for d, dataset in enumerate(DATASETS):
        for m, (model, family) in enumerate(MODELS.items()):
            for k, method in enumerate(METHODS):
                for s in SEEDS:
                    run_id = f"{dataset}__{model}__{method}__s{s}"
                    runs.append(run_id)
                    folder = root / "runs" / run_id
                    spec = {
                        "id": run_id,
                        "dataset": dataset,
                        "model": model,
                        "model_name": model,
                        "family": family,
                        "method": method,
                        "seed": s,
                    }
                    write_json(folder / "bench_spec.json", spec)
                    if failed and run_id == "delta__resnet50__fixmatch__s1":
                        failure = {"status": "failed", "error": "out of memory"}
                        write_json(folder / "bench_result.json", failure)
                        continue
                    f1 = score(d, m, k, s)
                    write_json(
                        folder / "metrics.json",
                        {
                            "test": {"f1": f1, "macro_f1": f1 - 0.01, "accuracy": f1 + 0.01},
                            "train_time_per_epoch_s": 1.0 + m,
                        },
                    )
                    write_json(folder / "bench_result.json", {"status": "done", "elapsed_s": 10.0 + m + k})
                    efficiency = {"size_mb": 5.0 * (m + 1), "params_m": 1.0 + m, "latency_ms": 2.0 + 3 * m}
                    write_json(folder / "efficiency.json", efficiency)
                    if d == 0 and (m, k, s) == (3, 2, 1):  # the best run of dataset alpha
                        Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "confusion_matrix.png")
                        Image.new("RGB", (40, 30), (10, 10, 200)).save(folder / "learning_curve.png")
                    if d == 1 and (m, k, s) == (0, 0, 0):  # a weak run of beta; its best has no figures
                        Image.new("RGB", (40, 30), (10, 200, 10)).save(folder / "confusion_matrix.png")
    recipe = {
        "name": "synthetic",
        "datasets": [{"name": d} for d in DATASETS],
        "models": [{"label": m} for m in MODELS],
        "methods": [{"label": m} for m in METHODS],
        "baseline": "supervised",
    }
    write_json(root / "bench.json", {"recipe": recipe, "runs": runs, "n_runs": len(runs)})
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    root = make_bench(tmp_path_factory.mktemp("bench") / "b")
    return root, write_report(root)


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text())))


def test_collect_reads_every_run(tmp_path: Path) -> None:
    collection = collect(make_bench(tmp_path / "b"))
    assert len(collection.runs) == 4 * 4 * 3 * 2
    assert len(collection.done) == len(collection.runs) - 1
    assert [r["id"] for r in collection.failed] == ["delta__resnet50__fixmatch__s1"]


def test_every_table_in_three_formats(report) -> None:
    _, result = report
    keys = {t.key for t in result.tables}
    expected = {"table3_supervised", "table3_fixmatch", "table3_plain_distillation", "table4", "table5"}
    expected |= {"table6", "table8", "table9", "table10", "table11", "table12", "table13", "cost", "failures"}
    assert keys == expected
    for key in keys:
        for ext in ("md", "csv", "tex"):
            assert (result.out / "tables" / f"{key}.{ext}").stat().st_size > 50
    tex = (result.out / "tables" / "table3_plain_distillation.tex").read_text()
    assert "plain\\_distillation" in tex and "\\begin{tabular}" in tex
    assert "plain_distillation" not in tex.replace(r"\label{tab:table3_plain_distillation}", "")
    md = result.markdown.read_text()
    assert md.count("### Table") == 3 + 9 and "![heatmap](figures/heatmap.png)" in md


def test_per_dataset_and_mean_std_numbers(report) -> None:
    _, result = report
    rows = read_csv(result.out / "tables" / "table3_fixmatch.csv")
    assert rows[0] == ["Model", *DATASETS, "Mean(std)"]
    row = next(r for r in rows if r[0] == "mnasnet_100")
    per_dataset = [100 * np.mean([score(d, 2, 1, s) for s in SEEDS]) for d in range(4)]
    assert [float(v) for v in row[1:5]] == pytest.approx(per_dataset, abs=1e-4)
    mean, std = re.fullmatch(r"([\d.]+)\(([\d.]+)\)", row[5]).groups()
    assert float(mean) == pytest.approx(np.mean(per_dataset), abs=1e-4)
    assert float(std) == pytest.approx(np.std(per_dataset), abs=1e-4)  # population std, as the paper
    # the failed run is simply missing: delta / resnet50 / fixmatch averages its one seed
    row = next(r for r in rows if r[0] == "resnet50")
    assert float(row[4]) == pytest.approx(100 * score(3, 3, 1, 0), abs=1e-4)


def test_statistics_tables_match_the_procedure(report) -> None:
    _, result = report
    frame = pd.DataFrame(
        [
            {"dataset": d, "model": m, "method": k, "v": 100 * score(i, j, x, s)}
            for i, d in enumerate(DATASETS)
            for j, m in enumerate(MODELS)
            for x, k in enumerate(METHODS)
            for s in SEEDS
            if not (d == "delta" and m == "resnet50" and k == "fixmatch" and s == 1)
        ]
    )
    sub = frame[frame["method"] == "supervised"].groupby(["dataset", "model"])["v"].mean().unstack()
    expected = compare(sub[list(MODELS)].to_numpy(), list(MODELS))
    stats = json.loads((result.out / "stats.json").read_text())
    got = stats["models|supervised"]
    assert got["test"] == expected.test and got["control"] == expected.control
    assert got["statistic"] == pytest.approx(expected.statistic)
    assert got["summary"] == expected.summary()
    table4 = read_csv(result.out / "tables" / "table4.csv")
    assert table4[1][0] == "supervised" and table4[1][3] == expected.summary()
    # methods: blocks are datasets, each the mean over models and seeds
    by_method = frame.groupby(["dataset", "method"])["v"].mean().unstack()[list(METHODS)]
    methods = compare(by_method.to_numpy(), list(METHODS))
    t9 = {r[0]: r for r in read_csv(result.out / "tables" / "table9.csv")[1:]}
    for name in METHODS:
        assert float(t9[name][2]) == pytest.approx(methods.ranks[name])
    t10 = read_csv(result.out / "tables" / "table10.csv")
    assert {r[0] for r in t10[1:]} == set(METHODS) - {methods.control}
    for r in t10[1:]:
        post = next(p for p in methods.posthoc if p.group == r[0])
        assert float(r[3]) == pytest.approx(post.p_adjusted, rel=1e-5)
        assert float(r[4]) == pytest.approx(post.cohen_d, rel=1e-5)
    gains = by_method.drop(columns="supervised").sub(by_method["supervised"], axis=0)
    t11 = {r[0]: r for r in read_csv(result.out / "tables" / "table11.csv")[1:]}
    assert set(t11) == {"fixmatch", "plain_distillation"}
    mean = float(t11["fixmatch"][1].split("(")[0])
    assert mean == pytest.approx(gains["fixmatch"].mean(), abs=1e-4)
    families = read_csv(result.out / "tables" / "table6.csv")
    assert families[0][:4] == ["Method", "NAS", "Manual", "Standard"]


def test_efficiency_cost_and_failures(report) -> None:
    _, result = report
    t13 = {r[0]: r for r in read_csv(result.out / "tables" / "table13.csv")[1:]}
    assert [float(v) for v in t13["mobilenetv2_100"][1:]] == pytest.approx([10.0, 2.0, 2.0, 5.0])
    cost = read_csv(result.out / "tables" / "cost.csv")
    total = cost[-1]
    assert total[:3] == ["all", "all", "95"]  # the failed run recorded no time
    failures = read_csv(result.out / "tables" / "failures.csv")
    assert failures[1] == ["delta__resnet50__fixmatch__s1", "failed", "out of memory"]


def test_figures(report) -> None:
    _, result = report
    keys = [k for k, _, _ in result.figures]
    assert keys[:5] == ["heatmap", "cd_methods", "cd_models", "pareto_latency", "pareto_size"]
    assert "confusion_alpha" in keys and "learning_alpha" in keys
    captions = {k: c for k, c, _ in result.figures}
    assert captions["confusion_alpha"] == (
        "Confusion matrix of the best run on alpha (resnet50 / plain_distillation / seed 1)."
    )
    assert "learning_beta" not in keys
    assert captions["confusion_beta"] == (
        "Confusion matrix of the best run on beta with figures on disk (resnet18 / supervised / seed 0;"
        " the best, mnasnet_100 / plain_distillation / seed 1, kept only its JSON results)."
    )
    for _, _, path in result.figures:
        with Image.open(path) as image:
            assert image.size[0] >= 40


def test_pareto_front() -> None:
    points = pd.DataFrame({"cost": [1, 2, 3, 4, 2.5], "score": [50, 60, 55, 70, 65], "name": list("abcde")})
    assert [r.name for r in pareto_front(points)] == ["a", "b", "e", "d"]


def test_latex_escapes() -> None:
    from semicompact.report.tables import Table

    text = to_latex(Table("k_x", "t", "50% of a_b & c", ["A_b", "x"], [["r#1", 1.25]]))
    assert r"50\% of a\_b \& c" in text and r"A\_b" in text and r"r\#1" in text and "1.2" in text


def test_single_run_report(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_json(run / "config.json", {"data": "/x/bloodmnist.npz", "model": "resnet18", "seed": 3})
    write_json(
        run / "metrics.json",
        {
            "epochs_trained": 4,
            "test": {
                "f1": 0.8,
                "macro_f1": 0.8,
                "accuracy": 0.9,
                "n": 10,
                "per_class": {"a": {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 4}},
            },
        },
    )
    Image.new("RGB", (20, 20)).save(run / "confusion_matrix.png")
    result = write_report(run)
    assert [t.key for t in result.tables] == ["run", "per_class", "training"]
    assert [k for k, _, _ in result.figures] == ["confusion_bloodmnist"]
    rows = read_csv(result.out / "tables" / "run.csv")
    assert rows[1][:3] == ["resnet18", "bloodmnist", "0.8"]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_html_renders_in_headless_chromium(report) -> None:
    binary = chromium()
    if binary is None:
        pytest.skip("no chromium binary on PATH (scripts/install.sh installs it with apt when it can)")
    _, result = report
    html = result.html.read_text()
    assert "http://" not in html and "https://" not in html  # nothing to fetch: readable offline
    dom = subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            result.html.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attrs = dict(re.findall(r'(data-[\w-]+)="(\d+)"', body.group(1)))
    assert int(attrs["data-figures"]) == len(result.figures)
    assert attrs["data-figures-ok"] == attrs["data-figures"]  # every image decoded
    assert int(attrs["data-tables"]) == len(result.tables)
    for table in result.tables:
        assert f'id="table-{table.key}"' in dom
    for key, _, _ in result.figures:
        assert f'id="figure-{key}"' in dom


def test_compression_table(tmp_path: Path) -> None:
    root = make_bench(tmp_path / "b", failed=False)
    for seed, (before, after) in enumerate(((0.8, 0.7), (0.6, 0.7))):
        folder = root / "runs" / f"alpha__resnet18__supervised__s{seed}" / "compress" / "ptq"
        metrics = {
            "method": "ptq",
            "size_bytes": {"float": 4_000_000, "compressed": 1_000_000},
            "size_ratio": 4.0,
            "test": {"float": {"macro_f1": before}, "compressed": {"macro_f1": after}},
        }
        write_json(folder / "metrics.json", metrics)
    collection = collect(root)
    assert len(collection.compress) == 2
    tables = {t.key: t for t in build_tables(Study.build(collection))}
    assert tables["compression"].rows == [
        ["resnet18", "supervised", "ptq", pytest.approx(70.0), pytest.approx(70.0), 4.0, 1.0, 4.0]
    ]


def test_report_names_the_environments_of_its_runs(tmp_path: Path) -> None:
    from semicompact.report import environment_notes

    root = make_bench(tmp_path / "b")
    env = {
        "cpu": "CPU X",
        "torch_threads": 2,
        "platform": "Linux-A",
        "packages": {"torch": "2.14.1", "timm": "1.0.31"},
    }
    results = sorted((root / "runs").glob("*/bench_result.json"))
    for i, path in enumerate(results):
        record = json.loads(path.read_text())
        if record["status"] == "done" and i % 4:  # a quarter predate environment recording
            other = {
                1: {**env, "packages": {**env["packages"], "timm": "1.0.30"}},
                2: env,
                3: {**env, "platform": "Linux-B"},  # same versions, another machine
            }[i % 4]
            write_json(path, {**record, "environment": other})
    notes = environment_notes(collect(root).runs)
    assert len(notes) == 1
    label = "torch 2.14.1, timm 1.0.31; CPU X, 2 threads; Linux-A"
    for k, platform in ((2, "Linux-A"), (3, "Linux-B")):
        n = sum(
            1 for i, p in enumerate(results) if i % 4 == k and json.loads(p.read_text())["status"] == "done"
        )
        assert f"{n} run(s) in {label.replace('Linux-A', platform)}" in notes[0]
    assert "24 run(s) in torch 2.14.1, timm 1.0.30" in notes[0]  # finished runs only (one failed)
    assert "several environments" in notes[0] and "before environments were recorded" in notes[0]
    assert f"Environments: {notes[0][len('Environments: ') :]}" in write_report(root).markdown.read_text()


def test_training_cost_table_says_whether_steps_were_equal(tmp_path: Path) -> None:
    def bench(steps_of: dict[str, int]) -> Path:
        root = tmp_path / f"cost{len(list(tmp_path.iterdir()))}"
        for method, steps in steps_of.items():
            for s in (0, 1):
                folder = root / "runs" / f"a__net__{method}__s{s}"
                spec = {"id": folder.name, "dataset": "a", "model": "net", "method": method, "seed": s}
                write_json(folder / "bench_spec.json", spec)
                cost = {
                    "optimizer_steps": steps,
                    "teacher_steps": 300 if method == "kd" else None,
                    "labelled_images_seen": 32 * steps,
                    "unlabelled_images_seen": 64 * steps if method == "kd" else 0,
                    "wall_time_s": 10.0 + s,
                    "teacher_wall_time_s": 21.0 if method == "kd" else None,
                    "val_source": "labelled",
                }
                write_json(folder / "metrics.json", {"test": {"f1": 0.5, "macro_f1": 0.6}, "cost": cost})
                write_json(folder / "bench_result.json", {"status": "done", "elapsed_s": 12.0})
        runs = [p.name for p in sorted((root / "runs").iterdir())]
        recipe = {"name": "cost", "methods": [{"label": m} for m in steps_of], "baseline": "supervised"}
        write_json(root / "bench.json", {"recipe": recipe, "runs": runs, "n_runs": len(runs)})
        return root

    tables = {t.key: t for t in build_tables(Study.build(collect(bench({"supervised": 600, "kd": 600}))))}
    table = tables["training_cost"]
    assert "Steps are equal across methods within each model; validation labels: labelled." in table.caption
    assert "equal-wall-time view" in table.caption
    kd = next(r for r in table.rows if r[1] == "kd")
    assert kd[2:9] == [2, 600.0, 300.0, 19200.0, 38400.0, 10.5, 21.0]
    assert kd[9] == pytest.approx(60.0)
    assert kd[10] == pytest.approx(3.0)  # (10.5 s + 21 s of teachers) / 10.5 s of the baseline
    unequal = {t.key: t for t in build_tables(Study.build(collect(bench({"supervised": 600, "kd": 900}))))}
    assert "Steps are NOT equal" in unequal["training_cost"].caption
