"""Architecture diagrams: `to_svg(report, depth=None)` draws a checked network as an SVG picture.

The layout follows the spec rather than a generic graph-drawing heuristic. The graph is cut into
series (one layer after another) and parallel parts (the branches between a fork and the `concat` or
`add` that joins them), which is exact for everything the language can build. Boxes are then grouped by
the spec's own block calls and repetitions, drawn as labelled frames; `depth` folds groups nested deeper
into one box each, like `cnndsl check --depth`. Every box shows its layer and output shape; hovering shows
the node name, parameters, MACs and the spec line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from cnndsl.lang import ir
from cnndsl.lang.report import Report
from cnndsl.lang.shapes import fmt

# Frames that the parallel layout already shows (the fork, the join and the branches side by side).
_STRUCTURAL = ("concat", "add", "mul", "residual", "body", "shortcut")

FONT = "Helvetica, Arial, sans-serif"
TITLE_SIZE, SHAPE_SIZE, GROUP_SIZE = 12.0, 10.5, 10.5
CHAR_WIDTH = 0.58  # average glyph width per font size unit (Helvetica), for box sizes
BOX_H, JOIN_H, GAP, HGAP, PAD, CAPTION = 36.0, 24.0, 20.0, 18.0, 9.0, 20.0
SKIP_W = 14.0  # the column an identity shortcut takes
LANE = 12.0  # the spacing of long-skip lanes right of the picture
STYLE = {  # op kind -> (fill, stroke)
    "conv": ("#dce8f7", "#4a78b5"), "pool": ("#fde8cf", "#d0842e"), "dense": ("#dcefdc", "#3d9140"),
    "norm": ("#eeeeee", "#8a8a8a"), "act": ("#f4e6f4", "#9c5a9c"), "join": ("#fff2b3", "#b8960c"),
    "io": ("#ffffff", "#333333"), "group": ("#f7f7f7", "#777777"),
}
_KIND = {ir.Conv: "conv", ir.ConvTranspose: "conv", ir.Pool: "pool", ir.GlobalPool: "pool", ir.AdaptivePool: "pool", ir.Dense: "dense",
         ir.Linear: "dense", ir.Flatten: "norm", ir.BatchNorm: "norm", ir.LayerNorm: "norm", ir.LayerScale: "norm",
         ir.LocalResponseNorm: "norm", ir.Dropout: "norm", ir.DropPath: "norm", ir.Activation: "act",
         ir.Concat: "join", ir.Add: "join", ir.Mul: "join", ir.Input: "io"}


def _text_width(text: str, size: float) -> float:
    return len(text) * size * CHAR_WIDTH


Point = tuple[float, float]


@dataclass
class _Svg:
    """The picture in layers, bottom to top: group frames, edges, layer boxes, group captions."""

    frames: list[str] = field(default_factory=list)
    edges: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    boxes: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # node -> its box's (left, right, middle y)
    lanes: list[tuple[int, int]] = field(default_factory=list)  # (named map, join) drawn as a side lane

    def long_skips(self, right: float, names: dict[int, str]) -> None:
        """Each long skip as a dashed lane down the right of the picture: out of the named map's box, down,
        into the join's box, with the map's name at the lane's start; one lane per skip, so none cross."""
        for k, (source, join) in enumerate(self.lanes):
            (_, x1, y1), (_, x2, y2) = self.boxes[source], self.boxes[join]
            lane = right + LANE * (k + 1)
            self.edges.append(f'<path class="edge skip" d="M{x1:.1f},{y1:.1f} L{lane:.1f},{y1:.1f} '
                              f'L{lane:.1f},{y2:.1f} L{x2 + 2:.1f},{y2:.1f}" marker-end="url(#arrow)"/>')
            self.labels.append(f'<text x="{x1 + 4:.1f}" y="{y1 - 4:.1f}" class="g">@{escape(names.get(source, ""))}</text>')

    def edge(self, start: Point, end: Point, dashed: bool = False, arrow: bool = True) -> None:
        (x1, y1), (x2, y2) = start, end
        mid = (y1 + y2) / 2
        d = f"M{x1:.1f},{y1:.1f} L{x2:.1f},{y2:.1f}" if abs(x1 - x2) < 0.5 else \
            f"M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} {x2:.1f},{y2:.1f}"
        self.edges.append(f'<path class="edge{" skip" if dashed else ""}" d="{d}"'
                          f'{" marker-end=&quot;url(#arrow)&quot;" if arrow else ""}/>'.replace("&quot;", '"'))


