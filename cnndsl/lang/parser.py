"""Parse `.cnn` text into an AST: `parse(Source) -> nodes.Program`.

One cached LALR(1) parser built from `grammar/cnn.lark`; a postlexer decides which newlines end a
statement; a non-recursive transformer turns lark's tree into `nodes` dataclasses with spans; lark's
exceptions become rendered diagnostics.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer_NonRecursive, Tree, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from cnndsl.lang import nodes as n
from cnndsl.lang.errors import CnnError, Diagnostic, UsageError
from cnndsl.lang.limits import INT64_MAX, MAX_NESTING, MAX_SOURCE_BYTES
from cnndsl.lang.source import (
    Source,
    SourceFileError,
    Span,
    looks_like_path,
    normalize_text,
    read_source_file,
)

# Newlines are dropped inside brackets, after these tokens, and before these tokens.
_OPENERS = {"_LPAR", "_LSQB", "_LBRACE"}
_CLOSERS = {"_RPAR", "_RSQB", "_RBRACE"}
_CONTINUE_AFTER = {"_ARROW", "_PIPE", "_EQUAL", "_COMMA", "_LPAR", "_LSQB", "_LBRACE", "_IN"}
_CONTINUE_BEFORE = {"_ARROW", "_PIPE"}

# How terminals are named in "expected ..." notes.
_TERMINAL_NAMES = {
    "_ARROW": "`->`", "_PIPE": "`|`", "_COMMA": "`,`", "_EQUAL": "`=`", "_LPAR": "`(`",
    "_RPAR": "`)`", "_LSQB": "`[`", "_RSQB": "`]`", "QMARK": "`?`", "STAR": "`*`", "POW": "`**`",
    "MUL_OP": "`/`", "ADD_OP": "`+`", "COMP_OP": "a comparison", "NAME": "a name", "INT": "a number",
    "FLOAT": "a number", "DIMS": "a size like `3x3`", "_NL": "a new line", "$END": "the end of the file",
    "_IF": "`if`", "_ELSE": "`else`", "_AS": "`as`", "_AND": "`and`", "_OR": "`or`", "_NOT": "`not`",
    "_INPUT": "`input`", "_NETWORK": "`network`", "_IMPORT": "`import`", "PATH": "a file name in quotes", "_LET": "`let`", "_BLOCK": "`block`", "_TRAIN": "`train`",
}


def grammar_text() -> str:
    """The grammar: packaged inside the wheel, or from the repository's `grammar/` in a checkout."""
    packaged = resources.files("cnndsl") / "grammar" / "cnn.lark"
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "grammar" / "cnn.lark").read_text(encoding="utf-8")


class _TooDeep(Exception):
    """Raised by the postlexer at the bracket that nests deeper than MAX_NESTING."""

    def __init__(self, token: Token) -> None:
        super().__init__(token)
        self.token = token


class _Newlines:
    """Postlexer: keeps only the newlines that end a statement, and bounds bracket nesting."""

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth, previous, pending = 0, None, None
        for tok in stream:
            if tok.type == "_NL":
                if depth == 0 and previous is not None and previous.type not in _CONTINUE_AFTER:
                    pending = tok
                continue
            if pending is not None and tok.type not in _CONTINUE_BEFORE:
                yield pending
            pending = None
            if tok.type in _OPENERS:
                depth += 1
                if depth > MAX_NESTING:
                    raise _TooDeep(tok)
            elif tok.type in _CLOSERS:
                depth = max(0, depth - 1)
            previous = tok
            yield tok


@functools.cache
def _lark() -> Lark:
    return Lark(grammar_text(), parser="lalr", lexer="basic", propagate_positions=True,
                maybe_placeholders=True, postlex=_Newlines())


@functools.cache
def _concrete_lark() -> Lark:
    return Lark(grammar_text(), parser="lalr", lexer="basic", propagate_positions=True,
                maybe_placeholders=True, postlex=_Newlines(), keep_all_tokens=True)


def concrete_tree(source: Source) -> Tree:
    """The parse tree with every token kept (keywords, brackets, arrows, statement ends): what a formatter
    prints. The spec is parsed first as `parse` does, so bad input raises the same located `CnnError`."""
    parse(source)
    return _concrete_lark().parse(source.text)


def _token_span(tok: Token) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column)


def _span(meta: Any) -> Span:
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _present(items: Any) -> tuple[Any, ...]:
    return tuple(x for x in items if x is not None)


