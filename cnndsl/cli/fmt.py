"""`cnndsl fmt [--check] FILES...`: write `.cnn` files in the canonical layout (`cnndsl.editor.format`)."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path
from typing import Any

from cnndsl.lang.errors import CnnError, UsageError
from cnndsl.lang.outputs import write_atomic
from cnndsl.lang.parser import load_source
from cnndsl.lang.source import Source


def add(commands: Any, spec: argparse.ArgumentParser, data: argparse.ArgumentParser) -> None:
    """`cnndsl fmt`."""
    fmt = commands.add_parser("fmt", help="write .cnn files in the canonical layout",
                              description="Rewrite .cnn files in the one canonical layout (spacing, line breaks "
                                          "at `->` within 100 columns, comments kept). Folders are searched "
                                          "for *.cnn files; `-` formats standard input to standard output.")
    fmt.add_argument("files", nargs="+", metavar="FILE", help="a .cnn file, a folder of them, or - for stdin")
    fmt.add_argument("--check", action="store_true",
                     help="change nothing: print a unified diff of each file that is not formatted, exit 1 if any")


def run(args: argparse.Namespace) -> int:
    """`cnndsl fmt`: 0 when every file is (now) formatted, 1 when `--check` found one that is not or a file
    does not parse (its diagnostics printed, the file left alone), 2 for a path that is no spec."""
    from cnndsl.editor.format import format_source

    if "-" in args.files:
        if len(args.files) > 1:
            raise UsageError("`-` (standard input) cannot be mixed with files")
        source = Source(sys.stdin.read(), "<stdin>")
        formatted = format_source(source)
        if args.check:
            return _report_diff(source.text, formatted, "<stdin>")
        sys.stdout.write(formatted)
        return 0
    changed = unchanged = failed = 0
    for path in _spec_files(args.files):
        try:
            source = load_source(path)
            formatted = format_source(source)
        except UsageError:
            raise
        except CnnError as err:
            print(err.render(), file=sys.stderr)
            failed += 1
            continue
        if formatted == source.text and _raw_text(path) == formatted:
            unchanged += 1
        elif args.check:
            _report_diff(_raw_text(path), formatted, str(path))
            changed += 1
        else:
            _rewrite(path, formatted)
            print(f"reformatted {path}")
            changed += 1
    verb = "would be reformatted" if args.check else "reformatted"
    summary = [f"{_files(changed)} {verb}"] if changed else []
    summary += [f"{_files(unchanged)} already formatted"] if unchanged else []
    summary += [f"{_files(failed)} not parsed"] if failed else []
    print(", ".join(summary), file=sys.stderr if args.check else sys.stdout)
    return 1 if failed or (args.check and changed) else 0


def _files(count: int) -> str:
    return f"{count} file" + ("" if count == 1 else "s")


def _spec_files(names: list[str]) -> list[Path]:
    """The files named, and the *.cnn files under each folder named, in order; a missing path is a usage error."""
    out: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*.cnn") if p.is_file())
        elif path.exists():
            out.append(path)
        else:
            raise UsageError(f"{name}: no such file or folder")
    return out


def _raw_text(path: Path) -> str:
    """The file as it is on disk (line endings and a byte-order mark included: those are reformatted too)."""
    return path.read_bytes().decode("utf-8")


def _report_diff(old: str, new: str, name: str) -> int:
    if old == new:
        return 0
    diff = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                f"{name} (original)", f"{name} (formatted)")
    sys.stdout.writelines(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in diff)
    return 1


def _rewrite(path: Path, text: str) -> None:
    """Replace the file atomically, through a link to its target, keeping its permissions."""
    target = path.resolve()
    mode = target.stat().st_mode & 0o7777
    write_atomic(target, text)
    os.chmod(target, mode)
