"""A checked network in a notebook cell: `Report._repr_html_` is a well-formed table of the summary's rows
(groups two levels deep, as `check --depth 2`), with the same numbers, escaped, and the totals."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

import cnndsl
from tests.conftest import EXAMPLES


class _Table(HTMLParser):
    """The text of each cell of each row, and whether every tag closed."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.open: list[str] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.open.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        assert self.open.pop() == tag
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


@pytest.mark.parametrize("name", ["resnet18", "unet", "googlenet_aux", "lenet5"])
def test_the_notebook_table_is_the_summary(name: str) -> None:
    report = cnndsl.check(next(p for p in EXAMPLES if p.stem == name))
    table = _Table()
    table.feed(report._repr_html_())
    assert not table.open  # every tag closed
    expected = report.tree(report.NOTEBOOK_DEPTH)
    body = [row for row in table.rows if len(row) == 4][1:]  # the header row first
    assert len(body) == len(expected)
    for cells, row in zip(body, expected):
        assert cells[0].startswith(row.label) and cells[1] == row.output
        assert cells[2] == (f"{row.params:,}" if row.params else "")  # blank: none (as the text table)
        assert cells[3] == (f"{row.macs:,}" if row.macs else "")
    totals = {row[0]: row[1] for row in table.rows if len(row) == 2}
    assert totals["params"].startswith(f"{report.params:,}") and totals["MACs"].startswith(f"{report.macs:,}")


def test_labels_are_escaped() -> None:
    report = cnndsl.check("input 8x8x1\ninput -> [conv(4, 3x3, pad=same) -> relu]*(2 if 1 < 2 else 3) -> fc(10)\n")
    html = report._repr_html_()
    assert "1 &lt; 2" in html and "1 < 2" not in html
    assert html.count("<b>[…]*(2 if 1 &lt; 2 else 3)") == 2  # the repetition's two steps, as groups
    assert html.count("<tr>") == len(report.tree(2)) + 1 + 5  # the rows, the header, five totals
