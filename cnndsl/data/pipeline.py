"""The streaming input pipeline: examples read, decoded and transformed in Grain worker processes.

`open_images(source, ...)` opens a `folder:PATH` or `records:DIR` source as an `ImageData`: three splits
of random-access `Examples` (files, ArrayRecord records, or images decoded once and kept in memory). The
training loop then asks `train_batches` for an iterator of batches and `eval_batches` for each evaluation.

Determinism, which exact resume and the tests rely on: the examples of epoch e are taken in the order
`epoch_order(seed, e, n)` (the same function orders the in-memory path), the random crop of the example at
position p of epoch e draws from a generator seeded with (seed, e, p), and process i of P reads positions
[i*B/P, (i+1)*B/P) of each global batch of B: a pure function of the step, whichever worker computes it.
The Grain iterator's state is saved in every checkpoint (`iterator_state`) and restored on resume.

This module imports no JAX at import time: Grain's worker processes unpickle its classes (grain#802).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnndsl.data.examples import DecodedExamples, Examples, FileExamples, MaskExamples
from cnndsl.data.images import ImageError, decode, open_image, transformed, transformed_pair
from cnndsl.data.segmentation import IGNORE

STATE_BYTES = 4096  # room for the Grain iterator's JSON state in a checkpoint (a fixed shape for orbax)


class PipelineError(Exception):
    """A streaming source that cannot be opened or streamed; the message says what to do."""


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of an epoch's n training examples: a permutation from the seed and the epoch alone."""
    return np.random.default_rng([seed, 0, epoch]).permutation(n).astype(np.int64)


@dataclass
class ImageData:
    """A dataset of images read through the pipeline: train, val and test `Examples`, the class names, and
    the network's input (H, W, C) every image is transformed to. `streamed` says whether images are read
    from their files or records at every use (else they were decoded once into memory)."""

    name: str
    train: Examples
    val: Examples
    test: Examples
    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    streamed: bool
    scale: float = 255.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def dense(self) -> bool:
        """Whether the labels are masks (per-pixel labels, `masks:PATH`), read with their images."""
        return isinstance(self.train, MaskExamples)

    @property
    def num_classes(self) -> int:
        """How many classes."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image the pipeline produces: the network's input."""
        return self.shape

    @property
    def y_train(self) -> np.ndarray:
        """The training labels (as `Dataset` has them)."""
        return self.train.labels

    @property
    def y_val(self) -> np.ndarray:
        """The validation labels."""
        return self.val.labels

    @property
    def y_test(self) -> np.ndarray:
        """The test labels."""
        return self.test.labels


# ---- the elements Grain maps (picklable: they travel to the worker processes) ------------------------------

@dataclass
class TrainElement:
    """Position k of this process's stream -> {"image", "label", "weight", "bad", "index"}: the example at that
    position of its epoch's order, transformed (randomly cropped with `random_crop`). An unreadable image
    becomes zeros with weight 0, and `bad` is its index (else -1): the loop masks and counts it."""

    examples: Examples
    size: tuple[int, int]
    channels: int
    seed: int
    batch: int  # global
    local_batch: int  # this process's share
    process: int
    steps_per_epoch: int
    random_crop: bool
    _order: tuple[int, np.ndarray] | None = None

    def __call__(self, k: int) -> dict[str, Any]:
        epoch, within = divmod(int(k), self.steps_per_epoch * self.local_batch)
        step, j = divmod(within, self.local_batch)
        position = step * self.batch + self.process * self.local_batch + j
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(self.seed, epoch, len(self.examples)))
        index = int(self._order[1][position])
        rng = np.random.default_rng([self.seed, 2, epoch, position]) if self.random_crop else None
        return _element(self.examples, index, self.size, self.channels, rng)


