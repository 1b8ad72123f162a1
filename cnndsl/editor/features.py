"""The editor features over an `Analysis`: hover text, inlay hints, completions, document symbols and the
fix of a "did you mean" diagnostic. Plain data in, plain data out (positions: lines and columns from 1);
`cnndsl.editor.server` turns them into LSP messages.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from cnndsl.editor.analysis import Analysis, Definition, contains, covers, name_span
from cnndsl.lang import ir
from cnndsl.lang import nodes as n
from cnndsl.lang.errors import Diagnostic
from cnndsl.lang.expand import FUNCTIONS
from cnndsl.lang.layers import BUILTINS, COMBINATORS, CONSTANTS, REQUIRED, Builtin, show
from cnndsl.lang.settings import SPEC_SETTINGS, Settings
from cnndsl.lang.shapes import fmt
from cnndsl.lang.source import Span

ARROW = "⟶"
#: Shapes listed for a step that runs several times with different shapes (a block's body), before "…".
SHAPES_SHOWN = 3


# ---- numbers as a reader wants them ----

def count(value: int) -> str:
    """`1,234,567` -> `1.23M`: short forms for hints."""
    for size, unit in ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return str(value)


def signature(builtin: Builtin) -> str:
    """`conv(filters, kernel, stride=1, pad=valid, dilation=1, groups=1, bias=true)`."""
    parts = [p.name if p.default is REQUIRED else f"{p.name}={show(p.default)}" for p in builtin.params]
    return f"{builtin.name}({', '.join(parts)})" if parts else builtin.name


# ---- the graph nodes a piece of text made ----

def _nodes_within(analysis: Analysis, span: Span) -> list[ir.Node]:
    """Graph nodes made by the text in `span`: written there, or made by a block call written there."""
    by_line = _line_index(analysis)
    found: dict[int, ir.Node] = {}
    for line in range(span.line, span.end_line + 1):
        for where, node in by_line.get(line, ()):
            if contains(span, where):
                found[node.id] = node
    return [found[i] for i in sorted(found)]


def _line_index(analysis: Analysis) -> dict[int, list[tuple[Span, ir.Node]]]:
    """Each graph node under the first line of each span in this document that made it: its own span, and
    the spans of the block calls it is inside. Built once per analysis: a hint or hover looks up a few lines."""
    if analysis.cache.get("by_line") is None:
        by_line: dict[int, list[tuple[Span, ir.Node]]] = {}
        report = analysis.report
        for node in report.graph.nodes[1:] if report is not None else ():
            if analysis.own(node.source):
                by_line.setdefault(node.span.line, []).append((node.span, node))
            for frame in node.path:
                if frame.call_source is not None and analysis.own(frame.call_source):
                    by_line.setdefault(frame.span.line, []).append((frame.span, node))
        analysis.cache["by_line"] = by_line
    return analysis.cache["by_line"]


def _outputs(nodes: list[ir.Node]) -> list[ir.Node]:
    """The nodes among `nodes` that none of the others reads: each run's output of a step."""
    ids = {node.id for node in nodes}
    read = {i for node in nodes for i in node.inputs if i in ids}
    return [node for node in nodes if node.id not in read]


def _shapes_text(shapes: list[ir.Shape]) -> str:
    unique = list(dict.fromkeys(shapes))
    shown = " | ".join(fmt(s) for s in unique[:SHAPES_SHOWN])
    return shown + (" | …" if len(unique) > SHAPES_SHOWN else "")


# ---- inlay hints ----

@dataclass(frozen=True)
class Hint:
    """A hint written after (line, col): an output shape, or a block's totals."""

    line: int
    col: int
    label: str
    tooltip: str = ""


