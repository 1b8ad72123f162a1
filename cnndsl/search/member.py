"""A member of a family written out as a standalone spec: the family's text with its `search` lines replaced
by the member's bindings (`let N = 2, ...`) and one `train` line holding every training setting the member
was trained with. `cnndsl train member.cnn` trains exactly that member."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cnndsl.lang import nodes as n
from cnndsl.lang.imports import standalone_text
from cnndsl.lang.space import Member, Space


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
    fixed = _fixed_texts(space)
    # a --set of a name the file binds with `let` replaces the value there; the others join the new `let`
    replaced = {b.key: b for s in program.statements if isinstance(s, n.Let) for b in s.bindings if b.key in fixed}
    lines = _replace_spans(program.source.text, [(b.value.span, fixed[key]) for key, b in replaced.items()]).split("\n")
    drop: set[int] = set()
    first = None
    for stmt in program.statements:
        if isinstance(stmt, (n.Search, n.TrainSection)):
            first = stmt.span.line if first is None else min(first, stmt.span.line)
            drop.update(range(stmt.span.line, stmt.span.end_line + 1))
    bindings = [f"{name} = {text}" for name, text in fixed.items() if name not in replaced]
    bindings += [f"{d.name} = {_value_text(member[d.name])}" for d in space.architecture if d.name in member]
    added = [f"let {', '.join(bindings)}"] if bindings else []
    if settings:
        added.append("train " + ", ".join(setting_text(k, v) for k, v in settings.items()))
    # The family's opening comments describe the family, not this member: the note replaces them.
    start = min((s.span.line for s in program.statements), default=len(lines) + 1)
    opening = {k for k in range(1, start) if lines[k - 1].strip().startswith("#") or not lines[k - 1].strip()}
    out: list[str] = [f"# {line}" for line in note.splitlines()]
    for number, line in enumerate(lines, start=1):
        if number == first:
            out.extend(added)
        if number not in drop and number not in opening:
            out.append(line)
    if first is None:
        out = out[: len(note.splitlines())] + added + out[len(note.splitlines()):]
    # its imports written in: the member's file is read back from the sweep's folder, not the family's
    return standalone_text(program, "\n".join(out).rstrip("\n") + "\n").rstrip("\n") + "\n"


def _replace_spans(text: str, replacements: list[tuple[Any, str]]) -> str:
    """`text` with each span's text replaced (spans do not overlap; 1-based lines and columns)."""
    starts = [0]
    for line in text.split("\n"):
        starts.append(starts[-1] + len(line) + 1)
    for span, new in sorted(replacements, key=lambda r: (r[0].line, r[0].col), reverse=True):
        begin = starts[span.line - 1] + span.col - 1
        end = starts[span.end_line - 1] + span.end_col - 1
        text = text[:begin] + new + text[end:]
    return text


def _fixed_texts(space: Space) -> dict[str, str]:
    return {name: source.text_of(expr.span) for name, (expr, source) in space.fixed.items()}


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)
