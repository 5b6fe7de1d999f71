"""``semicompact``: train, evaluate and ship compact biomedical image classifiers.

Every command prints one clear line and exits with status 2 on a problem the user can fix
(bad file, bad option), never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError, SemicompactError

app = typer.Typer(
    name="semicompact",
    help="Small, fast and accurate biomedical image classifiers from few labels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
out = Console()
err = Console(stderr=True)

DataArg = Annotated[
    Path,
    typer.Argument(
        help="Dataset: an image folder (train/<class>/..., valid/, test/, unlabelled/), a MedMNIST .npz or a CSV manifest (path,label)."
    ),
]


def _typed(ctx: typer.Context, name: str) -> bool:
    """True when option ``name`` was given on the command line (or the environment), not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and getattr(source, "name", "DEFAULT") != "DEFAULT"


def _train_options(ctx: typer.Context, config_file: Path | None, given: dict[str, Any]) -> dict[str, Any]:
    """Values from --config, overridden by the options typed on the command line."""
    from ..training.config import load_mapping

    values: dict[str, Any] = dict(load_mapping(config_file)) if config_file else {}
    for name, value in given.items():
        source = ctx.get_parameter_source(name)
        if name not in values or getattr(source, "name", "DEFAULT") != "DEFAULT":
            values[name] = value
    return values


