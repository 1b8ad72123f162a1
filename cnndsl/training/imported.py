"""A run made from imported weights (`cnndsl weights import`): a run directory whose checkpoint holds a
weights file's arrays for a spec, which eval, predict, export and `--init` then use like a trained run's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cnndsl.interop.weights import converted, pair_layers, read_tensors
from cnndsl.lang.settings import Settings, TrainingError
from cnndsl.nn.compiler import compile as compile_spec
from cnndsl.training.checkpoints import Checkpointer
from cnndsl.training.optim import make_optimizer
from cnndsl.training.preprocess import Preprocess
from cnndsl.training.record import run_record
from cnndsl.training.rundir import RunDir
from cnndsl.training.steps import Trainer


def import_run(spec: Path, weights: str | Path, out: Path, mapping: str = "auto",
               bindings: dict[str, Any] | None = None, normalization: dict[str, Any] | None = None) -> Path:
    """Write a run directory holding `weights` for `spec` (checkpoint step 0, as `best` and `last`), with
    the input normalization the weights expect (None: the network takes its inputs as they are)."""
    net = compile_spec(spec, set=bindings)
    arrays = converted(pair_layers(net.report, read_tensors(weights), mapping))
    channels = net.input_shape[2]
    if normalization is not None and len(normalization["mean"]) != channels:
        raise TrainingError(f"--normalize imagenet is for 3-channel inputs; the spec's input has {channels}: use "
                            "--normalize none")
    norm = normalization or {"scale": 1.0, "mean": [0.0] * channels, "std": [1.0] * channels}
    output = net.report.output_shape
    classes = output[-1] if len(output) in (1, 3) else 0  # a class vector, or a map of per-pixel class scores
    settings = Settings(data="none", epochs=1)
    preprocess = Preprocess(norm["scale"], tuple(norm["mean"]), tuple(norm["std"]), net.input_shape[:2])
    trainer = Trainer(net, net.init(0), make_optimizer(settings, 1), preprocess, settings, max(classes, 1))
    state = trainer.initial_state()
    for group in ("params", "stats"):
        state[group] = {name: np.asarray(arrays[name]) for name in state[group]}
    run = RunDir(out)
    run.create(inputs=[str(spec), str(weights)])
    try:
        run.write_settings(run_record(settings, norm, net, num_classes=classes, classes=[], steps_per_epoch=1,
                                      data_shape=net.input_shape, bindings=bindings, pipeline="imported weights",
                                      eval_transform="resize-crop", weights=str(Path(weights).absolute())))
        run.write_spec(net.report.graph.standalone_text)
        checkpoints = Checkpointer(run.path, 1, donated=False)
        checkpoints.save(0, state, best=True)
        checkpoints.close()
    finally:
        run.release()
    return run.path
