"""Shape inference: the output shape of every node of an IR graph, or every reason it has none.

Shapes leave out the batch axis: (H, W, C) for feature maps, (F,) for vectors. The output-size rule
for convolution and pooling (`window_output`) is the one documented in docs/language.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from cnndsl.lang import ir
from cnndsl.lang.errors import CnnError, Diagnostic
from cnndsl.lang.limits import INT64_MAX


class ShapeIssue(Exception):
    """Why a node has no valid output shape: a message and, optionally, a fix."""

    def __init__(self, message: str, help: str | None = None, notes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message, self.help, self.notes = message, help, notes


@dataclass(frozen=True)
class Inferred:
    """A node's output shape and, where the node does something implicit, a note saying what."""

    shape: ir.Shape
    note: str = ""


def fmt(shape: ir.Shape) -> str:
    """`56x56x64` for a feature map, `4096` for a vector."""
    return "x".join(map(str, shape))


def window_output(size: int, kernel: int, stride: int, dilation: int, pad: ir.Padding, axis: int,
                  ceil: bool = False) -> tuple[int, tuple[int, int]]:
    """Output length of a sliding window along one axis, and the (before, after) padding used.

    `same`: out = ceil(size / stride); the total padding max((out - 1) * stride + span - size, 0) is
    split with the extra element after (bottom/right), as XLA, TensorFlow and Flax do.
    explicit (before, after): out = floor((size + before + after - span) / stride) + 1, or with
    `ceil` rounded up, except that a last window starting in the after-padding is dropped (Caffe/torch).
    `span` = (kernel - 1) * dilation + 1 is the window's reach.
    """
    span = (kernel - 1) * dilation + 1
    if pad == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + span - size, 0)
        return out, (total // 2, total - total // 2)
    before, after = (0, 0) if pad == "valid" else pad[axis]
    room = size + before + after - span
    # Floor division rounds towards -inf, as PyTorch's div_rtn: in ceil mode a window up to stride - 1
    # longer than the padded input still gives one output (2 rows, window 3, stride 2: 1 row).
    out = (-(-room // stride) if ceil else room // stride) + 1
    if ceil and out > 0 and (out - 1) * stride >= size + before:
        out -= 1
    return max(out, 0), (before, after)


def _feature_map(op: ir.Op, shape: ir.Shape) -> ir.Shape:
    if len(shape) != 3:
        raise ShapeIssue(f"`{op.label()}` needs a feature map (HxWxC), but its input is a vector of {fmt(shape)}",
                         "put it before `fc`, `flatten` and global pooling")
    return shape


def _windowed(op: ir.Conv | ir.Pool, shape: ir.Shape, kernel: ir.Pair, dilation: ir.Pair,
              ceil: bool) -> tuple[int, int]:
    h, w, _ = _feature_map(op, shape)
    outs, padded, short = [], [], []
    reach = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    for axis, (name, size) in enumerate((("height", h), ("width", w))):
        out, (before, after) = window_output(size, kernel[axis], op.stride[axis], dilation[axis], op.pad, axis, ceil)
        if op.pad == "same":
            before, after = 0, max((out - 1) * op.stride[axis] + reach[axis] - size, 0)
        outs.append(out)
        padded.append(size + before + after)
        if out < 1:
            short.append(f"the {name} {size}" + (f" + {before + after} padding = {padded[-1]}" if before + after else ""))
    if short:
        window = f"the {reach[0]}x{reach[1]} window"
        note = f"{' and '.join(short)} {'is' if len(short) == 1 else 'are'} smaller than {window}"
        if isinstance(op, ir.Pool):
            raise ShapeIssue(f"`{op.label()}` would shrink the feature map below 1x1",
                             notes=(f"its input is {fmt(shape)}: {note}",),
                             help="remove this pooling layer or pool less before it")
        if padded == [h, w]:
            raise ShapeIssue(f"`{op.label()}` needs an input of at least {reach[0]}x{reach[1]}, got {fmt(shape)}",
                             "pad the input (`pad=same`) or downsample less before it")
        raise ShapeIssue(f"`{op.label()}` needs an input of at least {reach[0]}x{reach[1]} after padding, got "
                         f"{fmt(shape)}, which is {padded[0]}x{padded[1]} padded",
                         "pad the input more (`pad=same`) or downsample less before it", (note,))
    return outs[0], outs[1]


def _pool_padding(op: ir.Pool) -> None:
    """PyTorch's rule: no side is padded by more than half the window, so no window covers padding alone
    (a max over nothing but padding would be -inf)."""
    if op.pad in ("same", "valid"):
        return
    for axis, (name, sides) in enumerate((("top and bottom", "top/bottom"), ("left and right", "left/right"))):
        before, after = op.pad[axis]
        half = op.window[axis] // 2
        if max(before, after) > half:
            raise ShapeIssue(f"`{op.label()}` pads {max(before, after)} on the {sides}, more than half its window "
                             f"of {op.window[axis]}",
                             f"pad at most {half} on the {name}, as PyTorch requires: a window over padding alone "
                             "has no input to pool")


def _conv(op: ir.Conv, shapes: list[ir.Shape]) -> Inferred:
    (shape,) = shapes
    oh, ow = _windowed(op, shape, op.kernel, op.dilation, False)
    channels = shape[2]
    if channels % op.groups or op.filters % op.groups:
        bad = f"its {channels} input channels" if channels % op.groups else f"its {op.filters} filters"
        raise ShapeIssue(f"`{op.label()}` splits into {op.groups} groups, but {bad} do not divide by {op.groups}",
                         "choose `groups` that divides both the input channels and the filters")
    return Inferred((oh, ow, op.filters))


def _pool(op: ir.Pool, shapes: list[ir.Shape]) -> Inferred:
    (shape,) = shapes
    _pool_padding(op)
    oh, ow = _windowed(op, shape, op.window, op.dilation, op.ceil)
    return Inferred((oh, ow, shape[2]))


def _global_pool(op: ir.GlobalPool, shapes: list[ir.Shape]) -> Inferred:
    (shape,) = shapes
    return Inferred((_feature_map(op, shape)[2],))


def _adaptive_pool(op: ir.AdaptivePool, shapes: list[ir.Shape]) -> Inferred:
    (shape,) = shapes
    channels = _feature_map(op, shape)[2]
    if min(op.size) < 1:
        raise ShapeIssue(f"`{op.label()}` needs an output of at least 1x1", "e.g. `adaptive_avgpool(7x7)`")
    return Inferred((*op.size, channels))


def _dense(op: ir.Dense, shapes: list[ir.Shape]) -> Inferred:
    (shape,) = shapes
    if len(shape) == 3:
        return Inferred((op.units,), f"flattens {fmt(shape)} to {math.prod(shape)} first")
    return Inferred((op.units,))


def _flatten(op: ir.Flatten, shapes: list[ir.Shape]) -> Inferred:
    (shape,) = shapes
    return Inferred((math.prod(shape),))


def _conv_transpose(op: ir.ConvTranspose, shapes: list[ir.Shape]) -> Inferred:
    (shape,) = shapes
    h, w, c = _feature_map(op, shape)
    if c % op.groups or op.filters % op.groups:
        raise ShapeIssue(f"`{op.label()}` needs input channels ({c}) and filters ({op.filters}) divisible by "
                         f"groups={op.groups}", "choose groups that divide both")
    for axis in range(2):
        if op.output_padding[axis] >= max(op.stride[axis], op.dilation[axis]):
            raise ShapeIssue(f"`{op.label()}`: output_padding must be smaller than the stride or the dilation "
                             f"(PyTorch's rule), got {op.output_padding[axis]}", "use output_padding=0 or 1 with stride 2")
    size = [(n - 1) * op.stride[a] - 2 * op.pad[a] + op.dilation[a] * (op.kernel[a] - 1) + op.output_padding[a] + 1
            for a, n in enumerate((h, w))]
    if min(size) < 1:
        raise ShapeIssue(f"`{op.label()}` on {fmt(shape)} leaves no output ({size[0]}x{size[1]}): the padding "
                         "removes more than the kernel adds", "use less padding")
    return Inferred((size[0], size[1], op.filters))


def _channel_slice(op: ir.ChannelSlice, shapes: list[ir.Shape]) -> Inferred:
    (shape,) = shapes
    channels = shape[-1]
    if not op.start < op.stop <= channels:
        raise ShapeIssue(f"`{op.label()}` takes channels {op.start} to {op.stop - 1}, but its input has {channels} "
                         f"({fmt(shape)})", f"slice within 0..{channels}: start < stop <= {channels}")
    return Inferred(shape[:-1] + (op.stop - op.start,))


def _channel_shuffle(op: ir.ChannelShuffle, shapes: list[ir.Shape]) -> Inferred:
    (shape,) = shapes
    channels = _feature_map(op, shape)[2]
    if channels % op.groups:
        raise ShapeIssue(f"`{op.label()}` needs channels divisible by {op.groups}, got {channels}",
                         f"shuffle the {channels} channels in a group count that divides them")
    return Inferred(shape)


def _pixel_shuffle(op: ir.PixelShuffle, shapes: list[ir.Shape]) -> Inferred:
    (shape,) = shapes
    h, w, c = _feature_map(op, shape)
    r2 = op.factor * op.factor
    if c % r2:
        raise ShapeIssue(f"`{op.label()}` needs channels divisible by {op.factor}*{op.factor} = {r2}, got {c}",
                         f"give the layer before it a multiple of {r2} channels")
    return Inferred((h * op.factor, w * op.factor, c // r2))


def _upsample(op: ir.Upsample, shapes: list[ir.Shape]) -> Inferred:
    (shape,) = shapes
    h, w, c = _feature_map(op, shape)
    return Inferred((h * op.scale, w * op.scale, c))


def _resize(op: ir.Resize, shapes: list[ir.Shape]) -> Inferred:
    (shape,) = shapes
    _, _, c = _feature_map(op, shape)
    return Inferred((op.size[0], op.size[1], c))


def _linear(op: ir.Linear, shapes: list[ir.Shape]) -> Inferred:
    (shape,) = shapes
    return Inferred(shape[:-1] + (op.units,))


def _same(op: ir.Op, shapes: list[ir.Shape]) -> Inferred:
    (shape,) = shapes
    return Inferred(shape)


def _concat(op: ir.Concat, shapes: list[ir.Shape]) -> Inferred:
    first = shapes[0]
    for i, shape in enumerate(shapes[1:], start=2):
        if len(shape) != len(first) or shape[:-1] != first[:-1]:
            what = "height and width" if len(first) == 3 else "rank"
            listing = tuple(f"branch {j} gives {fmt(s)}" for j, s in enumerate(shapes, start=1))
            raise ShapeIssue(f"`concat` needs branches of the same {what}",
                             "give every branch the same strides and `pad=same`", listing)
    return Inferred(first[:-1] + (sum(s[-1] for s in shapes),))


def _add(op: ir.Add, shapes: list[ir.Shape], body_stride: Callable[[], ir.Pair | None] = lambda: None) -> Inferred:
    """`body_stride` gives a residual body's total stride (from the graph), for the fix of a mismatch."""
    first = shapes[0]
    for i, shape in enumerate(shapes[1:], start=2):
        if shape != first:
            if op.residual:
                body, shortcut = shapes
                raise ShapeIssue(f"`residual` adds its body's {fmt(body)} to a shortcut of {fmt(shortcut)}",
                                 residual_fix(body, shortcut, body_stride()))
            raise ShapeIssue(f"`add` needs branches of one shape: branch 1 gives {fmt(first)}, "
                             f"branch {i} gives {fmt(shape)}")
    return Inferred(first)


def residual_fix(body: ir.Shape, shortcut: ir.Shape, stride: ir.Pair | None) -> str | None:
    """The change that makes a residual body and its shortcut the same shape, or None when none is clear.

    A body whose layers pad `same` gives ceil(H/s) x ceil(W/s) for its total stride s, and a 1x1 projection
    of stride s gives the shortcut exactly that size (floor((H-1)/s) + 1 = ceil(H/s)). So: a body of another
    size needs `pad=same` (it shrinks by its kernels); then a body that strides or changes the width needs the
    projection, of the body's stride and width.
    """
    if len(body) != 3 or len(shortcut) != 3:
        return None
    (bh, bw, channels), (sh, sw, _) = body, shortcut
    if stride is None:  # the body was not traced (an op that sets the size directly): infer a stride from sizes
        # ceil(n / s) falls as s grows, so the smallest s with ceil(n / s) <= b is ceil(n / b): the only
        # candidate worth checking (constant time, whatever the sizes)
        stride = (-(-sh // bh), -(-sw // bw)) if bh > 0 and bw > 0 else (0, 0)
        if 0 in stride or (-(-sh // stride[0]), -(-sw // stride[1])) != (bh, bw):
            return None
    padded = (-(-sh // stride[0]), -(-sw // stride[1]))
    fixes = []
    if (bh, bw) != padded:
        fixes.append(f"give the body's convolutions and pools `pad=same`, so that it gives "
                     f"{padded[0]}x{padded[1]}x{channels} instead of {fmt(body)}")
    if stride != (1, 1) or channels != shortcut[2]:
        shown = "" if stride == (1, 1) else f", stride={stride[0] if stride[0] == stride[1] else f'({stride[0]}, {stride[1]})'}"
        fixes.append(f"project the shortcut: `residual(..., shortcut=conv({channels}, 1x1{shown}, bias=false) -> bn)`")
    return "; then ".join(fixes) if fixes else None


def body_stride(graph: ir.Graph, node: ir.Node) -> ir.Pair | None:
    """The product of the strides on a residual's body, from the branch point to `node`'s first input; None
    when the body holds an op that sets the size itself (global or adaptive pooling)."""
    shortcut_side: set[int] = set()
    stack = [node.inputs[1]]
    while stack:
        index = stack.pop()
        if index not in shortcut_side:
            shortcut_side.add(index)
            stack.extend(graph.nodes[index].inputs)
    sh, sw = 1, 1
    index = node.inputs[0]
    while index not in shortcut_side:
        layer = graph.nodes[index]
        if isinstance(layer.op, (ir.Conv, ir.Pool)):
            sh, sw = sh * layer.op.stride[0], sw * layer.op.stride[1]
        elif isinstance(layer.op, (ir.GlobalPool, ir.AdaptivePool)) or not layer.inputs:
            return None
        index = layer.inputs[0]
    return sh, sw


def _mul(op: ir.Mul, shapes: list[ir.Shape]) -> Inferred:
    """Numpy broadcasting, channels last: a vector (C,) is a 1x1xC map, and a gate of 1x1xC (or (C,)) scales
    every position of an HxWxC map (squeeze-and-excitation, with fc or with 1x1 convolutions)."""
    rank = max(len(s) for s in shapes)
    aligned = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    out = tuple(max(dims) for dims in zip(*aligned))
    for i, (shape, dims) in enumerate(zip(shapes, aligned), start=1):
        if any(d not in (1, o) for d, o in zip(dims, out)):
            listing = tuple(f"branch {j} gives {fmt(s)}" for j, s in enumerate(shapes, start=1))
            raise ShapeIssue(f"`mul` needs branches of one shape, or a vector of {out[-1]} channel weights (or a "
                             f"1x1x{out[-1]} map) to scale a {fmt(out)} feature map; branch {i} gives {fmt(shape)}",
                             f"end the gate branch with `fc({out[-1]}) -> sigmoid` or `conv({out[-1]}, 1x1) -> sigmoid`",
                             listing)
    return Inferred(out)


_RULES: dict[type, Callable[..., Inferred]] = {
    ir.Conv: _conv, ir.Pool: _pool, ir.GlobalPool: _global_pool, ir.AdaptivePool: _adaptive_pool, ir.Dense: _dense,
    ir.Flatten: _flatten, ir.ConvTranspose: _conv_transpose, ir.ChannelSlice: _channel_slice, ir.ChannelShuffle: _channel_shuffle, ir.PixelShuffle: _pixel_shuffle, ir.Upsample: _upsample, ir.Resize: _resize,
    ir.Linear: _linear,
    ir.Activation: _same, ir.BatchNorm: _same, ir.LocalResponseNorm: _same, ir.Dropout: _same,
    ir.DropPath: _same, ir.LayerNorm: _same, ir.LayerScale: _same,
    ir.Concat: _concat, ir.Add: _add, ir.Mul: _mul,
}


def output_shape(op: ir.Op, inputs: list[ir.Shape | None]) -> ir.Shape | None:
    """The shape `op` gives these inputs, or None when an input is unknown or the op does not fit them
    (`infer_shapes` reports that later, located). Expansion uses it to tell a block its input's shape."""
    if isinstance(op, ir.Input):
        return op.shape
    if any(shape is None for shape in inputs):
        return None
    try:
        shape = _RULES[type(op)](op, list(inputs)).shape
    except ShapeIssue:
        return None
    return shape if all(d <= INT64_MAX for d in shape) else None


def _named_inputs(graph: ir.Graph, node: ir.Node) -> tuple[str, ...]:
    """For a join, which of its branches are named feature maps read from elsewhere (`@e3`), and where
    each was named: a long skip's shape comes from far away in the spec."""
    if len(node.inputs) < 2:
        return ()
    notes = []
    for k, i in enumerate(node.inputs, start=1):
        taps = [t for t in graph.taps if t.node == i]
        if taps:
            where = (taps[-1].source.path + ":") if taps[-1].source is not None and taps[-1].source is not graph.source \
                else "line "
            notes.append(f"branch {k} is `@{taps[-1].name}`, named at {where}{taps[-1].span.line}")
    return tuple(notes)


def infer_shapes(graph: ir.Graph) -> list[Inferred]:
    """The output of every node, in node order; raise `CnnError` with every shape problem found.

    A node whose input has no shape is skipped silently, so one mistake is reported once.
    """
    results: list[Inferred | None] = []
    diagnostics: list[Diagnostic] = []
    for node in graph.nodes:
        if isinstance(node.op, ir.Input):
            results.append(Inferred(node.op.shape))
            continue
        inputs = [results[i] for i in node.inputs]
        if any(x is None for x in inputs):
            results.append(None)
            continue
        try:
            shapes = [x.shape for x in inputs]
            if isinstance(node.op, ir.Add) and node.op.residual:
                inferred = _add(node.op, shapes, lambda node=node: body_stride(graph, node))  # type: ignore[misc]
            else:
                inferred = _RULES[type(node.op)](node.op, shapes)
            if any(d > INT64_MAX for d in inferred.shape) or math.prod(inferred.shape) > INT64_MAX:
                raise ShapeIssue(f"the output of `{node.op.label()}` has more elements than fit in 64 bits")
            results.append(inferred)
        except ShapeIssue as issue:
            notes = issue.notes + _named_inputs(graph, node) + node.notes(graph.source, outside_own_group=True)
            diagnostics.append(Diagnostic("shape", issue.message, node.source or graph.source, node.span, notes,
                                          issue.help))
            results.append(None)
    if diagnostics:
        raise CnnError(tuple(diagnostics))
    return results  # type: ignore[return-value]
