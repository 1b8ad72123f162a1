"""`cnndsl compile --emit svg`: the architecture diagram."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl.lang import ir
from cnndsl.cli import main
from cnndsl.emit.diagram import to_svg
from cnndsl.lang.shapes import fmt
from tests.conftest import EXAMPLES, FAMILIES, ROOT
from tests.nn.test_backend import random_layer

CONCRETE = [p for p in EXAMPLES if p.name not in FAMILIES]
NS = {"svg": "http://www.w3.org/2000/svg"}


def _boxes(svg: str) -> list[tuple[str, tuple[float, float, float, float], list[str]]]:
    """(class, (x, y, width, height), texts) of every layer box."""
    root = ET.fromstring(svg)
    out = []
    for group in root.iter("{http://www.w3.org/2000/svg}g"):
        rect = group.find("svg:rect", NS)
        box = tuple(float(rect.get(k)) for k in ("x", "y", "width", "height"))
        out.append((group.get("class"), box, [t.text for t in group.findall("svg:text", NS)]))
    return out


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


@pytest.mark.parametrize("path", CONCRETE, ids=lambda p: p.stem)
def test_every_layer_is_a_box_with_its_shape_and_no_boxes_overlap(path: Path) -> None:
    report = cnndsl.check(path)
    svg = to_svg(report)
    root = ET.fromstring(svg)
    width, height = float(root.get("width")), float(root.get("height"))
    boxes = _boxes(svg)
    assert len(boxes) == len(report.graph.nodes)
    shapes = [fmt(s) for s in report.node_shapes]
    drawn = sorted(text for _, _, texts in boxes for text in texts)
    for node, shape in zip(report.graph.nodes, shapes):
        assert any(shape in text for text in drawn), f"{node.name}: {shape} not drawn"
    for (_, a, _), (_, b, _) in itertools.combinations(boxes, 2):
        assert not _overlap(a, b), f"boxes overlap: {a} {b}"
    assert all(0 <= x and x + w <= width + 0.5 and 0 <= y and y + h <= height + 0.5 for _, (x, y, w, h), _ in boxes)


def test_residual_identity_shortcuts_are_dashed_skip_edges() -> None:
    report = cnndsl.check(ROOT / "examples" / "resnet18.cnn")
    consumers = [0] * len(report.graph.nodes)
    for node in report.graph.nodes:
        for i in node.inputs:
            consumers[i] += 1
    adds = [n for n in report.graph.nodes if isinstance(n.op, ir.Add)]
    identity = sum(1 for n in adds for i in n.inputs if consumers[i] > 1)  # the input is the fork itself
    assert (len(adds), identity) == (8, 5)  # 3 of ResNet-18's 8 blocks project their shortcut
    arrowed_skips = re.findall(r'class="edge skip"[^>]*marker-end', to_svg(report))
    assert len(arrowed_skips) == identity


def test_branches_sit_side_by_side() -> None:
    report = cnndsl.check(ROOT / "examples" / "googlenet.cnn")
    boxes: dict[str, tuple[float, ...]] = {}
    for _, box, texts in _boxes(to_svg(report, depth=3)):
        boxes.setdefault(texts[0], box)  # the first inception's
    first = [boxes[t] for t in ("cbr(64, (1, 1))", "cbr(96, (1, 1))", "cbr(16, (1, 1))")]
    assert len({round(b[1]) for b in first}) == 1  # one row
    assert first[0][0] < first[1][0] < first[2][0]  # in the spec's branch order, left to right


def test_depth_folds_groups_into_boxes() -> None:
    report = cnndsl.check(ROOT / "examples" / "resnet18.cnn")
    full, folded = _boxes(to_svg(report)), _boxes(to_svg(report, depth=3))
    assert len(folded) < len(full) / 4
    groups = [texts for kind, _, texts in folded if kind == "node group"]
    assert len(groups) == 8 and groups[0] == ["basic(64, 1)", "56x56x64  ·  74k params"]
    assert "[…]*4 i=3 › stage(512, 2, stride=2)" in to_svg(report, depth=3)  # a repetition of one call: one frame


@pytest.mark.parametrize("example", ["resnet18", "efficientnet_b0", "googlenet", "mobilenet_v2"])
def test_the_diagram_folds_at_the_levels_the_table_folds(example: str) -> None:
    """Issue 21: one folding rule for `check --depth N` and `--emit svg --depth N`: every frame the table
    folds into one row is one box in the diagram, whatever frames the diagram joins (a block called by a
    repetition of one call was drawn open at one stage and folded at the next)."""
    report = cnndsl.check(ROOT / "examples" / f"{example}.cnn")
    for depth in (1, 2, 3):
        # the branches of a fork are the diagram's columns, always side by side: their contents fold instead
        table_folded = {r.label for r in report.tree(depth) if r.group and r.level == depth - 1
                        and not r.label.startswith("branch ")}
        boxes = [texts[0] for kind, _, texts in _boxes(to_svg(report, depth)) if kind == "node group"]
        drawn = {part for label in boxes for part in label.split(" › ")}  # joined frames: one box, labels joined
        assert table_folded <= drawn, (depth, sorted(table_folded - drawn)[:5])


def test_cli_writes_svg(tmp_path: Path) -> None:
    out = tmp_path / "net.svg"
    assert main(["compile", str(ROOT / "examples" / "googlenet.cnn"), "--emit", "svg", "-o", str(out),
                 "--depth", "2", "--quiet"]) == 0
    assert ET.parse(out).getroot().tag == "{http://www.w3.org/2000/svg}svg"


@settings(max_examples=60, deadline=None)
@given(st.lists(random_layer(), min_size=1, max_size=6), st.integers(1, 3))
def test_random_specs_draw_without_overlaps(layers: list[str], times: int) -> None:
    spec = (f"network R\ninput 16x16x4\nblock unit(k) = {' -> '.join(layers)}\n"
            f"input -> conv(4, 1x1) -> [unit(i)]*{times} as i -> residual(concat(relu | bn) -> conv(4, 1x1))")
    try:
        report = cnndsl.check(spec)
    except cnndsl.CnnError:
        assume(False)  # nothing to draw
    for depth in (None, 1):
        boxes = _boxes(to_svg(report, depth))
        if depth is None:
            assert len(boxes) == len(report.graph.nodes)
        for (_, a, _), (_, b, _) in itertools.combinations(boxes, 2):
            assert not _overlap(a, b), (spec, depth)
