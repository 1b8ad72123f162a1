"""What a sweep's search says: which dimensions mattered, and how the best member evolved (Optuna's own tools).

- Parameter importances: Optuna's `get_param_importances` with its default evaluator, PED-ANOVA
  (`PedAnovaImportanceEvaluator`: Watanabe et al., 2023; deterministic, no scikit-learn), one ranking
  per objective, over the members trained to the end (duplicates and shared members counted once, pruned,
  invalid and failed ones left out: they have no final values). Written to `sweep.json` ("importances", the
  evaluator named) and drawn as `importance.png` for the first objective.
- `history.png`: Optuna's optimization-history plot of the first objective (each trained member and the best
  so far, by trial number).

Both need at least two trained members and a dimension that took two values; otherwise they are left out
and `sweep.json` says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnndsl.search.study import direction, title_of

#: The evaluator, as sweep.json names it: get_param_importances' default in Optuna 5 (fANOVA needs scikit-learn).
EVALUATOR = "optuna.importance.PedAnovaImportanceEvaluator()"


def trained_study(study: Any, objectives: Sequence[str]) -> Any:
    """An in-memory copy of `study` holding each distinct trained experiment once (Optuna's evaluators and
    plots read every COMPLETE trial: a duplicate would count its member twice)."""
    import optuna

    copy = optuna.create_study(directions=[direction(o) for o in objectives])
    seen: set[str] = set()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        identity = trial.user_attrs.get("identity")
        if trial.user_attrs.get("status") == "trained" and identity not in seen:
            seen.add(identity)
            copy.add_trial(trial)
    return copy


def importances(study: Any, objectives: Sequence[str]) -> dict[str, Any]:
    """{"evaluator": ..., "members": n, OBJECTIVE: {dimension: importance}} or {"left out": why}."""
    import optuna

    copy = trained_study(study, objectives)
    varied = _varied(copy)
    if len(copy.trials) < 2 or not varied:
        return {"left out": f"{len(copy.trials)} trained member(s), {len(varied)} dimension(s) that varied: "
                            "importances need two members and a dimension with two values"}
    found: dict[str, Any] = {"evaluator": EVALUATOR, "members": len(copy.trials)}
    for index, objective in enumerate(objectives):
        ranked = optuna.importance.get_param_importances(single_objective(copy, objectives, index), params=varied,
                                                         evaluator=optuna.importance.PedAnovaImportanceEvaluator())
        found[objective] = {name: round(float(value), 6) for name, value in ranked.items()}
    return found


def single_objective(study: Any, objectives: Sequence[str], index: int) -> Any:
    """An in-memory study of the trials' `index`-th objective alone, in its direction: PED-ANOVA ranks what
    reaches the good end of it (it takes low values as good when given a `target`), and the history plot
    draws the best so far only for one objective."""
    import optuna

    single = optuna.create_study(direction=direction(objectives[index]))
    single.add_trials([optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=t.values[index])
                       for t in study.trials])
    return single


def _varied(study: Any) -> list[str]:
    """The dimensions that took at least two values among the study's trials (no spread, no importance)."""
    values: dict[str, set[str]] = {}
    for trial in study.trials:
        for name, value in trial.params.items():
            values.setdefault(name, set()).add(repr(value))
    return sorted(name for name, seen in values.items() if len(seen) > 1)


def plot_analysis(study: Any, objectives: Sequence[str], directory: Path, found: dict[str, Any]) -> list[str]:
    """importance.png (when importances were found) and history.png of the first objective; the names written."""
    import warnings

    import optuna
    from matplotlib.ticker import MaxNLocator
    from optuna.visualization import matplotlib as plots

    from cnndsl.search.plots import save_axes

    copy = trained_study(study, objectives)
    if not copy.trials:
        return []
    first, title = objectives[0], title_of(objectives[0])
    single = single_objective(copy, objectives, 0)
    written = []
    with warnings.catch_warnings():  # Optuna's matplotlib plots are "experimental": said once in the docs
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = plots.plot_optimization_history(single, target_name=title)
        history.set(title=f"{title} of the trained members", xlabel="trained members, in order")
        history.xaxis.set_major_locator(MaxNLocator(integer=True))
        history.legend(["each member", "the best so far"], loc="best")
        save_axes(history, directory / "history.png")
        written.append("history.png")
        if first in found:
            ranked = plots.plot_param_importances(single, params=list(found[first]), target_name=title,
                                                  evaluator=optuna.importance.PedAnovaImportanceEvaluator())
            ranked.set_title("", loc="left")  # Optuna's own heading, under ours
            ranked.set_title(f"what mattered for the {title} ({found['members']} members)")
            ranked.legend().remove()
            save_axes(ranked, directory / "importance.png")
            written.append("importance.png")
    return written
