"""Training speed: train-step throughput per example, time to 97% on digits, PyTorch / Keras comparisons,
and the cost of feeding data.

    python benchmarks/train.py [--only digits,lenet5,...] [--repeat 3]

1. images/s of one train step (adam, batch 32, the example's own input size, float32) for each example;
2. wall time of `cnndsl.train(examples/digits.cnn)` until the test accuracy first reaches 97%, including
   trace and compile, and the final accuracy;
3. the same network and schedule as a plain PyTorch CPU loop (when torch is installed: the `bench` extra)
   and as a Keras 3 on JAX `fit` (when keras is installed), as ratios of time per epoch;
4. the step time with data feeding (the epoch's permutation, the on-device gather, normalization)
   divided by the step time on one fixed batch (target <= 1.05).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import cnndsl  # noqa: E402
from cnndsl.data import load_dataset  # noqa: E402
from cnndsl.data.pipeline import epoch_order  # noqa: E402
from cnndsl.lang.settings import Settings  # noqa: E402
from cnndsl.training import Preprocess, Trainer, make_optimizer, normalization  # noqa: E402

EXAMPLES = ["digits", "lenet5", "vgg_cifar", "alexnet", "zfnet", "googlenet", "resnet18", "vgg16", "resnet50"]


def make_trainer(name: str, batch: int, num_classes: int | None = None) -> tuple[Trainer, Any]:
    net = cnndsl.compile(ROOT / "examples" / f"{name}.cnn")
    classes = num_classes or net.report.output_shape[0]
    settings = Settings(batch_size=batch)
    preprocess = Preprocess(1.0, (0.0,) * net.input_shape[2], (1.0,) * net.input_shape[2], net.input_shape[:2])
    trainer = Trainer(net, net.init(0), make_optimizer(settings, 100), preprocess, settings, classes)
    return trainer, net


def step_throughput(name: str, batch: int, repeat: int) -> tuple[float, float]:
    """(images/s, compile seconds) of the train step on one random batch of the example's input size."""
    trainer, net = make_trainer(name, batch)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, *net.input_shape)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, net.report.output_shape[0], batch).astype(np.int32))
    order, index = jnp.arange(batch), jnp.asarray(0, jnp.int32)
    state = [trainer.params, trainer.stats, trainer.optimizer.init(trainer.params), jnp.zeros(3)]
    start = time.perf_counter()
    *state, loss = trainer.train_step(*state, x, y, order, index, None, np.int32(0), np.int32(0))
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - start
    times = []
    steps = 3 if net.report.macs > 1e9 else 10
    for _ in range(repeat):
        start = time.perf_counter()
        for i in range(steps):
            *state, loss = trainer.train_step(*state, x, y, order, index, None, np.int32(0), np.int32(i))
        jax.block_until_ready(loss)
        times.append((time.perf_counter() - start) / steps)
    return batch / statistics.median(times), compile_s


def feeding_ratio(repeat: int) -> tuple[float, float, float]:
    """(ms per step with feeding, ms per step on a fixed batch, ratio) for digits at batch 64."""
    data = load_dataset("digits")
    batch = 64
    net = cnndsl.compile(ROOT / "examples" / "digits.cnn")
    mean, std = normalization(data)
    settings = Settings(batch_size=batch)
    steps = len(data.x_train) // batch
    trainer = Trainer(net, net.init(0), make_optimizer(settings, steps), Preprocess(data.scale, mean, std, (8, 8)),
                      settings, 10)
    x_all, y_all = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    x_fixed, y_fixed = x_all[:batch], y_all[:batch]
    fixed_order = jnp.arange(batch)
    state = [trainer.params, trainer.stats, trainer.optimizer.init(trainer.params), jnp.zeros(3)]

    def epoch(feed: bool, epoch_index: int) -> float:
        nonlocal state
        start = time.perf_counter()
        order = jnp.asarray(epoch_order(0, epoch_index, len(data.x_train)), jnp.int32) if feed else fixed_order
        for i in range(steps):
            args = (x_all, y_all, order, jnp.asarray(i, jnp.int32), None) if feed else \
                (x_fixed, y_fixed, fixed_order, jnp.asarray(0, jnp.int32), None)
            *state, loss = trainer.train_step(*state, *args, np.int32(0), np.int32(i))
        jax.block_until_ready(loss)
        return (time.perf_counter() - start) / steps

    epoch(True, 0)
    epoch(False, 0)
    fed, fixed = [], []
    for r in range(max(repeat, 5)):  # alternate, so that drift in the machine hits both alike
        fed.append(epoch(True, r + 1))
        fixed.append(epoch(False, r + 1))
    a, b = statistics.median(fed), statistics.median(fixed)
    return a * 1e3, b * 1e3, a / b


