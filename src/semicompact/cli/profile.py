"""``semicompact profile``: size, MACs, training time and CPU latency (the paper's Table 13)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ..export.profile import ProfileSettings


def register(app: typer.Typer) -> None:
    @app.command("profile")
    def profile_cmd(
        sources: Annotated[
            list[Path] | None, typer.Argument(help="Run folders or .safetensors models (trained).")
        ] = None,
        models: Annotated[
            str | None, typer.Option(help="Registered network names, comma separated (no training needed).")
        ] = None,
        image_size: Annotated[
            int | None, typer.Option(help="Input size in px (default: each model's own, else 224).")
        ] = None,
        num_classes: Annotated[int, typer.Option(help="Classes of the --models networks.")] = 10,
        threads: Annotated[int, typer.Option(help="CPU threads for PyTorch and onnxruntime.")] = 1,
        batch: Annotated[int, typer.Option(help="Batch size of the throughput measurement.")] = 32,
        runs: Annotated[int, typer.Option(help="Timed runs at batch 1 (the median is reported).")] = 30,
        warmup: Annotated[int, typer.Option(help="Untimed warm-up runs.")] = 5,
        runtimes: Annotated[
            str,
            typer.Option(
                help="eager, onnx, onnx-int8, torchao-int8 (comma separated; torchao-int8 compiles "
                "with inductor first, about a minute per network)."
            ),
        ] = "eager,onnx,onnx-int8",
        target: Annotated[
            str,
            typer.Option(
                help="CPU the int8 file is for: auto (this CPU), x86-amx, x86-vnni, x86-avx2, "
                "arm64-dotprod, arm64 or generic (see export)."
            ),
        ] = "auto",
        int8_weights: Annotated[
            str,
            typer.Option(
                help="Override the target's int8 types: uint8, int8, int8-7bit, s8s8, int8-early-float, "
                "int8-7bit-early-float or uint8-early-float."
            ),
        ] = "auto",
        out_file: Annotated[
            Path | None,
            typer.Option("--out", "-o", help="Write the rows as JSON here (and a .md table beside)."),
        ] = None,
    ) -> None:
        """Parameters, MACs, file sizes, training time per epoch and CPU latency/throughput per runtime.

        Examples:

          semicompact profile --models resnet18,mobilenetv2_100,resnet18_quantized --image-size 224

          semicompact profile runs/blood runs/blood-r18 --threads 2
        """
        from ..errors import ConfigError

        chosen = tuple(r.strip() for r in runtimes.split(",") if r.strip())
        from ..export.profile import RUNTIMES

        bad = [r for r in chosen if r not in RUNTIMES]
        if bad or not chosen:
            raise ConfigError(f"--runtimes {runtimes!r}: use one or more of {', '.join(RUNTIMES)}")
        names = [m.strip() for m in (models or "").split(",") if m.strip()]
        if not names and not sources:
            raise ConfigError("nothing to profile: give run folders / .safetensors files or --models a,b,c")
        for name, value, low in (
            ("--threads", threads, 1),
            ("--batch", batch, 1),
            ("--runs", runs, 1),
            ("--warmup", warmup, 0),
            ("--num-classes", num_classes, 2),
        ):
            if value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}")
        if image_size is not None and image_size < 8:
            raise ConfigError(f"--image-size {image_size}: use at least 8 pixels")
        from ..export.onnx import check_int8_weights
        from ..export.profile import ProfileSettings
        from ..export.targets import resolve_target

        check_int8_weights(int8_weights)
        resolve_target(target)
        settings = ProfileSettings(
            threads=threads,
            batch=batch,
            runs=runs,
            warmup=warmup,
            runtimes=chosen,
            int8_weights=int8_weights,
            target=target,
        )
        rows = _profile(sources or [], names, image_size, num_classes, settings)
        _report(rows, out_file)


def _profile(
    sources: list[Path],
    names: list[str],
    image_size: int | None,
    num_classes: int,
    settings: ProfileSettings,
) -> list[dict[str, Any]]:
    from ..artifacts import ModelCard, load_model
    from ..compress.quant_common import calibration_batches, numpy_batches
    from ..compress.run import load_data, resolve_source
    from ..export.profile import profile_model
    from ..models import create_model
    from ..progress import StageLines

    lines = StageLines("profile", len(sources) + len(names))
    rows = []
    for source in sources:
        model_file, run_dir = resolve_source(source)
        model, card = load_model(model_file)
        calib = None
        if "onnx-int8" in settings.runtimes and run_dir is not None:
            dm = load_data(run_dir, card)
            calib = numpy_batches(calibration_batches(dm, "profile", "train", settings.calib_images))
        row = profile_model(
            model,
            card,
            image_size or card.image_size,
            settings,
            file_size=model_file.stat().st_size,
            run_dir=run_dir,
            calibration=calib,
        )
        row["source"] = str(model_file)
        rows.append(row)
        lines.advance(f"{model_file} profiled")
    for name in names:
        model = _no_zero_gammas(create_model(name, num_classes=num_classes))
        card = ModelCard(
            model=name, classes=[str(i) for i in range(num_classes)], image_size=image_size or 224
        )
        rows.append(profile_model(model, card, card.image_size, settings))
        lines.advance(f"{name} profiled")
    return rows


def _report(rows: list[dict[str, Any]], out_file: Path | None) -> None:
    from rich.console import Console

    from ..export.profile import markdown_table
    from ..io import write_json, write_text

    console = Console(soft_wrap=True)
    table = markdown_table(rows)
    console.print(table, highlight=False, markup=False)
    weights = rows[0].get("int8_weights")
    console.print(
        f"threads: {rows[0]['threads']}; latency = median of timed runs at batch 1 after warm-up, "
        "runtimes interleaved run by run"
        + (f"; onnx-int8 weights: {weights} (target {rows[0]['int8_target']})" if weights else ""),
        highlight=False,
    )
    for row in rows:
        for remark in row.get("remarks", []):
            console.print(f"note: {remark}", highlight=False)
    if out_file:
        write_json(out_file, rows)
        write_text(out_file.with_suffix(".md"), table)
        console.print(f"rows in {out_file} and {out_file.with_suffix('.md')}")


def _no_zero_gammas(model: Any) -> Any:
    """Untrained timm ResNets start the last BN of each block at gamma = 0; ONNX constant folding
    would then delete those convolutions and flatter the ONNX timings. Trained nets never have that."""
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                m.weight.fill_(1.0)
    return model
