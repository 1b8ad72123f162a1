"""`cnndsl sweep`: train members of a family, chosen by an Optuna sampler, and keep the Pareto front.

    family (search lines) --Optuna samples--> member --check (ms)--> invalid / over budget / same network
                                                  \\--> a run directory trained in this process --> objectives

Optuna owns the search: its samplers (TPE, NSGA-II, random, grid), its study storage (a journal file in
the sweep's folder by default, any RDB URL to share a study between machines) and the bookkeeping of
trials. cnndsl supplies the glue: each trial's member is checked statically first, so invalid and over-budget
members cost milliseconds and are recorded as pruned trials with their reason; a member whose network
(and settings) another trial already trained is not trained again, and gets that trial's results; every
trained trial is an ordinary run directory, selected on its validation split.

A sweep folder holds:
    sweep.json       the family, objectives and settings      study.journal  the Optuna study (default storage)
    trials/NNNN/     one run directory per trained trial       trials.csv     every trial, one row each
    pareto.png       accuracy vs cost, the front highlighted   edf.png        the error distribution of members
    best.cnn         the chosen member as a standalone spec
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cnndsl.lang.errors import UsageError
from cnndsl.lang.outputs import artifact_kind, check_output_dir, write_atomic
from cnndsl.lang.settings import DATA_NAMES, Settings, spec_settings
from cnndsl.lang.space import Member, Space
from cnndsl.search.family import Budget, check_member, family, load_space, network_key
from cnndsl.search.member import member_spec
from cnndsl.search.pruning import DEFAULT_PRUNER, PRUNERS, EpochJudge, make_pruner, open_epochs_study, score
from cnndsl.search.results import SweepResult, human, summarize
from cnndsl.training.interrupts import INTERRUPTS, Diverged, Interrupted
from cnndsl.training.rundir import RunDir
from cnndsl.search.study import (
    FORMAT,
    OBJECTIVES,
    SAMPLERS,
    SweepError,
    direction,
    enqueue_resumes,
    host,
    latency_batch,
    make_sampler,
    mark_dead_trials,
    open_storage,
    open_study,
    redact,
    trained_count,
)

__all__ = ["OBJECTIVES", "SweepError", "SweepResult", "sweep", "trained_experiments"]

#: What a trained trial's results are (its user attributes): copied to a duplicate, or a family sharing it.
_RESULT_KEYS = ("accuracy", "loss", "test_accuracy", "accuracies", "accuracy_std", "run_dir", "seconds",
                "compile_seconds", "throughput", "latency_ms")
#: Trials in a row that train nothing (invalid, over budget, already trained) before a worker gives up.
MAX_IDLE_TRIALS = 200
UNDECIDED_WAIT = 30.0  # seconds a trial waits for lower-numbered ones to decide whether they train
STATIC_PROBE = 2000  # members checked up front to be sure some member can be trained


def _identity(report: Any, settings: Mapping[str, Any]) -> str:
    """What makes two trials the same experiment: the network and every training setting."""
    return network_key(report) + ":" + hashlib.sha256(json.dumps(settings, sort_keys=True, default=str)
                                                      .encode()).hexdigest()[:12]


def _suggest(trial: Any, space: Space) -> Member:
    member: Member = {}
    for d in space.dimensions:
        if d.kind == "int":
            member[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high), log=d.log)
        elif d.kind == "float":
            member[d.name] = trial.suggest_float(d.name, d.low, d.high, log=d.log)
        elif d.kind == "bool":
            member[d.name] = trial.suggest_categorical(d.name, [True, False])
        else:
            member[d.name] = trial.suggest_categorical(d.name, list(d.texts))
    return member


def _trains(trial: Any) -> bool:
    """Whether a trial trained its member or is training it (its worker alive): "trained" is written just
    before Optuna completes the trial, so a running trial may already say it."""
    import optuna

    status, state = trial.user_attrs.get("status"), trial.state
    return (status == "trained" and state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)) or (
        status == "training" and state == optuna.trial.TrialState.RUNNING) or (
        status == "pruned" and state in (optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING))


class _Sweep:
    """One worker's part of a sweep: the objective Optuna calls, and what it needs between trials."""

    def __init__(self, space: Space, directory: Path, objectives: Sequence[str], budget: Budget, trials: int,
                 base: dict[str, Any], data: Any, quiet: bool, report: Callable[[str], None],
                 explicit: Sequence[str] = (), epochs_study: Any = None, pruner: str = "none",
                 shared: Mapping[str, dict[str, Any]] | None = None, repeats: int = 1) -> None:
        self.space, self.directory, self.objectives, self.budget = space, directory, tuple(objectives), budget
        self.trials, self.base, self.data, self.quiet, self.report = trials, base, data, quiet, report
        self.epochs_study, self.pruner = epochs_study, pruner  # each epoch reported there (cnndsl.search.pruning)
        self.repeats = repeats  # seeds per member: the objectives are their mean
        self.shared = dict(shared or {})  # identity -> results of a member another family's sweep trained
        self.idle = 0
        # the settings the spec's `train` lines or the sweep's flags name: written into each member's spec
        self.explicit = set(spec_settings(space.program)[0]) | set(explicit)

    def objective(self, trial: Any) -> tuple[float, ...]:
        import optuna

        member = _suggest(trial, self.space)
        trial.set_user_attr("host", host())
        trial.set_user_attr("pid", os.getpid())
        checked = check_member(self.space, member, self.budget)
        if not checked.valid:
            self._skip(trial, "invalid" if checked.status == "invalid" else "over budget", checked.reason)
        searched = self.space.settings(member)
        settings = Settings.from_dict({**self.base, **searched}).validate()
        chosen = {k: v for k, v in settings.to_dict().items() if k not in ("data", "data_dir")}
        identity = _identity(checked.report, chosen)
        trial.set_user_attr("identity", identity)
        trial.set_user_attr("params", checked.report.params)
        trial.set_user_attr("macs", checked.report.macs)
        trial.set_user_attr("memory", checked.report.activation_bytes)
        lower = self._lower_decided(trial)
        earlier = self._same_as(lower, identity)
        if earlier is not None:
            if earlier.state == optuna.trial.TrialState.PRUNED:
                self._skip(trial, "duplicate", f"the same network and settings as trial {earlier.number}, pruned")
            if earlier.state == optuna.trial.TrialState.COMPLETE:
                for key in _RESULT_KEYS:
                    if key in earlier.user_attrs and key != "seconds":
                        trial.set_user_attr(key, earlier.user_attrs[key])
                trial.set_user_attr("status", "duplicate")
                trial.set_user_attr("reason", f"the same network and settings as trial {earlier.number}")
                self.report(f"    trial {trial.number}: {self.space.label(member)} is trial {earlier.number}'s "
                            "network and settings: its results, not trained again")
                self.idle += 1
                return tuple(earlier.values)
            self._skip(trial, "duplicate", f"the same network and settings as trial {earlier.number} (running)")
        if self._enough(lower):
            trial.study.stop()
            self._skip(trial, "not needed", f"{self.trials} trials are trained or training")
        self.idle = 0
        shared = self.shared.get(identity) if trial.user_attrs.get("resumes") is None else None
        if shared is not None:  # another family of this comparison trained the very same experiment
            for key in _RESULT_KEYS:
                if shared.get(key) is not None:
                    trial.set_user_attr(key, shared[key])
            trial.set_user_attr("status", "trained")
            trial.set_user_attr("origin", shared["origin"])
            trial.set_user_attr("reason", f"trained once for both families, as {shared['origin']}")
            self.report(f"[{trained_count(trial.study) + 1}/{self.trials}] trial {trial.number}: "
                        f"{self.space.label(member)} is {shared['origin']}'s network and settings: its results")
            return self._values(shared["accuracy"], shared["loss"], checked.report, shared)
        resumed = self._resumed(trial, lower, identity)
        trial.set_user_attr("status", "training")
        run_dir = Path(resumed.user_attrs["run_dir"]) if resumed else self.directory / "trials" / f"{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir.absolute()))
        defaults = Settings().to_dict()
        written = {k: v for k, v in chosen.items() if k in self.explicit or k in searched or defaults.get(k) != v}
        if self.base["data"] in DATA_NAMES:  # a named dataset goes in the train line: the file trains as the trial did
            written = {"data": self.base["data"], **written}
        flags = _data_flags(self.base)
        text = member_spec(self.space, member, written,
                           note=f"A member of the family {self.space.program.name or 'network'} "
                                f"({self.space.program.source.path}), trial {trial.number} of `cnndsl sweep`:\n"
                                f"  {self.space.label(member)}" +
                                (f"\nIts data is given on the command line: cnndsl train THIS_FILE {shlex.join(flags)}"
                                 if flags else ""))
        done = trained_count(trial.study)
        self.report(f"[{done + 1}/{self.trials}] trial {trial.number}: {self.space.label(member)} "
                    f"({human(checked.report.params)} params, {human(checked.report.macs)} MACs)"
                    + (f"; resumes trial {resumed.number}'s run from its newest checkpoint" if resumed else ""))
        from cnndsl.nn.timing import CompileClock

        started = time.perf_counter()
        bests, histories = [], []
        for k, path in enumerate(self._repeat_dirs(run_dir)):  # --repeats: the same member with seeds s, s+1, ...
            seeded = Settings.from_dict({**settings.to_dict(), "seed": settings.seed + k}).validate()
            with CompileClock() as compiling:
                result = self._train(trial, text, seeded, path, resume=resumed is not None and RunDir(path).holds_run(),
                                     judged=k == 0)
            trial.set_user_attr("compile_seconds", compiling.seconds + trial.user_attrs.get("compile_seconds", 0.0))
            if result.stopped:  # pruned (only the first seed is judged): its run keeps the epochs it trained
                (run_dir / "member.cnn").write_text(text)
                trial.set_user_attr("accuracy", score(result.history.best))
                trial.set_user_attr("epochs", len(result.history.epochs))
                trial.set_user_attr("seconds", time.perf_counter() - started)
                trial.set_user_attr("status", "pruned")
                trial.set_user_attr("reason", result.stopped)
                self.report(f"    pruned, {result.stopped}")
                raise optuna.TrialPruned(result.stopped)
            bests.append(result.history.best)
            histories.append(result.history.epochs)
        # validation accuracy (test accuracy without a validation split, said in the table), the mean over seeds
        accuracies = [score(best) for best in bests]
        accuracy = statistics.fmean(accuracies)
        loss = statistics.fmean(best["val_loss"] if best.get("val_loss") is not None else best["test_loss"]
                                for best in bests)
        test_accuracy = statistics.fmean(best["test_accuracy"] for best in bests)
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else None
        trial.set_user_attr("accuracy", accuracy)
        trial.set_user_attr("loss", loss)
        trial.set_user_attr("test_accuracy", test_accuracy)
        if spread is not None:
            trial.set_user_attr("accuracies", accuracies)
            trial.set_user_attr("accuracy_std", spread)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        measured = self._measure(result, histories)
        for key, value in measured.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("status", "trained")
        (run_dir / "member.cnn").write_text(text)
        shown = f"{accuracy:.2%}" + (f" ± {100 * spread:.2f} (mean and spread of {len(bests)} seeds)" if spread is not None
                                     else "")
        self.report(f"    validation accuracy {shown} (test {test_accuracy:.2%}) in "
                    f"{time.perf_counter() - started:.1f} s{self._best_so_far(trial, accuracy)}")
        values = self._values(accuracy, loss, checked.report, measured)
        from cnndsl.training.events import write_session

        # the trial for TensorBoard's HParams view (`tensorboard --logdir SWEEP/tensorboard`)
        write_session(self.directory / "tensorboard" / f"trial_{trial.number:04d}", member,
                      {f"sweep/{k}": float(v) for k, v in {**dict(zip(self.objectives, values)),
                                                           "test_accuracy": test_accuracy,
                                                           "seconds": time.perf_counter() - started}.items()})
        return values

    def _repeat_dirs(self, run_dir: Path) -> list[Path]:
        """The run directories of a trial: its own, then one per further seed (`trials/0003-seed1`, ...)."""
        return [run_dir] + [run_dir.with_name(f"{run_dir.name}-seed{k}") for k in range(1, self.repeats)]

    def _train(self, trial: Any, text: str, settings: Settings, run_dir: Path, resume: bool, judged: bool) -> Any:
        """One training run of the trial's member; `judged`: its epochs go to the pruner. A diverged run makes
        the trial `diverged`."""
        from cnndsl.training.loop import train

        judge = EpochJudge(self.epochs_study, self.pruner, trial.number, settings.epochs, run_dir) if judged else None
        try:
            result = train(text, settings, run_dir=run_dir, resume=resume, quiet=self.quiet, dataset=self.data,
                           on_epoch=judge)
        except Diverged as err:
            if judge is not None:
                judge.finish(None)
            self._skip(trial, "diverged", str(err).split(";")[0])
        except BaseException:
            if judge is not None:
                judge.finish(None)
            raise
        if judge is not None:
            judge.finish(score(result.history.best))
        return result

    def _measure(self, result: Any, histories: list[list[dict[str, Any]]]) -> dict[str, Any]:
        """The measured objectives: training throughput (the median images/s of the epochs after each run's
        first, which compiled; all of a one-epoch run's) and each latency objective's forward time here, timed
        on the trained module of `result` (the last run's)."""
        rates = [e["images_per_s"] for epochs in histories for e in (epochs[1:] or epochs) if e.get("images_per_s")]
        measured: dict[str, Any] = {"throughput": statistics.median(rates)} if rates else {}
        batches = [b for b in map(latency_batch, self.objectives) if b is not None]
        if batches:
            from cnndsl.nn.timing import forward_latency

            measured["latency_ms"] = {str(b): forward_latency(result.net, b, result.model) for b in batches}
        return measured

    def _values(self, accuracy: float, loss: float, report: Any, measured: Mapping[str, Any]) -> tuple[float, ...]:
        """The trial's objective values, in the sweep's order (`measured`: throughput, latency_ms by batch)."""
        values = {"accuracy": accuracy, "loss": loss, "macs": report.macs, "params": report.params,
                  "memory": report.activation_bytes, "throughput": measured.get("throughput", 0.0)}
        latency = measured.get("latency_ms") or {}
        return tuple(float(values[o] if latency_batch(o) is None else latency[str(latency_batch(o))])
                     for o in self.objectives)

    def _resumed(self, trial: Any, lower: list[Any], identity: str) -> Any:
        """The cut-off trial whose run this (enqueued) trial resumes, or None to train from scratch: only the
        same experiment (network and settings) continues a run, and only where no other trial took it over."""
        number = trial.user_attrs.get("resumes")
        if number is None:
            return None
        earlier = next(t for t in lower if t.number == number)
        if earlier.user_attrs.get("identity") != identity:
            self.report(f"    trial {trial.number}: trial {number}'s run had other settings; trained from scratch")
            return None
        if any(t.user_attrs.get("resumes") == number and _trains(t) for t in lower):
            self._skip(trial, "duplicate", f"trial {number}'s run is resumed by another trial")
        return earlier

    def _best_so_far(self, trial: Any, accuracy: float) -> str:
        import optuna

        best = max((t for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                    if t.user_attrs.get("status") == "trained"), key=lambda t: t.user_attrs["accuracy"], default=None)
        if best is None or best.user_attrs["accuracy"] < accuracy:
            return "; the best so far"
        return f"; best so far: trial {best.number}, {best.user_attrs['accuracy']:.2%}"

    def _skip(self, trial: Any, status: str, reason: str | None) -> None:
        import optuna

        trial.set_user_attr("status", status)
        trial.set_user_attr("reason", reason)
        if status != "not needed":
            self.report(f"    trial {trial.number} skipped, {status}: {reason}")
        self.idle += 1
        if self.idle >= MAX_IDLE_TRIALS:
            trial.study.stop()
        raise optuna.TrialPruned(reason)

    @staticmethod
    def _same_as(lower: list[Any], identity: str) -> Any:
        """A lower-numbered trial (any worker's) that trained, or is training, the same experiment; else None."""
        import optuna

        complete = optuna.trial.TrialState.COMPLETE
        for other in lower:
            if other.user_attrs.get("identity") == identity and (_trains(other) or (
                    other.state == complete and other.user_attrs.get("status") == "duplicate")):
                return other
        return None

    @staticmethod
    def _lower_decided(trial: Any) -> list[Any]:
        """Every trial numbered below this one, once each still running has decided whether it trains.

        Trials decide in the order of their numbers: this one waits (milliseconds: their static checks) for
        the lower-numbered ones, so two workers deciding at once never both train one member, nor both take
        the last of the `trials` places. A worker that died while deciding is waited for UNDECIDED_WAIT s."""
        import optuna

        running = optuna.trial.TrialState.RUNNING
        deadline = time.monotonic() + UNDECIDED_WAIT
        while True:
            lower = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
            if time.monotonic() > deadline or not any(t.state == running and "status" not in t.user_attrs
                                                      for t in lower):
                return lower
            time.sleep(0.05)

    def _enough(self, lower: list[Any]) -> bool:
        """Whether `trials` lower-numbered trials are trained or training (across every worker)."""
        return sum(1 for t in lower if _trains(t)) >= self.trials


