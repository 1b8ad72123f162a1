"""A run's settings (`Settings`) and the spec's `train` lines that set them; importable without JAX (the
command line builds its parser from it). `TrainingError` is the error a run that cannot start or stops reports."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup-cosine", "one-cycle", "step")
AUGMENTATIONS = ("crop", "flip", "resized-crop")
STREAM_MODES = ("auto", "stream", "memory")  # how folder:/records: images are read (cnndsl.data.pipeline)
DTYPE_NAMES = ("float32", "bfloat16")


class TrainingError(Exception):
    """A run that cannot start or had to stop (bad settings, a NaN loss); the message says what to do."""


@dataclass(frozen=True)
class Settings:
    """Everything that decides a run's result. Defaults < the spec's `train` lines < flags."""

    data: str = "digits"
    data_dir: str | None = None
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "constant"
    warmup_epochs: float = 1.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    clip: float = 0.0  # global gradient-norm clipping; 0 = off
    augment: tuple[str, ...] = ()
    dtype: str = "float32"
    scan: bool | None = None  # runs of identical repeated blocks with one jax.lax.scan; None: deep networks (cnndsl.compile)
    seed: int = 0
    resize: bool = False
    val_fraction: float = 0.1  # of the training data, held out to choose the best checkpoint (0: none)
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints; 0 = at epoch ends only
    keep: int = 3  # how many of the newest checkpoints to keep
    stream: str = "auto"  # folder/records sources: "stream" (read at every use), "memory" (decode once), "auto"
    workers: int = -1  # Grain worker processes decoding images (-1: one per core but one)
    max_bad_images: int = 10  # unreadable images skipped (and counted) before the run stops
    init: str | None = None  # fine-tuning: start from this run directory's or weights file's arrays
    freeze: tuple[str, ...] = ()  # fine-tuning: group paths whose parameters stay as they start
    head_weights: tuple[str, ...] = ()  # `NAME=WEIGHT` for each head whose loss weight is not 1 (`aux1 weight = 0.3`)

    @property
    def weighted_heads(self) -> dict[str, float]:
        """The heads given a loss weight in `train` (`aux1 weight = 0.3`), by name (any other trained head's is 1)."""
        return {name: float(weight) for name, _, weight in (item.partition("=") for item in self.head_weights)}

    def validate(self) -> Settings:
        """The settings if they make sense, else a TrainingError naming the bad one."""
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; choose {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; choose {', '.join(SCHEDULES)}"),
            (self.lr > 0 and math.isfinite(self.lr), f"the learning rate must be positive, got {self.lr}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (self.clip >= 0, f"clip must be >= 0, got {self.clip}"),
            (self.momentum >= 0, f"momentum must be >= 0, got {self.momentum}"),
            (self.warmup_epochs >= 0, f"warmup epochs must be >= 0, got {self.warmup_epochs}"),
            (all(math.isfinite(v) for v in (self.momentum, self.warmup_epochs, self.weight_decay,
                                             self.label_smoothing, self.clip)), "settings must be finite numbers"),
            (all(a in AUGMENTATIONS for a in self.augment),
             f"unknown augmentation in {','.join(self.augment)}; choose from {', '.join(AUGMENTATIONS)}"),
            (self.dtype in DTYPE_NAMES, f"unknown dtype {self.dtype!r}; choose {', '.join(DTYPE_NAMES)}"),
            (self.keep >= 1, f"keep must be at least 1, got {self.keep}"),
            (0 <= self.seed < 2**32, f"the seed must be from 0 to 2**32 - 1 (numpy's and JAX's range), got {self.seed}"),
            (0 <= self.val_fraction <= 0.5, f"the validation fraction must be from 0 to 0.5, got {self.val_fraction}"),
            (self.checkpoint_every >= 0, "checkpoint-every must be >= 0"),
            (self.stream in STREAM_MODES, f"unknown stream mode {self.stream!r}; choose {', '.join(STREAM_MODES)}"),
            (self.workers >= -1, f"workers must be >= 0 (or -1: one per core), got {self.workers}"),
            (self.max_bad_images >= 0, f"max-bad-images must be >= 0, got {self.max_bad_images}"),
            ("resized-crop" not in self.augment or self.data.split(":")[0] in ("folder", "records", "masks"),
             "the resized-crop augmentation crops image files: train on folder:PATH, records:DIR or masks:PATH data"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainingError(message)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_run(cls, saved: dict[str, Any]) -> Settings:
        """The settings in a run's settings.json, which also records what the run derived (normalization)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls.from_dict({k: v for k, v in saved.items() if k in names})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        """The inverse of `to_dict`; unknown keys and values of the wrong type are an error."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(defaults))
        if unknown:
            raise TrainingError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**{k: _typed(k, v, defaults[k]) for k, v in data.items()})


def _typed(name: str, value: Any, default: Any) -> Any:
    """`value` as the type of the setting's default, or a TrainingError saying what was expected."""
    if isinstance(default, bool) or name in _BOOL_FIELDS:  # scan's default is None: chosen by the network
        ok, what = isinstance(value, bool) or (default is None and value is None), "true or false"
    elif isinstance(default, int):
        ok, what = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif isinstance(default, float):
        ok, what = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), "a number"
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        ok, what = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value), "a list of names"
        value = tuple(value) if ok else value
    else:  # a name, or None
        ok, what = isinstance(value, str) or (default is None and value is None), "a name"
    if not ok:
        raise TrainingError(f"setting {name} must be {what}, got {value!r}")
    return value


# ---- the spec's `train` section -----------------------------------------------------------------------------

DATA_NAMES = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "shapes", "synthetic")
#: The settings a spec's `train` lines may set (the others are the command line's: where data is, fine-tuning).
SPEC_SETTINGS = tuple(f.name for f in dataclasses.fields(Settings)
                      if f.name not in ("data_dir", "stream", "workers", "init", "freeze", "head_weights"))
