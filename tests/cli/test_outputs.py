"""cnndsl never overwrites a file it did not create (issue 8): every command that writes checks where.

Each case states the situation, runs the real command, and checks both the exit status and that every
file that was there before is byte-for-byte unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnndsl.cli import main
from cnndsl.lang.outputs import artifact_kind
from tests.conftest import ROOT

LENET = ROOT / "examples" / "lenet5.cnn"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def compile_to(target: str | Path, kind: str, *extra: str) -> int:
    return main(["compile", str(LENET), "--emit", kind, "-o", str(target), "--quiet", *extra])


@pytest.mark.parametrize("kind", ["json", "python", "svg"])
def test_file_artifacts(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "net.cnn"
    spec.write_text(LENET.read_text())
    (tmp_path / "notes.txt").write_text("the user's own notes\n")
    (tmp_path / "empty.out").write_text("")
    (tmp_path / "a_file").write_text("x")
    before = snapshot(tmp_path)
    refused = [spec, tmp_path / "notes.txt", tmp_path / "a_file" / "under.out", tmp_path / "missing" / "x.out",
               Path("/dev/null"), Path("/proc/version"), tmp_path]
    for target in refused:
        assert main(["compile", str(spec), "--emit", kind, "-o", str(target), "--quiet", "--force"]) == 2, target
    assert snapshot(tmp_path) == before
    err = capsys.readouterr().err
    assert "never writes over its input" in err and "cnndsl never overwrites a file it did not create" in err
    assert "Traceback" not in err

    assert compile_to(tmp_path / "empty.out", kind) == 0  # an empty file has nothing to lose
    assert compile_to(tmp_path / f"net.{kind}", kind) == 0
    written = (tmp_path / f"net.{kind}").read_bytes()
    assert artifact_kind(tmp_path / f"net.{kind}") == kind
    assert compile_to(tmp_path / f"net.{kind}", kind) == 2  # an earlier artifact: only with --force
    assert "pass --force" in capsys.readouterr().err
    assert compile_to(tmp_path / f"net.{kind}", kind, "--force") == 0
    assert (tmp_path / f"net.{kind}").read_bytes() == written
    other = {"json": "python", "python": "svg", "svg": "json"}[kind]  # another kind's artifact is not replaced
    assert compile_to(tmp_path / f"net.{kind}", other, "--force") == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind


def test_export_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "meta.json").write_text('{"mine": true}')
    (foreign / "spec.cnn").write_text("my spec")
    (tmp_path / "file").write_text("x")
    before = snapshot(tmp_path)
    for target in (foreign, tmp_path / "file", tmp_path / "file" / "sub", tmp_path / "no" / "sub"):
        assert compile_to(target, "export", "--force") == 2
    assert snapshot(tmp_path) == before
    assert "it holds files cnndsl did not write (meta.json, spec.cnn)" in capsys.readouterr().err

    assert compile_to(tmp_path / "art", "export") == 0
    assert compile_to(tmp_path / "art", "export") == 2
    (tmp_path / "art" / "README.txt").write_text("kept")  # the user's file inside an export survives --force
    assert compile_to(tmp_path / "art", "export", "--force") == 0
    assert (tmp_path / "art" / "README.txt").read_text() == "kept"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert compile_to(empty, "export") == 0 and artifact_kind(empty) == "export"


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cnndsl", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_train_never_writes_into_a_folder_of_other_files(tmp_path: Path) -> None:
    """The reported loss: spec.cnn, metrics.jsonl and curves.png of the user's were replaced, exit 0."""
    folder = tmp_path / "results"
    folder.mkdir()
    for name in ("spec.cnn", "metrics.jsonl", "curves.png"):
        (folder / name).write_text(f"the user's {name}\n")
    (tmp_path / "plain").write_text("x")
    before = snapshot(tmp_path)
    digits = str(ROOT / "examples" / "digits.cnn")
    for out in (folder, tmp_path / "plain", tmp_path / "plain" / "run", "/dev/null"):
        result = cli("train", digits, "--out", str(out), "--epochs", "1", "--quiet")
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("cnndsl: error[usage]: ") and "Traceback" not in result.stderr
    assert "curves.png, metrics.jsonl, spec.cnn" in cli("train", digits, "--out", str(folder)).stderr
    assert snapshot(tmp_path) == before
    result = cli("train", digits, "--out", digits)
    assert result.returncode == 2 and "never writes over its input" in result.stderr


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`cnndsl check ... | head`: the reader is gone (closed here before the command writes, so the write
    fails however the system schedules the two): exit 1, nothing on stderr, no BrokenPipeError."""
    spec = tmp_path / "long.cnn"
    spec.write_text("network T\ninput 8x8x1\ninput -> " + " -> ".join(f"conv({k * 7919 % 1000 + 1}, 1x1)"
                                                                     for k in range(3000)))
    for args in (["check", str(spec)], ["check", str(spec), "--json"], ["check", str(LENET)]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        result = subprocess.run([sys.executable, "-m", "cnndsl", *args], stdout=write_end, stderr=subprocess.PIPE,
                                cwd=ROOT, timeout=60)
        os.close(write_end)
        assert result.returncode == 1 and result.stderr == b"", result.stderr


def test_width_and_other_numbers_are_checked_as_usage(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["check", str(LENET), "--width", "-5"], ["check", str(LENET), "--width", "abc"],
                 ["check", str(LENET), "--depth", "0"], ["run", "x", "y.npy", "--top", "0"]):
        with pytest.raises(SystemExit) as caught:
            main(args)
        assert caught.value.code == 2
    assert "width must be at least 50, got -5" in capsys.readouterr().err
    assert main(["check", str(LENET), "--width", "50"]) == 0
    assert all(len(line) <= 50 for line in capsys.readouterr().out.splitlines()[:-6])


def test_json_artifact_is_what_it_says(tmp_path: Path) -> None:
    assert compile_to(tmp_path / "net.json", "json") == 0
    assert json.loads((tmp_path / "net.json").read_text())["schema"] == "cnndsl.ir/1"


def _image_folder(root: Path) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (6, 6), (40 * i, 200 * (label == "b"), 0)).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("foreign", [{"manifest.json": b'{"mine": true}\n', "labels-train.npy": b"my own bytes"},
                                     {"notes.txt": b"keep me"},
                                     {"manifest.partial.json": b'{"plan": "not cnndsl"}'}])
def test_data_pack_never_writes_into_a_folder_of_other_files(tmp_path: Path, foreign: dict[str, bytes],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import in_process

    images = _image_folder(tmp_path / "imgs")
    mine = tmp_path / "mine"
    mine.mkdir()
    for name, data in foreign.items():
        (mine / name).write_bytes(data)
    result = in_process(capsys, "data", "pack", f"folder:{images}", "-o", str(mine))
    assert result.returncode == 2 and "cnndsl never overwrites files it did not create" in result.stderr
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == foreign  # byte for byte, nothing added


def test_data_pack_continues_its_own_records_and_replaces_another_sources_only_with_force(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import in_process

    first, second = _image_folder(tmp_path / "first"), _image_folder(tmp_path / "second")
    out = tmp_path / "records"
    assert in_process(capsys, "data", "pack", f"folder:{first}", "-o", str(out)).returncode == 0
    manifest = (out / "manifest.json").read_bytes()
    assert in_process(capsys, "data", "pack", f"folder:{first}", "-o", str(out)).returncode == 0  # the same pack
    other = in_process(capsys, "data", "pack", f"folder:{second}", "-o", str(out))
    assert other.returncode == 2 and "already holds a cnndsl records" in other.stderr and "--force" in other.stderr
    assert (out / "manifest.json").read_bytes() == manifest
    assert in_process(capsys, "data", "pack", f"folder:{second}", "-o", str(out), "--force").returncode == 0
    assert str(second) in (out / "manifest.json").read_text()


@pytest.mark.parametrize("foreign", [{"settings.json": b'{"mine": true}\n'}, {"notes.txt": b"keep me"}])
def test_weights_import_never_writes_into_a_folder_of_other_files(tmp_path: Path, foreign: dict[str, bytes],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20: `weights import -o` is checked as every writing command's destination is."""
    pytest.importorskip("safetensors", reason="weight import needs the `weights` extra (installed by the test extra)")
    from tests.conftest import in_process

    mine = tmp_path / "mine"
    mine.mkdir()
    for name, data in foreign.items():
        (mine / name).write_bytes(data)
    weights = ROOT / "tests" / "weights"
    result = in_process(capsys, "weights", "import", str(weights / "narrow_resnet.cnn"),
                        str(weights / "narrow_resnet.safetensors"), "-o", str(mine))
    assert result.returncode == 2 and "cnndsl did not write" in result.stderr
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == foreign  # byte for byte, nothing added
