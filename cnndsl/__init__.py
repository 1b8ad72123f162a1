"""cnndsl: a compiler for a small language of convolutional-network architectures.

    import cnndsl
    report = cnndsl.check("examples/vgg16.cnn")      # shapes and costs, no JAX needed
    print(report.params, report.macs)
"""

from cnndsl.api import check, load_source, parse
from cnndsl.errors import CnnError, Diagnostic, UsageError
from cnndsl.report import Report

__version__ = "0.1.0"
__all__ = ["CnnError", "Diagnostic", "Report", "UsageError", "check", "compile", "load_exported", "load_source",
           "parse", "train",
           "__version__"]


def compile(spec, set=None, dtype=None):  # noqa: A001 - the name users expect, as in re.compile
    """Check a spec and compile it to a Flax module; see `cnndsl.compiler.compile`.

    Imported lazily so that `check` never loads JAX.
    """
    from cnndsl.compiler import compile as _compile

    return _compile(spec, set=set, dtype=dtype)


def load_exported(directory):
    """Load an inference artifact written by `cnndsl compile --emit export`; see `cnndsl.export.load_exported`."""
    from cnndsl.export import load_exported as _load

    return _load(directory)


def train(spec, settings=None, **options):
    """Train a spec's network; returns the trained module and history. See `cnndsl.training.train`."""
    from cnndsl.training import train as _train

    return _train(spec, settings, **options)
