"""What several commands print the same way: a table cell, an image's top classes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def cell(value: Any) -> str:
    """A table cell for a bound value: `true`/`false` for booleans, `-` for none."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "-" if value is None else str(value)


def print_top(name: str, probabilities: Any, classes: Sequence[str], top: int, as_json: bool) -> None:
    """One image's `top` most likely classes, as a line of text or one JSON object."""
    import numpy as np

    best = np.argsort(-probabilities, kind="stable")[:top]
    labels = [classes[c] if c < len(classes) else str(int(c)) for c in best]
    if as_json:
        print(json.dumps({"image": name, "top": [{"class": int(c), "label": label,
                                                  "probability": float(probabilities[c])}
                                                 for c, label in zip(best, labels)]}))
    else:
        print(f"{name}:  " + "  ".join(f"{label} {probabilities[c]:.1%}" for c, label in zip(best, labels)))
