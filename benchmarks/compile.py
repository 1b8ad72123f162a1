"""Run-time cost of compiling from a spec: the compiled module's train step vs hand-written Flax and PyTorch.

    python benchmarks/compile.py [--repeat 5] [--steps 5] [--only lenet5,vgg,resnet18] [--no-latency]

For each network (LeNet-5, a VGG-style net and ResNet-18, all at 32x32 input) one SGD-momentum train step
(forward, cross-entropy, backward, update) is timed for the module `cnndsl.compile` builds and for the same
network written by hand in plain Flax NNX the way the Flax examples write it, in the same process, the same
harness, alternating between the two. Prints the median step time of each and the ratio (target <= 1.03).
Like for like: the compiled module's convolutions and max pools are traced as XLA lowers them, as the
hand-written ones are (cnndsl's own lowerings, faster on CPU, are benchmarks/convolutions.py's subject).
With torch installed (`pip install -e '.[bench]'`) the VGG-style step is also timed in PyTorch eager on the CPU.
Last, the first-step latency (trace + XLA compile + one step) of ResNet-18 in fresh processes: without a
compilation cache, with an empty persistent cache (`jax_compilation_cache_dir`), and with the cache filled.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import cnndsl  # noqa: E402
from cnndsl.nn import compiler_options, flax_backend  # noqa: E402

BATCH = {"lenet5": 128, "vgg": 64, "resnet18": 32}


# ---- the same networks, written by hand in plain Flax NNX ---------------------------------------------------

class LeNet5(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(1, 6, (5, 5), padding="VALID", rngs=rngs)
        self.conv2 = nnx.Conv(6, 16, (5, 5), padding="VALID", rngs=rngs)
        self.fc1 = nnx.Linear(400, 120, rngs=rngs)
        self.fc2 = nnx.Linear(120, 84, rngs=rngs)
        self.fc3 = nnx.Linear(84, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.avg_pool(jnp.tanh(self.conv1(x)), (2, 2), (2, 2))
        x = nnx.avg_pool(jnp.tanh(self.conv2(x)), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        return self.fc3(jnp.tanh(self.fc2(jnp.tanh(self.fc1(x)))))


class VGGCifar(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        widths = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256)]
        self.convs = nnx.List([nnx.Conv(a, b, (3, 3), padding="SAME", rngs=rngs) for a, b in widths])
        self.fc1 = nnx.Linear(4 * 4 * 256, 256, rngs=rngs)
        self.fc2 = nnx.Linear(256, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, conv in enumerate(self.convs):
            x = nnx.relu(conv(x))
            if i % 2 == 1:
                x = nnx.max_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        return self.fc2(nnx.relu(self.fc1(x)))


class BasicBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, stride: int, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(cin, cout, (3, 3), (stride, stride), padding=1, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(cout, momentum=0.9, epsilon=1e-5, rngs=rngs)
        self.conv2 = nnx.Conv(cout, cout, (3, 3), padding=1, use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(cout, momentum=0.9, epsilon=1e-5, rngs=rngs)
        self.project = stride != 1 or cin != cout
        if self.project:
            self.proj_conv = nnx.Conv(cin, cout, (1, 1), (stride, stride), use_bias=False, rngs=rngs)
            self.proj_bn = nnx.BatchNorm(cout, momentum=0.9, epsilon=1e-5, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.bn2(self.conv2(nnx.relu(self.bn1(self.conv1(x)))))
        shortcut = self.proj_bn(self.proj_conv(x)) if self.project else x
        return nnx.relu(y + shortcut)


class ResNet18(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(3, 64, (7, 7), (2, 2), padding=3, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(64, momentum=0.9, epsilon=1e-5, rngs=rngs)
        blocks, cin = [], 64
        for i, cout in enumerate((64, 128, 256, 512)):
            blocks += [BasicBlock(cin, cout, 1 if i == 0 else 2, rngs), BasicBlock(cout, cout, 1, rngs)]
            cin = cout
        self.blocks = nnx.List(blocks)
        self.fc = nnx.Linear(512, 1000, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean(axis=(1, 2)))


def resnet18_32() -> Any:
    text = (ROOT / "examples" / "resnet18.cnn").read_text().replace("input 224x224x3", "input 32x32x3")
    return cnndsl.compile(text)


NETWORKS: dict[str, tuple[Callable[[], Any], Callable[[nnx.Rngs], nnx.Module], int]] = {
    "lenet5": (lambda: cnndsl.compile(ROOT / "examples" / "lenet5.cnn"), LeNet5, 10),
    "vgg": (lambda: cnndsl.compile(ROOT / "examples" / "vgg_cifar.cnn"), VGGCifar, 10),
    "resnet18": (resnet18_32, ResNet18, 1000),
}


# ---- one harness for both ------------------------------------------------------------------------------------

def make_step(model: nnx.Module, options: dict[str, Any] | None = None) -> tuple[Callable[..., Any], Any]:
    """A jitted functional train step (split once, merge inside: the fast way to drive an NNX module), compiled
    with `options` (default: cnndsl's, `cnndsl.nn.compiler_options`, what a training run's steps take)."""
    optimizer = optax.sgd(0.01, momentum=0.9)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = optimizer.init(params)

    @functools.partial(jax.jit, compiler_options=compiler_options() if options is None else options)
    def step(params: Any, rest: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> tuple[Any, ...]:
        def loss_fn(params: Any) -> tuple[jax.Array, Any]:
            module = nnx.merge(graphdef, params, rest, copy=True)  # fresh variables at this trace level
            logits = module(x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, nnx.state(module, nnx.Not(nnx.Param))

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    return step, (params, rest, opt_state)


def time_steps(step: Callable[..., Any], state: tuple[Any, ...], x: jax.Array, y: jax.Array, steps: int) -> float:
    """Seconds per step over `steps` steps (the state threads through, as in training)."""
    params, rest, opt_state = state
    start = time.perf_counter()
    for _ in range(steps):
        params, rest, opt_state, loss = step(params, rest, opt_state, x, y)
    jax.block_until_ready(loss)
    return (time.perf_counter() - start) / steps


def bench_pair(name: str, repeat: int, steps: int) -> dict[str, float]:
    make_spec, make_hand, classes = NETWORKS[name]
    net = make_spec()
    batch = BATCH[name]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, *net.input_shape)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, classes, batch))
    spec_model, hand_model = net.init(0), make_hand(nnx.Rngs(0))
    spec_model.train()
    spec_params = sum(p.size for p in jax.tree.leaves(nnx.state(spec_model, nnx.Param)))
    hand_params = sum(p.size for p in jax.tree.leaves(nnx.state(hand_model, nnx.Param)))
    assert spec_params == hand_params, (name, spec_params, hand_params)
    runs = {"cnndsl": make_step(spec_model), "hand": make_step(hand_model)}
    flops = {}
    for key, (step, state) in runs.items():  # XLA's own count of the compiled step's work
        analysis = step.lower(*state, x, y).compile().cost_analysis()
        flops[key] = (analysis[0] if isinstance(analysis, list) else analysis).get("flops", float("nan"))
    for step, state in runs.values():  # compile and warm up
        time_steps(step, state, x, y, 2)
    times: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(repeat):  # alternate, so that drift in the machine hits both alike
        for key, (step, state) in runs.items():
            times[key].append(time_steps(step, state, x, y, steps))
    out = {key: statistics.median(values) for key, values in times.items()}
    out["batch"] = batch
    out["flops_ratio"] = flops["cnndsl"] / flops["hand"]
    return out


def torch_vgg() -> Any:
    """The VGG-style CIFAR net (examples/vgg_cifar.cnn) in PyTorch."""
    from torch import nn

    layers: list[Any] = []
    cin = 3
    for width in (64, 128, 256):
        for _ in range(2):
            layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU()]
            cin = width
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(4096, 256), nn.ReLU(), nn.Linear(256, 10))


def bench_torch_vgg(repeat: int, steps: int) -> float | None:
    """Seconds per train step of the VGG-style net in PyTorch eager on the CPU, or None without torch."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    model = torch_vgg()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(BATCH["vgg"], 3, 32, 32)
    y = torch.randint(0, 10, (BATCH["vgg"],))

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - start) / n

    run(2)
    return statistics.median(run(steps) for _ in range(repeat))


