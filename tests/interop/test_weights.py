"""Pretrained weights in (issue 13, parts 5 and 7): files written once by PyTorch (tests/weights/, made by
make_fixtures.py) imported into cnndsl reproduce PyTorch's logits; the CLI writes a run directory that
eval, predict and the exporters take; mismatches stop with both sides named. With torch and torchvision
installed (the `bench` extra), the slow set checks the examples against torchvision's own networks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors", reason="weight import needs the `weights` extra (installed by the test extra)")

import cnndsl  # noqa: E402
from cnndsl.interop.weights import WeightsError, natural_key, pair_layers, read_tensors  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.tolerances import IMPORTED_LOGITS

WEIGHTS = ROOT / "tests" / "weights"
FIXTURES = {"lenet5": ROOT / "examples" / "lenet5.cnn", "narrow_resnet": WEIGHTS / "narrow_resnet.cnn"}


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_imported_weights_reproduce_pytorchs_logits(name: str) -> None:
    net = cnndsl.compile(FIXTURES[name])
    model = net.load_weights(net.init(7), WEIGHTS / f"{name}.safetensors")
    model.eval()
    reference = np.load(WEIGHTS / f"{name}.logits.npz")
    assert relative(np.asarray(model(reference["x"])), reference["logits"]) <= IMPORTED_LOGITS


def test_the_cli_writes_a_run_that_eval_predict_and_the_exporters_use(tmp_path: Path, capsys) -> None:
    from cnndsl.cli import main
    from cnndsl.training import load_run, predict

    spec, weights = FIXTURES["narrow_resnet"], WEIGHTS / "narrow_resnet.safetensors"
    assert main(["weights", "import", str(spec), str(weights), "--dry-run"]) == 0
    table = capsys.readouterr().out
    assert "layer2.downsample.0" in table and "kernel 1x1x8x16" in table and not (tmp_path / "run").exists()
    run = tmp_path / "run"
    assert main(["weights", "import", str(spec), str(weights), "-o", str(run), "--normalize", "none"]) == 0
    reference = np.load(WEIGHTS / "narrow_resnet.logits.npz")
    loaded = load_run(None, run)
    logits = np.asarray(loaded.trainer.module(loaded.params, loaded.stats, train=False)(reference["x"]))
    assert relative(logits, reference["logits"]) <= IMPORTED_LOGITS
    probabilities = predict(None, run, list(reference["x"]))  # images of the input's size: used as they are
    assert (probabilities.argmax(1) == reference["logits"].argmax(1)).all()
    assert main(["eval", "--run", str(run)]) == 1
    assert "holds imported weights and no dataset of its own: give --data" in capsys.readouterr().err
    if pytest.importorskip("onnxruntime") is not None:
        out = tmp_path / "model.onnx"
        assert main(["compile", str(spec), "--emit", "onnx", "--run", str(run), "-o", str(out), "--quiet"]) == 0
        import onnxruntime

        session = onnxruntime.InferenceSession(out.read_bytes(), providers=["CPUExecutionProvider"])
        assert relative(session.run(None, {"input": reference["x"]})[0], reference["logits"]) <= IMPORTED_LOGITS


def _forms(folder: Path, name: str, pixels: np.ndarray) -> list[Path]:
    """One picture as a PNG, a uint8 .npy, a float 0..1 .npy (ToTensor's units) and a float 0..255 .npy."""
    from PIL import Image

    folder.mkdir(exist_ok=True)
    Image.fromarray(pixels).save(folder / f"{name}.png")
    forms = {"uint8": pixels, "unit": pixels.astype(np.float32) / 255, "float255": pixels.astype(np.float64)}
    for form, array in forms.items():
        np.save(folder / f"{name}-{form}.npy", array)
    return [folder / f"{name}.png", *(folder / f"{name}-{form}.npy" for form in forms)]


def _predicted(capsys, run: Path, files: list[Path], *extra: str) -> dict[str, np.ndarray]:
    from cnndsl.cli import main

    assert main(["predict", *map(str, files), "--run", str(run), "--json", "--top", "5", *extra]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return {Path(row["image"]).name: np.array([t["probability"] for t in sorted(row["top"], key=lambda t: t["class"])])
            for row in rows}


def test_an_imported_run_reads_an_image_in_every_form_alike(tmp_path: Path, capsys) -> None:
    """Issue 20: a PNG, a uint8 array, a float array in 0..1 and one in 0..255 of one picture get the same
    answer from an imported run, at the input's size and resized, and at the input's size that answer is
    the network on torchvision's units ((x / 255 - mean) / std); nothing is clipped to 8 bits on the way."""
    from cnndsl.cli import main
    from cnndsl.training import load_run

    run = tmp_path / "run"
    spec, weights = FIXTURES["narrow_resnet"], WEIGHTS / "narrow_resnet.safetensors"
    assert main(["weights", "import", str(spec), str(weights), "-o", str(run)]) == 0
    rng = np.random.default_rng(3)
    same, larger = rng.integers(0, 256, (24, 24, 3), np.uint8), rng.integers(0, 256, (37, 30, 3), np.uint8)
    files = _forms(tmp_path / "in", "same", same) + _forms(tmp_path / "in", "larger", larger)
    got = _predicted(capsys, run, files)
    # One set of 8-bit pixels reaches the network each time; a float 0..1 array differs from it by the
    # rounding of x / 255 * 255 (1 ulp, 6e-8 relative), which the probabilities carry: 1e-5 is far above
    # that and far below a misread image (an image read as black, or clipped, moves them by >1e-2).
    for name in ("same", "larger"):
        for form in ("uint8", "unit", "float255"):
            np.testing.assert_allclose(got[f"{name}-{form}.npy"], got[f"{name}.png"], atol=1e-5)
    loaded = load_run(None, run)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    logits = np.asarray(loaded.trainer.module(loaded.params, loaded.stats, train=False)(
        ((same.astype(np.float32) / 255 - mean) / std)[None]))[0]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(got["same.png"], expected, atol=1e-5)  # the same float32 program, twice
    assert not np.allclose(got["same.png"], got["larger.png"], atol=1e-3)  # two pictures: the check can fail
    # --white states the units: the 0..1 array read as 0..255 is a black picture, a different answer
    dark = _predicted(capsys, run, [tmp_path / "in" / "same-unit.npy"], "--white", "255")
    assert not np.allclose(dark["same-unit.npy"], got["same.png"], atol=1e-3)


def test_an_imported_runs_answers_equal_pytorchs_on_its_weights(tmp_path: Path, capsys) -> None:
    """The same, against PyTorch itself (the bench extra): the fixture's module on ToTensor + Normalize."""
    torch = pytest.importorskip("torch", reason="the bench extra")
    from safetensors.torch import load_file

    from cnndsl.cli import main
    from tests.weights.make_fixtures import NarrowResNet

    run = tmp_path / "run"
    assert main(["weights", "import", str(FIXTURES["narrow_resnet"]), str(WEIGHTS / "narrow_resnet.safetensors"),
                 "-o", str(run)]) == 0
    pixels = np.random.default_rng(6).integers(0, 256, (24, 24, 3), np.uint8)
    got = _predicted(capsys, run, _forms(tmp_path / "in", "x", pixels))
    module = NarrowResNet().eval()
    module.load_state_dict(load_file(str(WEIGHTS / "narrow_resnet.safetensors")))
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        x = (torch.from_numpy(pixels).permute(2, 0, 1).float() / 255 - mean) / std
        expected = torch.softmax(module(x[None]), dim=1)[0].numpy()
    for form in ("x.png", "x-uint8.npy", "x-unit.npy", "x-float255.npy"):  # IMPORTED_LOGITS, on probabilities <= 1
        np.testing.assert_allclose(got[form], expected, atol=IMPORTED_LOGITS)


def test_a_run_taking_its_inputs_as_they_are_gets_them_unclipped(tmp_path: Path, capsys) -> None:
    """`--normalize none`: the network takes its inputs as they are; negative and fractional values reach it
    (resized in floating point when the array has another size), never rounded or clipped to 0..255."""
    from cnndsl.cli import main
    from cnndsl.training import load_run, predict

    run = tmp_path / "run"
    spec, weights = FIXTURES["narrow_resnet"], WEIGHTS / "narrow_resnet.safetensors"
    assert main(["weights", "import", str(spec), str(weights), "-o", str(run), "--normalize", "none"]) == 0
    loaded = load_run(None, run)
    x = np.random.default_rng(4).standard_normal((24, 24, 3)).astype(np.float32)
    logits = np.asarray(loaded.trainer.module(loaded.params, loaded.stats, train=False)(x[None]))[0]
    np.testing.assert_allclose(np.log(predict(None, run, [x])[0]), logits - np.log(np.exp(logits).sum()),
                               atol=1e-5)  # the same float32 program twice; log-softmax of order-1 logits
    big = np.random.default_rng(5).standard_normal((40, 48, 3)).astype(np.float32)
    assert not np.allclose(predict(None, run, [big]), predict(None, run, [big.clip(0, 255)]), atol=1e-4)


def test_a_file_that_does_not_fit_stops_with_both_sides_named(tmp_path: Path) -> None:
    lenet = cnndsl.check(FIXTURES["lenet5"])
    with pytest.raises(WeightsError, match=r"conv1 conv\(6, 5x5\) at line \d+, needs kernel 5x5x1x6, bias 6; no "
                                           r"layer of the file fits \(the file's next conv, conv1, has weight 8x3x3x3"):
        pair_layers(lenet, read_tensors(WEIGHTS / "narrow_resnet.safetensors"))
    headless = cnndsl.check((WEIGHTS / "narrow_resnet.cnn").read_text().replace("-> relu -> fc(5)", "-> relu"))
    with pytest.raises(WeightsError, match=r"1 layer of the file fit no layer of the spec: fc2 \(bias 5, weight "
                                           r"5x32\); is it another network\?"):
        pair_layers(headless, read_tensors(WEIGHTS / "narrow_resnet.safetensors"))
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(WeightsError, match="bad.safetensors: not a readable safetensors file"):
        read_tensors(tmp_path / "bad.safetensors")
    with pytest.raises(WeightsError, match="no such file"):
        read_tensors(tmp_path / "absent.safetensors")


def test_pytorch_files_need_torch_and_are_never_unpickled_freely(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "model.pth").write_bytes(b"whatever")
    monkeypatch.setitem(sys.modules, "torch", None)  # as without torch installed
    with pytest.raises(WeightsError, match="reading .pth/.pt files needs torch; convert it to safetensors"):
        read_tensors(tmp_path / "model.pth")


def test_pytorch_state_dicts_and_hostile_pickles(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="reading .pth needs torch (the bench extra)")
    from safetensors.numpy import load_file

    tensors = load_file(str(WEIGHTS / "narrow_resnet.safetensors"))
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, tmp_path / "state.pth")
    net = cnndsl.compile(FIXTURES["narrow_resnet"])
    model = net.load_weights(net.init(0), tmp_path / "state.pth")
    model.eval()
    reference = np.load(WEIGHTS / "narrow_resnet.logits.npz")
    assert relative(np.asarray(model(reference["x"])), reference["logits"]) <= IMPORTED_LOGITS

    import pickle

    class Exploit:
        def __reduce__(self):  # noqa: ANN204 - what an arbitrary pickle would run
            return (print, ("this must never run",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(WeightsError, match="evil.pth: not a plain state dict of tensors"):
        read_tensors(tmp_path / "evil.pth")


def test_keras_named_weights_import_as_they_are(tmp_path: Path) -> None:
    """Keras's layout is cnndsl's (HWIO kernels, (in, out) dense kernels, H, W, C flattening): a file named as
    Keras names variables (`conv2d_1/kernel:0`, `batch_normalization/gamma:0`, `moving_variance`,
    `layer_normalization/beta`) imports with no conversion and gives the same outputs (`--map auto`)."""
    from safetensors.numpy import save_file

    net = cnndsl.compile("network K\ninput 8x8x3\ninput -> conv(4, 3x3) -> bn -> relu -> conv(6, 3x3, bias=false) "
                         "-> ln -> linear(5) -> fc(7) -> relu -> fc(3)\n")
    from flax import nnx

    from cnndsl.nn.flax_backend import flatten_state, unflatten_state

    source = net.init(1)
    source.eval()
    rng = np.random.default_rng(0)
    arrays = {k: np.asarray(v) + rng.normal(0, 0.1, np.shape(v)).astype(np.float32)
              for k, v in flatten_state(nnx.state(source, (nnx.Param, nnx.BatchStat)))[2].items()}
    arrays = {k: np.abs(v) + 0.5 if k.endswith("/var") else v for k, v in arrays.items()}
    keras = {"conv1": "conv2d", "conv2": "conv2d_1", "bn1": "batch_normalization", "ln1": "layer_normalization",
             "linear1": "dense", "fc1": "dense_1", "fc2": "dense_2"}
    short = {"scale": "gamma", "bias": "beta", "mean": "moving_mean", "var": "moving_variance"}
    named = {}
    for name, array in arrays.items():
        layer, part = name.split("/")
        if layer.startswith(("bn", "ln")):
            part = short[part]
        named[f"{keras[layer]}/{part}:0"] = array
    save_file(named, str(tmp_path / "keras.safetensors"))
    pairs = pair_layers(net.report, read_tensors(tmp_path / "keras.safetensors"))
    order = ("conv1", "bn1", "conv2", "ln1", "linear1", "fc1", "fc2")  # execution order
    assert [(p.spec.name, p.file.name) for p in pairs] == [(k, keras[k]) for k in order]
    model = net.load_weights(net.init(0), tmp_path / "keras.safetensors")
    model.eval()
    names, treedef, _ = flatten_state(nnx.state(source, (nnx.Param, nnx.BatchStat)))
    nnx.update(source, unflatten_state(names, treedef, arrays))
    x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(source(x)), rtol=1e-6, atol=1e-6)  # the same arrays, the same program: measured 0


def test_safetensors_order_is_guessed_from_the_names() -> None:
    names = ["layer1.10.conv1", "layer1.9.conv2", "layer1.9.downsample.0", "layer1.9.conv1", "conv1"]
    assert sorted(names, key=natural_key) == ["conv1", "layer1.9.conv1", "layer1.9.conv2", "layer1.9.downsample.0",
                                              "layer1.10.conv1"]
    dense = ["features.norm5", "features.denseblock1.denselayer1.norm1", "features.transition1.norm",
             "features.norm0", "features.denseblock2.denselayer1.norm1", "features.conv0"]
    assert sorted(dense, key=natural_key) == ["features.conv0", "features.norm0", "features.denseblock1.denselayer1.norm1",
                                              "features.transition1.norm", "features.denseblock2.denselayer1.norm1",
                                              "features.norm5"]
    convnext = ["classifier.0", "features.7.0.block.2", "features.0.1", "features.1.0.block.2"]  # LayerNorms
    assert sorted(convnext, key=natural_key) == ["features.0.1", "features.1.0.block.2", "features.7.0.block.2",
                                                 "classifier.0"]
    timm = ["stages.0.blocks.0.norm", "head.norm", "stem.1"]
    assert sorted(timm, key=natural_key) == ["stem.1", "stages.0.blocks.0.norm", "head.norm"]


TORCHVISION = {"resnet18": "resnet18", "resnet50": "resnet50", "resnet101": "resnet101", "vgg16": "vgg16", "alexnet": "alexnet",
               "googlenet": "googlenet", "densenet121": "densenet121", "mobilenet_v2": "mobilenet_v2",
               "efficientnet_b0": "efficientnet_b0", "convnext_tiny": "convnext_tiny"}


@pytest.mark.slow
@pytest.mark.parametrize("example", sorted(TORCHVISION))
def test_examples_equal_torchvisions_networks_with_its_random_weights(example: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="the bench extra")
    torchvision = pytest.importorskip("torchvision", reason="the bench extra")
    from safetensors.torch import save_file

    kwargs = {"aux_logits": False, "init_weights": True, "transform_input": False} if example == "googlenet" else {}
    module = getattr(torchvision.models, TORCHVISION[example])(**kwargs).eval()
    torch.manual_seed(0)
    for m in module.modules():  # running statistics, layer norms and layer scales that are not the defaults
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
        if isinstance(m, torch.nn.LayerNorm):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    for name, parameter in module.named_parameters():
        if name.endswith("layer_scale"):  # ConvNeXt's start at 1e-6: its blocks would hardly count
            with torch.no_grad():
                parameter.uniform_(0.1, 0.3)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp_path / "w.safetensors"))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = module(x).numpy()
    net = cnndsl.compile(ROOT / "examples" / f"{example}.cnn")
    model = net.load_weights(net.init(0), tmp_path / "w.safetensors")
    model.eval()
    got = np.asarray(model(x.permute(0, 2, 3, 1).numpy()))
    # up to 150 layers (ResNet-152) of sums of up to 4,608 terms in each framework: NETWORK's bound grows to
    # 2 * 150*sqrt(4608)*u = 1.2e-3; all ten networks stayed under 1e-4 (the slow set, torch installed)
    assert relative(got, expected) <= 1e-4, json.dumps({"example": example})


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_files_import_widened_to_float32_and_said(dtype: str, tmp_path: Path, capsys) -> None:
    """Issue 20: bf16/fp16 safetensors (how most checkpoints ship) import, widened exactly to float32 and
    said so; the network then computes what it computes with those values stored as float32."""
    import ml_dtypes
    from safetensors.numpy import save_file

    from cnndsl.cli import main

    half = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16
    tensors = read_tensors(WEIGHTS / "narrow_resnet.safetensors")
    save_file({k: v.astype(half) for k, v in tensors.items()}, str(tmp_path / "half.safetensors"))
    save_file({k: v.astype(half).astype(np.float32) for k, v in tensors.items()}, str(tmp_path / "wide.safetensors"))
    run = tmp_path / "run"
    assert main(["weights", "import", str(FIXTURES["narrow_resnet"]), str(tmp_path / "half.safetensors"),
                 "-o", str(run)]) == 0
    assert f"holds {len(tensors)} {dtype} tensors: converted to float32" in capsys.readouterr().err
    net = cnndsl.compile(FIXTURES["narrow_resnet"])
    x = np.load(WEIGHTS / "narrow_resnet.logits.npz")["x"]
    outputs = []
    for name in ("half", "wide"):
        model = net.load_weights(net.init(0), tmp_path / f"{name}.safetensors")
        model.eval()
        outputs.append(np.asarray(model(x)))
    np.testing.assert_array_equal(outputs[0], outputs[1])  # the same float32 values: the same program's output