def inlay_hints(analysis: Analysis, first_line: int = 1, last_line: int | None = None) -> list[Hint]:
    """The output shape after each step of every chain (`conv(64, 3x3) ⟶ 112x112x64`; a block body's steps
    list each shape they take), and each block's calls, parameters and MACs on its definition line."""
    if analysis.report is None or analysis.program is None:
        return []
    last = last_line if last_line is not None else 1 << 30
    shapes = analysis.report.node_shapes
    hints: list[Hint] = []
    for chain in (node for node in n.walk(analysis.program.statements) if isinstance(node, n.Chain)):
        if chain.span.end_line < first_line or chain.span.line > last:
            continue
        for item in chain.items:
            if isinstance(item, (n.MapRef, n.InputRef)) or not first_line <= item.span.end_line <= last:
                continue
            outputs = _outputs(_nodes_within(analysis, item.span))
            if outputs:
                hints.append(Hint(item.span.end_line, item.span.end_col,
                                  f"{ARROW} {_shapes_text([shapes[o.id] for o in outputs])}"))
    for stmt in analysis.program.statements:
        if isinstance(stmt, n.Block) and first_line <= stmt.span.line <= last:
            totals = block_totals(analysis).get(stmt.name)
            if totals is not None:
                calls, params, macs = totals
                header = analysis.source.line_text(stmt.span.line)
                hints.append(Hint(stmt.span.line, len(header.rstrip()) + 1,
                                  f"{calls} call{'s' if calls != 1 else ''} · {count(params)} params · "
                                  f"{count(macs)} MACs", f"{params:,} parameters, {macs:,} multiply-adds in all"))
    return sorted(hints, key=lambda h: (h.line, h.col))


def block_totals(analysis: Analysis) -> dict[str, tuple[int, int, int]]:
    """Each block called in the network: its calls, and its layers' parameters and MACs in all. One pass over
    the graph per analysis (hints ask at every scroll; the outline asks too)."""
    if analysis.cache.get("block_totals") is None:
        calls: dict[str, set[int]] = defaultdict(set)
        costs: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        report = analysis.report
        for node, row in zip(report.graph.nodes[1:], report.rows) if report is not None else ():
            inside = set()  # the blocks this layer is in, each once (a block may call another block)
            for frame in node.path:
                if frame.call_source is not None:  # a block call
                    block = frame.label.split("(")[0]
                    calls[block].add(frame.id)
                    inside.add(block)
            for block in inside:
                costs[block][0] += row.params
                costs[block][1] += row.macs
        analysis.cache["block_totals"] = {b: (len(ids), *costs[b]) for b, ids in calls.items()}
    return analysis.cache["block_totals"]


# ---- hover ----

def hover(analysis: Analysis, line: int, col: int) -> str | None:
    """Markdown for the thing at a position: a layer (its op with defaults, input and output shapes,
    parameters, MACs), a block call (its totals), a name (its binding), a free name (its domain)."""
    parts = []
    call = _block_call_at(analysis, line, col)
    if call is not None:
        parts.append(_call_text(analysis, call))
    else:
        layer = _layer_text(analysis, line, col)
        if layer:
            parts.append(layer)
    ref = analysis.reference_at(line, col)
    definition = analysis.definition_at(line, col)
    if definition is not None and call is None:
        parts.append(_definition_text(analysis, definition))
    elif ref is not None and definition is None and not parts:
        parts.append(_builtin_text(ref.name))
    parts = [p for p in parts if p]
    return "\n\n---\n\n".join(parts) if parts else None


def _block_call_at(analysis: Analysis, line: int, col: int) -> n.Call | None:
    """A call of a block whose name is at the position."""
    ref = analysis.reference_at(line, col)
    if ref is None or ref.definition is None or ref.definition.kind != "block" or analysis.program is None:
        return None
    return next((node for node in n.walk(analysis.program.statements)
                 if isinstance(node, n.Call) and node.func.span == ref.span), None)


