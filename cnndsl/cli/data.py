"""`cnndsl data pack SOURCE -o DIR`: a folder dataset as ArrayRecord shards (cnndsl.data.records)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from cnndsl.data.errors import DataError
from cnndsl.lang.errors import UsageError
from cnndsl.lang.outputs import check_output_dir, json_field


def add(commands: Any, spec: argparse.ArgumentParser, data: argparse.ArgumentParser) -> None:
    """`cnndsl data pack`."""
    data = commands.add_parser("data", help="prepare datasets: pack a folder of images into records",
                               description="Dataset tools. `pack` writes a folder dataset (PNG/JPEG in class "
                                           "folders; ImageNet's train/ and val/ layout) as ArrayRecord shards with a "
                                           "manifest and checksums, for `--data records:DIR`.")
    tools = data.add_subparsers(dest="tool", metavar="TOOL", required=True)
    pack = tools.add_parser("pack", help="write a folder dataset as ArrayRecord shards",
                            description="Write folder:PATH as ArrayRecord shards in DIR (the image files' bytes as "
                                        "they are, with labels and names), a manifest.json with SHA-256 checksums, "
                                        "and each split's labels. Interrupted, the same command resumes.")
    pack.add_argument("source", metavar="folder:PATH", help="the folder dataset to pack")
    pack.add_argument("-o", "--out", required=True, metavar="DIR", help="where the records go")
    pack.add_argument("--force", action="store_true",
                      help="replace records of another source at DIR (a folder cnndsl did not write is never used)")
    pack.add_argument("--shard-size", type=int, default=None, metavar="N",
                      help="examples per shard (default 10000)")


def run(args: argparse.Namespace) -> int:
    """`cnndsl data pack`: exit 0 when the records are complete."""
    from cnndsl.data.datasets import folder_splits
    from cnndsl.data.records import SHARD_SIZE, pack

    kind, _, rest = args.source.partition(":")
    if kind != "folder" or not rest:
        raise UsageError(f"cannot pack {args.source!r}", "give a folder dataset: folder:PATH")
    if args.shard_size is not None and args.shard_size < 1:
        raise UsageError(f"--shard-size {args.shard_size}: must be at least 1", "e.g. --shard-size 10000")
    root = Path(rest)
    source = f"folder:{root.absolute()}"
    # The one destination check every writing command uses (cnndsl.lang.outputs): a new or empty folder, or
    # records of this same source (an interrupted or finished pack: continued), or with --force records of another.
    check_output_dir(args.out, "records", args.force, inputs=[root], make_parents=True,
                     resumes=lambda folder: _records_source(folder) == source)
    train, val, test, classes = folder_splits(root)
    splits = {"train": train, "test": test, **({"val": val} if val is not None else {})}
    total = sum(len(s) for s in splits.values())
    started = time.perf_counter()
    show = _progress_printer(total)
    try:
        manifest = pack(splits, classes, Path(args.out), source,
                        args.shard_size or SHARD_SIZE, show)
    except OSError as err:
        raise DataError(f"{args.out}: cannot write the records ({err})") from None
    finally:
        show.close()
    counts = ", ".join(f"{split} {info['count']:,}" for split, info in manifest["splits"].items())
    shards = sum(len(info["shards"]) for info in manifest["splits"].values())
    print(f"packed {counts} images of {len(classes)} classes into {shards} shards in {args.out} "
          f"({time.perf_counter() - started:.1f} s); train with --data records:{args.out}")
    return 0


def _records_source(folder: Path) -> str | None:
    """The source a records folder was (or is being) packed from, from its manifest or its partial one."""
    plan = json_field(folder / "manifest.partial.json", "plan")
    source = json_field(folder / "manifest.json", "source") or (plan.get("source") if isinstance(plan, dict) else None)
    return source if isinstance(source, str) else None


class _progress_printer:
    """A rich progress bar on a terminal, nothing otherwise: `(split, done, total)`."""

    def __init__(self, total: int) -> None:
        self.bar = None
        self.done: dict[str, int] = {}
        if sys.stderr.isatty():
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.bar.start()
            self.task = self.bar.add_task("packing", total=total)

    def __call__(self, split: str, done: int, total: int) -> None:
        self.done[split] = done
        if self.bar is not None:
            self.bar.update(self.task, completed=sum(self.done.values()), description=f"packing {split}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
