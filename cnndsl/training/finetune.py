"""Fine-tuning's start (`--init`): a run begins from another run's or a weights file's arrays.

`initial_arrays(report, source, template)`: the arrays of `source` (a run directory: its best checkpoint,
by cnndsl's names; or a weights file: paired as `cnndsl weights import` pairs, leniently) for each layer
of the spec whose shapes match; the layers that do not match (a new classifier head) keep their fresh
initialization and are listed. `initialized(state, ...)` puts them into a run's starting state. Keeping
groups fixed (`--freeze`) is cnndsl.training.freeze.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cnndsl.lang.settings import TrainingError


def initial_arrays(report: Any, source: str | Path, template: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[str]]:
    """({name: array} to start from, [layers re-initialized, with why]) for the arrays named in `template`."""
    from cnndsl.interop.weights import (
        WeightsError,
        converted,
        pair_layers,
        read_tensors,
    )
    from cnndsl.training.rundir import RunDir

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
    from cnndsl.training.inference import (
        load_run,  # here: inference builds on this module's neighbours
    )

    loaded = load_run(None, run_dir)
    return {k: np.asarray(v) for k, v in {**loaded.params, **loaded.stats}.items()}


def initialized(state: dict[str, Any], net: Any, source: str, placement: Any,
                progress: Any) -> dict[str, Any]:
    """`state` with the parameters and statistics of `source` (`--init`) where the shapes match."""
    template = {**state["params"], **state["stats"]}
    arrays, fresh = initial_arrays(net.report, source, template)
    for group in ("params", "stats"):
        merged = {n: arrays.get(n, np.asarray(v)) for n, v in state[group].items()}
        state[group] = placement.place_state(merged) if group == "params" else placement.replicate(merged)
    layers = len({n.split("/")[0] for n in arrays})
    progress.line(f"initialized {layers} layers from {source}" + (f"; re-initialized {len(fresh)}: {'; '.join(fresh)}"
                                                                   if fresh else ""))
    return state
