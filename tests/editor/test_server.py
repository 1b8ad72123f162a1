"""`cnndsl lsp` end to end: a real LSP client (pytest-lsp) talks to the server over stdio, as an editor does.
One server for the module; each test opens its own documents."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_lsp
from hypothesis import HealthCheck, given, settings
from lsprotocol import types as t
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from cnndsl.editor.format import format_text
from tests.conftest import EXAMPLES, ROOT
from tests.fuzzing import mutated_programs

#: The async tests share the module's event loop, where the module's server lives.
ASYNC = pytest.mark.asyncio(loop_scope="module")

#: How long a test waits for the server's diagnostics: a bound against a hang, far above the ~0.3 s a small
#: spec takes (the 10,000-layer file takes ~3 s on the 2-core CI machine when idle).
PATIENCE_S = 120


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, "-m", "cnndsl", "lsp"]))
async def client(lsp_client: LanguageClient):
    record_diagnostics(lsp_client)
    await lsp_client.initialize_session(t.InitializeParams(capabilities=client_capabilities("neovim"),
                                                           root_uri=ROOT.as_uri()))
    yield
    await lsp_client.shutdown_session()


def record_diagnostics(client: LanguageClient) -> None:
    """Keep every diagnostics notification in order (pytest-lsp keeps the last per file), to wait for a
    version's."""
    handle = client.protocol._handle_notification
    client.published = []  # type: ignore[attr-defined]

    def recording(method: str, params: object) -> None:
        if method == t.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS:
            client.published.append(params)  # type: ignore[attr-defined]
        handle(method, params)

    client.protocol._handle_notification = recording


async def published(client: LanguageClient, uri: str, version: int | None) -> list[t.Diagnostic]:
    """Wait for the diagnostics the server publishes for a document's version (None: an unopened file's)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE_S
    while loop.time() < deadline:
        for params in client.published:  # type: ignore[attr-defined]
            if params.uri == uri and params.version == version:
                client.published.remove(params)  # type: ignore[attr-defined]
                return list(params.diagnostics)
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no diagnostics for {uri} version {version} in {PATIENCE_S} s")


async def open_doc(client: LanguageClient, path: Path, text: str | None = None) -> tuple[str, list[t.Diagnostic]]:
    uri = path.resolve().as_uri()
    client.published[:] = [p for p in client.published if p.uri != uri]  # type: ignore[attr-defined]
    client.text_document_did_open(t.DidOpenTextDocumentParams(
        t.TextDocumentItem(uri=uri, language_id="cnn", version=1, text=path.read_text() if text is None else text)))
    return uri, await published(client, uri, 1)


async def change(client: LanguageClient, uri: str, version: int, text: str) -> list[t.Diagnostic]:
    client.text_document_did_change(t.DidChangeTextDocumentParams(
        t.VersionedTextDocumentIdentifier(uri=uri, version=version),
        [t.TextDocumentContentChangeWholeDocument(text=text)]))
    return await published(client, uri, version)


def at(uri: str, line: int, character: int) -> dict:
    return {"text_document": t.TextDocumentIdentifier(uri=uri), "position": t.Position(line, character)}


def position_of(text: str, needle: str, offset: int = 0) -> tuple[int, int]:
    """(line, character) from 0 of `needle`'s first occurrence (+offset characters)."""
    index = text.index(needle) + offset
    return text.count("\n", 0, index), index - (text.rfind("\n", 0, index) + 1)


@ASYNC
async def test_diagnostics_as_you_type_with_notes_and_help(client: LanguageClient, tmp_path: Path) -> None:
    spec = tmp_path / "net.cnn"
    text = "input 8x8x1\ninput -> conv(8, 3x3, strid=2) -> fc(10)\n"
    uri, found = await open_doc(client, spec, text)
    assert len(found) == 1
    d = found[0]
    assert d.code == "arguments" and "`conv` has no parameter `strid`" in d.message
    assert "help: did you mean `stride`?" in d.message and d.source == "cnndsl"
    assert (d.range.start.line, d.range.start.character) == position_of(text, "strid=")
    # a join of maps of different shapes: the diagnostic's notes become related information
    text = "input 8x8x1\ninput -> concat(conv(8, 3x3) | conv(4, 1x1)) -> fc(10)\n"
    found = await change(client, uri, 2, text)
    assert found and found[0].related_information and all(r.location.uri == uri for r in found[0].related_information)
    assert await change(client, uri, 3, "input 8x8x1\ninput -> conv(8, 3x3, stride=2) -> fc(10)\n") == []


