"""Datasets: the official formats, downloads from a local HTTP server, and clear errors for bad files."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import struct
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cnndsl import data
from cnndsl.cli import main
from cnndsl.data import DataError, Remote, load_dataset
from tests.conftest import ROOT


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def fake_mnist(rng: np.random.Generator) -> dict[str, bytes]:
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (12, 28, 28)),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 12),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (5, 28, 28)),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 5)}
    return {name: idx_bytes(a) for name, a in arrays.items()}


@contextlib.contextmanager
def serve(files: dict[str, bytes]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving `files` from a temporary folder; yields its base URL."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        for name, content in files.items():
            (Path(folder) / name).write_bytes(content)
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=folder)
        handler.log_message = lambda *args: None  # type: ignore[method-assign]
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            server.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CNNDSL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _register(monkeypatch: pytest.MonkeyPatch, name: str, files: dict[str, bytes]) -> None:
    remotes = tuple(Remote(r.name, r.url, hashlib.md5(files[r.name]).hexdigest()) for r in data.REMOTES[name])
    monkeypatch.setitem(data.REMOTES, name, remotes)


def test_mnist_downloads_verifies_and_reads(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = fake_mnist(np.random.default_rng(0))
    _register(monkeypatch, "mnist", files)
    with serve(files) as url:
        monkeypatch.setenv("CNNDSL_DATA_MIRROR", url)
        dataset = load_dataset("mnist", val_fraction=0)  # the reader's own arrays: no validation split
    assert dataset.x_train.shape == (12, 28, 28, 1) and dataset.x_test.shape == (5, 28, 28, 1)
    expected = np.frombuffer(gzip.decompress(files["train-images-idx3-ubyte.gz"])[16:], np.uint8).reshape(12, 28, 28)
    np.testing.assert_array_equal(dataset.x_train[..., 0], expected)
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(files)  # cached, no .part left
    monkeypatch.setenv("CNNDSL_DATA_MIRROR", "http://127.0.0.1:9/")  # nothing listens: the cache must serve
    assert load_dataset("mnist", val_fraction=0).x_train.shape == (12, 28, 28, 1)


def test_wrong_checksum_keeps_nothing(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = fake_mnist(np.random.default_rng(1))
    _register(monkeypatch, "mnist", files)
    served = {**files, "train-images-idx3-ubyte.gz": files["train-images-idx3-ubyte.gz"][:-7] + b"tampered"}
    with serve(served) as url:
        monkeypatch.setenv("CNNDSL_DATA_MIRROR", url)
        with pytest.raises(DataError, match="checksum mismatch after download"):
            load_dataset("mnist")
    assert not list((cache / "mnist").glob("train-images*"))  # neither the file nor a .part


def test_unreachable_server_says_how_to_work_offline(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNDSL_DATA_MIRROR", "http://127.0.0.1:9/")
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("fashion-mnist")


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_binary_archives(name: str, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    classes = 10 if name == "cifar10" else 100
    images = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, 7, dtype=np.uint8)
    coarse = rng.integers(0, 20, 7, dtype=np.uint8)  # CIFAR-100 records start with the coarse label
    prefix = [bytes([label]) if name == "cifar10" else bytes([c, label]) for c, label in zip(coarse, labels)]
    records = b"".join(p + image.transpose(2, 0, 1).tobytes() for p, image in zip(prefix, images))
    if name == "cifar10":
        folder, members = "cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    else:
        folder, members = "cifar-100-binary", ["train.bin", "test.bin"]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member in members:
            info = tarfile.TarInfo(f"{folder}/{member}")
            info.size = len(records)
            tar.addfile(info, io.BytesIO(records))
    files = {data.REMOTES[name][0].name: buffer.getvalue()}
    _register(monkeypatch, name, files)
    with serve(files) as url:
        monkeypatch.setenv("CNNDSL_DATA_MIRROR", url)
        dataset = load_dataset(name, val_fraction=0)
    assert dataset.x_train.shape == ((35 if name == "cifar10" else 7), 32, 32, 3)
    assert dataset.x_test.shape == (7, 32, 32, 3) and dataset.num_classes == classes
    np.testing.assert_array_equal(dataset.x_test, images)  # planar CHW records -> HWC
    np.testing.assert_array_equal(dataset.y_test, labels)  # the fine label for CIFAR-100


def test_truncated_cifar_archive_names_the_member(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-100-binary/train.bin")
        info.size = 3074 + 100
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    files = {"cifar-100-binary.tar.gz": buffer.getvalue()}
    _register(monkeypatch, "cifar100", files)
    with serve(files) as url:
        monkeypatch.setenv("CNNDSL_DATA_MIRROR", url)
        with pytest.raises(DataError, match="train.bin has 3,174 bytes, not a whole number of 3074-byte records"):
            load_dataset("cifar100")


def test_data_dir_files_are_used_and_verified(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = fake_mnist(np.random.default_rng(3))
    _register(monkeypatch, "mnist", files)
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    assert load_dataset("mnist", tmp_path).num_classes == 10
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        load_dataset("mnist", tmp_path)


def test_truncated_idx_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(gzip.decompress(idx_bytes(np.zeros((4, 28, 28))))[:-100]))
    with pytest.raises(DataError, match=r"images.gz: .* truncated or corrupt"):
        data.read_idx(path)
    path.write_bytes(idx_bytes(np.zeros((4, 28, 28)))[:40])
    with pytest.raises(DataError, match="images.gz: not a readable gzip file"):
        data.read_idx(path)


def _npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_dataset_and_its_errors(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    y = np.arange(20) % 4
    dataset = load_dataset(_npz(tmp_path / "ok.npz", x=x, y=y))
    assert (len(dataset.x_train), len(dataset.x_val), len(dataset.x_test), dataset.num_classes) == (14, 2, 4, 4)
    assert dataset.image_shape == (8, 8, 1) and dataset.scale == 255.0
    with pytest.raises(DataError, match="missing array y"):
        load_dataset(_npz(tmp_path / "a.npz", x=x))
    with pytest.raises(DataError, match="labels must be N integers"):
        load_dataset(_npz(tmp_path / "b.npz", x=x, y=y[:5]))
    with pytest.raises(DataError, match="label -1 is negative"):
        load_dataset(_npz(tmp_path / "c.npz", x=x, y=y - 1))
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="d.npz: not a readable .npz"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")
    np.savez(tmp_path / "e.npz", x=np.array([object()] * 3, dtype=object), y=y[:3])
    with pytest.raises(DataError, match="e.npz"):  # pickled object arrays are refused, never unpickled
        load_dataset(f"npz:{tmp_path / 'e.npz'}")


def test_folder_dataset_and_its_errors(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "pets" / label).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(tmp_path / "pets" / label / f"{i}.png")
    dataset = load_dataset(f"folder:{tmp_path / 'pets'}")
    assert dataset.classes == ("cat", "dog") and dataset.image_shape == (6, 6, 3)
    assert len(dataset.x_train) + len(dataset.x_val) + len(dataset.x_test) == 10
    (tmp_path / "pets" / "bird").mkdir()
    with pytest.raises(DataError, match="bird: class 'bird' has no PNG or JPEG images"):
        load_dataset(f"folder:{tmp_path / 'pets'}")
    (tmp_path / "pets" / "bird" / "0.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"bird/0.png: not a readable image"):
        load_dataset(f"folder:{tmp_path / 'pets'}")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "pets" / "bird" / "0.png")
    with pytest.raises(DataError, match="must have one size"):
        load_dataset(f"folder:{tmp_path / 'pets'}")


def test_cli_reports_bad_data_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    spec = str(ROOT / "examples" / "digits.cnn")
    assert main(["train", spec, "--data", f"npz:{tmp_path / 'bad.npz'}", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cnndsl: ") and "bad.npz" in err and "Traceback" not in err
    x = np.zeros((10, 8, 8, 3), np.uint8)
    _npz(tmp_path / "rgb.npz", x=x, y=np.arange(10))
    assert main(["train", spec, "--data", f"npz:{tmp_path / 'rgb.npz'}", "--out", str(tmp_path / "s")]) == 1
    assert "8x8x3" in capsys.readouterr().err
    assert main(["train", spec, "--data", "imagenet"]) == 2


def test_synthetic_data_takes_the_networks_shape_and_classes(tmp_path) -> None:
    """`--data synthetic[:N]`: random images of the spec's input shape, labels of its classes (issue 12's
    throughput source), the same on every machine; N checked; a run on it evaluates like any other."""
    import cnndsl
    from cnndsl.data import DataError, load_dataset

    data = load_dataset("synthetic:300", shape=(12, 10, 3), num_classes=7, val_fraction=0.1)
    assert data.x_train.shape == (270, 12, 10, 3) and data.x_val.shape == (30, 12, 10, 3)
    assert data.x_test.shape == (30, 12, 10, 3) and data.x_train.dtype == np.uint8 and data.scale == 255
    assert set(np.unique(np.concatenate([data.y_train, data.y_test]))) <= set(range(7)) and data.num_classes == 7
    again = load_dataset("synthetic:300", shape=(12, 10, 3), num_classes=7, val_fraction=0.1)
    assert np.array_equal(data.x_train, again.x_train) and np.array_equal(data.y_test, again.y_test)
    assert len(load_dataset("synthetic", shape=(224, 224, 3), num_classes=1000).x_test) * 10 >= 256  # fits 64 MB
    for bad in ("synthetic:1", "synthetic:ten", "synthetic:99999999"):
        with pytest.raises(DataError, match="whole number from 2"):
            load_dataset(bad, shape=(8, 8, 1), num_classes=10)
    with pytest.raises(DataError, match="takes its image shape and classes from the network"):
        load_dataset("synthetic:100")
    result = cnndsl.train(ROOT / "examples" / "digits.cnn", run_dir=tmp_path / "run", data="synthetic:256",
                          epochs=1, quiet=True)
    assert result.history.epochs[-1]["step"] > 0
    assert cnndsl.evaluate(tmp_path / "run")["n"] == 25
