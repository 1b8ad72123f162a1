"""`cnndsl sweep FILE...`: train members of a family chosen by Optuna; the Pareto front and best.cnn."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from cnndsl.cli.arguments import add_budget_arguments, check_source, seed, set_pair
from cnndsl.cli.printing import cell
from cnndsl.search.family import Budget, load_space
from cnndsl.search.results import human, resolution
from cnndsl.search.study import latency_batch


def _objectives(text: str) -> tuple[str, ...]:
    from cnndsl.search.study import OBJECTIVES, direction

    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if direction(n) is None]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"objectives are a comma-separated list of distinct names from "
                                         f"{', '.join(OBJECTIVES)}, latency@B (a batch of B); got {text!r}")
    return names


def add(commands: Any, spec: argparse.ArgumentParser, data: argparse.ArgumentParser) -> None:
    """`cnndsl sweep FILE [FILE ...]`."""
    from cnndsl.search.pruning import DEFAULT_PRUNER, PRUNERS
    from cnndsl.search.study import SAMPLERS

    sw = commands.add_parser(
        "sweep", parents=[data], help="train members of a family chosen by Optuna; the Pareto front and best.cnn",
        description="Search a family (a spec with `search` lines) on Optuna: each trial's member is checked first "
                    "(invalid and over-budget members cost milliseconds), then trained in this process as an "
                    "ordinary run directory and scored on its validation split; hopeless members are pruned "
                    "after an epoch. Writes trials.csv, pareto.png, edf.png, history.png, importance.png and "
                    "best.cnn. The same command again resumes the study (a killed trial from its checkpoint); with "
                    "a shared --storage, the same command on many machines shares it. Several specs: one sweep "
                    "each, and their error EDFs on one plot (OUT/edf.png).")
    sw.add_argument("files", nargs="+", metavar="FILE", help="the family spec(s)")
    sw.add_argument("--set", dest="bindings", metavar="NAME=VALUE", type=set_pair, action="append", default=[],
                    help="fix a free name instead of searching it (repeatable)")
    sw.add_argument("--trials", type=int, default=20, metavar="T", help="members to train (default 20)")
    sw.add_argument("--epochs", type=int, metavar="E", help="epochs per member (default: the spec's, else 10)")
    sw.add_argument("--batch-size", type=int, help="batch size (default: the spec's, else 64)")
    sw.add_argument("--lr", type=float, help="learning rate, unless the family searches it")
    sw.add_argument("--val-fraction", type=float, metavar="F",
                    help="share of the training data held out to score members (default 0.1)")
    sw.add_argument("--objectives", type=_objectives, default=("accuracy", "macs"), metavar="LIST",
                    help="what to optimize, comma-separated: accuracy (validation, up), loss (validation, down), "
                         "macs, params, memory (down), latency (ms per image, measured here), latency@B (ms per "
                         "batch of B), throughput (training images/s, up); default accuracy,macs")
    add_budget_arguments(sw)
    sw.add_argument("--sampler", choices=SAMPLERS, default=None,
                    help="Optuna sampler (default tpe; random when comparing several families, for unbiased EDFs)")
    sw.add_argument("--repeats", type=int, default=1, metavar="R",
                    help="train each member with R seeds (the spec's seed, +1, ...); its accuracy is their mean, "
                         "shown with their spread (default 1)")
    sw.add_argument("--pruner", choices=PRUNERS, default=DEFAULT_PRUNER,
                    help="stop hopeless members after an epoch with Optuna's pruner: median (the default: below the "
                         "median of finished members at that epoch, after 5 have finished), hyperband, or none")
    sw.add_argument("--storage", metavar="URL", help="Optuna storage shared by workers: sqlite:///PATH, "
                    "postgresql://USER:PASS@HOST/DB, or a journal file (default OUT/study.journal)")
    sw.add_argument("--study", metavar="NAME", help="the study's name in the storage (default: the network's name)")
    sw.add_argument("--out", metavar="DIR", help="the sweep folder (default sweeps/<network name>)")
    sw.add_argument("--seed", type=seed, default=0, help="the sampler's seed (default 0)")
    sw.add_argument("--verbose", action="store_true", help="show each member's epochs")


def run(args: argparse.Namespace) -> int:
    """`cnndsl sweep`."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        from cnndsl.lang.errors import UsageError

        raise UsageError("cnndsl sweep needs Optuna, which is not installed",
                         "pip install 'cnndsl[search]'") from None
    from cnndsl.search.plots import plot_edf
    from cnndsl.search.sweep import print_progress, sweep, trained_experiments

    if args.trials < 1:
        from cnndsl.lang.errors import UsageError

        raise UsageError(f"--trials must be at least 1, got {args.trials}")
    check_source(args.data)  # before any member is checked or trained
    several = len(args.files) > 1
    sampler = args.sampler or ("random" if several else "tpe")
    root = Path(args.out) if args.out else None
    errors: dict[str, list[float]] = {}
    shared: dict[str, dict[str, Any]] = {}  # what the families swept so far trained: a network both contain trains once
    for file in args.files:  # every spec checked before any trains
        load_space(Path(file), dict(args.bindings))
    for file in args.files:
        name = Path(file).stem
        out = (root / name if several else root) if root else None
        study = f"{args.study}-{name}" if several and args.study else args.study
        result = sweep(Path(file), data=args.data, data_dir=args.data_dir, trials=args.trials,
                       objectives=args.objectives, budget=Budget(args.max_params, args.max_macs), sampler=sampler,
                       storage=args.storage, study=study, out=out, seed=args.seed, set=dict(args.bindings),
                       quiet=not args.verbose, report=print_progress, pruner=args.pruner, shared=shared,
                       repeats=args.repeats, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       val_fraction=args.val_fraction)
        sys.stdout.write(sweep_table(result))
        shared = {**trained_experiments(result.study), **shared}
        errors[result.study.study_name] = [1 - t.accuracy for t in result.trials
                                           if t.status == "trained" and t.accuracy is not None]
    if several:
        folder = root or Path("sweeps")
        folder.mkdir(parents=True, exist_ok=True)
        plot_edf(errors, folder / "edf.png")
        print(f"the families' error EDFs: {folder / 'edf.png'}", file=sys.stderr)
    return 0