@app.command()
def train(
    ctx: typer.Context,
    data: DataArg,
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Run folder (created; must not hold a run unless --resume).")
    ] = Path("runs/run"),
    model: Annotated[
        str, typer.Option(help="Network name or alias; see `semicompact models`.")
    ] = "mobilenetv2_100",
    unlabelled: Annotated[
        Path | None, typer.Option(help="Folder of unlabelled images (flat) when not in DATA/unlabelled/.")
    ] = None,
    split: Annotated[
        Path | None,
        typer.Option(help="Split manifest from `semicompact split` (default: make one from --seed)."),
    ] = None,
    n_labelled: Annotated[int, typer.Option(help="Labelled images per class (the paper uses 75).")] = 75,
    test_fraction: Annotated[
        float, typer.Option(help="Share of images held out for testing when DATA has no test split.")
    ] = 0.25,
    val_fraction: Annotated[
        float, typer.Option(help="Share of train kept for validation when DATA has no valid split.")
    ] = 0.1,
    test_seed: Annotated[
        int, typer.Option(help="Seed of the test images drawn from train (fixed across --seed).")
    ] = 0,
    pretrained: Annotated[
        bool, typer.Option(help="Start from ImageNet weights downloaded from the hub.")
    ] = False,
    weights: Annotated[
        Path | None,
        typer.Option(help="Local ImageNet weights (.pth or .safetensors, timm or torchvision layout)."),
    ] = None,
    small_input: Annotated[
        bool, typer.Option(help="Stem without early downsampling, for 28-64 px images.")
    ] = False,
    image_size: Annotated[int, typer.Option(help="Images are resized to this square size.")] = 64,
    batch_size: Annotated[int, typer.Option()] = 32,
    num_workers: Annotated[int, typer.Option(help="Data loading processes.")] = 0,
    head_epochs: Annotated[
        int, typer.Option(help="Stage 1: epochs training only the new head (pretrained models).")
    ] = 2,
    epochs: Annotated[int, typer.Option(help="Stage 2: maximum epochs training all layers.")] = 50,
    max_steps: Annotated[
        int | None,
        typer.Option(
            help="Budget in optimiser steps (head + body), the same for every method; replaces --epochs."
        ),
    ] = None,
    head_steps: Annotated[
        int | None,
        typer.Option(
            help="Head-only steps (default with --max-steps: --head-epochs passes over the labels)."
        ),
    ] = None,
    val_every: Annotated[
        int | None, typer.Option(help="Validate every K steps (default: each pass over the labels).")
    ] = None,
    min_steps: Annotated[
        int, typer.Option(help="Early stopping never stops before this many body steps.")
    ] = 0,
    warmup_steps: Annotated[
        int | None, typer.Option(help="Linear warm-up of the body stage (default: 5% of its steps).")
    ] = None,
    early_stopping: Annotated[
        bool, typer.Option(help="Stop when --monitor has not improved for --patience validations.")
    ] = True,
    select: Annotated[
        str, typer.Option(help="Model kept at the end: best (on validation) or last.")
    ] = "best",
    val: Annotated[
        str,
        typer.Option(
            help="Validation labels: labelled (out of the --n-labelled budget) or official (DATA's own "
            "valid split: more labels than the budget)."
        ),
    ] = "labelled",
    val_share: Annotated[
        float, typer.Option(help="With --val labelled: share of each class's labels used for validation.")
    ] = 0.2,
    lr: Annotated[
        float, typer.Option(help="Learning rate of the head (the body gets a tenth when pretrained).")
    ] = 1e-3,
    body_lr_mult: Annotated[
        float, typer.Option(help="The pretrained body's rate as a multiple of --lr (fastai: 0.1).")
    ] = 0.1,
    lr_find: Annotated[
        bool, typer.Option(help="Pick the learning rate of each stage with the range test.")
    ] = False,
    weight_decay: Annotated[float, typer.Option()] = 1e-4,
    patience: Annotated[
        int, typer.Option(help="Early stopping: validations without improvement of --monitor.")
    ] = 10,
    monitor: Annotated[
        str,
        typer.Option(help="Validation metric for early stopping and model selection: macro_f1 or accuracy."),
    ] = "macro_f1",
    class_weights: Annotated[
        bool, typer.Option(help="Weight the loss by inverse class frequency (imbalanced data).")
    ] = False,
    label_smoothing: Annotated[float, typer.Option()] = 0.0,
    augment: Annotated[
        str, typer.Option(help="Training augmentation: standard (flips, rotation, zoom, lighting) or none.")
    ] = "standard",
    vflip: Annotated[
        bool, typer.Option(help="Also flip vertically (orientation-free images such as cells).")
    ] = False,
    invariances: Annotated[
        str | None,
        typer.Option(
            help="Flips/turns that keep the label, e.g. hflip,vflip,rot90 (names: hflip, vflip, rot90, "
            "rot180, or none): augmentation, SSL views and test-time views use only these. "
            "Default: left-right flips (+ --vflip), test-time views as given."
        ),
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    devices: Annotated[int, typer.Option(help="Devices (GPUs, or CPU processes) for DDP.")] = 1,
    num_nodes: Annotated[int, typer.Option(help="Machines for multi-node DDP.")] = 1,
    accelerator: Annotated[str, typer.Option(help="auto, cpu, gpu or mps.")] = "auto",
    precision: Annotated[
        str, typer.Option(help="auto (16-mixed on GPU, 32 on CPU) or a Lightning precision.")
    ] = "auto",
    progress: Annotated[bool, typer.Option(help="Progress bars (on a terminal).")] = True,
    tensorboard: Annotated[bool, typer.Option(help="Also write TensorBoard logs.")] = True,
    channels_last: Annotated[
        bool,
        typer.Option(help="Train in channels-last (NHWC) memory layout: same arithmetic, ~2x faster on CPU."),
    ] = True,
    config: Annotated[
        Path | None, typer.Option(help="YAML/JSON file of these options (command-line values win).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the interrupted run in --out from its last checkpoint.")
    ] = False,
) -> None:
    """Train one model with the paper's two-stage transfer learning and evaluate it.

    Examples:

      semicompact train data/ham10000 --model mobilenetv2_100 --weights mobilenet_v2.pth --image-size 128

      semicompact train bloodmnist.npz --model resnet18 --small-input --image-size 28 --out runs/blood

      semicompact train --resume --out runs/blood bloodmnist.npz
    """
    run_training(ctx, config, out_dir, resume)


_NOT_TRAIN_OPTIONS = ("ctx", "config", "resume", "out_dir", "method", "option")


def run_training(
    ctx: typer.Context,
    config: Path | None,
    out_dir: Path,
    resume: bool,
    method: str = "supervised",
    options: dict[str, Any] | None = None,
) -> None:
    """The body of `train` and `ssl`: options from --config and the command line, then the method."""
    from .checks import check_train_paths

    check_train_paths(ctx.params)  # before the slow imports below
    from ..methods import run_method
    from ..training import TrainConfig
    from ..training.config import load_mapping

    given = {k: v for k, v in ctx.params.items() if k not in _NOT_TRAIN_OPTIONS}
    given = {k: (str(v) if isinstance(v, Path) else v) for k, v in given.items()}
    values = _train_options(ctx, config, given)
    values["out"] = str(out_dir)
    train_config = TrainConfig.from_dict(values)
    if resume:  # the stored run's method and options; typed options that differ are refused
        from ..training.rundir import resume_method

        from_file = set(load_mapping(config)) if config else set()
        typed = {k: getattr(train_config, k) for k in given if k in from_file or _typed(ctx, k)}
        resumed, stored = resume_method(
            out_dir, typed, method if _typed(ctx, "method") else None, options or {}
        )
        if stored is not None:
            method, train_config = resumed, TrainConfig.from_dict({**stored, "out": str(out_dir)})
    result = run_method(method, train_config, options or {}, resume=resume)
    if result.metrics:
        _print_result(result.metrics)


