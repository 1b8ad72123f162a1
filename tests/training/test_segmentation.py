"""Dense prediction: per-pixel labels in (the generated `shapes`, `masks:PATH` folders), the per-pixel loss
and metrics against their definitions, image and mask augmented together, and a U-Net trained, evaluated and
asked for masks end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnndsl
from cnndsl.cli import main
from cnndsl.data import DataError, load_dataset
from cnndsl.data.segmentation import IGNORE, palette, read_mask
from cnndsl.lang.settings import TrainingError
from cnndsl.training.steps import dense_scores
from tests.conftest import ROOT

#: A narrow U-Net (two levels) on `shapes`: seconds per epoch.
SMALL_UNET = """network SmallUNet
input 32x32x3
block double(c) = conv(c, 3x3, pad=same) -> relu -> conv(c, 3x3, pad=same) -> relu
input -> double(8) -> @e1 -> maxpool(2x2) -> double(16)
      -> conv_transpose(8, 2x2, stride=2) -> concat(@e1 | identity) -> double(8) -> conv(4, 1x1)
train data = shapes, batch_size = 16, lr = 0.005
"""


def test_the_shapes_dataset_is_fixed_and_labels_every_class() -> None:
    first, again = load_dataset("shapes"), load_dataset("shapes")
    assert np.array_equal(first.x_train, again.x_train) and np.array_equal(first.y_test, again.y_test)
    assert first.x_train.shape[1:] == (32, 32, 3) and first.y_train.shape[1:] == (32, 32)
    assert len(first.x_train) + len(first.x_val) == 1200 and len(first.x_test) == 300 and len(first.x_val) == 120
    assert first.classes == ("background", "disc", "square", "triangle") and first.num_classes == 4
    counts = np.bincount(first.y_train.ravel(), minlength=5)
    assert counts[4] == 0 and all(counts[:4] > 0.02 * first.y_train.size)  # every class, at least 2% of pixels
    # a shape's pixels differ from their background (the outline is learnable): mean colour distance > 20
    image, mask = first.x_train[0].astype(float), first.y_train[0]
    assert np.abs(image[mask > 0].mean(0) - image[mask == 0].mean(0)).sum() > 20


def _png(path: Path, array: np.ndarray, mode: str, palette_of: np.ndarray | None = None) -> None:
    image = Image.fromarray(array, mode)
    if palette_of is not None:
        image.putpalette(palette_of.ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _masks_folder(root: Path, size: tuple[int, int] = (12, 10), count: int = 10) -> np.ndarray:
    """images/ and masks/ of `count` pictures: half the masks grayscale, half palette PNGs (as VOC's), a border of
    255 in each; a JPEG among the images. Returns the masks."""
    rng = np.random.default_rng(5)
    masks = rng.integers(0, 3, (count, *size)).astype(np.uint8)
    masks[:, 0, :] = IGNORE
    for k in range(count):
        suffix = ".jpg" if k == 3 else ".png"
        _png(root / "images" / f"p{k}{suffix}", rng.integers(0, 256, (*size, 3), np.uint8), "RGB")
        if k % 2:
            _png(root / "masks" / f"p{k}.png", masks[k], "P", palette())
        else:
            _png(root / "masks" / f"p{k}.png", masks[k], "L")
    return masks


def test_a_masks_folder_reads_index_and_palette_pngs_and_resizes_by_nearest(tmp_path: Path) -> None:
    masks = _masks_folder(tmp_path / "seg")
    (tmp_path / "seg" / "classes.txt").write_text("sky\nroad\ncar\nperson\n")
    palette_mask = read_mask(tmp_path / "seg" / "masks" / "p1.png")
    assert Image.open(tmp_path / "seg" / "masks" / "p1.png").mode == "P" and np.array_equal(palette_mask, masks[1])
    data = load_dataset(f"masks:{tmp_path / 'seg'}", shape=(24, 20, 3), val_fraction=0)
    assert data.num_classes == 4 and data.classes == ("sky", "road", "car", "person")  # classes.txt names a 4th
    assert data.x_train.shape[1:] == (24, 20, 3) and len(data.y_train) + len(data.y_test) == 10
    everything = np.concatenate([data.y_train, data.y_test])
    # doubled by nearest neighbour: each label becomes a 2x2 block, never a blend (255 stays 255)
    assert set(np.unique(everything)) <= {0, 1, 2, IGNORE}
    assert np.array_equal(everything[:, ::2, ::2], everything[:, 1::2, 1::2])
    assert sorted(map(bytes, everything[:, ::2, ::2])) == sorted(map(bytes, masks))


def test_a_masks_folder_refuses_what_it_cannot_read_as_labels(tmp_path: Path) -> None:
    _masks_folder(tmp_path / "a")
    (tmp_path / "a" / "masks" / "p2.png").unlink()
    with pytest.raises(DataError, match="without a mask of the same name.*p2.png"):
        load_dataset(f"masks:{tmp_path / 'a'}", shape=(12, 10, 3))
    _masks_folder(tmp_path / "b")
    _png(tmp_path / "b" / "masks" / "p4.png", np.zeros((12, 10, 3), np.uint8), "RGB")
    with pytest.raises(DataError, match="p4.png: a RGB mask; a mask is a grayscale or palette PNG"):
        load_dataset(f"masks:{tmp_path / 'b'}", shape=(12, 10, 3))
    _masks_folder(tmp_path / "c")
    _png(tmp_path / "c" / "masks" / "p5.png", np.zeros((6, 10), np.uint8), "L")
    with pytest.raises(DataError, match="p5.png: 6x10, but its image p5.png is 12x10"):
        load_dataset(f"masks:{tmp_path / 'c'}", shape=(12, 10, 3))
    with pytest.raises(DataError, match="no images/ folder"):
        load_dataset(f"masks:{tmp_path}", shape=(12, 10, 3))


def test_dense_scores_are_the_iou_definition() -> None:
    confusion = np.array([[50, 2, 0, 0], [3, 11, 0, 0], [0, 0, 0, 0], [0, 4, 0, 6]], float)
    accuracy, scores = dense_scores(confusion)
    assert accuracy == pytest.approx(67 / 76)
    # IoU = TP / (row + column - TP); class 2 neither occurs nor is predicted: no IoU, not in the mean
    expected = [50 / (52 + 53 - 50), 11 / (14 + 17 - 11), None, 6 / (10 + 6 - 6)]
    assert scores["iou"][2] is None and scores["iou"][:2] + scores["iou"][3:] == pytest.approx(expected[:2] + expected[3:])
    assert scores["miou"] == pytest.approx(np.mean([v for v in expected if v is not None]))


def _trainer_for(spec: str, data_classes: int = 4) -> tuple[object, object]:
    from cnndsl.lang.settings import Settings
    from cnndsl.training import Preprocess, make_optimizer
    from cnndsl.training.steps import Trainer

    net = cnndsl.compile(spec)
    settings = Settings(data="shapes", augment=("crop", "flip"))
    preprocess = Preprocess(255.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (32, 32), ("crop", "flip"))
    return net, Trainer(net, net.init(0), make_optimizer(settings, 1), preprocess, settings, data_classes)


def test_the_per_pixel_loss_and_the_evaluation_follow_their_definitions() -> None:
    import jax.numpy as jnp

    net, trainer = _trainer_for(SMALL_UNET)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 32, 32, 4)).astype(np.float32)
    labels = rng.integers(0, 4, (3, 32, 32)).astype(np.int32)
    labels[0, :5] = IGNORE
    labels[2] = IGNORE  # an image with no labelled pixel counts 0
    losses = np.asarray(trainer._loss(jnp.asarray(logits), jnp.asarray(labels)))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    for k in range(2):
        valid = labels[k] != IGNORE
        picked = np.take_along_axis(log_probs[k], np.where(valid, labels[k], 0)[..., None], -1)[..., 0]
        # float32 log-softmax over 4 values, averaged over <= 1,024 pixels: far inside 1e-5
        assert losses[k] == pytest.approx(-picked[valid].mean(), rel=1e-5)
    assert losses[2] == 0.0
    # the evaluation's confusion matrix is the predictions' against the labels, ignored pixels left out
    data = load_dataset("shapes", val_fraction=0)
    x, y = data.x_test[:40], data.y_test[:40].astype(np.int32)
    y[:, :3] = IGNORE
    (loss, accuracy, scores), = trainer.evaluate(trainer.params, trainer.stats, (x, y))
    module = trainer.module(trainer.params, trainer.stats, train=False)
    predicted = np.argmax(np.asarray(module(trainer.preprocess(jnp.asarray(x)))), -1)
    counted = y != IGNORE
    confusion = np.zeros((4, 4))
    np.add.at(confusion, (y[counted], predicted[counted]), 1)
    assert (accuracy, scores) == dense_scores(confusion)
    assert loss == pytest.approx(float(np.mean(np.asarray(trainer._loss(module(trainer.preprocess(jnp.asarray(x))),
                                                                          jnp.asarray(y))))), rel=1e-5)


def test_image_and_mask_are_cropped_and_flipped_together() -> None:
    import jax
    import jax.numpy as jnp

    from cnndsl.training import Preprocess

    rng = np.random.default_rng(1)
    masks = rng.integers(0, 4, (16, 32, 32)).astype(np.int32)
    images = np.repeat((masks * 50 + 10)[..., None], 3, axis=-1).astype(np.float32)  # the label, written as a colour
    preprocess = Preprocess(255.0, (0.0,) * 3, (1.0,) * 3, (32, 32), ("crop", "flip"))
    x, y = preprocess(jnp.asarray(images), jax.random.key(3), jnp.asarray(masks))
    x, y = np.asarray(x)[..., 0] * 255, np.asarray(y)
    padded = y == IGNORE
    assert padded.any() and not padded.all()  # the crops moved some images
    np.testing.assert_allclose(x[~padded], y[~padded] * 50 + 10, atol=1e-3)  # every kept pixel keeps its label
    np.testing.assert_array_equal(x[padded], 0)  # the padding is the image's zero padding
    flipped = [k for k in range(16) if not np.array_equal(y[k][~padded[k]], masks[k][~padded[k]])]
    assert flipped  # some were flipped or shifted: the check above could fail


def test_data_and_network_must_agree_on_the_task() -> None:
    from cnndsl.training.compat import check_compatible

    shapes = load_dataset("shapes")
    classifier = cnndsl.compile("input 32x32x3\ninput -> conv(4, 3x3) -> global_avgpool -> fc(4)")
    with pytest.raises(TrainingError, match=r"labels every pixel \(32x32 masks\).*resize\(@input"):
        check_compatible(classifier, shapes, False)
    small = cnndsl.compile("input 32x32x3\ninput -> conv(4, 3x3, stride=2, pad=1) -> conv(4, 1x1)")
    with pytest.raises(TrainingError, match="16x16x4, the masks of shapes are 32x32"):
        check_compatible(small, shapes, False)
    wide = cnndsl.compile("input 32x32x3\ninput -> conv(5, 3x3, pad=same)")
    with pytest.raises(TrainingError, match="scores 5 classes per pixel, shapes has 4"):
        check_compatible(wide, shapes, False)
    per_pixel = cnndsl.compile("input 8x8x1\ninput -> conv(10, 3x3, pad=same)")
    with pytest.raises(TrainingError, match="a map of class scores is for per-pixel labels"):
        check_compatible(per_pixel, load_dataset("digits"), False)


def test_a_unet_trains_evaluates_and_writes_masks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "unet.cnn"
    spec.write_text(SMALL_UNET)
    run = tmp_path / "run"
    result = cnndsl.train(spec, run_dir=run, quiet=True, epochs=2)
    epochs = result.history.epochs
    assert all(0 <= e["val_miou"] <= 1 and len(e["val_iou"]) == 4 for e in epochs)
    assert result.history.best is max(epochs, key=lambda e: e["val_miou"])  # chosen by validation mIoU
    assert epochs[-1]["test_accuracy"] > 0.82  # above the background's share (83% of pixels: shapes' statistics)
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores["iou"]) == {"background", "disc", "square", "triangle"}
    assert scores["miou"] == pytest.approx(np.mean([v for v in scores["iou"].values() if v is not None]))
    # predict: a mask per image at the image's own size, in VOC's palette, and an overlay
    data = load_dataset("shapes", val_fraction=0)
    Image.fromarray(data.x_test[0]).save(tmp_path / "a.png")
    Image.fromarray(data.x_test[1]).resize((48, 40)).save(tmp_path / "b.png")
    assert main(["predict", "--run", str(run), str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                 "-o", str(tmp_path / "masks"), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["mask"] for line in lines] == ["0000-a.png", "0001-b.png"]
    for line, size in zip(lines, [(32, 32), (48, 40)]):
        mask = Image.open(tmp_path / "masks" / line["mask"])
        assert mask.mode == "P" and mask.size == size and set(np.unique(np.asarray(mask))) <= {0, 1, 2, 3}
        assert Image.open(tmp_path / "masks" / line["overlay"]).size == size
        assert sum(line["classes"].values()) == pytest.approx(1.0)
    assert json.loads((tmp_path / "masks" / "predictions.json").read_text())["format"] == "cnndsl.masks/1"
    # the masks a run writes are its own: again only with --force; a segmentation run needs -o
    assert main(["predict", "--run", str(run), str(tmp_path / "a.png"), "-o", str(tmp_path / "masks")]) == 2
    assert main(["predict", "--run", str(run), str(tmp_path / "a.png"), "-o", str(tmp_path / "masks"), "--force"]) == 0
    assert main(["predict", "--run", str(run), str(tmp_path / "a.png")]) == 2
    assert "its predictions are masks" in capsys.readouterr().err
    # ONNX and the exported program carry the map of class scores: the same masks as predict's
    ort = pytest.importorskip("onnxruntime")
    assert main(["compile", str(spec), "--emit", "onnx", "--run", str(run), "-o", str(tmp_path / "m.onnx"), "--quiet"]) == 0
    assert main(["compile", str(spec), "--emit", "export", "--run", str(run), "-o", str(tmp_path / "art"), "--quiet"]) == 0
    pixels = data.x_test[:1].astype(np.float32)
    scores = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": pixels})[0]
    exported = np.asarray(cnndsl.load_exported(tmp_path / "art")(pixels))
    written = np.asarray(Image.open(tmp_path / "masks" / "0000-a.png"))
    assert scores.shape == exported.shape == (1, 32, 32, 4)
    assert np.array_equal(np.argmax(exported[0], -1), written)  # the same XLA program as predict's
    # ONNX Runtime's float32 sums differ from XLA's by ~1e-6 of the scores (tests/tolerances.py NETWORK): only a
    # pixel whose two best classes are closer than that could change its label; 1e-3 apart, none may
    top2 = np.sort(scores[0], -1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > 1e-3 * np.abs(scores).max()
    assert clear.mean() > 0.9 and np.array_equal(np.argmax(scores[0], -1)[clear], written[clear])


def test_the_unet_example_is_the_papers_layout() -> None:
    report = cnndsl.check(ROOT / "examples" / "unet.cnn")
    convs = [r for r in report.rows if r.op.startswith("conv(")]
    assert len(convs) == 2 * 9 + 1  # two 3x3 convolutions at each of 9 levels, then the 1x1
    assert [r.output_shape for r in report.rows if r.op.startswith("concat")] == [
        (4, 4, 128), (8, 8, 64), (16, 16, 32), (32, 32, 16)]  # each decoder level joins its encoder map
    assert report.output_shape == (32, 32, 4)


def test_a_random_resized_crop_cuts_image_and_mask_by_one_box(tmp_path: Path) -> None:
    from cnndsl.data.images import transformed_pair

    mask = np.zeros((60, 80), np.uint8)
    mask[:, 30:] = 1
    mask[35:, 50:] = 2
    image = (np.asarray([[20, 20, 20], [120, 200, 40], [250, 60, 160]], np.uint8)[mask])  # a colour per label
    _png(tmp_path / "i.png", image, "RGB")
    _png(tmp_path / "m.png", mask, "P", palette())
    colours = np.asarray([[20, 20, 20], [120, 200, 40], [250, 60, 160]], float)
    for seed in range(20):
        x, y = transformed_pair(tmp_path / "i.png", tmp_path / "m.png", (16, 16), 3, np.random.default_rng(seed))
        assert x.shape == (16, 16, 3) and y.shape == (16, 16) and set(np.unique(y)) <= {0, 1, 2}
        # bilinear blends the image only along the regions' edges: every other pixel has its label's colour
        matches = np.abs(x.astype(float) - colours[y]).sum(-1) < 30
        assert matches.mean() > 0.75, seed
    x, y = transformed_pair(tmp_path / "i.png", tmp_path / "m.png", (30, 40), 3)  # evaluation: the whole image
    assert np.array_equal(y, mask[1::2, 1::2])  # nearest: output pixel i samples the source at centre 2i + 1


def test_masks_stream_through_the_pipeline_as_they_are_held_in_memory(tmp_path: Path) -> None:
    pytest.importorskip("grain", reason="the stream extra")
    from cnndsl.training.inference import _evaluate_images, evaluate, load_run

    data = load_dataset("shapes", val_fraction=0)
    for split, count, offset in (("train", 64, 0), ("test", 24, 0)):
        x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
        for k in range(count):
            _png(tmp_path / "seg" / split / "images" / f"{k:03d}.png", x[offset + k], "RGB")
            _png(tmp_path / "seg" / split / "masks" / f"{k:03d}.png", y[offset + k], "P", palette())
    spec = tmp_path / "unet.cnn"
    spec.write_text(SMALL_UNET)
    source = f"masks:{tmp_path / 'seg'}"
    cnndsl.train(spec, run_dir=tmp_path / "held", quiet=True, epochs=1, data=source)
    streamed = cnndsl.train(spec, run_dir=tmp_path / "streamed", quiet=True, epochs=1, data=source, stream="stream",
                            augment=("resized-crop", "flip"))
    assert 0 <= streamed.history.epochs[0]["val_miou"] <= 1 and len(streamed.history.epochs[0]["test_iou"]) == 4
    # the same checkpoint evaluated from arrays and streamed from the files: the same pixels, so the same
    # confusion matrix (counts: exact) and the same loss up to the order of float32 sums
    arrays = evaluate(None, tmp_path / "held")
    files = _evaluate_images(load_run(None, tmp_path / "held"), source, "best")
    assert (files["miou"], files["accuracy"], files["iou"]) == (arrays["miou"], arrays["accuracy"], arrays["iou"])
    assert files["loss"] == pytest.approx(arrays["loss"], rel=1e-5)


def test_a_weighted_head_of_a_segmentation_network_trains_on_the_masks_too(tmp_path: Path) -> None:
    """FCN's auxiliary head as torchvision trains it (weight 0.5): a score map like the main output's."""
    spec = tmp_path / "fcn.cnn"
    spec.write_text(SMALL_UNET.replace("train data", "head aux = @e1 -> conv(4, 1x1)\ntrain aux weight = 0.5,\n"
                                                       "    data"))
    epoch = cnndsl.train(spec, run_dir=tmp_path / "run", quiet=True, epochs=1).history.epochs[0]
    assert epoch["train_loss_aux"] > 0 and 0 <= epoch["val_heads"]["aux"]["miou"] <= 1
    wrong = tmp_path / "wrong.cnn"
    wrong.write_text(spec.read_text().replace("head aux = @e1 -> conv(4, 1x1)", "head aux = @e1 -> global_avgpool -> fc(4)"))
    with pytest.raises(TrainingError, match=r"the head `aux` gives 4, .*32x32x4.*conv\(4, 1x1\)"):
        cnndsl.train(wrong, run_dir=tmp_path / "wrong", quiet=True, epochs=1)
