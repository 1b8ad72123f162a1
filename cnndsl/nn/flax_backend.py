"""IR graph -> Flax NNX module: `Network(graph, shapes, rngs=...)`.

The module holds one NNX layer per IR node that has parameters or state (named after the node:
`conv3`, `bn7`) and evaluates the graph in node order. Padding is made explicit from the same
`window_output` rule the checker uses, so the module's shapes are the checked shapes by construction
(and the tests confirm it with `jax.eval_shape`). Compute runs in `dtype` (e.g. bfloat16) with
float32 parameters; batch norm always normalizes in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cnndsl.lang import ir
from cnndsl.lang.shapes import window_output
from cnndsl.nn import convolution
from cnndsl.nn.repeats import MIN_COPIES, identical_runs

#: Each activation as a Python expression of `x` (and `slope`): the backend evaluates these, and the
#: Python emitter writes them into ejected source, so both compute exactly the same thing.
ACTIVATION_CODE = {
    "relu": "jax.nn.relu(x)",
    "relu6": "jax.nn.relu6(x)",
    "gelu": "jax.nn.gelu(x, approximate=False)",  # the exact erf form, as PyTorch's default
    "silu": "jax.nn.silu(x)",
    "tanh": "jnp.tanh(x)",
    "sigmoid": "jax.nn.sigmoid(x)",
    "softmax": "jax.nn.softmax(x, axis=-1)",
    "leaky_relu": "jax.nn.leaky_relu(x, slope)",
    "hardswish": "jax.nn.hard_swish(x)",  # x * relu6(x + 3) / 6, PyTorch's Hardswish (MobileNetV3)
    "hardsigmoid": "jax.nn.hard_sigmoid(x)",  # relu6(x + 3) / 6, PyTorch's Hardsigmoid
}
_ACTIVATIONS = {fn: eval(f"lambda x, slope: {code}", {"jax": jax, "jnp": jnp})  # noqa: S307 - our own constants
                for fn, code in ACTIVATION_CODE.items()}


@dataclass(frozen=True)
class Step:
    """One node as the forward pass runs it: static, hashable configuration only."""

    id: int
    name: str
    op: ir.Op
    inputs: tuple[int, ...]
    in_shape: ir.Shape
    # Explicit padding per spatial axis, ((top, bottom), (left, right)), for conv and pooling; for
    # ceil-mode pooling `extra` is the additional after-padding that makes the last window fit.
    pads: tuple[tuple[int, int], ...] = ()
    extra: tuple[int, int] = (0, 0)


def _explicit_padding(op: ir.Conv | ir.Pool, shape: ir.Shape) -> tuple[tuple[tuple[int, int], ...], tuple[int, int]]:
    kernel = op.kernel if isinstance(op, ir.Conv) else op.window
    dilation = op.dilation
    ceil = isinstance(op, ir.Pool) and op.ceil
    pads, extra = [], []
    for axis in (0, 1):
        size = shape[axis]
        out, (before, after) = window_output(size, kernel[axis], op.stride[axis], dilation[axis], op.pad, axis, ceil)
        reach = (kernel[axis] - 1) * dilation[axis] + 1
        pads.append((before, after))
        extra.append(max(0, (out - 1) * op.stride[axis] + reach - (size + before + after)))
    return tuple(pads), (extra[0], extra[1])


def plan(graph: ir.Graph, shapes: tuple[ir.Shape, ...]) -> tuple[Step, ...]:
    """The steps of the forward pass, with every padding made explicit; `shapes[i]` is node i's output."""
    steps = []
    for node in graph.nodes[1:]:
        in_shape = shapes[node.inputs[0]]
        pads, extra = ((), (0, 0))
        if isinstance(node.op, (ir.Conv, ir.Pool)):
            pads, extra = _explicit_padding(node.op, in_shape)
        steps.append(Step(node.id, node.name, node.op, node.inputs, in_shape, pads, extra))
    return tuple(steps)


