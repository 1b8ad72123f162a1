"""Shared test helpers: the repository root, and running from it so diagnostics show relative paths."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

# Downloads and XLA's compilation cache go to one temporary folder per test session (shared by the session's
# xdist workers: a network one worker compiled is read back by the other), never the home folder.
_SESSION = os.environ.get("PYTEST_XDIST_TESTRUNUID")
if _SESSION:
    _CACHE = Path(tempfile.gettempdir()) / f"cnndsl-test-cache-{_SESSION}"
    _CACHE.mkdir(exist_ok=True)
    os.environ.setdefault("CNNDSL_CACHE", str(_CACHE))
else:
    os.environ.setdefault("CNNDSL_CACHE", tempfile.mkdtemp(prefix="cnndsl-test-cache-"))
# JAX's persistent compilation cache for the tests in this process and the commands they start: every
# program that took XLA more than a tenth of a second is compiled once per session.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(os.environ["CNNDSL_CACHE"]) / "xla"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))
FAMILIES = {"course.cnn", "course_cifar.cnn"}  # examples that are families on purpose: nothing is bound
#: Examples whose static shapes take JAX 9-70 s to trace here (2 workers on 2 cores): their shape check against
#: jax.eval_shape is in the slow set. ConvNeXt-T (4 s) is back in the fast set since the suite runs on two
#: workers; the others would push it past 10 minutes.
DEEP_EXAMPLES = {"densenet121", "mobilenet_v2", "efficientnet_b0", "resnet101", "resnet152"}
#: Every 224x224 example but ResNet-18 (the fast set's one): their ejected-source checks (7-75 s each, tracing
#: twice) are in the slow set.
HEAVY_EXAMPLES = {"vgg16", "resnet50", "googlenet", "zfnet", "alexnet", "densenet121", "mobilenet_v2",
                  "efficientnet_b0", "convnext_tiny", "resnet101", "resnet152"}
#: Examples whose ONNX Runtime comparison is in the slow set (11-42 s each here); AlexNet and ZFNet (7-9 s)
#: run in the fast set.
SLOW_IN_ONNX = HEAVY_EXAMPLES - {"alexnet", "zfnet"}


@pytest.fixture(autouse=True)
def _run_from_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """A `cnndsl` command run by `cnndsl.cli.main` in this process: its exit status and what it printed, as a
    subprocess would give them, without a second of interpreter and JAX start-up. For checks that need no
    process of their own; a lock held by another trainer, a kill or a signal do, and use a real one."""
    from cnndsl.cli import main

    capsys.readouterr()
    status = main(list(args))
    printed = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), status, printed.out, printed.err)
