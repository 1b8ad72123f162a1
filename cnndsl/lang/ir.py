"""The IR: a graph of layer operations, blocks inlined and repetitions unrolled.

Every node keeps the `Span` it was written at and its group path (the blocks, repetitions and
branches it sits in), so errors found after expansion still point into the source. Ops carry
only normalized parameters: kernel, stride and dilation are (height, width) pairs; padding is
`"same"`, `"valid"` or ((top, bottom), (left, right)).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Union

from cnndsl.lang.source import Source, Span

Pair = tuple[int, int]
Padding = Union[str, tuple[Pair, Pair]]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Op:
    """Base of IR operations; `kind` is the op's name in the language."""

    kind: ClassVar[str] = "op"
    #: How many leading fields are shown positionally in `label()`.
    positional: ClassVar[int] = 0

    def label(self) -> str:
        """The op as a user would write it, defaults left out: `conv(64, 3x3, stride=2)`."""
        parts = []
        for i, f in enumerate(fields(self)):
            value = getattr(self, f.name)
            if i < self.positional:
                parts.append(_show(f.name, value))
            elif value != f.default:
                parts.append(f"{f.name}={_show(f.name, value)}")
        return f"{self.kind}({', '.join(parts)})" if parts else self.kind

    def full_label(self) -> str:
        """The op with every parameter written out, defaults included: `conv(filters=64, kernel=3x3, ...)`
        (an editor's hover)."""
        head = self.label().split("(")[0]
        parts = [f"{f.name}={_show(f.name, getattr(self, f.name))}" for f in fields(self)
                 if not (f.name == "mode" and head.startswith(str(getattr(self, f.name))))]  # maxpool: in its name
        return f"{head}({', '.join(parts)})" if parts else head


def _show(name: str, value: object) -> str:
    if name in ("kernel", "window") and isinstance(value, tuple):
        return "x".join(map(str, value))
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]:
        return _show(name, value[0])
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "(" + ", ".join(_show("", v) for v in value) + ")"
    return str(value)


@dataclass(frozen=True)
class Input(Op):
    """The network's input: one image of `shape` (H, W, C)."""

    kind: ClassVar[str] = "input"
    shape: Shape = ()

    def label(self) -> str:
        return "input"


@dataclass(frozen=True)
class Conv(Op):
    """2-D convolution."""

    kind: ClassVar[str] = "conv"
    positional: ClassVar[int] = 2
    filters: int = 1
    kernel: Pair = (1, 1)
    stride: Pair = (1, 1)
    pad: Padding = "valid"
    dilation: Pair = (1, 1)
    groups: int = 1
    bias: bool = True


@dataclass(frozen=True)
class Pool(Op):
    """Max or average pooling over a window; `ceil` rounds the output size up (Caffe, torch)."""

    kind: ClassVar[str] = "pool"
    positional: ClassVar[int] = 1
    window: Pair = (2, 2)
    stride: Pair = (2, 2)
    pad: Padding = "valid"
    ceil: bool = False
    mode: str = "max"
    count_pad: bool = True
    dilation: Pair = (1, 1)  # max pooling only (PyTorch's MaxPool2d): window elements `dilation` apart

    def label(self) -> str:
        parts = [_show("window", self.window)]
        if self.stride != self.window:
            parts.append(f"stride={_show('stride', self.stride)}")
        if self.pad != "valid":
            parts.append(f"pad={_show('pad', self.pad)}")
        if self.ceil:
            parts.append("ceil=true")
        if self.mode == "avg" and not self.count_pad:
            parts.append("count_pad=false")
        if self.dilation != (1, 1):
            parts.append(f"dilation={_show('dilation', self.dilation)}")
        return f"{self.mode}pool({', '.join(parts)})"


@dataclass(frozen=True)
class GlobalPool(Op):
    """Max or average over all positions: (H, W, C) -> (C,)."""

    kind: ClassVar[str] = "global_pool"
    mode: str = "avg"

    def label(self) -> str:
        return f"global_{self.mode}pool"


