"""Fine-tuning (issue 13, part 6): `train --init RUN_OR_WEIGHTS` starts from another run's or a weights
file's arrays where the shapes match (a new head starts fresh, and is listed); `--freeze PATH` keeps the
named groups' parameters exactly as they started."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnndsl.cli import main
from tests.conftest import ROOT, final_arrays

DIGITS = ROOT / "examples" / "digits.cnn"


def test_init_from_a_run_with_a_new_head_and_frozen_stages(tmp_path: Path, capsys) -> None:
    source = tmp_path / "source"
    assert main(["train", str(DIGITS), "--epochs", "1", "--quiet", "--out", str(source)]) == 0
    wider = tmp_path / "wider.cnn"  # the same trunk, a new head: fc(32) -> relu -> fc(10)
    wider.write_text(DIGITS.read_text().replace("dropout(0.2) -> fc(10)", "fc(32) -> relu -> fc(10)"))
    tuned = tmp_path / "tuned"
    assert main(["train", str(wider), "--epochs", "1", "--out", str(tuned), "--init", str(source),
                 "--freeze", "stage(32)", "--freeze", "conv3"]) == 0
    err = capsys.readouterr().err
    assert "initialized 8 layers from" in err and "re-initialized 2: fc1 (bias 10 in the source, 32 here, kernel " \
                                                  "64x10 in the source, 64x32 here); fc2 (not in the source)" in err
    before, after = final_arrays(source), final_arrays(tuned)
    for name in ("conv1/kernel", "conv2/kernel", "bn1/scale", "bn2/bias", "conv3/kernel"):  # frozen
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    assert not np.array_equal(after["conv4/kernel"], before["conv4/kernel"])  # initialized from it, then trained
    assert main(["train", str(wider), "--out", str(tmp_path / "x"), "--init", str(source), "--freeze", "stage(99)"]) == 1
    err = capsys.readouterr().err
    assert "--freeze 'stage(99)' names no layer with parameters; the spec's groups and layers start with: " in err
    assert "stage(32)" in err and "Traceback" not in err


def test_init_from_a_weights_file_and_a_clear_error_for_a_bad_pattern(tmp_path: Path, capsys) -> None:
    pytest.importorskip("safetensors")
    spec = tmp_path / "three.cnn"  # the fixture's network with a 3-class head
    spec.write_text((ROOT / "tests" / "weights" / "narrow_resnet.cnn").read_text().replace("fc(5)", "fc(3)"))
    run = tmp_path / "run"
    weights = ROOT / "tests" / "weights" / "narrow_resnet.safetensors"
    assert main(["train", str(spec), "--data", "synthetic:64", "--epochs", "1", "--out", str(run), "--init",
                 str(weights), "--freeze", "[...]*1 i=0", "--freeze", "conv1", "--optimizer", "sgd", "--lr", "0.1"]) \
        in (0, 1)
    err = capsys.readouterr().err
    assert "--freeze '[...]*1 i=0' names no layer with parameters" in err  # the spec has no repetition
    assert main(["train", str(spec), "--data", "synthetic:64", "--epochs", "1", "--out", str(run), "--init",
                 str(weights), "--freeze", "basic(8)", "--freeze", "conv1"]) == 0
    err = capsys.readouterr().err
    assert "initialized 13 layers from" in err and "re-initialized 1: fc2 (no layer of narrow_resnet.safetensors " \
                                                   "fits)" in err
    from safetensors.numpy import load_file

    source = load_file(str(weights))
    after = final_arrays(run)
    np.testing.assert_array_equal(after["conv1/kernel"], source["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(after["conv2/kernel"], source["layer1.conv1.weight"].transpose(2, 3, 1, 0))
    assert not np.array_equal(after["conv4/kernel"], source["layer2.conv1.weight"].transpose(2, 3, 1, 0))
