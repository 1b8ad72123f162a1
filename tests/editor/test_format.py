"""`cnndsl fmt`: the canonical layout never changes meaning, is a fixed point, keeps every comment, and lays
out chains, brackets, branches and comments by its stated rules; the command's check mode, rewrite and exits."""

from __future__ import annotations

import dataclasses
import os
import random
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl.cli import main
from cnndsl.editor.format import WIDTH, format_text
from cnndsl.lang.errors import CnnError
from cnndsl.lang.parser import parse
from cnndsl.lang.source import Source
from cnndsl.search.family import network_key
from tests.conftest import EXAMPLES, ROOT
from tests.fuzzing import grammar_programs, layer_programs, mutated_programs

INVALID = sorted((ROOT / "tests" / "invalid").glob("*.cnn"))


def tree(text: str) -> object:
    """The AST without positions: what a spec means, whatever its layout."""
    def strip(node: object) -> object:
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            return (type(node).__name__,) + tuple(strip(getattr(node, f.name)) for f in dataclasses.fields(node)
                                                  if f.name not in ("span", "source"))
        return tuple(strip(x) for x in node) if isinstance(node, tuple) else node
    return strip(parse(Source(text)))


def comments(text: str) -> list[str]:
    text = Source(text).text  # line endings as the language reads them: a lone \r ends a line
    return [m.group().rstrip() for m in re.finditer(r'"[^"\n]*"|#[^\n]*', text) if m.group().startswith("#")]


def tokens(text: str) -> str:
    """The text without blanks, line continuations and trailing commas: what formatting may not change."""
    text = re.sub(r"#[^\n]*", "", Source(text).text)
    return re.sub(r",(?=\s*[)}])", "", re.sub(r"\s|\\", "", text))


def assert_same_meaning(text: str) -> str:
    """Format `text` (which parses): it parses to the same tree, keeps every comment in order and every token,
    and formatting it again changes nothing."""
    out = format_text(text)
    assert tree(out) == tree(text)
    assert comments(out) == comments(text)
    assert tokens(out) == tokens(text)
    assert format_text(out) == out
    return out


def uglify(text: str) -> str:
    """The same spec badly laid out: blanks after `(`, `,` and `->`, continuation lines one column in, blank
    lines doubled, trailing blanks."""
    lines = []
    for line in text.splitlines():
        code, hash_, comment = line.partition("#")
        code = re.sub(r"(\(|,|->) *", r"\1   ", code)
        code = re.sub(r"^ +", " ", code)
        lines.append(code + hash_ + comment + "  ")
    return "\n".join(lines).replace("\n  \n", "\n\n\n") + "\n"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_is_formatted_and_checks_to_the_same_network(path: Path, tmp_path: Path) -> None:
    """The examples are in the canonical layout (CI runs `cnndsl fmt --check examples`); badly laid out, each
    formats back to itself and checks to the same network: graph fingerprint, parameters and MACs."""
    text = path.read_text()
    assert format_text(text) == text
    ugly = uglify(text)
    assert ugly != text and assert_same_meaning(ugly) == text
    if "search" in text:
        return  # a family: its members are checked in tests/search
    for other in EXAMPLES:  # beside the examples it imports
        (tmp_path / other.name).write_text(other.read_text())
    (tmp_path / path.name).write_text(ugly)
    before, after = cnndsl.check(path), cnndsl.check(tmp_path / path.name)
    assert (network_key(after), after.params, after.macs) == (network_key(before), before.params, before.macs)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_specs_that_parse_keep_their_meaning(path: Path) -> None:
    text = path.read_text()
    try:
        parse(Source(text))
    except CnnError:
        with pytest.raises(CnnError):  # a syntax error is reported as check reports it, nothing is written
            format_text(text)
        return
    assert_same_meaning(text)


# Draws from the grammar are the cost (see test_highlight.py); the three generators together give about 60
# programs that parse each run, new ones every run.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                 HealthCheck.filter_too_much])
@given(st.one_of(grammar_programs(), layer_programs(), mutated_programs()))
def test_the_fuzz_corpus_keeps_its_meaning(text: str) -> None:
    try:
        parse(Source(text))
    except (CnnError, RecursionError):
        return
    assert_same_meaning(text)


