"""`import "file.cnn"`: other files' definitions, found and parsed before expansion.

    imported = load_imports(program)      # every file reachable from `program`'s imports, each once
    text = standalone_text(program)       # the spec with its imports written in: what a run stores

An import brings in the `let` and `block` definitions of a file (and of the files it imports); the file's
own `network`, `input`, main chain, `train` and `search` lines belong to its own network and are left out,
so any spec can serve as a library (examples/resnet101.cnn imports examples/resnet50.cnn). A path is
relative to the folder of the file that imports it (for a spec given as text: the working directory).

Every problem is located: a missing or unreadable file at the import line; a syntax error inside an
imported file in that file, with a note naming the import line; a cycle (a.cnn imports b.cnn imports
a.cnn) at the import that closes it, naming the chain. Parsed files are cached by path, size and
modification time, so checking the thousands of members of a family reads each file once.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from cnndsl.lang import nodes as n
from cnndsl.lang.errors import CnnError, Diagnostic, UsageError

#: Files one import graph may hold: a bound on work for a hostile spec, far above any real library.
MAX_IMPORTS = 256

_cache: dict[tuple[str, int, int], n.Program] = {}


def _file(program: n.Program) -> Path | None:
    """The file `program` was read from, resolved; None for a spec given as text."""
    path = program.source.path
    return Path(path).resolve() if not path.startswith(("<", "--set")) and Path(path).is_file() else None


def _folder(program: n.Program) -> Path:
    """The folder an import in `program` is relative to: its file's, also for a file not saved yet (an
    editor's new buffer), else the working directory's."""
    file = _file(program)
    if file is not None:
        return file.parent
    path = program.source.path
    if not path.startswith(("<", "--set")) and Path(path).parent != Path(".") and Path(path).parent.is_dir():
        return Path(path).parent.resolve()
    return Path.cwd()


def _parsed(path: Path) -> n.Program:
    """The program of an imported file (cached); `UsageError` or `CnnError` as `load_source` raises them."""
    from cnndsl.lang.parser import (  # here: the parser is only needed when a spec imports
        load_source,
        parse,
    )

    info = path.stat()
    key = (str(path), info.st_size, info.st_mtime_ns)
    if key not in _cache:
        if len(_cache) > 4 * MAX_IMPORTS:
            _cache.clear()
        _cache[key] = parse(load_source(_shown(path)))
    return _cache[key]


def _shown(path: Path) -> str:
    """How messages name an imported file: relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_imports(program: n.Program) -> tuple[n.Program, ...]:
    """The programs `program` imports, directly or not, each once, a file's imports before the file; raise
    `CnnError` with every problem found."""
    programs, problems = resolve_imports(program)
    if problems:
        raise CnnError(problems)
    return programs


def resolve_imports(program: n.Program) -> tuple[tuple[n.Program, ...], tuple[Diagnostic, ...]]:
    """What `load_imports` finds, and its problems instead of an exception: the expander defines what could
    be imported and reports the rest with the spec's other problems."""
    if not any(isinstance(s, n.Import) for s in program.statements):
        return (), ()
    loaded: dict[Path, n.Program] = {}
    order: list[n.Program] = []
    problems: list[Diagnostic] = []
    top = _file(program)
    _visit(program, [top] if top else [], loaded, order, problems)
    return tuple(order), tuple(problems)


