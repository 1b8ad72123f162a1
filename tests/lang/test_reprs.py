"""The public objects print as one short line that says what they are, never a page of dataclass fields."""

from __future__ import annotations

import pytest

import cnndsl
from tests.conftest import EXAMPLES, FAMILIES

LIMIT = 300  # characters: one line of a terminal or a notebook cell's output, a few times over


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.name not in FAMILIES], ids=lambda p: p.stem)
def test_a_report_and_its_graph_print_short(path) -> None:
    report = cnndsl.check(path)
    for obj in (report, report.graph, report.graph.source):
        assert len(repr(obj)) <= LIMIT and "\n" not in repr(obj), repr(obj)[:1000]
    assert f"{report.params:,} params" in repr(report) and str(report) == repr(report)


def test_family_members_errors_and_a_compiled_network_print_short() -> None:
    members = list(cnndsl.family(EXAMPLES[0].parent / "course.cnn"))
    assert any(not m.valid for m in members)
    for member in members:
        assert len(repr(member)) <= LIMIT, repr(member)
    with pytest.raises(cnndsl.CnnError) as caught:
        cnndsl.check("network X\ninput 8x8x1\ninput -> conv(4, 9x9) -> foo\n" + "# padding\n" * 5000)
    text = repr(caught.value)
    assert len(text) <= LIMIT and text.startswith("CnnError(unbound: `foo` is not bound at <spec>:3:26"), text
    net = cnndsl.compile(EXAMPLES[0].parent / "digits.cnn")
    assert repr(net).startswith("CompiledNetwork(Report('Digits'") and len(repr(net)) <= LIMIT
