"""What training returns: the per-epoch history and the trained run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnndsl.nn.compiler import CompiledNetwork


@dataclass
class History:
    """Per-epoch metrics, as written to metrics.jsonl: train, val (model selection) and test (the record)."""

    epochs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> dict[str, Any] | None:
        """The epoch `checkpoints/best` holds: the first with the best validation accuracy, or for
        segmentation the best validation mean IoU (the last epoch when the run has no validation split). None
        before the first epoch."""
        if not self.epochs:
            return None
        if self.epochs[-1].get("val_accuracy") is None:
            return self.epochs[-1]
        key = "val_miou" if self.epochs[-1].get("val_miou") is not None else "val_accuracy"
        return max(self.epochs, key=lambda e: e[key])

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
        if best.get("val_miou") is not None:
            val += f"val mIoU {best['val_miou']:.2%}, "
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
