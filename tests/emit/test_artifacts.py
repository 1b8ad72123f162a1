"""Tampered, damaged and hostile export artifacts (issue 8): every file of an export, broken in several
ways, is refused on load with an ExportError naming the file; `cnndsl run` exits 1 with one line; a zip
bomb costs no memory; NaN images and parameters are never answered with "nan%"."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import cnndsl
from cnndsl.cli import main
from cnndsl.data import DataError, read_image
from cnndsl.data.images import MAX_IMAGE_PIXELS
from cnndsl.emit.artifact import ExportError, _checksum, export, load_exported
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Exports of LeNet-5 and of the digits network: one to damage, one to take foreign parts from."""
    root = tmp_path_factory.mktemp("artifacts")
    for name in ("lenet5", "digits"):
        net = cnndsl.compile(ROOT / "examples" / f"{name}.cnn")
        export(net, net.init(seed=1), root / name)
    return root / "lenet5", root / "digits"


def rewrite_meta(art: Path, change: Callable[[dict], None], keep_checksum: bool = False) -> None:
    meta = json.loads((art / "meta.json").read_text())
    change(meta)
    if not keep_checksum:
        meta["checksum"] = _checksum(meta)
    (art / "meta.json").write_text(json.dumps(meta))


def npz_bytes(arrays: dict[str, np.ndarray], compress: bool = False) -> bytes:
    out = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(out, **arrays)
    return out.getvalue()


