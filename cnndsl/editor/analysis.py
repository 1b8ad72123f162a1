"""What an editor knows about one `.cnn` document: `analyze(text, path) -> Analysis`.

One pass of the front end (parse, imports, expansion, shapes: `check_program`), plus an index of the names
the text defines and uses, so every editor feature (`cnndsl.editor.features`) answers from it without
checking again:

    analysis = analyze(text, "/work/net.cnn")
    analysis.diagnostics            # what `check` reports (a family's unbound-but-searched names excepted)
    analysis.report                 # the checked network (for a family: its first member that checks)
    analysis.definition_at(12, 9)   # the block, let, parameter, repetition index or map a name refers to

Positions are the front end's: lines and columns from 1, columns in characters. Nothing here imports JAX.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from typing import Any

from cnndsl.lang import nodes as n
from cnndsl.lang.errors import CnnError, Diagnostic
from cnndsl.lang.frontend import check_program
from cnndsl.lang.imports import resolve_imports
from cnndsl.lang.parser import parse
from cnndsl.lang.report import Report
from cnndsl.lang.source import Source, Span

#: Members of a family tried, in order, for one whose shapes check (hints and hovers show that member).
FAMILY_MEMBERS_TRIED = 8

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


@dataclass(frozen=True)
class Definition:
    """Something a name can refer to: a block, a `let` binding, a block parameter, a repetition index
    (`as i`), a named feature map (`-> @e1`) or a free name of a family (its `search` domain)."""

    name: str
    kind: str  # "block" | "let" | "param" | "index" | "map" | "search"
    source: Source
    span: Span  # the name itself
    whole: Span  # the whole definition (a block's header and body, a binding, a parameter)
    node: Any = field(default=None, compare=False)  # the AST node: n.Block, n.Binding, n.Param, ...

    @property
    def text(self) -> str:
        """The definition as written (at most a few lines)."""
        lines = self.source.text_of(self.whole).splitlines()
        return "\n".join(lines[:6] + (["..."] if len(lines) > 6 else []))


@dataclass(frozen=True)
class Reference:
    """A use of a name (or `@map`) in the document, and what it refers to (None: a builtin or nothing)."""

    name: str
    span: Span
    definition: Definition | None


@dataclass
class Analysis:
    """One document, checked and indexed."""

    source: Source
    program: n.Program | None = None
    report: Report | None = None
    diagnostics: tuple[Diagnostic, ...] = ()
    imported: tuple[n.Program, ...] = ()
    member: dict[str, Any] | None = None  # the family member `report` is of
    domains: dict[str, n.DomainDecl] = field(default_factory=dict)  # a family's searched names
    definitions: list[Definition] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)  # what features compute once per analysis

    @property
    def path(self) -> str:
        """The document's path as its diagnostics and spans name it."""
        return self.source.path

    def definition_at(self, line: int, col: int) -> Definition | None:
        """The definition of the name at a position: of a use, or the one defined there."""
        ref = self.reference_at(line, col)
        if ref is not None:
            return ref.definition
        return next((d for d in self.definitions if d.source is self.source and covers(d.span, line, col)), None)

    def reference_at(self, line: int, col: int) -> Reference | None:
        """The use of a name at a position, if there is one."""
        return next((r for r in self.references if covers(r.span, line, col)), None)

    def references_to(self, definition: Definition) -> list[Reference]:
        """Every use of a definition in this document."""
        return [r for r in self.references if r.definition == definition]

    def own(self, node_source: Source | None) -> bool:
        """Whether a graph node or frame written in `node_source` (None: the spec's own) is in this document."""
        return node_source is None or node_source is self.source or node_source.path == self.source.path


def analyze(text: str, path: str = "<spec>") -> Analysis:
    """Parse, check and index a document; never raises for anything in `text`."""
    source = Source(text, path)
    analysis = Analysis(source)
    try:
        program = parse(source)
    except CnnError as err:
        analysis.diagnostics = err.diagnostics
        analysis.program = _salvaged(source)  # the statements that parse: names to complete and go to
        if analysis.program is not None:
            analysis.imported, _ = resolve_imports(analysis.program)
            _Indexer(analysis).run()
        return analysis
    except RecursionError:
        analysis.diagnostics = _too_deep(source)
        return analysis
    analysis.program = program
    analysis.imported, _ = resolve_imports(program)
    analysis.domains = {d.key: d for s in program.statements if isinstance(s, n.Search) for d in s.items}
    try:
        analysis.report = check_program(program)
    except CnnError as err:
        analysis.diagnostics = _family_member(analysis, err)
    except RecursionError:
        analysis.diagnostics = _too_deep(source)
    _Indexer(analysis).run()
    return analysis


def _too_deep(source: Source) -> tuple[Diagnostic, ...]:
    return (Diagnostic("limit", "the spec is nested too deeply to check", source, source.start()),)


_STATEMENT_START = re.compile(r"^(?![ \t]|->|\||#|$)", re.MULTILINE)


