"""The built wheel carries the grammar and checks an example from a fresh virtual environment."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

from tests.conftest import ROOT



def test_wheel_installs_and_checks_an_example(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist)], check=True, timeout=300)
    (wheel,) = dist.glob("cnndsl-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "cnndsl/grammar/cnn.lark" in archive.namelist()
        packaged = archive.read("cnndsl/grammar/cnn.lark").decode()
    assert packaged == (ROOT / "grammar" / "cnn.lark").read_text()

    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   timeout=300)
    # The wheel's dependencies come from this environment's site-packages, appended after the venv's own.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    (workdir / "vgg16.cnn").write_text((ROOT / "examples" / "vgg16.cnn").read_text())
    where = subprocess.run([str(python), "-c", "import cnndsl; print(cnndsl.__file__)"], cwd=workdir,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(env)), f"cnndsl imported from {where}, not from the wheel"
    result = subprocess.run([str(env / "bin" / "cnndsl"), "check", "vgg16.cnn", "--json"], cwd=workdir,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '"params": 138357544' in result.stdout