class Network(nnx.Module):
    """A checked cnndsl network as a Flax NNX module: `logits_BxK = Network(...)(x_BxHxWxC)`.

    With `scan`, each run of identical repeated blocks (`cnndsl.nn.repeats`) of `scan_from` copies or more is
    applied by one `jax.lax.scan` over the copies' stacked parameters, so a deep network traces and compiles each
    distinct block once (see `cnndsl.nn.compiler.compile` for when that pays). Parameters stay one variable per
    layer, named as the unrolled network names them (checkpoints, exports and ejected source see no difference);
    only the forward pass changes."""

    def __init__(self, graph: ir.Graph, shapes: tuple[ir.Shape, ...], *, rngs: nnx.Rngs,
                 dtype: Any = None, param_dtype: Any = jnp.float32, scan: bool = False,
                 scan_from: int = MIN_COPIES) -> None:
        self.steps = plan(graph, shapes)
        self.output_id = graph.output
        self.head_ids = {head.name: head.node for head in graph.heads}
        self.training_only = graph.training_only_nodes  # skipped unless `heads` asks for every output
        self.dtype = dtype
        # Runs by the index of their first step (node n is step n - 1).
        self.runs = {run.start - 1: run for run in identical_runs(graph, shapes, scan_from)} if scan else {}
        for step in self.steps:
            layer = _make_layer(step, rngs, dtype, param_dtype)
            if layer is not None:
                setattr(self, step.name, layer)

    def __call__(self, x_BxHxWxC: jax.Array, *, all_outputs: bool = False, rngs: nnx.Rngs | None = None,
                 heads: bool | str = False) -> Any:
        """The network's output for a batch; with `heads`, a dict of the main output (`main`) and every head's,
        training-only heads included (`heads="inference"`: left out, and their layers not run; without
        `heads` they are not run either); with `all_outputs`, a dict of every node's output by name (computed
        unrolled). `rngs` (a `dropout` or default stream) replaces the dropout layers' own random state for
        this call, which lets a functional training step derive each step's randomness from the step number."""
        x = x_BxHxWxC.astype(self.dtype) if self.dtype is not None else x_BxHxWxC
        values: dict[int, jax.Array] = {0: x}
        named: dict[str, jax.Array] = {}
        skipped = frozenset() if heads is True or all_outputs else self.training_only
        index = 0
        while index < len(self.steps):
            if self.steps[index].id in skipped:
                index += 1
                continue
            run = None if all_outputs else self.runs.get(index)
            if run is not None:
                last = self.steps[index + run.length * run.count - 1]
                values[last.id] = self._scan(index, run, values, rngs)
                index += run.length * run.count
                continue
            step = self.steps[index]
            values[step.id] = self._run(step, [values[i] for i in step.inputs], rngs, self._layer(step))
            if all_outputs:
                named[step.name] = values[step.id]
            index += 1
        if heads:
            return {"main": values[self.output_id],
                    **{name: values[i] for name, i in self.head_ids.items() if i in values}}
        return named if all_outputs else values[self.output_id]

    def _layer(self, step: Step) -> nnx.Module | None:
        return getattr(self, step.name, None)

    def _scan(self, index: int, run: Any, values: dict[int, jax.Array], rngs: nnx.Rngs | None) -> jax.Array:
        """Apply `run.count` identical blocks with one `jax.lax.scan`: the copies' layers are split into
        one graph definition and their stacked states; each iteration merges one copy's state, applies the
        first copy's steps with it, and returns the state it leaves (batch-norm statistics, dropout
        counters), which goes back into that copy's layers afterwards."""
        template = self.steps[index : index + run.length]
        copies = [_Copy([layer for step in self.steps[index + k * run.length : index + (k + 1) * run.length]
                         if (layer := self._layer(step)) is not None]) for k in range(run.count)]
        graphdef, first = nnx.split(copies[0])
        states = [first] + [nnx.split(copy)[1] for copy in copies[1:]]
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
        key = rngs.dropout() if rngs is not None and any(isinstance(s.op, ir.Dropout) for s in template) else None
        entry = next(i for s in template for i in s.inputs if i < template[0].id)

        def body(carry: jax.Array, xs: tuple[Any, jax.Array]) -> tuple[jax.Array, Any]:
            state, k = xs
            copy = nnx.merge(graphdef, state)
            local = {entry: carry}
            layers = iter(copy.layers)
            copy_rngs = nnx.Rngs(dropout=jax.random.fold_in(key, k)) if key is not None else None
            with convolution.traced_in_loop():  # gradients XLA:CPU computes with Eigen inside a loop too
                for step in template:
                    layer = next(layers) if layer_constructor(step) is not None else None
                    local[step.id] = self._run(step, [local[i] for i in step.inputs], copy_rngs, layer)
            return local[template[-1].id], nnx.state(copy, nnx.Not(nnx.Param))

        out, changed = jax.lax.scan(body, values[entry], (stacked, jnp.arange(run.count)))
        if _mutates(copies[0], rngs):  # only then: in evaluation the layers may belong to an outer trace
            for k, copy in enumerate(copies):
                nnx.update(copy, jax.tree.map(lambda leaf: leaf[k], changed))
        return out

    def _run(self, step: Step, inputs: list[jax.Array], rngs: nnx.Rngs | None, layer: nnx.Module | None) -> jax.Array:
        op, x = step.op, inputs[0]
        if isinstance(op, (ir.Dropout, ir.DropPath)):
            return layer(x, rngs=rngs)
        if isinstance(op, (ir.Conv, ir.ConvTranspose, ir.BatchNorm, ir.LayerNorm, ir.Linear, ir.LayerScale)):
            return layer(x)
        if isinstance(op, ir.Dense):
            return layer(x.reshape(x.shape[0], -1))
        if isinstance(op, ir.Pool):
            return pool(x, op.mode, op.window, op.stride, step.pads, step.extra, op.count_pad, op.dilation)
        if isinstance(op, ir.GlobalPool):
            return jnp.mean(x, axis=(1, 2)) if op.mode == "avg" else jnp.max(x, axis=(1, 2))
        if isinstance(op, ir.AdaptivePool):
            return adaptive_avgpool(x, op.size)
        if isinstance(op, ir.Flatten):
            return x.reshape(x.shape[0], -1)
        if isinstance(op, ir.ChannelSlice):
            return x[..., op.start:op.stop]
        if isinstance(op, ir.ChannelShuffle):
            return channel_shuffle(x, op.groups)
        if isinstance(op, ir.PixelShuffle):
            return pixel_shuffle(x, op.factor)
        if isinstance(op, ir.Upsample):
            return upsample(x, op.scale, op.mode)
        if isinstance(op, ir.Resize):
            return resize(x, op.size, op.mode)
        if isinstance(op, ir.Activation):
            return _ACTIVATIONS[op.fn](x, op.slope)
        if isinstance(op, ir.LocalResponseNorm):
            return lrn(x, op.size, op.alpha, op.beta, op.k)
        if isinstance(op, ir.Concat):
            return jnp.concatenate(inputs, axis=-1)
        if isinstance(op, ir.Mul):
            return mul(*inputs)
        if isinstance(op, ir.Add):
            total = inputs[0]
            for other in inputs[1:]:
                total = total + other
            return total
        raise NotImplementedError(f"no Flax lowering for {type(op).__name__}")


