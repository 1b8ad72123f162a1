"""Stopping hopeless members early with Optuna's pruners (`cnndsl sweep --pruner median|hyperband|none`).

Optuna prunes single-objective trials only (`Trial.report` refuses a multi-objective study), and a sweep
usually has several objectives (accuracy and MACs). So each sweep keeps a second study beside its own, in
the same storage, named `<study>.epochs`: one trial there per member trained, maximizing validation
accuracy, to which every epoch's validation accuracy is reported. Its pruner (Optuna's MedianPruner or
HyperbandPruner, unchanged) decides after each epoch but the last whether the member goes on; a member
pruned stops after that epoch with its run directory, metrics and checkpoints kept (`train --resume` can
finish it) and its sweep trial is recorded as pruned, with the pruner's reason.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from cnndsl.training.interrupts import StopRun

PRUNERS = ("median", "hyperband", "none")
#: Optuna's own default pruner; it never prunes before `MEDIAN_STARTUP` members have finished.
DEFAULT_PRUNER = "median"
MEDIAN_STARTUP = 5  # MedianPruner's n_startup_trials (Optuna's default)


def make_pruner(name: str, epochs: int) -> Any:
    """Optuna's pruner named `name`, for members trained `epochs` epochs (an epoch is one step)."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_epochs_study(storage: Any, name: str, pruner: Any) -> Any:
    """The study of the members' epochs (`<name>.epochs`, maximizing validation accuracy) in `storage`."""
    import optuna

    return optuna.create_study(study_name=f"{name}.epochs", storage=storage, direction="maximize", pruner=pruner,
                               load_if_exists=True)


def score(record: dict[str, Any]) -> float:
    """What a member is judged on after an epoch: its validation accuracy (test accuracy without a
    validation split), the sweep's `accuracy` objective."""
    value = record.get("val_accuracy")
    return float(record["test_accuracy"] if value is None else value)


class EpochJudge:
    """The `on_epoch` of one member's training: reports each epoch to the member's trial in the epochs study
    and stops the run (`StopRun`) when the pruner says so. `finish` tells the study how the member ended."""

    def __init__(self, study: Any, pruner_name: str, sweep_trial: int, epochs: int, run_dir: Path) -> None:
        self.study, self.pruner_name, self.epochs, self.run_dir = study, pruner_name, epochs, run_dir
        self.trial = study.ask()
        self.trial.set_user_attr("sweep_trial", sweep_trial)
        self.pruned_at: int | None = None
        self.values: dict[int, float] = {}  # epoch -> validation accuracy, as reported

    def __call__(self, record: dict[str, Any]) -> None:
        epoch = record["epoch"]
        if not self.values and epoch > 1:  # a resumed run: the epochs before its checkpoint, from its metrics
            for line in (self.run_dir / "metrics.jsonl").read_text().splitlines():
                earlier = json.loads(line)
                if earlier["epoch"] < epoch:
                    self._report(score(earlier), earlier["epoch"])
        self._report(score(record), epoch)
        if epoch < self.epochs and self.trial.should_prune():
            self.pruned_at = epoch
            raise StopRun(self.reason(epoch))

    def _report(self, value: float, epoch: int) -> None:
        self.trial.report(value, epoch)
        self.values[epoch] = value

    def reason(self, epoch: int) -> str:
        """The pruner's decision in words."""
        import optuna

        kind = type(self.study.pruner).__name__
        best = max(self.values.values())
        if self.pruner_name == "median":  # MedianPruner: the member's best so far against the median at this epoch
            done = [t.intermediate_values[epoch] for t in self.study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if epoch in t.intermediate_values]
            if done:
                return (f"epoch {epoch}: best so far {best:.2%} < median {statistics.median(done):.2%} of "
                        f"{len(done)} finished members ({kind})")
        return f"epoch {epoch}: best so far {best:.2%}, not kept by its bracket's rung ({kind})"

    def finish(self, accuracy: float | None) -> None:
        """The member's end: its final accuracy (it was trained to the end) or pruned."""
        import optuna

        if self.pruned_at is not None:
            self.study.tell(self.trial, state=optuna.trial.TrialState.PRUNED)
        elif accuracy is not None:
            self.study.tell(self.trial, accuracy)
        else:
            self.study.tell(self.trial, state=optuna.trial.TrialState.FAIL)
