"""Shared test helpers: the repository root, and running from it so diagnostics show relative paths."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

# Downloads and XLA's compilation cache go to one temporary folder per test session, never the home folder. The
# first process to import this file makes it (pytest, or xdist's controller); xdist's workers and the commands
# the tests start inherit the variables, so they all share it.
_SESSION_CACHE = None if "CNNDSL_CACHE" in os.environ else tempfile.mkdtemp(prefix="cnndsl-test-cache-")
if _SESSION_CACHE is not None:
    os.environ["CNNDSL_CACHE"] = _SESSION_CACHE
# JAX's persistent compilation cache for the tests in this process and the commands they start: every
# program that took XLA more than a tenth of a second is compiled once per session.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(os.environ["CNNDSL_CACHE"]) / "xla"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
# Convolutions as XLA lowers them, in every test process and command (cnndsl.nn.convolution): a choice measured
# by one process on a busy machine could differ from another's, and the tests compare runs bit for bit across
# processes (resumed, killed, exported, distributed). tests/nn/test_convolution.py and one training test
# measure and use the chosen lowerings.
os.environ.setdefault("CNNDSL_CONV_LOWERING", "xla")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))
FAMILIES = {"course.cnn", "course_cifar.cnn"}  # examples that are families on purpose: nothing is bound
#: Examples whose static shapes take JAX 9-70 s to trace here (2 workers on 2 cores): their shape check against
#: jax.eval_shape is in the slow set. ConvNeXt-T (4 s) is back in the fast set since the suite runs on two
#: workers; the others would push it past 10 minutes.
DEEP_EXAMPLES = {"densenet121", "mobilenet_v2", "efficientnet_b0", "resnet101", "resnet152"}
#: Every 224x224 (and larger) example but ResNet-18 (the fast set's one), and the U-Net (18 s: nine levels of
#: convolutions traced twice; its ops' ejected source is checked in tests/emit, a trained U-Net's ONNX in
#: tests/training/test_segmentation.py): their ejected-source checks (7-75 s each) are in the slow set.
HEAVY_EXAMPLES = {"vgg16", "resnet50", "googlenet", "googlenet_aux", "fcn_resnet50", "zfnet", "alexnet", "densenet121",
                  "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "resnet101", "resnet152", "unet"}
#: Examples whose ONNX Runtime comparison is in the slow set (11-42 s each here); AlexNet, ZFNet (7-9 s) and the
#: U-Net run in the fast set.
SLOW_IN_ONNX = HEAVY_EXAMPLES - {"alexnet", "zfnet", "unet"}


#: The test files that take longest (40-150 s each on this machine), longest first. xdist (`--dist loadfile`)
#: deals whole files to the workers in collection order, so these go first: a long file dealt last leaves one
#: worker running alone for minutes while the other has finished. Only the order changes, never a result.
LONGEST_FILES = ["training/test_train.py", "cli/test_readme.py", "training/test_distributed.py",
                 "data/test_pipeline.py", "search/test_sweep.py", "training/test_run_safety.py",
                 "training/test_preprocessing.py", "emit/test_emit.py", "emit/test_onnx.py", "nn/test_backend.py"]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The session's cache folder goes with the session (removed by the process that made it: the last to end)."""
    if _SESSION_CACHE is not None:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first (a stable sort: each file's tests keep their order)."""
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}

    def key(item: pytest.Item) -> int:
        relative = Path(str(item.fspath)).relative_to(ROOT / "tests").as_posix()
        return rank.get(relative, len(rank))

    items.sort(key=key)


@pytest.fixture(autouse=True)
def _run_from_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def final_arrays(run: Path) -> dict:
    """A run's last checkpoint's parameters and batch statistics by name, as numpy arrays, loaded in this process
    (on one device, whatever layout saved them)."""
    import numpy as np

    from cnndsl.training import load_run

    loaded = load_run(None, run, "last")
    return {k: np.asarray(v) for k, v in {**loaded.params, **loaded.stats}.items()}


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """A `cnndsl` command run by `cnndsl.cli.main` in this process: its exit status and what it printed, as a
    subprocess would give them, without a second of interpreter and JAX start-up. For checks that need no
    process of their own; a lock held by another trainer, a kill or a signal do, and use a real one."""
    from cnndsl.cli import main

    capsys.readouterr()
    try:
        status = main(list(args))
    except SystemExit as exit_:  # a usage error (argparse exits 2)
        status = exit_.code if isinstance(exit_.code, int) else 1
    printed = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), status, printed.out, printed.err)