def _mutates(copy: _Copy, rngs: nnx.Rngs | None) -> bool:
    """Whether applying `copy` changes its state: batch norm in training, dropout drawing on its own keys."""
    return any((isinstance(layer, nnx.BatchNorm) and not layer.use_running_average)
               or (isinstance(layer, nnx.Dropout) and not layer.deterministic and rngs is None)
               for layer in copy.layers)


class _Copy(nnx.Module):
    """The layers of one copy of a repeated block, in step order: what one scan iteration applies."""

    def __init__(self, layers: list[nnx.Module]) -> None:
        self.layers = nnx.List(layers)


#: How each NNX layer class takes dtypes: "compute" layers run in the network's `dtype`, batch and layer
#: norm always normalize in float32, dropout has no dtype. All but dropout get `param_dtype`.
DTYPE_POLICY = {"Conv": "compute", "ConvTranspose": "compute", "Linear": "compute", "BatchNorm": "float32", "LayerNorm": "float32",
                "LayerScale": "compute", "Dropout": None}


def layer_constructor(step: Step) -> tuple[str, tuple[Any, ...], dict[str, Any]] | None:
    """The NNX layer a step needs, as (class name, positional, keyword arguments), dtypes and rngs left out;
    None for steps without parameters or state. The module and the Python emitter both build from this, so
    ejected source constructs exactly the in-memory layers. Keyword arguments equal to NNX's defaults are
    left out, as a person would write them."""
    op = step.op
    if isinstance(op, ir.Conv):
        options: dict[str, Any] = {"padding": list(step.pads)}
        if op.dilation != (1, 1):
            options["kernel_dilation"] = op.dilation
        if op.groups != 1:
            options["feature_group_count"] = op.groups
        if not op.bias:
            options["use_bias"] = False
        return "Conv", (step.in_shape[-1], op.filters, op.kernel, op.stride), options
    if isinstance(op, ir.ConvTranspose):
        options = {k: v for k, v, default in (("padding", op.pad, (0, 0)), ("output_padding", op.output_padding, (0, 0)),
                                              ("kernel_dilation", op.dilation, (1, 1))) if v != default}
        if op.groups != 1:
            options["feature_group_count"] = op.groups
        if not op.bias:
            options["use_bias"] = False
        return "ConvTranspose", (step.in_shape[-1], op.filters, op.kernel, op.stride), options
    if isinstance(op, ir.Dense):
        return "Linear", (math.prod(step.in_shape), op.units), ({} if op.bias else {"use_bias": False})
    if isinstance(op, ir.BatchNorm):
        return "BatchNorm", (step.in_shape[-1],), {"momentum": op.momentum, "epsilon": op.eps}
    if isinstance(op, ir.Linear):
        return "Linear", (step.in_shape[-1], op.units), ({} if op.bias else {"use_bias": False})
    if isinstance(op, ir.LayerNorm):  # two-pass variance, as PyTorch computes it
        return "LayerNorm", (step.in_shape[-1],), {"epsilon": op.eps, "use_fast_variance": False}
    if isinstance(op, ir.LayerScale):
        return "LayerScale", (step.in_shape[-1], op.init), {}
    if isinstance(op, ir.Dropout):
        return "Dropout", (op.rate,), {}
    if isinstance(op, ir.DropPath):  # one draw per example: every other axis shares it
        return "Dropout", (op.rate,), {"broadcast_dims": tuple(range(1, len(step.in_shape) + 1))}
    return None