def sweep(spec: str | os.PathLike[str], *, data: str | None = None, data_dir: str | None = None, trials: int = 20,
          objectives: Sequence[str] = ("accuracy", "macs"), budget: Budget = Budget(), sampler: str = "tpe",
          storage: str | None = None, study: str | None = None, out: str | os.PathLike[str] | None = None,
          seed: int = 0, set: Mapping[str, object] | None = None, quiet: bool = True,
          report: Callable[[str], None] | None = None, pruner: str = DEFAULT_PRUNER,
          shared: Mapping[str, dict[str, Any]] | None = None, repeats: int = 1, **settings: Any) -> SweepResult:
    """Search a family: train `trials` of its members (chosen by `sampler`), and return the study, every
    trial and the Pareto front. `settings` (epochs=3, ...) apply to every member, under the member's own
    searched settings. Running the same call again (or on another machine with a shared `storage`) goes on
    with the same study. `shared`: `trained_experiments` of other families' sweeps compared with this one; a
    member that is one of theirs (the same network and settings) takes its results instead of training.
    `repeats`: seeds each member is trained with (seed, seed+1, ...); its objectives are their mean."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # cnndsl says what happened to each trial itself
    # heartbeats, multivariate TPE and constant liar are "experimental" in Optuna 4-5: said once here, not per run
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    objectives = tuple(objectives)
    unknown = [o for o in objectives if direction(o) is None]
    if unknown or not objectives or len(dict.fromkeys(objectives)) != len(objectives):
        raise UsageError(f"unknown or repeated objective in {','.join(objectives)}",
                         f"choose from {', '.join(OBJECTIVES)} or latency@B (a batch of B), e.g. --objectives "
                         "accuracy,macs")
    if sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {sampler!r}", f"choose from {', '.join(SAMPLERS)}")
    if repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {repeats}")
    if pruner not in PRUNERS:
        raise UsageError(f"unknown pruner {pruner!r}", f"choose from {', '.join(PRUNERS)}")
    space = load_space(spec, set)
    example = _probe(space, budget)
    directory = Path(out) if out is not None else Path("sweeps") / (space.program.name or Path(str(spec)).stem)
    if artifact_kind(directory) != "sweep":  # an earlier sweep's folder is resumed; anything else must be new
        check_output_dir(directory, "sweep", inputs=[spec] if not _is_text(spec) else [], make_parents=True)
    directory.mkdir(parents=True, exist_ok=True)
    name = study or space.program.name or "sweep"
    say = report or (lambda text: None)
    base = _base_settings(space, data, data_dir, settings)
    from cnndsl.data import load_dataset

    dataset = load_dataset(base["data"], base.get("data_dir"), val_fraction=base.get("val_fraction", 0.1),
                           shape=example.input_shape, num_classes=example.output_shape[0])
    shown_storage = redact(storage) if storage else str(directory / "study.journal")
    opened_storage = open_storage(storage, directory, print_progress)
    opened = open_study(space, opened_storage, name, [direction(o) for o in objectives],
                        make_sampler(sampler, seed, space, len(objectives)), objectives, shown_storage)
    epochs_study = open_epochs_study(opened_storage, name, make_pruner(pruner, base["epochs"]))
    _write_sweep_json(directory, space, spec, objectives, name, shown_storage, sampler, seed, base, budget, trials,
                      pruner, repeats)
    dead = mark_dead_trials(opened, directory)
    if dead:
        say(f"{dead} trial{'s' * (dead > 1)} of a stopped sweep marked failed")
    put_back = enqueue_resumes(opened)
    if put_back:
        say(f"{put_back} trial{'s' * (put_back > 1)} cut off during training will resume from {'their' if put_back > 1 else 'its'}"
            " newest checkpoint")
    worker = _Sweep(space, directory, objectives, budget, trials, base, dataset, quiet, say,
                    explicit=[k for k, v in settings.items() if v is not None], epochs_study=epochs_study,
                    pruner=pruner, shared=shared, repeats=repeats)
    while trained_count(opened) < trials and worker.idle < MAX_IDLE_TRIALS:
        try:
            if INTERRUPTS:  # a Ctrl-C that Python swallowed (see cnndsl.lang.settings.INTERRUPTS)
                raise KeyboardInterrupt
            opened.optimize(worker.objective, n_trials=1, catch=())
            if INTERRUPTS:  # swallowed while the trial finished (its evaluation): the trial stands, the sweep stops
                raise KeyboardInterrupt
        except (Interrupted, KeyboardInterrupt):  # Optuna has marked the trial failed
            INTERRUPTS.clear()
            summarize(opened, directory, space, objectives)
            raise Interrupted(f"sweep interrupted after {trained_count(opened)} trained trials; the same command "
                              "resumes the study (the interrupted member is sampled again)") from None
        if _exhausted(space, opened):
            say("every member of the family has been tried")
            break
    if worker.idle >= MAX_IDLE_TRIALS:
        say(f"stopped: the last {MAX_IDLE_TRIALS} members sampled were invalid, over budget or already trained")
    return dataclasses.replace(summarize(opened, directory, space, objectives), train_flags=_data_flags(base),
                               validation_images=_validation_images(dataset))


def trained_experiments(study: Any) -> dict[str, dict[str, Any]]:
    """Every experiment a sweep trained to the end, by identity (network and settings): its results and where
    they come from (`Course trial 3`), for the sweeps of the other families compared with it (`shared`)."""
    import optuna

    found: dict[str, dict[str, Any]] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        a = t.user_attrs
        if a.get("status") == "trained" and a.get("identity") and a["identity"] not in found:
            origin = a.get("origin") or f"{study.study_name} trial {t.number}"  # a shared one keeps its first
            found[a["identity"]] = {"origin": origin, **{k: a.get(k) for k in _RESULT_KEYS}}
    return found


def _data_flags(base: Mapping[str, Any]) -> tuple[str, ...]:
    """The `cnndsl train` flags a member's file needs to train on the sweep's data: none for a named dataset
    (its `train` line names it), `--data SOURCE` for a source with a path or a count, and the `--data-dir`."""
    flags: tuple[str, ...] = () if base["data"] in DATA_NAMES else ("--data", base["data"])
    return flags + (("--data-dir", str(base["data_dir"])) if base.get("data_dir") else ())


def _validation_images(dataset: Any) -> int | None:
    """How many images the members are scored on (None without a validation split)."""
    labels = getattr(dataset, "y_val", None)
    return len(labels) if labels is not None and len(labels) else None


def _is_text(spec: Any) -> bool:
    return isinstance(spec, str) and "\n" in spec


def _exhausted(space: Space, study: Any) -> bool:
    """Whether every point of a finite space (every dimension a list, settings included) has been tried:
    trained, rejected or given to another worker. Optuna's grid sampler stops only its own `optimize` call."""
    import optuna

    if not all(d.discrete for d in space.dimensions):
        return False
    total = math.prod(len(d.values()) for d in space.dimensions)
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    tried = {tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False, states=states)}
    return len(tried) >= total


