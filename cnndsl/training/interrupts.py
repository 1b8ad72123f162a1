"""Stopping a run cleanly: Ctrl-C and SIGTERM become a checkpoint and `Interrupted`; a NaN loss is `Diverged`.

Importable without JAX: the command line installs its signal handler from its very first line.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from cnndsl.lang.settings import TrainingError

#: Ctrl-C (SIGINT) and SIGTERM seen by this process, wherever they landed. The command line's handler and
#: the training loop's both record them, so an interrupt that Python swallowed (a KeyboardInterrupt raised
#: inside a weakref callback or __del__ is only printed) still stops the work at its next safe point.
INTERRUPTS: list[int] = []


class Diverged(TrainingError):
    """The loss became NaN or infinite: training stopped before saving it (a sweep records the member as
    diverged; its learning rate was too high for it)."""


class StopRun(Exception):  # noqa: N818 - an instruction, as StopIteration
    """Raised by an `on_epoch` callback to end a run after the epoch it was told of (a sweep's pruner): the
    epoch's metrics line and checkpoint are written, `train` returns its result with `stopped` = the reason,
    and `train --resume` can continue the run later."""


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) during training; a checkpoint of the current step was saved."""


def stop_on_signals(flag: list[int]) -> Callable[[], None]:
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
