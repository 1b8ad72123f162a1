"""Packed records: `cnndsl data pack folder:PATH -o DIR` and the `records:DIR` source.

Format: ArrayRecord, the random-access record format Grain reads natively (`ArrayRecordDataSource`): a
worker reads record i of any shard with one seek, so a global shuffle costs no more than a sequential read,
and there is no index to build (TFRecord is sequential; a folder of files costs a file open per image).
Each record is one example: its label (uint32, little-endian), the length of its name (uint16) and the
name (UTF-8, the file it came from), then the image file's bytes as they were (no re-encoding: a record
decodes to exactly the pixels of its file). Shards are `<split>-NNNNN.array_record`;
`manifest.json` lists, per split, the shards with their example counts, sizes and SHA-256 checksums, and the
class names; `labels-<split>.npy` holds each split's labels for sampling without reading records.

Packing can resume: every shard is written under a temporary name and renamed when complete, and
`manifest.partial.json` records the finished shards, so a second run of the same command checks them
(size and checksum) and writes only the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnndsl.data.datasets import npy_header
from cnndsl.data.examples import Examples, FileExamples
from cnndsl.data.images import ImageError
from cnndsl.lang.outputs import write_atomic

FORMAT = "cnndsl-records/1"
SHARD_SIZE = 10_000  # examples per shard (about 1 GB of ImageNet JPEGs)


class RecordsError(Exception):
    """A records folder that cannot be read or written; the message says why."""


def encode(label: int, name: str, image: bytes) -> bytes:
    """One example as a record."""
    encoded = name.encode("utf-8", "surrogateescape")[:65535]  # a file name that is not UTF-8 keeps its bytes
    return struct.pack("<IH", label, len(encoded)) + encoded + image


def decode_record(record: bytes) -> tuple[int, str, bytes]:
    """(label, name, image bytes) of a record."""
    label, length = struct.unpack_from("<IH", record)
    return label, record[6:6 + length].decode(errors="replace"), record[6 + length:]


@dataclass
class RecordExamples(Examples):
    """A split of a records folder: Grain's ArrayRecordDataSource over its shards, opened on first use (in
    each worker process)."""

    shards: list[str]
    labels: np.ndarray
    counts: list[int] = field(default_factory=list)  # examples per shard, as the manifest says
    _source: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"shards": self.shards, "labels": self.labels, "counts": self.counts, "_source": None}  # no reader

    def _record(self, index: int) -> tuple[int, str, bytes]:
        try:
            if self._source is None:
                from grain.sources import ArrayRecordDataSource

                self._source = ArrayRecordDataSource(self.shards)
            return decode_record(self._source[index])
        except (RuntimeError, OSError, ValueError, struct.error) as err:  # ArrayRecord's checksums, a short record
            # an ImageError, so that the pipeline skips and counts it as it does a damaged image file
            raise ImageError(f"{self._where(index)} cannot be read ({str(err).splitlines()[0][:160]}); the shard is "
                             "damaged: pack the folder again (manifest.json holds each shard's SHA-256)") from None

    def _where(self, index: int) -> str:
        """`SHARD: record K` for example `index`, from the manifest's counts."""
        first = 0
        for shard, count in zip(self.shards, self.counts):
            if index < first + count:
                return f"{shard}: record {index - first}"
            first += count
        return f"{self.shards[0] if len(self.shards) == 1 else 'records'}: record {index}"

    def image(self, index: int) -> bytes:
        """The image file's bytes of example `index`."""
        return self._record(index)[2]

    def name(self, index: int) -> str:
        """The file the example was packed from."""
        return self._record(index)[1]


