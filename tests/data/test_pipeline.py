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
from cnndsl.data.pipeline import epoch_order, open_images, train_batches  # noqa: E402
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
