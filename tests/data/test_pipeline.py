"""The streaming input pipeline (issue 12): Grain over image files or ArrayRecord records.

Generated JPEG folders in ImageNet's train/val layout; streamed training equals in-memory training for the
same seed (same order, same augmentation), exact resume mid-epoch from the iterator state a checkpoint
holds, unreadable images skipped and counted, pack -> records gives the folder's examples, and two
processes read disjoint shares whose union is the dataset.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("grain", reason="the pipeline needs the `stream` extra (installed by the test extra)")

import cnndsl  # noqa: E402
from cnndsl.data import pipeline  # noqa: E402
from cnndsl.data.pipeline import epoch_order, eval_batches, open_images, train_batches  # noqa: E402
from cnndsl.lang.settings import TrainingError  # noqa: E402

SPEC = """network Tiny
input 24x24x3
input -> conv(8, 3x3, pad=same, bias=false) -> bn -> relu -> maxpool(2x2) -> conv(8, 3x3, pad=same) -> relu -> global_avgpool -> fc(3)
train epochs = 2, batch_size = 8, lr = 0.01
"""
CLASSES = ("ant", "bee", "cat")


def jpeg_folder(root: Path, per_class: int, sizes: str = "mixed", seed: int = 0) -> Path:
    """train/ and val/ of three classes (the class is the dominant colour): JPEGs of one size (24x24) or
    of sizes from 20 to 46 pixels a side (a crop of 24 never reaches twice its size, so no draft decoding)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", max(2, per_class // 4))):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = (24, 24) if sizes == "one" else (int(rng.integers(20, 47)), int(rng.integers(20, 47)))
                pixels = np.zeros((h, w, 3))
                pixels[..., label] = 180
                pixels = (pixels + rng.normal(0, 50, (h, w, 3))).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.jpg", quality=90)
    return root


def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.cnn"
    path.write_text(SPEC)
    return path


def params_of(result: cnndsl.training.TrainResult) -> dict[str, np.ndarray]:
    from flax import nnx

    from cnndsl.nn.flax_backend import flatten_state

    values = flatten_state(nnx.state(result.model, nnx.Param))[2]
    assert values  # something to compare
    return {name: np.asarray(value) for name, value in values.items()}