@pytest.mark.parametrize("value, dtype", [(np.nan, np.float32), (np.inf, np.float32), (-np.inf, np.float16),
                                          (1e300, np.float64), (-3e9, np.float32)])
def test_weights_that_are_not_finite_or_absurd_are_refused_with_the_tensor_named(value: float, dtype, tmp_path: Path,
                                                                                 capsys) -> None:
    from safetensors.numpy import save_file

    from cnndsl.cli import main

    tensors = {k: v.astype(dtype) for k, v in read_tensors(WEIGHTS / "narrow_resnet.safetensors").items()}
    tensors["layer1.conv2.weight"].flat[5] = value
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    assert main(["weights", "import", str(FIXTURES["narrow_resnet"]), str(tmp_path / "bad.safetensors"),
                 "-o", str(tmp_path / "run")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "tensor layer1.conv2.weight holds" in line and "index (0, 0, 1, 2)" in line, line
    assert not (tmp_path / "run").exists()


def test_a_pth_that_inflates_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    """A 1 MB .pth whose zip member inflates to 1 GB: refused from the zip's directory (no torch needed)."""
    import zipfile

    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("archive/data/0", "w",
                                                                                     force_zip64=True) as member:
        for _ in range(64):
            member.write(bytes(1 << 24))
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(WeightsError, match=r"archive/data/0 inflates [\d,]+ bytes to 1,073,741,824; torch.save"):
        read_tensors(bomb)


def test_a_transposed_convolution_takes_pytorchs_weights(tmp_path: Path) -> None:
    """Issue 21: ConvTranspose2d's (in, out/groups, kh, kw) weight pairs with `conv_transpose` (its shapes tell it
    from a convolution's), transposed to (kh, kw, in, out/groups); the network then computes with exactly those."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {"conv.weight": rng.normal(size=(6, 4, 3, 3)).astype(np.float32),  # a conv: 4 in, 6 out
               "conv.bias": rng.normal(size=6).astype(np.float32),
               "up.weight": rng.normal(size=(6, 2, 2, 2)).astype(np.float32),  # 6 in, 4 out in 2 groups
               "up.bias": rng.normal(size=4).astype(np.float32)}
    save_file(tensors, str(tmp_path / "w.safetensors"))
    net = cnndsl.compile("network U\ninput 6x6x4\ninput -> conv(6, 3x3, pad=1) -> conv_transpose(4, 2x2, stride=2, groups=2)\n")
    model = net.load_weights(net.init(0), tmp_path / "w.safetensors")
    arrays = {k: np.asarray(v) for k, v in net.arrays(model).items()}
    up = next(k for k in arrays if k.endswith("/kernel") and arrays[k].shape == (2, 2, 6, 2))
    np.testing.assert_array_equal(arrays[up], tensors["up.weight"].transpose(2, 3, 0, 1))
    conv = next(k for k in arrays if k.endswith("/kernel") and arrays[k].shape == (3, 3, 4, 6))
    np.testing.assert_array_equal(arrays[conv], tensors["conv.weight"].transpose(2, 3, 1, 0))


def _torchvision_with_heads(example: str) -> tuple[object, int]:
    """A torchvision model with auxiliary heads (random weights, non-default running statistics) and its input
    size."""
    import torch
    import torchvision

    torch.manual_seed(0)
    if example == "googlenet_aux":
        module = torchvision.models.googlenet(aux_logits=True, init_weights=True, transform_input=False)
        size = 224
    else:
        module = torchvision.models.segmentation.fcn_resnet50(aux_loss=True, num_classes=21, weights=None,
                                                              weights_backbone=None)
        size = 520
    module.eval()
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return module, size


@pytest.mark.slow
@pytest.mark.parametrize("example", ["googlenet_aux", "fcn_resnet50"])
def test_networks_with_heads_equal_torchvisions_through_weights_import(example: str, tmp_path: Path) -> None:
    """Every output, the auxiliary heads' included, of torchvision's GoogLeNet with aux_logits and its
    FCN-ResNet50 with aux_loss, imported with `cnndsl weights import` (the heads' layers pair with the file's
    layers named after them: `aux1.*`, `aux_classifier.*`)."""
    torch = pytest.importorskip("torch", reason="the bench extra")
    pytest.importorskip("torchvision", reason="the bench extra")
    from safetensors.torch import save_file

    from cnndsl.cli import main
    from cnndsl.training import load_run

    module, size = _torchvision_with_heads(example)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp_path / "w.safetensors"))
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        if example == "googlenet_aux":  # eval mode returns the main logits; the heads on the maps they read
            maps: dict[str, object] = {}
            module.inception4a.register_forward_hook(lambda m, i, o: maps.__setitem__("4a", o))
            module.inception4d.register_forward_hook(lambda m, i, o: maps.__setitem__("4d", o))
            expected = {"main": module(x).numpy()}
            expected.update(aux1=module.aux1(maps["4a"]).numpy(), aux2=module.aux2(maps["4d"]).numpy())
        else:
            result = module(x)
            expected = {"main": result["out"].permute(0, 2, 3, 1).numpy(), "aux": result["aux"].permute(0, 2, 3, 1).numpy()}
    run = tmp_path / "run"
    assert main(["weights", "import", str(ROOT / "examples" / f"{example}.cnn"), str(tmp_path / "w.safetensors"),
                 "-o", str(run), "--normalize", "none"]) == 0
    loaded = load_run(None, run)
    outputs = loaded.trainer.module(loaded.params, loaded.stats, train=False)(x.permute(0, 2, 3, 1).numpy(), heads=True)
    assert set(outputs) == set(expected)
    for name, reference in expected.items():
        # ResNet-50's 53 layers (FCN) of sums of up to 4,608 terms in each framework: 2 * 53*sqrt(4608)*u = 4e-4;
        # measured 7.6e-7 (GoogLeNet) and 2.5e-6 (FCN at 520x520)
        assert relative(np.asarray(outputs[name]), reference) <= 1e-4, json.dumps({"example": example, "head": name})
