"""`load_dataset(source)`: any source held as arrays, whole-image labels (`cnndsl.data.datasets`) or per-pixel
labels (`cnndsl.data.segmentation`); the one entry point above both loaders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cnndsl.data import datasets
from cnndsl.data.datasets import VAL_FRACTION, Dataset, with_validation
from cnndsl.data.segmentation import masks_dataset, shapes_dataset


def load_dataset(source: str, data_dir: str | Path | None = None, download: bool = True,
                 progress: Callable[[str], None] | None = None, val_fraction: float = VAL_FRACTION,
                 shape: tuple[int, ...] | None = None, num_classes: int | None = None) -> Dataset:
    """Load a dataset by source name (`cnndsl.data.datasets.load_dataset` documents the arguments); `shapes`
    and `masks:PATH` (per-pixel labels at the network's input `shape`) come from `cnndsl.data.segmentation`."""
    kind, _, rest = source.partition(":")
    if source == "shapes":
        return with_validation(shapes_dataset(), val_fraction)
    if kind == "masks" and rest:
        return with_validation(masks_dataset(Path(rest), shape), val_fraction)
    return datasets.load_dataset(source, data_dir, download, progress, val_fraction, shape, num_classes)
