"""Lazy re-exports for a layer's entry point: `from cnndsl.training import train` works, and importing the
package alone imports nothing (the command line's start-up stays milliseconds; `cnndsl check` never loads JAX)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that imports `exports[name]` (a submodule, or a full module path) on first use of `name`."""
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = exports[name]
        return getattr(importlib.import_module(module if module.startswith("cnndsl.") else f"{package}.{module}"), name)

    return __getattr__