@dataclass(frozen=True)
class AdaptivePool(Op):
    """Average over PyTorch's adaptive bins to a fixed (H, W): output row i covers input rows
    floor(i * H_in / H) to ceil((i + 1) * H_in / H), likewise for columns (AlexNet's and VGG's classifier
    input, EfficientNet's and MobileNet's pooling at any input size)."""

    kind: ClassVar[str] = "adaptive_pool"
    positional: ClassVar[int] = 1
    size: Pair = (1, 1)

    def label(self) -> str:
        return f"adaptive_avgpool({_show('kernel', self.size)})"


@dataclass(frozen=True)
class Dense(Op):
    """A fully connected layer; a 3-D input is flattened first."""

    kind: ClassVar[str] = "fc"
    positional: ClassVar[int] = 1
    units: int = 1
    bias: bool = True


@dataclass(frozen=True)
class Flatten(Op):
    """(H, W, C) -> (H*W*C,), in H, W, C order."""

    kind: ClassVar[str] = "flatten"


@dataclass(frozen=True)
class ConvTranspose(Op):
    """PyTorch's ConvTranspose2d: each input pixel adds a kernel-sized patch, `stride` apart; per axis the
    output has (n - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1 pixels."""

    kind: ClassVar[str] = "conv_transpose"
    positional: ClassVar[int] = 2
    filters: int = 1
    kernel: Pair = (1, 1)
    stride: Pair = (1, 1)
    pad: Pair = (0, 0)
    output_padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1
    bias: bool = True


@dataclass(frozen=True)
class ChannelSlice(Op):
    """Channels `start` to `stop` - 1 of a feature map (or elements of a vector), PyTorch's `x[:, start:stop]`:
    with `concat` branches, ShuffleNet v2's channel split (`concat(slice(0, c) | slice(c, 2*c) -> ...)`)."""

    kind: ClassVar[str] = "slice"
    positional: ClassVar[int] = 2
    start: int = 0
    stop: int = 1


@dataclass(frozen=True)
class ChannelShuffle(Op):
    """ShuffleNet's channel shuffle (PyTorch's `nn.ChannelShuffle`): the C channels seen as (groups, C/groups),
    transposed to (C/groups, groups) and flattened: output channel k*groups + g is input channel g*(C/groups) + k."""

    kind: ClassVar[str] = "channel_shuffle"
    positional: ClassVar[int] = 1
    groups: int = 2


@dataclass(frozen=True)
class PixelShuffle(Op):
    """PyTorch's `nn.PixelShuffle(r)`: (H, W, C*r*r) -> (H*r, W*r, C); input channel c*r*r + i*r + j goes to
    output position (h*r + i, w*r + j), channel c."""

    kind: ClassVar[str] = "pixel_shuffle"
    positional: ClassVar[int] = 1
    factor: int = 2


@dataclass(frozen=True)
class Upsample(Op):
    """(H, W, C) -> (H*s, W*s, C), PyTorch's `interpolate(scale_factor=s)`: `nearest` takes source pixel
    floor(i / s); `bilinear` (align_corners=False) samples source coordinate (i + 0.5) / s - 0.5, clamped
    to the image, between its two neighbours along each axis."""

    kind: ClassVar[str] = "upsample"
    positional: ClassVar[int] = 1
    scale: int = 2
    mode: str = "nearest"


@dataclass(frozen=True)
class Resize(Op):
    """(H, W, C) -> (size[0], size[1], C), PyTorch's `interpolate(size=...)`: per axis with scale = in / out,
    `nearest` takes source pixel min(floor(i * scale), in - 1); `bilinear` (align_corners=False) samples
    source coordinate max((i + 0.5) * scale - 0.5, 0) between its two neighbours (the last one repeated at
    the far edge). `resize(@map)` takes the size of a named map (an FCN head resized to `@input`)."""

    kind: ClassVar[str] = "resize"
    positional: ClassVar[int] = 1
    size: Pair = (1, 1)
    mode: str = "nearest"

    def label(self) -> str:
        mode = "" if self.mode == "nearest" else f", mode={self.mode}"
        return f"resize({self.size[0]}x{self.size[1]}{mode})"


