"""Data parallelism over a `data` mesh axis: 4 simulated CPU devices give the 1-device results.

XLA_FLAGS must be set before JAX starts, so each check runs in a fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, final_arrays

# Batch norm and dropout: the global-batch statistics and the per-example dropout masks must not depend on
# how the batch is split. Convolutions before batch norm have no bias: its gradient is zero up to rounding.
#
# Layouts are compared with SGD. Every layout computes the same sums in another order, so each step's gradient
# differs by a few float32 ulps (2^-23 = 1.2e-7 relative); SGD applies it linearly, so over the 40 steps of
# two epochs (1,294 images, 64 a batch) the parameters drift apart by at most ~40 x 2 ulps = 1e-5 relative
# (LAYOUT_BOUND); measured 3e-7 to 5e-7 between 1, 4 and 2x2 devices. Adam divides each gradient by its own
# running magnitude: for a parameter whose gradient is almost zero (a channel that is nearly dead) that turns
# the rounding difference into a step of size lr, and the layouts ended 2e-4 apart here (docs/distributed.md).
# A batch split or assembled wrongly differs at the scale of the parameters' own updates, above 1e-2.
SPEC = """network DP
input 8x8x1
block stage(w) = conv(w, 3x3, pad=same, bias=false) -> bn -> relu
input -> stage(16) -> maxpool(2x2) -> stage(32) -> global_avgpool -> dropout(0.3) -> fc(10)
train epochs = 2, batch_size = 64, optimizer = sgd, lr = 0.05, schedule = cosine
"""
LAYOUT_BOUND = 1e-5

SCRIPT = """
import json, sys
import numpy as np
import cnndsl
from cnndsl.training import load_run
spec, out = sys.argv[1], sys.argv[2]
results = {}
shard = len(sys.argv) > 3
for devices in (1, 4):
    run = f"{out}/d{devices}"
    result = cnndsl.train(spec, run_dir=run, quiet=True, devices=devices, shard_params=shard and devices > 1)
    loaded = load_run(None, run, "last")
    results[devices] = ({k: np.asarray(v) for k, v in {**loaded.params, **loaded.stats}.items()},
                        result.history.epochs)
worst = max(float(np.abs(results[1][0][k] - results[4][0][k]).max() / (np.abs(results[1][0][k]).max() + 1e-12))
            for k in results[1][0])
print(json.dumps({"worst": worst, "epochs1": results[1][1], "epochs4": results[4][1],
                  "devices": json.load(open(f"{out}/d4/settings.json"))["devices"]}))
"""


def run_with_devices(count: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.parametrize("shard_params", [False, True])
def test_four_devices_train_like_one(tmp_path: Path, shard_params: bool) -> None:
    """Replicated state, or (shard_params) parameters and optimizer state split over the devices."""
    spec = tmp_path / "dp.cnn"
    spec.write_text(SPEC)
    result = run_with_devices(4, "-c", SCRIPT, str(spec), str(tmp_path), *(["shard"] if shard_params else []))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    # every parameter and statistic, relative to its array's scale (see LAYOUT_BOUND)
    assert out["worst"] < LAYOUT_BOUND, out["worst"]
    assert out["devices"] == 4
    for one, four in zip(out["epochs1"], out["epochs4"]):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"):
            # losses are means of float32 values computed from those parameters: the same bound; an accuracy
            # changes only if an example's top class flips, which a 1e-5 drift did not do here
            assert abs(one[key] - four[key]) <= LAYOUT_BOUND * max(1.0, abs(one[key])), (key, one[key], four[key])


def test_a_batch_that_does_not_divide_over_the_devices_is_a_clear_error(tmp_path: Path) -> None:
    spec = tmp_path / "dp.cnn"
    spec.write_text(SPEC)
    result = run_with_devices(4, "-m", "cnndsl", "train", str(spec), "--batch-size", "30", "--out",
                              str(tmp_path / "run"), "--quiet")
    assert result.returncode == 1
    assert "the batch size 30 does not divide over 4 devices; use a multiple of 4 (--batch-size 28)" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_with_devices(2, "-m", "cnndsl", "train", str(spec), "--devices", "3", "--out", str(tmp_path / "r2"))
    assert result.returncode == 1 and "--devices 3: this process has 2 devices (cpu)" in result.stderr


# ---- several processes: jax.distributed with a coordinator on 127.0.0.1, gloo collectives on CPU ----------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_processes(spec: Path, run: Path, *extra: str, each: list[list[str]] | None = None,
                    timeout_s: str = "60") -> list[subprocess.Popen[str]]:
    """Two `cnndsl train` processes x 2 simulated devices, one process group each (killed together)."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "CNNDSL_DISTRIBUTED_TIMEOUT": timeout_s}
    target = ["--resume", str(run)] if "--resume" in extra else [str(spec), "--out", str(run)]
    rest = [e for e in extra if e != "--resume"]
    return [subprocess.Popen([sys.executable, "-m", "cnndsl", "train", *target, "--quiet", *rest,
                              "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
                              *(each[i] if each else [])], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True) for i in range(2)]


