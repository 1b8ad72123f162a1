"""How the `cnndsl` process runs a command: Ctrl-C, XLA's persistent cache, the errors a user is shown."""

from __future__ import annotations

import os
import sys
from typing import Any


def runtime_errors() -> tuple[type[Exception], ...]:
    """Errors with a message for the user: bad data, a run that cannot start or had to stop."""
    from cnndsl.data import DataError
    from cnndsl.data.pipeline import PipelineError
    from cnndsl.data.records import RecordsError
    from cnndsl.emit.artifact import ExportError
    from cnndsl.emit.onnx_model import OnnxError
    from cnndsl.interop.weights import WeightsError
    from cnndsl.lang.settings import TrainingError
    from cnndsl.search.study import SweepError
    from cnndsl.training.interrupts import Interrupted

    # DistributedError is a TrainingError
    return (DataError, PipelineError, RecordsError, ExportError, OnnxError, WeightsError, TrainingError, Interrupted,
            SweepError)


def note_interrupts() -> None:
    """Ctrl-C outside the training loop ends the command at once: exit status 130, "interrupted". Raising
    KeyboardInterrupt instead is not safe while JAX starts: it can land in a Python callback called from C++
    (the process aborts with "terminate called after throwing ...") or in a garbage-collection callback
    (printed as "Exception ignored", then swallowed). Nothing is lost by stopping there: files are written
    atomically, and a sweep's interrupted trial is marked failed when the same command resumes. The training
    loop installs its own handler around its steps (stop after the step, save a checkpoint)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    from cnndsl.training.interrupts import INTERRUPTS

    def handler(signum: int, frame: Any) -> None:
        INTERRUPTS.append(signum)
        print("\ncnndsl: interrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)

    default_hook = sys.unraisablehook

    def quiet_about_interrupts(unraisable: Any) -> None:
        # A KeyboardInterrupt (a second Ctrl-C in training) raised inside a garbage-collection callback is
        # swallowed and printed as "Exception ignored ... Traceback"; INTERRUPTS has it for the next safe point.
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            default_hook(unraisable)

    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = quiet_about_interrupts
