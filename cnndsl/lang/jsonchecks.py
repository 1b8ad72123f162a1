"""Type checks for values read back from JSON files cnndsl wrote (a run's settings and metrics, an export's
meta.json): a file damaged or edited by hand must give a clear error, not a crash deep inside."""

from __future__ import annotations

import math
from typing import Any


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_count(value: Any, minimum: int = 1) -> bool:
    """An int (not a bool) of at least `minimum`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_shape(value: Any, rank: int | None = None, minimum: int = 1) -> bool:
    """A list of `rank` (any number, if None) sizes of at least `minimum`."""
    return (isinstance(value, list) and (rank is None or len(value) == rank)
            and all(is_count(d, minimum) for d in value))