def finish(processes: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    results = []
    for p in processes:
        try:
            out, err = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in processes:
                os.killpg(q.pid, 9)
            raise
        results.append((p.returncode, out, err))
    return results


def worst_difference(a: dict, b: dict) -> float:
    import numpy as np

    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max() / (np.abs(a[k]).max() + 1e-12)) for k in a)


def test_two_processes_train_like_one_and_resume_after_both_are_killed(tmp_path: Path) -> None:
    import signal
    import time

    spec = tmp_path / "dp.cnn"
    spec.write_text(SPEC)
    # the reference: one process, 4 devices
    single = run_with_devices(4, "-m", "cnndsl", "train", str(spec), "--out", str(tmp_path / "single"), "--quiet")
    assert single.returncode == 0, single.stderr[-2000:]
    # two processes x 2 devices, uninterrupted
    results = finish(start_processes(spec, tmp_path / "pair", "--checkpoint-every", "5"))
    assert [r[0] for r in results] == [0, 0], [r[2][-2000:] for r in results]
    assert "best validation accuracy" in results[0][1] and "best validation" not in results[1][1]  # process 0 speaks
    assert len((tmp_path / "pair" / "metrics.jsonl").read_text().splitlines()) == 2
    pair = final_arrays(tmp_path / "pair")
    assert worst_difference(final_arrays(tmp_path / "single"), pair) < LAYOUT_BOUND
    # the same, killed (both processes, SIGKILL) after a mid-epoch checkpoint, then resumed by both
    run = tmp_path / "killed"
    processes = start_processes(spec, run, "--checkpoint-every", "5")
    deadline = time.monotonic() + 180
    last = run / "checkpoints" / "last"
    while time.monotonic() < deadline and not (last.is_dir() and any(p.name.isdigit() and int(p.name) >= 10
                                                                    for p in last.iterdir())):
        time.sleep(0.05)
    for p in processes:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    saved = max(int(p.name) for p in last.iterdir() if p.name.isdigit())
    assert 10 <= saved < 40, saved
    results = finish(start_processes(spec, run, "--resume"))
    assert [r[0] for r in results] == [0, 0], [r[2][-2000:] for r in results]
    # the same command (killed and resumed) on the same layout: the same sums in the same order, bit for bit
    assert worst_difference(pair, final_arrays(run)) == 0.0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_processes_that_disagree_or_cannot_meet_stop_with_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "dp.cnn"
    spec.write_text(SPEC)
    results = finish(start_processes(spec, tmp_path / "r", each=[[], ["--epochs", "3"]]))
    for code, _, err in results:
        assert code == 1 and "the processes were started with different specs or settings (process 1 differs " \
                              "from process 0); start every process with the same command" in err, err[-2000:]
    assert not (tmp_path / "r").exists()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CNNDSL_DISTRIBUTED_TIMEOUT": "2"}
    lonely = subprocess.run([sys.executable, "-m", "cnndsl", "train", str(spec), "--out", str(tmp_path / "l"),
                             "--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", "2",
                             "--process-id", "1"], capture_output=True, text=True, timeout=60, env=env)
    assert lonely.returncode == 1 and "did not answer within 2 s (process 1 of 2)" in lonely.stderr
    assert len(lonely.stderr.strip().splitlines()) == 1
    half = subprocess.run([sys.executable, "-m", "cnndsl", "train", str(spec), "--num-processes", "2"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert half.returncode == 1 and "--coordinator, --num-processes and --process-id go together" in half.stderr


def test_shard_params_splits_parameters_and_optimizer_state_and_keeps_them_split() -> None:
    script = """
import json, numpy as np, jax, cnndsl
from cnndsl.training.distributed import Placement
from cnndsl.lang.settings import Settings
from cnndsl.training import Preprocess, Trainer, make_optimizer
net = cnndsl.compile(%r)
p = Placement.create(4, shard_params=True)
t = Trainer(net, net.init(0), make_optimizer(Settings(), 10), Preprocess(1.0, (0.0,), (1.0,), (8, 8)),
            Settings(batch_size=8), 10, p)
s = t.initial_state()
x, y, o = p.replicate((np.zeros((8, 8, 8, 1), np.float32), np.zeros(8, np.int32), np.arange(8, dtype=np.int32)))
after = t.train_step(s["params"], s["stats"], s["opt_state"], s["meters"], x, y, o, np.int32(0), None, np.int32(0), np.int32(0))
spec = lambda a: [str(e) for e in a.sharding.spec]
print(json.dumps({"before": {k: spec(v) for k, v in s["params"].items()},
                  "after": {k: spec(v) for k, v in after[0].items()},
                  "opt": sorted({json.dumps(spec(l)) for l in jax.tree.leaves(after[2])})}))
""" % SPEC
    result = run_with_devices(4, "-c", script)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["before"] == out["after"]  # the step keeps the layout
    assert out["after"]["conv1/kernel"] == ["None", "None", "None", "data"]  # 16 output channels over 4 devices
    assert out["after"]["fc1/kernel"] == ["data", "None"] and out["after"]["fc1/bias"] == []  # 10 does not divide
    assert json.dumps(["None", "None", "None", "data"]) in out["opt"]  # Adam's moments follow their parameters


def test_two_processes_stream_their_own_shares_and_train_like_one(tmp_path: Path) -> None:
    """The input pipeline with two processes: each decodes its half of every global batch (and of every
    evaluation batch), the halves are assembled on the devices, and the run equals one process's."""
    pytest.importorskip("grain")
    from tests.data.test_pipeline import SPEC as PHOTO_SPEC
    from tests.data.test_pipeline import jpeg_folder

    folder = jpeg_folder(tmp_path / "photos", 12)
    spec = tmp_path / "photos.cnn"
    spec.write_text(PHOTO_SPEC)
    options = ["--data", f"folder:{folder}", "--stream", "--workers", "0", "--augment", "resized-crop,flip",
               "--optimizer", "sgd"]  # layouts are compared with SGD: see LAYOUT_BOUND
    single = run_with_devices(4, "-m", "cnndsl", "train", str(spec), "--out", str(tmp_path / "single"), "--quiet",
                              *options)
    assert single.returncode == 0, single.stderr[-2000:]
    results = finish(start_processes(spec, tmp_path / "pair", *options))
    assert [r[0] for r in results] == [0, 0], [r[2][-2000:] for r in results]
    assert worst_difference(final_arrays(tmp_path / "single"), final_arrays(tmp_path / "pair")) < LAYOUT_BOUND
    one, two = ([json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
                for run in ("single", "pair"))
    for a, b in zip(one, two):
        assert a["test_accuracy"] == b["test_accuracy"]
        assert abs(a["train_loss"] - b["train_loss"]) <= LAYOUT_BOUND * max(1.0, a["train_loss"])


@pytest.mark.parametrize("ids, wait, says", [
    ([0], "2", ["process 1 of 2 did not join the coordinator 127.0.0.1:"]),
    ([1, 1], "2", ["did not answer within 2 s (process 1 of 2)"]),
])
def test_processes_that_cannot_all_meet_stop_in_one_line_each_within_the_timeout(tmp_path: Path, ids: list[int],
                                                                                   wait: str, says: list[str]) -> None:
    """Issue 20: a peer that never starts, no process 0: every process ends with exit 1 and one error line
    once the timeout has passed, never XLA's abort (exit 134 after its own timeout). The meetings of
    several processes are checked on `meet` itself, below."""
    import time

    spec = tmp_path / "dp.cnn"
    spec.write_text(SPEC)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CNNDSL_DISTRIBUTED_TIMEOUT": wait}
    processes = []
    for k, i in enumerate(ids):
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "cnndsl", "train", str(spec), "--out", str(tmp_path / f"r{k}"), "--quiet",
             "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(max(2, len(ids))), "--process-id", str(i)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True))
        time.sleep(0.3)  # process 0 first, as a user starts them (the order is not what is checked)
    errors = []
    for code, _, err in finish(processes):
        lines = [line for line in err.strip().splitlines() if not line.startswith("process 0 of")]
        assert code == 1 and len(lines) == 1 and lines[0].startswith("cnndsl: "), err
        errors.append(lines[0])
    for text in says:
        assert any(text in line for line in errors), (text, errors)
    assert not any((tmp_path / f"r{k}").exists() for k in range(len(ids)))


@pytest.mark.parametrize("coordinator, says", [
    ("notahost:99999", "expected HOST:PORT with a port from 1 to 65535"),
    ("no-such-host.invalid:1234", "the host 'no-such-host.invalid' is unknown"),
    ("127.0.0.1", "expected HOST:PORT"),
])
def test_a_coordinator_that_cannot_be_is_a_one_line_error_at_once(coordinator: str, says: str, tmp_path: Path,
                                                                   capsys) -> None:
    from cnndsl.cli import main

    spec = tmp_path / "dp.cnn"
    spec.write_text(SPEC)
    for process_id in ("0", "1"):
        assert main(["train", str(spec), "--out", str(tmp_path / "r"), "--coordinator", coordinator,
                     "--num-processes", "2", "--process-id", process_id]) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert says in line, line


def _listening(port: int) -> bool:
    """Whether a socket listens on 127.0.0.1:`port`, from the kernel's table (Linux: /proc/net/tcp, state 0A)."""
    try:
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:  # elsewhere: a connection attempt (the meeting drops a peer that says nothing)
        import socket

        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0
    return any(fields[1].endswith(f":{port:04X}") and fields[3] == "0A" for fields in (line.split() for line in table))


def _meet_all(ids: list[int], counts: list[int], timeout: float) -> list[str]:
    """`rendezvous.meet` for each id (with its --num-processes) in its own thread, process 0 first and the
    others once it listens: what each ended with ("go" or its error)."""
    import threading
    import time

    from cnndsl.training.rendezvous import DistributedError, meet

    port = _free_port()
    results = [""] * len(ids)

    def one(k: int) -> None:
        try:
            meet(f"127.0.0.1:{port}", counts[k], ids[k], timeout)
            results[k] = "go"
        except DistributedError as err:
            results[k] = str(err)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(ids))]
    for k, thread in enumerate(threads):
        thread.start()
        # the order a user starts them in (an event, not a timing): 0 listens first. Watched without touching
        # the port (a probe that binds it for a moment made process 0's own bind fail, and the wait never
        # ended); it ends when 0 listens or has stopped, and in any case after the meeting's own timeout
        deadline = time.monotonic() + timeout + 30
        while k == 0 and ids[0] == 0 and thread.is_alive() and not _listening(port) and time.monotonic() < deadline:
            time.sleep(0.01)
    for thread in threads:
        thread.join(timeout + 30)
    return results


def test_processes_meet_only_when_each_id_comes_once() -> None:
    """The meeting in front of XLA (issue 20): a full set meets; two processes with one id, a second process
    0 and a disagreeing --num-processes each end in one line naming the flag, the others told why."""
    assert _meet_all([0, 1, 2], [3, 3, 3], 20) == ["go", "go", "go"]
    zero, *ones = _meet_all([0, 1, 1], [3, 3, 3], 3)
    assert "process 2 of 3 did not join" in zero and "--process-id 1 was given to two processes" in zero
    assert all(r.startswith("process 1 of 3 was refused by the coordinator") for r in ones)
    assert any("--process-id 1 was given to two processes; give each process its own id" in r for r in ones)
    zero, again = _meet_all([0, 0], [2, 2], 2)
    assert "process 1 of 2 did not join" in zero and "process 0 cannot listen there (it is in use" in again
    zero, one = _meet_all([0, 1], [2, 3], 2)
    assert "did not join" in zero and "started with --num-processes 3, process 0 with 2" in one
