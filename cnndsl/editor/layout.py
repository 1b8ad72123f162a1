"""A small Wadler/prettier-style document printer: the layout engine under `cnndsl fmt`.

A document is a tree of: `str` (text, never a newline), lists (concatenation), `Line` (a space or nothing when
its group fits on the line, a newline otherwise; `HARD` always breaks), `Group` (laid out flat when all of it
fits in the width, else broken), `Indent` (deeper lines inside), `Fill` (items joined by separators that break
one at a time, only where the next item would not fit: how a long chain wraps at `->`), `Suffix` (a trailing
comment, written at the end of its line) and `LineStart` (a newline unless the line holds nothing yet: where an
own-line comment goes). A group holding a hard line, a trailing comment or an own-line comment is broken.

The printer is prettier's (`printDocToString`): one stack of (indent, mode, doc), a group's fit measured up to
the next possible line break after it. It is iterative, so document depth costs no recursion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

Doc = Union[str, list, "Line", "Group", "Indent", "Fill", "Suffix", "LineStart"]

_FLAT, _BREAK = 0, 1


@dataclass(frozen=True, slots=True)
class Line:
    """A break point: `flat` text when its group fits, a newline at the current indentation otherwise."""

    flat: str = " "
    hard: bool = False


SOFT = Line("")
SPACE = Line(" ")
HARD = Line("", hard=True)


@dataclass(slots=True)
class Group:
    """Laid out flat if it fits in the rest of the line, else broken; `broken` is set by `propagate_breaks`."""

    contents: Doc
    broken: bool = False


@dataclass(frozen=True, slots=True)
class Indent:
    """Lines inside start `by` columns deeper."""

    by: int
    contents: Doc


@dataclass(slots=True)
class Fill:
    """`first`, then each (separator, item): a separator breaks only where its item would not fit, where it is
    hard, or after an item laid out on several lines. Lines after the first start `continuation` deeper."""

    first: Doc
    rest: Sequence[tuple[Line, Doc]] = field(default_factory=list)
    continuation: int = 0


@dataclass(frozen=True, slots=True)
class Suffix:
    """A trailing comment: written at the end of the line it was met on, before the newline."""

    text: str


@dataclass(frozen=True, slots=True)
class LineStart:
    """A newline unless the current line is still empty (an own-line comment goes on a line of its own)."""


def propagate_breaks(doc: Doc) -> bool:
    """Mark every group that holds a forced break as broken; return whether `doc` holds one. Iterative.

    A forced break is a hard line, an own-line comment, or a trailing comment with something after it in the
    group: a comment at a group's very end is written after the group and leaves it flat."""
    done: dict[int, tuple[bool, bool]] = {}  # id -> (holds a forced break, ends with a trailing comment)
    stack: list[tuple[Doc, bool]] = [(doc, False)]
    while stack:
        node, visited = stack.pop()
        children = _children(node)
        if not visited:
            stack.append((node, True))
            stack.extend((child, False) for child in children)
            continue
        if isinstance(node, Suffix):
            done[id(node)] = (False, True)
            continue
        breaks = (isinstance(node, Line) and node.hard) or isinstance(node, LineStart)
        ends_in_comment = False
        for child in children:
            if child == "":
                continue
            child_breaks, child_ends = done[id(child)]
            breaks = breaks or child_breaks or ends_in_comment  # something follows a trailing comment
            ends_in_comment = child_ends
        if isinstance(node, Group) and breaks:
            node.broken = True
        done[id(node)] = (breaks, ends_in_comment)
    return done[id(doc)][0]


def _children(node: Doc) -> list:
    if isinstance(node, list):
        return node
    if isinstance(node, (Group, Indent)):
        return [node.contents]
    if isinstance(node, Fill):
        return [node.first] + [part for pair in node.rest for part in pair]
    return []


