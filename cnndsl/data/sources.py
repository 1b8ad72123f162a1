"""The data source registry: the one place that knows every kind of `--data` source.

    digits, mnist, fashion-mnist, cifar10, cifar100     built-in datasets (names a spec's `data =` may use)
    synthetic[:N]                                       random images of the spec's shape (throughput)
    npz:PATH                                            arrays in a .npz file
    folder:PATH                                         a folder of PNG/JPEG images, one subfolder per class
    shapes, masks:PATH                                  per-pixel labels: images/ and masks/ (cnndsl.data.segmentation)
    records:DIR                                         ArrayRecord shards written by `cnndsl data pack`

For each kind the registry gives how it is written (`parse_source`: a located hint for a mistyped one), its
absolute form (`absolute_source`: a run records it, so eval, predict and export work from any directory)
and how it is opened (`open_source`: arrays in memory, or image files through the input pipeline).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnndsl.data.errors import DataError
from cnndsl.lang.errors import closest
from cnndsl.lang.settings import DATA_NAMES


class SourceError(DataError):
    """A source that is not written as any kind is: what is wrong (`message`) and how to write it (`hint`)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(f"{message}; {hint}")
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class SourceKind:
    """One kind of data source: its name (`npz`), how it is written (`npz:PATH`), whether it names a file or
    folder (made absolute when a run records it), whether its images go through the input pipeline, and
    whether `load_dataset` can also hold them as arrays (records only stream)."""

    name: str
    form: str
    path: bool = False
    pipeline: bool = False
    arrays: bool = True


KINDS: tuple[SourceKind, ...] = (
    *(SourceKind(name, name) for name in DATA_NAMES if name != "synthetic"),
    SourceKind("npz", "npz:PATH", path=True),
    SourceKind("folder", "folder:PATH", path=True, pipeline=True),
    SourceKind("masks", "masks:PATH", path=True, pipeline=True),  # arrays when they fit, else streamed
    SourceKind("records", "records:DIR", path=True, pipeline=True, arrays=False),
    SourceKind("synthetic", "synthetic[:N]"),
)
_BY_NAME = {kind.name: kind for kind in KINDS}
#: How each source is written, as help texts list them.
SOURCES = tuple(kind.form for kind in KINDS)
# The built-in names are the language's (a spec's `data =` line may use them: cnndsl.lang.settings.DATA_NAMES);
# their loaders are cnndsl.data.datasets (BUILTIN_SHAPES), which tests/data/test_sources.py checks cover them all.


def parse_source(source: str) -> tuple[SourceKind, str]:
    """(kind, argument) of a source (`folder:img` -> folder, "img"); a `SourceError` with a suggestion otherwise."""
    name, colon, rest = source.partition(":")
    kind = _BY_NAME.get(name)
    if kind is None or (colon and not kind.path and kind.name != "synthetic"):
        guess = closest(name, list(_BY_NAME))
        raise SourceError(f"unknown data source {source!r}",
                          (f"did you mean {guess!r}? " if guess else "") + f"sources: {', '.join(SOURCES)}")
    if kind.path and not rest:
        raise SourceError(f"{source}: no path", f"write it as {kind.form}")
    if kind.name == "synthetic" and rest and not rest.isdigit():
        raise SourceError(f"{source}: synthetic:N takes a whole number of images", "e.g. synthetic:10000")
    return kind, rest


def absolute_source(source: str) -> str:
    """`source` with the path of a `npz:`, `folder:` or `records:` source made absolute (others as given)."""
    name, colon, rest = source.partition(":")
    kind = _BY_NAME.get(name)
    if colon and kind is not None and kind.path and rest:
        return f"{name}:{Path(rest).expanduser().absolute()}"
    return source


def through_pipeline(source: str) -> bool:
    """Whether a source's images are read through the input pipeline (folder:, records:)."""
    kind = _BY_NAME.get(source.partition(":")[0])
    return kind is not None and kind.pipeline


def open_source(source: str, *, shape: tuple[int, int, int], num_classes: int | None, data_dir: str | None = None,
                val_fraction: float = 0.1, augment: tuple[str, ...] = (), stream: str = "auto",
                resize: bool = False, progress: Callable[[str], None] | None = None
                ) -> tuple[Any, list[str], list[str]]:
    """A training run's data for a network of input `shape` and `num_classes`: (dataset, messages about
    images skipped as unreadable, notes on how it is read). Arrays (`cnndsl.data.datasets.Dataset`) for most
    kinds; folder:/records: images through the input pipeline (`cnndsl.data.pipeline.open_images`,
    streamed or decoded into memory as `stream` says)."""
    from cnndsl.data.loading import load_dataset  # here: numpy and the loaders, not needed to parse a source

    kind, _ = parse_source(source)
    if not kind.pipeline:
        if stream == "stream":
            raise DataError(f"--stream reads folder:PATH and records:DIR sources; {source} is loaded into memory")
        return load_dataset(source, data_dir, progress=progress, val_fraction=val_fraction, shape=shape,
                            num_classes=num_classes), [], []
    from cnndsl.data.pipeline import (
        open_images,  # here: Grain and the pipeline only for image files
    )

    data, skipped = open_images(source, shape=shape, augment=augment, mode=stream, val_fraction=val_fraction,
                                resize=resize)
    notes = getattr(data, "notes", [f"{source} decoded into memory: {len(data.y_train):,} training images of one "
                                    "size, held on the device"])
    return data, skipped, list(notes)
