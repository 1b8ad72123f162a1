"""The `cnndsl` command: thin argument parsing around the library functions.

Exit status: 0 success, 1 a problem in the spec (rendered diagnostics), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cnndsl import __version__
from cnndsl.api import check
from cnndsl.errors import CnnError, UsageError
from cnndsl.report import Report


def _set_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _depth(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("depth must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="cnndsl", description="Check and compile convolutional-network specs.")
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
    chk.add_argument("--width", type=int, default=None, help="table width in characters")
    comp = commands.add_parser("compile", parents=[spec], help="check a spec and write an artifact made from it",
                               description="Check a .cnn spec, print its summary, and write the chosen artifact.")
    comp.add_argument("--emit", choices=sorted(EMITTERS), required=True,
                      help="json: the IR with shapes and costs (schema cnndsl.ir/1); "
                           "python: a standalone Flax NNX module file that does not import cnndsl; "
                           "export: a directory with a jax.export inference program (CPU, CUDA, TPU) and its "
                           "parameters, run by `cnndsl run`; svg: an architecture diagram")
    comp.add_argument("-o", "--output", required=True, metavar="PATH",
                      help="where to write the artifact (a directory for export)")
    comp.add_argument("--seed", type=int, default=0, help="export: initialise the parameters from this seed")
    comp.add_argument("--depth", type=_depth, default=None,
                      help="svg: draw groups (blocks, repetitions) only this many levels deep, fold the rest")
    comp.add_argument("--quiet", action="store_true", help="do not print the summary table")
    run = commands.add_parser("run", help="run an exported network on images saved as .npy",
                              description="Load an artifact written by `cnndsl compile --emit export` and print "
                                          "the top classes of each image (an .npy array HxWxC, or BxHxWxC).")
    run.add_argument("artifact", help="the export directory")
    run.add_argument("images", nargs="+", metavar="IMAGE.npy", help="images as numpy arrays")
    run.add_argument("--top", type=int, default=5, help="how many classes to show per image (default 5)")
    run.add_argument("--json", action="store_true", help="print one JSON object per image")
    return parser


def _emit_json(report: Report, path: Path, args: argparse.Namespace) -> None:
    from cnndsl.emit.ir_json import to_json

    path.write_text(json.dumps(to_json(report), indent=1) + "\n", encoding="utf-8")


def _emit_python(report: Report, path: Path, args: argparse.Namespace) -> None:
    from cnndsl.emit.python_source import to_python

    path.write_text(to_python(report, str(report.graph.source.path)), encoding="utf-8")


def _emit_export(report: Report, path: Path, args: argparse.Namespace) -> None:
    from cnndsl.compiler import CompiledNetwork
    from cnndsl.export import export

    net = CompiledNetwork(report)
    meta = export(net, net.init(args.seed), path)
    print(f"lowered for {', '.join(meta['platforms'])}; parameters from seed {args.seed} "
          f"(export trained ones from Python: cnndsl.export.export(net, model, DIR))", file=sys.stderr)
    for reason in meta["platforms_left_out"]:
        print(f"left out {reason}", file=sys.stderr)


def _emit_svg(report: Report, path: Path, args: argparse.Namespace) -> None:
    from cnndsl.emit.diagram import to_svg

    path.write_text(to_svg(report, args.depth), encoding="utf-8")


#: `--emit` targets: each writes one artifact of a checked report to a path.
EMITTERS = {"json": _emit_json, "python": _emit_python, "export": _emit_export, "svg": _emit_svg}
#: Targets that write a directory rather than a file.
DIRECTORY_TARGETS = {"export"}


def run_compile(args: argparse.Namespace) -> int:
    """`cnndsl compile`."""
    report = check(Path(args.file), set=dict(args.bindings))
    output = Path(args.output)
    if args.emit in DIRECTORY_TARGETS:
        if output.exists() and not output.is_dir():
            raise UsageError(f"{output} is a file", f"--emit {args.emit} writes a directory; give its name with -o")
    elif output.is_dir():
        raise UsageError(f"{output} is a directory", "give the artifact's file name with -o")
    if not output.parent.exists():
        raise UsageError(f"{output.parent} does not exist", "create the directory first")
    if not args.quiet:
        sys.stdout.write(report.render_table())
    EMITTERS[args.emit](report, output, args)
    print(f"wrote {output} ({args.emit})", file=sys.stderr)
    return 0


def run_run(args: argparse.Namespace) -> int:
    """`cnndsl run`: an exported network on .npy images."""
    import numpy as np

    from cnndsl.export import ExportError, load_exported

    if args.top < 1:
        raise UsageError("--top must be at least 1")
    try:
        network = load_exported(args.artifact)
    except ExportError as err:
        print(f"cnndsl: {err}", file=sys.stderr)
        return 1
    for image in args.images:
        try:
            x = np.load(image, allow_pickle=False)
        except (OSError, ValueError) as err:
            print(f"cnndsl: {image}: not a readable .npy array ({err})", file=sys.stderr)
            return 1
        batch = x[None] if x.ndim == len(network.input_shape) else x
        try:
            probs = network.probabilities(batch)
        except ExportError as err:
            print(f"cnndsl: {image}: {err}", file=sys.stderr)
            return 1
        for index, row in enumerate(probs):
            name = image if len(probs) == 1 else f"{image}[{index}]"
            top = np.argsort(-row, kind="stable")[: args.top]
            if args.json:
                print(json.dumps({"image": name, "top": [{"class": int(c), "probability": float(row[c])}
                                                         for c in top]}))
            else:
                print(name + ":  " + "  ".join(f"{int(c)} {row[c]:.1%}" for c in top))
    return 0


def run_check(args: argparse.Namespace) -> int:
    """`cnndsl check`."""
    report = check(Path(args.file), set=dict(args.bindings))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        sys.stdout.write(report.render_table(args.depth, args.width))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return {"check": run_check, "compile": run_compile, "run": run_run}[args.command](args)
    except UsageError as err:
        print(f"cnndsl: {err.render()}", file=sys.stderr)
        return 2
    except CnnError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cnndsl: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug in cnndsl, never the user's fault: say so briefly
        if os.environ.get("CNNDSL_DEBUG"):
            raise
        print(f"cnndsl: internal error: {type(err).__name__}: {err}\n"
              "  = help: this is a bug in cnndsl; rerun with CNNDSL_DEBUG=1 for the traceback and report it",
              file=sys.stderr)
        return 70