@dataclass
class EvalElement:
    """Position k of this process's share of a split padded to whole batches of `batch` -> the example
    transformed for evaluation; padding and unreadable images have weight 0."""

    examples: Examples
    size: tuple[int, int]
    channels: int
    batch: int = 1
    local_batch: int = 1
    process: int = 0

    def __call__(self, k: int) -> dict[str, Any]:
        step, j = divmod(int(k), self.local_batch)
        k = step * self.batch + self.process * self.local_batch + j
        if k >= len(self.examples):
            label = np.full(self.size, IGNORE, np.uint8) if isinstance(self.examples, MaskExamples) else np.int32(0)
            return {"image": np.zeros((*self.size, self.channels), np.uint8), "label": label,
                    "weight": np.float32(0), "bad": np.int64(-1), "index": np.int64(-1)}
        return _element(self.examples, int(k), self.size, self.channels, None)


def _element(examples: Examples, index: int, size: tuple[int, int], channels: int,
             rng: np.random.Generator | None) -> dict[str, Any]:
    if isinstance(examples, MaskExamples):  # the label is the mask, cut and resized with its image
        try:
            image, mask = transformed_pair(examples.image(index), examples.mask(index), size, channels, rng)
            return {"image": image, "label": mask, "weight": np.float32(1), "bad": np.int64(-1),
                    "index": np.int64(index)}
        except (ImageError, OSError):
            return {"image": np.zeros((*size, channels), np.uint8), "label": np.full(size, IGNORE, np.uint8),
                    "weight": np.float32(0), "bad": np.int64(index), "index": np.int64(index)}
    label = np.int32(examples.label(index))
    try:
        image = transformed(examples.image(index), examples.name(index), size, channels, rng)
        return {"image": image, "label": label, "weight": np.float32(1), "bad": np.int64(-1), "index": np.int64(index)}
    except (ImageError, OSError):  # named and counted by the loop, which reads it again for the message
        return {"image": np.zeros((*size, channels), np.uint8), "label": label, "weight": np.float32(0),
                "bad": np.int64(index), "index": np.int64(index)}


def why_bad(examples: Examples, index: int) -> str:
    """The message for an example the pipeline could not read."""
    try:
        if isinstance(examples, MaskExamples):
            transformed_pair(examples.image(index), examples.mask(index), (1, 1), 3)
        else:
            decode(examples.image(index), examples.name(index))  # type: ignore[arg-type]
    except (ImageError, OSError) as err:
        return str(err)
    return f"{examples.name(index)}: could not be read"


# ---- iterators -----------------------------------------------------------------------------------------------

def _grain() -> Any:
    try:
        import grain
    except ImportError:
        raise PipelineError("the input pipeline (streamed images, images of several sizes, --augment resized-crop) "
                            "needs Grain: pip install 'cnndsl[stream]'") from None
    from absl import flags

    if not flags.FLAGS.is_parsed():  # Grain reads absl flags; cnndsl parses no command line of absl's
        flags.FLAGS.mark_as_parsed()
    return grain


#: An evaluation split decodes in worker processes only from this many images per process; smaller ones decode
#: on threads here (Pillow frees the GIL while it decodes and resizes). Each evaluation starts its own workers,
#: ~1.2-1.5 s on this 2-core machine (a photo run's two small splits: 3.0 s an epoch with one worker, 0.6 s on
#: threads), the time threads take to decode and resize ~1,000 ImageNet-sized JPEGs on two cores.
EVAL_WORKERS_FROM = 1024


def default_workers() -> int:
    """Worker processes when --workers is not given: one per core but one (the training loop's), at most 16."""
    return max(1, min(16, (os.cpu_count() or 2) - 1))


def train_batches(data: ImageData, *, seed: int, batch: int, steps_per_epoch: int, epochs: int, workers: int,
                  random_crop: bool, process: int = 0, processes: int = 1) -> Any:
    """A Grain iterator of this process's share of every training batch of the run, in order: dicts of
    numpy arrays (image uint8 (b, H, W, C), label, weight, bad). Restore a position with `restore_state`."""
    grain = _grain()
    local = batch // processes
    element = TrainElement(data.train, data.shape[:2], data.shape[2], seed, batch, local, process,
                           steps_per_epoch, random_crop)
    dataset = grain.MapDataset.range(epochs * steps_per_epoch * local).map(element).batch(local, drop_remainder=True)
    return iter(_prefetched(grain, dataset, workers))


