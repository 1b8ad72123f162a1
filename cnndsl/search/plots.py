"""The sweep's pictures: the Pareto front (accuracy against cost) and error EDFs (design-space comparison).

The EDF is the one of "Designing Network Design Spaces" (Radosavovic et al., 2020): for each error e, the
share of a family's trained members whose validation error is below e. A family whose curve lies to the
left and above another's has more good members; compare families sampled alike (`--sampler random`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cnndsl.lang.outputs import write_atomic


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    plt = _pyplot()
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png")
    plt.close(fig)
    write_atomic(path, image.getvalue())  # a unique temporary beside it: two sweeps on one folder never clash


def save_axes(ax: Any, path: Path) -> None:
    """An Axes a library drew (Optuna's matplotlib plots) as a PNG of the sweep's size, written atomically."""
    fig = ax.figure
    fig.set_size_inches(6.4, 4.2)
    fig.set_dpi(110)
    _save(fig, path)


def plot_pareto(trained: Sequence[Any], front: Sequence[Any], path: Path, title: str,
                objectives: Sequence[str]) -> None:
    """Validation accuracy against a cost (the first cost among the objectives: params, memory, a latency;
    MACs when there is none) of every trained member, the front drawn as a staircase and labelled with trial
    numbers; a member trained with several seeds gets its spread as an error bar."""
    from cnndsl.search.study import direction, title_of

    plt = _pyplot()
    # the x axis: the first cost among the objectives (MACs, params, memory, a latency), else MACs
    cost = next((o for o in objectives[1:] if direction(o) == "minimize" and o != "loss"), "macs")

    def cost_of(r: Any) -> float:
        return r.values[list(objectives).index(cost)] if cost in objectives else r.macs

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    points = [(cost_of(r), 100 * r.accuracy) for r in trained if r.accuracy is not None]
    on_front = sorted((cost_of(r), 100 * r.accuracy, r.number) for r in front if r.accuracy is not None)
    # The front is what matters: members far below it would squash it against the top, so the axis starts a
    # little below the front's worst member and the members under that are drawn on the bottom edge; it ends a
    # little above the best member (not at 100%), and neither end cuts a point or its label.
    bottom, top = accuracy_axis([y for _, y, _ in on_front], [y for _, y in points])
    shown = [(x, y) for x, y in points if y >= bottom]
    below = [(x, bottom) for x, y in points if y < bottom]
    if shown:
        ax.scatter(*zip(*shown), s=18, color="#9aa5b1", label="trained members", zorder=2)
    if below:
        ax.scatter(*zip(*below), s=22, marker="v", color="#9aa5b1", clip_on=False, zorder=2,
                   label=f"{len(below)} below {bottom:.3g}%")
    spread = [(cost_of(r), 100 * r.accuracy, 100 * r.accuracy_std) for r in trained
              if r.accuracy is not None and r.accuracy_std is not None and 100 * r.accuracy >= bottom]
    if spread:  # --repeats: each member's mean with its seeds' spread (one standard deviation)
        ax.errorbar([x for x, _, _ in spread], [y for _, y, _ in spread], yerr=[e for _, _, e in spread], fmt="none",
                    ecolor="#9aa5b1", elinewidth=1, capsize=2, zorder=1)
    if on_front:
        xs, ys, numbers = zip(*on_front)
        ax.step(xs, ys, where="post", color="#d1495b", lw=1.2, zorder=3)
        ax.scatter(xs, ys, s=36, color="#d1495b", label="Pareto front", zorder=4)
        for x, y, number in on_front:
            ax.annotate(f"#{number}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    ax.set_ylim(bottom, top)
    ax.set_yticks([t for t in ax.get_yticks() if bottom <= t <= 100.0 + 1e-9])  # room above 100%, no tick there
    ax.margins(x=0.08)  # room for the labels of the cheapest and dearest members
    ax.set(xlabel="multiply-adds per image" if cost == "macs" else title_of(cost), ylabel="validation accuracy (%)",
           title=f"{title}: {len(points)} trained members")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    _save(fig, path)


def accuracy_axis(front: Sequence[float], members: Sequence[float]) -> tuple[float, float]:
    """The accuracy axis (%) of the Pareto plot: from a little below the front's worst member (members below
    that sit on the bottom edge) to a little above the best member: margins of a few hundredths to a tenth of the
    span, at least half a point below (the lowest front point's label) and 0.3 above."""
    values = list(front) or list(members) or [0.0]
    lowest, highest = min(values), max(list(members) + values)
    span = max(highest - lowest, 1.0)
    bottom = max(0.0, lowest - max(0.5, 0.12 * span))  # about a tenth of the axis: room for the lowest label
    top = min(highest + max(0.3, 0.06 * span), 101.0)  # a member at 100% is drawn whole
    return bottom, top


def edf(errors: Sequence[float]) -> tuple[list[float], list[float]]:
    """The empirical distribution of `errors`: sorted errors and, for each, the share at or below it."""
    xs = sorted(errors)
    return xs, [(k + 1) / len(xs) for k in range(len(xs))]


def plot_edf(families: Mapping[str, Sequence[float]], path: Path) -> None:
    """One EDF curve per family (validation error in %, fraction of members at or below)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, errors in families.items():
        if not errors:
            continue
        xs, ys = edf([100 * e for e in errors])
        ax.step([xs[0]] + xs, [0.0] + ys, where="post", lw=1.6, label=f"{name} (n={len(xs)})")
    ax.set(xlabel="validation error (%)", ylabel="share of members with this error or less",
           title="error EDF of the trained members", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)
