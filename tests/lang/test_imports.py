"""`import "file.cnn"` (issue 13, part 2): definitions shared between files, paths relative to the importing
file, located errors inside imported files, cycles, name clashes, and specs stored standalone (runs,
exports, sweep members) so they read back wherever they are copied."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import cnndsl
from cnndsl.cli import main
from cnndsl.lang.errors import CnnError
from cnndsl.lang.imports import MAX_IMPORTS, load_imports, standalone_text
from tests.conftest import ROOT


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


LIB = """# a library: its own network, input, main chain and train line are not imported
network Lib
input 8x8x1
let width = 6
block unit(c=width) = conv(c, 3x3, pad=same, bias=false) -> bn -> relu
block tower(n) = [unit]*n -> maxpool(2x2)
train epochs = 99
input -> unit
"""


def test_resnet101_and_152_are_resnet50s_blocks_with_other_depths() -> None:
    r50, r101, r152 = (cnndsl.check(ROOT / "examples" / f"resnet{d}.cnn") for d in (50, 101, 152))
    text = (ROOT / "examples" / "resnet152.cnn").read_text()
    assert 'import "resnet50.cnn"' in text and "\nblock" not in text
    sources = {Path(node.source.path).name for node in r152.graph.nodes[1:]}
    assert sources == {"resnet50.cnn"}  # every layer is written in resnet50.cnn, none in resnet152.cnn
    assert r152.graph.nodes[1].location(r152.graph.source).startswith("examples/resnet50.cnn:")
    assert all(node.source is None for node in r50.graph.nodes)
    layer = r152.rows[0].to_dict()  # check --json names the file a layer is written in
    stem = 1 + (ROOT / "examples" / "resnet50.cnn").read_text().splitlines().index(
        "    conv(64, 7x7, stride=2, pad=3, bias=false) -> bn -> relu -> maxpool(3x3, stride=2, pad=1)")
    assert layer["file"].endswith("resnet50.cnn") and layer["line"] == stem and "file" not in r50.rows[0].to_dict()
    convs = [sum(n.op.kind == "conv" for n in r.graph.nodes) for r in (r50, r101, r152)]
    assert convs == [53, 104, 155]  # 3 per bottleneck + 4 projections + the stem
    assert r152.train_settings == r50.train_settings == ()


def test_paths_are_relative_to_the_importing_file_from_any_working_directory(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "lib" / "layers.cnn", LIB)
    write(tmp_path / "lib" / "towers.cnn", 'import "layers.cnn"\nblock two_towers() = tower(2) -> tower(1)\n')
    spec = write(tmp_path / "nets" / "net.cnn", 'import "../lib/towers.cnn"\nnetwork Net\ninput 8x8x1\n'
                                                "input -> two_towers -> unit(width + 2) -> global_avgpool -> fc(3)\n")
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    report = cnndsl.check(spec)
    assert [r.output_shape for r in report.rows if r.name.startswith("maxpool")] == [(4, 4, 6), (2, 2, 6)]
    assert report.rows[-3].output_shape == (2, 2, 8)  # `width` is the library's
    assert [Path(p.source.path).name for p in load_imports(cnndsl.parse(spec))] == ["layers.cnn", "towers.cnn"]
    assert report.train_settings == ()  # the library's train line is its own
    # a spec given as text imports relative to the working directory
    monkeypatch.chdir(tmp_path / "lib")
    text = 'import "towers.cnn"\nnetwork T\ninput 8x8x1\ninput -> two_towers -> fc(2)\n'
    towers = sum(r.params for r in report.rows[: report.rows.index(next(r for r in report.rows
                                                                       if r.name == "maxpool2")) + 1])
    assert cnndsl.check(text).params == towers + 2 * 2 * 6 * 2 + 2


def test_a_file_imported_twice_is_read_once_and_edits_are_seen(tmp_path: Path) -> None:
    write(tmp_path / "base.cnn", "let k = 3\n")
    write(tmp_path / "a.cnn", 'import "base.cnn"\nblock a() = conv(4, k)\n')
    write(tmp_path / "b.cnn", 'import "base.cnn"\nblock b() = conv(4, k, pad=same)\n')
    spec = write(tmp_path / "net.cnn", 'import "a.cnn"\nimport "b.cnn"\nnetwork D\ninput 9x9x1\ninput -> a -> b\n')
    assert cnndsl.check(spec).output_shape == (7, 7, 4)
    write(tmp_path / "base.cnn", "let k = 5  # edited\n")
    assert cnndsl.check(spec).output_shape == (5, 5, 4)


def _errors(spec: Path | str) -> list[dict]:
    with pytest.raises(CnnError) as info:
        cnndsl.check(spec)
    return [d.to_dict() for d in info.value.diagnostics]


def test_import_problems_are_located_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "folder.cnn").mkdir()
    write(tmp_path / "notes.txt", "root:*:0:0\n")
    (tmp_path / "latin1.cnn").write_bytes(b"let x = 1  # caf\xe9\n")
    write(tmp_path / "self.cnn", 'import "self.cnn"\n')
    write(tmp_path / "a.cnn", 'import "b.cnn"\nblock x() = relu\n')
    write(tmp_path / "b.cnn", 'import "a.cnn"\nblock y() = relu\n')
    spec = write(tmp_path / "net.cnn", 'import "missing.cnn"\nimport "folder.cnn"\nimport ""\nimport "latin1.cnn"\n'
                                       'import "self.cnn"\nimport "a.cnn"\nimport "notes.txt"\n'
                                       f'import "{"x" * 300}.cnn"\nnetwork E\ninput 8x8x1\ninput -> x -> y -> fc(2)\n')
    errors = _errors(spec)
    by_line = {(Path(e["file"]).name, e["line"]): e for e in errors}
    assert "there is no" in by_line["net.cnn", 1]["message"] and "missing.cnn" in by_line["net.cnn", 1]["message"]
    assert "folder.cnn is a directory" in by_line["net.cnn", 2]["message"]
    assert by_line["net.cnn", 3]["message"] == "the import names no file"
    latin = by_line["latin1.cnn", 1]
    assert "not UTF-8" in latin["message"] and latin["notes"][-1].endswith("net.cnn:4:1")
    assert by_line["self.cnn", 1]["message"] == "`self.cnn` imports itself: self.cnn -> self.cnn"
    assert by_line["b.cnn", 1]["message"] == "`a.cnn` imports itself: a.cnn -> b.cnn -> a.cnn"
    assert by_line["net.cnn", 7]["message"] == "`notes.txt` is not a .cnn file"  # its lines are never shown
    assert by_line["net.cnn", 8]["message"] == f"cannot import `{'x' * 300}.cnn`: File name too long"
    assert len(errors) == 8  # x and y are still defined: no cascade of unbound names
    # on the command line: file:line:col, the line, a caret, exit 1
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert 'import "missing.cnn"' in err and "^^^^" in err and "net.cnn:1:1" in err and "Traceback" not in err


def test_errors_inside_an_imported_file_point_into_it(tmp_path: Path) -> None:
    write(tmp_path / "lib.cnn", "block broken( = relu\n")
    spec = write(tmp_path / "net.cnn", 'network S\nimport "lib.cnn"\ninput 8x8x1\ninput -> relu\n')
    (error,) = _errors(spec)
    assert (Path(error["file"]).name, error["line"], error["col"]) == ("lib.cnn", 1, 15)
    assert error["kind"] == "syntax" and error["notes"][-1].endswith("net.cnn:2:1")

    write(tmp_path / "lib.cnn", LIB + "block big() = conv(4, 9x9)\nblock typo() = conv(widht, 1x1)\n")
    spec = write(tmp_path / "net.cnn", 'import "lib.cnn"\nnetwork S\ninput 8x8x1\ninput -> unit -> big -> fc(2)\n')
    (shape,) = _errors(spec)
    assert (Path(shape["file"]).name, shape["line"], shape["kind"]) == ("lib.cnn", 9, "shape")
    spec = write(tmp_path / "net.cnn", 'import "lib.cnn"\nnetwork S\ninput 8x8x1\ninput -> typo -> fc(2)\n')
    (name,) = _errors(spec)
    assert (Path(name["file"]).name, name["line"]) == ("lib.cnn", 10) and "did you mean `width`" in name["help"]
    assert name["notes"][-1].startswith("called from `typo` at ") and name["notes"][-1].endswith("net.cnn:4:10")


def test_an_error_two_imports_deep_names_every_call_site_from_the_spec_inward(tmp_path: Path) -> None:
    write(tmp_path / "inner.cnn", "block bad(c) = residual(conv(c, 3x3) -> relu)\n")
    write(tmp_path / "lib" / "middle.cnn", 'import "../inner.cnn"\nblock stage(c) = conv(c, 1x1) -> bad(c)\n')
    spec = write(tmp_path / "net.cnn", 'import "lib/middle.cnn"\nnetwork S\ninput 8x8x1\n'
                                       'input -> conv(8, 3x3, pad=same)\n      -> [stage(8)]*2 -> fc(2)\n')
    errors = _errors(spec)
    assert len(errors) == 1  # the first repetition's error; the second has no input shape to check
    (error,) = errors
    assert (Path(error["file"]).name, error["line"], error["col"]) == ("inner.cnn", 1, 16)
    call = error["notes"][-1]
    assert call.startswith("called from `stage(8)` at ") and ", then `bad(8)` at " in call, call
    outer, inner = call.removeprefix("called from ").split(", then ")
    assert outer.endswith("net.cnn:5:11") and inner.endswith(f"lib{os.sep}middle.cnn:2:34"), call
    # a spec's own layers carry no call-site note
    spec = write(tmp_path / "own.cnn", "network S\nblock bad(c) = residual(conv(c, 3x3))\ninput 8x8x8\ninput -> bad(8)\n")
    (own,) = _errors(spec)
    assert not any(note.startswith("called from") for note in own["notes"])


def test_a_name_defined_here_and_in_an_import_is_a_clash(tmp_path: Path) -> None:
    write(tmp_path / "lib.cnn", LIB)
    write(tmp_path / "other.cnn", "let width = 9\n")
    spec = write(tmp_path / "net.cnn", 'import "lib.cnn"\nimport "other.cnn"\nnetwork C\ninput 8x8x1\n'
                                       "block unit() = relu\ninput -> unit -> fc(2)\n")
    errors = {(Path(e["file"]).name, e["message"]): e for e in _errors(spec)}
    unit = errors["net.cnn", "`unit` is defined twice"]
    assert unit["line"] == 5 and "lib.cnn:5:1" in unit["notes"][0] and "namespace" in unit["help"]
    assert errors["other.cnn", "`width` is defined twice"]["notes"][0].endswith("lib.cnn:4:5")


def test_quotes_outside_an_import_say_the_language_has_no_strings() -> None:
    (error,) = _errors('network Q\ninput 8x8x1\ninput -> conv(4, 3x3, pad="same")\n')
    assert error["kind"] == "syntax" and "no strings" in error["help"]


def test_an_import_chain_longer_than_the_limit_stops(tmp_path: Path) -> None:
    for i in range(MAX_IMPORTS + 5):
        write(tmp_path / f"f{i}.cnn", f'import "f{i + 1}.cnn"\n' if i < MAX_IMPORTS + 4 else "let z = 1\n")
    errors = _errors(write(tmp_path / "net.cnn", 'import "f0.cnn"\nnetwork L\ninput 4x4x1\ninput -> relu\n'))
    assert [e["kind"] for e in errors] == ["limit"] and f"more than {MAX_IMPORTS} files" in errors[0]["message"]


def test_stored_specs_are_standalone(tmp_path: Path) -> None:
    """A run, an export and a sweep member hold the spec with its imports written in: they read back after
    the library is gone, and give the same network."""
    lib = write(tmp_path / "lib" / "layers.cnn", LIB)
    spec = write(tmp_path / "net.cnn", '# a net\nimport "lib/layers.cnn"\nnetwork Net\ninput 8x8x1\n'
                                       "input -> tower(2) -> global_avgpool -> fc(10)\n")
    report = cnndsl.check(spec)
    text = standalone_text(cnndsl.parse(spec))
    assert text.splitlines()[1].startswith('# import "lib/layers.cnn"') and "block tower(n)" in text
    assert "train epochs" not in text and "network Lib" not in text
    copied = cnndsl.check(text)
    assert (copied.params, copied.macs, [r.name for r in copied.rows]) == \
        (report.params, report.macs, [r.name for r in report.rows])

    run = tmp_path / "run"
    assert main(["train", str(spec), "--epochs", "1", "--quiet", "--out", str(run)]) == 0
    assert main(["compile", str(spec), "--emit", "export", "-o", str(tmp_path / "export"), "--quiet"]) == 0
    lib.unlink()
    os.rmdir(lib.parent)
    assert "block tower(n)" in (run / "spec.cnn").read_text()
    assert "block tower(n)" in json.loads((run / "settings.json").read_text())["spec"]
    assert cnndsl.evaluate(run)["accuracy"] >= 0  # re-checked from the run's own spec
    assert "block tower(n)" in (tmp_path / "export" / "spec.cnn").read_text()


def test_a_family_can_import_its_blocks_and_its_members_stand_alone(tmp_path: Path) -> None:
    from cnndsl.search.family import check_member, load_space
    from cnndsl.search.member import member_spec

    write(tmp_path / "lib.cnn", LIB)
    family = write(tmp_path / "family.cnn", 'import "lib.cnn"\nnetwork F\ninput 8x8x1\nsearch N in 1..2\n'
                                            "input -> tower(N) -> fc(10)\n")
    space = load_space(family)
    assert space.count() == 2
    member = next(iter(space.networks()))
    text = member_spec(space, member, {"epochs": 1})
    expected = check_member(space, member).report
    (tmp_path / "lib.cnn").unlink()
    report = cnndsl.check(text)
    assert (report.params, report.macs) == (expected.params, expected.macs)
    assert not check_member(space, member).valid  # the family itself needs its library


@pytest.mark.parametrize(("target", "message"), [("secret.txt", "it resolves to"), ("secret-link.cnn", "it resolves to"),
                                                 ("folder.cnn", "is a directory"), ("fifo.cnn", "not a regular file"),
                                                 ("loop.cnn", "its links form a loop")])
def test_an_import_is_read_only_if_it_resolves_to_a_cnn_file(target: str, message: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A link named .cnn that leads to another kind of file (a password file), a folder or a pipe is refused
    by what it resolves to, and no byte of it is ever shown."""
    secret = tmp_path / "secret.txt"
    secret.write_text("root:SECRET-LINE:0:0 -> not a spec\n")
    (tmp_path / "folder.cnn").mkdir()
    os.mkfifo(tmp_path / "fifo.cnn")
    (tmp_path / "secret-link.cnn").symlink_to(secret)  # a chain: pw.cnn -> secret-link.cnn -> secret.txt
    (tmp_path / "loop.cnn").symlink_to(tmp_path / "pw.cnn")  # pw.cnn -> loop.cnn -> pw.cnn (an internal error before)
    (tmp_path / "pw.cnn").symlink_to(tmp_path / target)
    spec = tmp_path / "main.cnn"
    spec.write_text('import "pw.cnn"\nnetwork T\ninput 8x8x1\ninput -> fc(2)\n')
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "cannot import `pw.cnn`: " in err and message in err
    assert "SECRET" not in err


@pytest.mark.parametrize("name", ["secret.txt", "link.cnn", "loop.cnn"])
def test_a_spec_is_read_only_from_a_cnn_file(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20: diagnostics quote a spec's lines and tokens, so a file that is not a .cnn, links followed
    (a password file given by mistake or through a link named .cnn, a loop of links), is a usage error
    that shows none of its bytes."""
    secret = tmp_path / "secret.txt"
    secret.write_text("root:SECRET-LINE:0:0\n")
    (tmp_path / "link.cnn").symlink_to(secret)
    (tmp_path / "loop.cnn").symlink_to(tmp_path / "loop2.cnn")
    (tmp_path / "loop2.cnn").symlink_to(tmp_path / "loop.cnn")
    assert main(["check", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert "is not a .cnn file" in err or "levels of symbolic links" in err, err
    assert "SECRET" not in err and "Traceback" not in err
