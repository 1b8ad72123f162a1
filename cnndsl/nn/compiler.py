"""Check a spec and compile it for JAX: `compile(spec) -> CompiledNetwork`.

    net = cnndsl.compile("examples/resnet18.cnn")
    model = net.init(seed=0)                       # a flax.nnx.Module with float32 parameters
    logits_BxK = net.forward(model, x_BxHxWxC)     # jit-compiled, eval mode
    loss = net.apply(model, x, train=True)         # batch statistics and dropout on
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cnndsl.interop.weights import converted, pair_layers, read_tensors
from cnndsl.lang import ir
from cnndsl.lang.frontend import SetValue, check
from cnndsl.lang.report import Report
from cnndsl.nn.convolution import ConvShape, Plan, tune
from cnndsl.nn.flax_backend import Network, flatten_state, plan, unflatten_state
from cnndsl.nn.options import compiler_options
from cnndsl.nn.repeats import DEFAULT_SCAN_COPIES, MIN_COPIES, scan_by_default


@nnx.jit
def _forward(model: Network, x_BxHxWxC: jax.Array) -> jax.Array:
    return model(x_BxHxWxC)


@dataclass(frozen=True)
class CompiledNetwork:
    """A checked network and what runs it: the report, the Flax module, init, apply and a jitted forward."""

    report: Report
    dtype: Any = None
    scan: bool = False  # lower runs of identical repeated blocks once, with jax.lax.scan (see Network)
    scan_from: int = MIN_COPIES  # the fewest copies of a run that is scanned (the default scan's: longer runs)

    def __repr__(self) -> str:
        dtype = "" if self.dtype is None else f", dtype={getattr(self.dtype, '__name__', self.dtype)}"
        return f"CompiledNetwork({self.report!r}{dtype}{', scan=True' if self.scan else ''})"

    def runtime_html(self) -> str:
        """What the module runs on, as a line of HTML: backend, devices, dtype, scan, how to run it."""
        from html import escape

        devices = jax.devices()
        kinds = sorted({d.device_kind for d in devices})
        dtype = "float32" if self.dtype is None else getattr(self.dtype, "__name__", str(self.dtype))
        return (f"<div>Flax NNX module for <b>{escape(jax.default_backend())}</b> ({len(devices)} "
                f"device{'s' * (len(devices) > 1)}: {escape(', '.join(kinds))}), parameters in {escape(dtype)}, "
                f"{'repeated blocks scanned' if self.scan else 'repeated blocks unrolled'}; "
                "<code>init(seed)</code> makes a model, <code>forward(model, x)</code> runs it (jit-compiled "
                "once per batch shape)</div>")

    def _repr_html_(self) -> str:
        """A notebook cell's view: what it runs on above the checked summary (with the diagram beside it
        once `cnndsl.emit.notebook` is registered, as `import cnndsl` does in a kernel)."""
        return self.runtime_html() + self.report._repr_html_()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input image (H, W, C)."""
        return self.report.input_shape

    def init(self, seed: int = 0) -> Network:
        """A new module with parameters initialised from `seed` (the same seed, the same parameters).

        Built inside one jitted program: every initializer of every layer in one XLA program, rather than one
        small compilation per initializer and shape (49 of them for the digits network), compiled with
        `compiler_options()`: on CPU 0.6 s instead of 2.2 s for the digits network, the same bits
        (tests/emit/test_emit.py compares them with NNX's own eager initialization)."""
        graphdefs = []

        def build(seed: Any) -> Any:  # a new function each call, so jit traces it (and records the graphdef)
            graphdef, state = nnx.split(self._build(seed))
            graphdefs.append(graphdef)
            return state

        state = jax.jit(build, compiler_options=compiler_options())(np.uint32(seed))
        return nnx.merge(graphdefs[0], state)

    def _build(self, seed: Any) -> Network:
        return Network(self.report.graph, self.report.node_shapes, rngs=nnx.Rngs(jax.random.key(seed)),
                       dtype=self.dtype, scan=self.scan, scan_from=self.scan_from)

    def load_weights(self, model: Network, path: str | os.PathLike[str], mapping: str = "auto") -> Network:
        """Put pretrained weights (safetensors; a PyTorch .pth/.pt with torch installed) into `model`,
        each of the spec's layers paired with the file's (see `cnndsl.interop.weights`); returns `model`.
        Raises `WeightsError` naming both sides at the first layer that does not fit."""
        arrays = converted(pair_layers(self.report, read_tensors(path), mapping))
        names, treedef, flat = flatten_state(nnx.state(model, (nnx.Param, nnx.BatchStat)))
        merged = {name: jnp.asarray(arrays[name]) if name in arrays else value for name, value in flat.items()}
        nnx.update(model, unflatten_state(names, treedef, merged))
        return model

    def arrays(self, model: Network) -> dict[str, np.ndarray]:
        """Every parameter and batch-norm statistic of `model` as a numpy array, by cnndsl's names
        (`conv1/kernel`, `bn1/mean`): what checkpoints, exports, ONNX models and weights files pair by."""
        return {name: np.asarray(leaf) for name, leaf in
                flatten_state(nnx.state(model, (nnx.Param, nnx.BatchStat)))[2].items()}

    def abstract(self) -> Network:
        """The module with shapes and dtypes but no parameter values (cheap, for big networks)."""
        return nnx.eval_shape(lambda: self._build(np.uint32(0)))

    def apply(self, model: Network, x_BxHxWxC: jax.Array, *, train: bool = False) -> jax.Array:
        """Run the module eagerly; `train` uses batch statistics (and updates them) and dropout."""
        if train:
            model.train()
        else:
            model.eval()
        return model(x_BxHxWxC)

    def forward(self, model: Network, x_BxHxWxC: jax.Array) -> jax.Array:
        """The jit-compiled forward pass in eval mode (running batch-norm statistics, no dropout)."""
        model.eval()
        return _forward(model, x_BxHxWxC)

    def eval_shapes(self, batch: int = 1) -> dict[str, tuple[int, ...]]:
        """Every node's output shape as JAX computes it (`jax.eval_shape`, no parameters materialised)."""
        graphdef, state = nnx.split(self.abstract())

        def run(state: Any, x: jax.Array) -> dict[str, jax.Array]:
            return nnx.merge(graphdef, state)(x, all_outputs=True)

        x = jax.ShapeDtypeStruct((batch, *self.input_shape), jnp.float32)
        return {name: tuple(s.shape) for name, s in jax.eval_shape(run, state, x).items()}

    def conv_shapes(self) -> list[ConvShape]:
        """The distinct shapes of the network's plain and depthwise convolutions (no dilation), whose lowering
        `tune_convolutions` chooses (cnndsl.nn.convolution)."""
        dtype = jnp.dtype(self.dtype or jnp.float32).name
        return list(dict.fromkeys(
            ConvShape(*step.in_shape, step.op.kernel, step.op.filters, step.op.stride, step.pads, dtype,
                      input_grad=step.inputs[0] != 0, groups=step.op.groups)  # the input needs no gradient
            for step in plan(self.report.graph, self.report.node_shapes)
            if isinstance(step.op, ir.Conv) and step.op.dilation == (1, 1)
            and (step.op.groups == 1 or step.op.groups == step.op.filters == step.in_shape[-1])))

    def tune_convolutions(self, batch: int) -> dict[ConvShape, Plan]:
        """Choose how each convolution is lowered, by measurement at this batch size on this machine (cached per
        shape; nothing with $CNNDSL_CONV_LOWERING=xla): call before the programs that use them are traced."""
        return tune(self.conv_shapes(), batch)

    def param_count(self) -> int:
        """The module's real number of trainable parameters."""
        return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(self.abstract(), nnx.Param)))


def compile(spec: str | os.PathLike[str], set: Mapping[str, SetValue] | None = None,
            dtype: Any = None, scan: bool | None = None) -> CompiledNetwork:
    """Check a spec (a path or its text) and prepare it to run; `dtype=jnp.bfloat16` computes in bfloat16
    while parameters stay float32. `scan=True` applies each run of identical repeated blocks with one
    `jax.lax.scan`: a deep network traces and compiles each distinct block once, with the same parameters
    and outputs. `scan=None`, the default, scans the networks deep enough for it to pay
    (`cnndsl.nn.repeats.scan_by_default`: ResNet-101 and ResNet-152, not ResNet-50), and in them the runs of
    `DEFAULT_SCAN_COPIES` copies or more (shorter ones compile faster unrolled). Raises `CnnError` with
    every problem in the spec."""
    report = check(spec, set=set)
    if scan is None:
        scan = scan_by_default(report.graph, report.node_shapes)
        return CompiledNetwork(report, dtype, scan, DEFAULT_SCAN_COPIES if scan else MIN_COPIES)
    return CompiledNetwork(report, dtype, scan)