def _print_result(summary: dict[str, Any]) -> None:
    test = summary.get("test", {})
    if test.get("n"):
        out.print(
            f"test: macro-F1 {test['macro_f1']:.4f}  F1 {test['f1']:.4f}  accuracy {test['accuracy']:.4f}"
            f"  (n={test['n']})"
        )
    # a collapse was already printed once, in red, by the run itself (training.run.finish_run)
    out.print(f"outputs in {summary['run_dir']}")


@app.command()
def evaluate(
    model_path: Annotated[
        Path, typer.Argument(help="A run folder or a .safetensors model written by semicompact.")
    ],
    data: Annotated[Path | None, typer.Argument(help="Dataset (default: the run's own data).")] = None,
    split: Annotated[
        Path | None, typer.Option(help="Split manifest (default: the run's split.json).")
    ] = None,
    subset: Annotated[
        str, typer.Option(help="Which part of the split: test, val, labelled or unlabelled.")
    ] = "test",
    batch_size: Annotated[int, typer.Option()] = 64,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the metrics JSON here.")] = None,
) -> None:
    """Evaluate a trained model on a split of a dataset (macro-F1, F1, accuracy, per class, ROC-AUC).

    Example: semicompact evaluate runs/blood --subset test
    """
    from .checks import check_model_path

    check_model_path(model_path)  # before the slow imports below
    from ..evaluate.evaluate import evaluate_model

    metrics = evaluate_model(
        model_path, data=data, split=split, subset=subset, batch_size=batch_size, out=out_file
    )
    table = Table(title=f"{subset}: {metrics['n']} images")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col)
    for name, row in metrics.get("per_class", {}).items():
        table.add_row(
            name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"])
        )
    out.print(table)
    if metrics.get("n"):
        auc = metrics.get("roc_auc")
        out.print(
            f"macro-F1 {metrics['macro_f1']:.4f}  F1 {metrics['f1']:.4f}  accuracy {metrics['accuracy']:.4f}"
            + (f"  ROC-AUC {auc:.4f}" if auc is not None else "")
        )


@app.command()
def predict(
    model_path: Annotated[
        Path, typer.Argument(help="A run folder, a .safetensors model, or an exported .onnx model.")
    ],
    images: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="CSV with class and probabilities per image (default: runs/predictions.csv, "
            "or runs/predictions-2.csv... when that exists).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
    batch_size: Annotated[int, typer.Option()] = 64,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for an .onnx model (default: onnxruntime's).")
    ] = None,
) -> None:
    """Predict the class of images; unreadable files are reported and skipped.

    An .onnx model (from `semicompact export`) runs with onnxruntime alone: PyTorch is not imported.
    A .scdc file (from `compress --method deep_compression`) is decoded and used like any model.
    An existing --out file is never overwritten without --force.

    Example: semicompact predict runs/blood new_images/ --out predictions.csv
    """
    from .checks import check_model_path

    check_model_path(model_path)  # before the slow imports below
    out_file = _predictions_path(out_file, force)
    if model_path.suffix.lower() == ".onnx":
        from ..export.onnx_predict import predict_files_onnx

        rows, failed = predict_files_onnx(
            model_path, images, out_file, batch_size=batch_size, threads=threads
        )
    else:
        from ..evaluate.predict import predict_files

        rows, failed = predict_files(model_path, images, out_file, batch_size=batch_size)
    out.print(f"{rows} image(s) classified; predictions in {out_file}")
    for path, reason in failed:
        err.print(f"[yellow]skipped {path}: {reason}[/]")


def _predictions_path(out_file: Path | None, force: bool) -> Path:
    """The CSV to write: --out (refused if it exists, unless --force) or a fresh runs/predictions*.csv."""
    if out_file is not None:
        if out_file.exists() and not force:
            raise ConfigError(
                f"--out '{out_file}' already exists; pass --force to overwrite it or choose another --out"
            )
        return out_file
    default = Path("runs") / "predictions.csv"
    k = 2
    while default.exists():
        default = Path("runs") / f"predictions-{k}.csv"
        k += 1
    return default


