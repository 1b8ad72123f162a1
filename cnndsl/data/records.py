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

from cnndsl.data.examples import Examples, FileExamples

FORMAT = "cnndsl-records/1"
SHARD_SIZE = 10_000  # examples per shard (about 1 GB of ImageNet JPEGs)


class RecordsError(Exception):
    """A records folder that cannot be read or written; the message says why."""


def encode(label: int, name: str, image: bytes) -> bytes:
    """One example as a record."""
    encoded = name.encode()[:65535]
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
    _source: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"shards": self.shards, "labels": self.labels, "_source": None}  # the reader stays behind

    def _record(self, index: int) -> tuple[int, str, bytes]:
        if self._source is None:
            from grain.sources import ArrayRecordDataSource

            self._source = ArrayRecordDataSource(self.shards)
        return decode_record(self._source[index])

    def image(self, index: int) -> bytes:
        """The image file's bytes of example `index`."""
        return self._record(index)[2]

    def name(self, index: int) -> str:
        """The file the example was packed from."""
        return self._record(index)[1]


def open_records(directory: Path) -> tuple[dict[str, RecordExamples], tuple[str, ...]]:
    """The splits of a packed folder (train, test, and val when packed) and the class names; a RecordsError
    when the manifest is missing or a shard is missing or of the wrong size."""
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        partial = " (packing was interrupted: run the same `cnndsl data pack` again)" if (
            directory / "manifest.partial.json").is_file() else ""
        raise RecordsError(f"{directory}: no manifest.json; not a folder written by `cnndsl data pack`{partial}")
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            raise RecordsError(f"{manifest_path}: format {manifest.get('format')!r}, this cnndsl reads {FORMAT}")
        splits = {}
        for split, info in manifest["splits"].items():
            shards = []
            for shard in info["shards"]:
                path = directory / shard["file"]
                if not path.is_file() or path.stat().st_size != shard["bytes"]:
                    raise RecordsError(f"{path}: missing or not {shard['bytes']:,} bytes as the manifest says; pack "
                                       "again")
                shards.append(str(path))
            labels = np.load(directory / f"labels-{split}.npy", allow_pickle=False).astype(np.int32)
            if len(labels) != info["count"]:
                raise RecordsError(f"{directory}: labels-{split}.npy has {len(labels)} labels, the manifest "
                                   f"{info['count']} examples")
            splits[split] = RecordExamples(shards, labels)
        return splits, tuple(manifest["classes"])
    except (KeyError, TypeError, ValueError, OSError) as err:
        raise RecordsError(f"{manifest_path}: not a readable records manifest ({type(err).__name__}: {err})") from None


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

    out.mkdir(parents=True, exist_ok=True)
    partial_path = out / "manifest.partial.json"
    plan = {"format": FORMAT, "source": source, "classes": list(classes), "shard_size": shard_size,
            "counts": {split: len(examples) for split, examples in splits.items()}}
    done: dict[str, dict[str, Any]] = {}
    if partial_path.is_file():
        try:
            partial = json.loads(partial_path.read_text())
        except ValueError:
            partial = {}
        if partial.get("plan") == plan:  # the same packing: keep its finished shards that check out
            for shard in partial.get("shards", []):
                path = out / shard["file"]
                if path.is_file() and path.stat().st_size == shard["bytes"] and _sha256(path) == shard["sha256"]:
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


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)