def random_chain(rng: random.Random, length: int) -> str:
    layers = ["conv(64, 3x3, pad=same)", "bn", "relu", "maxpool(2x2)", "conv(128, 1x1, stride=2, bias=false)",
              "dropout(0.5)", "[conv(32, 3x3) -> relu]*3", "concat(identity | conv(8, 1x1))"]
    return " -> ".join(rng.choice(layers) for _ in range(length))


@pytest.mark.parametrize("seed", range(8))
def test_long_chains_wrap_at_arrows_within_the_width(seed: int) -> None:
    rng = random.Random(seed)
    text = f"input 32x32x3\ninput -> {random_chain(rng, rng.randint(10, 60))} -> fc(10)\n"
    out = assert_same_meaning(text)
    lines = out.splitlines()
    assert all(len(line) <= WIDTH for line in lines)
    assert all(line.startswith("    -> ") for line in lines[2:])  # continuation lines: four columns in
    # each line is filled: the next line's first layer would not have fitted on it
    for line, following in zip(lines[1:], lines[2:]):
        assert len(line) + 1 + len(first_step(following.strip())) > WIDTH


def first_step(line: str) -> str:
    """`-> a(b -> c) -> d` -> `-> a(b -> c)`: a line's first step, up to its next arrow outside brackets."""
    depth = 0
    for i, char in enumerate(line):
        depth += char in "([{"
        depth -= char in ")]}"
        if depth == 0 and i > 0 and line.startswith(" -> ", i):
            return line[:i]
    return line


def test_the_authors_line_breaks_before_arrows_and_pipes_are_kept() -> None:
    text = ("input 8x8x1\ninput -> conv(8, 3x3)\n -> relu -> conv(8, 3x3)\n        -> relu\n"
            "    -> concat(identity\n| conv(8, 1x1)) -> fc(10)\n")
    assert format_text(text) == ("input 8x8x1\ninput -> conv(8, 3x3)\n    -> relu -> conv(8, 3x3)\n    -> relu\n"
                                 "    -> concat(\n        identity\n        | conv(8, 1x1)\n    )\n    -> fc(10)\n")


def test_spacing_is_canonical() -> None:
    text = ("let  N=2 ,K = 3\nblock b( c ,stride = 1 )=[ conv( c,3x3,stride =stride )->relu ] * N->x ?\n"
            "search M in 1 .. 3,C in { a,b, }\ninput->b( 8 )->[ b( 2 * 2 ** K ) ] * ( N + 1 )as i->y if not N>1 else z\n")
    assert format_text(text) == (
        "let N = 2, K = 3\nblock b(c, stride=1) = [conv(c, 3x3, stride=stride) -> relu]*N -> x?\n"
        "search M in 1..3, C in {a, b}\ninput -> b(8) -> [b(2 * 2**K)]*(N + 1) as i -> y if not N > 1 else z\n")


def test_brackets_that_do_not_fit_open_one_item_per_line() -> None:
    args = ", ".join(f"a{i}={i * 1000}" for i in range(20))
    out = assert_same_meaning(f"input -> conv({args}) -> relu\nlet t = (1,)\n")
    assert out.splitlines()[:2] == ["input", "    -> conv("] or out.splitlines()[0] == "input -> conv("
    assert "        a0=0,\n" in out and "        a19=19000\n    )" in out  # no trailing comma is added
    assert "let t = (1,)" in out  # a one-element tuple keeps its comma


def test_block_bodies_continue_four_columns_in_unless_they_open_a_bracket() -> None:
    body = " -> ".join(["conv(c, 3x3, pad=same, bias=false) -> bn -> relu"] * 3)
    out = assert_same_meaning(f"block unit(c) = {body}\nblock wide(c) = concat({body} | identity)\n")
    lines = out.splitlines()
    assert lines[0] == "block unit(c) =" and lines[1].startswith("    conv(c, 3x3")
    assert "block wide(c) = concat(" in lines and lines[-1] == ")"


def test_comments_stay_with_their_tokens() -> None:
    text = ("# header\n\n\n\nnetwork N  # its name\ninput 8x8x1\nlet a = (1,  # one\n  # the second\n  2)\n"
            "input -> conv(8, 3x3)   # first\n    -> relu # second, longer code before it\n"
            "    -> fc(10)  # last\n# at the end\n")
    out = assert_same_meaning(text)
    assert out.startswith("# header\n\nnetwork N  # its name\n")  # blank lines: at most one in a row
    assert "    1,  # one\n    # the second\n    2\n" in out.replace("        ", "    ")
    first, second, last = (line for line in out.splitlines() if re.search(r"# (first|second|last)", line))
    assert first.index("#") == second.index("#") == last.index("#")  # adjacent trailing comments aligned
    assert out.endswith("# at the end\n")


