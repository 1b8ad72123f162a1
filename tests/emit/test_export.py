"""`cnndsl compile --emit export` and `cnndsl run`: a jax.export artifact that runs without the spec."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cnndsl
from cnndsl.cli import main
from cnndsl.emit.artifact import ExportError, export, load_exported
from tests.tolerances import NETWORK_CLOSE
from tests.conftest import ROOT

#: GoogLeNet's Inception module (its blocks as examples/googlenet.cnn writes them: four branches concatenated,
#: a ceil-mode pool) on a 32x32 input: the concat path at a twentieth of GoogLeNet's tracing time.
MINI_INCEPTION = """network MiniInception
input 32x32x3
block cbr(filters, kernel, stride=1) =
    conv(filters, kernel, stride=stride, pad=same, bias=false) -> bn(eps=0.001) -> relu
block inception(a, b1, b2, c1, c2, d) = concat(
      cbr(a, 1x1)
    | cbr(b1, 1x1) -> cbr(b2, 3x3)
    | cbr(c1, 1x1) -> cbr(c2, 3x3)
    | maxpool(3x3, stride=1, pad=1, ceil=true) -> cbr(d, 1x1))
input -> cbr(16, 3x3) -> inception(8, 8, 16, 4, 8, 8) -> maxpool(3x3, stride=2, ceil=true)
      -> inception(16, 8, 16, 4, 8, 8) -> global_avgpool -> dropout(0.4) -> fc(10)
"""
# LeNet-5 (plain), AlexNet (LRN, dropout, grouped conv), Inception modules (concat), ResNet-18 (batch norm,
# residuals); GoogLeNet itself in the slow set (27 s here).
EXPORTED = ["lenet5", "alexnet", "mini_inception", "resnet18", pytest.param("googlenet", marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=EXPORTED)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    spec = MINI_INCEPTION if request.param == "mini_inception" else ROOT / "examples" / f"{request.param}.cnn"
    net = cnndsl.compile(spec)
    model = net.init(seed=3)
    directory = tmp_path_factory.mktemp(request.param) / "artifact"
    meta = export(net, model, directory)
    return net, model, directory, meta


def test_artifact_gives_the_in_memory_outputs_for_any_batch(exported) -> None:
    net, model, directory, meta = exported
    assert {"cpu", "cuda"} <= set(meta["platforms"])
    loaded = load_exported(directory)
    for batch in (1, 3):
        x = np.random.default_rng(batch).normal(size=(batch, *net.input_shape)).astype(np.float32)
        np.testing.assert_allclose(loaded(x), np.asarray(net.forward(model, x)), **NETWORK_CLOSE)


def test_parameters_are_plain_arrays(exported) -> None:
    net, _, directory, meta = exported
    with np.load(directory / "params.npz", allow_pickle=False) as data:  # no pickle anywhere
        total = sum(data[name].size for name in data.files)
        assert set(data.files) == set(meta["parameters"])
    assert total == net.report.params + net.report.state  # parameters and batch-norm statistics


def test_artifact_runs_without_the_spec_or_flax(tmp_path: Path) -> None:
    net = cnndsl.compile(ROOT / "examples" / "lenet5.cnn")
    model = net.init(seed=0)
    export(net, model, tmp_path / "art")
    (tmp_path / "art" / "spec.cnn").unlink()
    x = np.random.default_rng(0).normal(size=(2, *net.input_shape)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", np.asarray(net.forward(model, x)))
    code = ("import sys, numpy as np, cnndsl\n"
            "y = cnndsl.load_exported('art')(np.load('x.npy'))\n"
            f"np.testing.assert_allclose(y, np.load('expected.npy'), **{NETWORK_CLOSE})\n"
            "assert 'flax' not in sys.modules and 'cnndsl.nn.compiler' not in sys.modules, 'loaded the compiler'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr


def test_cli_compile_export_then_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(ROOT / "examples" / "lenet5.cnn"), "--emit", "export", "-o",
                 str(tmp_path / "art"), "--quiet"]) == 0
    image = np.random.default_rng(1).random((32, 32, 1), dtype=np.float32)
    np.save(tmp_path / "one.npy", image)
    np.save(tmp_path / "two.npy", np.stack([image, image]))
    capsys.readouterr()
    assert main(["run", str(tmp_path / "art"), str(tmp_path / "one.npy"), str(tmp_path / "two.npy"),
                 "--json", "--top", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["image"].rsplit("/", 1)[-1] for row in rows] == ["one.npy", "two.npy[0]", "two.npy[1]"]
    assert all(len(row["top"]) == 3 for row in rows)
    for row in rows[1:]:  # the same image, the same answer (up to float rounding across batch sizes)
        assert [t["class"] for t in row["top"]] == [t["class"] for t in rows[0]["top"]]
        # pytest.approx's 1e-6 relative: probabilities of one image in batches of 1 and 2, where XLA may block
        # the sums differently (NETWORK_CLOSE's measured 1.6e-7 before the softmax, which does not amplify it)
        assert [t["probability"] for t in row["top"]] == pytest.approx([t["probability"] for t in rows[0]["top"]])
    probs = [t["probability"] for t in rows[0]["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6  # a float32 softmax: 10 roundings


def _broken(tmp_path: Path, how: str) -> Path:
    net = cnndsl.compile(ROOT / "examples" / "lenet5.cnn")
    art = tmp_path / "art"
    export(net, net.init(0), art)
    if how == "missing program":
        (art / "forward.jaxexport").unlink()
    elif how == "truncated program":
        data = (art / "forward.jaxexport").read_bytes()
        (art / "forward.jaxexport").write_bytes(data[: len(data) // 3])
    elif how == "corrupt params":
        (art / "params.npz").write_bytes(b"PK\x03\x04 not really a zip")
    elif how == "wrong shape":
        with np.load(art / "params.npz") as data:
            arrays = dict(data)
        name = next(iter(arrays))
        arrays[name] = np.zeros((2, 2), np.float32)
        np.savez(art / "params.npz", **arrays)
    elif how == "foreign meta":
        (art / "meta.json").write_text('{"format": "something/9"}')
    return art


@pytest.mark.parametrize("how", ["missing program", "truncated program", "corrupt params", "wrong shape",
                                 "foreign meta"])
def test_broken_artifacts_give_a_clear_error(tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str]) -> None:
    art = _broken(tmp_path, how)
    with pytest.raises(ExportError) as info:
        load_exported(art)
    assert str(art) in str(info.value)
    np.save(tmp_path / "x.npy", np.zeros((32, 32, 1), np.float32))
    assert main(["run", str(art), str(tmp_path / "x.npy")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cnndsl: ") and "Traceback" not in err


def test_run_rejects_an_image_of_the_wrong_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    art = _broken(tmp_path, "nothing")
    np.save(tmp_path / "x.npy", np.zeros((28, 28), np.float32))
    assert main(["run", str(art), str(tmp_path / "x.npy")]) == 1
    assert "takes images of shape 32x32x1" in capsys.readouterr().err
    shutil.rmtree(art)