def assert_same_params(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def train(tmp_path: Path, out: str, data: str, **settings: object) -> cnndsl.training.TrainResult:
    return cnndsl.train(spec_file(tmp_path), run_dir=tmp_path / out, quiet=True, data=data,
                        **{"workers": 0, **settings})


def test_streamed_training_equals_in_memory_training(tmp_path: Path) -> None:
    # one size, no host augmentation: the in-memory path holds the arrays on the device and gathers each batch
    # there; the stream decodes every batch on the host. Same order, same device augmentation keys.
    folder = jpeg_folder(tmp_path / "one", 12, "one")
    on_device = train(tmp_path, "a", f"folder:{folder}", augment=("crop", "flip"))
    streamed = train(tmp_path, "b", f"folder:{folder}", augment=("crop", "flip"), stream="stream")
    settings_a = json.loads((tmp_path / "a" / "settings.json").read_text())
    settings_b = json.loads((tmp_path / "b" / "settings.json").read_text())
    assert settings_a["pipeline"] == "arrays on the device" and settings_b["pipeline"] == "streamed"
    assert_same_params(params_of(on_device), params_of(streamed))
    assert on_device.history.epochs[-1]["test_accuracy"] == streamed.history.epochs[-1]["test_accuracy"]

    # several sizes with the random resized crop: decoded once into memory vs decoded at every use
    mixed = jpeg_folder(tmp_path / "mixed", 12)
    in_memory = train(tmp_path, "c", f"folder:{mixed}", augment=("resized-crop", "flip"), stream="memory")
    streamed = train(tmp_path, "d", f"folder:{mixed}", augment=("resized-crop", "flip"), stream="stream")
    assert json.loads((tmp_path / "c" / "settings.json").read_text())["pipeline"] == "decoded in memory"
    assert_same_params(params_of(in_memory), params_of(streamed))
    other_seed = train(tmp_path, "e", f"folder:{mixed}", augment=("resized-crop", "flip"), stream="stream", seed=1)
    assert any(not np.array_equal(a, b) for a, b in zip(params_of(streamed).values(),
                                                         params_of(other_seed).values()))


def test_a_run_resumed_mid_epoch_sees_the_same_examples_in_the_same_order(tmp_path: Path, capsys) -> None:
    mixed = jpeg_folder(tmp_path / "mixed", 12)
    options = {"augment": ("resized-crop", "flip"), "stream": "stream", "checkpoint_every": 2, "workers": 1,
               "keep": 10}
    whole = train(tmp_path, "whole", f"folder:{mixed}", **options)
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "whole", cut)  # the same run, trained to the end (the same command gives it)
    steps = json.loads((cut / "settings.json").read_text())["steps_per_epoch"]
    assert steps == 4  # 36 - 10% held out for validation = 32 training images, batches of 8
    # as if killed after step 2 (mid-epoch 1): every later checkpoint and metrics line gone
    last = cut / "checkpoints" / "last"
    assert (last / "2").is_dir()
    for folder in last.iterdir():
        if folder.name.isdigit() and int(folder.name) > 2:
            shutil.rmtree(folder)
    shutil.rmtree(cut / "checkpoints" / "best")
    (cut / "metrics.jsonl").write_text("")
    resumed = cnndsl.train(None, run_dir=cut, resume=True)
    assert f"resuming {cut} at step 2 (epoch 1)" in capsys.readouterr().err
    assert_same_params(params_of(whole), params_of(resumed))
    assert [e["train_loss"] for e in whole.history.epochs][1:] == [e["train_loss"] for e in resumed.history.epochs][1:]


