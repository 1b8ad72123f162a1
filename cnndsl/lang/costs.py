"""Costs per node: trainable parameters, batch-norm state and multiply-accumulates (MACs).

Conventions (DESIGN.md §5): a MAC is one multiply-add of a convolution or a fully connected layer,
biases excluded; FLOPs = 2 x MACs; batch norm, activations, pooling and joins add no MACs. Batch-norm
scale and offset are parameters; its running mean and variance are state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cnndsl.lang import ir


@dataclass(frozen=True)
class Cost:
    """What one node costs for one image."""

    params: int = 0
    state: int = 0
    macs: int = 0


def node_cost(op: ir.Op, in_shape: ir.Shape, out_shape: ir.Shape) -> Cost:
    """The cost of `op` taking `in_shape` (its first input) to `out_shape`."""
    if isinstance(op, ir.Conv):
        per_output = op.kernel[0] * op.kernel[1] * (in_shape[2] // op.groups)
        weights = per_output * op.filters
        return Cost(weights + (op.filters if op.bias else 0), 0, per_output * math.prod(out_shape))
    if isinstance(op, ir.ConvTranspose):  # every input value times its group's kernel taps (PyTorch's count)
        taps = op.kernel[0] * op.kernel[1] * (op.filters // op.groups)
        return Cost(taps * in_shape[2] + (op.filters if op.bias else 0), 0, taps * math.prod(in_shape))
    if isinstance(op, ir.Dense):
        fan_in = math.prod(in_shape)
        return Cost(fan_in * op.units + (op.units if op.bias else 0), 0, fan_in * op.units)
    if isinstance(op, ir.Linear):
        channels = in_shape[-1]
        return Cost(channels * op.units + (op.units if op.bias else 0), 0,
                    math.prod(out_shape[:-1]) * channels * op.units)
    if isinstance(op, ir.BatchNorm):
        channels = out_shape[-1]
        return Cost(2 * channels, 2 * channels, 0)
    if isinstance(op, ir.LayerNorm):
        return Cost(2 * out_shape[-1], 0, 0)
    if isinstance(op, ir.LayerScale):
        return Cost(out_shape[-1], 0, 0)
    return Cost()


def parameter_shapes(op: ir.Op, in_shape: ir.Shape, name: str) -> dict[str, tuple[int, ...]]:
    """The arrays a layer named `name` holds, by the names checkpoints and exports use, with their shapes:

        conv  NAME/kernel (kernel_h, kernel_w, in_channels / groups, filters)   HWIO, as Flax and TensorFlow
              NAME/bias   (filters,)
        fc    NAME/kernel (in_features, units)     a 3-D input flattened in H, W, C order first
              NAME/bias   (units,)
        linear NAME/kernel (channels, units)       applied at every position, no flattening
               NAME/bias   (units,)
        bn    NAME/scale, NAME/bias  (channels,)   trainable
              NAME/mean, NAME/var    (channels,)   running statistics (state)
        ln    NAME/scale, NAME/bias  (channels,)
        layer_scale NAME/scale (channels,)

    PyTorch stores conv weights OIHW and linear weights (out, in): transpose (2, 3, 1, 0) and (1, 0);
    conv_transpose NAME/kernel is (kh, kw, in, out/groups), PyTorch's (in, out/groups, kh, kw) transposed."""
    if isinstance(op, ir.Conv):
        arrays = {"kernel": (*op.kernel, in_shape[2] // op.groups, op.filters)}
        return {f"{name}/{k}": v for k, v in ({**arrays, "bias": (op.filters,)} if op.bias else arrays).items()}
    if isinstance(op, ir.ConvTranspose):  # PyTorch's (in, out/groups, kh, kw) transposed (2, 3, 0, 1)
        arrays = {"kernel": (*op.kernel, in_shape[2], op.filters // op.groups)}
        return {f"{name}/{k}": v for k, v in ({**arrays, "bias": (op.filters,)} if op.bias else arrays).items()}
    if isinstance(op, ir.Dense):
        arrays = {"kernel": (math.prod(in_shape), op.units)}
        return {f"{name}/{k}": v for k, v in ({**arrays, "bias": (op.units,)} if op.bias else arrays).items()}
    if isinstance(op, ir.Linear):
        arrays = {"kernel": (in_shape[-1], op.units)}
        return {f"{name}/{k}": v for k, v in ({**arrays, "bias": (op.units,)} if op.bias else arrays).items()}
    if isinstance(op, ir.BatchNorm):
        return {f"{name}/{k}": (in_shape[-1],) for k in ("scale", "bias", "mean", "var")}
    if isinstance(op, ir.LayerNorm):
        return {f"{name}/{k}": (in_shape[-1],) for k in ("scale", "bias")}
    if isinstance(op, ir.LayerScale):
        return {f"{name}/scale": (in_shape[-1],)}
    return {}