@v_args(meta=True)
class _ToAst(Transformer_NonRecursive):
    """lark tree -> `nodes` dataclasses. Method names are the grammar's rule names and aliases."""

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source

    def start(self, meta: Any, children: list) -> n.Program:
        span = _span(meta) if not meta.empty else Span(1, 1, 1, 1)
        return n.Program(span, _present(children), self.source)

    def network(self, meta: Any, c: list) -> n.Network:
        return n.Network(_span(meta), str(c[0]))

    def import_decl(self, meta: Any, c: list) -> n.Import:
        return n.Import(_span(meta), str(c[0])[1:-1])

    def input_decl(self, meta: Any, c: list) -> n.InputDecl:
        return n.InputDecl(_span(meta), _dims(c[0], self.source))

    def let(self, meta: Any, c: list) -> n.Let:
        return n.Let(_span(meta), tuple(c))

    def train_section(self, meta: Any, c: list) -> n.TrainSection:
        return n.TrainSection(_span(meta), tuple(c))

    def setting(self, meta: Any, c: list) -> n.Setting:
        head, name = (str(c[0]), str(c[1])) if c[1] is not None else (None, str(c[0]))
        return n.Setting(_span(meta), name, False, c[2], head)

    def head(self, meta: Any, c: list) -> n.Head:
        words, name, body = [w for w in c[:-2]], c[-2], c[-1]
        if [w.lower() for w in words] not in (["head"], ["training", "head"]):
            raise CnnError((Diagnostic("syntax", f"unexpected `{' '.join(words + [name])}`", self.source,
                                       _token_span(words[0]),
                                       help="another output is declared as `head NAME = ...` or "
                                            "`training head NAME = ...`"),))
        return n.Head(_span(meta), str(name), len(words) == 2, body)

    def search(self, meta: Any, c: list) -> n.Search:
        return n.Search(_span(meta), tuple(c))

    def domain_decl(self, meta: Any, c: list) -> n.DomainDecl:
        return n.DomainDecl(_span(meta), str(c[0]), c[1] is not None, c[2])

    def int_range(self, meta: Any, c: list) -> n.IntRange:
        low, high = (part.strip() for part in str(c[0]).split(".."))
        return n.IntRange(_span(meta), _integer(c[0], low, self.source), _integer(c[0], high, self.source))

    def choices(self, meta: Any, c: list) -> n.Choices:
        return n.Choices(_span(meta), _present(c))

    def distribution(self, meta: Any, c: list) -> n.Distribution:
        args = c[1] or ()
        return n.Distribution(_span(meta), str(c[0]), tuple(a for a in args if not isinstance(a, n.Kwarg)),
                              tuple(a for a in args if isinstance(a, n.Kwarg)))

    def binding(self, meta: Any, c: list) -> n.Binding:
        return n.Binding(_span(meta), str(c[0]), c[1] is not None, c[2])

    def block(self, meta: Any, c: list) -> n.Block:
        return n.Block(_span(meta), str(c[0]), c[1] or (), c[2])

    def params(self, meta: Any, c: list) -> tuple[n.Param, ...]:
        return _present(c)

    def param(self, meta: Any, c: list) -> n.Param:
        return n.Param(_span(meta), str(c[0]), c[2], c[1] is not None)

    def main(self, meta: Any, c: list) -> n.Main:
        return n.Main(_span(meta), c[0])

    def branches(self, meta: Any, c: list) -> n.Branches:
        return n.Branches(_span(meta), tuple(c))

    def chain(self, meta: Any, c: list) -> n.Chain:
        return n.Chain(_span(meta), tuple(c))

    def conditional(self, meta: Any, c: list) -> n.Conditional:
        return n.Conditional(_span(meta), c[0], c[1], c[2])

    def or_op(self, meta: Any, c: list) -> n.BoolOp:
        return n.BoolOp(_span(meta), "or", c[0], c[1])

    def and_op(self, meta: Any, c: list) -> n.BoolOp:
        return n.BoolOp(_span(meta), "and", c[0], c[1])

    def not_op(self, meta: Any, c: list) -> n.Not:
        return n.Not(_span(meta), c[0])

    def compare(self, meta: Any, c: list) -> n.Compare:
        return n.Compare(_span(meta), str(c[1]), c[0], c[2])

    def binop(self, meta: Any, c: list) -> n.BinOp:
        return n.BinOp(_span(meta), str(c[1]), c[0], c[2])

    def repeat_as(self, meta: Any, c: list) -> n.RepeatAs:
        return n.RepeatAs(_span(meta), c[0], c[2], str(c[3]))

    def unary(self, meta: Any, c: list) -> n.Unary:
        return n.Unary(_span(meta), str(c[0]), c[1])

    def optional(self, meta: Any, c: list) -> n.Optional:
        return n.Optional(_span(meta), c[0])

    def index(self, meta: Any, c: list) -> n.Index:
        return n.Index(_span(meta), c[0], c[1])

    def int(self, meta: Any, c: list) -> n.Int:
        return n.Int(_span(meta), _integer(c[0], str(c[0]), self.source))

    def float(self, meta: Any, c: list) -> n.Float:
        value = float(c[0])
        if not math.isfinite(value):
            raise _literal_too_large(c[0], self.source, "a 64-bit float")
        return n.Float(_span(meta), value)

    def dims(self, meta: Any, c: list) -> n.Dims:
        return n.Dims(_span(meta), _dims(c[0], self.source))

    def name(self, meta: Any, c: list) -> n.Name:
        return n.Name(_span(meta), str(c[0]))

    def input_ref(self, meta: Any, c: list) -> n.InputRef:
        return n.InputRef(_span(meta))

    def map_ref(self, meta: Any, c: list) -> n.MapRef:
        return n.MapRef(_span(meta), str(c[0])[1:])

    def call(self, meta: Any, c: list) -> n.Call:
        func = n.Name(_token_span(c[0]), str(c[0]))
        args = c[1] or ()
        positional = tuple(a for a in args if not isinstance(a, n.Kwarg))
        keywords = tuple(a for a in args if isinstance(a, n.Kwarg))
        return n.Call(_span(meta), func, positional, keywords)

    def args(self, meta: Any, c: list) -> tuple[n.Expr, ...]:
        return _present(c)

    def kwarg(self, meta: Any, c: list) -> n.Kwarg:
        return n.Kwarg(_span(meta), str(c[0]), c[1])

    def group(self, meta: Any, c: list) -> n.Group:
        return n.Group(_span(meta), c[0])

    def tuple(self, meta: Any, c: list) -> n.Tuple:
        return n.Tuple(_span(meta), _present(c))


