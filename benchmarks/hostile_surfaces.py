"""Hostile and broken inputs to the surfaces added after the spec front end (issue 20): data packing and
records, sweep storage, imports, weights import, predict on arrays, multi-process start-up. Each case is a
whole `cnndsl` command in a fresh process (several at once for the process cases), in a fresh folder;
printed: its class, exit status, wall time, peak memory (the process's own VmHWM, read at exit) and the
first line it printed on stderr. A case passes (`ok`) when its exit status is one it may have, nothing on
stderr is a traceback, an error is at most two lines (the message and its help), no secret byte is shown
and the files it must leave alone are byte for byte as they were.

    python benchmarks/hostile_surfaces.py            # every case (about 5 minutes on 2 cores)
    python benchmarks/hostile_surfaces.py predict    # the cases of one class
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "tests" / "weights"
SECRET = "SECRET-7d1f"  # in every file a case must never show
RUN_MAIN = ("import sys\nfrom cnndsl.cli import main\ntry:\n    status = main(sys.argv[1:])\n"
            "except SystemExit as stop:\n    status = stop.code\n"
            "peak = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
            "sys.stderr.write('\\nPEAK ' + peak.split()[1])\nsys.exit(status)")
TINY = """network Tiny
input 16x16x3
input -> conv(4, 3x3, pad=same) -> relu -> global_avgpool -> fc(3)
train epochs = 1, batch_size = 8
"""
FAMILY = """network Fam
input 8x8x1
search W in {4, 8}
input -> conv(W, 3x3, pad=same) -> relu -> global_avgpool -> fc(10)
train epochs = 1, batch_size = 64
"""


@dataclass
class Case:
    """One hostile input: the command (`{t}` is the case's folder, `{f}` the shared fixtures), what it may
    exit with, and the files it must leave as they were."""

    kind: str
    name: str
    args: list[str]
    exits: tuple[int, ...] = (1,)
    setup: Callable[[Path, Path], None] | None = None
    untouched: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    group: list[list[str]] | None = None  # several processes started 0.3 s apart (the first is `args`)


# ---- fixtures ------------------------------------------------------------------------------------------------

def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cnndsl", *args], check=True, capture_output=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


def image_folder(root: Path, per_class: int = 4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("ant", "bee", "cat"):
        (root / label).mkdir(parents=True)
        for k in range(per_class):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(root / label / f"{k}.png")
    return root


def fixtures(f: Path) -> None:
    """A trained digits run, an imported run, a folder of images and its records, a sweep's journal."""
    cli("train", str(ROOT / "examples" / "digits.cnn"), "--epochs", "1", "--out", str(f / "run"), "--quiet")
    cli("weights", "import", str(WEIGHTS / "narrow_resnet.cnn"), str(WEIGHTS / "narrow_resnet.safetensors"),
        "-o", str(f / "imported"))
    image_folder(f / "imgs")
    cli("data", "pack", f"folder:{f / 'imgs'}", "-o", str(f / "records"))
    (f / "tiny.cnn").write_text(TINY)
    (f / "family.cnn").write_text(FAMILY)
    cli("sweep", str(f / "family.cnn"), "--trials", "1", "--out", str(f / "sweep"))
    (f / "secret.txt").write_text(f"password {SECRET}\n")


def header_only(path: Path, descr: str, shape: tuple[int, ...]) -> None:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    path.write_bytes(out.getvalue())


def npy(name: str, array: np.ndarray) -> Callable[[Path, Path], None]:
    return lambda t, f: np.save(t / name, array)


def records_copy(edit: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    def setup(t: Path, f: Path) -> None:
        shutil.copytree(f / "records", t / "rec")
        edit(t / "rec")
    return setup


def manifest_edit(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(rec: Path) -> None:
        manifest = json.loads((rec / "manifest.json").read_text())
        change(manifest)
        (rec / "manifest.json").write_text(json.dumps(manifest))
    return edit


def labels_edit(make: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    return lambda rec: np.save(rec / "labels-train.npy", make(np.load(rec / "labels-train.npy")))


def flip(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x5A
    path.write_bytes(bytes(data))


def weights_file(change: Callable[[dict], dict]) -> Callable[[Path, Path], None]:
    def setup(t: Path, f: Path) -> None:
        from safetensors.numpy import load_file, save_file

        save_file(change(load_file(str(WEIGHTS / "narrow_resnet.safetensors"))), str(t / "w.safetensors"))
    return setup


def poke(value: float, dtype: object) -> Callable[[dict], dict]:
    def change(tensors: dict) -> dict:
        tensors = {k: v.astype(dtype) for k, v in tensors.items()}
        tensors["layer2.conv1.weight"].flat[3] = value
        return tensors
    return change


def zip_bomb(t: Path, f: Path) -> None:
    with zipfile.ZipFile(t / "w.pth", "w", zipfile.ZIP_DEFLATED) as z, z.open("archive/data/0", "w",
                                                                              force_zip64=True) as member:
        for _ in range(72):
            member.write(bytes(1 << 24))


def journal_copy(edit: Callable[[list[bytes]], bytes]) -> Callable[[Path, Path], None]:
    def setup(t: Path, f: Path) -> None:
        shutil.copytree(f / "sweep", t / "sweep")
        journal = t / "sweep" / "study.journal"
        journal.write_bytes(edit(journal.read_bytes().splitlines(keepends=True)))
    return setup


def user_folder(*names: str) -> Callable[[Path, Path], None]:
    def setup(t: Path, f: Path) -> None:
        (t / "mine").mkdir()
        for name in names:
            (t / "mine" / name).write_text(f"the user's own {name} {SECRET}\n")
    return setup


def link(target: str, name: str = "pw.cnn") -> Callable[[Path, Path], None]:
    def setup(t: Path, f: Path) -> None:
        os.symlink(target.format(t=t, f=f), t / name)
        (t / "main.cnn").write_text(f'import "{name}"\nnetwork M\ninput 8x8x1\ninput -> fc(10)\n')
    return setup


def checkpoint_damage(part: str) -> Callable[[Path, Path], None]:
    def setup(t: Path, f: Path) -> None:
        shutil.copytree(f / "run", t / "run")
        step = next(p for p in (t / "run" / "checkpoints" / "best").iterdir() if p.name.isdigit())
        files = sorted((step / "default").glob(part), key=lambda p: -p.stat().st_size)
        flip(files[0])
    return setup


# ---- the cases -------------------------------------------------------------------------------------------------

SPEC = str(ROOT / "examples" / "digits.cnn")
SWEEP = ["sweep", "{f}/family.cnn", "--trials", "1"]
IMPORT = ["weights", "import", str(WEIGHTS / "narrow_resnet.cnn"), "{t}/w.safetensors", "-o", "{t}/run"]
TRAIN_RECORDS = ["train", "{f}/tiny.cnn", "--data", "records:{t}/rec", "--out", "{t}/r", "--quiet"]
PREDICT_IMPORTED = ["predict", "{t}/x.npy", "--run", "{f}/imported"]
COORD = ["train", SPEC, "--out", "{t}/r{n}", "--quiet", "--epochs", "1", "--num-processes", "2", "--coordinator"]
COORD3 = [*COORD[:-2], "3", "--coordinator"]
FLOAT01 = np.random.default_rng(1).random((40, 36, 3)).astype(np.float32)

CASES = [
    # destinations: a user's files are never written over (exit 2, byte for byte)
    Case("destination", "pack into a folder with the user's manifest.json", ["data", "pack", "folder:{f}/imgs", "-o",
         "{t}/mine"], (2,), user_folder("manifest.json"), ("mine/manifest.json",)),
    Case("destination", "pack into a folder with the user's labels", ["data", "pack", "folder:{f}/imgs", "-o",
         "{t}/mine"], (2,), user_folder("labels-train.npy", "notes.txt"), ("mine/labels-train.npy",)),
    Case("destination", "pack onto a user's file", ["data", "pack", "folder:{f}/imgs", "-o", "{t}/mine/notes.txt"],
         (2,), user_folder("notes.txt"), ("mine/notes.txt",)),
    Case("destination", "--storage a user's notes.txt", [*SWEEP, "--out", "{t}/s", "--storage", "{t}/mine/notes.txt"],
         (2,), user_folder("notes.txt"), ("mine/notes.txt",)),
    Case("destination", "--storage a user's run.log", [*SWEEP, "--out", "{t}/s", "--storage", "{t}/mine/run.log"],
         (2,), user_folder("run.log"), ("mine/run.log",)),
    Case("destination", "--storage a folder", [*SWEEP, "--out", "{t}/s", "--storage", "{t}/mine"], (2,),
         user_folder("a.txt"), ("mine/a.txt",)),
    Case("destination", "--storage /dev/null", [*SWEEP, "--out", "{t}/s", "--storage", "/dev/null"], (2,)),
    Case("destination", "--storage a JSON file not a journal", [*SWEEP, "--out", "{t}/s", "--storage",
         "{t}/mine/c.journal"], (2,), lambda t, f: (t.joinpath("mine").mkdir(), t.joinpath("mine/c.journal")
                                                      .write_text('{"a": 1}\n' + SECRET)), ("mine/c.journal",)),
    Case("destination", "weights import into a user's folder", [*IMPORT[:3], str(WEIGHTS / "narrow_resnet.safetensors"),
         "-o", "{t}/mine"], (2,), user_folder("settings.json"), ("mine/settings.json",)),
    Case("destination", "sweep --out a user's folder", [*SWEEP, "--out", "{t}/mine"], (2,),
         user_folder("sweep.json", "trials.csv"), ("mine/sweep.json", "mine/trials.csv")),
    # imports: only .cnn files are read, whatever links say
    Case("import", "a .cnn link to a secret file", ["check", "{t}/main.cnn"], (1,), link("{f}/secret.txt")),
    Case("import", "a link to a link to a secret", ["check", "{t}/main.cnn"], (1,),
         lambda t, f: (os.symlink(f / "secret.txt", t / "hop.cnn"), link("{t}/hop.cnn")(t, f))),
    Case("import", "a .cnn that is a folder", ["check", "{t}/main.cnn"], (1,),
         lambda t, f: ((t / "d.cnn").mkdir(), link("{t}/d.cnn", "x.cnn")(t, f))),
    Case("import", "a .cnn that is a FIFO", ["check", "{t}/main.cnn"], (1,),
         lambda t, f: (os.mkfifo(t / "p.cnn"), link("{t}/p.cnn", "x.cnn")(t, f))),
    Case("import", "a .cnn link to /dev/zero", ["check", "{t}/main.cnn"], (1,), link("/dev/zero")),
    Case("import", "a .cnn link loop", ["check", "{t}/main.cnn"], (1,),
         lambda t, f: (os.symlink(t / "b.cnn", t / "a.cnn"), link("{t}/a.cnn", "b.cnn")(t, f))),
    # predict: every form of an image read alike; sizes checked from headers
    Case("predict", "imported run, float 0..1 array", PREDICT_IMPORTED, (0,), npy("x.npy", FLOAT01)),
    Case("predict", "imported run, float 0..255 array", PREDICT_IMPORTED, (0,), npy("x.npy", FLOAT01 * 255)),
    Case("predict", "imported run, uint8 RGBA array", PREDICT_IMPORTED, (0,),
         npy("x.npy", np.full((30, 30, 4), 200, np.uint8))),
    Case("predict", "imported run, Fortran-ordered array", PREDICT_IMPORTED, (0,),
         npy("x.npy", np.asfortranarray(FLOAT01))),
    Case("predict", "header 100000x100000x3 uint8", PREDICT_IMPORTED, (1,),
         lambda t, f: header_only(t / "x.npy", "|u1", (100_000, 100_000, 3))),
    Case("predict", "a real 9000x9000x3 uint8 (243 MB)", PREDICT_IMPORTED, (1,),
         lambda t, f: np.save(t / "x.npy", np.zeros((9000, 9000, 3), np.uint8))),
    Case("predict", "header 3000x8x8x1 float64 batch", ["predict", "{t}/x.npy", "--run", "{f}/run"], (1,),
         lambda t, f: header_only(t / "x.npy", "<f8", (3000, 8, 8, 1))),
    Case("predict", "an object array", PREDICT_IMPORTED, (1,), npy("x.npy", np.array([[None]], dtype=object))),
    Case("predict", "a truncated array", PREDICT_IMPORTED, (1,),
         lambda t, f: (np.save(t / "x.npy", FLOAT01), (t / "x.npy").write_bytes((t / "x.npy").read_bytes()[:999]))),
    Case("predict", "a 5-D array", PREDICT_IMPORTED, (1,), npy("x.npy", np.zeros((1, 1, 4, 4, 3), np.float32))),
    Case("predict", "NaN pixels", PREDICT_IMPORTED, (1,), npy("x.npy", np.full((24, 24, 3), np.nan, np.float32))),
    Case("predict", "complex pixels", PREDICT_IMPORTED, (1,), npy("x.npy", np.zeros((24, 24, 3), np.complex64))),
    Case("predict", "--white 0", [*PREDICT_IMPORTED, "--white", "0"], (2,), npy("x.npy", FLOAT01)),
    # labels: checked against the classes on every source
    Case("labels", "records label 7 of 3 classes", TRAIN_RECORDS, (1,), records_copy(labels_edit(lambda y: y * 0 + 7))),
    Case("labels", "records label -1", TRAIN_RECORDS, (1,), records_copy(labels_edit(lambda y: y * 0 - 1))),
    Case("labels", "records labels of floats", TRAIN_RECORDS, (1,), records_copy(labels_edit(lambda y: y + 0.5))),
    Case("labels", "records labels one short", TRAIN_RECORDS, (1,), records_copy(labels_edit(lambda y: y[:-1]))),
    Case("labels", "records labels header 10**12", TRAIN_RECORDS, (1,),
         records_copy(lambda rec: header_only(rec / "labels-train.npy", "<i4", (10**12,)))),
    Case("labels", "npz label 10 of 10 classes", ["train", SPEC, "--data", "npz:{t}/d.npz", "--out", "{t}/r"], (1,),
         lambda t, f: np.savez(t / "d.npz", x=np.zeros((20, 8, 8, 1), np.uint8), y=np.arange(20) % 11)),
    Case("labels", "npz label -3", ["train", SPEC, "--data", "npz:{t}/d.npz", "--out", "{t}/r"], (1,),
         lambda t, f: np.savez(t / "d.npz", x=np.zeros((20, 8, 8, 1), np.uint8), y=np.arange(20) % 3 - 3)),
    # journals: repaired to the last complete record, or one line naming the line
    Case("journal", "last record cut off mid-line (repaired)", [*SWEEP, "--out", "{t}/sweep", "--trials", "2"], (0,),
         journal_copy(lambda lines: b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])),
    Case("journal", "last record without its newline (repaired)", [*SWEEP, "--out", "{t}/sweep", "--trials", "2"],
         (0,), journal_copy(lambda lines: b"".join(lines)[:-1])),
    Case("journal", "a damaged record mid-file", [*SWEEP, "--out", "{t}/sweep", "--trials", "2"], (1,),
         journal_copy(lambda lines: b"".join(lines[:2]) + b'{"op_code": 4, "wor\n' + b"".join(lines[3:]))),
    Case("journal", "a record of other JSON mid-file", [*SWEEP, "--out", "{t}/sweep", "--trials", "2"], (1,),
         journal_copy(lambda lines: lines[0] + b"[1, 2, 3]\n" + b"".join(lines[1:]))),
    Case("journal", "random bytes as --storage", [*SWEEP, "--out", "{t}/s", "--storage", "{t}/r.journal"], (2,),
         lambda t, f: (t / "r.journal").write_bytes(np.random.default_rng(2).bytes(5000)), ("r.journal",)),
    # weights: half precision in, damaged numbers out
    Case("weights", "bfloat16 safetensors", IMPORT, (0,), weights_file(lambda w: {
        k: v.astype(__import__("ml_dtypes").bfloat16) for k, v in w.items()})),
    Case("weights", "float16 safetensors", IMPORT, (0,), weights_file(lambda w: {k: v.astype(np.float16)
                                                                                  for k, v in w.items()})),
    Case("weights", "a NaN weight", IMPORT, (1,), weights_file(poke(np.nan, np.float32))),
    Case("weights", "an infinite float16 weight", IMPORT, (1,), weights_file(poke(-np.inf, np.float16))),
    Case("weights", "1e300 in float64", IMPORT, (1,), weights_file(poke(1e300, np.float64))),
    Case("weights", "3e9 in float32", IMPORT, (1,), weights_file(poke(3e9, np.float32))),
    Case("weights", "a .pth inflating to 1.2 GB", [*IMPORT[:3], "{t}/w.pth", "-o", "{t}/run"], (1,), zip_bomb),
    Case("weights", "a truncated safetensors", IMPORT, (1,), lambda t, f: (t / "w.safetensors").write_bytes(
        (WEIGHTS / "narrow_resnet.safetensors").read_bytes()[:3000])),
    Case("weights", "a header claiming 2**60 bytes", IMPORT, (1,), lambda t, f: (t / "w.safetensors").write_bytes(
        (2**60).to_bytes(8, "little") + b"{}")),
    Case("weights", "random bytes", IMPORT, (1,), lambda t, f: (t / "w.safetensors").write_bytes(
        np.random.default_rng(3).bytes(4096))),
    # what were internal errors
    Case("internal", "family --limit -5", ["family", "{f}/family.cnn", "--limit=-5"], (2,)),
    Case("internal", "family --limit 10**12", ["family", "{f}/family.cnn", "--limit", str(10**12)], (2,)),
    Case("internal", "family --max-params 1e999", ["family", "{f}/family.cnn", "--max-params", "1e999"], (2,)),
    Case("internal", "compile --seed 2**70", ["compile", SPEC, "--emit", "export", "-o", "{t}/e", "--seed",
                                              str(2**70)], (2,)),
    Case("internal", "pack a non-UTF-8 file name", ["data", "pack", "folder:{t}/imgs", "-o", "{t}/rec"], (0,),
         lambda t, f: (shutil.copytree(f / "imgs", t / "imgs"),
                       os.link(t / "imgs" / "ant" / "0.png", os.fsencode(t / "imgs" / "ant") + b"/\xff.png"))),
    Case("internal", "pack into a non-UTF-8 folder", ["data", "pack", "folder:{f}/imgs", "-o", "{t}/rec\udcfe"], (1,)),
    Case("internal", "pack a folder with a link loop", ["data", "pack", "folder:{t}/imgs", "-o", "{t}/rec"], (0,),
         lambda t, f: (shutil.copytree(f / "imgs", t / "imgs"), os.symlink("loop", t / "imgs" / "ant" / "loop"))),
    Case("internal", "pack beside a foreign manifest.partial.json", ["data", "pack", "folder:{f}/imgs", "-o",
         "{t}/mine"], (2,), user_folder("manifest.partial.json"), ("mine/manifest.partial.json",)),
    Case("internal", "records manifest is a list", TRAIN_RECORDS, (1,),
         records_copy(lambda rec: (rec / "manifest.json").write_text("[]"))),
    Case("internal", "records splits a list", TRAIN_RECORDS, (1,), records_copy(manifest_edit(
        lambda m: m.update(splits=[])))),
    Case("internal", "records shard outside the folder", TRAIN_RECORDS, (1,), records_copy(manifest_edit(
        lambda m: m["splits"]["train"]["shards"][0].update(file="../../secret.txt")))),
    Case("internal", "records shard an absolute path", TRAIN_RECORDS, (1,), records_copy(manifest_edit(
        lambda m: m["splits"]["train"]["shards"][0].update(file="/etc/hostname")))),
    Case("internal", "a flipped byte in a shard", TRAIN_RECORDS, (0, 1), records_copy(
        lambda rec: flip(next(rec.glob("train-*.array_record"))))),
    Case("internal", "--data folder:/proc", ["train", "{f}/tiny.cnn", "--data", "folder:/proc", "--out", "{t}/r"], (1,)),
    Case("internal", "a damaged checkpoint index, compile onnx --run", ["compile", SPEC, "--emit", "onnx", "--run",
         "{t}/run", "-o", "{t}/m.onnx"], (1,), checkpoint_damage("manifest.ocdbt")),
    Case("internal", "a flipped byte in the parameters, predict", ["predict", "{t}/x.npy", "--run", "{t}/run"], (1,),
         lambda t, f: (checkpoint_damage("ocdbt.process_0/d/*")(t, f), np.save(t / "x.npy", np.zeros((8, 8), np.float32)))),
    # processes: one line each within CNNDSL_DISTRIBUTED_TIMEOUT (3 s here), never SIGABRT
    Case("processes", "--coordinator notahost:99999", [*COORD, "notahost:99999", "--process-id", "0"]),
    Case("processes", "--coordinator an unknown host", [*COORD, "no-such-host.invalid:1234", "--process-id", "1"]),
    Case("processes", "process 0 whose peer never starts", [*COORD, "127.0.0.1:{port}", "--process-id", "0"]),
    Case("processes", "process 1 with no process 0", [*COORD, "127.0.0.1:{port}", "--process-id", "1"]),
    Case("processes", "process 0 on another host's address", [*COORD, "10.255.255.1:{port}", "--process-id", "0"]),
    Case("processes", "two processes with --process-id 0", [*COORD, "127.0.0.1:{port}", "--process-id", "0"],
         group=[[*COORD, "127.0.0.1:{port}", "--process-id", "0"]]),
    Case("processes", "two processes with --process-id 1 (of 3)", [*COORD3, "127.0.0.1:{port}", "--process-id", "0"],
         group=[[*COORD3, "127.0.0.1:{port}", "--process-id", "1"], [*COORD3, "127.0.0.1:{port}", "--process-id", "1"]]),
    Case("processes", "--num-processes 3 meets 2", [*COORD, "127.0.0.1:{port}", "--process-id", "0"],
         group=[[*COORD3, "127.0.0.1:{port}", "--process-id", "1"]]),
    # memory: sizes from headers, before anything is read
    Case("memory", "a 1.2 GB sparse image in pack", ["data", "pack", "folder:{t}/imgs", "-o", "{t}/rec"], (1,),
         lambda t, f: (shutil.copytree(f / "imgs", t / "imgs"), os.truncate(
             shutil.copy(t / "imgs" / "ant" / "0.png", t / "imgs" / "ant" / "huge.png"), 1200 << 20))),
]


# ---- running them ------------------------------------------------------------------------------------------------

def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", RUN_MAIN, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=True)


def outcome(process: subprocess.Popen[str]) -> tuple[int, float, str]:
    try:
        _, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        _, err = process.communicate()
        return -9, 0.0, "timed out after 300 s"
    text, _, peak = err.rpartition("\nPEAK ")
    return process.returncode, (int(peak) / 1024 if peak.isdigit() else 0.0), (text if peak.isdigit() else err)


def run_case(case: Case, folder: Path, f: Path, port: int) -> list[tuple[int, float, float, str, bool]]:
    def fill(args: list[str], n: int) -> list[str]:
        return [a.format(t=folder, f=f, port=port, n=n) for a in args]

    if case.setup:
        case.setup(folder, f)
    before = {name: (folder / name).read_bytes() for name in case.untouched}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CNNDSL_DISTRIBUTED_TIMEOUT": "3", **case.env}
    started = time.perf_counter()
    processes = []
    for n, args in enumerate([case.args, *(case.group or [])]):
        processes.append(start(fill(args, n), env))
        if case.group:
            time.sleep(0.3)
    rows = []
    for process in processes:
        status, peak, err = outcome(process)
        lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith(
            ("process 0 of", "note: "))]
        # an error is one line (`cnndsl: ...`), a located spec diagnostic (`error[...]` with its source line),
        # or argparse's usage error; never a traceback, a secret, or a changed file
        clean = ("Traceback" not in err and "internal error" not in err and SECRET not in err
                 and (status == 0 or (lines and (lines[0].startswith(("error[", "usage: ")) or len(lines) <= 2)))
                 and all((folder / name).read_bytes() == data for name, data in before.items()))
        ok = clean and status in case.exits
        rows.append((status, time.perf_counter() - started, peak, lines[0] if lines else "", ok))
    return rows


def main() -> None:
    chosen = [c for c in CASES if len(sys.argv) < 2 or c.kind == sys.argv[1]]
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "fixtures"
        f.mkdir()
        print("building fixtures (a trained run, an imported run, records, a sweep) ...", file=sys.stderr)
        fixtures(f)
        print(f"{'class':<12}{'case':<46}{'exit':>5}{'s':>7}{'MB':>7}  ok  first line")
        failures = 0
        for index, case in enumerate(chosen):
            folder = Path(tmp) / f"case{index}"
            folder.mkdir()
            import socket

            with socket.socket() as probe:  # a free port for the process cases
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            for status, seconds, peak, first, ok in run_case(case, folder, f, port):
                failures += not ok
                print(f"{case.kind:<12}{case.name[:45]:<46}{status:>5}{seconds:>7.1f}{peak:>7.0f}  "
                      f"{'ok' if ok else 'NO':<3} {first[:100]}", flush=True)
        print(f"\n{len(chosen)} cases, {failures} processes not answered cleanly")


if __name__ == "__main__":
    main()
