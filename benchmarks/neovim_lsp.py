"""`cnndsl lsp` in a real editor: Neovim's built-in LSP client, headless.

    python benchmarks/neovim_lsp.py            # needs nvim (0.7+) on PATH and the lsp extra

Copies examples/resnet18.cnn to a temporary folder with one mistake (`stride` misspelled `strid` in the stem),
opens it in `nvim --headless --clean` with benchmarks/neovim_lsp.lua (vim.lsp.start_client on `cnndsl lsp`),
waits for the server's diagnostics, hovers on the stem convolution (the builtin's signature: a spec with a
mistake has no shapes), fixes the mistake in the buffer, waits for the diagnostics to clear and hovers again
(the layer's shapes and costs), and prints what Neovim received. Exits 1 if anything is missing or wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    nvim = shutil.which("nvim")
    if nvim is None:
        print("nvim is not on PATH (apt-get install neovim)", file=sys.stderr)
        return 2
    version = subprocess.run([nvim, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    text = (ROOT / "examples" / "resnet18.cnn").read_text()
    stem = "conv(64, 7x7, stride=2"
    broken = text.replace(stem, "conv(64, 7x7, strid=2")
    line = broken[: broken.index("conv(64, 7x7, strid=2")].count("\n")
    col = broken.split("\n")[line].index("conv(64") + 2
    server = shutil.which("cnndsl") or str(Path(sys.executable).parent / "cnndsl")
    with tempfile.TemporaryDirectory() as folder:
        spec = Path(folder) / "resnet18.cnn"
        spec.write_text(broken)
        env = {**os.environ, "CNN_FILE": str(spec), "CNN_HOVER": f"{line}:{col}", "CNN_SERVER": server}
        start = time.perf_counter()
        result = subprocess.run([nvim, "--headless", "--clean", "-c", f"luafile {ROOT / 'benchmarks' / 'neovim_lsp.lua'}"],
                                capture_output=True, text=True, env=env, timeout=180, cwd=folder)
        seconds = time.perf_counter() - start
    print(f"{version}, `{server} lsp`: exit {result.returncode} after {seconds:.1f} s")
    received = [json.loads(row) for row in result.stdout.splitlines() if row.startswith("{")]
    for item in received:
        if item["kind"] == "diagnostic":
            print(f"diagnostic {item['line'] + 1}:{item['col'] + 1} [{item['code']}] {item['message']!r}")
        elif item["kind"] == "cleared":
            print(f"after the fix in the buffer, diagnostics cleared: {item['value']}")
        else:
            print(f"hover ({item['when']}):\n    " + item["value"].replace("\n", "\n    "))
    diagnostics = [i for i in received if i["kind"] == "diagnostic"]
    hovers = {i["when"]: i["value"] for i in received if i["kind"] == "hover"}
    good = (result.returncode == 0 and len(diagnostics) == 1 and "no parameter `strid`" in diagnostics[0]["message"]
            and diagnostics[0]["line"] == line and "conv(filters, kernel" in hovers.get("with the mistake", "")
            and "224x224x3 ⟶ 112x112x64" in hovers.get("fixed", ""))
    if not good:
        print(result.stderr[-2000:], file=sys.stderr)
    print("OK: Neovim showed the diagnostic and the hover" if good else "FAILED")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
