"""The language layer (no JAX): source text, errors, limits, the grammar and parser, the AST, imports,
expansion into the IR graph, shapes, costs, the report and `check()`; a run's settings and a family's
search space as a spec writes them.

    from cnndsl.lang import check
    report = check("examples/vgg16.cnn")
"""

from cnndsl.lang.lazy import lazy_exports

_EXPORTS = {"check": "frontend", "check_program": "frontend", "parse": "frontend", "parse_overrides": "frontend",
            "load_source": "parser", "Report": "report", "Settings": "settings", "TrainingError": "settings",
            "CnnError": "errors", "Diagnostic": "errors", "UsageError": "errors", "Source": "source",
            "Span": "source", "Space": "space"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
