"""``semicompact export``: ONNX (fp32, int8) and TorchScript files with their metadata, checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        source: Annotated[Path, typer.Argument(help="A run folder or a .safetensors model.")],
        out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder for the exported files.")],
        format: Annotated[
            str, typer.Option("--format", "-f", help="onnx, onnx-int8, torchscript (comma separated).")
        ] = "onnx,onnx-int8",
        data: Annotated[
            Path | None, typer.Option(help="Images for calibration and checks (default: the run's data).")
        ] = None,
        split: Annotated[Path | None, typer.Option(help="Split manifest for --data.")] = None,
        check_images: Annotated[
            list[Path] | None,
            typer.Option(help="Image files/folders to check the export on (default: test split)."),
        ] = None,
        max_check: Annotated[int, typer.Option(help="Images used for the check.")] = 256,
        calibration: Annotated[
            str, typer.Option(help="int8 calibration images: train, unlabelled or both.")
        ] = "train",
        calib_images: Annotated[int, typer.Option(help="Number of int8 calibration images.")] = 256,
        per_channel: Annotated[bool, typer.Option(help="Per-channel int8 weights.")] = True,
        int8_weights: Annotated[
            str,
            typer.Option(
                help="int8 weight type: uint8 (no saturation on any CPU), int8 (fastest on VNNI x86 "
                "and ARM, can saturate on older x86) or int8-7bit (fast kernels, no saturation)."
            ),
        ] = "uint8",
        opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
        overwrite: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    ) -> None:
        """Export a trained model to ONNX (fp32 and int8) and TorchScript, each checked on real images.

        Class names, input size and normalisation are stored in the file (ONNX metadata_props,
        TorchScript _extra_files); the check (top-1 agreement, max probability difference vs the
        source model) is printed and written next to each file as <file>.check.json.

        Example: semicompact export runs/blood --format onnx,onnx-int8,torchscript --out runs/blood/export
        """
        from rich.console import Console

        from ..export.check import format_check
        from ..export.run import export_model, parse_formats

        results = export_model(
            source,
            out_dir,
            parse_formats(format),
            data=data,
            split=split,
            check_images=check_images,
            max_check=max_check,
            calibration=calibration,
            calib_images=calib_images,
            per_channel=per_channel,
            int8_weights=int8_weights,
            opset=opset,
            overwrite=overwrite,
        )
        console = Console(soft_wrap=True)
        for fmt, check in results.items():
            console.print(f"{check['path']} ({check['size_bytes'] / 1e6:.2f} MB)")
            console.print("  " + format_check(fmt, check))
