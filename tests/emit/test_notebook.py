"""Notebook displays through IPython's own formatters (no kernel: `DisplayFormatter.format` is what a kernel
calls for a cell's value): a checked or compiled network shows its table with its diagram (HTML) and the
diagram alone (SVG); a training result shows its curves and history. The notebook under docs/ runs in a real
kernel in tests/cli/test_docs_notebook.py."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from IPython.core.formatters import DisplayFormatter

import cnndsl
from cnndsl.emit.diagram import to_svg
from cnndsl.emit.notebook import register
from cnndsl.training.results import History, TrainResult
from tests.conftest import EXAMPLES
from tests.lang.test_report_html import _Table


@pytest.fixture
def formatter() -> DisplayFormatter:
    """IPython's display formatter with cnndsl's registrations, as `import cnndsl` leaves a kernel's."""
    display = DisplayFormatter()
    register(SimpleNamespace(display_formatter=display))
    return display


def _well_formed(html: str) -> _Table:
    table = _Table()
    table.feed(html)
    assert not table.open  # every tag closed, the SVG's included
    return table


@pytest.mark.parametrize("name", ["lenet5", "resnet18", "googlenet_aux", "unet"])
def test_a_checked_network_shows_its_table_beside_its_diagram(formatter: DisplayFormatter, name: str) -> None:
    report = cnndsl.check(next(p for p in EXAMPLES if p.stem == name))
    data, _ = formatter.format(report)
    assert data["image/svg+xml"] == to_svg(report, report.NOTEBOOK_DEPTH)
    html = data["text/html"]
    assert report._repr_html_() in html  # the front end's own table, whole
    _well_formed(html)
    svg = html[html.index("<svg"):html.index("</svg>")]
    assert svg.count("<rect") == data["image/svg+xml"].count("<rect")  # the same picture inline
    assert data["text/plain"] == repr(report)


def test_each_inline_diagram_has_its_own_marker_id(formatter: DisplayFormatter) -> None:
    report = cnndsl.check(next(p for p in EXAMPLES if p.stem == "resnet18"))
    first, second = (formatter.format(report)[0]["text/html"] for _ in range(2))
    ids = [re.findall(r'<marker id="([^"]+)"', html) for html in (first, second)]
    assert len(ids[0]) == len(ids[1]) == 1 and ids[0] != ids[1]
    for html, (marker,) in zip((first, second), ids):
        assert "url(#arrow)" not in html and f"url(#{marker})" in html  # every arrow points at its own marker


def test_a_compiled_network_says_what_it_runs_on(formatter: DisplayFormatter) -> None:
    import jax
    import jax.numpy as jnp

    net = cnndsl.compile(next(p for p in EXAMPLES if p.stem == "lenet5"), dtype=jnp.bfloat16)
    data, _ = formatter.format(net)
    html = data["text/html"]
    _well_formed(html)
    assert f"Flax NNX module for <b>{jax.default_backend()}</b>" in html and "parameters in bfloat16" in html
    assert net.report._repr_html_() in html and "<svg" in html
    assert data["image/svg+xml"] == to_svg(net.report, net.report.NOTEBOOK_DEPTH)
    assert net._repr_html_().startswith(net.runtime_html())  # without IPython's registration: no diagram
    assert "<svg" not in net._repr_html_()


def _epoch(number: int, val: float, **more: float) -> dict:
    return {"epoch": number, "train_loss": 1.0 / number, "train_accuracy": 0.5, "val_loss": 0.5, "val_accuracy": val,
            "test_loss": 0.6, "test_accuracy": val - 0.01, "seconds": 0.25, **more}


@pytest.mark.parametrize("vals", [(0.5, 0.9, 0.7), (0.8,), (0.3, 0.3, 0.6, 0.6)])
def test_the_history_table_has_a_row_per_epoch_and_the_best_in_bold(vals: tuple[float, ...]) -> None:
    history = History([_epoch(i + 1, v) for i, v in enumerate(vals)])
    table = _well_formed(history._repr_html_())
    assert table.rows[0] == ["epoch", "train loss", "train acc", "val loss", "val acc", "test acc", "seconds"]
    assert [row[0] for row in table.rows[1:]] == [str(i + 1) for i in range(len(vals))]
    assert [row[4] for row in table.rows[1:]] == [f"{v:.2%}" for v in vals]
    html = history._repr_html_()
    bold_rows = [row for row in html.split("<tr>") if "<b>" in row]
    assert len(bold_rows) == 1 and f"<b>{history.best['epoch']}</b>" in bold_rows[0]  # the first best epoch
    assert history.best["epoch"] == 1 + vals.index(max(vals))


def test_a_segmentation_history_shows_mean_iou_and_an_empty_one_says_so() -> None:
    table = _well_formed(History([_epoch(1, 0.8, val_miou=0.41, test_miou=0.4)])._repr_html_())
    assert "val mIoU" in table.rows[0] and "41.00%" in table.rows[1]
    assert "no epoch" in History()._repr_html_()


def test_a_training_result_shows_its_curves_and_history(tmp_path: Path) -> None:
    net = cnndsl.compile(next(p for p in EXAMPLES if p.stem == "lenet5"))
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256))  # any bytes: the display embeds the file as it is
    (tmp_path / "curves.png").write_bytes(picture)
    result = TrainResult(net, None, History([_epoch(1, 0.5), _epoch(2, 0.75)]), tmp_path)
    html = result._repr_html_()
    _well_formed(html)
    embedded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html).group(1)
    assert base64.b64decode(embedded) == picture
    assert "trained 2 epochs" in html and "best epoch 2: val acc 75.00%, test acc 74.00%" in html
    assert str(tmp_path) in html and result.history._repr_html_() in html
    (tmp_path / "curves.png").unlink()  # a run that drew no curves: the rest still shows
    assert "<img" not in result._repr_html_() and "trained 2 epochs" in result._repr_html_()


def test_import_cnndsl_registers_the_displays_inside_ipython_and_load_ext_by_hand() -> None:
    inside = ("from IPython.core.interactiveshell import InteractiveShell\n"
              "shell = InteractiveShell.instance()\n"
              "import cnndsl\n"
              "data, _ = shell.display_formatter.format(cnndsl.check('input 8x8x1\\ninput -> conv(4, 3x3) -> fc(2)'))\n"
              "assert '<svg' in data['text/html'] and data['image/svg+xml'].startswith('<svg'), sorted(data)\n")
    outside = "import sys, cnndsl\nassert 'IPython' not in sys.modules and 'cnndsl.emit' not in sys.modules\n"
    before = ("import cnndsl\n"  # imported before IPython: nothing registered until %load_ext cnndsl
              "from IPython.core.interactiveshell import InteractiveShell\n"
              "shell = InteractiveShell.instance()\n"
              "report = cnndsl.check('input 8x8x1\\ninput -> conv(4, 3x3) -> fc(2)')\n"
              "assert 'image/svg+xml' not in shell.display_formatter.format(report)[0]\n"
              "shell.run_line_magic('load_ext', 'cnndsl')\n"
              "assert 'image/svg+xml' in shell.display_formatter.format(report)[0]\n")
    for script in (inside, outside, before):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
