"""cnndsl against its peers on one workload, side by side in one run: first epoch, later epochs, whole process.

    python benchmarks/peers.py [--epochs 15] [--repeat 1] [--only cnndsl,keras,torch]

The workload (the same in every tool): a LeNet-5-style network,
`conv(6,5x5,same) -> relu -> maxpool -> conv(16,5x5) -> relu -> maxpool -> fc 120 -> relu -> fc 84 -> relu -> fc 10`,
on 4,000 28x28 grayscale images (10 classes: a fixed pattern per class under noise, made here and saved as an
.npz), 1,000 more for testing, Adam at 1e-3, batch 64, shuffled every epoch, the test split evaluated after
every epoch. Each tool runs as a process of its own, one after the other, so the same machine load hits all:

- cnndsl through its Python API (`cnndsl.train`, a run directory with its checkpoints, metrics, curves),
  with an empty compilation cache (cold) and again with the cache that run filled (warm);
- Keras 3 on JAX (`model.fit(..., validation_data=test)`, jit_compile), where keras is installed;
- PyTorch eager on 2 threads (a plain loop), where torch is installed (the `bench` extra).

Each process reports its epochs by its own clock ("first epoch" includes what that tool compiles in it) and the
time from the process's launch until its first epoch's test accuracy is known ("first result"); "whole process"
is launch to exit, imports and data loading included. The ratios are to the fastest peer's figure.
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

SPEC = """\
network LeNetStyle
input 28x28x1
input -> conv(6, 5x5, pad=same) -> relu -> maxpool(2x2) -> conv(16, 5x5) -> relu -> maxpool(2x2)
    -> fc(120) -> relu -> fc(84) -> relu -> fc(10)
"""


def make_data(path: Path, train: int = 4000, test: int = 1000, seed: int = 0) -> None:
    """10 classes of 28x28 grayscale images: a fixed smooth pattern per class, shifted by up to 3 pixels, under
    noise (learnable, not trivially: LeNet reaches ~95-100% in a few epochs)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    patterns = rng.random((10, 7, 7)).repeat(4, 1).repeat(4, 2)  # 28x28 blocks
    labels = rng.integers(0, 10, train + test)
    shifts = rng.integers(-3, 4, (train + test, 2))
    images = np.stack([np.roll(patterns[c], tuple(s), (0, 1)) for c, s in zip(labels, shifts)])
    images = np.clip(images * 120 + rng.normal(0, 110, images.shape), 0, 255).astype(np.uint8)[..., None]
    np.savez(path, x=images[:train], y=labels[:train].astype(np.int32), x_test=images[train:],
             y_test=labels[train:].astype(np.int32))


def child_cnndsl(data: Path, epochs: int, launched: float, run: Path) -> dict[str, Any]:
    import cnndsl
    from cnndsl.lang.settings import Settings

    ends: list[float] = []
    accuracy: list[float] = []

    def on_epoch(record: dict[str, Any]) -> None:
        ends.append(time.time())
        accuracy.append(record["test_accuracy"])

    settings = Settings(data=f"npz:{data}", epochs=epochs, batch_size=64, optimizer="adam", lr=1e-3,
                        val_fraction=0.0)
    result = cnndsl.train(SPEC, settings, run_dir=run, quiet=True, on_epoch=on_epoch)
    seconds = [e["seconds"] for e in result.history.epochs]
    return {"epochs": seconds, "first_result": ends[0] - launched, "accuracy": accuracy[-1]}


def child_keras(data: Path, epochs: int, launched: float) -> dict[str, Any]:
    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    with np.load(data) as arrays:
        x, y, x_test, y_test = (arrays[k] for k in ("x", "y", "x_test", "y_test"))
    x, x_test = x.astype(np.float32) / 255.0, x_test.astype(np.float32) / 255.0
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28, 1)), layers.Conv2D(6, 5, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(16, 5, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
        layers.Dense(120, activation="relu"), layers.Dense(84, activation="relu"), layers.Dense(10)])
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=True)
    seconds: list[float] = []
    ends: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:  # after the validation pass
            seconds.append(time.perf_counter() - self.began)
            ends.append(time.time())

    history = model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, shuffle=True, callbacks=[Timer()],
                        validation_data=(x_test, y_test))
    return {"epochs": seconds, "first_result": ends[0] - launched,
            "accuracy": float(history.history["val_accuracy"][-1])}


