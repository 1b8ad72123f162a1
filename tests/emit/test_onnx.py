"""`cnndsl compile --emit onnx` (issue 13, part 8): the ONNX model of a network computes what its JAX
forward pass computes, checked with ONNX Runtime, for every example and for random networks drawn from
every layer the language has (odd and even LRN windows, ceil-mode and padded average pools, groups,
dilation, branches, residual adds, image outputs), with random batch-norm statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="ONNX export needs the `onnx` extra (installed by the test extra)")
ort = pytest.importorskip("onnxruntime")

import cnndsl  # noqa: E402
from cnndsl.lang.errors import CnnError  # noqa: E402
from tests.conftest import EXAMPLES, FAMILIES, SLOW_IN_ONNX  # noqa: E402
from tests.tolerances import ELEMENTWISE, LAYER, NETWORK


def randomized(net: cnndsl.nn.compiler.CompiledNetwork, seed: int) -> tuple[object, dict[str, np.ndarray]]:
    """The network's module in eval mode with random parameters and batch statistics, and its arrays."""
    import jax
    from flax import nnx

    from cnndsl.nn.flax_backend import flatten_state, unflatten_state

    model = net.init(seed)
    model.eval()
    names, treedef, flat = flatten_state(nnx.state(model, (nnx.Param, nnx.BatchStat)))
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, value in flat.items():
        value = np.asarray(value)
        if name.endswith("/var"):
            value = rng.uniform(0.5, 2.0, value.shape)
        elif name.endswith(("/mean", "/bias")):
            value = rng.normal(0, 0.2, value.shape)
        elif name.endswith("/scale"):
            value = rng.uniform(0.5, 1.5, value.shape)
        arrays[name] = value.astype(np.float32)
    nnx.update(model, unflatten_state(names, treedef, {k: jax.numpy.asarray(v) for k, v in arrays.items()}))
    return model, arrays


def agree(net: cnndsl.nn.compiler.CompiledNetwork, seed: int = 0, preprocess: dict | None = None) -> float:
    """Worst relative difference between ONNX Runtime and the JAX forward pass on a random batch of 2."""
    import jax
    from flax import nnx

    from cnndsl.emit.onnx_model import to_onnx

    model, arrays = randomized(net, seed)
    x = np.random.default_rng(seed + 1).normal(1.0, 1.0, (2, *net.input_shape)).astype(np.float32)
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))
    normalized = x if preprocess is None else ((x / preprocess["scale"] - np.asarray(preprocess["mean"]))
                                               / np.asarray(preprocess["std"])).astype(np.float32)
    reference = np.asarray(forward(state, normalized))
    session = ort.InferenceSession(to_onnx(net.report, arrays, preprocess).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})[0]
    assert got.shape == reference.shape
    return float(np.abs(got - reference).max() / (np.abs(reference).max() + 1e-12))


CONCRETE = [p for p in EXAMPLES if p.name not in FAMILIES]


def assert_input_gradient(model: object, x: np.ndarray) -> None:
    """The gradient of a loss of the model's output for its input exists, is finite and is not all zero."""
    import jax

    grad = np.asarray(jax.grad(lambda v: (model(v) ** 2).sum())(jax.numpy.asarray(x)))
    assert np.isfinite(grad).all() and float(np.abs(grad).sum()) > 0


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in SLOW_IN_ONNX else [])
                                  for p in CONCRETE])
def test_every_example_runs_in_onnx_runtime_as_in_jax(path: Path) -> None:
    assert agree(cnndsl.compile(path, set={"classes": 5} if path.stem == "photos" else None)) <= NETWORK


