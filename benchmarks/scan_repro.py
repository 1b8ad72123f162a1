"""A minimal reproduction of XLA:CPU's slow convolution weight gradients inside a loop (`jax.lax.scan`), in the
form of an upstream report, and whether cnndsl's matmul lowering (cnndsl.nn.convolution) avoids it.

    python benchmarks/scan_repro.py [--layers 8] [--batch 8] [--size 28] [--channels 64]

The same stack of identical 3x3 convolutions (+ ReLU) is differentiated with respect to its kernels, written
unrolled (a Python loop) and scanned (one `lax.scan` over the stacked kernels), with XLA's convolution and with
the convolution as one matrix product of the shifted slices. Prints ms per gradient (median of 5) for each,
and the scanned / unrolled ratio, which should be ~1.
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

from cnndsl.nn.convolution import ConvShape, matmul_conv, xla_conv  # noqa: E402


def timed(function, *args) -> float:
    compiled = jax.jit(function).lower(*args).compile()
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
          f"{args.batch}x{args.size}x{args.size}x{c}; d(sum of squares)/d(kernels), ms")
    for name, conv in (("XLA's convolution", xla_conv), ("matrix product", matmul_conv)):
        def unrolled(kernels, x, conv=conv):
            for i in range(n):
                x = jax.nn.relu(conv(x, kernels[i], shape))
            return jnp.sum(x ** 2)

        def scanned(kernels, x, conv=conv):
            x, _ = jax.lax.scan(lambda h, k: (jax.nn.relu(conv(h, k, shape)), None), x, kernels)
            return jnp.sum(x ** 2)

        a, b = timed(jax.grad(unrolled), kernels, x), timed(jax.grad(scanned), kernels, x)
        print(f"{name:<18} unrolled {a:8.1f}  scanned {b:8.1f}  scanned / unrolled {b / a:5.2f}", flush=True)


if __name__ == "__main__":
    main()
