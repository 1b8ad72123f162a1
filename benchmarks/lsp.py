"""`cnndsl lsp` latency: how long an editor waits, over stdio, on the largest example and a 10,000-layer file.

    python benchmarks/lsp.py [--repeat 5]

For each document: open -> diagnostics published (a whole check), a change -> diagnostics (the check again;
the server waits DEBOUNCE_S of quiet first, subtracted here), then hover, inlay hints for 60 visible lines,
completion and document symbols (medians over --repeat requests, each answered from the current analysis).
The client is pygls's (through pytest-lsp's launcher), the same a test uses.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from lsprotocol import types as t
from pytest_lsp import ClientServerConfig, client_capabilities

from cnndsl.editor.server import DEBOUNCE_S

ROOT = Path(__file__).resolve().parent.parent


def documents() -> list[tuple[str, Path, str]]:
    largest = max((ROOT / "examples").glob("*.cnn"), key=lambda p: len(p.read_text()))
    steps = "\n    -> ".join(["conv(8, 3x3, pad=same) -> relu"] * 5000)
    return [(f"{largest.name} (largest example)", largest, largest.read_text()),
            ("10,000 layers", ROOT / "benchmarks" / "deep_10000.cnn",
             f"input 32x32x3\ninput -> {steps} -> global_avgpool -> fc(10)\n")]


async def wait_published(log: list, uri: str, version: int) -> None:
    while not any(p.uri == uri and p.version == version for p in log):
        await asyncio.sleep(0.005)


async def measure(repeat: int) -> None:
    client = await ClientServerConfig(server_command=[sys.executable, "-m", "cnndsl", "lsp"]).start()
    log: list = []
    handle = client.protocol._handle_notification

    def recording(method: str, params: object) -> None:
        if method == t.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS:
            log.append(params)
        handle(method, params)

    client.protocol._handle_notification = recording
    await client.initialize_session(t.InitializeParams(capabilities=client_capabilities("neovim"),
                                                       root_uri=ROOT.as_uri()))
    print(f"{'document':<34}{'open->diag':>11}{'change->diag':>13}{'hover':>8}{'hints':>8}{'complete':>9}"
          f"{'symbols':>8}   (ms; medians of {repeat})")
    for label, path, text in documents():
        uri = path.resolve().as_uri()
        start = time.perf_counter()
        client.text_document_did_open(t.DidOpenTextDocumentParams(t.TextDocumentItem(uri, "cnn", 1, text)))
        await wait_published(log, uri, 1)
        opened = time.perf_counter() - start
        changes = []
        for version in range(2, 2 + repeat):
            start = time.perf_counter()
            client.text_document_did_change(t.DidChangeTextDocumentParams(
                t.VersionedTextDocumentIdentifier(version=version, uri=uri), [t.TextDocumentContentChangeWholeDocument(text)]))
            await wait_published(log, uri, version)
            changes.append(time.perf_counter() - start - DEBOUNCE_S)
        lines = text.split("\n")
        middle = len(lines) // 2
        doc = t.TextDocumentIdentifier(uri)
        position = t.Position(middle, len(lines[middle]) // 2)
        requests = {
            "hover": lambda: client.text_document_hover_async(t.HoverParams(doc, position)),
            "hints": lambda: client.text_document_inlay_hint_async(t.InlayHintParams(
                doc, t.Range(t.Position(middle, 0), t.Position(middle + 60, 0)))),
            "complete": lambda: client.text_document_completion_async(t.CompletionParams(doc, position)),
            "symbols": lambda: client.text_document_document_symbol_async(t.DocumentSymbolParams(doc)),
        }
        timings = {}
        for name, request in requests.items():
            samples = []
            for _ in range(repeat):
                start = time.perf_counter()
                await request()
                samples.append(time.perf_counter() - start)
            timings[name] = statistics.median(samples)
        ms = [opened, statistics.median(changes)] + list(timings.values())
        print(f"{label:<34}" + "".join(f"{v * 1000:>{w}.0f}" for v, w in zip(ms, (11, 13, 8, 8, 9, 8))))
    await client.shutdown_session()
    await client.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    asyncio.run(measure(parser.parse_args().repeat))


if __name__ == "__main__":
    main()
