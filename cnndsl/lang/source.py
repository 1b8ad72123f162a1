"""Source text and spans: where every AST and IR node came from, and how a spec file is read safely."""

from __future__ import annotations

import functools
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cnndsl.lang.limits import MAX_SOURCE_BYTES


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


def normalize_text(text: str) -> str:
    """Spec text as every stage sees it: no byte-order mark, and `\\n` the only line ending (`\\r\\n` and
    a lone `\\r`, the old Mac ending, both become `\\n`), so lark, spans and displayed lines agree."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


@dataclass(frozen=True)
class Source:
    """The text of a `.cnn` spec and the name it is shown under in diagnostics.

    The text is normalized on construction (`normalize_text`). Lines are split on `\\n` only, as the
    parser counts them: U+2028, form feeds and other characters Python calls line breaks stay inside
    their line.
    """

    text: str
    path: str = "<spec>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", normalize_text(self.text))

    def __repr__(self) -> str:
        return f"Source({self.path!r}, {len(self.lines)} lines)"

    @functools.cached_property
    def lines(self) -> tuple[str, ...]:
        """The text's lines, without their newlines."""
        return tuple(self.text.split("\n"))

    def line_text(self, line: int) -> str:
        """The text of a 1-based line, without its newline ('' past the end)."""
        return self.lines[line - 1] if 0 < line <= len(self.lines) else ""

    def snippet(self, span: Span) -> str:
        """The source text a single-line span covers (the first line of a longer one)."""
        text = self.line_text(span.line)
        end = span.end_col if span.end_line == span.line else len(text) + 1
        return text[span.col - 1 : end - 1]

    def text_of(self, span: Span) -> str:
        """The exact source text a span covers, over any number of lines."""
        if span.line == span.end_line:
            return self.snippet(span)
        lines = [self.line_text(span.line)[span.col - 1:]]
        lines += [self.line_text(k) for k in range(span.line + 1, span.end_line)]
        lines.append(self.line_text(span.end_line)[: span.end_col - 1])
        return "\n".join(lines)

    def start(self) -> Span:
        """The first character: where a problem with the whole file is shown."""
        return Span(1, 1, 1, 2)

    def end(self) -> Span:
        """Just after the last non-blank line: where something missing from the file belongs."""
        line = max((i for i, text in enumerate(self.lines, 1) if text.strip()), default=1)
        col = len(self.line_text(line).rstrip()) + 1
        return Span(line, col, line, col + 1)


def looks_like_path(spec: str | os.PathLike[str]) -> bool:
    """Whether `spec` names a file rather than holding spec text.

    A `PathLike` is a path. A string is a path when it is one line that names an existing file or
    ends in `.cnn`; anything else (newlines, `->`, a name no file system accepts) is spec text.
    """
    if isinstance(spec, os.PathLike):
        return True
    if not spec.strip() or "\n" in spec or "\r" in spec or "->" in spec:
        return False
    try:
        return spec.endswith(".cnn") or Path(spec).exists()
    except (OSError, ValueError):  # too long for a file name, or a NUL in it
        return False


class SourceFileError(Exception):
    """A spec path that cannot be read as a file (missing, a directory, a FIFO or device)."""


def read_source_file(path: str | os.PathLike[str]) -> tuple[bytes, bool]:
    """The bytes of a spec file, at most `MAX_SOURCE_BYTES`, and whether the file holds more.

    The file is checked before it is read: only regular files are read (a FIFO would block, a device
    like /dev/zero never ends), and never more than the limit plus one byte, whatever its size.
    Raises `SourceFileError` with a message naming the path.
    """
    shown = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not wait; it is refused just below.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise SourceFileError(f"no such file: {shown}") from None
    except NotADirectoryError:
        raise SourceFileError(f"{shown}: a part of this path is a file, not a directory") from None
    except IsADirectoryError:
        raise SourceFileError(f"{shown} is a directory, not a .cnn file") from None
    except OSError as err:
        raise SourceFileError(f"cannot read {shown}: {err.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise SourceFileError(f"{shown} is a directory, not a .cnn file")
        if not stat.S_ISREG(info.st_mode):
            raise SourceFileError(f"{shown} is not a regular file (a pipe, socket or device); give a .cnn file")
        chunks, size = [], 0
        while size <= MAX_SOURCE_BYTES:
            chunk = os.read(fd, MAX_SOURCE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as err:
        raise SourceFileError(f"cannot read {shown}: {err.strerror}") from None
    finally:
        os.close(fd)
    return data[:MAX_SOURCE_BYTES], len(data) > MAX_SOURCE_BYTES
