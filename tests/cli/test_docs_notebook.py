"""docs/notebook.ipynb runs in a real IPython kernel (nbclient, as `jupyter nbconvert --execute` does) and
every cell shows what its text says: the checked network's table and diagram, the compiled module, the
trained run's curves and history, the plot. The kernel is this Python (a kernel spec of its own, so a
`python3` spec installed elsewhere on the machine cannot stand in), on 127.0.0.1, shut down by nbclient
when the notebook ends or fails, each cell bounded by `CELL_TIMEOUT`."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import cnndsl
from tests.conftest import ROOT

NOTEBOOK = ROOT / "docs" / "notebook.ipynb"
#: Seconds a cell may run before nbclient stops the notebook (the training cell takes ~5 s here; a guard
#: against a hung kernel, not a timing the test depends on).
CELL_TIMEOUT = 300


def _kernel_spec(folder: Path) -> str:
    """A kernel spec that starts this interpreter's ipykernel, in a Jupyter path of the test's own."""
    spec = folder / "kernels" / "cnndsl-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "cnndsl test", "language": "python"}))
    return "cnndsl-test"


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[nbformat.NotebookNode, Path]:
    """The notebook after running every cell in a fresh folder (its run directory is written there)."""
    folder = tmp_path_factory.mktemp("notebook")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(folder / "jupyter"))
        kernel = _kernel_spec(folder / "jupyter")
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        client = NotebookClient(notebook, timeout=CELL_TIMEOUT, startup_timeout=120, kernel_name=kernel,
                                resources={"metadata": {"path": str(folder)}})
        manager = client.create_kernel_manager()
        assert manager.ip == "127.0.0.1"  # the kernel's sockets are local
        client.execute()
    return notebook, folder


def _outputs(notebook: nbformat.NotebookNode, starts: str) -> list:
    (cell,) = [c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(starts)]
    assert not [o for o in cell.outputs if o.output_type == "error" or o.get("name") == "stderr"], cell.outputs
    return cell.outputs


def test_the_checked_network_shows_its_table_and_diagram(executed) -> None:
    notebook, _ = executed
    (shown,) = _outputs(notebook, "report = cnndsl.check")
    spec = re.search(r'spec = """(.*?)"""', notebook.cells[1].source, re.S).group(1)
    report = cnndsl.check(spec)
    assert report._repr_html_() in shown.data["text/html"] and "<svg" in shown.data["text/html"]
    assert shown.data["image/svg+xml"].startswith("<svg") and f"{report.params:,} params" in shown.data["image/svg+xml"]


def test_the_compiled_network_runs_and_says_on_what(executed) -> None:
    notebook, _ = executed
    printed, shown = _outputs(notebook, "import numpy as np")
    assert printed.text == "(4, 10)\n"
    assert "Flax NNX module for <b>" in shown.data["text/html"] and "<svg" in shown.data["text/html"]


def test_the_training_result_shows_the_runs_curves_and_history(executed) -> None:
    notebook, folder = executed
    (shown,) = _outputs(notebook, "result = cnndsl.train")
    run = folder / "runs" / "notebook"
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    html = shown.data["text/html"]
    embedded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html).group(1)
    assert base64.b64decode(embedded) == (run / "curves.png").read_bytes()
    for epoch in epochs:  # each epoch's row, with the run's own numbers
        assert f"{epoch['val_accuracy']:.2%}" in html and f"{epoch['train_loss']:.4f}" in html


def test_the_plot_cell_draws_and_prints_the_best_accuracy(executed) -> None:
    notebook, folder = executed
    outputs = _outputs(notebook, "import matplotlib")
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) == 1 and base64.b64decode(pictures[0].data["image/png"]).startswith(b"\x89PNG")
    epochs = [json.loads(line) for line in (folder / "runs" / "notebook" / "metrics.jsonl").read_text().splitlines()]
    printed = "".join(o.text for o in outputs if o.output_type == "stream")
    assert printed == f"best validation accuracy {max(e['val_accuracy'] for e in epochs):.1%}\n"


def test_the_stored_notebook_is_valid_and_kept_with_its_outputs(executed) -> None:
    """The file under docs/ is a valid notebook stored with its outputs, so it reads as a page on its own; they
    are of the kinds a run makes now (each cell's output types and mime types as the fresh run's)."""
    stored = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(stored)

    def kinds(notebook: nbformat.NotebookNode) -> list:
        return [[(o.output_type, sorted(o.get("data", {}))) for o in c.outputs] for c in notebook.cells
                if c.cell_type == "code"]

    assert kinds(stored) == kinds(executed[0]) and sum(map(len, kinds(stored))) >= 5