def bomb(art: Path, declared_right: bool) -> None:
    """params.npz as a zip bomb: a member that inflates to 1 GB from 1 MB (its header either declares
    a huge array, or the right one followed by gigabytes of zeros)."""
    with np.load(art / "params.npz") as data:
        arrays = dict(data)
    name = sorted(arrays)[0]
    header = io.BytesIO()
    shape = arrays[name].shape if declared_right else (1 << 30,)
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(art / "params.npz", "w", zipfile.ZIP_DEFLATED) as z:
        for other in sorted(arrays):
            if other != name:
                z.writestr(f"{other}.npy", npz_member(arrays[other]))
        with z.open(f"{name}.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            chunk = bytes(1 << 24)
            for _ in range(64):  # 1 GB of zeros, about 1 MB compressed
                member.write(chunk)


def npz_member(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, array)
    return out.getvalue()


def with_params(art: Path, change: Callable[[dict], None], compress: bool = False) -> None:
    with np.load(art / "params.npz") as data:
        arrays = dict(data)
    change(arrays)
    (art / "params.npz").write_bytes(npz_bytes(arrays, compress))


DAMAGE: dict[str, tuple[str, Callable[[Path, Path], None]]] = {
    # meta.json
    "classes edited": ("meta.json", lambda a, o: rewrite_meta(a, lambda m: m.update(classes=["cat"] * 10), True)),
    "output shape edited": ("meta.json", lambda a, o: rewrite_meta(a, lambda m: m.update(output_shape=[7]), True)),
    "shape not numbers": ("meta.json", lambda a, o: rewrite_meta(a, lambda m: m.update(input_shape=["a", 1, 1]))),
    "parameters not a dict": ("meta.json", lambda a, o: rewrite_meta(a, lambda m: m.update(parameters=[1]))),
    "meta empty": ("meta.json", lambda a, o: (a / "meta.json").write_text("")),
    "meta a list": ("meta.json", lambda a, o: (a / "meta.json").write_text("[]")),
    "meta binary": ("meta.json", lambda a, o: (a / "meta.json").write_bytes(b"\xff\xfe\x00")),
    # forward.jaxexport
    "program empty": ("forward.jaxexport", lambda a, o: (a / "forward.jaxexport").write_bytes(b"")),
    "program truncated": ("forward.jaxexport", lambda a, o: (a / "forward.jaxexport").write_bytes(
        (a / "forward.jaxexport").read_bytes()[:500])),
    "program of another network": ("forward.jaxexport", lambda a, o: shutil.copy(o / "forward.jaxexport", a)),
    "another network's program, hash updated": ("forward.jaxexport", lambda a, o: (
        shutil.copy(o / "forward.jaxexport", a), rewrite_meta(a, lambda m: m.update(
            program_sha256=json.loads((o / "meta.json").read_text())["program_sha256"])))),
    # params.npz
    "params not a zip": ("params.npz", lambda a, o: (a / "params.npz").write_bytes(b"PK\x03\x04 broken")),
    "params of another network": ("params.npz", lambda a, o: shutil.copy(o / "params.npz", a)),
    "a parameter missing": ("params.npz", lambda a, o: with_params(a, lambda p: p.pop(sorted(p)[0]))),
    "an extra entry": ("params.npz", lambda a, o: with_params(a, lambda p: p.update(extra=np.zeros(3)))),
    "a parameter reshaped": ("params.npz", lambda a, o: with_params(a, lambda p: p.update(
        {k: v.reshape(-1) for k, v in p.items() if v.ndim > 1}))),
    "a parameter of another dtype": ("params.npz", lambda a, o: with_params(a, lambda p: p.update(
        {sorted(p)[0]: p[sorted(p)[0]].astype(np.float64)}))),
    "NaN parameter": ("params.npz", lambda a, o: with_params(a, lambda p: p[sorted(p)[-1]].__setitem__(0, np.nan))),
    "infinite parameter, compressed": ("params.npz", lambda a, o: with_params(
        a, lambda p: p[sorted(p)[-1]].__setitem__(0, -np.inf), compress=True)),
    "zip bomb, huge header": ("params.npz", lambda a, o: bomb(a, declared_right=False)),
    "zip bomb, right header": ("params.npz", lambda a, o: bomb(a, declared_right=True)),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_every_damaged_file_is_named(artifacts: tuple[Path, Path], tmp_path: Path, case: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    lenet, other = artifacts
    art = tmp_path / "art"
    shutil.copytree(lenet, art)
    name, damage = DAMAGE[case]
    damage(art, other)
    with pytest.raises(ExportError) as caught:
        load_exported(art)
    assert str(art / name) in str(caught.value), str(caught.value)
    np.save(tmp_path / "x.npy", np.zeros((32, 32, 1), np.float32))
    assert main(["run", str(art), str(tmp_path / "x.npy")]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"cnndsl: {art / name}")


@pytest.mark.parametrize("declared_right", [False, True])
def test_a_zip_bomb_costs_no_memory(artifacts: tuple[Path, Path], tmp_path: Path, declared_right: bool) -> None:
    art = tmp_path / "art"
    shutil.copytree(artifacts[0], art)
    bomb(art, declared_right)
    assert (art / "params.npz").stat().st_size < 20 << 20
    np.save(tmp_path / "x.npy", np.zeros((32, 32, 1), np.float32))
    # The peak is read by the command's own process (VmHWM of its address space after exec): getrusage of a
    # child counts the memory of the test process it was forked from.
    code = ("import sys\nfrom cnndsl.cli import main\nstatus = main(sys.argv[1:])\n"
            "peak = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
            "print(peak.split()[1], file=sys.stderr)\nsys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code, "run", str(art), str(tmp_path / "x.npy")],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    message, peak_kb = result.stderr.splitlines()
    assert result.returncode == 1 and message.startswith(f"cnndsl: {art / 'params.npz'}: ")
    assert int(peak_kb) < 200 * 1024, f"peak memory {int(peak_kb) / 1024:.0f} MB"


def test_images_with_nan_or_no_pixels_are_refused(artifacts: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    network = load_exported(artifacts[0])
    for bad, message in ((np.full((1, 32, 32, 1), np.nan, np.float32), "NaN or infinite"),
                         (np.zeros((0, 32, 32, 1), np.float32), "no images")):
        with pytest.raises(ExportError, match=message):
            network(bad)
    cases = {"nan.npy": np.full((32, 32, 1), np.nan, np.float32), "inf.npy": np.full((32, 32, 1), np.inf),
             "complex.npy": np.zeros((32, 32, 1), np.complex64), "empty.npy": np.zeros((0, 32, 32, 1), np.float32)}
    for name, array in cases.items():
        np.save(tmp_path / name, array)
        assert main(["run", str(artifacts[0]), str(tmp_path / name)]) == 1
        out, err = capsys.readouterr()
        (line,) = err.splitlines()
        assert line.startswith(f"cnndsl: {tmp_path / name}: ") and "nan%" not in out


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares `width` x `height` pixels, with almost no pixel data (a decompression bomb's
    shape, made without allocating the image)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height, message", [(20000, 20000, "more pixels than cnndsl reads"),
                                                    (MAX_IMAGE_PIXELS, 2, "more pixels than cnndsl reads"),
                                                    (0, 0, "not a readable image"), (0, 5, "not a readable image")])
def test_image_bombs_and_empty_images_are_refused_from_their_header(tmp_path: Path, width: int, height: int,
                                                                   message: str) -> None:
    path = tmp_path / "x.png"
    png_header_only(path, width, height)
    with pytest.raises(DataError, match=message):
        read_image(path)


def npy_header_only(path: Path, descr: str, shape: tuple[int, ...]) -> None:
    """An .npy file whose header declares `shape` of `descr` and whose data is missing."""
    import io

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    path.write_bytes(header.getvalue())


def test_predict_refuses_bad_images_with_their_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    cnndsl.train(ROOT / "examples" / "digits.cnn", run_dir=run, epochs=1, quiet=True)
    png_header_only(tmp_path / "bomb.png", 20000, 20000)
    png_header_only(tmp_path / "empty.png", 0, 0)
    np.save(tmp_path / "nan.npy", np.full((8, 8), np.nan))
    np.save(tmp_path / "zero.npy", np.zeros((0, 0, 1)))
    os.mkfifo(tmp_path / "pipe.png")  # would block a reader forever
    os.mkfifo(tmp_path / "pipe.npy")
    headers = {"huge.npy": ("|u1", (100_000, 100_000, 3)), "pixels.npy": ("<f2", (9000, 9000, 1)),
               "short.npy": ("<f4", (8, 8, 1)), "text.npy": ("<U3", (8, 8)), "batch.npy": ("<f8", (3000, 8, 8, 1))}
    for name, (descr, shape) in headers.items():  # headers alone: nothing is allocated from them
        npy_header_only(tmp_path / name, descr, shape)
    np.save(tmp_path / "objects.npy", np.array([[None]], dtype=object))
    capsys.readouterr()
    for name in ("bomb.png", "empty.png", "nan.npy", "zero.npy", "pipe.png", "pipe.npy", *headers, "objects.npy"):
        assert main(["predict", str(ROOT / "examples" / "digits.cnn"), "--run", str(run), str(tmp_path / name)]) == 1
        out, err = capsys.readouterr()
        (line,) = err.splitlines()
        assert line.startswith(f"cnndsl: {tmp_path / name}: ") and "nan%" not in out
