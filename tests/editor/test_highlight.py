"""The Pygments lexer: every example and every program of the fuzz corpus lexed without an error token and
without losing a character; each kind of token classified as the grammar means it; found by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import Error, Keyword, Name, Number, Operator, String

from cnndsl.editor.highlight import CnnLexer
from tests.conftest import EXAMPLES, ROOT
from tests.fuzzing import grammar_programs


def tokens(text: str) -> list[tuple[object, str]]:
    return [(kind, value) for kind, value in CnnLexer().get_tokens(text) if value.strip()]


@pytest.mark.parametrize("path", EXAMPLES + sorted((ROOT / "tests" / "invalid").glob("*.cnn")), ids=lambda p: p.stem)
def test_every_example_lexes_whole_and_without_errors(path: Path) -> None:
    text = path.read_text()
    pieces = list(CnnLexer().get_tokens(text))
    assert "".join(value for _, value in pieces) == text if text.endswith("\n") else text + "\n"
    assert not [value for kind, value in pieces if kind in Error]


# 60 programs a run (hypothesis draws new ones each run): drawing from the grammar is the cost (30 s for 200 on
# the CI machine); the parser's own fuzz test draws 200 from the same generator. Hypothesis's grammar strategy
# discards many drafts itself (filter_too_much is its own filtering, not this test's)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                 HealthCheck.filter_too_much])
@given(grammar_programs())
def test_programs_from_the_grammar_lex_without_errors(text: str) -> None:
    """The parser's fuzz generator (every rule and terminal of grammar/cnn.lark): whatever the grammar can
    produce, the lexer classifies, character for character."""
    # a lone carriage return is a line break to Pygments (and to editors) but blank space to the grammar (or
    # text inside a comment): written as the space it is to the grammar, so each token stays what it was
    text = re.sub("\r(?!\n)", " ", text)
    pieces = list(CnnLexer(stripnl=False).get_tokens(text))
    assert not [value for kind, value in pieces if kind in Error]
    # Pygments reads \r\n as \n, and ends the text with one
    assert "".join(value for _, value in pieces).rstrip("\n") == text.replace("\r\n", "\n").rstrip("\n")


def test_each_kind_of_token_is_classified_as_the_grammar_means_it() -> None:
    text = ('import "blocks.cnn"\nblock up(c, skip) = conv_transpose(c, 2x2, stride=2) -> concat(skip | identity)\n'
            "search N in 1..3\nlet w = max(8, round(c * 0.75)), POOL? = true\n"
            "input -> conv(w, 3x3, pad=same) -> @e1 -> resize(@input, mode=bilinear)\n"
            "training head aux = @e1 -> fc(10)\nhead probs = softmax\ntrain aux weight = 0.3\n")
    found = tokens(text)
    kind_of: dict[str, object] = {}
    for kind, value in found:  # each word's first use
        kind_of.setdefault(value, kind)
    assert kind_of["import"] in Keyword and kind_of['"blocks.cnn"'] in String
    assert kind_of["up"] in Name.Function and kind_of["aux"] in Name.Function and kind_of["probs"] in Name.Function
    assert kind_of["conv_transpose"] in Name.Builtin and kind_of["concat"] in Name.Builtin
    assert kind_of["identity"] in Name.Builtin and kind_of["softmax"] in Name.Builtin
    assert kind_of["2x2"] in Number and kind_of["1..3"] in Number and kind_of["0.75"] in Number.Float
    assert kind_of["@e1"] in Name.Label and kind_of["@input"] in Name.Label
    assert kind_of["same"] in Keyword.Constant and kind_of["bilinear"] in Keyword.Constant
    assert kind_of["max"] in Name.Builtin.Pseudo and kind_of["->"] in Operator and kind_of["?"] in Operator
    assert ("training", "head") == tuple(v for k, v in found if k in Keyword and v in ("training", "head"))[:2]
    # soft keywords stay names elsewhere, as the parser has them
    names = tokens("block head(c) = fc(c)\nlet training = 4\ninput -> head(training)\n")
    assert [(str(k), v) for k, v in names if v in ("head", "training")] == [
        ("Token.Name.Function", "head"), ("Token.Name", "training"), ("Token.Name", "head"), ("Token.Name", "training")]


def test_pygments_finds_the_lexer_by_name_and_file_name() -> None:
    """The entry point in pyproject.toml (what Sphinx, MkDocs and Jupyter look up)."""
    assert isinstance(get_lexer_by_name("cnn"), CnnLexer) and isinstance(get_lexer_by_name("cnndsl"), CnnLexer)
    assert isinstance(get_lexer_for_filename("resnet18.cnn"), CnnLexer)