def _probe(space: Space, budget: Budget) -> Any:
    """The report of a member that can be trained (its input shape and classes are the family's); fail fast
    when none can (checked on up to STATIC_PROBE members)."""
    from cnndsl.search.family import FamilyMember, no_valid_member

    checked: list[FamilyMember] = []
    for m in family(space, budget=budget, limit=STATIC_PROBE):
        if m.valid:
            return m.report
        checked.append(m)
    raise no_valid_member(space, checked)


def _base_settings(space: Space, data: str | None, data_dir: str | None, flags: Mapping[str, Any]) -> dict[str, Any]:
    from cnndsl.lang.errors import CnnError
    from cnndsl.lang.settings import spec_settings

    found, problems = spec_settings(space.program)
    if problems:
        raise CnnError(tuple(problems))
    base = {**Settings().to_dict(), **found, **{k: v for k, v in flags.items() if v is not None}}
    if data is not None:
        base["data"] = data
    if data_dir is not None:
        base["data_dir"] = data_dir
    from cnndsl.data import absolute_source

    base["data"] = absolute_source(base["data"])
    return Settings.from_dict(base).validate().to_dict()


def _write_sweep_json(directory: Path, space: Space, spec: Any, objectives: Sequence[str], name: str,
                      storage: str, sampler: str, seed: int, base: Mapping[str, Any], budget: Budget,
                      trials: int, pruner: str, repeats: int) -> None:
    write_atomic(directory / "sweep.json", json.dumps({
        "format": FORMAT, "family": space.program.name, "spec": str(spec) if not isinstance(spec, str) or
        "\n" not in spec else "<text>", "study": name, "storage": storage, "objectives": list(objectives),
        "sampler": sampler, "pruner": pruner, "repeats": repeats, "seed": seed, "trials": trials, "settings": dict(base),
        "budget": dataclasses.asdict(budget)}, indent=1, default=str) + "\n")


def print_progress(text: str) -> None:
    """The default progress line of the CLI (stderr, one line per event)."""
    print(text, file=sys.stderr, flush=True)