@dataclass(frozen=True)
class Activation(Op):
    """An elementwise activation (softmax: over the last axis)."""

    kind: ClassVar[str] = "activation"
    fn: str = "relu"
    slope: float = 0.01

    def label(self) -> str:
        return f"leaky_relu(slope={self.slope})" if self.fn == "leaky_relu" and self.slope != 0.01 else self.fn


@dataclass(frozen=True)
class BatchNorm(Op):
    """Batch normalization over channels; `momentum` is the running average's decay (Flax's)."""

    kind: ClassVar[str] = "bn"
    eps: float = 1e-5
    momentum: float = 0.9


@dataclass(frozen=True)
class LocalResponseNorm(Op):
    """Local response normalization across channels (AlexNet)."""

    kind: ClassVar[str] = "lrn"
    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0


@dataclass(frozen=True)
class Dropout(Op):
    """Dropout with probability `rate` in training."""

    kind: ClassVar[str] = "dropout"
    positional: ClassVar[int] = 1
    rate: float = 0.5


@dataclass(frozen=True)
class DropPath(Op):
    """Stochastic depth (`drop_path(p)`): in training each example's whole input is zeroed with probability
    `rate` and kept ones scaled by 1 / (1 - rate) (torchvision's StochasticDepth "row" mode, timm's DropPath);
    the identity in evaluation. On a residual body it drops the body for that example."""

    kind: ClassVar[str] = "drop_path"
    positional: ClassVar[int] = 1
    rate: float = 0.0


@dataclass(frozen=True)
class LayerNorm(Op):
    """Layer normalization over the channel (last) axis at each position, with a learnable per-channel scale
    and offset (PyTorch's LayerNorm(C) on channels-last data, ConvNeXt's LayerNorm2d)."""

    kind: ClassVar[str] = "ln"
    eps: float = 1e-5


@dataclass(frozen=True)
class Linear(Op):
    """A fully connected map of the channel (last) axis at every position: (H, W, C) -> (H, W, units), or
    (C,) -> (units,) (ConvNeXt's pointwise MLP; a 1x1 convolution computed as a matrix product)."""

    kind: ClassVar[str] = "linear"
    positional: ClassVar[int] = 1
    units: int = 1
    bias: bool = True


@dataclass(frozen=True)
class LayerScale(Op):
    """A learnable per-channel scale, every channel's factor starting at `init` (ConvNeXt's, CaiT's)."""

    kind: ClassVar[str] = "layer_scale"
    init: float = 1e-6


@dataclass(frozen=True)
class Concat(Op):
    """Concatenates its inputs on the channel (last) axis, in branch order."""

    kind: ClassVar[str] = "concat"


@dataclass(frozen=True)
class Add(Op):
    """Sums its inputs elementwise; `residual` marks an identity-or-projection shortcut."""

    kind: ClassVar[str] = "add"
    residual: bool = False

    def label(self) -> str:
        return "add"


@dataclass(frozen=True)
class Mul(Op):
    """Multiplies its inputs elementwise; a channel vector (C,) scales every position of a feature map of
    C channels (a squeeze-and-excitation gate)."""

    kind: ClassVar[str] = "mul"


#: The ops that hold arrays (parameters, and batch norm's running statistics); the rest compute from inputs only.
PARAMETERIZED: tuple[type[Op], ...] = (Conv, Dense, Linear, BatchNorm, LayerNorm, LayerScale)


@dataclass(frozen=True)
class Frame:
    """A group a node sits in: a block call, a repetition's step (`repeat`), a branch."""

    id: int
    label: str
    span: Span
    repeat: bool = False  # a step of `[...]*N`: the steps' labels differ only in the step number
    call_source: Source | None = field(default=None, compare=False)  # a block call: the file it is written in


def call_sites(path: tuple[Frame, ...] | list[Frame]) -> tuple[str, ...]:
    """A note naming where each block call of `path` is written, outermost first; () without calls."""
    calls = [f"`{f.label}` at {f.call_source.path}:{f.span.line}:{f.span.col}" for f in path if f.call_source]
    return (f"called from {', then '.join(calls)}",) if calls else ()


