"""The `cnndsl` command: output, exit statuses, and never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import cnndsl
from cnndsl.cli import main
from tests.conftest import EXAMPLES, FAMILIES, ROOT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cnndsl", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def test_check_prints_the_table_and_totals(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "examples/vgg16.cnn"]) == 0
    out = capsys.readouterr().out
    assert "stage(64, 2)" in out and "[…]*n 1/2" in out and "conv(64, 3x3, pad=same)" in out
    assert "params:" in out and "138,357,544" in out and "15,470,264,320" in out
    assert "flattens 7x7x512 to 25088 first" in out


def test_depth_collapses_groups(capsys: pytest.CaptureFixture[str]) -> None:
    main(["check", "examples/vgg16.cnn", "--depth", "1"])
    out = capsys.readouterr().out
    assert "stage(512, 3)" in out and "conv(64, 3x3" not in out and "[…]*n" not in out
    assert "138,357,544" in out  # totals do not depend on the depth


def test_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "examples/resnet18.cnn", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"params", "state", "macs", "flops", "input_shape", "output_shape", "layers"} <= set(data)
    assert data["params"] == 11_689_512 and data["flops"] == 2 * data["macs"]
    assert data["input_shape"] == [224, 224, 3] and data["output_shape"] == [1000]
    layer = data["layers"][0]
    assert {"name", "op", "path", "output_shape", "params", "macs", "line", "col"} <= set(layer)
    assert sum(row["params"] for row in data["layers"]) == data["params"]
    assert any(row["path"][:1] == ["[…]*4 i=3"] for row in data["layers"])


def test_set_binds_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["check", "examples/course.cnn", "--json", "--set", "N=1", "--set", "M=2", "--set", "K=1",
            "--set", "POOL?=true", "--set", "CONV=conv(16, 3x3, pad=same)", "--set", "POOL=maxpool(2x2)",
            "--set", "FC=fc(10)"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["output_shape"] == [10]


def test_spec_errors_exit_1_with_the_rendered_diagnostic() -> None:
    result = run("check", "tests/invalid/name_typo.cnn")
    assert result.returncode == 1
    assert result.stderr.startswith("error[name]: `maxpol` is not defined\n  --> tests/invalid/name_typo.cnn:3:35")
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("args", [
    ("check",), ("check", "no/such/file.cnn"), ("check", "examples"), ("nonsense",),
    ("check", "examples/small.cnn", "--set", "N"), ("check", "examples/small.cnn", "--depth", "0"),
    ("check", "examples/small.cnn", "--set", "3x=1"),
])
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip()


@pytest.mark.parametrize("args, says", [
    (("family", "examples/course.cnn", "--max-params", "1e999"), "must be at most 1e+18"),
    (("family", "examples/course.cnn", "--max-macs", "nan"), "must be positive"),
    (("family", "examples/course.cnn", "--max-params=-3k"), "must be positive"),
    (("family", "examples/course.cnn", "--limit=-5"), "--limit must be at least 1"),
    (("family", "examples/course.cnn", "--limit", "1000000000000"), "--limit must be at most 1,000,000"),
    (("family", "examples/course.cnn", "--seed=-1"), "the seed must be at least 0"),
    (("compile", "examples/lenet5.cnn", "--emit", "export", "--seed", str(2**70)), "the seed must be at most"),
    (("sweep", "examples/course.cnn", "--seed", "4294967296"), "the seed must be at most 4,294,967,295"),
    (("predict", "x.npy", "--run", "r", "--white", "inf"), "must be a finite number above 0"),
    (("run", "art", "x.npy", "--white", "0"), "must be a finite number above 0"),
])
def test_numbers_out_of_range_are_usage_errors(args: tuple[str, ...], says: str, capsys) -> None:
    """Issue 20: a number no command can use (negative, infinite, beyond int64 or a seed's range) is a
    usage error naming the option, before anything runs (it was a traceback or MemoryError)."""
    with pytest.raises(SystemExit) as caught:
        main(list(args))
    err = capsys.readouterr().err
    assert caught.value.code == 2 and says in err and "Traceback" not in err, err


def test_family_exits_1_and_lists_what_to_bind() -> None:
    result = run("check", "examples/course.cnn")
    assert result.returncode == 1
    assert "the spec is a family with 7 free names" in result.stderr


def test_binary_file_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.cnn"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    result = run("check", str(bad))
    assert result.returncode == 1 and "is not UTF-8 text" in result.stderr and "Traceback" not in result.stderr


def test_huge_file_is_refused(tmp_path) -> None:
    big = tmp_path / "big.cnn"
    big.write_text("# padding\n" * 300_000)
    result = run("check", str(big))
    assert result.returncode == 1 and "larger than" in result.stderr


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("cnndsl ")


def test_long_runs_of_identical_rows_are_folded_and_say_so() -> None:
    report = cnndsl.check("network T\ninput 8x8x1\ninput -> [relu]*40000 -> conv(4, 3x3) -> fc(3)")
    table = report.render_table()
    rows = table.splitlines()
    assert len(rows) < 20
    assert "… 39,999 more times the 2 rows above (folded)" in table
    assert "conv(4, 3x3)" in table and "fc(3)" in table and f"{report.params:,}" in table


def test_a_written_out_pattern_folds_with_its_subtotals() -> None:
    chain = " -> ".join(["conv(8, 3x3, pad=same) -> relu"] * 300)
    report = cnndsl.check(f"network T\ninput 16x16x8\ninput -> conv(8, 1x1) -> {chain}")
    tree = report.tree()
    (fold,) = [r for r in tree if r.label.startswith("…")]
    assert fold.label == "… 299 more times the 2 rows above (folded)"
    conv = next(r for r in report.rows if r.op == "conv(8, 3x3, pad=same)")
    assert (fold.params, fold.macs) == (299 * conv.params, 299 * conv.macs)
    assert sum(r.params or 0 for r in tree if r.level == 0) == report.params  # the top level still adds up


def test_short_repetitions_and_distinct_rows_are_never_folded() -> None:
    for example in EXAMPLES:
        if example.name in FAMILIES:
            continue
        tree = cnndsl.check(example).tree()
        assert not any(r.label.startswith("…") for r in tree), example.name
    varied = " -> ".join(f"conv({k + 1}, 1x1)" for k in range(400))
    assert not any(r.label.startswith("…") for r in cnndsl.check(f"network T\ninput 4x4x1\ninput -> {varied}").tree())


def test_folding_applies_to_groups_folded_by_depth() -> None:
    report = cnndsl.check("network T\ninput 8x8x1\ninput -> [bn -> relu]*500")
    shallow = report.tree(depth=1)
    assert [r.label for r in shallow][1:] == ["[…]*500 1/500", "… 499 more times the row above (folded)"]
    assert shallow[2].params == 499 * 2


def test_json_errors_for_editors_and_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "tests/invalid/several_errors.cnn", "--json"]) == 1
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert len(errors) > 1 and all(e["file"] == "tests/invalid/several_errors.cnn" and e["line"] >= 1 for e in errors)
    assert {"kind", "message", "line", "col", "end_line", "end_col", "notes", "help"} <= set(errors[0])
    assert main(["check", "no/such/file.cnn", "--json"]) == 2
    (usage,) = json.loads(capsys.readouterr().out)["errors"]
    assert usage["kind"] == "usage" and usage["line"] is None


def test_the_course_family_lists_exactly_what_to_bind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "examples/course.cnn"]) == 1
    summary = capsys.readouterr().err.strip().split("\n\n")[-1]
    assert "7 free names: `CONV`, `N`, `POOL?`, `POOL`, `M`, `FC`, `K`" in summary
    bindings = ["--set", "N=1", "--set", "M=2", "--set", "K=1", "--set", "CONV=conv(8, 3x3, pad=same)", "--set", "FC=fc(10)"]
    assert main(["check", "examples/course.cnn", *bindings, "--set", "POOL?=true"]) == 1
    assert "1 free name: `POOL`" in capsys.readouterr().err  # not "did you mean `POOL?`"
    assert main(["check", "examples/course.cnn", *bindings, "--set", "POOL?=false"]) == 0
    assert main(["check", "examples/course.cnn", *bindings, "--set", "POOL?=true", "--set", "POOL=maxpool(2x2)"]) == 0
    assert main(["check", "examples/course.cnn", *bindings, "--set", "POOL?=yes"]) == 2
    assert "`--set POOL?` takes `true` or `false`, got `yes`" in capsys.readouterr().err


def test_subcommand_errors_show_the_subcommands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["train", "examples/digits.cnn", "--bogus"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: cnndsl train") and "unrecognized arguments: --bogus" in err
    assert main(["train", "--resize", "32", "examples/digits.cnn", "--epochs", "1"]) == 2  # a size, not the spec
    assert "--resize 32x32: the spec's input is 8x8" in capsys.readouterr().err
    main_help = subprocess.run([sys.executable, "-m", "cnndsl", "train", "--help"], capture_output=True, text=True,
                               cwd=ROOT, timeout=60).stdout
    assert "(default 10, or the spec's `train` line)" in main_help and "(default 0.001" in main_help


@pytest.mark.parametrize("command", [["train", "examples/digits.cnn"], ["eval", "--run", "runs/none"],
                                     ["sweep", "examples/course.cnn"]])
@pytest.mark.parametrize(("source", "hint"), [("mnst", "did you mean 'mnist'?"), ("records:", "records:DIR"),
                                              ("synthetic:ten", "e.g. synthetic:10000")])
def test_every_command_that_reads_data_checks_the_source_first(command: list[str], source: str, hint: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """One registry answers for --data in every command, before anything is compiled, loaded or trained."""
    from tests.conftest import in_process

    result = in_process(capsys, *command, "--data", source)
    assert result.returncode == 2 and hint in result.stderr and "Traceback" not in result.stderr, result.stderr
