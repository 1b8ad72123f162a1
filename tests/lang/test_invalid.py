"""The corpus of bad specs: each `tests/invalid/X.cnn` renders exactly `tests/invalid/X.txt`.

Wording is reviewed like code. To accept new wording: CNNDSL_UPDATE_GOLDEN=1 pytest tests/lang/test_invalid.py,
then read the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import cnndsl
from tests.conftest import ROOT

CASES = sorted((ROOT / "tests" / "invalid").glob("*.cnn"))


def test_corpus_is_not_empty() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_diagnostic_matches_golden(path: Path) -> None:
    relative = path.relative_to(ROOT).as_posix()
    with pytest.raises(cnndsl.CnnError) as caught:
        cnndsl.check(relative)
    rendered = caught.value.render() + "\n"
    golden = path.with_suffix(".txt")
    if os.environ.get("CNNDSL_UPDATE_GOLDEN"):
        golden.write_text(rendered, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden.name}; run with CNNDSL_UPDATE_GOLDEN=1 and review it"
    assert rendered == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_every_diagnostic_points_into_the_file(path: Path) -> None:
    relative = path.relative_to(ROOT).as_posix()
    with pytest.raises(cnndsl.CnnError) as caught:
        cnndsl.check(relative)
    for d in caught.value.diagnostics:
        assert d.source is not None and d.source.path == relative
        assert d.message and not d.message[0].isupper() and not d.message.endswith(".")
        if d.span is not None:
            assert d.span.line <= d.source.text.count("\n") + 1
