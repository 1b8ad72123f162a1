"""The run record: what settings.json holds, built in one place for every run (trained or imported).

A run directory's settings.json is written by `RunDir.write_settings` (atomically, marked with the run
format `cnndsl.run/1`) and read back, checked, by `RunDir.read_settings`; its content is `run_record`'s:
the resolved `Settings` and what the run derived from its data and its network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnndsl.lang.settings import Settings

#: settings.json's "optimizer_state" of runs whose learning rate is handed to each step (cnndsl.training.optim);
#: runs recorded before have none: their optimizer holds the schedule.
INJECTED = "optax.inject_hyperparams"


def run_record(settings: Settings, normalization: dict[str, Any], net: Any, *, num_classes: int,
               classes: list[str] | tuple[str, ...], steps_per_epoch: int, data_shape: tuple[int, ...] | list[int],
               bindings: dict[str, Any] | None, pipeline: str, devices: int = 1, processes: int = 1,
               scheduled: bool = False, **extra: Any) -> dict[str, Any]:
    """settings.json's content: the settings, the input normalization (`Preprocess.to_dict()`), the classes,
    the spec as trained (standalone text) with its `--set` bindings, how batches were fed (`pipeline`) and
    over how many devices and processes; `extra` for what only some runs have (`eval_transform`, `weights`).
    `scheduled`: the run's optimizer holds its schedule (a run recorded before injected learning rates, resumed)."""
    return {**settings.to_dict(), "normalization": dict(normalization), "num_classes": num_classes,
            "classes": list(classes), "steps_per_epoch": steps_per_epoch, "input_shape": list(net.input_shape),
            "data_shape": list(data_shape), "spec": net.report.graph.standalone_text,
            "bindings": dict(bindings or {}), "devices": devices, "processes": processes, "pipeline": pipeline,
            **({} if scheduled else {"optimizer_state": INJECTED}), **extra}


#: The settings that decide a run's result (not where it saves, how often, or how it reads its data).
_COMPARED = ("data", "epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov", "schedule", "warmup_epochs",
             "weight_decay", "label_smoothing", "clip", "augment", "dtype", "seed", "val_fraction", "resize", "init",
             "freeze", "devices")


def run_hparams(record: dict[str, Any], net: Any) -> dict[str, bool | int | float | str]:
    """What TensorBoard's HParams view compares runs by: the settings, the `--set` bindings (a sweep's member),
    the network's name, parameters and MACs (the spec itself is a text summary, the classes are left out)."""
    from cnndsl.training.events import hparams_of

    settings = {k: v for k, v in record.items() if k in _COMPARED}
    bound = {name: value if isinstance(value, (bool, int, float, str)) else str(value)
             for name, value in (record.get("bindings") or {}).items()}
    return {**hparams_of(settings), **bound, "network": net.report.name, "params": net.report.params,
            "macs": net.report.macs}


def new_run_dir(spec_path: str, root: Path = Path("runs")) -> Path:
    """runs/<spec name>, or runs/<spec name>-2, -3, ... if taken."""
    stem = Path(spec_path).stem if spec_path and not spec_path.startswith("<") else "run"
    candidate, n = root / stem, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{stem}-{n}"
    return candidate
