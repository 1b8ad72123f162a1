"""Source text and spans: where every AST and IR node came from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Files larger than this are refused before parsing (a spec is a few KB; this guards the parser).
MAX_SOURCE_BYTES = 2_000_000


@dataclass(frozen=True)
class Span:
    """A region of a source: 1-based line and column of the first character, end exclusive."""

    line: int
    col: int
    end_line: int
    end_col: int

    def cover(self, other: Span) -> Span:
        """The smallest span containing both."""
        start = min((self.line, self.col), (other.line, other.col))
        end = max((self.end_line, self.end_col), (other.end_line, other.end_col))
        return Span(start[0], start[1], end[0], end[1])


@dataclass(frozen=True)
class Source:
    """The text of a `.cnn` spec and the name it is shown under in diagnostics."""

    text: str
    path: str = "<spec>"

    def line_text(self, line: int) -> str:
        """The text of a 1-based line, without its newline ('' past the end)."""
        lines = self.text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else ""

    def snippet(self, span: Span) -> str:
        """The source text a single-line span covers (the first line of a longer one)."""
        text = self.line_text(span.line)
        end = span.end_col if span.end_line == span.line else len(text) + 1
        return text[span.col - 1 : end - 1]


def looks_like_path(spec: str | os.PathLike[str]) -> bool:
    """Whether `spec` names a file rather than holding spec text.

    A `PathLike` is a path. A string is a path when it is one line that names an existing file or
    ends in `.cnn`; anything else (newlines, `->`) is spec text.
    """
    if isinstance(spec, os.PathLike):
        return True
    if "\n" in spec or "->" in spec:
        return False
    return spec.endswith(".cnn") or Path(spec).exists()
