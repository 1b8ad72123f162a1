"""The builtin layers: their parameters, argument types and defaults, as data.

`BUILTINS` maps each layer name of the language to a `Builtin`: its parameters in positional order,
each with a converter that checks and normalizes a value, and a function that builds the `ir.Op`.
Adding a layer is adding a row here (and its shape rule in shapes.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cnndsl.lang import ir

REQUIRED: Any = object()  # marks a parameter without a default


@dataclass(frozen=True)
class Symbol:
    """A named constant of the language: `same`, `valid`."""

    name: str

    def __str__(self) -> str:
        return self.name


CONSTANTS: dict[str, Any] = {"same": Symbol("same"), "valid": Symbol("valid"), "nearest": Symbol("nearest"),
                             "bilinear": Symbol("bilinear"), "true": True, "false": False}


class ArgError(Exception):
    """A value of the wrong type or range for a parameter."""

    def __init__(self, message: str, help: str | None = None) -> None:
        super().__init__(message)
        self.message, self.help = message, help


def describe(value: Any) -> str:
    """A value as an error message names it: `the integer 3`, `a layer`, `` `same` ``."""
    if isinstance(value, bool):
        return f"`{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value:g}"
    if isinstance(value, tuple):
        return f"the tuple {show(value)}"
    if isinstance(value, Symbol):
        return f"`{value}`"
    return getattr(value, "what", "a value")


def show(value: Any) -> str:
    """A value as the language writes it (used in block-call labels)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(show(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(getattr(value, "text", value))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def non_negative_int(v: Any) -> int:
    """An integer >= 0."""
    if not _is_int(v) or v < 0:
        raise ArgError(f"expected a whole number >= 0, got {describe(v) if not _is_int(v) else v}")
    return v


def positive_int(v: Any) -> int:
    """An integer >= 1."""
    if not _is_int(v):
        raise ArgError(f"expected a positive integer, got {describe(v)}")
    if v < 1:
        raise ArgError(f"expected a positive integer, got {v}")
    return v


def pair(v: Any) -> ir.Pair:
    """`3` or `3x3` or `(3, 3)` -> (3, 3); both positive."""
    given = v
    if _is_int(v):
        v = (v, v)
    if not (isinstance(v, tuple) and len(v) == 2 and all(_is_int(x) for x in v)):
        raise ArgError(f"expected a size like `3` or `3x3`, got {describe(v)}")
    if min(v) < 1:
        raise ArgError(f"sizes must be positive, got {show(given)}")
    return v


def non_negative_pair(v: Any) -> ir.Pair:
    """`1` or `(1, 2)` -> (1, 1) or (1, 2); both >= 0 (a transposed convolution's `pad`, `output_padding`)."""
    pairs = (v, v) if _is_int(v) else v
    if not (isinstance(pairs, tuple) and len(pairs) == 2 and all(_is_int(x) and x >= 0 for x in pairs)):
        raise ArgError(f"expected a whole number >= 0 or a pair of them, got {describe(v)}", "e.g. `1` or `(1, 0)`")
    return pairs


def pair_or_none(v: Any) -> ir.Pair | None:
    """A `pair`, or None for "same as another parameter"."""
    return None if v is None else pair(v)


def padding(v: Any) -> ir.Padding:
    """`same` | `valid` | `1` | `(1, 2)` (height, width) | `((top, bottom), (left, right))`."""
    if isinstance(v, Symbol) and v.name in ("same", "valid"):
        return v.name
    if min(_ints_in(v), default=0) < 0:
        raise ArgError(f"padding cannot be negative, got {show(v)}")
    if _is_int(v):
        v = (v, v)
    if isinstance(v, tuple) and len(v) == 2 and all(_is_int(x) for x in v):
        v = ((v[0], v[0]), (v[1], v[1]))
    if (isinstance(v, tuple) and len(v) == 2
            and all(isinstance(p, tuple) and len(p) == 2 and all(_is_int(x) for x in p) for p in v)):
        return v
    raise ArgError(f"expected `same`, `valid`, a number or `((top, bottom), (left, right))`, got {describe(v)}",
                   help="e.g. `pad=same`, `pad=1`, `pad=(1, 2)` or `pad=((0, 1), (0, 1))`")


def _ints_in(v: Any) -> list[int]:
    if _is_int(v):
        return [v]
    return [x for item in v for x in _ints_in(item)] if isinstance(v, tuple) else []


def boolean(v: Any) -> bool:
    """`true` or `false`."""
    if not isinstance(v, bool):
        raise ArgError(f"expected `true` or `false`, got {describe(v)}")
    return v


def number(v: Any) -> float:
    """Any integer or float."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ArgError(f"expected a number, got {describe(v)}")
    return float(v)


def positive_number(v: Any) -> float:
    """A number > 0."""
    if number(v) <= 0:
        raise ArgError(f"expected a positive number, got {show(v)}")
    return float(v)


def probability(v: Any) -> float:
    """A number in [0, 1)."""
    if not 0 <= number(v) < 1:
        raise ArgError(f"expected a number from 0 up to (not including) 1, got {show(v)}")
    return float(v)


@dataclass(frozen=True)
class Param:
    """One parameter of a builtin: its name, converter and default."""

    name: str
    convert: Callable[[Any], Any]
    default: Any = REQUIRED


@dataclass(frozen=True)
class Builtin:
    """A layer of the language: its parameters and how to build its op from converted arguments."""

    name: str
    params: tuple[Param, ...]
    build: Callable[..., ir.Op]
    example: str = ""
    doc: str = ""

    @property
    def required(self) -> tuple[str, ...]:
        """Names of the parameters without a default."""
        return tuple(p.name for p in self.params if p.default is REQUIRED)


def interpolation(v: Any) -> str:
    """`nearest` | `bilinear`."""
    if isinstance(v, Symbol) and v.name in ("nearest", "bilinear"):
        return v.name
    raise ArgError(f"expected `nearest` or `bilinear`, got {describe(v)}", "e.g. `upsample(2, mode=bilinear)`")


def _pool(mode: str) -> Callable[..., ir.Op]:
    def build(window: ir.Pair, stride: ir.Pair | None, pad: ir.Padding, ceil: bool, count_pad: bool = True,
              dilation: ir.Pair = (1, 1)) -> ir.Op:  # `count_pad`: avgpool's; `dilation`: maxpool's
        return ir.Pool(window, stride or window, pad, ceil, mode, count_pad, dilation)
    return build


def _activation(fn: str) -> Builtin:
    return Builtin(fn, (), lambda: ir.Activation(fn), doc=f"the {fn} activation")


_POOL_PARAMS = (Param("window", pair), Param("stride", pair_or_none, None), Param("pad", padding, Symbol("valid")),
                Param("ceil", boolean, False))

_TABLE = [
    Builtin("conv", (Param("filters", positive_int), Param("kernel", pair), Param("stride", pair, 1),
                     Param("pad", padding, Symbol("valid")), Param("dilation", pair, 1),
                     Param("groups", positive_int, 1), Param("bias", boolean, True)),
            ir.Conv, "conv(32, 3x3)", "2-D convolution"),
    Builtin("maxpool", _POOL_PARAMS + (Param("dilation", pair, 1),), _pool("max"), "maxpool(2x2)",
            "max pooling; stride defaults to the window; `dilation` spaces the window's elements (PyTorch's)"),
    Builtin("avgpool", _POOL_PARAMS + (Param("count_pad", boolean, True),), _pool("avg"), "avgpool(2x2)",
            "average pooling; `count_pad=false` leaves padding out of the average"),
    Builtin("global_avgpool", (), lambda: ir.GlobalPool("avg"), doc="average over all positions"),
    Builtin("global_maxpool", (), lambda: ir.GlobalPool("max"), doc="maximum over all positions"),
    Builtin("adaptive_avgpool", (Param("size", pair),), ir.AdaptivePool, "adaptive_avgpool(7x7)",
            "average over adaptive bins to a fixed HxW (PyTorch's AdaptiveAvgPool2d)"),
    Builtin("fc", (Param("units", positive_int), Param("bias", boolean, True)), ir.Dense, "fc(128)",
            "fully connected; flattens a 3-D input first"),
    Builtin("flatten", (), ir.Flatten, doc="(H, W, C) -> (H*W*C,)"),
    Builtin("conv_transpose", (Param("filters", positive_int), Param("kernel", pair), Param("stride", pair, 1),
                               Param("pad", non_negative_pair, 0), Param("output_padding", non_negative_pair, 0),
                               Param("dilation", pair, 1), Param("groups", positive_int, 1),
                               Param("bias", boolean, True)),
            ir.ConvTranspose, "conv_transpose(64, 2x2, stride=2)",
            "transposed 2-D convolution, PyTorch's ConvTranspose2d (its output size rule and padding)"),
    Builtin("slice", (Param("start", non_negative_int), Param("stop", positive_int)), ir.ChannelSlice, "slice(0, 16)",
            "channels start..stop-1 (PyTorch's x[:, start:stop]); with concat branches, a channel split"),
    Builtin("channel_shuffle", (Param("groups", positive_int),), ir.ChannelShuffle, "channel_shuffle(2)",
            "ShuffleNet's channel shuffle: channels as (groups, C/groups), transposed (PyTorch's ChannelShuffle)"),
    Builtin("pixel_shuffle", (Param("factor", positive_int),), ir.PixelShuffle, "pixel_shuffle(2)",
            "(H, W, C*r*r) -> (H*r, W*r, C), PyTorch's PixelShuffle"),
    Builtin("upsample", (Param("scale", positive_int), Param("mode", interpolation, Symbol("nearest"))), ir.Upsample,
            "upsample(2, mode=bilinear)", "(H, W, C) -> (H*s, W*s, C), nearest or bilinear as PyTorch's interpolate "
            "(align_corners=False)"),
    Builtin("resize", (Param("size", pair), Param("mode", interpolation, Symbol("nearest"))), ir.Resize,
            "resize(@input, mode=bilinear)", "(H, W, C) -> (h, w, C) for `size` hxw or the size of a named map "
            "`@name`, nearest or bilinear as PyTorch's interpolate(size=...) (align_corners=False)"),
    Builtin("leaky_relu", (Param("slope", number, 0.01),), lambda slope: ir.Activation("leaky_relu", slope),
            doc="max(x, slope * x)"),
    Builtin("bn", (Param("eps", positive_number, 1e-5), Param("momentum", probability, 0.9)), ir.BatchNorm,
            doc="batch normalization over channels"),
    Builtin("lrn", (Param("size", positive_int, 5), Param("alpha", number, 1e-4), Param("beta", number, 0.75),
                    Param("k", number, 2.0)), ir.LocalResponseNorm, doc="local response normalization"),
    Builtin("dropout", (Param("rate", probability, 0.5),), ir.Dropout, doc="dropout in training"),
    Builtin("drop_path", (Param("rate", probability),), ir.DropPath, "drop_path(0.1)",
            "stochastic depth: in training, drops the whole input of an example with probability `rate`"),
    Builtin("ln", (Param("eps", positive_number, 1e-5),), ir.LayerNorm,
            doc="layer normalization over channels at each position"),
    Builtin("linear", (Param("units", positive_int), Param("bias", boolean, True)), ir.Linear, "linear(384)",
            "fully connected over the channels at every position (no flattening)"),
    Builtin("layer_scale", (Param("init", number, 1e-6),), ir.LayerScale,
            doc="a learnable per-channel scale, starting at `init`"),
    *(_activation(fn) for fn in ("relu", "relu6", "gelu", "silu", "tanh", "sigmoid", "softmax", "hardswish",
                                 "hardsigmoid")),
]

#: Every builtin layer by its lower-case name.
BUILTINS: dict[str, Builtin] = {b.name: b for b in _TABLE}

#: Parameter names other frameworks use (Keras, PyTorch, Flax), for "did you mean" hints.
FOREIGN_PARAMS = {
    "padding": "pad", "kernel_size": "kernel", "strides": "stride", "use_bias": "bias",
    "dilation_rate": "dilation", "kernel_dilation": "dilation", "out_channels": "filters", "features": "units",
    "out_features": "units", "feature_group_count": "groups", "epsilon": "eps", "p": "rate",
    "pool_size": "window", "ceil_mode": "ceil", "count_include_pad": "count_pad", "negative_slope": "slope",
}

#: Layer combinators, handled by the expander: they take layers, not numbers.
COMBINATORS = ("concat", "add", "mul", "residual", "identity")
