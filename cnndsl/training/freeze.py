"""`--freeze`: the parameters of the spec's groups that stay as they start while the rest trains.

A pattern is matched (shell-style: `*`, `?`) against each layer's path, its groups and its name joined by ` › `
(as `cnndsl check` shows them: `[…]*4 i=0 › stage(64, 2, stride=1) › basic(64, 1) › residual › body ›
conv2`): it names a layer when it matches the whole path, a leading part of it, or any run of groups in
it. `...` may be written for `…` and `>` for `›`.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from cnndsl.lang import ir
from cnndsl.lang.settings import TrainingError


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
