"""`semicompact ssl`: every option of `train`, plus --method and --option key=value."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

#: the method `semicompact ssl` runs when --method is not given: the one measured at or above the
#: converged supervised base on every shared set with every seed (bench/results/ssl_medmnist_64_budget)
RECOMMENDED_METHOD = "kd"
METHOD_HELP = (
    "supervised, plain_distillation, data_distillation, model_distillation, model_data_distillation, "
    "noisy_student, fixmatch, flexmatch, freematch, softmatch, debiaspl, mixmatch, kd or ssl_kd "
    "(see `semicompact ssl-methods`). Recommended, and the default: kd (soft targets of an "
    "EfficientNet-Lite0 + MobileNetV2 teacher ensemble on labelled and unlabelled images), the one "
    "method measured at or above the supervised base on every MedMNIST set with every seed "
    "(MobileNetV2 student; docs/methods.md)."
)


def register(app: typer.Typer) -> None:
    from .main import out, run_training, train

    base = inspect.signature(train)
    extra = [
        inspect.Parameter(
            "method",
            inspect.Parameter.KEYWORD_ONLY,
            default=RECOMMENDED_METHOD,
            annotation=Annotated[str, typer.Option(help=f"Training method: {METHOD_HELP}")],
        ),
        inspect.Parameter(
            "option",
            inspect.Parameter.KEYWORD_ONLY,
            default=[],
            annotation=Annotated[
                list[str],
                typer.Option(
                    "--option",
                    help="Method option as key=value, repeatable, e.g. --option confidence=0.9 "
                    "--option teachers=resnet50,efficientnet_b3 --option transforms=hflip,gamma:gamma=0.7",
                ),
            ],
        ),
    ]
    hints = typing.get_type_hints(train, include_extras=True)  # main.py's annotations are strings
    params = [
        p.replace(
            annotation=hints[p.name], kind=p.kind if p.name == "ctx" else inspect.Parameter.KEYWORD_ONLY
        )
        for p in base.parameters.values()
    ]

    def ssl(ctx: typer.Context, **kwargs: Any) -> None:
        from .checks import check_train_paths

        check_train_paths(ctx.params)  # before the slow imports below
        from ..methods._options import parse_option_pairs

        options = parse_option_pairs(kwargs.get("option") or [])
        run_training(
            ctx,
            kwargs.get("config"),
            Path(kwargs["out_dir"]),
            bool(kwargs.get("resume")),
            method=kwargs["method"],
            options=options,
        )

    ssl.__signature__ = base.replace(parameters=[*params, *extra])  # type: ignore[attr-defined]
    ssl.__doc__ = """Train with a semi-supervised or distillation method (unlabelled: DATA/unlabelled/).

    Without --method it runs kd, the recommended default: a two-teacher ensemble distilled (see --method).

    Examples:

      semicompact ssl blood.npz --pretrained --max-steps 600 --out runs/kd   # the recommended default

      semicompact ssl blood.npz --method data_distillation --pretrained --option confidence=0.9

      semicompact ssl data/cells --method fixmatch --option mu=7 --image-size 64 --out runs/fixmatch

      semicompact ssl data/cells --method kd --option teachers=resnet50 --option unlabelled=false
    """
    app.command("ssl")(ssl)

    @app.command("ssl-methods")
    def ssl_methods() -> None:
        """List the training methods with their options and defaults."""
        from rich.table import Table

        from ..methods import list_methods, method_class

        table = Table("method", "what it does", "options (default)")
        for name in list_methods():
            cls = method_class(name)
            opts = ", ".join(f"{k}={v}" for k, v in cls.options.items()) or "-"
            table.add_row(name, cls.summary, opts)
        out.print(table)