@ASYNC
async def test_an_imported_files_problem_shows_at_the_import_and_in_that_file(client: LanguageClient,
                                                                            tmp_path: Path) -> None:
    lib = tmp_path / "lib.cnn"
    lib.write_text("block unit(c) = conv(c, 3x3, pad=same) -> rellu\n")
    main = tmp_path / "main.cnn"
    text = 'import "lib.cnn"\ninput 8x8x1\ninput -> unit(8) -> global_avgpool -> fc(10)\n'
    _, found = await open_doc(client, main, text)
    assert len(found) == 1 and found[0].range.start.line == 0, found  # at the import line
    assert found[0].message.startswith("in lib.cnn:1:") and "`rellu` is not defined" in found[0].message
    assert found[0].related_information[0].location.uri == lib.resolve().as_uri()
    in_lib = await published(client, lib.resolve().as_uri(), None)  # the imported file's own
    assert len(in_lib) == 1 and in_lib[0].range.start.character == position_of(lib.read_text(), "rellu")[1]


@ASYNC
async def test_hover_shows_layers_block_calls_bindings_and_domains(client: LanguageClient) -> None:
    path = ROOT / "examples" / "resnet18.cnn"
    text = path.read_text()
    uri, found = await open_doc(client, path)
    assert found == []
    result = await client.text_document_hover_async(t.HoverParams(**at(uri, *position_of(text, "conv(64, 7x7", 2))))
    value = result.contents.value
    assert "conv(filters=64, kernel=7x7, stride=2, pad=3, dilation=1, groups=1, bias=false)" in value
    assert "224x224x3 ⟶ 112x112x64" in value and "9,408 params" in value and "118,013,952 MACs" in value
    result = await client.text_document_hover_async(t.HoverParams(**at(uri, *position_of(text, "[stage(", 2))))
    value = result.contents.value
    assert "block stage(c, n, stride)" in value and "11,166,976 params" in value and "4 runs" in value
    result = await client.text_document_hover_async(t.HoverParams(**at(uri, *position_of(text, "depths[i]", 1))))
    assert "let depths = (2, 2, 2, 2)" in result.contents.value
    # a body layer run in 8 places lists them
    line = position_of(text, "conv(c, 3x3, pad=1, bias=false)", 1)
    assert "runs 8 times" in (await client.text_document_hover_async(t.HoverParams(**at(uri, *line)))).contents.value
    course = ROOT / "examples" / "course.cnn"
    uri, found = await open_doc(client, course)
    assert found == []  # a family: its searched free names are no errors
    result = await client.text_document_hover_async(
        t.HoverParams(**at(uri, *position_of(course.read_text(), "]*N", 2))))
    assert "search N in 1..3" in result.contents.value


@ASYNC
async def test_inlay_hints_give_each_steps_shape_and_each_blocks_totals(client: LanguageClient) -> None:
    path = ROOT / "examples" / "resnet18.cnn"
    text = path.read_text()
    uri, _ = await open_doc(client, path)
    lines = text.split("\n")
    hints = await client.text_document_inlay_hint_async(t.InlayHintParams(
        text_document=t.TextDocumentIdentifier(uri=uri),
        range=t.Range(t.Position(0, 0), t.Position(len(lines), 0))))
    by_place = {(h.position.line, h.position.character): h.label for h in hints}
    stem_line, stem_col = position_of(text, "conv(64, 7x7, stride=2, pad=3, bias=false)")
    assert by_place[(stem_line, stem_col + len("conv(64, 7x7, stride=2, pad=3, bias=false)"))] == "⟶ 112x112x64"
    assert any(label.startswith("8 calls · 11.2M params") for label in by_place.values())  # block basic
    assert by_place[(len(lines) - 2, len(lines[-2]))] == "⟶ 1000"  # the last step: the network's output