def _integer(tok: Token, digits: str, source: Source) -> int:
    """A literal's value, refused (located) past 64 bits before Python converts it: a literal of
    thousands of digits would otherwise cost quadratic time or hit Python's int-string limit."""
    digits = digits.lstrip("0") or "0"
    if len(digits) > len(str(INT64_MAX)) or int(digits) > INT64_MAX:
        raise _literal_too_large(tok, source, "64 bits")
    return int(digits)


def _literal_too_large(tok: Token, source: Source, what: str) -> CnnError:
    return CnnError((Diagnostic("limit", f"the number does not fit in {what}", source, _token_span(tok),
                                help=f"sizes, counts and totals are limited to {INT64_MAX:,}"),))


def _dims(tok: Token, source: Source) -> tuple[int, ...]:
    return tuple(_integer(tok, part, source) for part in str(tok).lower().split("x"))


def parse(source: Source) -> n.Program:
    """Parse a whole spec; raise `CnnError` with a rendered syntax diagnostic on bad input."""
    if len(source.text) > MAX_SOURCE_BYTES // 4 and len(source.text.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise CnnError((too_large(source),))
    try:
        tree = _lark().parse(source.text)
        return _ToAst(source).transform(tree)
    except _TooDeep as err:
        raise CnnError((Diagnostic("limit", f"brackets nested more than {MAX_NESTING} deep", source,
                                   _token_span(err.token), help="flatten the spec with a `block`"),)) from None
    except UnexpectedInput as err:
        raise CnnError((_syntax_diagnostic(err, source),)) from None
    except VisitError as err:  # an error raised inside the transformer
        if isinstance(err.orig_exc, CnnError):
            raise err.orig_exc from None
        raise
    except RecursionError:
        raise CnnError((Diagnostic("limit", "the spec is nested too deeply to parse", source, source.start(),
                                   help="split long expressions with `let` or `block`"),)) from None


def too_large(source: Source) -> Diagnostic:
    """The diagnostic for a spec over `MAX_SOURCE_BYTES`, shown at its first character."""
    return Diagnostic("limit", f"the spec is larger than {MAX_SOURCE_BYTES // 1_000_000} MB", source, source.start(),
                      help="a network spec is a few KB; generate repetition with `[...]*N` instead")


