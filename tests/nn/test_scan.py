"""Runs of identical repeated blocks applied with one `jax.lax.scan` (issue 9): which runs qualify, and
that the scanned module computes what the unrolled one does — outputs, batch-norm statistics, gradients —
with the same parameters under the same names."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import cnndsl
from cnndsl.nn.flax_backend import Network, flatten_state
from cnndsl.nn.repeats import identical_runs
from tests.conftest import ROOT
from tests.tolerances import BATCH_STATS, NETWORK, NETWORK_CLOSE


@pytest.mark.parametrize("example, runs", [
    ("resnet50", [(17, 10, 2), (49, 10, 3), (91, 10, 5), (153, 10, 2)]),  # each stage's blocks after the first
    ("vgg16", [(13, 2, 2), (20, 2, 2), (25, 2, 3)]),  # each stage's convolutions after the first
    ("resnet18", []), ("googlenet", []), ("digits", []),  # no two identical consecutive copies
])
def test_identical_runs_of_the_examples(example: str, runs: list) -> None:
    report = cnndsl.check(ROOT / "examples" / f"{example}.cnn")
    assert [(r.start, r.length, r.count) for r in identical_runs(report.graph, report.node_shapes)] == runs


@pytest.mark.parametrize("body, scanned", [
    ("[conv(4, 3x3, pad=same) -> relu]*4", True),
    ("[conv(4, 3x3, pad=same) -> relu]*4 as i", True),  # the index unused: still identical copies
    ("[conv(4 + i, 3x3, pad=same) -> relu]*4 as i", False),  # each copy different
    ("[conv(4, 3x3, pad=same, stride=2 if i == 0 else 1)]*3 as i", True),  # copies 2 and 3
    ("[concat(conv(2, 1x1) | conv(2, 1x1))]*3", True),  # branches inside a copy
    ("[conv(4, 3x3)]*3", False),  # shrinks: a scan's carry keeps its shape
    ("[relu -> [bn]*2]*3", True),
])
def test_which_repetitions_qualify(body: str, scanned: bool) -> None:
    report = cnndsl.check(f"network T\ninput 12x12x4\ninput -> {body} -> fc(3)")
    assert bool(identical_runs(report.graph, report.node_shapes)) == scanned


def modules(spec: str) -> tuple[cnndsl.nn.compiler.CompiledNetwork, Network, Network]:
    net = cnndsl.compile(spec)
    scanned = Network(net.report.graph, net.report.node_shapes, rngs=nnx.Rngs(0), scan=True)
    unrolled = Network(net.report.graph, net.report.node_shapes, rngs=nnx.Rngs(0), scan=False)
    return net, scanned, unrolled


@pytest.mark.parametrize("spec", [
    pytest.param(ROOT / "examples" / "resnet50.cnn", marks=pytest.mark.slow, id="resnet50"),  # 45 s here
    "network T\ninput 16x16x3\nblock b(c) = residual(conv(c, 3x3, pad=same) -> bn -> relu -> dropout(0.3)) -> relu\n"
    "input -> conv(8, 3x3, pad=same) -> [b(8)]*5 -> [b(8) -> [bn -> relu]*2]*3 -> global_avgpool -> fc(10)",
])
def test_scanned_and_unrolled_modules_agree(spec) -> None:
    net, scanned, unrolled = modules(spec)
    names = flatten_state(nnx.state(scanned, (nnx.Param, nnx.BatchStat)))[0]
    assert names == flatten_state(nnx.state(unrolled, (nnx.Param, nnx.BatchStat)))[0]  # one variable per layer
    for a, b in zip(jax.tree.leaves(nnx.state(scanned, nnx.Param)), jax.tree.leaves(nnx.state(unrolled, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the same seed, the same parameters
    x = jax.random.normal(jax.random.key(1), (2, *net.input_shape))
    np.testing.assert_allclose(net.forward(scanned, x), net.forward(unrolled, x), **NETWORK_CLOSE)

    def loss(model: Network) -> jax.Array:
        return model(x).astype(jnp.float32).sum()

    grads = [nnx.grad(loss)(model) for model in (scanned, unrolled)]  # eval mode, the same running statistics
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        # per array, relative to its norm: sums of many terms are reassociated inside a loop (NETWORK's bound)
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert np.linalg.norm(a - b) <= NETWORK * np.linalg.norm(b) + 1e-6  # + 1e-6: arrays of zeros

    for model in (scanned, unrolled):  # training mode: batch statistics, running averages updated
        model.train()
        model.set_attributes(deterministic=True, raise_if_not_found=False)  # dropout off: comparable
    y_scanned, y_unrolled = scanned(x), unrolled(x)  # batch statistics of 2 images amplify float rounding
    np.testing.assert_allclose(y_scanned, y_unrolled, **BATCH_STATS)
    for a, b in zip(jax.tree.leaves(nnx.state(scanned, nnx.BatchStat)), jax.tree.leaves(nnx.state(unrolled, nnx.BatchStat))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **NETWORK_CLOSE)


def test_training_with_scan_records_it_and_resumes(tmp_path) -> None:
    spec = tmp_path / "net.cnn"
    spec.write_text("network T\ninput 8x8x1\ninput -> conv(8, 3x3, pad=same) -> [conv(8, 3x3, pad=same) -> bn -> relu]*3"
                    " -> global_avgpool -> fc(10)\n")
    result = cnndsl.train(spec, run_dir=tmp_path / "run", epochs=1, scan=True, quiet=True)
    assert result.history.epochs[-1]["train_loss"] > 0
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["scan"] is True  # 2 copies: not by default
    assert cnndsl.evaluate(tmp_path / "run")["n"] == 359


@pytest.mark.parametrize("body, scanned", [
    ("[conv(4, 3x3, pad=same) -> relu]*17", True),  # 16 copies saved: SCAN_FROM_COPIES
    ("[conv(4, 3x3, pad=same) -> relu]*16", False),  # 15
    ("[conv(4, 3x3, pad=same) -> relu]*9 -> conv(6, 1x1) -> [conv(6, 3x3, pad=same) -> bn]*9", True),  # 8 + 8
    ("[conv(4, 3x3, pad=same, groups=4) -> relu]*20", False),  # grouped convolutions: slow in a loop on CPU
    ("[conv(4 + i, 3x3, pad=same)]*20 as i", False),  # no identical copies
])
def test_deep_networks_are_scanned_by_default(body: str, scanned: bool) -> None:
    """`scan=None` (cnndsl.compile's and a run's default) scans when the runs save SCAN_FROM_COPIES copies or
    more and hold no grouped convolution; True and False always win."""
    spec = f"network T\ninput 12x12x4\ninput -> {body} -> global_avgpool -> fc(3)"
    assert cnndsl.compile(spec).scan is scanned
    assert cnndsl.compile(spec, scan=True).scan is True and cnndsl.compile(spec, scan=False).scan is False


def test_the_default_scan_leaves_short_runs_unrolled() -> None:
    """Scanned by default, a network's runs of DEFAULT_SCAN_COPIES copies or more take a scan and shorter ones
    stay unrolled (they compile faster so); `scan=True` scans every run; the deep count ignores short runs."""
    from cnndsl.nn.repeats import DEFAULT_SCAN_COPIES

    short = DEFAULT_SCAN_COPIES - 1
    spec = (f"network T\ninput 12x12x4\ninput -> [conv(4, 3x3, pad=same) -> relu]*{short} -> conv(6, 1x1)"
            " -> [conv(6, 3x3, pad=same) -> bn]*17 -> global_avgpool -> fc(3)")
    counts = {label: sorted(run.count for run in net.init(0).runs.values())
              for label, net in (("default", cnndsl.compile(spec)), ("scan", cnndsl.compile(spec, scan=True)))}
    assert counts == {"default": [17], "scan": [short, 17]}
    x = np.random.default_rng(0).random((2, 12, 12, 4), np.float32)
    outputs = [np.asarray(cnndsl.compile(spec, scan=scan).init(0)(x)) for scan in (None, True, False)]
    np.testing.assert_allclose(outputs[0], outputs[2], rtol=1e-5, atol=1e-6)  # float32 sums in another order
    np.testing.assert_allclose(outputs[1], outputs[2], rtol=1e-5, atol=1e-6)
    # short runs do not make a network deep: 16 copies saved in 8 runs of 3 (enough in one run) scan nothing
    many_short = "network T\ninput 12x12x4\ninput -> " + " -> conv(4, 1x1) -> ".join(
        [f"[conv(4, 3x3, pad=same) -> relu]*{short}"] * 8) + " -> global_avgpool -> fc(3)"
    assert cnndsl.compile(many_short).scan is False


def test_the_examples_deep_enough_are_scanned_by_default() -> None:
    chosen = {stem: cnndsl.compile(ROOT / "examples" / f"{stem}.cnn").scan
              for stem in ("resnet18", "resnet50", "resnet101", "resnet152", "mobilenet_v2", "vgg16")}
    assert chosen == {"resnet18": False, "resnet50": False, "resnet101": True, "resnet152": True,
                      "mobilenet_v2": False, "vgg16": False}


def test_a_run_records_the_default_and_the_command_line_overrides_it(tmp_path, capsys) -> None:
    """settings.json keeps `scan: null` (the network decides, again when resumed: the checkpoint's parameters
    are the same either way); --no-scan records its choice (--scan's is test_training_with_scan_records_it_and_resumes)."""
    from tests.conftest import in_process

    spec = tmp_path / "deep.cnn"
    spec.write_text("network T\ninput 8x8x1\ninput -> conv(4, 3x3, pad=same) -> [conv(4, 3x3, pad=same) -> relu]*17"
                    " -> global_avgpool -> fc(10)\ntrain epochs = 1, batch_size = 128\n")
    for flag, recorded in ((None, None), ("--no-scan", False)):
        run = tmp_path / f"run{flag}"
        args = ["train", str(spec), "--out", str(run), "--quiet", *([flag] if flag else [])]
        assert in_process(capsys, *args).returncode == 0
        assert json.loads((run / "settings.json").read_text())["scan"] is recorded
    assert in_process(capsys, "train", "--resume", str(tmp_path / "runNone"), "--epochs", "2", "--quiet").returncode == 0
    assert in_process(capsys, "eval", "--run", str(tmp_path / "runNone")).returncode == 0
