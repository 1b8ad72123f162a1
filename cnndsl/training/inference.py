"""Using a trained run: load its best or last checkpoint, evaluate it on its data, predict images."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cnndsl.data import DataError, load_dataset
from cnndsl.data.images import array_white, evaluation_view, in_units, with_channels
from cnndsl.data.pipeline import PipelineError, open_images
from cnndsl.data.sources import parse_source
from cnndsl.lang.settings import Settings, TrainingError
from cnndsl.lang.shapes import fmt
from cnndsl.nn.compiler import CompiledNetwork
from cnndsl.nn.compiler import compile as compile_spec
from cnndsl.training.checkpoints import checkpoint_managers, restore
from cnndsl.training.compat import check_compatible, classes_of
from cnndsl.training.optim import run_optimizer, scheduled_record
from cnndsl.training.preprocess import Preprocess
from cnndsl.training.rundir import SPEC, RunDir
from cnndsl.training.steps import DTYPES, EVAL_BATCH, Trainer


def trained_through_pipeline(saved: dict[str, Any]) -> bool:
    """Whether a run (its settings.json) trained on batches of the input pipeline (its checkpoints hold the
    pipeline's position)."""
    return saved.get("pipeline", "").startswith(("streamed", "decoded"))


def uses_pipeline(saved: dict[str, Any]) -> bool:
    """Whether a run (its settings.json) evaluates images as the input pipeline does (resize, centre crop):
    runs trained on folder:/records: data through it, and imported pretrained weights."""
    return trained_through_pipeline(saved) or saved.get("eval_transform") == "resize-crop"


@dataclass
class LoadedRun:
    """A trained run ready to evaluate or predict: network, trainer, arrays, settings."""

    net: CompiledNetwork
    trainer: Trainer
    params: Any
    stats: Any
    settings: dict[str, Any]
    step: int

    def module(self) -> Any:
        """The network with the checkpoint's arrays, in eval mode: what export and ONNX write."""
        return self.trainer.module(self.params, self.stats, train=False)

    @property
    def preprocess(self) -> dict[str, Any]:
        """The run's input normalization as its record holds it ({"scale", "mean", "std"})."""
        return self.trainer.preprocess.to_dict()

    @property
    def classes(self) -> list[str]:
        """The names of the run's classes (empty when its dataset has none)."""
        return list(self.settings.get("classes") or [])

    def stored(self, image: np.ndarray, white: float | None = None) -> np.ndarray:
        """An image array in the units the run's dataset stores, as float32: read with white level `white`
        (default: the run's own, or 0..1 for a float array within 0..1 when the run's is above 1;
        `data.images.array_white`); 255 for an image file's pixels."""
        scale = self.trainer.preprocess.scale
        return in_units(image, scale, array_white(image, scale, white))

    def probabilities(self, images: Sequence[np.ndarray], white: float | None = None) -> np.ndarray:
        """Class probabilities (N, K) for image arrays (H, W, C) read with white level `white` (`stored`):
        converted to the network's channels, then another size resized as the run evaluates (bilinear inside
        the run's preprocessing, or resized and centre-cropped for runs that read image files), nothing clipped."""
        c = self.net.input_shape[-1]
        rows = []
        for image in images:  # the run's own preprocessing (scale, normalization, resize), one image at a time
            image = with_channels(self.stored(image, white), c)
            if uses_pipeline(self.settings) and image.shape[:2] != tuple(self.net.input_shape[:2]):
                image = evaluation_view(image, tuple(self.net.input_shape[:2]), self.trainer.preprocess.scale)
            rows.append(np.asarray(self._probabilities(self.params, self.stats, image[None])))
        return np.concatenate(rows)

    @functools.cached_property
    def _probabilities(self) -> Callable[..., jax.Array]:
        """Stored pixels (1, H, W, C) to class probabilities, one compiled program per image size."""
        def probabilities(params: Any, stats: Any, x: jax.Array) -> jax.Array:
            logits = self.trainer.module(params, stats, train=False)(self.trainer.preprocess(x))
            return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

        return jax.jit(probabilities)


def load_run(spec: str | os.PathLike[str] | None, run_dir: str | Path, checkpoint: str = "best",
             bindings: dict[str, Any] | None = None) -> LoadedRun:
    """The network of a run with its `best` or `last` checkpoint restored (spec defaults to the run's copy)."""
    run = RunDir(run_dir)
    saved = run.read_settings()
    settings = Settings.from_run(saved)
    trained_spec = run.file(SPEC)
    if spec is None:  # the run's own spec, with the --set bindings it was trained with
        spec, bindings = run.spec_path(), bindings or run.bindings()
    net = compile_spec(spec, set=bindings, dtype=DTYPES[settings.dtype], scan=settings.scan)
    preprocess = Preprocess.from_run(saved, net.input_shape[:2])
    model = net.init(settings.seed)
    trainer = Trainer(net, model, run_optimizer(net, model, settings, saved["steps_per_epoch"],
                                                   scheduled_record(saved))[0], preprocess,
                      settings, saved["num_classes"])
    output = net.report.output_shape
    if len(output) not in (1, 3) or output[-1] != saved["num_classes"]:  # class scores, or a map of them per pixel
        raise TrainingError(f"the spec outputs {fmt(net.report.output_shape)}, the run was trained for "
                            f"{saved['num_classes']} classes; use the spec the run was trained with ({trained_spec})")
    restored = _restored(run, checkpoint, settings.keep, trainer.initial_state(trained_through_pipeline(saved)),
                         trained_spec)
    if restored is None:
        raise TrainingError(f"{run.path} has no {checkpoint} checkpoint yet")
    for kind in ("params", "stats"):
        for name, array in restored[kind].items():
            if not bool(jnp.isfinite(array).all()):
                raise TrainingError(f"{run.checkpoints / checkpoint} (step {int(restored['step'])}): {name} holds NaN "
                                    "or infinite values; the checkpoint is damaged")
    return LoadedRun(net, trainer, restored["params"], restored["stats"], saved, int(restored["step"]))


#: What tensorstore and orbax say of a file whose bytes are damaged (rather than of a tree of another shape).
DAMAGE_WORDS = ("DATA_LOSS", "Error reading", "Error decoding", "Error opening", "corrupt", "checksum", "OCDBT")


def _restored(run: RunDir, checkpoint: str, keep: int, template: dict[str, Any], trained_spec: Path) -> Any:
    """The run's `best` or `last` checkpoint shaped like `template` (None if it has none); a TrainingError
    that says whether the checkpoint is damaged or was written for another spec. The managers are closed
    before returning, so that no orbax thread outlives a failed restore (they printed tracebacks at exit)."""
    _quiet_sibling_failures()  # before: a sibling's failure can be collected while the restore still runs
    last, best = checkpoint_managers(run.path, keep)
    try:
        return restore(best if checkpoint == "best" else last, template)
    except Exception as err:  # noqa: BLE001 - orbax's many errors for a damaged or foreign checkpoint
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, (ValueError, KeyError)) and not any(word in first for word in DAMAGE_WORDS):
            raise TrainingError(f"{run.path}: the checkpoint does not fit this spec ({first[:200]}); use the spec "
                                f"the run was trained with ({trained_spec})") from None
        raise TrainingError(f"{run.checkpoints / checkpoint}: the checkpoint cannot be read ({type(err).__name__}: "
                            f"{first[:160]}); it is damaged: train again, or use the other checkpoint "
                            f"(--checkpoint {'last' if checkpoint == 'best' else 'best'})") from None
    finally:
        for manager in (last, best):
            try:
                manager.close()
            except Exception:  # noqa: BLE001, S110 - closing after a failure: the failure is what is reported
                pass


