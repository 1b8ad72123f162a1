"""`cnndsl family FILE`: every member of a family, checked without JAX."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cnndsl.cli.arguments import add_budget_arguments, at_least, seed
from cnndsl.cli.printing import cell
from cnndsl.lang.space import Space
from cnndsl.search.family import (
    Budget,
    FamilyMember,
    family,
    load_space,
    network_key,
    no_valid_member,
)
from cnndsl.search.results import human


MAX_LISTED = 1_000_000  # members one `family` lists: checking each takes about a millisecond


def add(commands: Any, spec: argparse.ArgumentParser, data: argparse.ArgumentParser) -> None:
    """`cnndsl family FILE`."""
    fam = commands.add_parser(
        "family", parents=[spec], help="list the members of a family with their parameters, MACs and memory",
        description="Check every member of a family (the networks its `search` lines describe) without running "
                    "JAX: parameters, multiply-adds and activation memory of each, and why the invalid ones are "
                    "invalid. A large family is sampled (--limit).")
    fam.add_argument("--json", action="store_true", help="print one JSON object")
    add_budget_arguments(fam)
    fam.add_argument("--limit", type=at_least(1, "--limit", MAX_LISTED), default=1000, metavar="N",
                     help="list all members when there are at most N, else a random sample of N (default 1000, "
                          f"at most {MAX_LISTED:,}: each member is checked and printed)")
    fam.add_argument("--seed", type=seed, default=0, help="the sample's seed (default 0)")


def run(args: argparse.Namespace) -> int:
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
        cells = [str(m.index)] + [cell(m.bindings.get(d.name)) for d in arch]
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
