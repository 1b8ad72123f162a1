"""Fuzz the front end with 10,000+ programs: internal errors (must be 0), the slowest program (must take
under 2 s on the 2-core CI machine) and the peak memory of the process (must stay under 500 MB).

    python benchmarks/fuzz.py [--programs 10000] [--seed 0]

A third of the programs come from the grammar (hypothesis's `from_lark`), a third nest the language's
layers and combinators at random, a third are mutated examples and invalid specs (tests/fuzzing.py).
Generation is derandomized by `--seed`, so a run is repeatable.
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def generate(count: int, random_seed: int, path: Path) -> None:
    """Draw `count` programs (a third each from the grammar, nested layers and mutations) into `path` (JSON)."""
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st

    from tests.fuzzing import grammar_programs, layer_programs, mutated_programs

    programs: list[tuple[str, str]] = []
    sources = (("grammar", grammar_programs()), ("layers", layer_programs()), ("mutation", mutated_programs()))
    for source, strategy in sources:
        @seed(random_seed)
        @settings(max_examples=-(-count // len(sources)), deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(st.just(source), strategy)
        def draw(source: str, text: str) -> None:
            programs.append((source, text))

        draw()
    path.write_text(json.dumps(programs), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generate", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate(args.programs, args.seed, Path(args.generate))
        return

    # Programs are drawn in another process, so what is measured here is cnndsl alone: hypothesis's own
    # memory (hundreds of MB for 10,000 draws) and its garbage-collection pauses stay out of the figures.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "programs.json"
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--programs", str(args.programs), "--seed", str(args.seed),
                        "--generate", str(path)], check=True)
        programs = json.loads(path.read_text(encoding="utf-8"))
        print(f"generated {len(programs):,} programs in {time.perf_counter() - started:.0f} s")

    from tests.fuzzing import outcome

    outcomes: collections.Counter[str] = collections.Counter()
    internal: list[tuple[str, str]] = []
    timed: list[tuple[float, str, str]] = []
    started = time.perf_counter()
    for source, text in programs:
        began = time.perf_counter()
        try:
            result = outcome(text)
        except Exception as err:  # noqa: BLE001 - what the benchmark exists to count
            result = "INTERNAL"
            internal.append((text, f"{type(err).__name__}: {err}"))
        timed.append((time.perf_counter() - began, source, text))
        outcomes[f"{source}: {result}"] += 1
    elapsed = time.perf_counter() - started
    timed.sort(reverse=True)
    sizes = sorted(len(text) for _, text in programs)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"programs checked: {len(programs):,} in {elapsed:.1f} s (median {sizes[len(sizes) // 2]:,} characters, "
          f"largest {sizes[-1]:,})")
    by_result: collections.Counter[str] = collections.Counter()
    for key, count in outcomes.items():
        by_result[key.split(": ", 1)[1].split("[")[0]] += count
    print("  " + ", ".join(f"{result} {count:,}" for result, count in by_result.most_common()))
    for key, count in outcomes.most_common(12):
        print(f"  {key:<50}{count:>7,}")
    print(f"internal errors: {len(internal)} (must be 0)")
    for text, error in internal[:5]:
        print(f"  {error}\n    program: {text[:300]!r}")
    print(f"slowest program: {timed[0][0]:.3f} s (must be < 2 s), from {timed[0][1]}: {timed[0][2][:160]!r}")
    for seconds, source, text in timed[1:3]:
        print(f"  then {seconds:.3f} s, from {source}: {text[:120]!r}")
    print(f"peak memory: {peak_mb:.0f} MB (must be < 500 MB)")
    sys.exit(1 if internal or timed[0][0] >= 2 or peak_mb >= 500 else 0)


if __name__ == "__main__":
    main()
