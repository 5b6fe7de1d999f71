"""The paper's Tables 3 to 13 from collected runs, and their Markdown, CSV and LaTeX forms.

Scores are in percent like the paper; "mean(std)" uses the population standard deviation, as the
paper's Table 3 does (its printed values match ddof=0, not ddof=1). A *block* of the statistics is
a dataset (the paper's choice: results are averaged over seeds, and over models when methods are
compared); with fewer than three datasets a block is one (dataset, seed) pair, so that small
studies still get a test. Average ranks follow the paper: higher is better (the best of k methods
in a block gets rank k); the critical-difference diagram uses Demšar's 1 = best, i.e. k + 1 minus
the tables' rank, and both captions say so.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..evaluate.stats import Comparison, compare
from .collect import Collection

FAMILY_NAMES = {"automatic": "NAS", "manual": "Manual", "quantized": "Quantized", "standard": "Standard"}


@dataclass
class MeanStd:
    mean: float
    std: float

    def text(self, digits: int = 1) -> str:
        std = "-" if math.isnan(self.std) else f"{self.std:.{digits}f}"
        return f"{self.mean:.{digits}f}({std})"


@dataclass
class Table:
    key: str
    title: str
    caption: str
    columns: list[str]
    rows: list[list[Any]]
    numeric: bool = True  # part of the study's results (not timings): compared between re-runs
    notes: list[str] = field(default_factory=list)
    digits: int = 1  # decimals shown (Markdown, LaTeX, HTML); CSV keeps full precision


def _cell(value: Any, digits: int, precise: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, MeanStd):
        return value.text(4 if precise else digits)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if precise:
            return f"{value:.6g}"
        if isinstance(value, EffectSize):
            return f"{round(value, digits) + 0.0:.{digits}f}"  # + 0.0: no "-0.00"
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(table: Table, digits: int | None = None) -> str:
    digits = table.digits if digits is None else digits

    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"### {table.title}", "", f"| {' | '.join(esc(c) for c in table.columns)} |"]
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    for row in table.rows:
        lines.append(f"| {' | '.join(esc(_cell(v, digits)) for v in row)} |")
    lines += ["", table.caption, *[f"Note: {n}" for n in table.notes], ""]
    return "\n".join(lines)


def to_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([_cell(v, 4, precise=True) for v in row])
    return buffer.getvalue()


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "≈": r"$\approx$",
    ">": r"$>$",
}


def _tex(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def to_latex(table: Table, digits: int | None = None) -> str:
    digits = table.digits if digits is None else digits
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        r"\small",
        rf"\begin{{tabular}}{{l{'r' * (len(table.columns) - 1)}}}",
        r"\hline",
        " & ".join(_tex(c) for c in table.columns) + r" \\",
        r"\hline",
    ]
    lines += [" & ".join(_tex(_cell(v, digits)) for v in row) + r" \\" for row in table.rows]
    lines += [
        r"\hline",
        r"\end{tabular}",
        rf"\caption{{{_tex(table.caption)}}}",
        rf"\label{{tab:{table.key}}}",
        r"\end{table}",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- data frames


def results_frame(collection: Collection, metric: str = "f1") -> pd.DataFrame:
    rows = [dict(r, value=100.0 * float(r[metric])) for r in collection.done if r.get(metric) is not None]
    columns = ["dataset", "model", "family", "method", "seed", "value"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)


def _order(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    present = list(dict.fromkeys(values))
    first = [v for v in preferred if v in present]
    return first + sorted(v for v in present if v not in first)


@dataclass
class Study:
    """The collected results with their order, ready for the table builders."""

    collection: Collection
    frame: pd.DataFrame
    metric: str
    datasets: list[str]
    models: list[str]
    methods: list[str]
    baseline: str
    comparisons: dict[str, Comparison] = field(default_factory=dict)

    @classmethod
    def build(cls, collection: Collection, metric: str = "f1") -> Study:
        df = results_frame(collection, metric)
        recipe = collection.recipe
        models = _order(df["model"], [m["label"] for m in recipe.get("models", [])])
        methods = _order(df["method"], [m["label"] for m in recipe.get("methods", [])])
        datasets = _order(df["dataset"], [d["name"] for d in recipe.get("datasets", [])])
        baseline = collection.baseline if collection.baseline in methods else (methods[0] if methods else "")
        return cls(collection, df, metric, datasets, models, methods, baseline)

    @property
    def block_keys(self) -> list[str]:
        return ["dataset"] if len(self.datasets) >= 3 else ["dataset", "seed"]

    def block_note(self) -> str:
        if self.block_keys == ["dataset"]:
            return "blocks of the tests: datasets (seeds averaged)"
        return "blocks of the tests: (dataset, seed) pairs, since the study has fewer than 3 datasets"

    def matrix(self, df: pd.DataFrame, group: str, order: Sequence[str]) -> pd.DataFrame:
        """Blocks x groups, each cell the mean over everything else; incomplete blocks dropped."""
        if df.empty:
            return pd.DataFrame()
        table = df.groupby([*self.block_keys, group])["value"].mean().unstack(group)
        table = table[[g for g in order if g in table.columns]]
        return table.dropna(axis=0, how="any")

    def test_notes(self, prefix: str) -> list[str]:
        """The procedure's remarks (e.g. identical rankings) for the comparisons under ``prefix``."""
        return [
            f"{key.split('|')[-1]}: {note}"
            for key, result in self.comparisons.items()
            if key.startswith(prefix)
            for note in result.notes
        ]

    def compare(self, key: str, matrix: pd.DataFrame) -> Comparison | None:
        if matrix.shape[0] < 2 or matrix.shape[1] < 2:
            return None
        result = compare(matrix.to_numpy(), [str(c) for c in matrix.columns])
        self.comparisons[key] = result
        return result


