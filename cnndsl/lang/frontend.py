"""The Python API of the front end: `parse` and `check`, chaining the stages in one place.

    source --parse--> Program --expand--> ir.Graph --infer_shapes--> shapes --Report.build--> Report
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

from cnndsl.lang import nodes
from cnndsl.lang.errors import CnnError, Diagnostic, UsageError
from cnndsl.lang.expand import expand
from cnndsl.lang.limits import INT64_MAX
from cnndsl.lang.parser import load_source
from cnndsl.lang.parser import parse as parse_source
from cnndsl.lang.report import Report
from cnndsl.lang.settings import spec_settings
from cnndsl.lang.shapes import infer_shapes
from cnndsl.lang.source import Source

SetValue = str | int | float | bool
_SET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\??")


def parse(spec: str | os.PathLike[str]) -> nodes.Program:
    """Parse a spec (a path or its text) into its AST."""
    return parse_source(load_source(spec))


def parse_overrides(values: Mapping[str, SetValue] | None) -> dict[str, tuple[nodes.Expr, Source]]:
    """`--set` bindings: each value is parsed as an expression of the language (`3`, `conv(64, 3x3)`)."""
    out: dict[str, tuple[nodes.Expr, Source]] = {}
    for name, value in (values or {}).items():
        if not _SET_NAME.fullmatch(name):
            raise UsageError(f"`{name}` is not a name that `--set` can bind", "write `--set NAME=VALUE`")
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        source = Source(text, f"--set {name}")
        program = parse_source(source)
        if len(program.statements) != 1 or not isinstance(program.statements[0], nodes.Main):
            raise UsageError(f"the value of `--set {name}` must be one expression, got `{text}`",
                             "e.g. `--set N=3` or `--set CONV=\"conv(64, 3x3)\"`")
        body = program.statements[0].body
        if name.endswith("?") and not (isinstance(body, nodes.Name) and body.id.lower() in ("true", "false")):
            raise UsageError(f"`--set {name}` takes `true` or `false`, got `{text}`",
                             f"write `--set '{name}=true'` to include the optional part or `--set '{name}=false'`")
        out[name] = (body, source)
    return out


def _search_problems(program: nodes.Program, overrides: dict[str, tuple[nodes.Expr, Source]] | None,
                     free_names: tuple[str, ...]) -> list[Diagnostic]:
    """What is wrong with a family's `search` lines (reported by `check` with the family summary)."""
    from cnndsl.lang.space import space_of

    try:
        space_of(program, overrides, free_names)
    except CnnError as err:
        return list(err.diagnostics)
    return []


def _in_file_order(diagnostics: tuple[Diagnostic, ...], extra: list[Diagnostic]) -> tuple[Diagnostic, ...]:
    """`diagnostics` with each of `extra` (all with spans) placed before the first one later in the file,
    so a reader meets the problems top to bottom; the stage's own order is kept otherwise."""
    merged = list(diagnostics)
    for item in extra:
        at = next((i for i, d in enumerate(merged)
                   if d.span is not None and (d.span.line, d.span.col) > (item.span.line, item.span.col)), len(merged))
        merged.insert(at, item)
    return tuple(merged)


def check(spec: str | os.PathLike[str], set: Mapping[str, SetValue] | None = None) -> Report:
    """Parse, expand and check a spec; return its report or raise `CnnError` with every problem.

    `spec` is a path or the spec's text; `set` binds or overrides `let` names: `{"N": 3}`.
    """
    overrides = parse_overrides(set)
    return check_program(parse_source(load_source(spec)), overrides)


def check_program(program: nodes.Program, overrides: dict[str, tuple[nodes.Expr, Source]] | None = None) -> Report:
    """`check` of a parsed program with its bindings as expressions (`parse_overrides`), so that a family's
    members are checked without parsing the spec again."""
    train_settings, problems = spec_settings(program)
    try:
        graph = expand(program, overrides)
    except CnnError as err:
        if err.free_names and any(isinstance(s, nodes.Search) for s in program.statements):
            problems = problems + _search_problems(program, overrides, err.free_names)
        raise CnnError(_in_file_order(err.diagnostics, problems), free_names=err.free_names) from None
    if problems:
        raise CnnError(tuple(problems))
    report = dataclasses.replace(Report.build(graph, infer_shapes(graph)),
                                 train_settings=tuple(train_settings.items()))
    overflow = report.first_overflow()
    if overflow is not None:
        index, what = overflow
        node = graph.nodes[index + 1]
        raise CnnError((Diagnostic(
            "limit", f"the network's {what} do not fit in 64 bits", node.source or graph.source, node.span,
            node.notes(graph.source) + (f"the total passes {INT64_MAX:,} at `{node.op.label()}`",),
            help="use fewer or smaller layers"),))
    return report
