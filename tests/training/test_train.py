"""`cnndsl train`, `eval`, `predict`: real training on digits, run directories, resume after SIGKILL, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cnndsl
from cnndsl.cli import main
from cnndsl.data import load_dataset
from cnndsl.lang.settings import Settings
from cnndsl.training import Preprocess, load_run, make_optimizer
from tests.conftest import ROOT, final_arrays, in_process
from tests.tolerances import NETWORK, NETWORK_CLOSE

DIGITS = ROOT / "examples" / "digits.cnn"


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cnndsl", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    run = tmp_path_factory.mktemp("digits") / "run"
    return run, cli("train", str(DIGITS), "--out", str(run), "--quiet")


def test_digits_example_reaches_97_percent_in_its_default_epochs(digits_run) -> None:
    run, result = digits_run
    assert result.returncode == 0, result.stderr
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    settings = json.loads((run / "settings.json").read_text())
    assert settings["epochs"] == 15 and settings["lr"] == 0.003  # from the spec's `train` line
    assert len(epochs) == 15 and [e["epoch"] for e in epochs] == list(range(1, 16))
    assert epochs[-1]["test_accuracy"] >= 0.97
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert "best validation accuracy" in result.stdout and "val acc" in result.stdout  # the final table


def test_run_directory_holds_everything(digits_run) -> None:
    run, _ = digits_run
    assert (run / "spec.cnn").read_text() == DIGITS.read_text()
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    last = sorted(int(p.name) for p in (run / "checkpoints" / "last").iterdir() if p.name.isdigit())
    best = [int(p.name) for p in (run / "checkpoints" / "best").iterdir() if p.name.isdigit()]
    assert len(last) == 3 and last[-1] == 15 * 20  # keep the newest 3 (20 steps per epoch: 1,294 images, 64 a batch)
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best_epoch = max(epochs, key=lambda e: e["val_accuracy"])  # the first epoch with the best validation accuracy
    assert best == [best_epoch["step"]]


def test_eval_reports_the_best_and_last_checkpoints(digits_run, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = digits_run
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = json.loads(in_process(capsys, "eval", str(DIGITS), "--run", str(run), "--json").stdout)
    last = json.loads(in_process(capsys, "eval", str(DIGITS), "--run", str(run), "--json", "--checkpoint",
                                 "last").stdout)
    assert best["n"] == last["n"] == 359 and best["val_n"] == last["val_n"] == 144
    chosen = max(epochs, key=lambda e: e["val_accuracy"])  # chosen on validation; test is only reported
    # accuracies are counts over the same images (pytest.approx: equal up to the division); losses are means of
    # float32 values summed by another program (evaluation batches of another size): NETWORK's bound
    assert best["val_accuracy"] == pytest.approx(chosen["val_accuracy"])
    assert best["accuracy"] == pytest.approx(chosen["test_accuracy"])
    assert last["accuracy"] == pytest.approx(epochs[-1]["test_accuracy"])
    assert last["loss"] == pytest.approx(epochs[-1]["test_loss"], rel=NETWORK)
    assert last["val_loss"] == pytest.approx(epochs[-1]["val_loss"], rel=NETWORK)


def test_predict_classifies_training_digits(digits_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = digits_run
    digits = load_dataset("digits")
    paths = []
    for i in range(5):
        np.save(tmp_path / f"d{i}.npy", digits.x_train[i])
        paths.append(str(tmp_path / f"d{i}.npy"))
    result = in_process(capsys, "predict", str(DIGITS), "--run", str(run), "--checkpoint", "last", "--json", "--top",
                        "2", *paths)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["top"][0]["class"] for row in rows] == list(digits.y_train[:5])
    assert all(row["top"][0]["probability"] > 0.5 for row in rows)
    np.save(tmp_path / "vector.npy", np.zeros(5))
    bad = in_process(capsys, "predict", str(DIGITS), "--run", str(run), str(tmp_path / "vector.npy"))
    assert bad.returncode == 1 and "vector.npy: expected one image" in bad.stderr and "Traceback" not in bad.stderr


def _train_args(run: Path, epochs: int, every: int) -> list[str]:
    return ["train", str(DIGITS), "--out", str(run), "--epochs", str(epochs), "--checkpoint-every", str(every),
            "--quiet", "--seed", "5"]


def test_sigkill_mid_epoch_then_resume_ends_with_the_same_parameters(tmp_path: Path) -> None:
    epochs, every, per_epoch = 30, 25, 20
    reference = tmp_path / "reference"
    assert cli(*_train_args(reference, epochs, every)).returncode == 0
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "cnndsl", *_train_args(killed, epochs, every)],
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoints = killed / "checkpoints" / "last"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:  # wait for a mid-epoch checkpoint past epoch 2
        steps = [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()] if checkpoints.exists() else []
        if any(s > 2 * per_epoch and s % per_epoch for s in steps):
            break
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert saved < epochs * per_epoch
    resumed = cli("train", "--resume", str(killed), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    a, b = final_arrays(reference), final_arrays(killed)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    lines = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
             for run in (reference, killed)]
    assert [(e["train_loss"], e["test_accuracy"]) for e in lines[0]] == \
           [(e["train_loss"], e["test_accuracy"]) for e in lines[1]]


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "cnndsl", *_train_args(run, 200, 0)],
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (run / "metrics.jsonl").is_file() or \
            not (run / "metrics.jsonl").read_text().strip():
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted at step" in err and "--resume" in err and "Traceback" not in err
    step = int(err.split("checkpoint saved at step ")[1].split(".")[0])
    assert step in [int(p.name) for p in (run / "checkpoints" / "last").iterdir() if p.name.isdigit()]
    resumed = cli("train", "--resume", str(run), "--epochs", "3", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3, (err, resumed.stderr, (run / "metrics.jsonl").read_text())


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert in_process(capsys, "train", str(DIGITS), "--out", str(run), "--epochs", "1", "--quiet").returncode == 0
    result = in_process(capsys, "train", "--resume", str(run), "--epochs", "3", "--lr", "1e38", "--quiet")
    assert result.returncode == 1
    assert "the loss became nan" in result.stderr and "last good checkpoint is step 20" in result.stderr
    assert "Traceback" not in result.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert in_process(capsys, "eval", str(DIGITS), "--run", str(run), "--checkpoint", "last").returncode == 0
    changed = in_process(capsys, "train", "--resume", str(run), "--epochs", "3", "--optimizer", "sgd", "--quiet")
    assert changed.returncode == 1 and "resume with the spec and --optimizer" in changed.stderr


def test_python_api_trains_and_returns_history(tmp_path: Path) -> None:
    started = time.perf_counter()
    result = cnndsl.train(DIGITS, run_dir=tmp_path / "run", quiet=True, epochs=2, batch_size=128,
                          checkpoint_every=4)
    wall = time.perf_counter() - started
    assert [e["epoch"] for e in result.history.epochs] == [1, 2]
    x = jnp.zeros((3, 8, 8, 1))
    assert result.model(x).shape == (3, 10)
    # An epoch's `seconds` is its wall time and holds its parts (inequalities of one clock, true at any speed):
    # the parts are disjoint intervals inside it, and the epochs' seconds are disjoint intervals of the call.
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for epoch in lines:
        parts = [epoch[f"{p}_seconds"] for p in ("train", "eval", "checkpoint")]
        assert all(p >= 0 for p in parts) and epoch["eval_seconds"] > 0 and epoch["checkpoint_seconds"] > 0
        assert sum(parts) <= epoch["seconds"]
        assert epoch["images_per_s"] == pytest.approx(10 * 128 / epoch["train_seconds"], rel=1e-12)  # 10 steps
    assert sum(e["seconds"] for e in lines) <= wall
    # short reprs, and the best epoch's accuracies under names that say which split they are
    assert repr(result).startswith("TrainResult('Digits', History(2 epochs; best epoch ") and len(repr(result)) < 200
    assert result.history.best_val_accuracy == result.history.best["val_accuracy"]
    assert result.history.best_test_accuracy == result.history.best["test_accuracy"]
    with pytest.warns(DeprecationWarning, match="best_val_accuracy"):
        assert result.history.best_accuracy == result.history.best_val_accuracy


def test_spec_settings_and_flags(tmp_path: Path) -> None:
    spec = tmp_path / "net.cnn"
    spec.write_text("network T\ninput 8x8x1\ntrain epochs = 1, optimizer = sgd, schedule = warmup_cosine,\n"
                    "      augment = (crop), label_smoothing = 0.1\ninput -> conv(4, 3x3) -> relu -> fc(10)\n")
    report = cnndsl.check(spec)
    assert dict(report.train_settings) == {"epochs": 1, "optimizer": "sgd", "schedule": "warmup-cosine",
                                           "augment": ("crop",), "label_smoothing": 0.1}
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--batch-size", "100", "--quiet"]) == 0
    saved = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert (saved["optimizer"], saved["batch_size"], saved["augment"]) == ("sgd", 100, ["crop"])


def test_resize_trains_a_32x32_network_on_8x8_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lenet = ROOT / "examples" / "lenet5.cnn"
    assert main(["train", str(lenet), "--out", str(tmp_path / "a"), "--epochs", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "8x8x1" in err and "32x32x1" in err and "--resize" in err
    assert main(["train", str(lenet), "--out", str(tmp_path / "b"), "--epochs", "1", "--resize", "--quiet"]) == 0


def test_augmentation_is_deterministic_and_flips_for_real() -> None:
    x = jnp.arange(2 * 8 * 8, dtype=jnp.float32).reshape(2, 8, 8, 1)
    flip = Preprocess(1.0, (0.0,), (1.0,), (8, 8), ("flip",))
    key = jax.random.key(0)
    out = flip(x, key)
    assert jnp.array_equal(out, flip(x, key))
    for i in range(2):
        assert jnp.array_equal(out[i], x[i]) or jnp.array_equal(out[i], x[i, :, ::-1])
    flipped = [bool(jnp.array_equal(flip(x, jax.random.key(k))[0], x[0, :, ::-1])) for k in range(16)]
    assert 0 < sum(flipped) < 16
    crop = Preprocess(1.0, (0.0,), (1.0,), (8, 8), ("crop",))
    moved = crop(x, jax.random.key(3))
    assert moved.shape == x.shape and not jnp.array_equal(moved, x)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["constant", "cosine", "warmup-cosine", "one-cycle", "step"])
def test_every_optimizer_and_schedule_builds_and_steps(optimizer: str, schedule: str) -> None:
    settings = Settings(optimizer=optimizer, schedule=schedule, epochs=2, weight_decay=1e-4, clip=1.0, nesterov=True)
    tx = make_optimizer(settings, steps_per_epoch=5)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    for _ in range(3):  # warmup schedules start at 0: take a few steps
        updates, state = tx.update({"w": jnp.ones(3)}, state, params)
        params = optax.apply_updates(params, updates)
    assert jnp.all(params["w"] < 1)  # moved against the gradient


def test_bfloat16_compute_trains_with_float32_parameters(tmp_path: Path) -> None:
    result = cnndsl.train(DIGITS, run_dir=tmp_path / "run", quiet=True, epochs=2, dtype="bfloat16")
    assert result.history.epochs[-1]["test_accuracy"] > 0.8
    loaded = load_run(None, tmp_path / "run", "last")
    assert {str(v.dtype) for v in loaded.params.values()} == {"float32"}


def test_export_of_a_trained_run_takes_raw_pixels(digits_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cnndsl.training import predict

    run, _ = digits_run
    assert main(["compile", str(DIGITS), "--emit", "export", "-o", str(tmp_path / "art"), "--run", str(run),
                 "--quiet"]) == 0
    images = load_dataset("digits").x_test[:6]  # raw 0..16 pixels, as the dataset stores them
    exported = cnndsl.load_exported(tmp_path / "art")
    assert exported.meta["preprocess"]["scale"] == 16.0 and exported.meta["classes"][:2] == ["0", "1"]
    np.testing.assert_allclose(exported.probabilities(images), predict(DIGITS, run, list(images)), **NETWORK_CLOSE)

    # `cnndsl run` takes image files as `predict` does: the same PNGs (gray 8x8, RGB, and 16x16 resized) give
    # the same probabilities through the export and through the run (NETWORK_CLOSE: the exported program and
    # the live module are two XLA compilations of one float32 computation; measured 1.2e-7)
    from PIL import Image

    pngs = []
    for i, image in enumerate(images[:3]):
        gray = (image[..., 0] * (255 / 16)).round().astype(np.uint8)
        variants = {"gray": gray, "rgb": np.stack([gray] * 3, axis=-1), "big": np.kron(gray, np.ones((2, 2), np.uint8))}
        for kind, pixels in variants.items():
            Image.fromarray(pixels).save(tmp_path / f"{kind}{i}.png")
            pngs.append(str(tmp_path / f"{kind}{i}.png"))
    via_export = subprocess.run([sys.executable, "-m", "cnndsl", "run", str(tmp_path / "art"), *pngs, "--json",
                                 "--top", "10"], capture_output=True, text=True, timeout=300,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    via_run = in_process(capsys, "predict", "--run", str(run), *pngs, "--json", "--top", "10")
    assert via_export.returncode == 0 and via_run.returncode == 0, via_export.stderr + via_run.stderr
    for a, b in zip(via_export.stdout.splitlines(), via_run.stdout.splitlines(), strict=True):
        top_a, top_b = (sorted((t["class"], t["probability"]) for t in json.loads(line)["top"]) for line in (a, b))
        assert [c for c, _ in top_a] == [c for c, _ in top_b]
        np.testing.assert_allclose([p for _, p in top_a], [p for _, p in top_b], **NETWORK_CLOSE)


def test_resume_skips_a_damaged_newest_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert in_process(capsys, "train", str(DIGITS), "--out", str(run), "--epochs", "1", "--quiet").returncode == 0
    (run / "checkpoints" / "last" / "30" / "default").mkdir(parents=True)  # a step whose files are gone
    resumed = in_process(capsys, "train", "--resume", str(run), "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert "checkpoint step 30 cannot be restored; trying an older one" in resumed.stderr
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_spec_of_another_shape_is_told_the_datas_own_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "rgb.cnn"
    spec.write_text("network T\ninput 32x32x3\ninput -> conv(4, 3x3) -> fc(10)\n")
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--epochs", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "change `input` to 8x8x1 (or to 32x32x1 and pass --resize)" in err
    assert main(["train", str(spec), "--out", str(tmp_path / "run2"), "--resize", "--epochs", "1", "--quiet"]) == 1
    assert "change `input` to 32x32x1" in capsys.readouterr().err


def test_a_training_run_compiles_each_program_once(tmp_path: Path) -> None:
    """Eager jax operations outside the jitted functions would each be a compilation (there were 98)."""
    from cnndsl.nn.compilations import count_compilations

    with count_compilations() as compiled:
        cnndsl.train(DIGITS, run_dir=tmp_path / "run", epochs=2, quiet=True)
    assert len(compiled) <= 5 and len(set(compiled)) == len(compiled), compiled
    with count_compilations() as again:  # a resume compiles the same programs (in a new process: each once)
        cnndsl.train(None, run_dir=tmp_path / "run", resume=True, epochs=3, quiet=True)
    assert len(again) <= 5, again


def test_redirected_output_is_one_line_per_epoch(tmp_path: Path) -> None:
    """Not a terminal: no progress bar redrawn into the log, no blank lines, just the epochs."""
    result = cli("train", str(DIGITS), "--out", str(tmp_path / "run"), "--epochs", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"], lines
    assert all(line.startswith("epoch ") and "val acc" in line and "test acc" in line for line in lines)
    assert "\x1b" not in result.stderr and "\r" not in result.stderr


def test_training_only_heads_add_their_weighted_loss_and_nothing_else(tmp_path: Path) -> None:
    body = ("network H\ninput 8x8x1\ninput -> conv(8, 3x3, pad=same) -> relu -> @early -> conv(8, 3x3, pad=same)"
            " -> relu -> global_avgpool -> fc(10)\n")
    head = "training head aux = @early -> global_avgpool -> fc(10)\ntrain aux weight = {}\n"
    histories = {}
    for name, text in (("plain", body), ("zero", body + head.format(0)), ("aux", body + head.format(0.3))):
        spec = tmp_path / f"{name}.cnn"
        spec.write_text(text)
        histories[name] = cnndsl.train(spec, run_dir=tmp_path / name, quiet=True, epochs=1, batch_size=128).history
    plain, zero, aux = (histories[k].epochs[0] for k in ("plain", "zero", "aux"))
    # With weight 0 the head changes nothing the main output computes: the main layers are made first (the
    # same initial values), their gradients gain exact zeros; only XLA's fusion of the larger program may
    # reorder float32 sums (NETWORK: the whole-network bound).
    for key in ("train_loss", "val_loss", "test_loss"):
        assert zero[key] == pytest.approx(plain[key], rel=NETWORK), key
    # With 0.3 the training loss adds 0.3 x the head's cross-entropy: a linear classifier of 8 pooled features
    # after one epoch is far from zero loss (above 1 nat), so the sum is over 0.3 higher; evaluation
    # reports the main output alone.
    assert aux["train_loss"] > plain["train_loss"] + 0.3
    assert aux["val_loss"] < aux["train_loss"] - 0.3
    # each head's own training loss is recorded (and drawn in curves.png): here above 1 nat, as said
    assert aux["train_loss_aux"] > 1 and zero["train_loss_aux"] > 1 and "train_loss_aux" not in plain


def test_a_weighted_regular_head_is_trained_evaluated_and_exported(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "two.cnn"
    spec.write_text("network Two\ninput 8x8x1\ninput -> conv(8, 3x3, pad=same) -> relu -> @early"
                    " -> conv(8, 3x3, pad=same) -> relu -> global_avgpool -> fc(10)\n"
                    "head early = @early -> global_avgpool -> fc(10)\n"
                    "training head aux = @early -> flatten -> fc(10)\n"
                    "train early weight = 0.5\n")
    run = tmp_path / "run"
    history = cnndsl.train(spec, run_dir=run, quiet=True, epochs=1, batch_size=128).history
    record = history.epochs[0]
    assert set(record["val_heads"]) == {"early"} and 0 <= record["val_heads"]["early"]["accuracy"] <= 1
    assert {"train_loss_early", "train_loss_aux"} <= set(record)
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores["heads"]) == {"early"} and scores["heads"]["early"]["loss"] > 0
    # the export: the main output and the regular head, by name; the training-only head's arrays left out
    assert main(["compile", str(spec), "--emit", "export", "--run", str(run), "-o", str(tmp_path / "art"),
                 "--quiet"]) == 0
    exported = cnndsl.load_exported(tmp_path / "art")
    assert exported.meta["heads"] == {"early": [10]}
    assert not any(name.startswith("fc3/") for name in exported.params)  # fc3: the training-only head's layer
    pixels = load_dataset("digits").x_test[:4].astype(np.float32)
    outputs = exported.outputs(pixels)
    loaded = load_run(None, run)
    module = loaded.trainer.module(loaded.params, loaded.stats, train=False)
    live = module(loaded.trainer.preprocess(jnp.asarray(pixels)), heads="inference")
    assert set(outputs) == {"output", "early"} and set(live) == {"main", "early"}
    np.testing.assert_allclose(outputs["output"], np.asarray(live["main"]), **NETWORK_CLOSE)
    np.testing.assert_allclose(outputs["early"], np.asarray(live["early"]), **NETWORK_CLOSE)
    np.testing.assert_array_equal(exported(pixels), outputs["output"])
