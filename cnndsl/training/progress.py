"""What a run shows while it trains: the progress bar and epoch lines, and the clock of each epoch's parts."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


class EpochClock:
    """The wall time of each epoch and its parts, for its metrics record.

    `seconds` runs from the end of the previous epoch's record (the loop's start, for the first) to the end
    of this one's: the gap between two epoch lines. Its parts: `train_seconds` (the steps; in a process's
    first epoch, their compilation too), `eval_seconds` (validation and test), `checkpoint_seconds` (what
    handing checkpoints to the writer cost the loop: this epoch's mid-epoch ones and the previous epoch's
    end-of-epoch one, which is saved after that epoch's record); the remainder is bookkeeping.
    `images_per_s` is training throughput: the images of this epoch's steps over `train_seconds`.
    """

    def __init__(self) -> None:
        self._since = self._training_since = time.perf_counter()
        self._parts = {"train": 0.0, "eval": 0.0, "checkpoint": 0.0}
        self._in_training = False

    @contextlib.contextmanager
    def timing(self, part: str) -> Iterator[None]:
        """Add the time the block takes to `part` (a checkpoint inside training counts as checkpoint only)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            self._parts[part] += spent
            if part == "checkpoint" and self._in_training:
                self._parts["train"] -= spent

    def start_training(self) -> None:
        self._in_training, self._training_since = True, time.perf_counter()

    def stop_training(self) -> None:
        self._in_training = False
        self._parts["train"] += time.perf_counter() - self._training_since

    def record(self, images: int) -> dict[str, float]:
        """The epoch's figures; the clock then starts the next epoch."""
        now = time.perf_counter()
        figures = {"images_per_s": images / max(self._parts["train"], 1e-9), "seconds": now - self._since,
                   **{f"{part}_seconds": spent for part, spent in self._parts.items()}}
        self._since, self._parts = now, dict.fromkeys(self._parts, 0.0)
        return figures


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One epoch's summary, as the progress output prints it."""
    parts = [f"epoch {record['epoch']:>3}/{epochs}", f"loss {record['train_loss']:.4f}",
             f"acc {record['train_accuracy']:.2%}"]
    if record.get("val_accuracy") is not None:
        parts += [f"val loss {record['val_loss']:.4f}", f"val acc {record['val_accuracy']:.2%}"]
    if record.get("val_miou") is not None:  # segmentation: accuracies are pixel accuracies
        parts += [f"val mIoU {record['val_miou']:.2%}"]
    parts += [f"test acc {record['test_accuracy']:.2%}"]
    if record.get("test_miou") is not None:
        parts += [f"test mIoU {record['test_miou']:.2%}"]
    parts += [f"{record['images_per_s']:,.0f} img/s"]
    return "  ".join(parts)


def in_background(work: Callable[[], None]) -> Callable[[], None]:
    """Start `work` on a thread; the returned function waits for it and re-raises what it raised."""
    import threading

    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
            failure.append(err)

    thread = threading.Thread(target=run, name="cnndsl-background", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if failure:
            raise failure[0]

    return wait


@dataclass
class Progress:
    """Progress on stderr: a live bar of fixed width while an epoch runs when stderr is a terminal, and one
    plain line per event (an epoch's summary, a resume) either way, so a redirected log reads line by line
    with no bar redrawn into it. `quiet` leaves only warnings."""

    quiet: bool = False
    bar: Any = None
    task: Any = None
    live: bool = field(default_factory=lambda: sys.stderr.isatty())

    def start(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        if self.quiet or not self.live:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True,
                            console=Console(stderr=True))
        self.bar.start()
        self.task = self.bar.add_task("train", total=steps, completed=done, info="")

    def update(self, done: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, info=info)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def warn(self, text: str) -> None:
        """A warning: printed even when quiet (it is about the result, not the progress)."""
        print(f"warning: {text}", file=sys.stderr, flush=True)

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)
