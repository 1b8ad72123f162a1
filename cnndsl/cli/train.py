"""`cnndsl train FILE`: a training run (settings: defaults < the spec's `train` lines < these flags)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cnndsl.cli.arguments import (
    at_least,
    augment,
    check_source,
    default,
    devices,
    positive_int,
    seed,
    set_pair,
    size,
)
from cnndsl.lang.errors import UsageError
from cnndsl.lang.frontend import check
from cnndsl.lang.outputs import check_output_dir


def add(commands: Any, spec: argparse.ArgumentParser, data: argparse.ArgumentParser) -> None:
    """`cnndsl train`."""
    train = commands.add_parser(
        "train", parents=[data], help="train a network on a dataset, with checkpoints and metrics",
        description="Train the network of a .cnn spec. Settings: defaults < the spec's `train` lines < "
                    "these flags. Writes a run directory with the spec, settings, metrics.jsonl, curves.png and "
                    "checkpoints; --resume RUN_DIR continues an interrupted run.")
    train.add_argument("file", nargs="?", help="the .cnn spec (optional with --resume: the run's copy)")
    train.add_argument("--set", dest="bindings", metavar="NAME=VALUE", type=set_pair, action="append",
                       default=[], help="bind or override a `let` name (repeatable)")
    _optimization_arguments(train.add_argument_group("optimization"))
    _data_arguments(train.add_argument_group("data"))
    _placement_arguments(train.add_argument_group("devices and processes"))
    _run_arguments(train.add_argument_group("the run directory and fine-tuning"))


def _optimization_arguments(group: Any) -> None:
    """Epochs, batch, optimizer, schedule, regularization; compute dtype and seed."""
    from cnndsl.lang.settings import DTYPE_NAMES, OPTIMIZERS, SCHEDULES

    group.add_argument("--epochs", type=positive_int, help=default("epochs"))
    group.add_argument("--batch-size", type=positive_int, help=default("batch_size"))
    group.add_argument("--optimizer", choices=OPTIMIZERS, help=default("optimizer"))
    group.add_argument("--lr", type=float, help="peak learning rate" + default("lr", " "))
    group.add_argument("--momentum", type=float, help="sgd momentum" + default("momentum", " "))
    group.add_argument("--nesterov", action="store_const", const=True, help="sgd with Nesterov momentum")
    group.add_argument("--schedule", choices=SCHEDULES,
                       help="learning-rate schedule; step is x0.1 at 50%% and 75%%" + default("schedule", " "))
    group.add_argument("--warmup-epochs", type=float,
                       help="warmup-cosine: epochs of linear warmup" + default("warmup_epochs", " "))
    group.add_argument("--weight-decay", type=float, help=default("weight_decay"))
    group.add_argument("--label-smoothing", type=float, help=default("label_smoothing"))
    group.add_argument("--clip", type=float, help="clip gradients to this global norm (0: off)" + default("clip", " "))
    group.add_argument("--dtype", choices=DTYPE_NAMES,
                       help="compute dtype; parameters stay float32" + default("dtype", " "))
    group.add_argument("--scan", action="store_const", const=True,
                       help="apply runs of identical repeated blocks with one jax.lax.scan, so each is traced and "
                            "compiled once (the default for deep networks: ResNet-101, ResNet-152)")
    group.add_argument("--no-scan", dest="scan", action="store_const", const=False,
                       help="unroll every repeated block (the default for shallower networks)")
    group.add_argument("--seed", type=seed, help=default("seed"))


def _data_arguments(group: Any) -> None:
    """Augmentation, how image files are read, the validation split, resizing."""
    group.add_argument("--augment", type=augment, metavar="crop,flip,resized-crop|none",
                       help="on the device: crop (random crop after padding by 1/8) and flip (horizontal); in the "
                            "input pipeline (folder:/records: data): resized-crop (torchvision's RandomResizedCrop). "
                            "The ImageNet recipe is resized-crop,flip (default none)")
    reading = group.add_mutually_exclusive_group()
    reading.add_argument("--stream", dest="stream", action="store_const", const="stream",
                         help="folder:/records: data: read and decode the images at every use, in worker processes "
                              "(default: when their decoded size exceeds the memory budget)")
    reading.add_argument("--in-memory", dest="stream", action="store_const", const="memory",
                         help="folder:/records: data: decode the images once into memory (an error if they would "
                              "not fit the budget, $CNNDSL_MEMORY_BUDGET, default a quarter of the memory)")
    group.add_argument("--workers", type=at_least(0, "workers"), metavar="N",
                       help="input pipeline worker processes (0: decode in threads of this process; default one per "
                            "core but one)")
    group.add_argument("--max-bad-images", type=at_least(0, "max-bad-images"), metavar="N",
                       help="skip at most N unreadable images (named, counted in the metrics) before stopping"
                            + default("max_bad_images", " "))
    group.add_argument("--val-fraction", type=float, metavar="F",
                       help="share of the training data held out to choose the best checkpoint when the dataset has "
                            "no validation split (0: none, the last epoch is the best)" + default("val_fraction", " "))
    group.add_argument("--resize", nargs="?", const=True, type=size, metavar="HxW",
                       help="resize the dataset's images to the spec's input, on the device (HxW, if given, must be "
                            "that input's size)")


def _placement_arguments(group: Any) -> None:
    """Data parallelism over devices, and the processes of a multi-process run."""
    group.add_argument("--devices", type=devices, default=None, metavar="all|N",
                       help="data parallelism: split each global batch (--batch-size) over all devices of every "
                            "process, or over N of this process's (default all). The same computation, with sums in "
                            "another order: parameters differ from one device's at rounding level, which Adam can "
                            "amplify to ~1e-4 in some over epochs; one layout gives the same result every time")
    group.add_argument("--shard-params", action="store_true",
                       help="split parameters and optimizer state over the devices too (FSDP-style), for networks "
                            "whose state does not fit one device; the same computation as --devices alone (its "
                            "sums may run in another order)")
    group.add_argument("--coordinator", metavar="HOST:PORT",
                       help="multi-process: the address of process 0's coordinator (jax.distributed); see "
                            "docs/distributed.md")
    group.add_argument("--num-processes", type=positive_int, metavar="P", help="multi-process: how many processes")
    group.add_argument("--process-id", type=at_least(0, "process-id"), metavar="I",
                       help="multi-process: this process's number, 0 to P-1")


def _run_arguments(group: Any) -> None:
    """Checkpoints, fine-tuning's start and frozen groups, the run directory, output."""
    group.add_argument("--checkpoint-every", type=at_least(0, "checkpoint-every"), metavar="STEPS",
                       help="also checkpoint every STEPS steps within an epoch (default: at epoch ends)")
    group.add_argument("--keep", type=positive_int, help="how many of the newest checkpoints to keep (default 3)")
    group.add_argument("--init", metavar="RUN_OR_WEIGHTS",
                       help="fine-tune: start from a run directory's best checkpoint or a weights file (safetensors; "
                            ".pth with torch); layers whose shapes differ (a new head) start fresh and are listed")
    group.add_argument("--freeze", metavar="PATH", action="append",
                       help="fine-tune: keep the parameters of a group fixed, named by its path as `cnndsl check` "
                            "shows it (e.g. '[...]*4 i=0', 'stage(64, 2, stride=1)', 'conv1'; * and ? match); "
                            "repeatable")
    group.add_argument("--out", metavar="RUN_DIR", help="the run directory (default runs/<spec name>[-N])")
    group.add_argument("--resume", metavar="RUN_DIR", help="continue the interrupted run in RUN_DIR")
    group.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")


