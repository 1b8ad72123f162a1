"""Diagnostics: every problem in a spec, rendered like rustc with lark's caret and jinja's hint.

A stage collects every `Diagnostic` it finds and raises them together in one `CnnError`, so a user
sees all problems at once. `render()` is the only place that decides what an error looks like.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnndsl.lang.source import Source, Span

#: How many diagnostics `CnnError.render` prints before it says "... and N more".
RENDER_LIMIT = 20


@dataclass(frozen=True)
class Diagnostic:
    """One problem: a kind (`syntax`, `name`, `type`, `shape`, ...), a message, where, and a fix."""

    kind: str
    message: str
    source: Source | None = None
    span: Span | None = None
    notes: tuple[str, ...] = ()
    help: str | None = None
    #: A "did you mean" fix: (the misspelled word inside the span, its replacement); an editor offers it.
    fix: tuple[str, str] | None = None

    def to_dict(self) -> dict[str, object]:
        """The diagnostic as `check --json` prints it: kind, message, file, line, col, end_line, end_col,
        notes, help, fix (positions 1-based, end exclusive; null where there is none; fix:
        {"replace": word in the span, "with": its correction})."""
        span = self.span
        return {"kind": self.kind, "message": self.message, "file": self.source.path if self.source else None,
                "line": span.line if span else None, "col": span.col if span else None,
                "end_line": span.end_line if span else None, "end_col": span.end_col if span else None,
                "notes": list(self.notes), "help": self.help,
                "fix": {"replace": self.fix[0], "with": self.fix[1]} if self.fix else None}

    def render(self) -> str:
        """The rustc-style text: header, `--> file:line:col`, source line, caret, notes, help.

        Control characters are escaped (a NUL or an escape sequence in a spec never reaches the
        terminal raw) and a long source line is cut to a window around the caret.
        """
        lines = [f"error[{self.kind}]: {printable(self.message)}"]
        span = self.span if self.span is not None or self.source is None else self.source.start()
        if self.source is not None and span is not None:
            gutter = len(str(span.line)) + 1
            pad = " " * gutter
            text = self.source.line_text(span.line)
            end = span.end_col if span.end_line == span.line else len(text) + 1
            width = max(1, min(end, len(text) + 1) - span.col)
            shown, offset = _window(text, span.col - 1, width)
            lines += [
                f"{pad}--> {printable(self.source.path)}:{span.line}:{span.col}",
                f"{pad} |",
                f"{span.line:>{gutter}} | {shown}".rstrip(),
                f"{pad} | {' ' * offset}{'^' * min(width, max(1, len(shown) - offset))}",
            ]
        indent = " " * (len(str(span.line)) + 2 if span else 3)
        lines += [f"{indent}= note: {printable(note)}" for note in self.notes]
        if self.help:
            lines.append(f"{indent}= help: {printable(self.help)}")
        return "\n".join(lines)


#: The widest source line shown in full; longer ones are cut around the caret.
SHOWN_LINE = 120


def _window(text: str, start: int, width: int) -> tuple[str, int]:
    """`text` made safe to show (one column per character) and cut to `SHOWN_LINE` around the span at
    `start`; returns it and where the span starts in it."""
    text = "".join(" " if c == "\t" else ("\ufffd" if _is_control(c) else c) for c in text[: start + SHOWN_LINE * 2])
    if len(text) <= SHOWN_LINE:
        return text, start
    left = max(0, min(start - SHOWN_LINE // 3, len(text) - SHOWN_LINE))
    cut = text[left : left + SHOWN_LINE]
    prefix, suffix = ("…" if left > 0 else ""), ("…" if left + SHOWN_LINE < len(text) else "")
    return prefix + cut + suffix, start - left + len(prefix)


def _is_control(c: str) -> bool:
    return c < " " or "\x7f" <= c <= "\x9f" or c in "\u2028\u2029"


def printable(text: str) -> str:
    """`text` with control characters (NUL, escape, newlines, U+2028) written as escapes: `\\x00`."""
    if not any(_is_control(c) for c in text):
        return text
    return "".join((repr(c)[1:-1] if c not in "\u2028\u2029" else f"\\u{ord(c):04x}") if _is_control(c) else c
                   for c in text)


@dataclass
class CnnError(Exception):
    """The root of cnndsl's errors: one or more diagnostics about a spec (exit status 1)."""

    diagnostics: tuple[Diagnostic, ...] = field(default_factory=tuple)
    free_names: tuple[str, ...] = ()  # a family's unbound names, in the order expansion met them

    def __post_init__(self) -> None:
        super().__init__(self.render())

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        first = self.diagnostics[0] if self.diagnostics else None
        where = f" at {first.source.path}:{first.span.line}:{first.span.col}" if first and first.source and first.span else ""
        head = f"{first.kind}: {first.message}{where}" if first else "no diagnostics"
        more = f" and {len(self.diagnostics) - 1} more" if len(self.diagnostics) > 1 else ""
        return f"{type(self).__name__}({head}{more})"

    def render(self, limit: int = RENDER_LIMIT) -> str:
        """All diagnostics, blank-line separated; past `limit` a count of the rest."""
        shown = [d.render() for d in self.diagnostics[:limit]]
        rest = len(self.diagnostics) - limit
        if rest > 0:
            shown.append(f"... and {rest} more error{'s' if rest > 1 else ''}")
        return "\n\n".join(shown)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kind of each diagnostic, in order (handy in tests)."""
        return tuple(d.kind for d in self.diagnostics)


class UsageError(CnnError):
    """A command-line or API misuse rather than a problem in the spec (exit status 2)."""

    def __init__(self, message: str, help: str | None = None) -> None:
        super().__init__((Diagnostic("usage", message, help=help),))


def closest(name: str, candidates: list[str] | set[str]) -> str | None:
    """The candidate most like `name` (case-insensitive), for "did you mean" hints."""
    import difflib

    lowered = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.75)
    return lowered[match[0]] if match else None