def _mean_std(values: Sequence[float]) -> MeanStd:
    """Mean and population standard deviation (ddof 0): the paper's convention, checked on Table 3."""
    s = pd.Series(list(values), dtype=float)
    return MeanStd(float(s.mean()), float(s.std(ddof=0)) if len(s) > 1 else math.nan)


def _test_cells(result: Comparison | None) -> list[Any]:
    if result is None:
        return ["-", "-", "not enough blocks or groups"]
    return [result.test, f"{result.statistic:.2f}{result.stars()} (p={result.p_value:.2g})", result.summary()]


# ---------------------------------------------------------------- the paper's tables


def per_dataset_tables(study: Study) -> list[Table]:
    """Table 3 (and one per method): F1 per dataset, then mean(std) over datasets."""
    tables = []
    seed_mean = study.frame.groupby(["method", "model", "dataset"])["value"].mean()
    for method in study.methods:
        rows = []
        for model in study.models:
            if (method, model) not in seed_mean.index.droplevel(2):
                continue
            values = [seed_mean.get((method, model, d), math.nan) for d in study.datasets]
            present = [v for v in values if not math.isnan(v)]
            rows.append([model, *values, _mean_std(present)])
        if rows:
            tables.append(
                Table(
                    key=f"table3_{method}",
                    title=f"Table 3 ({method}): {study.metric} (%) per dataset",
                    caption=f"Mean over seeds of the test {study.metric} of each network trained with "
                    f"'{method}' on each dataset; last column mean(std) over datasets.",
                    columns=["Model", *study.datasets, "Mean(std)"],
                    rows=rows,
                )
            )
    return tables


def model_method_table(study: Study) -> Table:
    """Table 5: mean(std) over datasets for every method (rows) x model (columns)."""
    seed_mean = study.frame.groupby(["method", "model", "dataset"])["value"].mean()
    rows = []
    for method in study.methods:
        cells: list[Any] = [method]
        for model in study.models:
            values = [
                seed_mean[(method, model, d)] for d in study.datasets if (method, model, d) in seed_mean
            ]
            cells.append(_mean_std(values) if values else None)
        rows.append(cells)
    return Table(
        "table5",
        f"Table 5: mean(std) {study.metric} (%) per method x model",
        "Mean (and standard deviation over datasets) of the seed-averaged scores.",
        ["Method", *study.models],
        rows,
    )