def random_network(rng: np.random.Generator) -> str:
    """A random chain of every kind of layer on a small input; may be invalid (checked by the caller)."""
    size, channels = int(rng.integers(9, 20)), int(rng.choice([1, 3, 4]))
    layers = []
    width = channels
    for _ in range(int(rng.integers(2, 7))):
        kind = rng.choice(["conv", "conv", "pool", "bn", "lrn", "act", "act", "dropout", "concat", "add", "residual",
                           "adaptive", "se", "se_conv", "ln", "linear", "layer_scale", "convnext"])
        if kind == "conv":
            groups = int(rng.choice([g for g in (1, 2, width) if width % g == 0]))
            filters = groups * int(rng.integers(1, 4))
            k, stride = int(rng.choice([1, 2, 3, 5])), int(rng.choice([1, 1, 2]))
            pad = rng.choice(["same", "valid", str(int(rng.integers(0, 3)))])
            dilation = int(rng.choice([1, 1, 2]))
            layers.append(f"conv({filters}, {k}x{k}, stride={stride}, pad={pad}, dilation={dilation}, groups={groups}, "
                          f"bias={rng.choice(['true', 'false'])})")
            width = filters
        elif kind == "pool":
            mode, w = rng.choice(["max", "avg"]), int(rng.integers(2, 4))
            options = [f"stride={int(rng.integers(1, 3))}", f"pad={int(rng.integers(0, w // 2 + 1))}",
                       f"ceil={rng.choice(['true', 'false'])}"]
            if mode == "avg":
                options.append(f"count_pad={rng.choice(['true', 'false'])}")
            layers.append(f"{mode}pool({w}x{w}, {', '.join(options)})")
        elif kind == "se":
            layers.append(f"mul(identity | global_avgpool -> fc({max(1, width // 2)}) -> relu -> fc({width}) -> sigmoid)")
        elif kind == "se_conv":
            layers.append(f"mul(adaptive_avgpool(1x1) -> conv({max(1, width // 2)}, 1x1) -> silu -> conv({width}, 1x1) "
                          "-> sigmoid | identity)")
        elif kind == "ln":
            layers.append(rng.choice(["ln", "ln(eps=1e-6)"]))
        elif kind == "linear":
            width = int(rng.integers(1, 7))
            layers.append(f"linear({width}, bias={rng.choice(['true', 'false'])})")
        elif kind == "layer_scale":
            layers.append(f"layer_scale({rng.choice(['1e-6', '0.5', '2'])})")
        elif kind == "convnext":
            layers.append(f"residual(conv({width}, 3x3, pad=1, groups={width}) -> ln -> linear({2 * width}) -> gelu "
                          f"-> linear({width}) -> layer_scale(0.5) -> drop_path(0.2))")
        elif kind == "adaptive":
            layers.append(f"adaptive_avgpool({int(rng.integers(1, 6))}x{int(rng.integers(1, 6))})")
        elif kind == "bn":
            layers.append(rng.choice(["bn", "bn(eps=0.001)"]))
        elif kind == "lrn":
            layers.append(f"lrn(size={int(rng.integers(2, 6))}, alpha=0.001, beta=0.75, k=2)")
        elif kind == "act":
            layers.append(str(rng.choice(["relu", "relu6", "gelu", "silu", "tanh", "sigmoid", "leaky_relu(slope=0.2)",
                                          "hardswish", "hardsigmoid"])))
        elif kind == "dropout":
            layers.append("dropout(0.3)")
        elif kind == "concat":
            a, b = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            layers.append(f"concat(conv({a}, 3x3, pad=same) -> relu | maxpool(3x3, stride=1, pad=1) | conv({b}, 1x1))")
            width = a + width + b
        elif kind == "add":
            layers.append(f"add(conv({width}, 3x3, pad=same) | conv({width}, 1x1) -> bn | identity)")
        else:
            layers.append(f"residual(conv({width}, 3x3, pad=same, bias=false) -> bn -> relu)")
    end = rng.choice(["global_avgpool -> fc(5)", "global_maxpool -> fc(4) -> softmax", "flatten -> fc(3)",
                      "fc(6) -> relu -> fc(2)", "", "softmax", "global_avgpool -> ln -> linear(3) -> layer_scale(2)"])
    chain = " -> ".join(["input", *layers] + ([str(end)] if end else []))
    return f"network R\ninput {size}x{size}x{channels}\n{chain}\n"


