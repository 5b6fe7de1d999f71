"""Report wording: rank direction, effect sizes, and runs that selected no pseudo-label."""

from __future__ import annotations

import json
from pathlib import Path

from test_report import make_bench

from semicompact.io import write_json
from semicompact.report import write_report, zero_pseudo_label_notes
from semicompact.report.collect import collect
from semicompact.report.tables import EffectSize, Table, _cell, to_csv, to_markdown


def test_cohens_d_prints_with_the_tables_decimals() -> None:
    assert _cell(EffectSize(-0.001), 2) == "0.00"
    assert _cell(EffectSize(-0.0051), 2) == "-0.01"
    assert _cell(EffectSize(1.234), 2) == "1.23"
    assert _cell(0.0004, 2) == "4.0e-04"  # p values keep the scientific form
    table = Table("t", "T", "", ["Method", "Cohen's d"], [["a", EffectSize(-0.001)]])
    assert "| a | 0.0 |" in to_markdown(table)  # the table's default: 1 decimal
    assert to_csv(table).splitlines()[1] == "a,-0.001"  # the CSV keeps the full value


def test_zero_pseudo_labels_are_flagged(tmp_path: Path) -> None:
    root = make_bench(tmp_path / "b", failed=False)
    folder = root / "runs" / "beta__resnet18__plain_distillation__s1"
    metrics = json.loads((folder / "metrics.json").read_text())
    write_json(folder / "metrics.json", {**metrics, "pseudo_labels": {"selected": 0}})
    other = root / "runs" / "beta__resnet18__plain_distillation__s0"
    metrics = json.loads((other / "metrics.json").read_text())
    write_json(other / "metrics.json", {**metrics, "pseudo_labels": {"selected": 12}})
    rows = {r["id"]: r for r in collect(root).runs}
    assert rows[folder.name]["pseudo_selected"] == 0 and rows[other.name]["pseudo_selected"] == 12
    assert rows["beta__resnet18__supervised__s0"]["pseudo_selected"] is None
    expected = (
        "Warning: 1 run(s) selected 0 pseudo-labels, so their student learnt from the labelled images "
        "only (a baseline run, not a result of the method): beta/resnet18/plain_distillation/seed 1."
    )
    assert zero_pseudo_label_notes(list(rows.values())) == [expected]
    result = write_report(root)
    assert expected in result.markdown.read_text()
    assert "selected 0 pseudo-labels" in result.html.read_text()
    text = result.markdown.read_text()
    assert "Friedman average rank (higher is better: the best method of a block gets rank k; the " in text
    assert "critical-difference diagram shows k + 1 - this rank, 1 = best)" in text
    assert "Friedman ranks, 1 = best, i.e. k + 1 minus the tables' rank, where higher is better" in text
