"""The network layer: a checked spec's IR as a Flax NNX module (`compile` -> `CompiledNetwork`), runs of
identical blocks applied with one `jax.lax.scan`, and pretrained weights put into a module."""

from cnndsl.lang.lazy import lazy_exports

_EXPORTS = {"compile": "compiler", "CompiledNetwork": "compiler", "compiler_options": "options",
            "Network": "flax_backend", "flatten_state": "flax_backend", "unflatten_state": "flax_backend",
            "count_compilations": "compilations"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