@ASYNC
async def test_definition_and_references(client: LanguageClient) -> None:
    path = ROOT / "examples" / "resnet18.cnn"
    text = path.read_text()
    uri, _ = await open_doc(client, path)
    use = position_of(text, "basic(c, stride)")
    result = await client.text_document_definition_async(t.DefinitionParams(**at(uri, *use)))
    assert result[0].uri == uri and (result[0].range.start.line, result[0].range.start.character) == \
        position_of(text, "basic(c, stride=1)")
    param = position_of(text, "stage(c, n, stride)", 6)  # `c` of stage
    refs = await client.text_document_references_async(t.ReferenceParams(
        **at(uri, *param), context=t.ReferenceContext(include_declaration=True)))
    body = text.split("\n")[param[0]]
    uses = [(param[0], body.index("basic(c, stride)") + 6), (param[0], body.index("basic(c)]") + 6)]
    assert [(r.range.start.line, r.range.start.character) for r in refs] == [param] + uses
    # into an imported file, and from an import line to the file
    r152 = ROOT / "examples" / "resnet152.cnn"
    uri152, _ = await open_doc(client, r152)
    r152_text = r152.read_text()
    result = await client.text_document_definition_async(t.DefinitionParams(**at(uri152, *position_of(r152_text,
                                                                                                       "resnet("))))
    r50 = (ROOT / "examples" / "resnet50.cnn").resolve()
    assert result[0].uri == r50.as_uri() and result[0].range.start.line == \
        position_of(r50.read_text(), "block resnet")[0]
    result = await client.text_document_definition_async(t.DefinitionParams(**at(uri152, *position_of(r152_text,
                                                                                                       "import"))))
    assert result[0].uri == r50.as_uri()


@ASYNC
async def test_completion_offers_layers_parameters_names_and_domains(client: LanguageClient, tmp_path: Path) -> None:
    text = "let w = 8\nblock unit(c, stride=1) = conv(c, 3x3)\ninput 8x8x1\ninput -> conv(8, \nsearch N in \n"
    uri, _ = await open_doc(client, tmp_path / "typing.cnn", text)
    labels = {i.label: i for i in (await client.text_document_completion_async(
        t.CompletionParams(**at(uri, 3, len("input -> conv(8, "))))).items}
    assert {"stride=", "pad=", "groups=", "bias="} <= set(labels) and labels["pad="].detail == "default valid"
    assert "unit" in labels and "w" in labels and labels["conv"].detail.startswith("conv(filters, kernel, stride=1")
    labels = {i.label for i in (await client.text_document_completion_async(
        t.CompletionParams(**at(uri, 4, len("search N in "))))).items}
    assert {"1..3", "{a, b}", "log(1e-4, 1e-2)", "uniform(0.1, 0.5)"} <= labels
    labels = {i.label for i in (await client.text_document_completion_async(t.CompletionParams(**at(uri, 2, 0)))).items}
    assert {"block", "let", "search", "train", "head"} <= labels


@ASYNC
async def test_document_symbols(client: LanguageClient) -> None:
    path = ROOT / "examples" / "unet.cnn"
    uri, _ = await open_doc(client, path)
    found = await client.text_document_document_symbol_async(t.DocumentSymbolParams(
        text_document=t.TextDocumentIdentifier(uri=uri)))
    names = [(s.name, s.kind) for s in found]
    assert ("UNet", t.SymbolKind.Module) in names and ("double", t.SymbolKind.Function) in names
    assert ("w", t.SymbolKind.Constant) in names and ("train", t.SymbolKind.Property) in names
    up = next(s for s in found if s.name == "up")
    assert [c.name for c in up.children] == ["c", "skip"]


@ASYNC
async def test_code_actions_fix_every_did_you_mean(client: LanguageClient, tmp_path: Path) -> None:
    text = ("input 8x8x1\nblock unit(c) = conv(c, 3x3, pad=same)\ninput -> unti(8) -> conv(8, 3x3, strid=2) -> @e1\n"
            "    -> concat(@e11 | identity) -> global_avgpool -> fc(10)\ntrain epoch = 3\n")
    uri, found = await open_doc(client, tmp_path / "typos.cnn", text)
    actions = await client.text_document_code_action_async(t.CodeActionParams(
        text_document=t.TextDocumentIdentifier(uri=uri), range=t.Range(t.Position(0, 0), t.Position(6, 0)),
        context=t.CodeActionContext(diagnostics=found)))
    titles = sorted(a.title for a in actions)
    assert titles == ["Replace `@e11` with `@e1`", "Replace `epoch` with `epochs`", "Replace `strid` with `stride`",
                      "Replace `unti` with `unit`"]
    fixed = text
    edits = sorted((e for a in actions for e in a.edit.changes[uri]), key=lambda e: (e.range.start.line,
                                                                                    e.range.start.character),
                   reverse=True)
    lines = fixed.split("\n")
    for edit in edits:  # apply bottom-up, as an editor does
        row = lines[edit.range.start.line]
        lines[edit.range.start.line] = row[:edit.range.start.character] + edit.new_text + row[edit.range.end.character:]
    assert await change(client, uri, 2, "\n".join(lines)) == []


