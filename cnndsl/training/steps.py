"""The jitted steps of a run: `Trainer` holds one network's train step and evaluation programs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from cnndsl.data.pipeline import STATE_BYTES
from cnndsl.data.segmentation import IGNORE
from cnndsl.lang.settings import Settings, TrainingError
from cnndsl.nn.compiler import CompiledNetwork, compiler_options
from cnndsl.nn.flax_backend import flatten_state, unflatten_state
from cnndsl.training.distributed import Placement
from cnndsl.training.optim import with_learning_rate
from cnndsl.training.preprocess import Preprocess

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


EVAL_BATCH = 500

#: A split's evaluation: mean loss, accuracy (pixel accuracy for masks), and for masks {"miou", "iou"}.
Scores = tuple[float, float, dict[str, Any]]


def dense_scores(confusion: np.ndarray) -> tuple[float, dict[str, Any]]:
    """Pixel accuracy and {"miou": mean IoU, "iou": per-class IoU} of a confusion matrix (row: label,
    column: prediction). A class's IoU is TP / (TP + FP + FN); a class that neither occurs nor is predicted
    has none (None) and the mean leaves it out, as torchvision's and mmsegmentation's evaluations do."""
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    iou = [float(t / u) if u > 0 else None for t, u in zip(true_positive, union)]
    present = [v for v in iou if v is not None]
    total = confusion.sum()
    return (float(true_positive.sum() / total) if total else 0.0,
            {"miou": float(np.mean(present)) if present else 0.0, "iou": iou})


class Trainer:
    """The jitted train and eval steps of one network, optimizer and preprocessing."""

    def __init__(self, net: CompiledNetwork, model: Any, optimizer: optax.GradientTransformation,
                 preprocess: Preprocess, settings: Settings, num_classes: int,
                 placement: Placement | None = None) -> None:
        model.train()
        self.train_graph, params, stats, self.rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
        model.eval()
        self.eval_graph = nnx.split(model, nnx.Param, nnx.BatchStat, ...)[0]
        # one device, or the `data` axis of a mesh: the state replicated, each batch split (cnndsl/training/distributed.py)
        self.placement = placement or Placement(None)
        self.param_names, self.param_tree, self.params = flatten_state(params)
        self.stat_names, self.stat_tree, self.stats = flatten_state(stats)
        if self.placement.mesh is not None:
            self.params = self.placement.place_state(self.params)
            self.stats = self.placement.replicate(self.stats)
        self.optimizer, self.preprocess, self.settings = optimizer, preprocess, settings
        self.num_classes = num_classes
        # Dense prediction: the network gives a map of class scores, the labels are masks of class indices
        # (255: ignore); the loss is per pixel and the evaluation counts a confusion matrix (mIoU).
        self.dense = len(net.report.output_shape) == 3
        # The heads trained with the main output: training-only ones and any given a weight in `train`.
        graph = net.report.graph
        weighted = settings.weighted_heads
        self.loss_heads = {h.name: weighted.get(h.name, 1.0) for h in graph.heads
                           if h.training_only or h.name in weighted}
        # heads evaluated beside the main output: those trained against the labels that evaluation keeps
        self.eval_heads = [h.name for h in graph.inference_heads if h.name in self.loss_heads]
        main = net.report.output_shape
        for head in graph.heads:  # a trained head is compared with the same labels as the main output
            shape = net.report.node_shapes[head.node]
            if head.name in self.loss_heads and shape != main:
                fix = f"end it with `fc({num_classes})`" if len(main) == 1 else \
                    f"end it with `conv({num_classes}, 1x1) -> resize(@input, mode=bilinear)`"
                raise TrainingError(f"the head `{head.name}` gives {'x'.join(map(str, shape))}, but its loss compares "
                                    f"it with the labels the main output's {'x'.join(map(str, main))} scores: {fix}")
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
                "meters": self.zero_meters(), "step": np.array(0, np.int64),
                **({"iterator": np.zeros(STATE_BYTES, np.uint8)} if pipeline else {})}

    def zero_meters(self) -> np.ndarray:
        """An epoch's running sums at its start: loss, correct, examples, then each trained head's loss."""
        return np.zeros(3 + len(self.loss_heads), np.float32)

    def module(self, params: dict[str, jax.Array], stats: dict[str, jax.Array], train: bool) -> Any:
        """The NNX module with these arrays (fresh variables, safe to use under any transformation)."""
        graph = self.train_graph if train else self.eval_graph
        return nnx.merge(graph, unflatten_state(self.param_names, self.param_tree, params),
                         unflatten_state(self.stat_names, self.stat_tree, stats), self.rest, copy=True)

    def _loss(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """Each example's cross-entropy; for masks, the mean over its pixels not labelled `ignore` (0 when all
        are)."""
        valid = labels != IGNORE if self.dense else None
        targets = jax.nn.one_hot(jnp.where(valid, labels, 0) if self.dense else labels, self.num_classes)
        if self.settings.label_smoothing:
            targets = optax.smooth_labels(targets, self.settings.label_smoothing)
        losses = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
        if not self.dense:
            return losses
        return jnp.sum(jnp.where(valid, losses, 0.0), axis=(1, 2)) / jnp.maximum(jnp.sum(valid, axis=(1, 2)), 1)

    def _hits(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """Each example's correct fraction: 1 or 0 for a class, its pixel accuracy for a mask."""
        correct = jnp.argmax(logits, -1) == labels
        if not self.dense:
            return correct.astype(jnp.float32)
        valid = labels != IGNORE
        return jnp.sum(correct & valid, axis=(1, 2)) / jnp.maximum(jnp.sum(valid, axis=(1, 2)), 1)

    def _train_step(self, params: Any, stats: Any, opt_state: Any, meters: jax.Array, x_all: jax.Array,
                    y_all: jax.Array, order: jax.Array | None, index: jax.Array | None, weights: jax.Array | None,
                    seed: jax.Array, step: jax.Array, rate: jax.Array | None = None) -> tuple[Any, ...]:
        """One step: the batch at `index` of the epoch's `order` of the arrays on the device, or, with `order`
        None, the batch `x_all`, `y_all` itself (the input pipeline's); its randomness from the seed and the
        step. `weights` (pipeline batches) are 0 for images that could not be read: they count for nothing.
        `rate`: this step's learning rate (cnndsl.training.optim.learning_rates), written into the optimizer
        state before its update; None keeps the rate the state holds."""
        batch = self.settings.batch_size
        if order is not None:
            picked = jax.lax.dynamic_slice_in_dim(order, index * batch, batch)
            x_all, y_all = x_all[picked], y_all[picked]
        step_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), step)
        augment_key, dropout_key = jax.random.split(step_key)
        if self.dense:  # image and mask augmented together
            x, y = self.preprocess(self.placement.split_batch(x_all), augment_key, self.placement.split_batch(y_all))
        else:
            x = self.preprocess(self.placement.split_batch(x_all), augment_key)
            y = self.placement.split_batch(y_all)

        def mean(losses: jax.Array) -> jax.Array:
            if weights is None:
                return losses.mean()
            return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)

        def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any, jax.Array]]:
            module = self.module(params, stats, train=True)
            head_losses = []
            if self.loss_heads:  # the main loss plus each head's, weighted (GoogLeNet: 0.3 per auxiliary)
                outputs = module(x, rngs=nnx.Rngs(dropout=dropout_key), heads=True)
                logits = outputs["main"]
                losses = self._loss(logits, y)
                for name, weight in self.loss_heads.items():
                    head_losses.append(self._loss(outputs[name], y))
                    losses = losses + weight * head_losses[-1]
            else:
                logits = module(x, rngs=nnx.Rngs(dropout=dropout_key))
                losses = self._loss(logits, y)
            new_stats = flatten_state(nnx.state(module, nnx.BatchStat))[2]
            heads = jnp.stack([mean(h) for h in head_losses]) if head_losses else jnp.zeros(0, jnp.float32)
            return mean(losses), (logits, new_stats, heads)

        (loss, (logits, new_stats, head_losses)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        if rate is not None:
            opt_state = with_learning_rate(opt_state, rate)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        hits = self._hits(logits, y)
        if weights is None:
            counts = jnp.stack([loss * batch, jnp.sum(hits).astype(jnp.float32), jnp.float32(batch)])
            meters = meters + jnp.concatenate([counts, head_losses * batch])
        else:
            seen = jnp.sum(weights)
            meters = meters + jnp.concatenate([jnp.stack([loss * seen, jnp.sum(hits * weights), seen]),
                                               head_losses * seen])
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
        y = jnp.pad(y, ((0, pad),) + ((0, 0),) * (y.ndim - 1)).reshape(batches, size, *y.shape[1:])
        valid = (jnp.arange(batches * size) < n).reshape(batches, size)
        module = self.module(params, stats, train=False)
        return jax.lax.map(lambda b: self._evaluate_batch(module, *b), (x, y, valid)).sum(axis=0)

    def _evaluate_batch(self, module: Any, x: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
        """(summed loss, correct count) of the valid examples of one batch; for masks, then the confusion
        matrix of their labelled pixels (row: the label, column: the prediction), flattened."""
        xb, yb, vb = (self.placement.split_batch(part) for part in (x, y, valid))
        if not self.eval_heads:
            return self._scores(module(self.preprocess(xb)), yb, vb)
        outputs = module(self.preprocess(xb), heads="inference")  # then each evaluated head's, in order
        return jnp.concatenate([self._scores(outputs[name], yb, vb) for name in ["main", *self.eval_heads]])

    def _scores(self, logits: jax.Array, yb: jax.Array, vb: jax.Array) -> jax.Array:
        """One output's summed loss and correct count over a batch's valid examples (and for masks its
        confusion matrix, flattened)."""
        loss = jnp.sum(jnp.where(vb, self._loss(logits, yb), 0.0))
        if not self.dense:
            correct = (jnp.argmax(logits, -1) == yb) & vb
            return jnp.stack([loss, jnp.sum(correct).astype(jnp.float32)])
        k = self.num_classes
        counted = ((yb != IGNORE) & vb[:, None, None]).reshape(-1)
        cell = jnp.where(counted, jnp.where(counted, yb.reshape(-1), 0) * k + jnp.argmax(logits, -1).reshape(-1), k * k)
        confusion = jnp.zeros(k * k + 1, jnp.float32).at[cell].add(1.0)[:-1]  # the last cell: uncounted pixels
        return jnp.concatenate([jnp.stack([loss, jnp.trace(confusion.reshape(k, k))]), confusion])

    def _evaluate_stream_batch(self, params: Any, stats: Any, x: jax.Array, y: jax.Array,
                               valid: jax.Array) -> jax.Array:
        totals = self._evaluate_batch(self.module(params, stats, train=False), x, y, valid)
        return jnp.concatenate([totals, jnp.sum(valid, dtype=jnp.float32)[None]])  # every process's images

    def evaluate_stream(self, params: Any, stats: Any, batches: Any, place: Callable[[np.ndarray], Any]
                        ) -> tuple[float, float, int, list[int], dict[str, Any]] | None:
        """(mean loss, accuracy, images, unreadable indices, dense metrics) of a split given as pipeline batches
        (dicts of numpy arrays, `place` puts one on the devices); None for an empty split."""
        totals, bad = None, []
        for batch in batches:
            result = self.evaluate_stream_batch(params, stats, place(batch["image"]), place(batch["label"]),
                                                place(batch["weight"] > 0))
            totals = np.asarray(result, np.float64) + (0 if totals is None else totals)
            bad += [int(b) for b in batch["bad"] if b >= 0]
        if totals is None or not totals[-1]:
            return None
        count = totals[-1]
        main = totals[:-1].reshape(1 + len(self.eval_heads), -1)[0]  # the main output's (heads: arrays only)
        loss, accuracy, dense = self._split_scores(main, count)
        return loss, accuracy, int(count), bad, dense

    def _evaluate_splits(self, params: Any, stats: Any, splits: tuple[tuple[jax.Array, jax.Array], ...]
                         ) -> tuple[jax.Array, ...]:
        return tuple(self._evaluate_split(params, stats, x, y) for x, y in splits)

    def evaluate(self, params: Any, stats: Any, *splits: tuple[Any, Any]) -> list[Scores | None]:
        """(mean loss, accuracy, dense metrics) of each split (x, y), all in one compiled program; None for an
        empty split. For masks the accuracy is the pixel accuracy and the metrics hold the IoUs (`dense_scores`)."""
        present = [i for i, (_, y) in enumerate(splits) if len(y)]
        totals = self.evaluate_splits(params, stats, tuple(splits[i] for i in present)) if present else ()
        results: list[Scores | None] = [None] * len(splits)
        for i, total in zip(present, (np.asarray(t, np.float64) for t in totals)):
            n = len(splits[i][1])
            blocks = total.reshape(1 + len(self.eval_heads), -1)  # the main output's, then each head's
            scores = [self._split_scores(block, n) for block in blocks]
            loss, accuracy, extra = scores[0]
            if self.eval_heads:  # {"heads": {name: {"loss", "accuracy"[, "miou", "iou"]}}}
                extra = {**extra, "heads": {name: {"loss": s[0], "accuracy": s[1], **s[2]}
                                            for name, s in zip(self.eval_heads, scores[1:])}}
            results[i] = (loss, accuracy, extra)
        return results

    def _split_scores(self, total: np.ndarray, n: int) -> Scores:
        """An output's (mean loss, accuracy, dense metrics) from its summed evaluation vector over n examples."""
        if self.dense:
            return (float(total[0]) / n, *dense_scores(total[2:].reshape(self.num_classes, self.num_classes)))
        return (float(total[0]) / n, float(total[1]) / n, {})

    def prepare_evaluation(self, params: Any, stats: Any, *splits: tuple[Any, Any]) -> None:
        """Trace and compile the program `evaluate` will run for these arguments (jit keeps it): a run does
        this on a thread of its own while its first epoch trains, so the evaluation at the epoch's end starts
        at once. The arguments must be arrays like the later ones: shape structures would key another program."""
        present = tuple(split for split in splits if len(split[1]))
        if present:
            self.evaluate_splits.lower(params, stats, present).compile()
