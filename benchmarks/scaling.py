"""Data-parallel throughput: train-step images/s on 1, 2, 4, ... devices, side by side in one run.

    python benchmarks/scaling.py [--steps 20]

On a CPU machine the devices are simulated (`--xla_force_host_platform_device_count`): they share the same
cores, so the numbers measure what partitioning costs, not a speed-up. On a machine with several
accelerators it trains ResNet-50 (224x224, 256 images per device, bfloat16 compute) on 1, 2, 4, 8 devices and
prints the scaling efficiency (images/s on N devices / (N x images/s on one); target >= 90% at 8).
Each device count runs in a fresh process (the device count is fixed when JAX starts).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = r'''
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
import cnndsl
from cnndsl.training.distributed import Placement
from cnndsl.lang.settings import Settings
from cnndsl.training import DTYPES, Preprocess, Trainer, make_optimizer

spec, count, per_device, steps, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
net = cnndsl.compile(spec, dtype=DTYPES[dtype])
batch = per_device * count
settings = Settings(batch_size=batch, optimizer="sgd", dtype=dtype)
placement = Placement.create(count)
h, w, c = net.input_shape
classes = net.report.output_shape[0]
trainer = Trainer(net, net.init(0), make_optimizer(settings, 1000), Preprocess(1.0, (0.0,) * c, (1.0,) * c, (h, w)),
                  settings, classes, placement)
state = trainer.initial_state()
rng = np.random.default_rng(0)
x, y = placement.replicate((rng.random((batch, h, w, c), dtype=np.float32), rng.integers(0, classes, batch).astype(np.int32)))
order = placement.replicate(np.arange(batch, dtype=np.int32))
args = [state["params"], state["stats"], state["opt_state"], state["meters"]]
for k in range(steps + 3):
    if k == 3:  # after compilation and warm-up
        jax.block_until_ready(args)
        started = time.perf_counter()
    *args, loss = trainer.train_step(*args, x, y, order, np.int32(0), None, np.int32(0), np.int32(k))
jax.block_until_ready(loss)
seconds = time.perf_counter() - started
print(json.dumps({"devices": count, "platform": jax.devices()[0].platform, "kind": jax.devices()[0].device_kind,
                  "images_per_s": steps * batch / seconds}))
'''


def run(spec: Path, count: int, per_device: int, steps: int, dtype: str, simulate: int | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if simulate:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={simulate}"
    out = subprocess.run([sys.executable, "-c", WORKER, str(spec), str(count), str(per_device), str(steps), dtype],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"the {count}-device run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    probe = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend(), jax.device_count())"],
                           capture_output=True, text=True, check=True).stdout.split()
    backend, available = probe[0], int(probe[1])
    if backend == "cpu":
        spec, per_device, dtype, counts, simulate = ROOT / "examples" / "vgg_cifar.cnn", 16, "float32", [1, 2, 4], 4
        print(f"CPU ({os.cpu_count()} cores), simulated devices sharing them: the ratios show partitioning overhead")
    else:
        spec, per_device, dtype, simulate = ROOT / "examples" / "resnet50.cnn", 256, "bfloat16", None
        counts = [n for n in (1, 2, 4, 8, 16) if n <= available]
    results = [run(spec, n, per_device, args.steps, dtype, simulate) for n in counts]
    base = results[0]["images_per_s"]
    print(f"{spec.name}, {per_device} images per device, {dtype}, {args.steps} steps after warm-up, "
          f"on {results[0]['kind']}:")
    for r in results:
        n = r["devices"]
        print(f"  {n} device{'s' if n > 1 else ' '}: {r['images_per_s']:9,.0f} images/s   "
              f"efficiency {r['images_per_s'] / (n * base):6.1%}" + ("  (target >= 90% at 8)" if n == 8 else ""))


if __name__ == "__main__":
    main()