class _DamageAlreadyReported(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" for a damaged checkpoint's files: orbax reads the
    arrays (and their metadata) in parallel tasks, the first failure is reported (one line), and the others'
    identical errors were logged whenever the garbage collector found them, during the restore or at exit (a
    screen of tensorstore specs around the one line). Errors of other kinds still reach asyncio's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage().startswith("Task exception was never retrieved") and error is not None
                    and any(word in str(error) for word in DAMAGE_WORDS))


def _quiet_sibling_failures() -> None:
    """Install `_DamageAlreadyReported` on asyncio's logger, once."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _DamageAlreadyReported) for f in logger.filters):
        logger.addFilter(_DamageAlreadyReported())


def evaluate(spec: str | os.PathLike[str] | None, run_dir: str | Path, data: str | None = None,
             data_dir: str | None = None, checkpoint: str = "best") -> dict[str, Any]:
    """Accuracy and loss of a trained run's checkpoint on its dataset's test split ("accuracy", "loss", "n")
    and validation split ("val_accuracy", "val_loss", "val_n"; None without one), the run's own split."""
    loaded = load_run(spec, run_dir, checkpoint)
    source = data or loaded.settings["data"]
    if source == "none":
        raise TrainingError(f"{run_dir} holds imported weights and no dataset of its own: give --data")
    try:
        kind, _ = parse_source(source)
    except DataError as err:
        raise TrainingError(str(err)) from None
    if kind.pipeline and (not kind.arrays or uses_pipeline(loaded.settings)):  # as training read them
        return _evaluate_images(loaded, source, checkpoint)
    try:
        dataset = load_dataset(source, data_dir or loaded.settings.get("data_dir"),
                               val_fraction=loaded.settings.get("val_fraction", 0.0),
                               shape=loaded.net.input_shape, num_classes=classes_of(loaded.net))
    except DataError as err:
        raise TrainingError(str(err)) from None
    check_compatible(loaded.net, dataset, bool(loaded.settings.get("resize")))
    result: dict[str, Any] = {"data": source, "checkpoint": checkpoint, "step": loaded.step}
    splits = {"": (dataset.x_test, dataset.y_test), "val_": (dataset.x_val, dataset.y_val)}
    for prefix, (_, y), outcome in zip(splits, splits.values(),
                                      loaded.trainer.evaluate(loaded.params, loaded.stats, *splits.values())):
        loss, accuracy, dense = outcome or (None, None, {})
        result.update({f"{prefix}accuracy": accuracy, f"{prefix}loss": loss, f"{prefix}n": int(len(y))})
        result.update(_more_figures(loaded.trainer, prefix, dense, dataset.classes))
    return result