def _make_layer(step: Step, rngs: nnx.Rngs, dtype: Any, param_dtype: Any) -> nnx.Module | None:
    spec = layer_constructor(step)
    if spec is None:
        return None
    cls, args, options = spec
    policy = DTYPE_POLICY[cls]
    if policy is not None:
        options = {**options, "dtype": dtype if policy == "compute" else jnp.float32, "param_dtype": param_dtype}
    if cls == "Conv":  # lowered as measured fastest for its shape (cnndsl.nn.convolution; XLA's by default)
        options["conv_general_dilated"] = convolution.conv_general_dilated
    return LAYER_CLASSES[cls](*args, **options, rngs=rngs)


class BatchNorm(nnx.BatchNorm):
    """`nnx.BatchNorm` whose running variance averages the *unbiased* batch variance (n / (n - 1) times
    the biased one it normalizes with, n values per channel), as PyTorch and Caffe do, so running
    statistics agree with theirs; everything else is nnx.BatchNorm's."""

    def __call__(self, x: jax.Array, use_running_average: bool | None = None, **kwargs: Any) -> jax.Array:
        training = not (self.use_running_average if use_running_average is None else use_running_average)
        before = self.var[...]
        y = super().__call__(x, use_running_average, **kwargs)
        count = x.size // x.shape[-1]
        if training and count > 1:
            # nnx stored m * before + (1 - m) * v for the biased v; (after - m * before) / (n - 1) is the
            # (1 - m) * (v * n / (n - 1) - v) that turns it into the unbiased average.
            after = self.var[...]
            self.var[...] = after + (after - self.momentum * before) / (count - 1)
        return y


class LayerScale(nnx.Module):
    """A learnable per-channel scale `x * scale` over the last axis, every factor starting at `init`."""

    def __init__(self, channels: int, init: float, *, dtype: Any = None, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs | None = None) -> None:
        self.scale = nnx.Param(jnp.full((channels,), init, param_dtype))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.scale[...].astype(self.dtype or x.dtype)


