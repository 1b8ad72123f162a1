"""Lazy re-exports for a layer's entry point: `from cnndsl.training import train` works, and importing the
package alone imports nothing (the command line's start-up stays milliseconds; `cnndsl check` never loads JAX)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: `exports[name]` names the submodule (or full module path) that
    defines `name`, imported on first use; any other name of a submodule (`cnndsl.emit.artifact`) is that
    submodule, imported on first use too."""
    def __getattr__(name: str) -> Any:
        if name in exports:
            module = exports[name]
            return getattr(importlib.import_module(module if module.startswith("cnndsl.") else f"{package}.{module}"),
                           name)
        if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
