"""Training: `train(spec, settings)` fits a compiled network to a dataset, with checkpoints that survive a kill.

The loop is functional: parameters, batch-norm statistics and optimizer state are flat dicts of arrays
("conv1/kernel" -> array) threaded through one jitted step (`steps.Trainer`). Every random choice derives
from (seed, epoch) or (seed, step), never from hidden state, so a run resumed from any checkpoint continues
exactly as the uninterrupted run would have.

It reads as the Flax examples' `train_and_evaluate`: `train` resolves the settings and the run directory;
`_train` opens the data (`_open_data`), creates the state (`_create_trainer`, `_starting_state`), writes the
run record, and hands them to `_Loop`, whose `run` trains each epoch (`_train_epoch`), evaluates it
(`_evaluate_epoch`), records and checkpoints it (`_end_epoch`), and on Ctrl-C saves where it stopped.

A run directory holds (cnndsl.training.rundir):
    spec.cnn          the spec as trained          settings.json   the run record (cnndsl.training.record)
    metrics.jsonl     one line per epoch           curves.png      loss and accuracy per epoch
    checkpoints/last  the newest N checkpoints     checkpoints/best  the best validation accuracy
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from cnndsl.data import DataError, Dataset, missing_classes
from cnndsl.data.pipeline import ImageData, PipelineError
from cnndsl.data.sources import absolute_source, open_source
from cnndsl.lang.settings import Settings, TrainingError
from cnndsl.nn.compiler import CompiledNetwork
from cnndsl.nn.compiler import compile as compile_spec
from cnndsl.training.cache import use_compilation_cache
from cnndsl.training.checkpoints import Checkpointer, restore_newest
from cnndsl.training.compat import check_compatible, classes_of
from cnndsl.training.curves import CurvesPainter
from cnndsl.training.distributed import Placement, agree, barrier
from cnndsl.training.feed import ArrayFeed, StreamFeed, TooManyBadImages
from cnndsl.training.interrupts import (
    INTERRUPTS,
    Diverged,
    Interrupted,
    StopRun,
    stop_on_signals,
)
from cnndsl.training.events import EventLog
from cnndsl.training.optim import learning_rates, run_optimizer, scheduled_record
from cnndsl.training.preprocess import Preprocess, normalization
from cnndsl.training.progress import EpochClock, Progress, epoch_line, in_background
from cnndsl.training.record import new_run_dir, run_hparams, run_record
from cnndsl.training.results import History, TrainResult
from cnndsl.training.rundir import CURVES, RunDir
from cnndsl.training.steps import DTYPES, Trainer

__all__ = ["Interrupted", "Settings", "TrainingError", "TrainResult", "train"]


def train(spec: str | os.PathLike[str] | None, settings: Settings | None = None, *,
          run_dir: str | Path | None = None, resume: bool = False, bindings: dict[str, Any] | None = None,
          quiet: bool = False, on_epoch: Callable[[dict[str, Any]], None] | None = None,
          dataset: Dataset | None = None, devices: int | str | None = None, shard_params: bool = False,
          **overrides: Any) -> TrainResult:
    """Train the network of a spec (a path or text) and return the trained module and its history.

    Settings: `settings` if given, else the defaults < the spec's `train` lines (or, with `resume`, the
    run's saved settings) < `overrides` (keyword arguments named like `Settings` fields: epochs=3).
    With `resume`, `run_dir` must hold an earlier run; training continues from its newest good checkpoint
    (from step 0 if it has none yet), and `spec=None` means the run's own spec and `--set` bindings.
    The run directory is locked while training: a second trainer of the same run gets a TrainingError.
    `dataset`: the settings' dataset already loaded (a sweep loads it once for all its trials).
    `on_epoch(record)` hears of each epoch once its metrics line and checkpoint are written; raising
    `cnndsl.training.interrupts.StopRun(reason)` ends the run there (the result's `stopped` says why).
    `devices`: "all" (the default: every device of every process) or how many of this process's devices
    share each global batch (data parallelism, cnndsl/training/distributed.py); it does not change the
    results. `shard_params`: split parameters and optimizer state over those devices too (FSDP-style)
    instead of replicating them; it does not change the results either.
    Compiled programs are kept in XLA's persistent cache between runs (cnndsl.training.cache: the cnndsl cache,
    or the directory the caller configured in jax), so a later run of the same network compiles nothing.
    """
    use_compilation_cache(unless_configured=True)  # compiled programs kept between runs, unless jax's is set
    run: RunDir | None = None
    # With several processes (jax.distributed), process 0 owns the run directory: it locks it and writes its
    # files; every process writes the checkpoints (orbax, together) and trains its share of each batch.
    main = jax.process_index() == 0
    if jax.process_count() > 1 and run_dir is None:
        raise TrainingError("with several processes, give the run directory (--out RUN or --resume RUN): every "
                            "process must name the same one")
    try:
        if resume:
            if run_dir is None:
                raise TrainingError("resume needs the run directory (run_dir=...)")
            run = RunDir(run_dir)
            if main:
                run.open()  # locked from here until the run ends
            if spec is None:  # the run's own spec, with the --set bindings it was trained with
                spec, bindings = run.spec_path(), bindings or run.bindings()
        elif spec is None:
            raise TrainingError("no spec to train: give a .cnn file or its text")
        settings = _resolved_settings(spec, settings, overrides, bindings, run if resume else None)
        net = compile_spec(spec, set=bindings, dtype=DTYPES[settings.dtype], scan=settings.scan)
        agree({"spec": net.report.graph.standalone_text, "settings": settings.to_dict(), "bindings": bindings,
               "resume": resume})
        if run is None:
            run = RunDir(run_dir if run_dir else new_run_dir(str(net.report.graph.source.path)))
            if main:
                run.create(inputs=[p for p in [net.report.graph.source.path] if not p.startswith("<")])
            barrier("cnndsl-run-created")
        return _train(net, settings, run, resume, quiet, on_epoch, bindings, dataset, devices, shard_params)
    finally:
        if run is not None:
            run.release()


def _resolved_settings(spec: Any, settings: Settings | None, overrides: dict[str, Any],
                       bindings: dict[str, Any] | None, resumed: RunDir | None) -> Settings:
    """The run's settings: given, or the spec's (a resumed run's saved ones), with `overrides` on top; a new
    run's paths made absolute, so eval, predict and export work from any directory."""
    if settings is None:
        if resumed is not None:
            base = Settings.from_run(resumed.read_settings()).to_dict()
        else:
            from cnndsl.lang.frontend import check

            base = dict(check(spec, set=bindings).train_settings)
        settings = Settings.from_dict({**base, **overrides})
    elif overrides:
        settings = Settings.from_dict({**settings.to_dict(), **overrides})
    settings = settings.validate()
    if resumed is not None:
        return settings

    def absolute(path: str | None) -> str | None:
        return str(Path(path).expanduser().absolute()) if path else None

    return dataclasses.replace(settings, data=absolute_source(settings.data), data_dir=absolute(settings.data_dir),
                               init=absolute(settings.init))


def _train(net: CompiledNetwork, settings: Settings, run: RunDir, resume: bool, quiet: bool,
           on_epoch: Callable[[dict[str, Any]], None] | None, bindings: dict[str, Any] | None,
           data: Dataset | None = None, devices: int | str | None = None, shard_params: bool = False) -> TrainResult:
    """The run itself, in a locked run directory: data, state (new, or restored from the newest good
    checkpoint), the run record, then the loop."""
    main = jax.process_index() == 0
    progress = Progress(quiet or not main)
    painter = CurvesPainter().start() if main else None  # imports matplotlib in its own process meanwhile
    try:
        skipped: list[str] = []
        if data is None:
            data, skipped = _open_data(settings, net, progress)
        check_compatible(net, data, settings.resize, bindings)
        _warn_missing_classes(data, progress)
        scheduled = resume and scheduled_record(run.read_settings())
        settings, trainer, steps_per_epoch = _create_trainer(net, settings, data, devices, shard_params, progress,
                                                             scheduled)
        state, history = _starting_state(trainer, net, settings, data, run, resume, steps_per_epoch, progress, main)
        events = None
        if main:  # settings.json first (atomically): from now on the directory holds a run --resume continues
            record = run_record(
                settings, trainer.preprocess.to_dict(), net, num_classes=data.num_classes, classes=data.classes,
                steps_per_epoch=steps_per_epoch, data_shape=data.image_shape, bindings=bindings,
                devices=trainer.placement.count, processes=jax.process_count(), pipeline=_pipeline_name(data),
                scheduled=scheduled)
            run.write_settings(record)
            events = EventLog(run.path, completed_epochs=len(history.epochs))
            if not resume:
                run.write_spec(net.report.graph.standalone_text)
                events.start(net.report.graph.standalone_text, run_hparams(record, net))
        loop = _Loop(net, settings, run, data, skipped, trainer, state, history, steps_per_epoch, progress,
                     painter, on_epoch, main, events)
        loop.run()
        return TrainResult(net, trainer.module(loop.params, loop.stats, train=False), history, run.path, loop.stopped)
    finally:
        if painter is not None:
            painter.close()


def _open_data(settings: Settings, net: CompiledNetwork, progress: Progress) -> tuple[Any, list[str]]:
    """The run's dataset, opened by the data layer's source registry (`cnndsl.data.sources.open_source`):
    arrays, or folder:/records: images through the input pipeline (streamed or decoded into memory; the
    choice is printed). Returns it with a message for each image skipped as unreadable."""
    try:
        data, skipped, notes = open_source(
            settings.data, data_dir=settings.data_dir, shape=net.input_shape, num_classes=classes_of(net),
            val_fraction=settings.val_fraction, augment=settings.augment, stream=settings.stream,
            resize=settings.resize, progress=progress.line)
    except (DataError, PipelineError) as err:
        raise TrainingError(str(err)) from None
    for note in notes:
        progress.line(note)
    for message in skipped:
        progress.warn(f"skipped an unreadable image: {message}")
    if len(skipped) > settings.max_bad_images:
        raise TrainingError(f"{len(skipped)} unreadable images, more than --max-bad-images {settings.max_bad_images}; "
                            "fix or remove them, or raise the limit")
    return data, skipped


def _warn_missing_classes(data: Any, progress: Progress) -> None:
    """A warning when classes of the validation and test data never occur in the training data."""
    absent = missing_classes(data)
    if absent:
        progress.warn(f"{len(absent)} class{'es' * (len(absent) > 1)} of the validation and test data never occur "
                      f"in the training data ({', '.join(absent[:10])}{', ...' if len(absent) > 10 else ''}); the "
                      "network cannot learn them: is the data sorted by class before its split?")


def _pipeline_name(data: Any) -> str:
    """How the run's batches are fed, as the run record says it."""
    if isinstance(data, ImageData):
        return "streamed" if data.streamed else "decoded in memory"
    return "arrays on the device"


def _create_trainer(net: CompiledNetwork, settings: Settings, data: Any, devices: int | str | None,
                    shard_params: bool, progress: Progress, scheduled: bool = False) -> tuple[Settings, Trainer, int]:
    """The run's settings with the batch size the data allows, its `Trainer` (placement, preprocessing,
    optimizer with frozen parameters masked, the jitted steps) and its steps per epoch. `scheduled`: the
    optimizer of a run recorded before injected learning rates (cnndsl.training.optim)."""
    streaming = isinstance(data, ImageData)
    examples = len(data.train) if streaming else len(data.x_train)
    batch = min(settings.batch_size, examples)
    settings = dataclasses.replace(settings, batch_size=batch)
    placement = Placement.create(devices, shard_params)
    placement.check_batch(batch)
    if streaming and batch % jax.process_count():
        raise TrainingError(f"the batch size {batch} does not split over {jax.process_count()} processes")
    steps_per_epoch = examples // batch
    mean, std = (data.mean, data.std) if streaming else normalization(data)
    preprocess = Preprocess(data.scale, mean, std, net.input_shape[:2],
                            tuple(a for a in settings.augment if a != "resized-crop"))  # that one is the pipeline's
    model = net.init(settings.seed)
    # each convolution lowered as measured fastest at this batch (cached per shape), before the step is traced;
    # on one device only: the programs of several processes must be the same (each would measure its own), and
    # partitioned programs were not measured
    if jax.process_count() == 1 and placement.mesh is None:
        net.tune_convolutions(batch)
    optimizer, frozen = run_optimizer(net, model, settings, steps_per_epoch, scheduled)
    if frozen:
        progress.line(f"frozen: {len(frozen)} parameter arrays ({', '.join(sorted(frozen)[:6])}"
                      f"{', ...' if len(frozen) > 6 else ''})")
    return settings, Trainer(net, model, optimizer, preprocess, settings, data.num_classes, placement), steps_per_epoch


def _starting_state(trainer: Trainer, net: CompiledNetwork, settings: Settings, data: Any, run: RunDir,
                    resume: bool, steps_per_epoch: int, progress: Progress, main: bool
                    ) -> tuple[dict[str, Any], History]:
    """Step 0 (with `--init`'s arrays where given), or a resumed run's newest good checkpoint (with the
    input pipeline's position for folder:/records: data); and the history of the epochs it has completed."""
    state = trainer.initial_state(pipeline=isinstance(data, ImageData))
    if not resume:
        if settings.init:
            from cnndsl.training.finetune import initialized

            state = initialized(state, net, settings.init, trainer.placement, progress)
        return state, History(run.read_metrics(0) if main else [])
    state = restore_newest(run, settings, state, progress)
    step = int(state["step"])
    history = History(run.read_metrics(step // steps_per_epoch) if main else [])  # checked before anything is said
    progress.line(f"resuming {run.path} at step {step} (epoch {step // steps_per_epoch + 1})" if step else
                  f"{run.path} has no checkpoint yet: starting again from step 0 with its settings")
    return state, history


class _Loop:
    """The epochs of one run: the arrays it threads through the step, where it has saved, and how it stops."""

    def __init__(self, net: CompiledNetwork, settings: Settings, run: RunDir, data: Any, skipped: list[str],
                 trainer: Trainer, state: dict[str, Any], history: History, steps_per_epoch: int,
                 progress: Progress, painter: CurvesPainter | None,
                 on_epoch: Callable[[dict[str, Any]], None] | None, main: bool, events: EventLog | None = None) -> None:
        self.net, self.settings, self.run_dir, self.data, self.skipped = net, settings, run, data, skipped
        self.trainer, self.history, self.steps_per_epoch = trainer, history, steps_per_epoch
        self.progress, self.painter, self.on_epoch, self.main = progress, painter, on_epoch, main
        self.stopped: str | None = None  # why on_epoch ended the run early (StopRun), if it did
        self.params, self.stats, self.opt_state = state["params"], state["stats"], state["opt_state"]
        self.meters, self.step = state["meters"], int(state["step"])
        self.saved_step = self.step
        self.total_steps = steps_per_epoch * settings.epochs
        self.events, self.learning_rates = events, learning_rates(settings, steps_per_epoch)
        self.seed = np.int32(settings.seed)
        self.checkpoints = Checkpointer(run.path, settings.keep, donated=bool(trainer.donated))
        # An epoch's clock runs from the end of the previous epoch's record (or the loop's start) to the end of
        # its own: `seconds` is the time between two epoch lines, split into its parts. The end-of-epoch
        # checkpoint is handed over after the metrics line (which must be written first): it counts in the next.
        self.clock = EpochClock()
        self.interrupted: list[int] = []
        self.feed = _open_feed(data, trainer, settings, steps_per_epoch, progress, state.get("iterator"))

    def run(self) -> None:
        """Train from the current step to the last epoch's end; on Ctrl-C, save and raise `Interrupted`."""
        restore_signals = stop_on_signals(self.interrupted)
        # The evaluation program is traced and compiled on a thread while the first epoch trains (the steps run
        # in XLA, leaving Python free), from the starting arrays (shape structures would key another program);
        # not where the step donates its buffers (GPU, TPU), which would delete them under the thread.
        self.evaluation_ready = (
            in_background(functools.partial(self.feed.prepare_evaluation, self.trainer, self.params, self.stats))
            if self.step < self.total_steps and not self.trainer.donated else None)
        try:
            while self.step < self.total_steps:
                epoch, index = divmod(self.step, self.steps_per_epoch)
                record = self._train_epoch(epoch, index)
                record.update(self._evaluate_epoch(epoch))
                self._end_epoch(record, self.step - (epoch * self.steps_per_epoch + index))
                if self.interrupted:  # stopped at an epoch's end: its metrics line and checkpoint are written
                    raise KeyboardInterrupt
        except StopRun as stop:  # the caller's on_epoch ended the run; this epoch is saved
            self.stopped = str(stop)
        except KeyboardInterrupt:
            self._save_interrupted()
        except TooManyBadImages as err:
            raise TrainingError(str(err)) from None
        finally:
            self._close(restore_signals)

    def snapshot(self) -> dict[str, Any]:
        """The state a checkpoint holds now."""
        return {"params": self.params, "stats": self.stats, "opt_state": self.opt_state, "meters": self.meters,
                "step": np.array(self.step, np.int64), **self.feed.state()}

    def _train_epoch(self, epoch: int, index: int) -> dict[str, Any]:
        """The steps of an epoch from `index`, with mid-epoch checkpoints; its training figures."""
        settings, steps = self.settings, self.steps_per_epoch
        self.feed.start_epoch(epoch)
        self.progress.start(epoch + 1, settings.epochs, steps, index)
        self.clock.start_training()
        started, first_step = time.perf_counter(), self.step
        pending: tuple[Any, int, int] | None = None
        try:
            for index in range(index, steps):
                self.params, self.stats, self.opt_state, self.meters, _ = self.trainer.train_step(
                    self.params, self.stats, self.opt_state, self.meters, *self.feed.batch(index), self.seed,
                    np.int32(self.step), self.learning_rates[self.step])
                self.step += 1
                boundary = settings.checkpoint_every and self.step % settings.checkpoint_every == 0
                if index % 10 == 9:  # show the meters copied at the last update (no stall), copy these
                    if pending is not None:
                        self._show(*pending, epoch, started, first_step)
                    self.meters.copy_to_host_async()
                    pending = (self.meters, index + 1, self.step)
                if boundary or index == steps - 1:  # a checkpoint or the epoch's end: check now
                    self._show(self.meters, index + 1, self.step, epoch, started, first_step)
                if boundary and index != steps - 1:
                    with self.clock.timing("checkpoint"):
                        self.checkpoints.save(self.step, self.snapshot())
                    self.saved_step = self.step
                if self.interrupted and index != steps - 1:  # at the epoch's end: finish it first
                    raise KeyboardInterrupt
        finally:
            self.progress.stop()
        seen_loss, seen_correct, seen, *heads = (float(v) for v in np.asarray(self.meters))
        self.clock.stop_training()
        # with heads in the loss: `train_loss` is the weighted sum, `train_loss_NAME` each head's own
        return {"epoch": epoch + 1, "step": self.step, "train_loss": seen_loss / seen,
                "train_accuracy": seen_correct / seen,
                **{f"train_loss_{name}": total / seen for name, total in zip(self.trainer.loss_heads, heads)}}

    def _show(self, values: Any, done: int, at_step: int, epoch: int, started: float, first_step: int) -> None:
        """Report the running meters; stop at a non-finite loss before anything saves it."""
        seen_loss, seen_correct, seen = (float(v) for v in np.asarray(values)[:3])
        if not math.isfinite(seen_loss):
            raise Diverged(
                f"the loss became {seen_loss} by step {at_step} (epoch {epoch + 1}); stopped without "
                f"saving it. The last good checkpoint is step {self.saved_step} in {self.run_dir.checkpoints}. "
                f"Try a lower --lr (now {self.settings.lr}) or --clip 1.0")
        rate = (at_step - first_step) * self.settings.batch_size / max(time.perf_counter() - started, 1e-9)
        self.progress.update(done, f"loss {seen_loss / seen:.4f}  acc {seen_correct / seen:.1%}  {rate:,.0f} img/s")

    def _evaluate_epoch(self, epoch: int) -> dict[str, Any]:
        """Validation (it chooses the best checkpoint) and test (only reported) figures."""
        with self.clock.timing("eval"):
            if self.evaluation_ready is not None:
                self.evaluation_ready()
                self.evaluation_ready = None
            evaluated = self.feed.evaluate(self.trainer, self.params, self.stats)
        figures: dict[str, Any] = {}
        for split, result in evaluated.items():
            loss, accuracy, dense = result or (None, None, {})
            if loss is not None and not math.isfinite(loss):
                raise Diverged(f"the {split} loss is {loss} after epoch {epoch + 1}; stopped without "
                               f"saving it. The last good checkpoint is step {self.saved_step}. Try a lower --lr")
            figures[f"{split}_loss"], figures[f"{split}_accuracy"] = loss, accuracy
            if self.trainer.dense:  # segmentation: mean IoU (it chooses the best checkpoint) and each class's
                figures[f"{split}_miou"] = dense.get("miou")
                figures[f"{split}_iou"] = dense.get("iou")
            if self.trainer.eval_heads:  # each trained head's own figures (the main output's choose the best)
                figures[f"{split}_heads"] = dense.get("heads")
        return figures

    def _end_epoch(self, record: dict[str, Any], steps_done: int) -> None:
        """Record the epoch (metrics line first: a resume drops lines past its checkpoint, never lacks one),
        checkpoint it (as `best` too when it improved), print it."""
        record.update(self.clock.record(steps_done * self.settings.batch_size))
        if isinstance(self.data, ImageData) or self.skipped:  # unreadable images skipped so far
            record["bad_images"] = len(self.skipped) + self.feed.bad_images
        self.meters = self.trainer.zero_meters()
        previous_best = self.history.best
        self.history.epochs.append(record)
        improved = self.history.best is record and record is not previous_best
        if self.main:
            self.run_dir.append_metrics(record)
        if self.events is not None:
            self.events.epoch(record, float(self.learning_rates[self.step - 1]))
        with self.clock.timing("checkpoint"):
            self.checkpoints.save(self.step, self.snapshot(), best=improved)
        self.saved_step = self.step
        self.progress.line(epoch_line(record, self.settings.epochs))
        if self.on_epoch:
            self.on_epoch(record)

    def _save_interrupted(self) -> None:
        """Ctrl-C: a checkpoint of the current step (unless its loss is not finite), then `Interrupted`."""
        INTERRUPTS.clear()  # answered here: a later run in this process starts afresh
        seen_loss = float(np.asarray(self.meters)[0])
        if math.isfinite(seen_loss) and self.step != self.saved_step:
            self.checkpoints.save(self.step, self.snapshot())
            self.saved_step = self.step
        raise Interrupted(f"interrupted at step {self.step}; checkpoint saved at step {self.saved_step}. "
                          f"Continue with: cnndsl train --resume {self.run_dir.path}") from None

    def _close(self, restore_signals: Callable[[], None]) -> None:
        """Every checkpoint started is on disk, the curves drawn (by the painter's process, meanwhile) and
        the signal handlers restored, whatever ended the loop."""
        self.feed.close()
        best = self.history.best
        curves = (in_background(functools.partial(
                      self.painter.paint, self.history.epochs,
                      best["epoch"] if best and best.get("val_accuracy") is not None else None,
                      self.run_dir.file(CURVES), f"{self.net.report.name} on {self.data.name}"))
                  if self.history.epochs and self.painter is not None else None)
        try:
            self.checkpoints.close()
            if self.events is not None:
                self.events.close()
        finally:
            restore_signals()  # after: a Ctrl-C while the last save finishes is still this loop's to handle
            if curves is not None:
                curves()


def _open_feed(data: Any, trainer: Trainer, settings: Settings, steps_per_epoch: int, progress: Progress,
               position: Any) -> ArrayFeed | StreamFeed:
    """The arrays onto the devices once, or the input pipeline started at the checkpoint's `position`."""
    try:
        if isinstance(data, ImageData):
            return StreamFeed(data, trainer.placement, settings, steps_per_epoch, progress.warn, position)
        return ArrayFeed(data, trainer.placement, settings.seed)
    except PipelineError as err:  # Grain not installed, say
        raise TrainingError(str(err)) from None
