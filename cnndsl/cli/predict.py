"""`cnndsl predict [FILE.cnn] IMAGE... --run RUN_DIR`: the top classes of images with a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnndsl.cli.arguments import npy_image, positive_float, positive_int
from cnndsl.cli.printing import print_top
from cnndsl.lang.errors import UsageError
from cnndsl.lang.outputs import check_output_dir


def add(commands: Any, spec: argparse.ArgumentParser, data: argparse.ArgumentParser) -> None:
    """`cnndsl predict`."""
    predict = commands.add_parser("predict", help="top classes of images with a trained run",
                                  description="Classify images (PNG, JPEG or .npy) with a trained run. Image "
                                              "files (0..255) are brought to the units the run's dataset stores; "
                                              ".npy arrays are taken in those units (a float array within 0..1 "
                                              "as 0..1 when the run's white level is above 1; --white says "
                                              "otherwise). A first argument ending in .cnn is the spec "
                                              "(default: the run's own).")
    predict.add_argument("first", metavar="FILE.cnn|IMAGE", help="the spec (default: the run's own) or an image")
    predict.add_argument("images", nargs="*", metavar="IMAGE", help="images: PNG, JPEG or .npy")
    predict.add_argument("--run", required=True, metavar="RUN_DIR")
    predict.add_argument("--checkpoint", choices=("best", "last"), default="best")
    predict.add_argument("--top", type=positive_int, default=3)
    predict.add_argument("--json", action="store_true")
    predict.add_argument("-o", "--out", metavar="DIR",
                         help="a segmentation run: the folder to write each image's mask (NAME.png, a palette PNG "
                              "of class indices) and overlay (NAME-overlay.png) into, with predictions.json")
    predict.add_argument("--force", action="store_true", help="replace the masks of an earlier predict --out")
    predict.add_argument("--white", type=positive_float, metavar="LEVEL",
                         help="the value of white in the .npy arrays (e.g. 1 or 255; default: the run's own, "
                              "or 1 for float arrays within 0..1)")


def run(args: argparse.Namespace) -> int:
    """`cnndsl predict`: PNG/JPEG images in 0..255 are rescaled to the dataset's units; .npy arrays are
    read with `--white` (default: the run's units, or 0..1 for float arrays within 0..1)."""
    from cnndsl.data import DataError, read_image
    from cnndsl.training import load_run

    given = [args.first, *args.images]
    spec, names = (Path(given[0]), given[1:]) if given[0].endswith(".cnn") else (None, given)
    if not names:
        raise UsageError("no images to classify", "give PNG, JPEG or .npy files after the options")
    loaded = load_run(spec, args.run, args.checkpoint)  # a clear error before reading any image
    if loaded.trainer.dense and args.out is None:
        raise UsageError(f"{args.run} is a segmentation run: its predictions are masks",
                         "give the folder to write them into: -o DIR")
    if not loaded.trainer.dense and args.out is not None:
        raise UsageError("-o writes the masks of a segmentation run", f"{args.run} classifies whole images: leave it out")
    out = check_output_dir(args.out, "masks", args.force, inputs=given) if args.out is not None else None
    scale = loaded.trainer.preprocess.scale
    images = []  # each in the run's units: an image file's 0..255 and an array's --white mapped to its white
    for name in names:
        path = Path(name)
        if path.suffix.lower() == ".npy":
            array = npy_image(path, scale, args.white)
            array = array[..., None] if array.ndim == 2 else array
            if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or min(array.shape) < 1:
                raise DataError(f"{path}: expected one image, an array H x W or H x W x C (C = 1, 3 or 4) of "
                                f"numbers, got shape {'x'.join(map(str, array.shape))}")
            images.append(array)
        else:
            images.append(loaded.stored(read_image(path), 255.0))
    classes = loaded.settings.get("classes") or []
    if out is not None:
        return _write_masks(out, names, images, loaded.probabilities(images, scale), classes, scale, args.json)
    for name, row in zip(names, loaded.probabilities(images, scale)):
        print_top(name, row, classes, args.top, args.json)
    return 0


def _write_masks(out: Path, names: list[str], images: list[Any], probabilities: Any, classes: list[str], scale: float,
                 as_json: bool) -> int:
    """Each image's mask (its most probable class per pixel, at the image's own size) as a palette PNG, an
    overlay of the classes' colours on the image, and predictions.json; a line per image (or JSON)."""
    import json

    from cnndsl.data.segmentation import class_shares, mask_pictures
    from cnndsl.lang.outputs import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    records = []
    for index, (name, image, scores) in enumerate(zip(names, images, probabilities)):
        mask, mask_png, overlay_png = mask_pictures(scores, image, scale)
        stem = f"{index:04d}-{Path(name).stem}"
        write_atomic(out / f"{stem}.png", mask_png)
        write_atomic(out / f"{stem}-overlay.png", overlay_png)
        shares = class_shares(mask, classes)
        records.append({"image": name, "mask": f"{stem}.png", "overlay": f"{stem}-overlay.png", "classes": shares})
        if as_json:
            print(json.dumps(records[-1]))
        else:
            print(f"{name}: {out / (stem + '.png')}  " + ", ".join(f"{k} {v:.1%}" for k, v in
                                                                  sorted(shares.items(), key=lambda kv: -kv[1])))
    write_atomic(out / "predictions.json", json.dumps({"format": "cnndsl.masks/1", "predictions": records}, indent=1))
    return 0
