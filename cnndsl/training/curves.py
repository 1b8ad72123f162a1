"""A run's training curves (curves.png), drawn by a worker process that imports matplotlib while the run trains.

Importing matplotlib takes ~0.45 s here and drawing ~0.2 s: for the main job that was a sixth of its warm
time, spent after training, on the one core the run's Python was using. `CurvesPainter.start()` launches
`python -m cnndsl.training.curves` at the start of a run; the worker imports matplotlib on the other core and waits
for the history on its standard input; `paint` hands it over and waits for the PNG. A worker that cannot
start or fails is replaced by drawing in this process, so the PNG is written either way; a worker whose
parent dies sees its input close and exits without writing anything.

This module imports neither JAX nor matplotlib at import time.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cnndsl.lang.outputs import write_atomic

#: Seconds `paint` waits for the worker before drawing in this process instead (a guard against a stuck
#: worker, far above the ~1 s it needs; not a timing anything depends on).
WORKER_TIMEOUT = 120


def plot_curves(epochs: list[dict[str, Any]], best_epoch: int | None, path: Path, title: str) -> None:
    """Loss and accuracy per epoch (train, validation and test) as a PNG, written atomically.

    Drawn with matplotlib's object API (a `Figure` and its Agg canvas, no pyplot): no global state."""
    from matplotlib.figure import Figure

    numbers = [e["epoch"] for e in epochs]
    fig = Figure(figsize=(9, 3.4), dpi=110)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for key, label, style in (("train", "train", "-"), ("val", "validation", "-"), ("test", "test", ":")):
        if epochs[-1].get(f"{key}_loss") is None:
            continue
        loss_ax.plot(numbers, [e[f"{key}_loss"] for e in epochs], style, marker="o", ms=3, label=label)
        acc_ax.plot(numbers, [100 * e[f"{key}_accuracy"] for e in epochs], style, marker="o", ms=3,
                    label=label + (" (pixels)" if epochs[-1].get("test_miou") is not None else ""))
        if epochs[-1].get(f"{key}_miou") is not None:  # segmentation: mean IoU beside the pixel accuracy
            acc_ax.plot(numbers, [100 * e[f"{key}_miou"] for e in epochs], "--" if key != "test" else "-.",
                        marker="s", ms=3, label=f"{label} mIoU")
    for key in sorted(k for k in epochs[-1] if k.startswith("train_loss_")):  # each head's own training loss
        loss_ax.plot(numbers, [e.get(key) for e in epochs], "--", marker=".", ms=3, label=f"head {key[11:]} (train)")
    if best_epoch is not None:
        acc_ax.axvline(best_epoch, color="grey", alpha=0.4, lw=1, label="best (validation)")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    dense = epochs[-1].get("test_miou") is not None
    acc_ax.set(xlabel="epoch", ylabel="%" if dense else "accuracy (%)",
               title="pixel accuracy and mean IoU" if dense else "accuracy")
    from matplotlib.ticker import MaxNLocator

    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no tick at 1.25
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png")
    write_atomic(path, image.getvalue())  # a unique temporary beside it, renamed over the old picture


class CurvesPainter:
    """Draws one run's curves.png, in a worker process started early (see the module's docstring)."""

    def __init__(self) -> None:
        self._worker: subprocess.Popen[bytes] | None = None

    def start(self) -> CurvesPainter:
        """Launch the worker (it imports matplotlib now); without one, `paint` draws in this process."""
        try:
            self._worker = subprocess.Popen(
                [sys.executable, "-m", "cnndsl.training.curves"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        except OSError:
            self._worker = None
        return self

    def paint(self, epochs: list[dict[str, Any]], best_epoch: int | None, path: Path, title: str) -> None:
        """Write the PNG: by the worker if it answers, else here."""
        worker, self._worker = self._worker, None
        if worker is not None:
            job = json.dumps({"epochs": epochs, "best_epoch": best_epoch, "path": str(path), "title": title})
            try:
                worker.communicate(job.encode(), timeout=WORKER_TIMEOUT)
                if worker.returncode == 0 and path.exists():
                    return
            except (OSError, subprocess.TimeoutExpired):
                worker.kill()
                worker.wait()
        plot_curves(epochs, best_epoch, path, title)

    def close(self) -> None:
        """Stop a worker that was never given a job (the run ended before its first epoch): it has nothing
        to write, so it is ended at once rather than left to finish importing."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.kill()
            worker.communicate()


def _serve() -> int:
    """The worker: import matplotlib, then draw the job read from standard input (none: exit quietly)."""
    import matplotlib.figure  # noqa: F401 - the point of the worker: imported while the run trains

    text = sys.stdin.read()
    if not text.strip():
        return 0
    job = json.loads(text)
    plot_curves(job["epochs"], job["best_epoch"], Path(job["path"]), job["title"])
    return 0


if __name__ == "__main__":
    raise SystemExit(_serve())
