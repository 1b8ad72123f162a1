"""Convolution lowerings chosen by measurement (cnndsl.nn.convolution): every
lowering computes XLA's convolution, forward and gradients; plans reach the traced programs; choices are
cached per shape; a training run with chosen lowerings trains as with XLA's."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnndsl
from cnndsl.nn import convolution
from cnndsl.nn.convolution import ConvShape, Plan, conv_shape, planned_conv, xla_conv
from tests.tolerances import LAYER, NETWORK


@pytest.fixture(autouse=True)
def measured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Choices on (the tests' default is XLA's lowering), a cache of this test's own, no plans from before."""
    monkeypatch.setenv("CNNDSL_CONV_LOWERING", "measure")
    monkeypatch.setenv("CNNDSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(convolution, "PLANS", {})


#: (input h, w, c), kernel, filters, stride, padding: 1x1, 3x3, 5x5, 7x7; strides 1 and 2; asymmetric and no
#: padding; odd sizes; maps smaller than the kernel's reach (2x2 and 1x1 maps under a padded 3x3).
PLAIN = [((9, 9, 3), (3, 3), 4, (1, 1), ((1, 1), (1, 1))), ((8, 11, 5), (3, 3), 6, (2, 2), ((1, 0), (0, 1))),
         ((10, 10, 4), (1, 1), 8, (1, 1), ((0, 0), (0, 0))), ((9, 7, 6), (1, 1), 3, (2, 2), ((0, 0), (0, 0))),
         ((12, 12, 2), (5, 5), 3, (1, 1), ((2, 2), (2, 2))), ((16, 16, 3), (7, 7), 4, (2, 2), ((3, 3), (3, 3))),
         ((2, 2, 8), (3, 3), 5, (1, 1), ((1, 1), (1, 1))), ((1, 1, 16), (3, 3), 4, (1, 1), ((1, 1), (1, 1))),
         ((6, 5, 4), (3, 2), 3, (1, 2), ((0, 2), (1, 0)))]
#: depthwise: one filter per channel, strides 1 and 2, 3x3 and 5x5
DEPTHWISE = [((8, 8, 6), (3, 3), (1, 1), ((1, 1), (1, 1))), ((9, 9, 4), (3, 3), (2, 2), ((1, 1), (1, 1))),
             ((10, 7, 3), (5, 5), (1, 1), ((2, 2), (2, 2))), ((4, 4, 5), (3, 3), (2, 2), ((0, 1), (0, 1)))]


def shapes() -> list[ConvShape]:
    found = [ConvShape(*size, kernel, filters, stride, padding, "float32") for size, kernel, filters, stride, padding
             in PLAIN]
    return found + [ConvShape(*size, kernel, size[2], stride, padding, "float32", groups=size[2])
                    for size, kernel, stride, padding in DEPTHWISE]


def operands(shape: ConvShape, batch: int = 3, seed: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Input, kernel (scaled by 1/sqrt(fan-in): outputs of order 1) and an output gradient, standard normal."""
    rng = np.random.default_rng(seed)
    fan_in = shape.kernel[0] * shape.kernel[1] * shape.channels // shape.groups
    x = jnp.asarray(rng.normal(size=(batch, shape.height, shape.width, shape.channels)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(*shape.kernel, shape.channels // shape.groups, shape.filters))
                         / np.sqrt(fan_in), jnp.float32)
    grad = jnp.asarray(rng.normal(size=xla_conv(x, kernel, shape).shape), jnp.float32)
    return x, kernel, grad


@pytest.mark.parametrize("shape", shapes(), ids=lambda s: s.key())
def test_every_lowering_computes_xlas_convolution_and_its_gradients(shape: ConvShape) -> None:
    x, kernel, grad = operands(shape)

    @functools.partial(jax.jit, static_argnums=0)
    def output_and_gradients(conv, x, kernel, grad):  # one program each (eager, every small op compiles)
        out, pullback = jax.vjp(conv, x, kernel)
        return out, *pullback(grad)

    expected, *expected_grads = output_and_gradients(lambda v, k: xla_conv(v, k, shape), x, kernel, grad)
    for name in shape.candidates:
        plan = Plan(name, name, name)
        got, *grads = output_and_gradients(lambda v, k, plan=plan: planned_conv(v, k, shape, plan), x, kernel, grad)
        # LAYER: sums of at most 7*7*3 = 147 products per output (and per gradient entry, 5*5*6*... of the same
        # size here), computed in another order
        np.testing.assert_allclose(got, expected, **LAYER, err_msg=f"{name} output")
        for part, a, b in zip(("input", "kernel"), grads, expected_grads):
            np.testing.assert_allclose(a, b, **LAYER, err_msg=f"{name} {part} gradient")


def test_a_plan_lowers_each_computation_its_own_way() -> None:
    """The output, the input's gradient and the kernel's each by the lowering the plan names."""
    shape = ConvShape(6, 6, 3, (3, 3), 4, (1, 1), ((1, 1), (1, 1)), "float32")
    used: list[str] = []
    lowerings = dict(convolution.LOWERINGS)
    for name, function in lowerings.items():
        convolution.LOWERINGS[name] = lambda x, k, s, name=name, function=function: (used.append(name),
                                                                                      function(x, k, s))[1]
    try:
        x, kernel, grad = operands(shape)
        for plan in (Plan("matmul", "xla", "xla"), Plan("xla", "matmul", "xla"), Plan("xla", "xla", "matmul")):
            used.clear()
            jax.vjp(lambda v, k, plan=plan: planned_conv(v, k, shape, plan), x, kernel)[1](grad)
            assert used == [plan.output, plan.input_grad, plan.kernel_grad], (plan, used)
    finally:
        convolution.LOWERINGS.update(lowerings)


SPEC = """network Mixed
input 12x12x3
input -> conv(8, 3x3, pad=1) -> bn -> relu -> conv(8, 3x3, stride=2, pad=1, groups=8) -> relu
    -> conv(16, 1x1) -> maxpool(2x2) -> conv(16, 3x3, stride=2, pad=1) -> relu
    -> conv(32, 3x3, pad=1) -> relu -> global_avgpool -> fc(5)
"""


def test_a_network_with_chosen_lowerings_computes_what_xla_lowers() -> None:
    """Plans for every convolution (forced: no timing) reach the traced forward pass and its gradients, with
    the same outputs and parameter gradients as XLA's lowering, and the programs differ (they were used)."""
    net = cnndsl.compile(SPEC)
    found = net.conv_shapes()
    assert {s.groups for s in found} == {1, 8} and any(not s.input_grad for s in found)
    model = net.init(0)
    model.train()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 12, 12, 3)), jnp.float32)

    def loss(model: object, x: jax.Array) -> jax.Array:
        return jnp.sum(model(x) ** 2)

    from flax import nnx

    def run() -> tuple[jax.Array, dict[str, np.ndarray], str]:
        graph, state = nnx.split(model)
        fn = jax.jit(jax.value_and_grad(lambda s, x: loss(nnx.merge(graph, s, copy=True), x)))
        value, grads = fn(state, x)
        flat = {"/".join(map(str, k)): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(grads)}
        return value, flat, fn.lower(state, x).as_text()

    native_value, native_grads, native_text = run()
    for shape in found:
        other = "taps" if shape.groups > 1 else "matmul"
        convolution.PLANS[shape] = Plan(other, other, other)
    value, grads, text = run()
    assert text != native_text
    scale = max(float(np.max(np.abs(g))) for g in native_grads.values())
    # NETWORK: the whole network computed twice in float32, relative to the largest value
    assert abs(float(value) - float(native_value)) <= NETWORK * abs(float(native_value))
    for name, g in native_grads.items():
        assert float(np.max(np.abs(grads[name] - g))) <= NETWORK * scale, name