class _Item:
    """A layout element: measures itself, then draws at a position and returns where edges attach."""

    width: float
    height: float

    def draw(self, svg: _Svg, x: float, y: float) -> tuple[list[tuple[Point, bool]], Point]:
        """Draw with the top-left corner at (x, y); return the entry points (with whether the edge into
        each is a skip edge) and the exit point."""
        raise NotImplementedError


class _Box(_Item):
    def __init__(self, title: str, subtitle: str, kind: str, tooltip: str, height: float = BOX_H,
                 nodes: tuple[int, ...] = (), refs: tuple[int, ...] = ()) -> None:
        self.title, self.subtitle, self.kind, self.tooltip = title, subtitle, kind, tooltip
        self.width = max(_text_width(title, TITLE_SIZE), _text_width(subtitle, SHAPE_SIZE), 40.0) + 18
        self.height = height
        self.nodes, self.refs = nodes, refs  # the layers it stands for; the long skips into it

    def draw(self, svg: _Svg, x: float, y: float) -> tuple[list[tuple[Point, bool]], Point]:
        fill, stroke = STYLE[self.kind]
        cx = x + self.width / 2
        for node in self.nodes:
            svg.boxes[node] = (x, x + self.width, y + self.height / 2)
        svg.lanes += [(ref, self.nodes[-1]) for ref in self.refs]
        svg.parts.append(f'<g class="node {self.kind}"><title>{escape(self.tooltip)}</title>'
                         f'<rect x="{x:.1f}" y="{y:.1f}" width="{self.width:.1f}" height="{self.height:.1f}" '
                         f'rx="5" fill="{fill}" stroke="{stroke}"/>')
        if self.subtitle:
            svg.parts.append(f'<text x="{cx:.1f}" y="{y + 15:.1f}" class="t">{escape(self.title)}</text>'
                             f'<text x="{cx:.1f}" y="{y + 29:.1f}" class="s">{escape(self.subtitle)}</text></g>')
        else:
            svg.parts.append(f'<text x="{cx:.1f}" y="{y + self.height / 2 + 4:.1f}" class="t">'
                             f'{escape(self.title)}</text></g>')
        return [((cx, y), False)], (cx, y + self.height)


class _Seq(_Item):
    def __init__(self, items: list[_Item]) -> None:
        self.items = items
        self.width = max((i.width for i in items), default=0.0)
        self.height = sum(i.height for i in items) + GAP * max(0, len(items) - 1)

    def draw(self, svg: _Svg, x: float, y: float) -> tuple[list[tuple[Point, bool]], Point]:
        entries: list[tuple[Point, bool]] = []
        exit_point: Point = (x + self.width / 2, y)
        for index, item in enumerate(self.items):
            item_entries, item_exit = item.draw(svg, x + (self.width - item.width) / 2, y)
            if index == 0:
                entries = item_entries
            else:
                for point, skip in item_entries:
                    svg.edge(exit_point, point, dashed=skip, arrow=not skip)
            exit_point = item_exit
            y += item.height + GAP
        return entries, exit_point


class _Parallel(_Item):
    """Branches side by side between a fork and their join; an empty branch is an identity shortcut."""

    def __init__(self, branches: list[_Seq], join: _Box, residual: bool) -> None:
        self.branches, self.join, self.residual = branches, join, residual
        self.widths = [b.width if b.items else SKIP_W for b in branches]
        self.width = max(sum(self.widths) + HGAP * (len(branches) - 1), join.width)
        self.height = max(b.height for b in branches) + GAP + join.height

    def draw(self, svg: _Svg, x: float, y: float) -> tuple[list[tuple[Point, bool]], Point]:
        widths = self.widths
        left = x + (self.width - (sum(widths) + HGAP * (len(widths) - 1))) / 2
        join_y = y + max(b.height for b in self.branches) + GAP
        join_entries, join_exit = self.join.draw(svg, x + (self.width - self.join.width) / 2, join_y)
        (join_top, _), = join_entries
        entries: list[tuple[Point, bool]] = []
        bottom = join_y - GAP
        for branch, width in zip(self.branches, widths):
            if branch.items:
                branch_entries, branch_exit = branch.draw(svg, left, y)
                entries += branch_entries
                if branch_exit[1] < bottom:  # a shorter branch runs straight down before turning to the join
                    svg.edge(branch_exit, (branch_exit[0], bottom), arrow=False)
                svg.edge((branch_exit[0], bottom), join_top)
            else:  # identity shortcut: a dashed line down the side into the join
                column = left + width / 2
                entries.append(((column, y), True))
                svg.edge((column, y), (column, bottom), dashed=True, arrow=False)
                svg.edge((column, bottom), join_top, dashed=True)
            left += width + HGAP
        return entries, join_exit