def run(args: argparse.Namespace) -> int:
    """`cnndsl train`."""
    import dataclasses

    from cnndsl.lang.settings import Settings
    from cnndsl.training.loop import train
    from cnndsl.training.rundir import RunDir

    check_source(args.data)
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)
             if getattr(args, f.name, None) is not None}
    if isinstance(args.resize, tuple):  # --resize HxW: the size must be the spec's input (that is what it resizes to)
        flags["resize"] = True
    if args.resume:
        run_dir = Path(args.resume)
        if not RunDir(run_dir).holds_run():
            raise UsageError(f"{run_dir} is not a training run (no settings.json)", "give the run directory to resume")
        if args.out:
            raise UsageError("--resume and --out both name a run directory", "give only --resume RUN_DIR")
        spec: Any = Path(args.file) if args.file else None  # None: the run's own spec and --set bindings
    else:
        if not args.file:
            raise UsageError("no spec to train", "give a .cnn file, or --resume RUN_DIR")
        spec = Path(args.file)
        run_dir = Path(args.out) if args.out else None
        if run_dir is not None:  # fail fast, before the spec is compiled and the data loaded
            check_output_dir(run_dir, "run", inputs=[spec], make_parents=True)
    if isinstance(args.resize, tuple):
        wanted = check(spec if spec is not None else RunDir(run_dir).spec_path(), set=dict(args.bindings)).input_shape[:2]
        if args.resize != wanted:
            raise UsageError(f"--resize {args.resize[0]}x{args.resize[1]}: the spec's input is {wanted[0]}x{wanted[1]}, "
                             "and --resize resizes the images to it", f"write --resize alone, or change the spec's "
                             f"`input` to {args.resize[0]}x{args.resize[1]}xC")
    result = train(spec, run_dir=run_dir, resume=bool(args.resume), bindings=dict(args.bindings),
                   quiet=args.quiet, devices=args.devices, shard_params=args.shard_params, **flags)
    import jax

    if jax.process_index() == 0:  # with several processes, process 0 speaks for the run
        sys.stdout.write(_history_table(result))
    return 0


