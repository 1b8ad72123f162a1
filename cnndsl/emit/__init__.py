"""Writers of what a checked spec becomes, and the registry `cnndsl compile --emit` chooses from.

    json     the IR with shapes and costs (schema cnndsl.ir/1)           cnndsl.emit.ir_json
    python   a standalone Flax NNX module file                           cnndsl.emit.python_source
    svg      an architecture diagram                                     cnndsl.emit.diagram
    export   a jax.export inference artifact (a directory) + its loader  cnndsl.emit.artifact
    onnx     an ONNX model, checked with ONNX Runtime                    cnndsl.emit.onnx_model

Each writer is imported when it is used: `cnndsl check` loads none of them, and only export and onnx
load JAX.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnndsl.lang.lazy import lazy_exports
from cnndsl.lang.outputs import write_atomic
from cnndsl.lang.report import Report

# the artifact's writers and loader (`cnndsl.emit.export_run`), and each writer module, imported on first use
__getattr__ = lazy_exports(__name__, {"export": "artifact", "export_run": "artifact", "load_exported": "artifact"})


@dataclass(frozen=True)
class EmitOptions:
    """What a writer may take besides the report: the spec's path and `--set` bindings, the seed of fresh
    parameters or a trained run's directory, the diagram's depth, and whether to replace an earlier artifact."""

    spec: Path | None = None
    bindings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    run: str | None = None
    depth: int | None = None
    force: bool = False


def _json(report: Report, path: Path, options: EmitOptions) -> str:
    from cnndsl.emit.ir_json import to_json

    write_atomic(path, json.dumps(to_json(report), indent=1) + "\n")
    return ""


def _python(report: Report, path: Path, options: EmitOptions) -> str:
    from cnndsl.emit.python_source import to_python

    write_atomic(path, to_python(report, str(report.graph.source.path)))
    return ""


def _export(report: Report, path: Path, options: EmitOptions) -> str:
    from cnndsl.emit.artifact import export, export_run
    from cnndsl.nn.compiler import CompiledNetwork

    if options.run:
        meta = export_run(options.spec, options.run, path, bindings=options.bindings, force=options.force)
        origin = (f"trained parameters of {options.run} (step {meta['step']}); takes raw pixels as its dataset "
                  "stores them")
    else:
        net = CompiledNetwork(report)
        meta = export(net, net.init(options.seed), path, force=options.force)
        origin = f"parameters from seed {options.seed} (export a trained run with --run RUN_DIR)"
    return "\n".join([f"lowered for {', '.join(meta['platforms'])}; {origin}",
                      *(f"left out {reason}" for reason in meta["platforms_left_out"])])


def _onnx(report: Report, path: Path, options: EmitOptions) -> str:
    from cnndsl.emit.onnx_model import onnx_of_run, onnx_of_seed

    if options.run:
        model = onnx_of_run(options.spec, options.run, options.bindings)
        origin = f"trained parameters of {options.run}; takes raw pixels (NHWC) as its dataset stores them"
    else:
        model = onnx_of_seed(report, options.seed)
        origin = f"parameters from seed {options.seed} (a trained run with --run RUN_DIR); input NHWC"
    write_atomic(path, model.SerializeToString())
    return f"ONNX opset {model.opset_import[0].version}, IR version {model.ir_version}; {origin}"


def _svg(report: Report, path: Path, options: EmitOptions) -> str:
    from cnndsl.emit.diagram import to_svg

    write_atomic(path, to_svg(report, options.depth))
    return ""


#: `--emit` targets: each writes one artifact of a checked report to a path and returns a note for the user.
EMITTERS: dict[str, Callable[[Report, Path, EmitOptions], str]] = {
    "json": _json, "python": _python, "export": _export, "svg": _svg, "onnx": _onnx}
#: Targets that write a directory rather than a file.
DIRECTORY_TARGETS = {"export"}


def emit(kind: str, report: Report, path: Path, options: EmitOptions | None = None) -> str:
    """Write the `kind` artifact of `report` to `path` (checked by the caller: see cnndsl.lang.outputs)."""
    return EMITTERS[kind](report, path, options or EmitOptions())
