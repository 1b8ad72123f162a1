"""Ejectable Flax source (`cnndsl compile --emit python`): a standalone module file, no cnndsl import.

The emitted class constructs the same NNX layers, under the same attribute names and in the same
order, as `flax_backend.Network`, so `nnx.update(ejected, nnx.state(model))` moves parameters across and
the same seed gives the same parameters. The pooling and LRN helpers and the batch-norm class (unbiased
running variance) are copied from the backend.
"""

from __future__ import annotations

import inspect
import re

from cnndsl.lang import ir
from cnndsl.lang.report import Report
from cnndsl.lang.shapes import fmt
from cnndsl.nn.flax_backend import (
    ACTIVATION_CODE,
    DTYPE_POLICY,
    BatchNorm,
    ConvTranspose,
    LayerScale,
    Step,
    adaptive_avgpool,
    adaptive_bins,
    channel_shuffle,
    layer_constructor,
    lrn,
    max_pool,
    mul,
    pixel_shuffle,
    plan,
    pool,
    resize,
    upsample,
)


def class_name(network: str) -> str:
    """A Python class name for a network name: `resnet-18` -> `Resnet18`."""
    words = re.findall(r"[A-Za-z0-9]+", network) or ["Network"]
    name = "".join(w[:1].upper() + w[1:] for w in words)
    return name if name[0].isalpha() else "Net" + name


#: Layer classes the ejected file defines itself (copied from the backend) rather than taking from nnx.
LOCAL_CLASSES = {"BatchNorm": BatchNorm, "LayerScale": LayerScale, "ConvTranspose": ConvTranspose}


def _layer(step: Step) -> str | None:
    spec = layer_constructor(step)
    if spec is None:
        return None
    cls, args, options = spec
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in options.items()]
    policy = DTYPE_POLICY[cls]
    if policy is not None:
        parts += ["dtype=dtype" if policy == "compute" else "dtype=jnp.float32", "param_dtype=param_dtype"]
    qualified = cls if cls in LOCAL_CLASSES else f"nnx.{cls}"
    return f"{qualified}({', '.join(parts + ['rngs=rngs'])})"


def _call(step: Step, names: dict[int, str]) -> str:
    op, x = step.op, names[step.inputs[0]]
    if isinstance(op, (ir.Conv, ir.ConvTranspose, ir.BatchNorm, ir.Dropout, ir.DropPath, ir.LayerNorm, ir.Linear,
                       ir.LayerScale)):
        return f"self.{step.name}({x})"
    if isinstance(op, ir.Dense):
        return f"self.{step.name}({x}.reshape({x}.shape[0], -1))"
    if isinstance(op, ir.Flatten):
        return f"{x}.reshape({x}.shape[0], -1)"
    if isinstance(op, ir.Pool):
        dilated = f", {op.dilation}" if op.dilation != (1, 1) else ""
        return f"pool({x}, {op.mode!r}, {op.window}, {op.stride}, {step.pads}, {step.extra}, {op.count_pad}{dilated})"
    if isinstance(op, ir.GlobalPool):
        return f"jnp.{'mean' if op.mode == 'avg' else 'max'}({x}, axis=(1, 2))"
    if isinstance(op, ir.AdaptivePool):
        return f"adaptive_avgpool({x}, {op.size})"
    if isinstance(op, ir.Activation):
        return re.sub(r"\bx\b", x, ACTIVATION_CODE[op.fn]).replace("slope", repr(op.slope))
    if isinstance(op, ir.LocalResponseNorm):
        return f"lrn({x}, {op.size}, {op.alpha}, {op.beta}, {op.k})"
    if isinstance(op, ir.ChannelSlice):
        return f"{x}[..., {op.start}:{op.stop}]"
    if isinstance(op, ir.ChannelShuffle):
        return f"channel_shuffle({x}, {op.groups})"
    if isinstance(op, ir.PixelShuffle):
        return f"pixel_shuffle({x}, {op.factor})"
    if isinstance(op, ir.Upsample):
        return f"upsample({x}, {op.scale}, {op.mode!r})"
    if isinstance(op, ir.Resize):
        return f"resize({x}, {op.size}, {op.mode!r})"
    inputs = [names[i] for i in step.inputs]
    if isinstance(op, ir.Concat):
        return f"jnp.concatenate([{', '.join(inputs)}], axis=-1)"
    if isinstance(op, ir.Add):
        return " + ".join(inputs)
    if isinstance(op, ir.Mul):
        return f"mul({', '.join(inputs)})"
    raise NotImplementedError(type(op).__name__)