def test_unreadable_images_are_skipped_named_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mixed = jpeg_folder(tmp_path / "mixed", 12)
    good = (mixed / "train" / "ant" / "000.jpg").read_bytes()
    (mixed / "train" / "bee" / "900.jpg").write_bytes(good[: len(good) // 3])  # truncated
    (mixed / "train" / "cat" / "901.jpg").write_bytes(b"not a jpeg at all")
    (mixed / "val" / "ant" / "902.jpg").write_bytes(b"")
    for stream in ("stream", "memory"):
        result = cnndsl.train(spec_file(tmp_path), run_dir=tmp_path / stream, data=f"folder:{mixed}", workers=0,
                              stream=stream, augment=("resized-crop",), val_fraction=0.0)
        err = capsys.readouterr().err
        assert "901.jpg" in err and "902.jpg" in err and "skipped an unreadable image" in err
        counts = [e["bad_images"] for e in result.history.epochs]
        assert counts[-1] == 3 and "Traceback" not in err, (stream, counts, err)
    with pytest.raises(TrainingError, match=r"more than --max-bad-images 1"):
        train(tmp_path, "strict", f"folder:{mixed}", stream="stream", max_bad_images=1, augment=("resized-crop",))


def test_packed_records_give_the_folders_examples_and_packing_resumes(tmp_path: Path, monkeypatch) -> None:
    from cnndsl.cli import main
    from cnndsl.data import folder_splits
    from cnndsl.data import records as records_module
    from cnndsl.data.records import open_records

    mixed = jpeg_folder(tmp_path / "mixed", 12)
    out = tmp_path / "records"
    writes = []
    real = records_module.os.replace

    def failing_replace(src, dst):  # the third shard "crashes" mid-pack
        writes.append(Path(dst).name)
        if len(writes) == 3:
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(records_module.os, "replace", failing_replace)
    assert main(["data", "pack", f"folder:{mixed}", "-o", str(out), "--shard-size", "10"]) == 1
    assert (out / "manifest.partial.json").is_file() and not (out / "manifest.json").exists()
    with pytest.raises(Exception, match="packing was interrupted"):
        open_records(out)
    first_shard = out / writes[0]
    stamp = first_shard.stat().st_mtime_ns
    monkeypatch.setattr(records_module.os, "replace", real)
    assert main(["data", "pack", f"folder:{mixed}", "-o", str(out), "--shard-size", "10"]) == 0
    assert first_shard.stat().st_mtime_ns == stamp  # a finished shard is kept, not written again
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(len(s["sha256"]) == 64 for info in manifest["splits"].values() for s in info["shards"])

    splits, classes = open_records(out)
    train_files, _, test_files, folder_classes = folder_splits(mixed)
    assert classes == folder_classes == CLASSES
    for records, files in ((splits["train"], train_files), (splits["test"], test_files)):
        assert len(records) == len(files)
        for i in range(len(files)):
            assert records.image(i) == files.image(i).read_bytes() and records.label(i) == files.label(i)
            assert records.name(i) == files.name(i)
    from_folder = train(tmp_path, "f", f"folder:{mixed}", augment=("resized-crop",), stream="stream")
    from_records = train(tmp_path, "r", f"records:{out}", augment=("resized-crop",))
    assert_same_params(params_of(from_folder), params_of(from_records))


def test_two_processes_read_disjoint_shares_whose_union_is_each_batch(tmp_path: Path) -> None:
    data, _ = open_images(f"folder:{jpeg_folder(tmp_path / 'mixed', 12)}", shape=(24, 24, 3), mode="stream",
                          val_fraction=0.0)
    n, batch, steps = len(data.train), 6, len(data.train) // 6
    shares = [[b["index"] for b in train_batches(data, seed=3, batch=batch, steps_per_epoch=steps, epochs=2,
                                                 workers=0, random_crop=True, process=p, processes=2)]
              for p in (0, 1)]
    for epoch in range(2):
        order = epoch_order(3, epoch, n)
        for step in range(steps):
            first, second = shares[0][epoch * steps + step], shares[1][epoch * steps + step]
            assert len(first) == len(second) == batch // 2 and not set(first) & set(second)
            np.testing.assert_array_equal(np.concatenate([first, second]), order[step * batch:(step + 1) * batch])
    every = np.concatenate(shares[0][:steps] + shares[1][:steps])
    assert len(set(every.tolist())) == steps * batch  # one epoch: each example at most once


def test_evaluation_batches_are_the_same_from_worker_processes_and_from_threads(tmp_path: Path, monkeypatch) -> None:
    """A small split decodes on threads (starting workers for it took longer than decoding it); from
    EVAL_WORKERS_FROM images a split goes to the worker processes; the batches are the same either way."""
    from cnndsl.training.feed import close_iterator

    data, _ = open_images(f"folder:{jpeg_folder(tmp_path / 'mixed', 12)}", shape=(24, 24, 3), mode="stream",
                          val_fraction=0.0)
    started: list[int] = []
    prefetched = pipeline._prefetched
    monkeypatch.setattr(pipeline, "_prefetched", lambda grain, dataset, workers: (
        started.append(workers), prefetched(grain, dataset, workers))[1])

    def batches(workers: int) -> list[dict[str, np.ndarray]]:
        iterator = eval_batches(data, "val", 4, workers)
        try:
            return [{key: np.array(value) for key, value in batch.items()} for batch in iterator]
        finally:
            close_iterator(iterator)

    on_threads = batches(1)
    assert started == [0] and len(data.val) < pipeline.EVAL_WORKERS_FROM  # one worker asked for, none started
    monkeypatch.setattr(pipeline, "EVAL_WORKERS_FROM", len(data.val))
    in_workers = batches(1)
    assert started == [0, 1]
    assert len(on_threads) == len(in_workers) == -(-len(data.val) // 4)
    for a, b in zip(on_threads, in_workers):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_closing_a_pipeline_releases_each_shared_batch_on_one_thread(tmp_path: Path, monkeypatch) -> None:
    """Batches the worker processes had made but the loop never took sit in the closed iterators' reference
    cycles; collected, Grain's background thread and the collector would both close each one's shared memory,
    two closes of one file descriptor (the second hit a checkpoint's file, seen as EBADF from orbax). Whatever
    the timing, each shared-memory block is closed from one thread (fails without close_iterator's care)."""
    import itertools
    import threading
    from multiprocessing import shared_memory

    from cnndsl.training.feed import close_iterator

    data, _ = open_images(f"folder:{jpeg_folder(tmp_path / 'mixed', 12)}", shape=(24, 24, 3), mode="stream",
                          val_fraction=0.0)
    closers: dict[tuple[int, str], set[str]] = {}
    tags = itertools.count()  # one per object (ids are reused once an object is freed)
    close = shared_memory.SharedMemory.close

    def recorded(self: shared_memory.SharedMemory) -> None:
        tag = self.__dict__.setdefault("_closing_tag", next(tags))
        closers.setdefault((tag, self.name), set()).add(threading.current_thread().name)
        close(self)

    monkeypatch.setattr(shared_memory.SharedMemory, "close", recorded)
    steps = len(data.train) // 4
    iterator = train_batches(data, seed=0, batch=4, steps_per_epoch=steps, epochs=3, workers=1, random_crop=False)
    cycle: list[object] = [next(iterator) for _ in range(2)]  # the rest of the run is still being made
    cycle.append(cycle)  # batches held in a reference cycle (a frame, a traceback): only the collector frees them
    taken = [batch["index"].tolist() for batch in cycle[:2]]
    del cycle
    close_iterator(iterator)
    assert len(taken) == 2 and len(closers) >= 2  # batches were made in shared memory and released
    twice = {name: threads for (_, name), threads in closers.items() if len(threads) > 1}
    assert not twice, f"shared memory closed from two threads: {twice}"


def test_ctrl_c_on_a_streamed_run_prints_one_line_and_no_worker_traceback(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the whole process group, the worker processes too: they leave it to the
    training process, which saves a checkpoint and says so in one line (a worker's own KeyboardInterrupt
    traceback was printed beside it)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    folder = jpeg_folder(tmp_path / "mixed", 12)
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "cnndsl", "train", str(spec_file(tmp_path)), "--data",
                                f"folder:{folder}", "--stream", "--workers", "1", "--epochs", "500", "--out", str(run)],
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        metrics = run / "metrics.jsonl"
        while time.monotonic() < deadline and process.poll() is None and not (
                metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
            time.sleep(0.05)  # two epochs done: the workers are running
        os.killpg(process.pid, signal.SIGINT)  # as a terminal sends it: to the group
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, err[-2000:]
    assert "interrupted at step" in err and "--resume" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]


def test_stream_choices_and_errors_are_clear(tmp_path: Path, monkeypatch, capsys) -> None:
    from cnndsl.cli import main

    mixed = jpeg_folder(tmp_path / "mixed", 4)
    spec = str(spec_file(tmp_path))
    monkeypatch.setenv("CNNDSL_MEMORY_BUDGET", "1K")
    assert main(["train", spec, "--data", f"folder:{mixed}", "--in-memory", "--out", str(tmp_path / "a")]) == 1
    assert "more than the memory budget" in capsys.readouterr().err
    assert main(["train", spec, "--data", f"folder:{mixed}", "--epochs", "1", "--workers", "0", "--quiet",
                 "--out", str(tmp_path / "b")]) == 0
    assert "streaming" in capsys.readouterr().err or json.loads(
        (tmp_path / "b" / "settings.json").read_text())["pipeline"] == "streamed"
    assert main(["train", spec, "--data", "digits", "--stream", "--out", str(tmp_path / "c")]) == 1
    assert "--stream reads folder:PATH and records:DIR" in capsys.readouterr().err
    assert main(["train", spec, "--data", "digits", "--augment", "resized-crop", "--out", str(tmp_path / "d")]) == 1
    assert "resized-crop augmentation crops image files" in capsys.readouterr().err
    assert main(["train", spec, "--data", f"records:{tmp_path}", "--out", str(tmp_path / "e")]) == 1
    assert "no manifest.json" in capsys.readouterr().err


def test_eval_and_predict_of_a_streamed_run_transform_images_as_training_evaluated_them(tmp_path: Path) -> None:
    from cnndsl.data import folder_splits, read_image
    from cnndsl.training import evaluate, predict

    mixed = jpeg_folder(tmp_path / "mixed", 12)
    result = train(tmp_path, "run", f"folder:{mixed}", augment=("resized-crop", "flip"), stream="stream", epochs=3)
    best = result.history.best
    scored = evaluate(None, tmp_path / "run")
    # accuracies: counts over the same images, equal up to the division (pytest.approx's 1e-6)
    assert scored["accuracy"] == pytest.approx(best["test_accuracy"]) and scored["n"] == 3 * 3
    assert scored["val_accuracy"] == pytest.approx(best["val_accuracy"])
    _, _, test, _ = folder_splits(mixed)
    images = [read_image(test.image(i)) for i in range(len(test))]  # of several sizes: cropped as evaluation does
    assert len({image.shape for image in images}) > 1
    labels = predict(None, tmp_path / "run", images).argmax(axis=1)
    assert np.mean(labels == test.labels) == pytest.approx(scored["accuracy"])


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A records folder of 3 classes x 6 images (18 train, 6 test), packed once for the cases that damage a copy."""
    from cnndsl.cli import main

    root = tmp_path_factory.mktemp("packed")
    assert main(["data", "pack", f"folder:{jpeg_folder(root / 'imgs', 6)}", "-o", str(root / "records")]) == 0
    return root / "records"


def _tampered(manifest: dict, case: str, records: Path) -> None:
    """One way a records folder is damaged by hand or by a tool (issue 20)."""
    shard = manifest["splits"]["train"]["shards"][0]
    if case == "a list":
        (records / "manifest.json").write_text("[]")
        return
    if case == "splits a list":
        manifest["splits"] = []
    elif case == "classes a number":
        manifest["classes"] = 3
    elif case == "shard a string":
        manifest["splits"]["train"]["shards"][0] = "train-00000.array_record"
    elif case in ("outside", "absolute"):
        secret = records.parent / "secret.txt"
        secret.write_text("password\n")
        shard["file"] = "../secret.txt" if case == "outside" else str(secret)
        shard["bytes"] = secret.stat().st_size
    elif case == "count":
        manifest["splits"]["train"]["count"] += 1
    elif case == "no test split":
        del manifest["splits"]["test"]
    elif case.startswith("label "):
        labels = np.load(records / "labels-train.npy")
        labels[2] = int(case.split()[1])
        np.save(records / "labels-train.npy", labels)
        return
    elif case == "labels of floats":
        np.save(records / "labels-train.npy", np.load(records / "labels-train.npy").astype(np.float32))
        return
    elif case == "labels header claims 10**12":
        header = records / "labels-train.npy"
        import io

        out = io.BytesIO()
        np.lib.format.write_array_header_1_0(out, {"descr": "<i4", "fortran_order": False, "shape": (10**12,)})
        header.write_bytes(out.getvalue())
        return
    (records / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("case, says", [
    ("a list", "format None"), ("splits a list", "not a records manifest"),
    ("classes a number", "not a records manifest"), ("shard a string", "not a records manifest"),
    ("outside", "is not a file name inside the folder"), ("absolute", "is not a file name inside the folder"),
    ("count", "counts 19 examples, its shards 18"), ("no test split", "not a records manifest"),
    ("label 7", "label 7 of example 2 is not one of the 3 classes"),
    ("label -1", "label -1 of example 2 is not one of the 3 classes"),
    ("labels of floats", "expected 18 integer labels"), ("labels header claims 10**12", "expected 18 integer labels"),
])
def test_a_damaged_records_folder_is_refused_with_the_file_named(tmp_path: Path, capsys, case: str, says: str,
                                                                 packed: Path) -> None:
    """A records manifest or labels file of another shape, a shard outside the folder, a label that is no
    class: one line naming the file (exit 1), never an internal error, a byte of another file, or a run
    that trains on a class the network does not have."""
    from cnndsl.cli import main

    records = tmp_path / "records"
    shutil.copytree(packed, records)
    _tampered(json.loads((records / "manifest.json").read_text()), case, records)
    capsys.readouterr()
    spec = tmp_path / "tiny.cnn"
    spec.write_text(SPEC)
    assert main(["train", str(spec), "--data", f"records:{records}", "--out", str(tmp_path / "run")]) == 1
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert line.startswith("cnndsl: ") and says in line and "password" not in out + err, line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_damaged_shard_is_skipped_and_counted_with_the_shard_named(tmp_path: Path, packed: Path) -> None:
    """One flipped byte in a shard fails ArrayRecord's checksum: its examples read as damaged images do
    (weight 0, counted by the loop), the message naming the shard and what to do."""
    from cnndsl.data.pipeline import _element, why_bad  # noqa: PLC2701 - the pipeline's per-example step
    from cnndsl.data.records import open_records

    records = tmp_path / "records"
    shutil.copytree(packed, records)
    shard = records / "train-00000.array_record"
    damaged = bytearray(shard.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    shard.write_bytes(bytes(damaged))
    splits, _ = open_records(records)
    element = _element(splits["train"], 3, (24, 24), 3, None)
    assert element["weight"] == 0 and element["bad"] == 3
    message = why_bad(splits["train"], 3)
    assert message.startswith(f"{shard}: record 3 cannot be read") and "pack the folder again" in message
    assert _element(splits["test"], 0, (24, 24), 3, None)["weight"] == 1  # another shard reads on


def test_packing_odd_folders_answers_in_one_line(tmp_path: Path, capsys) -> None:
    """Issue 20: a file name that is not UTF-8 is packed (its bytes kept in the record's name); an output
    folder name ArrayRecord cannot take, a folder that may not be listed: one line, exit 1, nothing written."""
    import os

    from cnndsl.cli import main
    from cnndsl.data.records import open_records

    imgs = jpeg_folder(tmp_path / "imgs", 4)
    first = sorted((imgs / "train" / "ant").iterdir())[0]
    odd = os.fsencode(imgs / "train" / "ant") + b"/\xff\xfe.jpg"
    os.link(first, odd)
    os.symlink("loop.png", imgs / "train" / "bee" / "loop.png")  # a link to itself: not an image, skipped
    assert main(["data", "pack", f"folder:{imgs}", "-o", str(tmp_path / "ok")]) == 0
    splits, _ = open_records(tmp_path / "ok")
    names = [splits["train"].name(i) for i in range(len(splits["train"]))]
    assert any("\ufffd\ufffd.jpg" in name for name in names)  # the undecodable bytes, shown as replacements
    capsys.readouterr()
    not_utf8 = os.fsdecode(os.fsencode(tmp_path) + b"/rec\xfe")
    huge = jpeg_folder(tmp_path / "huge", 4)
    with open(huge / "train" / "ant" / "huge.png", "wb") as sparse:  # 300 MB that take no disk (a sparse file)
        sparse.truncate(300 << 20)
    cases = {"UTF-8": ["data", "pack", f"folder:{imgs}", "-o", not_utf8],
             "cnndsl: /proc": ["data", "pack", "folder:/proc", "-o", str(tmp_path / "proc")],  # what it cannot use
             "314,572,800 bytes, more than one image file may have": ["data", "pack", f"folder:{huge}", "-o",
                                                                      str(tmp_path / "big")]}
    for says, args in cases.items():
        assert main(args) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("cnndsl: ") and says in line, line
    assert not os.path.exists(not_utf8) and not (tmp_path / "proc").exists() and not (tmp_path / "big").exists()
