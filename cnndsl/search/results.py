"""What a sweep reports: every trial, the Pareto front, the chosen member; trials.csv and the pictures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnndsl.lang.outputs import write_atomic
from cnndsl.lang.space import Space
from cnndsl.search.study import direction


@dataclass(frozen=True)
class TrialResult:
    """One trial as the sweep reports it."""

    number: int
    state: str  # complete, pruned, fail, running
    status: str  # trained, invalid, over budget, duplicate, diverged, failed, running
    bindings: dict[str, Any]
    values: tuple[float, ...] | None
    accuracy: float | None
    test_accuracy: float | None
    params: int | None
    macs: int | None
    seconds: float | None
    run_dir: str | None
    reason: str | None
    accuracy_std: float | None = None  # the spread (sample standard deviation) of the seeds' accuracies (--repeats)
    compile_seconds: float | None = None  # of `seconds`, what JAX spent compiling (cnndsl.nn.timing.CompileClock)
    throughput: float | None = None  # training images/s: the median of the epochs after the first
    latency_ms: dict[str, float] | None = None  # batch size -> median forward time (latency objectives only)


@dataclass
class SweepResult:
    """What `sweep` returns: the Optuna study, every trial and the Pareto front (trained trials)."""

    study: Any
    trials: list[TrialResult]
    front: list[TrialResult]
    best: TrialResult | None
    directory: Path
    objectives: tuple[str, ...]
    train_flags: tuple[str, ...] = ()  # what `cnndsl train best.cnn` needs to train on the sweep's data
    validation_images: int | None = None  # the size of the split members are scored on

    def __repr__(self) -> str:
        best = "" if self.best is None else f", best trial {self.best.number}"
        return (f"SweepResult({self.study.study_name!r}: {len(self.trials)} trials, {len(self.front)} on the front"
                f"{best}, in {str(self.directory)!r})")


def summarize(study: Any, directory: Path, space: Space, objectives: Sequence[str]) -> SweepResult:
    """Every trial of the study as `TrialResult`s, the front, the chosen member; writes trials.csv,
    pareto.png, edf.png and best.cnn into `directory`."""
    from cnndsl.search.plots import plot_edf, plot_pareto

    trials = study.get_trials(deepcopy=False)
    resumed_by = {t.user_attrs["resumes"]: t.number for t in trials if t.user_attrs.get("resumes") is not None
                  and t.state.name != "WAITING"}
    results = [_result(t, resumed_by.get(t.number)) for t in trials]
    trained = [r for r in results if r.status == "trained" and r.values is not None]
    front = pareto_front(trained, objectives)
    best = choose(front, objectives)
    _write_csv(directory / "trials.csv", results, space)
    if trained:
        plot_pareto(trained, front, directory / "pareto.png", space.program.name or "family", objectives)
        plot_edf({space.program.name or "family": [1 - r.accuracy for r in trained if r.accuracy is not None]},
                 directory / "edf.png")
    if best is not None and best.run_dir:
        member = Path(best.run_dir) / "member.cnn"
        if member.exists():
            write_atomic(directory / "best.cnn", member.read_text())
    _record_analysis(study, objectives, directory)
    return SweepResult(study, results, front, best, directory, tuple(objectives))


def _record_analysis(study: Any, objectives: Sequence[str], directory: Path) -> None:
    """Parameter importances into sweep.json, importance.png and history.png (cnndsl.search.analysis)."""
    import json

    from cnndsl.search.analysis import importances, plot_analysis

    found = importances(study, objectives)
    plot_analysis(study, objectives, directory, found)
    path = directory / "sweep.json"
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    write_atomic(path, json.dumps({**recorded, "importances": found}, indent=1, default=str) + "\n")


def _result(t: Any, resumed_by: int | None = None) -> TrialResult:
    """One Optuna trial as the sweep reports it; `resumed_by`: the trial that resumed its cut-off run."""
    a = t.user_attrs
    state = t.state.name.lower()
    status = a.get("status") or ("failed" if state == "fail" else state)
    reason = a.get("reason")
    if state == "fail":
        status = "failed"
        if a.get("status") == "training":  # cut off while training: killed, interrupted or an error
            reason = "stopped while training" + (f"; its run resumed by trial {resumed_by}" if resumed_by is not None
                                                 else "")
    elif state == "running":
        status = "running"
    elif state == "waiting":
        status = "waiting"
    if a.get("resumes") is not None and status == "trained":
        reason = f"resumed trial {a['resumes']}'s run from its newest checkpoint"
    return TrialResult(t.number, state, status, dict(t.params),
                       tuple(t.values) if t.values is not None else None, a.get("accuracy"), a.get("test_accuracy"),
                       a.get("params"), a.get("macs"), a.get("seconds"), a.get("run_dir"), reason,
                       a.get("accuracy_std"), a.get("compile_seconds"), a.get("throughput"), a.get("latency_ms"))


def resolution(images: int, accuracy: float) -> tuple[float, float]:
    """What a validation split of `images` can tell apart near `accuracy`: the standard error of one member's
    accuracy (binomial, sqrt(p(1 - p) / n)) and the smallest difference between two members' accuracies
    that is not noise at 95% (1.96 * sqrt(2) * SE: two independent estimates). Seeds add their own spread."""
    import math

    p = min(max(accuracy, 1.0 / images), 1 - 1.0 / images)  # never 0: a split of 100% still has some error
    error = math.sqrt(p * (1 - p) / images)
    return error, 1.96 * math.sqrt(2) * error


def pareto_front(trained: list[TrialResult], objectives: Sequence[str]) -> list[TrialResult]:
    """The trained trials no other trained trial beats on every objective (duplicates collapse to the
    first trial that trained the member), sorted by the first objective's best first."""
    signs = [1.0 if direction(o) == "minimize" else -1.0 for o in objectives]
    points = [(r, tuple(s * v for s, v in zip(signs, r.values or ()))) for r in trained]
    front = []
    for r, p in points:
        dominated = any(all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p)) for _, q in points)
        if not dominated and all(q != p or other.number >= r.number for other, q in front_points(front, signs)):
            front.append(r)
    return sorted(front, key=lambda r: tuple(s * v for s, v in zip(signs, r.values or ())))