def _fits(next_cmd: tuple[int, int, Doc], rest: list, width: int, must_be_flat: bool = False) -> bool:
    """Whether `next_cmd` in its mode, then what follows it up to the next line break, fits in `width`;
    `must_be_flat`: a broken group inside does not fit (a fill's item is laid out flat or not at all)."""
    pending = [next_cmd]
    rest_index = len(rest)
    while width >= 0:
        if not pending:
            if rest_index == 0:
                return True
            rest_index -= 1
            pending.append(rest[rest_index])
            continue
        indent, mode, node = pending.pop()
        if isinstance(node, str):
            width -= len(node)
        elif isinstance(node, list):
            pending.extend((indent, mode, child) for child in reversed(node))
        elif isinstance(node, Indent):
            pending.append((indent, mode, node.contents))
        elif isinstance(node, Group):
            if must_be_flat and node.broken:
                return False
            pending.append((indent, _BREAK if node.broken else mode, node.contents))
        elif isinstance(node, Fill):
            pending.extend((indent, mode, child) for child in reversed(_children(node)))
        elif isinstance(node, Line):
            if mode == _BREAK or node.hard:
                return True
            width -= len(node.flat)
        elif isinstance(node, (LineStart, _Deferred)):
            return True  # a line break may come here: what follows is measured no further
    return False


def render(doc: Doc, width: int) -> list[tuple[str, str]]:
    """Lay `doc` out in `width` columns: a list of lines, each (code, trailing comment or "")."""
    propagate_breaks(doc)
    lines: list[tuple[str, str]] = []
    current: list[str] = []
    column = 0
    suffixes: list[str] = []
    stack: list[tuple[int, int, Doc]] = [(0, _BREAK, doc)]

    def newline(indent: int) -> None:
        nonlocal current, column
        lines.append(("".join(current).rstrip(), " ".join(suffixes)))
        suffixes.clear()
        current, column = [" " * indent], indent

    while stack:
        indent, mode, node = stack.pop()
        if isinstance(node, str):
            current.append(node)
            column += len(node)
        elif isinstance(node, list):
            stack.extend((indent, mode, child) for child in reversed(node))
        elif isinstance(node, Indent):
            stack.append((indent + node.by, mode, node.contents))
        elif isinstance(node, Group):
            flat = (indent, _FLAT, node.contents)
            if not node.broken and (mode == _FLAT or _fits(flat, stack, width - column)):
                stack.append(flat)
            else:
                stack.append((indent, _BREAK, node.contents))
        elif isinstance(node, Fill):
            _fill_step(node, indent, mode, stack, width - column)
        elif isinstance(node, _Deferred):
            _resolve_deferred(node, indent, stack, width - column, comment_pending=bool(suffixes))
        elif isinstance(node, Line):
            if mode == _FLAT and not node.hard:
                current.append(node.flat)
                column += len(node.flat)
            else:
                newline(indent)
        elif isinstance(node, LineStart):
            if "".join(current).strip():
                newline(indent)
            else:
                current, column = [" " * indent], indent
        elif isinstance(node, Suffix):
            suffixes.append(node.text)
    lines.append(("".join(current).rstrip(), " ".join(suffixes)))
    return lines


def _fill_step(node: Fill, indent: int, mode: int, stack: list, width: int) -> None:
    """Lay out a fill's first item, and queue its next separator+item as a fill of their own."""
    first = (indent, _FLAT, node.first)
    after = stack if not node.rest else []  # the last item must fit with whatever follows the fill
    flat = mode == _FLAT or _fits(first, after, width, must_be_flat=True)
    if node.rest:
        separator, item = node.rest[0]
        following = Fill(item, node.rest[1:])
        inner = indent + node.continuation
        if mode == _FLAT and not separator.hard:
            stack.append((inner, _FLAT, following))
            stack.append((inner, _FLAT, separator))
        else:
            stack.append((inner, mode, _Deferred(separator, following, after_break=not flat)))
    stack.append(first if flat else (indent, _BREAK, node.first))


@dataclass(frozen=True, slots=True)
class _Deferred:
    """A fill's separator, decided when reached: flat if the item after it fits on the line."""

    separator: Line
    following: Fill
    after_break: bool  # the item before it was laid out broken (on several lines)


def _resolve_deferred(node: _Deferred, indent: int, stack: list, width: int, comment_pending: bool) -> None:
    """A fill's separator breaks when it is hard, after an item laid out on several lines, when a trailing
    comment waits for the line's end, or when the item after it does not fit flat on the line."""
    item = (indent, _FLAT, [node.separator.flat, node.following.first])
    after = stack if not node.following.rest else []
    flat = not (node.separator.hard or node.after_break or comment_pending) and \
        _fits(item, after, width, must_be_flat=True)
    stack.append((indent, _BREAK, node.following))
    stack.append((indent, _FLAT if flat else _BREAK, node.separator))
