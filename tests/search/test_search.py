"""Design spaces: `search` lines, their checks, static enumeration (`cnndsl family`) and members written out
as standalone specs. No JAX and no training here (tests/search/test_sweep.py trains)."""

from __future__ import annotations

import json
import math
import random

import pytest

import cnndsl
from cnndsl.cli import main
from cnndsl.lang.errors import CnnError
from cnndsl.search.family import Budget, check_member, family, load_space, network_key
from cnndsl.search.member import member_spec
from cnndsl.lang.settings import spec_settings
from tests.conftest import ROOT

COURSE = ROOT / "examples" / "course.cnn"
FAMILY = """network F
input 8x8x1
search N in 1..2, M in 1..4, POOL?, CONV in {conv(4, 3x3, pad=same), conv(8, 3x3)}
search lr in log(1e-3, 1e-2), optimizer in {adam, sgd}
let FC = fc(10), POOL = maxpool(2x2)
input -> [[CONV -> relu]*N -> POOL?]*M -> FC
"""


def errors(text: str, **sets: object) -> list[tuple[str, int, int]]:
    """(message, line, col) of every problem `load_space` finds."""
    with pytest.raises(CnnError) as caught:
        load_space(text, set=sets or None)
    return [(d.message, d.span.line, d.span.col) for d in caught.value.diagnostics]


def test_domains_of_every_kind_parse_into_dimensions() -> None:
    text = FAMILY.replace("-> FC", "-> POOL2? -> FC").replace("search N", "search POOL2?, POOL2 in {relu}, N")
    space = load_space(text.replace("search N in 1..2", "search N in 1 .. 2"))
    kinds = {d.name: (d.kind, d.setting) for d in space.dimensions}
    assert kinds == {"POOL2?": ("bool", False), "POOL2": ("choice", False), "N": ("int", False),
                     "M": ("int", False), "POOL?": ("bool", False), "CONV": ("choice", False),
                     "lr": ("float", True), "optimizer": ("choice", True)}
    lr = next(d for d in space.dimensions if d.name == "lr")
    assert lr.log and (lr.low, lr.high) == (1e-3, 1e-2)
    assert next(d for d in space.dimensions if d.name == "CONV").texts == ("conv(4, 3x3, pad=same)", "conv(8, 3x3)")


@pytest.mark.parametrize("search, message, col", [
    ("search N in 3..1", "the range 3..1 is empty", 13),
    ("search N in {}", "the domain of `N` is empty", 13),
    ("search N in {1, 2, 1}", "`1` is listed twice in the domain of `N`", 13),
    ("search N in lgo(1, 5)", "`lgo(...)` is not a domain", 13),
    ("search N in log(0, 5)", "a log range must be above 0", 13),
    ("search N in uniform(1)", "`uniform` takes two numbers, low and high", 13),
    ("search Q in 1..3", "`Q` is neither a free name of the family nor a training setting", 8),
    ("search N in 1..2, N in 1..3", "`N` is searched twice", 19),
    ("search N", "`N` needs a domain", 8),
    ("search N in 1..2, P? in {yes}", "the optional part `P?` takes true and/or false", 25),
    ("search N in 1..2, epochs in {0, 3}", "in the domain of `epochs`: `epochs` takes a whole number of at least 1", 30),
    ("search N in 1..2, optimizer in {adam, adamx}", "in the domain of `optimizer`: `optimizer` takes one of", 39),
])
def test_bad_domains_are_located_errors(search: str, message: str, col: int) -> None:
    fixed = "" if "P?" in search else "search P?, P in {relu}\n"
    text = f"network T\ninput 8x8x1\n{search}\n{fixed}input -> [conv(4, 3x3) -> relu]*N -> P? -> fc(10)\n"
    found = errors(text)
    assert any(m.startswith(message) and (line, c) == (3, col) for m, line, c in found), found


def test_a_let_bound_name_cannot_be_searched_and_a_free_one_needs_a_domain() -> None:
    text = ("network T\ninput 8x8x1\nlet N = 2\nsearch N in 1..3\n"
            "input -> [conv(4, 3x3) -> relu]*N -> [fc(8)]*K -> fc(10)\n")
    found = errors(text)
    assert ("`N` is bound by `let` on line 3, so it cannot be searched", 4, 8) in found
    assert any(m == "the family's free name `K` has no domain" for m, _, _ in found)
    load_space(text.replace("let N = 2\n", ""), set={"K": 1})  # --set fixes K: no domain needed


def test_check_reports_the_search_lines_problems_with_the_family() -> None:
    text = "network T\ninput 8x8x1\nsearch N in 5..2\ninput -> [conv(4, 3x3) -> relu]*N -> fc(10)\n"
    with pytest.raises(CnnError) as caught:
        cnndsl.check(text)
    kinds = [d.kind for d in caught.value.diagnostics]
    assert kinds[0] == "search" and "unbound" in kinds


def test_a_spec_without_search_lines_has_no_space() -> None:
    assert errors("network T\ninput 8x8x1\ninput -> [conv(4, 3x3)]*N -> fc(10)\n")[0][0] == \
        "the spec declares no design space"


def test_enumeration_is_the_product_and_indexing_agrees_with_it() -> None:
    space = load_space(FAMILY)
    assert space.count() == 2 * 4 * 2 * 2
    members = list(space.networks())
    assert len(members) == space.count() and len({json.dumps(m) for m in members}) == space.count()
    assert all(space.network_at(k) == m for k, m in enumerate(members))
    assert members[0] == {"N": 1, "M": 1, "POOL?": True, "CONV": "conv(4, 3x3, pad=same)"}


