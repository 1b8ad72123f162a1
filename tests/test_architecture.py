"""The package's layers as a test: import-linter's contracts in pyproject.toml (layers, no cycles between the
modules of any package, no JAX in the front end or the editor tooling), counting imports inside functions too; and proof that they
fail on a deliberate upward import and on a cycle, by running them over a copy of the package with one added."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` over the package at `root` (its pyproject.toml's contracts); no cache, so a copy is read
    afresh. Bounded: the whole package takes a few seconds here."""
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()", "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_package_keeps_its_layers() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = (ROOT / "pyproject.toml").read_text().count("[[tool.importlinter.contracts]]")
    assert contracts == 4 and f"{contracts} kept, 0 broken" in result.stdout


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package and its pyproject.toml in a folder of their own, to break on purpose."""
    root = tmp_path_factory.mktemp("architecture")
    shutil.copytree(ROOT / "cnndsl", root / "cnndsl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(("module", "line", "broken"), [
    # an upward import inside a function, the kind that hid cycles before (the front end reaching training)
    ("cnndsl/lang/report.py", "def _upward():\n    from cnndsl.training import loop\n", "layers"),
    # data importing the network layer: the two are independent of each other
    ("cnndsl/data/images.py", "import cnndsl.nn.compiler\n", "layers"),
    # a cycle inside one layer: the parser importing the front end that imports it
    ("cnndsl/lang/parser.py", "def _cycle():\n    from cnndsl.lang import frontend\n", "no import cycles"),
    # JAX in the front end (check must not load it)
    ("cnndsl/lang/shapes.py", "def _jax():\n    import jax\n", "front end (check, report"),
    # the language server reaching the training layer (it must stay off JAX: a layer below it runs it)
    ("cnndsl/editor/features.py", "def _run():\n    from cnndsl.training import loop\n", "editor tooling"),
])
def test_the_contracts_fail_on_a_violation(package_copy: Path, module: str, line: str, broken: str) -> None:
    path = package_copy / module
    original = path.read_text()
    path.write_text(original + "\n\n" + line)
    try:
        result = lint_imports(package_copy)
    finally:
        path.write_text(original)
    assert result.returncode == 1, result.stdout
    broken_lines = [text for text in result.stdout.splitlines() if text.endswith("BROKEN")]
    assert any(broken in text for text in broken_lines), result.stdout  # (an upward import may break more)


def test_no_function_of_the_loop_or_the_command_line_passes_sixty_lines() -> None:
    """A function past ~60 lines is a concept asking for its own name (the loop reads as named steps)."""
    import ast

    long = []
    for folder in ("training", "cli"):
        for path in sorted((ROOT / "cnndsl" / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long, long


def test_no_private_name_crosses_a_module() -> None:
    """What another module needs has a public name (`_held_out` imported by the pipeline hid a dependency)."""
    import ast

    crossing = []
    for path in sorted((ROOT / "cnndsl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cnndsl"):
                crossing += [f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}"
                             for alias in node.names if alias.name.startswith("_") and alias.name != "__version__"]
    assert not crossing, crossing
