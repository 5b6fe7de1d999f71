"""Where the real data lives: ``../shared`` beside the checkout (override with SEMICOMPACT_SHARED)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from semicompact.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]


class Killed(Exception):
    """Raised by :class:`Interrupt`: a process killed in the middle of training."""


def Interrupt(at: int):  # reads as the callback class it returns
    """A callback that raises :class:`Killed` before optimiser step ``at``; checkpoints written
    until then stay, as after ``kill -9``."""
    import lightning as L

    class _Interrupt(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
            if trainer.global_step == at:
                raise Killed

    return _Interrupt()


def shared_dir() -> Path:
    """``../shared`` beside the checkout (override with SEMICOMPACT_SHARED)."""
    return Path(os.environ.get("SEMICOMPACT_SHARED", REPO.parent / "shared"))


def user_env() -> dict[str, str]:
    """The environment a user's command would get: without the one-thread default of conftest.py
    (for the tests that time a whole command, such as the demo)."""
    env = dict(os.environ)
    if env.pop("SEMICOMPACT_TESTS_SET_OMP", None):
        env.pop("OMP_NUM_THREADS", None)
    return env


def require_shared(*parts: str) -> Path:
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is missing (see ../shared/data/README.md)")
    return path


def train_args(data: Path, out: Path, *extra: str, epochs: int = 1, pretrained: bool = True) -> list[str]:
    """``semicompact train`` arguments for a small, fast run on 32 px images (MobileNetV2, small input)."""
    args = ["train", str(data), "--out", str(out), "--model", "mobilenetv2_100", "--small-input"]
    args += ["--image-size", "32", "--epochs", str(epochs), "--no-progress", "--no-tensorboard"]
    if pretrained:
        args += ["--pretrained", "--head-epochs", "1"]
    return [*args, *extra]


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run ``semicompact ARGS`` in-process; (exit status, stdout, stderr)."""
    from semicompact.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err


def cli_error(capsys: pytest.CaptureFixture, *args: str) -> str:
    """The one ``error:`` line of a command that must fail with status 2 and no traceback."""
    code, out, err = run_cli(capsys, *args)
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def method_config(data: Path, out: Path, **kw: object) -> TrainConfig:
    """A small, fast training configuration (MobileNetV2, small input, 32 px) for method runs."""
    from semicompact.training import TrainConfig

    values: dict[str, object] = dict(
        data=str(data),
        out=str(out),
        model="mobilenetv2_100",
        small_input=True,
        pretrained=True,
        image_size=32,
        n_labelled=8,
        epochs=2,
        head_epochs=1,
        batch_size=16,
        progress=False,
        tensorboard=False,
    )
    values.update(kw)
    return TrainConfig(**values)


def clone_teacher_record(teacher: Path, root: Path) -> Path:
    """A copy of a cached teacher as a git clone of a results folder has it: its record
    (``metrics.json``, ``config.json``, what .gitignore keeps), not its weights."""
    clone = root / teacher.name
    clone.mkdir(parents=True)
    for name in ("metrics.json", "config.json"):
        (clone / name).write_bytes((teacher / name).read_bytes())
    return clone
