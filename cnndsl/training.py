"""Training: `train(spec, settings)` fits a compiled network to a dataset, with checkpoints that survive a kill.

The loop is functional: parameters, batch-norm statistics and optimizer state are flat dicts of arrays
("conv1/kernel" -> array) threaded through one jitted step. The dataset lives on the device; each
step gathers its batch from the epoch's permutation, normalizes, augments and resizes inside jit.
Every random choice derives from (seed, epoch) or (seed, step), never from hidden state, so a run
resumed from any checkpoint continues exactly as the uninterrupted run would have.

A run directory holds:
    spec.cnn          the spec as trained          settings.json   the resolved settings
    metrics.jsonl     one line per epoch           curves.png      loss and accuracy per epoch
    checkpoints/last  the newest N checkpoints     checkpoints/best  the best validation accuracy
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from cnndsl import nodes
from cnndsl.api import check_program, parse_overrides
from cnndsl.compiler import CompiledNetwork, compiler_options
from cnndsl.compiler import compile as compile_spec
from cnndsl.curves import CurvesPainter
from cnndsl.data import BUILTIN_SHAPES, Dataset, DataError, absolute_source, load_dataset, missing_classes
from cnndsl.data.feed import ArrayFeed, StreamFeed, TooManyBadImages
from cnndsl.data.images import stored_units, with_channels
from cnndsl.data.pipeline import STATE_BYTES, ImageData, PipelineError, channel_stats, open_images
from cnndsl.distributed import Placement, agree, barrier
from cnndsl.errors import CnnError, UsageError
from cnndsl.flax_backend import flatten_state, unflatten_state
from cnndsl.parser import parse as parse_source
from cnndsl.rundir import CURVES, SPEC, RunDir
from cnndsl.settings import INTERRUPTS, Diverged, Interrupted, Settings, TrainingError
from cnndsl.shapes import fmt
from cnndsl.source import Source

__all__ = ["Interrupted", "Settings", "TrainingError", "TrainResult", "evaluate", "predict", "train"]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
EVAL_BATCH = 500


@dataclass
class History:
    """Per-epoch metrics, as written to metrics.jsonl: train, val (model selection) and test (the record)."""

    epochs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> dict[str, Any] | None:
        """The epoch `checkpoints/best` holds: the first with the best validation accuracy (the last epoch
        when the run has no validation split). None before the first epoch."""
        if not self.epochs:
            return None
        if self.epochs[-1].get("val_accuracy") is None:
            return self.epochs[-1]
        return max(self.epochs, key=lambda e: e["val_accuracy"])

    @property
    def best_val_accuracy(self) -> float:
        """The best epoch's validation accuracy (0 before the first epoch or without validation)."""
        return (self.best or {}).get("val_accuracy") or 0.0

    @property
    def best_test_accuracy(self) -> float:
        """The test accuracy of the best epoch (the one `checkpoints/best` holds; 0 before the first epoch):
        reported, never used to choose."""
        return (self.best or {}).get("test_accuracy") or 0.0

    @property
    def best_accuracy(self) -> float:
        """Deprecated: `best_val_accuracy` (the name hid that it is a validation figure)."""
        import warnings

        warnings.warn("History.best_accuracy is the best validation accuracy: use best_val_accuracy",
                      DeprecationWarning, stacklevel=2)
        return self.best_val_accuracy

    def __repr__(self) -> str:
        best = self.best
        if best is None:
            return "History(0 epochs)"
        val = f"val acc {best['val_accuracy']:.2%}, " if best.get("val_accuracy") is not None else ""
        return (f"History({len(self.epochs)} epochs; best epoch {best['epoch']}: {val}"
                f"test acc {best['test_accuracy']:.2%})")


@dataclass
class TrainResult:
    """What `train` returns: the network, the trained module, the history and where the run lives."""

    net: CompiledNetwork
    model: Any
    history: History
    run_dir: Path

    def __repr__(self) -> str:
        return f"TrainResult({self.net.report.name!r}, {self.history!r}, run_dir={str(self.run_dir)!r})"


# ---- the functional pieces -----------------------------------------------------------------------------------