def eval_batches(data: ImageData, split: str, batch: int, workers: int, process: int = 0, processes: int = 1
                 ) -> Any:
    """An iterator over this process's share of a split in global batches of `batch` (the last padded with
    weight 0): dicts like `train_batches`."""
    grain = _grain()
    examples = getattr(data, split)
    local = batch // processes
    steps = -(-len(examples) // batch)
    element = EvalElement(examples, data.shape[:2], data.shape[2], batch, local, process)
    dataset = grain.MapDataset.range(steps * local).map(element).batch(local, drop_remainder=True)
    if len(examples) < EVAL_WORKERS_FROM * processes:
        workers = 0  # threads: starting the worker processes would take longer than decoding the split
    return iter(_prefetched(grain, dataset, workers))


def _prefetched(grain: Any, dataset: Any, workers: int) -> Any:
    threads = 0 if workers else max(2, os.cpu_count() or 2)  # without workers, threads transform (Pillow frees the GIL)
    iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4))
    if workers:
        iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2),
                                        worker_init_fn=_ignore_interrupts)
    return iterable


def _ignore_interrupts(worker: int, workers: int) -> None:
    """In each worker process: Ctrl-C (SIGINT, sent to the whole foreground process group) is left to the
    training process, which saves a checkpoint and stops the workers; a worker interrupted on its own printed
    a KeyboardInterrupt traceback beside the one-line message."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def iterator_state(iterator: Any) -> np.ndarray:
    """The Grain iterator's state as a fixed-size byte array for a checkpoint."""
    text = json.dumps(iterator.get_state(), sort_keys=True).encode()
    if len(text) > STATE_BYTES:
        raise PipelineError(f"the input pipeline's state is {len(text)} bytes, more than a checkpoint keeps")
    return np.frombuffer(text.ljust(STATE_BYTES, b"\0"), np.uint8).copy()


def restore_state(iterator: Any, saved: np.ndarray) -> None:
    """Put the iterator where a checkpoint's `iterator_state` says it was."""
    text = bytes(np.asarray(saved, np.uint8)).rstrip(b"\0")
    if text:
        iterator.set_state(json.loads(text))


# ---- opening a source ----------------------------------------------------------------------------------------

def memory_budget() -> int:
    """Bytes the decoded images of an in-memory dataset may take: $CNNDSL_MEMORY_BUDGET (bytes, or with a
    K/M/G suffix), else a quarter of the machine's memory."""
    text = os.environ.get("CNNDSL_MEMORY_BUDGET", "").strip().upper()
    if text:
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        try:
            return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)
        except ValueError:
            raise PipelineError(f"CNNDSL_MEMORY_BUDGET={text!r} is not a size like 8G or 500M") from None
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4


def decoded_bytes(examples: FileExamples, sample: int = 64) -> int:
    """An estimate of the bytes `examples` take decoded: the headers of an even sample, scaled up."""
    if not len(examples):
        return 0
    picks = np.linspace(0, len(examples) - 1, min(sample, len(examples))).astype(int)
    total = 0
    for index in picks:
        try:
            with open_image(examples.image(index), examples.name(index)) as image:
                total += image.size[0] * image.size[1] * (1 if image.mode in ("1", "L", "I;16", "I", "F") else 3)
        except ImageError:
            continue
    return int(total / len(picks) * len(examples))