def first_step_latency(cache: str | None) -> float:
    """Seconds from nothing to the first ResNet-18 train step done, in a fresh process."""
    code = ("import time; t = time.perf_counter()\n"
            "import sys; sys.path.insert(0, %r)\n"
            "from benchmarks.compile import *\n"
            "net = resnet18_32(); model = net.init(0); model.train()\n"
            "step, state = make_step(model)\n"
            "x = jnp.zeros((BATCH['resnet18'], 32, 32, 3)); y = jnp.zeros((BATCH['resnet18'],), jnp.int32)\n"
            "t0 = time.perf_counter(); time_steps(step, state, x, y, 1)\n"
            "print(time.perf_counter() - t0)\n") % str(ROOT)
    env = dict(os.environ)
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def xla_max_pool(x: jax.Array, window: Any, strides: Any, padding: Any) -> jax.Array:
    """Max pool as JAX differentiates it by default (its gradient is XLA's select_and_scatter), what
    `nnx.max_pool` in the hand-written networks computes; stands in for cnndsl's `flax_backend.max_pool`."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, padding)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--only", default="lenet5,vgg,resnet18")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object too")
    args = parser.parse_args()
    os.environ["CNNDSL_CONV_LOWERING"] = "xla"  # like for like with the hand-written networks (see above)
    flax_backend.max_pool = xla_max_pool
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; "
          f"median of {args.repeat} x {args.steps} steps")
    figures: dict[str, Any] = {}
    print(f"{'network':<10} {'batch':>5} {'cnndsl ms':>10} {'hand ms':>10} {'ratio':>7} {'XLA flops ratio':>16}")
    for name in args.only.split(","):
        out = bench_pair(name, args.repeat, args.steps)
        figures[name] = out
        print(f"{name:<10} {out['batch']:>5} {out['cnndsl'] * 1e3:>10.2f} {out['hand'] * 1e3:>10.2f} "
              f"{out['cnndsl'] / out['hand']:>7.3f} {out['flops_ratio']:>16.6f}")
    if "vgg" in figures:
        torch_step = bench_torch_vgg(args.repeat, args.steps)
        if torch_step is None:
            print("PyTorch: not installed (pip install -e '.[bench]'), no comparison")
        else:
            figures["torch_vgg"] = torch_step
            print(f"vgg PyTorch eager CPU {torch_step * 1e3:.2f} ms/step; the step above (XLA's lowerings) / PyTorch = "
                  f"{figures['vgg']['cnndsl'] / torch_step:.3f} (cnndsl's chosen lowerings: benchmarks/convolutions.py)")
    if not args.no_latency:
        with tempfile.TemporaryDirectory() as cache:
            cold = first_step_latency(None)
            filling = first_step_latency(cache)
            warm = first_step_latency(cache)
        figures["latency"] = {"no_cache": cold, "empty_cache": filling, "filled_cache": warm}
        print(f"resnet18 first step: no cache {cold:.2f} s, empty persistent cache {filling:.2f} s, "
              f"filled cache {warm:.2f} s ({cold / warm:.1f}x faster)")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