def make_optimizer(settings: Settings, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optax optimizer with its learning-rate schedule, weight decay and clipping."""
    total = settings.epochs * steps_per_epoch
    lr = settings.lr
    schedule: Any = {
        "constant": lambda: lr,
        "cosine": lambda: optax.cosine_decay_schedule(lr, total),
        "warmup-cosine": lambda: optax.warmup_cosine_decay_schedule(
            0.0, lr, min(total - 1, max(1, round(settings.warmup_epochs * steps_per_epoch))), total),
        "one-cycle": lambda: optax.cosine_onecycle_schedule(total, lr),
        "step": lambda: optax.piecewise_constant_schedule(lr, {round(total * 0.5): 0.1, round(total * 0.75): 0.1}),
    }[settings.schedule]()
    parts = []
    if settings.clip:
        parts.append(optax.clip_by_global_norm(settings.clip))
    if settings.optimizer == "adamw":
        parts.append(optax.adamw(schedule, weight_decay=settings.weight_decay))
    else:
        if settings.weight_decay:
            parts.append(optax.add_decayed_weights(settings.weight_decay))
        if settings.optimizer == "sgd":
            parts.append(optax.sgd(schedule, momentum=settings.momentum or None, nesterov=settings.nesterov))
        else:
            parts.append(optax.adam(schedule))
    return optax.chain(*parts)


def run_optimizer(net: CompiledNetwork, model: Any, settings: Settings, steps_per_epoch: int
                  ) -> tuple[optax.GradientTransformation, set[str]]:
    """A run's optimizer, and the parameter names `settings.freeze` keeps fixed (their updates are zeroed:
    the same optimizer state structure whenever the run is loaded again)."""
    optimizer = make_optimizer(settings, steps_per_epoch)
    if not settings.freeze:
        return optimizer, set()
    from cnndsl.interop.finetune import frozen_names

    names = flatten_state(nnx.state(model, nnx.Param))[0]
    frozen = frozen_names(net.report, settings.freeze, names)
    return optax.chain(optimizer, optax.masked(optax.set_to_zero(), {n: n in frozen for n in names})), frozen


@dataclass(frozen=True)
class Preprocess:
    """Turns stored pixels into network inputs, inside jit: scale, normalize, resize, augment."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: tuple[int, int]  # the spec's input H, W
    augment: tuple[str, ...] = ()

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Network inputs for stored pixels `x` (B, H, W, C); with `key` (training), augmented."""
        x = (x.astype(jnp.float32) / self.scale - jnp.asarray(self.mean)) / jnp.asarray(self.std)
        if x.shape[1:3] != self.size:
            x = jax.image.resize(x, (x.shape[0], *self.size, x.shape[3]), "bilinear")
        if key is None or not self.augment:
            return x
        crop_key, flip_key = jax.random.split(key)
        if "crop" in self.augment:  # pad by an eighth of the size (4 pixels at 32x32), crop back at random
            pad_h, pad_w = max(1, self.size[0] // 8), max(1, self.size[1] // 8)
            padded = jnp.pad(x, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))
            offsets = jax.random.randint(crop_key, (x.shape[0], 2), 0, jnp.asarray([2 * pad_h + 1, 2 * pad_w + 1]))
            x = jax.vmap(lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), x.shape[1:]))(padded, offsets)
        if "flip" in self.augment:
            flip = jax.random.bernoulli(flip_key, 0.5, (x.shape[0], 1, 1, 1))
            x = jnp.where(flip, x[:, :, ::-1, :], x)
        return x

    def stored_units(self, pixels: np.ndarray) -> np.ndarray:
        """An image file's pixels (0..255) in the units the run's dataset stores (255 becomes `scale`), so a
        PNG of a training image gives the network exactly the input the stored image gives."""
        return stored_units(pixels, self.scale)

    def to_dict(self) -> dict[str, Any]:
        """The run's record of it (settings.json's `normalization`); augmentation is a setting of its own."""
        return {"scale": self.scale, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_run(cls, saved: dict[str, Any], size: tuple[int, int]) -> Preprocess:
        """The preprocessing a run recorded (its settings.json), for a network taking `size` inputs."""
        norm = saved["normalization"]
        return cls(norm["scale"], tuple(norm["mean"]), tuple(norm["std"]), tuple(size))


class Trainer:
    """The jitted train and eval steps of one network, optimizer and preprocessing."""

    def __init__(self, net: CompiledNetwork, model: Any, optimizer: optax.GradientTransformation,
                 preprocess: Preprocess, settings: Settings, num_classes: int,
                 placement: Placement | None = None) -> None:
        model.train()
        self.train_graph, params, stats, self.rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
        model.eval()
        self.eval_graph = nnx.split(model, nnx.Param, nnx.BatchStat, ...)[0]
        # one device, or the `data` axis of a mesh: the state replicated, each batch split (cnndsl/distributed.py)
        self.placement = placement or Placement(None)
        self.param_names, self.param_tree, self.params = flatten_state(params)
        self.stat_names, self.stat_tree, self.stats = flatten_state(stats)
        if self.placement.mesh is not None:
            self.params = self.placement.place_state(self.params)
            self.stats = self.placement.replicate(self.stats)
        self.optimizer, self.preprocess, self.settings = optimizer, preprocess, settings
        self.num_classes = num_classes
        # Donating the state saves a copy per step where the backend supports it (not XLA:CPU, which warns).
        # The meters (argument 3) are not donated: the progress display reads them after the next step.
        self.donated = donate = (0, 1, 2) if jax.default_backend() != "cpu" else ()
        # A run compiles a handful of programs, each once: these, the initialization (`CompiledNetwork.init`)
        # and the optimizer's. Everything else stays on the host (numpy) rather than in eager jax operations,
        # each of which would be a compilation of its own.
        shardings = None
        if self.placement.mesh is not None:  # the state keeps its layout from step to step
            replicated = self.placement.replicated
            opt_shapes = jax.eval_shape(optimizer.init, self.params)
            shardings = (self.placement.state_shardings(self.params), replicated,
                         self.placement.state_shardings(opt_shapes), replicated, replicated)
        self.opt_shardings = shardings[2] if shardings else None
        options = compiler_options()
        self.train_step = jax.jit(self._train_step, donate_argnums=donate, compiler_options=options,
                                  **({"out_shardings": shardings} if shardings else {}))
        self.evaluate_splits = jax.jit(self._evaluate_splits, compiler_options=options)
        self.evaluate_stream_batch = jax.jit(self._evaluate_stream_batch, compiler_options=options)

    def initial_state(self, pipeline: bool = False) -> dict[str, Any]:
        """Step 0 of a run as checkpoints hold it (also the template a checkpoint is restored into); with
        `pipeline`, the input pipeline's position too (runs on folder:/records: data through it)."""
        opt_init = jax.jit(self.optimizer.init, compiler_options=compiler_options(),  # on the mesh, counts too
                           **({"out_shardings": self.opt_shardings} if self.opt_shardings else {}))
        return {"params": self.params, "stats": self.stats, "opt_state": opt_init(self.params),
                "meters": np.zeros(3, np.float32), "step": np.array(0, np.int64),
                **({"iterator": np.zeros(STATE_BYTES, np.uint8)} if pipeline else {})}

    def module(self, params: dict[str, jax.Array], stats: dict[str, jax.Array], train: bool) -> Any:
        """The NNX module with these arrays (fresh variables, safe to use under any transformation)."""
        graph = self.train_graph if train else self.eval_graph
        return nnx.merge(graph, unflatten_state(self.param_names, self.param_tree, params),
                         unflatten_state(self.stat_names, self.stat_tree, stats), self.rest, copy=True)

    def _loss(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        targets = jax.nn.one_hot(labels, self.num_classes)
        if self.settings.label_smoothing:
            targets = optax.smooth_labels(targets, self.settings.label_smoothing)
        return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)

    def _train_step(self, params: Any, stats: Any, opt_state: Any, meters: jax.Array, x_all: jax.Array,
                    y_all: jax.Array, order: jax.Array | None, index: jax.Array | None, weights: jax.Array | None,
                    seed: jax.Array, step: jax.Array) -> tuple[Any, ...]:
        """One step: the batch at `index` of the epoch's `order` of the arrays on the device, or, with `order`
        None, the batch `x_all`, `y_all` itself (the input pipeline's); its randomness from the seed and the
        step. `weights` (pipeline batches) are 0 for images that could not be read: they count for nothing."""
        batch = self.settings.batch_size
        if order is not None:
            picked = jax.lax.dynamic_slice_in_dim(order, index * batch, batch)
            x_all, y_all = x_all[picked], y_all[picked]
        step_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), step)
        augment_key, dropout_key = jax.random.split(step_key)
        x = self.preprocess(self.placement.split_batch(x_all), augment_key)
        y = self.placement.split_batch(y_all)

        def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
            module = self.module(params, stats, train=True)
            logits = module(x, rngs=nnx.Rngs(dropout=dropout_key))
            new_stats = flatten_state(nnx.state(module, nnx.BatchStat))[2]
            losses = self._loss(logits, y)
            if weights is None:
                return losses.mean(), (logits, new_stats)
            return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0), (logits, new_stats)

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        hits = jnp.argmax(logits, -1) == y
        if weights is None:
            meters = meters + jnp.stack([loss * batch, jnp.sum(hits).astype(jnp.float32), jnp.float32(batch)])
        else:
            seen = jnp.sum(weights)
            meters = meters + jnp.stack([loss * seen, jnp.sum(hits * weights), seen])
        return params, new_stats, opt_state, meters, loss

    def _evaluate_split(self, params: Any, stats: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        """(summed loss, correct count) over a whole split: padded to whole batches of at most EVAL_BATCH,
        mapped batch by batch (so memory stays one batch's), the padding masked out."""
        n = x.shape[0]
        count = self.placement.count
        size = -(-min(EVAL_BATCH, n) // count) * count  # whole batches that split evenly over the devices
        batches = -(-n // size)
        pad = batches * size - n
        x = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)).reshape(batches, size, *x.shape[1:])
        y = jnp.pad(y, (0, pad)).reshape(batches, size)
        valid = (jnp.arange(batches * size) < n).reshape(batches, size)
        module = self.module(params, stats, train=False)
        return jax.lax.map(lambda b: self._evaluate_batch(module, *b), (x, y, valid)).sum(axis=0)

    def _evaluate_batch(self, module: Any, x: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
        """(summed loss, correct count) of the valid examples of one batch."""
        xb, yb, vb = (self.placement.split_batch(part) for part in (x, y, valid))
        logits = module(self.preprocess(xb))
        correct = (jnp.argmax(logits, -1) == yb) & vb
        return jnp.stack([jnp.sum(jnp.where(vb, self._loss(logits, yb), 0.0)), jnp.sum(correct).astype(jnp.float32)])

    def _evaluate_stream_batch(self, params: Any, stats: Any, x: jax.Array, y: jax.Array,
                               valid: jax.Array) -> jax.Array:
        totals = self._evaluate_batch(self.module(params, stats, train=False), x, y, valid)
        return jnp.concatenate([totals, jnp.sum(valid, dtype=jnp.float32)[None]])  # every process's images

    def evaluate_stream(self, params: Any, stats: Any, batches: Any, place: Callable[[np.ndarray], Any]
                        ) -> tuple[float, float, int, list[int]] | None:
        """(mean loss, accuracy, images, unreadable indices) of a split given as pipeline batches (dicts of
        numpy arrays, `place` puts one on the devices); None for an empty split."""
        totals, bad = np.zeros(3), []
        for batch in batches:
            result = self.evaluate_stream_batch(params, stats, place(batch["image"]), place(batch["label"]),
                                                place(batch["weight"] > 0))
            totals += np.asarray(result, np.float64)
            bad += [int(b) for b in batch["bad"] if b >= 0]
        loss, correct, count = totals
        return (loss / count, correct / count, int(count), bad) if count else None

    def _evaluate_splits(self, params: Any, stats: Any, splits: tuple[tuple[jax.Array, jax.Array], ...]
                         ) -> tuple[jax.Array, ...]:
        return tuple(self._evaluate_split(params, stats, x, y) for x, y in splits)

    def evaluate(self, params: Any, stats: Any, *splits: tuple[Any, Any]) -> list[tuple[float, float] | None]:
        """(mean loss, accuracy) of each split (x, y), all in one compiled program; None for an empty split."""
        present = [i for i, (_, y) in enumerate(splits) if len(y)]
        totals = self.evaluate_splits(params, stats, tuple(splits[i] for i in present)) if present else ()
        results: list[tuple[float, float] | None] = [None] * len(splits)
        for i, (loss, correct) in zip(present, (np.asarray(t) for t in totals)):
            results[i] = (float(loss) / len(splits[i][1]), float(correct) / len(splits[i][1]))
        return results

    def prepare_evaluation(self, params: Any, stats: Any, *splits: tuple[Any, Any]) -> None:
        """Trace and compile the program `evaluate` will run for these arguments (jit keeps it): a run does
        this on a thread of its own while its first epoch trains, so the evaluation at the epoch's end starts
        at once. The arguments must be arrays like the later ones: shape structures would key another program."""
        present = tuple(split for split in splits if len(split[1]))
        if present:
            self.evaluate_splits.lower(params, stats, present).compile()


# ---- the run ----------------------------------------------------------------------------------------------

def _classes_of(net: CompiledNetwork) -> int | None:
    """How many classes a network scores (None unless its output is a vector)."""
    out = net.report.output_shape
    return out[0] if len(out) == 1 else None


def check_compatible(net: CompiledNetwork, data: Dataset, resize: bool,
                     bindings: dict[str, Any] | None = None) -> None:
    """A TrainingError unless the dataset's images and classes fit the spec; its hint names the fix that
    works: another built-in dataset of the spec's shape, `--set NAME=K` where a `let` sets the classes."""
    (h, w, c), (dh, dw, dc) = net.input_shape, data.image_shape
    where = data.name
    if c != dc:
        fix = (f"change `input` to {h}x{w}x{dc}" if (h, w) == (dh, dw) or resize else
               f"change `input` to {dh}x{dw}x{dc} (or to {h}x{w}x{dc} and pass --resize)")
        raise TrainingError(f"{where} has images of {dh}x{dw}x{dc} ({dc} channel{'s' * (dc != 1)}), the spec's "
                            f"input is {h}x{w}x{c}; {_other_datasets(net.input_shape, where)}{fix}")
    if (h, w) != (dh, dw) and not resize:
        raise TrainingError(f"{where} has images of {dh}x{dw}x{dc}, the spec's input is {h}x{w}x{c}; "
                            f"{_other_datasets(net.input_shape, where)}pass --resize to resize its images on the "
                            f"device, or change `input` to {dh}x{dw}x{c}")
    out = net.report.output_shape
    if len(out) != 1:
        raise TrainingError(f"the network's output is {fmt(out)}, not a vector of class scores; end it with "
                            f"fc({data.num_classes})")
    if out[0] != data.num_classes:
        fix = _binding_for_classes(net, bindings or {}, data.num_classes) or f"end the network with fc({data.num_classes})"
        raise TrainingError(f"the network outputs {out[0]} classes, {where} has {data.num_classes}; {fix}")


def _other_datasets(shape: tuple[int, ...], current: str) -> str:
    """'the network takes 28x28x1 images, as mnist and fashion-mnist have: pass --data mnist; or ' (or '')."""
    fits = [name for name, (image, _) in BUILTIN_SHAPES.items() if image == tuple(shape) and name != current]
    if not fits:
        return ""
    return (f"the network takes {fmt(tuple(shape))} images, as {' and '.join(fits)} "
            f"ha{'ve' if len(fits) > 1 else 's'}: pass --data {fits[0]}; or ")


def _binding_for_classes(net: CompiledNetwork, bindings: dict[str, Any], classes: int) -> str | None:
    """`pass --set NAME=K` when setting one of the spec's `let` names to K makes the network output K
    classes (checked, milliseconds: no JAX), else None."""
    program = parse_source(Source(net.report.graph.standalone_text))
    names = [b.key for s in program.statements if isinstance(s, nodes.Let) for b in s.bindings if not b.optional]
    for name in names:
        try:
            report = check_program(program, parse_overrides({**bindings, name: classes}))
        except (CnnError, UsageError):
            continue
        if report.output_shape == (classes,):
            return f"pass --set {name}={classes}"
    return None


def _checkpoint_managers(run_dir: Path, keep: int) -> tuple[Any, Any]:
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


def _save(manager: Any, step: int, tree: dict[str, Any]) -> None:
    """Start writing checkpoint `step` (asynchronously; see `_checkpoint_managers`)."""
    import orbax.checkpoint as ocp

    manager.save(step, args=ocp.args.StandardSave(tree), force=True)


class _Checkpointer:
    """A run's `last` and `best` managers behind one worker thread, so that saving costs the loop nothing.

    orbax's asynchronous save still blocks its caller for ~30 ms (copying the arrays to the host, creating
    folders, its bookkeeping): two saves were 8% of a LeNet epoch. Here the loop hands each snapshot to a
    single worker thread, which saves in order; `close` waits for every write and re-raises the first failure,
    as does the next `save` after one. Arrays are immutable, so the worker reads exactly the state it was
    given, unless the step donates its buffers (GPU/TPU): then the snapshot is copied on the device first.
    """

    def __init__(self, run_dir: Path, keep: int, donated: bool) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.last, self.best = _checkpoint_managers(run_dir, keep)
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
                _save(manager, step, tree)
            return
        self._raise_failures(wait=False)
        if self.donated:
            tree = jax.tree.map(lambda a: jnp.copy(a) if isinstance(a, jax.Array) else a, tree)
        self._pending.append(self._worker.submit(lambda: [_save(m, step, tree) for m in managers]))

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
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def normalization(data: Dataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of the training images (after dividing by `scale`)."""
    return channel_stats(data.x_train, data.scale)


def new_run_dir(spec_path: str, root: Path = Path("runs")) -> Path:
    """runs/<spec name>, or runs/<spec name>-2, -3, ... if taken."""
    stem = Path(spec_path).stem if spec_path and not spec_path.startswith("<") else "run"
    candidate, n = root / stem, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{stem}-{n}"
    return candidate


class _EpochClock:
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
    parts += [f"test acc {record['test_accuracy']:.2%}", f"{record['images_per_s']:,.0f} img/s"]
    return "  ".join(parts)


def _in_background(work: Callable[[], None]) -> Callable[[], None]:
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
class _Progress:
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
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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


def train(spec: str | os.PathLike[str] | None, settings: Settings | None = None, *,
          run_dir: str | Path | None = None, resume: bool = False, bindings: dict[str, Any] | None = None,
          quiet: bool = False, on_epoch: Callable[[dict[str, Any]], None] | None = None,
          dataset: Dataset | None = None, devices: int | str | None = None, shard_params: bool = False,
          **overrides: Any) -> TrainResult:
    """Train the network of a spec (a path or text) and return the trained module and its history.

    Settings: `settings` if given, else the defaults < the spec's `train` lines (or, with `resume`, the
    run's saved settings) < `overrides` (keyword arguments named like `Settings` fields: epochs=3).
    With `resume`, `run_dir` must hold an earlier run; training continues from its newest good checkpoint
    (from step 0 if it has none yet), and `spec=None` means the run's own spec and `--set` bindings.
    The run directory is locked while training: a second trainer of the same run gets a TrainingError.
    `dataset`: the settings' dataset already loaded (a sweep loads it once for all its trials).
    `devices`: "all" (the default: every device of every process) or how many of this process's devices
    share each global batch (data parallelism, cnndsl/distributed.py); it does not change the results.
    `shard_params`: split parameters and optimizer state over those devices too (FSDP-style) instead of
    replicating them; it does not change the results either.
    """
    run: RunDir | None = None
    # With several processes (jax.distributed), process 0 owns the run directory: it locks it and writes its
    # files; every process writes the checkpoints (orbax, together) and trains its share of each batch.
    main = jax.process_index() == 0
    if jax.process_count() > 1 and run_dir is None:
        raise TrainingError("with several processes, give the run directory (--out RUN or --resume RUN): every "
                            "process must name the same one")
    try:
        if resume:
            if run_dir is None:
                raise TrainingError("resume needs the run directory (run_dir=...)")
            run = RunDir(run_dir)
            if main:
                run.open()  # locked from here until the run ends
            if spec is None:  # the run's own spec, with the --set bindings it was trained with
                spec, bindings = run.spec_path(), bindings or run.bindings()
        elif spec is None:
            raise TrainingError("no spec to train: give a .cnn file or its text")
        if settings is None:
            if resume:
                base = Settings.from_run(run.read_settings()).to_dict()
            else:
                from cnndsl.api import check

                base = dict(check(spec, set=bindings).train_settings)
            settings = Settings.from_dict({**base, **overrides})
        elif overrides:
            settings = Settings.from_dict({**settings.to_dict(), **overrides})
        settings = settings.validate()
        if not resume:  # recorded absolute, so eval, predict and export work from any directory
            settings = dataclasses.replace(settings, data=absolute_source(settings.data), data_dir=(
                str(Path(settings.data_dir).expanduser().absolute()) if settings.data_dir else None),
                init=str(Path(settings.init).expanduser().absolute()) if settings.init else None)
        net = compile_spec(spec, set=bindings, dtype=DTYPES[settings.dtype], scan=settings.scan)
        agree({"spec": net.report.graph.standalone_text, "settings": settings.to_dict(), "bindings": bindings,
               "resume": resume})
        if run is None:
            run = RunDir(run_dir if run_dir else new_run_dir(str(net.report.graph.source.path)))
            if main:
                run.create(inputs=[p for p in [net.report.graph.source.path] if not p.startswith("<")])
            barrier("cnndsl-run-created")
        return _train(net, settings, run, resume, quiet, on_epoch, bindings, dataset, devices, shard_params)
    finally:
        if run is not None:
            run.release()


def _train(net: CompiledNetwork, settings: Settings, run: RunDir, resume: bool, quiet: bool,
           on_epoch: Callable[[dict[str, Any]], None] | None, bindings: dict[str, Any] | None,
           data: Dataset | None = None, devices: int | str | None = None, shard_params: bool = False) -> TrainResult:
    """The run itself, in a locked run directory: data, state (new, or restored from the newest good
    checkpoint), the loop, checkpoints and metrics."""
    main = jax.process_index() == 0
    progress = _Progress(quiet or not main)
    painter = CurvesPainter().start() if main else None  # imports matplotlib in its own process meanwhile
    try:
        return _train_with(run, settings, net, resume, quiet, on_epoch, bindings, data, devices, shard_params,
                           main, progress, painter)
    finally:
        if painter is not None:
            painter.close()


def _train_with(run: RunDir, settings: Settings, net: CompiledNetwork, resume: bool, quiet: bool,
                on_epoch: Callable[[dict[str, Any]], None] | None, bindings: dict[str, Any] | None,
                data: Dataset | None, devices: int | str | None, shard_params: bool, main: bool,
                progress: _Progress, painter: CurvesPainter | None) -> TrainResult:
    """`_train`'s body, with the process's role, its progress output and the curves' painter."""
    skipped: list[str] = []
    try:
        if data is None:
            data, skipped = _open_data(settings, net, progress)
    except (DataError, PipelineError) as err:
        raise TrainingError(str(err)) from None
    check_compatible(net, data, settings.resize, bindings)
    absent = missing_classes(data)
    if absent:
        progress.warn(f"{len(absent)} class{'es' * (len(absent) > 1)} of the validation and test data never occur "
                      f"in the training data ({', '.join(absent[:10])}{', ...' if len(absent) > 10 else ''}); the "
                      "network cannot learn them: is the data sorted by class before its split?")

    streaming = isinstance(data, ImageData)
    examples = len(data.train) if streaming else len(data.x_train)
    batch = min(settings.batch_size, examples)
    settings = dataclasses.replace(settings, batch_size=batch)
    placement = Placement.create(devices, shard_params)
    placement.check_batch(batch)
    if streaming and batch % jax.process_count():
        raise TrainingError(f"the batch size {batch} does not split over {jax.process_count()} processes")
    steps_per_epoch = examples // batch
    total_steps = steps_per_epoch * settings.epochs
    mean, std = (data.mean, data.std) if streaming else normalization(data)
    preprocess = Preprocess(data.scale, mean, std, net.input_shape[:2],
                            tuple(a for a in settings.augment if a != "resized-crop"))  # that one is the pipeline's
    model = net.init(settings.seed)
    optimizer, frozen = run_optimizer(net, model, settings, steps_per_epoch)
    if frozen:
        progress.line(f"frozen: {len(frozen)} parameter arrays ({', '.join(sorted(frozen)[:6])}"
                      f"{', ...' if len(frozen) > 6 else ''})")
    trainer = Trainer(net, model, optimizer, preprocess, settings, data.num_classes, placement)

    state = trainer.initial_state(pipeline=streaming)
    if settings.init and not resume:
        state = _initialized(state, net, settings.init, placement, progress)
    if resume:
        state = _restore_newest(run, settings, state, progress)
        step = int(state["step"])
        history = History(run.read_metrics(step // steps_per_epoch) if main else [])
        progress.line(f"resuming {run.path} at step {step} (epoch {step // steps_per_epoch + 1})" if step else
                      f"{run.path} has no checkpoint yet: starting again from step 0 with its settings")
    # settings.json first (atomically): from this moment the directory holds a run that --resume continues
    if main:
        run.write_settings({**settings.to_dict(), "normalization": preprocess.to_dict(),
                            "num_classes": data.num_classes, "classes": list(data.classes),
                            "steps_per_epoch": steps_per_epoch, "input_shape": list(net.input_shape),
                            "data_shape": list(data.image_shape), "spec": net.report.graph.standalone_text,
                            "bindings": dict(bindings or {}), "devices": placement.count,
                            "processes": jax.process_count(),
                            "pipeline": ("streamed" if data.streamed else "decoded in memory") if streaming else
                            "arrays on the device"})
    if not resume:
        if main:
            run.write_spec(net.report.graph.standalone_text)
        history = History(run.read_metrics(0) if main else [])
    checkpoints = _Checkpointer(run.path, settings.keep, donated=bool(trainer.donated))

    # the arrays onto the devices once, or the input pipeline started at the checkpoint's position
    try:
        feed = (StreamFeed(data, placement, settings, steps_per_epoch, progress.warn, state.get("iterator"))
                if streaming else ArrayFeed(data, placement, settings.seed))
    except PipelineError as err:  # Grain not installed, say
        raise TrainingError(str(err)) from None
    seed = np.int32(settings.seed)

    def snapshot() -> dict[str, Any]:
        return {"params": params, "stats": stats, "opt_state": opt_state, "meters": meters,
                "step": np.array(step, np.int64), **feed.state()}

    params, stats, opt_state, meters = state["params"], state["stats"], state["opt_state"], state["meters"]
    step = int(state["step"])
    saved_step = step
    interrupted: list[int] = []
    restore_signals = _stop_on_signals(interrupted)
    # An epoch's clock runs from the end of the previous epoch's record (or the loop's start) to the end of its
    # own: `seconds` is the time between two epoch lines, split into its parts. The end-of-epoch checkpoint is
    # handed over after the metrics line (which must be written first), so it counts in the next epoch.
    clock = _EpochClock()
    # The evaluation program is traced and compiled on a thread while the first epoch trains (the steps run in
    # XLA, leaving Python free), from the starting arrays (shape structures would key another program); not
    # where the step donates its buffers (GPU, TPU), which would delete them under the thread. Waited for
    # before the first evaluation.
    evaluation_ready = (_in_background(functools.partial(feed.prepare_evaluation, trainer, params, stats))
                        if step < total_steps and not trainer.donated else None)
    try:
        while step < total_steps:
            epoch, index = divmod(step, steps_per_epoch)
            feed.start_epoch(epoch)
            progress.start(epoch + 1, settings.epochs, steps_per_epoch, index)
            clock.start_training()
            started, first_step = time.perf_counter(), step
            pending: tuple[Any, int, int] | None = None

            def show(values: jax.Array, done: int, at_step: int) -> None:
                """Report the running meters; stop at a non-finite loss before anything saves it."""
                seen_loss, seen_correct, seen = (float(v) for v in np.asarray(values))
                if not math.isfinite(seen_loss):
                    raise Diverged(
                        f"the loss became {seen_loss} by step {at_step} (epoch {epoch + 1}); stopped without "
                        f"saving it. The last good checkpoint is step {saved_step} in {run.checkpoints}. "
                        f"Try a lower --lr (now {settings.lr}) or --clip 1.0")
                rate = (at_step - first_step) * batch / max(time.perf_counter() - started, 1e-9)
                progress.update(done, f"loss {seen_loss / seen:.4f}  acc {seen_correct / seen:.1%}  {rate:,.0f} img/s")

            try:
                for index in range(index, steps_per_epoch):
                    params, stats, opt_state, meters, loss = trainer.train_step(
                        params, stats, opt_state, meters, *feed.batch(index), seed, np.int32(step))
                    step += 1
                    boundary = settings.checkpoint_every and step % settings.checkpoint_every == 0
                    if index % 10 == 9:  # show the meters copied at the last update (no stall), copy these
                        if pending is not None:
                            show(*pending)
                        meters.copy_to_host_async()
                        pending = (meters, index + 1, step)
                    if boundary or index == steps_per_epoch - 1:  # a checkpoint or the epoch's end: check now
                        show(meters, index + 1, step)
                    if boundary and index != steps_per_epoch - 1:
                        with clock.timing("checkpoint"):
                            checkpoints.save(step, snapshot())
                        saved_step = step
                    if interrupted and index != steps_per_epoch - 1:  # at the epoch's end: finish it first
                        raise KeyboardInterrupt
            finally:
                progress.stop()
            seen_loss, seen_correct, seen = (float(v) for v in np.asarray(meters))
            clock.stop_training()
            record = {"epoch": epoch + 1, "step": step, "train_loss": seen_loss / seen,
                      "train_accuracy": seen_correct / seen}
            # validation chooses the best checkpoint; test is only reported
            with clock.timing("eval"):
                if evaluation_ready is not None:
                    evaluation_ready()
                    evaluation_ready = None
                evaluated = feed.evaluate(trainer, params, stats)
            for split, result in evaluated.items():
                loss, accuracy = result or (None, None)
                if loss is not None and not math.isfinite(loss):
                    raise Diverged(f"the {split} loss is {loss} after epoch {epoch + 1}; stopped without "
                                        f"saving it. The last good checkpoint is step {saved_step}. Try a lower --lr")
                record[f"{split}_loss"], record[f"{split}_accuracy"] = loss, accuracy
            record.update(clock.record((step - first_step) * batch))
            if streaming or skipped:  # unreadable images skipped so far (the run stops past --max-bad-images)
                record["bad_images"] = len(skipped) + feed.bad_images
            meters = np.zeros(3, np.float32)
            previous_best = history.best
            history.epochs.append(record)
            improved = history.best is record and record is not previous_best
            # The metrics line first: a resume drops lines beyond its checkpoint, never lacks one.
            if main:
                run.append_metrics(record)
            with clock.timing("checkpoint"):
                checkpoints.save(step, snapshot(), best=improved)
            saved_step = step
            progress.line(epoch_line(record, settings.epochs))
            if on_epoch:
                on_epoch(record)
            if interrupted:  # stopped at an epoch's end: its metrics line and checkpoint are written
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        INTERRUPTS.clear()  # answered here: a later run in this process starts afresh
        seen_loss = float(np.asarray(meters)[0])
        if math.isfinite(seen_loss) and step != saved_step:
            checkpoints.save(step, snapshot())
            saved_step = step
        raise Interrupted(f"interrupted at step {step}; checkpoint saved at step {saved_step}. "
                          f"Continue with: cnndsl train --resume {run.path}") from None
    except TooManyBadImages as err:
        raise TrainingError(str(err)) from None
    finally:
        feed.close()
        # the curves are drawn (by the painter's process) while the last checkpoint is written
        best = history.best
        curves = (_in_background(functools.partial(
                      painter.paint, history.epochs, best["epoch"] if best and best.get("val_accuracy") is not None
                      else None, run.file(CURVES), f"{net.report.name} on {data.name}"))
                  if history.epochs and painter is not None else None)
        try:
            checkpoints.close()  # every checkpoint started is on disk before the run returns or stops
        finally:
            restore_signals()  # after: a Ctrl-C while the last save finishes is still this loop's to handle
            if curves is not None:
                curves()
    model = trainer.module(params, stats, train=False)
    return TrainResult(net, model, history, run.path)


def _initialized(state: dict[str, Any], net: CompiledNetwork, source: str, placement: Placement,
                 progress: _Progress) -> dict[str, Any]:
    """`state` with the parameters and statistics of `source` (`--init`) where the shapes match."""
    from cnndsl.interop.finetune import initial_arrays

    template = {**state["params"], **state["stats"]}
    arrays, fresh = initial_arrays(net.report, source, template)
    for group in ("params", "stats"):
        merged = {n: arrays.get(n, np.asarray(v)) for n, v in state[group].items()}
        state[group] = placement.place_state(merged) if group == "params" else placement.replicate(merged)
    layers = len({n.split("/")[0] for n in arrays})
    progress.line(f"initialized {layers} layers from {source}" + (f"; re-initialized {len(fresh)}: {'; '.join(fresh)}"
                                                                   if fresh else ""))
    return state


def _open_data(settings: Settings, net: CompiledNetwork, progress: _Progress) -> tuple[Any, list[str]]:
    """The run's dataset: `folder:` and `records:` sources through cnndsl.data.pipeline (streamed or decoded
    into memory; the choice is printed), the others as arrays. Returns it with messages about images skipped."""
    kind = settings.data.partition(":")[0]
    if kind not in ("folder", "records"):
        if settings.stream == "stream":
            raise TrainingError(f"--stream reads folder:PATH and records:DIR sources; {settings.data} is loaded "
                                "into memory")
        return load_dataset(settings.data, settings.data_dir, progress=progress.line,
                            val_fraction=settings.val_fraction, shape=net.input_shape,
                            num_classes=_classes_of(net)), []
    data, skipped = open_images(settings.data, shape=net.input_shape, augment=settings.augment, mode=settings.stream,
                                val_fraction=settings.val_fraction, resize=settings.resize)
    for note in getattr(data, "notes", [f"{settings.data} decoded into memory: {len(data.y_train):,} training images "
                                          "of one size, held on the device"]):
        progress.line(note)
    for message in skipped:
        progress.warn(f"skipped an unreadable image: {message}")
    if len(skipped) > settings.max_bad_images:
        raise TrainingError(f"{len(skipped)} unreadable images, more than --max-bad-images {settings.max_bad_images}; "
                            "fix or remove them, or raise the limit")
    return data, skipped


def _restore_newest(run: RunDir, settings: Settings, template: dict[str, Any], progress: _Progress,
                    ) -> dict[str, Any]:
    """The newest checkpoint of `run` that restores into `template`; damaged ones (empty or truncated files,
    a step orbax cannot list) are skipped and deleted with every checkpoint after the one restored, since
    the run writes those steps again. With no checkpoint at all (a run killed before its first), step 0."""
    folder = run.checkpoints / "last"
    steps = sorted((int(p.name) for p in folder.iterdir() if p.name.isdigit()), reverse=True) if folder.is_dir() else []
    restored, failures = None, []
    for saved in steps:
        try:  # a fresh manager per attempt: a failed restore can leave one unusable
            restored = restore(_checkpoint_managers(run.path, settings.keep)[0], template, saved)
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


def _stop_on_signals(flag: list[int]) -> Callable[[], None]:
    """Make Ctrl-C (SIGINT) and SIGTERM stop training after the current step, with a checkpoint: a
    KeyboardInterrupt raised at an arbitrary point (inside JAX, a garbage-collection callback) can be
    swallowed or leave state half-updated. A second Ctrl-C interrupts at once. Returns the undo."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        flag.append(signum)
        INTERRUPTS.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    for sig in previous:
        signal.signal(sig, handler)
    if INTERRUPTS:  # an earlier Ctrl-C that Python swallowed before the loop began: stop after the first step
        flag.append(INTERRUPTS[-1])
    def undo() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return undo


# ---- using a trained run --------------------------------------------------------------------------------------

def trained_through_pipeline(saved: dict[str, Any]) -> bool:
    """Whether a run (its settings.json) trained on batches of the input pipeline (its checkpoints hold the
    pipeline's position)."""
    return saved.get("pipeline", "").startswith(("streamed", "decoded"))


def uses_pipeline(saved: dict[str, Any]) -> bool:
    """Whether a run (its settings.json) evaluates images as the input pipeline does (resize, centre crop):
    runs trained on folder:/records: data through it, and imported pretrained weights."""
    return trained_through_pipeline(saved) or saved.get("eval_transform") == "resize-crop"


@dataclass
class LoadedRun:
    """A trained run ready to evaluate or predict: network, trainer, arrays, settings."""

    net: CompiledNetwork
    trainer: Trainer
    params: Any
    stats: Any
    settings: dict[str, Any]
    step: int

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (N, K) for raw images (H, W, C) in the units the run's dataset stores;
        images of another size or channel count are converted to the network's input first."""
        c = self.net.input_shape[-1]
        rows = []
        for image in images:  # the run's own preprocessing (scale, normalization, resize), one image at a time
            image = with_channels(image, c)
            if uses_pipeline(self.settings):  # resize + centre crop, as evaluation in training
                from cnndsl.data.images import transformed

                image = transformed(np.asarray(image).clip(0, 255).astype(np.uint8), "image",
                                    tuple(self.net.input_shape[:2]), c)
            rows.append(np.asarray(self._probabilities(self.params, self.stats, image[None].astype(np.float32))))
        return np.concatenate(rows)

    @functools.cached_property
    def _probabilities(self) -> Callable[..., jax.Array]:
        """Stored pixels (1, H, W, C) to class probabilities, one compiled program per image size."""
        def probabilities(params: Any, stats: Any, x: jax.Array) -> jax.Array:
            logits = self.trainer.module(params, stats, train=False)(self.trainer.preprocess(x))
            return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

        return jax.jit(probabilities)


def load_run(spec: str | os.PathLike[str] | None, run_dir: str | Path, checkpoint: str = "best",
             bindings: dict[str, Any] | None = None) -> LoadedRun:
    """The network of a run with its `best` or `last` checkpoint restored (spec defaults to the run's copy)."""
    run = RunDir(run_dir)
    saved = run.read_settings()
    settings = Settings.from_run(saved)
    trained_spec = run.file(SPEC)
    if spec is None:  # the run's own spec, with the --set bindings it was trained with
        spec, bindings = run.spec_path(), bindings or run.bindings()
    net = compile_spec(spec, set=bindings, dtype=DTYPES[settings.dtype], scan=settings.scan)
    preprocess = Preprocess.from_run(saved, net.input_shape[:2])
    model = net.init(settings.seed)
    trainer = Trainer(net, model, run_optimizer(net, model, settings, saved["steps_per_epoch"])[0], preprocess,
                      settings, saved["num_classes"])
    if net.report.output_shape != (saved["num_classes"],):
        raise TrainingError(f"the spec outputs {fmt(net.report.output_shape)}, the run was trained for "
                            f"{saved['num_classes']} classes; use the spec the run was trained with ({trained_spec})")
    last, best = _checkpoint_managers(run.path, settings.keep)
    manager = best if checkpoint == "best" else last
    try:
        restored = restore(manager, trainer.initial_state(trained_through_pipeline(saved)))
    except (ValueError, KeyError) as err:
        raise TrainingError(f"{run.path}: the checkpoint does not fit this spec ({str(err).splitlines()[0][:200]}); "
                            f"use the spec the run was trained with ({trained_spec})") from None
    except Exception as err:  # noqa: BLE001 - orbax's many errors for a damaged checkpoint
        raise TrainingError(f"{run.checkpoints / checkpoint}: the checkpoint cannot be read "
                            f"({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}); it is "
                            "damaged") from None
    if restored is None:
        raise TrainingError(f"{run.path} has no {checkpoint} checkpoint yet")
    for kind in ("params", "stats"):
        for name, array in restored[kind].items():
            if not bool(jnp.isfinite(array).all()):
                raise TrainingError(f"{run.checkpoints / checkpoint} (step {int(restored['step'])}): {name} holds NaN "
                                    "or infinite values; the checkpoint is damaged")
    return LoadedRun(net, trainer, restored["params"], restored["stats"], saved, int(restored["step"]))


def evaluate(spec: str | os.PathLike[str] | None, run_dir: str | Path, data: str | None = None,
             data_dir: str | None = None, checkpoint: str = "best") -> dict[str, Any]:
    """Accuracy and loss of a trained run's checkpoint on its dataset's test split ("accuracy", "loss", "n")
    and validation split ("val_accuracy", "val_loss", "val_n"; None without one), the run's own split."""
    loaded = load_run(spec, run_dir, checkpoint)
    source = data or loaded.settings["data"]
    if source == "none":
        raise TrainingError(f"{run_dir} holds imported weights and no dataset of its own: give --data")
    if source.startswith("records:") or (source.startswith("folder:") and uses_pipeline(loaded.settings)):
        return _evaluate_images(loaded, source, checkpoint)
    try:
        dataset = load_dataset(source, data_dir or loaded.settings.get("data_dir"),
                               val_fraction=loaded.settings.get("val_fraction", 0.0),
                               shape=loaded.net.input_shape, num_classes=_classes_of(loaded.net))
    except DataError as err:
        raise TrainingError(str(err)) from None
    check_compatible(loaded.net, dataset, bool(loaded.settings.get("resize")))
    result: dict[str, Any] = {"data": source, "checkpoint": checkpoint, "step": loaded.step}
    splits = {"": (dataset.x_test, dataset.y_test), "val_": (dataset.x_val, dataset.y_val)}
    for prefix, (_, y), outcome in zip(splits, splits.values(),
                                      loaded.trainer.evaluate(loaded.params, loaded.stats, *splits.values())):
        loss, accuracy = outcome or (None, None)
        result.update({f"{prefix}accuracy": accuracy, f"{prefix}loss": loss, f"{prefix}n": int(len(y))})
    return result


def _evaluate_images(loaded: LoadedRun, source: str, checkpoint: str) -> dict[str, Any]:
    """`evaluate` for folder:/records: data: the splits streamed through the input pipeline, each image
    resized and centre-cropped to the network's input as in training."""
    from cnndsl.data.feed import _close
    from cnndsl.data.pipeline import default_workers, eval_batches

    try:
        data, _ = open_images(source, shape=loaded.net.input_shape, mode="stream", normalize=False,
                              val_fraction=loaded.settings.get("val_fraction", 0.0))
    except (DataError, PipelineError) as err:
        raise TrainingError(str(err)) from None
    check_compatible(loaded.net, data, True)
    result: dict[str, Any] = {"data": source, "checkpoint": checkpoint, "step": loaded.step}
    for prefix, split in (("", "test"), ("val_", "val")):
        batches = eval_batches(data, split, EVAL_BATCH, default_workers())
        try:
            outcome = loaded.trainer.evaluate_stream(loaded.params, loaded.stats, batches, jax.device_put)
        finally:
            _close(batches)
        loss, accuracy, n, _ = outcome or (None, None, 0, [])
        result.update({f"{prefix}accuracy": accuracy, f"{prefix}loss": loss, f"{prefix}n": n})
    return result


def predict(spec: str | os.PathLike[str] | None, run_dir: str | Path, images: Sequence[np.ndarray],
            checkpoint: str = "best") -> np.ndarray:
    """Class probabilities (N, K) for raw images (H, W, C) as stored by the run's dataset (same scale)."""
    return load_run(spec, run_dir, checkpoint).probabilities(images)
