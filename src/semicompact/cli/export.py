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
        target: Annotated[
            str,
            typer.Option(
                help="CPU the int8 file is for: auto (this CPU), x86-amx, x86-vnni, x86-avx2, "
                "arm64-dotprod, arm64 or generic; decides the int8 types."
            ),
        ] = "auto",
        int8_weights: Annotated[
            str,
            typer.Option(
                help="Override the target's int8 types: uint8 (u8u8, exact everywhere, slow on x86), "
                "int8 (u8s8, fast with VNNI/AMX, saturates on AVX2), int8-7bit (u8s8 without "
                "saturation), s8s8, or int8-early-float / int8-7bit-early-float / uint8-early-float "
                "(the same with the early convolutions in float)."
            ),
        ] = "auto",
        min_agreement: Annotated[
            float, typer.Option(help="Gate: least top-1 agreement with the source model on the check images.")
        ] = 0.97,
        max_f1_drop: Annotated[
            float, typer.Option(help="Gate: most macro-F1 points lost on the labelled check images.")
        ] = 1.0,
        allow_disagreement: Annotated[
            bool, typer.Option(help="Write files that fail the gate anyway (marked in their check).")
        ] = False,
        threads: Annotated[int, typer.Option(help="Threads when timing the int8 candidates.")] = 1,
        opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
        overwrite: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    ) -> None:
        """Export a trained model to ONNX (fp32 and int8) and TorchScript, each checked on real images.

        Class names, input size and normalisation are stored in the file (ONNX metadata_props,
        TorchScript _extra_files); the check (top-1 agreement, max probability difference and
        macro-F1 vs the source model) is printed and written next to each file as <file>.check.json.
        A file below --min-agreement or losing more than --max-f1-drop points fails the export
        (nothing written) unless --allow-disagreement. The int8 types are chosen for --target and
        the choice, with its reason, is stored in the file and in export.json.

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
            target=target,
            min_agreement=min_agreement,
            max_f1_drop=max_f1_drop / 100,
            allow_disagreement=allow_disagreement,
            threads=threads,
            opset=opset,
            overwrite=overwrite,
        )
        console = Console(soft_wrap=True)
        for fmt, check in results.items():
            console.print(f"{check['path']} ({check['size_bytes'] / 1e6:.2f} MB)", highlight=False)
            console.print("  " + format_check(fmt, check), highlight=False)
            choice = check.get("int8_choice")
            if choice:
                console.print(
                    f"  int8 for {choice['target']}: {choice['scheme']}: {choice['why']}", highlight=False
                )
            if check["gate"]["allowed_by_user"]:
                console.print(
                    f"  warning: below the gate ({'; '.join(check['gate']['failures'])}), written because "
                    "of --allow-disagreement",
                    highlight=False,
                )
