"""Run a documented server command as a user would, check it serves, stop it: `python tests/cli/serves.py
tensorboard --logdir runs` starts TensorBoard on a free port of 127.0.0.1, asks it for its runs until it lists
at least one (at most 120 s: TensorBoard's first scan of a folder takes seconds), prints them and stops it;
`python tests/cli/serves.py optuna-dashboard sweeps/course/study.journal` asks optuna-dashboard for its
studies the same way. Exit 0 when it listed something (the README test's stand-in for a command that serves
until stopped)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PATIENCE_S = 120
#: Each server: where it lists what it serves, and the names in its reply.
PROBES = {"tensorboard": ("/data/runs", lambda reply: list(reply)),
          "optuna-dashboard": ("/api/studies", lambda reply: [s["study_name"] for s in reply["study_summaries"]])}


def main(command: list[str]) -> int:
    path, names = PROBES[command[0]]
    # the server's script as this Python's environment installed it, where PATH lacks that environment's bin/
    beside = Path(sys.executable).parent / command[0]
    command = [shutil.which(command[0]) or (str(beside) if beside.exists() else command[0]), *command[1:]]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(command + ["--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                    served = names(json.loads(reply.read()))
                if served:
                    print("serving:", ", ".join(served))
                    return 0
            except OSError:
                pass
            time.sleep(0.5)
        print(f"{command[0]} listed nothing in {PATIENCE_S} s", file=sys.stderr)
        return 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