def _call_text(analysis: Analysis, call: n.Call) -> str:
    block = next(d for d in analysis.definitions if d.kind == "block" and d.name == call.func.id)
    header = block.source.text_of(block.whole).split("=")[0].strip()
    nodes = _nodes_within(analysis, call.span)
    text = f"```cnn\n{header}\n```"
    if not nodes or analysis.report is None:
        return text + "\n\n(not part of the checked network)" if analysis.report is not None else text
    shapes = analysis.report.node_shapes
    rows = {node.id: analysis.report.rows[node.id - 1] for node in nodes}
    inputs = list(dict.fromkeys(i for node in nodes for i in node.inputs if i not in rows))
    outputs = _outputs(nodes)
    runs = len({f.id for node in nodes for f in node.path if f.span == call.span and f.call_source is not None}) or 1
    return (f"{text}\n\n{_shapes_text([shapes[i] for i in inputs])} {ARROW} "
            f"{_shapes_text([shapes[o.id] for o in outputs])}  \n"
            f"{len(nodes)} layers · {sum(r.params for r in rows.values()):,} params · "
            f"{sum(r.macs for r in rows.values()):,} MACs" + (f" · {runs} runs" if runs > 1 else ""))


def _layer_text(analysis: Analysis, line: int, col: int) -> str | None:
    """The layers written at the position (several where a block's body or a repetition runs it often)."""
    report = analysis.report
    if report is None:
        return None
    here = [node for node in report.graph.nodes[1:] if analysis.own(node.source) and covers(node.span, line, col)]
    if not here:
        return None
    smallest = min(here, key=lambda node: (node.span.end_line - node.span.line, node.span.end_col - node.span.col))
    nodes = [node for node in here if node.span == smallest.span]
    shapes = report.node_shapes

    def line_of(node: ir.Node) -> str:
        row = report.rows[node.id - 1]
        inputs = " + ".join(fmt(shapes[i]) for i in node.inputs)
        return f"{inputs} {ARROW} {fmt(shapes[node.id])} · {row.params:,} params · {row.macs:,} MACs"

    text = f"```\n{smallest.op.full_label()}\n```\n\n"
    if len(nodes) == 1:
        where = f" in {smallest.where()}" if smallest.path else ""
        return text + f"`{smallest.name}`{where}  \n{line_of(smallest)}"
    listed = [f"- `{node.name}` {node.where()}: {line_of(node)}" for node in nodes[:5]]
    more = [f"- … and {len(nodes) - 5} more"] if len(nodes) > 5 else []
    params = sum(report.rows[node.id - 1].params for node in nodes)
    macs = sum(report.rows[node.id - 1].macs for node in nodes)
    return text + f"runs {len(nodes)} times ({params:,} params, {macs:,} MACs in all):\n\n" + "\n".join(listed + more)


def _definition_text(analysis: Analysis, d: Definition) -> str:
    if d.kind == "search":
        decl = d.node
        domain = analysis.source.text_of(decl.span)
        used = analysis.member.get(decl.key) if analysis.member else None
        text = f"free name of the family, searched:\n```cnn\nsearch {domain}\n```"
        return text + (f"\nshapes shown for `{decl.key} = {show(used)}`" if analysis.member is not None else "")
    if d.kind == "map":
        shape = _map_shape(analysis, d)
        return f"feature map `{d.name}`" + (f": {shape}" if shape else "")
    if d.kind == "index":
        return f"repetition index `{d.name}`: 0, 1, … for each repetition of\n```cnn\n{d.text}\n```"
    if d.kind == "param":
        block = next((b for b in analysis.definitions if b.kind == "block" and contains(b.whole, d.whole)
                      and b.source is d.source), None)
        owner = f" of block `{block.name}`" if block else ""
        default = f", default `{d.source.text_of(d.node.default.span)}`" if d.node.default is not None else ""
        return f"parameter `{d.name}`{owner}{default}"
    where = "" if d.source is analysis.source else f"\n\n(from {d.source.path})"
    return f"```cnn\n{'let ' if d.kind == 'let' else ''}{d.text}\n```{where}"


def _map_shape(analysis: Analysis, d: Definition) -> str | None:
    report = analysis.report
    if report is None:
        return None
    for tap in report.graph.taps:
        if "@" + tap.name == d.name:
            return fmt(report.node_shapes[tap.node])
    return None


