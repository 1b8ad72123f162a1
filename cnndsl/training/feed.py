"""What the training loop draws its batches from: `ArrayFeed` (a dataset held on the devices; each step
gathers its batch there) or `StreamFeed` (the Grain pipeline of cnndsl.data.pipeline: batches decoded on
the host by worker processes, this process's share of each). Both order epoch e by `epoch_order`, so the
same images in either give the same batches.

Runs in the training process only (it imports JAX); the worker processes never import it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cnndsl.data import Dataset
from cnndsl.data.pipeline import (
    ImageData,
    default_workers,
    epoch_order,
    eval_batches,
    iterator_state,
    restore_state,
    train_batches,
    why_bad,
)
from cnndsl.training.steps import EVAL_BATCH


class TooManyBadImages(Exception):
    """More unreadable images than --max-bad-images: the message names them."""


class ArrayFeed:
    """A dataset small enough to live on the devices: the arrays placed once, an epoch's order per epoch."""

    def __init__(self, data: Dataset, placement: Any, seed: int) -> None:
        self.data, self.placement, self.seed = data, placement, seed
        x, y, x_val, y_val, x_test, y_test = placement.replicate(
            (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test))
        self.x, self.y = x, y
        self.splits = {"val": (x_val, y_val), "test": (x_test, y_test)}
        self.order: Any = None
        self.bad_images = 0

    def __len__(self) -> int:
        return len(self.data.x_train)

    def start_epoch(self, epoch: int) -> None:
        """Place epoch `epoch`'s order on the devices."""
        self.order = self.placement.replicate(epoch_order(self.seed, epoch, len(self)).astype(np.int32))

    def batch(self, index: int) -> tuple[Any, ...]:
        """The train step's data arguments for batch `index` of the epoch: (x, y, order, index, weights)."""
        return self.x, self.y, self.order, np.int32(index), None

    def evaluate(self, trainer: Any, params: Any, stats: Any) -> dict[str, Any]:
        """(mean loss, accuracy, dense metrics) of the val and test splits (`Trainer.evaluate`)."""
        return dict(zip(self.splits, trainer.evaluate(params, stats, *self.splits.values())))

    def prepare_evaluation(self, trainer: Any, params: Any, stats: Any) -> None:
        """Compile what `evaluate` runs, ahead of it (see `Trainer.prepare_evaluation`)."""
        trainer.prepare_evaluation(params, stats, *self.splits.values())

    def state(self) -> dict[str, Any]:
        """Nothing to checkpoint: the order is a function of the seed and the epoch."""
        return {}

    def close(self) -> None:
        """Nothing to stop."""


class StreamFeed:
    """Batches from the input pipeline: this process's share of each global batch, put on the devices as
    one global array. Unreadable images arrive with weight 0 and are named (`warn`) and counted; more
    than `max_bad` distinct ones stop the run."""

    def __init__(self, data: ImageData, placement: Any, settings: Any, steps_per_epoch: int,
                 warn: Callable[[str], None], saved_state: np.ndarray | None = None) -> None:
        import jax

        self.data, self.placement, self.settings, self.warn = data, placement, settings, warn
        # Decoded images stay in this process (threads crop them): worker processes would each get a copy.
        self.workers = 0 if not data.streamed else default_workers() if settings.workers < 0 else settings.workers
        self.process, self.processes = jax.process_index(), jax.process_count()
        self.iterator = train_batches(data, seed=settings.seed, batch=settings.batch_size,
                                      steps_per_epoch=steps_per_epoch, epochs=settings.epochs,
                                      workers=self.workers, random_crop="resized-crop" in settings.augment,
                                      process=self.process, processes=self.processes)
        if saved_state is not None:
            restore_state(self.iterator, saved_state)
        self.bad: dict[tuple[str, int], str] = {}

    def __len__(self) -> int:
        return len(self.data.train)

    @property
    def bad_images(self) -> int:
        """Distinct unreadable images met so far (this process's)."""
        return len(self.bad)

    def start_epoch(self, epoch: int) -> None:
        """Nothing to do: the pipeline runs through every epoch in order."""

    def batch(self, index: int) -> tuple[Any, ...]:
        """The next batch's train-step arguments: (x, y, None, None, weights)."""
        batch = next(self.iterator)
        self._note_bad("train", batch["bad"])
        place = self.placement.local_batch
        return place(batch["image"]), place(batch["label"]), None, None, place(batch["weight"])

    def _note_bad(self, split: str, bad: np.ndarray) -> None:
        examples = getattr(self.data, split)
        for index in (int(b) for b in bad if b >= 0):
            if (split, index) not in self.bad:
                self.bad[(split, index)] = message = why_bad(examples, index)
                self.warn(f"skipped an unreadable image: {message}")
        if len(self.bad) > self.settings.max_bad_images:
            names = "; ".join(list(self.bad.values())[:5])
            raise TooManyBadImages(f"{len(self.bad)} unreadable images, more than --max-bad-images "
                                   f"{self.settings.max_bad_images} ({names}); fix or remove them, or raise the limit")

    def prepare_evaluation(self, trainer: Any, params: Any, stats: Any) -> None:
        """Nothing ahead of time: streamed evaluation compiles its one batch program on first use."""

    def evaluate(self, trainer: Any, params: Any, stats: Any) -> dict[str, Any]:
        """(mean loss, accuracy, {}) of the val and test splits, streamed through the pipeline."""

        size = max(self.processes, EVAL_BATCH // self.processes * self.processes)
        results: dict[str, Any] = {}
        for split in ("val", "test"):
            batches = eval_batches(self.data, split, size, self.workers, self.process, self.processes)
            try:
                outcome = trainer.evaluate_stream(params, stats, batches, self.placement.local_batch)
            finally:
                close_iterator(batches)
            if outcome is not None:
                self._note_bad(split, np.asarray(outcome[3], np.int64))
            results[split] = (outcome[0], outcome[1], outcome[4]) if outcome is not None else None
        return results

    def state(self) -> dict[str, Any]:
        """The pipeline's position, saved in each checkpoint (exact resume)."""
        return {"iterator": iterator_state(self.iterator)}

    def close(self) -> None:
        """Stop the worker processes."""
        close_iterator(self.iterator)


def close_iterator(iterator: Any) -> None:
    """Stop a pipeline iterator's workers, and wait until the shared memory of its batches is released: Grain
    frees it on a background thread, which an exiting process would not wait for
    (Python's resource tracker then warns of "leaked shared_memory objects" and frees them itself)."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
    try:
        from grain._src.python.ipc.shared_memory_array import SharedMemoryArray
    except ImportError:  # another Grain layout: its own clean-up stands
        return
    import gc

    # Batches handed out or still buffered can sit in reference cycles, which only the collector frees; it
    # also runs the finalizer of each one's shared memory, so with Grain's background thread releasing the
    # same memory, two threads would close one file descriptor (the second close hitting whatever file took
    # the number in between: seen as orbax's EBADF while a checkpoint was written). While this collection
    # runs, the arrays release their memory on this thread, one after the other.
    pool = getattr(SharedMemoryArray, "_del_thread_pool", None)
    if pool is not None:
        pool.apply(int)  # one thread, in order: returns once every release queued before it has run
    SharedMemoryArray._del_thread_pool = None
    try:
        gc.collect()
    finally:
        SharedMemoryArray._del_thread_pool = pool
