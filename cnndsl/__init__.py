"""cnndsl: a compiler for a small language of convolutional-network architectures.

    import cnndsl
    report = cnndsl.check("examples/vgg16.cnn")      # shapes and costs, no JAX needed
    print(report.params, report.macs)
"""

# check, parse, load_source, Report and the errors come from cnndsl.lang on first use (see __getattr__): `import
# cnndsl` runs almost nothing, so `python -m cnndsl` reaches the handler of Ctrl-C in its __main__ at once.
from cnndsl.lang.version import __version__

__all__ = ["CnnError", "Diagnostic", "Report", "UsageError", "check", "compile", "evaluate", "load_exported",
           "load_source", "parse", "train", "__version__"]


def compile(spec, set=None, dtype=None, scan=None):  # noqa: A001 - the name users expect, as in re.compile
    """Check a spec and compile it to a Flax module; see `cnndsl.nn.compiler.compile`.

    Imported lazily so that `check` never loads JAX.
    """
    from cnndsl.nn.compiler import compile as _compile

    return _compile(spec, set=set, dtype=dtype, scan=scan)


def load_exported(directory):
    """Load an inference artifact written by `cnndsl compile --emit export`; see `cnndsl.emit.artifact.load_exported`."""
    from cnndsl.emit.artifact import load_exported as _load

    return _load(directory)


def train(spec, settings=None, **options):
    """Train a spec's network; returns the trained module and history. See `cnndsl.training.loop.train`."""
    from cnndsl.training.loop import train as _train

    return _train(spec, settings, **options)


def evaluate(run_dir, spec=None, **options):
    """Test and validation accuracy of a trained run's checkpoint. See `cnndsl.training.inference.evaluate`."""
    from cnndsl.training.inference import evaluate as _evaluate

    return _evaluate(spec, run_dir, **options)


def family(spec, **options):
    """The members of a family (a spec with `search` lines), each checked without JAX: `.bindings`,
    `.report` (None when invalid), `.status`, `.reason`. See `cnndsl.search.family.family`."""
    from cnndsl.search.family import family as _family

    return _family(spec, **options)


def sweep(spec, **options):
    """Train members of a family chosen by Optuna; returns the study, the trials and the Pareto front.
    See `cnndsl.search.sweep.sweep` (needs the `search` extra: Optuna)."""
    from cnndsl.search.sweep import sweep as _sweep

    return _sweep(spec, **options)


def load_ipython_extension(shell):
    """`%load_ext cnndsl`: checked and compiled networks show their diagram beside their table in a notebook.
    `import cnndsl` does this by itself inside IPython; see `cnndsl.emit.notebook`."""
    from cnndsl.emit.notebook import register

    register(shell)


def _inside_ipython():
    """The running IPython shell, or None: looked up only when IPython is already imported (a kernel imports
    it before any cell runs), so a plain `import cnndsl` never imports it."""
    import sys

    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None


#: Module paths of earlier versions (`cnndsl.export.export_run`), still reachable from the package.
_MOVED = {"compiler": "cnndsl.nn.compiler", "export": "cnndsl.emit.artifact", "outputs": "cnndsl.lang.outputs",
          "rundir": "cnndsl.training.rundir", "flax_backend": "cnndsl.nn.flax_backend",
          "compilations": "cnndsl.nn.compilations"}


#: The layers (docs/architecture.md), reachable as `cnndsl.emit.artifact` once imported or on first use.
_LAYERS = {"lang", "nn", "interop", "data", "training", "search", "emit", "editor", "cli"}


def __getattr__(name):
    """The front end's names and submodules on first use (`cnndsl.data.load_dataset`) without importing
    them, or JAX, for `import cnndsl` alone."""
    import importlib

    if name in ("CnnError", "Diagnostic", "UsageError"):
        return getattr(importlib.import_module("cnndsl.lang.errors"), name)
    if name in ("check", "load_source", "parse"):
        return getattr(importlib.import_module("cnndsl.lang.frontend"), name)
    if name == "Report":
        return importlib.import_module("cnndsl.lang.report").Report
    if name in _MOVED:
        return importlib.import_module(_MOVED[name])
    if name in _LAYERS:
        return importlib.import_module(f"cnndsl.{name}")
    raise AttributeError(f"module 'cnndsl' has no attribute {name!r}")


# last, once the package is whole: the notebook displays of a kernel that imports cnndsl
if _inside_ipython() is not None:
    load_ipython_extension(_inside_ipython())
