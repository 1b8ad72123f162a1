"""The data source registry (cnndsl.data.sources): one place knows every `--data` kind, and every path a
run records is absolute, whatever the kind, so a run trained from one directory is evaluated from another."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from cnndsl.cli import main
from cnndsl.data.sources import KINDS, SourceError, absolute_source, parse_source, through_pipeline
from cnndsl.lang.settings import DATA_NAMES

SPEC = """network Tiny
input 12x12x3
input -> conv(4, 3x3, pad=same) -> relu -> global_avgpool -> fc(2)
train epochs = 1, batch_size = 8
"""


def test_every_name_a_spec_may_use_is_a_source_kind_with_a_loader() -> None:
    from cnndsl.data.datasets import BUILTIN_SHAPES

    kinds = {kind.name for kind in KINDS}
    assert set(DATA_NAMES) <= kinds
    for name in DATA_NAMES:
        assert parse_source(name)[0].name == name
    builtin = {kind.name for kind in KINDS if not kind.path and kind.name != "synthetic"}
    assert builtin == set(BUILTIN_SHAPES)  # every built-in name has its published shape and loader


@pytest.mark.parametrize("kind", [k for k in KINDS if k.path])
def test_every_path_kind_is_recorded_absolute(kind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    recorded = absolute_source(f"{kind.name}:data/x")
    assert recorded == f"{kind.name}:{tmp_path / 'data' / 'x'}"
    assert absolute_source(recorded) == recorded  # already absolute: unchanged
    assert parse_source(recorded) == (kind, str(tmp_path / "data" / "x"))


@pytest.mark.parametrize(("source", "message"), [
    ("mnst", "did you mean 'mnist'"), ("folder:", "write it as folder:PATH"), ("records", "write it as records:DIR"),
    ("synthetic:many", "a whole number of images"), ("digits:extra", "unknown data source"), ("", "unknown data source"),
])
def test_a_mistyped_source_says_how_to_write_it(source: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse_source(source)


def test_names_without_a_path_are_not_made_absolute() -> None:
    for source in ("digits", "cifar10", "synthetic", "synthetic:100"):
        assert absolute_source(source) == source
    assert through_pipeline("folder:x") and through_pipeline("records:x") and not through_pipeline("npz:x")


def _write_images(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("val", 4)):
        for label, name in enumerate(("dark", "light")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 100, (12, 12, 3)) + 150 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")


@pytest.mark.parametrize("kind", ["npz", "folder", "records"])
def test_a_run_trained_on_a_relative_path_is_evaluated_from_another_directory(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    (project / "tiny.cnn").write_text(SPEC)
    _write_images(project / "images")
    if kind == "npz":
        rng = np.random.default_rng(1)
        np.savez("data.npz", x=rng.integers(0, 256, (40, 12, 12, 3), dtype=np.uint8), y=np.arange(40) % 2)
        source = "npz:data.npz"
    elif kind == "records":
        assert main(["data", "pack", "folder:images", "-o", "packed"]) == 0
        source = "records:packed"
    else:
        source = "folder:images"
    assert main(["train", "tiny.cnn", "--data", source, "--out", "run", "--quiet", "--workers", "0"]) == 0
    recorded = json.loads((project / "run" / "settings.json").read_text())["data"]
    assert recorded == f"{kind}:{(project / source.split(':')[1]).absolute()}"

    monkeypatch.chdir(elsewhere)
    assert not os.path.exists(source.split(":")[1])  # the relative path means nothing here
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["eval", "--run", str(project / "run"), "--json"]) == 0
    result = json.loads(printed.getvalue())
    assert result["data"] == recorded and result["n"] > 0 and 0 <= result["accuracy"] <= 1
