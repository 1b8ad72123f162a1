"""Argument types and argument groups that several commands share; the only place that parses
arguments is this package."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from cnndsl.lang.errors import UsageError


def set_pair(text: str) -> tuple[str, str]:
    """An argparse type: `NAME=VALUE` (a `--set` binding) as (name, value)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def at_least(minimum: int, what: str, maximum: int | None = None) -> Any:
    """An argparse type: an integer of at least `minimum` (and at most `maximum`)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{what} must be at most {maximum:,}, got {value:,}")
        return value
    return parse


depth = at_least(1, "depth")
positive_int = at_least(1, "the value")
seed = at_least(0, "the seed", 2**32 - 1)  # numpy's and JAX's seed range
#: The narrowest summary table: the numbers need about 40 columns, the layer names a few more.
MIN_TABLE_WIDTH = 50


MAX_AMOUNT = 10**18  # a budget of parameters or multiply-adds: far above any network, far below int64


def amount(text: str) -> int:
    """`250000`, `250k`, `1.5M`, `2G` as an integer."""
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count like 250000, 250k or 1.5M, got {text!r}") from None
    if not value > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    if value > MAX_AMOUNT:  # 1e999 is infinite: no budget is meant, and int() of it would raise
        raise argparse.ArgumentTypeError(f"must be at most {MAX_AMOUNT:.0e} (leave the option out for no limit), "
                                         f"got {text!r}")
    return int(value)


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return value


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """--max-params / --max-macs, shared by family and sweep."""
    parser.add_argument("--max-params", type=amount, metavar="P", help="skip members with more parameters (e.g. 100k)")
    parser.add_argument("--max-macs", type=amount, metavar="M", help="skip members with more multiply-adds (e.g. 5M)")


def default(name: str, prefix: str = "") -> str:
    """`(default X)` for a training setting: the value a spec without a `train` line gets."""
    from cnndsl.lang.settings import Settings

    value = next(f.default for f in dataclasses.fields(Settings) if f.name == name)
    return f"{prefix}(default {str(value).lower() if isinstance(value, bool) else value}, or the spec's `train` line)"


def devices(text: str) -> str | int:
    """`all` or a positive number of devices."""
    if text == "all":
        return text
    return at_least(1, "--devices")(text)


def size(text: str) -> tuple[int, int]:
    """`32` or `32x32` as (height, width)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected a size like 32 or 32x32, got {text!r}")
    return (int(parts[0]), int(parts[-1]))


def augment(text: str) -> tuple[str, ...]:
    from cnndsl.lang.settings import AUGMENTATIONS

    parts = () if text in ("", "none") else tuple(part.strip() for part in text.split(","))
    unknown = [p for p in parts if p not in AUGMENTATIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown augmentation {unknown[0]!r}; choose from "
                                         f"{', '.join(AUGMENTATIONS)} (comma-separated) or none")
    return parts


def data_arguments() -> argparse.ArgumentParser:
    """--data and --data-dir, for every command that reads a dataset."""
    from cnndsl.data.sources import SOURCES

    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data", metavar="SOURCE", default=None,
                      help=f"dataset: {', '.join(SOURCES)} (default: digits, or the run's)")
    data.add_argument("--data-dir", metavar="DIR", default=None,
                      help="where the official dataset files are (else the cache, downloading when absent)")
    return data


def check_source(source: str | None) -> None:
    """A UsageError unless `--data` names a source the registry knows (cnndsl.data.sources)."""
    from cnndsl.data.sources import SourceError, parse_source

    if source is None:
        return
    try:
        parse_source(source)
    except SourceError as err:
        raise UsageError(f"--data {err.message}" if err.message.startswith(source) else err.message, err.hint) from None


def load_npy(path: str | Path) -> Any:
    """An .npy array of numbers, never unpickled, its size checked from its header
    (`cnndsl.data.read_npy`); a DataError naming the file otherwise."""
    from cnndsl.data import read_npy

    return read_npy(Path(path))


def npy_image(path: str | Path, scale: float, white: float | None) -> Any:
    """An .npy image array (`load_npy`) in the units of a run whose white level is `scale`, as float32: read
    with white level `white` (`cnndsl.data.images.array_white`: by default the run's own, or 0..1 for a float
    array within 0..1), said on stderr when that default is not the run's own."""
    import sys

    from cnndsl.data import check_finite
    from cnndsl.data.images import array_white, in_units

    array = load_npy(path)
    check_finite(array, str(path))
    level = array_white(array, scale, white)
    if level != scale and white is None:
        print(f"note: {path}: float values within 0..1, read as 0..1 (the run's white level is {scale:g}); "
              f"give --white {scale:g} to read them in the run's units", file=sys.stderr)
    return in_units(array, scale, level)
