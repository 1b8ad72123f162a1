"""The TextMate grammar (editors/vscode): generated from the language's tables and up to date; every example
and invalid spec tokenized by a TextMate engine (textmate-grammar-python, on Oniguruma as VS Code's is) with
every character classified and no error scope; the VS Code extension folder names files that exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textmate_grammar.parsers.base import LanguageParser

from cnndsl.editor import textmate
from tests.conftest import EXAMPLES, ROOT

VSCODE = ROOT / "editors" / "vscode"
GRAMMAR = VSCODE / "syntaxes" / "cnn.tmLanguage.json"


@pytest.fixture(scope="module")
def parser() -> LanguageParser:
    return LanguageParser(json.loads(GRAMMAR.read_text()))


def scopes(parser: LanguageParser, text: str) -> list[tuple[str, list[str]]]:
    return [(token, names) for _, token, names in parser.parse_string(text).flatten()]


def test_the_grammar_file_is_generated_from_the_languages_tables() -> None:
    assert GRAMMAR.read_text() == textmate.text(), "run: python -m cnndsl.editor.textmate > " + str(GRAMMAR)


@pytest.mark.parametrize("path", EXAMPLES + sorted((ROOT / "tests" / "invalid").glob("*.cnn")), ids=lambda p: p.stem)
def test_every_character_of_every_spec_is_classified(parser: LanguageParser, path: Path) -> None:
    text = path.read_text()
    tokens = scopes(parser, text)
    assert "".join(token for token, _ in tokens).replace("\n", "") == text.replace("\n", "")
    unclassified = [token for token, names in tokens if token.strip() and names == ["source.cnn"]]
    assert not unclassified
    assert not [token for token, names in tokens if any(n.startswith("invalid") for n in names)]


def test_token_classes_follow_the_grammar(parser: LanguageParser) -> None:
    text = ('import "blocks.cnn"\nblock up(c, skip) = conv_transpose(c, 2x2, stride=2) -> concat(skip | identity)\n'
            "search N in 1..3\nlet w = max(8, round(c * 0.75)), POOL? = true\n"
            "input -> conv(w, 3x3, pad=same) -> @e1 -> resize(@input, mode=bilinear)  # note\n"
            "training head aux = @e1 -> fc(10)\nhead probs = softmax\ntrain aux weight = 0.3\n")
    first: dict[str, list[str]] = {}
    for token, names in scopes(parser, text):
        first.setdefault(token.strip(), names)
    expect = {"import": "keyword.other.statement", '"blocks.cnn"': "string.quoted", "up": "entity.name.function.block",
              "conv_transpose": "support.function.layer", "concat": "support.function.combinator",
              "identity": "support.function.combinator", "2x2": "constant.numeric.size", "1..3": "constant.numeric.range",
              "0.75": "constant.numeric.float", "max": "support.function.math", "same": "constant.language",
              "@e1": "variable.other.map", "stride": "variable.parameter", "training": "keyword.other.statement",
              "head": "keyword.other.statement", "aux": "entity.name.function.head", "->": "keyword.operator.arrow",
              "|": "keyword.operator.branch", "# note": "comment.line", "skip": "variable.other", "in": "keyword.control"}
    for token, scope in expect.items():
        assert any(name.startswith(scope) for name in first[token]), (token, first[token])
    # soft keywords: `head` as a block parameter is a name
    assert scopes(parser, "block b(head) = fc(head)\n")[4][1][-1] == "variable.other.cnn"


def test_the_vscode_extension_names_files_that_exist() -> None:
    manifest = json.loads((VSCODE / "package.json").read_text())
    language = manifest["contributes"]["languages"][0]
    assert language["extensions"] == [".cnn"] and (VSCODE / language["configuration"]).is_file()
    assert all((VSCODE / g["path"]).is_file() for g in manifest["contributes"]["grammars"])
    assert (VSCODE / manifest["main"]).is_file()
    assert manifest["contributes"]["configuration"]["properties"]["cnndsl.server.command"]["default"] == ["cnndsl", "lsp"]
    json.loads((VSCODE / "language-configuration.json").read_text())