def _visit(program: n.Program, stack: list[Path], loaded: dict[Path, n.Program], order: list[n.Program],
           problems: list[Diagnostic]) -> None:
    folder = None
    for stmt in program.statements:
        if not isinstance(stmt, n.Import):
            continue
        at = f"imported at {program.source.path}:{stmt.span.line}:{stmt.span.col}"
        if not stmt.path.strip():
            problems.append(Diagnostic("import", "the import names no file", program.source, stmt.span,
                                       help='write `import "blocks.cnn"`, a path relative to this file'))
            continue
        if not stmt.path.lower().endswith(".cnn"):  # never shows lines of other files (a password file) in errors
            problems.append(Diagnostic("import", f"`{stmt.path}` is not a .cnn file", program.source, stmt.span,
                                       help="import the definitions of a spec: `import \"blocks.cnn\"`"))
            continue
        try:
            folder = _folder(program) if folder is None else folder
            path = (folder / stmt.path).resolve()
            exists = path.exists()
        except (OSError, ValueError, RuntimeError) as err:  # too long a name, a NUL byte, a loop of links
            why = "its links form a loop" if isinstance(err, RuntimeError) else getattr(err, "strerror", None) or err
            problems.append(Diagnostic("import", f"cannot import `{stmt.path}`: {why}", program.source, stmt.span,
                                       help="give the path of a .cnn file"))
            continue
        if path in stack:
            chain = " -> ".join(p.name for p in stack[stack.index(path):] + [path])
            problems.append(Diagnostic("import", f"`{stmt.path}` imports itself: {chain}", program.source, stmt.span,
                                       help="move the shared definitions to a file that imports neither"))
            continue
        if path in loaded:
            continue
        if len(loaded) >= MAX_IMPORTS:
            problems.append(Diagnostic("limit", f"the spec imports more than {MAX_IMPORTS} files", program.source,
                                       stmt.span, help="import fewer files"))
            return
        if not exists:
            problems.append(Diagnostic("import", f"cannot import `{stmt.path}`: there is no {_shown(path)}", program.source,
                                       stmt.span, help="a path is relative to the folder of the file that imports it"))
            continue
        if not path.name.lower().endswith(".cnn"):  # the name a link resolves to counts (folders, pipes: below)
            problems.append(Diagnostic("import", f"cannot import `{stmt.path}`: it resolves to {_shown(path)}, not a "
                                                 ".cnn file", program.source, stmt.span,
                                       help="import a .cnn file itself, not a link to another kind of file"))
            continue
        try:
            imported = _parsed(path)
        except UsageError as err:
            problems.append(Diagnostic("import", f"cannot import `{stmt.path}`: {err.diagnostics[0].message}",
                                       program.source, stmt.span, help="import a .cnn file"))
            continue
        except OSError as err:
            problems.append(Diagnostic("import", f"cannot import `{stmt.path}`: {err.strerror or err}", program.source,
                                       stmt.span))
            continue
        except CnnError as err:  # shown in the imported file, with where it was imported
            problems.extend(replace(d, notes=d.notes + (at,)) for d in err.diagnostics)
            continue
        loaded[path] = imported
        _visit(imported, stack + [path], loaded, order, problems)
        order.append(imported)


_IMPORT_LINE = re.compile(r'^[ \t]*import[ \t]+"[^"\n]*"[ \t]*(#.*)?$', re.IGNORECASE | re.MULTILINE)


def standalone_text(program: n.Program, text: str | None = None) -> str:
    """The spec (`text`, by default its source) with no imports: each import line commented out (line
    numbers stay) and the imported definitions written after it, under a comment naming their file. A run
    directory, an export or a sweep's member stores this, so it reads back wherever it is copied."""
    return written_in(program.source.text if text is None else text, load_imports(program))


def written_in(text: str, imported: tuple[n.Program, ...]) -> str:
    """`text` with the definitions of the `imported` programs written in (`standalone_text`'s work, for
    imports already resolved: `ir.Graph.standalone_text` builds it only when something stores the spec)."""
    if not imported:
        return text
    text = _IMPORT_LINE.sub(lambda m: f"# {m.group(0).strip()}   (written out below)", text)
    parts = [text.rstrip("\n"), ""]
    for other in imported:
        definitions = [other.source.text_of(s.span) for s in other.statements if isinstance(s, (n.Let, n.Block))]
        if definitions:
            parts += [f"# ---- imported from {os.path.basename(other.source.path)}: its let and block lines ----",
                      *definitions, ""]
    return "\n".join(parts)