def test_choices_are_cached_per_shape_and_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tune` measures a shape once (here measure is replaced: what it times is not tested, only what is done
    with it), writes the cache, and a new process (PLANS emptied) reads it without measuring."""
    measured: list[ConvShape] = []

    def fake_measure(shape: ConvShape, batch: int, deadline: float) -> Plan:
        measured.append(shape)
        return Plan("matmul", "xla", "matmul") if shape.groups == 1 else Plan("taps", "taps", "xla")

    monkeypatch.setattr(convolution, "measure", fake_measure)
    net = cnndsl.compile(SPEC)
    plans = net.tune_convolutions(32)
    assert set(plans) == set(net.conv_shapes()) == set(measured)
    cache = json.loads(convolution.cache_file().read_text())
    entries = cache[convolution.device_key()]
    assert {s.key() for s in measured} == set(entries)
    measured.clear()
    monkeypatch.setattr(convolution, "PLANS", {})  # as a new process starts
    assert net.tune_convolutions(32) == plans and not measured
    # another network's new shape is measured and added beside the cached ones
    net2 = cnndsl.compile(SPEC.replace("conv(32, 3x3, pad=1)", "conv(24, 3x3, pad=1)"))
    net2.tune_convolutions(32)
    assert len(measured) == 1 and len(json.loads(convolution.cache_file().read_text())[convolution.device_key()]) == \
        len(entries) + 1


def test_a_damaged_cache_is_measured_again_and_xla_lowering_turns_choosing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[ConvShape] = []
    monkeypatch.setattr(convolution, "measure", lambda shape, batch, deadline: calls.append(shape) or Plan())
    convolution.cache_file().parent.mkdir(parents=True, exist_ok=True)
    convolution.cache_file().write_text("{not json")
    net = cnndsl.compile(SPEC)
    assert len(net.tune_convolutions(8)) == len(net.conv_shapes()) == len(calls)
    assert json.loads(convolution.cache_file().read_text())  # rewritten whole
    monkeypatch.setattr(convolution, "PLANS", {})
    monkeypatch.setenv("CNNDSL_CONV_LOWERING", "xla")
    calls.clear()
    assert net.tune_convolutions(8) == {} and not calls and not convolution.PLANS
    # and a budget spent measures nothing more (the rest keep XLA's lowering until a later run)
    monkeypatch.setenv("CNNDSL_CONV_LOWERING", "measure")
    monkeypatch.setattr(convolution, "PLANS", {})
    convolution.cache_file().unlink()
    assert convolution.tune(net.conv_shapes(), 8, budget_s=-1.0) == {} and not calls


def test_measuring_runs_each_candidate_and_returns_a_plan_of_them() -> None:
    """The real measurement, on one small shape: a plan of known lowerings (which one wins is the machine's)."""
    shape = ConvShape(4, 4, 8, (3, 3), 8, (1, 1), ((1, 1), (1, 1)), "float32")
    plan = convolution.measure(shape, 4, deadline=0.0)
    assert {plan.output, plan.input_grad, plan.kernel_grad} <= set(shape.candidates)
    depthwise = ConvShape(4, 4, 8, (3, 3), 8, (1, 1), ((1, 1), (1, 1)), "float32", input_grad=False, groups=8)
    plan = convolution.measure(depthwise, 4, deadline=0.0)
    assert plan.input_grad == "xla" and {plan.output, plan.kernel_grad} <= set(depthwise.candidates)


def test_conv_shape_is_what_nnx_conv_calls_with() -> None:
    shape = conv_shape((2, 9, 7, 3), (3, 3, 3, 5), (2, 1), [(1, 1), (0, 2)], jnp.float32)
    assert shape == ConvShape(9, 7, 3, (3, 3), 5, (2, 1), ((1, 1), (0, 2)), "float32")
    assert "9x7x3 k3x3 f5 s2x1 p1,1,0,2 float32" == shape.key()


def test_a_training_run_uses_chosen_lowerings_and_trains_as_with_xlas(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`cnndsl.train` chooses before tracing its step (the choice forced here, not timed): the run uses the
    plans and its first epoch's figures match a run with XLA's lowering to float32 rounding, amplified by
    20 steps of Adam (a relative 1e-3 bound: measured at most 8.4e-7)."""
    spec = tmp_path / "mixed.cnn"
    spec.write_text(SPEC.replace("input 12x12x3", "input 8x8x1").replace("fc(5)", "fc(10)"))
    monkeypatch.setattr(convolution, "measure", lambda shape, batch, deadline:
                        Plan("taps", "taps", "taps") if shape.groups > 1 else Plan("matmul", "matmul", "matmul"))
    chosen = cnndsl.train(spec, run_dir=tmp_path / "chosen", epochs=1, quiet=True)
    assert convolution.PLANS and all(not plan.native for plan in convolution.PLANS.values())
    monkeypatch.setenv("CNNDSL_CONV_LOWERING", "xla")
    native = cnndsl.train(spec, run_dir=tmp_path / "native", epochs=1, quiet=True)
    a, b = chosen.history.epochs[0], native.history.epochs[0]
    for key in ("train_loss", "val_loss", "test_loss"):
        assert a[key] == pytest.approx(b[key], rel=1e-3), key


@pytest.mark.parametrize("shape", [s for s in shapes() if convolution.canonical_fits(s)], ids=lambda s: s.key())
def test_canonical_gradients_are_xlas(shape: ConvShape) -> None:
    """The gradients written out as forward convolutions (what convolutions inside a loop take) are XLA's own."""
    x, kernel, grad = operands(shape)
    expected = jax.jit(lambda x, k, g: jax.vjp(lambda v, w: xla_conv(v, w, shape), x, k)[1](g))(x, kernel, grad)
    got = jax.jit(lambda x, k, g: (convolution.canonical_input_grad(g, k, shape),
                                   convolution.canonical_kernel_grad(x, g, shape)))(x, kernel, grad)
    for part, a, b in zip(("input", "kernel"), got, expected):  # LAYER: the same sums (measured: the same bits)
        np.testing.assert_allclose(a, b, **LAYER, err_msg=f"{part} gradient")


def test_canonical_gradients_apply_to_plain_stride_1_convolutions_only() -> None:
    fits = {s.key(): convolution.canonical_fits(s) for s in shapes()}
    assert fits == {s.key(): s.groups == 1 and s.stride == (1, 1) and s.padding[0][0] < s.kernel[0]
                    and s.padding[1][1] < s.kernel[1] for s in shapes()}
    assert sum(fits.values()) >= 4 and not all(fits.values())  # both kinds are in the table


SCANNED_SPEC = ("network S\ninput 8x8x4\nblock b = conv(4, 3x3, pad=1) -> relu -> conv(4, 3x3, stride=2, pad=1) "
                "-> upsample(2)\ninput -> [b]*3 -> global_avgpool -> fc(3)\n")


def test_convolutions_in_a_scanned_loop_take_canonical_gradients(monkeypatch) -> None:
    """XLA:CPU computes its own convolution gradients inside a loop without Eigen, 3-18x slower
    (benchmarks/scan_repro.py): scanned blocks' stride-1 convolutions take canonical gradients, strided ones the
    matrix product's kernel gradient, unrolled ones XLA's, whatever CNNDSL_CONV_LOWERING says; gradients agree."""
    monkeypatch.setenv("CNNDSL_CONV_LOWERING", "xla")
    used: list[str] = []
    for name in ("canonical_input_grad", "canonical_kernel_grad"):
        original = getattr(convolution, name)
        monkeypatch.setattr(convolution, name, lambda *a, original=original, name=name: (used.append(name),
                                                                                           original(*a))[1])
    matmul = convolution.LOWERINGS["matmul"]
    monkeypatch.setitem(convolution.LOWERINGS, "matmul", lambda x, k, s: (used.append(f"matmul s{s.stride[0]}"),
                                                                          matmul(x, k, s))[1])
    from flax import nnx

    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 4)), jnp.float32)
    grads = {}
    for scan in (False, True):
        used.clear()
        net = cnndsl.compile(SCANNED_SPEC, scan=scan)
        graph, state = nnx.split(net.init(0))
        grad = jax.grad(lambda s: jnp.sum(nnx.merge(graph, s, copy=True)(x) ** 2))(state)
        grads[scan] = {"/".join(map(str, k)): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(grad)}
        if scan and jax.default_backend() == "cpu":
            assert set(used) == {"canonical_input_grad", "canonical_kernel_grad", "matmul s2"}, used
        else:
            assert not used, (scan, used)
    for name, g in grads[False].items():  # NETWORK: the same network's gradients computed two ways
        np.testing.assert_allclose(grads[True][name], g, rtol=NETWORK, atol=NETWORK * float(np.max(np.abs(g))))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's lowering")
def test_a_scanned_train_steps_convolutions_are_all_in_eigens_layout() -> None:
    """What makes the loop fast, read off XLA's optimized program: every convolution of a scanned network's
    gradient, inside the loop bodies too, has the NHWC/HWIO dimension numbers XLA:CPU hands to Eigen, and none is
    a YNNPACK fusion (cnndsl's compiler options keep YNNPACK to dots and reductions)."""
    from flax import nnx

    from cnndsl.nn.options import compiler_options

    # XLA:CPU's default hands convolutions of this size (not of 8x8x4 or 16x16x16) to YNNPACK
    spec = "network S\ninput 16x16x32\nblock b = conv(32, 3x3, pad=1) -> relu\ninput -> [b]*4 -> global_avgpool -> fc(3)\n"
    net = cnndsl.compile(spec, scan=True)
    graph, state = nnx.split(net.init(0))
    x = jnp.zeros((2, 16, 16, 32))
    text = jax.jit(jax.grad(lambda s: jnp.sum(nnx.merge(graph, s, copy=True)(x) ** 2)),
                   compiler_options=compiler_options()).lower(state).compile().as_text()
    convolutions = [line for line in text.splitlines() if " convolution(" in line]
    assert len(convolutions) >= 3 and any("while/body" in line for line in convolutions), convolutions
    assert all("dim_labels=b01f_01io->b01f" in line for line in convolutions), convolutions
    ynn_bodies = {line.split("calls=%")[1].split(",")[0] for line in text.splitlines() if '"__ynn_fusion"' in line}
    bodies = {name: body for name, body in (part.split(" ", 1) for part in text.split("\n%")[1:])}
    assert not [name for name in ynn_bodies if " convolution(" in bodies.get(name, "")], ynn_bodies


def test_compiler_options_leave_ynnpack_to_a_user_who_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from cnndsl.nn import options

    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert options.compiler_options()[options.YNN_OPTION] == options.YNN_FUSIONS
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=DOT")
    assert options.YNN_OPTION not in options.compiler_options()
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert options.compiler_options() == {}
