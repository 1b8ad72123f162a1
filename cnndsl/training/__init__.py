"""The training layer: a run's record, optimizer, steps, checkpoints, progress and curves, interrupts,
placement over devices, the loop, and inference with a trained run (see docs/architecture.md).

    from cnndsl.training import train, evaluate, predict, load_run
"""

from cnndsl.lang.lazy import lazy_exports

_EXPORTS = {
    "train": "loop", "TrainResult": "results", "History": "results",
    "evaluate": "inference", "predict": "inference", "load_run": "inference", "LoadedRun": "inference",
    "Preprocess": "preprocess", "normalization": "preprocess", "Trainer": "steps", "DTYPES": "steps",
    "EVAL_BATCH": "steps", "make_optimizer": "optim", "run_optimizer": "optim", "check_compatible": "compat",
    "checkpoint_managers": "checkpoints", "save_checkpoint": "checkpoints", "restore": "checkpoints",
    "Interrupted": "interrupts", "Diverged": "interrupts", "INTERRUPTS": "interrupts",
    "import_run": "imported", "RunDir": "rundir", "run_record": "record",
    "Settings": "cnndsl.lang.settings", "TrainingError": "cnndsl.lang.settings",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
