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