@app.command("split")
def split_cmd(
    data: DataArg,
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Manifest JSON to write.")] = Path(
        "split.json"
    ),
    unlabelled: Annotated[Path | None, typer.Option(help="Folder of unlabelled images.")] = None,
    n_labelled: Annotated[int, typer.Option(help="Labelled images per class.")] = 75,
    test_fraction: Annotated[float, typer.Option()] = 0.25,
    val_fraction: Annotated[float, typer.Option()] = 0.1,
    seed: Annotated[int, typer.Option()] = 0,
    val: Annotated[
        str, typer.Option(help="Validation labels: labelled (out of the budget) or official.")
    ] = "labelled",
    val_share: Annotated[float, typer.Option(help="With --val labelled: share of the labels.")] = 0.2,
    test_seed: Annotated[
        int,
        typer.Option(
            help="Seed of the test images drawn from train (no test split in DATA): the same for "
            "every --seed, so that seeds are scored on the same images."
        ),
    ] = 0,
    force: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Make the paper's split: 75/25 train/test (when DATA has no test), N labelled per class, the rest unlabelled.

    The manifest lists every image and a SHA-256 of the source, so anyone rebuilds the same split.

    Example: semicompact split bloodmnist.npz --n-labelled 75 --seed 0 --out blood_split.json
    """
    if out_file.exists() and not force:
        raise ConfigError(
            f"--out '{out_file}' already exists (a split runs may depend on): "
            "pass --force to replace it or choose another --out"
        )
    from ..data import make_split, open_source

    if n_labelled < 1:
        raise ConfigError(f"--n-labelled must be at least 1, got {n_labelled}")
    for name, value in (("--test-fraction", test_fraction), ("--val-fraction", val_fraction)):
        if not 0 < value < 1:
            raise ConfigError(f"{name} must be between 0 and 1, got {value}")
    source = open_source(data, unlabelled=unlabelled)
    manifest = make_split(
        source,
        n_labelled=n_labelled,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
        val=val,
        val_share=val_share,
        test_seed=test_seed,
    )
    manifest.save(out_file)
    counts = manifest.counts()
    table = Table(title=f"split of {data} (seed {seed})")
    table.add_column("subset")
    for name in manifest.classes:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    for subset, per_class in counts.items():
        values = [per_class.get(c, 0) for c in manifest.classes]
        table.add_row(subset, *map(str, values), str(sum(values)))
    out.print(table)
    for note in manifest.notes:
        err.print(f"[yellow]note: {note}[/]")
    out.print(f"manifest written to {out_file}")


@app.command()
def models(
    family: Annotated[
        str | None, typer.Option(help="Only this family: manual, automatic, quantized or standard.")
    ] = None,
    details: Annotated[bool, typer.Option(help="Add each model's description.")] = False,
) -> None:
    """List the registered networks with parameters and family (any timm name works too)."""
    from ..models import list_models

    rows = list_models()
    if family:
        rows = [r for r in rows if r.family == family]
        if not rows:
            raise ConfigError(
                f"--family '{family}' matches no model; use manual, automatic, quantized or standard"
            )
    table = Table(title="semicompact models")
    for col in ("name", "family", "params (M)", "source"):
        table.add_column(col, no_wrap=True)
    table.add_column("aliases")
    if details:
        table.add_column("description")
    for r in rows:
        cells = [r.name, r.family, f"{r.params:.1f}", r.source, ", ".join(r.aliases)]
        table.add_row(*cells, *([r.description] if details else []))
    out.print(table)


@app.command()
def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the generated data and the runs.")
    ] = Path("semicompact-demo"),
    epochs: Annotated[int, typer.Option(help="Epochs per model (after 2 head-only epochs).")] = 10,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Run the whole job on the embedded synthetic cell dataset: split, student, self-trained student, export.

    No download needed; 430 s of CPU time measured (roughly 4-7 min on 2 idle cores, longer on a busy
    machine). Redirected to a file, it prints one line per epoch with an ETA.
    """
    from ..demo import run_demo

    run_demo(out_dir, epochs=epochs, seed=seed, console=out)


# Commands of the later pipeline stages live in their own modules, each with ``register(app)``.
_COMMAND_MODULES = ("ssl", "compress", "export", "profile", "deploy", "bench", "report")


def _register_commands() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as missing:
            if missing.name == f"{__package__}.{name}":
                continue
            raise
        module.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit status 2.

    Usage errors (unknown option, bad type) are reported by typer itself, also with status 2.
    """
    try:
        app(args=argv, prog_name="semicompact")
    except SemicompactError as error:
        err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted; a training run continues with --resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
