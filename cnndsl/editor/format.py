"""`cnndsl fmt`: one canonical layout for `.cnn` files (as gofmt and ruff format do for theirs).

The printer works from the parse tree with every token kept (`lang.parser.concrete_tree`), so it writes back
exactly the tokens it read, spelled as they were (`INPUT` stays `INPUT`: the course pattern is written so),
with canonical spacing (`1 .. 3` as `1..3`), less a redundant trailing comma, and chooses only where lines
break. Its rules:

- one statement per line; blank lines between statements kept, at most one in a row;
- spaces around `->`, `|`, `=` of statements, comparisons and arithmetic; none in `stride=2`, `2**i`, `x?`,
  `-x`, or between a group and its repetition (`[conv -> relu]*3`);
- a chain wraps at `->`, filling each line up to `WIDTH` columns; a line break the author put before `->` or
  `|` is kept (line breaks carry meaning in a network: a stage per line), every other one is the printer's;
- a bracket that does not fit opens its contents one per line, four columns in, and closes on its own line;
  branches `a | b` are all on one line or one per line, each starting with `|`;
- a `block`, `let`, `head` or setting whose body does not fit continues on the next line, four columns in,
  unless the body is one call or bracket, which then opens where it stands;
- comments stay with the token they follow on its line (trailing comments of adjacent lines aligned) or
  before the token they precede (a comment on a line of its own stays on a line of its own).

Formatting never changes meaning: the tests check every example and the parser's fuzz corpus parse to the
same tree and check to the same network, and that formatting twice changes nothing.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable

from lark import Token, Tree

from cnndsl.editor.layout import (
    HARD,
    SOFT,
    SPACE,
    Doc,
    Fill,
    Group,
    Indent,
    LineStart,
    Suffix,
    render,
)
from cnndsl.lang.errors import CnnError, Diagnostic
from cnndsl.lang.parser import concrete_tree
from cnndsl.lang.source import Source

WIDTH = 100
INDENT = 4

_COMMENT_OR_STRING = re.compile(r'"[^"\n]*"|#[^\n]*')
# Bodies that open a bracket where they stand instead of moving to the next line.
_HUGGED = {"call", "group", "tuple", "atom"}


def format_source(source: Source) -> str:
    """The canonical text of a spec; raises the located `CnnError` of `check` when it does not parse."""
    tree = concrete_tree(source)
    try:
        doc = _Printer(source, tree).program(tree)
        lines = render(doc, WIDTH)
    except RecursionError:
        raise CnnError((Diagnostic("limit", "the spec is nested too deeply to format", source, source.start(),
                                   help="split long expressions with `let` or `block`"),)) from None
    text = "\n".join(_align_comments(lines)).strip("\n")
    return text + "\n" if text else ""


def format_text(text: str, name: str = "<text>") -> str:
    """`format_source` of spec text."""
    return format_source(Source(text, name))


def _align_comments(lines: list[tuple[str, str]]) -> list[str]:
    """Lines with trailing comments one after another get their comments in one column (as gofmt does)."""
    out: list[str] = []
    run: list[tuple[str, str]] = []

    def flush() -> None:
        column = max(len(code) for code, _ in run) + 2 if run else 0
        out.extend(code.ljust(column) + comment if code else comment for code, comment in run)
        run.clear()

    for code, comment in lines:
        if comment and code.strip():
            run.append((code, comment))
            continue
        flush()
        out.append(f"{code} {comment}".strip() if comment else code if code.strip() else "")
        if comment and code and not code.strip():  # an indented comment-only line keeps its indentation
            out[-1] = code + comment
    flush()
    return out


def _tokens(tree: Tree) -> list[Token]:
    return sorted((t for t in tree.scan_values(lambda v: isinstance(v, Token)) if t.type != "_NL"),
                  key=lambda t: t.start_pos)


class _Printer:
    """Builds the layout document of one parse tree; comments are attached to tokens first."""

    def __init__(self, source: Source, tree: Tree) -> None:
        self.source = source
        tokens = _tokens(tree)
        starts = [t.start_pos for t in tokens]
        self.leading: dict[int, list[tuple[int, str]]] = {}
        self.trailing: dict[int, str] = {}
        self.end_comments: list[tuple[int, str]] = []
        text = source.text
        line, counted = 1, 0  # the line of `counted`: comments come in order, so lines are counted once
        for match in _COMMENT_OR_STRING.finditer(text):
            if not match.group().startswith("#"):
                continue
            pos, comment = match.start(), match.group().rstrip()
            line, counted = line + text.count("\n", counted, pos), pos
            own_line = not text[text.rfind("\n", 0, pos) + 1: pos].strip()
            after = bisect.bisect_right(starts, pos)
            if not own_line and after > 0:
                self.trailing[starts[after - 1]] = comment
            elif after < len(tokens):
                self.leading.setdefault(starts[after], []).append((line, comment))
            else:
                self.end_comments.append((line, comment))

    # ---- tokens ----

    def tok(self, token: Token, text: str | None = None) -> Doc:
        """A token with its comments: own-line comments before it, a trailing one after."""
        parts: list = []
        for _, comment in self.leading.pop(token.start_pos, ()):
            parts += [LineStart(), comment, HARD]
        parts.append(_canonical(token) if text is None else text)
        if token.start_pos in self.trailing:
            parts.append(Suffix(self.trailing.pop(token.start_pos)))
        return parts

    def dropped(self, token: Token) -> Doc:
        """A token the canonical form leaves out (a redundant trailing comma): only its comments stay."""
        return [part for part in self.tok(token, "") if part != ""]

    # ---- statements ----

    def program(self, tree: Tree) -> Doc:
        parts: list = []
        previous_end = 0
        for statement in (c for c in tree.children if isinstance(c, Tree)):
            first = _tokens(statement)[0]
            lines: list[tuple[int, Doc]] = list(self.leading.pop(first.start_pos, ()))
            lines.append((first.line, self.statement(statement)))
            previous_end = self._lines(parts, lines, previous_end)
            previous_end = max(previous_end, statement.meta.end_line)
        self._lines(parts, list(self.end_comments), previous_end)
        return parts

    @staticmethod
    def _lines(parts: list, items: list[tuple[int, Doc]], previous_end: int) -> int:
        """Statement-level items (comments, statements) one per line; one blank line where there was any."""
        for line, doc in items:
            if parts and line - previous_end > 1:
                parts.append(HARD)
            parts += [doc, HARD]
            previous_end = line
        return previous_end

    def statement(self, tree: Tree) -> Doc:
        c = _present(tree.children)
        kind = tree.data
        if kind in ("network", "input_decl", "import_decl"):
            return [self.tok(c[0]), " ", self.tok(c[1])]
        if kind in ("let", "train_section", "search"):
            return [self.tok(c[0]), " ", self.listed(c[1:], self.clause)]
        if kind == "block":
            params: Doc = []
            if c[2].type == "_LPAR":
                inner = _present(c[3].children) if isinstance(c[3], Tree) else []
                params = self.bracketed(c[2], inner, c[-3])
            return [self.tok(c[0]), " ", self.tok(c[1]), params, " ", self.tok(c[-2]), self.body(c[-1])]
        if kind == "head":
            words = [self.tok(w) for w in c[:-3]]
            return [_joined(words, " "), " ", self.tok(c[-3]), " ", self.tok(c[-2]), self.body(c[-1])]
        return self.expr(c[0], own_line=False)  # main: the network's chain

    def clause(self, tree: Tree) -> Doc:
        """One `name = value` of a let, a setting of a train line, a domain of a search line."""
        c = _present(tree.children)
        if tree.data == "domain_decl":
            head = [self.tok(t) for t in c if isinstance(t, Token) and t.type in ("NAME", "QMARK")]
            rest = c[len(head):]
            return [head, [" ", self.tok(rest[0]), " ", self.expr(rest[1], False)] if rest else []]
        equal = next(i for i, t in enumerate(c) if isinstance(t, Token) and t.type == "_EQUAL")
        words = [self.tok(t) for t in c[:equal]]
        # a binding's `N` or `POOL?` is one word; a setting's `aux1 weight` two
        head = words if tree.data == "binding" else _joined(words, " ")
        return [head, " ", self.tok(c[equal]), self.body(c[equal + 1])]

    def body(self, value: Tree) -> Doc:
        """What follows a statement's `=`: on the same line, or the next line four columns in."""
        if value.data in _HUGGED:
            return [" ", self.expr(value, own_line=True)]
        return Group(Indent(INDENT, [SPACE, self.expr(value, own_line=True)]))

    def listed(self, items: list, item_doc) -> Doc:
        """Comma-separated clauses of a statement, filling lines."""
        docs, commas = _split_commas(items)
        parts = [[item_doc(item), self.tok(comma) if comma is not None else []] for item, comma in zip(docs, commas)]
        return Fill(parts[0], [(SPACE, part) for part in parts[1:]], continuation=INDENT)

    # ---- expressions ----

    def expr(self, tree: Tree | Token, own_line: bool) -> Doc:
        """An expression; `own_line`: it starts its line, so a chain continues at its own indentation."""
        if isinstance(tree, Token):
            return self.tok(tree)
        c = _present(tree.children)
        kind = tree.data
        if kind == "chain":
            return self.chain(c, own_line)
        if kind == "branches":
            return self.branches(c)
        if kind == "call" or kind == "distribution":
            args = _present(c[2].children) if len(c) == 4 else []
            return [self.tok(c[0]), self.bracketed(c[1], args, c[-1])]
        if kind in ("group", "atom"):
            return self.bracketed(c[0], c[1:-1], c[-1])
        if kind in ("tuple", "choices"):
            return self.bracketed(c[0], c[1:-1], c[-1], keep_single_comma=kind == "tuple")
        if kind == "index":
            return [self.expr(c[0], False), self.tok(c[1]), self.expr(c[2], False), self.tok(c[3])]
        if kind in ("binop", "repeat_as"):
            op = c[1]
            tight = op.type == "POW" or (op.type == "STAR" and isinstance(c[0], Tree) and c[0].data == "group")
            gap = "" if tight else " "
            doc = [self.expr(c[0], False), gap, self.tok(op), gap, self.expr(c[2], False)]
            return doc + ([" ", self.tok(c[3]), " ", self.tok(c[4])] if kind == "repeat_as" else [])
        if kind in ("unary", "optional", "kwarg", "param"):
            return [self.expr(part, False) for part in c]
        if kind == "not_op":
            return [self.tok(c[0]), " ", self.expr(c[1], False)]
        if kind in ("or_op", "and_op", "compare", "conditional"):
            return _joined([self.expr(part, False) for part in c], " ")
        return [self.expr(part, False) for part in c]  # an atom: its one token

    def chain(self, c: list, own_line: bool) -> Doc:
        """`a -> b -> c`: wraps at `->` where the line is full; the author's line breaks before `->` stay."""
        rest = []
        for i in range(1, len(c), 2):
            arrow, element = c[i], c[i + 1]
            separator = HARD if arrow.line > _end_line(c[i - 1]) else SPACE
            rest.append((separator, [self.tok(arrow), " ", self.expr(element, own_line=True)]))
        return Fill(self.expr(c[0], own_line=True), rest, continuation=0 if own_line else INDENT)

    def branches(self, c: list) -> Doc:
        """`a | b | c`: on one line, or one branch per line starting with `|` (the author's break forces it)."""
        parts: list = [Indent(2, self.expr(c[0], own_line=True))]
        for i in range(1, len(c), 2):
            pipe = c[i]
            separator = HARD if pipe.line > _end_line(c[i - 1]) else SPACE
            parts += [separator, self.tok(pipe), " ", Indent(2, self.expr(c[i + 1], own_line=True))]
        return Group(parts)

    def bracketed(self, opener: Token, items: list, closer: Token, keep_single_comma: bool = False) -> Doc:
        """`(a, b)`, `[x]`, `{a, b}`: flat if it fits, else one item per line four columns in."""
        docs, commas = _split_commas(items)
        inner: list = []
        for index, (item, comma) in enumerate(zip(docs, commas)):
            inner.append(self.expr(item, own_line=True))
            if comma is None:
                continue
            if index < len(docs) - 1 or (keep_single_comma and len(docs) == 1):
                inner += [self.tok(comma), SPACE] if index < len(docs) - 1 else [self.tok(comma)]
            else:
                inner.append(self.dropped(comma))
        if not inner:
            return [self.tok(opener), self.tok(closer)]
        return Group([self.tok(opener), Indent(INDENT, [SOFT, inner]), SOFT, self.tok(closer)])


def _split_commas(items: Iterable) -> tuple[list, list]:
    """Items and the comma after each (None after the last when there is none)."""
    docs: list = []
    commas: list = []
    for item in items:
        if isinstance(item, Token) and item.type == "_COMMA":
            commas[-1] = item
        else:
            docs.append(item)
            commas.append(None)
    return docs, commas


def _present(children: list) -> list:
    return [c for c in children if c is not None]


def _joined(docs: list, separator: str) -> Doc:
    out: list = []
    for i, doc in enumerate(docs):
        out += [separator, doc] if i else [doc]
    return out


def _end_line(node: Tree | Token) -> int:
    return node.end_line if isinstance(node, Token) else node.meta.end_line


def _canonical(token: Token) -> str:
    return re.sub(r"\s+", "", str(token)) if token.type == "RANGE" else str(token)

