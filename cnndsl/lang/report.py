"""The result of `check`: one row per layer with its group path, shape and costs, and totals.

`Report.to_dict()` is the `--json` schema; `render_table()` is the summary `cnndsl check` prints,
an indented tree whose group rows (blocks, repetitions, branches) carry their subtotals and can be
collapsed with `depth`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cnndsl.lang import ir
from cnndsl.lang.costs import Cost, node_cost, parameter_shapes
from cnndsl.lang.limits import INT64_MAX
from cnndsl.lang.shapes import Inferred, fmt

BYTES_PER_ACTIVATION = 4  # float32


@dataclass(frozen=True)
class Row:
    """One layer: where it is in the spec, what it does, its output and its costs."""

    name: str
    op: str
    path: tuple[ir.Frame, ...]
    output_shape: ir.Shape
    params: int
    state: int
    macs: int
    note: str
    line: int
    col: int
    arrays: tuple[tuple[str, tuple[int, ...]], ...] = ()  # parameter and state arrays: ("conv1/kernel", shape)
    file: str | None = None  # the imported file the layer is written in; None: the spec's own

    def to_dict(self) -> dict[str, Any]:
        """The row as `--json` prints it."""
        return {"name": self.name, "op": self.op, "path": [f.label for f in self.path],
                "output_shape": list(self.output_shape), "params": self.params, "state": self.state,
                "macs": self.macs, "arrays": {name: list(shape) for name, shape in self.arrays},
                "note": self.note, "line": self.line, "col": self.col, **({"file": self.file} if self.file else {})}


@dataclass(frozen=True)
class Report:
    """A checked network: its layers and totals (the same object the CLI prints)."""

    name: str
    graph: ir.Graph
    rows: tuple[Row, ...]
    input_shape: ir.Shape
    output_shape: ir.Shape
    train_settings: tuple[tuple[str, Any], ...] = ()  # the spec's `train` lines, checked

    @classmethod
    def build(cls, graph: ir.Graph, inferred: list[Inferred]) -> Report:
        """Rows and costs for every node of a graph whose shapes are known."""
        rows = []
        named = {tap.node: tap.name for tap in graph.taps}
        named.setdefault(0, "input")
        for node, out in zip(graph.nodes[1:], inferred[1:]):
            in_shape = inferred[node.inputs[0]].shape if node.inputs else ()
            cost = node_cost(node.op, in_shape, out.shape) if node.inputs else Cost()
            arrays = tuple(parameter_shapes(node.op, in_shape, node.name).items()) if node.inputs else ()
            rows.append(Row(node.name, node.op.label(), node.path, out.shape, cost.params, cost.state, cost.macs,
                            _with_reads(out.note, node, named), node.span.line, node.span.col, arrays,
                            node.source.path if node.source is not None else None))
        return cls(graph.name, graph, tuple(rows), graph.input_shape, inferred[graph.output].shape)

    def __repr__(self) -> str:
        return (f"Report({self.name!r}: {fmt(self.input_shape)} -> {fmt(self.output_shape)}, {len(self.rows)} layers, "
                f"{self.params:,} params, {self.macs:,} MACs)")

    @cached_property  # read once per node by the diagram, the editor's hints and the emitters: built once
    def node_shapes(self) -> tuple[ir.Shape, ...]:
        """The output shape of every graph node, in node order (node 0 is the input)."""
        return (self.input_shape,) + tuple(r.output_shape for r in self.rows)

    @property
    def params(self) -> int:
        """Trainable parameters."""
        return sum(r.params for r in self.rows)

    @property
    def state(self) -> int:
        """Non-trainable state: batch-norm running means and variances."""
        return sum(r.state for r in self.rows)

    @property
    def macs(self) -> int:
        """Multiply-accumulates for one image at inference: training-only heads left out (`head_costs`)."""
        dropped = self.graph.training_only_nodes
        return sum(r.macs for i, r in enumerate(self.rows, start=1) if i not in dropped)

    def head_costs(self) -> list[dict[str, Any]]:
        """Each head's output shape and the parameters and MACs of the layers only it uses."""
        out = []
        for head in self.graph.heads:
            others = self.graph.needed((self.graph.output,) + tuple(h.node for h in self.graph.heads if h is not head))
            own_nodes = self.graph.needed((head.node,)) - others
            own = [r for i, r in enumerate(self.rows, start=1) if i in own_nodes]
            out.append({"name": head.name, "training_only": head.training_only,
                        "output_shape": list(self.node_shapes[head.node]), "params": sum(r.params for r in own),
                        "macs": sum(r.macs for r in own)})
        return out

    @property
    def flops(self) -> int:
        """2 x MACs."""
        return 2 * self.macs

    @property
    def activation_bytes(self) -> int:
        """Bytes of every layer's output for one image, in float32 (the input not counted)."""
        return BYTES_PER_ACTIVATION * sum(math.prod(r.output_shape) for r in self.rows)

    def first_overflow(self) -> tuple[int, str] | None:
        """The first row at which a reported total (parameters, state, MACs, FLOPs, activation bytes)
        passes 64 bits, and what that total is; None when every total fits."""
        params = state = macs = elements = 0
        for i, r in enumerate(self.rows):
            params, state, macs = params + r.params, state + r.state, macs + r.macs
            elements += math.prod(r.output_shape)
            for what, total in (("parameters", params), ("batch-norm state", state), ("MACs", macs),
                                ("FLOPs", 2 * macs), ("activation bytes", BYTES_PER_ACTIVATION * elements)):
                if total > INT64_MAX:
                    return i, what
        return None

    def to_dict(self) -> dict[str, Any]:
        """The `--json` object."""
        return {"network": self.name, "input_shape": list(self.input_shape),
                "output_shape": list(self.output_shape), "params": self.params, "state": self.state,
                "macs": self.macs, "flops": self.flops, "activation_bytes": self.activation_bytes,
                "train": dict(self.train_settings), "layers": [r.to_dict() for r in self.rows],
                **({"heads": self.head_costs()} if self.graph.heads else {})}

    def tree(self, depth: int | None = None) -> list[TreeRow]:
        """The rows as an indented tree: group rows carry subtotals; levels >= `depth` are folded in, and
        a long run of identical rows (the same layers repeated) is shown once, then one row saying how
        many times more it repeats (see `fold_runs`)."""
        members: dict[int, list[Row]] = {}
        for row in self.rows:
            for frame in row.path:
                members.setdefault(frame.id, []).append(row)
        root = _TreeNode(TreeRow(-1, "", "", None, None, "", False), ())
        stack = [root]  # stack[k + 1] is the open group at level k
        open_path: tuple[ir.Frame, ...] = ()
        for row in self.rows:
            path = row.path
            if path and members[path[-1].id] == [row] and path[-1].label == row.op:
                path = path[:-1]  # a join alone in its group (`concat(@a | identity)`): one row, not two
            common = 0
            while common < min(len(open_path), len(path)) and open_path[common].id == path[common].id:
                common += 1
            del stack[common + 1:]
            for level in range(len(stack) - 1, len(path) if depth is None else min(len(path), depth)):
                frame, inside = path[level], members[path[level].id]
                node = _TreeNode(TreeRow(level, frame.label, fmt(inside[-1].output_shape), sum(m.params for m in inside),
                                         sum(m.macs for m in inside), "", True), frame.span if frame.repeat else frame.label)
                stack[-1].children.append(node)
                stack.append(node)
            open_path = path
            if depth is None or len(path) < depth:
                leaf = TreeRow(len(path), row.op, fmt(row.output_shape), row.params, row.macs, row.note, False)
                stack[-1].children.append(_TreeNode(leaf, leaf))
        out = [TreeRow(0, "input", fmt(self.input_shape), None, None, "", False)]
        root.emit(out, {})
        return out

    def render_table(self, depth: int | None = None, width: int | None = None) -> str:
        """The summary table as text, then the totals: plain string formatting, so a network of 100,000
        layers prints as fast as its JSON; the layer column wraps to fit `width` (default 110)."""
        rows = [("  " * r.level + r.label + (f" ({r.note})" if r.note else ""), r.output, _num(r.params), _num(r.macs),
                 r.level) for r in self.tree(depth)]
        header = ("layer", "output", "params", "MACs")
        widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(4)]
        fixed = sum(widths[1:]) + 3 * 3
        widths[0] = max(12, min(widths[0], (width or 110) - fixed))
        lines = [self.name,
                 " ┃ ".join([header[0].ljust(widths[0])] + [h.rjust(w) for h, w in zip(header[1:], widths[1:])]),
                 "━╇━".join("━" * w for w in widths)]
        for label, output, params, macs, level in rows:
            parts = _wrap(label, widths[0], "  " * level + "  ")
            lines.append(" │ ".join([parts[0].ljust(widths[0]), output.rjust(widths[1]), params.rjust(widths[2]),
                                     macs.rjust(widths[3])]).rstrip())
            lines += [f"{part.ljust(widths[0])} │ {'':>{widths[1]}} │ {'':>{widths[2]}} │".rstrip() for part in parts[1:]]
        return "\n".join(lines) + "\n" + self.totals_text() + "\n"

    #: How deep a notebook's table opens its groups (`render_table(depth=None)` shows every layer).
    NOTEBOOK_DEPTH = 2

    def _repr_html_(self) -> str:
        """The summary in a notebook cell (IPython's rich display): the table of `cnndsl check --depth 2` as
        HTML, groups with their subtotals, then the totals."""
        from html import escape

        cells = "".join(
            f"<tr><td style='text-align:left;padding-left:{0.3 + 1.2 * r.level:.1f}em'>"
            f"{'<b>' if r.group else ''}{escape(r.label)}{'</b>' if r.group else ''}"
            f"{f' <i>({escape(r.note)})</i>' if r.note else ''}</td><td{_RIGHT}>{escape(r.output)}</td>"
            f"<td{_RIGHT}>{_num(r.params)}</td><td{_RIGHT}>{_num(r.macs)}</td></tr>" for r in self.tree(self.NOTEBOOK_DEPTH))
        totals = "".join(f"<tr><td style='text-align:left'>{escape(line.split(':', 1)[0])}</td>"
                         f"<td style='text-align:left'>{escape(line.split(':', 1)[1].strip())}</td></tr>"
                         for line in self.totals_text().splitlines() if ":" in line)
        return (f"<div><b>{escape(self.name)}</b>: {fmt(self.input_shape)} &rarr; {fmt(self.output_shape)}, "
                f"{len(self.rows):,} layers"
                f"<table><thead><tr><th style='text-align:left'>layer</th><th{_RIGHT}>output</th><th{_RIGHT}>params</th>"
                f"<th{_RIGHT}>MACs</th></tr></thead><tbody>{cells}</tbody></table><table>{totals}</table></div>")

    def totals_text(self) -> str:
        """The totals block printed under the table."""
        lines = [
            ("params", f"{self.params:,}", _si(self.params)),
            ("batch-norm state", f"{self.state:,}", _si(self.state)),
            ("MACs", f"{self.macs:,}", _si(self.macs)),
            ("FLOPs", f"{self.flops:,}", _si(self.flops)),
            ("activations", f"{self.activation_bytes:,} B", _bytes(self.activation_bytes) + " per image, float32"),
        ]
        if any(h.training_only for h in self.graph.heads):
            lines[2] = ("MACs", f"{self.macs:,}", _si(self.macs) + ", inference: training-only heads left out")
        width = max(len(v) for _, v, _ in lines)
        text = "\n".join(f"{k + ':':<18}{v:>{width}}  ({h})" for k, v, h in lines)
        for head in self.head_costs():
            what = f"head {head['name']}" + (" (training only)" if head["training_only"] else "")
            text += (f"\n{what}: output {fmt(tuple(head['output_shape']))}; its own layers {head['params']:,} params, "
                     f"{head['macs']:,} MACs")
        if self.train_settings:
            shown = ", ".join(", ".join(f"{w.partition('=')[0]} weight={w.partition('=')[2]}" for w in v)
                              if k == "head_weights" else f"{k}={','.join(v) if isinstance(v, tuple) else v}"
                              for k, v in self.train_settings)
            text += f"\n{'training:':<18}{shown}"
        return text


