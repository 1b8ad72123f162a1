"""Shared test helpers: the repository root, and running from it so diagnostics show relative paths."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Downloads and XLA's compilation cache go to one temporary folder per test session, never the home folder.
os.environ.setdefault("CNNDSL_CACHE", tempfile.mkdtemp(prefix="cnndsl-test-cache-"))

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))
FAMILIES = {"course.cnn", "course_cifar.cnn"}  # examples that are families on purpose: nothing is bound
#: Deep 224x224 examples: tracing one takes 10 s to a minute here, so checks that trace them again (ejected
#: source, ONNX) are in the slow set; the fast set checks every op they use on small networks.
DEEP_EXAMPLES = {"densenet121", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "resnet101", "resnet152"}
#: Every 224x224 example but ResNet-18 (the fast set's one): their ONNX Runtime and ejected-source checks are
#: in the slow set.
HEAVY_EXAMPLES = {"vgg16", "resnet50", "googlenet", "zfnet", "alexnet"} | DEEP_EXAMPLES


@pytest.fixture(autouse=True)
def _run_from_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