_INT_FIELDS = {"epochs": 1, "batch_size": 1, "seed": 0, "checkpoint_every": 0, "keep": 1, "max_bad_images": 0}
_FLOAT_FIELDS = {"lr", "momentum", "warmup_epochs", "weight_decay", "label_smoothing", "clip", "val_fraction"}
_BOOL_FIELDS = {"nesterov", "resize", "scan"}
_CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "dtype": DTYPE_NAMES, "data": DATA_NAMES}


def spec_settings(program: Any) -> tuple[dict[str, Any], list[Any]]:
    """The settings of a program's `train` lines as {field: value}, and a diagnostic for each bad one.

    Values are literals: numbers, `true`/`false`, and names for choices (`optimizer = sgd`,
    `schedule = warmup_cosine` or `augment = (crop, flip)`; `_` stands for `-`).
    """
    from cnndsl.lang import nodes as n
    from cnndsl.lang.errors import Diagnostic, closest

    source = program.source
    found: dict[str, Any] = {}
    problems: list[Diagnostic] = []
    allowed = list(SPEC_SETTINGS)

    def bad(node: Any, message: str, hint: str, fix: tuple[str, str] | None = None) -> None:
        problems.append(Diagnostic("train", message, source, node.span, help=hint, fix=fix))

    def symbol(expr: Any) -> str | None:
        return expr.id.lower().replace("_", "-") if isinstance(expr, n.Name) else None

    heads = [s.name for s in program.statements if isinstance(s, n.Head)]
    weights: dict[str, float] = {}
    for stmt in program.statements:
        if not isinstance(stmt, n.TrainSection):
            continue
        for binding in stmt.bindings:
            key, expr = binding.name.lower(), binding.value
            head = getattr(binding, "head", None)
            if head is not None:
                if head not in heads:
                    guess = closest(head, heads)
                    bad(binding, f"`{head}` is not a head of this network",
                        f"did you mean `{guess}`?" if guess else
                        (f"its heads: {', '.join(heads)}" if heads else "declare one: `head NAME = @map -> ...`"),
                        (head, guess) if guess else None)
                elif key != "weight":
                    bad(binding, f"a head has no setting `{binding.name}`", f"write `{head} weight = 0.3`")
                elif head in weights:
                    bad(binding, f"`{head} weight` is set twice", "keep one")
                elif isinstance(expr, (n.Int, n.Float)) and math.isfinite(expr.value):
                    weights[head] = float(expr.value)
                else:
                    bad(expr, f"`{head} weight` takes a number >= 0", f"e.g. `{head} weight = 0.3`")
                continue
            if key not in allowed:
                guess = closest(key, allowed)
                bad(binding, f"`{binding.name}` is not a training setting",
                    (f"did you mean `{guess}`? " if guess else "") + f"settings: {', '.join(allowed)}",
                    (binding.name, guess) if guess else None)
                continue
            if key in found:
                bad(binding, f"`{key}` is set twice", "keep one")
                continue
            value: Any = None
            if key in _INT_FIELDS:
                if isinstance(expr, n.Int) and (_INT_FIELDS[key] is None or expr.value >= _INT_FIELDS[key]):
                    value = expr.value
                else:
                    low = _INT_FIELDS[key]
                    bad(expr, f"`{key}` takes a whole number" + (f" of at least {low}" if low is not None else ""),
                        f"e.g. `{key} = {max(low or 0, 1) * 10 if key == 'epochs' else max(low or 0, 1)}`")
            elif key in _FLOAT_FIELDS:
                if isinstance(expr, (n.Int, n.Float)) and expr.value >= 0:
                    value = float(expr.value)
                else:
                    bad(expr, f"`{key}` takes a number >= 0", f"e.g. `{key} = 0.001`")
            elif key in _BOOL_FIELDS:
                if symbol(expr) in ("true", "false"):
                    value = symbol(expr) == "true"
                else:
                    bad(expr, f"`{key}` takes true or false", f"`{key} = true`")
            elif key == "augment":
                items = expr.items if isinstance(expr, n.Tuple) else (expr,)
                names = [symbol(item) for item in items]
                if names == ["none"]:
                    value = ()
                elif all(name in AUGMENTATIONS for name in names):
                    value = tuple(names)
                else:
                    bad(expr, f"`augment` takes one or several of {', '.join(a.replace('-', '_') for a in AUGMENTATIONS)}",
                        "e.g. `augment = (crop, flip)`; photos: `augment = (resized_crop, flip)`")
            else:
                choices = _CHOICES[key]
                name = symbol(expr)
                if name in choices:
                    value = name
                else:
                    guess = closest(name or "", list(choices))
                    bad(expr, f"`{key}` takes one of {', '.join(c.replace('-', '_') for c in choices)}",
                        f"did you mean `{guess.replace('-', '_')}`?" if guess else
                        ("other sources (npz:PATH, folder:PATH) are given with --data" if key == "data" else
                         f"e.g. `{key} = {choices[0].replace('-', '_')}`"),
                        (name, guess.replace("-", "_")) if guess and name else None)
            if value is not None:
                found[key] = value
    if weights:
        found["head_weights"] = tuple(f"{head}={weight!r}" for head, weight in weights.items())
    return found, problems