def time_to_97() -> tuple[float | None, float, float, float]:
    """(seconds until test accuracy >= 97% incl. compile, total seconds, final accuracy, seconds per epoch)."""
    import tempfile

    reached: list[float] = []
    start = time.perf_counter()

    def on_epoch(record: dict[str, Any]) -> None:
        if record["test_accuracy"] >= 0.97 and not reached:
            reached.append(time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as run:
        result = cnndsl.train(ROOT / "examples" / "digits.cnn", run_dir=Path(run) / "run", quiet=True,
                              on_epoch=on_epoch)
    total = time.perf_counter() - start
    epochs = result.history.epochs
    per_epoch = statistics.median(e["seconds"] for e in epochs[1:])  # the first epoch includes compilation
    return (reached[0] if reached else None), total, epochs[-1]["test_accuracy"], per_epoch


def torch_digits(epochs: int = 15) -> tuple[float, float, float] | None:
    """(seconds per epoch, final test accuracy, seconds to 97%) of the digits network in plain PyTorch."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    torch.manual_seed(0)
    data = load_dataset("digits")
    mean, std = normalization(data)

    def prep(x: np.ndarray) -> torch.Tensor:
        return torch.tensor(((x / data.scale - mean[0]) / std[0]).transpose(0, 3, 1, 2), dtype=torch.float32)

    def cbr(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5), nn.ReLU()]

    model = nn.Sequential(*cbr(1, 32), *cbr(32, 32), nn.MaxPool2d(2), *cbr(32, 64), *cbr(64, 64),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 10))
    x, y = prep(data.x_train), torch.tensor(data.y_train, dtype=torch.long)
    xt, yt = prep(data.x_test), torch.tensor(data.y_test, dtype=torch.long)
    batch, steps = 64, len(x) // 64
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps)
    times, accuracy, reached, start = [], 0.0, None, time.perf_counter()
    for _ in range(epochs):
        began = time.perf_counter()
        model.train()
        order = torch.randperm(len(x))
        for i in range(steps):
            picked = order[i * batch:(i + 1) * batch]
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[picked]), y[picked]).backward()
            optimizer.step()
            schedule.step()
        times.append(time.perf_counter() - began)
        model.eval()
        with torch.no_grad():
            accuracy = float((model(xt).argmax(-1) == yt).float().mean())
        if accuracy >= 0.97 and reached is None:
            reached = time.perf_counter() - start
    return statistics.median(times[1:]), accuracy, reached or float("nan")


def keras_digits(epochs: int = 15) -> tuple[float, float] | None:
    """(seconds per epoch, final test accuracy) of the digits network as a Keras 3 (JAX backend) `fit`."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError:
        return None
    if keras.backend.backend() != "jax":
        return None
    keras.utils.set_random_seed(0)
    data = load_dataset("digits")
    mean, std = normalization(data)
    x = ((data.x_train / data.scale - mean[0]) / std[0]).astype(np.float32)
    xt = ((data.x_test / data.scale - mean[0]) / std[0]).astype(np.float32)
    layers = keras.layers

    def cbr(width: int) -> list[Any]:
        return [layers.Conv2D(width, 3, padding="same"), layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
                layers.ReLU()]

    model = keras.Sequential([keras.Input((8, 8, 1)), *cbr(32), *cbr(32), layers.MaxPooling2D(2), *cbr(64), *cbr(64),
                              layers.GlobalAveragePooling2D(), layers.Dropout(0.2), layers.Dense(10)])
    steps = len(x) // 64
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, epochs * steps)
    model.compile(keras.optimizers.Adam(schedule), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=True)
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.began)

    model.fit(x, data.y_train, batch_size=64, epochs=epochs, verbose=0, callbacks=[Timer()], shuffle=True)
    accuracy = float(np.mean(np.argmax(model.predict(xt, verbose=0), -1) == data.y_test))
    return statistics.median(times[1:]), accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(EXAMPLES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs")
    print(f"\ntrain step, adam, batch {args.batch}, float32:")
    print(f"{'example':<11} {'input':>11} {'images/s':>10} {'compile s':>10}")
    for name in args.only.split(","):
        rate, compile_s = step_throughput(name, args.batch, args.repeat)
        shape = "x".join(map(str, cnndsl.check(ROOT / "examples" / f"{name}.cnn").input_shape))
        print(f"{name:<11} {shape:>11} {rate:>10,.0f} {compile_s:>10.1f}", flush=True)
    reached, total, accuracy, per_epoch = time_to_97()
    print(f"\ndigits (examples/digits.cnn, its own settings): 97% after {reached:.1f} s wall incl. compile; "
          f"{total:.1f} s for all epochs, final test accuracy {accuracy:.2%}, {per_epoch * 1e3:.0f} ms/epoch")
    torch_result = torch_digits()
    if torch_result is None:
        print("PyTorch: not installed (pip install -e '.[bench]'), no comparison")
    else:
        torch_epoch, torch_accuracy, torch_reached = torch_result
        print(f"PyTorch CPU loop, same network and schedule: {torch_epoch * 1e3:.0f} ms/epoch, final accuracy "
              f"{torch_accuracy:.2%}, 97% after {torch_reached:.1f} s; cnndsl / PyTorch time per epoch = "
              f"{per_epoch / torch_epoch:.2f}")
    keras_result = keras_digits()
    if keras_result is None:
        print("Keras: not installed (pip install keras, JAX backend), no comparison")
    else:
        keras_epoch, keras_accuracy = keras_result
        print(f"Keras 3 on JAX fit, same network and schedule: {keras_epoch * 1e3:.0f} ms/epoch, final accuracy "
              f"{keras_accuracy:.2%}; cnndsl / Keras time per epoch = {per_epoch / keras_epoch:.2f}")
    fed, fixed, ratio = feeding_ratio(args.repeat)
    print(f"\ndata feeding (digits, batch 64): {fed:.2f} ms/step with feeding, {fixed:.2f} ms/step on a fixed batch, "
          f"ratio {ratio:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
