"""Counting XLA compilations: a run should compile a handful of programs, each once (issue 9's target is
at most 5 for a training run), because every eager jax operation outside a jitted function is a
compilation of its own and they add seconds to a short run.

    with count_compilations() as compiled:
        cnndsl.train("examples/digits.cnn", epochs=1)
    print(len(compiled), compiled)            # ['_build', 'init_fn', '_train_step', ...]

A program served from jax's persistent compilation cache counts too: it still had to be requested.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax

#: The duration event jax records for each program it compiles (jax._src.dispatch.BACKEND_COMPILE_EVENT).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compilations() -> Iterator[list[str]]:
    """Yield a list that collects the name of every program jax compiles (or loads) inside the block."""
    names: list[str] = []

    def listener(event: str, duration: float, **kwargs: Any) -> None:
        if event == BACKEND_COMPILE_EVENT:
            names.append(str(kwargs.get("fun_name", "?")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
