"""How fast the main job starts: `cnndsl train examples/digits.cnn --epochs 1`, as whole commands.

    python benchmarks/startup.py [--repeat 3] [--quick | --deep SIZE]

Prints, in one run on this machine:
- the wall time of the command with an empty compilation cache (cold) and with the cache it filled (warm),
  median of `--repeat` runs each (targets: cold <= 6 s, warm <= 3 s on the 2-core CI machine), and the same
  for the README's main job as written (`cnndsl train examples/digits.cnn`, the spec's 15 epochs);
- how many programs XLA compiles in the run (target <= 5), by name;
- the same job as a plain PyTorch script (the same network, data, batch size, optimizer, schedule,
  validation and test evaluation, one checkpoint), where torch is installed, and the ratio of the warm
  cnndsl command to it (target <= 1.5);
- for a LeNet-5 on 5,000 images, the share of each epoch spent on evaluation and checkpointing;
- trace + compile time and one step of the ResNet-50, -101 and -152 train steps, unrolled, scanned and as
  chosen by default (target: ResNet-152 at most 2x ResNet-50 by default); `--deep SIZE` prints only these.
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

ROOT = Path(__file__).resolve().parent.parent

TORCH_SCRIPT = '''
import time, sys
started = time.perf_counter()
import numpy as np, torch, torch.nn as nn
from cnndsl.data import load_dataset   # the same split (numpy only: no jax is imported)
torch.manual_seed(0)
data = load_dataset("digits")
mean, std = (data.x_train / 16).mean(), (data.x_train / 16).std()
def tensor(x): return torch.tensor((x / 16 - mean) / std, dtype=torch.float32).permute(0, 3, 1, 2)
x_train, y_train = tensor(data.x_train), torch.tensor(data.y_train, dtype=torch.long)
def stage(cin, c):
    return [nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1),
            nn.BatchNorm2d(c), nn.ReLU()]
model = nn.Sequential(*stage(1, 32), nn.MaxPool2d(2), *stage(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Dropout(0.2), nn.Linear(64, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
steps = len(x_train) // 64
schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
order = torch.randperm(len(x_train))
model.train()
for i in range(steps):
    picked = order[i * 64:(i + 1) * 64]
    loss = nn.functional.cross_entropy(model(x_train[picked]), y_train[picked])
    optimizer.zero_grad(); loss.backward(); optimizer.step(); schedule.step()
model.eval()
with torch.no_grad():
    for x, y in ((data.x_val, data.y_val), (data.x_test, data.y_test)):
        accuracy = (model(tensor(x)).argmax(1) == torch.tensor(y)).float().mean().item()
torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, sys.argv[1])
print(f"{time.perf_counter() - started:.3f}", accuracy)
'''


def wall(command: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the main job's figures only (no LeNet-5, no ResNets)")
    parser.add_argument("--deep", type=int, metavar="SIZE", help="only the deep networks' figures, at SIZE x SIZE")
    args = parser.parse_args()
    if args.deep:
        deep(args.deep)
        return
    spec = str(ROOT / "examples" / "digits.cnn")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "cnndsl", "train", spec, "--epochs", "1", "--quiet", "--out"]
        cold, warm = [], []
        for k in range(args.repeat):
            cache = {**env, "CNNDSL_CACHE": str(tmp / f"cache{k}")}  # a new, empty compilation cache
            cold.append(wall([*command, str(tmp / f"cold{k}")], cache, tmp))
            warm.append(wall([*command, str(tmp / f"warm{k}")], cache, tmp))
        print(f"cnndsl train examples/digits.cnn --epochs 1 (whole command, median of {args.repeat}):")
        print(f"  cold cache {statistics.median(cold):.2f} s (target <= 6 s)   runs: "
              + ", ".join(f"{t:.2f}" for t in cold))
        print(f"  warm cache {statistics.median(warm):.2f} s (target <= 3 s)   runs: "
              + ", ".join(f"{t:.2f}" for t in warm))
        main_job = [sys.executable, "-m", "cnndsl", "train", spec, "--quiet", "--out"]
        cold_job, warm_job = [], []
        for k in range(args.repeat):
            cache = {**env, "CNNDSL_CACHE": str(tmp / f"job-cache{k}")}
            cold_job.append(wall([*main_job, str(tmp / f"job-cold{k}")], cache, tmp))
            warm_job.append(wall([*main_job, str(tmp / f"job-warm{k}")], cache, tmp))
        print(f"the README's main job, cnndsl train examples/digits.cnn (15 epochs): cold "
              f"{statistics.median(cold_job):.2f} s, warm {statistics.median(warm_job):.2f} s (medians of "
              f"{args.repeat})")

        count = subprocess.run([sys.executable, "-c", (
            "import json, sys, tempfile\nimport cnndsl\nfrom cnndsl.nn.compilations import count_compilations\n"
            "with count_compilations() as names:\n"
            f"    cnndsl.train({spec!r}, run_dir=tempfile.mkdtemp() + '/run', epochs=1, quiet=True)\n"
            "print(json.dumps(names))")], capture_output=True, text=True, env=env, check=True, cwd=tmp)
        names = json.loads(count.stdout.splitlines()[-1])
        print(f"XLA programs compiled in the run: {len(names)} (target <= 5): {', '.join(names)}")

        try:
            import torch  # noqa: F401
        except ImportError:
            print("plain PyTorch: not installed (pip install -e '.[bench]')")
        else:
            script = tmp / "torch_digits.py"
            script.write_text(TORCH_SCRIPT)
            torch_walls = [wall([sys.executable, str(script), str(tmp / f"t{k}.pt")], env, tmp)
                           for k in range(args.repeat)]
            median = statistics.median(torch_walls)
            print(f"the same job as a plain PyTorch {torch.__version__} script: {median:.2f} s (whole process); "
                  f"cnndsl warm / PyTorch = {statistics.median(warm) / median:.2f} (target <= 1.5)")

        if not args.quick:
            overhead(tmp)
    if not args.quick:
        deep()


def deep(size: int = 224) -> None:
    """For ResNet-50, -101 and -152 (train step, batch 8, size x size, SGD): trace + compile seconds and a
    step's time (median of 5), unrolled, scanned, and as `cnndsl.compile` chooses by default (`repeats.scan_by_default`)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import cnndsl
    from cnndsl.lang.settings import Settings
    from cnndsl.training import Preprocess, Trainer, make_optimizer

    def trainer(text: str, scan: bool | None) -> tuple[Trainer, bool]:
        net = cnndsl.compile(text.replace("input 224x224x3", f"input {size}x{size}x3"), scan=scan)
        settings = Settings(batch_size=8, optimizer="sgd")
        return Trainer(net, net.init(0), make_optimizer(settings, 10), Preprocess(1.0, (0.0,) * 3, (1.0,) * 3,
                       (size, size)), settings, 1000), net.scan

    print(f"train step of deep networks (batch 8, {size}x{size}, sgd): trace + compile seconds, a step's ms (median of 5)")
    totals: dict[tuple[str, str], float] = {}
    for stem in ("resnet50", "resnet101", "resnet152"):
        text = cnndsl.check(ROOT / "examples" / f"{stem}.cnn").graph.standalone_text  # imports written in
        line = []
        for mode, scan in (("unrolled", False), ("scanned", True), ("default", None)):
            t, scanned = trainer(text, scan)
            state = t.initial_state()
            arguments = (state["params"], state["stats"], state["opt_state"], state["meters"],
                         jnp.zeros((8, size, size, 3)), jnp.zeros(8, jnp.int32), jnp.arange(8), np.int32(0), None,
                         np.int32(0), np.int32(0))
            started = time.perf_counter()
            compiled = t.train_step.lower(*arguments).compile()
            totals[stem, mode] = time.perf_counter() - started
            out = compiled(*arguments)  # the first run of a program pays for allocation: not timed
            jax.block_until_ready(out)
            times = []
            for _ in range(5):  # the median of 5 steps: one step alone varied by 1.5x on this 2-core machine
                started = time.perf_counter()
                jax.block_until_ready(compiled(*arguments))
                times.append(time.perf_counter() - started)
            step = statistics.median(times)
            chosen = f" ({'scanned' if scanned else 'unrolled'})" if scan is None else ""
            line.append(f"{mode}{chosen} {totals[stem, mode]:5.1f} s, {step * 1e3:6.0f} ms")
        print(f"  {stem:<10} " + " | ".join(line), flush=True)
    for mode in ("unrolled", "scanned", "default"):
        print(f"  ResNet-152 / ResNet-50 trace + compile, {mode}: "
              f"{totals['resnet152', mode] / totals['resnet50', mode]:.2f}" + (" (target <= 2)" * (mode == "default")))


def overhead(tmp: Path) -> None:
    """Evaluation and checkpointing per epoch, for LeNet-5 on 5,000 32x32 images (1,000 test)."""
    import numpy as np

    import cnndsl

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (5000, 32, 32), dtype=np.uint8), rng.integers(0, 10, 5000)
    np.savez(tmp / "lenet.npz", x=x, y=y, x_test=x[:1000], y_test=y[:1000])
    marks: list[tuple[float, float]] = []
    cnndsl.train(ROOT / "examples" / "lenet5.cnn", run_dir=tmp / "lenet", data=f"npz:{tmp / 'lenet.npz'}", epochs=6,
                 quiet=True, on_epoch=lambda record: marks.append((time.perf_counter(), record["train_seconds"])))
    shares = [(t2 - t1 - steps) / (t2 - t1) for (t1, _), (t2, steps) in zip(marks, marks[1:])]
    print(f"LeNet-5, 4,500 training + 500 validation + 1,000 test images, epochs 2-6: evaluation + checkpointing "
          f"take {statistics.median(shares):.1%} of each epoch (target <= 10%); epoch "
          f"{statistics.median(t2 - t1 for (t1, _), (t2, _) in zip(marks, marks[1:])):.3f} s")


if __name__ == "__main__":
    main()
