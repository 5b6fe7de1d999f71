"""``semicompact deploy``: the most accurate variant of trained runs that fits a latency budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("deploy")
    def deploy_cmd(
        sources: Annotated[list[Path], typer.Argument(help="Run folders, or a bench folder holding runs.")],
        max_latency_ms: Annotated[
            float, typer.Option(help="Budget: latency per image at batch 1 on this CPU, in ms.")
        ],
        out_dir: Annotated[
            Path, typer.Option("--out", "-o", help="Output folder (resumable: built variants are kept).")
        ] = Path("deploy"),
        max_size_mb: Annotated[float | None, typer.Option(help="Budget: largest model file, in MB.")] = None,
        target: Annotated[
            str, typer.Option(help="CPU for the int8 variants: auto (this CPU) or a target of `export`.")
        ] = "auto",
        variants: Annotated[
            str,
            typer.Option(
                help="Variants to try: fp32, int8, prune25, prune25-int8, prune50, prune50-int8, lowrank."
            ),
        ] = "fp32,int8,prune25,prune25-int8,prune50,prune50-int8,lowrank",
        threads: Annotated[int, typer.Option(help="CPU threads of the latency measurement.")] = 1,
        runs: Annotated[int, typer.Option(help="Timed rounds (median reported).")] = 30,
        finetune_epochs: Annotated[
            int,
            typer.Option(
                help="Fine-tuning epochs after pruning / low-rank (distilled from the float model)."
            ),
        ] = 2,
        kd_alpha: Annotated[float, typer.Option(help="Weight of distillation while fine-tuning.")] = 0.5,
        max_test: Annotated[
            int | None, typer.Option(help="Measure macro-F1 on a fixed subset of this many test images.")
        ] = None,
    ) -> None:
        """Try the export and compression variants of trained runs, measure latency on this CPU and
        macro-F1 on their test images, and write the most accurate one within the budget.

        Writes OUT/model.onnx, MODEL_CARD.md, model_card.json, deploy.json (every variant) and
        pareto.png. Interrupted? Run the same command again: built variants are reused.

        Example: semicompact deploy runs/blood-mnv2 runs/blood-r18 --max-latency-ms 2 --out deploy/
        """
        from rich.console import Console

        from ..export.deploy import deploy_search

        console = Console(soft_wrap=True)
        summary = deploy_search(
            list(sources),
            out_dir,
            max_latency_ms,
            max_size_mb=max_size_mb,
            target=target,
            variants=tuple(v.strip() for v in variants.split(",") if v.strip()),
            threads=threads,
            runs=runs,
            finetune_epochs=finetune_epochs,
            kd_alpha=kd_alpha,
            max_test=max_test,
            log=lambda text: console.print(text, highlight=False),
        )
        chosen = next(v for v in summary["variants"] if v["id"] == summary["chosen"])
        console.print(
            f"chosen: {Path(chosen['run']).name} {chosen['variant']}: macro-F1 {chosen['macro_f1']:.4f}, "
            f"{chosen['latency_ms']:.2f} ms <= {max_latency_ms:g} ms, {chosen['size_bytes'] / 1e6:.2f} MB "
            f"-> {out_dir / 'model.onnx'} (model card, deploy.json, pareto.png beside it)",
            highlight=False,
        )
