"""The `cnndsl` command: thin argument parsing around the library functions.

Exit status: 0 success, 1 a problem in the spec (rendered diagnostics), 2 a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnndsl import __version__
from cnndsl.api import check
from cnndsl.errors import CnnError, UsageError
from cnndsl.outputs import check_output_dir, check_output_file, write_atomic
from cnndsl.report import Report


def _set_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _at_least(minimum: int, what: str) -> Any:
    """An argparse type: an integer of at least `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be at least {minimum}, got {value}")
        return value
    return parse


_depth = _at_least(1, "depth")
_positive_int = _at_least(1, "the value")
#: The narrowest summary table: the numbers need about 40 columns, the layer names a few more.
MIN_TABLE_WIDTH = 50


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="cnndsl", description="Check, compile, train and run convolutional-network specs.")
    parser.add_argument("--version", action="version", version=f"cnndsl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    spec = argparse.ArgumentParser(add_help=False)  # the arguments every command that reads a spec takes
    spec.add_argument("file", help="the .cnn spec")
    spec.add_argument("--set", dest="bindings", metavar="NAME=VALUE", type=_set_pair, action="append",
                      default=[], help="bind or override a `let` name (repeatable), e.g. --set N=3")

    chk = commands.add_parser("check", parents=[spec],
                              help="check a spec: shapes, parameters and MACs of every layer",
                              description="Check a .cnn spec and print one row per layer with its output "
                                          "shape, parameters and MACs, then the totals.")
    chk.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    chk.add_argument("--depth", type=_depth, default=None,
                     help="show groups (blocks, repetitions, branches) only this many levels deep")
    chk.add_argument("--width", type=_at_least(MIN_TABLE_WIDTH, "width"), default=None,
                     help=f"table width in characters (at least {MIN_TABLE_WIDTH}; default 110)")
    comp = commands.add_parser("compile", parents=[spec], help="check a spec and write an artifact made from it",
                               description="Check a .cnn spec, print its summary, and write the chosen artifact.")
    comp.add_argument("--emit", choices=sorted(EMITTERS), required=True,
                      help="json: the IR with shapes and costs (schema cnndsl.ir/1); "
                           "python: a standalone Flax NNX module file that does not import cnndsl; "
                           "export: a directory with a jax.export inference program (CPU, CUDA, TPU) and its "
                           "parameters, run by `cnndsl run`; onnx: an ONNX model (opset 18, NHWC input, checked; "
                           "the `onnx` extra); svg: an architecture diagram")
    comp.add_argument("-o", "--output", required=True, metavar="PATH",
                      help="where to write the artifact (a directory for export)")
    comp.add_argument("--seed", type=int, default=0, help="export, onnx: initialise the parameters from this seed")
    comp.add_argument("--run", metavar="RUN_DIR", help="export, onnx: the trained parameters of this run (its best "
                                                       "checkpoint) and its input normalization")
    comp.add_argument("--depth", type=_depth, default=None,
                      help="svg: draw groups (blocks, repetitions) only this many levels deep, fold the rest")
    comp.add_argument("--quiet", action="store_true", help="do not print the summary table")
    comp.add_argument("--force", action="store_true",
                      help="replace an earlier artifact of the same kind at -o (a file or folder cnndsl did not "
                           "write is never replaced)")
    run = commands.add_parser("run", help="run an exported network on PNG/JPEG images or .npy arrays",
                              description="Load an artifact written by `cnndsl compile --emit export` and print "
                                          "the top classes of each image: a PNG or JPEG file (its 0..255 pixels "
                                          "converted to the units the run's dataset stores; another size is "
                                          "resized as the run's evaluation resizes: bilinear, or resized and "
                                          "centre-cropped for runs trained on image files), or an .npy array "
                                          "HxWxC or BxHxWxC in the dataset's units.")
    run.add_argument("artifact", help="the export directory")
    run.add_argument("images", nargs="+", metavar="IMAGE", help="PNG/JPEG files or .npy arrays")
    run.add_argument("--top", type=_positive_int, default=5, help="how many classes to show per image (default 5)")
    run.add_argument("--json", action="store_true", help="print one JSON object per image")
    _add_training_commands(commands, spec)
    from cnndsl.search.commands import add_family_command, add_sweep_command

    add_family_command(commands, spec)
    add_sweep_command(commands, _data_arguments())
    from cnndsl.data.commands import add_data_command

    add_data_command(commands)
    from cnndsl.interop.commands import add_weights_command

    add_weights_command(commands, _set_pair)
    parser.subcommands = commands.choices  # type: ignore[attr-defined]  # for errors with the subcommand's usage
    return parser


def _default(name: str, prefix: str = "") -> str:
    """`(default X)` for a training setting: the value a spec without a `train` line gets."""
    from cnndsl.settings import Settings

    value = next(f.default for f in dataclasses.fields(Settings) if f.name == name)
    return f"{prefix}(default {str(value).lower() if isinstance(value, bool) else value}, or the spec's `train` line)"


def _devices(text: str) -> str | int:
    """`all` or a positive number of devices."""
    if text == "all":
        return text
    return _at_least(1, "--devices")(text)


def _size(text: str) -> tuple[int, int]:
    """`32` or `32x32` as (height, width)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected a size like 32 or 32x32, got {text!r}")
    return (int(parts[0]), int(parts[-1]))


def _augment(text: str) -> tuple[str, ...]:
    from cnndsl.settings import AUGMENTATIONS

    parts = () if text in ("", "none") else tuple(part.strip() for part in text.split(","))
    unknown = [p for p in parts if p not in AUGMENTATIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown augmentation {unknown[0]!r}; choose from "
                                         f"{', '.join(AUGMENTATIONS)} (comma-separated) or none")
    return parts


def _data_arguments() -> argparse.ArgumentParser:
    """--data and --data-dir, for every command that reads a dataset."""
    from cnndsl.data import SOURCES

    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data", metavar="SOURCE", default=None,
                      help=f"dataset: {', '.join(SOURCES)} (default: digits, or the run's)")
    data.add_argument("--data-dir", metavar="DIR", default=None,
                      help="where the official dataset files are (else the cache, downloading when absent)")
    return data


def _add_training_commands(commands: Any, spec: argparse.ArgumentParser) -> None:
    from cnndsl.settings import DTYPE_NAMES, OPTIMIZERS, SCHEDULES

    data = _data_arguments()
    train = commands.add_parser(
        "train", parents=[data], help="train a network on a dataset, with checkpoints and metrics",
        description="Train the network of a .cnn spec. Settings: defaults < the spec's `train` lines < "
                    "these flags. Writes a run directory with the spec, settings, metrics.jsonl, curves.png and "
                    "checkpoints; --resume RUN_DIR continues an interrupted run.")
    train.add_argument("file", nargs="?", help="the .cnn spec (optional with --resume: the run's copy)")
    train.add_argument("--set", dest="bindings", metavar="NAME=VALUE", type=_set_pair, action="append",
                       default=[], help="bind or override a `let` name (repeatable)")
    train.add_argument("--epochs", type=_positive_int, help=_default("epochs"))
    train.add_argument("--batch-size", type=_positive_int, help=_default("batch_size"))
    train.add_argument("--optimizer", choices=OPTIMIZERS, help=_default("optimizer"))
    train.add_argument("--lr", type=float, help="peak learning rate" + _default("lr", " "))
    train.add_argument("--momentum", type=float, help="sgd momentum" + _default("momentum", " "))
    train.add_argument("--nesterov", action="store_const", const=True, help="sgd with Nesterov momentum")
    train.add_argument("--schedule", choices=SCHEDULES,
                       help="learning-rate schedule; step is x0.1 at 50%% and 75%%" + _default("schedule", " "))
    train.add_argument("--warmup-epochs", type=float,
                       help="warmup-cosine: epochs of linear warmup" + _default("warmup_epochs", " "))
    train.add_argument("--weight-decay", type=float, help=_default("weight_decay"))
    train.add_argument("--label-smoothing", type=float, help=_default("label_smoothing"))
    train.add_argument("--clip", type=float, help="clip gradients to this global norm (0: off)" + _default("clip", " "))
    train.add_argument("--augment", type=_augment, metavar="crop,flip,resized-crop|none",
                       help="on the device: crop (random crop after padding by 1/8) and flip (horizontal); in the "
                            "input pipeline (folder:/records: data): resized-crop (torchvision's RandomResizedCrop). "
                            "The ImageNet recipe is resized-crop,flip (default none)")
    reading = train.add_mutually_exclusive_group()
    reading.add_argument("--stream", dest="stream", action="store_const", const="stream",
                         help="folder:/records: data: read and decode the images at every use, in worker processes "
                              "(default: when their decoded size exceeds the memory budget)")
    reading.add_argument("--in-memory", dest="stream", action="store_const", const="memory",
                         help="folder:/records: data: decode the images once into memory (an error if they would "
                              "not fit the budget, $CNNDSL_MEMORY_BUDGET, default a quarter of the memory)")
    train.add_argument("--workers", type=_at_least(0, "workers"), metavar="N",
                       help="input pipeline worker processes (0: decode in threads of this process; default one per "
                            "core but one)")
    train.add_argument("--max-bad-images", type=_at_least(0, "max-bad-images"), metavar="N",
                       help="skip at most N unreadable images (named, counted in the metrics) before stopping"
                            + _default("max_bad_images", " "))
    train.add_argument("--dtype", choices=DTYPE_NAMES,
                       help="compute dtype; parameters stay float32" + _default("dtype", " "))
    train.add_argument("--scan", action="store_const", const=True,
                       help="apply runs of identical repeated blocks with one jax.lax.scan: deep networks compile "
                            "much faster, but on CPU the training step is far slower (for GPU and TPU)")
    train.add_argument("--seed", type=int, help=_default("seed"))
    train.add_argument("--devices", type=_devices, default=None, metavar="all|N",
                       help="data parallelism: split each global batch (--batch-size) over all devices of every "
                            "process, or over N of this process's (default all). The same computation, with sums in "
                            "another order: parameters differ from one device's at rounding level, which Adam can "
                            "amplify to ~1e-4 in some over epochs; one layout gives the same result every time")
    train.add_argument("--shard-params", action="store_true",
                       help="split parameters and optimizer state over the devices too (FSDP-style), for networks "
                            "whose state does not fit one device; the same computation as --devices alone (its "
                            "sums may run in another order)")
    train.add_argument("--coordinator", metavar="HOST:PORT",
                       help="multi-process: the address of process 0's coordinator (jax.distributed); see "
                            "docs/distributed.md")
    train.add_argument("--num-processes", type=_positive_int, metavar="P", help="multi-process: how many processes")
    train.add_argument("--process-id", type=_at_least(0, "process-id"), metavar="I",
                       help="multi-process: this process's number, 0 to P-1")
    train.add_argument("--val-fraction", type=float, metavar="F",
                       help="share of the training data held out to choose the best checkpoint when the dataset has "
                            "no validation split (0: none, the last epoch is the best)" + _default("val_fraction", " "))
    train.add_argument("--resize", nargs="?", const=True, type=_size, metavar="HxW",
                       help="resize the dataset's images to the spec's input, on the device (HxW, if given, must be "
                            "that input's size)")
    train.add_argument("--checkpoint-every", type=_at_least(0, "checkpoint-every"), metavar="STEPS",
                       help="also checkpoint every STEPS steps within an epoch (default: at epoch ends)")
    train.add_argument("--keep", type=_positive_int, help="how many of the newest checkpoints to keep (default 3)")
    train.add_argument("--init", metavar="RUN_OR_WEIGHTS",
                       help="fine-tune: start from a run directory's best checkpoint or a weights file (safetensors; "
                            ".pth with torch); layers whose shapes differ (a new head) start fresh and are listed")
    train.add_argument("--freeze", metavar="PATH", action="append",
                       help="fine-tune: keep the parameters of a group fixed, named by its path as `cnndsl check` "
                            "shows it (e.g. '[...]*4 i=0', 'stage(64, 2, stride=1)', 'conv1'; * and ? match); "
                            "repeatable")
    train.add_argument("--out", metavar="RUN_DIR", help="the run directory (default runs/<spec name>[-N])")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the interrupted run in RUN_DIR")
    train.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    evaluate = commands.add_parser("eval", parents=[data], help="accuracy and loss of a trained run",
                                   description="Evaluate a trained run's checkpoint on its dataset's test and "
                                               "validation splits (or another dataset's with --data).")
    evaluate.add_argument("file", nargs="?", help="the .cnn spec (default: the run's own, with its --set bindings)")
    evaluate.add_argument("--run", required=True, metavar="RUN_DIR")
    evaluate.add_argument("--checkpoint", choices=("best", "last"), default="best")
    evaluate.add_argument("--json", action="store_true", help="print {accuracy, loss, n, ...} as JSON")
    predict = commands.add_parser("predict", help="top classes of images with a trained run",
                                  description="Classify images (PNG, JPEG or .npy) with a trained run. Image "
                                              "files (0..255) are brought to the units the run's dataset stores; "
                                              ".npy arrays are taken in those units. A first argument ending in "
                                              ".cnn is the spec (default: the run's own).")
    predict.add_argument("first", metavar="FILE.cnn|IMAGE", help="the spec (default: the run's own) or an image")
    predict.add_argument("images", nargs="*", metavar="IMAGE", help="images: PNG, JPEG or .npy")
    predict.add_argument("--run", required=True, metavar="RUN_DIR")
    predict.add_argument("--checkpoint", choices=("best", "last"), default="best")
    predict.add_argument("--top", type=_positive_int, default=3)
    predict.add_argument("--json", action="store_true")


def _emit_json(report: Report, path: Path, args: argparse.Namespace) -> None:
    from cnndsl.emit.ir_json import to_json

    write_atomic(path, json.dumps(to_json(report), indent=1) + "\n")


def _emit_python(report: Report, path: Path, args: argparse.Namespace) -> None:
    from cnndsl.emit.python_source import to_python

    write_atomic(path, to_python(report, str(report.graph.source.path)))


def _emit_export(report: Report, path: Path, args: argparse.Namespace) -> None:
    from cnndsl.compiler import CompiledNetwork
    from cnndsl.export import export, export_run

    if args.run:
        meta = export_run(Path(args.file), args.run, path, bindings=dict(args.bindings), force=args.force)
        origin = f"trained parameters of {args.run} (step {meta['step']}); takes raw pixels as its dataset stores them"
    else:
        net = CompiledNetwork(report)
        meta = export(net, net.init(args.seed), path, force=args.force)
        origin = f"parameters from seed {args.seed} (export a trained run with --run RUN_DIR)"
    print(f"lowered for {', '.join(meta['platforms'])}; {origin}", file=sys.stderr)
    for reason in meta["platforms_left_out"]:
        print(f"left out {reason}", file=sys.stderr)


def _emit_onnx(report: Report, path: Path, args: argparse.Namespace) -> None:
    from cnndsl.emit.onnx_model import onnx_of_run, onnx_of_seed

    if args.run:
        model = onnx_of_run(Path(args.file), args.run, dict(args.bindings))
        origin = f"trained parameters of {args.run}; takes raw pixels (NHWC) as its dataset stores them"
    else:
        model = onnx_of_seed(report, args.seed)
        origin = f"parameters from seed {args.seed} (a trained run with --run RUN_DIR); input NHWC"
    write_atomic(path, model.SerializeToString())
    print(f"ONNX opset {model.opset_import[0].version}, IR version {model.ir_version}; {origin}", file=sys.stderr)


def _emit_svg(report: Report, path: Path, args: argparse.Namespace) -> None:
    from cnndsl.emit.diagram import to_svg

    write_atomic(path, to_svg(report, args.depth))


#: `--emit` targets: each writes one artifact of a checked report to a path.
EMITTERS = {"json": _emit_json, "python": _emit_python, "export": _emit_export, "svg": _emit_svg, "onnx": _emit_onnx}
#: Targets that write a directory rather than a file.
DIRECTORY_TARGETS = {"export"}


def run_compile(args: argparse.Namespace) -> int:
    """`cnndsl compile`."""
    report = check(Path(args.file), set=dict(args.bindings))
    inputs = [args.file] + ([args.run] if args.run else [])
    if args.emit in DIRECTORY_TARGETS:
        output = check_output_dir(args.output, args.emit, args.force, inputs)
    else:
        output = check_output_file(args.output, args.emit, args.force, inputs)
    if not args.quiet:
        sys.stdout.write(report.render_table())
    EMITTERS[args.emit](report, output, args)
    print(f"wrote {output} ({args.emit})", file=sys.stderr)
    return 0


def _load_npy(path: str | Path) -> Any:
    """An .npy array, never unpickled; a DataError naming the file otherwise."""
    import numpy as np

    from cnndsl.data import DataError, regular_file

    try:
        return np.load(regular_file(Path(path)), allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npy array ({err})") from None


def _image_file_input(path: str, network: Any) -> Any:
    """A PNG/JPEG file as the exported network's input, as `predict` prepares it for the run: channels
    converted, 0..255 pixels in the units of the run's data (an export without a run's preprocessing takes
    them as they are), another size resized as the run's evaluation does (bilinear, or the pipeline's
    resize and centre crop)."""
    import numpy as np

    from cnndsl.data import read_image
    from cnndsl.data.images import stored_units, transformed, with_channels

    height, width, channels = network.input_shape
    pixels = with_channels(read_image(Path(path)).astype(np.float32), channels)
    crop = network.meta.get("image_transform") == "resize-crop"
    if crop and pixels.shape[:2] != (height, width):
        pixels = transformed(pixels.clip(0, 255).astype(np.uint8), path, (height, width), channels)
    pixels = stored_units(pixels, (network.meta.get("preprocess") or {}).get("scale", 255.0))
    if pixels.shape[:2] != (height, width):  # as training's Preprocess resizes, on the stored units
        import jax

        pixels = np.asarray(jax.image.resize(pixels[None], (1, height, width, channels), "bilinear")[0])
    return pixels


def _print_top(name: str, probabilities: Any, classes: Sequence[str], top: int, as_json: bool) -> None:
    """One image's `top` most likely classes, as a line of text or one JSON object."""
    import numpy as np

    best = np.argsort(-probabilities, kind="stable")[:top]
    labels = [classes[c] if c < len(classes) else str(int(c)) for c in best]
    if as_json:
        print(json.dumps({"image": name, "top": [{"class": int(c), "label": label,
                                                  "probability": float(probabilities[c])}
                                                 for c, label in zip(best, labels)]}))
    else:
        print(f"{name}:  " + "  ".join(f"{label} {probabilities[c]:.1%}" for c, label in zip(best, labels)))


def run_run(args: argparse.Namespace) -> int:
    """`cnndsl run`: an exported network on image files and .npy arrays."""
    import numpy as np

    from cnndsl.export import ExportError, load_exported

    network = load_exported(args.artifact)
    classes = network.meta.get("classes") or []
    for image in args.images:
        x = _load_npy(image) if Path(image).suffix.lower() == ".npy" else _image_file_input(image, network)
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise ExportError(f"{image}: the images must be numbers, got an array of {x.dtype}")
        batch = x[None] if x.ndim == len(network.input_shape) else x
        try:
            probs = network.probabilities(batch)
        except ExportError as err:
            raise ExportError(f"{image}: {err}") from None
        for index, row in enumerate(probs):
            _print_top(image if len(probs) == 1 else f"{image}[{index}]", row, classes, args.top, args.json)
    return 0


def _check_source(source: str | None) -> None:
    from cnndsl.data import SOURCES

    if source is None:
        return
    kind, colon, rest = source.partition(":")
    if source in SOURCES or (colon and kind in ("npz", "folder", "records") and rest) or kind == "synthetic":
        if kind == "synthetic" and rest and not rest.isdigit():
            raise UsageError(f"--data {source}: synthetic:N takes a whole number of images", "e.g. synthetic:10000")
        return
    from cnndsl.errors import closest

    guess = closest(source, [s.split(":")[0] for s in SOURCES])
    raise UsageError(f"unknown data source {source!r}",
                     (f"did you mean {guess!r}? " if guess else "") + f"sources: {', '.join(SOURCES)}")


def run_train(args: argparse.Namespace) -> int:
    """`cnndsl train`."""
    import dataclasses

    from cnndsl.rundir import RunDir
    from cnndsl.settings import Settings
    from cnndsl.training import train

    _check_source(args.data)
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
    table = Table(title=f"{result.net.report.name}: {result.run_dir}", title_justify="left", show_edge=False)
    columns = ["epoch", "train loss", "train acc"] + (["val loss", "val acc"] if validated else []) + [
        "test acc", "img/s", "seconds"]
    for name in columns:
        table.add_column(name, justify="right")
    for e in epochs:
        validation = [f"{e['val_loss']:.4f}", f"{e['val_accuracy']:.2%}"] if validated else []
        table.add_row(str(e["epoch"]), f"{e['train_loss']:.4f}", f"{e['train_accuracy']:.2%}", *validation,
                      f"{e['test_accuracy']:.2%}", f"{e['images_per_s']:,.0f}", f"{e['seconds']:.1f}")
    out = StringIO()
    Console(file=out, width=110, highlight=False).print(table)
    best = result.history.best
    chosen = (f"best validation accuracy {best['val_accuracy']:.2%} (epoch {best['epoch']})" if validated else
              f"no validation split: the last epoch ({best['epoch']}) is the best checkpoint")
    out.write(f"{chosen}; its test accuracy {best['test_accuracy']:.2%}; run: {result.run_dir}\n")
    return out.getvalue()


def run_eval(args: argparse.Namespace) -> int:
    """`cnndsl eval`."""
    from cnndsl.training import evaluate

    _check_source(args.data)
    result = evaluate(Path(args.file) if args.file else None, args.run, args.data, args.data_dir, args.checkpoint)
    if args.json:
        print(json.dumps(result))
        return 0
    splits = [("test", "")] + ([("validation", "val_")] if result["val_n"] else [])
    print(f"{result['data']}, {args.checkpoint} checkpoint (step {result['step']}): " + "; ".join(
        f"{name} accuracy {result[prefix + 'accuracy']:.2%}  loss {result[prefix + 'loss']:.4f}  "
        f"n {result[prefix + 'n']:,}" for name, prefix in splits))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """`cnndsl predict`: PNG/JPEG images in 0..255 are rescaled to the dataset's units; .npy arrays are
    taken as they are (the units the run's dataset stores)."""
    import numpy as np

    from cnndsl.data import DataError, check_finite, read_image
    from cnndsl.training import load_run

    given = [args.first, *args.images]
    spec, names = (Path(given[0]), given[1:]) if given[0].endswith(".cnn") else (None, given)
    if not names:
        raise UsageError("no images to classify", "give PNG, JPEG or .npy files after the options")
    loaded = load_run(spec, args.run, args.checkpoint)  # a clear error before reading any image
    images = []
    for name in names:
        path = Path(name)
        if path.suffix.lower() == ".npy":
            array = _load_npy(path)
            array = array[..., None] if array.ndim == 2 else array
            numeric = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or not numeric or min(array.shape) < 1:
                raise DataError(f"{path}: expected one image, an array H x W or H x W x C (C = 1 or 3) of "
                                f"numbers, got shape {'x'.join(map(str, array.shape))} of {array.dtype}")
            check_finite(array, str(path))
            images.append(array)
        else:
            images.append(loaded.trainer.preprocess.stored_units(read_image(path)))
    classes = loaded.settings.get("classes") or []
    for name, row in zip(names, loaded.probabilities(images)):
        _print_top(name, row, classes, args.top, args.json)
    return 0


def run_check(args: argparse.Namespace) -> int:
    """`cnndsl check`. With --json, problems are JSON on stdout too ({"errors": [...]}), for editors and scripts."""
    try:
        report = check(Path(args.file), set=dict(args.bindings))
    except CnnError as err:
        if not args.json:
            raise
        print(json.dumps({"errors": [d.to_dict() for d in err.diagnostics]}, indent=2))
        return 2 if isinstance(err, UsageError) else 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        sys.stdout.write(report.render_table(args.depth, args.width))
    return 0


def _runtime_errors() -> tuple[type[Exception], ...]:
    """Errors with a message for the user: bad data, a run that cannot start or had to stop."""
    from cnndsl.data import DataError
    from cnndsl.data.pipeline import PipelineError
    from cnndsl.data.records import RecordsError
    from cnndsl.emit.onnx_model import OnnxError
    from cnndsl.export import ExportError
    from cnndsl.interop.weights import WeightsError
    from cnndsl.search.study import SweepError
    from cnndsl.settings import Interrupted, TrainingError

    # DistributedError is a TrainingError
    return (DataError, PipelineError, RecordsError, ExportError, OnnxError, WeightsError, TrainingError, Interrupted,
            SweepError)


def _use_compilation_cache() -> None:
    """Keep XLA's compiled programs between runs (jax's persistent cache), so a second `cnndsl train`
    or `eval` of the same network starts without recompiling: $JAX_COMPILATION_CACHE_DIR if set, else
    the cnndsl cache. The library leaves jax's configuration to its caller; the command line sets it."""
    import jax

    from cnndsl.data import cache_dir

    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def _note_interrupts() -> None:
    """Ctrl-C outside the training loop ends the command at once: exit status 130, "interrupted". Raising
    KeyboardInterrupt instead is not safe while JAX starts: it can land in a Python callback called from C++
    (the process aborts with "terminate called after throwing ...") or in a garbage-collection callback
    (printed as "Exception ignored", then swallowed). Nothing is lost by stopping there: files are written
    atomically, and a sweep's interrupted trial is marked failed when the same command resumes. The training
    loop installs its own handler around its steps (stop after the step, save a checkpoint)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    from cnndsl.settings import INTERRUPTS

    def handler(signum: int, frame: Any) -> None:
        INTERRUPTS.append(signum)
        print("\ncnndsl: interrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)

    default_hook = sys.unraisablehook

    def quiet_about_interrupts(unraisable: Any) -> None:
        # A KeyboardInterrupt (a second Ctrl-C in training) raised inside a garbage-collection callback is
        # swallowed and printed as "Exception ignored ... Traceback"; INTERRUPTS has it for the next safe point.
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            default_hook(unraisable)

    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = quiet_about_interrupts


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "predict":  # argparse leaves images after an option (`FILE --run R a.png`) unmatched
        args.images += [e for e in extra if not e.startswith("-")]
        extra = [e for e in extra if e.startswith("-")]
    if extra:  # reported by the subcommand, with its own usage line, not the top-level one
        parser.subcommands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in ("train", "eval", "predict", "sweep"):
        _note_interrupts()
    try:
        if args.command in ("train", "eval", "predict", "sweep"):
            _use_compilation_cache()  # imports jax: inside the try, where a Ctrl-C reads as an interruption
        if args.command == "train":  # before any JAX array exists
            from cnndsl.distributed import start_processes

            start_processes(args.coordinator, args.num_processes, args.process_id)
        from cnndsl.data.commands import run_data
        from cnndsl.interop.commands import run_weights
        from cnndsl.search.commands import run_family, run_sweep

        return {"data": run_data, "weights": run_weights, "check": run_check, "compile": run_compile, "run": run_run, "train": run_train, "eval": run_eval,
                "predict": run_predict, "family": run_family, "sweep": run_sweep}[args.command](args)
    except UsageError as err:
        print(f"cnndsl: {err.render()}", file=sys.stderr)
        return 2
    except CnnError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except _runtime_errors() as err:
        from cnndsl.settings import Interrupted

        print(f"cnndsl: {err}", file=sys.stderr)
        return 130 if isinstance(err, Interrupted) else 1
    except KeyboardInterrupt:
        print("cnndsl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cnndsl check ... | head`: the reader stopped reading, which is not an error to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 1
    except Exception as err:  # a bug in cnndsl, never the user's fault: say so briefly
        from cnndsl.settings import INTERRUPTS

        if INTERRUPTS:  # the exception is what Ctrl-C left behind (an interrupted import, say)
            print("cnndsl: interrupted", file=sys.stderr)
            return 130
        if os.environ.get("CNNDSL_DEBUG"):
            raise
        print(f"cnndsl: internal error: {type(err).__name__}: {err}\n"
              "  = help: this is a bug in cnndsl; rerun with CNNDSL_DEBUG=1 for the traceback and report it",
              file=sys.stderr)
        return 70


def run() -> None:
    """The `cnndsl` executable: `main`, then exit with its status, without the interpreter's teardown.

    Everything cnndsl writes is on disk when `main` returns (checkpoints are waited for, files are written
    atomically), so the teardown only frees memory: after a training run it took 0.5-0.7 s here (XLA's client
    and thread pools, the objects of the traced programs), a sixth of the main job's warm time. The exit
    handlers still run (jax's, logging's, temporary files'), after non-daemon threads finish. After an
    interruption they are skipped too: a Ctrl-C that landed while XLA was compiling leaves XLA's threads in a
    state its teardown crashes on (a segmentation fault after cnndsl's message)."""
    try:
        status = main()
    except KeyboardInterrupt:  # before main's own handling began (building the parser)
        print("cnndsl: interrupted", file=sys.stderr)
        status = 130
    from cnndsl.settings import INTERRUPTS

    if status == 0 and INTERRUPTS:  # a Ctrl-C that Python swallowed after the last safe point to stop at
        print("cnndsl: interrupted (after the work was finished and saved)", file=sys.stderr)
        status = 130
    if status != 130:
        import atexit
        import threading

        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (`cnndsl check x.cnn | head`): nothing more can be said
        pass
    os._exit(status)
