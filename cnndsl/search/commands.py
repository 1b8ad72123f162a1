"""The `cnndsl family` and `cnndsl sweep` subcommands: their arguments and what they print."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from cnndsl.errors import CnnError, Diagnostic
from cnndsl.search.family import Budget, FamilyMember, family, load_space, network_key
from cnndsl.search.space import Space


def _amount(text: str) -> int:
    """`250000`, `250k`, `1.5M`, `2G` as an integer."""
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count like 250000, 250k or 1.5M, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return int(value)


def human(value: float, unit: str = "") -> str:
    """1234567 -> `1.23M`: three significant digits."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}{unit}"
    return f"{value:.0f}{unit}"


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """--max-params / --max-macs, shared by family and sweep."""
    parser.add_argument("--max-params", type=_amount, metavar="P", help="skip members with more parameters (e.g. 100k)")
    parser.add_argument("--max-macs", type=_amount, metavar="M", help="skip members with more multiply-adds (e.g. 5M)")


def add_family_command(commands: Any, spec: argparse.ArgumentParser) -> None:
    """`cnndsl family FILE`."""
    fam = commands.add_parser(
        "family", parents=[spec], help="list the members of a family with their parameters, MACs and memory",
        description="Check every member of a family (the networks its `search` lines describe) without running "
                    "JAX: parameters, multiply-adds and activation memory of each, and why the invalid ones are "
                    "invalid. A large family is sampled (--limit).")
    fam.add_argument("--json", action="store_true", help="print one JSON object")
    add_budget_arguments(fam)
    fam.add_argument("--limit", type=int, default=1000, metavar="N",
                     help="list all members when there are at most N, else a random sample of N (default 1000)")
    fam.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")


def run_family(args: argparse.Namespace) -> int:
    """`cnndsl family`: exit 0 when some member is valid, 1 when none is (with reasons for a sample)."""
    space = load_space(Path(args.file), dict(args.bindings))
    budget = Budget(args.max_params, args.max_macs)
    started = time.perf_counter()
    members = list(family(space, budget=budget, limit=args.limit, seed=args.seed))
    seconds = time.perf_counter() - started
    count = space.count()
    if args.json:
        print(json.dumps(family_json(space, members, count), indent=1))
    else:
        sys.stdout.write(family_table(space, members, count, seconds))
    if not any(m.valid for m in members):
        raise no_valid_member(space, members)
    return 0


def no_valid_member(space: Space, members: list[FamilyMember]) -> CnnError:
    """The error for a family none of whose (listed) members can be trained, with a few reasons."""
    notes = tuple(f"{space.label(m.bindings)}: {m.reason}" for m in members[:3])
    main = next((s for s in space.program.statements if type(s).__name__ == "Search"), space.program)
    what = "member" if len(members) == 1 else f"{len(members):,} members"
    return CnnError((Diagnostic("search", f"no member of the family can be trained (checked {what})",
                                space.program.source, main.span, notes,
                                help="widen the domains or the budget (--max-params, --max-macs)"),))


def family_json(space: Space, members: list[FamilyMember], count: int | None) -> dict[str, Any]:
    """The `family --json` object."""
    return {"family": space.program.name or "network", "count": count, "listed": len(members),
            "sampled": count is not None and len(members) < count,
            "dimensions": [{"name": d.name, "domain": d.describe(), "setting": d.setting, "size": d.size()}
                           for d in space.dimensions],
            "members": [{"index": m.index, "bindings": m.bindings, "status": m.status, "reason": m.reason,
                         **({"params": m.report.params, "macs": m.report.macs,
                             "activation_bytes": m.report.activation_bytes, "network": network_key(m.report)}
                            if m.report else {})} for m in members]}


