"""Shared test helpers: the repository root, and running from it so diagnostics show relative paths."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))
FAMILIES = {"course.cnn"}  # examples that are families on purpose: nothing is bound


@pytest.fixture(autouse=True)
def _run_from_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
