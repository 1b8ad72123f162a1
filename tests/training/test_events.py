"""TensorBoard event files: every number of metrics.jsonl read back with TensorBoard's own event reader, the
learning rate the schedule gave, the spec, the hparams session; a resumed run purges what it trains again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import cnndsl
from cnndsl.lang.settings import Settings
from cnndsl.training.events import scalars, tag_of
from cnndsl.training.optim import make_schedule
from tests.conftest import ROOT

DIGITS = ROOT / "examples" / "digits.cnn"
# TensorBoard stores a scalar as float32: a value read back is within float32's rounding of the float64
# written, a relative error of at most 2**-24 (written here as 2**-23 for the two roundings of a sum)
FLOAT32 = 2.0 ** -23


def events(run: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_every_value_is_read_back(run: Path) -> EventAccumulator:
    found = events(run)
    lines = metrics(run)
    for record in lines:
        for tag, value in scalars(record):
            written = [e for e in found.Scalars(tag) if e.step == record["epoch"]]
            assert len(written) == 1, (tag, record["epoch"], written)
            assert written[0].value == pytest.approx(value, rel=FLOAT32, abs=1e-12)
    for tag in ("train/loss", "val/accuracy", "test/accuracy", "time/seconds", "time/images_per_s"):
        assert [e.step for e in found.Scalars(tag)] == [r["epoch"] for r in lines]
    return found


def test_every_metrics_value_the_learning_rate_the_spec_and_the_hparams(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = cnndsl.train(DIGITS, run_dir=run, epochs=3, schedule="cosine", quiet=True)
    found = assert_every_value_is_read_back(run)
    assert tag_of("val_accuracy") == "val/accuracy" and tag_of("seconds") == "time/seconds"
    settings = json.loads((run / "settings.json").read_text())
    schedule = make_schedule(Settings(epochs=3, lr=settings["lr"], schedule="cosine"), settings["steps_per_epoch"])
    lr = {e.step: e.value for e in found.Scalars("train/lr")}
    assert sorted(lr) == [1, 2, 3]
    for epoch, value in lr.items():  # at each epoch's last step, as the optimizer used it
        assert value == pytest.approx(float(schedule(epoch * settings["steps_per_epoch"] - 1)), rel=FLOAT32, abs=1e-12)
    assert lr[3] < lr[2] < lr[1]  # cosine decay
    spec = found.Tensors("spec/text_summary")[0].tensor_proto.string_val[0].decode()
    assert DIGITS.read_text().strip() in spec
    content = found.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = {k: v.ListFields()[0][1] for k, v in start.session_start_info.hparams.items()}
    assert hparams["lr"] == pytest.approx(settings["lr"]) and hparams["epochs"] == 3
    assert hparams["schedule"] == "cosine" and hparams["params"] == result.net.report.params
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert {m.name.tag for m in experiment.experiment.metric_infos} >= {"val/accuracy", "test/accuracy"}


def test_a_resumed_run_purges_what_it_trains_again(tmp_path: Path) -> None:
    """A run that lost its newest checkpoint resumes from the one before: metrics.jsonl drops the later lines
    and TensorBoard the later events (the resumed writer's purge step), so each epoch is there once."""
    run = tmp_path / "run"
    cnndsl.train(DIGITS, run_dir=run, epochs=2, quiet=True)
    newest = max((p for p in (run / "checkpoints" / "last").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    shutil.rmtree(newest)
    first = {e.step: e.value for e in events(run).Scalars("train/loss")}
    cnndsl.train(None, run_dir=run, resume=True, epochs=3, quiet=True)
    assert [r["epoch"] for r in metrics(run)] == [1, 2, 3]
    found = assert_every_value_is_read_back(run)
    again = {e.step: e.value for e in found.Scalars("train/loss")}
    assert again[1] == first[1] and sorted(again) == [1, 2, 3]
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # one file per process that wrote the run
