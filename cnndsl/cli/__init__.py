"""The `cnndsl` command: argument parsing and printing around the library; nothing imports this package.

One module per command (`cnndsl.cli.check`, `.compile`, `.train`, ...), each with `add(commands, spec, data)`
(its arguments) and `run(args)` (the work, by the layers below, and what it prints). Exit status: 0 success,
1 a problem in the spec (rendered diagnostics) or the data, 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from cnndsl.cli.arguments import set_pair
from cnndsl.cli.process import note_interrupts, runtime_errors
from cnndsl.lang.errors import CnnError, UsageError
from cnndsl.lang.version import __version__

#: The subcommands in the order `cnndsl --help` lists them, and the module of each.
COMMAND_MODULES = {"check": "check", "fmt": "fmt", "compile": "compile", "run": "run", "train": "train", "eval": "evaluate",
                   "predict": "predict", "family": "family", "sweep": "sweep", "data": "data", "weights": "weights",
                   "lsp": "lsp"}


class _Commands(dict):
    """The command modules, imported when first used (`cnndsl check` never imports the training command's)."""

    def __missing__(self, name: str) -> ModuleType:
        module = importlib.import_module(f"cnndsl.cli.{COMMAND_MODULES[name]}")
        self[name] = module
        return module


COMMANDS = _Commands()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from cnndsl.cli.arguments import data_arguments

    parser = argparse.ArgumentParser(prog="cnndsl", description="Check, compile, train and run convolutional-network specs.")
    parser.add_argument("--version", action="version", version=f"cnndsl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    spec = argparse.ArgumentParser(add_help=False)  # the arguments every command that reads a spec takes
    spec.add_argument("file", help="the .cnn spec")
    spec.add_argument("--set", dest="bindings", metavar="NAME=VALUE", type=set_pair, action="append",
                      default=[], help="bind or override a `let` name (repeatable), e.g. --set N=3")
    data = data_arguments()
    for name in COMMAND_MODULES:
        COMMANDS[name].add(commands, spec, data)
    parser.subcommands = commands.choices  # type: ignore[attr-defined]  # for errors with the subcommand's usage
    return parser


def _without_closed_loops(hook: Any) -> Any:
    """`hook`, except for "Event loop is closed": after a failed checkpoint restore, tensorstore's threads
    still complete futures of orbax's finished event loop, and Python printed each as a traceback after the
    command's own one-line message."""
    if getattr(hook, "cnndsl_filter", False):
        return hook

    def filtered(unraisable: Any) -> None:
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            hook(unraisable)

    filtered.cnndsl_filter = True  # type: ignore[attr-defined]
    return filtered


def _default_interrupts() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints as escapes, never raises
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    sys.unraisablehook = _without_closed_loops(sys.unraisablehook)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "predict":  # argparse leaves images after an option (`FILE --run R a.png`) unmatched
        args.images += [e for e in extra if not e.startswith("-")]
        extra = [e for e in extra if e.startswith("-")]
    if extra:  # reported by the subcommand, with its own usage line, not the top-level one
        parser.subcommands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in ("train", "eval", "predict", "sweep"):
        note_interrupts()
    else:
        _default_interrupts()  # from here KeyboardInterrupt is handled below (nothing half-written is left)
    try:
        if args.command in ("train", "eval", "predict", "sweep"):
            from cnndsl.training.cache import use_compilation_cache

            use_compilation_cache()  # imports jax: inside the try, where a Ctrl-C reads as an interruption
        if args.command == "train":  # before any JAX array exists
            from cnndsl.training.distributed import start_processes

            start_processes(args.coordinator, args.num_processes, args.process_id)
        return COMMANDS[args.command].run(args)
    except UsageError as err:
        print(f"cnndsl: {err.render()}", file=sys.stderr)
        return 2
    except CnnError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except runtime_errors() as err:
        from cnndsl.training.interrupts import Interrupted

        print(f"cnndsl: {err}", file=sys.stderr)
        return 130 if isinstance(err, Interrupted) else 1
    except KeyboardInterrupt:
        print("cnndsl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cnndsl check ... | head`: the reader stopped reading, which is not an error to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 1
    except Exception as err:  # a bug in cnndsl, never the user's fault: say so briefly
        from cnndsl.training.interrupts import INTERRUPTS

        if INTERRUPTS:  # the exception is what Ctrl-C left behind (an interrupted import, say)
            print("cnndsl: interrupted", file=sys.stderr)
            return 130
        if os.environ.get("CNNDSL_DEBUG"):
            raise
        print(f"cnndsl: internal error: {type(err).__name__}: {err}\n"
              "  = help: this is a bug in cnndsl; rerun with CNNDSL_DEBUG=1 for the traceback and report it",
              file=sys.stderr)
        return 70


def _interrupted_while_starting(signum: int, frame: Any) -> None:
    print("\ncnndsl: interrupted", file=sys.stderr, flush=True)
    os._exit(130)


def run() -> None:
    """The `cnndsl` executable: `main`, then exit with its status, without the interpreter's teardown.

    Everything cnndsl writes is on disk when `main` returns (checkpoints are waited for, files are written
    atomically), so the teardown only frees memory: after a training run it took 0.5-0.7 s here (XLA's client
    and thread pools, the objects of the traced programs), a sixth of the main job's warm time. The exit
    handlers still run (jax's, logging's, temporary files'), after non-daemon threads finish. After an
    interruption they are skipped too: a Ctrl-C that landed while XLA was compiling leaves XLA's threads in a
    state its teardown crashes on (a segmentation fault after cnndsl's message)."""
    import signal

    # Until `main` has parsed the command, a Ctrl-C ends the process at once: raised as KeyboardInterrupt,
    # it could land inside numpy's import, which turns it into an ImportError and a traceback.
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    try:
        status = main()
    except KeyboardInterrupt:  # before main's own handling began (building the parser)
        print("cnndsl: interrupted", file=sys.stderr)
        status = 130
    from cnndsl.training.interrupts import INTERRUPTS

    if status == 0 and INTERRUPTS:  # a Ctrl-C that Python swallowed after the last safe point to stop at
        print("cnndsl: interrupted (after the work was finished and saved)", file=sys.stderr)
        status = 130
    if status != 130:
        import atexit
        import threading

        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe (`cnndsl check x.cnn | head`), or a stream the command closed
        pass  # (the language server's, on `exit`): nothing more can be said
    os._exit(status)
