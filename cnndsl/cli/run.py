"""`cnndsl run ARTIFACT IMAGE...`: an exported network (`--emit export`) on image files and .npy arrays."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnndsl.cli.arguments import npy_image, positive_float, positive_int
from cnndsl.cli.printing import print_top


def add(commands: Any, spec: argparse.ArgumentParser, data: argparse.ArgumentParser) -> None:
    """`cnndsl run`."""
    run = commands.add_parser("run", help="run an exported network on PNG/JPEG images or .npy arrays",
                              description="Load an artifact written by `cnndsl compile --emit export` and print "
                                          "the top classes of each image: a PNG or JPEG file (its 0..255 pixels "
                                          "converted to the units the run's dataset stores; another size is "
                                          "resized as the run's evaluation resizes: bilinear, or resized and "
                                          "centre-cropped for runs trained on image files), or an .npy array "
                                          "HxWxC or BxHxWxC in the dataset's units (a float array within 0..1 as 0..1 "
                                          "when the run's white level is above 1; --white says otherwise).")
    run.add_argument("artifact", help="the export directory")
    run.add_argument("images", nargs="+", metavar="IMAGE", help="PNG/JPEG files or .npy arrays")
    run.add_argument("--top", type=positive_int, default=5, help="how many classes to show per image (default 5)")
    run.add_argument("--json", action="store_true", help="print one JSON object per image")
    run.add_argument("--white", type=positive_float, metavar="LEVEL",
                     help="the value of white in the .npy arrays (e.g. 1 or 255; default: the run's own, "
                          "or 1 for float arrays within 0..1)")


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


def run(args: argparse.Namespace) -> int:
    """`cnndsl run`: an exported network on image files and .npy arrays."""
    from cnndsl.emit.artifact import ExportError, load_exported

    network = load_exported(args.artifact)
    classes = network.meta.get("classes") or []
    for image in args.images:
        preprocess = network.meta.get("preprocess")  # None: the export takes its inputs as they are
        scale = (preprocess or {}).get("scale", 255.0)
        white = args.white if preprocess else (args.white or scale)
        x = npy_image(image, scale, white) if Path(image).suffix.lower() == ".npy" else _image_file_input(image, network)
        batch = x[None] if x.ndim == len(network.input_shape) else x
        try:
            probs = network.probabilities(batch)
        except ExportError as err:
            raise ExportError(f"{image}: {err}") from None
        for index, row in enumerate(probs):
            print_top(image if len(probs) == 1 else f"{image}[{index}]", row, classes, args.top, args.json)
    return 0
