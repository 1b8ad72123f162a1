"""The search layer: families (every member of a spec with `search` lines, checked without JAX) and
sweeps (members trained and scored on Optuna's samplers and storages)."""

from cnndsl.lang.lazy import lazy_exports

_EXPORTS = {"family": "family", "load_space": "family", "Budget": "family", "FamilyMember": "family",
            "sweep": "sweep", "SweepResult": "results"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