def _syntax_diagnostic(err: UnexpectedInput, source: Source) -> Diagnostic:
    """Turn lark's exception into a diagnostic with the smallest useful span and a hint."""
    if isinstance(err, UnexpectedCharacters):
        char = source.text[err.pos_in_stream] if err.pos_in_stream < len(source.text) else "?"
        span = Span(err.line, err.column, err.line, err.column + 1)
        return Diagnostic("syntax", f"unexpected character `{char}`", source, span,
                          help=_character_help(char))
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    expected = sorted({_TERMINAL_NAMES.get(t, t) for t in err.expected if t in _TERMINAL_NAMES})
    at_end = tok.type in ("$END", "_NL")
    if at_end:
        line = tok.line if tok.type == "_NL" else source.text.rstrip().count("\n") + 1
        text = source.line_text(line)
        col = len(text.rstrip()) + 1
        span = Span(line, col, line, col + 1)
    else:
        span = _token_span(tok)
    note = None  # a long list of expected tokens helps nobody: name them only when there are few
    if 0 < len(expected) <= 6:
        note = f"expected {', '.join(expected[:-1])} or {expected[-1]}" if len(expected) > 1 else \
            f"expected {expected[0]}"
    notes = (note,) if note else ()
    if at_end and ({"_RPAR", "_RSQB"} & set(err.expected)):
        closer = "`)`" if "_RPAR" in err.expected else "`]`"
        return Diagnostic("syntax", f"unclosed bracket: the line ends before {closer}", source,
                          span, notes, help=f"add the missing {closer}")
    if tok.type == "PATH":
        return Diagnostic("syntax", f"unexpected quoted text {tok}", source, span,
                          help="the language has no strings: write names without quotes, e.g. `pad=same` (quotes "
                               "are for `import \"file.cnn\"` lines only)")
    if tok.type == "NAME" and re.fullmatch(r"[xX][0-9]+", str(tok)):
        return Diagnostic("syntax", f"`{tok}` is not an operator", source, span,
                          help=f"repeat a group with `*`: `[...]*{str(tok)[1:]}`")
    if _inside_call(source, tok) and "_COMMA" in err.expected and tok.type in ("NAME", "INT", "FLOAT", "DIMS"):
        return Diagnostic("syntax", f"missing `,` before `{tok}`", source, span,
                          help="separate arguments with `,`")
    if not at_end and "_ARROW" in err.expected and tok.type in ("NAME", "_LSQB", "_INPUT"):
        return Diagnostic("syntax", f"missing `->` before `{tok}`", source, span, notes,
                          help="layers in a chain are joined with `->`")
    what = "the end of the line" if tok.type == "_NL" else (
        "the end of the file" if tok.type == "$END" else f"`{tok}`")
    return Diagnostic("syntax", f"unexpected {what}", source, span, notes)


def _inside_call(source: Source, tok: Token) -> bool:
    """Whether `tok` stands inside `(...)` (an argument list or tuple) rather than `[...]` or at the top."""
    stack = []
    for t in _lark().lex(source.text[: tok.start_pos]):
        if t.type in _OPENERS:
            stack.append(t.type)
        elif t.type in _CLOSERS and stack:
            stack.pop()
    return bool(stack) and stack[-1] == "_LPAR"


def _character_help(char: str) -> str | None:
    if char in "\"'":
        return "the language has no strings: write names without quotes, e.g. `pad=same`"
    if char == ";":
        return "statements end at the end of the line; no `;` is needed"
    if char in "{}":
        return "group layers with `[...]` and arguments with `(...)`"
    return None


def _resolved(path: str | os.PathLike[str]) -> str:
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):
        return "a loop of links"


def _is_cnn_file(path: str | os.PathLike[str]) -> bool:
    """Whether the file a path names, links followed, is called *.cnn: diagnostics quote a spec's lines,
    so only such files are read as specs (as `import` does)."""
    return _resolved(path).lower().endswith(".cnn")


def load_source(spec: str | os.PathLike[str]) -> Source:
    """A `Source` from a path or from spec text (see `looks_like_path`).

    A file is checked before it is read (`read_source_file`): a missing path, a directory, a pipe or a
    device is a `UsageError`; more than 2 MB, or bytes that are not UTF-8, a located `CnnError`.
    """
    if not looks_like_path(spec):
        return Source(str(spec))
    shown = os.fspath(spec)
    try:
        data, truncated = read_source_file(spec)
    except SourceFileError as err:
        raise UsageError(str(err)) from None
    if not _is_cnn_file(spec):  # its diagnostics would quote another kind of file (a password file, by a link)
        raise UsageError(f"{shown} is not a .cnn file" + (f" (it resolves to {_resolved(spec)})"
                                                          if Path(shown).is_symlink() else ""),
                         "cnndsl reads specs from files named *.cnn: rename it, or link a .cnn name to a .cnn file")
    if truncated:
        source = Source(data[:4096].decode("utf-8", "replace"), shown)
        raise CnnError((too_large(source),))
    try:
        return Source(data.decode("utf-8"), shown)
    except UnicodeDecodeError as err:
        source = Source(data.decode("utf-8", "replace"), shown)
        # Counted in the text as Source normalizes it (no byte-order mark, any line ending): valid UTF-8,
        # since it precedes the first bad byte.
        before = normalize_text(data[: err.start].decode("utf-8"))
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        raise CnnError((Diagnostic("syntax", f"the file is not UTF-8 text: byte 0x{data[err.start]:02x} cannot start "
                                             "a character here", source, Span(line, col, line, col + 1),
                                   help="save the spec as UTF-8"),)) from None
