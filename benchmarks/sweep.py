"""What a family costs to enumerate and to search, on this machine.

    python benchmarks/sweep.py [--trials 6] [--epochs 2] [--pruning-trials 40] [--pruners none,median,hyperband]

Prints, in one run:
- how many members per second `cnndsl family` checks (no JAX), for the example families (target >= 500/s);
- the wall time of `cnndsl sweep` training `--trials` members in one process, against training the very
  same members (the trials' own member.cnn files, same settings) with one `cnndsl train` process each,
  both from an empty compilation cache: the ratio in-process / separate (target <= 0.9);
- the same 40-member sweep of examples/course.cnn with each pruner (none, median, hyperband): wall time,
  epochs trained, members pruned, the best member and the Pareto front.
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


def with_and_without_pruning(trials: int, pruners: list[str]) -> None:
    """The same sweep of examples/course.cnn (its own 8 epochs per member, TPE, seed 0) once per pruner, one
    after the other in this run: wall time, epochs trained, members pruned, the best member and the front."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows = []
    print(f"examples/course.cnn, {trials} members (TPE, seed 0, 8 epochs each on the digits), one sweep per pruner:")
    print(f"{'pruner':<10} {'wall s':>7} {'epochs':>7} {'pruned':>7} {'best val acc':>13} {'its MACs':>9}  front "
          "(val acc @ MACs)", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for pruner in pruners:
            out = tmp / pruner
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "cnndsl", "sweep", str(ROOT / "examples" / "course.cnn"),
                            "--trials", str(trials), "--pruner", pruner, "--seed", "0", "--out", str(out)],
                           check=True, env={**env, "CNNDSL_CACHE": str(tmp / "cache")}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            seconds = time.perf_counter() - started
            with (out / "trials.csv").open() as stream:
                trials_csv = list(csv.DictReader(stream))
            ran = [r for r in trials_csv if r["status"] in ("trained", "pruned")]
            epochs = sum(len((Path(r["run_dir"]) / "metrics.jsonl").read_text().splitlines()) for r in ran)
            trained = [r for r in ran if r["status"] == "trained"]
            front = _front([(float(r["val_accuracy"]), int(r["macs"])) for r in trained])
            best = max(trained, key=lambda r: float(r["val_accuracy"]))
            rows.append((pruner, seconds, epochs, len(ran) - len(trained), float(best["val_accuracy"]),
                         int(best["macs"]), front))
            shown = ", ".join(f"{a:.1%}@{m / 1e3:.0f}k" for a, m in front)
            print(f"{pruner:<10} {seconds:>7.1f} {epochs:>7} {len(ran) - len(trained):>7} "
                  f"{float(best['val_accuracy']):>13.2%} {int(best['macs']):>9,}  {shown}", flush=True)
    base = rows[0]
    for pruner, seconds, epochs, *_ in rows[1:]:
        print(f"{pruner} / {base[0]}: wall time {seconds / base[1]:.2f}, epochs trained {epochs / base[2]:.2f}")


def _front(points: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """The (accuracy up, MACs down) Pareto front of `points`, cheapest first."""
    return sorted(p for p in set(points) if not any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6, help="members of the in-process comparison (0: skip)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pruning-trials", type=int, default=40, help="members of each pruning sweep (0: skip)")
    parser.add_argument("--pruners", default="none,median,hyperband")
    args = parser.parse_args()
    throughput()
    if args.trials:
        in_process_vs_separate(args.trials, args.epochs)
    if args.pruning_trials:
        with_and_without_pruning(args.pruning_trials, args.pruners.split(","))


if __name__ == "__main__":
    main()
