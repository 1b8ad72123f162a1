"""The optimizer of a run: optax's transformations chosen by the settings, with frozen parameters masked.

The learning rate is a value the train step is handed at each step (`learning_rates` evaluates the schedule
on the host, once per run), written into the optimizer state that optax's `inject_hyperparams` keeps for it.
So the compiled step depends on the network, the shapes and the optimizer's kind, never on the number of
epochs or the learning rate's values: another `--epochs`, `--lr` or schedule, or the next member of a sweep,
reuses the step from the persistent compilation cache instead of compiling it again.

Runs recorded before this (their settings.json has no "optimizer_state") had the schedule inside the
optimizer, whose state is shaped differently: they keep that optimizer (`scheduled=True`) when resumed or
evaluated, so their checkpoints restore as they were written.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from cnndsl.lang.settings import Settings
from cnndsl.nn.compiler import CompiledNetwork
from cnndsl.nn.flax_backend import flatten_state
from cnndsl.training.record import INJECTED


def scheduled_record(record: dict[str, Any]) -> bool:
    """Whether a run record is from before injected learning rates (its optimizer holds the schedule)."""
    return record.get("optimizer_state") != INJECTED


def make_schedule(settings: Settings, steps_per_epoch: int) -> Any:
    """The learning rate by step (an optax schedule, or a number for a constant one)."""
    total = settings.epochs * steps_per_epoch
    lr = settings.lr
    return {
        "constant": lambda: lr,
        "cosine": lambda: optax.cosine_decay_schedule(lr, total),
        "warmup-cosine": lambda: optax.warmup_cosine_decay_schedule(
            0.0, lr, min(total - 1, max(1, round(settings.warmup_epochs * steps_per_epoch))), total),
        "one-cycle": lambda: optax.cosine_onecycle_schedule(total, lr),
        "step": lambda: optax.piecewise_constant_schedule(lr, {round(total * 0.5): 0.1, round(total * 0.75): 0.1}),
    }[settings.schedule]()


def learning_rates(settings: Settings, steps_per_epoch: int) -> np.ndarray:
    """The learning rate of every step of the run (float32, index = the step before its update), from the
    optax schedule evaluated once (one small program for all steps; none for a constant rate)."""
    total = max(settings.epochs * steps_per_epoch, 1)
    schedule = make_schedule(settings, steps_per_epoch)
    if not callable(schedule):
        return np.full(total, schedule, np.float32)
    return np.asarray(jax.jit(jax.vmap(schedule))(np.arange(total, dtype=np.int32)), np.float32)


def make_optimizer(settings: Settings, steps_per_epoch: int, *, scheduled: bool = False) -> optax.GradientTransformation:
    """The optax optimizer with its weight decay and clipping; its learning rate injected at each step (see
    `with_learning_rate`), or with `scheduled` (runs recorded before that) the schedule inside it."""
    if scheduled:
        rate: Any = make_schedule(settings, steps_per_epoch)
        inject = lambda make: make  # noqa: E731 - the transformation as it is
    else:
        rate = settings.lr  # the starting value; each step writes its own
        inject = optax.inject_hyperparams
    parts = []
    if settings.clip:
        parts.append(optax.clip_by_global_norm(settings.clip))
    if settings.optimizer == "adamw":
        parts.append(inject(optax.adamw)(rate, weight_decay=settings.weight_decay))
    else:
        if settings.weight_decay:
            parts.append(optax.add_decayed_weights(settings.weight_decay))
        if settings.optimizer == "sgd":
            parts.append(inject(optax.sgd)(rate, momentum=settings.momentum or None, nesterov=settings.nesterov))
        else:
            parts.append(inject(optax.adam)(rate))
    return optax.chain(*parts)


def with_learning_rate(opt_state: Any, rate: jax.Array) -> Any:
    """The optimizer state with this step's learning rate in each `inject_hyperparams` state it holds (a
    scheduled optimizer's state, which has none, as it is)."""
    def is_injected(node: Any) -> bool:  # optax's InjectHyperparamsState or InjectStatefulHyperparamsState
        return isinstance(getattr(node, "hyperparams", None), dict) and "learning_rate" in node.hyperparams

    def set_rate(node: Any) -> Any:
        if not is_injected(node):
            return node
        current = node.hyperparams["learning_rate"]
        return node._replace(hyperparams={**node.hyperparams, "learning_rate": rate.astype(current.dtype)})

    return jax.tree.map(set_rate, opt_state, is_leaf=is_injected)


def run_optimizer(net: CompiledNetwork, model: Any, settings: Settings, steps_per_epoch: int,
                  scheduled: bool = False) -> tuple[optax.GradientTransformation, set[str]]:
    """A run's optimizer, and the parameter names `settings.freeze` keeps fixed (their updates are zeroed:
    the same optimizer state structure whenever the run is loaded again)."""
    optimizer = make_optimizer(settings, steps_per_epoch, scheduled=scheduled)
    if not settings.freeze:
        return optimizer, set()
    from cnndsl.training.freeze import frozen_names

    names = flatten_state(nnx.state(model, nnx.Param))[0]
    frozen = frozen_names(net.report, settings.freeze, names)
    return optax.chain(optimizer, optax.masked(optax.set_to_zero(), {n: n in frozen for n in names})), frozen