def models_test_table(study: Study) -> Table:
    """Table 4: for each method, are the models different? (ANOVA or Friedman, then post-hoc)."""
    rows = []
    for method in study.methods:
        sub = study.frame[study.frame["method"] == method]
        result = study.compare(f"models|{method}", study.matrix(sub, "model", study.models))
        rows.append([method, *_test_cells(result)])
    return Table(
        "table4",
        "Table 4: models compared within each method",
        "ANOVA (F) when Shapiro-Wilk and Levene hold, else Friedman (Iman-Davenport F); post-hoc "
        "Bonferroni-Dunn or Holm against the best model. *** p<0.001, ** p<0.01, * p<0.05; "
        "≈ no significant difference, > significant difference.",
        ["Method", "Test", "Statistic", "After post-hoc procedure"],
        rows,
        notes=[study.block_note(), *study.test_notes("models|")],
    )


def family_table(study: Study) -> Table | None:
    """Table 6: model families (NAS / manual / quantized / standard) within each method."""
    df = study.frame
    families = [f for f in FAMILY_NAMES if f in set(df.get("family", []))]
    if len(families) < 2:
        return None
    df = df.assign(family_name=df["family"].map(lambda f: FAMILY_NAMES.get(f, f)))
    names = [FAMILY_NAMES[f] for f in families]
    rows = []
    for method in study.methods:
        sub = df[df["method"] == method]
        matrix = study.matrix(sub, "family_name", names)
        cells: list[Any] = [method]
        for name in names:
            per_dataset = sub[sub["family_name"] == name].groupby("dataset")["value"].mean()
            cells.append(_mean_std(per_dataset.tolist()) if len(per_dataset) else None)
        rows.append(cells + _test_cells(study.compare(f"families|{method}", matrix)))
    return Table(
        "table6",
        "Table 6: families of networks within each method",
        "Mean(std) over datasets of the family's mean score, then the test and post-hoc as in Table 4.",
        ["Method", *names, "Test", "Statistic", "After post-hoc procedure"],
        rows,
        notes=[study.block_note(), *study.test_notes("families|")],
    )


def methods_test_table(study: Study) -> Table:
    """Table 8: for each model, are the methods different?"""
    rows = []
    for model in study.models:
        sub = study.frame[study.frame["model"] == model]
        result = study.compare(f"methods|{model}", study.matrix(sub, "method", study.methods))
        rows.append([model, *_test_cells(result)])
    return Table(
        "table8",
        "Table 8: methods compared for each model",
        "As Table 4, with the training methods as groups.",
        ["Model", "Test", "Statistic", "After post-hoc procedure"],
        rows,
        notes=[study.block_note(), *study.test_notes("methods|")],
    )


def _ranking_table(study: Study, key: str, title: str, caption: str, matrix: pd.DataFrame) -> Table:
    result = study.compare(key, matrix)
    rows = []
    for method in matrix.columns:
        rank = result.ranks[str(method)] if result else math.nan
        rows.append([method, _mean_std(matrix[method].tolist()), rank])
    return Table(
        key,
        title,
        caption,
        ["Method", f"{study.metric} (%)", "Friedman average rank"],
        rows,
        notes=[study.block_note(), *study.test_notes(key)],
    )


class EffectSize(float):
    """Cohen's d: printed with the table's decimals (0.00), never as ``-1.0e-03`` like a p value."""


def _effect(d: float | None) -> float | None:
    return EffectSize(d) if d is not None and math.isfinite(d) else d


def _posthoc_table(study: Study, key: str, title: str, result: Comparison | None) -> Table:
    rows = []
    if result is not None:
        rows = [
            [p.group, p.statistic, p.p_value, p.p_adjusted, _effect(p.cohen_d), p.significant]
            for p in result.posthoc
        ]
    name = result.posthoc_method if result else "Holm"
    control = result.control if result else "-"
    stat = "t" if result and result.parametric else "Z"
    caption = (
        f"{result.test} {result.statistic:.2f} (p={result.p_value:.2g}); adjusted p-values with {name} "
        f"and Cohen's d. Control method: {control}."
        if result
        else "Not enough blocks or methods for a test."
    )
    return Table(
        key,
        title,
        caption,
        ["Method", f"{stat} value", "p value", "adjusted p value", "Cohen's d", "significant"],
        rows,
        notes=[study.block_note()],
    )