def _salvaged(source: Source) -> n.Program | None:
    """The statements of a spec that does not parse which parse on their own (each piece starting at a line
    that starts a statement, its spans moved to where the piece stands): while a line is being typed, the rest
    of the file still has its blocks and lets. One parse per statement, so linear in the file."""
    text = source.text
    starts = [m.start() for m in _STATEMENT_START.finditer(text)] + [len(text)]
    statements: list[n.Statement] = []
    lines_before, counted = 0, 0
    for begin, end in zip(starts, starts[1:]):
        lines_before, counted = lines_before + text.count("\n", counted, begin), begin
        try:
            piece = parse(Source(text[begin:end], source.path))
            statements.extend(_moved(s, lines_before) for s in piece.statements)
        except (CnnError, RecursionError):
            continue
    if not statements:
        return None
    return n.Program(Span(1, 1, 1, 1), tuple(statements), source)


def _moved(node: Any, lines: int) -> Any:
    """An AST node with every span `lines` lines further down (a piece parsed on its own, put back)."""
    if isinstance(node, tuple):
        return tuple(_moved(item, lines) for item in node)
    if not isinstance(node, n.Node):
        return node
    changes = {f.name: _moved(getattr(node, f.name), lines) for f in dataclasses.fields(node) if f.name != "span"}
    span = node.span
    return dataclasses.replace(node, span=Span(span.line + lines, span.col, span.end_line + lines, span.end_col),
                               **changes)


def _family_member(analysis: Analysis, err: CnnError) -> tuple[Diagnostic, ...]:
    """A family's diagnostics less its searched free names (their domains make them no mistake), and the
    first member whose shapes check, for hints and hovers."""
    program = analysis.program
    assert program is not None
    searched = set(analysis.domains)
    kept = tuple(d for d in err.diagnostics if not (d.kind == "unbound" and _unbound_name(d) in searched))
    if not err.free_names or not searched or any(d.kind != "unbound" for d in kept):
        return kept
    from cnndsl.lang.space import space_of

    try:
        space = space_of(program, None, err.free_names)
    except CnnError as bad:
        return bad.diagnostics
    for index in range(min(FAMILY_MEMBERS_TRIED, space.grid_count())):
        member = space.network_at(index)
        try:
            analysis.report = check_program(program, space.overrides(member))
        except CnnError:
            continue
        analysis.member = member
        break
    return ()


def _unbound_name(diagnostic: Diagnostic) -> str:
    """The name an "unbound" diagnostic is about (its message starts with it: "`N` is not bound")."""
    found = re.match(r"`([^`]+)`", diagnostic.message)
    return found.group(1) if found else ""


# ---- the name index ----

def covers(span: Span, line: int, col: int) -> bool:
    """Whether (line, col) is in `span`, its end column included (a cursor just after a name is on it)."""
    return (span.line, span.col) <= (line, col) <= (span.end_line, span.end_col)


def contains(outer: Span, inner: Span) -> bool:
    """Whether `inner` lies within `outer`."""
    return (outer.line, outer.col) <= (inner.line, inner.col) and \
        (inner.end_line, inner.end_col) <= (outer.end_line, outer.end_col)


_WORD = re.compile(r"@?[A-Za-z_][A-Za-z0-9_]*")


@functools.cache
def _ending_with(before: str) -> re.Pattern[str]:
    return re.compile(f"(?:{before})$", re.IGNORECASE)


def name_span(source: Source, within: Span, name: str, before: str = "", last: bool = False) -> Span:
    """The span of `name` as a whole word inside `within` (right after the regex `before`); `within`'s start
    if the text does not show it. Words are compared, not a pattern per name compiled: an index of 20,000
    names compiled 20,000 patterns."""
    text = source.text_of(within)
    wanted, context = name.lower(), _ending_with(before) if before else None
    found = [m.start() for m in _WORD.finditer(text)
             if m.group().lower() == wanted and not (m.start() and (text[m.start() - 1].isalnum()
                                                                   or text[m.start() - 1] in "_@"))
             and (context is None or context.search(text, max(0, m.start() - 64), m.start()))]
    if not found:
        return Span(within.line, within.col, within.line, within.col + len(name))
    start = found[-1] if last else found[0]
    head = text[:start]
    line = within.line + head.count("\n")
    col = (within.col + len(head)) if "\n" not in head else len(head) - head.rfind("\n")
    return Span(line, col, line, col + len(name))


