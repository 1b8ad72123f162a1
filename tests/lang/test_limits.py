"""Hostile specs end fast with one located diagnostic: huge numbers, repetitions that produce nothing,
deep expressions, files that are not files, odd text encodings, totals past 64 bits (issue 8)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cnndsl
from cnndsl.lang.errors import CnnError
from cnndsl.lang.limits import INT64_MAX, MAX_EXPRESSION_DEPTH, MAX_LAYERS, MAX_SOURCE_BYTES
from tests.conftest import ROOT

HEAD = "network T\ninput 8x8x1\n"


@contextlib.contextmanager
def no_hang(seconds: int = 30) -> Iterator[None]:
    """Fail (rather than hang the suite) if the block runs for `seconds`: a guard, not a timing."""
    def expired(signum: int, frame: object) -> None:
        raise AssertionError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def located_error(text: str) -> CnnError:
    """Check `text`, expecting a CnnError whose every diagnostic has a file position."""
    with no_hang(), pytest.raises(CnnError) as caught:
        cnndsl.check(text)
    for d in caught.value.diagnostics:
        assert d.source is not None and d.span is not None, d.render()
        assert f"{d.source.path}:{d.span.line}:{d.span.col}" in d.render()
    return caught.value


@pytest.mark.parametrize("expr", [
    "9**9**9**9", "2**(2**36)", "2**99999999999", "(-3)**(2**40)", "3**41", "2**63",
    "(2**62) * (2**62)", "-(2**62) * 4", "2**62 + 2**62", "7" * 5000, "1" + "0" * 19, "99999999999999999999x3",
])
def test_numbers_past_64_bits_are_refused_before_they_are_computed(expr: str) -> None:
    err = located_error(HEAD + f"let a = {expr}\ninput -> fc(a)")
    (d,) = err.diagnostics
    assert d.kind == "limit" and d.span.line == 3 and "64 bits" in d.message


@pytest.mark.parametrize("expr", ["2**62 + (2**62 - 1)", "-(2**62 - 1) * 2", "2**10 ** 1", str(INT64_MAX), "(-2)**62 * -1"])
def test_numbers_within_64_bits_still_evaluate(expr: str) -> None:
    text = HEAD + f"let a = {expr}\nlet b = 1 if a != 0 else 2\ninput -> fc(b)"
    assert cnndsl.check(text).output_shape == (1,)


@pytest.mark.parametrize("expr, kind", [("1" * 400 + ".0", "limit"), ("1e999", "limit"), ("1e308 * 10.0", "limit"),
                                        ("10.0 ** 400", "limit"), ("(-8) ** 0.5", "value")])
def test_floats_that_are_not_finite_or_real_are_refused(expr: str, kind: str) -> None:
    (d,) = located_error(HEAD + f"input -> dropout({expr})").diagnostics
    assert d.kind == kind


@pytest.mark.parametrize("body", [
    "[[[relu]*0]*100000]*100000",
    "[[[identity]*3]*100000]*100000",
    "[[relu if false]*100000]*100000",
    "[[relu if i < 0 and j < 0]*100000 as i]*100000 as j",
    "[[[relu]*0]*1000]*1000 -> [[[relu]*0]*1000]*1000",
    "[[relu]*1 if i == 0 else identity]*100000 as i -> [[relu if i < 0]*5000 as i]*1000",
    "f",  # blocks that each apply the next twice: 2**40 applications, no layer
])
def test_expansion_work_is_bounded_even_when_it_produces_no_layers(body: str) -> None:
    blocks = "".join(f"block b{k} = b{k + 1} -> b{k + 1}\n" for k in range(40)) + "block b40 = identity\nlet f = b0\n"
    err = located_error(HEAD + blocks + f"input -> {body}")
    (d,) = err.diagnostics
    assert d.kind == "limit" and "steps to expand" in d.message


def test_the_layer_limit_is_exact() -> None:
    with no_hang(60):
        report = cnndsl.check(HEAD + f"input -> [relu]*{MAX_LAYERS}")
    assert len(report.rows) == MAX_LAYERS
    (d,) = located_error(HEAD + f"input -> [relu]*{MAX_LAYERS // 2} -> [relu]*{MAX_LAYERS // 2 + 1}").diagnostics
    assert d.message == f"the network expands to more than {MAX_LAYERS:,} layers"


def test_expressions_nest_to_the_documented_depth() -> None:
    deep = " + ".join(["1"] * MAX_EXPRESSION_DEPTH)
    assert cnndsl.check(HEAD + f"let a = {deep}\ninput -> conv(a, 1x1)").output_shape == (8, 8, MAX_EXPRESSION_DEPTH)
    unary = "-" * (MAX_EXPRESSION_DEPTH - 2) + "1"  # with `2 + ` and the literal: the documented depth
    assert cnndsl.check(HEAD + f"let a = 2 + {unary}\ninput -> fc(a)").output_shape == (3,)  # an even count of -
    (d,) = located_error(HEAD + f"let a = {deep} + 1\ninput -> fc(a)").diagnostics
    assert d.kind == "limit" and d.span.line == 3


def test_spec_files_that_are_not_files_are_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.cnn"
    os.mkfifo(fifo)
    for path, what in ((fifo, "not a regular file"), (Path("/dev/zero"), "not a regular file"),
                       (tmp_path, "is a directory"), (tmp_path / "missing.cnn", "no such file"),
                       (ROOT / "examples" / "lenet5.cnn" / "x.cnn", "is a file, not a directory")):
        with no_hang(), pytest.raises(cnndsl.UsageError) as caught:
            cnndsl.check(path)
        assert what in caught.value.render()


def test_a_spec_over_the_size_limit_is_refused_after_reading_only_the_limit(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.cnn"
    with big.open("wb") as out:  # sparse: 200 MB on paper, nothing on disk
        out.write(b"# " + b"a" * 100)
        out.seek(200_000_000)
        out.write(b"\n")
    read = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: read.append(n) or real_read(fd, n))
    err = located_error(big)
    assert sum(read) <= MAX_SOURCE_BYTES + 1
    (d,) = err.diagnostics
    assert d.kind == "limit" and "larger than 2 MB" in d.message and (d.span.line, d.span.col) == (1, 1)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_invalid_utf8_is_located_at_the_bad_byte(tmp_path: Path, newline: str) -> None:
    spec = tmp_path / "bad.cnn"
    text = newline.join(["network T", "input 8x8x1", "input -> relu # café \xff", ""])
    spec.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8").replace(b"\xc3\xbf", b"\xff"))
    (d,) = located_error(spec).diagnostics
    assert (d.span.line, d.span.col) == (3, 22) and "0xff" in d.message


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_endings_and_byte_order_mark(newline: str, tmp_path: Path) -> None:
    lines = ["network T", "input 8x8x1", "# a comment", "input -> maxpol(2x2)"]
    spec = tmp_path / "s.cnn"
    spec.write_bytes(b"\xef\xbb\xbf" + newline.join(lines).encode("utf-8"))
    (d,) = located_error(spec).diagnostics
    assert (d.span.line, d.span.col) == (4, 10)
    assert " 4 | input -> maxpol(2x2)\n" in d.render()
    fixed = newline.join(lines).replace("maxpol", "maxpool")
    assert cnndsl.check("\ufeff" + fixed).output_shape == (4, 4, 1)


def test_control_characters_never_reach_the_terminal_raw() -> None:
    for char in ("\x00", "\x1b", "\x07", "\x85"):
        rendered = located_error(HEAD + f"input -> relu {char}").render()
        assert char not in rendered and ("\\x" in rendered)


def test_line_separators_do_not_cut_the_displayed_line() -> None:
    text = HEAD + "input -> relu -> maxpol(2x2) # note\u2028more\u2029end\x0cff\n"
    (d,) = located_error(text).diagnostics
    shown = d.render().splitlines()[3]
    assert shown.startswith(" 3 | input -> relu -> maxpol(2x2) # note") and shown.endswith("end\ufffdff")
    assert (d.span.line, d.span.col) == (3, 18)


def test_long_source_lines_are_cut_around_the_caret() -> None:
    text = HEAD + "input -> " + "relu -> " * 500 + "maxpol(2x2)" + " -> relu" * 500
    rendered = located_error(text).render().splitlines()
    source_line, caret_line = rendered[3], rendered[4]
    assert len(source_line) < 140 and "…" in source_line
    at = caret_line.index("^")
    assert source_line[at:at + 6] == "maxpol"


def test_every_whole_file_problem_is_located() -> None:
    for text in ("network T\ninput -> relu", "network T\ninput 8x8x1\nlet a = 1", "network T\ninput 8x8x1\n"
                 "input -> [CONV -> relu]*N"):
        err = located_error(text)
        assert all(d.span is not None for d in err.diagnostics)


def test_set_binds_only_names_and_optional_parts_the_spec_uses() -> None:
    spec = HEAD + "let N = 1\ninput -> [relu]*N -> maxpool(2x2)"
    for bindings in ({"N?": True}, {"POOL?": False}, {"M": 3}):
        (d,) = located_error_with_set(spec, bindings).diagnostics
        assert d.kind == "name" and "binds a name the spec does not use" in d.message
        assert d.source.path.startswith("--set ") and (d.span.line, d.span.col) == (1, 1)
    optional = HEAD + "let P = maxpool(2x2)\ninput -> relu -> P?"
    assert cnndsl.check(optional, set={"P?": True}).output_shape == (4, 4, 1)


def located_error_with_set(text: str, bindings: dict) -> CnnError:
    with pytest.raises(CnnError) as caught:
        cnndsl.check(text, set=bindings)
    return caught.value


@pytest.mark.parametrize("network, what", [
    ("input 4x4x1\ninput -> fc(2**40) -> fc(2**40) -> fc(10)", "parameters"),
    ("input 268435456x268435456x1\ninput -> conv(1, 8x8, pad=same, bias=false)", "FLOPs"),
    ("input 1073741824x1073741824x2\ninput -> relu", "activation bytes"),
    ("input 8x8x1\ninput -> fc(2**31) -> bn -> [relu]*2 -> fc(2**31) -> [bn]*2 -> fc(4)", "FLOPs"),
])
def test_every_reported_total_fits_in_64_bits(network: str, what: str) -> None:
    (d,) = located_error("network T\n" + network).diagnostics
    assert d.kind == "limit" and d.message == f"the network's {what} do not fit in 64 bits"
    assert d.span.line == 3


def test_the_check_command_answers_hostile_files_with_one_diagnostic(tmp_path: Path) -> None:
    cases = {"pow.cnn": HEAD + "input -> fc(2**(2**36))", "empty.cnn": HEAD + "input -> [[[relu]*0]*100000]*100000",
             "nul.cnn": HEAD + "input -> relu \x00"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        result = subprocess.run([sys.executable, "-m", "cnndsl", "check", str(tmp_path / name)], capture_output=True,
                                text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 1 and result.stderr.count("error[") == 1, result.stderr
        assert f"{tmp_path / name}:3:" in result.stderr and "Traceback" not in result.stderr
