"""A training run's directory: what it holds, the lock that lets one trainer at a time use it, and the
checked reading of what an earlier run saved.

    settings.json     the resolved settings and what the run derived (written first, atomically)
    spec.cnn          the spec as trained                 metrics.jsonl   one line per epoch
    curves.png        loss and accuracy per epoch         checkpoints/    orbax: last/ and best/
    .lock             held (fcntl) by the process training the run, with its PID
    events.out.tfevents.*   TensorBoard's event files (cnndsl.training.events), one per process that trained it

Everything read back is validated: a damaged or hand-edited file is a `TrainingError` that names the
file (and line) and what is wrong, never a crash. A run directory holds a run as soon as its
settings.json exists, so a run killed before its first checkpoint can be resumed from step 0.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from cnndsl.lang.jsonchecks import is_count, is_number, is_shape
from cnndsl.lang.outputs import check_output_dir, write_atomic
from cnndsl.lang.settings import Settings, TrainingError

FORMAT = "cnndsl.run/1"
SETTINGS, SPEC, METRICS, CURVES, CHECKPOINTS, LOCK = (
    "settings.json", "spec.cnn", "metrics.jsonl", "curves.png", "checkpoints", ".lock")
#: The numbers each metrics.jsonl line holds.
METRIC_FIELDS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "images_per_s", "seconds")
#: Numbers a metrics line may hold: validation figures (null without a validation split) and the parts of
#: `seconds` (absent from lines written before cnndsl recorded them).
OPTIONAL_METRIC_FIELDS = ("val_loss", "val_accuracy", "train_seconds", "eval_seconds", "checkpoint_seconds",
                          "val_miou", "test_miou")  # mean IoUs: segmentation runs


class RunDir:
    """One run directory. `create` (a new run) or `open` (resume) takes its lock; `release` lets it go."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._settings: dict[str, Any] | None = None  # as last read or written

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        """A file of the run: `run.file(METRICS)`."""
        return self.path / name

    @property
    def checkpoints(self) -> Path:
        """The orbax checkpoint folder (last/ and best/)."""
        return self.path / CHECKPOINTS

    def holds_run(self) -> bool:
        """Whether the directory holds a run (its settings.json exists)."""
        return self.file(SETTINGS).is_file()

    # ---- the lock -------------------------------------------------------------------------------------
    def create(self, inputs: list[str]) -> None:
        """Make the directory of a new run and lock it: it must be new or empty (`cnndsl.lang.outputs`)."""
        check_output_dir(self.path, "run", inputs=inputs, make_parents=True)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrainingError(f"cannot create the run directory {self.path}: {err.strerror}") from None
        self.lock()
        if self.holds_run():  # another process started a run here between the check and the lock
            self.release()
            raise TrainingError(f"{self.path} already holds a run; continue it with --resume {self.path}")

    def open(self) -> None:
        """Lock the directory of an existing run to continue it."""
        if not self.path.is_dir():
            raise TrainingError(f"{self.path} is not a run directory (no such folder)")
        if not self.holds_run():
            raise TrainingError(f"{self.path} is not a training run (no {SETTINGS}); start a new run instead")
        self.lock()

    def lock(self) -> None:
        """Take the run's exclusive lock, or say which process holds it. The lock (fcntl) is released by
        the system when the process ends, however it ends; the file records the holder's PID."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before (documented)
            return
        try:
            fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise TrainingError(f"cannot lock {self.path}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise TrainingError(f"{self.path} is being trained by process {holder}; wait for it to finish or stop "
                                "it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._lock_fd = fd

    def is_locked(self) -> bool:
        """Whether a process (this one included) holds the run's lock now: a live trainer."""
        try:
            import fcntl
        except ImportError:
            return False
        try:
            fd = os.open(self.file(LOCK), os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

    def release(self) -> None:
        """Let the lock go (closing the file releases it)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---- settings, spec, metrics ------------------------------------------------------------------------
    def write_settings(self, settings: dict[str, Any]) -> None:
        """settings.json, atomically, marked with the run format."""
        settings = {"format": FORMAT, **settings}
        write_atomic(self.file(SETTINGS), json.dumps(settings, indent=1) + "\n")
        self._settings = settings

    def read_settings(self) -> dict[str, Any]:
        """settings.json, checked: the settings themselves (`Settings.from_run`) and what the run derived.
        Read once; later calls return what was read (or written since)."""
        if self._settings is not None:
            return self._settings
        path = self.file(SETTINGS)
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            raise TrainingError(f"{self.path} is not a training run (no {SETTINGS})") from None
        except (OSError, ValueError) as err:
            raise TrainingError(f"{path}: not readable JSON ({err}); the file is damaged") from None
        if not isinstance(saved, dict):
            raise TrainingError(f"{path}: not a run's settings (a JSON object is expected)")
        norm = saved.get("normalization")
        checks = [
            (is_count(saved.get("steps_per_epoch")), "steps_per_epoch must be a whole number of at least 1"),
            (is_count(saved.get("num_classes")), "num_classes must be a whole number of at least 1"),
            (isinstance(saved.get("classes", []), list) and all(isinstance(c, str) for c in saved.get("classes", [])),
             "classes must be a list of names"),
            (is_shape(saved.get("input_shape"), 3), "input_shape must be [H, W, C]"),
            (isinstance(saved.get("spec", ""), str), "spec must be the spec's text"),
            (isinstance(saved.get("bindings") or {}, dict) and all(
                isinstance(v, (str, int, float, bool)) for v in (saved.get("bindings") or {}).values()),
             "bindings must map names to values"),
            (isinstance(norm, dict) and is_number(norm.get("scale")) and norm["scale"] > 0
             and isinstance(norm.get("mean"), list) and isinstance(norm.get("std"), list)
             and len(norm["mean"]) == len(norm["std"]) >= 1 and all(is_number(m) for m in norm["mean"])
             and all(is_number(s) and s > 0 for s in norm["std"]),
             "normalization must hold a positive scale and one finite mean and positive std per channel"),
        ]
        for ok, what in checks:
            if not ok:
                raise TrainingError(f"{path}: {what}; the file is damaged or was edited")
        try:
            Settings.from_run(saved).validate()
        except TrainingError as err:
            raise TrainingError(f"{path}: {err}") from None
        self._settings = saved
        return saved

    def write_spec(self, text: str) -> None:
        """The spec as trained."""
        write_atomic(self.file(SPEC), text)

    def spec_path(self) -> Path:
        """The run's spec.cnn; written again from settings.json's copy if a kill came between the two."""
        path = self.file(SPEC)
        if not path.exists():
            text = self.read_settings().get("spec")
            if not isinstance(text, str):
                raise TrainingError(f"{self.path} has no {SPEC}; give the spec the run was trained with")
            self.write_spec(text)
        return path

    def bindings(self) -> dict[str, Any] | None:
        """The `--set` bindings the run was trained with (None when it had none)."""
        return self.read_settings().get("bindings") or None

    def read_metrics(self, completed_epochs: int) -> list[dict[str, Any]]:
        """The metrics of the first `completed_epochs` epochs; later lines (written after the checkpoint a
        resume starts from) are dropped from the file. A damaged line is an error naming the line."""
        path = self.file(METRICS)
        try:
            lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        except (OSError, UnicodeDecodeError) as err:
            raise TrainingError(f"{path}: cannot read it ({err})") from None
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not (isinstance(record, dict) and is_count(record.get("epoch")) and is_count(record.get("step"), 0)
                    and all(is_number(record.get(k)) for k in METRIC_FIELDS)
                    and all(record.get(k) is None or is_number(record[k]) for k in OPTIONAL_METRIC_FIELDS)):
                raise TrainingError(f"{path}:{number}: not a metrics record of this run; the file is damaged "
                                    "(remove the line to resume)")
            records.append(record)
        by_epoch = {r["epoch"]: r for r in records}  # one line per epoch: the last written wins
        kept = [by_epoch[e] for e in sorted(by_epoch) if e <= completed_epochs]
        if kept != records or not path.exists():
            write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
        return kept

    def append_metrics(self, record: dict[str, Any]) -> None:
        """One epoch's line."""
        with self.file(METRICS).open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")

    def drop_checkpoints_after(self, step: int) -> None:
        """Delete every checkpoint newer than `step` (damaged ones included, which orbax may not list, and
        orbax's unfinished temporary folders): the resumed run writes those steps again."""
        for manager in ("last", "best"):
            folder = self.checkpoints / manager
            for entry in folder.iterdir() if folder.is_dir() else ():
                stem = entry.name.split(".", 1)[0]
                if entry.is_dir() and stem.isdigit() and (int(stem) > step or "tmp" in entry.name):
                    shutil.rmtree(entry, ignore_errors=True)