class _Stack(_Item):
    """Sections one below the other, not joined by edges: the main chain, then each head (a lane joins it)."""

    def __init__(self, items: list[_Item]) -> None:
        self.items = items
        self.width = max(i.width for i in items)
        self.height = sum(i.height for i in items) + 2 * GAP * (len(items) - 1)

    def draw(self, svg: _Svg, x: float, y: float) -> tuple[list[tuple[Point, bool]], Point]:
        entries, exit_point = [], (x, y)
        for index, item in enumerate(self.items):
            item_entries, item_exit = item.draw(svg, x + (self.width - item.width) / 2, y)
            entries, exit_point = (item_entries, item_exit) if index == 0 else (entries, exit_point)
            y += item.height + 2 * GAP
        return entries, exit_point


class _Group(_Item):
    """A frame around a block call or repetition, captioned at the bottom: its label on the left, its
    parameters on the right. Edges may enter a frame anywhere along its top (branches fan out there) but
    leave only at the centre of its bottom, so a caption kept to its half of the frame crosses no edge."""

    def __init__(self, label: str, params: str, child: _Seq) -> None:
        self.label, self.params, self.child = label, params, child
        half = max(_text_width(label, GROUP_SIZE), _text_width(params, GROUP_SIZE)) + 14
        self.width = max(child.width + 2 * PAD, 2 * half)
        self.height = child.height + PAD + CAPTION

    def draw(self, svg: _Svg, x: float, y: float) -> tuple[list[tuple[Point, bool]], Point]:
        fill, stroke = STYLE["group"]
        svg.frames.append(f'<rect class="group" x="{x:.1f}" y="{y:.1f}" width="{self.width:.1f}" '
                          f'height="{self.height:.1f}" rx="8" fill="{fill}" stroke="{stroke}" stroke-dasharray="4 3"/>')
        baseline = y + self.height - 6
        svg.labels.append(f'<text x="{x + 7:.1f}" y="{baseline:.1f}" class="g">{escape(self.label)}</text>')
        if self.params:
            svg.labels.append(f'<text x="{x + self.width - 7:.1f}" y="{baseline:.1f}" class="g p">'
                              f'{escape(self.params)}</text>')
        return self.child.draw(svg, x + (self.width - self.child.width) / 2, y + PAD)


# ---- from the graph to layout items ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Leaf:
    node: ir.Node
    refs: tuple[int, ...] = ()  # a join's inputs drawn as long skips (side lanes), not as branches


@dataclass(frozen=True)
class _Fork:
    branches: tuple[tuple[object, ...], ...]  # each a series of _Leaf / _Fork
    join: ir.Node
    refs: tuple[int, ...] = ()


def _series(graph: ir.Graph) -> tuple[tuple[object, ...], ...]:
    """The graph from input to output as a series of leaves and forks (series-parallel decomposition); then
    each head's own layers as a series of its own.

    A join's input that is a named map (`@e1`) already on the way to another of its inputs is a long
    skip: it is drawn as a side lane from that map's box, not as a branch (a U-Net's decoder stays one
    column; its encoder maps stay in their own groups). So is an input that does not descend from the
    fork being drawn (graphs that are not series-parallel). If a layout would leave a node out, every
    node is drawn in order with every join's other inputs as lanes."""
    ancestors: list[int] = []  # bit i set: node i is the node itself or one of its ancestors
    for node in graph.nodes:
        bits = 1 << node.id
        for i in node.inputs:
            bits |= ancestors[i]
        ancestors.append(bits)
    tapped = {tap.node for tap in graph.taps}

    def below(i: int, start: int) -> bool:
        return start < 0 or bool(ancestors[i] >> start & 1)

    def chain(start: int, end: int) -> tuple[object, ...]:
        items: list[object] = []
        current = end
        while current != start:
            node = graph.nodes[current]
            if len(node.inputs) > 1:
                inside = [i for i in node.inputs if below(i, start)]
                refs = [i for i in node.inputs if i not in inside]
                kept = []
                for i in inside:
                    later = [o for o in inside if o != i and ancestors[o] >> i & 1]
                    (refs if i in tapped and later else kept).append(i)
                if len(kept) > 1:
                    common = ancestors[kept[0]]
                    for i in kept[1:]:
                        common &= ancestors[i]
                    fork = common.bit_length() - 1  # the latest node every branch starts from
                    items.append(_Fork(tuple(chain(fork, i) for i in kept), node, tuple(refs)))
                    current = fork
                else:
                    items.append(_Leaf(node, tuple(refs)))
                    current = kept[0]
            else:
                items.append(_Leaf(node))
                current = node.inputs[0] if node.inputs else start
        return tuple(reversed(items))

    sections = [chain(-1, graph.output)]
    drawn = {n.id for item in sections[0] for n in _nodes(item)}
    for head in graph.heads:  # each head below, its own section, a lane from the map it starts from
        own = graph.needed((head.node,)) - drawn
        start = max((i for k in own for i in graph.nodes[k].inputs if i not in own), default=-1)
        items = chain(start, head.node)
        if items and isinstance(items[0], _Leaf):
            items = (_Leaf(items[0].node, items[0].refs + (start,)),) + items[1:]
        sections.append(items)
        drawn |= {n.id for item in items for n in _nodes(item)}
    if drawn != {n.id for n in graph.nodes}:
        return (tuple(_Leaf(n, tuple(i for i in n.inputs if i != n.id - 1)) for n in graph.nodes),)
    return tuple(sections)


