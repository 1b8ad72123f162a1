"""Random access to a split's examples, whatever holds them: image files, records, decoded pixels.

Picklable and free of JAX: Grain's worker processes receive them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class Examples:
    """A split's examples by index: `len`, `label(i)`, `image(i)` (a path, encoded bytes or decoded
    pixels for `images.transformed`) and `name(i)` (for messages)."""

    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def label(self, index: int) -> int:
        """The class number of example `index`."""
        return int(self.labels[index])

    def image(self, index: int) -> Path | bytes | np.ndarray:  # pragma: no cover - every kind defines it
        """What `images.transformed` takes for example `index`."""
        raise NotImplementedError

    def name(self, index: int) -> str:  # pragma: no cover - every kind defines it
        """Where example `index` comes from, for messages."""
        raise NotImplementedError

    def subset(self, indices: np.ndarray) -> Examples:
        """These examples only, in this order."""
        return Subset(self, np.asarray(indices, np.int64), self.labels[indices])


@dataclass
class FileExamples(Examples):
    """Image files, read when asked for."""

    paths: list[str]
    labels: np.ndarray
    classes: tuple[str, ...] = ()

    def image(self, index: int) -> Path:
        """The file of example `index`."""
        return Path(self.paths[index])

    def name(self, index: int) -> str:
        """The file's path."""
        return self.paths[index]

    def subset(self, indices: np.ndarray) -> FileExamples:
        """These examples only, in this order."""
        return FileExamples([self.paths[i] for i in indices], self.labels[indices], self.classes)


@dataclass
class MaskExamples(FileExamples):
    """Image files with per-pixel labels: `masks[i]` is the mask PNG of `paths[i]` (`labels` are unused
    zeros: the label of an example is its mask, read with its image)."""

    masks: list[str] = None  # type: ignore[assignment]

    def mask(self, index: int) -> Path:
        """The mask file of example `index`."""
        return Path(self.masks[index])

    def subset(self, indices: np.ndarray) -> MaskExamples:
        """These examples only, in this order."""
        return MaskExamples([self.paths[i] for i in indices], self.labels[indices], self.classes,
                            [self.masks[i] for i in indices])


@dataclass
class DecodedExamples(Examples):
    """Images decoded once and kept in memory (`--in-memory`), with the names they came from."""

    pixels: list[np.ndarray]
    labels: np.ndarray
    names: list[str]

    def image(self, index: int) -> np.ndarray:
        """The decoded pixels of example `index`."""
        return self.pixels[index]

    def name(self, index: int) -> str:
        """Where the image came from."""
        return self.names[index]


@dataclass
class Subset(Examples):
    """Some examples of another `Examples`, by index (the validation split held out of records)."""

    base: Examples
    indices: np.ndarray
    labels: np.ndarray

    def image(self, index: int) -> Path | bytes | np.ndarray:
        """The base's image."""
        return self.base.image(int(self.indices[index]))

    def name(self, index: int) -> str:
        """The base's name."""
        return self.base.name(int(self.indices[index]))