def method_ranking_tables(study: Study) -> list[Table]:
    """Tables 9 and 10: methods over all models (mean F1, Friedman ranks), post-hoc against the best."""
    matrix = study.matrix(study.frame, "method", study.methods)
    t9 = _ranking_table(
        study,
        "table9",
        "Table 9: average performance of each method",
        "Mean(std) over blocks of the score averaged over models; Friedman average rank (higher is "
        "better: the best method of a block gets rank k; the critical-difference diagram shows "
        "k + 1 - this rank, 1 = best).",
        matrix,
    )
    t10 = _posthoc_table(
        study, "table10", "Table 10: methods against the best method", study.comparisons.get("table9")
    )
    return [t9, t10]


def improvement_tables(study: Study) -> list[Table]:
    """Tables 11 and 12: gain of each method over the baseline, ranked and tested."""
    matrix = study.matrix(study.frame, "method", study.methods)
    if study.baseline not in matrix.columns or matrix.shape[1] < 2:
        return []
    gains = matrix.drop(columns=[study.baseline]).sub(matrix[study.baseline], axis=0)
    t11 = _ranking_table(
        study,
        "table11",
        f"Table 11: improvement over {study.baseline}",
        f"Mean(std) over blocks of (method - {study.baseline}) in percentage points; Friedman average rank.",
        gains,
    )
    t12 = _posthoc_table(
        study, "table12", "Table 12: improvements against the best method", study.comparisons.get("table11")
    )
    return [t11, t12]


def efficiency_table(study: Study) -> Table:
    """Table 13: size, parameters, training time per epoch and inference time per image."""
    runs = pd.DataFrame(study.collection.done)
    rows = []
    for model in study.models:
        sub = runs[runs["model"] == model]

        def mean(col: str, frame: pd.DataFrame = sub) -> float:
            values = pd.to_numeric(frame[col], errors="coerce").dropna() if col in frame else pd.Series([])
            return float(values.mean()) if len(values) else math.nan

        rows.append(
            [model, mean("size_mb"), mean("params_m"), mean("train_time_per_epoch_s"), mean("latency_ms")]
        )
    return Table(
        "table13",
        "Table 13: efficiency of the networks",
        "Model file size (MB), parameters (millions), training time per epoch (s, this machine) and "
        "inference time per image (ms, CPU, 1 thread, batch 1), averaged over the runs of each network.",
        ["Model", "Size (MB)", "Params (M)", "Train time / epoch (s)", "Inference (ms)"],
        rows,
        numeric=False,
    )


def compression_table(study: Study) -> Table | None:
    rows = study.collection.compress
    if not rows:
        return None
    df = pd.DataFrame(rows)
    out = []
    for (model, method, step), sub in df.groupby(["model", "method", "compression"], sort=False):

        def m(col: str, frame: pd.DataFrame = sub) -> float:
            values = pd.to_numeric(frame[col], errors="coerce").dropna()
            return float(values.mean()) if len(values) else math.nan

        out.append(
            [
                model,
                method,
                step,
                100 * m("float_macro_f1"),
                100 * m("compressed_macro_f1"),
                m("float_mb"),
                m("compressed_mb"),
                m("size_ratio"),
            ]
        )
    return Table(
        "compression",
        "Compression: float against compressed models",
        "Macro-F1 (%) on the test split before and after compression, and model sizes (MB), averaged "
        "over datasets and seeds.",
        ["Model", "Method", "Compression", "Float F1", "Compressed F1", "Float MB", "Compressed MB", "Ratio"],
        out,
    )


def cost_table(study: Study) -> Table | None:
    """How the grid's cost grows: wall time per run by model and method, and the total."""
    runs = [r for r in study.collection.runs if r.get("elapsed_s") is not None]
    if not runs:
        return None
    df = pd.DataFrame(runs)
    rows: list[list[Any]] = []
    for (model, method), sub in df.groupby(["model", "method"], sort=False):
        rows.append([model, method, len(sub), float(sub["elapsed_s"].mean()), float(sub["elapsed_s"].sum())])
    total = float(df["elapsed_s"].sum())
    rows.append(["all", "all", len(df), total / len(df), total])
    n_grid = len(study.collection.runs)
    return Table(
        "cost",
        "Grid cost: wall time per run",
        f"Seconds per run (last attempt) by model and method. The grid has {n_grid} runs; its cost is "
        f"the sum over cells of runs x time per run, about {n_grid} x {total / len(df):.0f} s = "
        f"{n_grid * total / len(df) / 3600:.2f} h on this machine; it grows linearly in datasets, "
        "models, methods and seeds, scaled by each model/method's own time.",
        ["Model", "Method", "Runs", "Mean s/run", "Total s"],
        rows,
        numeric=False,
    )