@dataclass(frozen=True)
class Node:
    """One operation in the graph; `inputs` are ids of earlier nodes."""

    id: int
    name: str
    op: Op
    inputs: tuple[int, ...]
    span: Span
    path: tuple[Frame, ...]
    source: Source | None = None  # the file the layer is written in when it is not the spec's own (an import)

    def location(self, graph_source: Source) -> str:
        """`line 12` in the spec's own file, `blocks.cnn:12` in an imported one."""
        if self.source is None or self.source is graph_source:
            return f"line {self.span.line}"
        return f"{self.source.path}:{self.span.line}"

    def where(self, outside_own_group: bool = False) -> str:
        """The node's group path as text: `stage(64, 2) › […]*n 2/2`.

        `outside_own_group` leaves out the group a join node closes (a `concat` is in its own group).
        """
        frames = [f for f in self.path if not (outside_own_group and f.span == self.span)]
        return " › ".join(f.label for f in frames)

    def call_sites(self, graph_source: Source) -> tuple[str, ...]:
        """For a layer written in an imported file: a note naming where each enclosing block is called,
        from the spec's own file inward (`stage(8)` at main.cnn:5:10, `bad(8)` at lib.cnn:2:32); else ()."""
        if self.source is None or self.source is graph_source:
            return ()
        return call_sites(self.path)

    def notes(self, graph_source: Source, outside_own_group: bool = False) -> tuple[str, ...]:
        """The notes a diagnostic at this node carries: the groups it is in, and the call sites that lead
        into an imported file."""
        where = self.where(outside_own_group)
        return ((f"in {where}",) if where else ()) + self.call_sites(graph_source)


@dataclass(frozen=True)
class Tap:
    """A name given to a feature map, `-> @name`: node `node`'s output, named at `span` inside `path`."""

    name: str
    node: int
    span: Span
    path: tuple[Frame, ...]
    source: Source | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Head:
    """Another output of the network, `head NAME = ...`: node `node`'s output; `training_only` heads (GoogLeNet's
    auxiliary classifiers) add to the training loss with `weight`s set in `train` and are left out of
    evaluation, exports, ONNX and the inference cost."""

    name: str
    node: int
    training_only: bool
    span: Span


@dataclass(frozen=True)
class Graph:
    """An expanded network: nodes in topological order, node 0 the input."""

    name: str
    nodes: tuple[Node, ...]
    output: int
    source: Source
    imports: tuple[Any, ...] = field(default=(), compare=False)  # the programs the spec imports (nodes.Program)
    taps: tuple[Tap, ...] = field(default=(), compare=False)  # the named feature maps (`-> @e1`), in order
    heads: tuple[Head, ...] = ()  # the outputs besides the main chain's, in the order declared

    @property
    def inference_heads(self) -> tuple[Head, ...]:
        """The heads evaluation, exports and ONNX give besides the main output."""
        return tuple(h for h in self.heads if not h.training_only)

    def needed(self, outputs: tuple[int, ...]) -> frozenset[int]:
        """The nodes that computing `outputs` runs (the outputs and everything they read)."""
        seen: set[int] = set()
        stack = list(outputs)
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack.extend(self.nodes[i].inputs)
        return frozenset(seen)

    @property
    def training_only_nodes(self) -> frozenset[int]:
        """The layers only training-only heads need: left out of evaluation and of the inference cost."""
        if not any(h.training_only for h in self.heads):
            return frozenset()
        inference = self.needed((self.output,) + tuple(h.node for h in self.inference_heads))
        return frozenset(range(len(self.nodes))) - inference

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self.nodes)} nodes)"

    @property
    def standalone_text(self) -> str:
        """The spec as a file that needs no other (its imports written in): what run directories, exports
        and sweeps store."""
        from cnndsl.lang.imports import (
            written_in,  # here: only what stores a spec needs it
        )

        return written_in(self.source.text, self.imports)

    @property
    def input_shape(self) -> Shape:
        """The shape of one input image."""
        op = self.nodes[0].op
        assert isinstance(op, Input)
        return op.shape
