"""semicompact deploy: variants built once (resumable), measured, the most accurate within budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semicompact.cli.main import main


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, " ".join(captured.err.split())


def _row(i: str, ms: float, f1: float, mb: float = 1.0) -> dict:
    return {"id": i, "latency_ms": ms, "macro_f1": f1, "size_bytes": int(mb * 1e6)}


def test_pick_and_pareto_front() -> None:
    from semicompact.export.deploy import pareto_front, pick

    rows = [_row("a", 1.0, 0.70), _row("b", 1.5, 0.80, 5), _row("c", 2.5, 0.85), _row("d", 1.8, 0.75)]
    assert pick(rows, 2.0, None)["id"] == "b"
    assert pick(rows, 2.0, 2.0)["id"] == "d"  # b's file is too large
    assert pick(rows, 3.0, None)["id"] == "c"
    assert pick(rows, 0.5, None) is None
    assert [r["id"] for r in pareto_front(rows)] == ["a", "b", "c"]  # d is beaten by b


def test_deploy_picks_within_budget_resumes_and_refuses_impossible_budgets(
    capsys, tiny_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "deploy"
    args = ["deploy", str(tiny_run), "--variants", "fp32,int8", "--runs", "5", "--out", str(out)]
    code, stdout, err = run_cli(capsys, *args, "--max-latency-ms", "1000")
    assert code == 0, err
    summary = json.loads((out / "deploy.json").read_text())
    variants = {v["variant"]: v for v in summary["variants"]}
    assert set(variants) == {"fp32", "int8"} and all(v["n"] == 100 for v in variants.values())
    best = max(variants.values(), key=lambda v: (v["macro_f1"], -v["latency_ms"]))
    assert summary["chosen"] == best["id"] and f"chosen: run {best['variant']}" in stdout
    card = json.loads((out / "model_card.json").read_text())
    assert card["macro_f1"] == best["macro_f1"] and card["budget"]["max_latency_ms"] == 1000
    assert (out / "model.onnx").read_bytes() == Path(best["file"]).read_bytes()
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG" and "(chosen)" in (
        out / "MODEL_CARD.md"
    ).read_text()
    assert variants["int8"]["size_bytes"] < 0.4 * variants["fp32"]["size_bytes"]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("variants/*/model.onnx")}
    # an impossible budget: one line naming the fastest variant; the built variants are reused
    code, _, err = run_cli(capsys, *args, "--max-latency-ms", "0.001")
    fastest = min(json.loads((out / "deploy.json").read_text())["variants"], key=lambda v: v["latency_ms"])
    assert code == 2 and "error: no variant meets --max-latency-ms 0.001 on this CPU" in err
    assert f"the fastest is {fastest['id']} at" in err and "Traceback" not in err
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("variants/*/model.onnx")}
    code, _, err = run_cli(capsys, "deploy", str(tmp_path / "nothing"), "--max-latency-ms", "2")
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(capsys, *args, "--max-latency-ms", "2", "--variants", "fp16")
    assert code == 2 and "--variants fp16: use one or more of fp32, int8" in err