def sweep_table(result: Any) -> str:
    """The trials (trained ones in full, the others counted), the front and where the outputs are."""
    lines = [f"{result.study.study_name}: {len(result.trials)} trials"]
    counts: dict[str, int] = {}
    for t in result.trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    lines[0] += " (" + ", ".join(f"{v} {k}" for k, v in counts.items()) + ")"
    trained = [t for t in result.trials if t.status == "trained"]
    names = list(trained[0].bindings) if trained else []
    batches = [str(b) for b in map(latency_batch, result.objectives) if b is not None]
    header = (["trial"] + names + ["val acc", "test acc", "params", "MACs"] + [f"ms@{b}" for b in batches]
              + ["img/s", "seconds", "compiling", ""])
    front = {t.number for t in result.front}
    rows = [[str(t.number)] + [cell(_short(t.bindings.get(n))) for n in names] +
            [f"{t.accuracy:.2%}" + (f" ± {100 * t.accuracy_std:.2f}" if t.accuracy_std is not None else ""),
             f"{t.test_accuracy:.2%}" if t.test_accuracy is not None else "-",
             human(t.params or 0), human(t.macs or 0)] +
            [f"{(t.latency_ms or {}).get(b, float('nan')):.3g}" for b in batches] +
            [human(t.throughput) if t.throughput else "-", f"{t.seconds or 0:.1f}",
             f"{t.compile_seconds:.1f}" if t.compile_seconds is not None else "-",
             "front" + (" (best.cnn)" if result.best is not None and t.number == result.best.number else "")
             if t.number in front else ""] for t in trained]
    if rows:
        widths = [max(len(r[k]) for r in rows + [header]) for k in range(len(header))]
        for row in [header] + rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if trained and result.validation_images:
        best = max(t.accuracy for t in trained)
        error, noise = resolution(result.validation_images, best)
        lines.append(f"the validation split has {result.validation_images:,} images: near {best:.1%} one member's "
                     f"accuracy has a standard error of {100 * error:.1f} points, and two members {100 * noise:.1f} "
                     "points apart or less are not told apart (95%)"
                     + ("; --repeats R shows the seeds' spread too" if all(t.accuracy_std is None for t in trained)
                        else ""))
    others = [t for t in result.trials if t.status != "trained"]
    if others:  # what happened to every other trial number
        lines.append("the other trials:")
        lines += [f"  trial {t.number}: {t.status}" + (f": {_clip(t.reason)}" if t.reason else "") for t in others]
    if result.best is not None:
        lines.append(f"best.cnn: trial {result.best.number}, validation accuracy {result.best.accuracy:.2%}, "
                     f"{human(result.best.macs or 0)} MACs; "
                     f"`{shlex.join(['cnndsl', 'train', str(result.directory / 'best.cnn'), *result.train_flags])}` "
                     "trains it")
    pictures = [name for name in ("pareto.png", "edf.png", "history.png", "importance.png")
                if (result.directory / name).is_file()]
    lines.append(f"wrote {result.directory}/: trials.csv, {', '.join(pictures)}, best.cnn, sweep.json, trials/")
    return "\n".join(lines) + "\n"


def _clip(text: str, width: int = 110) -> str:
    """One line of at most `width` characters (trials.csv has the whole reason)."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 1] + "…"


def _short(value: Any) -> Any:
    return f"{value:.3g}" if isinstance(value, float) else value
