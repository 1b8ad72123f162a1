"""The editor's analysis of a document that does not parse: the statements around the broken one keep their
definitions, each at its own line and column (what completion and go-to-definition answer from)."""

from __future__ import annotations

from cnndsl.editor.analysis import analyze, name_span
from cnndsl.lang.source import Source, Span


def test_statements_around_a_broken_one_keep_their_places() -> None:
    text = ("let w = 8\nblock unit(c, s=1) =\n    conv(c, 3x3)\n    -> relu\ninput -> conv(8, \n"
            "let z = 3\n\n  # a comment\nblock tail(k) = fc(k)\n")
    analysis = analyze(text, "/tmp/broken.cnn")
    assert analysis.diagnostics and analysis.report is None
    found = {(d.kind, d.name): (d.span.line, d.span.col) for d in analysis.definitions}
    lines = text.split("\n")
    for (kind, name), (line, col) in found.items():
        assert lines[line - 1][col - 1:].startswith(name), (kind, name)
    assert {name for _, name in found} == {"w", "unit", "c", "s", "z", "tail", "k"}  # all but the broken line
    uses = [r for r in analysis.references if r.name == "c" and r.definition is not None]
    assert [(r.span.line, r.span.col) for r in uses] == [(3, 10)]  # the body's `c` is the parameter


def test_a_name_is_found_as_a_whole_word_after_its_context() -> None:
    source = Source("block bb(b, bb2=b) = [b]*2 as b\n")
    whole = Span(1, 1, 1, len(source.text))
    assert name_span(source, whole, "bb", r"block\s+") == Span(1, 7, 1, 9)
    assert name_span(source, whole, "b", r"\bas\s+", last=True) == Span(1, 31, 1, 32)
    assert name_span(source, whole, "b") == Span(1, 10, 1, 11)  # not the `b` inside `bb`
    assert name_span(source, Span(1, 1, 1, 3), "zz") == Span(1, 1, 1, 3)  # absent: the span's start