def test_a_trailing_comment_ends_its_line_in_a_chain() -> None:
    out = assert_same_meaning("input -> conv(8, 3x3)  # c1\n    -> relu -> fc(10)\n")
    assert out.splitlines()[0].endswith("# c1") and out.splitlines()[1].strip() == "-> relu -> fc(10)"
    out = assert_same_meaning("let x = [a -> b  # after b\n -> c]\n")
    assert "b  # after b\n" in out


def test_an_own_line_comment_is_never_joined_to_code() -> None:
    out = assert_same_meaning("let x = f(a,\n# about b\nb)\n")
    assert "\n    # about b\n" in out


def test_deep_nesting_and_empty_files() -> None:
    assert format_text("") == "" and format_text("\n\n# only\n\n") == "# only\n"
    assert_same_meaning("let x = " + "(" * 40 + "1" + ")" * 40 + "\n")


# ---- the command ----

def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cnndsl", "fmt", *args], capture_output=True, text=True,
                          input=stdin, timeout=120)


def test_check_prints_a_unified_diff_and_exits_1(tmp_path: Path) -> None:
    ugly = tmp_path / "ugly.cnn"
    ugly.write_text("input 8x8x1\ninput->conv(8,3x3)->relu\n")
    good = tmp_path / "sub" / "good.cnn"
    good.parent.mkdir()
    good.write_text("input 8x8x1\ninput -> fc(10)\n")
    result = run("--check", str(tmp_path))
    assert result.returncode == 1
    assert f"--- {ugly} (original)" in result.stdout and "-input->conv(8,3x3)->relu" in result.stdout
    assert "+input -> conv(8, 3x3) -> relu" in result.stdout and "good.cnn" not in result.stdout
    assert "1 file would be reformatted, 1 file already formatted" in result.stderr
    assert ugly.read_text() == "input 8x8x1\ninput->conv(8,3x3)->relu\n"  # --check changes nothing


def test_rewrites_in_place_keeping_permissions_and_links(tmp_path: Path) -> None:
    spec = tmp_path / "a.cnn"
    spec.write_text("input 8x8x1\r\ninput->fc(10)\r\n")
    spec.chmod(0o600)
    link = tmp_path / "link.cnn"
    link.symlink_to(spec)
    result = run(str(link))
    assert result.returncode == 0 and f"reformatted {link}" in result.stdout
    assert spec.read_bytes() == b"input 8x8x1\ninput -> fc(10)\n" and link.is_symlink()
    assert stat.S_IMODE(spec.stat().st_mode) == 0o600
    assert run("--check", str(spec)).returncode == 0


def test_a_spec_with_a_syntax_error_is_reported_and_left_alone(tmp_path: Path) -> None:
    bad, good = tmp_path / "bad.cnn", tmp_path / "good.cnn"
    bad.write_text("input 8x8x1\ninput -> conv(8, 3x3\n")
    good.write_text("input 8x8x1\ninput->fc(10)\n")
    result = run(str(bad), str(good))
    assert result.returncode == 1
    assert f"{bad}:2:" in result.stderr and "unclosed bracket" in result.stderr and "Traceback" not in result.stderr
    assert bad.read_text() == "input 8x8x1\ninput -> conv(8, 3x3\n" and good.read_text().endswith("input -> fc(10)\n")


def test_standard_input_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run("-", stdin="input 8x8x1\ninput->fc(10)\n")
    assert result.returncode == 0 and result.stdout == "input 8x8x1\ninput -> fc(10)\n"
    assert main(["fmt", str(tmp_path / "missing.cnn")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    assert main(["fmt", str(other)]) == 2
    assert main(["fmt", "-", str(other)]) == 2


def test_the_examples_pass_the_ci_check() -> None:
    """The command CI runs, as CI runs it."""
    result = subprocess.run([sys.executable, "-m", "cnndsl", "fmt", "--check", *map(str, EXAMPLES)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout
    assert f"{len(EXAMPLES)} files already formatted" in result.stderr