def child_torch(data: Path, epochs: int, launched: float) -> dict[str, Any]:
    import numpy as np
    import torch
    from torch import nn

    torch.set_num_threads(2)
    torch.manual_seed(0)
    with np.load(data) as arrays:
        x, y, x_test, y_test = (arrays[k] for k in ("x", "y", "x_test", "y_test"))

    def tensor(images: Any) -> Any:
        return torch.tensor(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()

    x, x_test = tensor(x), tensor(x_test)
    y, y_test = torch.tensor(y, dtype=torch.long), torch.tensor(y_test, dtype=torch.long)
    model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                          nn.Linear(84, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seconds, ends, accuracy = [], [], 0.0
    steps = len(x) // 64
    for _ in range(epochs):
        began = time.perf_counter()
        model.train()
        order = torch.randperm(len(x))
        for i in range(steps):
            picked = order[i * 64:(i + 1) * 64]
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[picked]), y[picked]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(x_test).argmax(-1) == y_test).float().mean())
        seconds.append(time.perf_counter() - began)
        ends.append(time.time())
    return {"epochs": seconds, "first_result": ends[0] - launched, "accuracy": accuracy}


def run_child(tool: str, data: Path, epochs: int, folder: Path, env: dict[str, str]) -> dict[str, Any] | str:
    """One tool's process: its report with the whole process's wall time, or why it could not run."""
    launched = time.time()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", tool, "--data", str(data), "--epochs", str(epochs),
                           "--launched", repr(launched), "--folder", str(folder)],
                          env=env, cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        return (done.stderr.strip().splitlines() or ["failed"])[-1]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["whole"] = wall
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tool (medians are shown)")
    parser.add_argument("--only", default="cnndsl,keras,torch")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        data, folder = Path(args.data), Path(args.folder)
        if args.child.startswith("cnndsl"):
            report = child_cnndsl(data, args.epochs, args.launched, folder / f"run-{time.time_ns()}")
        else:
            report = {"keras": child_keras, "torch": child_torch}[args.child](data, args.epochs, args.launched)
        print(json.dumps(report))
        return

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        data = folder / "lenet.npz"
        make_data(data)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CNNDSL_CACHE": str(folder / "cache")}
        tools = args.only.split(",")
        rows: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.repeat):  # each repeat runs every tool once, in turn, so drift hits all alike
            if "cnndsl" in tools:
                env["CNNDSL_CACHE"] = str(folder / f"cache-{time.time_ns()}")  # empty: cold
                for label in ("cnndsl cold cache", "cnndsl warm cache"):
                    rows.setdefault(label, []).append(run_child("cnndsl", data, args.epochs, folder, env))
            for tool, label in (("keras", "Keras 3 on JAX"), ("torch", "PyTorch eager, 2 threads")):
                if tool in tools:
                    rows.setdefault(label, []).append(run_child(tool, data, args.epochs, folder, env))
    print(f"{args.epochs} epochs of a LeNet-5-style network, 4,000 28x28 images + 1,000 test, Adam, batch 64; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; medians of {args.repeat} run(s)")
    table: dict[str, dict[str, float]] = {}
    for label, reports in rows.items():
        good = [r for r in reports if isinstance(r, dict)]
        if not good:
            print(f"{label}: not run ({reports[0]})")
            continue
        table[label] = {
            "first epoch": statistics.median(r["epochs"][0] for r in good),
            "later epochs": statistics.median(statistics.median(r["epochs"][1:] or r["epochs"]) for r in good),
            "first result": statistics.median(r["first_result"] for r in good),
            "whole process": statistics.median(r["whole"] for r in good),
            "test accuracy": statistics.median(r["accuracy"] for r in good)}
    columns = ["first epoch", "later epochs", "first result", "whole process"]
    print(f"{'':<26}" + "".join(f"{c:>20}" for c in columns) + f"{'test accuracy':>15}")
    best = {c: min(t[c] for t in table.values()) for c in columns}
    for label, figures in table.items():
        cells = "".join(f"{figures[c]:>9.2f} s ({figures[c] / best[c]:>4.2f}x)" for c in columns)
        print(f"{label:<26}{cells}{figures['test accuracy']:>15.1%}")


if __name__ == "__main__":
    main()
