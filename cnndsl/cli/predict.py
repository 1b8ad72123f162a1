"""`cnndsl predict [FILE.cnn] IMAGE... --run RUN_DIR`: the top classes of images with a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnndsl.cli.arguments import load_npy, positive_int
from cnndsl.cli.printing import print_top
from cnndsl.lang.errors import UsageError


def add(commands: Any, spec: argparse.ArgumentParser, data: argparse.ArgumentParser) -> None:
    """`cnndsl predict`."""
    predict = commands.add_parser("predict", help="top classes of images with a trained run",
                                  description="Classify images (PNG, JPEG or .npy) with a trained run. Image "
                                              "files (0..255) are brought to the units the run's dataset stores; "
                                              ".npy arrays are taken in those units. A first argument ending in "
                                              ".cnn is the spec (default: the run's own).")
    predict.add_argument("first", metavar="FILE.cnn|IMAGE", help="the spec (default: the run's own) or an image")
    predict.add_argument("images", nargs="*", metavar="IMAGE", help="images: PNG, JPEG or .npy")
    predict.add_argument("--run", required=True, metavar="RUN_DIR")
    predict.add_argument("--checkpoint", choices=("best", "last"), default="best")
    predict.add_argument("--top", type=positive_int, default=3)
    predict.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
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
            array = load_npy(path)
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
        print_top(name, row, classes, args.top, args.json)
    return 0