@pytest.mark.parametrize("count, seed", [(15, 24), pytest.param(300, 14, marks=pytest.mark.slow)])
def test_random_networks_run_in_onnx_runtime_as_in_jax(count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    checked = 0
    kinds: set[str] = set()
    while checked < count:
        text = random_network(rng)
        try:
            net = cnndsl.compile(text)
        except CnnError:
            continue
        worst = agree(net, seed=checked)
        assert worst <= NETWORK, (worst, text)
        kinds |= {node.op.kind for node in net.report.graph.nodes}
        checked += 1
    assert {"conv", "pool", "bn", "lrn", "activation", "concat", "add", "fc", "global_pool", "adaptive_pool",
            "mul", "ln", "linear", "layer_scale", "drop_path"} <= kinds


def test_the_cli_writes_a_checked_model_of_a_run_with_its_normalization(tmp_path: Path) -> None:
    import onnx

    from cnndsl.cli import main
    from cnndsl.training import load_run

    spec = Path(__file__).resolve().parents[2] / "examples" / "digits.cnn"
    run = tmp_path / "run"
    assert main(["train", str(spec), "--epochs", "1", "--quiet", "--out", str(run)]) == 0
    out = tmp_path / "digits.onnx"
    assert main(["compile", str(spec), "--emit", "onnx", "--run", str(run), "-o", str(out), "--quiet"]) == 0
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 18 and model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    from cnndsl.data import load_dataset

    data = load_dataset("digits", val_fraction=0.1)
    session = ort.InferenceSession(out.read_bytes(), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": data.x_test.astype(np.float32)})[0]
    accuracy = float(np.mean(logits.argmax(1) == data.y_test))
    evaluated = cnndsl.evaluate(run)["accuracy"]
    # counts over the same test images: equal unless a logit's top class flips under NETWORK's rounding
    assert accuracy == pytest.approx(evaluated)  # raw pixels in, the run's own normalization inside
    loaded = load_run(None, run)
    meta = json.loads(model.doc_string)
    assert meta["step"] == loaded.step and meta["input"] == "NHWC float32, raw pixels as the run's dataset stores them"
    assert main(["compile", str(spec), "--emit", "onnx", "-o", str(tmp_path / "seed.onnx"), "--seed", "3",
                 "--quiet"]) == 0


def test_hard_activations_match_their_numpy_definitions_and_have_gradients() -> None:
    x = np.linspace(-5, 5, 101, dtype=np.float32)
    relu6 = np.clip(x + 3, 0, 6)
    for fn, expected in (("hardswish", x * relu6 / 6), ("hardsigmoid", relu6 / 6)):
        net = cnndsl.compile(f"network A\ninput 1x1x101\ninput -> {fn}\n")
        model = net.init(0)
        np.testing.assert_allclose(np.asarray(model(x.reshape(1, 1, 1, 101)))[0, 0, 0], expected, **ELEMENTWISE)
        assert_input_gradient(model, x.reshape(1, 1, 1, 101))
        assert agree(net) <= ELEMENTWISE["atol"]  # one elementwise layer


def _adaptive_reference(x: np.ndarray, out: tuple[int, int]) -> np.ndarray:
    """PyTorch's AdaptiveAvgPool2d written out with loops (NHWC)."""
    n, h, w, c = x.shape
    y = np.zeros((n, *out, c), np.float64)
    for i in range(out[0]):
        for j in range(out[1]):
            r0, r1 = (i * h) // out[0], -(-((i + 1) * h) // out[0])
            c0, c1 = (j * w) // out[1], -(-((j + 1) * w) // out[1])
            y[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
    return y


@pytest.mark.parametrize("size, out", [((13, 13), (6, 6)), ((7, 10), (3, 4)), ((5, 5), (7, 7)), ((8, 8), (1, 1))])
def test_adaptive_avgpool_matches_pytorchs_bins(size: tuple[int, int], out: tuple[int, int]) -> None:
    net = cnndsl.compile(f"network A\ninput {size[0]}x{size[1]}x3\ninput -> adaptive_avgpool({out[0]}x{out[1]})\n")
    assert net.report.output_shape == (*out, 3)
    x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32)
    model = net.init(0)
    np.testing.assert_allclose(np.asarray(model(x)), _adaptive_reference(x, out), **LAYER)
    assert_input_gradient(model, x)
    assert agree(net) <= LAYER["rtol"]  # a network of a few layers
    with pytest.raises(CnnError, match="needs a feature map"):
        cnndsl.check("network A\ninput 8x8x3\ninput -> global_avgpool -> adaptive_avgpool(2x2)\n")


def test_mul_gates_a_feature_map_with_a_channel_vector() -> None:
    """`mul(a | b)` (issue 13, part 3): squeeze-and-excitation, against numpy, with gradients and in ONNX."""
    net = cnndsl.compile("""network SE
input 6x5x8
block se(r=4) = mul(identity | global_avgpool -> fc(in_channels // r) -> relu -> fc(in_channels) -> sigmoid)
input -> conv(8, 3x3, pad=same) -> se -> mul(identity | relu | conv(8, 1x1)) -> global_avgpool -> fc(3)
""")
    model, arrays = randomized(net, 0)
    x = np.random.default_rng(2).normal(size=(2, 6, 5, 8)).astype(np.float32)
    outputs = model(x, all_outputs=True)
    conv = np.asarray(outputs["conv1"])
    pooled = conv.mean(axis=(1, 2))
    hidden = np.maximum(pooled @ arrays["fc1/kernel"] + arrays["fc1/bias"], 0)
    gate = 1 / (1 + np.exp(-(hidden @ arrays["fc2/kernel"] + arrays["fc2/bias"])))
    np.testing.assert_allclose(np.asarray(outputs["mul1"]), conv * gate[:, None, None, :], **ELEMENTWISE)
    gated = np.asarray(outputs["mul1"])
    np.testing.assert_allclose(np.asarray(outputs["mul2"]), gated * np.maximum(gated, 0) * np.asarray(outputs["conv2"]),
                               **ELEMENTWISE)
    assert_input_gradient(model, x)
    assert agree(net) <= LAYER["rtol"]  # a network of a few layers
    with pytest.raises(CnnError, match=r"`mul` needs branches of one shape, or a vector of 8 channel weights"):
        cnndsl.check("network B\ninput 4x4x8\ninput -> mul(identity | global_avgpool -> fc(3))\n")


def test_layer_norm_linear_and_layer_scale_match_numpy() -> None:
    """`ln`, `linear`, `layer_scale` (issue 13, part 3) on a feature map and on a vector, against their
    numpy definitions (PyTorch's LayerNorm over channels, a per-position matrix product), with gradients
    for the input and every parameter, and in ONNX Runtime."""
    import jax
    from flax import nnx

    net = cnndsl.compile("""network M
input 5x4x6
input -> ln(eps=1e-6) -> linear(9) -> layer_scale(0.25) -> linear(3, bias=false) -> global_avgpool -> ln -> linear(4)
""")
    assert [r.params for r in net.report.rows] == [12, 63, 9, 27, 0, 6, 16]
    assert [r.macs for r in net.report.rows] == [0, 20 * 6 * 9, 0, 20 * 9 * 3, 0, 0, 12]
    model, arrays = randomized(net, 3)
    x = np.random.default_rng(4).normal(2.0, 3.0, size=(2, 5, 4, 6)).astype(np.float32)
    out = {k: np.asarray(v) for k, v in model(x, all_outputs=True).items()}

    def layer_norm(v: np.ndarray, name: str, eps: float) -> np.ndarray:
        v = v.astype(np.float64)
        mean, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return (v - mean) / np.sqrt(var + eps) * arrays[f"{name}/scale"] + arrays[f"{name}/bias"]

    expected = layer_norm(x, "ln1", 1e-6)
    np.testing.assert_allclose(out["ln1"], expected, **LAYER)
    expected = expected @ arrays["linear1/kernel"] + arrays["linear1/bias"]
    np.testing.assert_allclose(out["linear1"], expected, **LAYER)
    expected = expected * arrays["layer_scale1/scale"]
    np.testing.assert_allclose(out["layer_scale1"], expected, **LAYER)
    expected = (expected @ arrays["linear2/kernel"]).mean(axis=(1, 2))
    expected = layer_norm(expected, "ln2", 1e-5) @ arrays["linear3/kernel"] + arrays["linear3/bias"]
    np.testing.assert_allclose(out["linear3"], expected, **LAYER)
    assert float(np.abs(np.asarray(nnx.state(net.init(0), nnx.Param)["layer_scale1"]["scale"][...]) - 0.25).max()) == 0

    graphdef, state = nnx.split(model)
    grads = jax.grad(lambda s, v: (nnx.merge(graphdef, s)(v) ** 2).sum())(state, jax.numpy.asarray(x))
    from cnndsl.nn.flax_backend import flatten_state

    for name, grad in flatten_state(grads)[2].items():
        assert np.isfinite(np.asarray(grad)).all() and float(np.abs(grad).sum()) > 0, name
    assert agree(net) <= LAYER["rtol"]  # a network of a few layers


def test_drop_path_drops_whole_examples_in_training_only() -> None:
    """`drop_path(p)`: each example's input kept whole (scaled by 1 / (1 - p)) or zeroed whole, about a
    fraction p zeroed, the identity in evaluation and in ONNX; on a residual body it drops the body."""
    import jax

    net = cnndsl.compile("network D\ninput 3x2x4\ninput -> drop_path(0.25)\n")
    model = net.init(0)
    x = np.random.default_rng(0).uniform(1, 2, (4000, 3, 2, 4)).astype(np.float32)
    y = np.asarray(model(x)).reshape(4000, -1)
    kept = np.all(y != 0, axis=1)
    assert np.array_equal(kept, np.any(y != 0, axis=1))  # whole examples, never parts of one
    # 4,000 draws of keep-with-probability 0.75: standard deviation sqrt(0.75 * 0.25 / 4000) = 0.0068, so 0.03
    # is 4.4 of them (a false failure once in ~10^5 runs; the seed is fixed, so never here)
    assert abs(kept.mean() - 0.75) < 0.03
    np.testing.assert_allclose(y[kept], x.reshape(4000, -1)[kept] / 0.75, rtol=1e-6)  # one rounding each side
    from flax import nnx

    grad = jax.grad(lambda v: model(v, rngs=nnx.Rngs(dropout=3)).sum())(jax.numpy.asarray(x[:64]))
    grad = np.asarray(grad).reshape(64, -1)
    assert np.all((grad == 0) | np.isclose(grad, 1 / 0.75)) and (grad == 0).any() and (grad != 0).any()
    model.eval()
    np.testing.assert_array_equal(np.asarray(model(x)), x)

    net = cnndsl.compile("network R\ninput 3x3x2\ninput -> residual(conv(2, 1x1) -> drop_path(0.5)) -> fc(2)\n")
    model = net.init(1)
    inputs = np.random.default_rng(2).uniform(1, 2, (64, 3, 3, 2)).astype(np.float32)
    out = model(inputs, all_outputs=True)
    body, total = np.asarray(out["drop_path1"]), np.asarray(out["add1"])
    dropped = np.all(body.reshape(64, -1) == 0, axis=1)
    assert 0 < dropped.sum() < 64  # some examples keep the body, some skip it
    np.testing.assert_array_equal(total[dropped], inputs[dropped])
    np.testing.assert_allclose(total[~dropped], inputs[~dropped] + np.asarray(out["conv1"])[~dropped] / 0.5, **ELEMENTWISE)
    assert agree(net) <= LAYER["rtol"]  # a network of a few layers
    with pytest.raises(CnnError, match="expected a number from 0 up to"):
        cnndsl.check("network B\ninput 4x4x3\ninput -> drop_path(1)\n")


def test_mul_takes_a_1x1_gate_map_and_broadcasts_it() -> None:
    """torchvision's squeeze-and-excitation computes its gate with 1x1 convolutions on a 1x1xC map."""
    net = cnndsl.compile("""network G
input 5x6x4
input -> mul(identity | adaptive_avgpool(1x1) -> conv(2, 1x1) -> relu -> conv(4, 1x1) -> sigmoid) -> fc(2)
""")
    assert net.report.rows[-2].output_shape == (5, 6, 4)
    model, _ = randomized(net, 0)
    x = np.random.default_rng(1).normal(size=(2, 5, 6, 4)).astype(np.float32)
    out = {k: np.asarray(v) for k, v in model(x, all_outputs=True).items()}
    np.testing.assert_allclose(out["mul1"], x * out["sigmoid1"], rtol=1e-6)  # one product: one rounding
    assert out["sigmoid1"].shape == (2, 1, 1, 4)
    assert agree(net) <= LAYER["rtol"]  # a network of a few layers
    with pytest.raises(CnnError, match=r"\(or a 1x1x4 map\) to scale a 5x6x4 feature map; branch 2 gives 1x1x3"):
        cnndsl.check("network B\ninput 5x6x4\ninput -> mul(identity | adaptive_avgpool(1x1) -> conv(3, 1x1))\n")


# ---- issue 21: channel_shuffle, pixel_shuffle, upsample, against PyTorch's conventions written in numpy ----

def _shuffle_reference(x: np.ndarray, groups: int) -> np.ndarray:
    """torch.nn.functional.channel_shuffle, on NHWC: channels as (groups, C/groups), transposed."""
    n, h, w, c = x.shape
    return x.reshape(n, h, w, groups, c // groups).transpose(0, 1, 2, 4, 3).reshape(n, h, w, c)


def _pixel_shuffle_reference(x: np.ndarray, r: int) -> np.ndarray:
    """torch.nn.functional.pixel_shuffle with loops, on NHWC: in channel c*r*r + i*r + j -> (h*r+i, w*r+j, c)."""
    n, h, w, c = x.shape
    y = np.zeros((n, h * r, w * r, c // (r * r)), x.dtype)
    for ch in range(c):
        out, rest = divmod(ch, r * r)
        i, j = divmod(rest, r)
        y[:, i::r, j::r, out] = x[:, :, :, ch]
    return y


def _upsample_reference(x: np.ndarray, s: int, mode: str) -> np.ndarray:
    """torch.nn.functional.interpolate(scale_factor=s, align_corners=False) with loops, in float64, NHWC."""
    n, h, w, c = x.shape
    if mode == "nearest":
        rows, cols = np.arange(h * s) // s, np.arange(w * s) // s
        return x[:, rows][:, :, cols]

    def weights(size: int) -> np.ndarray:
        m = np.zeros((size * s, size))
        for i in range(size * s):
            src = max((i + 0.5) / s - 0.5, 0.0)  # PyTorch clamps a negative source coordinate to 0
            low = min(int(src), size - 1)
            high, t = min(low + 1, size - 1), src - low
            m[i, low] += 1 - t
            m[i, high] += t
        return m

    return np.einsum("ih,jw,nhwc->nijc", weights(h), weights(w), x.astype(np.float64))


@pytest.mark.parametrize("layer, reference", [
    ("slice(3, 9)", lambda x: x[..., 3:9]),
    ("channel_shuffle(3)", lambda x: _shuffle_reference(x, 3)),
    ("channel_shuffle(4)", lambda x: _shuffle_reference(x, 4)),
    ("pixel_shuffle(2)", lambda x: _pixel_shuffle_reference(x, 2)),
    ("upsample(2)", lambda x: _upsample_reference(x, 2, "nearest")),
    ("upsample(3, mode=bilinear)", lambda x: _upsample_reference(x, 3, "bilinear")),
    ("upsample(1, mode=bilinear)", lambda x: _upsample_reference(x, 1, "bilinear")),
])
def test_reshaping_ops_match_pytorchs_conventions_with_gradients_and_in_onnx(layer: str, reference) -> None:
    """Each op against its PyTorch definition written out in numpy; its gradient is the adjoint of the
    forward map (the ops are linear: <f(x), w> = <x, f^T(w)> with f^T from jax.vjp); ONNX Runtime agrees."""
    import jax

    net = cnndsl.compile(f"network R\ninput 5x4x12\ninput -> {layer}\n")
    model = net.init(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 4, 12)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model(x)), reference(x), **ELEMENTWISE)  # a copy or a 4-term sum
    y, pullback = jax.vjp(lambda v: model(v), jax.numpy.asarray(x))
    w = rng.normal(size=y.shape).astype(np.float32)
    (back,) = pullback(jax.numpy.asarray(w))
    # two float32 dot products of ~1,000-17,000 terms of order 1: sqrt(n)*u relative, 1e-5 is far above
    np.testing.assert_allclose(float((np.asarray(y) * w).sum()), float((x * np.asarray(back)).sum()), rtol=1e-5)
    assert agree(net) <= ELEMENTWISE["atol"]


def test_reshaping_ops_check_their_channels_and_label_themselves() -> None:
    report = cnndsl.check("network R\ninput 5x4x12\ninput -> pixel_shuffle(2) -> upsample(4, mode=bilinear)\n")
    assert [r.op for r in report.rows] == ["pixel_shuffle(2)", "upsample(4, mode=bilinear)"]
    assert report.output_shape == (40, 32, 3) and report.params == report.macs == 0
    for spec, says in (("channel_shuffle(5)", "needs channels divisible by 5, got 12"),
                       ("pixel_shuffle(3)", "needs channels divisible by 3*3 = 9, got 12"),
                       ("upsample(2, mode=same)", "expected `nearest` or `bilinear`, got `same`"),
                       ("global_avgpool -> upsample(2)", "needs a feature map"),
                       ("slice(4, 20)", "`slice(4, 20)` takes channels 4 to 19, but its input has 12"),
                       ("slice(5, 5)", "takes channels 5 to 4")):
        with pytest.raises(CnnError) as caught:
            cnndsl.check(f"network R\ninput 5x4x12\ninput -> {spec}\n")
        assert says in caught.value.render() and ":3:" in caught.value.render()


def test_a_shufflenet_v2_unit_is_written_exactly_with_slice_and_channel_shuffle() -> None:
    """Issue 21: the channel split of ShuffleNet v2 (torchvision's InvertedResidual, stride 1): half the channels
    pass, half go through 1x1 -> depthwise 3x3 -> 1x1, then concat and shuffle: the parameters of exactly those
    layers (no selector convolutions), the output a shuffle of (the first half, the branch's output)."""
    c = 16
    spec = (f"network Unit\ninput 8x8x{c}\n"
            "block unit(c) = concat(slice(0, c // 2) | slice(c // 2, c) -> conv(c // 2, 1x1, bias=false) -> bn -> relu "
            "-> conv(c // 2, 3x3, pad=1, groups=c // 2, bias=false) -> bn -> conv(c // 2, 1x1, bias=false) -> bn -> relu) "
            f"-> channel_shuffle(2)\ninput -> unit({c})\n")
    net = cnndsl.compile(spec)
    half = c // 2
    assert net.report.params == half * half + 2 * half + 9 * half + 2 * half + half * half + 2 * half
    assert net.report.output_shape == (8, 8, c)
    model = net.init(0)
    model.eval()
    x = np.random.default_rng(0).normal(size=(2, 8, 8, c)).astype(np.float32)
    y = np.asarray(model(x))
    np.testing.assert_array_equal(y[..., 0::2], x[..., :half])  # the passed half lands on the even channels
    assert agree(net) <= NETWORK


CONV_TRANSPOSE_CASES = [  # (in, filters, kernel, stride, pad, output_padding, dilation, groups)
    (4, 6, 3, 2, 1, 1, 1, 1), (4, 6, 2, 2, 0, 0, 1, 2), (6, 4, 3, 1, 2, 0, 2, 2), (3, 5, 4, 3, 2, 2, 1, 1),
    (4, 4, 3, 2, 3, 1, 1, 1),  # pad 3 > dilation * (kernel - 1): the equivalent convolution crops
]


def _conv_transpose_reference(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, case: tuple) -> np.ndarray:
    """PyTorch's ConvTranspose2d as its definition (NHWC, float64): each input pixel adds its weighted kernel
    patch at (h * stride + i * dilation - pad, w * stride + j * dilation - pad); output_padding adds rows
    and columns after."""
    _, filters, k, s, p, extra, d, g = case
    n, h, w, cin = x.shape
    oh, ow = [(size - 1) * s - 2 * p + d * (k - 1) + extra + 1 for size in (h, w)]
    full = np.zeros((n, oh + 2 * p + k * d, ow + 2 * p + k * d, filters))
    per_in, per_out = cin // g, filters // g
    for c in range(cin):
        group = c // per_in
        for i in range(k):
            for j in range(k):
                patch = np.einsum("nhw,o->nhwo", x[..., c].astype(np.float64), kernel[i, j, c].astype(np.float64))
                full[:, i * d:i * d + (h - 1) * s + 1:s, j * d:j * d + (w - 1) * s + 1:s,
                     group * per_out:(group + 1) * per_out] += patch
    return full[:, p:p + oh, p:p + ow] + bias


@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv_transpose_is_pytorchs_with_its_output_size_counts_gradients_and_onnx(case: tuple) -> None:
    """Issue 21: conv_transpose against its definition written out in numpy (PyTorch's output size rule,
    padding, output_padding, dilation, groups); its parameters and multiply-adds as PyTorch counts them
    (every input value times its group's kernel taps); a gradient; ONNX Runtime's ConvTranspose agrees."""
    cin, filters, k, s, p, extra, d, g = case
    spec = (f"network T\ninput 5x7x{cin}\ninput -> conv_transpose({filters}, {k}x{k}, stride={s}, pad={p}, "
            f"output_padding={extra}, dilation={d}, groups={g})\n")
    net = cnndsl.compile(spec)
    model = net.init(0)
    arrays = {name.split("/")[-1]: np.asarray(v) for name, v in net.arrays(model).items()}
    x = np.random.default_rng(0).normal(size=(2, 5, 7, cin)).astype(np.float32)
    expected = _conv_transpose_reference(x, arrays["kernel"], arrays["bias"], case)
    assert net.report.output_shape == expected.shape[1:]
    np.testing.assert_allclose(np.asarray(model(x)), expected, **LAYER)
    assert net.report.params == k * k * cin * (filters // g) + filters
    assert net.report.macs == k * k * (filters // g) * 5 * 7 * cin
    assert_input_gradient(model, x)
    assert agree(net) <= LAYER["rtol"]


def test_conv_transpose_refuses_what_pytorch_refuses() -> None:
    for layer, says in (("conv_transpose(4, 3x3, stride=2, output_padding=2)", "output_padding must be smaller"),
                        ("conv_transpose(5, 3x3, groups=2)", "divisible by groups=2"),
                        ("conv_transpose(4, 1x1, pad=3)", "leaves no output"),
                        ("conv_transpose(4, 3x3, pad=-1)", "expected a whole number >= 0")):
        with pytest.raises(CnnError) as caught:
            cnndsl.check(f"network T\ninput 5x5x4\ninput -> {layer}\n")
        assert says in caught.value.render() and ":3:" in caught.value.render(), caught.value.render()


def _dilated_maxpool_reference(x: np.ndarray, k: int, s: int, p: int, d: int, out: tuple[int, int]) -> np.ndarray:
    """PyTorch's max_pool2d with dilation, by its definition: output (i, j) is the max of the input at
    (i*s + a*d - p, j*s + b*d - p), a, b < k, over the positions inside the input (NHWC)."""
    n, h, w, c = x.shape
    y = np.full((n, *out, c), -np.inf, np.float32)
    for i in range(out[0]):
        for j in range(out[1]):
            for a in range(k):
                for b in range(k):
                    r, q = i * s + a * d - p, j * s + b * d - p
                    if 0 <= r < h and 0 <= q < w:
                        y[:, i, j] = np.maximum(y[:, i, j], x[:, r, q])
    return y


@pytest.mark.parametrize("k, s, p, d, ceil", [(3, 2, 1, 2, False), (2, 1, 0, 3, False), (3, 2, 1, 2, True),
                                               (3, 3, 0, 2, True)])
def test_max_pooling_with_dilation_is_pytorchs(k: int, s: int, p: int, d: int, ceil: bool) -> None:
    """Issue 21: maxpool's `dilation` (PyTorch's MaxPool2d; average pooling has none there, nor here):
    PyTorch's output size (ceil mode included), its definition in numpy, a gradient, ONNX's MaxPool."""
    net = cnndsl.compile(f"network T\ninput 11x9x3\ninput -> maxpool({k}x{k}, stride={s}, pad={p}, dilation={d}, "
                         f"ceil={'true' if ceil else 'false'})\n")
    out = net.report.output_shape[:2]
    floor_or_ceil = np.ceil if ceil else np.floor
    assert out == tuple(int(floor_or_ceil((n + 2 * p - d * (k - 1) - 1) / s)) + 1 for n in (11, 9))
    model = net.init(0)
    x = np.random.default_rng(0).normal(size=(2, 11, 9, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(model(x)), _dilated_maxpool_reference(x, k, s, p, d, out))
    assert_input_gradient(model, x)
    assert agree(net) == 0.0  # a maximum picks an input value: exact in both
    with pytest.raises(CnnError, match="has no parameter `dilation`"):
        cnndsl.check("network T\ninput 8x8x3\ninput -> avgpool(2x2, dilation=2)\n")
