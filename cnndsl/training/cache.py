"""XLA's persistent compilation cache for cnndsl's programs: compiled once per network and shapes, kept between
processes, so a second run, another `--epochs` or `--lr` (handed to the step, cnndsl.training.optim) or a
sweep's next member starts without compiling its train step again."""

from __future__ import annotations

import os


def use_compilation_cache(*, unless_configured: bool = False) -> None:
    """Keep XLA's compiled programs between runs (jax's persistent cache): $JAX_COMPILATION_CACHE_DIR if set,
    else the cnndsl cache (`$CNNDSL_CACHE/xla`, default ~/.cache/cnndsl/xla), every program kept however quick
    its compilation. The command line always sets it; with `unless_configured` (the Python API's `train`) a
    cache directory the caller configured in jax is left as it is, with jax's own settings."""
    import jax

    from cnndsl.lang.outputs import cache_dir

    if unless_configured and jax.config.jax_compilation_cache_dir:
        return
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