@ASYNC
async def test_formatting_is_cnndsl_fmt(client: LanguageClient, tmp_path: Path) -> None:
    text = "input 8x8x1\ninput->conv(8,3x3)->relu  # first\n  ->fc( 10 )\n"
    uri, _ = await open_doc(client, tmp_path / "ugly.cnn", text)
    edits = await client.text_document_formatting_async(t.DocumentFormattingParams(
        text_document=t.TextDocumentIdentifier(uri=uri), options=t.FormattingOptions(tab_size=4, insert_spaces=True)))
    assert len(edits) == 1 and edits[0].new_text == format_text(text)
    assert edits[0].range.start == t.Position(0, 0) and edits[0].range.end.line == 3


FUZZ_VERSIONS = itertools.count(1)


# Mutated examples and invalid specs (cut, spliced with hostile tokens): 25 a run, new ones each run.
@ASYNC
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=mutated_programs())
async def test_any_text_through_did_change_never_breaks_the_server(client: LanguageClient, text: str) -> None:
    uri = (ROOT / "fuzz.cnn").as_uri()  # not a file: nothing is written
    version = next(FUZZ_VERSIONS)
    if version == 1:
        await open_doc(client, ROOT / "fuzz.cnn", text)
    else:
        await change(client, uri, version, text)
    lines = text.split("\n")
    for position in (t.Position(0, 0), t.Position(len(lines) // 2, 3), t.Position(len(lines) - 1, len(lines[-1]))):
        await client.text_document_hover_async(t.HoverParams(text_document=t.TextDocumentIdentifier(uri=uri),
                                                             position=position))
        await client.text_document_completion_async(t.CompletionParams(text_document=t.TextDocumentIdentifier(uri=uri),
                                                                       position=position))
    await client.text_document_inlay_hint_async(t.InlayHintParams(
        text_document=t.TextDocumentIdentifier(uri=uri), range=t.Range(t.Position(0, 0), t.Position(len(lines), 0))))
    await client.text_document_document_symbol_async(t.DocumentSymbolParams(
        text_document=t.TextDocumentIdentifier(uri=uri)))


@ASYNC
async def test_a_ten_thousand_layer_file(client: LanguageClient, tmp_path: Path) -> None:
    steps = "\n    -> ".join(["conv(8, 3x3, pad=same) -> relu"] * 5000)
    text = f"input 32x32x3\ninput -> {steps} -> global_avgpool -> fc(10)\n"
    uri, found = await open_doc(client, tmp_path / "deep.cnn", text)
    assert found == []
    result = await client.text_document_hover_async(t.HoverParams(**at(uri, 4000, 10)))
    assert "conv(filters=8" in result.contents.value and "32x32x8 ⟶ 32x32x8" in result.contents.value
    hints = await client.text_document_inlay_hint_async(t.InlayHintParams(
        text_document=t.TextDocumentIdentifier(uri=uri), range=t.Range(t.Position(100, 0), t.Position(120, 0))))
    assert len(hints) == 2 * 21 and all(h.label == "⟶ 32x32x8" for h in hints)


def test_the_server_never_imports_jax() -> None:
    code = ("import sys\nimport cnndsl.editor.server\nfrom cnndsl.editor.analysis import analyze\n"
            "from cnndsl.editor import features\n"
            f"for p in {[str(p) for p in EXAMPLES]!r}:\n"
            "    a = analyze(open(p).read(), p); features.inlay_hints(a); features.hover(a, 3, 3)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax', 'numpy'))\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_the_lsp_extra_the_command_says_what_to_install() -> None:
    code = "import sys\nsys.modules['pygls'] = None\nfrom cnndsl.cli import main\nsys.exit(main(['lsp']))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "pip install 'cnndsl[lsp]'" in result.stderr
