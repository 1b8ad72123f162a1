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

import hashlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnndsl.lang.jsonchecks import is_shape
from cnndsl.lang.outputs import check_output_dir, write_atomic

FORMAT = "cnndsl.export/1"
#: The platforms an artifact is lowered for when it can be: lowering needs no such device here.
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
PROGRAM, PARAMS, META, SPEC = "forward.jaxexport", "params.npz", "meta.json", "spec.cnn"


class ExportError(Exception):
    """An artifact that cannot be written or read: the message names the file and what is wrong."""


def export(net: Any, model: Any, directory: str | Path, platforms: Sequence[str] = DEFAULT_PLATFORMS,
           preprocess: dict[str, Any] | None = None, classes: Sequence[str] = (), force: bool = False,
           image_transform: str = "resize") -> dict[str, Any]:
    """Write `model` (a module of the compiled network `net`) as an inference artifact into `directory`.

    The forward pass runs in eval mode (running batch-norm statistics, no dropout). With `preprocess`
    ({"scale", "mean", "std"}, as a training run records it) the program takes raw pixels and normalizes
    them first, exactly as training did. `image_transform` says how `cnndsl run` brings an image file of
    another size to the input: "resize" (bilinear, as training's --resize) or "resize-crop" (the input
    pipeline's evaluation transform). Platforms the installed jax cannot lower for are left out (and
    not listed in meta.json) unless none is left. Returns the metadata written to meta.json.

    `directory` must be new or empty, or hold an earlier export (replaced only with `force`); a folder
    of other files is refused (`cnndsl.lang.outputs`). Non-finite parameters are refused.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from cnndsl.lang.version import __version__
    from cnndsl.nn.flax_backend import flatten_state, unflatten_state
    from cnndsl.training import Preprocess

    out = check_output_dir(directory, "export", force, [net.report.graph.source.path])
    model.eval()
    graphdef, weights, rest = nnx.split(model, (nnx.Param, nnx.BatchStat), ...)
    names, treedef, flat = flatten_state(weights)
    graph = net.report.graph
    # training-only heads' arrays are not exported: the program never reads them (zeros stand in, which XLA
    # drops as unused)
    dropped = {graph.nodes[i].name for i in graph.training_only_nodes}
    unused = {name: (leaf.shape, leaf.dtype) for name, leaf in flat.items() if name.split("/")[0] in dropped}
    arrays = {name: np.asarray(leaf) for name, leaf in flat.items() if name not in unused}
    _check_finite(arrays, "the parameters to export")
    heads = [head.name for head in graph.inference_heads]

    normalize = None if preprocess is None else Preprocess.from_run({"normalization": preprocess}, net.input_shape[:2])

    def forward(params: dict[str, jax.Array], x_BxHxWxC: jax.Array) -> Any:
        if normalize is not None:
            x_BxHxWxC = normalize(x_BxHxWxC)  # the training run's own normalization, not a copy of it
        every = {**params, **{name: jnp.zeros(shape, dtype) for name, (shape, dtype) in unused.items()}}
        module = nnx.merge(graphdef, unflatten_state(names, treedef, every), rest)
        if not heads:
            return module(x_BxHxWxC)
        outputs = module(x_BxHxWxC, heads="inference")  # the main output and each head's, by name
        return {"output": outputs["main"], **{name: outputs[name] for name in heads}}

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

    program = lowered.serialize()
    report = net.report
    meta = {
        "format": FORMAT,
        "cnndsl_version": __version__,
        "jax_version": jax.__version__,
        "platforms": list(lowered.platforms),
        "platforms_left_out": left_out,
        "input_shape": list(report.input_shape),
        "output_shape": list(report.output_shape),
        # several outputs: the program returns {"output": ..., HEAD: ...}; training-only heads are left out
        **({"heads": {h.name: list(report.node_shapes[h.node]) for h in graph.inference_heads}} if heads else {}),
        "output_is_probabilities": _ends_in_softmax(report),
        "preprocess": preprocess,
        "image_transform": image_transform,
        "classes": list(classes),
        "params": report.params,
        "parameters": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()},
        "spec": report.graph.source.path,
        "program_sha256": hashlib.sha256(program).hexdigest(),
    }
    meta["checksum"] = _checksum(meta)
    params = io.BytesIO()
    np.savez(params, **arrays)
    try:
        out.mkdir(exist_ok=True)
    except OSError as err:
        raise ExportError(f"cannot create {out}: {err.strerror}") from None
    # meta.json last: a folder interrupted before it is not an export, and is never mistaken for one.
    for name, data in ((PROGRAM, program), (PARAMS, params.getvalue()), (SPEC, report.graph.standalone_text),
                       (META, json.dumps(meta, indent=1) + "\n")):
        write_atomic(out / name, data)
    return meta


def export_run(spec: Any, run_dir: str | Path, directory: str | Path, checkpoint: str = "best",
               bindings: dict[str, Any] | None = None, force: bool = False) -> dict[str, Any]:
    """Export a training run's `best` (or `last`) checkpoint with the run's input normalization built into
    the program, so the artifact takes raw pixels as the run's dataset stores them. `spec` may be None
    (the run's own copy). Returns the metadata, with the checkpoint's step added."""
    from cnndsl.training.inference import load_run, uses_pipeline

    loaded = load_run(spec, run_dir, checkpoint, bindings)
    meta = export(loaded.net, loaded.module(), directory, preprocess=loaded.preprocess, classes=loaded.classes,
                  force=force,
                  image_transform="resize-crop" if uses_pipeline(loaded.settings) else "resize")
    return {**meta, "step": loaded.step}


def _ends_in_softmax(report: Any) -> bool:
    from cnndsl.lang import ir
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
        """The outputs (logits, or probabilities if the network ends in softmax) for a batch: the main output
        (`outputs` gives every head's too)."""
        result = self.outputs(x_BxHxWxC)
        return result["output"]

    def outputs(self, x_BxHxWxC: Any) -> dict[str, np.ndarray]:
        """Every output for a batch by name: `output` (the main one) and each head's (meta.json's `heads`)."""
        x = np.asarray(x_BxHxWxC, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ExportError(f"the network takes images of shape {_fmt(self.input_shape)} (a batch: "
                              f"B x {_fmt(self.input_shape)}), got an array of shape {_fmt(x.shape)}")
        if x.shape[0] == 0:
            raise ExportError("the batch holds no images")
        if not np.isfinite(x).all():
            raise ExportError("the images hold NaN or infinite values")
        result = self.program.call(self.params, x)
        if isinstance(result, dict):
            return {name: np.asarray(value) for name, value in result.items()}
        return {"output": np.asarray(result)}

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
    """Load an artifact written by `export` (or `cnndsl compile --emit export`); needs only jax and numpy.

    Everything is checked before it is used, and each problem is an `ExportError` naming the file:
    meta.json against its own checksum (an edit is noticed), the program against its recorded hash and
    against meta.json's shapes, and each array of params.npz by its header, before it is read (a zip
    bomb costs nothing), then for NaN and infinity.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ExportError(f"{root} is not a folder; give the folder `cnndsl compile FILE --emit export -o DIR` wrote")
    for name in (PROGRAM, PARAMS, META):
        if not (root / name).is_file():
            raise ExportError(f"{root} is not a cnndsl export: {name} is missing "
                              "(write one with `cnndsl compile FILE --emit export -o DIR`)")
    meta = _read_meta(root / META)
    try:
        raw = (root / PROGRAM).read_bytes()
    except OSError as err:
        raise ExportError(f"{root / PROGRAM}: cannot read it ({err.strerror})") from None
    if hashlib.sha256(raw).hexdigest() != meta["program_sha256"]:
        raise ExportError(f"{root / PROGRAM}: not the program this export wrote (its hash differs from meta.json's); "
                          "export the network again")
    params = _read_params(root / PARAMS, meta["parameters"])  # before jax is even imported: a bomb costs nothing

    import jax

    try:
        program = jax.export.deserialize(bytearray(raw))
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file
        raise ExportError(f"{root / PROGRAM}: cannot deserialize the program ({type(err).__name__})") from None
    _check_program(program, meta, root / PROGRAM)
    here = {"gpu": "cuda"}.get(jax.default_backend(), jax.default_backend())
    if here not in program.platforms:
        raise ExportError(f"{root}: lowered for {', '.join(program.platforms)}, this machine runs {here}; "
                          f"export it again here with `cnndsl compile FILE --emit export`")
    return ExportedNetwork(root, meta, params, program)


def _checksum(meta: dict[str, Any]) -> str:
    """The SHA-256 of meta.json's content without its own checksum (canonical JSON)."""
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def _read_meta(path: Path) -> dict[str, Any]:
    """meta.json, checked: the format, its checksum, and the type of every field the loader uses."""
    try:
        if path.stat().st_size > 64 << 20:
            raise ExportError(f"{path}: {path.stat().st_size:,} bytes is not the metadata of an export")
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ExportError(f"{path}: not valid JSON ({err})") from None
    except OSError as err:
        raise ExportError(f"{path}: cannot read it ({err.strerror})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportError(f"{path}: format is {meta.get('format') if isinstance(meta, dict) else None!r}, "
                          f"this cnndsl reads {FORMAT!r}")
    if meta.get("checksum") != _checksum(meta):
        raise ExportError(f"{path}: changed after export (its checksum does not match its content); export the "
                          "network again rather than editing meta.json")
    parameters = meta.get("parameters")
    problems = [
        (is_shape(meta.get("input_shape"), 3), "input_shape is not H, W, C"),
        (is_shape(meta.get("output_shape"), minimum=0), "output_shape is not a list of sizes"),
        (isinstance(parameters, dict) and all(
            isinstance(v, dict) and is_shape(v.get("shape"), minimum=0) and isinstance(v.get("dtype"), str)
            for v in parameters.values()), "parameters are not {name: {shape, dtype}}"),
        (isinstance(meta.get("classes", []), list) and all(isinstance(c, str) for c in meta.get("classes", [])),
         "classes are not a list of names"),
        (isinstance(meta.get("program_sha256"), str), "program_sha256 is missing"),
    ]
    for ok, what in problems:
        if not ok:
            raise ExportError(f"{path}: {what}")
    return meta


def _check_program(program: Any, meta: dict[str, Any], path: Path) -> None:
    """The program's own signature must be the one meta.json describes (a program from another network
    is refused here, not with jax's message at the first call)."""
    import jax

    try:
        (params, x), _ = jax.tree_util.tree_unflatten(program.in_tree, program.in_avals)
        outputs = jax.tree_util.tree_unflatten(program.out_tree, program.out_avals)
    except (TypeError, ValueError):
        raise ExportError(f"{path}: not a cnndsl program (it does not take parameters and images)") from None
    out = outputs.get("output") if isinstance(outputs, dict) else outputs
    shapes = {name: list(a.shape[1:]) for name, a in outputs.items() if name != "output"} \
        if isinstance(outputs, dict) else {}
    found = {name: (list(a.shape), str(a.dtype)) for name, a in params.items()} if isinstance(params, dict) else {}
    expected = {name: (info["shape"], info["dtype"]) for name, info in meta["parameters"].items()}
    if (out is None or found != expected or list(x.shape[1:]) != meta["input_shape"]
            or list(out.shape[1:]) != meta["output_shape"] or shapes != meta.get("heads", {})):
        raise ExportError(f"{path}: the program is for another network than meta.json describes "
                          f"(it takes {_fmt(x.shape[1:])} images to {_fmt(out.shape[1:])}, meta.json says "
                          f"{_fmt(meta['input_shape'])} to {_fmt(meta['output_shape'])}); export the network again")


def _read_params(path: Path, expected: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """params.npz, each array's header checked against `expected` before its data is read (the sizes the
    zip declares too), so a tampered or bomb archive costs no memory; then NaN and infinity refused."""
    import zipfile

    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            names = {name[: -len(".npy")] for name in members if name.endswith(".npy")}
            if names != set(expected) or len(members) != len(expected):
                missing, extra = sorted(set(expected) - names), sorted(set(members) - {f"{n}.npy" for n in expected})
                raise ExportError(f"{path}: " + (f"parameter {missing[0]!r} is missing" if missing else
                                                 f"unexpected entries {extra[:5]}"))
            for name, info in expected.items():
                member = members[f"{name}.npy"]
                with archive.open(member) as stream:
                    version = np.lib.format.read_magic(stream)
                    if version not in ((1, 0), (2, 0)):
                        raise ExportError(f"{path}: parameter {name!r} is an .npy of version {version}")
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(stream)
                    header = stream.tell()
                if list(shape) != info["shape"] or str(dtype) != info["dtype"] or dtype.hasobject:
                    raise ExportError(f"{path}: parameter {name!r} is {_fmt(shape)} {dtype}, the program expects "
                                      f"{_fmt(info['shape'])} {info['dtype']}")
                if member.file_size > header + math.prod(shape) * dtype.itemsize + 4096:
                    raise ExportError(f"{path}: parameter {name!r} declares {member.file_size:,} bytes for "
                                      f"{_fmt(shape)} {dtype}; the archive is corrupt")
                with archive.open(member) as stream:
                    arrays[name] = np.lib.format.read_array(stream, allow_pickle=False)
    except ExportError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable archive gets the same clear message
        raise ExportError(f"{path}: cannot read the parameters ({type(err).__name__}: {err})") from None
    _check_finite(arrays, str(path))
    return arrays


def _check_finite(arrays: dict[str, np.ndarray], where: str) -> None:
    for name, array in arrays.items():
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise ExportError(f"{where}: parameter {name!r} holds NaN or infinite values")
