"""`cnndsl eval --run RUN_DIR`: a trained run's accuracy and loss on its test and validation splits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cnndsl.cli.arguments import check_source


def add(commands: Any, spec: argparse.ArgumentParser, data: argparse.ArgumentParser) -> None:
    """`cnndsl eval`."""
    evaluate = commands.add_parser("eval", parents=[data], help="accuracy and loss of a trained run",
                                   description="Evaluate a trained run's checkpoint on its dataset's test and "
                                               "validation splits (or another dataset's with --data).")
    evaluate.add_argument("file", nargs="?", help="the .cnn spec (default: the run's own, with its --set bindings)")
    evaluate.add_argument("--run", required=True, metavar="RUN_DIR")
    evaluate.add_argument("--checkpoint", choices=("best", "last"), default="best")
    evaluate.add_argument("--json", action="store_true", help="print {accuracy, loss, n, ...} as JSON")


def run(args: argparse.Namespace) -> int:
    """`cnndsl eval`."""
    from cnndsl.training import evaluate

    check_source(args.data)
    result = evaluate(Path(args.file) if args.file else None, args.run, args.data, args.data_dir, args.checkpoint)
    if args.json:
        print(json.dumps(result))
        return 0
    splits = [("test", "")] + ([("validation", "val_")] if result["val_n"] else [])
    print(f"{result['data']}, {args.checkpoint} checkpoint (step {result['step']}): " + "; ".join(
        (f"{name} mean IoU {result[prefix + 'miou']:.2%}  pixel accuracy" if "miou" in result else f"{name} accuracy")
        + f" {result[prefix + 'accuracy']:.2%}  loss {result[prefix + 'loss']:.4f}  n {result[prefix + 'n']:,}"
        for name, prefix in splits))
    if "miou" in result:  # segmentation: each class's IoU on the test split
        print("test IoU per class: " + ", ".join(f"{name} {'-' if iou is None else f'{iou:.2%}'}"
                                                  for name, iou in result["iou"].items()))
    return 0
