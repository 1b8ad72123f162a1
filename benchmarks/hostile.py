"""Hostile inputs, each run as a whole `cnndsl` command in a fresh process: its exit status, wall time,
peak memory and the first line it prints on stderr. Every case must end with exit 1 or 2 in under
1 s and 200 MB (issue 8), except the legal 100,000-layer network, which must pass.

    python benchmarks/hostile.py

Peak memory is the command's own VmHWM (Linux), read by the process itself at exit.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HEAD = "network T\ninput 8x8x1\n"
RUN_MAIN = ("import sys\nfrom cnndsl.cli import main\nstatus = main(sys.argv[1:])\n"
            "peak = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
            "sys.stderr.write('\\nPEAK ' + peak.split()[1])\nsys.exit(status)")

SPECS = {
    "9**9**9**9": HEAD + "input -> fc(9**9**9**9)",
    "fc(2**(2**36))": HEAD + "input -> fc(2**(2**36))",
    "a 5,000-digit literal": HEAD + "input -> fc(" + "7" * 5000 + ")",
    "[[[relu]*0]*100000]*100000": HEAD + "input -> [[[relu]*0]*100000]*100000",
    "[[[identity]*3]*1e5]*1e5": HEAD + "input -> [[[identity]*3]*100000]*100000",
    "[[relu if false]*1e5]*1e5": HEAD + "input -> [[relu if false]*100000]*100000",
    "indexed, nothing produced": HEAD + "input -> [[relu if i < 0 and j < 0]*100000 as i]*100000 as j",
    "40 blocks, each doubling": HEAD + "".join(f"block b{k} = b{k + 1} -> b{k + 1}\n" for k in range(40))
    + "block b40 = identity\ninput -> b0",
    "[[relu]*1000]*1000 (100,001)": HEAD + "input -> [[relu]*1000]*1000 -> relu",
    "flops past 64 bits": "network T\ninput 268435456x268435456x1\ninput -> conv(1, 8x8, pad=same, bias=false)",
    "legal: [relu]*100000": HEAD + "input -> [relu]*100000",
    "legal: [relu]*40000, table": HEAD + "input -> [relu]*40000",
}


def measure(args: list[str]) -> tuple[int, float, float, str]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", RUN_MAIN, *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=600, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    err, _, peak = result.stderr.rpartition("\nPEAK ")
    first = next((line for line in err.splitlines() if line.strip()), "")
    return result.returncode, seconds, int(peak or 0) / 1024, first


def zip_bomb_export(folder: Path) -> Path:
    """An export of LeNet-5 whose params.npz inflates one array to 4 GB of zeros (about 4 MB on disk)."""
    art = folder / "art"
    subprocess.run([sys.executable, "-m", "cnndsl", "compile", str(ROOT / "examples" / "lenet5.cnn"), "--emit",
                    "export", "-o", str(art), "--quiet"], check=True, capture_output=True, cwd=ROOT)
    with np.load(art / "params.npz") as data:
        arrays = dict(data)
    name = sorted(arrays)[0]
    with zipfile.ZipFile(art / "params.npz", "w", zipfile.ZIP_DEFLATED) as z:
        for other in sorted(arrays):
            if other != name:
                out = io.BytesIO()
                np.lib.format.write_array(out, arrays[other])
                z.writestr(f"{other}.npy", out.getvalue())
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 30,)})
        with z.open(f"{name}.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            for _ in range(256):
                member.write(bytes(1 << 24))
    return art


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for name, text in SPECS.items():
            path = tmp / f"{len(rows)}.cnn"
            path.write_text(text, encoding="utf-8")
            rows.append((name, measure(["check", str(path)])))
        big = tmp / "big.cnn"
        with big.open("wb") as out:
            out.write(b"# ")
            out.write(b"a" * 200_000_000)
        rows.append(("a 200 MB spec", measure(["check", str(big)])))
        os.mkfifo(tmp / "fifo.cnn")
        rows.append(("a FIFO as the spec", measure(["check", str(tmp / "fifo.cnn")])))
        rows.append(("/dev/zero as the spec", measure(["check", "/dev/zero"])))
        art = zip_bomb_export(tmp)
        np.save(tmp / "x.npy", np.zeros((32, 32, 1), np.float32))
        rows.append((f"zip bomb params.npz ({(art / 'params.npz').stat().st_size / 2**20:.1f} MB)",
                     measure(["run", str(art), str(tmp / "x.npy")])))

    print(f"{'input':<32}{'exit':>5}{'seconds':>9}{'peak MB':>9}  first line")
    for name, (status, seconds, peak, first) in rows:
        print(f"{name:<32}{status:>5}{seconds:>9.2f}{peak:>9.0f}  {first[:90]}")


if __name__ == "__main__":
    main()
