"""A family's members, checked statically: `cnndsl family FILE` and `cnndsl.family(spec)`.

Each member is expanded and shape-checked exactly as `cnndsl check --set ...` would check it (the spec is
parsed once), so its parameters, multiply-adds and activation memory are known, or the first reason it is
invalid, without running JAX.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from cnndsl.lang import nodes as n
from cnndsl.lang.errors import CnnError, Diagnostic
from cnndsl.lang.frontend import check_program, load_source, parse_overrides
from cnndsl.lang.parser import parse as parse_source
from cnndsl.lang.report import Report
from cnndsl.lang.space import Member, Space, space_of

DEFAULT_LIMIT = 1000  # members listed before `family` samples instead


@dataclass(frozen=True)
class Budget:
    """Upper bounds a member must stay within to be trained (None: no bound)."""

    max_params: int | None = None
    max_macs: int | None = None

    def excess(self, report: Report) -> str | None:
        """Why a network is over budget, or None."""
        if self.max_params is not None and report.params > self.max_params:
            return f"{report.params:,} parameters > --max-params {self.max_params:,}"
        if self.max_macs is not None and report.macs > self.max_macs:
            return f"{report.macs:,} MACs > --max-macs {self.max_macs:,}"
        return None


@dataclass(frozen=True)
class FamilyMember:
    """One member: its bindings, and its report or why it cannot be trained.

    `status` is "ok", "invalid" (the spec rejects it: `reason` is the first diagnostic) or "over budget".
    """

    index: int
    bindings: Member
    report: Report | None
    status: str
    reason: str | None = None
    error: CnnError | None = None

    @property
    def valid(self) -> bool:
        """Whether the member can be trained."""
        return self.status == "ok"

    def __repr__(self) -> str:
        bound = ", ".join(f"{k}={v}" for k, v in self.bindings.items())
        what = (f"{self.report.params:,} params, {self.report.macs:,} MACs" if self.report is not None and self.valid
                else f"{self.status}: {self.reason}")
        return f"FamilyMember({self.index}: {bound}; {what})"[:300]


def network_key(report: Report) -> str:
    """A fingerprint of the network itself (its operations and wiring, not where the spec wrote them): two
    members that differ only in names the network does not use (`POOL` when `POOL?` is false) share it."""
    import hashlib

    text = repr(tuple((node.op, node.inputs) for node in report.graph.nodes))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def reason_of(err: CnnError) -> str:
    """The first diagnostic of an error in one line: `message (line L:C)`."""
    first = err.diagnostics[0]
    where = f" (line {first.span.line}:{first.span.col})" if first.span is not None else ""
    return f"{first.message}{where}"


def check_member(space: Space, bindings: Member, budget: Budget = Budget(), index: int = -1) -> FamilyMember:
    """Check one member of a family (milliseconds: no JAX)."""
    try:
        report = check_program(space.program, space.overrides(bindings))
    except CnnError as err:
        return FamilyMember(index, bindings, None, "invalid", reason_of(err), err)
    excess = budget.excess(report)
    return FamilyMember(index, bindings, report, "over budget" if excess else "ok", excess)


def load_space(spec: str | os.PathLike[str], set: Mapping[str, object] | None = None) -> Space:
    """The design space of a spec (a path or its text), with `set` fixing some of its free names."""
    program = parse_source(load_source(spec))
    if not any(isinstance(s, n.Search) for s in program.statements):
        from cnndsl.lang.errors import Diagnostic

        main = next((s for s in program.statements if isinstance(s, n.Main)), program)
        raise CnnError((Diagnostic("search", "the spec declares no design space", program.source, main.span,
                                   help="give its free names domains, e.g. `search N in 1..3, POOL?`"),))
    return space_of(program, parse_overrides(set))  # type: ignore[arg-type]


def family(spec: str | os.PathLike[str] | Space, *, set: Mapping[str, object] | None = None,
           budget: Budget = Budget(), limit: int | None = DEFAULT_LIMIT, seed: int = 0) -> Iterator[FamilyMember]:
    """The members of a family, each checked: all of them, or a random sample of `limit` (seeded) when
    there are more (`Space.count` says how many there are)."""
    space = spec if isinstance(spec, Space) else load_space(spec, set)
    for index in sample_indices(space, limit, seed):
        yield check_member(space, space.network_at(index), budget, index)


def sample_indices(space: Space, limit: int | None, seed: int) -> list[int]:
    """Which members `family` lists: every index, or `limit` of them drawn without replacement, in order."""
    count = space.grid_count()
    if limit is None or count <= limit:
        return list(range(count))
    return sorted(random.Random(seed).sample(range(count), limit))


def no_valid_member(space: Space, members: list[FamilyMember]) -> CnnError:
    """The error for a family none of whose (listed) members can be trained, with a few reasons."""
    notes = tuple(f"{space.label(m.bindings)}: {m.reason}" for m in members[:3])
    main = next((s for s in space.program.statements if type(s).__name__ == "Search"), space.program)
    what = "member" if len(members) == 1 else f"{len(members):,} members"
    return CnnError((Diagnostic("search", f"no member of the family can be trained (checked {what})",
                                space.program.source, main.span, notes,
                                help="widen the domains or the budget (--max-params, --max-macs)"),))
