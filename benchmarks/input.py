"""The streaming input pipeline's speed: images/s per worker core, and what feeding costs a training step.

    python benchmarks/input.py [--images 256] [--steps 6] [--batch 16]

1. Generated ImageNet-like JPEGs (500x375, quality 90: smooth shapes plus texture, ~60-90 kB) decoded and
   transformed to 224x224 with the training augmentation (random resized crop; flip is on the device), one
   core, in this process: images/s per core (target >= 400), with JPEG `draft` decoding (the default) and
   without; the same through Grain with one worker process (what the pipeline adds).
2. The data-feeding ratio for ResNet-18 at 224: a train step fed by the streaming pipeline (one worker
   process) divided by the same step on one fixed batch already on the device, alternated (target <= 1.05).

Figures are this machine's; run it where the numbers matter (the README quotes them with the machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def make_photos(root: Path, count: int, classes: int = 4) -> Path:
    """`count` 500x375 JPEGs (quality 90) in ImageNet's train/<class>/ layout, plus a small val/."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", classes)):
        for i in range(n):
            label = i % classes
            folder = root / split / f"n{label:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC)
            texture = rng.normal(0, 12, (375, 500, 3))
            pixels = np.clip(np.asarray(image, np.float64) + texture, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).filter(ImageFilter.SMOOTH).save(folder / f"{i:05d}.JPEG", quality=90)
    return root


def per_core(files: list[Path], draft: bool) -> float:
    """Images/s of decode + random resized crop to 224, one core, this process."""
    from cnndsl.data import images

    rng = np.random.default_rng(0)
    data = [f.read_bytes() for f in files]  # from the page cache: decoding is what is measured
    original = images.transformed
    if not draft:  # the same work without JPEG DCT scaling: decode at full size
        def transformed(source, where, size, channels, rng=None):  # noqa: ANN001, ANN202
            return original(images.decode(source, where), where, size, channels, rng)
    else:
        transformed = original
    started = time.perf_counter()
    for blob in data:
        transformed(blob, "photo", (224, 224), 3, rng)
    return len(data) / (time.perf_counter() - started)


def through_grain(root: Path, count: int) -> float:
    """Images/s of the training pipeline with one worker process (after its start-up)."""
    from cnndsl.data.pipeline import open_images, train_batches

    data, _ = open_images(f"folder:{root}", shape=(224, 224, 3), mode="stream", val_fraction=0.0)
    batch = 16
    steps = len(data.train) // batch
    iterator = train_batches(data, seed=0, batch=batch, steps_per_epoch=steps, epochs=2, workers=1,
                             random_crop=True)
    next(iterator)  # the worker has started
    started = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    rate = steps * batch / (time.perf_counter() - started)
    iterator.close()
    return rate


def feeding_ratio(root: Path, steps: int, batch: int) -> tuple[float, float, float]:
    """(ms per ResNet-18 step fed by the pipeline, ms on a fixed batch, ratio)."""
    import jax

    import cnndsl
    from cnndsl.training.feed import StreamFeed
    from cnndsl.data.pipeline import open_images
    from cnndsl.training.distributed import Placement
    from cnndsl.lang.settings import Settings
    from cnndsl.training import Preprocess, Trainer, make_optimizer

    data, _ = open_images(f"folder:{root}", shape=(224, 224, 3), mode="stream", val_fraction=0.0)
    net = cnndsl.compile(ROOT / "examples" / "resnet18.cnn")
    settings = Settings(batch_size=batch, epochs=100, augment=("resized-crop", "flip"), workers=1, optimizer="sgd")
    per_epoch = len(data.train) // batch
    preprocess = Preprocess(255.0, data.mean, data.std, (224, 224), ("flip",))
    trainer = Trainer(net, net.init(0), make_optimizer(settings, per_epoch), preprocess, settings,
                      net.report.output_shape[0])
    feed = StreamFeed(data, Placement(None), settings, per_epoch, print)
    state = trainer.initial_state()
    args = [state["params"], state["stats"], state["opt_state"], state["meters"]]
    fixed = feed.batch(0)
    *args, loss = trainer.train_step(*args, *fixed, np.int32(0), np.int32(0))  # compile
    jax.block_until_ready(loss)

    def run(fed: bool) -> float:
        nonlocal args
        started = time.perf_counter()
        for i in range(steps):
            inputs = feed.batch(i) if fed else fixed
            *args, loss = trainer.train_step(*args, *inputs, np.int32(0), np.int32(i))
        jax.block_until_ready(loss)
        return (time.perf_counter() - started) / steps * 1e3

    fed_ms, fixed_ms = [], []
    for _ in range(3):  # alternated, so that drift in the machine hits both alike
        fed_ms.append(run(True))
        fixed_ms.append(run(False))
    fixed = args = None  # the pipeline's last batches, released before its workers stop
    feed.close()
    a, b = statistics.median(fed_ms), statistics.median(fixed_ms)
    return a, b, a / b


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = make_photos(Path(folder), args.images)
        files = sorted((root / "train").rglob("*.JPEG"))
        size = statistics.mean(f.stat().st_size for f in files) / 1024
        print(f"{len(files)} JPEGs, 500x375, quality 90, mean {size:.0f} kB")
        with_draft, without = per_core(files, True), per_core(files, False)
        print(f"decode + random resized crop to 224, one core: {with_draft:,.0f} images/s with draft decoding, "
              f"{without:,.0f} without (target >= 400 per core)")
        print(f"through Grain, one worker process: {through_grain(root, len(files)):,.0f} images/s")
        fed, fixed, ratio = feeding_ratio(root, args.steps, args.batch)
        print(f"ResNet-18 at 224, batch {args.batch}: {fed:,.0f} ms per step fed by the pipeline, {fixed:,.0f} ms "
              f"on a fixed batch: feeding ratio {ratio:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
