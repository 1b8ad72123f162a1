"""Rich displays in Jupyter: a checked or compiled network shows its summary table beside its diagram.

`Report._repr_html_` (the front end) and `CompiledNetwork._repr_html_` (cnndsl.nn) are the tables; the
diagram is drawn here, a layer above both, so IPython is told about it instead: `register(shell)` adds
formatters by class name (`for_type_by_name`), which import nothing until such an object is displayed.
`import cnndsl` calls it when it runs inside IPython; `%load_ext cnndsl` does the same by hand.

    text/html       the object's table and the diagram side by side (what Jupyter shows)
    image/svg+xml   the diagram alone (what a front end that prefers pictures, or nbconvert, takes)
"""

from __future__ import annotations

import itertools
from typing import Any

#: The classes that get the diagram: (module, class name) -> the checked report of one and the HTML above it.
DIAGRAMMED = {("cnndsl.lang.report", "Report"): lambda report: (report, ""),
              ("cnndsl.nn.compiler", "CompiledNetwork"): lambda net: (net.report, net.runtime_html())}

_figures = itertools.count(1)  # each inline diagram's marker id is unique within the notebook's page


def diagram_svg(report: Any) -> str:
    """The network's diagram as `cnndsl compile --emit svg --depth 2` draws it (groups two levels deep)."""
    from cnndsl.emit.diagram import to_svg

    return to_svg(report, report.NOTEBOOK_DEPTH)


def with_diagram(report: Any, above: str = "") -> str:
    """`above`, then the report's summary table and its diagram side by side (under each other when narrow).

    Every inline SVG of a page shares one id space: the arrowhead marker gets a number of its own, since a
    marker found first in an output that is later collapsed (display: none) stops drawing in some browsers."""
    marker = f"cnndsl-arrow-{next(_figures)}"
    svg = diagram_svg(report).replace('id="arrow"', f'id="{marker}"').replace("url(#arrow)", f"url(#{marker})")
    return (f"{above}<div style='display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start'>"
            f"<div>{report._repr_html_()}</div><div style='max-width:100%;overflow-x:auto'>{svg}</div></div>")


def register(shell: Any) -> None:
    """Teach an IPython shell the diagram of every class in `DIAGRAMMED` (HTML with the table, and SVG)."""
    formatters = shell.display_formatter.formatters
    for (module, name), report_of in DIAGRAMMED.items():
        formatters["text/html"].for_type_by_name(module, name, lambda obj, of=report_of: with_diagram(*of(obj)))
        formatters["image/svg+xml"].for_type_by_name(module, name, lambda obj, of=report_of: diagram_svg(of(obj)[0]))
