"""CPU convolutions and pools: each network's train step as XLA lowers it (every convolution, and max pool's
gradient as select_and_scatter) with XLA's default options, the same with cnndsl's compiler options
(`cnndsl.nn.compiler_options`: YNNPACK kept to dots and reductions), as cnndsl lowers it (those options, convolutions chosen by
measurement, cnndsl.nn.convolution; max pool's gradient from the window's views, cnndsl.nn.flax_backend.max_pool),
and in PyTorch eager, in one run.

    python benchmarks/convolutions.py [--repeat 5] [--steps 3] [--only lenet,vgg,resnet18,mobilenet_v2]

One SGD-momentum train step (forward, cross-entropy, backward, update; benchmarks/compile.py's harness) of:
LeNet-style (28x28x1, batch 64: benchmarks/peers.py's network), the VGG-style CIFAR net (batch 64), ResNet-18
at 32x32 (batch 32) and MobileNetV2 at 64x64 (batch 16, its depthwise convolutions stay XLA's); PyTorch runs
the same architectures (torchvision's ResNet-18 and MobileNetV2) on 2 threads, where torch is installed. The
three JAX steps are timed alternately, median of --repeat rounds of --steps steps; PyTorch the same way in a
process of its own, right after (in JAX's process a short step paid for XLA's worker threads: LeNet's took
7.9 ms there, ~4.5 ms alone). Also prints each network's chosen
lowerings (output / input gradient / kernel gradient per convolution shape) and how long choosing took.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CNNDSL_CACHE", tempfile.mkdtemp(prefix="cnndsl-conv-bench-"))  # measured afresh

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import cnndsl  # noqa: E402
from benchmarks.compile import make_step, time_steps, torch_vgg, xla_max_pool  # noqa: E402
from cnndsl.nn import convolution, flax_backend  # noqa: E402

OUR_MAX_POOL = flax_backend.max_pool

LENET = """network LeNetStyle
input 28x28x1
input -> conv(6, 5x5, pad=same) -> relu -> maxpool(2x2) -> conv(16, 5x5) -> relu -> maxpool(2x2)
    -> fc(120) -> relu -> fc(84) -> relu -> fc(10)
"""


def spec(name: str) -> str:
    if name == "lenet":
        return LENET
    if name == "resnet18":
        return (ROOT / "examples" / "resnet18.cnn").read_text().replace("input 224x224x3", "input 32x32x3")
    if name == "mobilenet_v2":
        return (ROOT / "examples" / "mobilenet_v2.cnn").read_text().replace("input 224x224x3", "input 64x64x3")
    return (ROOT / "examples" / "vgg_cifar.cnn").read_text()


BATCH = {"lenet": 64, "vgg": 64, "resnet18": 32, "mobilenet_v2": 16}


def torch_model(name: str) -> Any:
    import torch
    from torch import nn

    if name == "lenet":
        return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84),
                             nn.ReLU(), nn.Linear(84, 10))
    if name == "vgg":
        return torch_vgg()
    import torchvision

    torch.manual_seed(0)
    return {"resnet18": torchvision.models.resnet18, "mobilenet_v2": torchvision.models.mobilenet_v2}[name]()


def torch_runner(name: str, shape: tuple[int, ...], batch: int, classes: int) -> Any:
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    torch.set_num_threads(2)
    model = torch_model(name)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, shape[2], shape[0], shape[1])
    y = torch.randint(0, classes, (batch,))

    def run(steps: int) -> float:
        started = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return (time.perf_counter() - started) / steps

    return run


def torch_alone(name: str, shape: tuple[int, ...], batch: int, classes: int, repeat: int, steps: int) -> float:
    """PyTorch's median seconds per step in a process of its own (NaN without torch): in this process, right after
    JAX's steps, a short step paid for XLA's worker threads (LeNet's: 7.9 ms here, ~4.5 ms alone)."""
    command = [sys.executable, __file__, "--torch-child", json.dumps([name, list(shape), batch, classes, repeat, steps])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    return float(result.stdout.split()[-1]) if result.returncode == 0 else float("nan")


def torch_child(arguments: str) -> None:
    """The child's side of `torch_alone`: prints the median seconds per step (no JAX work in this process)."""
    name, shape, batch, classes, repeat, steps = json.loads(arguments)
    run = torch_runner(name, tuple(shape), batch, classes)
    if run is None:
        sys.exit(1)
    run(1)
    print(statistics.median(run(steps) for _ in range(repeat)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--only", default="lenet,vgg,resnet18,mobilenet_v2")
    parser.add_argument("--torch-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_child:
        torch_child(args.torch_child)
        return
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}; median of {args.repeat} x {args.steps} steps; ms per train step")
    print(f"{'network':<13} {'batch':>5} {'XLA as is':>10} {'+options':>9} {'cnndsl':>9} {'PyTorch':>9} "
          f"{'cnndsl/XLA':>11} {'cnndsl/PyTorch':>15} {'XLA/PyTorch':>12} {'choosing s':>11}")
    for name in args.only.split(","):
        net = cnndsl.compile(spec(name))
        batch, classes = BATCH[name], net.report.output_shape[0]
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(batch, *net.input_shape)).astype(np.float32))
        y = jnp.asarray(rng.integers(0, classes, batch))
        os.environ["CNNDSL_CONV_LOWERING"] = "xla"
        flax_backend.max_pool = xla_max_pool
        model = net.init(0)
        model.train()
        runs = {"xla": make_step(model, {}), "options": make_step(model)}
        for key in runs:
            time_steps(*runs[key], x, y, 1)  # traced with XLA's lowerings
        os.environ["CNNDSL_CONV_LOWERING"] = "measure"
        flax_backend.max_pool = OUR_MAX_POOL
        started = time.perf_counter()
        plans = net.tune_convolutions(batch)
        choosing = time.perf_counter() - started
        runs["chosen"] = make_step(model)  # a new jitted step: traced with the chosen lowerings
        time_steps(*runs["chosen"], x, y, 1)
        times: dict[str, list[float]] = {"xla": [], "options": [], "chosen": []}
        for _ in range(args.repeat):  # alternate, so that drift in the machine hits all alike
            for key, (step, state) in runs.items():
                times[key].append(time_steps(step, state, x, y, args.steps))
        xla, options, chosen = (statistics.median(times[key]) for key in ("xla", "options", "chosen"))
        torch_ms = torch_alone(name, net.input_shape, batch, classes, args.repeat, args.steps)
        print(f"{name:<13} {batch:>5} {xla * 1e3:>10.1f} {options * 1e3:>9.1f} {chosen * 1e3:>9.1f} {torch_ms * 1e3:>9.1f} "
              f"{chosen / xla:>11.2f} {chosen / torch_ms:>15.2f} {xla / torch_ms:>12.2f} {choosing:>11.1f}", flush=True)
        for shape, plan in plans.items():
            if not plan.native:
                print(f"    {shape.key():<44} output {plan.output}, input grad {plan.input_grad}, "
                      f"kernel grad {plan.kernel_grad}")
    print(f"choices cached in {convolution.cache_file()}")


if __name__ == "__main__":
    main()
