"""``semicompact compress``: apply one registered compression method to a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand


class _CompressCommand(TyperCommand):
    """Appends the registered methods and their options to ``--help`` (imported only when shown)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super().format_help(ctx, formatter)
        from ..compress.base import _COMPRESSORS, list_compressors

        formatter.write("\nMethods and options (--option key=value; default shown):\n")
        for name in list_compressors():
            opts = ", ".join(f"{k}={v!r}" for k, v in _COMPRESSORS[name].options.items()) or "none"
            formatter.write(f"  {name}: {opts}\n")


def register(app: typer.Typer) -> None:
    @app.command(cls=_CompressCommand)
    def compress(
        source: Annotated[Path, typer.Argument(help="A run folder, or a .safetensors model (then --data).")],
        method: Annotated[str, typer.Option("--method", "-m", help="Compression method (see below).")],
        out_dir: Annotated[
            Path, typer.Option("--out", "-o", help="Output folder (model file(s) + metrics.json).")
        ],
        option: Annotated[
            list[str] | None,
            typer.Option("--option", help="Method option key=value (repeatable), e.g. ratio=0.5."),
        ] = None,
        target: Annotated[
            str | None,
            typer.Option(
                help="ptq only: the CPU the int8 ONNX file is for (auto: this one; x86-vnni, x86-avx2, "
                "arm64-dotprod, ...; see `export --help`); implies --option backend=onnx."
            ),
        ] = None,
        data: Annotated[
            Path | None,
            typer.Option(help="Images to calibrate, fine-tune and test on (default: the run's own data)."),
        ] = None,
        split: Annotated[Path | None, typer.Option(help="Split manifest for --data.")] = None,
        finetune_epochs: Annotated[
            int, typer.Option(help="Fine-tuning epochs on the run's training data (0: none).")
        ] = 0,
        finetune_lr: Annotated[float, typer.Option(help="Fine-tuning learning rate.")] = 1e-4,
        kd_alpha: Annotated[
            float, typer.Option(help="Weight of distillation from the float model while fine-tuning (0-1).")
        ] = 0.0,
        kd_temperature: Annotated[float, typer.Option(help="Distillation temperature.")] = 4.0,
        finetune_unlabelled: Annotated[
            int,
            typer.Option(
                help="Also fine-tune on this many unlabelled images, taught by the float model alone "
                "(-1: all; needs --kd-alpha > 0)."
            ),
        ] = 0,
        max_test: Annotated[
            int | None, typer.Option(help="Evaluate on a fixed random subset of this many test images.")
        ] = None,
        batch_size: Annotated[int | None, typer.Option(help="Batch size (default: the run's).")] = None,
        seed: Annotated[int, typer.Option()] = 0,
        overwrite: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    ) -> None:
        """Compress a trained model (quantize, prune, share weights...) and compare it with the float model.

        Examples:

          semicompact compress runs/blood --method ptq --out runs/blood-int8

          semicompact compress runs/blood --method ptq --target x86-avx2 --out runs/blood-int8-avx2

          semicompact compress runs/blood --method qat --finetune-epochs 2 --kd-alpha 0.5 --out runs/blood-qat

          semicompact compress runs/blood --method prune --option ratio=0.5 --finetune-epochs 3 --out runs/p50

          semicompact compress runs/blood --method deep_compression --finetune-epochs 3 --kd-alpha 0.7
          --finetune-unlabelled 2000 --out runs/dc
        """
        from rich.console import Console

        from ..compress.base import get_compressor
        from ..compress.run import parse_options, run_compression

        defaults = get_compressor(method).options
        options = parse_options(option, defaults)
        if target is not None:
            options = _with_target(method, options, target)
        result = run_compression(
            method,
            source,
            out_dir,
            options,
            data=data,
            split=split,
            finetune_epochs=finetune_epochs,
            finetune_lr=finetune_lr,
            kd_alpha=kd_alpha,
            kd_temperature=kd_temperature,
            finetune_unlabelled=finetune_unlabelled,
            seed=seed,
            max_test=max_test,
            batch_size=batch_size,
            overwrite=overwrite,
        )
        console = Console(soft_wrap=True)
        sizes = result["size_bytes"]
        ratio = result["size_ratio"]
        console.print(
            f"{method}: {sizes['compressed'] / 1e6:.2f} MB vs {sizes['float'] / 1e6:.2f} MB float"
            + (f" ({ratio:.1f}x smaller)" if ratio else "")
        )
        test = result.get("test")
        if test:
            f, c = test["float"], test["compressed"]
            console.print(
                f"test (n={c['n']}): macro-F1 {c['macro_f1']:.4f} vs {f['macro_f1']:.4f} float "
                f"({100 * result['macro_f1_change']:+.2f} points); accuracy {c['accuracy']:.4f} vs "
                f"{f['accuracy']:.4f}"
            )
        for warning in result.get("warnings", []):
            Console(stderr=True, soft_wrap=True).print(f"[bold red]warning: {warning}[/]", highlight=False)
        console.print(f"outputs in {result['out']}")


def _with_target(method: str, options: dict[str, Any], target: str) -> dict[str, Any]:
    """``options`` with ``target`` for ptq's onnx backend (the only int8 file whose kernels depend on
    the CPU); a target for another method or backend would be silently ignored, so it is refused."""
    from ..errors import ConfigError
    from ..export.targets import resolve_target

    if method != "ptq":
        raise ConfigError(f"--target applies to --method ptq only (its onnx backend), not --method {method}")
    resolve_target(target, "--target")
    backend = options.get("backend", "onnx")
    if backend != "onnx":
        raise ConfigError(f"--target {target} needs --option backend=onnx, not backend={backend}")
    given = options.get("target")
    if given is not None and given != target:
        raise ConfigError(f"--target {target} and --option target={given} disagree: give one of them")
    return {**options, "backend": "onnx", "target": target}
