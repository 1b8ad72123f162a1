"""A run's orbax checkpoints: the `last` and `best` managers, saving off the loop's thread, restoring
(the newest good one on resume)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cnndsl.lang.settings import Settings, TrainingError
from cnndsl.training.distributed import barrier
from cnndsl.training.progress import Progress
from cnndsl.training.rundir import RunDir


def checkpoint_managers(run_dir: Path, keep: int) -> tuple[Any, Any]:
    import absl.logging
    import orbax.checkpoint as ocp

    # orbax logs what it finds wrong with a damaged checkpoint (with the file's content) as absl ERROR lines;
    # cnndsl reports each such problem itself, in one line, so orbax's logging is not for our users.
    absl.logging.set_verbosity(absl.logging.FATAL)

    def manager(name: str, max_to_keep: int) -> Any:
        # Asynchronous: a save returns once the arrays are copied off the device and writes in a background
        # thread while training goes on; orbax finalizes each step atomically (a kill mid-write leaves a
        # temporary folder, which a resume deletes). `_train` waits for the writes before it returns.
        # With several processes the saves are synchronous: each is a collective of all of them, and ending
        # one asynchronously in a background thread raced with the processes' exit.
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=jax.process_count() == 1)
        return ocp.CheckpointManager((run_dir / "checkpoints" / name).absolute(), options=options)

    return manager("last", keep), manager("best", 1)


class CheckpointDamaged(Exception):
    """A checkpoint whose arrays restored, but not as they were saved (a changed byte on disk)."""


def digest(tree: dict[str, Any]) -> str | None:
    """A BLAKE2b digest of every array of a checkpoint's state (parameters, statistics, optimizer state,
    step), or None when this process does not hold all of them (several processes). orbax keeps no checksum
    of array data: a flipped byte in a data file restores as a different weight, silently; this digest,
    saved in the checkpoint's metadata and compared after a restore, is how cnndsl notices. Hashing runs at
    about 1 GB/s, on the checkpoint worker's thread."""
    import hashlib

    total = hashlib.blake2b(digest_size=16)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return None
        values = np.ascontiguousarray(np.asarray(leaf))
        total.update(f"{jax.tree_util.keystr(path)}:{values.dtype}:{values.shape};".encode())
        total.update(memoryview(values).cast("B") if values.size else b"")
    return total.hexdigest()


def save_checkpoint(manager: Any, step: int, tree: dict[str, Any], checksum: str | None = None) -> None:
    """Start writing checkpoint `step` (asynchronously; see `checkpoint_managers`), with the `digest` of its
    arrays in its metadata (computed here unless given)."""
    import orbax.checkpoint as ocp

    checksum = checksum if checksum is not None else digest(tree)
    manager.save(step, args=ocp.args.StandardSave(tree), force=True,
                 custom_metadata={"cnndsl_digest": checksum} if checksum else None)