def front_points(front: list[TrialResult], signs: list[float]) -> list[tuple[TrialResult, tuple[float, ...]]]:
    """The front's trials with their sign-adjusted objective values (all minimized)."""
    return [(r, tuple(s * v for s, v in zip(signs, r.values or ()))) for r in front]


def choose(front: list[TrialResult], objectives: Sequence[str]) -> TrialResult | None:
    """The member written to best.cnn: the front's best on the first objective (ties: the next ones)."""
    return front[0] if front else None


def _write_csv(path: Path, results: list[TrialResult], space: Space) -> None:
    import csv
    import io

    names = [d.name for d in space.dimensions]
    batches = sorted({b for r in results for b in (r.latency_ms or {})}, key=int)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "state", "status", *names, "val_accuracy", "val_accuracy_std", "test_accuracy",
                     "params", "macs", "seconds", "compile_seconds", "images_per_s",
                     *(f"latency_ms@{b}" for b in batches), "run_dir", "reason"])

    def number(value: float | None, form: str) -> str:
        return "" if value is None else format(value, form)

    for r in results:
        writer.writerow([r.number, r.state, r.status, *[r.bindings.get(n, "") for n in names],
                         number(r.accuracy, ".6f"), number(r.accuracy_std, ".6f"), number(r.test_accuracy, ".6f"),
                         number(r.params, "d"), number(r.macs, "d"),
                         number(r.seconds, ".2f"), number(r.compile_seconds, ".2f"), number(r.throughput, ".0f"),
                         *(number((r.latency_ms or {}).get(b), ".4f") for b in batches), r.run_dir or "",
                         r.reason or ""])
    write_atomic(path, out.getvalue())


def human(value: float, unit: str = "") -> str:
    """1234567 -> `1.23M`: three significant digits."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}{unit}"
    return f"{value:.0f}{unit}"
