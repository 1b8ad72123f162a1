"""`cnndsl check FILE`: the spec's layers with their shapes, parameters and MACs, or its problems."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cnndsl.cli.arguments import MIN_TABLE_WIDTH, at_least, depth
from cnndsl.lang.errors import CnnError, UsageError
from cnndsl.lang.frontend import check


def add(commands: Any, spec: argparse.ArgumentParser, data: argparse.ArgumentParser) -> None:
    """`cnndsl check`."""
    chk = commands.add_parser("check", parents=[spec],
                              help="check a spec: shapes, parameters and MACs of every layer",
                              description="Check a .cnn spec and print one row per layer with its output "
                                          "shape, parameters and MACs, then the totals.")
    chk.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    chk.add_argument("--depth", type=depth, default=None,
                     help="show groups (blocks, repetitions, branches) only this many levels deep")
    chk.add_argument("--width", type=at_least(MIN_TABLE_WIDTH, "width"), default=None,
                     help=f"table width in characters (at least {MIN_TABLE_WIDTH}; default 110)")


def run(args: argparse.Namespace) -> int:
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
