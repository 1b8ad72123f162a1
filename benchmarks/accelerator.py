"""Train-step throughput on an accelerator: synthetic data, XLA's flop count, achieved TFLOP/s.

    python benchmarks/accelerator.py [--steps 20] [--only resnet50,vgg_cifar] [--batch N] [--scan]

For ResNet-50 (224x224, batch 256) and the VGG-style CIFAR network (32x32, batch 512): bfloat16 compute,
float32 parameters, SGD with momentum, the state donated; inputs are random 8-bit images made on the
device (`--data synthetic`'s kind: no input pipeline is measured). Prints images/s, the step's flops as
XLA counts them (`compiled.cost_analysis()`), achieved TFLOP/s and the fraction of the device's dense
bfloat16 peak where the device is known. Targets on one H100 (and H200): ResNet-50 >= 3,000 images/s.

Finishes within 5 minutes on a GPU. On a CPU it runs with --batch 8 by default (the figures then say
nothing about accelerators: they only show the script works).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import cnndsl  # noqa: E402
from cnndsl.lang.settings import Settings  # noqa: E402
from cnndsl.training import Preprocess, Trainer, make_optimizer  # noqa: E402

#: dense bfloat16 peak TFLOP/s by device kind (vendor data sheets; SXM parts)
PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "TPU v5e": 197.0, "TPU v4": 275.0}
NETWORKS = {"resnet50": ("examples/resnet50.cnn", 256), "vgg_cifar": ("examples/vgg_cifar.cnn", 512)}


def peak_of(device: jax.Device) -> float | None:
    """The device's dense bfloat16 peak in TFLOP/s, if known."""
    kind = device.device_kind
    return next((peak for name, peak in PEAKS.items() if name.lower() in kind.lower()), None)


def measure(name: str, batch: int, steps: int, scan: bool) -> dict[str, float]:
    """images/s, flops per step and TFLOP/s of one network's train step."""
    path, _ = NETWORKS[name]
    net = cnndsl.compile(ROOT / path, dtype=jnp.bfloat16, scan=scan)
    classes = net.report.output_shape[0]
    settings = Settings(batch_size=batch, optimizer="sgd", lr=0.1, momentum=0.9, dtype="bfloat16")
    channels = net.input_shape[2]
    preprocess = Preprocess(255.0, (0.5,) * channels, (0.25,) * channels, net.input_shape[:2], ("flip",))
    trainer = Trainer(net, net.init(0), make_optimizer(settings, 1000), preprocess, settings, classes)
    state = trainer.initial_state()
    key = jax.random.key(0)
    x = jax.random.randint(key, (batch, *net.input_shape), 0, 256, jnp.int32).astype(jnp.uint8)
    y = jax.random.randint(jax.random.fold_in(key, 1), (batch,), 0, classes, jnp.int32)
    args = [state["params"], state["stats"], state["opt_state"], state["meters"]]
    data = (x, y, None, None, None)
    started = time.perf_counter()
    compiled = trainer.train_step.lower(*args, *data, np.int32(0), np.int32(0)).compile()
    compile_s = time.perf_counter() - started
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    flops = float((analysis or {}).get("flops", float("nan")))
    for i in range(2):  # warm up
        *args, loss = compiled(*args, *data, np.int32(0), np.int32(i))
    jax.block_until_ready(loss)
    started = time.perf_counter()
    for i in range(steps):
        *args, loss = compiled(*args, *data, np.int32(0), np.int32(i + 2))
    jax.block_until_ready(loss)
    seconds = (time.perf_counter() - started) / steps
    return {"images_per_s": batch / seconds, "step_ms": seconds * 1e3, "flops": flops,
            "tflops": flops / seconds / 1e12, "compile_s": compile_s}


def main() -> None:
    """Print one line per network."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--only", default=",".join(NETWORKS))
    parser.add_argument("--batch", type=int, default=None, help="override every network's batch")
    parser.add_argument("--scan", action="store_true", help="scan repeated blocks (cnndsl.compile(scan=True))")
    args = parser.parse_args()
    device = jax.devices()[0]
    on_cpu = device.platform == "cpu"
    peak = peak_of(device)
    print(f"device: {device.device_kind} ({device.platform}), {jax.device_count()} device(s); dense bf16 peak "
          f"{f'{peak:.0f} TFLOP/s' if peak else 'unknown'}")
    if on_cpu:
        print("no accelerator: CPU figures at a small batch, which say nothing about GPUs or TPUs")
    for name in args.only.split(","):
        batch = args.batch or (8 if on_cpu else NETWORKS[name][1])
        result = measure(name, batch, 3 if on_cpu else args.steps, args.scan)
        share = f", {result['tflops'] / peak:.1%} of peak" if peak else ""
        print(f"{name:<10} batch {batch:>4}: {result['images_per_s']:>9,.0f} images/s  {result['step_ms']:8.1f} ms/step  "
              f"{result['flops'] / 1e9:9.1f} GFLOP/step  {result['tflops']:7.2f} TFLOP/s{share}  "
              f"(compile {result['compile_s']:.1f} s)")


if __name__ == "__main__":
    main()