def family_table(space: Space, members: list[FamilyMember], count: int | None, seconds: float) -> str:
    """The `family` text: what the space is, one row per member, and the tally."""
    name = space.program.name or "network"
    arch = space.architecture
    sizes = " x ".join(str(d.size() or "∞") for d in arch)
    lines = [f"{name}: {count:,} networks ({sizes})" if count is not None else
             f"{name}: infinitely many networks ({sizes}); listed with each number range at its low end"]
    pad = max((len(d.name) for d in space.dimensions), default=0)
    for d in space.dimensions:
        lines.append(f"  {d.name:<{pad}} in {d.describe()}" + ("   (training setting, sampled by `cnndsl sweep`)"
                                                             if d.setting else ""))
    if len(members) < space.grid_count():
        lines.append(f"a random sample of {len(members):,} of them (--limit, --seed):")
    seen: dict[str, int] = {}
    header = ["#"] + [d.name for d in arch] + ["params", "MACs", "memory", "status"]
    rows = []
    for m in members:
        status = m.status if m.valid else f"{m.status}: {m.reason}"
        if m.report is not None:
            key = network_key(m.report)
            if key in seen and m.valid:
                status = f"same network as #{seen[key]}"
            seen.setdefault(key, m.index)
        cells = [str(m.index)] + [_cell(m.bindings.get(d.name)) for d in arch]
        cells += ([human(m.report.params), human(m.report.macs), human(m.report.activation_bytes, "B")]
                  if m.report else ["-", "-", "-"])
        rows.append(cells + [status])
    widths = [max(len(r[k]) for r in rows + [header]) for k in range(len(header) - 1)]
    for row in [header] + rows:
        lines.append("  ".join(c.rjust(w) if k and k >= len(arch) + 1 else c.ljust(w)
                               for k, (c, w) in enumerate(zip(row, widths))) + "  " + row[-1])
    valid = sum(m.valid for m in members)
    invalid = sum(m.status == "invalid" for m in members)
    over = len(members) - valid - invalid
    distinct = len({network_key(m.report) for m in members if m.valid and m.report})
    lines.append(f"{len(members):,} checked in {seconds:.2f} s ({len(members) / max(seconds, 1e-9):,.0f}/s): "
                 f"{valid:,} valid ({distinct:,} different networks), {invalid:,} invalid, {over:,} over budget")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "-" if value is None else str(value)


def _objectives(text: str) -> tuple[str, ...]:
    from cnndsl.search.study import OBJECTIVES

    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in OBJECTIVES]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"objectives are a comma-separated list of distinct names from "
                                         f"{', '.join(OBJECTIVES)}; got {text!r}")
    return names


def add_sweep_command(commands: Any, data: argparse.ArgumentParser) -> None:
    """`cnndsl sweep FILE [FILE ...]`."""
    from cnndsl.search.study import SAMPLERS

    sw = commands.add_parser(
        "sweep", parents=[data], help="train members of a family chosen by Optuna; the Pareto front and best.cnn",
        description="Search a family (a spec with `search` lines) on Optuna: each trial's member is checked first "
                    "(invalid and over-budget members cost milliseconds), then trained in this process as an "
                    "ordinary run directory and scored on its validation split. Writes trials.csv, pareto.png, "
                    "edf.png and best.cnn. The same command again resumes the study; with a shared --storage, "
                    "the same command on many machines shares it. Several specs: one sweep each, and their "
                    "error EDFs on one plot (OUT/edf.png).")
    sw.add_argument("files", nargs="+", metavar="FILE", help="the family spec(s)")
    sw.add_argument("--set", dest="bindings", metavar="NAME=VALUE", type=_set_pair, action="append", default=[],
                    help="fix a free name instead of searching it (repeatable)")
    sw.add_argument("--trials", type=int, default=20, metavar="T", help="members to train (default 20)")
    sw.add_argument("--epochs", type=int, metavar="E", help="epochs per member (default: the spec's, else 10)")
    sw.add_argument("--batch-size", type=int, help="batch size (default: the spec's, else 64)")
    sw.add_argument("--lr", type=float, help="learning rate, unless the family searches it")
    sw.add_argument("--val-fraction", type=float, metavar="F",
                    help="share of the training data held out to score members (default 0.1)")
    sw.add_argument("--objectives", type=_objectives, default=("accuracy", "macs"), metavar="LIST",
                    help="what to optimize, comma-separated: accuracy (validation, up), loss (validation, down), "
                         "macs, params, memory (down); default accuracy,macs")
    add_budget_arguments(sw)
    sw.add_argument("--sampler", choices=SAMPLERS, default=None,
                    help="Optuna sampler (default tpe; random when comparing several families, for unbiased EDFs)")
    sw.add_argument("--storage", metavar="URL", help="Optuna storage shared by workers: sqlite:///PATH, "
                    "postgresql://USER:PASS@HOST/DB, or a journal file (default OUT/study.journal)")
    sw.add_argument("--study", metavar="NAME", help="the study's name in the storage (default: the network's name)")
    sw.add_argument("--out", metavar="DIR", help="the sweep folder (default sweeps/<network name>)")
    sw.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    sw.add_argument("--verbose", action="store_true", help="show each member's epochs")