#: Numbers right-aligned whatever the notebook front end's table style (Jupyter's aligns right, others do not).
_RIGHT = " style='text-align:right'"


def _with_reads(note: str, node: ir.Node, named: dict[int, str]) -> str:
    """A join's note names the feature maps it reads from elsewhere: `with @e2` (a long skip)."""
    if len(node.inputs) < 2:
        return note
    reads = [f"@{named[i]}" for i in node.inputs if i in named and i != node.id - 1]
    return "; ".join(part for part in (note, f"with {', '.join(reads)}" if reads else "") if part)


@dataclass(frozen=True)
class TreeRow:
    """A row of the summary tree: a layer or a group with its subtotals."""

    level: int
    label: str
    output: str
    params: int | None
    macs: int | None
    note: str
    group: bool


#: A run of identical sibling rows is folded when it would hide at least this many rows.
FOLD_ROWS = 100
#: The longest repeating pattern of sibling rows looked for (a `conv -> bn -> relu` written out is 3).
FOLD_PERIOD = 8


@dataclass
class _TreeNode:
    """A row of the tree with its children; `key` says what makes two siblings the same (a repetition's
    steps differ only in their label, so they compare by the repetition's span)."""

    row: TreeRow
    key: object
    children: list[_TreeNode] = field(default_factory=list)

    def signature(self, ids: dict[object, int]) -> int:
        """A small integer equal for identical subtrees (same rows, shapes and costs)."""
        r = self.row
        whole = (self.key, r.level, r.output, r.params, r.macs, tuple(c.signature(ids) for c in self.children))
        return ids.setdefault(whole, len(ids))

    def size(self) -> int:
        """How many rows this subtree prints."""
        return 1 + sum(c.size() for c in self.children)

    def emit(self, out: list[TreeRow], ids: dict[object, int]) -> None:
        """Append the children's rows to `out`, folding long identical runs."""
        keys = [c.signature(ids) for c in self.children]
        i = 0
        while i < len(keys):
            period, times = fold_run(keys, i)
            block = self.children[i : i + period]
            for child in block:
                out.append(child.row)
                child.emit(out, ids)
            hidden = self.children[i + period : i + period * times]
            if hidden:
                what = "row above" if period == 1 and not block[0].children else (
                    f"{sum(c.size() for c in block)} rows above")
                out.append(TreeRow(block[0].row.level, f"… {times - 1:,} more times the {what} (folded)",
                                   hidden[-1].row.output, sum(c.row.params or 0 for c in hidden),
                                   sum(c.row.macs or 0 for c in hidden), "", False))
            i += period * times


