"""Serialized inference artifacts: `export(net, model, directory)` and `load_exported(directory)`.

An artifact is a directory that runs without the `.cnn` file or cnndsl's compiler:

    forward.jaxexport   jax.export of `logits = f(params, x)`, lowered for CPU, CUDA and TPU, batch size symbolic
    params.npz          every parameter and batch-norm statistic, by name ("conv1/kernel"); plain arrays, no pickle
    meta.json           format, input and output shapes, platforms, parameter names, versions
    spec.cnn            the spec the network was compiled from (for the record; nothing reads it back)

Parameters are inputs of the exported function rather than constants inside it, so one artifact serves
any trained weights and the serialized program stays small.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "cnndsl.export/1"
#: The platforms an artifact is lowered for when it can be: lowering needs no such device here.
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
PROGRAM, PARAMS, META, SPEC = "forward.jaxexport", "params.npz", "meta.json", "spec.cnn"


class ExportError(Exception):
    """An artifact that cannot be written or read: the message names the file and what is wrong."""


def export(net: Any, model: Any, directory: str | Path, platforms: Sequence[str] = DEFAULT_PLATFORMS,
           preprocess: dict[str, Any] | None = None, classes: Sequence[str] = ()) -> dict[str, Any]:
    """Write `model` (a module of the compiled network `net`) as an inference artifact into `directory`.

    The forward pass runs in eval mode (running batch-norm statistics, no dropout). With `preprocess`
    ({"scale", "mean", "std"}, as a training run records it) the program takes raw pixels and normalizes
    them first, exactly as training did. Platforms the installed jax cannot lower for are left out (and
    not listed in meta.json) unless none is left. Returns the metadata written to meta.json.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from cnndsl import __version__
    from cnndsl.flax_backend import flatten_state, unflatten_state
    from cnndsl.training import Preprocess

    model.eval()
    graphdef, weights, rest = nnx.split(model, (nnx.Param, nnx.BatchStat), ...)
    names, treedef, flat = flatten_state(weights)
    arrays = {name: np.asarray(leaf) for name, leaf in flat.items()}

    normalize = None if preprocess is None else Preprocess(
        preprocess["scale"], tuple(preprocess["mean"]), tuple(preprocess["std"]), tuple(net.input_shape[:2]))

    def forward(params: dict[str, jax.Array], x_BxHxWxC: jax.Array) -> jax.Array:
        if normalize is not None:
            x_BxHxWxC = normalize(x_BxHxWxC)  # the training run's own normalization, not a copy of it
        return nnx.merge(graphdef, unflatten_state(names, treedef, params), rest)(x_BxHxWxC)

    batch = jax.export.symbolic_shape("batch")[0]
    x_spec = jax.ShapeDtypeStruct((batch, *net.input_shape), jnp.float32)
    params_spec = {name: jax.ShapeDtypeStruct(a.shape, a.dtype) for name, a in arrays.items()}
    lowered, left_out = None, []
    wanted = list(dict.fromkeys(platforms))
    while wanted:
        try:
            lowered = jax.export.export(jax.jit(forward), platforms=tuple(wanted))(params_spec, x_spec)
            break
        except Exception as err:  # noqa: BLE001 - find which platform this jax cannot lower for
            failing = next((p for p in wanted if p in str(err).lower()), wanted[-1])
            wanted.remove(failing)
            left_out.append(f"{failing}: {str(err).splitlines()[0][:200]}")
    if lowered is None:
        raise ExportError("the installed jax could not lower the network for any platform: " + "; ".join(left_out))

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    report = net.report
    meta = {
        "format": FORMAT,
        "cnndsl_version": __version__,
        "jax_version": jax.__version__,
        "platforms": list(lowered.platforms),
        "platforms_left_out": left_out,
        "input_shape": list(report.input_shape),
        "output_shape": list(report.output_shape),
        "output_is_probabilities": _ends_in_softmax(report),
        "preprocess": preprocess,
        "classes": list(classes),
        "params": report.params,
        "parameters": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()},
        "spec": report.graph.source.path,
    }
    (out / PROGRAM).write_bytes(lowered.serialize())
    np.savez(out / PARAMS, **arrays)
    (out / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    (out / SPEC).write_text(report.graph.source.text, encoding="utf-8")
    return meta


def export_run(spec: Any, run_dir: str | Path, directory: str | Path, checkpoint: str = "best",
               bindings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export a training run's `best` (or `last`) checkpoint with the run's input normalization built into
    the program, so the artifact takes raw pixels as the run's dataset stores them. `spec` may be None
    (the run's own copy). Returns the metadata, with the checkpoint's step added."""
    from cnndsl.training import load_run

    loaded = load_run(spec, run_dir, checkpoint, bindings)
    model = loaded.trainer.module(loaded.params, loaded.stats, train=False)
    norm = loaded.settings["normalization"]
    meta = export(loaded.net, model, directory, preprocess={k: norm[k] for k in ("scale", "mean", "std")},
                  classes=loaded.settings.get("classes") or ())
    return {**meta, "step": loaded.step}


def _ends_in_softmax(report: Any) -> bool:
    from cnndsl import ir

    op = report.graph.nodes[report.graph.output].op
    return isinstance(op, ir.Activation) and op.fn == "softmax"


@dataclass(frozen=True)
class ExportedNetwork:
    """A loaded artifact: call it on a batch of images (B, H, W, C) to get the network's outputs."""

    directory: Path
    meta: dict[str, Any]
    params: dict[str, np.ndarray]
    program: Any  # jax.export.Exported

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input image (H, W, C)."""
        return tuple(self.meta["input_shape"])

    def __call__(self, x_BxHxWxC: Any) -> np.ndarray:
        """The outputs (logits, or probabilities if the network ends in softmax) for a batch."""
        x = np.asarray(x_BxHxWxC, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ExportError(f"the network takes images of shape {_fmt(self.input_shape)} (a batch: "
                              f"B x {_fmt(self.input_shape)}), got an array of shape {_fmt(x.shape)}")
        return np.asarray(self.program.call(self.params, x))

    def probabilities(self, x_BxHxWxC: Any) -> np.ndarray:
        """Class probabilities for a batch (softmax of the outputs unless the network already ends in one)."""
        out = self(x_BxHxWxC).astype(np.float64)
        if self.meta.get("output_is_probabilities"):
            return out
        out = np.exp(out - out.max(axis=-1, keepdims=True))
        return out / out.sum(axis=-1, keepdims=True)


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape) if shape else "a scalar"


def load_exported(directory: str | Path) -> ExportedNetwork:
    """Load an artifact written by `export` (or `cnndsl compile --emit export`); needs only jax and numpy."""
    import jax

    root = Path(directory)
    for name in (PROGRAM, PARAMS, META):
        if not (root / name).is_file():
            raise ExportError(f"{root} is not a cnndsl export: {name} is missing "
                              "(write one with `cnndsl compile FILE --emit export -o DIR`)")
    try:
        meta = json.loads((root / META).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ExportError(f"{root / META}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportError(f"{root / META}: format is {meta.get('format') if isinstance(meta, dict) else None!r}, "
                          f"this cnndsl reads {FORMAT!r}")
    try:
        with np.load(root / PARAMS, allow_pickle=False) as data:
            params = {name: data[name] for name in data.files}
    except Exception as err:  # noqa: BLE001 - any unreadable archive gets the same clear message
        raise ExportError(f"{root / PARAMS}: cannot read the parameters ({type(err).__name__}: {err})") from None
    expected = meta.get("parameters", {})
    for name, info in expected.items():
        if name not in params:
            raise ExportError(f"{root / PARAMS}: parameter {name!r} is missing")
        if list(params[name].shape) != info["shape"]:
            raise ExportError(f"{root / PARAMS}: parameter {name!r} has shape {_fmt(params[name].shape)}, "
                              f"the program expects {_fmt(info['shape'])}")
    if set(params) != set(expected):
        raise ExportError(f"{root / PARAMS}: unexpected parameters {sorted(set(params) - set(expected))}")
    try:
        program = jax.export.deserialize(bytearray((root / PROGRAM).read_bytes()))
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file
        raise ExportError(f"{root / PROGRAM}: cannot deserialize the program ({type(err).__name__})") from None
    if math.prod(meta["input_shape"]) <= 0:
        raise ExportError(f"{root / META}: bad input shape {meta['input_shape']}")
    here = {"gpu": "cuda"}.get(jax.default_backend(), jax.default_backend())
    if here not in program.platforms:
        raise ExportError(f"{root}: lowered for {', '.join(program.platforms)}, this machine runs {here}; "
                          f"export it again here with `cnndsl compile FILE --emit export`")
    return ExportedNetwork(root, meta, params, program)
