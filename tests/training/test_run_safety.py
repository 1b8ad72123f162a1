"""Run directories survive kills, concurrent trainers, damaged checkpoints and edited files (issue 8).

A kill can land anywhere: before the first checkpoint, between a checkpoint's files, while another
trainer holds the run. Each case ends in a run that resumes (to exactly the parameters of an uninterrupted
run where the data allow it) or in one line naming the file and what is wrong — never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import cnndsl
from cnndsl.lang.settings import TrainingError
from cnndsl.training import checkpoint_managers, load_run, restore, save_checkpoint
from tests.conftest import ROOT, final_arrays, in_process

DIGITS = ROOT / "examples" / "digits.cnn"
TRAIN = ["--epochs", "2", "--seed", "3", "--quiet"]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cnndsl", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cnndsl", *args], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen[str], seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, f"the trainer ended early: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)


def assert_same_run(a: Path, b: Path) -> None:
    x, y = final_arrays(a), final_arrays(b)
    assert x.keys() == y.keys()
    for name in x:
        np.testing.assert_array_equal(x[name], y[name], err_msg=name)
    epochs = [[json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (a, b)]
    assert epochs[0] == epochs[1] == [1, 2]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted two-epoch run: what every resumed run must end as."""
    run = tmp_path_factory.mktemp("reference") / "run"
    result = cli("train", str(DIGITS), "--out", str(run), *TRAIN)
    assert result.returncode == 0, result.stderr
    return run


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = start("train", str(DIGITS), "--out", str(run), *TRAIN)
    wait_for(run / "settings.json", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not list((run / "checkpoints" / "last").glob("[0-9]*")), "killed too late for this test"
    resumed = cli("train", "--resume", str(run), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(reference, run)


@pytest.mark.parametrize("kept", [
    ("settings.json",),
    ("settings.json", "spec.cnn"),
    ("settings.json", "spec.cnn", "metrics.jsonl", ".lock"),
    ("settings.json", "spec.cnn", "metrics.jsonl", "unfinished checkpoint"),
])
def test_every_point_before_the_first_checkpoint_is_resumable(reference: Path, tmp_path: Path, kept: tuple) -> None:
    """What a kill leaves at each point before the first checkpoint, rebuilt from the reference run."""
    run = tmp_path / "run"
    run.mkdir()
    for name in kept:
        if name == "unfinished checkpoint":  # orbax writes a step into a temporary folder, then renames it
            (run / "checkpoints" / "last" / "20.orbax-checkpoint-tmp-1").mkdir(parents=True)
        elif name == ".lock":
            (run / name).write_text("12345\n")  # a dead trainer's lock file: the lock itself died with it
        else:
            shutil.copy(reference / name, run / name)
    result = cnndsl.train(None, run_dir=run, resume=True, quiet=True)
    assert [e["epoch"] for e in result.history.epochs] == [1, 2]
    assert not list((run / "checkpoints" / "last").glob("*tmp*"))
    assert_same_run(reference, run)


def test_a_folder_holding_only_a_dead_lock_is_a_fresh_start(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("12345\n")  # killed between making the folder and writing its settings
    assert cli("train", "--resume", str(run)).returncode == 2
    result = cli("train", str(DIGITS), "--out", str(run), "--epochs", "1", "--quiet")
    assert result.returncode == 0, result.stderr


def test_a_second_trainer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = start("train", str(DIGITS), "--out", str(run), "--epochs", "500", "--quiet")
    try:
        wait_for(run / "settings.json", first)
        second = cli("train", "--resume", str(run), "--quiet")
        assert second.returncode == 1
        assert second.stderr.strip() == (f"cnndsl: {run} is being trained by process {first.pid}; wait for it to "
                                         "finish or stop it first")
        with pytest.raises(TrainingError, match=f"being trained by process {first.pid}"):
            cnndsl.train(None, run_dir=run, resume=True, quiet=True)
        again = cli("train", str(DIGITS), "--out", str(run), "--quiet")
        assert again.returncode == 2 and "already holds a training run" in again.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The first trainer may have finished any number of epochs before the kill (none on a quiet machine, several
    # on a loaded one): resume to one epoch past what it recorded, so the resumed run always trains.
    metrics = run / "metrics.jsonl"
    recorded = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    target = recorded + 1
    resumed = cli("train", "--resume", str(run), "--epochs", str(target), "--quiet")  # the lock died with its holder
    assert resumed.returncode == 0, resumed.stderr
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == list(range(1, target + 1))


def damage(step_dir: Path, how: str) -> None:
    files = sorted(p for p in step_dir.rglob("*") if p.is_file())
    assert files
    for path in files:
        if how == "empty":
            path.write_bytes(b"")
        elif how == "truncated":
            path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])
        elif how == "metadata gone" and path.name == "_CHECKPOINT_METADATA":
            path.unlink()
        elif how == "garbage":
            path.write_bytes(b"\x00\xff" * 40)


@pytest.mark.parametrize("how", ["empty", "truncated", "metadata gone", "garbage"])
def test_a_damaged_newest_checkpoint_is_skipped(reference: Path, tmp_path: Path, how: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    for manager in ("last", "best"):
        newest = max((p for p in (run / "checkpoints" / manager).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        damage(newest, how)
    (run / "metrics.jsonl").write_text((reference / "metrics.jsonl").read_text())
    resumed = cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    if how != "metadata gone":  # orbax restores the data without its metadata file; the rest is unreadable
        assert "checkpoint step 40 cannot be restored; trying an older one" in resumed.stderr
    assert "ERROR:absl" not in resumed.stderr and "Traceback" not in resumed.stderr
    assert_same_run(reference, run)


def test_one_flipped_byte_in_a_checkpoint_is_noticed_or_harmless(reference: Path, tmp_path: Path) -> None:
    """Issue 20: orbax keeps no checksum of array data, so a flipped byte in a data file restored as another
    weight, silently. Now each data file of the best checkpoint, damaged in turn, either restores exactly
    the saved arrays (the byte was in something restore does not read) or stops with "damaged", never a
    wrong weight; a damaged index is one line from `compile --emit onnx --run` (it printed tracebacks)."""
    intact = load_run(None, reference)
    step = next(p for p in (reference / "checkpoints" / "best").iterdir() if p.name.isdigit())
    data = sorted((step / "default").rglob("d/*"))
    noticed = 0
    for index, path in enumerate(data):
        run = tmp_path / f"r{index}"
        shutil.copytree(reference, run)
        copy = run / path.relative_to(reference)
        damaged = bytearray(copy.read_bytes())
        damaged[len(damaged) // 2] ^= 0x5A
        copy.write_bytes(bytes(damaged))
        try:
            loaded = load_run(None, run)
        except TrainingError as err:
            assert "it is damaged" in str(err), err
            noticed += 1
            continue
        for group in ("params", "stats"):
            for name, array in getattr(intact, group).items():
                np.testing.assert_array_equal(np.asarray(getattr(loaded, group)[name]), np.asarray(array))
    assert noticed >= 1  # the parameters' own data files
    run = tmp_path / "index"
    shutil.copytree(reference, run)
    manifest = run / step.relative_to(reference) / "default" / "manifest.ocdbt"
    manifest.write_bytes(manifest.read_bytes()[:-20] + bytes(20))
    result = cli("compile", str(DIGITS), "--emit", "onnx", "--run", str(run), "-o", str(tmp_path / "m.onnx"))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "it is damaged" in result.stderr and not (tmp_path / "m.onnx").exists()


def test_a_damaged_index_is_reported_once_and_its_sibling_reads_stay_quiet(
        reference: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """orbax reads a checkpoint's arrays in parallel tasks: with a damaged index all of them fail, the first is
    the one-line error, and the others' (the same damage) must not reach the screen as asyncio's "Task exception
    was never retrieved" when the garbage collector finds them; asyncio's other errors still do."""
    import gc
    import logging

    asyncio_logger = logging.getLogger("asyncio")
    monkeypatch.setattr(asyncio_logger, "filters", [])
    load_run(None, reference)  # the filter is in place before a restore: siblings can fail while it runs
    gc.collect()
    assert [type(f).__name__ for f in asyncio_logger.filters] == ["_DamageAlreadyReported"]
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    step = next(p for p in (run / "checkpoints" / "best").iterdir() if p.name.isdigit())
    manifest = step / "default" / "manifest.ocdbt"
    manifest.write_bytes(manifest.read_bytes()[:-20] + bytes(20))
    with pytest.raises(TrainingError, match="it is damaged"):
        load_run(None, run)
    gc.collect()
    damage = ValueError('Error opening "zarr" driver: Error decoding local file "manifest.ocdbt"')
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio_logger.error("Task exception was never retrieved\nfuture: <Task>", exc_info=(ValueError, damage, None))
        asyncio_logger.error("Task exception was never retrieved\nfuture: <Task>",
                             exc_info=(RuntimeError, RuntimeError("something else"), None))
    messages = [(record.getMessage(), str(record.exc_info[1])) for record in caplog.records if record.name == "asyncio"]
    assert messages == [("Task exception was never retrieved\nfuture: <Task>", "something else")], messages


SETTINGS_DAMAGE = {
    "empty": "",
    "truncated": '{"format": "cnndsl.run/1", "epochs": 2, "norm',
    "a list": "[1, 2]",
    "no schema": '{"format": "cnndsl.run/1"}',
}


def edited(settings: dict, key: str, value: object) -> str:
    changed = dict(settings)
    if "." in key:
        outer, inner = key.split(".")
        changed[outer] = {**changed[outer], inner: value}
    else:
        changed[key] = value
    return json.dumps(changed)


@pytest.mark.parametrize("case", [*SETTINGS_DAMAGE, "steps_per_epoch=0", "epochs='ten'", "lr=-1", "seed=1.5",
                                  "normalization.std=[0.0]", "classes=3", "optimizer='rmsprop'", "augment=5"])
def test_a_damaged_settings_file_is_named_by_every_command(reference: Path, tmp_path: Path, case: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    if case in SETTINGS_DAMAGE:
        text = SETTINGS_DAMAGE[case]
    else:
        key, value = case.split("=", 1)
        text = edited(json.loads((reference / "settings.json").read_text()), key, eval(value))  # noqa: S307
    (run / "settings.json").write_text(text)
    np.save(tmp_path / "x.npy", np.zeros((8, 8), np.float32))
    for args in (["train", "--resume", str(run)], ["eval", str(DIGITS), "--run", str(run)],
                 ["predict", str(DIGITS), "--run", str(run), str(tmp_path / "x.npy")],
                 ["compile", str(DIGITS), "--emit", "export", "--run", str(run), "-o", str(tmp_path / "art")]):
        result = in_process(capsys, *args)
        assert result.returncode == 1, (args, result.stderr)
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"cnndsl: {run / 'settings.json'}: ") and "Traceback" not in result.stderr


@pytest.mark.parametrize("line", ["not json at all", '{"epoch": "one"}', '{"epoch": 2, "step": 40}', "[]"])
def test_a_damaged_metrics_line_is_named_with_its_number(reference: Path, tmp_path: Path, line: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    first = (reference / "metrics.jsonl").read_text().splitlines()[0]
    (run / "metrics.jsonl").write_text(first + "\n" + line + "\n")
    result = in_process(capsys, "train", "--resume", str(run), "--epochs", "3")
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"cnndsl: {run / 'metrics.jsonl'}:2: not a metrics record")


def test_a_checkpoint_holding_nan_is_refused(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    loaded = load_run(None, run)
    last, best = checkpoint_managers(run, 3)
    state = restore(best, loaded.trainer.initial_state())
    name = sorted(state["params"])[0]
    state["params"][name] = state["params"][name].at[0].set(jnp.nan)
    step = int(state["step"])
    shutil.rmtree(run / "checkpoints" / "best" / str(step))
    manager = checkpoint_managers(run, 3)[1]
    save_checkpoint(manager, step, state)
    manager.wait_until_finished()
    np.save(tmp_path / "x.npy", np.zeros((8, 8), np.float32))
    for args in (["eval", str(DIGITS), "--run", str(run)], ["predict", str(DIGITS), "--run", str(run),
                                                             str(tmp_path / "x.npy")]):
        result = in_process(capsys, *args)
        assert result.returncode == 1
        assert f"{name} holds NaN or infinite values" in result.stderr and "Traceback" not in result.stderr
