"""The optimizer of a run: optax's transformations chosen by the settings, with frozen parameters masked."""

from __future__ import annotations

from typing import Any

import optax
from flax import nnx

from cnndsl.lang.settings import Settings
from cnndsl.nn.compiler import CompiledNetwork
from cnndsl.nn.flax_backend import flatten_state


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


def make_optimizer(settings: Settings, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optax optimizer with its learning-rate schedule, weight decay and clipping."""
    schedule = make_schedule(settings, steps_per_epoch)
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
    from cnndsl.training.freeze import frozen_names

    names = flatten_state(nnx.state(model, nnx.Param))[0]
    frozen = frozen_names(net.report, settings.freeze, names)
    return optax.chain(optimizer, optax.masked(optax.set_to_zero(), {n: n in frozen for n in names})), frozen