class ConvTranspose(nnx.Module):
    """PyTorch's ConvTranspose2d on (B, H, W, C), kernel (kh, kw, in, out/groups), written as the convolution it
    equals: the input dilated by the stride and padded by dilation * (kernel - 1) - pad on each side (plus
    output_padding after), convolved with the kernel flipped and regrouped to HWIO. PyTorch's default
    initialization: uniform within 1 / sqrt(out/groups * kh * kw), for the kernel and the bias."""

    def __init__(self, in_features: int, out_features: int, kernel_size: tuple[int, int], strides: tuple[int, int],
                 *, padding: tuple[int, int] = (0, 0), output_padding: tuple[int, int] = (0, 0),
                 kernel_dilation: tuple[int, int] = (1, 1), feature_group_count: int = 1, use_bias: bool = True,
                 dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs) -> None:
        per_group = out_features // feature_group_count
        bound = 1.0 / (per_group * kernel_size[0] * kernel_size[1]) ** 0.5
        shape = (*kernel_size, in_features, per_group)
        self.kernel = nnx.Param(jax.random.uniform(rngs.params(), shape, param_dtype, -bound, bound))
        self.bias = nnx.Param(jax.random.uniform(rngs.params(), (out_features,), param_dtype, -bound, bound)) \
            if use_bias else None
        self.strides, self.padding, self.output_padding = tuple(strides), tuple(padding), tuple(output_padding)
        self.kernel_dilation, self.groups, self.dtype = tuple(kernel_dilation), feature_group_count, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw, cin, per_group = self.kernel.shape
        g, dtype = self.groups, self.dtype or x.dtype
        kernel = self.kernel[...].reshape(kh, kw, g, cin // g, per_group).transpose(0, 1, 3, 2, 4)
        kernel = kernel.reshape(kh, kw, cin // g, g * per_group)[::-1, ::-1]
        pads = [(d * (k - 1) - p, d * (k - 1) - p + extra) for k, d, p, extra in
                zip((kh, kw), self.kernel_dilation, self.padding, self.output_padding)]
        y = jax.lax.conv_general_dilated(x.astype(dtype), kernel.astype(dtype), (1, 1), pads,
                                         lhs_dilation=self.strides, rhs_dilation=self.kernel_dilation,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=g)
        return y if self.bias is None else y + self.bias[...].astype(dtype)


#: The class each `layer_constructor` name builds: NNX's own, except batch norm (unbiased running variance),
#: the layer scale NNX does not have and PyTorch's transposed convolution (grouped, with output_padding).
LAYER_CLASSES: dict[str, Any] = {"Conv": nnx.Conv, "Linear": nnx.Linear, "BatchNorm": BatchNorm,
                                 "LayerNorm": nnx.LayerNorm, "LayerScale": LayerScale, "Dropout": nnx.Dropout,
                                 "ConvTranspose": ConvTranspose}


# `pool` and `lrn` take plain values: `emit/python_source.py` copies their source into ejected files.
def pool(x: jax.Array, mode: str, window: tuple[int, int], stride: tuple[int, int],
         pads: tuple[tuple[int, int], ...], extra: tuple[int, int], count_pad: bool = True,
         dilation: tuple[int, int] = (1, 1)) -> jax.Array:
    """Max or average pooling with explicit padding; `extra` after-padding realizes ceil mode; `dilation`
    spaces a max pool's window elements (PyTorch's MaxPool2d).

    Max pools pad with -inf. Average pools divide by the number of window elements inside the input
    and, with `count_pad`, the explicit padding — never the ceil-mode extra (PyTorch's rule).
    """
    window = (1, *window, 1)
    strides = (1, *stride, 1)
    full = ((0, 0), (pads[0][0], pads[0][1] + extra[0]), (pads[1][0], pads[1][1] + extra[1]), (0, 0))
    if mode == "max" and dilation != (1, 1):
        # the maximum of the window's k*k strided views: JAX has no gradient for a dilated reduce_window max
        padded = jnp.pad(x, full, constant_values=-jnp.inf)
        rows = (padded.shape[1] - (window[1] - 1) * dilation[0] - 1) // stride[0] + 1
        cols = (padded.shape[2] - (window[2] - 1) * dilation[1] - 1) // stride[1] + 1
        views = [padded[:, a * dilation[0]:a * dilation[0] + (rows - 1) * stride[0] + 1:stride[0],
                        b * dilation[1]:b * dilation[1] + (cols - 1) * stride[1] + 1:stride[1]]
                 for a in range(window[1]) for b in range(window[2])]
        return jnp.max(jnp.stack(views), axis=0)
    if mode == "max":
        return max_pool(x, window, strides, full)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, full)
    ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
    if count_pad:  # padding counts in the divisor, the ceil-mode extra does not
        ones = jnp.pad(ones, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=1)
        counted = ((0, 0), (0, extra[0]), (0, extra[1]), (0, 0))
    else:
        counted = full
    divisor = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, counted)
    return total / divisor


