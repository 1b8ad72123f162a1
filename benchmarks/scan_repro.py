"""A minimal reproduction of XLA:CPU's slow convolution gradients inside a loop (`jax.lax.scan`), in the form of an
upstream report, and whether cnndsl's lowerings (cnndsl.nn.convolution) avoid it.

    python benchmarks/scan_repro.py [--layers 8] [--batch 8] [--size 28] [--channels 64]

The same stack of identical 3x3 convolutions (+ ReLU) is differentiated with respect to its kernels and its
input, written unrolled (a Python loop) and scanned (one `lax.scan` over the stacked kernels), with XLA's
convolution, with the convolution as one matrix product of the shifted slices, and with XLA's convolution whose
gradients are written out as forward convolutions of materialized transposes (cnndsl's lowering inside loops).
Each with XLA's default options and with cnndsl's (`cnndsl.nn.compiler_options`: no YNNPACK fusions). Prints ms
per gradient (median of 5) and the scanned / unrolled ratio, which should be ~1.

What it shows (XLA's HLO after optimization, `compiled.as_text()`): unrolled, XLA:CPU computes the gradients'
convolutions with Eigen after copying the kernel into its canonical layout (a `transpose_copy_fusion`); inside
the loop body the transpose stays folded into the convolution's dimension numbers (`dim_labels=b01f_01oi->b01f`)
and the convolution runs without Eigen. With the default options, the forward convolution inside the loop
becomes a single-threaded YNNPACK fusion (`__ynn_fusion`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from cnndsl.nn.convolution import ConvShape, Plan, matmul_conv, planned_conv, xla_conv  # noqa: E402
from cnndsl.nn.options import compiler_options  # noqa: E402


def timed(function, options, *args) -> float:
    compiled = jax.jit(function, compiler_options=options).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(5):
        started = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=64)
    args = parser.parse_args()
    c, n = args.channels, args.layers
    shape = ConvShape(args.size, args.size, c, (3, 3), c, (1, 1), ((1, 1), (1, 1)), "float32")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.batch, args.size, args.size, c)), jnp.float32)
    kernels = jnp.asarray(rng.normal(size=(n, 3, 3, c, c)) / np.sqrt(9 * c), jnp.float32)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {n} layers of 3x3 conv {c}->{c} on "
          f"{args.batch}x{args.size}x{args.size}x{c}; d(sum of squares)/d(kernels, input), ms")
    lowerings = {"XLA's convolution": xla_conv, "matrix product": matmul_conv,
                 "canonical grads": lambda x, k, s: planned_conv(x, k, s, Plan(input_grad="canonical",
                                                                             kernel_grad="canonical"))}
    for options_name, options in (("XLA's default options", {}), ("cnndsl's options", compiler_options())):
        print(options_name, options)
        for name, conv in lowerings.items():
            def unrolled(kernels, x, conv=conv):
                for i in range(n):
                    x = jax.nn.relu(conv(x, kernels[i], shape))
                return jnp.sum(x ** 2)

            def scanned(kernels, x, conv=conv):
                x, _ = jax.lax.scan(lambda h, k: (jax.nn.relu(conv(h, k, shape)), None), x, kernels)
                return jnp.sum(x ** 2)

            a = timed(jax.grad(unrolled, (0, 1)), options, kernels, x)
            b = timed(jax.grad(scanned, (0, 1)), options, kernels, x)
            print(f"  {name:<18} unrolled {a:8.1f}  scanned {b:8.1f}  scanned / unrolled {b / a:5.2f}", flush=True)

if __name__ == "__main__":
    main()