def run_sweep(args: argparse.Namespace) -> int:
    """`cnndsl sweep`."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        from cnndsl.errors import UsageError

        raise UsageError("cnndsl sweep needs Optuna, which is not installed",
                         "pip install 'cnndsl[search]'") from None
    from cnndsl.search.plots import plot_edf
    from cnndsl.search.sweep import print_progress, sweep

    if args.trials < 1:
        from cnndsl.errors import UsageError

        raise UsageError(f"--trials must be at least 1, got {args.trials}")
    several = len(args.files) > 1
    sampler = args.sampler or ("random" if several else "tpe")
    root = Path(args.out) if args.out else None
    errors: dict[str, list[float]] = {}
    for file in args.files:  # every spec checked before any trains
        load_space(Path(file), dict(args.bindings))
    for file in args.files:
        name = Path(file).stem
        out = (root / name if several else root) if root else None
        study = f"{args.study}-{name}" if several and args.study else args.study
        result = sweep(Path(file), data=args.data, data_dir=args.data_dir, trials=args.trials,
                       objectives=args.objectives, budget=Budget(args.max_params, args.max_macs), sampler=sampler,
                       storage=args.storage, study=study, out=out, seed=args.seed, set=dict(args.bindings),
                       quiet=not args.verbose, report=print_progress, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, val_fraction=args.val_fraction)
        sys.stdout.write(sweep_table(result))
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
    header = ["trial"] + names + ["val acc", "test acc", "params", "MACs", "seconds", ""]
    front = {t.number for t in result.front}
    rows = [[str(t.number)] + [_cell(_short(t.bindings.get(n))) for n in names] +
            [f"{t.accuracy:.2%}", f"{t.test_accuracy:.2%}" if t.test_accuracy is not None else "-",
             human(t.params or 0), human(t.macs or 0), f"{t.seconds or 0:.1f}",
             "front" + (" (best.cnn)" if result.best is not None and t.number == result.best.number else "")
             if t.number in front else ""] for t in trained]
    if rows:
        widths = [max(len(r[k]) for r in rows + [header]) for k in range(len(header))]
        for row in [header] + rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if result.best is not None:
        lines.append(f"best.cnn: trial {result.best.number}, validation accuracy {result.best.accuracy:.2%}, "
                     f"{human(result.best.macs or 0)} MACs; "
                     f"`{shlex.join(['cnndsl', 'train', str(result.directory / 'best.cnn'), *result.train_flags])}` "
                     "trains it")
    lines.append(f"wrote {result.directory}/: trials.csv, pareto.png, edf.png, best.cnn, trials/")
    return "\n".join(lines) + "\n"


def _short(value: Any) -> Any:
    return f"{value:.3g}" if isinstance(value, float) else value


def _set_pair(text: str) -> tuple[str, str]:
    from cnndsl.cli import _set_pair as pair

    return pair(text)
