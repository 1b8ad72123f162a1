"""Train, validation and test splits (issue 9): model selection never sees the test set; every split is
fixed (the same on every machine); a source's own validation split is used where it has one; the pixel
scale is what the data's dtype and range say it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnndsl.data import absolute_source, load_dataset, missing_classes, white_level


def rows(x: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in x}


def test_digits_keep_their_test_split_and_hold_out_a_tenth_for_validation() -> None:
    data = load_dataset("digits")
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (1294, 144, 359)
    again = load_dataset("digits")
    np.testing.assert_array_equal(data.x_val, again.x_val)  # fixed, not random per run
    assert not rows(data.x_val) & rows(data.x_test)
    unsplit = load_dataset("digits", val_fraction=0)
    assert len(unsplit.x_val) == 0 and len(unsplit.x_train) == 1438
    np.testing.assert_array_equal(unsplit.x_test, data.x_test)  # validation comes out of training only
    assert rows(data.x_train) | rows(data.x_val) == rows(unsplit.x_train)


@pytest.mark.parametrize("fraction, expected", [(0.1, 10), (0.25, 25), (0.001, 1), (0.5, 50)])
def test_the_validation_fraction_of_the_training_data(tmp_path: Path, fraction: float, expected: int) -> None:
    x = np.arange(125 * 4, dtype=np.uint16).reshape(125, 2, 2)  # distinct images
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(125) % 5)
    data = load_dataset(f"npz:{tmp_path / 'd.npz'}", val_fraction=fraction)
    assert len(data.x_test) == 25 and len(data.x_val) == expected and len(data.x_train) == 100 - expected
    assert not rows(data.x_train) & rows(data.x_val)


def test_a_sources_own_validation_split_is_used(tmp_path: Path) -> None:
    from PIL import Image

    x = np.zeros((10, 4, 4), np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10) % 2, x_val=x[:3] + 1, y_val=np.array([0, 1, 0]),
             x_test=x[:4] + 2, y_test=np.array([1, 0, 1, 0]))
    data = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (10, 3, 4) and data.x_val.max() == 1
    for split, count in (("train", 6), ("val", 2), ("test", 3)):
        for label in ("a", "b"):
            folder = tmp_path / "imgs" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((5, 5), i * 10, np.uint8)).save(folder / f"{i}.png")
    data = load_dataset(f"folder:{tmp_path / 'imgs'}")
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (12, 4, 6)
    import shutil

    shutil.rmtree(tmp_path / "imgs" / "test")  # ImageNet's layout: val/ is the evaluation set
    data = load_dataset(f"folder:{tmp_path / 'imgs'}")
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (11, 1, 4)


@pytest.mark.parametrize("values, dtype, white", [
    ((0, 255), np.uint8, 255.0), ((0, 200), np.uint16, 255.0), ((0, 4000), np.uint16, 65535.0),
    ((0.0, 1.0), np.float32, 1.0), ((0.0, 0.3), np.float64, 1.0), ((0.0, 255.0), np.float64, 255.0),
    ((0.0, 17.0), np.float32, 255.0), ((-1.0, 300.0), np.float32, 300.0),
])
def test_the_white_level_follows_dtype_and_range(values: tuple, dtype: type, white: float) -> None:
    assert white_level(np.array(values, dtype=dtype)) == white


def test_float_images_in_0_to_255_are_scaled_like_8_bit_ones(tmp_path: Path) -> None:
    """The reported case: float64 pixels 0..255 were taken as 0..1 and predictions from PNGs were wrong."""
    x = np.random.default_rng(0).integers(0, 256, (20, 6, 6)).astype(np.float64)
    np.savez(tmp_path / "f.npz", x=x, y=np.arange(20) % 2)
    assert load_dataset(f"npz:{tmp_path / 'f.npz'}").scale == 255.0


def test_classes_missing_from_training_are_named(tmp_path: Path) -> None:
    x = np.zeros((12, 3, 3), np.uint8)
    np.savez(tmp_path / "s.npz", x=x[:6], y=np.array([0, 0, 1, 1, 0, 1]), x_test=x[:6], y_test=np.array([0, 1, 2, 3, 3, 2]))
    assert missing_classes(load_dataset(f"npz:{tmp_path / 's.npz'}")) == ["2", "3"]
    assert missing_classes(load_dataset("digits")) == []


def test_sources_are_recorded_with_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_source("npz:data/d.npz") == f"npz:{tmp_path / 'data' / 'd.npz'}"
    assert absolute_source("folder:imgs") == f"folder:{tmp_path / 'imgs'}"
    assert absolute_source("digits") == "digits" and absolute_source("cifar10") == "cifar10"
