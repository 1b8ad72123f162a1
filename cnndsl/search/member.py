"""A member of a family written out as a standalone spec: the family's text with its `search` lines replaced
by the member's bindings (`let N = 2, ...`) and one `train` line holding every training setting the member
was trained with. `cnndsl train member.cnn` trains exactly that member."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cnndsl import nodes as n
from cnndsl.search.space import Member, Space


def setting_text(key: str, value: Any) -> str:
    """A training setting as a `train` line writes it: `lr = 0.003`, `optimizer = sgd`, `augment = (crop, flip)`."""
    if isinstance(value, bool):
        return f"{key} = {'true' if value else 'false'}"
    if isinstance(value, (tuple, list)):
        return f"{key} = " + (f"({', '.join(value)},)" if len(value) == 1 else f"({', '.join(value)})" if value
                              else "none")
    if isinstance(value, float):
        return f"{key} = {value!r}"
    if isinstance(value, str):
        return f"{key} = {value.replace('-', '_')}"
    return f"{key} = {value}"


def member_spec(space: Space, member: Member, settings: Mapping[str, Any], note: str = "") -> str:
    """The standalone spec of `member`; `settings` are the training settings to write in its `train` line
    (those that differ from the defaults are enough, but any may be given)."""
    program = space.program
    lines = program.source.text.split("\n")
    drop: set[int] = set()
    first = None
    for stmt in program.statements:
        if isinstance(stmt, (n.Search, n.TrainSection)):
            first = stmt.span.line if first is None else min(first, stmt.span.line)
            drop.update(range(stmt.span.line, stmt.span.end_line + 1))
    bindings = [f"{name} = {text}" for name, text in _fixed_texts(space).items()]
    bindings += [f"{d.name} = {_value_text(member[d.name])}" for d in space.architecture if d.name in member]
    added = ([f"# {note}"] if note else []) + ([f"let {', '.join(bindings)}"] if bindings else [])
    if settings:
        added.append("train " + ", ".join(setting_text(k, v) for k, v in settings.items()))
    out: list[str] = []
    for number, line in enumerate(lines, start=1):
        if number == first:
            out.extend(added)
        if number not in drop:
            out.append(line)
    if first is None:
        out = added + out
    return "\n".join(out).rstrip("\n") + "\n"


def _fixed_texts(space: Space) -> dict[str, str]:
    return {name: source.text_of(expr.span) for name, (expr, source) in space.fixed.items()}


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)
