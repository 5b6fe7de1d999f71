"""kill -9 a real grid at a random (seeded) moment, run it again: nothing finished is redone and the
tables equal those of a grid never interrupted."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from rich.console import Console
from safetensors.torch import load_file

from semicompact.bench import load_recipe, run_grid
from semicompact.report.collect import collect
from semicompact.report.tables import Study, build_tables, to_csv

SEED = 20240  # the kill moment is random, but reproducible


def tiny_recipe(folder: Path, cells: Path) -> Path:
    raw = {
        "name": "kill",
        "datasets": [{"name": "cells", "path": str(cells), "options": {"n_labelled": 8}}],
        # timm's test_resnet (0.4 M parameters): a real network, ten times cheaper than ResNet-18
        "models": [{"name": "test_resnet", "small_input": True}],
        "methods": ["supervised"],
        "seeds": [0, 1],
        "image_size": 32,
        "epochs": 3,  # a run of a few seconds: long enough to be killed inside it on a loaded machine
        "head_epochs": 0,
        "profile": False,
        "train": {"batch_size": 16, "tensorboard": False, "patience": 5},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def bench(recipe: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "semicompact.cli.main", "bench", str(recipe), "--out", str(out)]
    cmd += ["--no-report", "--threads", "1"]  # bit-exact resumption needs the same thread count
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def numeric_tables(out: Path) -> dict[str, str]:
    study = Study.build(collect(out))
    return {t.key: to_csv(t) for t in build_tables(study) if t.numeric}


def test_kill_9_and_rerun_equals_an_uninterrupted_grid(cells_dir: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, cells_dir)
    out = tmp_path / "killed"
    rng = random.Random(SEED)
    runs = ["cells__test_resnet__supervised__s0", "cells__test_resnet__supervised__s1"]
    target = rng.choice(runs)  # kill while this run trains, after a random extra delay
    delay = rng.uniform(0.0, 0.5)
    proc = bench(recipe, out)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "runs" / target / "config.json").is_file():
            break
        time.sleep(0.05)
    time.sleep(delay)
    assert proc.poll() is None, f"the grid ended before the kill: {proc.stdout.read() if proc.stdout else ''}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {
        r: (out / "runs" / r / "bench_result.json").read_bytes()
        for r in runs
        if (out / "runs" / r / "bench_result.json").is_file()
    }
    assert target not in finished  # it was killed while training

    # the re-run and the uninterrupted grid run in this process (one interpreter start saved each)
    recipe_obj = load_recipe(recipe)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like OMP_NUM_THREADS=1 in the subprocess; the machine is shared
    try:
        again = run_grid(recipe_obj, out, console=Console(file=io.StringIO()), threads=1)
        straight = tmp_path / "straight"
        clean = run_grid(recipe_obj, straight, console=Console(file=io.StringIO()), threads=1)
    finally:
        torch.set_num_threads(threads)
    assert (again.skipped, again.done, again.failed) == (len(finished), 2 - len(finished), [])
    for run_id, content in finished.items():  # finished runs were not redone
        assert (out / "runs" / run_id / "bench_result.json").read_bytes() == content
    assert clean.done == 2
    a, b = numeric_tables(out), numeric_tables(straight)
    assert a and a == b
    for run_id in runs:
        ma = json.loads((out / "runs" / run_id / "metrics.json").read_text())["test"]
        mb = json.loads((straight / "runs" / run_id / "metrics.json").read_text())["test"]
        assert ma["confusion_matrix"] == mb["confusion_matrix"]
        # the weights too, bit for bit: a tiny network's scores alone can agree by chance (one class)
        wa = load_file(out / "runs" / run_id / "best.safetensors")
        wb = load_file(straight / "runs" / run_id / "best.safetensors")
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
