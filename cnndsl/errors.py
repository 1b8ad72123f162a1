"""Diagnostics: every problem in a spec, rendered like rustc with lark's caret and jinja's hint.

A stage collects every `Diagnostic` it finds and raises them together in one `CnnError`, so a user
sees all problems at once. `render()` is the only place that decides what an error looks like.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnndsl.source import Source, Span

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

    def render(self) -> str:
        """The rustc-style text: header, `--> file:line:col`, source line, caret, notes, help."""
        lines = [f"error[{self.kind}]: {self.message}"]
        if self.source is not None and self.span is not None:
            gutter = len(str(self.span.line)) + 1
            pad = " " * gutter
            text = self.source.line_text(self.span.line).replace("\t", " ")
            end = self.span.end_col if self.span.end_line == self.span.line else len(text) + 1
            width = max(1, min(end, len(text) + 1) - self.span.col)
            lines += [
                f"{pad}--> {self.source.path}:{self.span.line}:{self.span.col}",
                f"{pad} |",
                f"{self.span.line:>{gutter}} | {text}".rstrip(),
                f"{pad} | {' ' * (self.span.col - 1)}{'^' * width}",
            ]
        elif self.source is not None:
            lines.append(f"  --> {self.source.path}")
        indent = " " * (len(str(self.span.line)) + 2 if self.span else 3)
        lines += [f"{indent}= note: {note}" for note in self.notes]
        if self.help:
            lines.append(f"{indent}= help: {self.help}")
        return "\n".join(lines)


@dataclass
class CnnError(Exception):
    """The root of cnndsl's errors: one or more diagnostics about a spec (exit status 1)."""

    diagnostics: tuple[Diagnostic, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        super().__init__(self.render())

    def __str__(self) -> str:
        return self.render()

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
