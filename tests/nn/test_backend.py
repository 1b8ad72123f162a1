"""The Flax backend: shapes and parameter counts agree with the checker; layers agree with numpy."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import cnndsl
from tests.tolerances import BATCH_STATS, ELEMENTWISE, LAYER
from tests.conftest import DEEP_EXAMPLES, EXAMPLES, FAMILIES

CONCRETE = [p for p in EXAMPLES if p.name not in FAMILIES]


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in DEEP_EXAMPLES else [])
                                  for p in CONCRETE])  # DenseNet, ResNet-152: 20-35 s to trace here; CI keeps its fast set short
def test_static_shapes_and_params_equal_jax(path: Path) -> None:
    net = cnndsl.compile(path)
    shapes = net.eval_shapes(batch=2)
    for row in net.report.rows:
        assert shapes[row.name] == (2, *row.output_shape), row.name
    assert net.param_count() == net.report.params
    assert_differentiable(net)
    # One naming scheme: the module's arrays, as checkpoints and exports name them, are the report's `arrays`.
    from flax import nnx

    from cnndsl.nn.flax_backend import flatten_state

    arrays = flatten_state(nnx.state(net.abstract(), (nnx.Param, nnx.BatchStat)))[2]
    assert {name: tuple(a.shape) for name, a in arrays.items()} == \
        {name: shape for row in net.report.rows for name, shape in row.arrays}
    assert all(name.count("/") == 1 and not name.endswith(".value") for name in arrays)


def assert_differentiable(net: cnndsl.nn.compiler.CompiledNetwork) -> None:
    """Every layer has a gradient in train mode (traced only: `jax.eval_shape` of the gradient)."""
    from flax import nnx

    model = net.abstract()
    model.train()

    def gradients(model, x):
        return nnx.grad(lambda m: m(x).astype(jnp.float32).sum())(model)

    grads = nnx.eval_shape(gradients, model, jax.ShapeDtypeStruct((2, *net.input_shape), jnp.float32))
    params = nnx.state(model, nnx.Param)
    assert jax.tree.map(lambda g: g.shape, grads) == jax.tree.map(lambda p: p.shape, params)


def small(body: str, input: str) -> tuple[cnndsl.nn.compiler.CompiledNetwork, object]:
    net = cnndsl.compile(f"network T\ninput {input}\ninput -> {body}")
    return net, net.init(0)


def run(body: str, x: np.ndarray) -> tuple[np.ndarray, object]:
    net, model = small(body, "x".join(map(str, x.shape[1:])))
    return np.asarray(net.apply(model, jnp.asarray(x))), model


def conv_reference(x: np.ndarray, kernel: np.ndarray, stride: int, pads, dilation: int = 1, groups: int = 1):
    """Naive convolution: x (B,H,W,C), kernel (kh,kw,C/groups,F), explicit ((t,b),(l,r)) padding."""
    x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    kh, kw, cg, filters = kernel.shape
    reach_h, reach_w = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
    oh, ow = (x.shape[1] - reach_h) // stride + 1, (x.shape[2] - reach_w) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, filters))
    per_group = filters // groups
    for f in range(filters):
        g = f // per_group
        for i in range(oh):
            for j in range(ow):
                patch = x[:, i * stride:i * stride + reach_h:dilation, j * stride:j * stride + reach_w:dilation,
                          g * cg:(g + 1) * cg]
                out[:, i, j, f] = np.sum(patch * kernel[..., f], axis=(1, 2, 3))
    return out


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_same_padding_with_stride_two_puts_the_extra_pad_after() -> None:
    x = rand(1, 4, 4, 2)
    y, model = run("conv(3, 3x3, stride=2, pad=same, bias=false)", x)
    kernel = np.asarray(model.conv1.kernel[...])
    np.testing.assert_allclose(y, conv_reference(x, kernel, 2, ((0, 1), (0, 1))), **LAYER)


def test_grouped_and_dilated_convolution() -> None:
    x = rand(2, 7, 7, 4)
    y, model = run("conv(6, 3x3, dilation=2, groups=2, bias=false)", x)
    kernel = np.asarray(model.conv1.kernel[...])
    assert kernel.shape == (3, 3, 2, 6)
    np.testing.assert_allclose(y, conv_reference(x, kernel, 1, ((0, 0), (0, 0)), 2, 2), **LAYER)


def window_reference(x: np.ndarray, k: int, s: int, pad: int, ceil: bool, reduce: str, count_pad: bool = True):
    """Pooling by enumerating windows, clipped to the padded input as PyTorch does."""
    n = x.shape[1]
    room = n + 2 * pad - k
    out = (-(-room // s) if ceil else room // s) + 1
    if ceil and (out - 1) * s >= n + pad:
        out -= 1
    result = np.zeros((x.shape[0], out, out, x.shape[3]))
    for i in range(out):
        for j in range(out):
            top, left = i * s - pad, j * s - pad
            bottom, right = min(top + k, n + pad), min(left + k, n + pad)  # clipped to input + padding
            rows = slice(max(top, 0), min(bottom, n))
            cols = slice(max(left, 0), min(right, n))
            window = x[:, rows, cols, :]
            if reduce == "max":
                result[:, i, j] = window.max(axis=(1, 2))
            else:
                size = (bottom - top) * (right - left) if count_pad else window.shape[1] * window.shape[2]
                result[:, i, j] = window.sum(axis=(1, 2)) / size
    return result


@pytest.mark.parametrize("k, s, pad, ceil", [(2, 2, 0, True), (3, 2, 0, True), (3, 2, 1, True), (3, 1, 1, False),
                                             (3, 2, 1, False), (2, 2, 1, True)])
def test_pooling_matches_the_window_reference(k: int, s: int, pad: int, ceil: bool) -> None:
    x = rand(2, 7, 7, 3)
    flag = ", ceil=true" if ceil else ""
    for mode in ("max", "avg"):
        y, _ = run(f"{mode}pool({k}x{k}, stride={s}, pad={pad}{flag})", x)
        np.testing.assert_allclose(y, window_reference(x, k, s, pad, ceil, mode), **ELEMENTWISE)
    y, _ = run(f"avgpool({k}x{k}, stride={s}, pad={pad}{flag}, count_pad=false)", x)
    np.testing.assert_allclose(y, window_reference(x, k, s, pad, ceil, "avg", False), **ELEMENTWISE)


@pytest.mark.parametrize("n, k, s", [(2, 3, 2), (3, 4, 2), (1, 2, 2), (4, 5, 3)])
def test_ceil_pooling_whose_window_overhangs_the_input(n: int, k: int, s: int) -> None:
    """One output from a window larger than the input (PyTorch's ceil mode): the max, or the mean, of what is there."""
    x = rand(2, n, n, 3)
    for mode in ("max", "avg"):
        y, _ = run(f"{mode}pool({k}x{k}, stride={s}, ceil=true)", x)
        assert y.shape == (2, 1, 1, 3)
        np.testing.assert_allclose(y, window_reference(x, k, s, 0, True, mode), **ELEMENTWISE)


def test_local_response_norm_matches_its_formula() -> None:
    x = rand(1, 2, 2, 7)
    y, _ = run("lrn(size=3, alpha=0.5, beta=0.75, k=2)", x)
    expected = np.empty_like(x)
    for c in range(7):
        window = np.sum(x[..., max(0, c - 1):min(7, c + 2)] ** 2, axis=-1)
        expected[..., c] = x[..., c] / (2 + 0.5 / 3 * window) ** 0.75
    np.testing.assert_allclose(y, expected, **ELEMENTWISE)


def test_batch_norm_in_train_and_eval() -> None:
    x = rand(8, 3, 3, 4) * 3 + 5
    net, model = small("bn(eps=0.001, momentum=0.9)", "3x3x4")
    y_train = np.asarray(net.apply(model, jnp.asarray(x), train=True))
    np.testing.assert_allclose(y_train.mean(axis=(0, 1, 2)), 0, **BATCH_STATS)
    np.testing.assert_allclose(y_train.var(axis=(0, 1, 2)), x.var(axis=(0, 1, 2)) / (x.var(axis=(0, 1, 2)) + 1e-3),
                               **BATCH_STATS)
    running = np.asarray(model.bn1.mean[...])
    np.testing.assert_allclose(running, 0.1 * x.mean(axis=(0, 1, 2)), **BATCH_STATS)  # 0.9 * 0 + 0.1 * batch mean
    var = np.asarray(model.bn1.var[...])  # PyTorch's rule: the running variance averages the unbiased one
    np.testing.assert_allclose(var, 0.9 * 1 + 0.1 * x.var(axis=(0, 1, 2), ddof=1), **BATCH_STATS)
    y_eval = np.asarray(net.forward(model, jnp.asarray(x)))
    np.testing.assert_allclose(y_eval, (x - running) / np.sqrt(var + 1e-3), **BATCH_STATS)


def test_concat_order_and_residual_projection() -> None:
    x = rand(1, 4, 4, 2)
    y, model = run("concat(conv(1, 1x1, bias=false) | relu)", x)
    kernel = np.asarray(model.conv1.kernel[...])
    np.testing.assert_allclose(y[..., :1], x @ kernel[0, 0], **ELEMENTWISE)  # sums of 2 terms
    np.testing.assert_allclose(y[..., 1:], np.maximum(x, 0))
    y, model = run("residual(conv(3, 1x1, stride=2, bias=false), shortcut=conv(3, 1x1, stride=2, bias=false))", x)
    body, shortcut = np.asarray(model.conv1.kernel[...]), np.asarray(model.conv2.kernel[...])
    np.testing.assert_allclose(y, x[:, ::2, ::2] @ (body[0, 0] + shortcut[0, 0]), **LAYER)


def test_fc_flattens_in_hwc_order() -> None:
    x = rand(2, 2, 3, 2)
    y, model = run("fc(4)", x)
    w, b = np.asarray(model.fc1.kernel[...]), np.asarray(model.fc1.bias[...])
    np.testing.assert_allclose(y, x.reshape(2, -1) @ w + b, **LAYER)


def test_same_seed_same_parameters_and_outputs() -> None:
    net = cnndsl.compile("examples/small.cnn")
    x = jnp.asarray(rand(2, 32, 32, 3))
    a, b, c = net.init(0), net.init(0), net.init(1)
    np.testing.assert_array_equal(net.forward(a, x), net.forward(b, x))
    assert not np.allclose(net.forward(a, x), net.forward(c, x))


def test_bfloat16_compute_keeps_float32_parameters() -> None:
    net = cnndsl.compile("examples/small.cnn", dtype=jnp.bfloat16)
    model = net.init(0)
    y = net.forward(model, jnp.asarray(rand(2, 32, 32, 3)))
    assert y.dtype == jnp.bfloat16 and model.conv1.kernel[...].dtype == jnp.float32


def test_dropout_is_active_only_in_training() -> None:
    net, model = small("dropout(0.5)", "4x4x8")
    x = jnp.ones((4, 4, 4, 8))
    assert np.array_equal(np.asarray(net.forward(model, x)), np.ones((4, 4, 4, 8)))
    y = np.asarray(net.apply(model, x, train=True))
    assert set(np.unique(y)) <= {0.0, 2.0} and 0.3 < (y == 0).mean() < 0.7


def test_compile_reports_spec_errors() -> None:
    with pytest.raises(cnndsl.CnnError):
        cnndsl.compile("network T\ninput 8x8x1\ninput -> maxpol(2)")


def test_jit_forward_traces_once_per_input_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module's Python body runs only while jax traces it: count those runs."""
    from cnndsl.nn.flax_backend import Network

    traced = []
    original = Network.__call__

    def counting(self, x, **kwargs):
        traced.append(x.shape)
        return original(self, x, **kwargs)

    monkeypatch.setattr(Network, "__call__", counting)
    net = cnndsl.compile("examples/lenet5.cnn")
    model = net.init(0)
    for shift in range(3):
        jax.block_until_ready(net.forward(model, jnp.full((3, 32, 32, 1), float(shift))))
    assert traced == [(3, 32, 32, 1)]
    jax.block_until_ready(net.forward(model, jnp.zeros((5, 32, 32, 1))))
    assert traced == [(3, 32, 32, 1), (5, 32, 32, 1)]


@st.composite
def random_layer(draw: st.DrawFn, depth: int = 0) -> str:
    pad = draw(st.sampled_from(["same", "valid", "1", "(0, 2)", "((0, 1), (1, 0))"]))
    choices = [
        f"conv({draw(st.sampled_from([2, 4, 6]))}, {draw(st.integers(1, 3))}x{draw(st.integers(1, 3))}, "
        f"stride={draw(st.integers(1, 2))}, pad={pad}, dilation={draw(st.integers(1, 2))}, "
        f"groups={draw(st.sampled_from([1, 2]))}, bias={draw(st.sampled_from(['true', 'false']))})",
        f"{draw(st.sampled_from(['max', 'avg']))}pool({draw(st.integers(1, 3))}x{draw(st.integers(1, 3))}, "
        f"stride={draw(st.integers(1, 2))}, ceil={draw(st.sampled_from(['true', 'false']))})",
        "bn", "relu", "lrn(size=3)", "dropout(0.1)",
    ]
    if depth == 0:
        a, b = draw(random_layer(1)), draw(random_layer(1))
        choices += [f"concat({a} | {b})", f"residual({draw(st.sampled_from(['bn', 'relu', 'conv(4, 3x3, pad=same)']))})"]
    return draw(st.sampled_from(choices))


@settings(max_examples=25, deadline=None)
@given(st.integers(6, 20), st.lists(random_layer(), min_size=1, max_size=5), st.booleans())
def test_random_specs_agree_with_jax(size: int, layers: list[str], head: bool) -> None:
    tail = " -> global_avgpool -> fc(3)" if head else ""
    spec = f"network R\ninput {size}x{size}x4\ninput -> conv(4, 1x1) -> {' -> '.join(layers)}{tail}"
    try:
        net = cnndsl.compile(spec)
    except cnndsl.CnnError:
        assume(False)  # a spec the checker rejects has nothing to compare
    shapes = net.eval_shapes(batch=2)
    for row in net.report.rows:
        assert shapes[row.name] == (2, *row.output_shape), (spec, row.name)
    assert net.param_count() == net.report.params
    assert_differentiable(net)
    # One naming scheme: the module's arrays, as checkpoints and exports name them, are the report's `arrays`.
    from flax import nnx

    from cnndsl.nn.flax_backend import flatten_state

    arrays = flatten_state(nnx.state(net.abstract(), (nnx.Param, nnx.BatchStat)))[2]
    assert {name: tuple(a.shape) for name, a in arrays.items()} == \
        {name: shape for row in net.report.rows for name, shape in row.arrays}
    assert all(name.count("/") == 1 and not name.endswith(".value") for name in arrays)
