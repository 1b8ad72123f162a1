"""Measured costs of a compiled network on this machine: its forward latency, and the time JAX spends compiling.

`forward_latency(net, batch)` compiles the eval-mode forward ahead of time (`jit(...).lower(...).compile()`,
so compilation is never timed), runs it once to warm up, then times repeated calls, each waited for
(`block_until_ready`), and returns the median in milliseconds. The calls go on until `MIN_CALLS` were made and
`MIN_SECONDS` passed (at most `MAX_CALLS`): enough for a median that one stall cannot move.

`CompileClock` adds up JAX's own compile events (`jax.monitoring`: tracing, lowering to MLIR, XLA's compile or
the persistent cache's answer) while it is open: the part of a run's wall time that went to compilation. A
program compiled on a helper thread while training runs counts too, so the sum can overlap the steps.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

MIN_CALLS, MIN_SECONDS, MAX_CALLS = 10, 0.2, 1000

#: JAX's compile events (their names in jax._src.dispatch), each reported with its duration in seconds.
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


def forward_latency(net: Any, batch: int = 1, model: Any = None) -> float:
    """The median wall time, in milliseconds, of one eval-mode forward of `batch` images (compilation excluded),
    through `model` (a trained module; by default one initialised from seed 0: the time does not depend on the
    values)."""
    model = net.init(0) if model is None else model
    model.eval()
    graphdef, state = nnx.split(model)
    x = jnp.zeros((batch, *net.input_shape), jnp.float32)
    compiled = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x)).lower(state, x).compile()
    compiled(state, x).block_until_ready()  # the first call: buffers placed, caches warm
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < MAX_CALLS and (len(times) < MIN_CALLS or time.perf_counter() - started < MIN_SECONDS):
        begin = time.perf_counter()
        compiled(state, x).block_until_ready()
        times.append(time.perf_counter() - begin)
    return 1000 * statistics.median(times)


class CompileClock:
    """Seconds of JAX compile events while open (`with CompileClock() as clock: ...; clock.seconds`)."""

    _lock = threading.Lock()
    _open: list[CompileClock] = []
    _listening = False

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> CompileClock:
        with CompileClock._lock:
            if not CompileClock._listening:  # one listener for the process (jax.monitoring keeps them all)
                jax.monitoring.register_event_duration_secs_listener(CompileClock._heard)
                CompileClock._listening = True
            CompileClock._open.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with CompileClock._lock:
            CompileClock._open.remove(self)

    @staticmethod
    def _heard(event: str, seconds: float, **_: Any) -> None:
        if event in COMPILE_EVENTS:
            with CompileClock._lock:
                for clock in CompileClock._open:
                    clock.seconds += seconds
