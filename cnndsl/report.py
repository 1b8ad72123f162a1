"""The result of `check`: one row per layer with its group path, shape and costs, and totals.

`Report.to_dict()` is the `--json` schema; `render_table()` is the summary `cnndsl check` prints,
an indented tree whose group rows (blocks, repetitions, branches) carry their subtotals and can be
collapsed with `depth`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cnndsl import ir
from cnndsl.costs import Cost, node_cost
from cnndsl.shapes import Inferred, fmt

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

    def to_dict(self) -> dict[str, Any]:
        """The row as `--json` prints it."""
        return {"name": self.name, "op": self.op, "path": [f.label for f in self.path],
                "output_shape": list(self.output_shape), "params": self.params, "state": self.state,
                "macs": self.macs, "note": self.note, "line": self.line, "col": self.col}


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
        for node, out in zip(graph.nodes[1:], inferred[1:]):
            cost = node_cost(node.op, inferred[node.inputs[0]].shape, out.shape) if node.inputs else Cost()
            rows.append(Row(node.name, node.op.label(), node.path, out.shape, cost.params, cost.state, cost.macs,
                            out.note, node.span.line, node.span.col))
        return cls(graph.name, graph, tuple(rows), graph.input_shape, inferred[graph.output].shape)

    @property
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
        """Multiply-accumulates for one image."""
        return sum(r.macs for r in self.rows)

    @property
    def flops(self) -> int:
        """2 x MACs."""
        return 2 * self.macs

    @property
    def activation_bytes(self) -> int:
        """Bytes of every layer's output for one image, in float32 (the input not counted)."""
        return BYTES_PER_ACTIVATION * sum(math.prod(r.output_shape) for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        """The `--json` object."""
        return {"network": self.name, "input_shape": list(self.input_shape),
                "output_shape": list(self.output_shape), "params": self.params, "state": self.state,
                "macs": self.macs, "flops": self.flops, "activation_bytes": self.activation_bytes,
                "train": dict(self.train_settings), "layers": [r.to_dict() for r in self.rows]}

    def tree(self, depth: int | None = None) -> list[TreeRow]:
        """The rows as an indented tree: group rows carry subtotals; levels >= `depth` are folded in."""
        groups: dict[int, list[Row]] = {}
        for row in self.rows:
            for frame in row.path:
                groups.setdefault(frame.id, []).append(row)
        out: list[TreeRow] = [TreeRow(0, "input", fmt(self.input_shape), None, None, "", False)]
        open_path: tuple[ir.Frame, ...] = ()
        for row in self.rows:
            common = 0
            while common < min(len(open_path), len(row.path)) and open_path[common].id == row.path[common].id:
                common += 1
            for level in range(common, len(row.path)):
                if depth is None or level < depth:
                    members = groups[row.path[level].id]
                    out.append(TreeRow(level, row.path[level].label, fmt(members[-1].output_shape),
                                       sum(m.params for m in members), sum(m.macs for m in members), "", True))
            open_path = row.path
            if depth is None or len(row.path) < depth:
                out.append(TreeRow(len(row.path), row.op, fmt(row.output_shape), row.params, row.macs, row.note,
                                   False))
        return out

    def render_table(self, depth: int | None = None, width: int | None = None) -> str:
        """The summary table as text (rich), then the totals."""
        from io import StringIO

        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{self.name}", title_justify="left", show_edge=False, pad_edge=False)
        table.add_column("layer", no_wrap=False)
        table.add_column("output", justify="right", no_wrap=True)
        table.add_column("params", justify="right", no_wrap=True)
        table.add_column("MACs", justify="right", no_wrap=True)
        for r in self.tree(depth):
            label = "  " * r.level + (f"[bold]{_escape(r.label)}[/bold]" if r.group else _escape(r.label))
            if r.note:
                label += f" [dim]({_escape(r.note)})[/dim]"
            table.add_row(label, r.output, _num(r.params), _num(r.macs))
        buffer = StringIO()
        console = Console(file=buffer, width=width or 110, force_terminal=False, color_system=None,
                          highlight=False)
        console.print(table)
        console.print(self.totals_text())
        return buffer.getvalue()

    def totals_text(self) -> str:
        """The totals block printed under the table."""
        lines = [
            ("params", f"{self.params:,}", _si(self.params)),
            ("batch-norm state", f"{self.state:,}", _si(self.state)),
            ("MACs", f"{self.macs:,}", _si(self.macs)),
            ("FLOPs", f"{self.flops:,}", _si(self.flops)),
            ("activations", f"{self.activation_bytes:,} B", _bytes(self.activation_bytes) + " per image, float32"),
        ]
        width = max(len(v) for _, v, _ in lines)
        text = "\n".join(f"{k + ':':<18}{v:>{width}}  ({h})" for k, v, h in lines)
        if self.train_settings:
            shown = ", ".join(f"{k}={','.join(v) if isinstance(v, tuple) else v}" for k, v in self.train_settings)
            text += f"\n{'training:':<18}{shown}"
        return text


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


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


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
