"""`cnndsl compile FILE --emit KIND -o PATH`: an artifact made from a checked spec (the writers are
`cnndsl.emit.EMITTERS`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cnndsl.cli.arguments import depth, seed
from cnndsl.emit import DIRECTORY_TARGETS, EMITTERS, EmitOptions, emit
from cnndsl.lang.frontend import check
from cnndsl.lang.outputs import check_output_dir, check_output_file


def add(commands: Any, spec: argparse.ArgumentParser, data: argparse.ArgumentParser) -> None:
    """`cnndsl compile`."""
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
    comp.add_argument("--seed", type=seed, default=0, help="export, onnx: initialise the parameters from this seed")
    comp.add_argument("--run", metavar="RUN_DIR", help="export, onnx: the trained parameters of this run (its best "
                                                       "checkpoint) and its input normalization")
    comp.add_argument("--depth", type=depth, default=None,
                      help="svg: draw groups (blocks, repetitions) only this many levels deep, fold the rest")
    comp.add_argument("--quiet", action="store_true", help="do not print the summary table")
    comp.add_argument("--force", action="store_true",
                      help="replace an earlier artifact of the same kind at -o (a file or folder cnndsl did not "
                           "write is never replaced)")


def run(args: argparse.Namespace) -> int:
    """`cnndsl compile`."""
    report = check(Path(args.file), set=dict(args.bindings))
    inputs = [args.file] + ([args.run] if args.run else [])
    if args.emit in DIRECTORY_TARGETS:
        output = check_output_dir(args.output, args.emit, args.force, inputs)
    else:
        output = check_output_file(args.output, args.emit, args.force, inputs)
    if not args.quiet:
        sys.stdout.write(report.render_table())
    options = EmitOptions(spec=Path(args.file), bindings=dict(args.bindings), seed=args.seed, run=args.run,
                          depth=args.depth, force=args.force)
    note = emit(args.emit, report, output, options)
    if note:
        print(note, file=sys.stderr)
    print(f"wrote {output} ({args.emit})", file=sys.stderr)
    return 0
