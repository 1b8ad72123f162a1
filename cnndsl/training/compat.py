"""Whether a dataset fits a spec, with a hint that names the fix that works."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnndsl.data import BUILTIN_SHAPES, Dataset
from cnndsl.data.segmentation import DENSE_BUILTINS
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
                            f"input is {h}x{w}x{c}; {_spec_data(net, where) or _other_datasets(net.input_shape, where, len(net.report.output_shape) == 3)}{fix}")
    if (h, w) != (dh, dw) and not resize:
        raise TrainingError(f"{where} has images of {dh}x{dw}x{dc}, the spec's input is {h}x{w}x{c}; "
                            f"{_spec_data(net, where) or _other_datasets(net.input_shape, where, len(net.report.output_shape) == 3)}pass --resize to resize its images on the "
                            f"device, or change `input` to {dh}x{dw}x{c}")
    out = net.report.output_shape
    if getattr(data, "dense", False) or np.ndim(data.y_train) == 3:  # per-pixel labels: a map of class scores
        _check_dense(net, data, out)
        return
    if len(out) != 1:
        hint = (f"a map of class scores is for per-pixel labels (--data shapes, masks:PATH); {where} labels whole "
                f"images: end the network with fc({data.num_classes})" if len(out) == 3 else
                f"end it with fc({data.num_classes})")
        raise TrainingError(f"the network's output is {fmt(out)}, not a vector of class scores; {hint}")
    if out[0] != data.num_classes:
        fix = _binding_for_classes(net, bindings or {}, data.num_classes) or f"end the network with fc({data.num_classes})"
        raise TrainingError(f"the network outputs {out[0]} classes, {where} has {data.num_classes}; {fix}")


def _check_dense(net: CompiledNetwork, data: Dataset, out: tuple[int, ...]) -> None:
    """A segmentation network gives, for each pixel of the mask, one score per class."""
    mask = tuple(data.y_train.shape[1:]) if np.ndim(data.y_train) == 3 else tuple(data.image_shape[:2])
    if len(out) != 3:
        raise TrainingError(f"{data.name} labels every pixel ({fmt(mask)} masks), but the network's output is "
                            f"{fmt(out)}; a segmentation network ends with a map of class scores at the input's "
                            f"size, e.g. `-> conv({data.num_classes}, 1x1) -> resize(@input, mode=bilinear)`")
    if out[:2] != mask:
        raise TrainingError(f"the network's output is {fmt(out)}, the masks of {data.name} are {fmt(mask)}; bring "
                            f"the scores to the masks' size: `-> resize(@input, mode=bilinear)`")
    if out[2] != data.num_classes:
        raise TrainingError(f"the network scores {out[2]} classes per pixel, {data.name} has {data.num_classes} "
                            f"({', '.join(data.classes[:8])}); end it with conv({data.num_classes}, 1x1)")


def _spec_data(net: CompiledNetwork, current: str) -> str:
    """'the spec's `train` line names mnist, --data gave digits: leave --data out; or ' (or ''): the cause when the
    spec says which data it trains on (a sweep's member.cnn and best.cnn do) and the command line replaced it."""
    named = dict(net.report.train_settings).get("data")
    if not named or named == current:
        return ""
    return f"the spec's `train` line names {named}, --data gave {current}: leave --data out to train on {named}; or "


def _other_datasets(shape: tuple[int, ...], current: str, dense: bool = False) -> str:
    """'the network takes 28x28x1 images, as mnist and fashion-mnist have: pass --data mnist; or ' (or ''): the
    built-in datasets of the network's input and task (per-pixel labels for a map of class scores)."""
    fits = [name for name, (image, _) in BUILTIN_SHAPES.items()
            if image == tuple(shape) and name != current and (name in DENSE_BUILTINS) == dense]
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