def _frames(node: ir.Node) -> tuple[ir.Frame, ...]:
    return tuple(f for f in node.path if f.label not in _STRUCTURAL and not f.label.startswith("branch "))


def _nodes(item: object) -> list[ir.Node]:
    if isinstance(item, _Leaf):
        return [item.node]
    assert isinstance(item, _Fork)
    return [n for branch in item.branches for sub in branch for n in _nodes(sub)] + [item.join]


def _common_frames(item: object) -> tuple[ir.Frame, ...]:
    paths = [_frames(n) for n in _nodes(item)]
    common = paths[0]
    for path in paths[1:]:
        size = 0
        while size < min(len(common), len(path)) and common[size].id == path[size].id:
            size += 1
        common = common[:size]
    return common


class _Builder:
    def __init__(self, report: Report, depth: int | None) -> None:
        self.report, self.depth = report, depth
        self.rows = {row.name: row for row in report.rows}
        self.refs: dict[int, tuple[int, ...]] = {}  # join -> its long skips, filled by `collect`

    def collect(self, items: tuple[object, ...]) -> tuple[object, ...]:
        """Note every long skip of the layout (a folded box draws those into its layers)."""
        for item in items:
            if isinstance(item, _Fork):
                for branch in item.branches:
                    self.collect(branch)
                self.refs[item.join.id] = item.refs
            elif isinstance(item, _Leaf) and item.refs:
                self.refs[item.node.id] = item.refs
        return items

    def series(self, items: tuple[object, ...], level: int) -> _Seq:
        """Lay out a series; `level` indexes the frame paths."""
        out: list[_Item] = []
        index = 0
        while index < len(items):
            frames = _common_frames(items[index])
            if len(frames) > level:  # a run of items inside the same group at this level
                frame = frames[level]
                end = index + 1
                while end < len(items) and len(f := _common_frames(items[end])) > level and f[level].id == frame.id:
                    end += 1
                out.append(self.group(items[index:end], level))
                index = end
            else:
                out.append(self.item(items[index], len(frames)))
                index += 1
        return _Seq(out)

    def group(self, items: tuple[object, ...], level: int) -> _Item:
        """One frame around `items`; frames that hold exactly the same layers (a repetition of one block
        call) are drawn as one, their labels joined. With `depth`, the one folding rule of `check --depth`:
        a frame at path level depth - 1 or deeper is one box (for joined frames, their deepest level)."""
        paths = [_common_frames(item) for item in items]
        labels = [paths[0][level].label]
        while all(len(p) > level + 1 for p in paths) and len({p[level + 1].id for p in paths}) == 1:
            level += 1
            labels.append(paths[0][level].label)
        label = " › ".join(labels)
        nodes = [n for item in items for n in _nodes(item)]
        params = sum(self.rows[n.name].params for n in nodes)
        deepest = paths[0][level]  # its level in the full path (the table's), where structural frames count too
        full_level = next(k for k, f in enumerate(nodes[0].path) if f.id == deepest.id)
        if self.depth is not None and full_level >= self.depth - 1:  # report.Report.tree's rule
            last = items[-1].join if isinstance(items[-1], _Fork) else nodes[-1]
            return self.folded(label, nodes, last, paths[0][level].span.line)
        return _Group(label, f"{_count(params)} params" if params else "", self.series(items, level + 1))

    def item(self, item: object, level: int) -> _Item:
        if isinstance(item, _Leaf):
            return self.box(item.node, item.refs)
        assert isinstance(item, _Fork)
        frames = item.join.path  # the join closes its branches' frame (`concat`, `add`, `residual`)
        if self.depth is not None and frames and len(frames) - 1 >= self.depth - 1:  # folded as the table folds it
            return self.folded(frames[-1].label, _nodes(item), item.join, frames[-1].span.line)
        branches = [self.series(branch, level) for branch in item.branches]
        return _Parallel(branches, self.box(item.join, item.refs), isinstance(item.join.op, ir.Add))

    def folded(self, label: str, nodes: list[ir.Node], last: ir.Node, line: int) -> _Box:
        """A folded group: one box with the group's output shape and totals."""
        params, macs = sum(self.rows[n.name].params for n in nodes), sum(self.rows[n.name].macs for n in nodes)
        shape = fmt(self.report.node_shapes[last.id])
        tip = f"{label}: {len(nodes)} layers, {params:,} params, {macs:,} MACs (line {line})"
        inside = {n.id for n in nodes}
        refs = tuple(ref for ref in self.refs_into(nodes) if ref not in inside)
        return _Box(label, f"{shape}  ·  {_count(params)} params" if params else shape, "group", tip,
                     nodes=tuple(sorted(inside - {last.id})) + (last.id,), refs=refs)

    def refs_into(self, nodes: list[ir.Node]) -> list[int]:
        """The long skips into any of `nodes` (a folded group's box takes its layers' skips)."""
        return [ref for n in nodes for ref in self.refs.get(n.id, ())]

    def box(self, node: ir.Node, refs: tuple[int, ...] = ()) -> _Box:
        shape = fmt(self.report.node_shapes[node.id])
        kind = _KIND.get(type(node.op), "norm")
        if isinstance(node.op, ir.Input):
            return _Box("input", shape, "io", f"input {shape}", nodes=(node.id,))
        row = self.rows[node.name]
        tip = f"{node.name}: {row.op} -> {shape}; {row.params:,} params, {row.macs:,} MACs (line {row.line})"
        if isinstance(node.op, (ir.Add, ir.Concat, ir.Mul)):
            return _Box(f"{node.op.kind}  {shape}", "", "join", tip, JOIN_H, (node.id,), refs)
        return _Box(row.op, shape, kind, tip, nodes=(node.id,), refs=refs)


