"""Grammar-driven and mutation fuzzing of the front end (issue 8): whatever the program, `check` answers
with a report or located, printable diagnostics; never another exception, never a hang.

`benchmarks/fuzz.py` runs the same generators over 10,000+ programs and reports the slowest and the
peak memory; this is the default suite's share of it."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tests.fuzzing import grammar_programs, layer_programs, mutated_programs, outcome
from tests.lang.test_limits import no_hang

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])


@FUZZ
@given(grammar_programs())
def test_programs_from_the_grammar_never_crash(text: str) -> None:
    with no_hang():
        outcome(text)


@FUZZ
@given(layer_programs())
def test_nested_layer_programs_never_crash(text: str) -> None:
    with no_hang():
        outcome(text)


@FUZZ
@given(mutated_programs())
def test_mutated_examples_never_crash(text: str) -> None:
    with no_hang():
        outcome(text)