class Checkpointer:
    """A run's `last` and `best` managers behind one worker thread, so that saving costs the loop nothing.

    orbax's asynchronous save still blocks its caller for ~30 ms (copying the arrays to the host, creating
    folders, its bookkeeping): two saves were 8% of a LeNet epoch. Here the loop hands each snapshot to a
    single worker thread, which saves in order; `close` waits for every write and re-raises the first failure,
    as does the next `save` after one. Arrays are immutable, so the worker reads exactly the state it was
    given, unless the step donates its buffers (GPU/TPU): then the snapshot is copied on the device first.
    """

    def __init__(self, run_dir: Path, keep: int, donated: bool) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.last, self.best = checkpoint_managers(run_dir, keep)
        self.donated = donated
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnndsl-checkpoint")
        self._pending: list[Any] = []

    def save(self, step: int, tree: dict[str, Any], best: bool = False) -> None:
        """Queue checkpoint `step` of `last` (and of `best`)."""
        managers = (self.last, self.best) if best else (self.last,)
        if jax.process_count() > 1:
            # Several processes save together, and orbax synchronizes them: on the loop's own thread, so every
            # process meets those synchronizations and the steps' collectives in the same order.
            for manager in managers:
                save_checkpoint(manager, step, tree)
            return
        self._raise_failures(wait=False)
        if self.donated:
            tree = jax.tree.map(lambda a: jnp.copy(a) if isinstance(a, jax.Array) else a, tree)
        self._pending.append(self._worker.submit(self._save, managers, step, tree))

    @staticmethod
    def _save(managers: tuple[Any, ...], step: int, tree: dict[str, Any]) -> None:
        checksum = digest(tree)  # once for both managers, on the worker thread
        for manager in managers:
            save_checkpoint(manager, step, tree, checksum)

    def _raise_failures(self, wait: bool) -> None:
        still = []
        for future in self._pending:
            if wait or future.done():
                future.result()  # re-raises the worker's exception
            else:
                still.append(future)
        self._pending = still

    def close(self) -> None:
        """Every checkpoint queued is on disk (or its failure raised) when this returns."""
        try:
            self._raise_failures(wait=True)
        finally:
            self._worker.shutdown(wait=True)
            for manager in (self.last, self.best):
                manager.wait_until_finished()
                manager.close()


def restore(manager: Any, template: dict[str, Any], step: int | None = None) -> dict[str, Any] | None:
    """The newest (or given) checkpoint of a manager, shaped like `template`; None when there is none."""
    import orbax.checkpoint as ocp

    step = manager.latest_step() if step is None else step
    if step is None:
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    # orbax puts each array on its template's devices committed; a fresh state's single-device arrays are not,
    # and jit keys its programs on that, so a resumed run compiled its train step twice (for the restored
    # state, then for the step's own outputs). Those are restored uncommitted, as a fresh state's are.
    restored = jax.tree.map(lambda array, like: jax.device_put(np.asarray(array))
                            if isinstance(array, jax.Array) and isinstance(like, jax.Array) and not like.committed
                            else array, restored, template)
    saved = (manager.metadata(step).custom_metadata or {}).get("cnndsl_digest")
    if saved and digest(restored) not in (None, saved):  # runs before the digest have none: nothing to compare
        raise CheckpointDamaged(f"checkpoint step {step}: its parameters are not the ones saved (their digest "
                                "differs: a byte of a data file changed)")
    return restored


def restore_newest(run: RunDir, settings: Settings, template: dict[str, Any], progress: Progress,
                    ) -> dict[str, Any]:
    """The newest checkpoint of `run` that restores into `template`; damaged ones (empty or truncated files,
    a step orbax cannot list) are skipped and deleted with every checkpoint after the one restored, since
    the run writes those steps again. With no checkpoint at all (a run killed before its first), step 0."""
    folder = run.checkpoints / "last"
    steps = sorted((int(p.name) for p in folder.iterdir() if p.name.isdigit()), reverse=True) if folder.is_dir() else []
    restored, failures = None, []
    for saved in steps:
        try:  # a fresh manager per attempt: a failed restore can leave one unusable
            restored = restore(checkpoint_managers(run.path, settings.keep)[0], template, saved)
            break
        except Exception as err:  # noqa: BLE001 - orbax raises many types for a damaged or foreign checkpoint
            failures.append(f"step {saved}: {str(err).splitlines()[0][:160]}")
            progress.line(f"checkpoint step {saved} cannot be restored; trying an older one")
    if restored is None and failures:
        raise TrainingError(f"{run.path}: no checkpoint can be restored ({failures[0]}); resume with the spec and "
                            "--optimizer, --clip and --weight-decay the run started with, or, if the checkpoints are "
                            f"damaged, delete {folder} to start again from step 0")
    state = restored if restored is not None else template
    if jax.process_index() == 0:
        run.drop_checkpoints_after(int(state["step"]))
    barrier("cnndsl-checkpoints-cleaned")
    return state
