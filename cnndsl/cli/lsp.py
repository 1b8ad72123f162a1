"""`cnndsl lsp`: the language server for editors, over standard input and output (`cnndsl.editor.server`)."""

from __future__ import annotations

import argparse
from typing import Any

from cnndsl.lang.errors import UsageError


def add(commands: Any, spec: argparse.ArgumentParser, data: argparse.ArgumentParser) -> None:
    """`cnndsl lsp`."""
    lsp = commands.add_parser("lsp", help="the language server for editors (stdio)",
                              description="Serve the Language Server Protocol over standard input and output: "
                                          "diagnostics as you type, hovers with shapes and costs, inlay hints, "
                                          "definitions, references, completion, symbols, fixes, formatting. "
                                          "Editors start it; see docs/editors.md. Needs the `lsp` extra.")
    lsp.add_argument("--stdio", action="store_true", help="accepted for clients that pass it; stdio is the default")


def run(args: argparse.Namespace) -> int:
    """`cnndsl lsp`: serve until the client exits."""
    try:
        from cnndsl.editor.server import serve
    except ImportError as err:
        raise UsageError(f"the language server needs pygls and lsprotocol ({err.name} is not installed)",
                         "install the extra: pip install 'cnndsl[lsp]'") from None
    serve()
    return 0