def to_python(report: Report, origin: str = "") -> str:
    """The source of a standalone module defining the network as a `flax.nnx.Module`."""
    steps = plan(report.graph, report.node_shapes)
    name = class_name(report.name)
    nodes = {node.id: node for node in report.graph.nodes}
    names = {0: "x"}
    init, call = [], [f"        x = x_BxHxWxC.astype(self.dtype) if self.dtype is not None else x_BxHxWxC"
                      f"  # {fmt(report.input_shape)}"]
    group = ""
    dropped = report.graph.training_only_nodes  # their layers are made (the arrays match) but not run
    for step, row in zip(steps, report.rows):
        if step.id in dropped:
            if (layer := _layer(step)) is not None:
                init.append(f"        self.{step.name} = {layer}  # a training-only head's")
            continue
        where = nodes[step.id].where()
        if where != group:
            call.append(f"        # {where}" if where else "        # (top level)")
            group = where
        layer = _layer(step)
        if layer is not None:
            init.append(f"        self.{step.name} = {layer}")
        names[step.id] = step.name
        note = f", {row.note}" if row.note else ""
        call.append(f"        {step.name} = {_call(step, names)}  # {fmt(row.output_shape)}{note}")
    call.append(f"        return {names[report.graph.output]}")
    helpers = []
    if any(isinstance(s.op, ir.Pool) for s in steps):
        helpers += [inspect.getsource(pool), inspect.getsource(max_pool)]
    if any(isinstance(s.op, ir.LocalResponseNorm) for s in steps):
        helpers.append(inspect.getsource(lrn))
    if any(isinstance(s.op, ir.Mul) for s in steps):
        helpers.append(inspect.getsource(mul))
    for op_type, function in ((ir.ChannelShuffle, channel_shuffle), (ir.PixelShuffle, pixel_shuffle),
                              (ir.Upsample, upsample), (ir.Resize, resize)):
        if any(isinstance(s.op, op_type) for s in steps):
            helpers.append(inspect.getsource(function))
    if any(isinstance(s.op, ir.AdaptivePool) for s in steps):
        helpers += [inspect.getsource(adaptive_bins), inspect.getsource(adaptive_avgpool)]
    constructed = {spec[0] for step in steps if (spec := layer_constructor(step)) is not None}
    helpers += [inspect.getsource(cls) for name, cls in LOCAL_CLASSES.items() if name in constructed]
    header = f'''"""{report.name}, generated by cnndsl{f" from {origin}" if origin else ""}.

A standalone Flax NNX module: it does not import cnndsl; edit it freely.
Input: a batch of {fmt(report.input_shape)} images (NHWC). Output: {fmt(report.output_shape)} per image.
Parameters: {report.params:,}. Multiply-accumulates per image: {report.macs:,}.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

'''
    body = f'''

class {name}(nnx.Module):
    """{report.name}: `y = {name}(rngs=nnx.Rngs(0))(x_BxHxWxC)`."""

    def __init__(self, *, rngs: nnx.Rngs, dtype: Any = None, param_dtype: Any = jnp.float32) -> None:
        self.dtype = dtype
{chr(10).join(init) if init else "        pass"}

    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
{chr(10).join(call)}
'''
    return header + "\n\n".join(h.rstrip() + "\n" for h in helpers) + body