def fold_run(keys: list[int], start: int) -> tuple[int, int]:
    """The (period, times) of the repeating run of `keys` from `start` to fold: the pattern of up to
    `FOLD_PERIOD` keys repeated the most times, if the repeats would hide `FOLD_ROWS` rows or more;
    otherwise (1, 1), nothing folded. (Rows are counted by keys here; a key's subtree only adds rows.)"""
    best = (1, 1)
    for period in range(1, min(FOLD_PERIOD, (len(keys) - start) // 2) + 1):
        pattern, times = keys[start : start + period], 1
        while keys[start + period * times : start + period * (times + 1)] == pattern:
            times += 1
        if (times - 1) * period >= FOLD_ROWS and times * period > best[0] * best[1]:
            best = (period, times)
    return best


def _wrap(text: str, width: int, indent: str) -> list[str]:
    """`text` in lines of at most `width` characters, broken at spaces where it can be; continuation
    lines start with `indent`."""
    lines: list[str] = []
    while len(text) > width:
        cut = text.rfind(" ", len(indent) + 1 if lines else 1, width + 1)
        cut = cut if cut > len(indent) else width
        lines.append(text[:cut].rstrip())
        text = indent + text[cut:].lstrip()
    return lines + [text]


def _num(n: int | None) -> str:
    return "" if n is None or (n == 0) else f"{n:,}"


def _si(n: int) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def _bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