def open_records(directory: Path) -> tuple[dict[str, RecordExamples], tuple[str, ...]]:
    """The splits of a packed folder (train, test, and val when packed) and the class names; a RecordsError
    naming the file when the manifest is missing or not of the shape `pack` writes, names a file outside the
    folder, a shard is missing or of the wrong size, or a split's labels are not its classes' numbers."""
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        partial = " (packing was interrupted: run the same `cnndsl data pack` again)" if (
            directory / "manifest.partial.json").is_file() else ""
        raise RecordsError(f"{directory}: no manifest.json; not a folder written by `cnndsl data pack`{partial}")
    manifest = _read_manifest(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise RecordsError(f"{manifest_path}: format {found!r}, this cnndsl reads {FORMAT}; pack the folder again")
    try:
        classes = tuple(manifest["classes"])
        if not classes or not all(isinstance(c, str) for c in classes) or not isinstance(manifest["splits"], dict):
            raise TypeError("classes must be names, splits an object")
        splits = {split: _split(directory, split, info, len(classes)) for split, info in manifest["splits"].items()}
        if "train" not in splits or "test" not in splits:
            raise KeyError("train and test splits")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise RecordsError(f"{manifest_path}: not a records manifest as `cnndsl data pack` writes ({type(err).__name__}: "
                           f"{str(err)[:160]}); pack the folder again") from None
    return splits, classes


MAX_MANIFEST_BYTES = 64 << 20  # a manifest lists ~150 bytes per shard: 400,000 shards


def _read_manifest(path: Path) -> Any:
    """The JSON of a manifest (at most MAX_MANIFEST_BYTES), or None when it is not JSON."""
    try:
        with path.open("rb") as stream:
            text = stream.read(MAX_MANIFEST_BYTES + 1)
        return json.loads(text) if len(text) <= MAX_MANIFEST_BYTES else None
    except (OSError, ValueError):
        return None


def _split(directory: Path, split: str, info: dict[str, Any], num_classes: int) -> RecordExamples:
    """One split of a records folder, its shards and labels checked against its manifest entry."""
    shards, counts = [], []
    for shard in info["shards"]:
        name = shard["file"]
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise RecordsError(f"{directory / 'manifest.json'}: shard {name!r} is not a file name inside the folder; "
                               "a manifest names only its own shards")
        path = directory / name
        if not path.is_file() or path.is_symlink() or path.stat().st_size != shard["bytes"]:
            raise RecordsError(f"{path}: missing or not {shard['bytes']:,} bytes as the manifest says; pack again")
        shards.append(str(path))
        counts.append(int(shard["count"]))
    count = int(info["count"])
    if count != sum(counts):
        raise RecordsError(f"{directory / 'manifest.json'}: split {split} counts {count} examples, its shards "
                           f"{sum(counts)}; pack the folder again")
    labels_path = directory / f"labels-{split}.npy"
    labels = _labels(labels_path, count)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise RecordsError(f"{labels_path}: label {int(labels[bad[0]])} of example {int(bad[0])} is not one of the "
                           f"{num_classes} classes (0..{num_classes - 1}); pack the folder again")
    return RecordExamples(shards, labels.astype(np.int32), counts)


def _labels(path: Path, count: int) -> np.ndarray:
    """A split's labels file: `count` integers (its size checked from the header before reading)."""
    try:
        with open(path, "rb") as f:
            shape, _, dtype = npy_header(f)
            if shape != (count,) or not np.issubdtype(dtype, np.integer) or dtype.hasobject:
                raise RecordsError(f"{path}: {'x'.join(map(str, shape)) or 'a scalar'} of {dtype}, expected {count} "
                                   "integer labels as the manifest says; pack the folder again")
            labels = np.fromfile(f, dtype=dtype, count=count)
    except OSError as err:
        raise RecordsError(f"{path}: cannot be read ({err.strerror or err}); pack the folder again") from None
    except ValueError as err:
        raise RecordsError(f"{path}: not a labels array ({err}); pack the folder again") from None
    if len(labels) != count:
        raise RecordsError(f"{path}: truncated ({len(labels)} of {count} labels); pack the folder again")
    return labels


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pack(splits: dict[str, FileExamples], classes: tuple[str, ...], out: Path, source: str,
         shard_size: int = SHARD_SIZE, progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Write the splits' files as ArrayRecord shards in `out` with a manifest; resumes an interrupted pack of
    the same source. `progress(split, done, total)` is called as examples are written. Returns the manifest."""
    try:
        from array_record.python.array_record_module import ArrayRecordWriter
    except ImportError:
        raise RecordsError("packing records needs ArrayRecord: pip install 'cnndsl[stream]'") from None

    _check_sizes(splits)
    try:
        str(out.absolute()).encode("utf-8")
    except UnicodeEncodeError:
        raise RecordsError(f"{out}: ArrayRecord takes only UTF-8 paths and this one is not; choose another "
                           "folder name") from None
    out.mkdir(parents=True, exist_ok=True)
    partial_path = out / "manifest.partial.json"
    plan = {"format": FORMAT, "source": source, "classes": list(classes), "shard_size": shard_size,
            "counts": {split: len(examples) for split, examples in splits.items()}}
    done: dict[str, dict[str, Any]] = {}
    if partial_path.is_file():
        partial = _read_manifest(partial_path)
        if isinstance(partial, dict) and partial.get("plan") == plan and isinstance(partial.get("shards"), list):
            for shard in partial["shards"]:  # the same packing: keep its finished shards that check out
                if _finished(out, shard):
                    done[shard["file"]] = shard
    manifest: dict[str, Any] = {"format": FORMAT, "source": source, "classes": list(classes), "splits": {}}
    for split, examples in splits.items():
        shards = []
        count = len(examples)
        for first in range(0, count, shard_size):
            name = f"{split}-{first // shard_size:05d}.array_record"
            if name not in done:
                temporary = out / (name + ".part")
                writer = ArrayRecordWriter(str(temporary), "group_size:1")
                try:
                    for index in range(first, min(count, first + shard_size)):
                        path = examples.image(index)
                        writer.write(encode(examples.label(index), examples.name(index), path.read_bytes()))
                        if progress and (index + 1) % 64 == 0:
                            progress(split, index + 1, count)
                finally:
                    writer.close()
                os.replace(temporary, out / name)
                done[name] = {"file": name, "count": min(count, first + shard_size) - first,
                              "bytes": (out / name).stat().st_size, "sha256": _sha256(out / name)}
                _write_json(partial_path, {"plan": plan, "shards": list(done.values())})
            shards.append(done[name])
            if progress:
                progress(split, min(count, first + shard_size), count)
        np.save(out / f"labels-{split}.npy", np.asarray(examples.labels, np.int32))
        manifest["splits"][split] = {"count": count, "shards": shards}
    _write_json(out / "manifest.json", manifest)
    partial_path.unlink(missing_ok=True)
    return manifest


#: The largest image file `pack` takes: a record holds the file's bytes, and packing reads each whole. A
#: 7,000 x 7,000 photo (MAX_IMAGE_PIXELS) is ~25 MB as a JPEG, up to ~150 MB as an 8-bit RGB PNG.
MAX_IMAGE_FILE_BYTES = 256 << 20


def _check_sizes(splits: dict[str, FileExamples]) -> None:
    """A RecordsError naming the first image file larger than MAX_IMAGE_FILE_BYTES, before anything is written."""
    for examples in splits.values():
        for index in range(len(examples)):
            path = examples.image(index)
            try:
                size = path.stat().st_size
            except OSError as err:
                raise RecordsError(f"{path}: cannot be read ({err.strerror or err})") from None
            if size > MAX_IMAGE_FILE_BYTES:
                raise RecordsError(f"{path}: {size:,} bytes, more than one image file may have in a record "
                                   f"({MAX_IMAGE_FILE_BYTES:,}); shrink or remove it, then pack again")


def _finished(out: Path, shard: Any) -> bool:
    """Whether a shard an interrupted pack recorded is a shard of `out` whose bytes still check out."""
    try:
        name = shard["file"]
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".array_record"):
            return False
        path = out / name
        return path.is_file() and path.stat().st_size == shard["bytes"] and _sha256(path) == shard["sha256"]
    except (TypeError, KeyError, OSError):
        return False


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=1))
