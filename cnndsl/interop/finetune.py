"""Fine-tuning: start a run from another run's or a weights file's arrays (`--init`), and keep some of the
spec's groups fixed (`--freeze`).

`initial_arrays(report, source, template)`: the arrays of `source` (a run directory: its best checkpoint,
by cnndsl's names; or a weights file: paired as `cnndsl weights import` pairs, leniently) for each layer
of the spec whose shapes match; the layers that do not match (a new classifier head) keep their fresh
initialization and are listed.

`frozen_names(report, patterns)`: the parameter names of the layers a `--freeze` pattern names. A pattern
is matched (shell-style: `*`, `?`) against each layer's path, its groups and its name joined by ` › `
(as `cnndsl check` shows them: `[…]*4 i=0 › stage(64, 2, stride=1) › basic(64, 1) › residual › body ›
conv2`): it names a layer when it matches the whole path, a leading part of it, or any run of groups in
it. `...` may be written for `…` and `>` for `›`.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import numpy as np

from cnndsl import ir
from cnndsl.settings import TrainingError


def initial_arrays(report: Any, source: str | Path, template: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[str]]:
    """({name: array} to start from, [layers re-initialized, with why]) for the arrays named in `template`."""
    from cnndsl.interop.weights import WeightsError, converted, pair_layers, read_tensors
    from cnndsl.rundir import RunDir

    path = Path(source)
    if path.is_dir():
        if not RunDir(path).holds_run():
            raise TrainingError(f"--init {source}: not a run directory (no settings.json) and not a weights file")
        arrays = _run_arrays(path)
    else:
        try:
            arrays = converted(pair_layers(report, read_tensors(path), strict=False))
        except WeightsError as err:
            raise TrainingError(f"--init: {err}") from None
    taken, fresh = {}, []
    for layer in {name.split("/")[0] for name in template}:
        names = [n for n in template if n.split("/")[0] == layer]
        if all(n in arrays and tuple(np.shape(arrays[n])) == tuple(np.shape(template[n])) for n in names):
            taken.update({n: np.asarray(arrays[n]) for n in names})
        else:
            found = [n for n in names if n in arrays]
            fresh.append(f"{layer} (" + (", ".join(f"{n.split('/')[1]} {'x'.join(map(str, np.shape(arrays[n])))} in the "
                                                   f"source, {'x'.join(map(str, np.shape(template[n])))} here"
                                                   for n in found) if found else
                                         "not in the source" if path.is_dir() else f"no layer of {path.name} fits") + ")")
    return taken, sorted(fresh)


def _run_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    from cnndsl.training import load_run

    loaded = load_run(None, run_dir)
    return {k: np.asarray(v) for k, v in {**loaded.params, **loaded.stats}.items()}


def frozen_names(report: Any, patterns: tuple[str, ...], param_names: list[str]) -> set[str]:
    """The parameter names (`conv2/kernel`) of the layers the patterns name; a TrainingError for a pattern
    that names no layer with parameters, listing the spec's top-level groups."""
    paths = {}
    for node in report.graph.nodes[1:]:
        if isinstance(node.op, ir.PARAMETERIZED):
            where = node.where()
            paths[node.name] = f"{where} › {node.name}" if where else node.name
    chosen: set[str] = set()
    for raw in patterns:
        pattern = raw.replace("...", "…").replace(" > ", " › ").strip()
        hits = {name for name, path in paths.items()
                if any(fnmatch.fnmatchcase(path, form) for form in (pattern, f"{pattern} › *", f"* › {pattern} › *",
                                                                     f"* › {pattern}"))}
        if not hits:
            groups = sorted({path.split(" › ")[0] for path in paths.values()})
            raise TrainingError(f"--freeze {raw!r} names no layer with parameters; the spec's groups and layers "
                                f"start with: {', '.join(groups[:12])}{', ...' if len(groups) > 12 else ''}")
        chosen |= hits
    return {name for name in param_names if name.split("/")[0] in chosen}