def decode_all(examples: Examples, channels: int) -> tuple[DecodedExamples, list[str]]:
    """Every image decoded once (for `--in-memory`); unreadable ones are left out and their messages returned."""
    pixels, labels, names, bad = [], [], [], []
    for index in range(len(examples)):
        try:
            pixels.append(decode(examples.image(index), examples.name(index), channels))  # type: ignore[arg-type]
        except (ImageError, OSError) as err:
            bad.append(str(err))
            continue
        labels.append(examples.label(index))
        names.append(examples.name(index))
    return DecodedExamples(pixels, np.asarray(labels, np.int32), names), bad


def channel_stats(x: np.ndarray, scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of images `x` (N, H, W, C) after dividing by `scale`."""
    values = x.astype(np.float64) / scale
    mean = values.mean(axis=(0, 1, 2))
    std = np.maximum(values.std(axis=(0, 1, 2)), 1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


NORMALIZATION_SAMPLE = 512  # training images whose statistics normalize a pipeline dataset


def _normalization(examples: Examples, shape: tuple[int, int, int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """channel_stats of an even sample of the training images, fully decoded and transformed as evaluation
    does (the same numbers whether the images stream or sit in memory)."""
    picks = np.linspace(0, len(examples) - 1, min(NORMALIZATION_SAMPLE, len(examples))).astype(int)
    images, first_problem = [], ""
    for index in picks:
        try:
            pixels = examples.image(index)
            if not isinstance(pixels, np.ndarray):
                pixels = decode(pixels, examples.name(index), shape[2])
            images.append(transformed(pixels, examples.name(index), shape[:2], shape[2]))
        except (ImageError, OSError) as err:
            first_problem = first_problem or str(err)
            continue
    if not images:
        raise PipelineError(f"none of the {len(picks)} training images sampled for normalization can be read; the "
                            f"first: {first_problem}")
    return channel_stats(np.stack(images), 255.0)


def _open_masks(source: str, root: Path, shape: tuple[int, int, int], augment: tuple[str, ...], mode: str,
                val_fraction: float, normalize: bool) -> tuple[Any, list[str]]:
    """A `masks:PATH` source: arrays on the device when it fits and no random resized crop is asked for
    (`cnndsl.data.segmentation.masks_dataset`), else streamed: each image and its mask read, cut by one box
    and resized (the mask by nearest neighbour) in the worker processes."""
    from cnndsl.data.datasets import DataError, held_out, with_validation
    from cnndsl.data.segmentation import mask_class_names, mask_examples, mask_pairs, masks_dataset

    splits = mask_pairs(root)
    estimate = sum(decoded_bytes(mask_examples(pairs)) for pairs in splits)
    budget = memory_budget()
    random_crop = "resized-crop" in augment
    if mode == "memory" and (estimate > budget or random_crop):
        why = "the random resized crop reads each image at every use" if random_crop else \
            f"its images take about {estimate / 2**30:.1f} GiB decoded, more than the memory budget"
        raise DataError(f"{source}: cannot be held in memory ({why}); train with --stream")
    if mode != "stream" and not random_crop and estimate <= budget:
        return with_validation(masks_dataset(root, shape, splits), val_fraction), []
    classes = mask_class_names(root, splits)  # streamed: only now are the masks read for the classes
    train, val, test = (mask_examples(pairs, classes) for pairs in splits)
    if not len(val):
        kept, _, held, _ = held_out(np.arange(len(train)), train.labels, val_fraction, seed=1) if val_fraction \
            else (np.arange(len(train)), None, np.arange(0), None)
        train, val = train.subset(kept), train.subset(held)
    data = ImageData(source, train, val, test, classes, shape, True)
    if normalize:
        data.mean, data.std = _normalization(train, shape)
    why = "--stream" if mode == "stream" else "the random resized crop" if random_crop else \
        f"about {estimate / 2**30:.1f} GiB decoded > the {budget / 2**30:.1f} GiB memory budget"
    data.notes.append(f"streaming {source} ({why}): {len(train):,} training images with their masks")
    return data, []


def open_images(source: str, *, shape: tuple[int, int, int], augment: tuple[str, ...] = (), mode: str = "auto",
                val_fraction: float = 0.1, resize: bool = False, normalize: bool = True) -> tuple[Any, list[str]]:
    """A `folder:` or `records:` source for training a network of input `shape`: (dataset, messages about
    skipped images). The dataset is an `ImageData` for the pipeline, streamed or decoded into memory, or,
    when every image already has one size that the network takes and no random crop is asked for, a plain
    in-memory `cnndsl.data.Dataset` (the fast path of small datasets).

    `mode`: "stream" (read images at every use), "memory" (decode them once; an error when they would not
    fit `memory_budget()`), "auto" (memory when they fit). `normalize`: measure the channels' mean and
    deviation on a sample of training images (training needs them; evaluating a run has its own)."""
    from cnndsl.data.datasets import DataError, Dataset, folder_splits, held_out, no_val
    from cnndsl.data.records import RecordsError, open_records

    kind, _, rest = source.partition(":")
    if kind == "masks":
        return _open_masks(source, Path(rest), shape, augment, mode, val_fraction, normalize)
    try:
        if kind == "records":
            splits, classes = open_records(Path(rest))
            train, val, test = splits["train"], splits.get("val"), splits["test"]
        else:
            train, val, test, classes = folder_splits(Path(rest))
    except RecordsError as err:
        raise DataError(str(err)) from None
    if val is None:
        kept, _, held, _ = held_out(np.arange(len(train)), train.labels, val_fraction, seed=1) if val_fraction \
            else (np.arange(len(train)), None, np.arange(0), None)
        train, val = train.subset(kept), train.subset(held)
    random_crop = "resized-crop" in augment
    estimate = sum(decoded_bytes(e) for e in (train, val, test)) if kind == "folder" else None
    budget = memory_budget()
    if mode == "memory" and estimate is not None and estimate > budget:
        raise DataError(f"{source}: its images take about {estimate / 2**30:.1f} GiB decoded, more than the memory "
                        f"budget of {budget / 2**30:.1f} GiB ($CNNDSL_MEMORY_BUDGET); train with --stream")
    streamed = mode == "stream" or (mode == "auto" and (kind == "records" or (estimate or 0) > budget))
    name = f"{kind}:{rest}"
    why = ("--stream" if mode == "stream" else "records are read as needed" if kind == "records" else
           f"about {(estimate or 0) / 2**30:.1f} GiB decoded > the {budget / 2**30:.1f} GiB memory budget")
    if streamed:
        data = ImageData(name, train, val, test, classes, shape, True)
        if normalize:
            data.mean, data.std = _normalization(train, shape)
        data.notes.append(f"streaming {name} ({why}): {len(train):,} training images")
        return data, []
    skipped: list[str] = []
    decoded = []
    for examples in (train, val, test):
        kept_examples, bad = decode_all(examples, shape[2])
        decoded.append(kept_examples)
        skipped += bad
    train_d, val_d, test_d = decoded
    sizes = {p.shape[:2] for split in decoded for p in split.pixels}
    if not random_crop and len(sizes) == 1 and (sizes == {tuple(shape[:2])} or resize):
        def arrays(split: DecodedExamples) -> tuple[np.ndarray, np.ndarray]:
            if not len(split):
                return no_val(np.zeros((1, *next(iter(sizes)), shape[2]), np.uint8))
            return np.stack(split.pixels), split.labels

        (x, y), (x_val, y_val), (x_test, y_test) = arrays(train_d), arrays(val_d), arrays(test_d)
        return Dataset(name, x, y, x_val, y_val, x_test, y_test, len(classes), 255.0, tuple(classes)), skipped
    data = ImageData(name, train_d, val_d, test_d, classes, shape, False)
    data.mean, data.std = _normalization(train_d, shape)
    data.notes.append(f"{name} decoded into memory: {len(train_d):,} training images"
                      + (" of several sizes, each transformed to the input" if len(sizes) > 1 else ""))
    return data, skipped
