"""TensorBoard event files of a run, beside metrics.jsonl: `tensorboard --logdir runs` shows every run.

Written with tensorboardX's `SummaryWriter`: TensorBoard's own event format (protocol buffers, no TensorFlow),
the light writer the field uses outside TensorFlow (PyTorch's `torch.utils.tensorboard` derives from it).
Per epoch, every number of the epoch's metrics line as a scalar (`train_loss` as `train/loss`, a head's
`val_heads` as `val/heads/NAME/loss`, a class's IoU as `val/iou/CLASS`) and the learning rate the schedule
gave at the epoch's last step (`train/lr`); once, the spec as text and the run's settings as hparams (with
its `--set` bindings, parameters and MACs), so TensorBoard's HParams view compares runs, and a sweep's
trials (each a run) with them. A resumed run purges the events past its checkpoint, as metrics.jsonl drops
its lines. Only the main process writes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The metrics an hparams session compares (TensorBoard's HParams view): the last value of each tag.
SESSION_METRICS = ("val/accuracy", "val/loss", "test/accuracy", "test/loss", "val/miou", "test/miou")
_SPLITS = ("train_", "val_", "test_")


def tag_of(key: str) -> str:
    """A metrics.jsonl key as its scalar's tag: `val_accuracy` -> `val/accuracy`, `seconds` -> `time/seconds`."""
    for split in _SPLITS:
        if key.startswith(split):
            return f"{split[:-1]}/{key[len(split):]}"
    return f"time/{key}" if "second" in key or key.endswith("_per_s") else f"run/{key}"


def scalars(record: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """Every number of a metrics line with its tag (nested values flattened, `None` and flags left out)."""
    def walk(prefix: str, value: Any) -> Iterator[tuple[str, float]]:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, (int, float)):
            if math.isfinite(value):
                yield prefix, float(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                yield from walk(f"{prefix}/{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                yield from walk(f"{prefix}/{i}", v)

    for key, value in record.items():
        if key not in ("epoch", "step"):
            yield from walk(tag_of(key), value)


def hparams_of(settings: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """A run's settings as TensorBoard hparams: numbers, flags and text (lists joined)."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in settings.items():
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
            out[key] = ",".join(map(str, value))
    return out


def _summary_writer() -> Any:
    """tensorboardX's SummaryWriter class, imported without PyTorch: its writer module imports torch whenever
    it is installed (3.5 s here), only to accept torch tensors, which cnndsl never gives it. A torch already
    imported is used as it is."""
    import sys

    if "torch" in sys.modules or "tensorboardX.writer" in sys.modules:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError meanwhile
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class EventLog:
    """The run's event file: `start` once, `epoch` per metrics line, `close` at the end."""

    def __init__(self, folder: Path, completed_epochs: int = 0) -> None:
        SummaryWriter = _summary_writer()
        # purge_step: TensorBoard drops events this run wrote past its checkpoint before it was interrupted
        self.writer = SummaryWriter(logdir=str(folder), purge_step=completed_epochs + 1 if completed_epochs else None,
                                    flush_secs=10)

    def start(self, spec_text: str, hparams: dict[str, bool | int | float | str]) -> None:
        """The spec (as a code block) and the hparams session of the run."""
        from tensorboardX.summary import hparams as hparams_summary

        self.writer.add_text("spec", "```\n" + spec_text.strip() + "\n```", 0)
        experiment, start, _ = hparams_summary(hparams, {tag: 0.0 for tag in SESSION_METRICS})
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(start)

    def epoch(self, record: dict[str, Any], learning_rate: float | None) -> None:
        """One epoch's numbers at step = the epoch (the x-axis of curves.png)."""
        step = int(record["epoch"])
        for tag, value in scalars(record):
            self.writer.add_scalar(tag, value, step)
        if learning_rate is not None and math.isfinite(learning_rate):
            self.writer.add_scalar("train/lr", learning_rate, step)
        self.writer.flush()

    def close(self) -> None:
        """Everything on disk."""
        self.writer.close()


def write_session(folder: Path, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
    """One finished hparams session in its own event folder: what a sweep writes for each trial (its
    member's values and its objectives), so TensorBoard's HParams view tables, plots and compares trials."""
    from tensorboardX.summary import hparams as hparams_summary

    with _summary_writer()(logdir=str(folder)) as writer:
        for summary in hparams_summary(hparams_of(hparams), metrics):
            writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, 0)
