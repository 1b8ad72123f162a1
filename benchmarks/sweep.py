"""What a family costs to enumerate and to search, on this machine.

    python benchmarks/sweep.py [--trials 6] [--epochs 2]

Prints, in one run:
- how many members per second `cnndsl family` checks (no JAX), for the example families (target >= 500/s);
- the wall time of `cnndsl sweep` training `--trials` members in one process, against training the very
  same members (the trials' own member.cnn files, same settings) with one `cnndsl train` process each,
  both from an empty compilation cache: the ratio in-process / separate (target <= 0.9).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def throughput() -> None:
    from cnndsl.search.family import family, load_space

    for example in ("course.cnn", "course_cifar.cnn"):
        space = load_space(ROOT / "examples" / example)
        started = time.perf_counter()
        members = list(family(space, limit=None))
        seconds = time.perf_counter() - started
        valid = sum(m.valid for m in members)
        print(f"cnndsl family examples/{example}: {len(members):,} members ({valid:,} valid) checked in "
              f"{seconds:.2f} s = {len(members) / seconds:,.0f} members/s (target >= 500/s)")


def in_process_vs_separate(trials: int, epochs: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnndsl", "sweep", str(ROOT / "examples" / "course.cnn"),
                        "--trials", str(trials), "--epochs", str(epochs), "--sampler", "random", "--seed", "1",
                        "--out", str(tmp / "sweep")], check=True, env={**env, "CNNDSL_CACHE": str(tmp / "c1")},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        swept = time.perf_counter() - started
        with (tmp / "sweep" / "trials.csv").open() as stream:
            trained = [row for row in csv.DictReader(stream) if row["status"] == "trained"]
        started = time.perf_counter()
        for k, row in enumerate(trained):
            subprocess.run([sys.executable, "-m", "cnndsl", "train", str(Path(row["run_dir"]) / "member.cnn"),
                            "--quiet", "--out", str(tmp / f"separate{k}")], check=True,
                           env={**env, "CNNDSL_CACHE": str(tmp / "c2")}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        separate = time.perf_counter() - started
        print(f"{len(trained)} members of examples/course.cnn, {epochs} epochs each on the digits: one `cnndsl sweep` "
              f"process {swept:.1f} s (with its static checks, study and plots), one `cnndsl train` process per "
              f"member {separate:.1f} s; in-process / separate = {swept / separate:.2f} (target <= 0.9)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    throughput()
    in_process_vs_separate(args.trials, args.epochs)


if __name__ == "__main__":
    main()
