"""What training returns: the per-epoch history and the trained run."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
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

    def summary(self) -> str:
        """The best epoch in words: `best epoch 3: val acc 97.92%, test acc 98.89%` (empty before the first)."""
        best = self.best
        if best is None:
            return ""
        val = f"val acc {best['val_accuracy']:.2%}, " if best.get("val_accuracy") is not None else ""
        if best.get("val_miou") is not None:
            val += f"val mIoU {best['val_miou']:.2%}, "
        return f"best epoch {best['epoch']}: {val}test acc {best['test_accuracy']:.2%}"

    def __repr__(self) -> str:
        return f"History({len(self.epochs)} epochs; {self.summary()})" if self.epochs else "History(0 epochs)"

    def _repr_html_(self) -> str:
        """A notebook cell's view: one row per epoch with the columns the run has, the best epoch in bold."""
        if not self.epochs:
            return "<div>History: no epoch yet</div>"
        columns = [c for c in _COLUMNS if self.epochs[-1].get(c[0]) is not None]
        best = self.best
        head = "".join(f"<th style='text-align:right'>{escape(title)}</th>" for _, title, _ in columns)
        rows = "".join(
            "<tr>" + "".join(f"<td style='text-align:right'>{'<b>' if epoch is best else ''}{form.format(epoch[key])}{'</b>' if epoch is best else ''}"
                             "</td>" for key, _, form in columns) + "</tr>" for epoch in self.epochs)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


#: The history's columns in a notebook (metrics.jsonl key, title, format), shown when the run has them.
_COLUMNS = (("epoch", "epoch", "{}"), ("train_loss", "train loss", "{:.4f}"), ("train_accuracy", "train acc", "{:.2%}"),
            ("val_loss", "val loss", "{:.4f}"), ("val_accuracy", "val acc", "{:.2%}"), ("val_miou", "val mIoU", "{:.2%}"),
            ("test_accuracy", "test acc", "{:.2%}"), ("test_miou", "test mIoU", "{:.2%}"), ("seconds", "seconds", "{:.2f}"))


@dataclass
class TrainResult:
    """What `train` returns: the network, the trained module, the history and where the run lives."""

    net: CompiledNetwork
    model: Any
    history: History
    run_dir: Path
    stopped: str | None = None  # why the run ended before its last epoch (an on_epoch callback's StopRun)

    def __repr__(self) -> str:
        return f"TrainResult({self.net.report.name!r}, {self.history!r}, run_dir={str(self.run_dir)!r})"

    def _repr_html_(self) -> str:
        """A notebook cell's view: the network and where the run lives, its curves (the run's curves.png,
        inline) and the history table, the epoch `checkpoints/best` holds in bold."""
        import base64

        curves = Path(self.run_dir) / "curves.png"
        picture = (f"<img alt='training curves' style='max-width:100%' src='data:image/png;base64,"
                   f"{base64.b64encode(curves.read_bytes()).decode()}'/>" if curves.is_file() else "")
        report = self.net.report
        return (f"<div><b>{escape(report.name)}</b> ({report.params:,} params) trained "
                f"{len(self.history.epochs)} epoch{'s' * (len(self.history.epochs) != 1)} in "
                f"<code>{escape(str(self.run_dir))}</code>; {escape(self.history.summary())}"
                f"{picture}{self.history._repr_html_()}</div>")