def _count(n: int) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return str(n)


def to_svg(report: Report, depth: int | None = None) -> str:
    """The network as a standalone SVG document (top to bottom, groups framed, `depth` levels unfolded)."""
    builder = _Builder(report, depth)
    body = _Stack([builder.series(builder.collect(section), 0) for section in _series(report.graph)])
    lanes = sum(len(refs) for refs in builder.refs.values())
    title = f"{report.name}: {report.params:,} params, {report.macs:,} MACs"
    margin = 16.0
    width = max(body.width + LANE * (lanes + 1) * (lanes > 0), _text_width(title, 13 * 1.12)) + 2 * margin
    height = body.height + 2 * margin + 26
    svg = _Svg()
    left = margin + (width - 2 * margin - body.width - LANE * (lanes + 1) * (lanes > 0)) / 2
    body.draw(svg, left, margin + 26)
    names: dict[int, str] = {0: "input"}
    for tap in report.graph.taps:
        names.setdefault(tap.node, tap.name)
    svg.long_skips(left + body.width, names)
    style = (f"text{{font-family:{FONT};text-anchor:middle;fill:#222}}"
             f".t{{font-size:{TITLE_SIZE}px;font-weight:600}}.s{{font-size:{SHAPE_SIZE}px;fill:#555}}"
             f".g{{font-size:{GROUP_SIZE}px;font-style:italic;text-anchor:start;fill:#444}}.p{{text-anchor:end}}"
             ".h{font-size:13px;font-weight:700;text-anchor:start}"
             ".edge{fill:none;stroke:#666;stroke-width:1.3}.skip{stroke-dasharray:5 3;stroke:#b8960c}")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.1f} {height:.1f}">\n<!-- generated by cnndsl -->\n'
            f'<defs><style>{style}</style>'
            '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker></defs>\n'
            f'<rect width="100%" height="100%" fill="white"/>\n'
            f'<text x="{margin}" y="{margin + 10}" class="h">{escape(title)}</text>\n'
            + "\n".join(svg.frames + svg.edges + svg.parts + svg.labels) + "\n</svg>\n")