def max_pool(x: jax.Array, window: tuple[int, ...], strides: tuple[int, ...],
             padding: tuple[tuple[int, int], ...]) -> jax.Array:
    """XLA's max pool (reduce_window) with its gradient computed from the window's k*k strided views.

    JAX's gradient of reduce_window max is XLA's select_and_scatter, which XLA:CPU runs 5-20x slower than
    this on VGG-sized maps (benchmarks/convolutions.py). The same gradient: each window's output gradient
    goes to its first maximal element in row-major order, the element select_and_scatter picks
    (tests/nn/test_pooling.py compares them, on maps full of ties too).

    The backward pass finds each window's maximal element among the views of `x` alone, never by comparing
    them with the forward's output: XLA may fuse the elementwise layers before the pool (batch norm, ReLU)
    into the forward and the backward separately and compute `x` there a few ulps apart, and an element
    compared with an output computed elsewhere can then match nowhere (that gradient lost) or twice."""

    @jax.custom_vjp
    def run(x: jax.Array) -> jax.Array:
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, padding)

    def forward(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return run(x), x

    def backward(x: jax.Array, grad: jax.Array) -> tuple[jax.Array]:
        padded = jnp.pad(x, padding, constant_values=-jnp.inf)
        (_, kh, kw, _), (_, sh, sw, _), (_, rows, cols, _) = window, strides, grad.shape
        offsets = [(i, j) for i in range(kh) for j in range(kw)]

        def view(i: int, j: int) -> jax.Array:
            return padded[:, i:i + (rows - 1) * sh + 1:sh, j:j + (cols - 1) * sw + 1:sw]

        best, chosen = view(*offsets[0]), jnp.zeros(grad.shape, jnp.int32)
        for k, (i, j) in enumerate(offsets[1:], start=1):  # strictly greater: the first maximum keeps its place
            candidate = view(i, j)
            better = candidate > best
            best, chosen = jnp.where(better, candidate, best), jnp.where(better, k, chosen)
        total = jnp.zeros(padded.shape, grad.dtype)
        for k, (i, j) in enumerate(offsets):  # each window's gradient to its chosen element, in place
            spread = ((0, 0, 0), (i, padded.shape[1] - i - (rows - 1) * sh - 1, sh - 1),
                      (j, padded.shape[2] - j - (cols - 1) * sw - 1, sw - 1), (0, 0, 0))
            total = total + jax.lax.pad(jnp.where(chosen == k, grad, 0), jnp.zeros((), grad.dtype), spread)
        (top, _), (left, _) = padding[1], padding[2]
        return (total[:, top:top + x.shape[1], left:left + x.shape[2]].astype(x.dtype),)

    run.defvjp(forward, backward)
    return run(x)


def mul(*xs: jax.Array) -> jax.Array:
    """The elementwise product of a `mul` merge; a (B, C) vector scales every position of a (B, H, W, C) map."""
    rank = max(x.ndim for x in xs)
    product = None
    for x in xs:
        x = x.reshape(x.shape[0], *([1] * (rank - x.ndim)), x.shape[-1]) if x.ndim < rank else x
        product = x if product is None else product * x
    return product


def adaptive_bins(size: int, out: int) -> list[list[float]]:
    """(out, size) weights averaging PyTorch's adaptive bins: row i is 1/n over input positions
    floor(i * size / out) .. ceil((i + 1) * size / out) - 1."""
    rows = []
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size)])
    return rows


