"""Front-end speed: parse + expand + check time per example and for generated specs of growing size.

    python benchmarks/frontend.py [--repeat 5]

Prints the median over repeats of each stage (the parser is built once, before timing, as in a
long-running process; the first-call cost of building it is printed separately). Growth: the
time per layer for 100, 1,000 and 10,000 layers, and the ratio between sizes (1.0 = linear).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from cnndsl.lang.frontend import load_source
from cnndsl.lang.expand import expand
from cnndsl.lang.parser import _lark, parse
from cnndsl.lang.report import Report
from cnndsl.lang.shapes import infer_shapes

ROOT = Path(__file__).resolve().parent.parent


def stages(text: str, path: str) -> tuple[float, float, float, int]:
    """Seconds to parse, expand, infer+report one spec, and its layer count."""
    from cnndsl.lang.source import Source

    t0 = time.perf_counter()
    program = parse(Source(text, path))
    t1 = time.perf_counter()
    graph = expand(program)
    t2 = time.perf_counter()
    report = Report.build(graph, infer_shapes(graph))
    _ = (report.params, report.macs)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, len(report.rows)


def median_stages(text: str, path: str, repeat: int) -> tuple[float, float, float, int]:
    runs = [stages(text, path) for _ in range(repeat)]
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
            statistics.median(r[2] for r in runs), runs[0][3])


def generated(layers: int) -> str:
    """A spec of `layers` layers written out one by one (no repetition): the parser's worst case."""
    units = layers // 2
    chain = " -> ".join("conv(8, 3x3, pad=same) -> relu" for _ in range(units))
    return f"network Gen{layers}\ninput 16x16x8\ninput -> {chain}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    t0 = time.perf_counter()
    _lark()
    print(f"building the LALR parser (once per process): {1e3 * (time.perf_counter() - t0):.1f} ms\n")

    print(f"{'spec':<22}{'layers':>8}{'parse ms':>10}{'expand ms':>11}{'check ms':>10}{'total ms':>10}")
    for path in sorted((ROOT / "examples").glob("*.cnn")):
        if path.name == "course.cnn":
            continue
        source = load_source(path)
        p, e, c, n = median_stages(source.text, str(path), args.repeat)
        print(f"{path.stem:<22}{n:>8}{1e3 * p:>10.2f}{1e3 * e:>11.2f}{1e3 * c:>10.2f}{1e3 * (p + e + c):>10.2f}")

    print()
    per_layer = {}
    for size in (100, 1_000, 10_000):
        p, e, c, n = median_stages(generated(size), f"gen{size}", max(1, args.repeat if size < 10_000 else 3))
        total = p + e + c
        per_layer[size] = total / n
        print(f"{'generated ' + str(size):<22}{n:>8}{1e3 * p:>10.2f}{1e3 * e:>11.2f}{1e3 * c:>10.2f}"
              f"{1e3 * total:>10.2f}")
    print(f"\ngrowth (time per layer, relative to 100 layers): 1,000: {per_layer[1_000] / per_layer[100]:.2f}x, "
          f"10,000: {per_layer[10_000] / per_layer[100]:.2f}x  (1.00x = linear)")


if __name__ == "__main__":
    main()