class _Indexer:
    """Walks the program: every definition, and every name and `@map` it uses resolved by the language's
    scopes (a repetition's index, then a block's parameters, then the file's and imported `let`s and
    blocks; maps within the block body or the top level that names them)."""

    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.globals: dict[str, Definition] = {}
        self.block_params: dict[str, dict[str, Definition]] = {}

    def run(self) -> None:
        program = self.analysis.program
        assert program is not None
        for other in self.analysis.imported:
            self.define_globals(other)
        self.define_globals(program)
        for decl in self.analysis.domains.values():
            name = decl.key.rstrip("?")
            found = self.globals.get(name)
            if found is None or found.kind == "search":
                self.globals[name] = self.add(name, "search", program.source, name_span(program.source, decl.span, name),
                                              decl.span, decl)
        # the main chain first: the maps it names are read by heads written before or after it
        for stmt in sorted(program.statements, key=lambda s: not isinstance(s, n.Main)):
            self.statement(stmt, program.source)

    def add(self, name: str, kind: str, source: Source, span: Span, whole: Span, node: Any) -> Definition:
        definition = Definition(name, kind, source, span, whole, node)
        self.analysis.definitions.append(definition)
        return definition

    def define_globals(self, program: n.Program) -> None:
        source = program.source
        for stmt in program.statements:
            if isinstance(stmt, n.Block):
                block = self.add(stmt.name, "block", source, name_span(source, stmt.span, stmt.name, r"block\s+"),
                                 stmt.span, stmt)
                self.globals[stmt.name] = block
                self.block_params[stmt.name] = {
                    p.name: self.add(p.name, "param", source, name_span(source, p.span, p.name), p.span, p)
                    for p in stmt.params}
            elif isinstance(stmt, n.Let):
                for b in stmt.bindings:
                    self.globals[b.name] = self.add(b.name, "let", source, name_span(source, b.span, b.name),
                                                    b.span, b)

    def statement(self, stmt: n.Statement, source: Source) -> None:
        if isinstance(stmt, n.Block):
            params = self.block_params.get(stmt.name, {})
            for p in stmt.params:
                if p.default is not None:
                    self.expr(p.default, [], {})
            self.expr(stmt.body, [params], {})
        elif isinstance(stmt, n.Let):
            for b in stmt.bindings:
                self.expr(b.value, [], self.top_maps)
        elif isinstance(stmt, (n.Main, n.Head)):
            self.expr(stmt.body, [], self.top_maps)
        elif isinstance(stmt, n.TrainSection):
            for setting in stmt.bindings:
                self.expr(setting.value, [], {})
        elif isinstance(stmt, n.Search):
            for decl in stmt.items:
                for option in getattr(decl.domain, "options", ()):
                    self.expr(option, [], {})

    @property
    def top_maps(self) -> dict[str, Definition]:
        if not hasattr(self, "_top_maps"):
            self._top_maps: dict[str, Definition] = {}
        return self._top_maps

    def resolve(self, name: str, scopes: list[dict[str, Definition]]) -> Definition | None:
        for scope in reversed(scopes):
            if name in scope:
                return scope[name]
        return self.globals.get(name)

    def expr(self, root: n.Node, scopes: list[dict[str, Definition]], maps: dict[str, Definition]) -> None:
        """Index an expression in source order; iterative (expressions nest as deep as the parser allows)."""
        source = self.analysis.source
        stack: list[tuple[Any, list[dict[str, Definition]]]] = [(root, scopes)]
        refs = self.analysis.references
        while stack:
            node, scope = stack.pop()
            if isinstance(node, _NamesMap):  # `-> @e1`: the map arriving there is named
                item = node.ref
                maps[item.id] = self.add("@" + item.id, "map", source, item.span, item.span, item)
                refs.append(Reference("@" + item.id, item.span, maps[item.id]))
            elif isinstance(node, n.Name):
                refs.append(Reference(node.id, node.span, self.resolve(node.id, scope)))
            elif isinstance(node, n.MapRef):
                refs.append(Reference("@" + node.id, node.span, maps.get(node.id)))
            elif isinstance(node, n.Chain):
                items = [_NamesMap(item) if position > 0 and isinstance(item, n.MapRef) else item
                         for position, item in enumerate(node.items)]
                stack.extend((item, scope) for item in reversed(items))
            elif isinstance(node, n.RepeatAs):
                index = self.add(node.index, "index", source, name_span(source, node.span, node.index, r"\bas\s+",
                                                                        last=True), node.span, node)
                stack.append((node.count, scope))
                stack.append((node.body, scope + [{node.index: index}]))
            elif isinstance(node, n.Call):
                target = self.resolve(node.func.id, scope)
                params = self.block_params.get(node.func.id, {}) if target is not None and target.kind == "block" else {}
                later: list[tuple[Any, list[dict[str, Definition]]]] = [(node.func, scope)]
                later += [(arg, scope) for arg in node.args]
                for kw in node.kwargs:
                    span = Span(kw.span.line, kw.span.col, kw.span.line, kw.span.col + len(kw.name))
                    later += [(Reference(kw.name, span, params.get(kw.name)), scope), (kw.value, scope)]
                stack.extend(reversed(later))
            elif isinstance(node, Reference):
                refs.append(node)
            else:
                stack.extend((child, scope) for child in reversed(list(n.children(node))))


@dataclass(frozen=True)
class _NamesMap:
    """A walk step: `ref` (after an arrow) names the map arriving there."""

    ref: n.MapRef