def _history_table(result: Any) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    epochs = result.history.epochs
    validated = epochs[-1].get("val_accuracy") is not None
    dense = "test_miou" in epochs[-1]  # segmentation: pixel accuracies and mean IoUs
    table = Table(title=f"{result.net.report.name}: {result.run_dir}", title_justify="left", show_edge=False)
    columns = ["epoch", "train loss", "train acc"] + (["val loss", "val acc"] if validated else []) + (
        ["val mIoU"] if validated and dense else []) + ["test acc"] + (["test mIoU"] if dense else []) + [
        "img/s", "seconds"]
    for name in columns:
        table.add_column(name, justify="right")
    for e in epochs:
        validation = [f"{e['val_loss']:.4f}", f"{e['val_accuracy']:.2%}"] if validated else []
        validation += [f"{e['val_miou']:.2%}"] if validated and dense else []
        test = [f"{e['test_accuracy']:.2%}"] + ([f"{e['test_miou']:.2%}"] if dense else [])
        table.add_row(str(e["epoch"]), f"{e['train_loss']:.4f}", f"{e['train_accuracy']:.2%}", *validation,
                      *test, f"{e['images_per_s']:,.0f}", f"{e['seconds']:.1f}")
    out = StringIO()
    Console(file=out, width=110, highlight=False).print(table)
    best = result.history.best
    measure, key = ("mean IoU", "miou") if dense else ("accuracy", "accuracy")
    chosen = (f"best validation {measure} {best[f'val_{key}']:.2%} (epoch {best['epoch']})" if validated else
              f"no validation split: the last epoch ({best['epoch']}) is the best checkpoint")
    out.write(f"{chosen}; its test {measure} {best[f'test_{key}']:.2%}" +
              (f" (pixel accuracy {best['test_accuracy']:.2%})" if dense else "") + f"; run: {result.run_dir}\n")
    return out.getvalue()