def _more_figures(trainer: Trainer, prefix: str, dense: dict[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """A split's figures beyond loss and accuracy: for segmentation the mean IoU and each class's IoU by name
    (the accuracy is then the pixel accuracy); for each head trained with the labels, its own figures."""
    figures: dict[str, Any] = {}
    if trainer.dense:
        figures.update({f"{prefix}miou": dense.get("miou"), f"{prefix}iou": dict(zip(classes, dense.get("iou") or []))})
    if trainer.eval_heads:
        figures[f"{prefix}heads"] = {name: {k: (dict(zip(classes, v)) if k == "iou" else v) for k, v in head.items()}
                                     for name, head in (dense.get("heads") or {}).items()}
    return figures


def _evaluate_images(loaded: LoadedRun, source: str, checkpoint: str) -> dict[str, Any]:
    """`evaluate` for folder:/records: data: the splits streamed through the input pipeline, each image
    resized and centre-cropped to the network's input as in training."""
    from cnndsl.data.pipeline import default_workers, eval_batches
    from cnndsl.training.feed import close_iterator

    try:
        data, _ = open_images(source, shape=loaded.net.input_shape, mode="stream", normalize=False,
                              val_fraction=loaded.settings.get("val_fraction", 0.0))
    except (DataError, PipelineError) as err:
        raise TrainingError(str(err)) from None
    check_compatible(loaded.net, data, True)
    result: dict[str, Any] = {"data": source, "checkpoint": checkpoint, "step": loaded.step}
    for prefix, split in (("", "test"), ("val_", "val")):
        batches = eval_batches(data, split, EVAL_BATCH, default_workers())
        try:
            outcome = loaded.trainer.evaluate_stream(loaded.params, loaded.stats, batches, jax.device_put)
        finally:
            close_iterator(batches)
        loss, accuracy, n, _, dense = outcome or (None, None, 0, [], {})
        result.update({f"{prefix}accuracy": accuracy, f"{prefix}loss": loss, f"{prefix}n": n})
        result.update(_more_figures(loaded.trainer, prefix, dense, data.classes))
    return result


def predict(spec: str | os.PathLike[str] | None, run_dir: str | Path, images: Sequence[np.ndarray],
            checkpoint: str = "best", white: float | None = None) -> np.ndarray:
    """Class probabilities (N, K) for image arrays (H, W, C) in the units the run's dataset stores, or with
    white level `white` (a float array within 0..1 is read as 0..1 when the run's white level is above 1)."""
    return load_run(spec, run_dir, checkpoint).probabilities(images, white)
