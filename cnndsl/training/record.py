"""The run record: what settings.json holds, built in one place for every run (trained or imported).

A run directory's settings.json is written by `RunDir.write_settings` (atomically, marked with the run
format `cnndsl.run/1`) and read back, checked, by `RunDir.read_settings`; its content is `run_record`'s:
the resolved `Settings` and what the run derived from its data and its network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnndsl.lang.settings import Settings


def run_record(settings: Settings, normalization: dict[str, Any], net: Any, *, num_classes: int,
               classes: list[str] | tuple[str, ...], steps_per_epoch: int, data_shape: tuple[int, ...] | list[int],
               bindings: dict[str, Any] | None, pipeline: str, devices: int = 1, processes: int = 1,
               **extra: Any) -> dict[str, Any]:
    """settings.json's content: the settings, the input normalization (`Preprocess.to_dict()`), the classes,
    the spec as trained (standalone text) with its `--set` bindings, how batches were fed (`pipeline`) and
    over how many devices and processes; `extra` for what only some runs have (`eval_transform`, `weights`)."""
    return {**settings.to_dict(), "normalization": dict(normalization), "num_classes": num_classes,
            "classes": list(classes), "steps_per_epoch": steps_per_epoch, "input_shape": list(net.input_shape),
            "data_shape": list(data_shape), "spec": net.report.graph.standalone_text,
            "bindings": dict(bindings or {}), "devices": devices, "processes": processes, "pipeline": pipeline,
            **extra}


def new_run_dir(spec_path: str, root: Path = Path("runs")) -> Path:
    """runs/<spec name>, or runs/<spec name>-2, -3, ... if taken."""
    stem = Path(spec_path).stem if spec_path and not spec_path.startswith("<") else "run"
    candidate, n = root / stem, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{stem}-{n}"
    return candidate
