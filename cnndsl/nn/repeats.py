"""Runs of identical repeated blocks in an IR graph: what the backend can lower once and scan over.

`[bottleneck(256)]*35` expands to 35 copies of the same subgraph. Unrolled, JAX traces and XLA
compiles every copy; scanned (`jax.lax.scan` over the copies' stacked parameters), the block is traced
and compiled once, whatever the depth. A run qualifies when its copies are consecutive steps of one
repetition (`[...]*N`), each copy is *closed* (it reads only the previous copy's output, and nothing
after it reads its inner nodes), and every copy has the same ops on the same shapes wired the same way
(a stage's first, striding block differs, so it stays outside the run). Outer repetitions are preferred:
a run never nests inside another.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnndsl.lang import ir


@dataclass(frozen=True)
class Run:
    """`count` consecutive identical copies of a block of `length` nodes, the first at node `start`."""

    start: int
    length: int
    count: int

    @property
    def stop(self) -> int:
        """The node after the run."""
        return self.start + self.length * self.count


#: The fewest copies worth a scan.
MIN_COPIES = 2

#: The fewest copies of a run that the default scan (`scan_by_default`) applies with a scan; shorter runs stay
#: unrolled, as a scanned run of 2 or 3 copies compiles slower than unrolled. Measured on a 2-core CPU, batch 8 at
#: 64x64, two rounds: ResNet-101 (runs of 2, 3, 22 and 2 copies) traced and compiled in 6.3 and 6.5 s with its
#: short runs unrolled against 8.8 and 9.1 s with every run scanned, its step the same (548, 536 against 530,
#: 533 ms); ResNet-152 (2, 7, 35, 2) in 9.1 and 9.1 against 10.0 and 9.7 s (steps 636, 631 against 636, 680
#: ms). `scan=True` given explicitly scans every run from MIN_COPIES.
DEFAULT_SCAN_COPIES = 4
#: Scanning is the default (`scan_by_default`) from this many copies saved, where it shortens compilation.
#: Measured on a 2-core CPU, batch 8 at 64x64 (`python benchmarks/startup.py --deep 64`, trace + compile):
#: ResNet-50 saves 8 copies and compiles slower scanned (10.0 against 7.4 s), ResNet-101 saves 25 (11.2 against
#: 18.8 s), ResNet-152 42 (15.4 against 37.5 s); a ResNet-34 (12 copies of 3x3 basic blocks) at 224x224 7.5
#: against 4.6 s. Per step scanned and unrolled are the same (convolutions in a loop take canonical gradients,
#: cnndsl.nn.convolution.in_loop).
SCAN_FROM_COPIES = 16


def identical_runs(graph: ir.Graph, shapes: tuple[ir.Shape, ...], min_copies: int = MIN_COPIES) -> tuple[Run, ...]:
    """The runs to scan, in node order (see the module docstring): those of at least `min_copies` copies."""
    segments = _repetition_segments(graph)
    consumers = _last_consumer(graph)
    runs: list[Run] = []
    taken = -1  # nodes up to here belong to a run already (an outer one)
    for group in segments:
        keys = [_segment_key(graph, shapes, consumers, a, b) for a, b in group]
        k = 0
        while k < len(group):
            end = k + 1
            while (end < len(group) and keys[k] is not None and keys[end] == keys[k]
                   and graph.nodes[group[end][0]].inputs and _external_input(graph, *group[end]) == group[end - 1][1]):
                end += 1
            a, b = group[k]
            if end - k >= max(min_copies, MIN_COPIES) and a > taken:
                runs.append(Run(a, b - a + 1, end - k))
                taken = group[end - 1][1]
            k = end
    return tuple(sorted(runs, key=lambda r: r.start))


def _repetition_segments(graph: ir.Graph) -> list[list[tuple[int, int]]]:
    """Sibling steps of each repetition, outermost first: lists of (first node, last node) per step."""
    spans: dict[int, list[int]] = {}
    frames: dict[int, tuple[ir.Frame, int]] = {}
    for node in graph.nodes[1:]:
        for level, frame in enumerate(node.path):
            if frame.repeat:
                spans.setdefault(frame.id, []).append(node.id)
                frames[frame.id] = (frame, level)
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for frame_id, ids in spans.items():
        frame, level = frames[frame_id]
        if ids != list(range(ids[0], ids[-1] + 1)):
            continue  # not contiguous: not a block that runs as one piece
        parent = tuple(f.id for f in graph.nodes[ids[0]].path[:level])
        groups.setdefault((level, parent, frame.span), []).append((ids[0], ids[-1]))
    return [sorted(g) for _, g in sorted(groups.items(), key=lambda item: (item[0][0], item[1][0][0]))]


def _last_consumer(graph: ir.Graph) -> list[int]:
    """For each node, the last node that reads it (the graph's output counts as read at the end)."""
    last = [-1] * len(graph.nodes)
    for node in graph.nodes:
        for i in node.inputs:
            last[i] = max(last[i], node.id)
    last[graph.output] = len(graph.nodes)
    return last


def _external_input(graph: ir.Graph, a: int, b: int) -> int | None:
    """The one node before `a` that nodes a..b read, or None if they read none or several."""
    outside = {i for node in graph.nodes[a : b + 1] for i in node.inputs if i < a}
    return outside.pop() if len(outside) == 1 else None


def _segment_key(graph: ir.Graph, shapes: tuple[ir.Shape, ...], consumers: list[int], a: int,
                 b: int) -> tuple | None:
    """What makes two copies the same (ops, shapes, wiring relative to the copy), or None when the copy
    is not closed: several inputs from outside, an inner node read after the copy, or an output of
    another shape than its input (a scan's carry keeps one shape)."""
    entry = _external_input(graph, a, b)
    if entry is None or shapes[b] != shapes[entry] or any(consumers[i] > b for i in range(a, b)):
        return None
    return tuple((node.op, tuple(shapes[i] for i in node.inputs),
                  tuple("in" if i < a else i - a for i in node.inputs)) for node in graph.nodes[a : b + 1])


def scan_by_default(graph: ir.Graph, shapes: tuple[ir.Shape, ...]) -> bool:
    """Whether a network is deep enough that scanning its runs pays: its runs of DEFAULT_SCAN_COPIES copies
    or more (the ones the default scan applies) save at least SCAN_FROM_COPIES copies from tracing and
    compiling, and none holds a grouped convolution (XLA:CPU runs those inside a loop slowly: MobileNetV2's
    scanned step 4x the unrolled one's)."""
    runs = identical_runs(graph, shapes, DEFAULT_SCAN_COPIES)
    grouped = any(isinstance(node.op, ir.Conv) and node.op.groups > 1
                  for run in runs for node in graph.nodes[run.start:run.stop])
    return not grouped and sum(run.count - 1 for run in runs) >= SCAN_FROM_COPIES
