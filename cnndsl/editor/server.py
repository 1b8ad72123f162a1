"""`cnndsl lsp`: the language server for `.cnn` files, on pygls and lsprotocol (the `lsp` extra).

One `Analysis` per open document (`cnndsl.editor.analysis`), made again after each change once the typing
pauses (`DEBOUNCE_S`), in a worker thread so the event loop keeps answering; a request about a document
whose analysis is older than its text waits for the new one. Features: diagnostics (check's, notes as
related information, an imported file's problems at its import line and in that file), hover, inlay hints,
go to definition (into imported files), find references, completion, document symbols, code actions for
every "did you mean" and formatting (`cnndsl fmt`). Nothing here imports JAX.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lsprotocol import types as t
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from cnndsl.editor import features
from cnndsl.editor.analysis import Analysis, analyze
from cnndsl.lang import nodes as n
from cnndsl.lang.errors import CnnError, Diagnostic
from cnndsl.lang.source import Source, Span
from cnndsl.lang.version import __version__

#: Seconds without a change before a document is checked again.
DEBOUNCE_S = 0.25

_log = logging.getLogger(__name__)

_SYMBOL_KINDS = {"network": t.SymbolKind.Module, "import": t.SymbolKind.File, "block": t.SymbolKind.Function,
                 "param": t.SymbolKind.Variable, "let": t.SymbolKind.Constant, "head": t.SymbolKind.Event,
                 "search": t.SymbolKind.Enum, "train": t.SymbolKind.Property, "main": t.SymbolKind.Class}
_COMPLETION_KINDS = {"layer": t.CompletionItemKind.Class, "combinator": t.CompletionItemKind.Function,
                     "block": t.CompletionItemKind.Function, "let": t.CompletionItemKind.Constant,
                     "param": t.CompletionItemKind.Property, "keyword": t.CompletionItemKind.Keyword,
                     "setting": t.CompletionItemKind.Property, "domain": t.CompletionItemKind.Value,
                     "constant": t.CompletionItemKind.EnumMember}


class CnnLanguageServer(LanguageServer):
    """The server: the documents' analyses and the tasks making them."""

    def __init__(self) -> None:
        super().__init__("cnndsl", __version__, text_document_sync_kind=t.TextDocumentSyncKind.Incremental)
        self.analyses: dict[str, tuple[int | None, Analysis]] = {}
        self.running: dict[str, tuple[int | None, asyncio.Future]] = {}  # the analysis being made, by version
        self.pending: dict[str, asyncio.Task] = {}
        self.shown_elsewhere: dict[str, set[str]] = {}  # uri -> imported files' uris it published diagnostics for
        self.checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnndsl-check")

    def schedule(self, uri: str, delay: float) -> None:
        """Check a document again after `delay` seconds without another change."""
        task = self.pending.pop(uri, None)
        if task is not None:
            task.cancel()
        self.pending[uri] = asyncio.ensure_future(self._check_later(uri, delay))

    async def _check_later(self, uri: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.current(uri)

    async def current(self, uri: str) -> Analysis | None:
        """The document's analysis for its present text (made now if it is older)."""
        if uri not in self.workspace.text_documents:
            return None
        document = self.workspace.get_text_document(uri)
        found = self.analyses.get(uri)
        if found is not None and found[0] == document.version:
            return found[1]
        running = self.running.get(uri)
        if running is not None and running[0] == document.version:  # requests that came together share one check
            return await running[1]
        version, text = document.version, document.source
        future = asyncio.get_running_loop().run_in_executor(self.checker, _analyze_safely, text, _path_of(uri))
        self.running[uri] = (version, future)
        try:
            analysis = await asyncio.shield(future)  # a cancelled waiter (a superseded debounce) leaves it to others
        finally:
            if self.running.get(uri, (None, None))[1] is future:
                del self.running[uri]
        if uri in self.workspace.text_documents and self.workspace.get_text_document(uri).version == version \
                and self.analyses.get(uri, (None,))[0] != version:  # not superseded, not published by a sharer
            self.analyses[uri] = (version, analysis)
            self.publish(uri, analysis, version)
        return analysis

    def publish(self, uri: str, analysis: Analysis, version: int | None = None) -> None:
        """The document's diagnostics, and those of the imported files it shows problems of."""
        own: list[t.Diagnostic] = []
        elsewhere: dict[str, list[t.Diagnostic]] = {}
        for d in analysis.diagnostics:
            if d.source is None or d.source.path == analysis.path:
                own.append(lsp_diagnostic(d))
                continue
            elsewhere.setdefault(_uri_of(d.source), []).append(lsp_diagnostic(d))
            own.append(_at_import(analysis, d))
        self.text_document_publish_diagnostics(t.PublishDiagnosticsParams(uri=uri, diagnostics=own, version=version))
        previous = self.shown_elsewhere.get(uri, set())
        for other in previous | set(elsewhere):
            if other in self.workspace.text_documents:
                continue  # an open file shows its own analysis
            self.text_document_publish_diagnostics(t.PublishDiagnosticsParams(uri=other,
                                                                              diagnostics=elsewhere.get(other, [])))
        self.shown_elsewhere[uri] = set(elsewhere)


def _analyze_safely(text: str, path: str) -> Analysis:
    try:
        return analyze(text, path)
    except Exception as err:  # a bug of cnndsl's: shown on the first line, and logged, never a dead server
        _log.exception("checking %s failed", path)
        source = Source(text, path)
        return Analysis(source, diagnostics=(Diagnostic("internal", f"cnndsl could not check this file: "
                                                                    f"{type(err).__name__}: {err}", source,
                                                        source.start(), help="this is a bug in cnndsl: report it"),))


def _path_of(uri: str) -> str:
    return to_fs_path(uri) or uri


def _uri_of(source: Source) -> str:
    return from_fs_path(os.path.abspath(source.path)) or source.path


# ---- positions: the front end counts characters from 1, LSP counts code units (UTF-16 by default) from 0 ----

def to_range(source: Source, span: Span | None) -> t.Range:
    """An LSP range for a span of `source`."""
    if span is None:
        return t.Range(t.Position(0, 0), t.Position(0, 0))
    return t.Range(to_position(source, span.line, span.col), to_position(source, span.end_line, span.end_col))


def to_position(source: Source, line: int, col: int) -> t.Position:
    text = source.line_text(line) if 1 <= line <= len(source.lines) else ""
    return t.Position(line - 1, _units(text[: max(0, col - 1)]))


def _units(text: str) -> int:
    """The length of `text` in the position encoding agreed with the client (UTF-16 unless it chose another)."""
    try:
        return SERVER.workspace.position_codec.client_num_units(text)
    except RuntimeError:  # no workspace before `initialize`
        return len(text.encode("utf-16-le")) // 2


def from_position(source: Source, position: t.Position) -> tuple[int, int]:
    """(line, col) from 1 of an LSP position in `source`."""
    line = position.line + 1
    text = source.line_text(line) if 1 <= line <= len(source.lines) else ""
    col = units = 0
    while col < len(text):  # characters one by one: a line of a megabyte costs one pass
        units += _units(text[col])
        if units > position.character:
            break
        col += 1
    return line, col + 1


def lsp_diagnostic(d: Diagnostic) -> t.Diagnostic:
    """A cnndsl diagnostic as LSP's: the help after the message, each note as related information."""
    source = d.source if d.source is not None else Source("", "<spec>")
    location = t.Location(uri=_uri_of(source), range=to_range(source, d.span))
    message = d.message + (f"\nhelp: {d.help}" if d.help else "")
    related = [t.DiagnosticRelatedInformation(location=location, message=note) for note in d.notes]
    return t.Diagnostic(range=location.range, message=message, severity=t.DiagnosticSeverity.Error, code=d.kind,
                        source="cnndsl", related_information=related or None)


def _at_import(analysis: Analysis, d: Diagnostic) -> t.Diagnostic:
    """A problem inside an imported file, shown at the import line that brings the file in."""
    assert d.source is not None
    imports = [s for s in (analysis.program.statements if analysis.program else ()) if isinstance(s, n.Import)]
    target = Path(d.source.path).resolve()
    folder = Path(analysis.path).resolve().parent
    line = next((s for s in imports if (folder / s.path).resolve() == target), imports[0] if imports else None)
    where = to_range(analysis.source, line.span if line else None)
    inner = lsp_diagnostic(d)
    location = t.Location(uri=_uri_of(d.source), range=inner.range)
    span = d.span
    position = f":{span.line}:{span.col}" if span else ""
    return t.Diagnostic(range=where, message=f"in {Path(d.source.path).name}{position}: {inner.message}",
                        severity=t.DiagnosticSeverity.Error, code=d.kind, source="cnndsl",
                        related_information=[t.DiagnosticRelatedInformation(location=location, message=d.message)])


SERVER = CnnLanguageServer()


# ---- document life ----

@SERVER.feature(t.TEXT_DOCUMENT_DID_OPEN)
async def did_open(ls: CnnLanguageServer, params: t.DidOpenTextDocumentParams) -> None:
    """Check a document as soon as it opens (again if it was open: its diagnostics are published anew)."""
    ls.analyses.pop(params.text_document.uri, None)
    ls.schedule(params.text_document.uri, 0)


@SERVER.feature(t.TEXT_DOCUMENT_DID_CHANGE)
async def did_change(ls: CnnLanguageServer, params: t.DidChangeTextDocumentParams) -> None:
    """Check again once the typing pauses."""
    ls.schedule(params.text_document.uri, DEBOUNCE_S)


@SERVER.feature(t.TEXT_DOCUMENT_DID_SAVE)
async def did_save(ls: CnnLanguageServer, params: t.DidSaveTextDocumentParams) -> None:
    """Check again now: a file this one imports may have changed too."""
    for uri in list(ls.analyses):
        ls.analyses.pop(uri, None)
        ls.schedule(uri, 0)


@SERVER.feature(t.TEXT_DOCUMENT_DID_CLOSE)
async def did_close(ls: CnnLanguageServer, params: t.DidCloseTextDocumentParams) -> None:
    """Forget a closed document (its diagnostics cleared)."""
    uri = params.text_document.uri
    task = ls.pending.pop(uri, None)
    if task is not None:
        task.cancel()
    ls.analyses.pop(uri, None)
    ls.text_document_publish_diagnostics(t.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


# ---- requests ----

@SERVER.feature(t.TEXT_DOCUMENT_HOVER)
async def hover(ls: CnnLanguageServer, params: t.HoverParams) -> t.Hover | None:
    """A layer's op, shapes and costs; a block call's totals; a name's binding; a free name's domain."""
    analysis = await ls.current(params.text_document.uri)
    if analysis is None:
        return None
    text = features.hover(analysis, *from_position(analysis.source, params.position))
    return t.Hover(contents=t.MarkupContent(kind=t.MarkupKind.Markdown, value=text)) if text else None


@SERVER.feature(t.TEXT_DOCUMENT_INLAY_HINT, t.InlayHintOptions(resolve_provider=False))
async def inlay_hints(ls: CnnLanguageServer, params: t.InlayHintParams) -> list[t.InlayHint]:
    """Each chain step's output shape; each block's totals on its definition line."""
    analysis = await ls.current(params.text_document.uri)
    if analysis is None:
        return []
    hints = features.inlay_hints(analysis, params.range.start.line + 1, params.range.end.line + 1)
    return [t.InlayHint(position=to_position(analysis.source, h.line, h.col), label=h.label, padding_left=True,
                        kind=t.InlayHintKind.Type, tooltip=h.tooltip or None) for h in hints]


@SERVER.feature(t.TEXT_DOCUMENT_DEFINITION)
async def definition(ls: CnnLanguageServer, params: t.DefinitionParams) -> list[t.Location] | None:
    """Where a block, let, parameter, index or map is defined (in an imported file too); an import's file."""
    analysis = await ls.current(params.text_document.uri)
    if analysis is None:
        return None
    line, col = from_position(analysis.source, params.position)
    imported = _import_at(analysis, line, col)
    if imported is not None:
        return [t.Location(uri=from_fs_path(str(imported)), range=t.Range(t.Position(0, 0), t.Position(0, 0)))]
    found = analysis.definition_at(line, col)
    if found is None:
        return None
    return [t.Location(uri=_uri_of(found.source), range=to_range(found.source, found.span))]


def _import_at(analysis: Analysis, line: int, col: int) -> Path | None:
    if analysis.program is None:
        return None
    for stmt in analysis.program.statements:
        if isinstance(stmt, n.Import) and stmt.span.line <= line <= stmt.span.end_line:
            path = (Path(analysis.path).resolve().parent / stmt.path).resolve()
            return path if path.is_file() else None
    return None


@SERVER.feature(t.TEXT_DOCUMENT_REFERENCES)
async def references(ls: CnnLanguageServer, params: t.ReferenceParams) -> list[t.Location] | None:
    """Every use in the document of the block, let, parameter, index or map at the cursor."""
    analysis = await ls.current(params.text_document.uri)
    if analysis is None:
        return None
    found = analysis.definition_at(*from_position(analysis.source, params.position))
    if found is None:
        return None
    uri = params.text_document.uri
    spans = [ref.span for ref in analysis.references_to(found) if ref.span != found.span]
    locations = [t.Location(uri=uri, range=to_range(analysis.source, span)) for span in spans]
    if params.context.include_declaration:
        locations.insert(0, t.Location(uri=_uri_of(found.source), range=to_range(found.source, found.span)))
    return locations


@SERVER.feature(t.TEXT_DOCUMENT_COMPLETION, t.CompletionOptions(trigger_characters=["(", ",", " ", "@"]))
async def completion(ls: CnnLanguageServer, params: t.CompletionParams) -> t.CompletionList:
    """Layers with their signatures, a call's parameter names, blocks and lets, keywords, settings, domains."""
    uri = params.text_document.uri
    document = ls.workspace.get_text_document(uri)
    found = ls.analyses.get(uri)  # names from the last analysis: the text being typed rarely checks
    analysis = found[1] if found is not None else await ls.current(uri)
    text = Source(document.source).text
    line, col = from_position(Source(text), params.position)
    items = features.completions(analysis or Analysis(Source(text)), text, line, col)
    return t.CompletionList(is_incomplete=False, items=[
        t.CompletionItem(label=item.label, kind=_COMPLETION_KINDS[item.kind], detail=item.detail or None,
                         documentation=t.MarkupContent(kind=t.MarkupKind.Markdown, value=item.documentation)
                         if item.documentation else None, insert_text=item.insert) for item in items])


@SERVER.feature(t.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
async def document_symbols(ls: CnnLanguageServer, params: t.DocumentSymbolParams) -> list[t.DocumentSymbol]:
    """The network, imports, blocks (with their parameters), lets, heads, searched names and train line."""
    analysis = await ls.current(params.text_document.uri)
    if analysis is None:
        return []

    def convert(symbol: features.Symbol) -> t.DocumentSymbol:
        return t.DocumentSymbol(name=symbol.name, kind=_SYMBOL_KINDS.get(symbol.kind, t.SymbolKind.Variable),
                                range=to_range(analysis.source, symbol.span),
                                selection_range=to_range(analysis.source, symbol.selection),
                                detail=symbol.detail or None, children=[convert(c) for c in symbol.children] or None)

    return [convert(symbol) for symbol in features.symbols(analysis)]


@SERVER.feature(t.TEXT_DOCUMENT_CODE_ACTION,
                t.CodeActionOptions(code_action_kinds=[t.CodeActionKind.QuickFix]))
async def code_actions(ls: CnnLanguageServer, params: t.CodeActionParams) -> list[t.CodeAction]:
    """A quick fix for every "did you mean" diagnostic in the range."""
    uri = params.text_document.uri
    analysis = await ls.current(uri)
    if analysis is None:
        return []
    wanted = params.range
    actions = []
    for d in analysis.diagnostics:
        fix = features.fix_of(d)
        if fix is None or d.source is None or d.source.path != analysis.path:
            continue
        span, replacement = fix
        where = to_range(analysis.source, span)
        if (where.end.line, where.end.character) < (wanted.start.line, wanted.start.character) or \
                (where.start.line, where.start.character) > (wanted.end.line, wanted.end.character):
            continue
        actions.append(t.CodeAction(
            title=f"Replace `{d.fix[0]}` with `{replacement}`", kind=t.CodeActionKind.QuickFix, is_preferred=True,
            diagnostics=[lsp_diagnostic(d)],
            edit=t.WorkspaceEdit(changes={uri: [t.TextEdit(range=where, new_text=replacement)]})))
    return actions


@SERVER.feature(t.TEXT_DOCUMENT_FORMATTING)
async def formatting(ls: CnnLanguageServer, params: t.DocumentFormattingParams) -> list[t.TextEdit] | None:
    """The document in `cnndsl fmt`'s layout; nothing while it does not parse."""
    from cnndsl.editor.format import format_source

    document = ls.workspace.get_text_document(params.text_document.uri)
    source = Source(document.source, _path_of(params.text_document.uri))
    try:
        formatted = await asyncio.get_running_loop().run_in_executor(ls.checker, format_source, source)
    except CnnError:
        return None
    if formatted == document.source:
        return []
    lines = document.source.split("\n")
    end = t.Position(len(lines) - 1, _units(lines[-1]))
    return [t.TextEdit(range=t.Range(t.Position(0, 0), end), new_text=formatted)]


def serve() -> None:
    """Serve over standard input and output until the client says exit."""
    try:
        SERVER.start_io()
    finally:  # the checking thread waits for work: `cnndsl`'s exit joins every thread that is not a daemon
        SERVER.checker.shutdown(wait=False, cancel_futures=True)
