"""Whether a dataset fits a spec, with a hint that names the fix that works."""

from __future__ import annotations

from typing import Any

from cnndsl.data import BUILTIN_SHAPES, Dataset
from cnndsl.lang import nodes
from cnndsl.lang.errors import CnnError, UsageError
from cnndsl.lang.frontend import check_program, parse_overrides
from cnndsl.lang.parser import parse as parse_source
from cnndsl.lang.settings import TrainingError
from cnndsl.lang.shapes import fmt
from cnndsl.lang.source import Source
from cnndsl.nn.compiler import CompiledNetwork


def classes_of(net: CompiledNetwork) -> int | None:
    """How many classes a network scores (None unless its output is a vector)."""
    out = net.report.output_shape
    return out[0] if len(out) == 1 else None


def check_compatible(net: CompiledNetwork, data: Dataset, resize: bool,
                     bindings: dict[str, Any] | None = None) -> None:
    """A TrainingError unless the dataset's images and classes fit the spec; its hint names the fix that
    works: another built-in dataset of the spec's shape, `--set NAME=K` where a `let` sets the classes."""
    (h, w, c), (dh, dw, dc) = net.input_shape, data.image_shape
    where = data.name
    if c != dc:
        fix = (f"change `input` to {h}x{w}x{dc}" if (h, w) == (dh, dw) or resize else
               f"change `input` to {dh}x{dw}x{dc} (or to {h}x{w}x{dc} and pass --resize)")
        raise TrainingError(f"{where} has images of {dh}x{dw}x{dc} ({dc} channel{'s' * (dc != 1)}), the spec's "
                            f"input is {h}x{w}x{c}; {_other_datasets(net.input_shape, where)}{fix}")
    if (h, w) != (dh, dw) and not resize:
        raise TrainingError(f"{where} has images of {dh}x{dw}x{dc}, the spec's input is {h}x{w}x{c}; "
                            f"{_other_datasets(net.input_shape, where)}pass --resize to resize its images on the "
                            f"device, or change `input` to {dh}x{dw}x{c}")
    out = net.report.output_shape
    if len(out) != 1:
        raise TrainingError(f"the network's output is {fmt(out)}, not a vector of class scores; end it with "
                            f"fc({data.num_classes})")
    if out[0] != data.num_classes:
        fix = _binding_for_classes(net, bindings or {}, data.num_classes) or f"end the network with fc({data.num_classes})"
        raise TrainingError(f"the network outputs {out[0]} classes, {where} has {data.num_classes}; {fix}")


def _other_datasets(shape: tuple[int, ...], current: str) -> str:
    """'the network takes 28x28x1 images, as mnist and fashion-mnist have: pass --data mnist; or ' (or '')."""
    fits = [name for name, (image, _) in BUILTIN_SHAPES.items() if image == tuple(shape) and name != current]
    if not fits:
        return ""
    return (f"the network takes {fmt(tuple(shape))} images, as {' and '.join(fits)} "
            f"ha{'ve' if len(fits) > 1 else 's'}: pass --data {fits[0]}; or ")


def _binding_for_classes(net: CompiledNetwork, bindings: dict[str, Any], classes: int) -> str | None:
    """`pass --set NAME=K` when setting one of the spec's `let` names to K makes the network output K
    classes (checked, milliseconds: no JAX), else None."""
    program = parse_source(Source(net.report.graph.standalone_text))
    names = [b.key for s in program.statements if isinstance(s, nodes.Let) for b in s.bindings if not b.optional]
    for name in names:
        try:
            report = check_program(program, parse_overrides({**bindings, name: classes}))
        except (CnnError, UsageError):
            continue
        if report.output_shape == (classes,):
            return f"pass --set {name}={classes}"
    return None