def training_cost_table(study: Study) -> Table | None:
    """What each method spent for its score: optimiser steps (its own and its teachers'), images
    through the network and wall time. A gain is only a gain at equal cost; this table says
    whether the comparison was one."""
    runs = [r for r in study.collection.done if r.get("optimizer_steps") is not None]
    if not runs:
        return None
    df = pd.DataFrame(runs)
    rows: list[list[Any]] = []
    for (model, method), sub in df.groupby(["model", "method"], sort=False):

        def mean(col: str, frame: pd.DataFrame = sub) -> float | None:
            values = pd.to_numeric(frame[col], errors="coerce").dropna()
            return float(values.mean()) if len(values) else None

        rows.append(
            [
                model,
                method,
                len(sub),
                mean("optimizer_steps"),
                mean("teacher_steps"),
                mean("labelled_images_seen"),
                mean("unlabelled_images_seen"),
                mean("wall_time_s"),
                mean("teacher_wall_time_s"),
                100 * float(sub["macro_f1"].mean()),
            ]
        )
    # the equal-wall-time view: what each score cost in time, teachers included, per supervised second
    total = pd.to_numeric(df["wall_time_s"], errors="coerce") + pd.to_numeric(
        df["teacher_wall_time_s"], errors="coerce"
    ).fillna(0.0)
    df = df.assign(total_wall=total)
    base = df[df["method"] == study.collection.baseline].groupby("model")["total_wall"].mean()
    for row in rows:
        sub = df[(df["model"] == row[0]) & (df["method"] == row[1])]["total_wall"].dropna()
        ref = base.get(row[0])
        row.append(float(sub.mean()) / float(ref) if len(sub) and ref and ref > 0 else None)
    # equal budgets: every method of a cell (dataset, model, seed) took the same steps
    equal = bool((df.groupby(["dataset", "model", "seed"])["optimizer_steps"].nunique() == 1).all())
    val = ", ".join(sorted({str(v) for v in df["val_source"].dropna()})) or "unknown"
    return Table(
        "training_cost",
        "Training cost of each score",
        "Mean per run over datasets and seeds: optimiser steps of the run and of its teachers (or of "
        "the model a warm start begins from), labelled and unlabelled image passes through the "
        "student (every view counts), wall time of the run and of its teachers (s), and test "
        f"macro-F1 (%); the last column is the run's wall time with its teachers' over the baseline's "
        f"(the equal-wall-time view). Steps are {'equal' if equal else 'NOT equal'} across methods "
        f"within each model; validation labels: {val}.",
        [
            "Model",
            "Method",
            "Runs",
            "Steps",
            "Teacher steps",
            "Labelled seen",
            "Unlabelled seen",
            "Wall s",
            "Teacher wall s",
            "Macro-F1",
            "Time x base",
        ],
        rows,
        numeric=False,
    )


def failures_table(study: Study) -> Table | None:
    bad = [r for r in study.collection.runs if r["status"] != "done"]
    if not bad:
        return None
    return Table(
        "failures",
        "Runs that did not finish",
        "Failed runs keep their error in bench_result.json; re-running the recipe retries them.",
        ["Run", "Status", "Error"],
        [[r["id"], r["status"], (r.get("error") or "")[:200]] for r in bad],
        numeric=False,
    )


def build_tables(study: Study) -> list[Table]:
    """Every table that the collected results support, in the paper's order."""
    if study.frame.empty:
        return [t for t in (failures_table(study), cost_table(study)) if t]
    tables: list[Table | None] = [*per_dataset_tables(study), models_test_table(study)]
    tables += [model_method_table(study), family_table(study)]
    if len(study.methods) > 1:
        tables += [methods_test_table(study), *method_ranking_tables(study), *improvement_tables(study)]
    tables += [efficiency_table(study), compression_table(study), training_cost_table(study)]
    tables += [cost_table(study), failures_table(study)]
    return [t for t in tables if t is not None]