def _builtin_text(name: str) -> str | None:
    builtin = BUILTINS.get(name.lower())
    if builtin is not None:
        return f"```cnn\n{signature(builtin)}\n```\n\n{builtin.doc}" + (f"  \ne.g. `{builtin.example}`"
                                                                         if builtin.example else "")
    if name.lower() in COMBINATORS:
        return f"`{name.lower()}`: {_COMBINATOR_DOCS[name.lower()]}"
    if name.lower() in CONSTANTS:
        return f"`{name.lower()}`: a constant of the language"
    if name in FUNCTIONS:
        return f"`{name}(...)`: a number function"
    return None


_COMBINATOR_DOCS = {
    "concat": "its branches `a | b` applied to the same input, concatenated on channels",
    "add": "its branches `a | b` applied to the same input, added",
    "mul": "its branches `a | b` applied to the same input, multiplied element by element",
    "residual": "`residual(body, shortcut=...)`: body + shortcut (identity by default)",
    "identity": "the input, unchanged",
}


# ---- completion ----

@dataclass(frozen=True)
class Completion:
    """One completion item."""

    label: str
    kind: str  # "layer" | "combinator" | "block" | "let" | "param" | "keyword" | "setting" | "domain" | "constant"
    detail: str = ""
    documentation: str = ""
    insert: str | None = None


_STATEMENT_KEYWORDS = ("network", "input", "import", "let", "block", "train", "search", "head", "training head")
_DOMAINS = (("1..3", "integers, both ends included"), ("{a, b}", "choices: any expressions"),
            ("log(1e-4, 1e-2)", "numbers on a log scale"), ("uniform(0.1, 0.5)", "numbers"))


def completions(analysis: Analysis, text: str, line: int, col: int) -> list[Completion]:
    """What may be written at a position of `text` (the document as it is now, which may not parse)."""
    lines = text.split("\n")
    before = "\n".join(lines[: line - 1] + [lines[line - 1][: col - 1] if line - 1 < len(lines) else ""])
    current = before.rsplit("\n", 1)[-1]
    code = re.sub(r'#[^\n]*|"[^"\n]*"', "", current)
    if re.match(r"\s*search\b.*\bin\s+\S*$", code) and not re.search(r"\bin\s+\S*[({]", code):
        return [Completion(label, "domain", doc) for label, doc in _DOMAINS]
    if re.match(r"\s*train\b", code, re.IGNORECASE) and re.search(r"(^|,)\s*\w*$", code.split("train", 1)[1]):
        return [Completion(name, "setting", f"default {show(getattr(Settings(), name))}") for name in SPEC_SETTINGS]
    if re.fullmatch(r"\s*\w*", code) and not _continues(before):
        items = [Completion(word, "keyword") for word in _STATEMENT_KEYWORDS]
        return items + _layer_items(analysis)
    called = _open_call(before)
    items = _parameter_items(analysis, called) if called else []
    return items + _layer_items(analysis) + [Completion(c, "constant") for c in CONSTANTS]


def _continues(before: str) -> bool:
    """Whether the line at the cursor continues a statement (an open bracket, or a line ending in `->`)."""
    prior = re.sub(r'#[^\n]*|"[^"\n]*"', "", before.rsplit("\n", 1)[0] if "\n" in before else "")
    depth = prior.count("(") + prior.count("[") + prior.count("{") - prior.count(")") - prior.count("]") - \
        prior.count("}")
    return depth > 0 or bool(re.search(r"(->|\||=|,)\s*$", prior))


def _open_call(before: str) -> str | None:
    """The name of the call whose `(` is open at the cursor, if any."""
    depth = 0
    code = re.sub(r'#[^\n]*|"[^"\n]*"', "", before)
    for i in range(len(code) - 1, -1, -1):
        char = code[i]
        if char in ")]}":
            depth += 1
        elif char in "([{":
            if depth == 0:
                if char != "(":
                    return None
                found = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", code[:i])
                return found.group(1) if found else None
            depth -= 1
    return None


