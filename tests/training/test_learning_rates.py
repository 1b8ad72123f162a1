"""Learning rates handed to the train step: one program whatever the epochs, learning rate or schedule, the
same training as the schedule inside the optimizer, and runs recorded before that still resume."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cnndsl
from cnndsl.lang.settings import Settings
from cnndsl.training import Preprocess, Trainer, load_run
from cnndsl.training.interrupts import StopRun
from cnndsl.training.optim import learning_rates, make_optimizer, make_schedule, with_learning_rate
from tests.conftest import ROOT

DIGITS = ROOT / "examples" / "digits.cnn"
SCHEDULES = ["constant", "cosine", "warmup-cosine", "one-cycle", "step"]


def step_program(settings: Settings, steps_per_epoch: int = 10) -> str:
    """The StableHLO text of the digits network's train step under these settings."""
    net = cnndsl.compile(DIGITS)
    trainer = Trainer(net, net.init(0), make_optimizer(settings, steps_per_epoch),
                      Preprocess(16.0, (0.3,), (0.4,), (8, 8)), settings, 10)
    state = trainer.initial_state()
    x = np.zeros((100, 8, 8, 1), np.float32)
    y = np.zeros(100, np.int32)
    lowered = trainer.train_step.lower(state["params"], state["stats"], state["opt_state"], state["meters"], x, y,
                                       np.arange(100, dtype=np.int32), np.int32(0), None, np.int32(0), np.int32(0),
                                       np.float32(0.1))
    return lowered.as_text()


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adamw"])
def test_the_train_step_is_one_program_whatever_the_epochs_learning_rate_and_schedule(optimizer: str) -> None:
    """What `--epochs`, `--lr` or the schedule change is a value handed to the step, not the program: another
    setting (a sweep's next member) reuses the compiled step from the persistent cache."""
    programs = {step_program(Settings(optimizer=optimizer, epochs=epochs, lr=lr, schedule=schedule), steps)
                for epochs, lr, schedule, steps in [(2, 1e-3, "constant", 10), (15, 3e-3, "cosine", 10),
                                                    (7, 0.05, "warmup-cosine", 31), (1, 1e-4, "one-cycle", 3),
                                                    (40, 0.2, "step", 10)]}
    assert len(programs) == 1
    # the optimizer's kind is part of the program (a check that the text tells programs apart at all)
    other = "sgd" if optimizer != "sgd" else "adam"
    assert step_program(Settings(optimizer=other)) not in programs


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_learning_rates_are_the_optax_schedule_at_every_step(schedule: str) -> None:
    settings = Settings(schedule=schedule, epochs=3, lr=0.02, warmup_epochs=0.5)
    rates = learning_rates(settings, 7)
    optax_schedule = make_schedule(settings, 7)
    expected = [float(optax_schedule(step)) if callable(optax_schedule) else optax_schedule for step in range(21)]
    assert rates.dtype == np.float32 and rates.shape == (21,)
    # the same float32 formula in two programs (vectorized, and one step at a time): a few ulps apart. Cosine
    # schedules compute lr * (1 + cos(pi t)) / 2, whose sum cancels near the end: a few ulps of 1 (u = 2**-24),
    # times lr, absolutely (measured: 1.7e-9 = 1.5 u * lr)
    np.testing.assert_allclose(rates, expected, rtol=1e-6, atol=8 * 2.0**-24 * settings.lr)
    assert len(set(rates.tolist())) == (1 if schedule == "constant" else len(set(expected)))


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adamw"])
@pytest.mark.parametrize("schedule", ["cosine", "warmup-cosine", "step"])
def test_injected_rates_train_as_the_schedule_inside_the_optimizer(optimizer: str, schedule: str) -> None:
    """optax's inject_hyperparams given each step's rate updates the parameters as the scheduled optimizer."""
    settings = Settings(optimizer=optimizer, schedule=schedule, epochs=2, lr=0.05, weight_decay=1e-3, clip=1.0,
                        warmup_epochs=0.5)
    rng = np.random.default_rng(0)
    grads = [{"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)} for _ in range(10)]
    rates = learning_rates(settings, 5)
    results = []
    for injected in (False, True):
        tx = make_optimizer(settings, 5, scheduled=not injected)
        params = {"w": jnp.ones((4, 3), jnp.float32)}
        state = tx.init(params)

        @jax.jit
        def update(params, state, grad, rate, tx=tx, injected=injected):
            if injected:
                state = with_learning_rate(state, rate)
            updates, state = tx.update(grad, state, params)
            return optax.apply_updates(params, updates), state

        for step, grad in enumerate(grads):
            params, state = update(params, state, grad, rates[step])
        results.append(np.asarray(params["w"]))
    assert not np.allclose(results[0], 1.0)
    # 10 updates of the same float32 arithmetic, the rate computed in another program (a few ulps of it): the
    # parameters (order 1) agree to 10 * a few ulps, far below one update's size (~lr = 0.05)
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-6)


def test_a_run_recorded_with_the_schedule_in_its_optimizer_resumes_as_it_was_trained(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    """Runs recorded before injected rates hold optax's schedule state in their checkpoints: they resume,
    evaluate and keep their record with that optimizer, to the parameters of the uninterrupted run."""
    from cnndsl.training import loop, record

    made_as_before = {"_create_trainer": loop._create_trainer, "run_record": loop.run_record}
    monkeypatch.setattr(loop, "_create_trainer", lambda *a: made_as_before["_create_trainer"](*a[:6], True))
    monkeypatch.setattr(loop, "run_record", lambda *a, **k: made_as_before["run_record"](*a, **{**k, "scheduled": True}))
    options = {"quiet": True, "epochs": 2, "lr": 0.01, "schedule": "cosine"}
    whole = cnndsl.train(DIGITS, run_dir=tmp_path / "whole", **options)

    def stop_after_first(record: dict) -> None:
        if record["epoch"] == 1:
            raise StopRun("stopped here to resume later")

    cnndsl.train(DIGITS, run_dir=tmp_path / "cut", on_epoch=stop_after_first, **options)
    monkeypatch.undo()  # from here on, this version's code as a user runs it
    saved = json.loads((tmp_path / "cut" / "settings.json").read_text())
    assert "optimizer_state" not in saved  # as earlier versions wrote it
    resumed = cnndsl.train(None, run_dir=tmp_path / "cut", resume=True, quiet=True)
    assert len(resumed.history.epochs) == 2
    assert "optimizer_state" not in json.loads((tmp_path / "cut" / "settings.json").read_text())
    finished, reference = load_run(None, tmp_path / "cut", "last"), load_run(None, tmp_path / "whole", "last")
    for name, array in reference.params.items():
        assert np.array_equal(np.asarray(finished.params[name]), np.asarray(array)), name
    assert resumed.history.epochs[-1]["test_accuracy"] == whole.history.epochs[-1]["test_accuracy"]
    # a new run records the injected optimizer
    fresh = cnndsl.train(DIGITS, run_dir=tmp_path / "new", quiet=True, epochs=1)
    assert json.loads((fresh.run_dir / "settings.json").read_text())["optimizer_state"] == record.INJECTED
