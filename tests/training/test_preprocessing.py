"""One definition of preprocessing (issue 9): the scale and normalization a run records are applied the
same way by train, eval, predict (image files and arrays), the Python API and an export, whatever the
data's dtype; model selection uses the validation split; a warning names classes training never sees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnndsl
from cnndsl.cli import main
from cnndsl.data import load_dataset
from cnndsl.emit.artifact import export_run
from cnndsl.training import evaluate, load_run
from tests.conftest import ROOT

DIGITS = ROOT / "examples" / "digits.cnn"


def digits_npz(path: Path, kind: str) -> tuple[np.ndarray, float]:
    """The digits as an npz of `kind` pixels; returns the test images (in the stored units) and the white level."""
    data = load_dataset("digits", val_fraction=0)
    eight_bit = {split: (getattr(data, f"x_{split}") * 15).astype(np.uint8) for split in ("train", "test")}  # 0..240
    convert, white = {"uint8": (lambda x: x, 255.0), "float 0..255": (lambda x: x.astype(np.float64), 255.0),
                      "float 0..1": (lambda x: x.astype(np.float32) / 255, 1.0)}[kind]
    np.savez(path, x=convert(eight_bit["train"]), y=data.y_train, x_test=convert(eight_bit["test"]), y_test=data.y_test)
    return convert(eight_bit["test"]), white


@pytest.mark.parametrize("kind", ["uint8", "float 0..255", "float 0..1"])
def test_predicting_images_gives_the_labels_eval_scores(kind: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    x_test, white = digits_npz(tmp_path / "d.npz", kind)
    run = tmp_path / "run"
    cnndsl.train(DIGITS, run_dir=run, data=f"npz:{tmp_path / 'd.npz'}", epochs=2, quiet=True)
    assert json.loads((run / "settings.json").read_text())["normalization"]["scale"] == white

    loaded = load_run(None, run)
    labels = loaded.probabilities(list(x_test)).argmax(axis=1)  # arrays in the stored units, as eval sees them
    y_test = load_dataset(f"npz:{tmp_path / 'd.npz'}").y_test
    # accuracies: counts over the same images, equal up to the division (pytest.approx's 1e-6)
    assert np.mean(labels == y_test) == pytest.approx(evaluate(None, run)["accuracy"])

    files = []
    for i in range(24):  # the same images as 8-bit PNG files, as a user would have them
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(np.round(x_test[i, ..., 0] * (255.0 / white)).astype(np.uint8)).save(files[-1])
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--json", "--top", "1", *map(str, files)]) == 0
    from_files = [json.loads(line)["top"][0]["class"] for line in capsys.readouterr().out.splitlines()]
    assert from_files == list(labels[:24])

    export_run(None, run, tmp_path / "art")
    exported = cnndsl.load_exported(tmp_path / "art").probabilities(x_test.astype(np.float32))
    np.testing.assert_array_equal(exported.argmax(axis=1), labels)


def test_model_selection_uses_validation_and_never_test(tmp_path: Path) -> None:
    result = cnndsl.train(DIGITS, run_dir=tmp_path / "run", epochs=4, quiet=True)
    epochs = result.history.epochs
    chosen = max(epochs, key=lambda e: e["val_accuracy"])
    best_steps = [int(p.name) for p in (tmp_path / "run" / "checkpoints" / "best").iterdir() if p.name.isdigit()]
    assert best_steps == [chosen["step"]] and result.history.best is chosen
    result = cnndsl.train(DIGITS, run_dir=tmp_path / "none", epochs=2, val_fraction=0, quiet=True)
    assert all(e["val_accuracy"] is None for e in result.history.epochs)
    best_steps = [int(p.name) for p in (tmp_path / "none" / "checkpoints" / "best").iterdir() if p.name.isdigit()]
    assert best_steps == [result.history.epochs[-1]["step"]]  # no validation: the last epoch, never test-chosen
    assert evaluate(None, tmp_path / "none")["val_n"] == 0


def test_classes_training_never_sees_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = load_dataset("digits", val_fraction=0)
    order = np.argsort(data.y_train, kind="stable")  # sorted by class, then split: the reported mistake
    x, y = data.x_train[order], data.y_train[order]
    np.savez(tmp_path / "sorted.npz", x=x[:1000], y=y[:1000], x_test=x[1000:], y_test=y[1000:])
    assert main(["train", str(DIGITS), "--data", f"npz:{tmp_path / 'sorted.npz'}", "--out", str(tmp_path / "run"),
                 "--epochs", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    missing = sorted(set(y[1000:].tolist()) - set(y[:1000].tolist()))
    assert f"warning: {len(missing)} classes of the validation and test data never occur in the training data "\
           f"({', '.join(map(str, missing))})" in err


def test_a_run_works_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    digits_npz(tmp_path / "project" / "d.npz", "uint8")
    assert main(["train", str(DIGITS), "--data", "npz:d.npz", "--out", "run", "--epochs", "1", "--quiet"]) == 0
    settings = json.loads((tmp_path / "project" / "run" / "settings.json").read_text())
    assert settings["data"] == f"npz:{tmp_path / 'project' / 'd.npz'}"
    monkeypatch.chdir(tmp_path)  # elsewhere, with --run alone: the run holds its spec and its data's path
    capsys.readouterr()
    assert main(["eval", "--run", "project/run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 359