def _parameter_items(analysis: Analysis, called: str) -> list[Completion]:
    builtin = BUILTINS.get(called.lower())
    if builtin is not None:
        return [Completion(f"{p.name}=", "param", "required" if p.default is REQUIRED else f"default {show(p.default)}",
                           signature(builtin)) for p in builtin.params]
    block = next((d for d in analysis.definitions if d.kind == "block" and d.name == called), None)
    if block is not None:
        return [Completion(f"{p.name}=", "param", "" if p.default is None else f"default "
                           f"{block.source.text_of(p.default.span)}", f"block {called}") for p in block.node.params]
    return []


def _layer_items(analysis: Analysis) -> list[Completion]:
    items = [Completion(b.name, "layer", signature(b), b.doc) for b in BUILTINS.values()]
    items += [Completion(c, "combinator", "", _COMBINATOR_DOCS[c]) for c in COMBINATORS]
    seen: set[str] = set()
    for d in analysis.definitions:
        if d.kind in ("block", "let") and d.name not in seen:
            seen.add(d.name)
            header = d.text.split("\n")[0]
            items.append(Completion(d.name, d.kind, header.split("=")[0].strip() if d.kind == "block" else header,
                                    d.text))
    return items


# ---- symbols ----

@dataclass
class Symbol:
    """A document symbol: what it is, its whole span and its name's span, and what it holds."""

    name: str
    kind: str  # "network" | "import" | "block" | "let" | "head" | "search" | "train" | "main"
    span: Span
    selection: Span
    detail: str = ""
    children: list[Symbol] = field(default_factory=list)


def symbols(analysis: Analysis) -> list[Symbol]:
    """The outline of the document: network, imports, blocks, lets, the main chain, heads, searches, train."""
    program = analysis.program
    if program is None:
        return []
    source = analysis.source
    out: list[Symbol] = []
    for stmt in program.statements:
        if isinstance(stmt, n.Network):
            out.append(Symbol(stmt.name, "network", stmt.span, name_span(source, stmt.span, stmt.name, r"network\s+")))
        elif isinstance(stmt, n.Import):
            out.append(Symbol(stmt.path, "import", stmt.span, stmt.span))
        elif isinstance(stmt, n.Block):
            params = [Symbol(p.name, "param", p.span, name_span(source, p.span, p.name)) for p in stmt.params]
            header = source.text_of(stmt.span).split("=")[0].strip()
            totals = block_totals(analysis).get(stmt.name)
            detail = f"{count(totals[1])} params · {count(totals[2])} MACs" if totals else header
            out.append(Symbol(stmt.name, "block", stmt.span, name_span(source, stmt.span, stmt.name, r"block\s+"),
                              detail, params))
        elif isinstance(stmt, n.Let):
            out += [Symbol(b.name, "let", b.span, name_span(source, b.span, b.name)) for b in stmt.bindings]
        elif isinstance(stmt, n.Head):
            out.append(Symbol(stmt.name, "head", stmt.span, name_span(source, stmt.span, stmt.name, r"head\s+"),
                              "training head" if stmt.training_only else "head"))
        elif isinstance(stmt, n.Search):
            out += [Symbol(d.key, "search", d.span, name_span(source, d.span, d.name), "searched")
                    for d in stmt.items]
        elif isinstance(stmt, n.TrainSection):
            out.append(Symbol("train", "train", stmt.span, stmt.span, ", ".join(b.name for b in stmt.bindings)))
        elif isinstance(stmt, n.Main):
            report = analysis.report
            detail = f"{fmt(report.input_shape)} {ARROW} {fmt(report.output_shape)}" if report else ""
            out.append(Symbol("network chain", "main", stmt.span, Span(stmt.span.line, stmt.span.col, stmt.span.line,
                                                                       stmt.span.col + 1), detail))
    return out


# ---- fixes ----

def fix_of(diagnostic: Diagnostic) -> tuple[Span, str] | None:
    """Where a "did you mean" diagnostic's misspelled word is, and its replacement."""
    if diagnostic.fix is None or diagnostic.source is None or diagnostic.span is None:
        return None
    word, replacement = diagnostic.fix
    return name_span(diagnostic.source, diagnostic.span, word), replacement
