"""`cnndsl weights import SPEC WEIGHTS -o RUN_DIR`: pretrained weights as a run directory that `eval`,
`predict` and `compile --emit export|onnx --run` take like a trained run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cnndsl.cli.arguments import set_pair

IMAGENET = {"scale": 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def add(commands: Any, spec: argparse.ArgumentParser, data: argparse.ArgumentParser) -> None:
    """`cnndsl weights import`."""
    from cnndsl.interop import MAPPINGS

    weights = commands.add_parser("weights", help="import pretrained weights (safetensors, PyTorch) into a run",
                                  description="Pretrained weights for a spec: `import` pairs the spec's layers with "
                                              "a weights file's and writes a run directory.")
    tools = weights.add_subparsers(dest="tool", metavar="TOOL", required=True)
    imp = tools.add_parser("import", help="pair a spec's layers with a weights file's and write a run directory",
                           description="Pair the spec's conv, bn and fc layers (in execution order) with the file's "
                                       "(safetensors; .pth/.pt only with torch installed, loaded with "
                                       "weights_only=True), convert the layouts, and write a run directory for "
                                       "eval, predict and compile --run. --dry-run prints the pairing only.")
    imp.add_argument("file", metavar="SPEC", help="the .cnn spec")
    imp.add_argument("weights", metavar="WEIGHTS", help="a .safetensors file (or .pth/.pt with torch installed)")
    imp.add_argument("-o", "--out", metavar="RUN_DIR", help="the run directory to write (required without --dry-run)")
    imp.add_argument("--map", dest="mapping", choices=MAPPINGS, default="auto",
                     help="the file's layouts: torchvision/timm/torch (OIHW, (out, in), C,H,W flattening) or keras "
                          "(HWIO, (in, out)); auto tells them apart by the tensors' names (default)")
    imp.add_argument("--normalize", choices=("imagenet", "none"), default="imagenet",
                     help="the input normalization the weights were trained with: imagenet (pixels/255, then "
                          "torchvision's mean and std; 3 channels) or none (default imagenet)")
    imp.add_argument("--set", dest="bindings", metavar="NAME=VALUE", type=set_pair, action="append", default=[],
                     help="bind or override a `let` name (repeatable)")
    imp.add_argument("--dry-run", action="store_true", help="print the pairing table and write nothing")


def run(args: argparse.Namespace) -> int:
    """`cnndsl weights import`."""
    from cnndsl.interop.weights import pair_layers, pairing_table, read_tensors
    from cnndsl.lang.errors import UsageError

    if not args.dry_run and not args.out:
        raise UsageError("no run directory to write", "give -o RUN_DIR, or --dry-run to see the pairing only")
    from cnndsl.lang.frontend import check
    from cnndsl.training.imported import import_run

    report = check(Path(args.file), set=dict(args.bindings))
    tensors = read_tensors(args.weights)
    pairs = pair_layers(report, tensors, args.mapping)
    if tensors.converted:
        held = ", ".join(f"{count} {dtype}" for dtype, count in sorted(tensors.converted.items()))
        print(f"note: {args.weights} holds {held} tensors: converted to float32, the network's parameter dtype",
              file=sys.stderr)
    if args.dry_run:
        sys.stdout.write(pairing_table(pairs))
        print(f"{len(pairs)} layers paired; nothing written (--dry-run)", file=sys.stderr)
        return 0
    out = import_run(Path(args.file), args.weights, Path(args.out), args.mapping, dict(args.bindings),
                     IMAGENET if args.normalize == "imagenet" else None)
    print(f"{len(pairs)} layers of {args.weights} imported into {out}; use it with eval --run, predict --run, "
          "compile --emit export|onnx --run", file=sys.stderr)
    return 0
