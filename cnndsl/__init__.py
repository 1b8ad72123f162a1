"""cnndsl: a compiler for a small language of convolutional-network architectures.

    import cnndsl
    report = cnndsl.check("examples/vgg16.cnn")      # shapes and costs, no JAX needed
    print(report.params, report.macs)
"""

from cnndsl.api import check, load_source, parse
from cnndsl.errors import CnnError, Diagnostic, UsageError
from cnndsl.report import Report

__version__ = "0.1.0"
__all__ = ["CnnError", "Diagnostic", "Report", "UsageError", "check", "load_source", "parse", "__version__"]
