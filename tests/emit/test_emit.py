"""`cnndsl compile --emit json`: the IR with shapes and costs, in its documented schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cnndsl
from cnndsl.cli import main
from cnndsl.emit.ir_json import SCHEMA, to_json
from tests.tolerances import NETWORK_CLOSE
from tests.conftest import EXAMPLES, FAMILIES, HEAVY_EXAMPLES

CONCRETE = [p for p in EXAMPLES if p.name not in FAMILIES]


@pytest.mark.parametrize("path", CONCRETE, ids=lambda p: p.stem)
def test_ir_json_is_consistent_with_the_report(path: Path) -> None:
    report = cnndsl.check(path)
    data = json.loads(json.dumps(to_json(report)))  # survives a JSON round trip
    assert data["schema"] == SCHEMA
    nodes = data["nodes"]
    assert len(nodes) == len(report.rows) + 1 and nodes[0]["op"] == "input"
    assert all(i < node["id"] for node in nodes for i in node["inputs"])  # topological order
    assert sum(node["params"] for node in nodes) == data["totals"]["params"] == report.params
    inference = [node for node in nodes if not node.get("training_only")]
    assert sum(node["macs"] for node in inference) == data["totals"]["macs"] == report.macs
    assert len(inference) == len(nodes) - len(report.graph.training_only_nodes)
    output = next(node for node in nodes if node["name"] == data["output"])
    assert output["output_shape"] == data["output_shape"] == list(report.output_shape)
    heads = {head["name"]: head for head in data.get("heads", [])}
    assert set(heads) == {h.name for h in report.graph.heads}
    joins = [node for node in nodes if node["op"] in ("concat", "add")]
    assert all(len(node["inputs"]) >= 2 for node in joins)


def test_conv_attributes_are_normalized() -> None:
    data = to_json(cnndsl.check("network T\ninput 8x8x3\ninput -> conv(4, 3x3, stride=2, pad=same, groups=1)"))
    conv = data["nodes"][1]
    assert conv["attrs"] == {"filters": 4, "kernel": [3, 3], "stride": [2, 2], "pad": "same", "dilation": [1, 1],
                             "groups": 1, "bias": True}
    assert conv["span"] == {"line": 3, "col": 10, "end_line": 3, "end_col": 52}


def test_compile_command_writes_the_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "googlenet.json"
    assert main(["compile", "examples/googlenet.cnn", "--emit", "json", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "inception(64, 96, 128, 16, 32, 32)" in captured.out  # the summary, unless --quiet
    data = json.loads(out.read_text())
    assert data["totals"]["params"] == 6_624_904
    assert sum(node["op"] == "concat" for node in data["nodes"]) == 9


def test_compile_quiet_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.json"
    assert main(["compile", "examples/lenet5.cnn", "--emit", "json", "-o", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["compile", "examples/lenet5.cnn", "--emit", "json", "-o", str(tmp_path)]) == 2
    assert main(["compile", "examples/lenet5.cnn", "--emit", "json", "-o", str(tmp_path / "no" / "x.json")]) == 2
    assert main(["compile", "tests/invalid/name_typo.cnn", "--emit", "json", "-o", str(out)]) == 1


def _load(path: Path, module_name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in HEAVY_EXAMPLES else [])
                                  for p in CONCRETE])  # 224x224: 7 s to a minute each to trace twice here
def test_ejected_python_gives_the_same_outputs(path: Path, tmp_path: Path) -> None:
    _check_ejected(path, tmp_path)


def test_ejected_python_of_the_newer_ops(tmp_path: Path) -> None:
    spec = tmp_path / "ops.cnn"
    spec.write_text("network Ops\ninput 13x11x3\ninput -> conv(4, 3x3) -> hardswish -> adaptive_avgpool(3x2) "
                    "-> mul(identity | global_avgpool -> fc(4) -> sigmoid) -> hardsigmoid "
                    "-> residual(ln(eps=1e-6) -> linear(8) -> gelu -> linear(4) -> layer_scale(0.5) -> drop_path(0.1)) "
                    "-> mul(adaptive_avgpool(1x1) -> conv(4, 1x1) -> sigmoid | identity) -> fc(5)\n")
    assert main(["compile", str(spec), "--emit", "svg", "-o", str(tmp_path / "ops.svg"), "--quiet"]) == 0
    svg = (tmp_path / "ops.svg").read_text()
    assert "mul  3x2x4" in svg and "layer_scale" in svg and "drop_path(0.1)" in svg and "linear(8)" in svg
    _check_ejected(spec, tmp_path)


def test_ejected_python_of_the_reshaping_ops(tmp_path: Path) -> None:
    """Issue 21: channel_shuffle, pixel_shuffle, both upsample modes and resize in standalone Flax source."""
    spec = tmp_path / "reshaping.cnn"
    spec.write_text("network Reshaping\ninput 6x5x8\ninput -> conv(8, 1x1) -> channel_shuffle(4) -> pixel_shuffle(2) "
                    "-> upsample(2) -> conv(4, 3x3, pad=same) -> upsample(3, mode=bilinear) -> conv(2, 1x1) "
                    "-> concat(slice(0, 1) | slice(1, 2) -> relu) -> conv_transpose(4, 3x3, stride=2, pad=1, "
                    "output_padding=1, groups=2) -> maxpool(3x3, stride=1, pad=1, dilation=2) -> @m "
                    "-> resize(7x3, mode=bilinear) -> resize(@m)\n")
    _check_ejected(spec, tmp_path)


def _check_ejected(path: Path, tmp_path: Path) -> None:
    import jax
    import numpy as np
    from flax import nnx

    from cnndsl.emit.python_source import class_name

    out = tmp_path / f"{path.stem}_model.py"
    assert main(["compile", str(path), "--emit", "python", "-o", str(out), "--quiet"]) == 0
    source = out.read_text()
    import ast

    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(source))
                 if isinstance(node, ast.ImportFrom) and node.module}
    # standalone: nothing beyond what jax and flax install (numpy is jax's own dependency; `resize` computes its
    # constant indices with it, in float32 as PyTorch does)
    assert imported <= {"__future__", "typing", "jax", "flax", "numpy"}, imported
    module = _load(out, f"ejected_{path.stem}")
    net = cnndsl.compile(path)
    model = net.init(0)
    ejected = getattr(module, class_name(net.report.name))(rngs=nnx.Rngs(0))
    same_seed = jax.tree.map(np.array_equal, nnx.state(ejected, nnx.Param), nnx.state(model, nnx.Param))
    assert all(jax.tree.leaves(same_seed)), "the same seed gives the same parameters"
    nnx.update(ejected, nnx.state(model))
    ejected.eval()
    x = jax.random.normal(jax.random.key(1), (2, *net.input_shape))
    np.testing.assert_allclose(np.asarray(ejected(x)), np.asarray(net.forward(model, x)), **NETWORK_CLOSE)
