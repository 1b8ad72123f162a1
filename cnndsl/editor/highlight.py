"""A Pygments lexer for `.cnn` files: `CnnLexer` (aliases `cnn`, `cnndsl`), registered under Pygments'
`pygments.lexers` entry point, so Sphinx, MkDocs, Jupyter and `pygmentize` highlight ```cnn blocks once
cnndsl is installed.

Its token classes follow the grammar (grammar/cnn.lark): keywords, the soft keywords `head` and `training`
at a statement's start, builtin layers and combinators (from `cnndsl.lang.layers`, so a new builtin is
highlighted without touching this file), constants, numeric functions, named feature maps (`@e1`), sizes
(`3x3`), ranges (`1..3`), numbers, import paths, operators and punctuation. Anything else is an error token,
which the tests check no example contains.
"""

from __future__ import annotations

import re

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import (
    Comment,
    Error,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Whitespace,
)

from cnndsl.lang.expand import FUNCTIONS
from cnndsl.lang.layers import BUILTINS, COMBINATORS, CONSTANTS

#: The language's keywords (grammar/cnn.lark's string terminals), case-insensitive as the grammar has them.
KEYWORDS = ("network", "import", "input", "let", "block", "train", "search", "in", "as", "if", "else", "and",
            "or", "not")


def _words(names: object) -> str:
    return words(sorted(names, key=len, reverse=True), suffix=r"\b").get()  # type: ignore[arg-type]


class CnnLexer(RegexLexer):
    """Pygments lexer for the cnndsl language."""

    name = "cnndsl"
    aliases = ["cnn", "cnndsl"]
    filenames = ["*.cnn"]
    mimetypes = ["text/x-cnndsl"]
    flags = re.IGNORECASE | re.MULTILINE

    tokens = {
        "root": [
            (r"[ \t\f\r]+", Whitespace),
            (r"\n", Whitespace),
            (r"\\\r?\n", Whitespace),  # a line continued
            (r"#[^\n]*", Comment.Single),
            # soft keywords: words only at a statement's start, before the head's name
            (r"^(training)([ \t]+)(head)([ \t]+)([A-Za-z_]\w*)",
             bygroups(Keyword, Whitespace, Keyword, Whitespace, Name.Function)),
            (r"^(head)([ \t]+)([A-Za-z_]\w*)(?=[ \t]*=)", bygroups(Keyword, Whitespace, Name.Function)),
            (r"(block)([ \t]+)([A-Za-z_]\w*)", bygroups(Keyword, Whitespace, Name.Function)),
            (_words(KEYWORDS), Keyword),
            (r'"[^"\n]*(?:"|$)', String),  # a path; one left open while typing runs to the end of its line
            (r"@[A-Za-z_]\w*", Name.Label),  # a named feature map
            (r"[0-9]+[ \t]*\.\.[ \t]*[0-9]+", Number.Integer),  # a range 1..3
            (r"[0-9]+(?:[xX][0-9]+)+\b", Number),  # a size 3x3, 224x224x3
            (r"([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+", Number.Float),
            (r"[0-9]+", Number.Integer),
            (_words(CONSTANTS), Keyword.Constant),
            (_words(set(BUILTINS) | set(COMBINATORS)), Name.Builtin),
            (_words(FUNCTIONS), Name.Builtin.Pseudo),
            (r"[A-Za-z_]\w*", Name),
            (r"->|\*\*|//|==|!=|<=|>=|[|*/%+\-<>?]", Operator),
            (r"[()\[\]{},=]", Punctuation),
            (r".", Error),
        ],
    }