def test_members_are_checked_like_check_with_set() -> None:
    """Each member's report equals `cnndsl.check` of the family with the member's bindings given by --set."""
    space = load_space(FAMILY)
    for member in random.Random(0).sample(list(space.networks()), 10):
        checked = check_member(space, member)
        sets = {k: v for k, v in member.items()}
        try:
            expected = cnndsl.check(FAMILY, set=sets)
        except CnnError as err:
            assert checked.status == "invalid" and checked.reason.startswith(err.diagnostics[0].message)
            continue
        assert checked.valid and (checked.report.params, checked.report.macs) == (expected.params, expected.macs)


def test_invalid_members_say_why_and_budgets_exclude_members() -> None:
    members = list(family(COURSE))
    invalid = [m for m in members if m.status == "invalid"]
    assert invalid and all(m.bindings["M"] == 4 and m.bindings["POOL?"] for m in invalid)
    assert all("would shrink the feature map below 1x1" in m.reason for m in invalid)
    cheap = list(family(COURSE, budget=Budget(max_macs=100_000)))
    assert {m.status for m in cheap} == {"ok", "invalid", "over budget"}
    assert all(m.report.macs <= 100_000 for m in cheap if m.valid)
    assert all(m.report.macs > 100_000 for m in cheap if m.status == "over budget")
    small = list(family(COURSE, budget=Budget(max_params=5_000)))
    assert all(m.report.params <= 5_000 for m in small if m.valid) and any(m.valid for m in small)


def test_members_differing_only_in_unused_names_are_the_same_network() -> None:
    space = load_space(COURSE)
    base = {"N": 1, "M": 2, "K": 0, "POOL?": False, "CONV": "conv(16, 3x3, pad=same)", "FC": "fc(10)"}
    a = check_member(space, {**base, "POOL": "maxpool(2x2)"})
    b = check_member(space, {**base, "POOL": "avgpool(2x2)"})
    c = check_member(space, {**base, "POOL?": True, "POOL": "avgpool(2x2)"})
    assert network_key(a.report) == network_key(b.report) != network_key(c.report)


def test_a_large_family_is_sampled_reproducibly() -> None:
    text = FAMILY.replace("N in 1..2", "N in 1..200")
    space = load_space(text)
    first = [m.index for m in family(space, limit=50, seed=3)]
    assert len(first) == 50 and first == sorted(set(first)) and max(first) < space.count()
    assert first == [m.index for m in family(space, limit=50, seed=3)]
    assert first != [m.index for m in family(space, limit=50, seed=4)]


@pytest.mark.parametrize("seed", range(6))
def test_a_member_written_out_is_a_standalone_spec_of_the_same_network(seed: int) -> None:
    space = load_space(FAMILY, set={"FC": "fc(10)"} if seed % 2 else None)
    rng = random.Random(seed)
    member = rng.choice([m for m in space.networks() if check_member(space, m).valid])
    member = {**member, "lr": 10 ** rng.uniform(-3, -2), "optimizer": rng.choice(["adam", "sgd"])}
    settings = {"epochs": 3, **space.settings(member)}
    text = member_spec(space, member, settings, note="a test member")
    report = cnndsl.check(text)  # concrete: nothing left to bind, no search lines
    expected = check_member(space, member).report
    assert (report.params, report.macs, report.output_shape) == (expected.params, expected.macs, expected.output_shape)
    found, problems = spec_settings(cnndsl.parse(text))
    assert not problems and found["epochs"] == 3 and found["optimizer"] == member["optimizer"]
    assert math.isclose(found["lr"], member["lr"], rel_tol=1e-12)  # a float written as text and read back


def test_family_command_lists_members_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["family", str(COURSE), "--max-macs", "1M"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("Course: 288 networks (3 x 4 x 2 x 2 x 3 x 2 x 1)")
    assert "invalid: `maxpool(2x2)` would shrink the feature map below 1x1" in out and "over budget" in out
    assert "288 checked in" in out
    assert main(["family", str(COURSE), "--json", "--limit", "20", "--seed", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["count"] == 288 and data["listed"] == 20 and data["sampled"]
    assert {d["name"] for d in data["dimensions"]} >= {"N", "M", "POOL?", "lr"}
    assert all(("params" in m) == (m["status"] == "ok") for m in data["members"])


def test_family_with_no_valid_member_exits_1_with_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    text = "network T\ninput 4x4x1\nsearch M in 3..5\ninput -> [maxpool(2x2)]*M -> fc(10)\n"
    path = ROOT / "tests" / "families" / "no_member.cnn"
    assert path.read_text() == text
    assert main(["family", str(path)]) == 1
    err = capsys.readouterr().err
    assert "no member of the family can be trained (checked 3 members)" in err
    assert "M=3: `maxpool(2x2)` would shrink the feature map below 1x1" in err


def test_a_number_range_in_the_network_lists_the_other_dimensions_at_its_low_end() -> None:
    text = ("network T\ninput 8x8x1\nsearch N in 1..2, CONV in {conv(4, 3x3), conv(8, 3x3) -> bn}, "
            "P in uniform(0.1, 0.5)\ninput -> [CONV -> relu]*N -> dropout(P) -> fc(10)\n")
    space = load_space(text)
    assert space.count() is None and space.grid_count() == 4
    members = list(family(space))
    assert len(members) == 4 and all(m.valid and m.bindings["P"] == 0.1 for m in members)
    assert {m.bindings["CONV"] for m in members} == {"conv(4, 3x3)", "conv(8, 3x3) -> bn"}