def adaptive_avgpool(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """PyTorch's AdaptiveAvgPool2d on (B, H, W, C): a rectangle's mean is the product of a row average and
    a column average, so two small averaging matrices do it in one einsum."""
    rows = jnp.asarray(adaptive_bins(x.shape[1], size[0]), x.dtype)
    cols = jnp.asarray(adaptive_bins(x.shape[2], size[1]), x.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", rows, x, cols)


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
    """ShuffleNet's channel shuffle on (B, H, W, C): channels as (groups, C/groups), transposed, flattened."""
    b, h, w, c = x.shape
    return x.reshape(b, h, w, groups, c // groups).swapaxes(3, 4).reshape(b, h, w, c)


def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
    """PyTorch's PixelShuffle(r) on (B, H, W, C*r*r): channel c*r*r + i*r + j moves to (h*r + i, w*r + j, c)."""
    b, h, w, c = x.shape
    out = c // (r * r)
    x = x.reshape(b, h, w, out, r, r).transpose(0, 1, 4, 2, 5, 3)  # (B, H, i, W, j, C)
    return x.reshape(b, h * r, w * r, out)


def upsample(x: jax.Array, scale: int, mode: str) -> jax.Array:
    """PyTorch's interpolate(scale_factor=scale) on (B, H, W, C): `nearest` repeats each pixel; `bilinear`
    (align_corners=False) is jax.image.resize's triangle kernel at half-pixel centres, which for an integer
    upscaling weighs the two neighbours as PyTorch does and clamps at the edges as PyTorch does."""
    if mode == "nearest":
        return jnp.repeat(jnp.repeat(x, scale, axis=1), scale, axis=2)
    b, h, w, c = x.shape
    return jax.image.resize(x, (b, h * scale, w * scale, c), "bilinear")


def resize(x: jax.Array, size: tuple[int, int], mode: str) -> jax.Array:
    """PyTorch's interpolate(size=size, align_corners=False) on (B, H, W, C), each axis in turn with scale =
    in / out computed in float32 as PyTorch's CPU kernels do: `nearest` takes source pixel
    min(floor(i * scale), in - 1); `bilinear` takes source coordinate s = max((i + 0.5) * scale - 0.5, 0)
    and weighs pixels floor(s) and floor(s) + 1 (the last pixel at the far edge) by 1 - (s - floor(s)) and
    s - floor(s). The indices and weights are constants: gathers and a weighted sum, differentiable."""
    import numpy as np  # here: the constants are computed when the network is traced

    for axis, n_out in ((1, size[0]), (2, size[1])):
        n_in = x.shape[axis]
        if n_in == n_out:
            continue
        scale = np.float32(n_in) / np.float32(n_out)
        i = np.arange(n_out, dtype=np.float32)
        if mode == "nearest":
            x = jnp.take(x, np.minimum(np.floor(i * scale).astype(np.int64), n_in - 1), axis=axis)
            continue
        source = np.maximum((i + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0))
        low = np.minimum(source.astype(np.int64), n_in - 1)
        high = np.minimum(low + 1, n_in - 1)
        weight = (source - low).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
        x = jnp.take(x, low, axis=axis) * (1 - weight) + jnp.take(x, high, axis=axis) * weight
    return x


def lrn(x: jax.Array, size: int, alpha: float, beta: float, k: float) -> jax.Array:
    """Local response normalization across channels, PyTorch's and Caffe's form:
    b_c = a_c / (k + alpha / size * sum of a_c'^2 over the `size` channels centred on c) ** beta."""
    squares = jnp.square(x)
    before, after = size // 2, (size - 1) // 2
    window_sum = jax.lax.reduce_window(squares, 0.0, jax.lax.add, (1, 1, 1, size),
                                       (1, 1, 1, 1), ((0, 0), (0, 0), (0, 0), (before, after)))
    return x / jnp.power(k + alpha / size * window_sum, beta)


def flatten_state(state: Any) -> tuple[list[str], Any, dict[str, jax.Array]]:
    """A module state as (names, treedef, {"conv1/kernel": array, ...}): plain arrays by readable name,
    for optimizers, checkpoints and exported parameter files. `unflatten_state` inverts it.

    Names are `layer/parameter`, the scheme `cnndsl.lang.costs.parameter_shapes` documents (NNX's own
    `.value` attribute of each variable is left out of the path)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    names = ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path
                      if not isinstance(k, jax.tree_util.GetAttrKey)) for path, _ in leaves]
    return names, treedef, {name: leaf for name, (_, leaf) in zip(names, leaves)}


def unflatten_state(names: list[str], treedef: Any, flat: dict[str, jax.Array]) -> Any:
    """The state `flatten_state` flattened, rebuilt from (possibly new) arrays by name."""
    return jax.tree.unflatten(treedef, [flat[name] for name in names])
