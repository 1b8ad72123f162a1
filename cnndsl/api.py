"""The Python API of the front end: `parse` and `check`, chaining the stages in one place.

    source --parse--> Program --expand--> ir.Graph --infer_shapes--> shapes --Report.build--> Report
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path

from cnndsl import nodes
from cnndsl.errors import CnnError, Diagnostic, UsageError
from cnndsl.expand import expand
from cnndsl.parser import parse as parse_source
from cnndsl.report import Report
from cnndsl.settings import spec_settings
from cnndsl.shapes import INT64_MAX, infer_shapes
from cnndsl.source import Source, looks_like_path

SetValue = str | int | float | bool
_SET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\??")


def load_source(spec: str | os.PathLike[str]) -> Source:
    """A `Source` from a path or from spec text (see `looks_like_path`)."""
    if not looks_like_path(spec):
        return Source(str(spec))
    path = Path(spec)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a .cnn file") from None
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from None
    try:
        return Source(data.decode("utf-8"), str(spec))
    except UnicodeDecodeError as err:
        raise CnnError((Diagnostic("syntax", f"{path} is not UTF-8 text (byte {err.start})",
                                   help="save the spec as UTF-8"),)) from None


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
        out[name] = (program.statements[0].body, source)
    return out


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
    program = parse_source(load_source(spec))
    train_settings, problems = spec_settings(program)
    try:
        graph = expand(program, overrides)
    except CnnError as err:
        raise CnnError(_in_file_order(err.diagnostics, problems)) from None
    if problems:
        raise CnnError(tuple(problems))
    report = dataclasses.replace(Report.build(graph, infer_shapes(graph)),
                                 train_settings=tuple(train_settings.items()))
    for what, total in (("parameters", report.params), ("MACs", report.macs)):
        if total > INT64_MAX:
            raise CnnError((Diagnostic("limit", f"the network's {what} ({total:.3e}) do not fit in 64 bits",
                                       graph.source, None, help="use fewer or smaller layers"),))
    return report
